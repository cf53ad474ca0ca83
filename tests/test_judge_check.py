"""The judge check: RL in imagination against each candidate judge on pretraining tasks, scored by the simulator,
picks the judge a run's RL uses (experiment/judge_check.py)."""

import json
import shutil

import pytest
import yaml

from rawdream.cli import main
from rawdream.experiment.judge_check import format_judge_check, score_judges


def _cell(before, after, gained, lost):
    return {
        "before": before,
        "after": after,
        "episodes": 16,
        "gained": gained,
        "lost": lost,
        "mcnemar_p": 1.0,
    }


def test_the_pick_is_the_judge_whose_rl_gained_most_each_protocol_counted_apart():
    runs = {
        "collapses": {  # RL exploits it: real success falls on both tasks
            "coffee-pull": {"practised": _cell(0.4, 0.0, 0, 6), "new": _cell(0.4, 0.1, 1, 6)},
            "door-open": {"practised": _cell(1.0, 0.1, 0, 14), "new": _cell(1.0, 0.2, 0, 13)},
        },
        "holds": {
            "coffee-pull": {"practised": _cell(0.4, 0.5, 3, 1), "new": _cell(0.4, 0.75, 6, 0)},
            "door-open": {"practised": _cell(1.0, 0.9, 0, 2), "new": _cell(1.0, 1.0, 0, 0)},
        },
    }
    paths = {"collapses": "/j/a", "holds": "/j/b"}
    rep = score_judges(runs, paths, ["coffee-pull", "door-open"])
    assert rep["selected"] == "holds" and rep["selected_path"] == "/j/b" and rep["selected_gains"]
    rows = {r["judge"]: r for r in rep["rows"]}
    # each protocol pooled over the tasks on its own, never mixed; the score sums their nets
    assert rows["holds"]["pooled"]["practised"] == {"gained": 3, "lost": 3, "mcnemar_p": 1.0}
    assert rows["holds"]["pooled"]["new"]["gained"] == 6 and rows["holds"]["pooled"]["new"]["lost"] == 0
    assert rows["holds"]["score"] == 6 and rows["collapses"]["score"] == 1 - 39
    assert rows["collapses"]["pooled"]["practised"]["mcnemar_p"] < 0.001
    md = format_judge_check(rep)
    assert "holds (picked)" in md and "raised real success" in md


def test_with_no_judge_gaining_the_pick_is_the_least_harmful_and_says_so():
    lose = {"t": {"practised": _cell(0.5, 0.4, 0, 2), "new": _cell(0.5, 0.4, 1, 2)}}
    worse = {"t": {"practised": _cell(0.5, 0.1, 0, 7), "new": _cell(0.5, 0.4, 0, 2)}}
    same = {"t": {"practised": _cell(0.5, 0.4, 0, 2), "new": _cell(0.5, 0.4, 1, 2)}}
    rep = score_judges({"a": worse, "b": lose, "c": same}, {"a": "A", "b": "B", "c": "C"}, ["t"])
    assert rep["selected"] == "b" and not rep["selected_gains"]  # ties go to the earlier candidate
    assert "least harmful" in format_judge_check(rep)
    with pytest.raises(ValueError, match="no check run on u"):
        score_judges({"a": worse}, {"a": "A"}, ["t", "u"])


def test_judge_check_runs_rl_per_judge_and_task_and_resumes(
    tiny_policy, tiny_wm, tiny_judge, pretrain_demos, tmp_path, capsys
):
    other = tmp_path / "other" / "judge"  # a second candidate: the same weights in another folder
    shutil.copytree(tiny_judge, other)
    out = tmp_path / "check"
    args = ["experiment", "judge-check", "--judges", f"{tiny_judge},{other}", "--policy", str(tiny_policy)]
    args += ["--wm", str(tiny_wm), "--reference", str(pretrain_demos), "--out", str(out)]
    args += ["--preset", "tiny", "--split.targets=push"]
    assert main(args) == 0
    rep = json.loads((out / "judge_check.json").read_text())
    assert [r["path"] for r in rep["rows"]] == [str(tiny_judge), str(other)]
    for r in rep["rows"]:
        cell = r["tasks"]["reach"]
        assert set(cell) == {"practised", "new"} and cell["practised"]["episodes"] == 1
        assert (out / r["judge"] / "reach" / "policy.json").exists()
        cfg = (out / r["judge"] / "reach" / "config.yaml").read_text()
        assert r["path"] in cfg and str(pretrain_demos) in cfg  # this judge, a pretraining demo as reference
    # equal weights, equal RL streams: equal scores, and the tie goes to the first candidate
    assert rep["rows"][0]["score"] == rep["rows"][1]["score"] and rep["selected_path"] == str(tiny_judge)
    assert "picked" in capsys.readouterr().out
    assert main(args) == 0  # every run is on disk: nothing runs again
    assert "RL against judge" not in capsys.readouterr().out
    # a changed check never reads the old runs as its own
    assert main([*args, "--iterations=2"]) == 2
    assert (
        "holds a finished check run with other settings (eval_every, iterations)" in capsys.readouterr().err
    )


def test_judge_check_refuses_a_target_task_and_a_missing_reference(
    tiny_policy, tiny_wm, tiny_judge, tmp_path, capsys
):
    base = ["experiment", "judge-check", "--judges", str(tiny_judge), "--policy", str(tiny_policy)]
    base += ["--wm", str(tiny_wm), "--out", str(tmp_path / "c"), "--preset", "tiny", "--split.targets=push"]
    assert main([*base, "--tasks=[push]", "--reference", str(tmp_path)]) == 2
    assert "judge-check tasks push: not pretraining tasks" in capsys.readouterr().err
    assert main(base) == 2
    assert "--reference DEMOS" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_the_per_target_check_runs_on_each_targets_scene_family_and_keeps_rl_where_it_did_no_harm():
    from rawdream.experiment.judge_check import family_tasks, score_targets
    from rawdream.splits import SplitConfig, resolve_split

    # the catalogue's scene families, their pretraining members only (a target never checks on a target)
    fam = family_tasks(resolve_split(SplitConfig()))
    assert fam["drawer-open"] == ["drawer-close"] and fam["lever-pull"] == ["dial-turn"]
    assert fam["door-close"] == ["door-open", "door-lock", "door-unlock"]
    assert fam["sweep-into"] == ["hand-insert", "pick-out-of-hole", "sweep"]
    assert family_tasks(resolve_split(SplitConfig()), ["shelf-place"]) == {
        "shelf-place": ["bin-picking", "box-close"]
    }
    runs = {
        "drawer-close": {
            "practised": _cell(1.0, 1.0, 0, 0),
            "new": _cell(1.0, 1.0, 0, 0),
        },  # saturated: no harm
        "door-open": {"practised": _cell(1.0, 0.9, 0, 2), "new": _cell(1.0, 1.0, 0, 0)},
        "door-lock": {"practised": _cell(0.3, 0.4, 2, 1), "new": _cell(0.3, 0.3, 0, 0)},
    }
    rep = score_targets(
        runs, {"drawer-open": ["drawer-close"], "door-close": ["door-open", "door-lock"], "x": []}
    )
    assert rep["drawer-open"]["rl"] and rep["drawer-open"]["score"] == 0
    # summed over the family's tasks and both protocols: +2 / -3 lowered real success, so no RL on the target
    assert (rep["door-close"]["gained"], rep["door-close"]["lost"], rep["door-close"]["rl"]) == (2, 3, False)
    assert "lowered real success" in rep["door-close"]["why"]
    assert not rep["x"]["rl"] and "no pretraining task shares its scene" in rep["x"]["why"]
    assert "did not lower real success (+0 / -0 episodes, none changed)" in rep["drawer-open"]["why"]
    check = score_judges({"j": {}}, {"j": "J"}, [])  # no check tasks: the one judge, nothing to pick by
    assert check["selected"] == "j" and check["selected_gains"] is None
    md = format_judge_check({**check, "targets": rep})
    assert "no check tasks: judge j" in md
    assert "| door-close | door-open 100.0 -> 90.0% (+0 / -2) / 100.0 -> 100.0% (+0 / -0); door-lock" in md
    assert md.count("skipped") == 2 and md.count("goes ahead") == 1


def test_judge_check_per_target_runs_the_family_of_each_target(
    tiny_policy, tiny_wm, tiny_judge, pretrain_demos, tmp_path, capsys
):
    out = tmp_path / "check"
    args = ["experiment", "judge-check", "--judges", str(tiny_judge), "--policy", str(tiny_policy)]
    args += ["--wm", str(tiny_wm), "--reference", str(pretrain_demos), "--out", str(out), "--preset", "tiny"]
    args += ["--split.targets=drawer-open", "--tasks=[]", "--per_target=true"]
    assert main(args) == 0
    rep = json.loads((out / "judge_check.json").read_text())
    target = rep["targets"]["drawer-open"]
    assert target["tasks"] == ["drawer-close"] and set(target["runs"]["drawer-close"]) == {"practised", "new"}
    cell = target["runs"]["drawer-close"]
    assert target["gained"] == cell["practised"]["gained"] + cell["new"]["gained"]
    # RL against the one judge on drawer-open's family alone: no pick to make, so no check task ran
    assert [p.name for p in (out / "judge").iterdir()] == ["drawer-close"]
    assert (out / "judge" / "drawer-close" / "policy.json").exists() and rep["tasks"] == []
    assert "per target, RL against judge on the target's scene family" in capsys.readouterr().out
    # several judges need check tasks to pick one by
    other = tmp_path / "other" / "judge"
    shutil.copytree(tiny_judge, other)
    assert main([*args, "--judges", f"{tiny_judge},{other}"]) == 2
    assert "needs check tasks to pick one by" in capsys.readouterr().err


def test_the_runs_pooled_result_counts_a_skipped_target_as_unchanged(tmp_path):
    from rawdream.layout import RunLayout
    from rawdream.pipeline import format_summary, pooled_results

    def write(rel, tasks):  # task -> successes per episode, as eval-policy writes them
        d = tmp_path / rel
        d.mkdir(parents=True, exist_ok=True)
        res = {
            t: {"episode_results": [{"episode": i, "success": bool(x)} for i, x in enumerate(v)]}
            for t, v in tasks.items()
        }
        (d / "eval.json").write_text(json.dumps({"tasks": res}))

    run = RunLayout(tmp_path)
    sft = {"a": [0, 0, 0, 1], "b": [1, 1, 0, 0]}
    write(run.eval_sft("new"), sft)
    write(
        run.eval_dream("a", "new"), {"a": [1, 1, 1, 1]}
    )  # RL ran on a: +3 / -0; b skipped: its SFT episodes
    pooled = pooled_results(run, ["a", "b"], ["a"], "new")
    assert (pooled["gained"], pooled["lost"], pooled["episodes"]) == (3, 0, 8)
    assert pooled["difference"] == 3 / 8 and pooled["tasks"] == ["a", "b"]
    assert pooled_results(run, ["a"], ["a"], "new") is None  # one task: its own row says it
    before = {t: {"success_rate": 0.25, "ci95": [0, 1], "episodes": 4} for t in sft}
    summary = {
        "protocols": {"new": {"before": before, "after": {"a": before["a"]}, "paired": {}, "pooled": pooled}},
        "rl_skipped_targets": {"b": "why"},
        "stages": [],
        "guarantee": {},
    }
    text = format_summary(summary)
    assert "skipped (check): SFT" in text and "all 2 targets" in text and "+3 / -0 episodes" in text


def test_rl_table_pools_its_rows_and_counts_targets_the_check_skipped_as_unchanged(tmp_path):
    from rawdream.experiment.rl_table import format_pooled, pooled, skipped_by_check

    def row(task, practised, new):
        return {"task": task, "protocols": {"practised": practised, "new": new}}

    rows = [
        row("drawer-open", _cell(0.375, 0.5625, 6, 0), _cell(0.4, 0.65, 8, 0)),
        row("sweep-into", _cell(0.5, 0.34, 0, 5), _cell(0.28, 0.31, 1, 0)),
    ]
    for r in rows:
        for c in r["protocols"].values():
            c["episodes"] = 32
    assert pooled([*rows, rows[0]]) == {}  # two rows of one task compare recipes: nothing to pool
    every = pooled(rows)
    assert (every["practised"]["gained"], every["practised"]["lost"], every["practised"]["episodes"]) == (
        6,
        5,
        64,
    )
    check = tmp_path / "judge_check.json"
    check.write_text(
        json.dumps(
            {
                "targets": {
                    "sweep-into": {"rl": False, "why": "lost"},
                    "drawer-open": {"rl": True, "why": "ok"},
                }
            }
        )
    )
    skipped = skipped_by_check(check)
    assert skipped == {"sweep-into": "lost"}
    as_decided = pooled(rows, skipped)
    # the skipped target's episodes stay in the pool, none gained or lost: only drawer-open's move
    d = as_decided["practised"]
    assert (d["gained"], d["lost"], d["episodes"], d["skipped_tasks"]) == (6, 0, 64, ["sweep-into"])
    assert d["difference"] == 6 / 64 and d["mcnemar_p"] == pytest.approx(2 / 2**6)
    assert "RL skipped by the check on sweep-into" in format_pooled(as_decided)
    check.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="--per_target=true"):
        skipped_by_check(check)


def test_hardening_retrains_the_judge_on_its_check_runs_exploits_and_checks_again(
    tiny_policy, tiny_wm, tiny_judge, pretrain_demos, tmp_path, capsys, family_lost_first
):
    from rawdream.data.lerobot import LeRobotDataset

    calls = family_lost_first  # as if RL against the first judge had lowered success on the family
    out = tmp_path / "check"
    args = ["experiment", "judge-check", "--judges", str(tiny_judge), "--policy", str(tiny_policy)]
    args += ["--wm", str(tiny_wm), "--reference", str(pretrain_demos), "--out", str(out), "--preset", "tiny"]
    args += ["--split.targets=drawer-open", "--tasks=[]", "--per_target=true"]
    assert main([*args, "--harden_rounds=2", "--harden_episodes=2"]) == 0
    rep = json.loads((out / "judge_check.json").read_text())
    # one round: the retrained judge passed, so no second round
    assert [r["round"] for r in rep["hardening"]] == [1] and not (out / "hardened2").exists()
    r = rep["hardening"][0]
    assert r["from"] == str(tiny_judge) and rep["targets_judge"] == r["judge"] == str(out / "hardened1/judge")
    assert not r["targets_before"]["drawer-open"]["rl"] and rep["targets"]["drawer-open"]["rl"]
    # the exploits: the check run's policy acting in the world model on its (pretraining) task, simulator-labelled
    ds = LeRobotDataset(out / "hardened1/exploits/drawer-close")
    assert ds.num_episodes == 2 and ds.manifest["imagined"]
    assert ds.manifest["policy"] == str((out / "judge/drawer-close").resolve())
    assert set(ds.episodes["rawdream/env_task"]) == {"drawer-close"}
    # the judge retrained by its own recipe on its own data plus the exploits
    old = json.loads((tiny_judge / "judge.json").read_text())
    new = json.loads((out / "hardened1/judge/judge.json").read_text())
    assert new["dataset"].split(",") == [
        *old["dataset"].split(","),
        str(out / "hardened1/exploits/drawer-close"),
    ]
    assert (out / "hardened1/judge/config.yaml").read_text() == (tiny_judge / "config.yaml").read_text()
    # ... and checked again from the base policy, RL reading the retrained judge
    assert str(out / "hardened1/judge") in (out / "hardened1/drawer-close/config.yaml").read_text()
    md = capsys.readouterr().out
    assert "hardening round 1:" in md and "(before hardening)" in md and "| drawer-open |" in md
    # resumes: nothing collected, trained or run again
    calls.clear()
    mtime = (out / "hardened1/judge/judge.json").stat().st_mtime
    assert main([*args, "--harden_rounds=2", "--harden_episodes=2"]) == 0
    assert "[judge-check] RL against" not in capsys.readouterr().out
    assert (out / "hardened1/judge/judge.json").stat().st_mtime == mtime
    assert LeRobotDataset(out / "hardened1/exploits/drawer-close").num_episodes == 2
    # the re-check drew other RL streams than the run whose exploits the judge was shown
    seed = yaml.safe_load((out / "judge/drawer-close/config.yaml").read_text())["seed"]
    assert yaml.safe_load((out / "hardened1/drawer-close/config.yaml").read_text())["seed"] == seed + 1
    # a round made from other inputs is never reused as this one
    calls.clear()
    assert main([*args, "--harden_rounds=1", "--harden_episodes=3"]) == 2
    assert "holds a hardening round made from other inputs" in capsys.readouterr().err
    # hardening needs the per-target check
    assert main([*args, "--per_target=false", "--tasks=[reach]", "--harden_rounds=1"]) == 2
    assert "--harden_rounds=1 hardens the judge on the per-target check's exploits" in capsys.readouterr().err
