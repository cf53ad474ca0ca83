"""Simulators behind one contract (:mod:`rawdream.envs.base`); Meta-World v3 is the embedded default."""

from rawdream.envs.base import CameraConfig, Env, EnvConfig, Observation, check_action, make_env, register_env
from rawdream.envs.metaworld_tasks import (
    ALL_TASKS,
    UnknownTaskError,
    canonical_task,
    instruction,
    paraphrases,
)

__all__ = [
    "ALL_TASKS",
    "CameraConfig",
    "Env",
    "EnvConfig",
    "Observation",
    "UnknownTaskError",
    "canonical_task",
    "check_action",
    "instruction",
    "make_env",
    "paraphrases",
    "register_env",
]
