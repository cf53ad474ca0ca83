"""LeRobotDataset v3 on disk, written and read with pyarrow + PyAV (no ``lerobot`` dependency).

Layout (LeRobot's codebase_version "v3.0"):

    meta/info.json                                   fps, features, totals, path templates (+ "rawdream" manifest)
    meta/stats.json                                  per-feature min/max/mean/std/count
    meta/tasks.parquet                               task string (pandas index) -> task_index
    meta/episodes/chunk-XXX/file-YYY.parquet         one row per episode: length, where its rows and frames live,
                                                     per-episode stats, and rawdream/* provenance columns
    data/chunk-XXX/file-YYY.parquet                  one row per frame: features, timestamp, frame_index,
                                                     episode_index, index, task_index
    videos/<video_key>/chunk-XXX/file-YYY.mp4        frames of several episodes back to back

Many episodes share one data file and one mp4 per camera. Crash safety: a finished episode is first written to
``.staging/`` atomically (raw arrays); every ``episodes_per_file`` episodes (and on close) the staged episodes are
encoded into a new data file + mp4 and committed in the order data -> videos -> episode metadata -> info.json.
Opening a dataset that has staged episodes (a collection that was killed) commits them first, so every
finished episode is readable and a resumed collection appends after them.

rawdream datasets may record one frame every ``frame_stride`` control steps (rendering dominates collection
cost); the ``action`` feature then holds the ``frame_stride`` actions executed between a frame and the next,
shape (frame_stride, action_dim). Datasets from elsewhere have stride 1 and action shape (action_dim,).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rawdream.data.video import VideoConfig, decode_video, encode_video
from rawdream.io import atomic_write, atomic_write_json, read_json

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STAGING = ".staging"
LOCK = ".writer.lock"  # held (flock) by the one process writing the dataset; released by the OS on a kill


def _try_lock(root: Path):
    """An open file holding an exclusive flock on ``root/LOCK``, or None if another process holds it."""
    import fcntl

    f = open(root / LOCK, "a")  # noqa: SIM115 - the open file *is* the lock; closed on release
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


DEFAULT_IMAGE_KEY = "observation.images.main"


class DatasetError(ValueError):
    """The directory is not a readable LeRobot v3 dataset; the message names the file and the fix."""


def _chunk_file(n: int) -> tuple[int, int]:
    return n // CHUNKS_SIZE, n % CHUNKS_SIZE


def video_feature(height: int, width: int, fps: float, cfg: VideoConfig) -> dict:
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height,
            "video.width": width,
            "video.codec": "h264" if "264" in cfg.codec else cfg.codec,
            "video.pix_fmt": cfg.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }


def _array_stats(x: np.ndarray) -> dict[str, list]:
    """Per-dimension stats over the first axis (frames), flattening any chunk axis into it."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim > 2:  # (T, k, D) action chunks -> stats per action dimension
        x = x.reshape(-1, x.shape[-1])
    return {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "count": [int(x.shape[0])],
    }


def _image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per-channel stats in [0, 1], shaped (3, 1, 1) as LeRobot stores them."""
    sub = frames[:: max(1, len(frames) // 16)].astype(np.float64) / 255.0
    flat = sub.reshape(-1, 3)
    shape = lambda v: [[[float(c)]] for c in v]  # noqa: E731
    return {
        "min": shape(flat.min(0)),
        "max": shape(flat.max(0)),
        "mean": shape(flat.mean(0)),
        "std": shape(flat.std(0)),
        "count": [len(frames)],
    }


def aggregate_stats(per_episode: list[dict[str, dict]]) -> dict[str, dict]:
    """Combine per-episode stats exactly (count-weighted means, pooled variances)."""
    out: dict[str, dict] = {}
    keys = set().union(*[s.keys() for s in per_episode]) if per_episode else set()
    for key in sorted(keys):
        items = [s[key] for s in per_episode if key in s]
        counts = np.array([it["count"][0] for it in items], dtype=np.float64)
        means = np.stack([np.asarray(it["mean"], dtype=np.float64) for it in items])
        stds = np.stack([np.asarray(it["std"], dtype=np.float64) for it in items])
        w = (counts / counts.sum()).reshape(-1, *([1] * (means.ndim - 1)))
        mean = (w * means).sum(0)
        var = (w * (stds**2 + (means - mean) ** 2)).sum(0)
        out[key] = {
            "min": np.min(np.stack([np.asarray(it["min"]) for it in items]), 0).tolist(),
            "max": np.max(np.stack([np.asarray(it["max"]) for it in items]), 0).tolist(),
            "mean": mean.tolist(),
            "std": np.sqrt(var).tolist(),
            "count": [int(counts.sum())],
        }
    return out


def _to_arrow(values: np.ndarray) -> pa.Array:
    """Numpy column -> arrow (fixed-size lists for vectors and chunks, as LeRobot's Sequence/Array2D)."""
    values = np.asarray(values)
    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(values.reshape(-1))
    for dim in reversed(values.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, dim)
    return flat


def _from_arrow(col: pa.ChunkedArray | pa.Array, dtype: str | None = None) -> np.ndarray:
    """Arrow column (scalars, or nested lists of equal length) -> numpy array."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    shape = [len(col)]
    arr = col
    while (
        pa.types.is_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
        or pa.types.is_large_list(arr.type)
    ):
        if len(arr) == 0:
            break
        if pa.types.is_fixed_size_list(arr.type):
            shape.append(arr.type.list_size)
        else:
            lengths = np.diff(arr.offsets.to_numpy())
            if len(set(lengths.tolist())) > 1:
                raise DatasetError("ragged list column: rows have different lengths")
            shape.append(int(lengths[0]))
        arr = arr.flatten()
    out = arr.to_numpy(zero_copy_only=False).reshape(shape)
    return out.astype(dtype) if dtype else out


def _pandas_indexed_table(columns: dict[str, pa.Array], index: str) -> pa.Table:
    """A table pandas reads back with ``index`` as its index (LeRobot reads tasks.parquet with pandas)."""
    table = pa.table(columns)
    meta = {
        "index_columns": [index],
        "column_indexes": [],
        "columns": [
            {
                "name": name,
                "field_name": name,
                "pandas_type": "unicode" if pa.types.is_string(columns[name].type) else "int64",
                "numpy_type": "object" if pa.types.is_string(columns[name].type) else "int64",
                "metadata": None,
            }
            for name in columns
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()})


@dataclass
class Episode:
    """One episode read back: per-frame arrays, frames per camera, and its metadata row."""

    index: int
    data: dict[str, np.ndarray]
    frames: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def length(self) -> int:
        return int(self.meta["length"])


class LeRobotWriter:
    """Append episodes to a LeRobot v3 dataset, crash-safely. Use as a context manager or call close()."""

    def __init__(
        self,
        root: str | Path,
        *,
        fps: float,
        features: dict[str, dict],
        robot_type: str | None = None,
        manifest: dict[str, Any] | None = None,
        episodes_per_file: int = 50,
        video: VideoConfig | None = None,
        resume: bool = False,
    ):
        self.root = Path(root)
        self.video_cfg = video or VideoConfig()
        self.episodes_per_file = max(1, int(episodes_per_file))
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = _try_lock(self.root)
        if self._lock is None:
            raise DatasetError(
                f"{self.root} is being written by another process (its {LOCK} is held); wait for it to finish "
                f"or choose another --out"
            )
        info_path = self.root / "meta" / "info.json"
        if info_path.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.root} already holds a dataset; re-run the same collect command to resume it, or choose another --out"
                )
            if any((self.root / STAGING).glob("episode-*.npz")):
                recover_staged(self.root)  # commit the staged episodes of a killed run (we hold the lock)
            existing = LeRobotDataset(self.root, recover=False)
            if existing.info["features"].keys() != self._all_features(features).keys():
                raise DatasetError(
                    f"{self.root}: cannot resume, its features {sorted(existing.info['features'])} differ from "
                    f"this run's {sorted(self._all_features(features))}; use another --out"
                )
            self.info = existing.info
            self.video_cfg = VideoConfig(**(self.info.get("rawdream") or {}).get("video", {}))
            self._tasks = dict(existing.task_to_index)
            self._episode_rows = existing.episodes_table_rows()
        else:
            if any(p.name not in (STAGING, LOCK) for p in self.root.iterdir()):
                raise FileExistsError(
                    f"{self.root} exists and is not a LeRobot dataset; choose an empty --out"
                )
            self.info = {
                "codebase_version": CODEBASE_VERSION,
                "robot_type": robot_type,
                "total_episodes": 0,
                "total_frames": 0,
                "total_tasks": 0,
                "chunks_size": CHUNKS_SIZE,
                "data_files_size_in_mb": 100,
                "video_files_size_in_mb": 200,
                "fps": fps,
                "splits": {"train": "0:0"},
                "data_path": DATA_PATH,
                "video_path": VIDEO_PATH,
                "features": self._all_features(features),
                "rawdream": {**(manifest or {}), "video": dataclasses.asdict(self.video_cfg)},
            }
            self._tasks: dict[str, int] = {}
            self._episode_rows: list[dict] = []
            self.root.mkdir(parents=True, exist_ok=True)
            self._write_info()
        self.staging = self.root / STAGING
        self.staging.mkdir(parents=True, exist_ok=True)
        self._next_seq = self._max_committed_seq() + 1
        for p in self.staging.glob("episode-*.npz"):
            self._next_seq = max(self._next_seq, int(p.stem.split("-")[1]) + 1)

    # -- public API -----------------------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return len(self._episode_rows) + len(self._staged())

    def committed_keys(self) -> set[str]:
        """Provenance keys (``rawdream/spec``) of episodes already on disk: a resumed collection skips them."""
        keys = {str(r.get("rawdream/spec")) for r in self._episode_rows if r.get("rawdream/spec") is not None}
        for path in self._staged():
            with np.load(path, allow_pickle=False) as z:
                keys.add(str(json.loads(str(z["__meta__"])).get("extra", {}).get("rawdream/spec")))
        return keys

    def add_episode(
        self,
        frames: dict[str, np.ndarray],
        data: dict[str, np.ndarray],
        task: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Stage one finished episode (durable on return); commit a file's worth when enough are staged."""
        lengths = {len(v) for v in frames.values()} | {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise ValueError(
                f"episode arrays have different lengths: { {k: len(v) for k, v in {**frames, **data}.items()} }"
            )
        video_keys = [k for k, f in self.info["features"].items() if f["dtype"] == "video"]
        missing = [k for k in video_keys if k not in frames] + [
            k
            for k, f in self.info["features"].items()
            if f["dtype"] != "video" and k not in data and k not in _AUTO
        ]
        if missing:
            raise ValueError(f"episode lacks features {missing}")
        seq = self._next_seq
        self._next_seq += 1
        meta = {"task": task, "extra": extra or {}}
        arrays = {f"frames::{k}": np.asarray(frames[k], dtype=np.uint8) for k in video_keys}
        arrays.update({f"data::{k}": np.asarray(v) for k, v in data.items()})
        arrays["__meta__"] = np.asarray(json.dumps(meta))
        atomic_write(self.staging / f"episode-{seq:08d}.npz", lambda p: _savez(p, arrays))
        if len(self._staged()) >= self.episodes_per_file:
            self.flush()

    def flush(self) -> None:
        """Encode all staged episodes into one new data file and one mp4 per camera, then commit metadata."""
        staged = self._staged()
        if not staged:
            return
        episodes = []
        for path in staged:
            with np.load(path, allow_pickle=False) as z:
                episodes.append(
                    {
                        "seq": int(path.stem.split("-")[1]),
                        "meta": json.loads(str(z["__meta__"])),
                        "frames": {k.split("::", 1)[1]: z[k] for k in z.files if k.startswith("frames::")},
                        "data": {k.split("::", 1)[1]: z[k] for k in z.files if k.startswith("data::")},
                    }
                )
        fps = self.info["fps"]
        file_no = len({(r["data/chunk_index"], r["data/file_index"]) for r in self._episode_rows})
        chunk, fidx = _chunk_file(file_no)
        ep0 = len(self._episode_rows)
        index0 = int(self.info["total_frames"])
        features = self.info["features"]
        video_keys = [k for k, f in features.items() if f["dtype"] == "video"]

        # 1. data parquet
        columns: dict[str, list[np.ndarray]] = {}
        new_rows = []
        offset = index0
        for i, ep in enumerate(episodes):
            n = (
                len(next(iter(ep["frames"].values())))
                if ep["frames"]
                else len(next(iter(ep["data"].values())))
            )
            task_index = self._task_index(ep["meta"]["task"])
            auto = {
                "timestamp": (np.arange(n) / fps).astype(np.float32),
                "frame_index": np.arange(n, dtype=np.int64),
                "episode_index": np.full(n, ep0 + i, dtype=np.int64),
                "index": np.arange(offset, offset + n, dtype=np.int64),
                "task_index": np.full(n, task_index, dtype=np.int64),
            }
            for key, feat in features.items():
                if feat["dtype"] == "video":
                    continue
                values = auto[key] if key in auto else np.asarray(ep["data"][key]).astype(feat["dtype"])
                columns.setdefault(key, []).append(values)
            stats = {k: _array_stats(np.asarray(ep["data"][k])) for k in ep["data"] if k in features}
            stats.update({k: _image_stats(ep["frames"][k]) for k in video_keys})
            row = {
                "episode_index": ep0 + i,
                "tasks": [ep["meta"]["task"]],
                "length": n,
                "data/chunk_index": chunk,
                "data/file_index": fidx,
                "dataset_from_index": offset,
                "dataset_to_index": offset + n,
                "meta/episodes/chunk_index": chunk,
                "meta/episodes/file_index": fidx,
                "rawdream/seq": ep["seq"],
                "_stats": stats,
            }
            row.update({k: v for k, v in ep["meta"]["extra"].items()})
            new_rows.append(row)
            offset += n
        table = pa.table({k: _to_arrow(np.concatenate(v)) for k, v in columns.items()})
        data_path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=fidx)
        atomic_write(data_path, lambda p: pq.write_table(table, p))

        # 2. one mp4 per camera holding these episodes back to back
        for key in video_keys:
            allframes = np.concatenate([ep["frames"][key] for ep in episodes])
            vpath = self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=fidx)
            atomic_write(vpath, lambda p, fr=allframes: encode_video(p, fr, fps, self.video_cfg))
            t = 0
            for row in new_rows:
                row[f"videos/{key}/chunk_index"] = chunk
                row[f"videos/{key}/file_index"] = fidx
                row[f"videos/{key}/from_timestamp"] = t / fps
                row[f"videos/{key}/to_timestamp"] = (t + row["length"]) / fps
                t += row["length"]

        # 3. episode metadata for this file, then 4. totals, tasks and stats
        self._write_episodes_file(new_rows, chunk, fidx)
        self._episode_rows.extend(new_rows)
        self._commit_meta()
        for path in staged:
            path.unlink()

    def _commit_meta(self) -> None:
        """Totals, tasks, stats and manifest, derived from the committed episode rows (so a recovery can redo
        them after a kill that landed between the episode metadata and info.json)."""
        for row in self._episode_rows:  # tasks are indexed in order of first use: re-adding keeps the indices
            for task in row.get("tasks") or []:
                self._task_index(str(task))
        self._write_tasks()
        self.info["total_episodes"] = len(self._episode_rows)
        self.info["total_frames"] = (
            int(self._episode_rows[-1]["dataset_to_index"]) if self._episode_rows else 0
        )
        self.info["total_tasks"] = len(self._tasks)
        self.info["splits"] = {"train": f"0:{len(self._episode_rows)}"}
        self._update_manifest()
        atomic_write_json(
            self.root / "meta" / "stats.json", aggregate_stats([r["_stats"] for r in self._episode_rows])
        )
        self._write_info()

    def close(self) -> None:
        self.flush()
        if self.staging.exists() and not any(self.staging.iterdir()):
            self.staging.rmdir()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, exc_type, *_):
        # On an exception the staged episodes stay durable; commit them so the dataset is complete to here.
        self.close()

    # -- internals ------------------------------------------------------------------------------------------
    @staticmethod
    def _all_features(features: dict[str, dict]) -> dict[str, dict]:
        auto = {
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        }
        return {**features, **auto}

    def _staged(self) -> list[Path]:
        staging = self.root / STAGING
        return sorted(staging.glob("episode-*.npz")) if staging.exists() else []

    def _max_committed_seq(self) -> int:
        return max((int(r.get("rawdream/seq", -1)) for r in self._episode_rows), default=-1)

    def _task_index(self, task: str) -> int:
        if task not in self._tasks:
            self._tasks[task] = len(self._tasks)
        return self._tasks[task]

    def _write_tasks(self) -> None:
        tasks = sorted(self._tasks.items(), key=lambda kv: kv[1])
        table = _pandas_indexed_table(
            {
                "task_index": pa.array([i for _, i in tasks], pa.int64()),
                "task": pa.array([t for t, _ in tasks], pa.string()),
            },
            index="task",
        )
        atomic_write(self.root / "meta" / "tasks.parquet", lambda p: pq.write_table(table, p))

    def _write_episodes_file(self, rows: list[dict], chunk: int, fidx: int) -> None:
        cols: dict[str, list] = {}
        for row in rows:
            flat = {k: v for k, v in row.items() if k != "_stats"}
            for feat, st in row["_stats"].items():
                for stat, value in st.items():
                    flat[f"stats/{feat}/{stat}"] = value
            for k, v in flat.items():
                cols.setdefault(k, []).append(v)
        table = pa.table({k: pa.array(v) for k, v in cols.items()})
        path = self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=fidx)
        atomic_write(path, lambda p: pq.write_table(table, p))

    def _update_manifest(self) -> None:
        scenes = sorted(
            {str(r["rawdream/env_task"]) for r in self._episode_rows if r.get("rawdream/env_task")}
        )
        manifest = self.info.setdefault("rawdream", {})
        manifest["tasks"] = scenes
        manifest["num_episodes"] = len(self._episode_rows)

    def _write_info(self) -> None:
        atomic_write_json(self.root / "meta" / "info.json", self.info)


_AUTO = {"timestamp", "frame_index", "episode_index", "index", "task_index"}


class LeRobotDataset:
    """Read a LeRobot v3 dataset directory (ours or anyone's): metadata, per-frame columns, episodes, frames."""

    def __init__(self, root: str | Path, recover: bool = True):
        self.root = Path(root)
        if not self.root.exists():
            raise DatasetError(f"dataset directory {self.root} does not exist; check --data / --out")
        info_path = self.root / "meta" / "info.json"
        if not info_path.exists():
            raise DatasetError(
                f"{self.root} is not a LeRobot v3 dataset: {info_path} is missing "
                f"(collect one with `rawdream collect play --out {self.root}`)"
            )
        if recover and any((self.root / STAGING).glob("episode-*.npz")) and os.access(self.root, os.W_OK):
            # A collection was killed with finished episodes staged: commit them (like a journal replay) - unless
            # a live writer holds the lock, in which case its staged episodes are its own to commit.
            lock = _try_lock(self.root)
            if lock is not None:
                with lock:
                    recover_staged(self.root)
        try:
            self.info: dict = read_json(info_path)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{info_path} is not valid JSON ({e}); the dataset is corrupt") from e
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(
                f"{self.root} is LeRobot {version}, not {CODEBASE_VERSION}; convert it with LeRobot's "
                f"`convert_dataset_v21_to_v30` script first"
            )
        self.features: dict[str, dict] = self.info["features"]
        self.fps: float = float(self.info["fps"])
        self.episodes = self._load_episodes()
        self.task_to_index, self.tasks = self._load_tasks()
        self._columns: dict[str, np.ndarray] | None = None

    # -- metadata -------------------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        """What this dataset was made from; for foreign datasets, the task strings stand in for scene names."""
        m = dict(self.info.get("rawdream") or {})
        m.setdefault("tasks", sorted(self.tasks))
        m.setdefault("kind", "external")
        return m

    @property
    def frame_stride(self) -> int:
        return int((self.info.get("rawdream") or {}).get("frame_stride", 1))

    @property
    def num_episodes(self) -> int:
        return len(self.episodes["episode_index"])

    @property
    def num_frames(self) -> int:
        return int(self.episodes["dataset_to_index"][-1]) if self.num_episodes else 0

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] == "video"]

    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] in ("video", "image")]

    @property
    def stats(self) -> dict[str, dict]:
        path = self.root / "meta" / "stats.json"
        return read_json(path) if path.exists() else {}

    def episodes_table_rows(self) -> list[dict]:
        keys = [k for k in self.episodes if not k.startswith("stats/")]
        rows = []
        for i in range(self.num_episodes):
            row = {k: _py(self.episodes[k][i]) for k in keys}
            row["_stats"] = self._episode_stats(i)
            rows.append(row)
        return rows

    def _episode_stats(self, i: int) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for k in self.episodes:
            if k.startswith("stats/"):
                _, rest = k.split("/", 1)
                feat, stat = rest.rsplit("/", 1)
                out.setdefault(feat, {})[stat] = _py(self.episodes[k][i])
        return out

    def _load_episodes(self) -> dict[str, list]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            return {"episode_index": [], "length": [], "dataset_from_index": [], "dataset_to_index": []}
        tables = []
        for f in files:
            try:
                tables.append(pq.read_table(f))
            except Exception as e:
                raise DatasetError(f"{f} is not readable parquet ({e}); the dataset is corrupt") from e
        table = pa.concat_tables(tables, promote_options="default")
        cols = {name: table.column(name).to_pylist() for name in table.column_names}
        order = np.argsort(cols["episode_index"])
        cols = {k: [v[i] for i in order] for k, v in cols.items()}
        if cols["episode_index"] != list(range(len(order))):
            raise DatasetError(
                f"{self.root}: episode indices are not 0..N-1; the dataset metadata is corrupt"
            )
        return cols

    def _load_tasks(self) -> tuple[dict[str, int], list[str]]:
        path = self.root / "meta" / "tasks.parquet"
        if not path.exists():
            return {}, []
        t = pq.read_table(path)
        name_col = "task" if "task" in t.column_names else "__index_level_0__"
        names = t.column(name_col).to_pylist()
        idx = t.column("task_index").to_pylist()
        mapping = dict(zip(names, idx))
        tasks = [""] * (max(idx) + 1 if idx else 0)
        for n, i in mapping.items():
            tasks[i] = n
        return mapping, tasks

    # -- per-frame columns ----------------------------------------------------------------------------------
    def columns(self) -> dict[str, np.ndarray]:
        """All non-image features as numpy arrays over the whole dataset (row i = global frame index i)."""
        if self._columns is None:
            files = sorted(
                {(c, f) for c, f in zip(self.episodes["data/chunk_index"], self.episodes["data/file_index"])}
            )
            tables = []
            for c, f in files:
                path = self.root / self.info["data_path"].format(chunk_index=c, file_index=f)
                if not path.exists():
                    raise DatasetError(f"{path} is missing; the dataset is incomplete")
                skip = {k for k, ft in self.features.items() if ft["dtype"] in ("video", "image")}
                try:
                    t = pq.read_table(path)
                except (pa.ArrowException, OSError) as e:
                    raise DatasetError(
                        f"{path} is not a readable parquet file ({str(e).splitlines()[0][:100]}); the dataset is "
                        f"corrupt: collect it again"
                    ) from None
                tables.append(t.select([n for n in t.column_names if n not in skip]))
            cols: dict[str, np.ndarray] = {}
            if tables:
                table = pa.concat_tables(tables, promote_options="default")
                order = np.argsort(table.column("index").to_numpy())
                for name in table.column_names:
                    dtype = self.features.get(name, {}).get("dtype")
                    arr = _from_arrow(
                        table.column(name), dtype if dtype not in (None, "string", "bool") else None
                    )
                    cols[name] = arr[order]
            self._columns = cols
        return self._columns

    def verify(self) -> list[str]:
        """Read every data file and decode every video frame; the problems found (empty: the dataset is whole).
        Opening a dataset reads its metadata only - this is the check that the payload matches it."""
        problems = []
        try:
            cols = self.columns()
            rows = len(next(iter(cols.values()))) if cols else 0
            if rows != self.num_frames:
                problems.append(f"data files hold {rows} rows; the metadata says {self.num_frames} frames")
        except DatasetError as e:
            problems.append(str(e))
        for key in self.video_keys:
            by_file: dict[tuple[int, int], list[int]] = {}
            for i in range(self.num_episodes):
                f = (
                    int(self.episodes[f"videos/{key}/chunk_index"][i]),
                    int(self.episodes[f"videos/{key}/file_index"][i]),
                )
                by_file.setdefault(f, []).append(i)
            for (chunk, fidx), eps in sorted(by_file.items()):
                try:
                    decoded = self._decode_file(key, chunk, fidx)
                    for i in eps:
                        self._slice_episode(decoded, key, i)
                except DatasetError as e:
                    problems.append(str(e))
        return problems

    def column(self, key: str) -> np.ndarray:
        cols = self.columns()
        if key not in cols:
            raise DatasetError(f"{self.root} has no feature {key!r}; it has {sorted(cols)}")
        return cols[key]

    def episode_bounds(self, i: int) -> tuple[int, int]:
        return int(self.episodes["dataset_from_index"][i]), int(self.episodes["dataset_to_index"][i])

    # -- frames ---------------------------------------------------------------------------------------------
    def decode_episode_frames(self, i: int, key: str) -> np.ndarray:
        """Decode one episode's frames of camera ``key`` from its mp4 (prefer the frame cache for training)."""
        frames_by_file = self._decode_file(
            key,
            int(self.episodes[f"videos/{key}/chunk_index"][i]),
            int(self.episodes[f"videos/{key}/file_index"][i]),
        )
        return self._slice_episode(frames_by_file, key, i)

    def _video_path(self, key: str, chunk: int, fidx: int) -> Path:
        return self.root / self.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=fidx)

    def _decode_file(self, key: str, chunk: int, fidx: int) -> tuple[np.ndarray, np.ndarray]:
        path = self._video_path(key, chunk, fidx)
        if not path.exists():
            raise DatasetError(f"{path} is missing; the dataset is incomplete")
        try:
            return decode_video(path)
        except DatasetError:
            raise
        except Exception as e:
            raise DatasetError(f"{path} cannot be decoded ({e}); the dataset is corrupt") from e

    def _slice_episode(self, decoded: tuple[np.ndarray, np.ndarray], key: str, i: int) -> np.ndarray:
        frames, times = decoded
        start_ts = float(self.episodes[f"videos/{key}/from_timestamp"][i])
        n = int(self.episodes["length"][i])
        # locate the first frame by timestamp (robust to files whose stream does not start at 0)
        start = (
            int(np.argmin(np.abs(times - start_ts)))
            if np.isfinite(times).all()
            else round(start_ts * self.fps)
        )
        if start + n > len(frames):
            raise DatasetError(
                f"{self._video_path(key, self.episodes[f'videos/{key}/chunk_index'][i], self.episodes[f'videos/{key}/file_index'][i])}"
                f" has {len(frames)} frames, episode {i} needs frames {start}..{start + n - 1}; the video is truncated"
            )
        return frames[start : start + n]

    def iter_episode_frames(self, key: str) -> Iterable[tuple[int, np.ndarray]]:
        """(episode index, frames) for every episode, decoding each mp4 file once."""
        by_file: dict[tuple[int, int], list[int]] = {}
        for i in range(self.num_episodes):
            if self.features[key]["dtype"] == "video":
                f = (
                    int(self.episodes[f"videos/{key}/chunk_index"][i]),
                    int(self.episodes[f"videos/{key}/file_index"][i]),
                )
            else:
                f = (int(self.episodes["data/chunk_index"][i]), int(self.episodes["data/file_index"][i]))
            by_file.setdefault(f, []).append(i)
        for (chunk, fidx), eps in sorted(by_file.items()):
            if self.features[key]["dtype"] == "video":
                decoded = self._decode_file(key, chunk, fidx)
                for i in eps:
                    yield i, self._slice_episode(decoded, key, i)
            else:  # "image" features: encoded images inside the data parquet
                for i in eps:
                    yield i, self._images_from_parquet(key, chunk, fidx, i)

    def _images_from_parquet(self, key: str, chunk: int, fidx: int, i: int) -> np.ndarray:
        import io

        import imageio.v3 as iio

        path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=fidx)
        t = pq.read_table(path, columns=[key, "episode_index", "frame_index"])
        mask = np.asarray(t.column("episode_index").to_numpy() == i)
        rows = t.filter(pa.array(mask))
        order = np.argsort(rows.column("frame_index").to_numpy())
        items = rows.column(key).to_pylist()
        return np.stack([iio.imread(io.BytesIO(items[j]["bytes"]))[..., :3] for j in order]).astype(np.uint8)

    def episode(self, i: int) -> Episode:
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range 0..{self.num_episodes - 1}")
        lo, hi = self.episode_bounds(i)
        data = {k: v[lo:hi] for k, v in self.columns().items()}
        frames = {}
        for key in self.image_keys:
            if self.features[key]["dtype"] == "video":
                frames[key] = self.decode_episode_frames(i, key)
            else:
                frames[key] = self._images_from_parquet(
                    key,
                    int(self.episodes["data/chunk_index"][i]),
                    int(self.episodes["data/file_index"][i]),
                    i,
                )
        meta = {k: _py(v[i]) for k, v in self.episodes.items() if not k.startswith("stats/")}
        return Episode(index=i, data=data, frames=frames, meta=meta)

    def default_image_key(self) -> str:
        keys = self.image_keys
        if not keys:
            raise DatasetError(
                f"{self.root} has no image or video feature; the world model and policy need one"
            )
        return DEFAULT_IMAGE_KEY if DEFAULT_IMAGE_KEY in keys else keys[0]


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz" to the temp name
        np.savez(f, **arrays)


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def recover_staged(root: Path) -> None:
    """Commit episodes staged by a killed writer (run when such a dataset is opened)."""
    staging = root / STAGING
    # Staged files already committed (killed between metadata commit and staging cleanup) are dropped.
    ds = LeRobotDataset(root, recover=False)
    committed = {int(s) for s in ds.episodes.get("rawdream/seq", []) if s is not None}
    for p in list(staging.glob("episode-*.npz")):
        if int(p.stem.split("-")[1]) in committed:
            p.unlink()
    for p in staging.glob(".*.tmp"):
        p.unlink()  # half-written staging files of the episode that was in progress
    w = LeRobotWriter.__new__(LeRobotWriter)
    w.root = root
    w._lock = None  # the caller holds it
    w.video_cfg = VideoConfig(**(ds.info.get("rawdream") or {}).get("video", {}))
    w.episodes_per_file = 1 << 30
    w.info = ds.info
    w._tasks = dict(ds.task_to_index)
    w._episode_rows = ds.episodes_table_rows()
    w.staging = staging
    w._next_seq = 0
    w.flush()
    if w._episode_rows:
        w._commit_meta()  # idempotent; repairs totals if the kill came after the episode metadata was written
    if staging.exists() and not any(staging.iterdir()):
        shutil.rmtree(staging)
