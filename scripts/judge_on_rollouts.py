"""How a judge reads labelled rollouts: judged vs simulator success per task, and how many failures it calls
successes (the judge read as RL reads it: object gate 0.5, the demonstration-calibrated cut 0.75).

    python scripts/judge_on_rollouts.py JUDGE[,JUDGE...] TASK[,TASK...] DATA_ROOT [OUT.json]

JUDGE:image reads that judge's gate in image space (--judge.object_gate_space=image, keypoint judges);
JUDGE:image:R also fails a video whose keypoint fades under R (--judge.object_fade_min=R).

DATA_ROOT/TASK is a dataset of `rawdream collect policy` (with --wm: imagined video, labelled by the simulator's
replay of the imagined actions); the reference demonstrations are runs/quick/data/demos (the main job's; set
RAWDREAM_DEMOS=runs/quick/data/target_demos for target tasks).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotDataset
from rawdream.envs.tasks import instruction
from rawdream.reward.base import judge_config, make_judge

DEMOS = os.environ.get("RAWDREAM_DEMOS", "runs/quick/data/demos")


def judge_as_rl_reads_it(path: str):
    """The generalist judge at ``path`` with the RAW-Dream rows' readout: object gate 0.5, demo cut 0.75 (``PATH:image``:
    the gate in image space; ``PATH:image:R``: and the fade gate at R)."""
    path, _, space = path.partition(":")
    space, _, fade = space.partition(":")
    cfg = judge_config(
        "generalist", path=path, reference=DEMOS, object_gate=0.5, calibration="demo", calibration_cut=0.75,
        object_gate_space=space or "head", object_fade_min=float(fade or 0),
    )  # fmt: skip
    return make_judge(cfg, purpose="reward")


def main(judges: str, tasks: str, root: str, out: str | None = None) -> None:
    rows = []
    for path in judges.split(","):
        judge = judge_as_rl_reads_it(path)
        for task in tasks.split(","):
            ds = LeRobotDataset(f"{root}/{task}")
            videos = [ds.decode_episode_frames(i, DEFAULT_IMAGE_KEY) for i in range(ds.num_episodes)]
            true = np.array(ds.episodes["rawdream/success"], bool)
            judged = np.array([v.success for v in judge(videos, [instruction(task)] * len(videos))], bool)
            row = {
                "judge": path,
                "task": task,
                "data": f"{root}/{task}",
                "episodes": len(videos),
                "true_rate": float(true.mean()),
                "judged_rate": float(judged.mean()),
                "judged_success_of_failures": float(judged[~true].mean()) if (~true).any() else None,
            }
            rows.append(row)
            print(
                f"{path:28s} {task:16s} true {row['true_rate']:.2f} judged {row['judged_rate']:.2f} "
                f"failures judged successes {row['judged_success_of_failures']}",
                flush=True,
            )
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        text = {"command": "python scripts/judge_on_rollouts.py " + " ".join(sys.argv[1:]), "rows": rows}
        Path(out).write_text(json.dumps(text, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
