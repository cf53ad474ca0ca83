"""Training-step speed of the three trained models (world-model dynamics, policy, judge) at their preset sizes,
on each available device, with synthetic batches (the cost does not depend on the data) - measured in one run,
printed with the ratio to the CPU.

    python benchmarks/train_step_speed.py [--preset default] [--steps 20] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from rawdream.config import resolve
from rawdream.training import autocast, resolve_device, resolve_precision


def wm_step(preset: str, dev: torch.device, batch: int):
    from rawdream.world_model.model import WorldModel
    from rawdream.world_model.train import PretrainWMConfig

    cfg = resolve(PretrainWMConfig, "pretrain_wm", preset)
    torch.manual_seed(0)
    wm = WorldModel(cfg.model).to(dev).train()
    opt = torch.optim.AdamW(wm.dynamics.parameters(), lr=1e-4)
    k, c = wm.cfg.dynamics.context, wm.cfg.autoencoder.latent_channels
    h = wm.cfg.image_size // wm.cfg.autoencoder.factor
    g = torch.Generator().manual_seed(0)
    b = {
        "ctx": torch.randn(batch, k, c, h, h, generator=g),
        "anchor": torch.randn(batch, c, h, h, generator=g),
        "target": torch.randn(batch, c, h, h, generator=g),
        "actions": torch.randn(batch, wm.cfg.dynamics.chunk, wm.cfg.dynamics.action_dim, generator=g),
        "proprio": torch.randn(batch, wm.cfg.dynamics.proprio_dim, generator=g),
        "proprio_next": torch.randn(batch, wm.cfg.dynamics.proprio_dim, generator=g),
    }
    b = {key: v.to(dev) for key, v in b.items()}

    def step():
        with autocast(cfg.precision, dev):
            loss, _ = wm.training_loss(b, g)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, cfg.precision


def policy_step(preset: str, dev: torch.device, batch: int):
    from rawdream.policy.train import TrainPolicyConfig
    from rawdream.policy.vla import VLAModel

    cfg = resolve(TrainPolicyConfig, "train_policy_base", preset)
    torch.manual_seed(0)
    model = VLAModel(cfg.policy).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    p = cfg.policy
    images = torch.randint(0, 255, (batch, p.image_size, p.image_size, 3), dtype=torch.uint8, device=dev)
    proprio = torch.randn(batch, p.proprio_dim, device=dev)
    text = torch.randn(batch, 384, device=dev)
    target = torch.randint(0, p.bins, (batch, p.chunk, p.action_dim), device=dev)

    def step():
        with autocast(cfg.precision, dev):
            logits = model(images, proprio, text)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, p.bins), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, cfg.precision


def judge_step(preset: str, dev: torch.device, batch: int):
    from rawdream.reward.generalist import JudgeNet, TrainJudgeConfig

    cfg = resolve(TrainJudgeConfig, "train_judge", preset)
    torch.manual_seed(0)
    net = JudgeNet(cfg.model).to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    f = cfg.model.frames.middle + 2
    frames = torch.randint(0, 255, (batch, f, 64, 64, 3), dtype=torch.uint8, device=dev)
    text = torch.randn(batch, 2 * 384, device=dev)
    labels = torch.randint(0, 2, (batch,), device=dev).float()

    def step():
        with autocast(cfg.precision, dev):
            logits = net(frames, text)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, cfg.precision


MODELS = {"world-model dynamics": wm_step, "policy": policy_step, "judge": judge_step}
BATCH = {
    "world-model dynamics": ("pretrain_wm", "dyn_batch"),
    "policy": ("train_policy_base", "batch"),
    "judge": ("train_judge", "batch"),
}


def preset_batch(name: str, preset: str) -> int:
    from rawdream.policy.train import TrainPolicyConfig
    from rawdream.reward.generalist import TrainJudgeConfig
    from rawdream.world_model.train import PretrainWMConfig

    stage, key = BATCH[name]
    cls = {
        "pretrain_wm": PretrainWMConfig,
        "train_policy_base": TrainPolicyConfig,
        "train_judge": TrainJudgeConfig,
    }
    return int(getattr(resolve(cls[stage], stage, preset), key))


def timed(step, dev: torch.device, steps: int) -> float:
    for _ in range(3):  # warm-up (allocator, cuDNN autotuning)
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    devices = [resolve_device(d) for d in args.devices.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, preset {args.preset}")
    head = " ".join(f"{str(d) + ' steps/s':>22s}" for d in devices)
    print(f"{'model':22s} {'batch':>5s} {head}  {'vs ' + str(devices[0]) if len(devices) > 1 else ''}")
    for name, make in MODELS.items():
        batch = preset_batch(name, args.preset)
        cells, rates = [], []
        for dev in devices:
            step, precision = make(args.preset, dev, batch)
            rates.append(timed(step, dev, args.steps))
            cells.append(f"{rates[-1]:.2f} ({resolve_precision(precision, dev)})")
        ratio = " ".join(f"{r / rates[0]:.1f}x" for r in rates[1:])
        print(f"{name:22s} {batch:5d} " + " ".join(f"{c:>22s}" for c in cells) + f"  {ratio}")


if __name__ == "__main__":
    main()
