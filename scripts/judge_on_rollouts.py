"""How a judge reads labelled rollouts: judged vs simulator success per task, and how many failures it calls
successes (the judge read as RL reads it: object gate 0.5, the demonstration-calibrated cut 0.75).

    python scripts/judge_on_rollouts.py JUDGE[,JUDGE...] TASK[,TASK...] DATA_ROOT [OUT.json]

JUDGE may be A+B (judges trained apart): their ensemble, deciding as RAWDREAM_ENSEMBLE says (all, the default,
or mean; --judge.ensemble). JUDGE:image reads that judge's gate in image space (--judge.object_gate_space=image, keypoint judges);
JUDGE:image:R also fails a video whose keypoint fades under R (--judge.object_fade_min=R).
JUDGE:image:R:P also sets the pixel floor under which the demo's keypoint motion leaves the gate open
(--judge.object_gate_min_px=P; 3 by default; R may be 0).

DATA_ROOT/TASK is a dataset of `rawdream collect policy` (with --wm: imagined video, labelled by the simulator's
replay of the imagined actions); the reference demonstrations are runs/quick/data/demos (the main job's; set
RAWDREAM_DEMOS=runs/quick/data/target_demos for target tasks). RAWDREAM_CALIBRATION_WM=DIR places the threshold with
the demo replayed in that world model (--judge.calibration=imagined) instead of the real demo.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotDataset
from rawdream.envs.tasks import instruction
from rawdream.eval.metrics import auroc, cohen_kappa
from rawdream.reward.base import judge_config, make_judge

DEMOS = os.environ.get("RAWDREAM_DEMOS", "runs/quick/data/demos")
# set: the threshold's anchors are the demo replayed in this world model (--judge.calibration=imagined)
CALIBRATION_WM = os.environ.get("RAWDREAM_CALIBRATION_WM", "")
ENSEMBLE = os.environ.get("RAWDREAM_ENSEMBLE", "all")


def judge_as_rl_reads_it(path: str):
    """The generalist judge at ``path`` with the RAW-Dream rows' readout: object gate 0.5, demo cut 0.75 (``PATH:image``:
    the gate in image space; ``PATH:image:R``: and the fade gate at R)."""
    path, _, space = path.partition(":")
    space, _, rest = space.partition(":")
    fade, _, min_px = rest.partition(":")
    cfg = judge_config(
        "generalist", path=path.replace("+", ","), ensemble=ENSEMBLE, reference=DEMOS, object_gate=0.5, calibration_cut=0.75,
        calibration="imagined" if CALIBRATION_WM else "demo", calibration_wm=CALIBRATION_WM,
        object_gate_space=space or "head", object_fade_min=float(fade or 0), object_gate_min_px=float(min_px or 3),
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
            verdicts = judge(videos, [instruction(task)] * len(videos))
            judged = np.array([v.success for v in verdicts], bool)
            # the gated score (0 where the object gate fails the video): how well it ranks successes first
            score = np.array([v.score for v in verdicts], float)
            row = {
                "judge": path,
                "calibration": f"imagined in {CALIBRATION_WM}" if CALIBRATION_WM else "demo",
                "task": task,
                "data": f"{root}/{task}",
                "episodes": len(videos),
                "threshold": float(judge.threshold(instruction(task)))
                if hasattr(judge, "threshold")
                else None,
                "true_rate": float(true.mean()),
                "judged_rate": float(judged.mean()),
                "judged_success_of_failures": float(judged[~true].mean()) if (~true).any() else None,
                "judged_success_of_successes": float(judged[true].mean()) if true.any() else None,
                "auroc": float(auroc(score, true)) if 0 < true.sum() < len(true) else None,
                "kappa": float(cohen_kappa(judged, true)),
            }
            rows.append(row)
            print(
                f"{path:28s} {task:16s} true {row['true_rate']:.2f} judged {row['judged_rate']:.2f} "
                f"failures judged successes {row['judged_success_of_failures']} "
                f"successes judged successes {row['judged_success_of_successes']} auroc {row['auroc']} "
                f"kappa {row['kappa']:.2f}",
                flush=True,
            )
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        text = {"command": "python scripts/judge_on_rollouts.py " + " ".join(sys.argv[1:]), "rows": rows}
        Path(out).write_text(json.dumps(text, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
