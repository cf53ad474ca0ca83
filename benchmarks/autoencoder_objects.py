"""Does a world model's autoencoder keep the objects? Whole-frame and object-region PSNR of its reconstructions.

A world model can only draw what its latent holds. Frames of every scene of the split (pretraining tasks and targets),
each from a few layouts and after a few random actions, go through each model's encoder and decoder; the object
region is the simulator's mask of the task's objects (privileged, for measuring only). Per task and averaged; "small"
averages the tasks whose objects cover fewer than 100 of the 4,096 pixels (pucks, goal markers, small handles), where
an unweighted reconstruction loss gives least. Layouts DREAM_INIT + 1000 + i (used by no RL run and no evaluation).

    python benchmarks/autoencoder_objects.py --wm runs/wm15/pn05 runs/c33/wm_fg \\
        [--layouts 3] [--json results/autoencoder_objects.json] [--png docs/img/autoencoder_objects.png]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from rawdream import seeds
from rawdream.envs import EnvConfig, make_env
from rawdream.splits import SplitConfig, resolve_split
from rawdream.world_model.train import load_world_model

SMALL = 100  # object pixels below which a task counts as having small objects


def frames_of(task: str, layouts: int, snapshots: int, steps_between: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) frames and (N, H, W) object masks: each layout's reset, then after random actions."""
    env = make_env(task, EnvConfig())
    rng = np.random.default_rng(seeds.stable_seed("autoencoder-objects", task))
    frames, masks = [], []
    try:
        for i in range(layouts):
            obs, _ = env.reset(seeds.DREAM_INIT + 1000 + i)
            for k in range(snapshots):
                frames.append(obs["image"])
                masks.append(env.object_mask())
                if k + 1 < snapshots:
                    for _ in range(steps_between):
                        obs, *_ = env.step(rng.uniform(-1, 1, env.action_dim).astype(np.float32))
    finally:
        env.close()
    return np.stack(frames), np.stack(masks)


@torch.no_grad()
def reconstruct(wm, frames: np.ndarray) -> np.ndarray:
    return torch.cat(
        [
            wm.ae.decode(wm.ae.encode(torch.from_numpy(frames[i : i + 128])))
            for i in range(0, len(frames), 128)
        ]
    ).numpy()


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean over frames of the PSNR (dB), over the whole frame or over the masked pixels (frames without any)."""
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if mask is None:
        mse = err.reshape(len(err), -1).mean(1)
    else:
        keep = mask.reshape(len(mask), -1).any(1)
        if not keep.any():  # no object in view in any frame: nothing to score
            return float("nan")
        mse = np.array([e[m].mean() for e, m in zip(err[keep], mask[keep])])
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wm", nargs="+", required=True, help="world model directories")
    ap.add_argument("--split", default="metaworld-heldout5")
    ap.add_argument("--layouts", type=int, default=3)
    ap.add_argument(
        "--snapshots", type=int, default=3, help="frames per layout: the reset, then after actions"
    )
    ap.add_argument("--steps_between", type=int, default=15, help="random actions between snapshots")
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None, help="a picture: real | each model, on --png_tasks' first reset")
    ap.add_argument("--png_tasks", nargs="+", default=["sweep-into", "push", "drawer-open", "lever-pull"])
    args = ap.parse_args()

    split = resolve_split(SplitConfig(name=args.split))
    tasks = list(split.pretrain) + list(split.targets)
    t0 = time.time()
    data = {t: frames_of(t, args.layouts, args.snapshots, args.steps_between) for t in tasks}
    print(
        f"{sum(len(f) for f, _ in data.values())} frames of {len(tasks)} scenes in {time.time() - t0:.0f} s"
    )
    models = {path: load_world_model(path).eval() for path in args.wm}
    per_task: dict[str, dict] = {}
    recs: dict[str, dict[str, np.ndarray]] = {p: {} for p in models}
    for t, (x, m) in data.items():
        row = {"object_pixels": float(m.reshape(len(m), -1).sum(1).mean()), "target": t in split.targets}
        for path, wm in models.items():
            rec = recs[path][t] = reconstruct(wm, x)
            row[path] = {"psnr": psnr(rec, x), "object_psnr": psnr(rec, x, m)}
        per_task[t] = row
    summary = {}
    for path in models:
        small = [r[path]["object_psnr"] for r in per_task.values() if 0 < r["object_pixels"] < SMALL]
        summary[path] = {
            "psnr": float(np.mean([r[path]["psnr"] for r in per_task.values()])),
            "object_psnr": float(np.nanmean([r[path]["object_psnr"] for r in per_task.values()])),
            "object_psnr_small": float(np.mean(small)) if small else None,
            "object_psnr_targets": {t: r[path]["object_psnr"] for t, r in per_task.items() if r["target"]},
        }
    n_small = sum(0 < r["object_pixels"] < SMALL for r in per_task.values())
    print(
        f"{'world model':40s} {'PSNR':>6s} {'object':>7s} {'small (' + str(n_small) + ')':>10s}   targets (object)"
    )
    for path, s in summary.items():
        tg = " ".join(f"{t} {v:.1f}" for t, v in s["object_psnr_targets"].items())
        small = "-" if s["object_psnr_small"] is None else f"{s['object_psnr_small']:.2f}"
        print(f"{path:40s} {s['psnr']:6.2f} {s['object_psnr']:7.2f} {small:>10s}   {tg}")
    if args.json:
        out = {"config": vars(args), "frames_per_task": args.layouts * args.snapshots, "small_pixels": SMALL}
        out |= {"summary": summary, "per_task": per_task}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.png:
        from PIL import Image

        rows = [
            np.concatenate([data[t][0][0]] + [recs[p][t][0] for p in models], 1)
            for t in args.png_tasks
            if t in data
        ]
        img = np.concatenate(rows, 0)
        Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3), Image.NEAREST).save(args.png)


if __name__ == "__main__":
    main()
