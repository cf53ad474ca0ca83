"""The policy's own rollouts from the RL initial states: what the on-policy measures share.

:mod:`rawdream.eval.reward_fidelity` (is the judge's verdict on imagined replays the simulator's success?) and
:mod:`rawdream.eval.imagination_transfer` (does the policy act in imagination as in the simulator?) both start from
the same sampled rollouts, drawn as online RL draws them; this module is their settings and that simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch

from rawdream import seeds
from rawdream.envs.base import EnvConfig, refuse_episode_length
from rawdream.envs.tasks import instruction
from rawdream.policy.base import check_exploration


@dataclass
class RewardFidelityConfig:
    RANGES: ClassVar[dict] = {
        "states": ">=1",
        "rollouts_per_state": ">=1",
        "horizon": ">=1",
        "temperature": ">=0",
        "workers": (">=0", "0 or 1: in this process"),
    }

    # the judge is not a setting of its own here: reward_fidelity is handed the judge config of the command that
    # measures it (eval-judge's --judge.*), so the judge measured is the judge evaluated
    env: EnvConfig = field(default_factory=EnvConfig)
    states: int = 16  # distinct RL initial states
    rollouts_per_state: int = 4
    horizon: int = 16
    temperature: float = 1.0
    # how the rollouts' action tokens are drawn, real and closed-loop imagined: "token" (independent) keeps the
    # committed measurements comparable; "chunk" is how dream's recipe H draws them - the behaviour RL shows a judge
    exploration: str = "token"
    workers: int = 2
    seed: int = 0
    moved_threshold: float = 0.02  # metres an object must have moved for the object-region metrics
    # the judge-free measures of whether RL in imagination carries to the simulator
    # (:mod:`rawdream.eval.imagination_transfer`): the policy's view of imagined vs real frames, closed-loop success
    transfer: bool = True

    def validate(self) -> None:
        refuse_episode_length(self.env, "the on-policy reward fidelity", "on_policy.")
        check_exploration(self.exploration, "on_policy.exploration")


def policy_rollouts(policy, task: str, cfg: RewardFidelityConfig) -> dict[str, np.ndarray]:
    """The policy's own rollouts in the real simulator (:func:`rawdream.rl.rollouts.simulate`, as online RL's),
    for the whole horizon: chunk-end frames, actions, proprio, object masks and positions, success at any step."""
    from rawdream.envs.vector import make_vector_env
    from rawdream.rl.rollouts import simulate

    n = cfg.states * cfg.rollouts_per_state
    init_seeds = [seeds.DREAM_INIT + i // cfg.rollouts_per_state for i in range(n)]
    env_cfg = replace(cfg.env, max_steps=cfg.horizon * policy.chunk, end_on_success=False)
    # one stream for the whole batch (the committed measurements were drawn so)
    gen: torch.Generator | list[torch.Generator] = torch.Generator().manual_seed(
        seeds.stable_seed("reward-fidelity", task, cfg.seed)
    )
    if cfg.exploration != "token":  # chunk and episode noise draw per rollout: one stream each
        gen = [
            torch.Generator().manual_seed(seeds.stable_seed("reward-fidelity", task, cfg.seed, i))
            for i in range(n)
        ]
    with make_vector_env(n, env_cfg, num_workers=cfg.workers) as venv:
        buf = simulate(
            policy,
            venv,
            [(task, s) for s in init_seeds],
            [instruction(task)] * n,
            cfg.horizon,
            cfg.temperature,
            gen,
            end_at_success=False,
            noise=cfg.exploration,
            objects=True,
        )
    return {
        "video": buf["video"],
        "masks": buf["object_mask"],
        "object_position": buf["object_position"],
        "proprio": buf["proprio_video"],
        "actions": buf["actions"],
        "success": buf["success"],
        "init_seed": np.asarray(init_seeds),
    }
