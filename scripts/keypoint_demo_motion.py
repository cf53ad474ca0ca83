"""How far a keypoint judge reads each demonstration's first object as moving, in pixels, against where the camera
shows it (the recorded xyz projected): the yardstick of --judge.object_gate_space=image.

    python scripts/keypoint_demo_motion.py JUDGE DEMOS_DIR TASK[,TASK...] [OUT.json]
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from rawdream.data.lerobot import LeRobotDataset
from rawdream.data.objects import dataset_camera, object_positions
from rawdream.envs.tasks import instruction
from rawdream.reward.base import judge_config, make_judge


def main(path: str, demos: str, tasks: str, out: str | None = None) -> None:
    judge = make_judge(
        judge_config("generalist", path=path, reference=demos, object_gate=0.5, object_gate_space="image"),
        purpose="reward",
    )
    ds = LeRobotDataset(demos)
    pos = object_positions(ds, "metaworld")
    camera, size = dataset_camera(ds, off="another judge")
    listed = list(ds.episodes["rawdream/env_task"])
    frames = judge.model.cfg.frames.middle + 2
    rows = []
    for task in tasks.split(","):
        lo, hi = ds.episode_bounds(listed.index(task))
        true = camera.project(pos[hi - 1, :3], size) - camera.project(pos[lo, :3], size)
        with torch.no_grad():
            read = judge._demo_motion(instruction(task), frames)
        row = {
            "task": task,
            "keypoint_px_motion": [round(float(x), 2) for x in read],
            "true_px_motion": [round(float(x), 2) for x in true],
            "error_px": round(float(np.linalg.norm(read - true)), 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if out:
        cmd = "python scripts/keypoint_demo_motion.py " + " ".join(sys.argv[1:])
        Path(out).write_text(json.dumps({"command": cmd, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
