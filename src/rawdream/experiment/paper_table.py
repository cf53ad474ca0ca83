"""``rawdream experiment paper-table``: the paper's results table in miniature, on the held-out target tasks.

Rows (each trained per target task and per RL seed from the same 1-shot SFT policy, then scored by the one
evaluation harness, :mod:`rawdream.eval.success`):

* ``sft`` - the 1-shot SFT policy itself;
* ``online_short`` / ``online_long`` - GRPO in the real simulator with its success as reward (counts the real
  target-task trajectories it consumes);
* ``rawdream`` - GRPO in the zero-shot world model, generalist judge, dual-noise verification;
* ``rawdream_no_dnv`` - the same without DNV;
* ``rawdream_oracle`` - the same with the simulator-oracle reward (the judge's ceiling; labelled as such);
* ``rawdream_cotrain`` - the same with the co-trained world model (the SFT demos mixed into its play data).

Every run resumes: a finished (row, task, seed) with an ``eval.json`` is not run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rawdream.config import build, save_config, to_dict
from rawdream.eval.success import EvalPolicyConfig, evaluate_policy, wilson
from rawdream.io import atomic_write_json, atomic_write_text, read_json, read_jsonl
from rawdream.rl.dream import DreamConfig, dream
from rawdream.splits import SplitConfig, resolve_split

ROWS = {
    "sft": "1-shot SFT",
    "online_short": "Online RL in the simulator, true reward (short)",
    "online_long": "Online RL in the simulator, true reward (long)",
    "rawdream": "RAW-Dream, zero-shot WM + generalist judge, DNV",
    "rawdream_no_dnv": "RAW-Dream, zero-shot WM + generalist judge, no DNV",
    "rawdream_oracle": "RAW-Dream, zero-shot WM + simulator-oracle reward (ceiling; ablation)",
    "rawdream_cotrain": "RAW-Dream, co-trained WM + generalist judge, DNV",
}


@dataclass
class PaperTableConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    rows: list[str] = field(default_factory=lambda: list(ROWS))
    tasks: list[str] = field(default_factory=list)  # default: the split's targets
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    dream: DreamConfig = field(default_factory=DreamConfig)
    online_short_iterations: int = 4
    online_long_iterations: int = 20
    eval: EvalPolicyConfig = field(default_factory=EvalPolicyConfig)

    def validate(self) -> None:
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown:
            raise ValueError(f"unknown paper-table rows {unknown}; choose from {', '.join(ROWS)}")


def run_paper_table(
    cfg: PaperTableConfig,
    out: str | Path,
    sft: str | Path,
    wm: str | Path | None,
    judge: str | Path | None,
    cotrain_wm: str | Path | None = None,
    progress: bool = True,
    log=print,
) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    split = resolve_split(cfg.split)
    tasks = cfg.tasks or list(split.targets)
    from rawdream.policy.train import load_policy

    sft_policy = load_policy(sft)
    results: dict[str, dict[str, list[dict]]] = {}
    dnv_stats: dict[str, dict[str, float]] = {}
    for row in cfg.rows:
        if row in ("rawdream_cotrain",) and not cotrain_wm:
            log(f"[paper-table] skipping {row}: no --cotrain-wm given")
            continue
        for task in tasks:
            for seed in cfg.seeds if row != "sft" else [0]:
                d = out / row / task / f"seed{seed}"
                ev = d / "eval.json"
                if ev.exists():
                    results.setdefault(row, {}).setdefault(task, []).append(read_json(ev))
                    continue
                log(f"[paper-table] {row} {task} seed {seed}")
                if row == "sft":
                    policy, budget = sft_policy, 0
                else:
                    dcfg = _row_config(cfg, row, task, seed, judge)
                    wm_path = cotrain_wm if row == "rawdream_cotrain" else wm
                    info = dream(
                        dcfg,
                        sft,
                        d / "policy",
                        wm_path=wm_path if dcfg.env_mode == "wm" else None,
                        progress=progress,
                        log_fn=log,
                    )
                    policy, budget = load_policy(d / "policy"), info["real_trajectories_rl"]
                ecfg = build(EvalPolicyConfig, {**to_dict(cfg.eval), "tasks": [task]})
                rep = evaluate_policy(policy, ecfg, None, progress=False)["tasks"][task]
                rep = {k: v for k, v in rep.items() if k != "episode_results"}
                rep.update(
                    {
                        "seed": seed,
                        "rl_real_trajectories": budget,
                        "target_demos": len(
                            [u for u in sft_policy.info.get("target_trajectories", []) if u["task"] == task]
                        ),
                    }
                )
                atomic_write_json(ev, rep)
                results.setdefault(row, {}).setdefault(task, []).append(rep)
            if row.startswith("rawdream"):
                dnv_stats.setdefault(row, {})[task] = _dnv(out / row / task)
    table = _aggregate(results, tasks)
    report = {
        "rows": table,
        "dnv": dnv_stats,
        "tasks": tasks,
        "seeds": cfg.seeds,
        "protocol": {"episodes_per_task": cfg.eval.episodes, "max_steps": cfg.eval.env.max_steps},
    }
    atomic_write_json(out / "paper_table.json", report)
    atomic_write_text(out / "paper_table.md", format_markdown(report))
    return report


def _row_config(
    cfg: PaperTableConfig, row: str, task: str, seed: int, judge: str | Path | None
) -> DreamConfig:
    base = to_dict(cfg.dream)
    base.update({"task": task, "seed": seed, "split": to_dict(cfg.split)})
    if row.startswith("online"):
        base.update(
            {
                "env_mode": "sim",
                "dnv": False,
                "iterations": cfg.online_short_iterations
                if row == "online_short"
                else cfg.online_long_iterations,
            }
        )
    else:
        judge_cfg = dict(base["judge"])
        if row == "rawdream_oracle":
            judge_cfg.update({"backend": "oracle", "allow_oracle": True})
        elif judge:
            judge_cfg.update({"backend": "generalist", "path": str(judge)})
        # the oracle replays the same actions in the deterministic simulator: a second draw can never flip
        dnv = row not in ("rawdream_no_dnv", "rawdream_oracle")
        base.update({"env_mode": "wm", "dnv": dnv, "judge": judge_cfg})
    return build(DreamConfig, base)


def _dnv(path: Path) -> dict[str, float]:
    rows = [
        r for f in path.glob("seed*/policy/metrics.jsonl") for r in read_jsonl(f) if r.get("stage") == "train"
    ]
    if not rows:
        return {}
    flips = float(np.sum([r["dnv_flips"] for r in rows]))
    judged = float(np.sum([r["reward_mean"] * r["rollouts"] for r in rows]))  # judged successes
    return {
        "flip_rate": flips / judged if judged else 0.0,  # of all judged successes, not a mean of ratios
        "flips": flips,
        "judged_successes": judged,
        "dropped_groups": float(np.sum([r["dropped_groups"] for r in rows])),
        "reliable_fraction": float(np.mean([r["reliable_fraction"] for r in rows])),
        "judge_reward_mean": float(np.mean([r["reward_mean"] for r in rows])),
    }


def _aggregate(results: dict[str, dict[str, list[dict]]], tasks: list[str]) -> dict[str, Any]:
    table = {}
    for row, per_task in results.items():
        cells, k_all, n_all = {}, 0, 0
        demos = rl = 0
        for task in tasks:
            reps = per_task.get(task, [])
            if not reps:
                continue
            k = sum(r["successes"] for r in reps)
            n = sum(r["episodes"] for r in reps)
            cells[task] = {
                "success_rate": k / n,
                "ci95": list(wilson(k, n)),
                "episodes": n,
                "per_seed": [r["success_rate"] for r in reps],
            }
            k_all, n_all = k_all + k, n_all + n
            demos += reps[0]["target_demos"]
            rl += int(np.mean([r["rl_real_trajectories"] for r in reps]))
        table[row] = {
            "label": ROWS[row],
            "tasks": cells,
            "average": float(np.mean([c["success_rate"] for c in cells.values()])) if cells else float("nan"),
            "average_ci95": list(wilson(k_all, n_all)),
            "target_trajectories": demos + rl,
            "target_trajectories_rl": rl,
            "target_demos": demos,
        }
    return table


def _cell(c: dict[str, Any]) -> str:
    lo, hi = c["ci95"]
    return f"{c['success_rate'] * 100:.1f} [{lo * 100:.0f}, {hi * 100:.0f}]"


def format_markdown(report: dict[str, Any]) -> str:
    tasks = report["tasks"]
    head = (
        "| method | target trajectories | "
        + " | ".join(f"{t} [95% CI]" for t in tasks)
        + " | average [95% CI] |"
    )
    lines = [head, "|" + "---|" * (len(tasks) + 3)]
    for row in report["rows"].values():
        cells = [_cell(row["tasks"][t]) if t in row["tasks"] else "" for t in tasks]
        lo, hi = row["average_ci95"]
        lines.append(
            f"| {row['label']} | {row['target_trajectories']} | "
            + " | ".join(cells)
            + f" | {row['average'] * 100:.1f} [{lo * 100:.1f}, {hi * 100:.1f}] |"
        )
    lines.append("")
    lines.append(
        f"Success % in the real simulator, {report['protocol']['episodes_per_task']} fixed evaluation "
        f"episodes per task and seed, RL seeds {report['seeds']}; intervals are Wilson 95% over pooled "
        f"episodes. Target trajectories: demonstrations plus real target-task rollouts used by RL."
    )
    if report["dnv"]:
        lines.append(
            "\nDual-noise verification (flipped / judged successes over all iterations): "
            + "; ".join(
                f"{row}/{task}: flip rate {s.get('flip_rate', float('nan')):.2f}, dropped groups "
                f"{s.get('dropped_groups', 0):.0f}"
                for row, per in report["dnv"].items()
                for task, s in per.items()
                if s
            )
        )
    return "\n".join(lines) + "\n"
