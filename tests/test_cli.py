"""The CLI: help for every verb, the collect verbs end to end (tiny), and one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from rawdream.cli import main
from rawdream.data.lerobot import LeRobotDataset


def _verbs():
    return [
        [],
        ["collect", "policy"],
        ["experiment", "rl-table"],
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
        ["experiment", "transfer-table"],
    ]


@pytest.mark.parametrize("verb", _verbs(), ids=lambda v: " ".join(v) or "rawdream")
def test_help_for_every_verb(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([*verb, "--help"])
    assert e.value.code == 0
    assert "usage: rawdream" in capsys.readouterr().out


def _rows():
    from rawdream.cli import VERBS

    for verb in VERBS:
        yield from ((verb.name + " " + k.name, k) for k in verb.kinds) if verb.kinds else [(verb.name, verb)]


def test_every_alias_names_a_config_key_and_none_shadows_a_section():
    """The verb table: an alias sets a key its verb's config has; its flag is never the name of a config section
    (so `--env sim` cannot stand beside `--env.image_size`); verbs that take no config refuse config keys."""
    import dataclasses
    import importlib

    from rawdream.config import chosen_class, nest_overrides
    from rawdream.pipeline import RunConfig

    def has(cls, dotted, also):
        """``dotted`` is a key of ``cls``; a choice section (the judge) is the class the alias's other keys
        choose (``--vlm-url`` sets judge.url on the openai judge it also selects)."""
        data = nest_overrides(dict(also))
        for part in dotted.split("."):
            cls = chosen_class(cls, data)
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if part not in fields:
                return False
            data = data.get(part, {}) if isinstance(data.get(part), dict) else {}
            cls = (
                fields[part].default_factory()
                if fields[part].default_factory is not dataclasses.MISSING
                else None
            )
            cls = type(cls) if cls is not None and dataclasses.is_dataclass(cls) else cls
        return True

    checked = 0
    for name, verb in _rows():
        if verb.config:
            module, cls_name = verb.config.split(":")
            cls = getattr(importlib.import_module(module), cls_name)
        elif verb.resolver:
            cls = RunConfig
        else:
            assert not [a for a in verb.args if a.key], name
            continue
        sections = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory())
        }
        for a in verb.args:
            flag = a.flags[0].lstrip("-").replace("-", "_")
            assert flag not in sections, f"{name}: {a.flags[0]} shadows the config section {flag!r}"
            for key in [a.key, *a.also] if a.key else []:
                assert has(cls, key, a.also), f"{name}: {a.flags[0]} sets {key!r}, which {cls.__name__} lacks"
                checked += 1
    assert checked >= 15
    assert main(["tasks", "--env.image_size=32"]) == 2


def test_aliases_land_in_the_resolved_config(tmp_path, monkeypatch):
    """What the one handler passes to an entry point: aliases, switches and flags merged over the preset."""
    import dataclasses

    import rawdream.cli as cli

    got = {}

    def entry(args, cfg):
        got["cfg"] = cfg
        return 0

    verbs = tuple(dataclasses.replace(v, run=entry) if v.name == "dream" else v for v in cli.VERBS)
    monkeypatch.setattr(cli, "VERBS", verbs)
    argv = ["dream", "--task", "drawer-open", "--policy", "p", "--out", str(tmp_path), "--no-dnv"]
    assert main([*argv, "--vlm-url", "http://h:8000/v1", "--env_mode=sim", "--preset", "tiny"]) == 0
    cfg = got["cfg"]
    assert (cfg.task, cfg.dnv, cfg.env_mode) == ("drawer-open", False, "sim")
    assert (cfg.judge.backend, cfg.judge.url) == ("openai", "http://h:8000/v1")


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
        (["dream", "--task", "reach", "--policy", "p", "--out", "{tmp}/x", "--env", "sim"], "--env_mode=sim"),
        (["tasks", "--env.image_size=32"], "takes no config keys"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
