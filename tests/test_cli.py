"""The CLI: help for every verb, the collect verbs end to end (tiny), and one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from rawdream.cli import main
from rawdream.data.lerobot import LeRobotDataset


def _verbs():
    return [
        [],
        ["run"],
        ["collect"],
        ["collect", "play"],
        ["collect", "demos"],
        ["collect", "labeled"],
        ["tasks"],
        ["info"],
        ["pretrain-wm"],
        ["eval-wm"],
        ["train-policy"],
        ["eval-policy"],
        ["train-judge"],
        ["eval-judge"],
        ["dream"],
        ["report"],
        ["experiment"],
        ["experiment", "paper-table"],
    ]


@pytest.mark.parametrize("verb", _verbs(), ids=lambda v: " ".join(v) or "rawdream")
def test_help_for_every_verb(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([*verb, "--help"])
    assert e.value.code == 0
    assert "usage: rawdream" in capsys.readouterr().out


def test_console_script_is_installed():
    import shutil
    from pathlib import Path

    exe = shutil.which("rawdream") or str(Path(sys.executable).parent / "rawdream")
    res = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "rawdream" in res.stdout


def test_collect_demos_and_info(tmp_path, capsys):
    out = tmp_path / "demos"
    assert (
        main(
            [
                "collect",
                "demos",
                "--task",
                "drawer-open",
                "--episodes",
                "1",
                "--out",
                str(out),
                "--preset",
                "tiny",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "drawer-open" in printed and "total" in printed
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 1 and ds.manifest["kind"] == "demos" and ds.tasks == ["open the drawer"]
    assert (out / "config.yaml").exists()
    assert main(["info", str(out)]) == 0
    assert "demos" in capsys.readouterr().out


def test_play_data_does_not_store_instructions(tmp_path):
    out = tmp_path / "play"
    assert main(["collect", "play", "--out", str(out), "--preset", "tiny", "--episodes_per_task=1"]) == 0
    ds = LeRobotDataset(out)
    assert ds.tasks == ["play"] and ds.manifest["instructions_are_labels"] is False
    assert ds.manifest["tasks"] == ["drawer-close", "reach"] and ds.frame_stride == 8
    assert ds.column("action").shape[1:] == (8, 4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["collect", "demos", "--task", "drawer-opn", "--out", "{tmp}/x"], "closest: drawer-open"),
        (["info", "{tmp}/missing"], "does not exist"),
        (["collect", "play", "--out", "{tmp}/x", "--preset", "tiny", "--episodes_per_tsk=2"], "did you mean"),
        (["collect", "play", "--out", "{tmp}/x", "--preset", "huge"], "unknown preset"),
        (["tasks", "--split", "nope"], "unknown split"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
