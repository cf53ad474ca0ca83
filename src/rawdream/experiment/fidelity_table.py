"""``rawdream experiment fidelity-table EVAL_DIR...``: the reward RL in imagination would see, one row per target
and ``rawdream eval-judge --policy --wm`` run - the world model's play protocol and training budget, then on the
SFT policy's own rollouts: real success, the judge's AUROC on the real videos and on the world model's replays of
the same actions, how often its verdicts on the two agree (Cohen's kappa), its judged-success rates real and
imagined, and whether the replay beats copy-first-frame in SSIM (whole frame / object region, steps of all) - as
markdown and as the JSON the README's tables quote. ``meets`` says whether a row reaches the targets
the reward-fidelity work aims at (AUROC >= 0.85 on real and on imagined video, kappa >= 0.6, imagined
judged-success rate within 15 points of the real success rate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rawdream.eval.metrics import fmt
from rawdream.io import read_json

TARGETS = {"auroc": 0.85, "kappa": 0.6, "rate_gap": 0.15}


def _steps_beating(model: list[float], copy: list[float]) -> str:
    return f"{sum(m > c for m, c in zip(model, copy))}/{len(model)}"


def fidelity_table(runs: list[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        run = Path(run)
        path = run / "judge_eval.json" if run.is_dir() else run
        if not path.exists():
            raise FileNotFoundError(
                f"{run}: no judge_eval.json - is it a `rawdream eval-judge --out` directory?"
            )
        on_policy = read_json(path).get("on_policy")
        if not on_policy:
            raise ValueError(
                f"{path}: no on-policy rows; run eval-judge with --policy POLICY --wm WORLD_MODEL to measure them"
            )
        wm = on_policy.get("world_model") or {}  # absent in reports written before it was recorded
        for task, r in on_policy["tasks"].items():
            real, imagined = r["judge_on_real"]["auroc"], r["judge_on_imagined"]["auroc"]
            kappa = r["verdict_agreement"]["kappa"]
            gap = abs(r["judged_success_rate"]["imagined"] - r["real_success_rate"])
            f = r["frames"]
            rows.append(
                {
                    "run": run.name
                    if run.is_dir()
                    else (run.parent.name if run.stem == "judge_eval" else run.stem),
                    "play_protocol": wm.get("play_protocol"),
                    "train_minutes": wm.get("train_minutes"),
                    "dynamics_steps": wm.get("dynamics_steps"),
                    "task": task,
                    "rollouts": r["rollouts"],
                    "real_success_rate": r["real_success_rate"],
                    "auroc_real": real,
                    "auroc_imagined": imagined,
                    "kappa": kappa,
                    "judged_success_rate": r["judged_success_rate"],
                    "ssim_steps_beating_copy": _steps_beating(f["ssim"], f["ssim_copy"]),
                    "object_ssim_steps_beating_copy": _steps_beating(f["object_ssim"], f["object_ssim_copy"]),
                    "meets": bool(
                        real >= TARGETS["auroc"]
                        and imagined >= TARGETS["auroc"]
                        and kappa >= TARGETS["kappa"]
                        and gap <= TARGETS["rate_gap"] + 1e-9
                    ),
                }
            )
    return rows


def format_fidelity_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| run | play | WM minutes | target | real success | AUROC real | AUROC imagined | kappa | judged success "
        "real / imagined | SSIM steps beating copy (frame / object) | targets met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        j = r["judged_success_rate"]
        minutes = "?" if r["train_minutes"] is None else f"{r['train_minutes']:g}"
        lines.append(
            f"| {r['run']} | {r['play_protocol'] or '?'} | {minutes} | {r['task']} | {fmt(r['real_success_rate'])} | "
            f"{fmt(r['auroc_real'])} | {fmt(r['auroc_imagined'])} | {fmt(r['kappa'])} | {fmt(j['real'])} / "
            f"{fmt(j['imagined'])} | {r['ssim_steps_beating_copy']} / {r['object_ssim_steps_beating_copy']} | "
            f"{'yes' if r['meets'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"
