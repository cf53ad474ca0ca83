"""``generalist`` judge: the embedded default - a small video-language success classifier trained by rawdream on
labeled rollouts of *pretraining tasks only*, then frozen (the role of a general-purpose robot reward model).

Model: each selected frame is stacked with its change since the first frame (so change is visible to the first
convolution) and - by default - with the last frame of a reference demonstration of the instructed task and that
demo's own change (:mod:`rawdream.reward.references`: a new task brings one demo, and the judge sees it); a CNN
with FiLM from the instruction encodes each frame; features are pooled over time and fused with the instruction;
a temperature fitted on held-out pretraining episodes calibrates the probability. ``--model.reference=false``
gives the instruction-only judge of the paper's setting, which on this benchmark does not transfer to held-out
tasks (see the README).

Instruction pathway: the frozen MiniLM embedding of the sentence *and* of its verb (first word) - MiniLM puts
"open the drawer" and "close the drawer" at cosine 0.90, the verbs alone far apart - through a trained adapter.

Training data (see :func:`judge_examples`): every pretraining rollout under its own instruction (paraphrases
sampled) with the simulator's success label ("reached at any step": the same semantics as policy evaluation and
RL), under its scene siblings' instructions (label 0, :mod:`rawdream.reward.siblings`), and under a random other
task's instruction (label 0); optionally the world model's imagined replay of the same actions with the real
replay's label, so the judge is not fooled by the world model's look. In training, the reference is a random
successful demo of the instructed task (another seed's layout); sibling and other-task rows get their own task's
demo, so "the video does not end like this demo" is learned as well. ``--blind`` trains the task-blind control
(instruction and reference replaced by constants), which must do clearly worse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rawdream import seeds
from rawdream.config import build, save_config, to_dict
from rawdream.data.cache import frame_cache
from rawdream.data.lerobot import DatasetError, LeRobotDataset
from rawdream.envs.tasks import instruction as task_instruction
from rawdream.envs.tasks import paraphrases
from rawdream.io import load_model, save_model
from rawdream.nn import ResBlock, count_params, group_norm, mlp
from rawdream.policy.text import TEXT_DIM, TextEncoder
from rawdream.reward.base import FrameSelection, JudgeConfig, Verdict, register_judge, takes
from rawdream.reward.references import References
from rawdream.reward.siblings import siblings
from rawdream.splits import SplitConfig, check_task_agnostic, resolve_split
from rawdream.training import (
    MetricsLogger,
    TrainerSettings,
    autocast,
    resolve_device,
    set_threads,
    step_generator,
)
from rawdream.world_model.model import lr_schedule


@dataclass
class GeneralistConfig:
    frames: FrameSelection = field(default_factory=lambda: FrameSelection(middle=4))
    channels: tuple[int, ...] = (16, 32, 64)  # six frames per video: the first level dominates CPU cost
    cond_dim: int = 128
    hidden: int = 256
    # condition on a reference demonstration of the instructed task (its first and last frame, stacked with
    # every frame judged): see :mod:`rawdream.reward.references`
    reference: bool = True
    blind: bool = False  # the task-blind control: neither the instruction nor the reference is shown


def verb_of(text: str) -> str:
    words = text.strip().lower().split()
    return words[0] if words else ""


class JudgeNet(nn.Module):
    def __init__(self, cfg: GeneralistConfig):
        super().__init__()
        self.cfg = cfg
        chs = cfg.channels
        self.text = mlp(2 * TEXT_DIM, cfg.hidden, cfg.cond_dim)
        # per frame: the frame and its change since the first frame (+ the reference's last frame and its change)
        in_ch = 4 * (12 if cfg.reference else 6)  # after a 2x2 pixel-unshuffle
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(in_ch, chs[0], 3, padding=1))
        self.blocks = nn.ModuleList([ResBlock(ch, ch, cfg.cond_dim) for ch in chs])
        self.downs = nn.ModuleList(
            [
                nn.Conv2d(ch, chs[i + 1], 3, stride=2, padding=1) if i + 1 < len(chs) else nn.Identity()
                for i, ch in enumerate(chs)
            ]
        )
        self.norm = group_norm(chs[-1])
        n_frames = len(cfg.frames.indices(64))  # frames per video (first, last, middle)
        self.fuse = nn.Sequential(
            nn.Linear(n_frames * 2 * chs[-1] + cfg.cond_dim, cfg.hidden),
            nn.SiLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.SiLU(),
            nn.Linear(cfg.hidden, 1),
        )

    def forward(
        self, frames: torch.Tensor, text: torch.Tensor, reference: torch.Tensor | None = None
    ) -> torch.Tensor:
        """frames (B, F, H, W, 3) uint8, text (B, 2*384), reference (B, 2, H, W, 3) uint8 (first and last frame
        of a demonstration of the instructed task; for ``reference`` models) -> success logits (B,)."""
        b, f = frames.shape[:2]
        if self.cfg.blind:
            text = torch.zeros_like(text)
        cond = self.text(text)
        x = frames.float() / 127.5 - 1.0
        first = x[:, :1].expand_as(x)
        parts = [x, x - first]  # the frame and its change since the start
        if self.cfg.reference:
            if reference is None or reference.shape[0] != b or reference.shape[1] != 2:
                raise ValueError(
                    "this judge compares with a reference demonstration: pass reference (B, 2, H, W, 3)"
                )
            r = reference.float() / 127.5 - 1.0
            if self.cfg.blind:
                r = torch.zeros_like(r)
            goal = r[:, 1:].expand_as(x)
            parts += [goal, goal - r[:, :1].expand_as(x)]  # where the demo ended, and how it got there
        x = torch.cat(parts, dim=-1).flatten(0, 1).permute(0, 3, 1, 2)
        h = self.stem(x)
        cond_f = cond.repeat_interleave(f, dim=0)
        for block, down in zip(self.blocks, self.downs):
            h = down(block(h, cond_f))
        h = F.silu(self.norm(h))
        feats = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1).view(b, -1)
        return self.fuse(torch.cat([feats, cond], dim=1))[:, 0]


# ------------------------------------------------------------------------------------------------------------
# training data
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Videos:
    """Videos of a labeled dataset (stride-8 frames), with their scene task and success label."""

    frames: np.ndarray  # memmap of all frames
    bounds: list[tuple[int, int]]
    task: list[str]
    success: np.ndarray  # (N,) bool, reached at any step
    seed: list[int]
    imagined: np.ndarray  # (N,) bool

    def video(self, i: int) -> np.ndarray:
        lo, hi = self.bounds[i]
        return np.asarray(self.frames[lo:hi])


def labeled_videos(ds: LeRobotDataset) -> Videos:
    eps = ds.episodes
    if "rawdream/env_task" not in eps or "rawdream/success" not in eps:
        raise DatasetError(f"{ds.root} has no success labels; collect them with `rawdream collect labeled`")
    frames = frame_cache(ds)
    n = ds.num_episodes
    return Videos(
        frames=frames,
        bounds=[ds.episode_bounds(i) for i in range(n)],
        task=list(eps["rawdream/env_task"]),
        success=np.asarray(eps["rawdream/success"], bool),
        seed=list(eps["rawdream/seed"]),
        imagined=np.zeros(n, bool),
    )


@dataclass
class Examples:
    video: np.ndarray  # (M,) index into a list of videos
    task: list[str]  # the task whose instruction (or a paraphrase) is used
    label: np.ndarray  # (M,) float
    kind: list[str]  # own | sibling | other


def judge_examples(
    tasks: list[str], success: np.ndarray, split, rng: np.random.Generator, others_per_video: int = 1
) -> Examples:
    video, inst, label, kind = [], [], [], []
    pool = list(split.pretrain)
    for i, (t, s) in enumerate(zip(tasks, success)):
        fam = {t, *siblings(t, split)}
        others = [
            str(o)
            for o in rng.choice([p for p in pool if p not in fam], size=others_per_video, replace=False)
        ]
        rows = [(t, float(s), "own")] + [(sib, 0.0, "sibling") for sib in siblings(t, split)]
        rows += [(o, 0.0, "other") for o in others]
        for task, lab, why in rows:
            video.append(i)
            inst.append(task)
            label.append(lab)
            kind.append(why)
    return Examples(np.asarray(video), inst, np.asarray(label, np.float32), kind)


@dataclass
class TrainJudgeConfig(TrainerSettings):
    RANGES: ClassVar[dict] = {
        **TrainerSettings.RANGES,
        "steps": ">=1",
        "batch": ">=1",
        "lr": ">0",
        "weight_decay": ">=0",
        "augment_shift": ">=0",
        "val_fraction": "[0,1)",
        "imagined_fraction": "[0,1]",
    }

    split: SplitConfig = field(default_factory=SplitConfig)
    model: GeneralistConfig = field(default_factory=GeneralistConfig)
    steps: int = 6000
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    augment_shift: int = 3
    val_fraction: float = 0.1
    imagined: bool = True  # add the world model's replays of pretraining rollouts (needs --wm)
    imagined_fraction: float = 0.5  # of the labeled episodes to replay in the world model


def _text_features(enc: TextEncoder, texts: list[str]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([enc(texts), enc([verb_of(t) for t in texts])], axis=1))


def imagine_videos(wm, ds: LeRobotDataset, episodes: np.ndarray, progress: bool) -> list[np.ndarray]:
    """The world model's replay of the recorded actions of ``episodes`` from their real first frames."""
    frames = frame_cache(ds)
    actions = ds.column("action")
    state = ds.column("observation.state")
    by_len: dict[int, list[int]] = {}
    for e in episodes:
        lo, hi = ds.episode_bounds(int(e))
        by_len.setdefault(hi - lo, []).append(int(e))
    bar = tqdm(total=len(episodes), desc="imagining labeled rollouts", disable=not progress, leave=False)
    results: dict[int, np.ndarray] = {}
    for length, eps in by_len.items():
        for k in range(0, len(eps), 32):
            chunk = eps[k : k + 32]
            lo = [ds.episode_bounds(e)[0] for e in chunk]
            first = torch.from_numpy(np.stack([frames[i] for i in lo]))
            prop = torch.from_numpy(np.stack([state[i] for i in lo]))
            acts = torch.from_numpy(np.stack([actions[i : i + length - 1] for i in lo]))
            vids = wm.rollout(first, prop, acts, seeds=[seeds.REPLAY_NOISE + e for e in chunk])[
                "frames"
            ].numpy()
            vids[:, 0] = first.numpy()
            for e, v in zip(chunk, vids):
                results[e] = v
            bar.update(len(chunk))
    bar.close()
    return [results[int(e)] for e in episodes]


def train_judge(
    cfg: TrainJudgeConfig,
    data: str | Path,
    out: str | Path,
    wm_path: str | Path | None = None,
    progress: bool = True,
    log_fn=print,
    references: str | Path | None = None,
) -> dict[str, Any]:
    """``references``: a demos dataset of pretraining tasks (for ``model.reference`` judges)."""
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    dev = resolve_device(cfg.device)
    # one or more labeled datasets (e.g. scripted-expert variants + the base policy's own rollouts), read as one
    paths = [Path(p) for p in (str(data).split(",") if isinstance(data, (str, Path)) else data) if str(p)]
    dss = [LeRobotDataset(p) for p in paths]
    split = resolve_split(cfg.split)
    for ds in dss:
        check_task_agnostic(ds.manifest, split, "generalist judge")
    refs = None
    if cfg.model.reference:
        if not references:
            raise ValueError(
                "this judge compares videos with a reference demonstration (model.reference=true): pass "
                "--references DEMOS_DIR (demos of the pretraining tasks), or --model.reference=false"
            )
        check_task_agnostic(LeRobotDataset(references).manifest, split, "generalist judge (references)")
        refs = References.from_dataset(references)
    for ds in dss:
        if ds.frame_stride != 8:
            log_fn(
                f"[train-judge] note: {ds.root} has frame stride {ds.frame_stride}; imagined videos have one "
                f"frame per 8-step chunk"
            )
    save_config(cfg, out)
    bases = [labeled_videos(ds) for ds in dss]
    origin = [(k, i) for k, b in enumerate(bases) for i in range(len(b.task))]  # (dataset, episode)
    rng = np.random.default_rng(cfg.seed)
    n = len(origin)
    base_tasks = [bases[k].task[i] for k, i in origin]
    base_success = np.concatenate([b.success for b in bases])
    behaviours = [
        str((dss[k].episodes.get("rawdream/behaviour") or ["?"] * dss[k].num_episodes)[i]) for k, i in origin
    ]
    val_eps = stratified_holdout(base_tasks, base_success, cfg.val_fraction, rng)
    train_eps = np.setdiff1d(np.arange(n), val_eps)  # the held-out episodes calibrate the temperature
    videos: list[np.ndarray] = [bases[k].video(i) for k, i in origin]
    tasks, success = list(base_tasks), base_success.copy()
    imagined = np.zeros(n, bool)
    if cfg.imagined and wm_path:
        from rawdream.world_model.train import load_world_model

        wm = load_world_model(wm_path).to(dev)
        chosen = np.sort(
            rng.choice(train_eps, size=int(len(train_eps) * cfg.imagined_fraction), replace=False)
        )
        replays: dict[int, np.ndarray] = {}
        for k, ds in enumerate(dss):  # world-model replays of the same actions, labelled by the real replay
            mine = [int(g) for g in chosen if origin[g][0] == k]
            for g, v in zip(mine, imagine_videos(wm, ds, np.asarray([origin[g][1] for g in mine]), progress)):
                replays[g] = v
        videos += [replays[int(g)] for g in chosen]
        tasks += [base_tasks[i] for i in chosen]
        success = np.concatenate([success, base_success[chosen]])
        imagined = np.concatenate([imagined, np.ones(len(chosen), bool)])
        train_eps = np.concatenate([train_eps, np.arange(n, n + len(chosen))])
    sel = cfg.model.frames
    clips = np.stack([sel.select(v) for v in videos])  # (V, F, H, W, 3)
    ex = judge_examples(tasks, success, split, rng)
    if refs is not None:  # an instruction can only be judged against a demonstration of its task
        keep = np.array([t in refs.by_task for t in ex.task])
        if not keep.all():
            missing = sorted({t for t, k in zip(ex.task, keep) if not k})
            log_fn(
                f"[train-judge] no successful reference demo of {', '.join(missing)}: their rows are left out"
            )
        ex = Examples(
            ex.video[keep],
            [t for t, k in zip(ex.task, keep) if k],
            ex.label[keep],
            [w for w, k in zip(ex.kind, keep) if k],
        )
    is_train = np.isin(ex.video, train_eps)
    enc = TextEncoder()
    all_texts = sorted({p for t in split.pretrain for p in paraphrases(t)})
    enc(all_texts + sorted({verb_of(t) for t in all_texts}))
    torch.manual_seed(cfg.seed)
    model = JudgeNet(cfg.model).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr_idx = np.nonzero(is_train)[0]
    pos = ex.label[tr_idx] > 0.5
    w = np.where(pos, 0.5 / max(pos.mean(), 1e-6), 0.5 / max(1 - pos.mean(), 1e-6))  # balanced classes
    w /= w.sum()
    log = MetricsLogger(out)
    log_fn(
        f"[train-judge] {n} labeled episodes of {len(set(base_tasks))} pretraining tasks "
        f"({behaviours.count('policy')} of them a learned policy's rollouts; +{int(imagined.sum())} "
        f"imagined), {len(tr_idx)} training examples (positives {pos.mean():.2f}); "
        f"{'BLIND control, ' if cfg.model.blind else ''}{count_params(model) / 1e6:.2f}M params"
    )
    bar = tqdm(total=cfg.steps, desc="train-judge", disable=not progress, dynamic_ncols=True)
    from rawdream.policy.train import random_shift

    for step in range(cfg.steps):
        model.train()
        g = step_generator(cfg.seed, step, stream=4)
        pick = tr_idx[
            torch.multinomial(torch.from_numpy(w), cfg.batch, replacement=True, generator=g).numpy()
        ]
        texts = []
        for j in pick:  # a random paraphrase of the instruction each time
            options = paraphrases(ex.task[j])
            texts.append(options[int(torch.randint(len(options), (1,), generator=g))])
        frames = torch.from_numpy(clips[ex.video[pick]])
        b, f = frames.shape[:2]
        frames = random_shift(frames.flatten(0, 1), cfg.augment_shift, g).view(b, f, *frames.shape[2:])
        frames = frames.to(dev)
        ref = None
        if refs is not None:  # a random demonstration of the instructed task (another seed's layout)
            ks = torch.randint(1 << 30, (len(pick),), generator=g).tolist()
            ref = np.stack([refs.get(ex.task[j], k) for j, k in zip(pick, ks)])
            ref = (
                random_shift(torch.from_numpy(ref).flatten(0, 1), cfg.augment_shift, g)
                .view(ref.shape)
                .to(dev)
            )
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_schedule(step, cfg.steps, warmup=200)
        with autocast(cfg.precision, dev):
            logits = model(frames, _text_features(enc, texts).to(dev), ref)
        loss = F.binary_cross_entropy_with_logits(logits.float(), torch.from_numpy(ex.label[pick]).to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.update()
        if (step + 1) % cfg.log_every == 0:
            log.log(step + 1, {"judge/loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    # calibration: one temperature on held-out pretraining episodes (canonical instructions)
    va = np.nonzero(~is_train)[0]
    with torch.no_grad():
        logits = torch.cat(
            [
                model(
                    torch.from_numpy(clips[ex.video[rows]]).to(dev),
                    _text_features(enc, [task_instruction(ex.task[j]) for j in rows]).to(dev),
                    None
                    if refs is None
                    else torch.from_numpy(np.stack([refs.get(ex.task[j]) for j in rows])).to(dev),
                ).cpu()
                for rows in (va[k : k + 256] for k in range(0, len(va), 256))
            ]
        )
    labels = torch.from_numpy(ex.label[va])
    temperature = fit_temperature(logits, labels)
    from rawdream.eval.metrics import binary_metrics

    probs = torch.sigmoid(logits / temperature).numpy()
    val = binary_metrics(probs, labels.numpy() > 0.5)
    own = np.array([ex.kind[j] == "own" for j in va], bool)  # the hard rows: the right task, did it succeed?
    val_own = binary_metrics(probs[own], labels.numpy()[own] > 0.5)
    log.log(cfg.steps, {f"val/{k}": v for k, v in val.items() if isinstance(v, float)})
    log.log(cfg.steps, {f"val_own/{k}": v for k, v in val_own.items() if isinstance(v, float)})
    log.close()
    info = {
        "split": split.as_dict(),
        "trained_on_tasks": sorted(set(base_tasks)),
        "dataset": ",".join(str(p.resolve()) for p in paths),
        "episodes_by_behaviour": {b: behaviours.count(b) for b in sorted(set(behaviours))},
        "world_model": str(Path(wm_path).resolve()) if wm_path else None,
        "imagined_videos": int(imagined.sum()),
        "temperature": temperature,
        "validation": val,
        "validation_own": val_own,
        "label_semantics": "success reached at any step",
        "blind": cfg.model.blind,
        "references": str(Path(references).resolve()) if refs is not None else None,
        "reference_tasks": refs.tasks if refs is not None else [],
        "seconds": time.time() - t0,
    }
    save_generalist(model, enc, out, info)
    return info


def stratified_holdout(
    tasks: list[str], success: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Episodes held out for calibration: ``fraction`` of every (task, outcome) group, at least one from each
    group of two or more - a random pick can miss every success of a small dataset, and a temperature fitted on
    one class only is meaningless."""
    held = []
    for key in sorted({(t, bool(s)) for t, s in zip(tasks, success)}):
        members = np.array([i for i, (t, s) in enumerate(zip(tasks, success)) if (t, bool(s)) == key])
        if len(members) < 2:
            continue
        k = max(1, round(len(members) * fraction))
        held.extend(rng.choice(members, size=k, replace=False).tolist())
    return np.sort(np.asarray(held, dtype=int))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    best, best_t = float("inf"), 1.0
    for t in np.exp(np.linspace(np.log(0.25), np.log(8.0), 60)):
        nll = F.binary_cross_entropy_with_logits(logits / t, labels).item()
        if nll < best:
            best, best_t = nll, float(t)
    return best_t


def save_generalist(model: JudgeNet, enc: TextEncoder, out: Path, info: dict[str, Any]) -> None:
    save_model(
        out, "judge", model.state_dict(), {"config": to_dict(model.cfg), "text_cache": enc.state(), **info}
    )


class GeneralistJudge:
    name = "generalist"
    privileged = False

    def __init__(self, cfg: JudgeConfig):
        path, meta, sd = load_model(
            cfg.path, "judge", "train one with `rawdream train-judge` and pass --judge.path DIR"
        )
        self.cfg = cfg
        self.model = JudgeNet(build(GeneralistConfig, meta["config"]))
        self.model.load_state_dict(sd)
        self.model.eval()
        self.temperature = float(meta.get("temperature", 1.0))
        self.text = TextEncoder(meta.get("text_cache"))
        self.info = meta
        self.stats = {"abstains": 0}
        self.references = None
        if self.model.cfg.reference:
            if not cfg.reference:
                raise ValueError(
                    f"the judge at {path} compares videos with a demonstration of the instructed task: pass "
                    f"--judge.reference DEMOS_DIR (e.g. the target task's 1-shot demo dataset)"
                )
            self.references = References.from_dataset(cfg.reference)

    @torch.no_grad()
    def scores(self, videos, instructions) -> np.ndarray:
        sel = self.model.cfg.frames
        dev = next(self.model.parameters()).device  # inputs follow the model (``judge.model.to("cuda")``)
        out = []
        for k in range(0, len(videos), 128):
            clips = torch.from_numpy(np.stack([sel.select(v) for v in videos[k : k + 128]])).to(dev)
            texts = list(instructions[k : k + 128])
            ref = None
            if self.references is not None:
                ref = torch.from_numpy(self.references.for_instructions(texts)).to(dev)
            logits = self.model(clips, _text_features(self.text, texts).to(dev), ref)
            out.append(torch.sigmoid(logits.float().cpu() / self.temperature).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def __call__(self, videos, instructions, **_: Any) -> list[Verdict]:
        if len(videos) != len(instructions):
            raise ValueError(f"{len(videos)} videos but {len(instructions)} instructions")
        t0 = time.perf_counter()
        p = self.scores(videos, instructions)
        dt = (time.perf_counter() - t0) / max(len(p), 1)
        return [
            Verdict(success=bool(s >= self.cfg.threshold), score=float(s), raw=f"p={s:.3f}", latency=dt)
            for s in p
        ]


@register_judge("generalist")
@takes("path", "reference")
def _make(cfg: JudgeConfig) -> GeneralistJudge:
    return GeneralistJudge(cfg)
