"""Reference demonstrations for judges: "this is what success at this task looks like".

A new task in RAW-Dream brings one demonstration (for the policy's 1-shot SFT). A judge may be shown it too, as a
reference: the first and last frame of a successful demo of the instructed task. The embedded generalist judge is
a small network trained on 45 pretraining tasks; it cannot read a new instruction zero-shot the way an 8B VLM
does (measured: on drawer-open it was confidently inverted without a reference - see the README), but it can
learn, on pretraining tasks, the task-agnostic skill "does this video end the way the reference ends, from the way
the reference starts?". The judge is still trained on pretraining tasks only and frozen; at test time the
reference is an *input*, taken from the target task's one demonstration.

References come from a LeRobot v3 dataset of demonstrations (``rawdream collect demos``): every successful
episode of a task is a reference for that task's instruction and its paraphrases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rawdream.envs.tasks import paraphrases

CHUNK_STEPS = 8  # control steps per action chunk: imagined and policy videos hold one frame per chunk


class MissingReferenceError(ValueError):
    """No reference demonstration for an instruction (or no usable demonstrations at all)."""


class References:
    """task -> (K, 2, H, W, 3) uint8: first and last frame of each successful demonstration."""

    def __init__(
        self,
        by_task: dict[str, np.ndarray],
        source: str = "",
        videos: dict[str, np.ndarray] | None = None,
        actions: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        if not by_task:
            raise MissingReferenceError(f"no successful demonstrations in {source or 'the reference set'}")
        self.by_task = by_task
        self.source = source
        # task -> (T, H, W, 3) the first reference's whole video, one frame per 8-step action chunk (as imagined
        # and policy videos are): what a success of this task looks like to a judge, for calibrating on it
        self.videos = videos or {}
        # task -> (first proprioceptive state (P,), actions (T, A)) of that same demonstration, one per control
        # step: what a world model needs to replay it (``--judge.calibration=imagined``)
        self.actions = actions or {}
        self._by_text = {p.lower(): t for t in by_task for p in paraphrases(t)}

    @classmethod
    def from_dataset(cls, path: str | Path) -> References:
        from rawdream.data.cache import frame_cache
        from rawdream.data.lerobot import DatasetError, LeRobotDataset

        ds = LeRobotDataset(path)
        eps = ds.episodes
        if "rawdream/env_task" not in eps:
            raise DatasetError(
                f"{ds.root} names no task per episode (rawdream/env_task); references come from "
                f"`rawdream collect demos` datasets"
            )
        frames = frame_cache(ds)
        ok = eps.get("rawdream/success", [True] * ds.num_episodes)
        by_task: dict[str, list[np.ndarray]] = {}
        videos: dict[str, np.ndarray] = {}
        actions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        columns = ds.features
        state = ds.column("observation.state") if "observation.state" in columns else None
        action = ds.column("action") if "action" in columns else None
        every = max(1, CHUNK_STEPS // ds.frame_stride)  # dataset frames per action chunk
        for i, (task, success) in enumerate(zip(eps["rawdream/env_task"], ok)):
            if not success:
                continue
            lo, hi = ds.episode_bounds(i)
            by_task.setdefault(str(task), []).append(np.stack([frames[lo], frames[hi - 1]]))
            if str(task) not in videos:
                idx = list(range(lo, hi, every))
                videos[str(task)] = np.asarray(frames[idx + ([hi - 1] if idx[-1] != hi - 1 else [])])
                if state is not None and action is not None:
                    # the episode's last row holds no action (collect writes zeros there); a strided dataset's
                    # rows hold ``frame_stride`` actions each
                    steps = np.asarray(action[lo : hi - 1], np.float32)
                    actions[str(task)] = (
                        np.asarray(state[lo], np.float32),
                        steps.reshape(-1, steps.shape[-1]),
                    )
        return cls({t: np.stack(v) for t, v in by_task.items()}, str(ds.root), videos, actions)

    @property
    def tasks(self) -> list[str]:
        return sorted(self.by_task)

    def task_of(self, instruction: str) -> str:
        task = self._by_text.get(instruction.strip().lower())
        if task is None:
            raise MissingReferenceError(
                f"no reference demonstration for {instruction!r} in {self.source}; pass --judge.reference with a "
                f"demos dataset of that task (e.g. the 1-shot demo: rawdream collect demos --task T)"
            )
        return task

    def get(self, task: str, k: int = 0) -> np.ndarray:
        """The (2, H, W, 3) reference ``k`` (modulo the number available) of ``task``."""
        refs = self.by_task[task]
        return refs[k % len(refs)]

    def for_instructions(self, instructions: list[str]) -> np.ndarray:
        """(B, 2, H, W, 3): the first reference of each instruction's task."""
        return np.stack([self.get(self.task_of(t)) for t in instructions])
