"""Chunk transitions from a LeRobot v3 dataset: (context frames, anchor, action chunk, proprio) -> next frame.

Works for rawdream's strided play data (one row per chunk, ``action`` shape (8, A)) and for anyone's stride-1
LeRobot data (the chunk is 8 consecutive rows' actions and the target is the frame 8 rows later).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rawdream.data.lerobot import DatasetError, LeRobotDataset


@dataclass
class Transitions:
    ctx: np.ndarray  # (M, K) global frame indices of the context frames (oldest first)
    anchor: np.ndarray  # (M,) the episode's first frame
    target: np.ndarray  # (M,) the frame at the chunk's end
    actions: np.ndarray  # (M, chunk, A)
    proprio: np.ndarray  # (M, P) at the context's last frame
    proprio_next: np.ndarray  # (M, P) at the target frame
    episode: np.ndarray  # (M,) episode index
    step: np.ndarray  # (M,) AR step of the target within its episode (1 = first chunk)
    # (M, O) the objects' xyz at the target frame (simulator state; (M, 0) unless ``objects`` were given)
    objects_next: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, mask: np.ndarray) -> Transitions:
        return Transitions(**{k: getattr(self, k)[mask] for k in self.__dataclass_fields__})


def build_transitions(
    ds: LeRobotDataset, chunk: int = 8, context: int = 2, objects: np.ndarray | None = None
) -> Transitions:
    """``objects``: (frames, O) the objects' positions per frame (``data.objects.object_positions``), for a world
    model with an object head."""
    stride = ds.frame_stride
    if chunk % stride:
        raise DatasetError(f"{ds.root}: frame stride {stride} does not divide the action chunk {chunk}")
    rpc = chunk // stride  # rows per chunk
    actions = ds.column("action").astype(np.float32)
    if "observation.state" in ds.features:
        state = ds.column("observation.state").astype(np.float32)
    else:
        state = np.zeros((ds.num_frames, 1), np.float32)
    if state.ndim == 1:
        state = state[:, None]
    if objects is None:
        objects = np.zeros((ds.num_frames, 0), np.float32)
    if stride > 1 and (actions.ndim != 3 or actions.shape[1] != stride):
        raise DatasetError(f"{ds.root}: frame_stride {stride} but action shape {actions.shape[1:]}")
    rows: dict[str, list] = {k: [] for k in Transitions.__dataclass_fields__}
    for e in range(ds.num_episodes):
        lo, hi = ds.episode_bounds(e)
        for t in range(lo, hi - rpc):
            ctx = [max(lo, t - j * rpc) for j in reversed(range(context))]
            a = actions[t] if stride > 1 else actions[t : t + chunk]
            if stride > 1 and rpc > 1:
                a = actions[t : t + rpc].reshape(chunk, -1)
            rows["ctx"].append(ctx)
            rows["anchor"].append(lo)
            rows["target"].append(t + rpc)
            rows["actions"].append(a)
            rows["proprio"].append(state[t])
            rows["proprio_next"].append(state[t + rpc])
            rows["objects_next"].append(objects[t + rpc])
            rows["episode"].append(e)
            rows["step"].append((t - lo) // rpc + 1)
    if not rows["target"]:
        raise DatasetError(f"{ds.root}: no episode is longer than one action chunk ({chunk} steps)")
    return Transitions(**{k: np.asarray(v) for k, v in rows.items()})


def concat_transitions(parts: list[Transitions], frames: list[int], episodes: list[int]) -> Transitions:
    """Transitions of several datasets as one: frame and episode indices shifted past the datasets before (whose
    frame and episode counts are ``frames`` and ``episodes``), in the order their frames are concatenated."""
    if len(parts) == 1:
        return parts[0]
    f0, e0 = np.cumsum([0, *frames[:-1]]), np.cumsum([0, *episodes[:-1]])
    shift = {"ctx": f0, "anchor": f0, "target": f0, "episode": e0}
    return Transitions(
        **{
            k: np.concatenate(
                [getattr(p, k) + shift[k][i] if k in shift else getattr(p, k) for i, p in enumerate(parts)]
            )
            for k in Transitions.__dataclass_fields__
        }
    )


def make_batch(
    tr: Transitions, latents: torch.Tensor, idx: np.ndarray, model, frame_px: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """Gather a training batch (normalised latents and proprio) for transitions ``idx``; with ``frame_px``
    ((frames, objects, 2) the objects' image positions per frame), also where they are in each target frame."""
    dev = model.device  # latents stay in CPU memory; a batch moves to the model
    lat = lambda i: latents[torch.as_tensor(i)].to(dev).float()  # noqa: E731
    arr = lambda a: torch.as_tensor(a).to(dev)  # noqa: E731
    return {
        "ctx": lat(tr.ctx[idx]),
        "anchor": lat(tr.anchor[idx]),
        "target": lat(tr.target[idx]),
        "actions": model.norm_actions(arr(tr.actions[idx])),
        "proprio": model.norm_proprio(arr(tr.proprio[idx])),
        "proprio_next": model.norm_proprio(arr(tr.proprio_next[idx])),
        **({"objects_next": model.norm_objects(arr(tr.objects_next[idx]))} if model.has_objects else {}),
        **({"object_px": arr(frame_px[tr.target[idx]])} if frame_px is not None else {}),
    }
