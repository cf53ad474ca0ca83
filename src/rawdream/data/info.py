"""What `rawdream info` says about a dataset: its layout, manifest, episodes per task and how much the objects move."""

from __future__ import annotations

import json
from typing import Any

from rawdream.data.collect import dataset_summary, object_motion
from rawdream.data.lerobot import LeRobotDataset


def describe(ds: LeRobotDataset, verified: bool = False) -> tuple[str, dict[str, Any]]:
    """The printed summary, and the per-task table with object motion (per scene, per behaviour) as data."""
    lines = [
        f"{ds.root}: LeRobot {ds.info['codebase_version']}, {ds.num_episodes} episodes, {ds.num_frames} frames, "
        f"{ds.fps:g} fps, frame stride {ds.frame_stride}"
    ]
    lines += [f"  {key:34s} {feat['dtype']:8s} {feat['shape']}" for key, feat in ds.features.items()]
    manifest = {k: v for k, v in ds.manifest.items() if k not in ("collect_config",)}
    lines.append("manifest: " + json.dumps(manifest, indent=None)[:2000])
    if not verified:
        lines.append(
            "(video frames not decoded; --verify decodes every frame and checks it against the metadata)"
        )
    rows = dataset_summary(ds)
    motion = object_motion(ds) if "observation.environment_state" in ds.features else {}
    free = set(ds.manifest.get("task_free_scenes") or [])
    lines.append(f"\n{'task':28s} {'episodes':>8s} {'frames':>8s} {'success':>8s} {'moves':>6s}")
    for task, row in sorted(rows.items()):
        success = "withheld" if row["success"] is None else f"{row['success']:.2f}"
        moves = f"{motion[task]['all']:.2f}" if task in motion else ""
        mark = "  (task-free play)" if task in free else ""
        lines.append(
            f"{task:28s} {int(row['episodes']):8d} {int(row['frames']):8d} {success:>8s} {moves:>6s}{mark}"
        )
    if motion:
        lines.append("moves: fraction of frames in which an object moves; per behaviour (mean over scenes):")
        for group, names in (("task-free scenes", free), ("other scenes", set(motion) - free)):
            per_b: dict[str, list[float]] = {}
            for scene in names & set(motion):
                for b, v in motion[scene].items():
                    per_b.setdefault(b, []).append(v)
            if per_b:
                cells = "  ".join(f"{b} {sum(v) / len(v):.2f}" for b, v in sorted(per_b.items()))
                lines.append(f"  {group:18s} {cells}")
    table = {
        "dataset": str(ds.root.resolve()),
        "play_scenes": ds.manifest.get("play_scenes"),
        "task_free_scenes": sorted(free),
        "episodes": rows,
        "object_motion": motion,
    }
    return "\n".join(lines), table
