"""The generalist judge as a ``Judge`` backend (``--judge.backend generalist``): a trained directory, frozen."""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rawdream.config import build
from rawdream.io import load_model
from rawdream.policy.text import TextEncoder
from rawdream.reward.base import JudgeConfig, Verdict, register_judge
from rawdream.reward.generalist.model import GeneralistConfig, JudgeNet, text_features
from rawdream.reward.references import References


@dataclass
class GeneralistJudgeConfig(JudgeConfig):
    # the directory `rawdream train-judge` wrote; several, comma-separated (judges trained apart, e.g. --seed=1),
    # make an ensemble (EnsembleJudge; see ``ensemble``)
    path: str = ""
    # how an ensemble (several paths) decides: "all" - a success only where every member calls one (each with its
    # own gate and threshold; score: the lowest); "mean" - one judge whose score, object progress and threshold
    # are the members' means
    ensemble: str = "all"
    # demos dataset: a reference-conditioned judge sees each instruction beside a demo of its task
    reference: str = ""
    # with a judge trained with --object_loss (an object head) and a reference: a success must also move the
    # objects along the demonstration's motion by at least this fraction - the projection of the video's
    # predicted object displacement (last frame - first) onto the demo's. 0: off. Why: RL against the judge
    # alone found "hand where a success ends, object untouched" (docs/judges.md); the head reads the objects.
    object_gate: float = 0.0
    # the demo's displacement as the head reads it, under which the gate stays open (objects that stay put): in the
    # head's units - z-scored positions, or (train-judge --object_target=displacement) displacements over their
    # training RMS
    object_gate_min: float = 0.5
    # what the gate reads: "head" - the object head's outputs (its training units, above); "image" - the first
    # object's keypoint in pixels (keypoint judges: train-judge --model.keypoints=true, --object_heatmap puts it on
    # the object). Why: the head's affine map to z-scored xyz shrinks a puck's 15 px to under the minimum and mixes
    # in a second object most tasks do not have (its slot moved more than the puck in sweep's demo); in pixels a
    # heatmap judge's keypoint reads the demos' puck motion within 1-2 px (docs/judges.md, stop 40)
    object_gate_space: str = "head"
    # with object_gate_space=image: the demo's keypoint motion in pixels under which the gate stays open
    object_gate_min_px: float = 3.0
    # with object_gate_space=image: a video whose first object's keypoint is less sure of it in the last judged frame
    # than in the first (the peak of its softmax over the map, last / first) below this ratio is a failure. Why: a
    # world model can stop drawing a small object under fast arm motion, and the keypoint then lands on the hand
    # where the object should be (docs/judges.md, stop 41: it also fails real successes whose object leaves view).
    # It applies where the demo's motion leaves the object gate off too; in an ensemble read as "mean", one
    # member's fade fails the video. 0: off
    object_fade_min: float = 0.0
    # where a score becomes a success. "fixed": --judge.threshold for every task. "demo": per instruction, halfway
    # (in logits) between the judge's score for the reference demonstration's own video (a success) and for its
    # first frame held still (nothing done). Why: judges trained on pretraining tasks rank a new task's rollouts
    # far better than they place a fixed threshold on it (docs/judges.md); its one demonstration is the only
    # success of that task there is to calibrate on
    # "imagined": the same halfway point with the demonstration's actions replayed in the world model RL imagines in
    # (--judge.calibration_wm; `dream` and `eval-judge` fill in their --wm) from its first frame, under
    # --judge.calibration_draws noise draws: the anchors are imagined videos of the demo, and each draw's cut. Why:
    # the judge reads imagined video in RL, and its scores there sit elsewhere than on real video - on the SFT
    # policy's imagined drawer-open rollouts the real demo's threshold judged 62% successes where 34% were
    # (docs/judges.md, stop 43)
    calibration: str = "fixed"
    # "demo" calibration's negative anchor: the demo played to this fraction of its length, then its last kept
    # frame held to the demo's length. 0: the first frame held still (nothing done); 0.5: a near-miss that stopped
    # half-way - a harder negative where a task's failures also move things (stillness is too easy: sweep-into)
    calibration_cut: float = 0.0
    # with calibration=imagined: the world model that replays the demonstration (with its own sampler: a dream's
    # --sampler.* does not reach the replay), and how many noise draws
    calibration_wm: str = ""
    calibration_draws: int = 4

    def validate(self) -> None:
        if self.object_gate_space not in ("head", "image"):
            raise ValueError(f"--judge.object_gate_space={self.object_gate_space!r}: use head or image")
        if self.object_fade_min < 0:
            raise ValueError(f"--judge.object_fade_min={self.object_fade_min}: a ratio >= 0 (0: off)")
        if self.object_fade_min and (self.object_gate_space != "image" or not self.object_gate > 0):
            raise ValueError(
                f"--judge.object_fade_min={self.object_fade_min} reads the object gate's keypoint: set "
                f"--judge.object_gate=0.5 --judge.object_gate_space=image, or --judge.object_fade_min=0"
            )
        if self.ensemble not in ("all", "mean"):
            raise ValueError(f"--judge.ensemble={self.ensemble!r}: use all or mean")
        if self.calibration not in ("fixed", "demo", "imagined"):
            raise ValueError(f"--judge.calibration={self.calibration!r}: use fixed, demo or imagined")
        if self.calibration_draws < 1:
            raise ValueError(f"--judge.calibration_draws={self.calibration_draws}: at least 1 noise draw")
        if not 0.0 <= self.calibration_cut < 1.0:
            raise ValueError(
                f"--judge.calibration_cut={self.calibration_cut}: a fraction of the demo in [0, 1), e.g. 0 (its "
                f"first frame held still) or 0.5 (stopped half-way)"
            )


class GeneralistJudge:
    name = "generalist"
    privileged = False

    def __init__(self, cfg: GeneralistJudgeConfig):
        path, meta, sd = load_model(
            cfg.path, "judge", "train one with `rawdream train-judge` and pass --judge.path DIR"
        )
        self.cfg = cfg
        self.model = JudgeNet(build(GeneralistConfig, meta["config"]))
        self.model.load_state_dict(sd)
        self.model.eval()
        self.temperature = float(meta.get("temperature", 1.0))
        self.text = TextEncoder(meta.get("text_cache"))
        self.info = meta
        self.stats = {"abstains": 0}
        self._demo_motions: dict[tuple[str, int], np.ndarray] = {}
        self._thresholds: dict[str, float] = {}
        self.references = None
        self._gate_off: set[str] = set()  # instructions whose demo the head reads as still (warned once each)
        if self.model.cfg.reference:
            if not cfg.reference:
                raise ValueError(
                    f"the judge at {path} compares videos with a demonstration of the instructed task: pass "
                    f"--judge.reference DEMOS_DIR (e.g. the target task's 1-shot demo dataset)"
                )
            self.references = References.from_dataset(cfg.reference)
        if cfg.calibration != "fixed" and (self.references is None or not self.references.videos):
            raise ValueError(
                f"--judge.calibration={cfg.calibration} calibrates on the reference demonstration's video: {path} "
                f"needs --judge.reference DEMOS_DIR (a reference-conditioned judge), or use --judge.calibration=fixed"
            )
        if cfg.calibration == "imagined" and not cfg.calibration_wm:
            raise ValueError(
                "--judge.calibration=imagined replays the demonstration in a world model: pass "
                "--judge.calibration_wm DIR (dream and eval-judge given --wm use theirs), or use "
                "--judge.calibration=demo"
            )
        if cfg.object_gate > 0 and (self.model.object_head is None or self.references is None):
            raise ValueError(
                f"--judge.object_gate={cfg.object_gate} needs a judge with an object head and a reference (train "
                f"it with --object_loss > 0; {path} has {'no object head' if self.model.object_head is None else 'no reference'}), "
                f"or set --judge.object_gate=0"
            )
        if cfg.object_gate > 0 and cfg.object_gate_space == "image" and not self.model.cfg.keypoints:
            raise ValueError(
                f"--judge.object_gate_space=image reads the object's keypoint, and {path} has none (train it with "
                f"--model.keypoints=true --object_heatmap=1), or use --judge.object_gate_space=head"
            )

    @torch.no_grad()
    def scores(self, videos, instructions) -> np.ndarray:
        return self._scores(videos, instructions)[0]

    @torch.no_grad()
    def _scores(self, videos, instructions) -> tuple[np.ndarray, np.ndarray]:
        """-> (success probabilities, object progress along the demo's motion; NaN where the gate is open)."""
        gate = self.cfg.object_gate > 0
        out, progress = [], []
        for k in range(0, len(videos), 128):
            texts = list(instructions[k : k + 128])
            clips, text, ref = self._inputs(videos[k : k + 128], texts)
            if not gate:
                logits = self.model(clips, text, ref)
                progress.append(np.full(len(texts), np.nan))
            else:
                logits, objects, peak = self._objects(clips, text, ref)
                moved = (objects[:, -1] - objects[:, 0]).float().cpu().numpy()
                wanted = np.stack([self._demo_motion(t, clips.shape[1]) for t in texts])
                norm = np.linalg.norm(wanted, axis=1)
                along = (moved * wanted).sum(1) / np.maximum(norm, 1e-6) ** 2
                least = (
                    self.cfg.object_gate_min_px
                    if self.cfg.object_gate_space == "image"
                    else self.cfg.object_gate_min
                )
                along = np.where(norm >= least, along, np.nan)
                if self.cfg.object_fade_min > 0:  # the object faded from the video: progress -inf, a failure
                    fade = (peak[:, -1] / peak[:, 0].clamp_min(1e-12)).float().cpu().numpy()
                    along = np.where(fade < self.cfg.object_fade_min, -np.inf, along)
                progress.append(along)
                for t, n in zip(texts, norm):
                    if n < least and t not in self._gate_off:
                        self._gate_off.add(t)
                        warnings.warn(
                            f"the object gate is off for {t!r}: this judge reads its demo's objects as moving "
                            f"{n:.2f} < {least} ({self.cfg.object_gate_space} units), so the verdict alone decides "
                            "(with the fade gate, where set) "
                            "(lower --judge.object_gate_min[_px], or use a judge that sees them move)",
                            stacklevel=2,
                        )
            out.append(torch.sigmoid(logits.float().cpu() / self.temperature).numpy())
        if not out:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(out), np.concatenate(progress)

    def _inputs(self, videos, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The model's inputs for ``videos`` judged against ``texts``: the selected frames, the instruction's
        features and (reference-conditioned judges) the reference, on the model's device."""
        dev = next(self.model.parameters()).device  # inputs follow the model (``judge.model.to("cuda")``)
        clips = torch.from_numpy(np.stack([self.model.cfg.frames.select(v) for v in videos])).to(dev)
        text = text_features(self.text, texts).to(dev)
        ref = None
        if self.references is not None:
            ref = torch.from_numpy(self.references.for_instructions(texts)).to(dev)
        return clips, text, ref

    @torch.no_grad()
    def _objects(self, clips, text, ref) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> (logits, what the gate reads per frame, how sure): the head's outputs (B, F, O) and None, or with
        ``object_gate_space=image`` the first object's keypoint in pixels (B, F, 2) and the peak of its softmax
        over the map (B, F) - low where there is no object to see."""
        if self.cfg.object_gate_space == "image":
            logits, _, maps = self.model(clips, text, ref, objects=True, maps=True)
            b, f, size = clips.shape[:3]
            peak = torch.softmax(maps[:, 0].flatten(1).float(), dim=-1).amax(-1).view(b, f)
            return logits, self.model.map_pixels(maps, size).view(b, f, -1, 2)[:, :, 0], peak
        return (*self.model(clips, text, ref, objects=True), None)

    def _demo_motion(self, instruction: str, frames: int) -> np.ndarray:
        """The demo's own object displacement (last frame - first), read by the same head; once per instruction
        (the demo does not change during a run)."""
        key = (instruction, frames)
        if key not in self._demo_motions:
            dev = next(self.model.parameters()).device
            text = text_features(self.text, [instruction]).to(dev)
            ref = torch.from_numpy(self.references.for_instructions([instruction])).to(dev)
            # the demo as a video: its first frame, then its last for the remaining frames
            demo = torch.cat([ref[:, :1], ref[:, 1:].expand(-1, frames - 1, -1, -1, -1)], dim=1)
            _, objects, _ = self._objects(demo, text, ref)
            self._demo_motions[key] = (objects[0, -1] - objects[0, 0]).float().cpu().numpy()
        return self._demo_motions[key]

    @torch.no_grad()
    def threshold(self, instruction: str) -> float:
        """The score from which ``instruction``'s videos are successes (``--judge.calibration``)."""
        if self.cfg.calibration == "fixed":
            return self.cfg.threshold
        task = self.references.task_of(instruction)
        if task not in self._thresholds:
            if self.cfg.calibration == "imagined":
                demos = list(
                    imagined_demo(self.cfg.calibration_wm, self.references, task, self.cfg.calibration_draws)
                )
            else:
                demos = [self.references.videos[task]]
            anchors = demos + [demo_cut(d, self.cfg.calibration_cut) for d in demos]
            # the judge alone (no gate): the anchor's objects stop part-way or never move, so the gate would close
            # on it
            logits = (
                self.model(*self._inputs(anchors, [instruction] * len(anchors))).float().cpu()
                / self.temperature
            )
            self._thresholds[task] = float(torch.sigmoid(logits.mean()))
        return self._thresholds[task]

    def __call__(self, videos, instructions, **_: Any) -> list[Verdict]:
        if len(videos) != len(instructions):
            raise ValueError(f"{len(videos)} videos but {len(instructions)} instructions")
        t0 = time.perf_counter()
        p, progress = self._scores(videos, instructions)
        dt = (time.perf_counter() - t0) / max(len(p), 1)
        return [
            gated_verdict(s, g, self.threshold(t), self.cfg.object_gate, dt)
            for s, g, t in zip(p, progress, instructions)
        ]


def mean_progress(progress: np.ndarray) -> np.ndarray:
    """(members, N) object progress -> (N,): the mean over the members that gate (NaN: a member whose head reads
    the demo's objects as staying put); NaN - the gate open - where none does."""
    read = ~np.isnan(progress)
    total = np.where(read, progress, 0.0).sum(0)
    return np.where(read.any(0), total / np.maximum(read.sum(0), 1), np.nan)


def gated_verdict(p: float, progress: float, threshold: float, gate: float, latency: float) -> Verdict:
    """A success where the score reaches the threshold and the object gate is open (``progress`` NaN: no gate)."""
    if np.isnan(progress) or progress >= gate:
        return Verdict(success=bool(p >= threshold), score=float(p), raw=f"p={p:.3f}", latency=latency)
    # the objects did not move the way the demonstration's did: a failure, whatever p says
    raw = f"p={p:.3f}, " + (
        "the object faded" if progress == -np.inf else f"object progress {progress:.2f} < {gate}"
    )
    return Verdict(success=False, score=0.0, raw=raw, latency=latency)


class EnsembleJudge:
    """Generalist judges trained apart (``--judge.path=A,B``: other seeds, other data) read the same videos.
    ``--judge.ensemble=all``: a success must be one for every member, each with its own object gate and
    threshold, and the score is the members' lowest; ``mean``: the members' mean score, object progress and
    threshold make one judge. Why: two trainings of one recipe on the same data read the SFT policy's closed-loop
    drawer-open imagination at AUROC 0.86 and 0.66 (docs/judges.md) - one judge's training luck decides the
    reward, and RL climbs whatever that one judge accepts wrongly."""

    name = "generalist"
    privileged = False

    def __init__(self, cfg: GeneralistJudgeConfig, paths: list[str]):
        self.cfg = cfg
        self.members = [GeneralistJudge(dataclasses.replace(cfg, path=p)) for p in paths]
        self.stats = {"abstains": 0}

    def scores(self, videos, instructions) -> np.ndarray:
        each = [m.scores(videos, instructions) for m in self.members]
        return np.min(each, axis=0) if self.cfg.ensemble == "all" else np.mean(each, axis=0)

    def __call__(self, videos, instructions, **_: Any) -> list[Verdict]:
        if len(videos) != len(instructions):
            raise ValueError(f"{len(videos)} videos but {len(instructions)} instructions")
        if self.cfg.ensemble == "all":
            return [
                Verdict(
                    success=all(v.success for v in votes),
                    score=min(v.score for v in votes),
                    raw=" | ".join(v.raw for v in votes),
                    latency=sum(v.latency for v in votes),
                )
                for votes in zip(*(m(videos, instructions) for m in self.members))
            ]
        t0 = time.perf_counter()
        p, progress = zip(*(m._scores(videos, instructions) for m in self.members))
        p, progress = np.mean(p, axis=0), np.stack(progress)
        progress = mean_progress(progress)
        dt = (time.perf_counter() - t0) / max(len(p), 1)
        gate = self.cfg.object_gate
        return [
            gated_verdict(s, g, float(np.mean([m.threshold(t) for m in self.members])), gate, dt)
            for s, g, t in zip(p, progress, instructions)
        ]


@functools.lru_cache(maxsize=2)
def _world_model(path: str):
    from rawdream.world_model.train import load_world_model

    return load_world_model(path).eval()


@torch.no_grad()
def imagined_demo(wm_path: str, references: References, task: str, draws: int) -> np.ndarray:
    """(draws, H+1, h, w, 3) uint8: ``task``'s reference demonstration's actions replayed in the world model at
    ``wm_path`` from the demo's first frame and state, one frame per action chunk (as RL's imagined videos), under
    noise seeds 0..draws-1; a last partial chunk is filled with the demo's last action."""
    if task not in references.actions:
        raise ValueError(
            f"--judge.calibration=imagined replays {task}'s demonstration, and {references.source} records no "
            f"actions or state for it; use a `rawdream collect demos` dataset as --judge.reference"
        )
    wm = _world_model(wm_path)
    frame = references.videos[task][0]
    if frame.shape[0] != wm.cfg.image_size:
        raise ValueError(
            f"--judge.calibration_wm {wm_path} draws {wm.cfg.image_size} px frames and {references.source}'s demo "
            f"has {frame.shape[0]} px: use a world model trained on frames of the demo's size"
        )
    state, actions = references.actions[task]
    k = wm.cfg.dynamics.chunk
    chunks = -(-len(actions) // k)
    padded = np.concatenate([actions, np.repeat(actions[-1:], chunks * k - len(actions), axis=0)])
    from rawdream.rl.imagination import reimagine  # the same replay DNV redraws with (first frame kept real)

    return reimagine(
        wm,
        np.repeat(frame[None], draws, axis=0),
        np.repeat(state[None], draws, axis=0),
        np.repeat(padded.reshape(1, chunks, k, -1), draws, axis=0),
        list(range(draws)),
    )


def demo_cut(demo: np.ndarray, fraction: float) -> np.ndarray:
    """``demo`` (T, ...) played to ``fraction`` of its length, then its last kept frame held: a video of the same
    length that stopped part-way (fraction 0: the first frame held still)."""
    keep = round(fraction * (len(demo) - 1)) + 1
    return np.concatenate([demo[:keep], np.repeat(demo[keep - 1 : keep], len(demo) - keep, axis=0)])


@register_judge("generalist", config=GeneralistJudgeConfig)
def _make(cfg: GeneralistJudgeConfig) -> GeneralistJudge | EnsembleJudge:
    paths = [p.strip() for p in cfg.path.split(",") if p.strip()]
    if len(paths) > 1:
        return EnsembleJudge(cfg, paths)
    return GeneralistJudge(dataclasses.replace(cfg, path=paths[0]) if paths else cfg)
