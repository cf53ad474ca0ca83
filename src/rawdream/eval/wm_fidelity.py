"""``rawdream eval-wm``: replay the same actions in the real simulator and in the world model.

For each task, real episodes are rolled out with a noisy scripted expert (so the objects really move), keeping the
frame, the proprioception and the task objects' segmentation mask at every chunk end. The world model imagines
the same action chunks from the same first frame. Per autoregressive step we report, against the
copy-the-last-observed-frame baseline (open loop, that is the first frame):

* whole-frame PSNR and SSIM;
* proprioception error (hand position, metres);
* object-region PSNR: over the pixels where the task's objects are (now or at the start), only in episodes where
  an object has moved by then - whole-frame PSNR is dominated by the arm and the background and hides whether the
  drawer actually opened.

Writes ``wm_eval.json``, real | imagined side-by-side mp4s per task and a GIF contact sheet.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from rawdream import seeds
from rawdream.data.collect import EpisodeSpec, episode_results
from rawdream.envs.base import EnvConfig
from rawdream.envs.tasks import catalogue
from rawdream.eval.metrics import nanmean
from rawdream.eval.on_policy import RewardFidelityConfig
from rawdream.io import atomic_write_json
from rawdream.splits import SplitConfig, resolve_split
from rawdream.world_model.model import SamplerConfig, psnr, ssim


@dataclass
class EvalWMConfig:
    RANGES: ClassVar[dict] = {
        "episodes": ">=1",
        "horizon": ">=1",
        "sigma": ">=0",
        "moved_threshold": ">=0",
        "seeds_per_rollout": ">=1",
        "workers": (">=0", "0 or 1: in this process"),
        "videos": ">=0",
    }

    split: SplitConfig = field(default_factory=SplitConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    tasks: list[str] = field(default_factory=list)  # empty: the split's targets + a few pretraining tasks
    # empty: the simulator's probe tasks (its task catalogue's ``probe_tasks``)
    pretrain_tasks: list[str] = field(default_factory=list)
    episodes: int = 8
    horizon: int = 10  # AR steps (action chunks)
    sigma: float = 0.2  # noise on the scripted expert's actions
    moved_threshold: float = 0.02  # metres an object must have moved for the object-region metric
    seeds_per_rollout: int = 1
    sampler: SamplerConfig | None = None
    workers: int = 2
    videos: int = 4  # episodes per task in the side-by-side video
    # with --policy: the policy's own rollouts of the target tasks, and whether it decides on imagined frames as
    # on real ones (:mod:`rawdream.eval.imagination_transfer`; the RL initial states, temperature and horizon)
    on_policy: RewardFidelityConfig = field(default_factory=RewardFidelityConfig)


def replay_fidelity(
    real: np.ndarray, fake: np.ndarray, masks: np.ndarray, object_position: np.ndarray, moved_threshold: float
) -> dict[str, list[float]]:
    """Per AR step (1..H), imagined vs real frames of the same actions, beside the copy-the-first-frame baseline
    (open loop, the last observed frame is the first): whole-frame PSNR and SSIM, and object-region PSNR and SSIM
    over the pixels where the task's objects are (now or at the start), in the episodes where an object has moved
    by more than ``moved_threshold`` metres by then. ``real``/``fake`` (B, H+1, h, w, 3) uint8, ``masks``
    (B, H+1, h, w) bool, ``object_position`` (B, H+1, 3) the task's main object (``info["object_position"]``)."""
    rt, ft = torch.from_numpy(real), torch.from_numpy(fake)
    copy = torch.from_numpy(np.repeat(real[:, :1], real.shape[1], axis=1))
    out: dict[str, list[float]] = {
        "psnr": psnr(ft, rt).mean(0)[1:].tolist(),
        "psnr_copy": psnr(copy, rt).mean(0)[1:].tolist(),
        "ssim": ssim(ft, rt).mean(0)[1:].tolist(),
        "ssim_copy": ssim(copy, rt).mean(0)[1:].tolist(),
    }
    keys = ("object_psnr", "object_psnr_copy", "object_ssim", "object_ssim_copy", "object_moved_episodes")
    out.update({k: [] for k in keys})
    for s in range(1, real.shape[1]):
        moved = np.nonzero(np.abs(object_position[:, s] - object_position[:, 0]).max(-1) > moved_threshold)[0]
        region = torch.from_numpy(masks[moved, 0] | masks[moved, s])
        vals = {
            "object_psnr": [
                _region_psnr(fake[e, s], real[e, s], region[j].numpy()) for j, e in enumerate(moved)
            ],
            "object_psnr_copy": [
                _region_psnr(real[e, 0], real[e, s], region[j].numpy()) for j, e in enumerate(moved)
            ],
            "object_ssim": ssim(ft[moved, s], rt[moved, s], region).tolist() if len(moved) else [],
            "object_ssim_copy": ssim(rt[moved, 0], rt[moved, s], region).tolist() if len(moved) else [],
        }
        for k, v in vals.items():
            out[k].append(float(np.nanmean(v)) if len(v) and not np.all(np.isnan(v)) else float("nan"))
        out["object_moved_episodes"].append(len(moved))
    return out


def _region_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() == 0:
        return float("nan")
    diff = (a.astype(np.float64) - b.astype(np.float64))[mask]
    mse = max(float((diff**2).mean()), 1e-10)
    return 10 * np.log10(255.0**2 / mse)


def evaluate_world_model(
    wm,
    cfg: EvalWMConfig,
    out: str | Path,
    progress: bool = True,
    policy=None,
    world_model: dict | None = None,
) -> dict[str, Any]:
    """Scripted-expert replays of every task group; with ``policy`` also its imagination transfer per target.
    ``world_model``: what the model is (its provenance), recorded in the report for tables across models."""
    from rawdream.data.video import write_preview

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split = resolve_split(cfg.split)
    groups = {
        "target": list(cfg.tasks or split.targets),
        "pretrain": [
            t for t in cfg.pretrain_tasks or catalogue(split.backend).probe_tasks if t in split.pretrain
        ],
    }
    groups = {g: tasks for g, tasks in groups.items() if tasks}
    steps = cfg.horizon * wm.cfg.dynamics.chunk
    env_cfg = replace(cfg.env, image_size=wm.cfg.image_size)
    specs = [
        EpisodeSpec(
            task=t,
            seed=seeds.EVAL + i,
            behaviour="expert",
            sigma=cfg.sigma,
            max_steps=steps,
            frame_stride=wm.cfg.dynamics.chunk,
            object_masks=True,
        )
        for group in groups.values()
        for t in group
        for i in range(cfg.episodes)
    ]
    results = list(episode_results(specs, env_cfg, cfg.workers))
    report: dict[str, Any] = {"horizon": cfg.horizon, "episodes": cfg.episodes, "tasks": {}, "groups": {}}
    if world_model:
        report["world_model"] = world_model
    gif_rows = []
    for group, tasks in groups.items():
        for task in tasks:
            eps = [r for s, r in zip(specs, results) if s.task == task]
            real = np.stack([e["frames"] for e in eps])  # (E, H+1, h, w, 3)
            masks = np.stack([e["masks"] for e in eps])
            position = np.stack([e["object_position"] for e in eps])
            proprio = np.stack([e["data"]["observation.state"] for e in eps])
            actions = np.stack([e["data"]["action"][:-1] for e in eps])
            imagined = wm.rollout(
                torch.from_numpy(real[:, 0]),
                torch.from_numpy(proprio[:, 0]),
                torch.from_numpy(actions),
                seeds=list(range(len(eps))),
                sampler=cfg.sampler,
            )
            fake = imagined["frames"].numpy()
            fake_p = imagined["proprio"].numpy()
            flat = torch.from_numpy(real).flatten(0, 1)
            recon = wm.ae.decode(wm.ae.encode(flat))  # the autoencoder alone, on frames of this task
            row: dict[str, Any] = {
                "ae_psnr": float(psnr(recon, flat).mean()),
                "ae_ssim": float(ssim(recon, flat).mean()),
                **replay_fidelity(real, fake, masks, position, cfg.moved_threshold),
                "proprio_err": np.linalg.norm(fake_p[:, 1:, :3] - proprio[:, 1:, :3], axis=-1)
                .mean(0)
                .tolist(),
                "proprio_err_copy": np.linalg.norm(proprio[:, :1, :3] - proprio[:, 1:, :3], axis=-1)
                .mean(0)
                .tolist(),
            }
            report["tasks"][task] = {"group": group, **row}
            k = min(cfg.videos, len(eps))
            if k:  # --videos=0: the numbers only
                side = np.concatenate([real[:k], fake[:k]], axis=3)  # (k, H+1, h, 2w, 3)
                video = side.transpose(1, 0, 2, 3, 4).reshape(side.shape[1], -1, side.shape[3], 3)
                write_preview(out / f"{task}_real_vs_imagined.mp4", video, fps=2, scale=3)
                gif_rows.append(np.concatenate([real[0], fake[0]], axis=2))  # (H+1, h, 2w, 3)
        report["groups"][group] = _group_mean(report["tasks"], group)
    if gif_rows:
        import imageio.v3 as iio

        sheet = np.concatenate(gif_rows, axis=1).repeat(2, axis=1).repeat(2, axis=2)
        iio.imwrite(out / "real_vs_imagined.gif", sheet, duration=500, loop=0)
    report["sampler"] = (cfg.sampler or wm.cfg.sampler).__dict__
    if policy is not None:
        from rawdream.eval.imagination_transfer import imagination_transfer

        report["imagination_transfer"] = {
            t: imagination_transfer(policy, wm, t, cfg.on_policy) for t in groups.get("target", [])
        }
    atomic_write_json(out / "wm_eval.json", report)
    return report


def _group_mean(tasks: dict[str, dict], group: str) -> dict[str, list[float]]:
    rows = [r for r in tasks.values() if r["group"] == group]
    if not rows:
        return {}
    keys = [k for k in rows[0] if k not in ("group", "object_moved_episodes")]
    return {k: nanmean(np.array([r[k] for r in rows], dtype=float), axis=0).tolist() for k in keys}


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for group, row in report["groups"].items():
        if not row:
            continue
        lines.append(
            f"\n{group} tasks (mean over tasks): autoencoder reconstruction PSNR {row['ae_psnr']:.2f} dB, "
            f"SSIM {row['ae_ssim']:.3f}; per AR step 1..{report['horizon']}:"
        )
        lines.append(f"{'metric':22s} " + " ".join(f"{s:>6d}" for s in range(1, report["horizon"] + 1)))
        for key, label in [
            ("psnr", "PSNR world model"),
            ("psnr_copy", "PSNR copy-last"),
            ("ssim", "SSIM world model"),
            ("ssim_copy", "SSIM copy-last"),
            ("object_psnr", "object PSNR WM"),
            ("object_psnr_copy", "object PSNR copy"),
            ("object_ssim", "object SSIM WM"),
            ("object_ssim_copy", "object SSIM copy"),
            ("proprio_err", "hand err WM (cm)"),
            ("proprio_err_copy", "hand err copy (cm)"),
        ]:
            scale = 100.0 if "proprio" in key else 1.0
            fmt = "{:6.3f}" if "ssim" in key else "{:6.2f}"
            if key in row:
                lines.append(f"{label:22s} " + " ".join(fmt.format(v * scale) for v in row[key]))
    lines.append("\nper task, last AR step (WM / copy): PSNR | object PSNR")
    for task, row in report["tasks"].items():
        lines.append(
            f"  {task:24s} {row['psnr'][-1]:6.2f} / {row['psnr_copy'][-1]:6.2f} | "
            f"{row['object_psnr'][-1]:6.2f} / {row['object_psnr_copy'][-1]:6.2f}  ({row['group']})"
        )
    if report.get("imagination_transfer"):
        from rawdream.eval.imagination_transfer import format_transfer

        lines.append("\nimagination transfer (the policy's own rollouts from the RL initial states):")
        for task, rep in report["imagination_transfer"].items():
            lines += [f"{task}:", format_transfer(rep)]
    return "\n".join(lines)
