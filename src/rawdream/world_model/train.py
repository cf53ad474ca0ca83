"""``rawdream pretrain-wm``: train the autoencoder, then the latent dynamics, on a play dataset.

The world model must stay task-agnostic: data containing a held-out target task is refused unless a variant
that uses target data is named (``co-train``: the SFT demos mixed in; ``id-ft``: in-domain target rollouts);
the variant and the dataset manifest are recorded in the checkpoint. Both stages checkpoint every
``ckpt_every`` steps and resume exactly after a kill (per-step random streams, saved optimizer and EMA).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from rawdream import seeds
from rawdream.config import build, save_config, to_dict
from rawdream.data.cache import frame_cache
from rawdream.data.lerobot import LeRobotDataset
from rawdream.data.objects import object_positions, pixel_projector
from rawdream.io import load_model, save_model
from rawdream.nn import EMA, count_params
from rawdream.splits import SplitConfig, check_task_agnostic, resolve_split, task_free_target_scenes
from rawdream.training import (
    MetricsLogger,
    TrainerSettings,
    autocast,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    set_threads,
    step_generator,
)
from rawdream.world_model.data import Transitions, build_transitions, concat_transitions, make_batch
from rawdream.world_model.model import (
    FlowConfig,
    WorldModel,
    WorldModelConfig,
    lr_schedule,
    overlay_changed,
    psnr,
    ssim,
)

VARIANTS = ("zero-shot", "co-train", "id-ft")


@dataclass
class PretrainWMConfig(TrainerSettings):
    # settings added after runs were recorded: at these defaults a recorded stage stays valid (pipeline)
    HASH_QUIET: ClassVar[dict] = {
        "model.flow.object_region_weight": 0.0,
        "model.flow.object_region_sigma": 1.0,
    }
    RANGES: ClassVar[dict] = {
        **TrainerSettings.RANGES,
        "ae_steps": (">=0", "0 keeps the autoencoder untrained: only with --init"),
        "dyn_steps": (">=0", "0 trains no dynamics"),
        "ae_batch": ">=1",
        "dyn_batch": ">=1",
        "ae_lr": ">0",
        "dyn_lr": ">0",
        "weight_decay": ">=0",
        "ema_decay": "[0,1)",
        "val_fraction": "[0,1)",
        "ckpt_every": ">=1",
        "sample_every": (">=0", "0: no sample videos"),
        "sample_rollouts": ">=0",
        "ae_max_minutes": (">=0", "0: no time limit"),
        "dyn_max_minutes": (">=0", "0: no time limit"),
        "rollout_steps": (">=0", "0: teacher forcing only"),
        "rollout_fraction": "[0,1]",
        "ae_foreground_weight": (">=0", "0: every pixel weighs the same"),
        "ae_foreground_threshold": "[0,255]",
        "decoder_steps": (">=0", "0: the decoder stays as it is"),
    }

    split: SplitConfig = field(default_factory=SplitConfig)
    variant: str = "zero-shot"
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    ae_steps: int = 4000
    ae_batch: int = 64
    ae_lr: float = 1e-3
    # extra weight on the reconstruction error of foreground pixels - those further than ae_foreground_threshold
    # (0-255, any channel) from the empty workspace, the per-pixel median of the training frames. A puck or a goal
    # marker covers a few of 4,096 pixels, and an unweighted loss trades it for the table: an autoencoder of the
    # quick preset erased sweep-into's puck and goal and push's puck outright, and no dynamics or judge downstream
    # can bring back what the latent never held (docs/world-model.md)
    ae_foreground_weight: float = 0.0
    ae_foreground_threshold: float = 40.0
    # with --init: train the autoencoder's decoder on for this many steps (with the weighting above) and keep its
    # encoder - the latent space, and so the dynamics trained in it, stay valid; a cheap way to draw better what
    # the latents already hold
    decoder_steps: int = 0
    dyn_steps: int = 20000
    dyn_batch: int = 32
    dyn_lr: float = 4e-4
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    val_fraction: float = 0.03  # episodes held out (pretraining tasks) for validation loss and sample videos
    ckpt_every: int = 500
    sample_every: int = 2000
    sample_rollouts: int = 4
    # wall-clock limits per stage (0: none); a stage that reaches its limit stops early and says so
    ae_max_minutes: float = 0.0
    dyn_max_minutes: float = 0.0
    # training on its own rollouts: for this fraction of a batch, the context frames and hand are the model's own
    # imagination of the previous ``rollout_steps`` chunks (from the real ones before them), and the target is
    # still the real next frame - the model learns to steer back from its own drift instead of only ever seeing
    # real contexts, which a long rollout leaves after a few chunks (0: teacher forcing, the committed models)
    rollout_steps: int = 0
    rollout_fraction: float = 0.5

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"unknown world-model variant {self.variant!r}; use one of {', '.join(VARIANTS)}"
            )


def workspace_background(frames, idx: np.ndarray, max_frames: int = 2000) -> torch.Tensor:
    """The empty workspace: the per-pixel median of up to ``max_frames`` evenly spaced training frames (float,
    (H, W, 3)); objects and the arm move between frames and scenes, so the median keeps the table and walls."""
    sel = idx[np.linspace(0, len(idx) - 1, min(max_frames, len(idx))).astype(int)]
    return torch.from_numpy(np.median(np.asarray(frames[np.sort(sel)]), axis=0).astype(np.float32))


def foreground_weights(batch: torch.Tensor, background: torch.Tensor, weight: float, threshold: float):
    """(B, 1, H, W) per-pixel loss weights: 1 + ``weight`` where a uint8 frame differs from the background by more
    than ``threshold`` in any channel."""
    fg = (batch.float() - background.to(batch.device)).abs().amax(-1) > threshold
    return (1.0 + weight * fg.float())[:, None]


def _split_episodes(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a fraction of episodes; with fewer than 4 episodes (a co-train on a few demos) there is nothing
    to spare, so validation reuses the training episodes (and says so in its name only)."""
    perm = np.random.default_rng(seed).permutation(n)
    if n < 4:
        return np.sort(perm), np.sort(perm)
    n_val = max(1, round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _bounds(ds: LeRobotDataset, offset: int = 0) -> list[tuple[int, int]]:
    """Each episode's frame range in ``ds``, shifted by ``offset`` (its first frame among concatenated datasets)."""
    return [(lo + offset, hi + offset) for lo, hi in (ds.episode_bounds(e) for e in range(ds.num_episodes))]


def _frame_indices(bounds: list[tuple[int, int]], episodes: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(*bounds[int(e)]) for e in episodes])


class _Budget:
    def __init__(self, minutes: float):
        self.t0 = time.time()
        self.limit = minutes * 60 if minutes > 0 else float("inf")

    def exceeded(self) -> bool:
        return time.time() - self.t0 > self.limit


def train_autoencoder(
    model,
    frames,
    train_idx,
    val_idx,
    cfg,
    out: Path,
    log: MetricsLogger,
    progress: bool,
    decoder_only: bool = False,
):
    """Train the autoencoder (``ae_steps``), or with ``decoder_only`` its decoder alone (``decoder_steps``: the
    encoder, and so the latent space, frozen); returns the held-out reconstruction quality."""
    ae = model.ae
    steps, name = (cfg.decoder_steps, "decoder") if decoder_only else (cfg.ae_steps, "ae")
    params = ae.decoder.parameters() if decoder_only else ae.parameters()
    ae.encoder.requires_grad_(not decoder_only)
    opt = torch.optim.AdamW(params, lr=cfg.ae_lr, weight_decay=cfg.weight_decay)
    ckpt = out / "ckpt"
    meta = load_checkpoint(ckpt, name, ae, opt)
    start = meta["step"] if meta else 0
    log.rewind(start, (name,))  # steps logged after the checkpoint of a killed run come again
    budget = _Budget(cfg.ae_max_minutes)
    background = (
        workspace_background(frames, train_idx).to(model.device) if cfg.ae_foreground_weight > 0 else None
    )
    bar = tqdm(total=steps, initial=start, desc=name, disable=not progress, dynamic_ncols=True)
    ae.train()
    step = start
    for step in range(start, steps):
        g = step_generator(cfg.seed, step, stream=seeds.STREAM_WM_AUTOENCODER)
        idx = train_idx[torch.randint(len(train_idx), (cfg.ae_batch,), generator=g).numpy()]
        batch = torch.from_numpy(np.ascontiguousarray(frames[np.sort(idx)])).to(model.device)
        for group in opt.param_groups:
            # the autoencoder's warmup is the committed models' 200 steps; a short decoder fine-tune warms up a tenth
            warmup = min(200, max(1, steps // 10)) if decoder_only else 200
            group["lr"] = cfg.ae_lr * lr_schedule(step, steps, warmup=warmup)
        torch.manual_seed(seeds.step_seed(cfg.seed, step, seeds.STREAM_VAE_NOISE))
        weight = (
            None
            if background is None
            else foreground_weights(batch, background, cfg.ae_foreground_weight, cfg.ae_foreground_threshold)
        )
        with autocast(cfg.precision, model.device):
            loss, metrics = ae.loss(batch, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        bar.update()
        if (step + 1) % cfg.log_every == 0:
            prefix = "" if name == "ae" else "decoder_"
            row = {f"{prefix}ae/loss": loss.item(), **{prefix + k: v for k, v in metrics.items()}}
            log.log(step + 1, row, stage=name)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == steps:
            save_checkpoint(ckpt, name, ae, opt, step=step + 1)
        if budget.exceeded():
            save_checkpoint(ckpt, name, ae, opt, step=step + 1)
            break
    bar.close()
    ae.encoder.requires_grad_(True)
    ae.eval()
    return reconstruction_quality(model, frames, val_idx)


@torch.no_grad()
def reconstruction_quality(
    model: WorldModel, frames, idx: np.ndarray, max_frames: int = 512
) -> dict[str, float]:
    sel = idx[np.linspace(0, len(idx) - 1, min(max_frames, len(idx))).astype(int)]
    x = torch.from_numpy(np.ascontiguousarray(frames[sel]))
    rec = model.ae.decode(model.ae.encode(x.to(model.device))).cpu()
    return {"psnr": float(psnr(rec, x).mean()), "ssim": float(ssim(rec, x).mean())}


@torch.no_grad()
def encode_all(model: WorldModel, frames, batch: int = 256, progress: bool = False) -> torch.Tensor:
    """Raw (unnormalised) latent means of every frame, as float16 to halve memory."""
    out = []
    for i in tqdm(range(0, len(frames), batch), desc="encoding frames", disable=not progress, leave=False):
        x = torch.from_numpy(np.array(frames[i : i + batch])).to(model.device)
        out.append(model.ae.encode(x).to(torch.float16).cpu())
    return torch.cat(out)


def set_statistics(
    model: WorldModel, raw_latents: torch.Tensor, tr: Transitions, train_frames: np.ndarray
) -> None:
    z = raw_latents[torch.as_tensor(train_frames)].float()
    model.latent_mean.copy_(z.mean(dim=(0, 2, 3)))
    model.latent_std.copy_(z.std(dim=(0, 2, 3)).clamp_min(1e-4))
    mean, std = model.latent_mean.cpu().view(1, -1, 1, 1), model.latent_std.cpu().view(1, -1, 1, 1)
    zn = (raw_latents.float() - mean) / std
    sub = np.random.default_rng(seeds.WM_DELTA_STATS_SAMPLE).choice(
        len(tr), size=min(len(tr), 20000), replace=False
    )
    delta = zn[torch.as_tensor(tr.target[sub])] - zn[torch.as_tensor(tr.ctx[sub, -1])]
    model.delta_std.copy_(delta.std(dim=(0, 2, 3)).clamp_min(1e-3))
    model.proprio_mean.copy_(torch.as_tensor(tr.proprio.mean(0)))
    model.proprio_std.copy_(torch.as_tensor(tr.proprio.std(0)).clamp_min(1e-3))
    acts = tr.actions.reshape(-1, tr.actions.shape[-1])
    model.action_mean.copy_(torch.as_tensor(acts.mean(0)))
    model.action_std.copy_(torch.as_tensor(acts.std(0)).clamp_min(1e-3))
    set_object_statistics(model, tr)


def set_object_statistics(model: WorldModel, tr: Transitions) -> None:
    if model.has_objects:
        model.object_mean.copy_(torch.as_tensor(tr.objects_next.mean(0)))
        model.object_std.copy_(torch.as_tensor(tr.objects_next.std(0)).clamp_min(1e-3))


def train_dynamics(
    model,
    latents,
    tr: Transitions,
    val_tr: Transitions,
    frames,
    cfg,
    out: Path,
    log: MetricsLogger,
    progress: bool,
    frame_px: np.ndarray | None = None,
) -> dict[str, float]:
    """``frame_px``: (frames, objects, 2) the objects' image positions, for the object-region weight."""
    dyn = model.dynamics
    opt = torch.optim.AdamW(dyn.parameters(), lr=cfg.dyn_lr, weight_decay=cfg.weight_decay)
    ema = EMA(dyn, cfg.ema_decay)
    ckpt = out / "ckpt"
    meta = load_checkpoint(ckpt, "dyn", dyn, opt, ema)
    start = meta["step"] if meta else 0
    log.rewind(start, ("dyn", "samples"))  # steps logged after the checkpoint of a killed run come again
    budget = _Budget(cfg.dyn_max_minutes)
    bar = tqdm(total=cfg.dyn_steps, initial=start, desc="dynamics", disable=not progress, dynamic_ncols=True)
    val_idx = np.random.default_rng(seeds.WM_VALIDATION_SAMPLE).choice(
        len(val_tr), size=min(256, len(val_tr)), replace=False
    )
    prev = previous_transition(tr)
    last: dict[str, float] = {"steps": float(start)}
    for step in range(start, cfg.dyn_steps):
        dyn.train()
        g = step_generator(cfg.seed, step, stream=seeds.STREAM_WM_DYNAMICS)
        idx = torch.randint(len(tr), (cfg.dyn_batch,), generator=g).numpy()
        batch = make_batch(tr, latents, idx, model, frame_px)
        if cfg.rollout_steps:
            own_context(model, tr, latents, prev, idx, batch, cfg.rollout_steps, cfg.rollout_fraction, g)
        for group in opt.param_groups:
            group["lr"] = cfg.dyn_lr * lr_schedule(step, cfg.dyn_steps)
        with autocast(cfg.precision, model.device):
            loss, metrics = model.training_loss(batch, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(dyn.parameters(), 1.0)
        opt.step()
        ema.update(dyn)
        bar.update()
        if (step + 1) % cfg.log_every == 0:
            last = {
                "dyn/loss": loss.item(),
                "dyn/grad_norm": float(gnorm),
                **metrics,
                "steps": float(step + 1),
            }
            log.log(step + 1, last, stage="dyn")
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.dyn_steps or budget.exceeded():
            val = validation_loss(model, ema, latents, val_tr, val_idx)
            log.log(step + 1, val, stage="dyn")
            save_checkpoint(ckpt, "dyn", dyn, opt, ema, step=step + 1)
        if cfg.sample_every and ((step + 1) % cfg.sample_every == 0 or step + 1 == cfg.dyn_steps):
            sample_videos(
                model, ema, frames, val_tr, out / "samples" / f"step_{step + 1:07d}.mp4", cfg, log, step + 1
            )
        if budget.exceeded():
            last["steps"] = float(step + 1)
            last["stopped_by_time_limit"] = 1.0
            break
    bar.close()
    dyn.load_state_dict(ema.state_dict())  # sample with the EMA weights from here on
    return last


def previous_transition(tr: Transitions) -> np.ndarray:
    """For each transition, the index of the one whose target frame is its context's last frame (the previous
    chunk of the same episode), or -1 at an episode's start."""
    by_target = {int(t): i for i, t in enumerate(tr.target)}
    return np.array([by_target.get(int(c), -1) for c in tr.ctx[:, -1]])


@torch.no_grad()
def own_context(
    model, tr, latents, prev, idx, batch, steps: int, fraction: float, g: torch.Generator
) -> None:
    """Replace, for a ``fraction`` of the rows of ``batch`` that have ``steps`` previous chunks, the context
    latents and the hand with the model's own rollout of those chunks from the real observation before them
    (the sampler the model imagines with; each row its own noise stream). In place."""
    chain = [np.asarray(idx)]  # chain[k]: the transition k chunks before each row's (-1: before the episode)
    for _ in range(steps):
        cur = chain[-1]
        chain.append(np.where(cur >= 0, prev[np.maximum(cur, 0)], -1))
    pick = torch.rand(len(idx), generator=g).numpy() < fraction
    noise_seeds = torch.randint(2**31 - 1, (len(idx),), generator=g).tolist()
    rows = np.nonzero(pick & (chain[-1] >= 0))[0]
    if len(rows) == 0:
        return
    first = chain[-1][rows]  # the transition ``steps`` chunks back: its real context starts the rollout
    part = make_batch(tr, latents, first, model)
    ctx, p = part["ctx"], part["proprio"]
    anchor = batch["anchor"][rows]
    gens = [torch.Generator().manual_seed(noise_seeds[r]) for r in rows]
    for k in range(steps, 0, -1):
        j = chain[k][rows]
        acts = model.norm_actions(torch.as_tensor(tr.actions[j]).to(model.device))
        nxt, p = model.predict_next(ctx, anchor, acts, p, tr.step[j].tolist(), gens)
        ctx = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1)
    rows_t = torch.as_tensor(rows, device=batch["ctx"].device)
    batch["ctx"][rows_t] = ctx
    batch["proprio"][rows_t] = p


@torch.no_grad()
def validation_loss(model, ema, latents, val_tr, val_idx) -> dict[str, float]:
    dyn = model.dynamics
    backup = {k: v.clone() for k, v in dyn.state_dict().items()}
    dyn.load_state_dict(ema.state_dict())
    dyn.eval()
    batch = make_batch(val_tr, latents, val_idx, model)
    loss, metrics = model.training_loss(batch, torch.Generator().manual_seed(seeds.WM_VALIDATION_NOISE))
    dyn.load_state_dict(backup)
    return {"val/loss": loss.item(), **{f"val/{k.split('/')[-1]}": v for k, v in metrics.items()}}


@torch.no_grad()
def sample_videos(model, ema, frames, val_tr: Transitions, path: Path, cfg, log, step) -> None:
    """Open-loop rollouts of held-out play episodes (pretraining tasks): real | imagined side by side."""
    from rawdream.data.video import write_preview

    dyn = model.dynamics
    backup = {k: v.clone() for k, v in dyn.state_dict().items()}
    dyn.load_state_dict(ema.state_dict())
    dyn.eval()
    episodes = np.unique(val_tr.episode)[: cfg.sample_rollouts]
    real, first, prop, acts = [], [], [], []
    horizon = min(int(val_tr.step[val_tr.episode == e].max()) for e in episodes)
    for e in episodes:
        sel = np.nonzero(val_tr.episode == e)[0][:horizon]
        real.append(np.concatenate([frames[[val_tr.anchor[sel[0]]]], frames[val_tr.target[sel]]]))
        first.append(frames[val_tr.anchor[sel[0]]])
        prop.append(val_tr.proprio[sel[0]])
        acts.append(val_tr.actions[sel])
    out = model.rollout(
        torch.from_numpy(np.stack(first)),
        torch.from_numpy(np.stack(prop)),
        torch.from_numpy(np.stack(acts)),
        seeds=list(range(len(episodes))),
    )
    dyn.load_state_dict(backup)
    real_t = torch.from_numpy(np.stack(real))
    score = psnr(out["frames"], real_t)  # (B, H+1)
    log.log(
        step,
        {"samples/psnr_last": float(score[:, -1].mean()), "samples/psnr_mean": float(score[:, 1:].mean())},
        stage="samples",
    )
    grid = torch.cat([real_t, out["frames"]], dim=3)  # real | imagined
    video = grid.permute(1, 0, 2, 3, 4).reshape(grid.shape[1], -1, grid.shape[3], 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_preview(path, video.numpy(), fps=2, scale=2)


def pretrain_wm(
    cfg: PretrainWMConfig,
    data: str | Path,
    out: str | Path,
    progress: bool = True,
    log_fn=print,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train a world model on ``data`` (one dataset, or several comma-separated: e.g. play plus policy rollouts
    on pretraining tasks, each guarded on its own); with ``init``, fine-tune that world model instead (the paper's
    ID-FT variant: the pretrained autoencoder and latent statistics are kept, only the dynamics train on)."""
    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    paths = [p for p in str(data).split(",") if p]
    dss = [LeRobotDataset(p) for p in paths]
    split = resolve_split(cfg.split)
    free_scenes: list[str] = []
    leaked: list[str] = []
    for ds in dss:
        # the workspace play protocol: target scenes with task-free behaviour only are part of the workspace
        free = task_free_target_scenes(ds.manifest, split, ds.episodes)
        leaked += check_task_agnostic(
            ds.manifest,
            split,
            "world model",
            None if cfg.variant == "zero-shot" else cfg.variant,
            task_free_play=free,
        )
        free_scenes += free
    free_scenes, leaked = sorted(set(free_scenes)), sorted(set(leaked))
    save_config(cfg, out)
    keys = [ds.default_image_key() for ds in dss]
    parts = [frame_cache(ds, k, progress=progress) for ds, k in zip(dss, keys)]
    if len({p.shape[1:] for p in parts}) > 1:
        raise ValueError(
            f"the datasets' frames differ in size ({', '.join(f'{d}: {p.shape[1:3]}' for d, p in zip(paths, parts))}); "
            "train on datasets of one image size"
        )
    frames = parts[0] if len(parts) == 1 else np.concatenate(parts)
    size = frames.shape[1]
    if frames.shape[1] != frames.shape[2] or size % cfg.model.autoencoder.factor:
        raise ValueError(
            f"frames are {frames.shape[1:3]}; the world model needs square frames divisible by "
            f"{cfg.model.autoencoder.factor}"
        )
    dcfg = cfg.model.dynamics
    trs = [
        build_transitions(
            ds,
            dcfg.chunk,
            dcfg.context,
            object_positions(ds, split.backend, off="--model.dynamics.object_head=false")
            if dcfg.object_head
            else None,
        )
        for ds in dss
    ]
    tr_all = concat_transitions(trs, [ds.num_frames for ds in dss], [ds.num_episodes for ds in dss])
    bounds = [b for ds, f0 in zip(dss, np.cumsum([0] + [d.num_frames for d in dss])) for b in _bounds(ds, f0)]
    mcfg = build(
        WorldModelConfig,
        {
            **to_dict(cfg.model),
            "image_size": size,
            "dynamics": {
                **to_dict(cfg.model.dynamics),
                "action_dim": int(tr_all.actions.shape[-1]),
                "proprio_dim": int(tr_all.proprio.shape[-1]),
                "object_dim": int(tr_all.objects_next.shape[-1]),
            },
        },
    )
    torch.manual_seed(cfg.seed)
    added_objects = False
    if init:
        model = load_world_model(init)
        _check_compatible(model.cfg, mcfg, init)
        # the model's shape is the init's; the flow's training settings the command changed apply to the fine-tune
        flow = overlay_changed(model.cfg.flow, cfg.model.flow, FlowConfig.TRAINING_ONLY)
        # ... except the object-region weight, the command's own (0 included): it needs the data's camera, which
        # the fine-tune's data may not record
        flow = replace(
            flow,
            object_region_weight=cfg.model.flow.object_region_weight,
            object_region_sigma=cfg.model.flow.object_region_sigma,
        )
        mcfg = replace(model.cfg, flow=flow)
        if mcfg.dynamics.object_head != dcfg.object_head or (
            dcfg.object_head and mcfg.dynamics.object_target != dcfg.object_target
        ):
            if mcfg.dynamics.object_head:
                raise ValueError(
                    f"--init {init} has an object head; fine-tune it with --model.dynamics.object_head=true "
                    f"--model.dynamics.object_target={str(mcfg.dynamics.object_target).lower()}"
                )
            # the one shape change a fine-tune may make: an object head on a model without one, fresh weights
            mcfg = replace(
                mcfg,
                dynamics=replace(
                    mcfg.dynamics,
                    object_head=True,
                    object_target=dcfg.object_target,
                    object_dim=int(tr_all.objects_next.shape[-1]),
                ),
            )
            model = _with_object_head(model, mcfg)
            added_objects = True
        model.cfg = mcfg
        model = model.to(resolve_device(cfg.device))
    else:
        model = WorldModel(mcfg).to(resolve_device(cfg.device))
    frame_px = None
    if model.cfg.flow.object_region_weight > 0 and cfg.dyn_steps > 0:
        off = "--model.flow.object_region_weight=0"
        frame_px = np.concatenate(
            [pixel_projector(ds, off)(object_positions(ds, split.backend, off=off)) for ds in dss]
        )
    train_eps, val_eps = _split_episodes(len(bounds), cfg.val_fraction, cfg.seed)
    train_frames, val_frames = _frame_indices(bounds, train_eps), _frame_indices(bounds, val_eps)
    tr = tr_all.subset(np.isin(tr_all.episode, train_eps))
    val_tr = tr_all.subset(np.isin(tr_all.episode, val_eps))
    log = MetricsLogger(out)
    tasks = list(dict.fromkeys(t for ds in dss for t in ds.manifest.get("tasks", [])))
    log_fn(
        f"[pretrain-wm] {len(bounds)} episodes ({len(train_eps)} train / {len(val_eps)} val), "
        f"{len(tr)} transitions, tasks: {len(tasks)}; variant {cfg.variant}; "
        f"autoencoder {count_params(model.ae) / 1e6:.2f}M, {cfg.model.dynamics.arch} "
        f"{count_params(model.dynamics) / 1e6:.2f}M params"
    )

    # the trained autoencoder is saved as a model of its own (safetensors + JSON with its checksum, written last):
    # a run killed during the dynamics resumes with it instead of training it again
    t0 = time.time()
    if (out / "autoencoder.json").exists():
        _, meta, state = load_model(out, "autoencoder", "delete the folder to train again")
        model.ae.load_state_dict(state)
        recon = meta["reconstruction"]
    elif init:  # fine-tuning keeps the pretrained encoder: the dynamics' latent space must not move
        if cfg.ae_foreground_weight and not cfg.decoder_steps:
            raise ValueError(
                f"--ae_foreground_weight={cfg.ae_foreground_weight} with --init trains nothing without "
                f"--decoder_steps (the init's autoencoder is kept); add --decoder_steps=N or drop the weight"
            )
        recon = model.info["autoencoder_reconstruction"]
        if cfg.decoder_steps:  # ... but its decoder may learn to draw the latents better
            recon = train_autoencoder(
                model, frames, train_frames, val_frames, cfg, out, log, progress, decoder_only=True
            )
        save_model(
            out,
            "autoencoder",
            model.ae.state_dict(),
            {
                "reconstruction": recon,
                "seconds": time.time() - t0,
                "init": str(init),
                "decoder_steps": cfg.decoder_steps,
            },
        )
    else:
        if cfg.decoder_steps:
            raise ValueError(
                f"--decoder_steps={cfg.decoder_steps} fine-tunes the decoder of an --init world model; a new "
                f"autoencoder trains whole (--ae_steps)"
            )
        recon = train_autoencoder(model, frames, train_frames, val_frames, cfg, out, log, progress)
        save_model(
            out, "autoencoder", model.ae.state_dict(), {"reconstruction": recon, "seconds": time.time() - t0}
        )
    model.ae.eval()
    log_fn(
        f"[pretrain-wm] autoencoder: held-out play frames PSNR {recon['psnr']:.2f} dB, SSIM {recon['ssim']:.3f}"
    )

    raw = encode_all(model, frames, progress=progress)
    if not init:  # a fine-tuned model keeps the normalisation its dynamics learned under
        set_statistics(model, raw, tr, train_frames)
    elif added_objects:
        set_object_statistics(model, tr)
    mean, std = model.latent_mean.cpu().view(1, -1, 1, 1), model.latent_std.cpu().view(1, -1, 1, 1)
    latents = ((raw.float() - mean) / std).to(torch.float16)  # in CPU memory; batches move to the model
    del raw
    t1 = time.time()
    last = train_dynamics(model, latents, tr, val_tr, frames, cfg, out, log, progress, frame_px)
    log.close()
    summary = {
        "variant": cfg.variant,
        "init": str(Path(init).resolve()) if init else None,
        "dataset": ",".join(str(Path(p).resolve()) for p in paths),
        # the first dataset's manifest, with the tasks of all (what the guarantee table reads); each one's in
        # "manifests"
        "manifest": {**{k: v for k, v in dss[0].manifest.items() if k != "collect_config"}, "tasks": tasks},
        **(
            {"manifests": [{k: v for k, v in d.manifest.items() if k != "collect_config"} for d in dss]}
            if len(dss) > 1
            else {}
        ),
        "target_tasks_in_data": leaked,
        # workspace: play covered the target scenes too (task-free, unlabelled); pretraining: it did not
        "play_protocol": {
            "scenes": "workspace" if free_scenes else "pretraining",
            "task_free_target_scenes": free_scenes,
        },
        "split": split.as_dict(),
        "autoencoder_reconstruction": recon,
        "final_metrics": last,
        "seconds": {"total": time.time() - t_start, "dynamics": time.time() - t1},
        "params": {"autoencoder": count_params(model.ae), "dynamics": count_params(model.dynamics)},
    }
    save_world_model(model, out, summary)
    return summary


def _check_compatible(have: WorldModelConfig, want: WorldModelConfig, init) -> None:
    """A world model can only be fine-tuned on data of its own image size, action and proprioception sizes."""
    for what, a, b in [
        ("image size", have.image_size, want.image_size),
        ("action dim", have.dynamics.action_dim, want.dynamics.action_dim),
        ("proprio dim", have.dynamics.proprio_dim, want.dynamics.proprio_dim),
        ("chunk", have.dynamics.chunk, want.dynamics.chunk),
        *(
            [("object dim", have.dynamics.object_dim, want.dynamics.object_dim)]
            if have.dynamics.object_head and want.dynamics.object_head
            else []
        ),
    ]:
        if a != b:
            raise ValueError(
                f"--init {init}: its {what} is {a} but this dataset's is {b}; fine-tune on matching data"
            )


def _with_object_head(model: WorldModel, cfg: WorldModelConfig) -> WorldModel:
    """``model`` with an object head (fresh weights) added; everything it had stays as it was."""
    new = WorldModel(cfg)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any("object" not in k for k in missing):
        raise RuntimeError(f"adding an object head changed more than the head: {missing} {unexpected}")
    new.eval()
    new.info = model.info  # type: ignore[attr-defined]
    return new


def save_world_model(model: WorldModel, out: str | Path, info: dict[str, Any]) -> Path:
    return save_model(out, "world_model", model.state_dict(), {"config": to_dict(model.cfg), **info})


def load_world_model(path: str | Path) -> WorldModel:
    """Load a world model from its directory (or its .safetensors file)."""
    _, meta, sd = load_model(path, "world_model", "train one with `rawdream pretrain-wm`")
    model = WorldModel(build(WorldModelConfig, meta["config"]))
    model.load_state_dict(sd)
    model.eval()
    model.info = meta  # type: ignore[attr-defined]
    return model
