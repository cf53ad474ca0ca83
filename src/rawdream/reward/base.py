"""The judge contract: ``judge(videos, instructions) -> verdicts``, batched, with a registry of backends.

A verdict says success (True / False / None = abstain), a score in [0, 1] where the backend has one, the raw
answer and the latency. An abstain is never turned into a reward silently: RL treats it as unreliable and
counts it. Frame selection (first, last and k evenly spaced frames; resolution) is part of a judge's config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from rawdream.config import to_dict
from rawdream.registry import Registry


@dataclass
class Verdict:
    success: bool | None  # None = abstain (unreachable endpoint, malformed answer, ...)
    score: float | None = None  # P(success) where the backend has one
    raw: str = ""
    latency: float = 0.0

    @property
    def abstained(self) -> bool:
        return self.success is None


@dataclass
class FrameSelection:
    """Which frames of a video a judge looks at: the first, the last and ``middle`` evenly spaced between."""

    middle: int = 2
    size: int = 0  # resize to size x size (0: keep the video's resolution)

    def indices(self, length: int) -> list[int]:
        """Always ``middle + 2`` indices (first, evenly spaced, last); short videos repeat frames, so a judge
        sees a fixed number of frames whatever the horizon."""
        if length <= 0:
            raise ValueError("cannot judge an empty video")
        return [int(i) for i in np.rint(np.linspace(0, length - 1, self.middle + 2))]

    def select(self, video: np.ndarray) -> np.ndarray:
        video = np.asarray(video)
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(f"a video must be (T, H, W, 3) uint8, got {video.shape} {video.dtype}")
        frames = video[self.indices(len(video))]
        if self.size and frames.shape[1] != self.size:
            import torch
            import torch.nn.functional as F

            t = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
            t = F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False)
            frames = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return frames


@runtime_checkable
class Judge(Protocol):
    name: str
    #: True only for the simulator oracle: it may score evaluations and named ablations, never a default run.
    privileged: bool

    def __call__(
        self, videos: list[np.ndarray], instructions: list[str], **context: Any
    ) -> list[Verdict]: ...


@dataclass
class JudgeConfig:
    """What every judge shares: which backend, the frames it looks at, the score that counts as success and
    when abstains stop a run. A backend's own settings (a trained judge's directory, a server's URL) are a
    subclass in the backend's file, registered with it; ``--judge.backend`` picks the class the config system
    builds, so a setting of another backend is refused by name, never silently ignored."""

    CHOICE_KEY: ClassVar[str] = "backend"
    RANGES: ClassVar[dict] = {
        "threshold": "[0,1]",
        "abstain_stop": ("(0,1]", "1: stop only when every verdict of a batch abstains"),
    }

    backend: str = "generalist"  # a registered judge (JUDGES): generalist | openai | hf | oracle
    frames: FrameSelection = field(default_factory=FrameSelection)
    threshold: float = 0.5  # score -> success, where the backend gives a score
    allow_oracle: bool = False  # the oracle may only be used when a run names it explicitly (ablation/eval)
    # a judge that cannot judge stops the run: when at least this fraction of one batch of verdicts (an RL
    # iteration, an evaluation) abstains, dream and eval-judge end with an error (1.0: only when all abstain)
    abstain_stop: float = 1.0

    @classmethod
    def config_for(cls, backend: str) -> type[JudgeConfig]:
        return JUDGES.config(backend)

    @classmethod
    def unknown_key_hint(cls, key: str, data: dict[str, Any]) -> str | None:
        """Why ``key`` is refused when it is a setting of other backends (None: it is nobody's)."""
        others = JUDGES.owners_of(key)
        if not others:
            return None
        backend = data.get("backend", cls.backend)
        why = " (it cannot compare with a reference demonstration)" if key == "reference" else ""
        return (
            f"is not a setting of the {backend} judge{why}; drop it, or choose a backend that has it: "
            f"--judge.backend={'|'.join(others)}"
        )


#: the settings every judge has (the rest belong to one backend or another)
SHARED_SETTINGS = ("backend", "frames", "threshold", "allow_oracle", "abstain_stop")


def judge_config(backend: str = "generalist", **settings: Any) -> JudgeConfig:
    """The config of a ``backend`` judge with ``settings``: built as ``--judge.backend=... --judge.KEY=...``
    would be, so a setting the backend does not have is refused the same way."""
    from rawdream.config import build

    return build(JudgeConfig, {"backend": backend, **settings}, prefix="judge.")


def for_backend(cfg: JudgeConfig, backend: str, **settings: Any) -> JudgeConfig:
    """``cfg``'s shared settings (frames, threshold, ...) for another backend, with ``settings`` of its own."""
    shared = {k: getattr(cfg, k) for k in SHARED_SETTINGS if k != "backend"}
    return judge_config(backend, **{**shared, **settings})


def reading_through(cfg: JudgeConfig, wm_path: str | Path | None) -> JudgeConfig:
    """``cfg`` with the command's world model filled in where the judge calibrates by replaying the
    demonstration in one (``--judge.calibration=imagined`` without ``--judge.calibration_wm``): the world model
    RL imagines in is the one whose video the judge reads."""
    if getattr(cfg, "calibration", None) == "imagined" and not cfg.calibration_wm and wm_path:
        return dataclasses.replace(cfg, calibration_wm=str(wm_path))
    return cfg


class JudgeUnavailableError(RuntimeError):
    """The judge cannot judge (unreachable, misconfigured, answering nothing usable): the run must stop, not
    train on abstains."""


def check_abstains(verdicts: list[Verdict], cfg: JudgeConfig, where: str, stats: dict | None = None) -> int:
    """Stop the run when the judge abstained on at least ``cfg.abstain_stop`` of ``verdicts``; returns the count."""
    n = sum(v.success is None for v in verdicts)
    if verdicts and n / len(verdicts) >= cfg.abstain_stop:
        reasons = ", ".join(f"{k} (x{c})" for k, c in list((stats or {}).get("errors", {}).items())[:3])
        last = next((v.raw for v in verdicts if v.success is None), "")
        key = getattr(cfg, "api_key_env", None)  # a served VLM's settings, where the backend has them
        fix = f"--judge.url, --judge.model, ${key}" if key else "its --judge.* settings"
        raise JudgeUnavailableError(
            f"the {cfg.backend} judge abstained on {n} of {len(verdicts)} verdicts in {where} "
            f"({reasons or last[:120] or 'no reason given'}); fix the judge ({fix}) or raise --judge.abstain_stop"
        )
    return n


def probe_judge(judge: Judge) -> None:
    """One real request before a long run starts, for judges that talk to something outside the process."""
    probe = getattr(judge, "probe", None)
    if probe is not None:
        probe()


#: judge backends, selected by ``--judge.backend``; a new judge is one file that registers itself here
JUDGES = Registry(
    "judge backend",
    "--judge.backend",
    {
        "generalist": "rawdream.reward.generalist",
        "openai": "rawdream.reward.openai",
        "hf": "rawdream.reward.hf",
        "oracle": "rawdream.reward.oracle",
    },
    config=JudgeConfig,
)
register_judge = JUDGES.register


class OracleNotAllowedError(ValueError):
    """The simulator oracle was requested where only a task-agnostic judge is allowed."""


def make_judge(cfg: JudgeConfig, purpose: str = "evaluation") -> Judge:
    """Build a judge. ``purpose='training'`` refuses the oracle unless ``cfg.allow_oracle`` names the ablation."""
    factory = JUDGES.get(cfg.backend)
    if type(cfg) is not JUDGES.config(cfg.backend):  # e.g. the shared class, or another backend's replaced
        cfg = judge_config(**to_dict(cfg))
    if cfg.backend == "oracle" and purpose == "training" and not cfg.allow_oracle:
        raise OracleNotAllowedError(
            "the simulator oracle judge reads the simulator's success flag: it is for evaluation and for the "
            "explicitly named ablation only; pass --judge.allow_oracle=true to run that ablation"
        )
    return factory(cfg)
