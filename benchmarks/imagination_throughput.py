"""Imagination throughput: imagined chunk transitions/s and frames/s at batch 1, 8 and 64, beside the real
simulator's rendered chunk transitions/s, measured in one run; peak memory.

Target on a 2-core CPU with the default preset: 64 rollouts of 10 chunks in at most 15 s, peak RSS under 4 GiB.

    python benchmarks/imagination_throughput.py [--wm runs/wm_default] [--horizon 10]

Without --wm a randomly initialised model of the default preset is timed (the cost does not depend on weights).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from rawdream.config import resolve
from rawdream.envs import EnvConfig
from rawdream.envs.vector import VectorEnv
from rawdream.world_model.imagined_env import ImaginedEnv
from rawdream.world_model.model import WorldModel
from rawdream.world_model.train import PretrainWMConfig, load_world_model


def imagine(wm, batch: int, horizon: int) -> float:
    env = ImaginedEnv(wm, horizon)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (batch, wm.cfg.image_size, wm.cfg.image_size, 3), dtype=np.uint8)
    env.reset(frames, rng.normal(size=(batch, 4)).astype(np.float32), ["x"] * batch, seeds=list(range(batch)))
    t0 = time.perf_counter()
    for _ in range(horizon):
        env.step(rng.uniform(-1, 1, (batch, 8, 4)).astype(np.float32))
    return time.perf_counter() - t0


def real_sim(horizon: int, workers: int = 2) -> float:
    """Seconds for `workers` simulators to execute `horizon` chunks each, rendering the chunk-end frames."""
    with VectorEnv(workers, EnvConfig(max_steps=500), num_workers=workers) as venv:
        venv.reset(list(range(workers)), "drawer-open")
        actions = np.zeros((workers, 8, 4), np.float32)
        venv.step_chunk(actions)
        t0 = time.perf_counter()
        for _ in range(horizon):
            venv.step_chunk(actions)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wm", default=None, help="world model directory; default: random default-preset model")
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    wm = (
        load_world_model(args.wm)
        if args.wm
        else WorldModel(resolve(PretrainWMConfig, "pretrain_wm").model).eval()
    )
    steps = wm.cfg.sampler.steps
    print(
        f"world model: {args.wm or 'default preset (random weights)'}; {wm.cfg.dynamics.arch}, "
        f"{steps} Euler steps per chunk, horizon {args.horizon} chunks\n"
    )
    imagine(wm, 8, 2)  # warm-up
    rows = []
    for batch in (1, 8, 64):
        dt = imagine(wm, batch, args.horizon)
        rows.append((f"imagined, batch {batch}", batch * args.horizon / dt, dt))
    dt = real_sim(args.horizon)
    rows.append(("real simulator, 2 worker processes", 2 * args.horizon / dt, dt))
    print(f"{'':38s} {'chunks/s':>9s} {'frames/s':>9s} {'wall s':>8s}")
    for name, rate, dt in rows:
        print(f"{name:38s} {rate:9.1f} {rate:9.1f} {dt:8.2f}")
    t64 = rows[2][2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"\n64 rollouts x {args.horizon} chunks: {t64:.1f} s (target <= 15 s: {'ok' if t64 <= 15 else 'MISSED'})"
    )
    print(f"imagined / real chunk throughput at batch 64: {rows[2][1] / rows[3][1]:.1f}x")
    print(f"peak RSS of this process: {rss:.2f} GiB (target < 4 GiB: {'ok' if rss < 4 else 'MISSED'})")


if __name__ == "__main__":
    main()
