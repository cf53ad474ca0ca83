"""Rollouts of a policy inside the frozen world model, as plain functions of their inputs.

Everything that makes a rollout is passed in - first frames, proprioception, one policy-sampling seed and one
world-model noise seed per rollout - so a rollout is the same whether it runs in this process
(:class:`LocalImagination`) or on a remote worker with a copy of the models
(:class:`rawdream.distributed.ray_backend.RayImagination`), and whatever other rollouts share its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def collect_rollouts(
    policy,
    obs: dict[str, Any],
    step_fn: Callable,
    gens: list[torch.Generator] | torch.Generator,
    horizon: int,
    temperature: float,
    instruction: str | list[str],
    alive_fn: Callable[[], np.ndarray] | None = None,
    noise: str = "token",
) -> dict[str, Any]:
    """Sample the policy for ``horizon`` chunks against ``step_fn`` (an ImaginedEnv's or the simulator's);
    ``gens`` is one generator per rollout or one shared, ``instruction`` one for all or one per rollout.

    ``noise`` is how tokens are drawn (:meth:`VLAPolicy.sample`): "token", "chunk", or "episode" - chunk noise
    whose uniform numbers are the same in every chunk of a rollout (its generator is rewound before each chunk),
    so a deviation from the policy's mode persists over the whole episode: a consistently shifted motion."""
    n = len(obs["image"])
    texts = [instruction] * n if isinstance(instruction, str) else list(instruction)
    images, proprio, tokens, logps, alive = [], [], [], [], []
    episode = noise == "episode"
    if episode:
        if not isinstance(gens, list | tuple):
            raise ValueError("episode noise needs one generator per rollout")
        start = [g.get_state() for g in gens]
    policy.eval()
    for _ in range(horizon):
        live = alive_fn() if alive_fn else np.ones(n, bool)
        if not live.any():
            break
        images.append(np.asarray(obs["image"]).copy())
        proprio.append(np.asarray(obs["proprio"], np.float32).copy())
        if episode:
            for g, state in zip(gens, start):
                g.set_state(state)
        actions, tok, lp = policy.sample(
            {"image": obs["image"], "proprio": obs["proprio"], "instruction": texts},
            temperature,
            gens,
            "chunk" if episode else noise,
        )
        tokens.append(tok)
        logps.append(lp)
        alive.append(live)
        obs = step_fn(actions)[0]
    return {
        "images": np.stack(images),  # (H, N, ...) time-major: what the update flattens
        "proprio": np.stack(proprio),
        "tokens": torch.stack(tokens),
        "logp": torch.stack(logps),
        "alive": np.stack(alive),
    }


def imagine_rollouts(
    policy,
    world_model,
    images: np.ndarray,
    proprio: np.ndarray,
    instruction: str,
    horizon: int,
    temperature: float,
    policy_seeds: list[int],
    noise_seeds: list[int],
    noise: str = "token",
) -> dict[str, Any]:
    """Roll the policy in the world model from real first frames; adds the imagined ``video`` (N, H+1, ...) and
    the executed ``actions`` (N, H, chunk, A) to what :func:`collect_rollouts` returns."""
    from rawdream.world_model.imagined_env import ImaginedEnv

    n = len(images)
    env = ImaginedEnv(world_model, horizon)
    obs, _ = env.reset(images, proprio, [instruction] * n, list(noise_seeds))
    gens = [torch.Generator().manual_seed(int(s)) for s in policy_seeds]
    with torch.no_grad():
        buf = collect_rollouts(policy, obs, env.step, gens, horizon, temperature, instruction, noise=noise)
    buf["video"] = env.video()
    buf["actions"] = env.actions()
    return buf


@torch.no_grad()
def reimagine(world_model, first_frames, proprio, actions, noise_seeds: list[int]) -> np.ndarray:
    """The same actions from the same first frames under other noise seeds: the second draw of DNV."""
    if len(first_frames) == 0:
        return np.zeros((0, np.asarray(actions).shape[1] + 1, *np.asarray(first_frames).shape[1:]), np.uint8)
    out = world_model.rollout(
        torch.from_numpy(np.asarray(first_frames, np.uint8)),
        torch.from_numpy(np.asarray(proprio, np.float32)),
        torch.from_numpy(np.asarray(actions, np.float32)),
        seeds=[int(s) for s in noise_seeds],
    )
    frames = out["frames"].numpy()
    frames[:, 0] = first_frames  # the first frame is real in both draws
    return frames


class LocalImagination:
    """Imagination in this process (the default)."""

    def __init__(self, policy, world_model):
        self.policy = policy
        self.wm = world_model

    def sync(self, version: int) -> None:
        """The policy is shared with the learner here: nothing to send."""

    def rollouts(
        self, images, proprio, instruction, horizon, temperature, policy_seeds, noise_seeds, noise="token"
    ):
        return imagine_rollouts(
            self.policy,
            self.wm,
            images,
            proprio,
            instruction,
            horizon,
            temperature,
            policy_seeds,
            noise_seeds,
            noise,
        )

    def reimagine(self, first_frames, proprio, actions, noise_seeds) -> np.ndarray:
        return reimagine(self.wm, first_frames, proprio, actions, noise_seeds)

    def close(self) -> None:
        pass
