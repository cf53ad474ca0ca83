"""What an object head reads vs what the objects did, on labelled real rollouts.

Per rollout: the head's progress along the demonstration's object motion (the object gate's input, 1 = as far as
the demo) against the same progress from the simulator's recorded object positions; and, over all judged frames,
what the head's first object follows - the correlation of its motion since the first judged frame (x, y, z) with
the first object's true motion and with the hand's (the gate reads motion; a head that reads the hand for the
object says so here, on any data, whether it predicts positions or displacements).

    python scripts/object_progress.py READER TASK[,TASK...] DATA_ROOT [OUT.json [OUT.png]]

READER: a judge directory (`rawdream train-judge --object_loss`: its head, read exactly as the gate reads it) or a
policy directory (`rawdream train-policy --object_loss`: its vision features' head, one frame at a time, at the
judge's frames). DATA_ROOT/TASK: a `rawdream collect policy` dataset (real video); references:
runs/quick/data/demos. OUT.png (keypoint judges): the judged frames of each task's first three rollouts, 4x, with
the first object's keypoint (magenta), where the camera shows the object (green) and the hand (cyan).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from judge_on_rollouts import DEMOS, judge_as_rl_reads_it  # scripts/, on the path when run as a script

from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotDataset
from rawdream.data.objects import dataset_camera, object_positions
from rawdream.envs.tasks import instruction
from rawdream.reward.base import FrameSelection


class JudgeHead:
    """A judge's object head, as its gate reads it: (videos, task) -> per video the head's outputs per judged
    frame, and the gate's progress."""

    def __init__(self, path: str):
        self.judge = judge_as_rl_reads_it(path)
        self.frames = self.judge.model.cfg.frames

    @torch.no_grad()
    def read(self, videos, task):
        clips, text, ref = self.judge._inputs(videos, [instruction(task)] * len(videos))
        _, objects = self.judge.model(clips, text, ref, objects=True)
        _, progress = self.judge._scores(videos, [instruction(task)] * len(videos))
        return objects.float().numpy(), progress

    @torch.no_grad()
    def keypoint(self, videos, task):
        """A keypoint judge's first object's keypoint per judged frame, from one pass: where it is, (videos, frames,
        2) column/row px of the frames, and its confidence, the peak of its softmax over the map (videos, frames) -
        low where there is no object to see; (None, None) for a judge without keypoints."""
        if not self.judge.model.cfg.keypoints:
            return None, None
        clips, text, ref = self.judge._inputs(videos, [instruction(task)] * len(videos))
        _, _, maps = self.judge.model(clips, text, ref, objects=True, maps=True)
        b, f, size = clips.shape[:3]
        px = self.judge.model.map_pixels(maps, size)[:, 0].view(b, f, 2).float().numpy()
        peak = torch.softmax(maps[:, 0].flatten(1).float(), dim=-1).amax(-1)
        return px, peak.view(b, f).numpy()


class PolicyHead:
    """A policy's object head on its vision features (no proprioception), frame by frame; progress along the
    demo's first-to-last-frame reading, computed as the gate computes it (without its minimum-motion cut)."""

    def __init__(self, path: str):
        from rawdream.policy.base import load_policy

        self.policy = load_policy(path)
        self.model = self.policy.model.eval()
        self.frames = FrameSelection(middle=4)  # the judge's frames, so both readers see the same moments
        self.demos = LeRobotDataset(DEMOS)

    @torch.no_grad()
    def _heads(self, frames, task):
        text = torch.from_numpy(self.policy.text_encoder([instruction(task)] * len(frames)))
        return self.model.object_head(
            self.model.vision(torch.from_numpy(np.asarray(frames)), self.model.text(text))
        )

    def keypoint(self, videos, task):
        return None, None

    def read(self, videos, task):
        ep = list(self.demos.episodes["rawdream/env_task"]).index(task)
        demo = self.demos.decode_episode_frames(ep, DEFAULT_IMAGE_KEY)
        d = self._heads([demo[0], demo[-1]], task).numpy()
        want = d[1] - d[0]
        objects = np.stack([self._heads(self.frames.select(v), task).numpy() for v in videos])
        progress = (objects[:, -1] - objects[:, 0]) @ want / max(float(want @ want), 1e-12)
        return objects, progress


def _corr(a: np.ndarray, b: np.ndarray) -> list[float | None]:
    return [_num(np.corrcoef(a[:, k], b[:, k])[0, 1]) for k in range(a.shape[1])]


def _num(x) -> float | None:
    """A JSON number, or None where there is none (NaN: the gate read nothing)."""
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def _mark(image: np.ndarray, at, colour, scale: int = 4) -> None:
    if np.isfinite(at).all():
        c, r = int(at[0] * scale), int(at[1] * scale)
        image[max(r - 2, 0) : r + 2, max(c - 2, 0) : c + 2] = colour


def main(reader_path: str, tasks: str, root: str, out: str | None = None, png: str | None = None) -> None:
    reader = (
        JudgeHead(reader_path) if (Path(reader_path) / "judge.json").exists() else PolicyHead(reader_path)
    )
    demos = LeRobotDataset(DEMOS)
    demo_pos = object_positions(demos, "metaworld")
    rows, strips = [], []
    for task in tasks.split(","):
        ep = list(demos.episodes["rawdream/env_task"]).index(task)
        lo, hi = demos.episode_bounds(ep)
        want = demo_pos[hi - 1] - demo_pos[lo]
        ds = LeRobotDataset(f"{root}/{task}")
        pos = object_positions(ds, "metaworld")
        hand = ds.column("observation.state").astype(np.float32)[:, :3]
        true = np.array(ds.episodes["rawdream/success"], bool)
        videos = [ds.decode_episode_frames(i, DEFAULT_IMAGE_KEY) for i in range(ds.num_episodes)]
        heads, read = reader.read(videos, task)
        size = videos[0].shape[1]
        kp_px, peak = reader.keypoint(videos, task)
        camera = dataset_camera(ds, off="a reader without keypoints")[0] if kp_px is not None else None
        moved, true_first, true_hand, from_object, from_hand = [], [], [], [], []
        for i in range(ds.num_episodes):
            a, b = ds.episode_bounds(i)
            moved.append(float(((pos[b - 1] - pos[a]) * want).sum() / (want**2).sum()))
            idx = a + np.asarray(reader.frames.indices(b - a))
            true_first.append(pos[idx, :3] - pos[idx[0], :3])
            true_hand.append(hand[idx] - hand[idx[0]])
            if kp_px is not None:  # how far the keypoint is from the object's pixels, and from the hand's
                obj_px, hand_px = camera.project(pos[idx, :3], size), camera.project(hand[idx], size)
                from_object.append(np.linalg.norm(kp_px[i] - obj_px, axis=-1))
                from_hand.append(np.linalg.norm(kp_px[i] - hand_px, axis=-1))
                if png and i < 3:
                    strip = []
                    for f, frame in enumerate(reader.frames.select(videos[i])):
                        big = np.kron(frame, np.ones((4, 4, 1), np.uint8))
                        for at, colour in ((obj_px[f], (0, 255, 0)), (hand_px[f], (0, 255, 255))):
                            _mark(big, at, colour)
                        _mark(big, kp_px[i, f], (255, 0, 255))
                        strip.append(big)
                    strips.append(np.concatenate(strip, axis=1))
        moved = np.array(moved)
        first_read = (heads[..., :3] - heads[:, :1, :3]).reshape(-1, 3)
        ok = ~np.isnan(read)
        row = {
            "task": task,
            "episodes": len(videos),
            "successes": int(true.sum()),
            "head_progress_failures": _num(np.nanmean(read[~true])) if (~true & ok).any() else None,
            "true_progress_failures": float(moved[~true].mean()) if (~true).any() else None,
            "head_progress_successes": _num(np.nanmean(read[true])) if (true & ok).any() else None,
            "true_progress_successes": float(moved[true].mean()) if true.any() else None,
            # per rollout: does the head's reading follow the objects' (all rollouts, where the gate reads)
            "correlation": _num(np.corrcoef(read[ok], moved[ok])[0, 1]) if ok.sum() > 2 else None,
            "mean_abs_error": _num(np.abs(read[ok] - moved[ok]).mean()) if ok.any() else None,
            # per judged frame, motion since the first judged frame: what the head's first object follows, x / y / z
            "first_object_corr_with_object_xyz": _corr(first_read, np.concatenate(true_first)),
            "first_object_corr_with_hand_xyz": _corr(first_read, np.concatenate(true_hand)),
            # keypoint judges: mean distance (px) of the first object's keypoint from where the camera shows the
            # object, and from where it shows the hand
            "keypoint_px_from_object": _num(np.mean(from_object)) if from_object else None,
            "keypoint_px_from_hand": _num(np.mean(from_hand)) if from_hand else None,
            # keypoint judges: the keypoint softmax's peak in the first and the last judged frame (mean over
            # rollouts), and the mean of last / first per rollout - under 1 where the object fades from view
            "keypoint_peak_first_last": [_num(peak[:, 0].mean()), _num(peak[:, -1].mean())]
            if peak is not None
            else None,
            "keypoint_peak_last_over_first": _num((peak[:, -1] / peak[:, 0]).mean())
            if peak is not None
            else None,
            # per rollout, in order: the simulator's success and the keypoint peak's last / first (the fade gate's
            # input, --judge.object_fade_min)
            "success_per_rollout": [bool(x) for x in true],
            "keypoint_peak_ratio_per_rollout": [_num(x) for x in peak[:, -1] / peak[:, 0]]
            if peak is not None
            else None,
            "gate_reads": int(
                ok.sum()
            ),  # rollouts where the gate read (NaN: the demo's motion below its minimum)
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if out:
        text = {
            "command": "python scripts/object_progress.py " + " ".join(sys.argv[1:]),
            "reader": reader_path,
            "rows": rows,
        }
        Path(out).write_text(json.dumps(text, indent=1) + "\n")
    if png and strips:
        from PIL import Image

        Image.fromarray(np.concatenate(strips, axis=0)).save(png)


if __name__ == "__main__":
    main(*sys.argv[1:])
