"""``rawdream experiment transfer-table EVAL_DIR...``: does what the policy learns in imagination carry to the
simulator? One row per target and ``rawdream eval-wm --policy`` (or ``eval-judge --policy --wm``) run: the world
model (play protocol, dynamics steps), then on the policy's own rollouts from the RL initial states
(:mod:`rawdream.eval.imagination_transfer`): its success acting in the simulator and acting in imagination (its
imagined actions replayed in the simulator), how the two agree per initial state, and how far the policy's
action-token distributions move when it sees the world model's observations instead of the real ones (total
variation; the world model's frames with the real proprioception; the first frame with the real proprioception,
the baseline of a world model that draws nothing) - as markdown and as the JSON the README's tables quote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rawdream.eval.metrics import fmt
from rawdream.io import read_json


def _transfer_of(path: Path) -> tuple[dict, dict]:
    """(world-model provenance, {task: imagination_transfer}) from a wm_eval.json or a judge_eval.json."""
    rep = read_json(path)
    if "imagination_transfer" in rep:  # eval-wm --policy
        return rep.get("world_model") or {}, rep["imagination_transfer"]
    on_policy = rep.get("on_policy") or {}
    tasks = {
        t: r["imagination_transfer"]
        for t, r in on_policy.get("tasks", {}).items()
        if "imagination_transfer" in r
    }
    return on_policy.get("world_model") or {}, tasks


def transfer_table(runs: list[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        run = Path(run)
        found = [run / n for n in ("wm_eval.json", "judge_eval.json")] if run.is_dir() else [run]
        found = [p for p in found if p.exists()]
        if not found:
            raise FileNotFoundError(
                f"{run}: no wm_eval.json or judge_eval.json - an `eval-wm --out` directory?"
            )
        wm, tasks = _transfer_of(found[0])
        if not tasks:
            raise ValueError(
                f"{found[0]}: no imagination-transfer rows; run `rawdream eval-wm --policy POLICY` (or eval-judge "
                "with --policy and --wm) to measure them"
            )
        for task, r in tasks.items():
            view, loop = r["policy_view"], r["closed_loop"]
            rows.append(
                {
                    "run": run.name if run.is_dir() else run.parent.name,
                    "world_model": wm.get("path"),
                    "play_protocol": wm.get("play_protocol"),
                    "dynamics_steps": wm.get("dynamics_steps"),
                    "task": task,
                    "rollouts": loop["rollouts"],
                    "states": loop["states"],
                    "real_success_rate": loop["real_success_rate"],
                    "imagined_policy_success_rate": loop["imagined_policy_success_rate"],
                    "per_state_correlation": loop["per_state_correlation"],
                    # the imagined hand's distance from the real one at the last step (proprioception units)
                    "hand_err_last": view["hand_err"][-1] if "hand_err" in view else None,
                    # the same from the real frames with the model's own hand fed back, and one step at a time
                    "hand_err_own_last": r["hand_drift"]["own_hand"][-1] if "hand_drift" in r else None,
                    "hand_err_one_step": float(np.mean(r["hand_drift"]["teacher_forced"]))
                    if "hand_drift" in r
                    else None,
                    # means over AR steps 1..H-1 (step 0 is the real first observation for all three)
                    **{
                        k: float(np.mean(view[k][1:]))
                        for k in (
                            "tv",
                            "tv_frames",
                            "tv_copy",
                            "action_gap",
                            "action_gap_frames",
                            "action_gap_copy",
                        )
                        if k in view
                    },
                }
            )
    return rows


def format_transfer_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| run | play | dynamics steps | target | success: simulator / acting in imagination | per-state corr | "
        "policy token TV: WM / WM frames + real proprio / first frame + real proprio | imagined hand off, last step: "
        "open loop / real frames + own hand / one step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        steps = "?" if r["dynamics_steps"] is None else f"{r['dynamics_steps']:g}"
        tv = " / ".join(fmt(r.get(k)) for k in ("tv", "tv_frames", "tv_copy"))
        lines.append(
            f"| {r['run']} | {r['play_protocol'] or '?'} | {steps} | {r['task']} | {fmt(r['real_success_rate'])} / "
            f"{fmt(r['imagined_policy_success_rate'])} | {fmt(r['per_state_correlation'])} | {tv} | "
            f"{' / '.join(fmt(r.get(k), '.3f') for k in ('hand_err_last', 'hand_err_own_last', 'hand_err_one_step'))} |"
        )
    return "\n".join(lines) + "\n"
