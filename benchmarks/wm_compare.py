"""World-model design comparison at equal training wall-clock: U-Net vs DiT denoiser, clean-target (x) vs
velocity (v) prediction, with/without chunk-end proprio conditioning - scored by held-out-task fidelity.

Every variant reuses one trained autoencoder (copied from --ae), trains its dynamics for --minutes of wall
clock (steps set from each architecture's measured speed so its learning-rate schedule completes), and is scored
by eval-wm on the held-out target tasks. One run, one machine; the numbers go into the README.

    python benchmarks/wm_compare.py --data data/play --ae runs/wm_default --out runs/wm_compare --minutes 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from rawdream.config import resolve
from rawdream.eval.wm_fidelity import EvalWMConfig, evaluate_world_model
from rawdream.training import autocast
from rawdream.world_model.model import WorldModel
from rawdream.world_model.train import PretrainWMConfig, load_world_model, pretrain_wm

VARIANTS = {
    "unet-x": {"model.dynamics.proprio_target": True},
    "unet-x-no-proprio-target": {},
    "unet-v": {"model.flow.prediction": "v", "model.dynamics.proprio_target": True},
    "dit-x": {"model.dynamics.arch": "dit", "model.dynamics.proprio_target": True},
}


def steps_per_second(overrides: dict) -> float:
    cfg = resolve(PretrainWMConfig, "pretrain_wm", "default", overrides)
    model = WorldModel(cfg.model)
    opt = torch.optim.AdamW(model.dynamics.parameters(), 1e-4)
    b, c, s = cfg.dyn_batch, cfg.model.autoencoder.latent_channels, 16
    g = torch.Generator().manual_seed(0)
    batch = {
        "ctx": torch.randn(b, cfg.model.dynamics.context, c, s, s),
        "anchor": torch.randn(b, c, s, s),
        "target": torch.randn(b, c, s, s),
        "actions": torch.randn(b, 8, 4),
        "proprio": torch.randn(b, 4),
        "proprio_next": torch.randn(b, 4),
    }
    for i in range(6):
        if i == 1:
            t0 = time.perf_counter()
        with autocast(cfg.precision):
            loss, _ = model.training_loss(batch, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return 5 / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/play")
    ap.add_argument("--ae", default="runs/wm_default", help="directory holding autoencoder.safetensors/json")
    ap.add_argument("--out", default="runs/wm_compare")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = {}
    for name in args.variants.split(","):
        over = dict(VARIANTS[name])
        out = Path(args.out) / name
        out.mkdir(parents=True, exist_ok=True)
        for f in ("autoencoder.safetensors", "autoencoder.json"):
            shutil.copy(Path(args.ae) / f, out / f)
        if not (out / "world_model.json").exists():
            rate = steps_per_second(over)
            over.update(
                {
                    "dyn_steps": int(rate * args.minutes * 60 * 0.9),
                    "dyn_max_minutes": args.minutes,
                    "sample_every": 0,
                    "ckpt_every": 1000,
                }
            )
            cfg = resolve(PretrainWMConfig, "pretrain_wm", "default", over)
            print(f"[{name}] {rate:.2f} steps/s -> {cfg.dyn_steps} steps in {args.minutes} min")
            pretrain_wm(cfg, args.data, out, progress=False, log_fn=lambda *a: None)
        wm = load_world_model(out)
        ecfg = resolve(
            EvalWMConfig, "eval_wm", "default", {"episodes": args.episodes, "pretrain_tasks": ["push"]}
        )
        rep = evaluate_world_model(wm, ecfg, out / "eval", progress=False)
        tgt = rep["groups"]["target"]
        rows[name] = {
            "steps": wm.info["final_metrics"].get("steps"),
            "psnr": tgt["psnr"],
            "obj": tgt["object_psnr"],
            "psnr_copy": tgt["psnr_copy"],
            "obj_copy": tgt["object_psnr_copy"],
        }
        (Path(args.out) / "compare.json").write_text(json.dumps(rows, indent=1))
    print(
        f"\nheld-out target tasks, {args.episodes} episodes each, {args.minutes} min of dynamics training per variant"
    )
    print(
        f"{'variant':28s} {'steps':>6s} {'PSNR@1':>7s} {'PSNR@5':>7s} {'PSNR@10':>8s} {'objPSNR@5':>10s} "
        f"{'objPSNR@10':>10s} {'steps beating copy (frame/object)':>34s}"
    )
    for name, r in rows.items():
        win_f = int(np.sum(np.array(r["psnr"]) > np.array(r["psnr_copy"])))
        win_o = int(np.nansum(np.array(r["obj"]) > np.array(r["obj_copy"])))
        print(
            f"{name:28s} {r['steps'] or 0:6.0f} {r['psnr'][0]:7.2f} {r['psnr'][4]:7.2f} {r['psnr'][-1]:8.2f} "
            f"{r['obj'][4]:10.2f} {r['obj'][-1]:10.2f} {f'{win_f}/10 / {win_o}/10':>34s}"
        )
    r = next(iter(rows.values()))
    print(
        f"{'copy-last-frame baseline':28s} {'':6s} {r['psnr_copy'][0]:7.2f} {r['psnr_copy'][4]:7.2f} "
        f"{r['psnr_copy'][-1]:8.2f} {r['obj_copy'][4]:10.2f} {r['obj_copy'][-1]:10.2f}"
    )


if __name__ == "__main__":
    main()
