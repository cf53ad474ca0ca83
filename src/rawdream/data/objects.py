"""The objects' positions a dataset recorded: the privileged label of every object loss (the policy's, the judge's
and the world model's object heads), read from the simulator state, never an input at test time."""

from __future__ import annotations

import numpy as np

from rawdream.data.lerobot import DatasetError, LeRobotDataset
from rawdream.envs.tasks import catalogue


def object_positions(ds: LeRobotDataset, backend: str, off: str = "--object_loss=0") -> np.ndarray:
    """(frames, 3 x objects) the objects' xyz per frame, from the simulator state the dataset recorded; ``off``
    names the flag that does without."""
    slots = catalogue(backend).object_state
    if "observation.environment_state" not in ds.features or not slots:
        raise DatasetError(
            f"{ds.root} has no observation.environment_state with object positions ({backend}), which an object "
            f"loss needs: collect the data with `rawdream collect`, or set {off}"
        )
    state = ds.column("observation.environment_state").astype(np.float32)
    return np.concatenate([state[:, lo:hi] for lo, hi in slots], axis=1)
