"""Dual-noise verification (DNV), the one place it is decided: an imagined success counts only when the judge
still calls it a success after the world model re-imagines the same actions from the same first frame under
other noise draws. A hallucinated success rarely survives a second draw; a real one does.

Used by the dream loop (RL in imagination) and by the on-policy reward-fidelity measure (eval-judge, the run's
eval/judge stage); the paper table's DNV rows are dream runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def verdict_score(verdict: Any) -> float:
    """A verdict's success probability; 0/1 from the verdict where the backend has no score (abstains: 0, and
    they are unreliable anyway)."""
    if verdict.score is not None and np.isfinite(verdict.score):
        return float(verdict.score)
    return float(verdict.success is True)


@dataclass
class Verification:
    flipped: np.ndarray  # (N,) bool: judged a success on the first draw, not on every redraw
    videos: dict[int, np.ndarray] = field(default_factory=dict)  # rollout -> its first redraw's video
    scores: dict[int, list[float]] = field(default_factory=dict)  # rollout -> the judge's score per redraw
    # (N,) bool: a redraw the judge abstained on (also flipped: not confirmed); None: none
    abstained: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.abstained is None:
            self.abstained = np.zeros(len(self.flipped), bool)

    def kept(self, success: np.ndarray) -> np.ndarray:
        """The successes that survived verification."""
        return np.asarray(success, bool) & ~self.flipped


def verify(
    success: np.ndarray,
    redraws: int,
    reimagine: Callable[[np.ndarray, int], np.ndarray],
    judge: Callable[[np.ndarray, np.ndarray, int], Sequence[Any]],
    threshold: float = 0.0,
) -> Verification:
    """Redraw every judged success ``redraws`` times and judge it again.

    ``reimagine(idx, k)`` returns the videos of rollouts ``idx`` under redraw ``k``'s noise (same first frames,
    same actions); ``judge(videos, idx, k)`` returns their verdicts. A redraw confirms the success when its
    verdict is a success (``threshold`` 0) or its score is at least ``threshold`` (DNV's own bar, apart from the
    judge's). Only judged successes are redrawn: a failure has nothing to verify, and redraws are the expensive
    part.
    """
    success = np.asarray(success, bool)
    out = Verification(flipped=np.zeros(len(success), bool))
    idx = np.nonzero(success)[0]
    if len(idx) == 0:
        return out
    for k in range(redraws):
        videos = reimagine(idx, k)
        verdicts = judge(videos, idx, k)
        for j, i in enumerate(idx):
            confirmed = (
                verdicts[j].success is True
                if threshold <= 0
                else verdicts[j].success is not None and verdict_score(verdicts[j]) >= threshold
            )
            if not confirmed:
                out.flipped[i] = True
            if verdicts[j].success is None:
                out.abstained[i] = True
            out.videos.setdefault(int(i), videos[j])
            out.scores.setdefault(int(i), []).append(verdict_score(verdicts[j]))
    return out
