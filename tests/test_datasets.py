"""LeRobot v3 layout: write -> read round trip, a directory built by hand from the format spec, crash safety,
the frame cache, and clear errors on corrupt or missing data."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rawdream.data.cache import frame_cache
from rawdream.data.lerobot import DatasetError, LeRobotDataset, LeRobotWriter, video_feature
from rawdream.data.video import VideoConfig, encode_video

KEY = "observation.images.main"


def _features(stride=1):
    return {
        KEY: video_feature(32, 32, 10, VideoConfig()),
        "observation.state": {"dtype": "float32", "shape": [4], "names": None},
        "action": {"dtype": "float32", "shape": [4] if stride == 1 else [stride, 4], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
    }


def _smooth_frames(rng, n, size=32):
    """Frames with smooth content (what a codec is built for) so codec error is meaningful."""
    base = rng.integers(0, 255, (1, 4, 4, 3)).astype(np.float64)
    frames = np.repeat(np.repeat(base, size // 4, 1), size // 4, 2)
    frames = frames + np.arange(n)[:, None, None, None] * 3.0
    return np.clip(frames, 0, 255).astype(np.uint8)


def _episode(rng, n, stride=1):
    shape = (n, 4) if stride == 1 else (n, stride, 4)
    return (
        {KEY: _smooth_frames(rng, n)},
        {
            "observation.state": rng.normal(size=(n, 4)).astype(np.float32),
            "action": rng.uniform(-1, 1, size=shape).astype(np.float32),
            "next.success": rng.random(n) < 0.3,
        },
    )


@pytest.mark.parametrize("stride", [1, 8])
def test_round_trip_exact_arrays_and_frames_within_codec_tolerance(tmp_path, rng, stride):
    written = []
    with LeRobotWriter(
        tmp_path / "ds",
        fps=10,
        features=_features(stride),
        manifest={"frame_stride": stride},
        episodes_per_file=3,
    ) as w:
        for i in range(7):
            frames, data = _episode(rng, 5 + i, stride)
            w.add_episode(frames, data, task=f"task {i % 2}", extra={"rawdream/env_task": "reach"})
            written.append((frames, data))
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.num_episodes == 7 and ds.num_frames == sum(5 + i for i in range(7))
    assert ds.frame_stride == stride and ds.manifest["tasks"] == ["reach"]
    assert sorted(ds.tasks) == ["task 0", "task 1"]
    assert len(list((tmp_path / "ds" / "videos" / KEY).glob("chunk-*/file-*.mp4"))) == 3  # 3 + 3 + 1 episodes
    for i, (frames, data) in enumerate(written):
        ep = ds.episode(i)
        for k in data:
            np.testing.assert_array_equal(ep.data[k], data[k])  # actions and states exact
        err = np.abs(ep.frames[KEY].astype(int) - frames[KEY]).mean()
        assert err < 2.0, f"mean abs codec error {err}"
        assert ep.meta["tasks"] == [f"task {i % 2}"]
    # stats.json aggregates exactly what a direct computation gives
    all_state = np.concatenate([d["observation.state"] for _, d in written])
    np.testing.assert_allclose(ds.stats["observation.state"]["mean"], all_state.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.stats["observation.state"]["std"], all_state.std(0), rtol=1e-4, atol=1e-6)
    # the frame cache holds the decoded frames at their global indices
    cache = frame_cache(ds)
    lo, hi = ds.episode_bounds(4)
    np.testing.assert_array_equal(cache[lo:hi], ds.episode(4).frames[KEY])
    assert frame_cache(ds).filename == cache.filename  # reused, not rebuilt


def test_reads_a_v3_directory_built_from_the_format_spec(tmp_path, rng):
    """A dataset as LeRobot writes it (CHW video shape, 1-D action, pandas-indexed tasks), built without our writer."""
    root = tmp_path / "foreign"
    fps, n0, n1 = 15, 6, 9
    frames = _smooth_frames(rng, n0 + n1)
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    vdir = root / "videos" / "observation.images.front" / "chunk-000"
    vdir.mkdir(parents=True)
    encode_video(vdir / "file-000.mp4", frames, fps)
    action = rng.normal(size=(n0 + n1, 6)).astype(np.float32)
    ep_index = np.array([0] * n0 + [1] * n1)
    frame_index = np.concatenate([np.arange(n0), np.arange(n1)])
    table = pa.table(
        {
            "action": pa.array(
                list(action), pa.list_(pa.float32())
            ),  # variable-size lists, as HF datasets writes
            "observation.state": pa.array(list(action[:, :2]), pa.list_(pa.float32())),
            "timestamp": pa.array(frame_index / fps, pa.float32()),
            "frame_index": pa.array(frame_index, pa.int64()),
            "episode_index": pa.array(ep_index, pa.int64()),
            "index": pa.array(np.arange(n0 + n1), pa.int64()),
            "task_index": pa.array(ep_index, pa.int64()),
        }
    )
    pq.write_table(table, root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(
        pa.table({"__index_level_0__": ["fold the towel", "open the box"], "task_index": [0, 1]}),
        root / "meta" / "tasks.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "episode_index": [0, 1],
                "tasks": [["fold the towel"], ["open the box"]],
                "length": [n0, n1],
                "data/chunk_index": [0, 0],
                "data/file_index": [0, 0],
                "dataset_from_index": [0, n0],
                "dataset_to_index": [n0, n0 + n1],
                "videos/observation.images.front/chunk_index": [0, 0],
                "videos/observation.images.front/file_index": [0, 0],
                "videos/observation.images.front/from_timestamp": [0.0, n0 / fps],
                "videos/observation.images.front/to_timestamp": [n0 / fps, (n0 + n1) / fps],
            }
        ),
        root / "meta" / "episodes" / "chunk-000" / "file-000.parquet",
    )
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so100",
        "total_episodes": 2,
        "total_frames": n0 + n1,
        "total_tasks": 2,
        "chunks_size": 1000,
        "fps": fps,
        "splits": {"train": "0:2"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "observation.images.front": {
                "dtype": "video",
                "shape": [3, 32, 32],
                "names": ["channels", "height", "width"],
            },
            "action": {"dtype": "float32", "shape": [6], "names": None},
            "observation.state": {"dtype": "float32", "shape": [2], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    ds = LeRobotDataset(root)
    assert (
        ds.num_episodes == 2 and ds.frame_stride == 1 and ds.default_image_key() == "observation.images.front"
    )
    assert ds.manifest["tasks"] == ["fold the towel", "open the box"]
    ep = ds.episode(1)
    np.testing.assert_array_equal(ep.data["action"], action[n0:])
    assert np.abs(ep.frames["observation.images.front"].astype(int) - frames[n0:]).mean() < 2.0
    cache = frame_cache(ds)
    assert cache.shape == (n0 + n1, 32, 32, 3)


def test_corrupt_or_missing_datasets_fail_clearly(tmp_path, rng):
    with pytest.raises(DatasetError, match="does not exist"):
        LeRobotDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="info.json is missing"):
        LeRobotDataset(tmp_path / "empty")
    with LeRobotWriter(tmp_path / "ds", fps=10, features=_features()) as w:
        w.add_episode(*_episode(rng, 5), task="t")
    video = next((tmp_path / "ds" / "videos").rglob("*.mp4"))
    video.write_bytes(video.read_bytes()[:200])
    with pytest.raises(DatasetError, match="corrupt|truncated|cannot be decoded"):
        LeRobotDataset(tmp_path / "ds").episode(0)
    (tmp_path / "ds" / "meta" / "info.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        LeRobotDataset(tmp_path / "ds")


def test_writer_refuses_to_overwrite(tmp_path, rng):
    with LeRobotWriter(tmp_path / "ds", fps=10, features=_features()) as w:
        w.add_episode(*_episode(rng, 4), task="t")
    with pytest.raises(FileExistsError, match="resume it"):
        LeRobotWriter(tmp_path / "ds", fps=10, features=_features())


def _staged(out: Path) -> int:
    """Staged episodes not yet in a committed file. A kill between the metadata commit and the staging cleanup
    leaves already-committed episodes staged too; opening the dataset must drop those, not add them twice."""
    committed: set[int] = set()
    if (out / "meta" / "episodes").exists():
        for p in (out / "meta" / "episodes").rglob("*.parquet"):
            committed |= set(pq.read_table(p, columns=["rawdream/seq"]).column(0).to_pylist())  # atomic
    return sum(int(p.stem.split("-")[1]) not in committed for p in (out / ".staging").glob("episode-*.npz"))


@pytest.mark.slow
def test_killed_collection_keeps_finished_episodes_and_resumes(tmp_path):
    """kill -9 a real collection mid-episode; every finished episode is readable; re-running completes it."""
    out = tmp_path / "play"
    cmd = [
        sys.executable,
        "-m",
        "rawdream.cli",
        "collect",
        "play",
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--episodes_per_task=6",
        "--episodes_per_file=4",
        "--tasks=reach",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until at least one file is committed and more episodes are staged
        committed = (out / "meta" / "episodes").exists() and any(
            (out / "meta" / "episodes").rglob("*.parquet")
        )
        if committed and _staged(out) >= 1:
            break
        if proc.poll() is not None:
            pytest.fail(f"collection ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    staged_at_kill = _staged(out)
    committed_at_kill = sum(
        pq.read_metadata(p).num_rows for p in (out / "meta" / "episodes").rglob("*.parquet")
    )
    assert committed_at_kill >= 4
    ds = LeRobotDataset(out)  # opening commits the staged (finished) episodes, like a journal replay
    assert ds.num_episodes == committed_at_kill + staged_at_kill
    assert not list((out / ".staging").glob("*.npz"))
    n_after_kill = ds.num_episodes
    for i in range(ds.num_episodes):
        assert ds.episode(i).length == 5  # 32 steps at stride 8 -> 5 frames
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 6, f"resume gave {ds.num_episodes} episodes (had {n_after_kill})"
    specs = ds.episodes["rawdream/spec"]
    assert len(set(specs)) == 6, "an episode was collected twice"
    assert f"{n_after_kill} episodes were already on disk" in res.stdout or n_after_kill == 6


def test_recovery_repairs_totals_after_a_kill_between_episode_metadata_and_info(tmp_path, rng, monkeypatch):
    """Simulate a kill after meta/episodes was written but before tasks/stats/info: reopening must rebuild the
    totals from the episode rows, and a resumed writer must continue the global frame index, not overlap it."""
    root = tmp_path / "ds"
    with LeRobotWriter(root, fps=10, features=_features(), episodes_per_file=2) as w:
        for i in range(2):
            w.add_episode(*_episode(rng, 4), task="task 0", extra={"rawdream/spec": f"a{i}"})
    w = LeRobotWriter(root, fps=10, features=_features(), episodes_per_file=2, resume=True)

    def killed(*_a, **_k):
        raise KeyboardInterrupt  # stands in for SIGKILL right after the episodes parquet is on disk

    monkeypatch.setattr(w, "_commit_meta", killed)
    w.add_episode(*_episode(rng, 5), task="task 1", extra={"rawdream/spec": "b0"})
    with pytest.raises(KeyboardInterrupt):
        w.add_episode(*_episode(rng, 6), task="task 1", extra={"rawdream/spec": "b1"})
    w._lock.close()  # the OS releases a killed process's lock
    assert json.loads((root / "meta" / "info.json").read_text())["total_episodes"] == 2  # stale
    ds = LeRobotDataset(root)
    assert (
        ds.num_episodes == 4 and ds.info["total_episodes"] == 4 and ds.info["total_frames"] == 4 + 4 + 5 + 6
    )
    assert sorted(ds.tasks) == ["task 0", "task 1"]
    with LeRobotWriter(root, fps=10, features=_features(), episodes_per_file=2, resume=True) as w2:
        w2.add_episode(*_episode(rng, 3), task="task 0")
    ds = LeRobotDataset(root)
    index = ds.column("index")
    assert ds.num_episodes == 5 and len(np.unique(index)) == len(index) == 22


def test_one_writer_at_a_time_and_readers_leave_a_live_writers_episodes_alone(tmp_path, rng):
    root = tmp_path / "ds"
    w = LeRobotWriter(root, fps=10, features=_features(), episodes_per_file=10)
    w.add_episode(*_episode(rng, 4), task="t")
    with pytest.raises(DatasetError, match="another process"):
        LeRobotWriter(root, fps=10, features=_features(), resume=True)
    w.flush()
    w.add_episode(*_episode(rng, 4), task="t")  # staged, not committed
    ds = LeRobotDataset(root)  # a reader while the writer lives: it must not commit the writer's staging
    assert ds.info["total_episodes"] == 1 and _staged(root) == 1
    w.close()
    assert LeRobotDataset(root).num_episodes == 2
