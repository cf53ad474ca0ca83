"""What the object gate reads vs what the objects did: per rollout, the judge's object-head progress along the
demonstration's object motion (the gate's input, 1 = as far as the demo) against the same progress computed from
the simulator's recorded object positions.

    python scripts/object_progress.py JUDGE TASK[,TASK...] DATA_ROOT [OUT.json]

DATA_ROOT/TASK: a `rawdream collect policy` dataset (real video); references: runs/quick/data/demos.
"""

import json
import sys
from pathlib import Path

import numpy as np

from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotDataset
from rawdream.data.objects import object_positions
from rawdream.envs.tasks import instruction
from rawdream.reward.base import judge_config, make_judge

DEMOS = "runs/quick/data/demos"


def main(judge_path: str, tasks: str, root: str, out: str | None = None) -> None:
    judge = make_judge(
        judge_config(
            "generalist",
            path=judge_path,
            reference=DEMOS,
            object_gate=0.5,
            calibration="demo",
            calibration_cut=0.75,
        ),
        purpose="reward",
    )
    demos = LeRobotDataset(DEMOS)
    demo_pos = object_positions(demos, "metaworld")
    rows = []
    for task in tasks.split(","):
        ep = list(demos.episodes["rawdream/env_task"]).index(task)
        lo, hi = demos.episode_bounds(ep)
        want = demo_pos[hi - 1] - demo_pos[lo]
        ds = LeRobotDataset(f"{root}/{task}")
        pos = object_positions(ds, "metaworld")
        true = np.array(ds.episodes["rawdream/success"], bool)
        videos = [ds.decode_episode_frames(i, DEFAULT_IMAGE_KEY) for i in range(ds.num_episodes)]
        _, read = judge._scores(videos, [instruction(task)] * len(videos))  # the gate's input
        moved = []
        for i in range(ds.num_episodes):
            a, b = ds.episode_bounds(i)
            moved.append(float(((pos[b - 1] - pos[a]) * want).sum() / (want**2).sum()))
        moved = np.array(moved)
        row = {
            "task": task,
            "episodes": len(videos),
            "successes": int(true.sum()),
            "head_progress_failures": float(np.nanmean(read[~true])) if (~true).any() else None,
            "true_progress_failures": float(moved[~true].mean()) if (~true).any() else None,
            "head_progress_successes": float(np.nanmean(read[true])) if true.any() else None,
            "true_progress_successes": float(moved[true].mean()) if true.any() else None,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if out:
        text = {
            "command": "python scripts/object_progress.py " + " ".join(sys.argv[1:]),
            "judge": judge_path,
            "rows": rows,
        }
        Path(out).write_text(json.dumps(text, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
