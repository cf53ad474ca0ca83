"""``rawdream eval-policy``: success rate in the real simulator - the single source of truth for every row of the
results table.

Fixed evaluation seeds per task (``seeds.EVAL + i``, disjoint from every seed used in training); an episode
succeeds when the simulator reports success at any step, and ends there (the judges' label semantics);
episodes run in parallel worker processes with the policy batched in this process; greedy or sampled actions
(per-episode random streams, so results do not depend on scheduling); Wilson 95% intervals.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from rawdream import seeds
from rawdream.distributed import Backend, RayConfig, open_backend
from rawdream.envs.base import EnvConfig
from rawdream.envs.tasks import canonical_task
from rawdream.envs.vector import make_vector_env
from rawdream.io import atomic_write_json
from rawdream.splits import SplitConfig, resolve_split


@dataclass
class EvalPolicyConfig:
    RANGES: ClassVar[dict] = {
        "episodes": ">=1",
        "workers": (">=0", "0 or 1: in this process"),
        "envs_per_worker": ">=1",
        "temperature": (">=0", "0: greedy"),
        "seed_offset": ">=0",
        "videos": ">=0",
    }

    split: SplitConfig = field(default_factory=SplitConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    tasks: list[str] = field(
        default_factory=list
    )  # names, 'targets' or 'pretrain'; default: the split's targets
    episodes: int = 50
    workers: int = 2
    envs_per_worker: int = 4
    greedy: bool = True
    temperature: float = 1.0
    # new: seeds disjoint from every training use; practised: the initial states RL trained from (dream's
    # seeds DREAM_INIT + i, i < its init_states) - never mixed in one number
    layouts: str = "new"
    seed_offset: int = 0
    videos: int = 2  # episodes per task saved as mp4
    ray: RayConfig = field(default_factory=RayConfig)  # --ray: simulators as Ray actors

    def validate(self) -> None:
        if self.layouts not in seeds.LAYOUTS:
            raise ValueError(f"layouts={self.layouts!r}: use practised or new")
        if self.episodes < 1:
            raise ValueError(f"episodes={self.episodes} must be at least 1")

    def seed(self, i: int) -> int:
        return seeds.layout_seed(self.layouts, self.seed_offset + i)

    def resolved_tasks(self) -> list[str]:
        split = resolve_split(self.split)
        out: list[str] = []
        for t in self.tasks or ["targets"]:
            out.extend(
                split.targets
                if t == "targets"
                else split.pretrain
                if t == "pretrain"
                else [canonical_task(t)]
            )
        return list(dict.fromkeys(out))


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar test on the discordant pairs (gained: failed before, solved after; lost: the reverse)."""
    n, k = gained + lost, min(gained, lost)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def pool_paired(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired results (each with ``gained`` and ``lost`` episodes) pooled: the discordant episodes summed, one exact
    McNemar test on them."""
    gained, lost = sum(c["gained"] for c in cells), sum(c["lost"] for c in cells)
    return {"gained": gained, "lost": lost, "mcnemar_p": mcnemar_p(gained, lost)}


def before_after(c: dict[str, Any] | None, empty: str = "-") -> str:
    """One paired result as a table cell: ``37.5 -> 56.2% (+6 / -0)``."""
    return (
        f"{c['before'] * 100:.1f} -> {c['after'] * 100:.1f}% (+{c['gained']} / -{c['lost']})" if c else empty
    )


def paired_difference(before: list[dict], after: list[dict], resamples: int = 10_000) -> dict[str, Any]:
    """Success of ``after`` minus ``before`` on the same evaluation episodes (same seeds): the paired view is far
    tighter than two independent intervals. 95% interval by a seeded bootstrap over episodes; the exact McNemar
    test on the discordant pairs (episodes one policy solves and the other does not)."""
    b = {e["episode"]: bool(e["success"]) for e in before}
    a = {e["episode"]: bool(e["success"]) for e in after}
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("no evaluation episode in common: were both policies scored on the same seeds?")
    x = np.array([a[i] for i in common], float) - np.array([b[i] for i in common], float)
    rng = np.random.default_rng(seeds.BOOTSTRAP)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(1)
    gained, lost = int((x > 0).sum()), int((x < 0).sum())
    p = mcnemar_p(gained, lost)
    return {
        "difference": float(x.mean()),
        "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
        "episodes": len(common),
        "gained": gained,  # failed before, solved after
        "lost": lost,  # solved before, failed after
        "mcnemar_p": float(p),
    }


def evaluate_policy(
    policy,
    cfg: EvalPolicyConfig,
    out: str | Path | None = None,
    progress: bool = True,
    policy_for_task=None,
    backend: Backend | None = None,
) -> dict[str, Any]:
    """Run ``cfg.episodes`` episodes per task. ``policy_for_task(task)`` may pick a per-task policy (RL runs).
    ``backend``: where the simulators run (a caller's open backend); without one, ``cfg.ray`` decides."""
    if backend is not None:
        return _evaluate(policy, cfg, out, progress, policy_for_task, backend)
    with open_backend(cfg.ray) as opened:
        return _evaluate(policy, cfg, out, progress, policy_for_task, opened)


def _evaluate(policy, cfg: EvalPolicyConfig, out, progress: bool, policy_for_task, backend) -> dict[str, Any]:
    tasks = cfg.resolved_tasks()
    pick = policy_for_task or (lambda task: policy)
    chunk, adim = pick(tasks[0]).cfg.chunk, pick(tasks[0]).cfg.action_dim
    queue = deque((task, i) for task in tasks for i in range(cfg.episodes))
    n_slots = min(len(queue), max(1, cfg.workers) * cfg.envs_per_worker)
    results: dict[str, list[dict]] = {t: [] for t in tasks}
    frames_of: dict[tuple[str, int], list[np.ndarray]] = {}
    bar = tqdm(total=len(queue), desc="eval-policy", unit="ep", disable=not progress, dynamic_ncols=True)
    with make_vector_env(n_slots, cfg.env, num_workers=cfg.workers, backend=backend) as venv:
        slot_ep: list[tuple[str, int] | None] = [None] * n_slots
        obs: list[dict | None] = [None] * n_slots
        gens: list[torch.Generator | None] = [None] * n_slots
        steps = [0] * n_slots

        def start(slots: list[int]) -> None:
            todo = []
            for s in slots:
                if queue:
                    slot_ep[s] = queue.popleft()
                    todo.append(s)
                else:
                    slot_ep[s] = None
            if not todo:
                return
            resets = venv.reset(
                [cfg.seed(slot_ep[s][1]) for s in todo],
                [slot_ep[s][0] for s in todo],
                slots=todo,
            )
            for s, (o, _) in zip(todo, resets):
                obs[s] = o
                steps[s] = 0
                gens[s] = torch.Generator().manual_seed(seeds.stable_seed(slot_ep[s], cfg.seed_offset))
                if slot_ep[s][1] < cfg.videos:
                    frames_of[slot_ep[s]] = [o["image"]]

        start(list(range(n_slots)))
        while any(e is not None for e in slot_ep):
            active = [s for s in range(n_slots) if slot_ep[s] is not None]
            actions = np.zeros((len(active), chunk, adim), np.float32)
            by_task: dict[str, list[int]] = {}
            for j, s in enumerate(active):
                by_task.setdefault(slot_ep[s][0], []).append(j)
            for task, rows in by_task.items():
                pol = pick(task)
                batch = {
                    "image": np.stack([obs[active[j]]["image"] for j in rows]),
                    "proprio": np.stack([obs[active[j]]["proprio"] for j in rows]),
                    "instruction": [obs[active[j]]["instruction"] for j in rows],
                }
                if cfg.greedy:
                    actions[rows] = pol.greedy(batch)
                else:  # one row at a time so each episode draws from its own stream
                    for k, j in enumerate(rows):
                        one = {key: v[k : k + 1] for key, v in batch.items()}
                        actions[j] = pol.sample(one, cfg.temperature, gens[active[j]])[0][0]
            chunks = venv.step_chunk(actions, slots=active)
            finished = []
            for s, res in zip(active, chunks):
                obs[s] = res.obs
                steps[s] += res.steps
                if slot_ep[s] in frames_of:
                    frames_of[slot_ep[s]].append(res.obs["image"])
                if res.success or res.terminated or res.truncated:
                    task, i = slot_ep[s]
                    results[task].append(
                        {
                            "episode": i,
                            "seed": cfg.seed(i),
                            "success": bool(res.success or res.terminated),
                            "steps": steps[s],
                        }
                    )
                    finished.append(s)
                    bar.update()
            start(finished)
    bar.close()
    report = summarize(results, cfg)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "eval.json", report)
        from rawdream.data.video import write_preview

        for (task, i), frames in frames_of.items():
            ok = next(r["success"] for r in results[task] if r["episode"] == i)
            write_preview(
                out / "videos" / f"{task}_ep{i}_{'success' if ok else 'fail'}.mp4",
                np.stack(frames),
                fps=4,
                scale=4,
            )
    return report


def summarize(results: dict[str, list[dict]], cfg: EvalPolicyConfig) -> dict[str, Any]:
    per_task = {}
    for task, eps in results.items():
        k = sum(e["success"] for e in eps)
        lo, hi = wilson(k, len(eps))
        per_task[task] = {
            "success_rate": k / max(len(eps), 1),
            "successes": k,
            "episodes": len(eps),
            "ci95": [lo, hi],
            "mean_steps": float(np.mean([e["steps"] for e in eps])) if eps else 0.0,
            "episode_results": sorted(eps, key=lambda e: e["episode"]),
        }
    k = sum(r["successes"] for r in per_task.values())
    n = sum(r["episodes"] for r in per_task.values())
    return {
        "tasks": per_task,
        "mean_success_rate": float(np.mean([r["success_rate"] for r in per_task.values()])),
        "pooled": {"successes": k, "episodes": n, "ci95": list(wilson(k, n))},
        "protocol": {
            "episodes_per_task": cfg.episodes,
            "layouts": cfg.layouts,
            "seeds": f"{cfg.seed(0)}+i",
            "greedy": cfg.greedy,
            "temperature": cfg.temperature,
            "max_steps": cfg.env.max_steps,
            "success": "reported by the simulator at any step; the episode ends there",
        },
    }


def format_eval(report: dict[str, Any]) -> str:
    lines = [f"{'task':24s} {'success':>8s} {'95% CI':>15s} {'episodes':>9s} {'mean steps':>10s}"]
    for task, r in report["tasks"].items():
        lo, hi = r["ci95"]
        lines.append(
            f"{task:24s} {r['success_rate'] * 100:7.1f}% {f'[{lo * 100:.1f}, {hi * 100:.1f}]':>15s} "
            f"{r['episodes']:9d} {r['mean_steps']:10.1f}"
        )
    lo, hi = report["pooled"]["ci95"]
    lines.append(
        f"{'mean':24s} {report['mean_success_rate'] * 100:7.1f}% {f'[{lo * 100:.1f}, {hi * 100:.1f}]':>15s} "
        f"{report['pooled']['episodes']:9d}"
    )
    return "\n".join(lines)
