"""The judge contract: ``judge(videos, instructions) -> verdicts``, batched, with a registry of backends.

A verdict says success (True / False / None = abstain), a score in [0, 1] where the backend has one, the raw
answer and the latency. An abstain is never turned into a reward silently: RL treats it as unreliable and
counts it. Frame selection (first, last and k evenly spaced frames; resolution) is part of a judge's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

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
    RANGES: ClassVar[dict] = {
        "threshold": "[0,1]",
        "timeout": (">0", "seconds"),
        "retries": (">=0", "0: one try, no retry"),
        "backoff": (">=0", "seconds"),
        "concurrency": ">=1",
        "abstain_stop": ("(0,1]", "1: stop only when every verdict of a batch abstains"),
    }

    backend: str = "generalist"  # generalist | openai | hf | oracle
    path: str = ""  # generalist: trained judge directory; hf: local model directory
    reference: str = (
        ""  # demos dataset: each instruction is judged beside a demo of its task (reward.references)
    )
    url: str = "http://127.0.0.1:8000/v1"  # openai: base URL of an OpenAI-compatible server
    model: str = "Qwen3-VL-8B-Instruct"
    api_key_env: str = "RAWDREAM_VLM_API_KEY"  # the key is read from this environment variable, never logged
    frames: FrameSelection = field(default_factory=FrameSelection)
    # how a VLM judge (openai, hf) turns its next-token distribution into a score: "yes_no" - asked a Yes/No
    # question, P(Yes) / (P(Yes) + P(No)); "top" - TOPReward-style (Chen et al. 2026): told that the video completes
    # the instruction, the probability of the affirmative "True" itself (its log-likelihood, not renormalised
    # against "False"), zero-shot
    scoring: str = "yes_no"
    threshold: float = 0.5  # score -> success, where the backend gives a score
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5  # seconds; doubled per retry, plus up to 50% random jitter
    concurrency: int = 8
    cache_dir: str = ""  # content-hash cache of answers ("" = in memory only)
    allow_oracle: bool = False  # the oracle may only be used when a run names it explicitly (ablation/eval)
    # a judge that cannot judge stops the run: when at least this fraction of one batch of verdicts (an RL
    # iteration, an evaluation) abstains, dream and eval-judge end with an error (1.0: only when all abstain)
    abstain_stop: float = 1.0

    def validate(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"judge.scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")


SCORINGS = ("yes_no", "top")


class JudgeUnavailableError(RuntimeError):
    """The judge cannot judge (unreachable, misconfigured, answering nothing usable): the run must stop, not
    train on abstains."""


def check_abstains(verdicts: list[Verdict], cfg: JudgeConfig, where: str, stats: dict | None = None) -> int:
    """Stop the run when the judge abstained on at least ``cfg.abstain_stop`` of ``verdicts``; returns the count."""
    n = sum(v.success is None for v in verdicts)
    if verdicts and n / len(verdicts) >= cfg.abstain_stop:
        reasons = ", ".join(f"{k} (x{c})" for k, c in list((stats or {}).get("errors", {}).items())[:3])
        last = next((v.raw for v in verdicts if v.success is None), "")
        raise JudgeUnavailableError(
            f"the {cfg.backend} judge abstained on {n} of {len(verdicts)} verdicts in {where} "
            f"({reasons or last[:120] or 'no reason given'}); fix the judge (for a served VLM: --judge.url, "
            f"--judge.model, ${cfg.api_key_env}) or raise --judge.abstain_stop"
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
)
register_judge = JUDGES.register

#: the ``JudgeConfig`` fields that belong to one backend or another (the rest - backend, frames, threshold,
#: abstain_stop, allow_oracle - every judge shares); a backend names the ones it reads with :func:`takes`
BACKEND_FIELDS = (
    "path",
    "scoring",
    "reference",
    "url",
    "model",
    "api_key_env",
    "timeout",
    "retries",
    "backoff",
    "concurrency",
    "cache_dir",
)


def takes(*fields: str):
    """Declare which of ``BACKEND_FIELDS`` a judge factory reads: setting any other one for this backend is an
    error rather than silently ignored (e.g. a reference demo given to a judge that cannot look at one)."""
    unknown = set(fields) - set(BACKEND_FIELDS)
    assert not unknown, f"not backend fields of JudgeConfig: {sorted(unknown)}"

    def deco(factory):
        factory.takes = frozenset(fields)
        return factory

    return deco


def for_backend(cfg: JudgeConfig, backend: str, **fields: Any) -> JudgeConfig:
    """``cfg``'s shared settings (frames, threshold, ...) for another backend: the old backend's own fields are
    dropped, ``fields`` set."""
    default = JudgeConfig()
    return replace(cfg, **{**{k: getattr(default, k) for k in BACKEND_FIELDS}, "backend": backend, **fields})


def check_backend_fields(cfg: JudgeConfig, factory) -> None:
    """Refuse a field set (away from its default) that the chosen backend does not read."""
    accepted = getattr(factory, "takes", None)
    if accepted is None:  # a plug-in that did not declare its fields takes the whole section
        return
    default = JudgeConfig()
    for name in BACKEND_FIELDS:
        if name not in accepted and getattr(cfg, name) != getattr(default, name):
            others = [b for b in JUDGES.names() if name in getattr(JUDGES.get(b), "takes", ())]
            raise ValueError(
                f"--judge.{name}={getattr(cfg, name)!r} is not used by the {cfg.backend} judge"
                + (" (it cannot compare with a reference demonstration)" if name == "reference" else "")
                + f"; drop it, or choose a backend that takes it: {', '.join(others) or 'none'}"
            )


class OracleNotAllowedError(ValueError):
    """The simulator oracle was requested where only a task-agnostic judge is allowed."""


def make_judge(cfg: JudgeConfig, purpose: str = "evaluation") -> Judge:
    """Build a judge. ``purpose='training'`` refuses the oracle unless ``cfg.allow_oracle`` names the ablation."""
    factory = JUDGES.get(cfg.backend)
    check_backend_fields(cfg, factory)
    if cfg.backend == "oracle" and purpose == "training" and not cfg.allow_oracle:
        raise OracleNotAllowedError(
            "the simulator oracle judge reads the simulator's success flag: it is for evaluation and for the "
            "explicitly named ablation only; pass --judge.allow_oracle=true to run that ablation"
        )
    return factory(cfg)
