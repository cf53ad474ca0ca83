"""``rawdream train-policy``: multi-task behaviour cloning (``--stage base``) and 1-shot SFT (``--stage sft``).

* base: expert demos of the pretraining tasks (the analogue of the paper's LIBERO-90 base); refuses data
  containing a target task.
* sft: fine-tunes the base on ``--demos`` demonstrations of each chosen target task. One checkpoint is shared
  by all targets, as the paper's per-suite SFT (one demo per task, one model per suite): the targets share
  the data of each other's demo for the vision and language pathways, and RL starts from the same weights
  for every task. It records exactly which target trajectories it used.

Every step draws its batch from a per-step random stream, so a killed run resumes exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rawdream import seeds
from rawdream.config import build, save_config, to_dict
from rawdream.data.cache import frame_cache
from rawdream.data.lerobot import DatasetError, LeRobotDataset
from rawdream.data.objects import object_positions
from rawdream.envs.tasks import canonical_task, catalogue, paraphrases
from rawdream.envs.tasks import tasks_of as tasks_of_backend
from rawdream.nn import EMA, count_params
from rawdream.policy.base import POLICIES, PolicyConfig, load_policy, policy_config, save_policy
from rawdream.policy.tokenizer import ActionTokenizer
from rawdream.policy.vla import VLAPolicyConfig
from rawdream.splits import SplitConfig, check_task_agnostic, resolve_split
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
from rawdream.world_model.model import lr_schedule


@dataclass
class TrainPolicyConfig(TrainerSettings):
    RANGES: ClassVar[dict] = {
        **TrainerSettings.RANGES,
        "demos": ">=1",
        "steps": ">=1",
        "batch": ">=1",
        "lr": ">0",
        "weight_decay": ">=0",
        "ema_decay": "[0,1)",
        "augment_shift": ">=0",
        "target_sigma": ">=0",
        "label_smoothing": "[0,1)",
        "object_loss": ">=0",
        "ckpt_every": ">=1",
    }

    stage: str = "base"  # base | sft
    split: SplitConfig = field(default_factory=SplitConfig)
    policy: PolicyConfig = field(default_factory=policy_config)
    tasks: list[str] = field(
        default_factory=list
    )  # sft: targets to fine-tune on (default: all split targets)
    demos: int = 1  # sft: demonstrations per target task
    steps: int = 20000
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    augment_shift: int = 4  # random-shift augmentation (pixels), as in DrQ
    # soft targets over neighbouring bins, N(target, target_sigma bins) ("HL-Gauss"): the policy learns that
    # adjacent bins are adjacent actions, so sampling it explores *near* the demonstrated action. Uniform label
    # smoothing instead puts ~9% of every token's mass on far-away bins, and RL rollouts sampled from it jerk to
    # random action values several times per chunk (0 turns the Gaussian targets off).
    target_sigma: float = 1.5
    label_smoothing: float = 0.0  # uniform label smoothing, on top (the old default was 0.1)
    # weight of an auxiliary loss: predict the objects' positions (the simulator state the demonstrations record,
    # normalised) from the vision features. Privileged labels at training time only; the policy acts from pixels.
    # Without it the base policy replays each task's mean motion wherever the object lies (object_conditioning).
    object_loss: float = 0.0
    ckpt_every: int = 1000

    def validate(self) -> None:
        if self.stage not in ("base", "sft"):
            raise ValueError(f"train-policy --stage must be base or sft, got {self.stage!r}")
        if self.demos < 1:
            raise ValueError(f"--demos must be at least 1, got {self.demos}")


@dataclass
class BCSamples:
    frame: np.ndarray  # (N,) global frame index
    proprio: np.ndarray  # (N, P)
    actions: np.ndarray  # (N, chunk, A)
    mask: np.ndarray  # (N, chunk) valid actions (not past the episode's end)
    instruction: list[str]
    episode: np.ndarray


def bc_samples(ds: LeRobotDataset, episodes: list[int], chunk: int) -> BCSamples:
    """Every frame of the chosen episodes with the next ``chunk`` actions (stride-1 demonstrations)."""
    if ds.frame_stride != 1:
        raise DatasetError(
            f"{ds.root}: behaviour cloning needs demonstrations with every frame (frame_stride 1), "
            f"this dataset has frame_stride {ds.frame_stride}; collect with `rawdream collect demos`"
        )
    actions = ds.column("action").astype(np.float32)
    state = ds.column("observation.state").astype(np.float32)
    rows: dict[str, list] = {k: [] for k in ("frame", "proprio", "actions", "mask", "instruction", "episode")}
    for e in episodes:
        lo, hi = ds.episode_bounds(e)
        task = ds.episodes["tasks"][e][0]
        last = hi - 1  # the final row holds the end frame and a no-op: not an action to imitate
        for t in range(lo, last):
            idx = np.arange(t, t + chunk)
            valid = idx < last
            rows["frame"].append(t)
            rows["proprio"].append(state[t])
            rows["actions"].append(actions[np.minimum(idx, last - 1)])
            rows["mask"].append(valid)
            rows["instruction"].append(task)
            rows["episode"].append(e)
    return BCSamples(
        frame=np.asarray(rows["frame"]),
        proprio=np.asarray(rows["proprio"]),
        actions=np.asarray(rows["actions"]),
        mask=np.asarray(rows["mask"]),
        instruction=rows["instruction"],
        episode=np.asarray(rows["episode"]),
    )


def random_shift(images: torch.Tensor, pad: int, gen: torch.Generator, offsets: bool = False):
    """(B, H, W, C) uint8 -> the same, shifted by up to ``pad`` pixels (replicate padding); with ``offsets``, also
    each image's shift (B, 2): how far its content moved right and down, in px."""
    if pad <= 0:
        return (images, torch.zeros(len(images), 2, dtype=torch.long)) if offsets else images
    b, h, w, _ = images.shape
    x = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    out = torch.stack([x[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w] for i in range(b)])
    out = out.round().to(torch.uint8).permute(0, 2, 3, 1)
    return (out, torch.stack([pad - ox, pad - oy], dim=1)) if offsets else out


def _select_episodes(ds: LeRobotDataset, cfg: TrainPolicyConfig) -> tuple[list[int], list[str], list[dict]]:
    split = resolve_split(cfg.split)
    tasks_of = ds.episodes.get("rawdream/env_task") or [None] * ds.num_episodes
    success = ds.episodes.get("rawdream/success") or [True] * ds.num_episodes
    if cfg.stage == "base":
        check_task_agnostic(ds.manifest, split, "base policy")
        eps = [e for e in range(ds.num_episodes) if success[e]]
        return eps, sorted({str(t) for t in tasks_of if t}), []
    wanted = [canonical_task(t) for t in (cfg.tasks or split.targets)]
    texts = [
        str(t[0]).strip().lower() if len(t) else "" for t in ds.episodes.get("tasks", [[]] * ds.num_episodes)
    ]

    def shows(e: int, task: str) -> bool:
        # our datasets name the simulator task; others (e.g. a LIBERO conversion) name it by its instruction
        if tasks_of[e] is not None:
            return tasks_of[e] == task
        return texts[e] in {p.lower() for p in paraphrases(task)}

    eps, used = [], []
    for task in wanted:
        mine = [e for e in range(ds.num_episodes) if shows(e, task) and success[e]]
        if len(mine) < cfg.demos:
            fix = (
                f"collect them into a new dataset with `rawdream collect demos --task {task} "
                f"--episodes_per_task={cfg.demos} --out DIR` (it retries seeds until the expert succeeds, and says "
                f"so if it cannot), or bring your own demonstrations (LeRobot v3) as --data"
                if catalogue(split.backend).experts
                else f"{split.backend} has no scripted experts: bring a dataset with more demonstrations of it"
            )
            raise DatasetError(
                f"{ds.root} has {len(mine)} successful demos of {task}, --demos {cfg.demos} needs more; {fix}"
            )
        chosen = mine[: cfg.demos]
        eps += chosen
        # matched by instruction: say which other tasks share it (LIBERO-90 repeats some targets' instructions in
        # other scenes), so that a mixed dataset cannot hand SFT another scene's episode unnoticed
        shared = [
            t
            for t in tasks_of_backend(split.backend)
            if t != task and paraphrases(t)[0] == paraphrases(task)[0]
        ]
        used += [
            {
                "task": task,
                "episode": e,
                "seed": ds.episodes.get("rawdream/seed", [None] * ds.num_episodes)[e],
                **(
                    {}
                    if tasks_of[e] is not None
                    else {"matched_by": "instruction", "instruction_also_names": shared}
                ),
            }
            for e in chosen
        ]
    return eps, wanted, used


def gaussian_targets(bins: int, sigma: float) -> torch.Tensor:
    """(bins, bins): row t is a discretised Gaussian over bins centred on t (the soft target for token t)."""
    x = torch.arange(bins, dtype=torch.float32)
    q = torch.exp(-0.5 * ((x[None, :] - x[:, None]) / sigma) ** 2)
    return q / q.sum(1, keepdim=True)


def token_loss(
    logits: torch.Tensor, target: torch.Tensor, soft: torch.Tensor | None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Per-token cross-entropy (same shape as ``target``) against a one-hot or a soft (Gaussian) target."""
    bins = logits.shape[-1]
    logp = F.log_softmax(logits.float(), dim=-1)
    q = soft[target] if soft is not None else F.one_hot(target, bins).float()
    if label_smoothing > 0:
        q = (1 - label_smoothing) * q + label_smoothing / bins
    return -(q * logp).sum(-1)


def train_policy(
    cfg: TrainPolicyConfig,
    data: str | Path,
    out: str | Path,
    init: str | Path | None = None,
    progress: bool = True,
    log_fn=print,
) -> dict[str, Any]:
    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    ds = LeRobotDataset(data)
    episodes, tasks, used = _select_episodes(ds, cfg)
    for u in used:
        if u.get("instruction_also_names"):
            log_fn(
                f"[train-policy] warning: episode {u['episode']} was matched to {u['task']} by its instruction, "
                f"which {', '.join(u['instruction_also_names'])} share: make sure the dataset holds {u['task']}'s "
                f"scene (or give it a rawdream/env_task column)"
            )
    if not episodes:
        raise DatasetError(f"{ds.root} has no successful demonstrations to imitate")
    samples = bc_samples(ds, episodes, cfg.policy.chunk)
    frames = frame_cache(ds, progress=progress)
    objects = None
    if cfg.object_loss > 0:
        objects = object_positions(ds, resolve_split(cfg.split).backend)[samples.frame]
        # per-coordinate z-scores; a slot a task leaves empty (constant) stays ~0 instead of blowing up
        objects = (objects - objects.mean(0)) / np.maximum(objects.std(0), 0.01)
        objects = torch.from_numpy(objects.astype(np.float32))
    torch.manual_seed(cfg.seed)
    if cfg.stage == "sft":
        if init is None:
            raise ValueError("train-policy --stage sft needs --init BASE_DIR (a base policy to fine-tune)")
        policy = load_policy(init)
        pcfg = policy.cfg
    else:
        stats = ds.stats
        a_min = np.minimum(np.asarray(stats["action"]["min"], np.float32), -1.0)
        a_max = np.maximum(np.asarray(stats["action"]["max"], np.float32), 1.0)
        pcfg = build(
            PolicyConfig,
            {
                **to_dict(cfg.policy),
                "image_size": int(frames.shape[1]),
                "action_dim": int(samples.actions.shape[-1]),
                "proprio_dim": int(samples.proprio.shape[-1]),
                **({"object_outputs": int(objects.shape[1])} if objects is not None else {}),
            },
        )
        if not isinstance(pcfg, VLAPolicyConfig):
            raise ValueError(
                f"train-policy trains token policies (--policy.type=vla), not {pcfg.type!r}: a policy type of "
                f"your own brings its own trainer and is stored with rawdream.policy.base.save_policy"
            )
        policy = POLICIES.get(pcfg.type)(
            pcfg,
            ActionTokenizer(a_min, a_max, pcfg.bins),
            samples.proprio.mean(0),
            samples.proprio.std(0) + 1e-3,
        )
    if objects is not None and getattr(pcfg, "object_outputs", 0) != objects.shape[1]:
        raise ValueError(
            f"--object_loss needs a policy with a {objects.shape[1]}-output object head; {init} has "
            f"{getattr(pcfg, 'object_outputs', 0)} (train its base with --object_loss too, or set --object_loss=0)"
        )
    policy.text_encoder(sorted(set(samples.instruction)))  # embed once; cached in the checkpoint
    dev = resolve_device(cfg.device)
    policy.to(dev)
    save_config(cfg, out)
    text = {t: torch.from_numpy(policy.text_encoder([t])[0]) for t in set(samples.instruction)}
    tokens = policy.tokenizer.encode(samples.actions)
    soft = gaussian_targets(pcfg.bins, cfg.target_sigma).to(dev) if cfg.target_sigma > 0 else None
    model = policy.model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay)
    meta = load_checkpoint(out / "ckpt", "policy", model, opt, ema)
    start = meta["step"] if meta else 0
    log = MetricsLogger(out)
    log.rewind(start)  # steps logged after the checkpoint of a killed run come again
    log_fn(
        f"[train-policy] stage {cfg.stage}: {len(episodes)} demos of {len(tasks)} task(s), {len(samples.frame)} "
        f"samples; policy {count_params(model) / 1e6:.2f}M params"
    )
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc=f"train-policy {cfg.stage}",
        disable=not progress,
        dynamic_ncols=True,
    )
    pmean, pstd = policy.proprio_mean, policy.proprio_std
    metrics: dict[str, float] = {}
    for step in range(start, cfg.steps):
        model.train()
        g = step_generator(cfg.seed, step, stream=seeds.STREAM_POLICY)
        idx = torch.randint(len(samples.frame), (cfg.batch,), generator=g).numpy()
        images = random_shift(torch.from_numpy(np.array(frames[samples.frame[idx]])), cfg.augment_shift, g)
        images = images.to(dev)
        proprio = (torch.from_numpy(samples.proprio[idx]).to(dev) - pmean) / pstd
        txt = torch.stack([text[samples.instruction[i]] for i in idx]).to(dev)
        target = tokens[idx].to(dev)
        mask = torch.from_numpy(samples.mask[idx]).float().to(dev)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_schedule(step, cfg.steps, warmup=min(500, cfg.steps // 10))
        torch.manual_seed(seeds.step_seed(cfg.seed, step, seeds.STREAM_POLICY_DROPOUT))
        with autocast(cfg.precision, dev):
            result = model(images, proprio, txt, objects=objects is not None)
        logits, seen = result if objects is not None else (result, None)
        ce = token_loss(logits, target, soft, cfg.label_smoothing)
        bc_loss = (ce.mean(-1) * mask).sum() / mask.sum().clamp_min(1)
        loss = bc_loss
        if seen is not None:
            obj_loss = F.mse_loss(seen.float(), objects[idx].to(dev))
            loss = loss + cfg.object_loss * obj_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        bar.update()
        if (step + 1) % cfg.log_every == 0:
            with torch.no_grad():
                acc = ((logits.argmax(-1) == target).float().mean(-1) * mask).sum() / mask.sum()
            # bc/loss is behaviour cloning's alone, comparable with runs trained without the object loss
            metrics = {"bc/loss": bc_loss.item(), "bc/token_acc": acc.item()}
            if seen is not None:
                metrics["bc/object_mse"] = obj_loss.item()
            log.log(step + 1, metrics)
            bar.set_postfix(loss=f"{bc_loss.item():.3f}", acc=f"{acc.item():.2f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(out / "ckpt", "policy", model, opt, ema, step=step + 1)
    bar.close()
    log.close()
    model.load_state_dict(ema.state_dict())
    model.eval()
    policy.cpu()  # saved, evaluated and sampled on the CPU unless a caller moves it
    info = {
        "stage": cfg.stage,
        "tasks": tasks,
        "dataset": str(Path(data).resolve()),
        "manifest_tasks": ds.manifest.get("tasks"),
        "init": str(Path(init).resolve()) if init else None,
        "target_trajectories": used,
        "samples": len(samples.frame),
        "final_metrics": metrics,
        "seconds": time.time() - t_start,
    }
    save_policy(policy, out, info)
    return info
