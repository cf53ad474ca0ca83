"""Training the generalist judge: examples -> a fitted, temperature-calibrated classifier saved to a directory."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rawdream import seeds
from rawdream.config import save_config, to_dict
from rawdream.data.lerobot import LeRobotDataset
from rawdream.data.objects import in_frame, pixel_projector
from rawdream.envs.tasks import instruction as task_instruction
from rawdream.envs.tasks import paraphrases
from rawdream.io import save_model
from rawdream.nn import cell_sq_distances, count_params
from rawdream.policy.text import TextEncoder
from rawdream.reward.generalist.data import (
    Examples,
    imagine_videos,
    judge_examples,
    labeled_videos,
    stratified_holdout,
)
from rawdream.reward.generalist.model import GeneralistConfig, JudgeNet, text_features, verb_of
from rawdream.reward.references import References
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
        "object_loss": ">=0",
        "object_heatmap": ">=0",
        "object_erase": "[0,1]",
        "keypoint_play_batch": ">=1",
    }
    # keys added after runs were recorded: at these values they leave a run's judge stage hash as it was
    HASH_QUIET: ClassVar[dict] = {
        "object_heatmap": 0.0,
        "object_erase": 0.0,
        "keypoint_play": "",
        "keypoint_play_batch": 32,
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
    # weight of an auxiliary loss: predict the objects' positions in every judged frame of a real video from the
    # simulator state the dataset recorded (privileged labels, training only), so that the features follow the
    # objects and not only the hand - RL found a judge without it calling "hand where a success ends" a success
    object_loss: float = 0.0
    # what the object head predicts per judged frame: "position" - the objects' xyz, z-scored over the training
    # frames; "displacement" - how far each object moved since the video's first frame, scaled by the training
    # displacements' spread. Why: the gate reads only the displacement (last - first), and position z-scores are
    # dominated by where each scene keeps its objects, so a head can fit them well and still read a puck left
    # behind as moved with the hand (docs/judges.md); a displacement target weighs exactly what the gate reads,
    # and every frame where the hand moves and the objects do not teaches "no motion"
    object_target: str = "position"
    # weight of a dense per-pixel target for the keypoint head (--model.keypoints=true): object k's channel's
    # softmax over the 16 x 16 map against a small Gaussian where the fixed camera shows object k (its recorded xyz
    # projected; a KL per judged frame). Why: a position or displacement target can be met by following the hand
    # (the scripted data moves them together), and the heads trained so did (correlation 0.6-0.99 with the hand's
    # motion, docs/judges.md); a target in the image pays for the object's own pixels in every frame, most where
    # the hand is elsewhere
    object_heatmap: float = 0.0
    # with --object_heatmap: the fraction of training rows of real videos whose first object is painted over with
    # the empty workspace from a random judged frame on (a disc of 3 px), labelled a failure, its keypoint channel
    # pulled to a uniform map in those frames ("no object here"). Why: a world model erases a small object the
    # gripper passes over, and a keypoint never shown a frame without its object settles on the hand with full
    # confidence - the gate then reads the hand's motion as the object's (docs/judges.md, stop 41)
    object_erase: float = 0.0
    # with --object_heatmap: a task-free play dataset (`rawdream collect play`) whose pretraining scenes' frames train
    # the keypoint heatmap too - no success label is read, the target scenes' episodes are left out (the judge sees
    # pretraining tasks only). Why: in labelled episodes the objects move only with the hand and every success ends
    # with the hand on the object, so a keypoint can sit on the gripper and still be right; play has the hand away
    # from objects left in many states (stop 43: of 476 drawer frames the judge trained on, 2 showed a shut drawer
    # with the hand away, and on drawer-open's scene the keypoint sat on the gripper)
    keypoint_play: str = ""
    keypoint_play_batch: int = 32  # play clips per step, beside the labelled batch
    # pretraining tasks held out of training entirely - no video of theirs, no row under their instruction or with
    # their demo - and scored after training under their own instruction, real videos and (with --wm) their
    # world-model replays: how the judge does on tasks it has never seen, as a target will be. Choose a recipe on
    # these, never on the targets; the episode holdout (--val_fraction) only says how it does on tasks it knows
    val_tasks: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.object_erase > 0 and not self.object_heatmap > 0:
            raise ValueError(
                f"--object_erase={self.object_erase} teaches the keypoint heatmap an absent object: add "
                "--object_heatmap=1, or set --object_erase=0"
            )
        if self.object_heatmap > 0 and not (self.model.keypoints and self.object_loss > 0):
            raise ValueError(
                f"--object_heatmap={self.object_heatmap} trains the keypoint object head: add "
                "--model.keypoints=true and --object_loss > 0, or set --object_heatmap=0"
            )
        if self.keypoint_play and not self.object_heatmap > 0:
            raise ValueError(
                f"--keypoint_play={self.keypoint_play} trains the keypoint heatmap on play frames: add "
                "--object_heatmap=1 (with --model.keypoints=true --object_loss=1), or set --keypoint_play=''"
            )
        if self.object_target not in ("position", "displacement"):
            raise ValueError(f"--object_target={self.object_target!r}: use position or displacement")
        if self.object_target == "displacement" and self.model.keypoints:
            raise ValueError(
                "--object_target=displacement with --model.keypoints=true: a keypoint head reads where each object "
                "is (a displacement of 0 at the first frame would pull its keypoint off the object); use "
                "--object_target=position with keypoints"
            )


@dataclass
class VideoPool:
    """Every video the judge trains and calibrates on: the labelled episodes, then their world-model replays."""

    videos: list[np.ndarray]
    tasks: list[str]  # the scene's task of each video
    success: np.ndarray  # (V,) bool
    imagined: np.ndarray  # (V,) bool
    train: np.ndarray  # indices of training videos
    holdout: np.ndarray  # indices of the labelled videos that calibrate the temperature
    # indices of the videos of --val_tasks (real, then their replays): scored after training, never trained on
    unseen: np.ndarray
    behaviours: list[str]  # of the labelled episodes (scripted variants, "policy", ...)
    objects: list[np.ndarray | None]  # per video its objects' xyz per frame (real videos, with --object_loss)
    # per video its objects' image positions per frame, (frames, objects, 2) column/row px, NaN where a slot is
    # empty or out of frame (real videos, with --object_heatmap)
    pixels: list[np.ndarray | None] = field(default_factory=list)


def train_judge(
    cfg: TrainJudgeConfig,
    data: str | Path,
    out: str | Path,
    wm_path: str | Path | None = None,
    progress: bool = True,
    log_fn=print,
    references: str | Path | None = None,
) -> dict[str, Any]:
    """Train on labelled pretraining videos (``data``: one dataset or a comma-separated list) and save the judge
    to ``out``: videos -> (video, instruction, label) examples -> fit -> temperature -> save. ``references``: a
    demos dataset of pretraining tasks (for ``model.reference`` judges)."""
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    dev = resolve_device(cfg.device)
    paths = [Path(p) for p in (str(data).split(",") if isinstance(data, (str, Path)) else data) if str(p)]
    split = resolve_split(cfg.split)
    held = _val_tasks(cfg, split)
    dss, refs = _checked_inputs(cfg, paths, split, references, log_fn)
    save_config(cfg, out)
    rng = np.random.default_rng(cfg.seed)  # one stream, drawn in this order: holdout, replays, examples
    pool = _video_pool(cfg, dss, rng, wm_path, dev, progress, held)
    clips = np.stack([cfg.model.frames.select(v) for v in pool.videos])  # (V, F, H, W, 3)
    objects = _object_clips(cfg, pool) if cfg.object_loss > 0 else None  # (V, F, O) z-scored, NaN: no label
    pixels = _pixel_clips(cfg, pool) if cfg.object_heatmap > 0 else None  # (V, F, O/3, 2) px, NaN: no label
    ex = _examples(pool, split, refs, rng, log_fn)
    play = _keypoint_play(cfg, split, held, refs, log_fn) if cfg.keypoint_play else None
    # a row of a training video under a held-out task's instruction ("another task") would show that task too
    shows_unseen = np.array([t in held for t in ex.task], bool)
    is_train = np.isin(ex.video, pool.train) & ~shows_unseen
    enc = TextEncoder()
    all_texts = sorted({p for t in split.pretrain for p in paraphrases(t)})
    enc(all_texts + sorted({verb_of(t) for t in all_texts}))
    torch.manual_seed(cfg.seed)
    model_cfg = replace(cfg.model, object_outputs=objects.shape[-1] if objects is not None else 0)
    model = JudgeNet(model_cfg).to(dev)
    log = MetricsLogger(out)
    _fit(cfg, model, ex, clips, is_train, enc, refs, dev, log, pool, log_fn, progress, objects, pixels, play)
    holdout = np.isin(ex.video, pool.holdout) & ~shows_unseen
    temperature, val, val_own = _calibrate(model, ex, clips, holdout, enc, refs, dev)
    log.log(cfg.steps, {f"val/{k}": v for k, v in val.items() if isinstance(v, float)})
    log.log(cfg.steps, {f"val_own/{k}": v for k, v in val_own.items() if isinstance(v, float)})
    unseen = _score_unseen_tasks(model, ex, clips, pool, temperature, enc, refs, dev) if held else None
    if unseen is not None:
        for kind, row in unseen.items():
            log.log(cfg.steps, {f"val_tasks_{kind}/mean_task_auroc": row["mean_task_auroc"]})
            log_fn(
                f"[train-judge] held-out tasks, {kind} videos: mean per-task AUROC {row['mean_task_auroc']:.3f}: "
                + ", ".join(f"{t} {m['auroc']:.2f}" for t, m in row["per_task"].items())
            )
    log.close()
    n_labelled = len(pool.behaviours)  # the datasets' episodes come first, their replays after
    info = {
        "split": split.as_dict(),
        "trained_on_tasks": sorted({pool.tasks[i] for i in pool.train if i < n_labelled}),
        "held_out_tasks": sorted(held),
        "dataset": ",".join(str(p.resolve()) for p in paths),
        "episodes_by_behaviour": {b: pool.behaviours.count(b) for b in sorted(set(pool.behaviours))},
        "world_model": str(Path(wm_path).resolve()) if wm_path else None,
        "imagined_videos": int(pool.imagined.sum()),
        "temperature": temperature,
        "validation": val,
        "validation_own": val_own,
        "validation_tasks": unseen,
        "label_semantics": "success reached at any step",
        "object_target": cfg.object_target if cfg.object_loss > 0 else None,
        "object_heatmap": cfg.object_heatmap,
        "object_erase": cfg.object_erase,
        "keypoint_play": None if play is None else {"dataset": play.root, "episodes": len(play.tasks)},
        "blind": cfg.model.blind,
        "instruction": cfg.model.instruction,
        "references": str(Path(references).resolve()) if refs is not None else None,
        "reference_tasks": refs.tasks if refs is not None else [],
        "seconds": time.time() - t0,
    }
    save_generalist(model, enc, out, info)
    return info


def _checked_inputs(cfg: TrainJudgeConfig, paths: list[Path], split, references, log_fn):
    """The labelled datasets and the reference demos, each refused if it holds a held-out target task."""
    dss = [LeRobotDataset(p) for p in paths]
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
    return dss, refs


def _video_pool(
    cfg: TrainJudgeConfig, dss, rng, wm_path, dev, progress: bool, held: frozenset[str] = frozenset()
) -> VideoPool:
    """The labelled videos of every dataset, a stratified calibration holdout, and - with a world model - its
    replays of the same actions for a fraction of the training episodes, labelled by the real replay. The videos of
    the ``held`` tasks are set apart (``unseen``), with a replay of each of them."""
    bases = [labeled_videos(ds) for ds in dss]
    origin = [(k, i) for k, b in enumerate(bases) for i in range(len(b.task)) if _clean(dss[k], b, i)]
    n = len(origin)
    tasks = [bases[k].task[i] for k, i in origin]
    success = np.array([bases[k].success[i] for k, i in origin], bool)
    drawn = np.array(
        [bases[k].imagined[i] for k, i in origin], bool
    )  # closed-loop imagined (collect policy --wm)
    behaviours = [
        str((dss[k].episodes.get("rawdream/behaviour") or ["?"] * dss[k].num_episodes)[i]) for k, i in origin
    ]
    val_eps = stratified_holdout(tasks, success, cfg.val_fraction, rng)
    train_eps = np.setdiff1d(np.arange(n), val_eps)
    of_held = np.array([t in held for t in tasks], bool)
    unseen_eps = np.nonzero(of_held)[0]  # drawn as above so that the other tasks' holdout is unchanged
    train_eps, val_eps = train_eps[~of_held[train_eps]], val_eps[~of_held[val_eps]]
    objects: list[np.ndarray | None] = [None] * n
    if cfg.object_loss > 0:
        from rawdream.data.objects import object_positions

        per_ds = [object_positions(ds, resolve_split(cfg.split).backend) for ds in dss]
        # only real frames teach the object head: an imagined episode's states are the replay's, not its drawing
        objects = [
            None if drawn[g] else per_ds[k][slice(*dss[k].episode_bounds(i))]
            for g, (k, i) in enumerate(origin)
        ]
    pixels: list[np.ndarray | None] = [None] * n
    if cfg.object_heatmap > 0:
        real = {
            k for g, (k, _) in enumerate(origin) if objects[g] is not None
        }  # an all-imagined one has none
        cameras = {k: pixel_projector(dss[k], off="--object_heatmap=0") for k in sorted(real)}
        pixels = [None if o is None else cameras[k](o) for o, (k, _) in zip(objects, origin)]
    pool = VideoPool(
        [bases[k].video(i) for k, i in origin],
        list(tasks),
        success.copy(),
        drawn.copy(),
        train_eps,
        val_eps,
        unseen_eps,
        behaviours,
        objects,
        pixels,
    )
    if not (cfg.imagined and wm_path):
        return pool
    from rawdream.world_model.train import load_world_model

    wm = load_world_model(wm_path).to(dev)
    chosen = np.sort(rng.choice(train_eps, size=int(len(train_eps) * cfg.imagined_fraction), replace=False))
    chosen = chosen[~drawn[chosen]]  # replays of real episodes only: an imagined one is drawn already
    n_train_replays = len(chosen)
    chosen = np.concatenate(
        [chosen, unseen_eps[~drawn[unseen_eps]]]
    )  # every held-out task's episode is also scored as a replay
    replays: dict[int, np.ndarray] = {}
    for k, ds in enumerate(dss):
        mine = [int(g) for g in chosen if origin[g][0] == k]
        for g, v in zip(mine, imagine_videos(wm, ds, np.asarray([origin[g][1] for g in mine]), progress)):
            replays[g] = v
    pool.videos += [replays[int(g)] for g in chosen]
    # the replay's own drawing is not labelled: only real frames teach the object head
    pool.objects += [None] * len(chosen)
    pool.pixels += [None] * len(chosen)
    pool.tasks += [tasks[i] for i in chosen]
    pool.success = np.concatenate([pool.success, success[chosen]])
    pool.imagined = np.concatenate([pool.imagined, np.ones(len(chosen), bool)])
    pool.train = np.concatenate([train_eps, np.arange(n, n + n_train_replays)])
    pool.unseen = np.concatenate([unseen_eps, np.arange(n + n_train_replays, n + len(chosen))])
    return pool


def _clean(ds: LeRobotDataset, videos, i: int) -> bool:
    """Whether episode ``i`` is a clean example: a retreat episode (`collect labeled --frac_retreat`) whose release
    undid its success (an object held in the air, dropped) shows a success and then a failure, neither a clean
    positive nor a clean negative, and is left out; every other episode is kept."""
    behaviour = (ds.episodes.get("rawdream/behaviour") or [""] * ds.num_episodes)[i]
    if behaviour != "retreat" or not videos.success[i]:
        return True
    end = ds.episode_bounds(i)[1]
    return bool(ds.column("next.success")[end - 2])  # the last chunk's (the last row is the no-action frame)


@dataclass
class PlayClips:
    """Play frames that train only the keypoint heatmap: the judged frames of each episode and where the camera
    shows each object in them."""

    root: str
    clips: np.ndarray  # (E, F, H, W, 3) uint8
    pixels: np.ndarray  # (E, F, objects, 2) px, NaN: no label
    tasks: list[str]  # each episode's scene (a pretraining task: its reference demo goes beside it)


def _keypoint_play(cfg: TrainJudgeConfig, split, held, refs, log_fn) -> PlayClips:
    """The play dataset's episodes in pretraining scenes (not --val_tasks', and only scenes with a reference demo
    where the judge compares with one) as keypoint-only clips; the target scenes' task-free episodes are left out."""
    from rawdream.data.cache import frame_cache
    from rawdream.data.objects import object_positions

    ds = LeRobotDataset(cfg.keypoint_play)
    eps = ds.episodes
    if ds.manifest.get("kind") != "play" or "rawdream/env_task" not in eps:
        raise ValueError(
            f"--keypoint_play={cfg.keypoint_play} is not a play dataset (kind {ds.manifest.get('kind')!r}): give "
            "one made by `rawdream collect play`, or set --keypoint_play=''"
        )
    scenes = [str(t) for t in eps["rawdream/env_task"]]
    keep = [
        i
        for i, t in enumerate(scenes)
        if t in split.pretrain and t not in held and (refs is None or t in refs.by_task)
    ]
    if not keep:
        raise ValueError(
            f"--keypoint_play={cfg.keypoint_play} has no episode in a pretraining scene of split {split.name}: "
            "collect play with --scenes=workspace or pretraining, or set --keypoint_play=''"
        )
    frames, where = frame_cache(ds), object_positions(ds, split.backend, off="--keypoint_play=''")
    project = pixel_projector(ds, off="--keypoint_play=''")
    clips, pixels = [], []
    for i in keep:
        lo, hi = ds.episode_bounds(i)
        idx = cfg.model.frames.indices(hi - lo)
        clips.append(cfg.model.frames.select(np.asarray(frames[lo:hi])))  # as the labelled videos are
        pixels.append(project(where[lo:hi])[idx])
    left = len(scenes) - len(keep)
    log_fn(
        f"[train-judge] keypoint play: {len(keep)} episodes of {len({scenes[i] for i in keep})} pretraining scenes "
        f"from {ds.root} ({left} in other scenes left out)"
    )
    return PlayClips(str(ds.root.resolve()), np.stack(clips), np.stack(pixels), [scenes[i] for i in keep])


def _object_clips(cfg: TrainJudgeConfig, pool: VideoPool) -> np.ndarray:
    """The object head's targets at the judged frames of every video (``--object_target``): the objects'
    positions z-scored per coordinate over the training videos (a slot a task leaves empty stays ~0), or their
    displacements since the first judged frame divided per coordinate by the training displacements' RMS (no
    mean removed: zero stays "did not move"); NaN where a video has none (world-model replays)."""
    dim = next(o.shape[1] for o in pool.objects if o is not None)
    out = np.full((len(pool.videos), cfg.model.frames.middle + 2, dim), np.nan, np.float32)
    for v, obj in enumerate(pool.objects):
        if obj is not None:
            out[v] = obj[cfg.model.frames.indices(len(obj))]
    if cfg.object_target == "displacement":
        out = out - out[:, :1]
        moved = out[pool.train][:, 1:].reshape(-1, dim)
        rms = np.sqrt(np.nanmean(moved**2, 0))
        return out / np.maximum(rms, 0.005)  # the floor (5 mm): a slot that never moves
    train = out[pool.train].reshape(-1, dim)
    mean, std = np.nanmean(train, 0), np.maximum(np.nanstd(train, 0), 0.01)
    return (out - mean) / std


def _pixel_clips(cfg: TrainJudgeConfig, pool: VideoPool) -> np.ndarray:
    """The heatmap's targets at the judged frames: (V, F, objects, 2) image positions in px, NaN without one."""
    labelled = [p for p in pool.pixels if p is not None]
    if not labelled:
        raise ValueError(
            "--object_heatmap needs real videos with recorded object positions; every video given is imagined "
            "(add a `rawdream collect labeled` dataset to --data, or set --object_heatmap=0)"
        )
    shape = labelled[0].shape[1:]
    out = np.full((len(pool.videos), cfg.model.frames.middle + 2, *shape), np.nan, np.float32)
    for v, px in enumerate(pool.pixels):
        if px is not None:
            out[v] = px[cfg.model.frames.indices(len(px))]
    return out


def heatmap_loss(
    maps: torch.Tensor,
    pixels: torch.Tensor,
    size: int,
    sigma: float = 0.75,
    absent: torch.Tensor | None = None,
) -> torch.Tensor:
    """maps (N, O, h, w) keypoint logits (object k's channel), pixels (N, O, 2) where object k is in the frame
    (column, row in px of a ``size`` frame; NaN: no label) -> the mean KL from a Gaussian of ``sigma`` cells at
    that place to the channel's softmax (0 when the softmax is that Gaussian); ``absent`` (N, O) bool: object k
    is not in the frame (erased), its target the uniform map."""
    h, w = maps.shape[-2:]
    has = ~torch.isnan(pixels).any(-1)
    parts = []
    if absent is not None:
        has = has & ~absent
        if absent.any():  # KL(uniform || softmax) = -log(h w) - the mean log-probability
            parts.append(-math.log(h * w) - F.log_softmax(maps[absent].flatten(1).float(), dim=-1).mean(-1))
    if has.any():
        parts.append(_gaussian_kl(maps[has], pixels[has], size, sigma))
    return torch.cat(parts).mean() if parts else maps.sum() * 0.0


def erase_objects(
    videos: torch.Tensor,
    pixels: np.ndarray,
    background: torch.Tensor,
    fraction: float,
    gen: torch.Generator,
    radius: float = 3.0,
) -> tuple[np.ndarray, torch.Tensor]:
    """(B, F, H, W, 3) uint8 videos (changed in place), (B, F, O, 2) their objects' px (NaN: none), (H, W, 3) the
    empty workspace -> which videos were erased (B,) and where object 0 is now absent (B, F, O) bool: in about
    ``fraction`` of the videos whose first object is in the frame throughout, object 0 is painted over with the
    background (a disc of ``radius`` px) from a random frame after the first on."""
    b, f, h, w = videos.shape[:4]
    draw = torch.rand(b, generator=gen).numpy() < fraction
    start = torch.randint(1, f, (b,), generator=gen).numpy()
    seen = ~np.isnan(pixels[:, :, 0]).any(-1).any(-1)  # object 0 labelled in every judged frame
    erased = draw & seen
    absent = torch.zeros(pixels.shape[:3], dtype=torch.bool)
    rows, cols = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for i in np.nonzero(erased)[0]:
        for t in range(int(start[i]), f):
            c, r = pixels[i, t, 0]
            disc = (cols - float(c)) ** 2 + (rows - float(r)) ** 2 <= radius**2
            videos[i, t][disc] = background[disc]
        absent[i, int(start[i]) :, 0] = True
    return erased, absent


def _gaussian_kl(maps: torch.Tensor, pixels: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(M, h, w) logits, (M, 2) px -> (M,) KL from a Gaussian at each place to each softmax."""
    d2 = cell_sq_distances(pixels, size, maps.shape[-2:])
    target = F.softmax((-d2 / (2 * sigma**2)).flatten(1), dim=-1)
    logp = F.log_softmax(maps.flatten(1).float(), dim=-1)
    return (target * (target.clamp_min(1e-12).log() - logp)).sum(-1)


def shift_videos(videos: torch.Tensor, pad: int, gen: torch.Generator, offsets: bool = False):
    """(B, F, H, W, 3) uint8 -> the same, each video shifted by up to ``pad`` pixels, all its frames alike (with
    ``offsets``, also each video's shift (B, 2): how far its content moved right and down, in px). Why
    alike: the judge reads each frame's change since the first, and an object of 2-3 px that did or did not
    move; shifting frames apart drew a change of up to 2 x ``pad`` px at every edge of every training video
    (judges before stop 39 were trained so)."""
    from rawdream.policy.train import random_shift

    b, f, h, w, c = videos.shape
    stacked = videos.permute(0, 2, 3, 1, 4).reshape(b, h, w, f * c)  # frames as channels: one shift per video
    shifted, moved = random_shift(stacked, pad, gen, offsets=True)
    out = shifted.view(b, h, w, f, c).permute(0, 3, 1, 2, 4).contiguous()
    return (out, moved) if offsets else out


def _examples(pool: VideoPool, split, refs, rng, log_fn) -> Examples:
    """Each video under its own, its siblings' and another task's instruction (``judge_examples``); with a
    reference judge, only instructions that have a demonstration to compare with."""
    ex = judge_examples(pool.tasks, pool.success, split, rng)
    if refs is None:
        return ex
    keep = np.array([t in refs.by_task for t in ex.task])
    if not keep.all():
        missing = sorted({t for t, k in zip(ex.task, keep) if not k})
        log_fn(f"[train-judge] no successful reference demo of {', '.join(missing)}: their rows are left out")
    return Examples(
        ex.video[keep],
        [t for t, k in zip(ex.task, keep) if k],
        ex.label[keep],
        [w for w, k in zip(ex.kind, keep) if k],
    )


def _fit(
    cfg: TrainJudgeConfig,
    model,
    ex,
    clips,
    is_train,
    enc,
    refs,
    dev,
    log,
    pool,
    log_fn,
    progress,
    objects=None,
    pixels=None,
    play: PlayClips | None = None,
) -> None:
    """Class-balanced binary cross-entropy, a random paraphrase and a random reference demo per row, random
    shifts, AdamW with warm-up and cosine decay; with ``objects``, plus the object-position loss on real frames;
    with ``pixels``, plus the keypoint heatmap loss (the targets shifted with their video); with ``play``, plus
    the same heatmap loss on a batch of play clips (their success logits unused)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr_idx = np.nonzero(is_train)[0]
    background = None
    if cfg.object_erase > 0:  # the empty workspace: the median of the real training videos' judged frames
        real = [v for v in np.unique(ex.video[tr_idx]) if pool.pixels[v] is not None]
        if not real:
            raise ValueError(
                f"--object_erase={cfg.object_erase} paints objects out of real training videos and there are none "
                "with recorded object positions: add a `rawdream collect labeled` dataset, or set --object_erase=0"
            )
        sample = np.random.default_rng(cfg.seed).choice(len(real), size=min(len(real), 256), replace=False)
        background = torch.from_numpy(
            np.median(clips[np.asarray(real)[sample]].reshape(-1, *clips.shape[2:]), 0)
        )
        background = background.to(torch.uint8)
    pos = ex.label[tr_idx] > 0.5
    w = np.where(pos, 0.5 / max(pos.mean(), 1e-6), 0.5 / max(1 - pos.mean(), 1e-6))  # balanced classes
    w /= w.sum()
    n_labelled = len(pool.behaviours)
    drawn = pool.behaviours.count("policy_imagined")
    log_fn(
        f"[train-judge] {n_labelled} labeled episodes of {len(set(pool.tasks[:n_labelled]))} pretraining tasks "
        f"({pool.behaviours.count('policy')} of them a learned policy's rollouts"
        + (f", {drawn} its closed-loop imagined ones" if drawn else "")
        + f"; +{len(pool.videos) - n_labelled} world-model replays), {len(tr_idx)} training examples "
        f"(positives {pos.mean():.2f}); "
        f"{'BLIND control, ' if cfg.model.blind else ''}{count_params(model) / 1e6:.2f}M params"
    )
    bar = tqdm(total=cfg.steps, desc="train-judge", disable=not progress, dynamic_ncols=True)
    for step in range(cfg.steps):
        model.train()
        g = step_generator(cfg.seed, step, stream=seeds.STREAM_JUDGE)
        pick = tr_idx[
            torch.multinomial(torch.from_numpy(w), cfg.batch, replacement=True, generator=g).numpy()
        ]
        texts = []
        for j in pick:  # a random paraphrase of the instruction each time
            options = paraphrases(ex.task[j])
            texts.append(options[int(torch.randint(len(options), (1,), generator=g))])
        batch = torch.from_numpy(clips[ex.video[pick]])
        labels = torch.from_numpy(ex.label[pick])
        absent = None
        if cfg.object_erase > 0:  # drawn only when on: the committed judges' random streams stay
            batch = batch.clone()
            erased, absent = erase_objects(batch, pixels[ex.video[pick]], background, cfg.object_erase, g)
            labels = torch.where(torch.from_numpy(erased), torch.zeros_like(labels), labels)
        frames, moved = shift_videos(batch, cfg.augment_shift, g, offsets=True)
        frames = frames.to(dev)
        ref = _random_references(cfg, refs, [ex.task[j] for j in pick], g, dev)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_schedule(step, cfg.steps, warmup=200)
        with autocast(cfg.precision, dev):
            out = model(
                frames,
                text_features(enc, texts).to(dev),
                ref,
                objects=objects is not None,
                maps=pixels is not None,
            )
        logits, seen, maps = (*out, None)[:3] if objects is not None else (out, None, None)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels.to(dev))
        if seen is not None:
            target = torch.from_numpy(objects[ex.video[pick]]).to(dev)
            if absent is not None:  # an erased object has no place for the head to read (its first 3 outputs)
                target = target.clone()
                target[..., :3][absent[:, :, 0].to(dev)] = float("nan")
            has = ~torch.isnan(target)
            if has.any():
                obj_loss = F.mse_loss(seen.float()[has], target[has])
                loss = loss + cfg.object_loss * obj_loss
        if maps is not None:
            where = _shifted_targets(pixels[ex.video[pick]], moved, frames.shape[-2])
            heat_loss = heatmap_loss(
                maps,
                where.flatten(0, 1).to(dev),
                frames.shape[-2],
                absent=None if absent is None else absent.flatten(0, 1).to(dev),
            )
            loss = loss + cfg.object_heatmap * heat_loss
        if play is not None:
            play_loss = _play_heatmap_loss(cfg, model, play, refs, enc, g, dev)
            loss = loss + cfg.object_heatmap * play_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.update()
        if (step + 1) % cfg.log_every == 0:
            log.log(step + 1, {"judge/loss": loss.item()})
            if seen is not None and has.any():
                log.log(step + 1, {"judge/object_loss": obj_loss.item()})
            if maps is not None:
                log.log(step + 1, {"judge/object_heatmap_kl": heat_loss.item()})
            if play is not None:
                log.log(step + 1, {"judge/play_heatmap_kl": play_loss.item()})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()


def _play_heatmap_loss(cfg: TrainJudgeConfig, model, play: PlayClips, refs, enc, g, dev) -> torch.Tensor:
    """The keypoint heatmap loss on a random batch of play clips, shifted like the labelled ones, each beside a
    random reference demo of its scene's task."""
    pick = torch.randint(len(play.tasks), (cfg.keypoint_play_batch,), generator=g).numpy()
    frames, moved = shift_videos(torch.from_numpy(play.clips[pick]), cfg.augment_shift, g, offsets=True)
    tasks = [play.tasks[j] for j in pick]
    ref = _random_references(cfg, refs, tasks, g, dev)
    text = text_features(enc, [task_instruction(t) for t in tasks]).to(dev)
    with autocast(cfg.precision, dev):
        _, _, maps = model(frames.to(dev), text, ref, objects=True, maps=True)
    where = _shifted_targets(play.pixels[pick], moved, frames.shape[-2])
    return heatmap_loss(maps, where.flatten(0, 1).to(dev), frames.shape[-2])


def _random_references(cfg: TrainJudgeConfig, refs, tasks: list[str], g, dev) -> torch.Tensor | None:
    """A random demonstration of each task (another seed's layout), shifted as the videos are; None without
    references."""
    if refs is None:
        return None
    ks = torch.randint(1 << 30, (len(tasks),), generator=g).tolist()
    ref = np.stack([refs.get(t, k) for t, k in zip(tasks, ks)])
    return shift_videos(torch.from_numpy(ref), cfg.augment_shift, g).to(dev)


def _shifted_targets(pixels: np.ndarray, moved: torch.Tensor, size: int) -> torch.Tensor:
    """(B, F, O, 2) object px moved with their videos' shifts (B, 2); NaN where that takes them out of the frame."""
    where = torch.from_numpy(pixels) + moved[:, None, None, :].float()
    where[~in_frame(where, size)] = float("nan")  # shifted out of the frame: no target
    return where


def _calibrate(model, ex, clips, held_out, enc, refs, dev) -> tuple[float, dict, dict]:
    """One temperature fitted on held-out pretraining episodes (canonical instructions, the canonical reference);
    returns it with the calibrated validation metrics, over all rows and over the hard ``own`` rows (the right
    task: did it succeed?)."""
    from rawdream.eval.metrics import binary_metrics

    va = np.nonzero(held_out)[0]
    logits = _logits(model, ex, clips, va, enc, refs, dev)
    labels = torch.from_numpy(ex.label[va])
    temperature = fit_temperature(logits, labels)
    probs = torch.sigmoid(logits / temperature).numpy()
    val = binary_metrics(probs, labels.numpy() > 0.5)
    own = np.array([ex.kind[j] == "own" for j in va], bool)
    return temperature, val, binary_metrics(probs[own], labels.numpy()[own] > 0.5)


@torch.no_grad()
def _logits(model, ex, clips, rows: np.ndarray, enc, refs, dev) -> torch.Tensor:
    """The judge's logits for example ``rows`` under their canonical instruction and canonical reference."""
    out = []
    for k in range(0, len(rows), 256):
        part = rows[k : k + 256]
        out.append(
            model(
                torch.from_numpy(clips[ex.video[part]]).to(dev),
                text_features(enc, [task_instruction(ex.task[j]) for j in part]).to(dev),
                None
                if refs is None
                else torch.from_numpy(np.stack([refs.get(ex.task[j]) for j in part])).to(dev),
            ).cpu()
        )
    return torch.cat(out) if out else torch.zeros(0)


def _score_unseen_tasks(model, ex, clips, pool: VideoPool, temperature, enc, refs, dev) -> dict[str, Any]:
    """The held-out tasks' videos under their own instruction: per task AUROC, judged (p >= 0.5) and true success
    rates, for real videos, for the world model's replays of them and - where the data has them (`collect policy
    --wm`) - for a policy's closed-loop imagined rollouts, the frames RL in imagination shows a judge."""
    from rawdream.eval.metrics import auroc

    n_labelled = len(pool.behaviours)
    labelled = np.arange(len(pool.videos)) < n_labelled
    out: dict[str, Any] = {}
    for kind, mask in (
        ("real", ~pool.imagined),
        ("imagined", pool.imagined & ~labelled),
        ("closed_loop", pool.imagined & labelled),
    ):
        vids = pool.unseen[mask[pool.unseen]]
        rows = np.nonzero(np.isin(ex.video, vids) & np.array([k == "own" for k in ex.kind]))[0]
        if len(rows) == 0:
            continue
        p = torch.sigmoid(_logits(model, ex, clips, rows, enc, refs, dev) / temperature).numpy()
        truth = ex.label[rows] > 0.5
        per_task = {}
        for t in sorted({ex.task[j] for j in rows}):
            m = np.array([ex.task[j] == t for j in rows])
            per_task[t] = {
                "n": int(m.sum()),
                "auroc": auroc(p[m], truth[m]),
                "judged": float((p[m] >= 0.5).mean()),
                "true": float(truth[m].mean()),
            }
        aucs = [m["auroc"] for m in per_task.values() if not np.isnan(m["auroc"])]
        out[kind] = {"mean_task_auroc": float(np.mean(aucs)) if aucs else float("nan"), "per_task": per_task}
    return out


def _val_tasks(cfg: TrainJudgeConfig, split) -> frozenset[str]:
    from rawdream.envs.tasks import canonical_task

    held = frozenset(canonical_task(t) for t in cfg.val_tasks)
    wrong = sorted(t for t in held if t not in split.pretrain)
    if wrong:
        raise ValueError(
            f"--val_tasks {', '.join(wrong)}: not a pretraining task of split {split.name} (targets are never "
            f"judge data); name pretraining tasks that the data holds, e.g. --val_tasks=[{','.join(split.pretrain[:2])}]"
        )
    return held


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
