"""The HTML report of a real (tiny) run, opened in headless Chromium: no console errors, every video and image
has loaded content; a screenshot is saved as a test artifact (test-artifacts/report.png)."""

import json
import shutil
from pathlib import Path

import pytest

from rawdream.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    assert main(["run", "--preset", "tiny", "--out", str(out)]) == 0
    return out


def test_tiny_run_is_resumable_and_summarised(tiny_run, capsys):
    assert (tiny_run / "report.html").exists() and (tiny_run / "summary.json").exists()
    # the on-policy table carries whether the policy acts in imagination as in the simulator
    html = (tiny_run / "report.html").read_text()
    assert "success acting in imagination" in html and "the reward RL sees" in html
    assert "(kappa " in html  # the closed-loop judge cell is filled in, not left empty
    # the world model is pre-trained, then trained on with noise on its proprioception input; the judge also
    # reads the base policy's closed-loop imagination on pretraining tasks
    wm = json.loads((tiny_run / "wm/world_model.json").read_text())
    assert Path(wm["init"]) == (tiny_run / "wm_pretrain").resolve()
    assert "train_proprio_noise: 0.5" in (tiny_run / "wm/config.yaml").read_text()
    judge = json.loads((tiny_run / "judge/judge.json").read_text())
    assert (
        judge["dataset"].endswith("data/imagined_rollouts")
        and judge["episodes_by_behaviour"]["policy_imagined"]
    )
    capsys.readouterr()
    assert main(["run", "--preset", "tiny", "--out", str(tiny_run)]) == 0  # every stage is up to date
    out = capsys.readouterr().out
    assert "skipped (up to date)" in out and "task-agnostic guarantee" in out
    assert " running " not in out
    # both evaluation protocols, each paired with SFT on its own episodes: practised = the RL initial states
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert set(summary["protocols"]) == {"practised", "new"}
    for layouts, first_seed in (("practised", 200_000), ("new", 100_000)):
        prot = summary["protocols"][layouts]
        assert set(prot["after"]) == set(prot["paired"]) == {"sweep-into"}
        ev = json.loads(
            (tiny_run / f"eval/sft{'_practised' if layouts == 'practised' else ''}/eval.json").read_text()
        )
        assert ev["tasks"]["sweep-into"]["episode_results"][0]["seed"] == first_seed
    assert "practised" in out and "new" in out


def test_judge_candidates_add_a_check_and_the_run_goes_on_with_its_pick(
    tiny_run, tmp_path, capsys, monkeypatch
):
    import rawdream.pipeline as pipeline
    from rawdream.io import atomic_write_json

    real_check = pipeline.run_judge_check

    def check_picking_the_second(cfg, judges, section, policy, wm, out, **kw):
        # the tiny judges tie (the first would be kept): make the pick the second, so the wiring of a pick that is
        # not the run's own judge is what the later stages are checked against
        rep = real_check(cfg, judges, section, policy, wm, out, **kw)
        rep.update(
            selected="judge_candidates/seed1",
            selected_path=str(judges["judge_candidates/seed1"]),
            selected_gains=True,
        )
        atomic_write_json(out / "judge_check.json", rep)
        return rep

    monkeypatch.setattr(pipeline, "run_judge_check", check_picking_the_second)
    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)
    capsys.readouterr()
    assert main(["run", "--preset", "tiny", "--out", str(run), "--judge_candidates=2"]) == 0
    out = capsys.readouterr().out
    # the first judge, the data and the models are the run's own; one more judge (seed 1) and the check are new
    assert "judge                    up to date" in out and "wm                       up to date" in out
    assert "judge_candidates/seed1   running" in out and "judge_check              running" in out
    assert "eval/judge               running" in out and "dream/sweep-into         running" in out
    summary = json.loads((run / "summary.json").read_text())
    check = summary["judge_check"]
    assert [r["judge"] for r in check["rows"]] == ["judge", "judge_candidates/seed1"]
    for r in check["rows"]:  # RL from the base policy against each judge, on the pretraining task reach
        cfg = (run / "judge_check" / r["judge"] / "reach" / "config.yaml").read_text()
        assert f"path: {run / r['judge']}\n" in cfg and f"reference: {run / 'data/demos'}\n" in cfg
    # the targets' RL reads the pick, with the target's demonstration as reference
    dream_cfg = (run / "dream/sweep-into/config.yaml").read_text()
    assert f"path: {run / 'judge_candidates/seed1'}\n" in dream_cfg
    assert f"reference: {run / 'data/target_demos'}\n" in dream_cfg
    assert "picked judge_candidates/seed1" in out and "RL in imagination skipped" not in out
    assert "Judge check: which judge can RL follow?" in (run / "report.html").read_text()
    # unchanged config: nothing runs again, the pick included (read back from the check's record)
    monkeypatch.setattr(pipeline, "run_judge_check", real_check)
    assert main(["run", "--preset", "tiny", "--out", str(run), "--judge_candidates=2"]) == 0
    assert " running " not in capsys.readouterr().out


def test_a_judge_check_that_no_judge_passes_keeps_the_sft_policy(tiny_run, tmp_path, capsys, monkeypatch):
    import rawdream.pipeline as pipeline
    from rawdream.io import atomic_write_json

    real_check = pipeline.run_judge_check

    def check_failing_all(cfg, judges, section, policy, wm, out, **kw):
        rep = real_check(cfg, judges, section, policy, wm, out, **kw)
        rep["selected_gains"] = False  # as if RL against every candidate had lowered real success
        atomic_write_json(out / "judge_check.json", rep)
        return rep

    monkeypatch.setattr(pipeline, "run_judge_check", check_failing_all)
    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)  # with the tiny run's own dream/ left on disk
    capsys.readouterr()
    assert main(["run", "--preset", "tiny", "--out", str(run), "--judge_candidates=2"]) == 0
    out = capsys.readouterr().out
    assert "RL in imagination skipped: RL against no judge candidate raised real success" in out
    assert " dream/" not in out and "skipped (check): SFT" in out  # the SFT rate that stands
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rl_skipped"] and all(not p["after"] for p in summary["protocols"].values())
    assert "sweep-into" in summary["protocols"]["new"]["before"]  # the SFT policy is still evaluated
    html = (run / "report.html").read_text()
    assert "RL in imagination skipped" in html and "RL skipped (judge check): SFT" in html
    assert "<h2>RL in imagination</h2>" not in html  # the earlier run's dream/ is not this run's RL
    # --judge_check.abstain=false runs RL with the least harmful judge, without redoing the check
    argv = ["run", "--preset", "tiny", "--out", str(run), "--judge_candidates=2"]
    assert main([*argv, "--judge_check.abstain=false"]) == 0
    out = capsys.readouterr().out
    assert "judge_check              up to date" in out and "dream/sweep-into         running" in out


def test_the_per_target_check_skips_rl_on_a_target_whose_scene_family_lost(
    tiny_run, tmp_path, capsys, monkeypatch
):
    import rawdream.experiment.judge_check as judge_check
    import rawdream.pipeline as pipeline

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)
    capsys.readouterr()
    argv = [
        "run",
        "--preset",
        "tiny",
        "--out",
        str(run),
        "--judge_check.per_target=true",
        "--judge_check.tasks=[]",
    ]
    # sweep-into's scene family (hand-insert, pick-out-of-hole, sweep) has no demonstration in the tiny run's demos
    # to show the judge as reference: refused before any stage runs
    assert main(argv) == 2
    assert (
        "scene families (--judge_check.per_target) hand-insert, pick-out-of-hole, sweep: no pretraining"
        in (capsys.readouterr().err)
    )

    def family(split, targets=None):  # the tiny run's demos cover reach: let it stand in for the family
        return {t: ["reach"] for t in targets or split.targets}

    real_score = judge_check.score_targets

    def lost_on_the_family(runs, families):  # as if RL against the judge had lowered real success on reach
        rep = real_score(runs, families)
        for v in rep.values():
            v.update(
                lost=v["gained"] + 1,
                score=-1,
                rl=False,
                why="RL against the judge on reach lowered real success",
            )
        return rep

    monkeypatch.setattr(judge_check, "family_tasks", family)
    monkeypatch.setattr(pipeline, "family_tasks", family)
    monkeypatch.setattr(judge_check, "score_targets", lost_on_the_family)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "judge_check              running" in out and " dream/" not in out
    assert "RL in imagination on sweep-into skipped, the SFT policy stands" in out
    assert "skipped (check): SFT" in out
    assert (
        "per-target check, sweep-into: RL against the judge on reach lowered real success; RL skipped" in out
    )
    # the check ran RL from the base policy against the run's own judge on the family's task, and nothing else
    assert [d.name for d in (run / "judge_check").iterdir() if d.is_dir()] == ["judge"]
    assert [d.name for d in (run / "judge_check/judge").iterdir()] == ["reach"]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["rl_skipped_targets"]) == {"sweep-into"} and not summary["rl_skipped"]
    assert all(not p["after"] and p["pooled"] is None for p in summary["protocols"].values())
    html = (run / "report.html").read_text()
    assert "RL skipped (judge check): SFT" in html and "RL on its scene family" in html
    # --judge_check.abstain=false: RL on the target after all, the check not redone
    assert main([*argv, "--judge_check.abstain=false"]) == 0
    out = capsys.readouterr().out
    assert "judge_check              up to date" in out and "dream/sweep-into         running" in out
    # a run-wide check task on which no judge gained: RL skipped on every target, whatever the family said
    real_check = pipeline.run_judge_check

    def no_gain(cfg, judges, section, policy, wm, out, **kw):
        rep = real_check(cfg, judges, section, policy, wm, out, **kw)
        rep["selected_gains"] = False
        return rep

    monkeypatch.setattr(pipeline, "run_judge_check", no_gain)
    monkeypatch.setattr(judge_check, "score_targets", real_score)
    assert main([*argv, "--judge_check.tasks=[reach]"]) == 0
    out = capsys.readouterr().out
    assert "RL in imagination skipped: RL against no judge candidate raised real success" in out
    assert (
        "per-target check, sweep-into: RL against the judge on reach " in out
        and "; RL skipped, the SFT" in out
    )
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["rl_skipped_targets"]) == {"sweep-into"} and summary["rl_skipped"]
    assert all(not p["after"] and p["pooled"] is None for p in summary["protocols"].values())


def test_a_hardened_judge_that_passes_the_family_check_is_the_one_the_targets_rl_reads(
    tiny_run, tmp_path, capsys, monkeypatch, family_lost_first
):
    # the run's judge lowered success on the family; its hardened one did not
    import rawdream.experiment.judge_check as judge_check
    import rawdream.pipeline as pipeline

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)

    def family(split, targets=None):  # the tiny run's demos cover reach: let it stand in for the family
        return {t: ["reach"] for t in targets or split.targets}

    monkeypatch.setattr(judge_check, "family_tasks", family)
    monkeypatch.setattr(pipeline, "family_tasks", family)
    argv = ["run", "--preset", "tiny", "--out", str(run), "--judge_check.per_target=true"]
    argv += ["--judge_check.tasks=[]", "--judge_check.harden_rounds=1", "--judge_check.harden_episodes=2"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    hardened = run / "judge_check/hardened1/judge"
    assert (hardened / "judge.json").exists() and (run / "judge_check/hardened1/reach/policy.json").exists()
    # the target's RL and the closed-loop judge evaluation read the hardened judge
    assert f"path: {hardened}\n" in (run / "dream/sweep-into/config.yaml").read_text()
    assert "dream/sweep-into         running" in out and "RL skipped" not in out
    assert f"judge hardening round 1: retrained on its check runs' exploits -> {hardened}" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["judge_check"]["hardening"][0]["judge"] == str(hardened)
    assert not summary["rl_skipped_targets"]
    assert "hardened in 1 round(s)" in (run / "report.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_loads_in_headless_chromium(tiny_run):
    from playwright.sync_api import sync_playwright

    artifacts = Path(__file__).resolve().parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((tiny_run / "report.html").resolve().as_uri())
        page.wait_for_load_state("load")
        page.wait_for_function(
            "Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 2)", timeout=20000
        )
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        videos = page.eval_on_selector_all("video", "els => els.map(e => [e.readyState, e.videoWidth])")
        page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert images and all(done and width > 0 for done, width in images), images
    assert videos and all(state >= 2 and width > 0 for state, width in videos), videos
