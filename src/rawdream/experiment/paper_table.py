"""``rawdream experiment paper-table``: the paper's results table in miniature, and the ladder that swaps one link
at a time, on the held-out target tasks.

Rows (each trained per target task and per RL seed from the same 1-shot SFT policy, then scored by the one
evaluation harness, :mod:`rawdream.eval.success`). Read top to bottom they are the ladder: each rung swaps one
link of online RL for RAW-Dream's, so the drop from one row to the next says which link loses the gain.

* ``sft`` - the 1-shot SFT policy itself;
* ``online_short`` / ``online_long`` - GRPO in the real simulator with its success as reward: simulator
  observations + simulator success, the ceiling of RL itself (counts the real target trajectories it consumes);
* ``sim_judge`` - simulator observations + the judge's verdict on the real video: the judge alone;
* ``rawdream_oracle`` - imagined observations + the simulator's success for the imagined actions (the oracle
  replays them in the simulator): the world model alone;
* ``rawdream`` - RAW-Dream: imagined observations + the judge + dual-noise verification;
* ``rawdream_no_dnv`` - the same without DNV;
* ``rawdream_cotrain`` / ``rawdream_idft`` - the same with a co-trained world model (the SFT demos mixed into its
  play data) or an ID-FT one (fine-tuned on target-task rollouts; the paper's upper variant).

Every row is scored under both evaluation protocols, never mixed in one number: *practised* layouts (the initial
states RL trained from, the paper's LIBERO protocol) and *new* layouts (seeds disjoint from every training use).
Each cell is paired with the SFT policy on the same episodes (difference, bootstrap interval, exact McNemar).

Every run resumes: a finished (row, task, seed) with its evaluations on disk is not run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rawdream.config import build, save_config, to_dict
from rawdream.eval.success import EvalPolicyConfig, evaluate_policy, paired_difference, wilson
from rawdream.io import atomic_write_json, atomic_write_text, read_json, read_jsonl
from rawdream.reward.base import SHARED_SETTINGS, reading_through
from rawdream.rl.dream import DreamConfig, dream
from rawdream.splits import SplitConfig, resolve_split

ROWS = {
    "sft": "1-shot SFT",
    "online_short": "Online RL: sim observations + sim success (short)",
    "online_long": "Online RL: sim observations + sim success (long)",
    "sim_judge": "Sim observations + generalist judge (the judge alone)",
    "rawdream_oracle": "Imagined observations + sim success of the imagined actions (the WM alone)",
    "rawdream": "RAW-Dream: zero-shot WM + generalist judge + DNV",
    "rawdream_no_dnv": "RAW-Dream: zero-shot WM + generalist judge, no DNV",
    "rawdream_cotrain": "RAW-Dream: co-trained WM + generalist judge + DNV",
    "rawdream_idft": "RAW-Dream: ID-FT WM + generalist judge + DNV",
}
PROTOCOLS = ("practised", "new")
DNV_ROWS = ("rawdream", "rawdream_cotrain", "rawdream_idft")  # the rows that verify with a second noise draw


@dataclass
class PaperTableConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    rows: list[str] = field(default_factory=lambda: list(ROWS))
    tasks: list[str] = field(default_factory=list)  # default: the split's targets
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    dream: DreamConfig = field(default_factory=DreamConfig)
    online_short_iterations: int = 20
    online_long_iterations: int = 80
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    # practised layouts scored per task: 0 = every initial state RL trained from (dream.init_states)
    practised_episodes: int = 0
    eval: EvalPolicyConfig = field(default_factory=EvalPolicyConfig)  # its episodes: the new-layout count

    def validate(self) -> None:
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown:
            raise ValueError(f"unknown paper-table rows {unknown}; choose from {', '.join(ROWS)}")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad:
            raise ValueError(f"unknown protocols {bad}; choose from {', '.join(PROTOCOLS)}")
        if self.dream.split != SplitConfig() and self.dream.split != self.split:
            raise ValueError(
                "paper-table runs every row on its own --split (one split for the whole table); drop "
                "--dream.split.* and set --split.* instead"
            )
        if self.practised_episodes > self.dream.init_states:
            raise ValueError(
                f"practised_episodes={self.practised_episodes} but RL trains from only "
                f"dream.init_states={self.dream.init_states} layouts; lower it or raise dream.init_states"
            )


def eval_config(cfg: PaperTableConfig, task: str, protocol: str) -> EvalPolicyConfig:
    episodes = cfg.eval.episodes
    if protocol == "practised":
        episodes = cfg.practised_episodes or cfg.dream.init_states
    return build(
        EvalPolicyConfig, {**to_dict(cfg.eval), "tasks": [task], "layouts": protocol, "episodes": episodes}
    )


def run_paper_table(
    cfg: PaperTableConfig,
    out: str | Path,
    sft: str | Path,
    wm: str | Path | None,
    judge: str | Path | None,
    cotrain_wm: str | Path | None = None,
    progress: bool = True,
    log=print,
    idft_wm: str | Path | None = None,
) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    split = resolve_split(cfg.split)
    tasks = cfg.tasks or list(split.targets)
    from rawdream.policy.train import load_policy

    sft_policy = load_policy(sft)
    wms = {"rawdream_cotrain": cotrain_wm, "rawdream_idft": idft_wm}
    # results[row][task] -> list over seeds of {"seed", "rl_real_trajectories", "target_demos", protocol: report}
    results: dict[str, dict[str, list[dict]]] = {}
    for row in cfg.rows:
        if row in wms and not wms[row]:
            flag = "--cotrain-wm" if row == "rawdream_cotrain" else "--idft-wm"
            log(f"[paper-table] skipping {row}: no {flag} given")
            continue
        for task in tasks:
            for seed in cfg.seeds if row != "sft" else [0]:
                d = out / row / task / f"seed{seed}"
                done = d / "cell.json"
                if done.exists():
                    results.setdefault(row, {}).setdefault(task, []).append(_load_cell(d))
                    continue
                log(f"[paper-table] {row} {task} seed {seed}")
                if row == "sft":
                    policy, budget = sft_policy, 0
                else:
                    wm_path = wms.get(row) or wm
                    # a judge calibrated in imagination replays the demo in the world model of the table, the
                    # simulator rows' judge too
                    dcfg = _row_config(cfg, row, task, seed, judge)
                    dcfg.judge = reading_through(dcfg.judge, wm_path)
                    info = dream(
                        dcfg,
                        sft,
                        d / "policy",
                        wm_path=wm_path if dcfg.env_mode == "wm" else None,
                        progress=progress,
                        log_fn=log,
                    )
                    policy, budget = load_policy(d / "policy"), info["real_trajectories_rl"]
                cell = {
                    "task": task,
                    "seed": seed,
                    "rl_real_trajectories": budget,
                    "target_demos": len(
                        [u for u in sft_policy.info.get("target_trajectories", []) if u["task"] == task]
                    ),
                }
                for protocol in cfg.protocols:
                    rep = evaluate_policy(policy, eval_config(cfg, task, protocol), None, progress=False)
                    atomic_write_json(d / f"eval_{protocol}.json", rep["tasks"][task])
                atomic_write_json(done, cell)
                results.setdefault(row, {}).setdefault(task, []).append(_load_cell(d))
                write_report(cfg, out, results, tasks)  # after every cell: a long run shows progress
    return write_report(cfg, out, results, tasks)


def write_report(cfg: PaperTableConfig, out: Path, results, tasks) -> dict[str, Any]:
    # judged-success and DNV statistics, read back from the judged rows' metrics on disk
    dnv_stats = {
        row: {task: _dnv(out / row / task) for task in per_task}
        for row, per_task in results.items()
        if row.startswith("rawdream") or row == "sim_judge"
    }
    report = {
        "table": _aggregate(results, tasks, cfg.protocols),
        "dnv": dnv_stats,
        "tasks": tasks,
        "seeds": cfg.seeds,
        "protocols": {p: to_dict(eval_config(cfg, "*", p)) for p in cfg.protocols},
        "rl": {
            "iterations": cfg.dream.iterations,
            "online_short_iterations": cfg.online_short_iterations,
            "online_long_iterations": cfg.online_long_iterations,
            "rollouts_per_iteration": cfg.dream.groups * cfg.dream.group_size,
            "init_states": cfg.dream.init_states,
        },
    }
    atomic_write_json(out / "paper_table.json", report)
    atomic_write_text(out / "paper_table.md", format_markdown(report))
    return report


def _load_cell(d: Path) -> dict[str, Any]:
    cell = read_json(d / "cell.json")
    for f in d.glob("eval_*.json"):
        cell[f.stem.removeprefix("eval_")] = read_json(f)
    return cell


def _row_config(
    cfg: PaperTableConfig, row: str, task: str, seed: int, judge: str | Path | None
) -> DreamConfig:
    base = to_dict(cfg.dream)
    base.update({"task": task, "seed": seed, "split": to_dict(cfg.split)})
    judge_cfg = dict(base["judge"])
    if judge:  # the generalist trained at `judge`: a generalist section keeps its read-out (gate, threshold,
        # ensemble rule); another backend's section only its shared settings and reference
        if judge_cfg.get("backend") != "generalist":
            keep = (*SHARED_SETTINGS, "reference")
            judge_cfg = {k: v for k, v in judge_cfg.items() if k in keep}
        judge_cfg.update({"backend": "generalist", "path": str(judge)})
    if row.startswith("online"):
        iters = cfg.online_short_iterations if row == "online_short" else cfg.online_long_iterations
        base.update({"env_mode": "sim", "sim_reward": "success", "dnv": False, "iterations": iters})
    elif row == "sim_judge":
        # the real simulator is deterministic: a second draw of nothing cannot flip, so no DNV
        base.update({"env_mode": "sim", "sim_reward": "judge", "dnv": False, "judge": judge_cfg})
    else:
        if row == "rawdream_oracle":  # the oracle reads no judge directory or reference
            judge_cfg = {k: v for k, v in judge_cfg.items() if k in SHARED_SETTINGS}
            judge_cfg.update({"backend": "oracle", "allow_oracle": True})
        # the oracle replays the same actions in the deterministic simulator: a second draw can never flip
        dnv = row not in ("rawdream_no_dnv", "rawdream_oracle")
        base.update({"env_mode": "wm", "dnv": dnv, "judge": judge_cfg})
    if not base.get("dnv", True):
        # a row without DNV has nothing to redraw: --dream.dnv_* keys are for the others
        base.update({"dnv_world_model": "", "dnv_sampler": None})
    return build(DreamConfig, base)


def _dnv(path: Path) -> dict[str, float]:
    rows = [
        r for f in path.glob("seed*/policy/metrics.jsonl") for r in read_jsonl(f) if r.get("stage") == "train"
    ]
    if not rows:
        return {}
    flips = float(np.sum([r["dnv_flips"] for r in rows]))
    # judged successes are counted from the verdicts, not from the reward (a graded score is no count)
    judged = float(np.sum([round(r["judged_success_rate"] * r["rollouts"]) for r in rows]))
    rollouts = float(np.sum([r["rollouts"] for r in rows]))
    return {
        "flip_rate": flips / judged
        if judged
        else float("nan"),  # of all judged successes, not a mean of ratios
        "flips": flips,
        "judged_successes": judged,
        "rollouts": rollouts,
        "judged_success_rate": judged / rollouts if rollouts else float("nan"),
        "dropped_groups": float(np.sum([r["dropped_groups"] for r in rows])),
        "reliable_fraction": float(np.mean([r["reliable_fraction"] for r in rows])),
        "judge_reward_mean": float(np.mean([r["reward_mean"] for r in rows])),
    }


def _aggregate(results: dict[str, dict[str, list[dict]]], tasks: list[str], protocols) -> list[dict]:
    table = []
    sft = results.get("sft", {})
    for protocol in protocols:
        for row in [r for r in ROWS if r in results]:  # the ladder's order, whatever order the rows ran in
            per_task = results[row]
            cells, k_all, n_all = {}, 0, 0
            demos = rl = 0
            for task in tasks:
                reps = [r for r in per_task.get(task, []) if protocol in r]
                if not reps:
                    continue
                k = sum(r[protocol]["successes"] for r in reps)
                n = sum(r[protocol]["episodes"] for r in reps)
                cell = {
                    "successes": k,
                    "episodes": n,
                    "success_rate": k / n,
                    "ci95": list(wilson(k, n)),
                    "per_seed": [r[protocol]["success_rate"] for r in reps],
                }
                if row != "sft" and task in sft:
                    pairs = _paired(reps, sft[task], protocol)
                    if pairs:
                        cell["paired_vs_sft"] = pairs
                cells[task] = cell
                k_all, n_all = k_all + k, n_all + n
                demos += reps[0]["target_demos"]
                rl += int(np.mean([r["rl_real_trajectories"] for r in reps]))
            if not cells:
                continue
            entry = {
                "row": row,
                "method": ROWS[row],
                "protocol": protocol,
                "tasks": cells,
                "mean": float(np.mean([c["success_rate"] for c in cells.values()])),
                "mean_ci95": list(wilson(k_all, n_all)),
                "target_trajectories": demos + rl,
                "target_trajectories_rl": rl,
                "target_demos": demos,
            }
            if row != "sft" and sft:
                pairs = _paired(
                    [r for t in cells for r in per_task[t]],
                    [r for t in cells for r in sft.get(t, [])],
                    protocol,
                )
                if pairs:
                    entry["paired_vs_sft"] = pairs
            table.append(entry)
    return table


def _paired(reps: list[dict], sft_reps: list[dict], protocol: str) -> dict | None:
    """Each RL seed's episodes paired with the SFT policy's on the same seeds (SFT is evaluated once)."""
    sft_by = {
        (rep["task"], e["episode"]): e["success"]
        for rep in sft_reps
        if protocol in rep
        for e in rep[protocol]["episode_results"]
    }
    after, before = [], []
    for rep in reps:
        for e in rep.get(protocol, {}).get("episode_results", []):
            if (rep["task"], e["episode"]) in sft_by:
                k = f"{rep['task']}/{rep['seed']}/{e['episode']}"  # unique across tasks and RL seeds
                after.append({"episode": k, "success": e["success"]})
                before.append({"episode": k, "success": sft_by[(rep["task"], e["episode"])]})
    if not after:
        return None
    return paired_difference(before, after)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}"


def _cell(c: dict[str, Any]) -> str:
    lo, hi = c["ci95"]
    return f"{_pct(c['success_rate'])} [{lo * 100:.0f}, {hi * 100:.0f}]"


def format_markdown(report: dict[str, Any]) -> str:
    tasks = report["tasks"]
    lines = []
    for protocol in report["protocols"]:
        rows = [r for r in report["table"] if r["protocol"] == protocol]
        if not rows:
            continue
        p = report["protocols"][protocol]
        what = (
            "the initial states RL trained from"
            if protocol == "practised"
            else "seeds disjoint from all training"
        )
        lines.append(f"**{protocol} layouts** ({what}; {p['episodes']} episodes per task and seed)\n")
        lines.append(
            "| method | protocol | target trajectories | "
            + " | ".join(f"{t}" for t in tasks)
            + " | average [95% CI] | paired vs SFT [95% CI] | McNemar p |"
        )
        lines.append("|" + "---|" * (len(tasks) + 6))
        for row in rows:
            cells = [_cell(row["tasks"][t]) if t in row["tasks"] else "" for t in tasks]
            lo, hi = row["mean_ci95"]
            d = row.get("paired_vs_sft")
            diff = (
                f"{d['difference'] * 100:+.1f} [{d['ci95'][0] * 100:+.1f}, {d['ci95'][1] * 100:+.1f}]"
                if d
                else ""
            )
            pval = f"{d['mcnemar_p']:.3g}" if d else ""
            lines.append(
                f"| {row['method']} | {protocol} | {row['target_trajectories']} | "
                + " | ".join(cells)
                + f" | {_pct(row['mean'])} [{lo * 100:.1f}, {hi * 100:.1f}] | {diff} | {pval} |"
            )
        lines.append("")
    rl = report["rl"]
    lines.append(
        f"Success % in the real simulator (greedy actions), RL seeds {report['seeds']}; per-task Wilson 95% "
        f"intervals; the average's interval pools episodes; paired differences against 1-shot SFT on the same "
        f"episodes (bootstrap 95% interval, exact McNemar). RL: {rl['iterations']} iterations of "
        f"{rl['rollouts_per_iteration']} rollouts from {rl['init_states']} initial states per task (online: "
        f"{rl['online_short_iterations']} short / {rl['online_long_iterations']} long). Target trajectories: "
        f"demonstrations plus real target-task rollouts used by RL."
    )
    if report["dnv"]:
        lines.append(
            "\nJudged successes and dual-noise verification over all iterations (flipped / judged): "
            + "; ".join(
                f"{row}/{task}: judged {s['judged_success_rate']:.2f} of rollouts"
                + (
                    f", flip rate {s['flip_rate']:.2f}, dropped groups {s.get('dropped_groups', 0):.0f}"
                    if row in DNV_ROWS
                    else ""  # no second draw in this row: a flip rate would be undefined, not 0
                )
                for row, per in report["dnv"].items()
                for task, s in per.items()
                if s
            )
        )
    return "\n".join(lines) + "\n"
