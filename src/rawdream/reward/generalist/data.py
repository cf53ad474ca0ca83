"""The generalist judge's training data: labelled videos, their world-model replays, and the (video, instruction,
label) examples built from them - pretraining tasks only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from rawdream import seeds
from rawdream.data.cache import frame_cache
from rawdream.data.lerobot import DatasetError, LeRobotDataset
from rawdream.reward.siblings import siblings
from rawdream.rl.imagination import reimagine


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
        # closed-loop imagination of a policy (`collect policy --wm`): drawn frames, labelled by the replay
        imagined=np.asarray(eps.get("rawdream/imagined") or [False] * n, bool),
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
            first = np.stack([frames[i] for i in lo])
            prop = np.stack([state[i] for i in lo])
            acts = np.stack([actions[i : i + length - 1] for i in lo])
            vids = reimagine(wm, first, prop, acts, [seeds.REPLAY_NOISE + e for e in chunk])
            for e, v in zip(chunk, vids):
                results[e] = v
            bar.update(len(chunk))
    bar.close()
    return [results[int(e)] for e in episodes]


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
