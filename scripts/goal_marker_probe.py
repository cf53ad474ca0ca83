"""Is the goal marker's disappearance what a judge reads as success? Each rollout is judged as recorded and with the
task's goal marker painted out from the middle of the video on (a disc filled with the median of the ring of pixels
around it in the first frame) - the way the world model drops the marker under a large arm motion. A judge that
calls more painted failures successes reads the marker.

    python scripts/goal_marker_probe.py JUDGE[,JUDGE...] TASK DATA_ROOT [OUT.json]

JUDGE and DATA_ROOT as in scripts/judge_on_rollouts.py (its RAWDREAM_DEMOS / RAWDREAM_CALIBRATION_WM apply); the goal
is Meta-World's state[36:39], projected with the dataset's recorded camera.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from judge_on_rollouts import judge_as_rl_reads_it

from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotDataset
from rawdream.data.objects import pixel_projector
from rawdream.envs.tasks import instruction

GOAL = slice(36, 39)  # Meta-World's goal xyz in the 39-dim state


def paint_out(
    video: np.ndarray, px: np.ndarray, start: int, radius: float = 2.5, ring: float = 5.0
) -> np.ndarray:
    """``video`` (T, H, W, 3) with a disc of ``radius`` px around ``px`` (column, row) filled from frame ``start`` on."""
    h, w = video.shape[1:3]
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot(xx + 0.5 - px[0], yy + 0.5 - px[1])
    disc, around = d <= radius, (d > radius + 1) & (d <= ring)
    out = video.copy()
    out[start:, disc] = np.median(video[0][around], axis=0).astype(np.uint8)
    return out


def main(judges: str, task: str, root: str, out: str | None = None) -> None:
    ds = LeRobotDataset(f"{root}/{task}")
    project = pixel_projector(ds, "a dataset collected here")
    state = ds.column("observation.environment_state").astype(np.float32)
    true = np.array(ds.episodes["rawdream/success"], bool)
    videos, painted = [], []
    for i in range(ds.num_episodes):
        lo, _ = ds.episode_bounds(i)
        goal = project(state[lo : lo + 1, GOAL])[0, 0]
        v = ds.decode_episode_frames(i, DEFAULT_IMAGE_KEY)
        videos.append(v)
        painted.append(paint_out(v, goal, len(v) // 2) if np.isfinite(goal).all() else v)
    rows = []
    for path in judges.split(","):
        judge = judge_as_rl_reads_it(path)
        text = [instruction(task)] * len(videos)
        a = np.array([v.success for v in judge(videos, text)])
        b = np.array([v.success for v in judge(painted, text)])
        row = {
            "judge": path,
            "task": task,
            "data": f"{root}/{task}",
            "episodes": len(videos),
            "true_rate": float(true.mean()),
            "failures_judged_successes": float(a[~true].mean()) if (~true).any() else None,
            "failures_judged_successes_marker_painted_out": float(b[~true].mean()) if (~true).any() else None,
            "successes_judged_successes": float(a[true].mean()) if true.any() else None,
            "successes_judged_successes_marker_painted_out": float(b[true].mean()) if true.any() else None,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if out:
        cmd = "python scripts/goal_marker_probe.py " + " ".join(sys.argv[1:])
        Path(out).write_text(json.dumps({"command": cmd, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
