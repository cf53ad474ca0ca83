"""The policy protocol: what RL (``rawdream dream``) and evaluation ask of a policy, and nothing more.

A policy maps batched observations - ``image`` (B, H, W, 3) uint8, ``proprio`` (B, P) float32, ``instruction``
(B strings), exactly what an :class:`rawdream.envs.base.Env` or the imagined env returns, stacked - to a chunk
of ``chunk`` actions drawn as discrete tokens. It is a ``torch.nn.Module`` (parameters, ``state_dict``,
``to(device)``, ``eval()``), so the learner optimises and checkpoints it whole. Register a new type with
``POLICIES.register("name")`` (:mod:`rawdream.policy.vla`) and select it with ``--policy.type=name``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Policy(Protocol):
    chunk: int  # actions per sampled chunk (executed open loop before the next observation)

    def sample(
        self,
        obs: dict[str, Any],
        temperature: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: str = "token",
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """-> (actions (B, chunk, A) float32, tokens, per-token log-probabilities of the sampled tokens under
        the sampling distribution); temperature 0 is greedy. One generator per row makes a row's draw
        independent of its batch."""
        ...

    def logprob(
        self, obs: dict[str, Any], tokens: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable per-token log-probabilities of ``tokens`` and the per-token entropy (PPO's ratio)."""
        ...

    def logits(self, obs: dict[str, Any]) -> torch.Tensor:
        """Per-token logits (B, chunk, A, bins): the KL to a reference policy."""
        ...

    def greedy(self, obs: dict[str, Any]) -> np.ndarray:
        """The actions evaluation executes."""
        ...

    def parameters(self, recurse: bool = True): ...

    def eval(self): ...
