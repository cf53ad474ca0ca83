"""The policy protocol: what RL (``rawdream dream``) and evaluation ask of a policy, and nothing more.

A policy maps batched observations - ``image`` (B, H, W, 3) uint8, ``proprio`` (B, P) float32, ``instruction``
(B strings), exactly what an :class:`rawdream.envs.base.Env` or the imagined env returns, stacked - to a chunk
of ``chunk`` actions drawn as discrete tokens. It is a ``torch.nn.Module`` (parameters, ``state_dict``,
``to(device)``, ``eval()``), so the learner optimises and checkpoints it whole.

A new policy type is one file: a class with this protocol and a ``from_saved`` constructor, registered with
``POLICIES.register("name", config=ItsConfig)`` (:mod:`rawdream.policy.vla` is the built-in one; tests/ shows
another). ``--policy.type=name`` selects it, :func:`save_policy` / :func:`load_policy` store and restore any type
(safetensors + its config and processor as JSON), and RL and evaluation use nothing but this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from rawdream.config import build, to_dict
from rawdream.io import load_model, save_model
from rawdream.registry import Registry

# how a sampling policy draws its action tokens (``sample(noise=...)``): every config that takes one checks it here
EXPLORATION_NOISES = ("token", "chunk", "episode")


def check_exploration(value: str, flag: str = "exploration") -> None:
    if value not in EXPLORATION_NOISES:
        raise ValueError(f"{flag} must be token, chunk or episode, got {value!r}")


@dataclass
class PolicyConfig:
    """What every policy type's config holds (the shapes the simulator and the dataset fix); a type with settings
    of its own registers a subclass, which ``--policy.type`` selects (another type's setting is refused by name)."""

    CHOICE_KEY: ClassVar[str] = "type"

    type: str = "vla"
    image_size: int = 64
    chunk: int = 8  # actions per sampled chunk, executed open loop
    action_dim: int = 4
    proprio_dim: int = 4

    @classmethod
    def config_for(cls, name: str) -> type[PolicyConfig]:
        return POLICIES.config(name)

    @classmethod
    def unknown_key_hint(cls, key: str, data: dict[str, Any]) -> str | None:
        others = POLICIES.owners_of(key)
        if not others:
            return None
        return (
            f"is not a setting of the {data.get('type', cls.type)} policy; drop it, or choose a type that has it: "
            f"--policy.type={' | '.join(others)}"
        )


def policy_config(type: str = "vla", **settings: Any) -> PolicyConfig:
    """The config of a ``type`` policy with ``settings``, built as ``--policy.type=... --policy.KEY=...`` would be."""
    return build(PolicyConfig, {"type": type, **settings}, prefix="policy.")


#: policy types, selected by ``--policy.type``; each registers its class (with ``from_saved``) and its config
POLICIES = Registry("policy type", "--policy.type", {"vla": "rawdream.policy.vla"}, config=PolicyConfig)


@runtime_checkable
class Policy(Protocol):
    cfg: PolicyConfig
    chunk: int  # actions per sampled chunk (executed open loop before the next observation)

    # a registered type also has ``from_saved(cls, cfg, processor, state_dict)``: the policy save_policy stored

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

    def state_dict(self) -> dict[str, Any]: ...

    def processor_state(self) -> dict[str, Any]:
        """What turns observations into inputs and tokens into actions (normalisation, tokenizer, text cache):
        JSON, saved beside the weights."""
        ...


def save_policy(policy: Policy, out: str | Path, info: dict[str, Any]) -> Path:
    """Any policy type: weights as safetensors, its config and processor as JSON (``info`` is kept beside)."""
    meta = {"config": to_dict(policy.cfg), "processor": policy.processor_state(), **info}
    return save_model(out, "policy", policy.state_dict(), meta)


def load_policy(path: str | Path) -> Policy:
    """The policy :func:`save_policy` stored, of whatever registered type it is; ready to act (``eval()``)."""
    _, meta, sd = load_model(path, "policy", "train one with `rawdream train-policy`")
    cfg = build(PolicyConfig, meta["config"])
    policy = POLICIES.get(cfg.type).from_saved(cfg, meta["processor"], sd)
    policy.eval()
    policy.info = meta  # type: ignore[attr-defined]
    return policy
