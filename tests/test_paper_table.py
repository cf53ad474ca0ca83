"""The paper table's arithmetic: judged successes counted from verdicts (not from a graded reward), both evaluation
protocols kept apart, every RL cell paired with SFT on the same episodes."""

import json

import numpy as np
import pytest

from rawdream.experiment.paper_table import _aggregate, _dnv, format_markdown


def _metrics(path, rows):
    path.mkdir(parents=True)
    path.joinpath("metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_dnv_statistics_count_judged_successes_from_verdicts_not_from_the_score(tmp_path):
    # a graded-score run: the reward mean (0.4) says nothing about how many rollouts the judge called successes
    row = {
        "stage": "train",
        "rollouts": 32.0,
        "reward_mean": 0.4,
        "dropped_groups": 1.0,
        "reliable_fraction": 0.9,
    }
    _metrics(
        tmp_path / "seed0" / "policy",
        [
            {**row, "step": 1, "judged_success_rate": 0.25, "dnv_flips": 2.0},  # 8 judged, 2 flipped
            {**row, "step": 2, "judged_success_rate": 0.125, "dnv_flips": 4.0},  # 4 judged, 4 flipped
            {"stage": "eval", "step": 2, "eval/new/success_rate": 0.5},
        ],
    )
    s = _dnv(tmp_path)
    assert s["judged_successes"] == 12 and s["flips"] == 6
    assert s["flip_rate"] == pytest.approx(0.5)  # of all judged successes: 6 / 12, not reward_mean * rollouts
    assert s["judged_success_rate"] == pytest.approx(12 / 64)
    assert s["dropped_groups"] == 2


def test_dnv_statistics_with_no_judged_success_are_undefined_not_zero(tmp_path):
    _metrics(
        tmp_path / "seed0" / "policy",
        [
            {
                "stage": "train",
                "step": 1,
                "rollouts": 8.0,
                "reward_mean": 0.0,
                "judged_success_rate": 0.0,
                "dnv_flips": 0.0,
                "dropped_groups": 0.0,
                "reliable_fraction": 1.0,
            }
        ],
    )
    assert np.isnan(_dnv(tmp_path)["flip_rate"])


def _cell(task, seed, protocol_successes, rl=0):
    cell = {"task": task, "seed": seed, "rl_real_trajectories": rl, "target_demos": 1}
    for protocol, succ in protocol_successes.items():
        cell[protocol] = {
            "successes": int(sum(succ)),
            "episodes": len(succ),
            "success_rate": float(np.mean(succ)),
            "episode_results": [{"episode": i, "success": bool(x)} for i, x in enumerate(succ)],
        }
    return cell


def test_rows_are_paired_with_sft_per_protocol_and_never_mixed():
    sft = {"practised": [0] * 10, "new": [1] * 5 + [0] * 5}
    rl = {"practised": [1] * 8 + [0] * 2, "new": [1] * 5 + [0] * 5}
    results = {
        "sft": {"a": [_cell("a", 0, sft)], "b": [_cell("b", 0, sft)]},
        "online_short": {"a": [_cell("a", 0, rl, rl=64)], "b": [_cell("b", 0, sft, rl=64)]},
    }
    table = _aggregate(results, ["a", "b"], ["practised", "new"])
    by = {(r["row"], r["protocol"]): r for r in table}
    assert set(by) == {
        ("sft", "practised"),
        ("sft", "new"),
        ("online_short", "practised"),
        ("online_short", "new"),
    }
    prac = by[("online_short", "practised")]
    assert prac["tasks"]["a"]["successes"] == 8 and prac["mean"] == pytest.approx(0.4)
    # task a gained 8 episodes and lost none on practised layouts; pooled over both tasks: +8 of 20
    assert prac["tasks"]["a"]["paired_vs_sft"]["gained"] == 8
    assert prac["tasks"]["a"]["paired_vs_sft"]["mcnemar_p"] == pytest.approx(2 / 2**8)
    assert prac["paired_vs_sft"]["difference"] == pytest.approx(8 / 20)
    assert prac["paired_vs_sft"]["episodes"] == 20
    # on new layouts nothing changed: the practised gain does not leak into the new-layout number
    assert by[("online_short", "new")]["paired_vs_sft"]["difference"] == 0.0
    assert by[("online_short", "new")]["target_trajectories_rl"] == 128
    report = {
        "table": table,
        "dnv": {},
        "tasks": ["a", "b"],
        "seeds": [0],
        "protocols": {"practised": {"episodes": 10}, "new": {"episodes": 10}},
        "rl": {
            "iterations": 1,
            "online_short_iterations": 1,
            "online_long_iterations": 2,
            "rollouts_per_iteration": 8,
            "init_states": 10,
        },
    }
    md = format_markdown(report)
    assert "**practised layouts**" in md and "**new layouts**" in md
    assert "| +40.0 [" in md  # the pooled paired difference of the practised row


def test_rl_seeds_are_each_paired_with_the_one_sft_evaluation():
    sft = {"new": [0, 0, 1, 1]}
    results = {
        "sft": {"a": [_cell("a", 0, sft)]},
        "rawdream": {"a": [_cell("a", 0, {"new": [1, 0, 1, 1]}), _cell("a", 1, {"new": [1, 1, 1, 0]})]},
    }
    row = next(r for r in _aggregate(results, ["a"], ["new"]) if r["row"] == "rawdream")
    d = row["paired_vs_sft"]
    assert d["episodes"] == 8 and d["gained"] == 3 and d["lost"] == 1
    assert row["tasks"]["a"]["per_seed"] == [0.75, 0.75]


def test_fidelity_table_reads_eval_judge_reports_and_checks_the_targets(tmp_path):
    """One row per target of each eval-judge report; `meets` needs every target (AUROC real and imagined >= 0.85,
    kappa >= 0.6, imagined judged-success rate within 15 points of the real rate), not most of them."""
    from rawdream.experiment.fidelity_table import fidelity_table, format_fidelity_table
    from rawdream.io import atomic_write_json

    def task(auroc_im, kappa, judged_im, auroc_real=0.9):
        return {
            "rollouts": 64,
            "real_success_rate": 0.5,
            "judge_on_real": {"auroc": auroc_real},
            "judge_on_imagined": {"auroc": auroc_im},
            "verdict_agreement": {"kappa": kappa},
            "judged_success_rate": {"real": 0.5, "imagined": judged_im},
            "frames": {
                "ssim": [0.8, 0.6],
                "ssim_copy": [0.7, 0.7],
                "object_ssim": [0.5, 0.5],
                "object_ssim_copy": [0.4, 0.4],
            },
        }

    wm = {"play_protocol": "workspace", "train_minutes": 8.6, "dynamics_steps": 2000}
    tasks = {
        "good": task(0.9, 0.7, 0.65),  # 15 points off the real rate: still within
        "hallucinates": task(0.9, 0.7, 0.95),
        "chance": task(0.5, 0.7, 0.5),
        "disagrees": task(0.9, 0.3, 0.5),
        "blind on real": task(0.9, 0.7, 0.5, auroc_real=0.6),
    }
    atomic_write_json(tmp_path / "ev" / "judge_eval.json", {"on_policy": {"world_model": wm, "tasks": tasks}})
    rows = fidelity_table([tmp_path / "ev"])
    assert [r["task"] for r in rows if r["meets"]] == ["good"] and len(rows) == 5
    assert rows[0]["ssim_steps_beating_copy"] == "1/2" and rows[0]["object_ssim_steps_beating_copy"] == "2/2"
    assert "| ev | workspace | 8.6 | good |" in format_fidelity_table(rows)
    assert (
        fidelity_table([tmp_path / "ev" / "judge_eval.json"])[0]["run"] == "ev"
    )  # a report file: its folder
    atomic_write_json(tmp_path / "no_policy" / "judge_eval.json", {"results": {}})
    with pytest.raises(ValueError, match="--policy POLICY --wm"):
        fidelity_table([tmp_path / "no_policy"])


def test_eval_wm_with_a_policy_measures_imagination_transfer_and_tabulates_it(tiny_wm, tiny_policy, tmp_path):
    """`eval-wm --policy`: the policy's own rollouts of each target, acted out in the simulator and in imagination;
    the transfer table reads the report (one row per target) and refuses a report without those rows."""
    from rawdream.cli import main
    from rawdream.experiment.transfer_table import format_transfer_table, transfer_table
    from rawdream.io import read_json

    out = tmp_path / "ev"
    args = ["--on_policy.states=2", "--on_policy.rollouts_per_state=1", "--on_policy.horizon=2"]
    assert (
        main(
            [
                "eval-wm",
                "--wm",
                str(tiny_wm),
                "--policy",
                str(tiny_policy),
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--on_policy.workers=1",
                *args,
            ]
        )
        == 0
    )
    rep = read_json(out / "wm_eval.json")
    assert rep["world_model"]["dynamics_steps"] is not None
    loop = rep["imagination_transfer"]["drawer-open"]["closed_loop"]
    assert loop["rollouts"] == 2 and loop["states"] == 2
    rows = transfer_table([out])
    assert [r["task"] for r in rows] == ["drawer-open"] and rows[0]["tv_copy"] >= 0.0
    assert "| ev |" in format_transfer_table(rows)
    assert main(["eval-wm", "--wm", str(tiny_wm), "--out", str(tmp_path / "plain"), "--preset", "tiny"]) == 0
    with pytest.raises(ValueError, match="eval-wm --policy"):
        transfer_table([tmp_path / "plain"])


def test_a_rows_generalist_judge_keeps_the_sections_read_out():
    from rawdream.config import build
    from rawdream.experiment.paper_table import PaperTableConfig, _row_config

    judge = {"backend": "generalist", "object_gate": 0.5, "calibration": "demo", "calibration_cut": 0.75}
    cfg = build(PaperTableConfig, {"dream": {"judge": {**judge, "ensemble": "mean"}}})
    row = _row_config(cfg, "rawdream_dnv", "drawer-open", 0, "runs/x/judge")
    assert row.judge.path == "runs/x/judge"
    assert (row.judge.object_gate, row.judge.calibration, row.judge.calibration_cut) == (0.5, "demo", 0.75)
    assert row.judge.ensemble == "mean"
    # another backend's section gives the generalist only the shared settings
    served = build(PaperTableConfig, {"dream": {"judge": {"backend": "openai", "url": "http://x:1/v1"}}})
    assert _row_config(served, "rawdream_dnv", "drawer-open", 0, "runs/x/judge").judge.object_gate == 0.0


def test_the_dnv_keys_of_the_dream_section_reach_only_the_rows_with_dnv():
    """--dream.dnv_sampler.* / --dream.dnv_world_model shape DNV: the rows that verify take them, the rows without
    DNV (online, the judge alone, no DNV, the oracle) are built without them instead of refusing to build."""
    from rawdream.config import build
    from rawdream.experiment.paper_table import ROWS, PaperTableConfig, _row_config

    cfg = build(PaperTableConfig, {"dream": {"dnv_sampler": {"context_level": 600.0}, "dnv_flip": "failure"}})
    for row in ROWS:
        built = _row_config(cfg, row, "drawer-open", 0, "runs/x/judge")
        if built.dnv:
            assert built.dnv_sampler.context_level == 600.0 and built.dnv_flip == "failure"
        else:
            assert built.dnv_sampler is None and built.dnv_world_model == ""
