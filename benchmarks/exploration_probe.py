"""How much signal each exploration gives GRPO on one task, before any RL: the starting policy's sampled rollouts
in the real simulator, ``group_size`` from each of the RL run's practised initial states, per exploration x
temperature. GRPO learns only from groups whose rollouts disagree, so the numbers that matter are the informative
layouts (some but not all of a layout's rollouts succeed) and the failing layouts where any rollout succeeds
(pass@G on the layouts the greedy policy would fail).

The rollouts start from the online RL run's practised layouts (seeds DREAM_INIT + i) and are drawn as RL draws them
(rawdream.rl.rollouts.SimulatorRollouts; their sampling streams are not those of the run's first iteration); no
evaluation seed is touched.

    python benchmarks/exploration_probe.py --policy runs/quick/policy_sft --task sweep-into \\
        [--layouts 32] [--group_size 8] [--configs chunk:1.0 episode:1.0 chunk:1.6] [--json results/exploration_probe.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rawdream.envs.base import EnvConfig
from rawdream.envs.tasks import backend_of, canonical_task, instruction
from rawdream.policy.train import load_policy
from rawdream.rl.rollouts import Draw, SimulatorRollouts, sim_initial_states


def probe(policy, task: str, init, noise: str, temperature: float, group_size: int, batch: int, seed: int):
    """Success of ``group_size`` sampled rollouts from every initial state: an (layouts, group_size) array."""
    src = SimulatorRollouts(
        policy,
        init,
        task,
        instruction(task),
        EnvConfig(backend=backend_of(task)),
        16,
        temperature,
        seed,
        2,
        noise=noise,
    )
    per_batch = max(1, batch // group_size)
    out = []
    try:
        for it, start in enumerate(range(0, len(init), per_batch)):
            states = list(range(start, min(len(init), start + per_batch)))
            buf = src(Draw(it, [s for s in states for _ in range(group_size)]))
            out.append(np.asarray(buf["true_success"], bool).reshape(len(states), group_size))
    finally:
        src.close()
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--layouts", type=int, default=32)
    ap.add_argument("--group_size", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32, help="rollouts simulated at once")
    ap.add_argument(
        "--configs",
        nargs="+",
        default=["chunk:1.0", "episode:1.0", "chunk:1.6"],
        help="exploration:temperature pairs",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    task = canonical_task(args.task)
    policy = load_policy(args.policy).eval()
    init = sim_initial_states(task, args.layouts, EnvConfig(backend=backend_of(task)), 2)
    greedy = probe(policy, task, init, "token", 0.0, 1, args.batch, args.seed)[:, 0]
    rows = []
    for c in args.configs:
        noise, temp = c.split(":")
        t0 = time.perf_counter()
        s = probe(policy, task, init, noise, float(temp), args.group_size, args.batch, args.seed)
        k = s.sum(1)
        rows.append(
            {
                "exploration": noise,
                "temperature": float(temp),
                "sampled_success": float(s.mean()),
                "informative_layouts": int(((k > 0) & (k < args.group_size)).sum()),
                "all_fail_layouts": int((k == 0).sum()),
                "all_succeed_layouts": int((k == args.group_size).sum()),
                # the layouts RL must fix: those the greedy policy fails; on how many does any sampled rollout succeed
                "greedy_fail_layouts_with_a_success": int(((~greedy) & (k > 0)).sum()),
                "successes_per_layout": k.tolist(),
                "minutes": (time.perf_counter() - t0) / 60,
            }
        )
        print(
            f"{noise:>8} T={float(temp):<4} sampled {s.mean():.2f}  informative {rows[-1]['informative_layouts']:>2}"
            f"/{len(init)}  all-fail {rows[-1]['all_fail_layouts']:>2}  greedy-fail with a success "
            f"{rows[-1]['greedy_fail_layouts_with_a_success']:>2}/{int((~greedy).sum())}  "
            f"({rows[-1]['minutes']:.1f} min)",
            flush=True,
        )
    res = {
        "task": task,
        "policy": args.policy,
        "layouts": len(init),
        "group_size": args.group_size,
        "greedy_success": float(greedy.mean()),
        "greedy_per_layout": greedy.astype(int).tolist(),
        "rows": rows,
        "command": "python benchmarks/exploration_probe.py "
        + " ".join(
            f"--{k} {' '.join(v) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v is not None and k != "json"
        ),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
