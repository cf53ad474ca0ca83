"""The objects' positions a dataset recorded: the privileged label of every object loss (the policy's, the judge's
and the world model's object heads), read from the simulator state, never an input at test time."""

from __future__ import annotations

import numpy as np

from rawdream.data.lerobot import DatasetError, LeRobotDataset
from rawdream.envs.tasks import catalogue


def dataset_camera(ds: LeRobotDataset, off: str):
    """(CameraConfig, image size) of the free camera a Meta-World dataset was rendered with (``rawdream collect``
    records it in the manifest, ``collect policy`` in its config); refused for other simulators (LIBERO renders a
    fixed agent view, not this camera) with the flag ``off`` that does without."""
    from rawdream.envs.base import CameraConfig

    m = ds.manifest
    cam = m.get("camera") or ((m.get("collect_config") or {}).get("env") or {}).get("camera")
    if m.get("env") != "metaworld" or not cam or not m.get("image_size"):
        raise DatasetError(
            f"{ds.root} records no Meta-World free camera (env {m.get('env')!r}), which is needed to place its "
            f"objects in its frames: use a Meta-World dataset made by `rawdream collect`, or set {off}"
        )
    return CameraConfig(**cam), int(m["image_size"])


def in_frame(px, size: int):
    """(..., 2) image positions -> (...) bool: inside a ``size`` x ``size`` frame (NaN is not)."""
    return ((px >= 0) & (px < size)).all(-1)


def pixel_projector(ds: LeRobotDataset, off: str):
    """The projection of a dataset's recorded object xyz into its frames: (frames, 3 x objects) -> (frames,
    objects, 2) column/row px; NaN for a slot the task leaves empty (all zeros in the simulator state) and for a
    point out of frame. Refuses a dataset whose camera is not recorded (a foreign one, or LIBERO's fixed view),
    naming the flag ``off`` that does without."""
    camera, size = dataset_camera(ds, off=off)

    def project(xyz: np.ndarray) -> np.ndarray:
        pts = xyz.reshape(len(xyz), -1, 3)
        px = camera.project(pts, size).astype(np.float32)
        px[np.all(pts == 0, axis=-1)] = np.nan  # a slot the frame's task has no object for
        px[~in_frame(px, size)] = np.nan
        return px

    return project


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
