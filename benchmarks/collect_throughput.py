"""Collection throughput: rendered env steps/s with 1 and N worker processes, against MuJoCo physics alone.

All numbers come from one run on this machine (it is shared and noisy: compare the ratios, not the absolutes).

    python benchmarks/collect_throughput.py [--workers 2] [--steps 400] [--task drawer-open]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rawdream.envs import EnvConfig, make_env
from rawdream.envs.vector import VectorEnv


def physics_steps_per_s(task: str, steps: int) -> float:
    env = make_env(task, EnvConfig(max_steps=500))
    env.reset(0)
    t0 = time.perf_counter()
    for i in range(steps):
        if env.t >= env.max_steps:
            env.reset(i)
        env.step(np.zeros(4), render=False)
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def rendered_steps_per_s(task: str, steps: int, workers: int, stride: int) -> float:
    """Env steps/s through VectorEnv when one frame is rendered every ``stride`` steps."""
    n = max(1, workers)
    cfg = EnvConfig(max_steps=500)
    with VectorEnv(n, cfg, num_workers=workers) as venv:
        venv.reset([0] * n, task)
        chunks = max(1, steps // stride)
        actions = np.zeros((n, stride, 4), np.float32)
        venv.step_chunk(actions)  # warm up (first render allocates GL buffers)
        t0 = time.perf_counter()
        done = 0
        for c in range(chunks):
            results = venv.step_chunk(actions)
            done += sum(r.steps for r in results)
            if any(r.truncated for r in results):
                venv.reset([c] * n, task)
        dt = time.perf_counter() - t0
    return done / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="drawer-open")
    ap.add_argument("--steps", type=int, default=400, help="env steps per measurement (per worker)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    physics = physics_steps_per_s(args.task, args.steps * 5)
    rows = [("MuJoCo physics only (1 process)", physics)]
    for workers in (0, args.workers):
        label = "in-process" if workers == 0 else f"{workers} worker processes"
        for stride in (1, 8):
            rate = rendered_steps_per_s(args.task, args.steps, workers, stride)
            rows.append((f"step + 64x64 render every {stride} step(s), {label}", rate))
    print(f"\ncollection throughput, task {args.task}, one run on this machine\n")
    print(f"{'measurement':62s} {'env steps/s':>12s} {'vs physics':>11s} {'frames/s':>9s}")
    for name, rate in rows:
        stride = 8 if "every 8" in name else 1
        frames = rate / stride if "render" in name else float("nan")
        print(f"{name:62s} {rate:12.0f} {rate / physics:11.3f} {frames:9.0f}")
    single = rows[1][1]
    parallel = rows[3][1]
    print(
        f"\nspeed-up of {args.workers} workers over in-process (render every step): {parallel / single:.2f}x"
    )


if __name__ == "__main__":
    main()
