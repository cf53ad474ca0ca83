"""``oracle`` judge: the simulator's own success flag, by replaying the rollout's actions from its initial state.

It is privileged (it reads the simulator, which a real robot or a new task in imagination does not have): it is
used to score judges and world models, and for the explicitly named "oracle reward" ablation - the ceiling of
what a perfect judge would give RL in imagination. :func:`rawdream.reward.base.make_judge` refuses it for
training unless that ablation is named, and every result it produces is labelled ``oracle``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from rawdream.envs.base import EnvConfig
from rawdream.envs.tasks import backend_of
from rawdream.envs.vector import make_vector_env
from rawdream.reward.base import JudgeConfig, Verdict, register_judge


class OracleJudge:
    name = "oracle"
    privileged = True

    def __init__(self, cfg: JudgeConfig, env: EnvConfig | None = None, workers: int = 2):
        self.cfg = cfg
        self.env = env or EnvConfig()
        self.workers = workers
        # where its simulators run: set by the execution backend that hands the judge to a run (None: local)
        self.backend = None

    def __call__(
        self,
        videos,
        instructions,
        *,
        tasks: list[str] | None = None,
        seeds: list[int] | None = None,
        actions: np.ndarray | None = None,
        **_: Any,
    ) -> list[Verdict]:
        if tasks is None or seeds is None or actions is None:
            raise ValueError(
                "the oracle judge replays actions in the simulator: pass tasks=, seeds= and actions= "
                "(one (H, chunk, action_dim) array per video)"
            )
        return replay_success(tasks, seeds, np.asarray(actions), self.env, self.workers, self.backend)


def replay_success(
    tasks: list[str], seeds: list[int], actions: np.ndarray, env: EnvConfig, workers: int = 2, backend=None
) -> list[Verdict]:
    """Success at any step of each action sequence, replayed from the seeded reset of its task."""
    t0 = time.perf_counter()
    n = len(tasks)
    horizon_steps = actions.shape[1] * actions.shape[2]
    # replayed in the tasks' own simulator, whatever simulator the judge was configured with
    cfg = replace(env, backend=backend_of(tasks[0]), max_steps=horizon_steps, end_on_success=False)
    success = np.zeros(n, bool)
    slots = min(n, max(1, workers) * 4)
    with make_vector_env(slots, cfg, num_workers=min(workers, slots), backend=backend) as venv:
        for start in range(0, n, slots):
            rows = list(range(start, min(n, start + slots)))
            venv.reset([seeds[r] for r in rows], [tasks[r] for r in rows], slots=list(range(len(rows))))
            for h in range(actions.shape[1]):
                res = venv.step_chunk(actions[rows, h], slots=list(range(len(rows))))
                for r, out in zip(rows, res):
                    success[r] |= out.success
    dt = (time.perf_counter() - t0) / max(n, 1)
    return [
        Verdict(success=bool(s), score=float(s), raw="oracle: simulator success", latency=dt) for s in success
    ]


@register_judge("oracle")  # no settings of its own: the shared JudgeConfig
def _make(cfg: JudgeConfig) -> OracleJudge:
    return OracleJudge(cfg)
