"""LIBERO speed against Meta-World's, one process each, measured in one run: env build, reset (fixed initial
state + settling) and rendered steps/s at the configured resolution, through the same Env contract.

The machine is shared and noisy: compare the ratios, not the absolutes; run nothing else meanwhile.

    python benchmarks/libero_speed.py [--steps 100] [--resets 5] [--json results/libero_speed.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rawdream.envs import EnvConfig, make_env


def measure(task: str, cfg: EnvConfig, steps: int, resets: int) -> dict[str, float]:
    t0 = time.perf_counter()
    env = make_env(task, cfg)
    build = time.perf_counter() - t0
    env.reset(0)  # the first reset allocates render buffers: not a reset's cost
    t0 = time.perf_counter()
    for i in range(resets):
        env.reset(i + 1)
    reset = (time.perf_counter() - t0) / resets
    rng = np.random.default_rng(0)
    n, t0 = 0, time.perf_counter()
    while n < steps:
        a = rng.uniform(-1, 1, env.action_dim)
        _, _, terminated, truncated, _ = env.step(a)
        n += 1
        if terminated or truncated:
            env.reset(n)
    step = (time.perf_counter() - t0) / steps
    env.close()
    return {"build_s": build, "reset_s": reset, "steps_per_s": 1.0 / step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--resets", type=int, default=5)
    ap.add_argument("--image_size", type=int, default=64)
    ap.add_argument("--libero_task", default="open_the_middle_drawer_of_the_cabinet")
    ap.add_argument("--metaworld_task", default="drawer-open")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    rows = {
        f"LIBERO ({args.libero_task})": measure(
            args.libero_task,
            EnvConfig(backend="libero", image_size=args.image_size, max_steps=300),
            args.steps,
            args.resets,
        ),
        f"Meta-World ({args.metaworld_task})": measure(
            args.metaworld_task,
            EnvConfig(image_size=args.image_size, max_steps=128),
            args.steps * 5,
            args.resets * 5,
        ),
    }
    print(f"one process, {args.image_size}x{args.image_size} frames rendered at every step")
    print(f"{'simulator':52s} {'build s':>8s} {'reset s':>8s} {'steps/s':>8s}")
    for name, r in rows.items():
        print(f"{name:52s} {r['build_s']:8.2f} {r['reset_s']:8.3f} {r['steps_per_s']:8.1f}")
    (lib, mw) = rows.values()
    print(
        f"Meta-World / LIBERO: {mw['steps_per_s'] / lib['steps_per_s']:.1f}x the steps/s, "
        f"{lib['reset_s'] / mw['reset_s']:.0f}x faster resets"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"image_size": args.image_size, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
