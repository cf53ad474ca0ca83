"""Training-time frame cache: every frame of a camera decoded once into a memory-mapped uint8 .npy file.

Training loops index frames by global frame index (the dataset's ``index`` column) millions of times; decoding
mp4 each epoch would dominate. The cache is keyed by a fingerprint of the dataset's metadata, so it is rebuilt
when the dataset grows and reused otherwise. It lives in ``<dataset>/.cache`` (or ``~/.cache/rawdream`` when the
dataset directory is read-only).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rawdream.data.lerobot import LeRobotDataset
from rawdream.io import atomic_write


def _fingerprint(ds: LeRobotDataset, key: str) -> str:
    h = hashlib.sha256()
    h.update(f"{ds.root.resolve()}|{key}|{ds.num_episodes}|{ds.num_frames}".encode())
    for p in sorted((ds.root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cache_dir(ds: LeRobotDataset) -> Path:
    if os.access(ds.root, os.W_OK):
        return ds.root / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rawdream" / ds.root.name


def frame_cache(ds: LeRobotDataset, key: str | None = None, progress: bool = False) -> np.ndarray:
    """(num_frames, H, W, 3) uint8 memmap of camera ``key``; built on first use (decodes each mp4 once)."""
    key = key or ds.default_image_key()
    safe = key.replace("/", "_")
    path = _cache_dir(ds) / f"frames-{safe}-{_fingerprint(ds, key)}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"frames-{safe}-*.npy"):
        stale.unlink()
    h, w = ds.features[key]["shape"][:2]
    if ds.features[key].get("names") and ds.features[key]["names"][0] in ("channels", "channel", "c"):
        h, w = ds.features[key]["shape"][1:3]  # LeRobot's own recordings use (C, H, W)

    def build(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(ds.num_frames, h, w, 3))
        bar = tqdm(total=ds.num_episodes, desc=f"caching {key}", unit="ep", disable=not progress, leave=False)
        for i, frames in ds.iter_episode_frames(key):
            lo, hi = ds.episode_bounds(i)
            if frames.shape[1:3] != (h, w):
                raise ValueError(f"episode {i} frames are {frames.shape[1:3]}, info.json says {(h, w)}")
            out[lo:hi] = frames
            bar.update()
        bar.close()
        out.flush()
        del out

    atomic_write(path, build)
    return np.load(path, mmap_mode="r")
