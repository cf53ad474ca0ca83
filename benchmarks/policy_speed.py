"""Policy speed: action chunks per second at batch 1 and 64, and evaluation episodes per second in the real
simulator with the simulator's share of the time - all in one run.

    python benchmarks/policy_speed.py [--policy runs/policy_base] [--episodes 16]

Without --policy a randomly initialised default-preset policy is timed (the cost does not depend on weights).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rawdream.config import resolve
from rawdream.envs import EnvConfig
from rawdream.envs.vector import VectorEnv
from rawdream.eval.success import EvalPolicyConfig, evaluate_policy
from rawdream.policy.tokenizer import ActionTokenizer
from rawdream.policy.train import TrainPolicyConfig, load_policy
from rawdream.policy.vla import VLAPolicy


def chunks_per_second(policy, batch: int, reps: int) -> float:
    rng = np.random.default_rng(0)
    obs = {
        "image": rng.integers(0, 255, (batch, 64, 64, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(batch, 4)).astype(np.float32),
        "instruction": ["open the drawer"] * batch,
    }
    policy.greedy(obs)
    t0 = time.perf_counter()
    for _ in range(reps):
        policy.sample(obs, 1.0, torch.Generator().manual_seed(0))
    return batch * reps / (time.perf_counter() - t0)


def sim_only_seconds(episodes: int, steps: int, workers: int) -> float:
    """The same number of chunk steps with zero actions: the simulator's own cost in the evaluation loop."""
    n = workers * 4
    with VectorEnv(n, EnvConfig(max_steps=steps), num_workers=workers) as venv:
        t0 = time.perf_counter()
        for _ in range(-(-episodes // n)):
            venv.reset(list(range(n)), "drawer-open")
            for _ in range(steps // 8):
                venv.step_chunk(np.zeros((n, 8, 4), np.float32))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=None)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.policy:
        policy = load_policy(args.policy)
    else:
        cfg = resolve(TrainPolicyConfig, "train_policy_base").policy
        policy = VLAPolicy(cfg, ActionTokenizer([-1] * 4, [1] * 4), np.zeros(4), np.ones(4)).eval()
    b1 = chunks_per_second(policy, 1, 50)
    b64 = chunks_per_second(policy, 64, 5)
    ecfg = resolve(
        EvalPolicyConfig,
        "eval_policy",
        "default",
        {"tasks": ["drawer-open"], "episodes": args.episodes, "workers": args.workers, "videos": 0},
    )
    t0 = time.perf_counter()
    evaluate_policy(policy, ecfg, None, progress=False)
    t_eval = time.perf_counter() - t0
    t_sim = sim_only_seconds(args.episodes, ecfg.env.max_steps, args.workers)
    print(f"policy: {args.policy or 'default preset (random weights)'}\n")
    print(f"action chunks/s, batch 1:  {b1:8.1f}")
    print(f"action chunks/s, batch 64: {b64:8.1f}")
    print(
        f"evaluation episodes/s ({args.episodes} episodes x {ecfg.env.max_steps} steps, {args.workers} workers, "
        f"policies that never succeed run the full length): {args.episodes / t_eval:.2f}"
    )
    print(
        f"simulator share of evaluation time: {min(1.0, t_sim / t_eval) * 100:.0f}% "
        f"(same steps with zero actions: {t_sim:.1f} s of {t_eval:.1f} s)"
    )


if __name__ == "__main__":
    main()
