"""Ray scaling: one GRPO iteration in imagination locally, and on a local Ray cluster with 1 and 2
imagination workers, as ratios measured in one run; plus Ray's own per-iteration overhead (the weight
broadcast through the object store and a round trip to every worker).

    python benchmarks/ray_scaling.py [--policy DIR --wm DIR --judge DIR --reference DEMOS]

On a 2-core machine two workers cannot beat the local path by much: the local path already uses both cores
for batched convolutions; Ray pays off with more cores, more machines or GPUs (one replica each).
Without checkpoints, randomly initialised default-preset models are timed (cost does not depend on weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from rawdream.config import resolve
from rawdream.distributed import RayConfig, open_backend
from rawdream.rl.dream import DreamConfig, Dreamer

sys.path.insert(0, str(Path(__file__).parent))
from dream_iteration import _models, reference_demo


def time_iterations(policy, wm, judge, reference, task: str, n: int, imagination=None) -> float:
    overrides = {"task": task, "judge.path": judge, "judge.reference": reference, "eval_every": 0}
    cfg = resolve(DreamConfig, "dream", "default", overrides)
    d = Dreamer(cfg, policy, wm, log_fn=lambda *_: None, imagination=imagination)
    d.iteration(0)  # warm-up (and actor start-up)
    t0 = time.perf_counter()
    for it in range(1, n + 1):
        d.iteration(it)
    dt = (time.perf_counter() - t0) / n
    d.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=None)
    ap.add_argument("--wm", default=None)
    ap.add_argument("--judge", default=None)
    ap.add_argument("--reference", default=None, help="demos of the task (default: one collected here)")
    ap.add_argument("--task", default="drawer-open")
    ap.add_argument("--iterations", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        policy, wm, judge = _models(args, Path(tmp))
        reference = reference_demo(args, Path(tmp))
        local = time_iterations(policy, wm, judge, reference, args.task, args.iterations)
        rows.append(("local (this process, 2 threads)", local))
        for k in (1, 2):
            cfg = RayConfig(enabled=True, imagine_workers=k, sim_workers=k, worker_threads=max(1, 2 // k))
            with open_backend(cfg) as backend:
                from rawdream.distributed.ray_backend import RayImagination

                imag = backend.imagination(policy, wm)
                dt = time_iterations(
                    policy, wm, judge, reference, args.task, args.iterations, imagination=imag
                )
                rows.append((f"Ray, {k} imagination worker(s)", dt))
                if k == 2:  # Ray's own cost per iteration: broadcast the weights, reach every worker
                    import ray

                    imag = RayImagination(policy, wm, cfg)
                    ray.get([w.pid.remote() for w in imag.workers])
                    t0 = time.perf_counter()
                    for v in range(5):
                        imag.sync(v)
                        ray.get([w._load.remote(imag._weights, v) for w in imag.workers])
                    overhead = (time.perf_counter() - t0) / 5
                    imag.close()
    print(f"{'':36s} {'s / iteration':>14s} {'vs local':>9s}")
    for name, dt in rows:
        print(f"{name:36s} {dt:14.2f} {dt / local:9.2f}")
    print(
        f"\nRay overhead per iteration (weight broadcast + a round trip to 2 workers): {overhead * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
