"""Simulators behind one contract (:mod:`rawdream.envs.base`) and their task catalogues
(:mod:`rawdream.envs.tasks`); Meta-World v3 is the embedded default. Nothing outside this package knows which
simulator a task belongs to."""

from rawdream.envs.base import (
    CameraConfig,
    Env,
    EnvConfig,
    Instrumented,
    Observation,
    check_action,
    make_env,
    register_env,
)
from rawdream.envs.tasks import (
    UnknownTaskError,
    backend_of,
    canonical_task,
    instruction,
    named_split,
    paraphrases,
    tasks_of,
)

__all__ = [
    "CameraConfig",
    "Env",
    "EnvConfig",
    "Instrumented",
    "Observation",
    "UnknownTaskError",
    "backend_of",
    "canonical_task",
    "check_action",
    "instruction",
    "make_env",
    "named_split",
    "paraphrases",
    "register_env",
    "tasks_of",
]
