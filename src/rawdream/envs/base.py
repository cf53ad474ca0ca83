"""The environment contract every simulator backend (and the imagined world-model env) satisfies.

An observation is a dict with three keys, the same for a real simulator and for imagination, so a policy
cannot tell which one it talks to:

* ``image``: (H, W, 3) uint8, upright (row 0 is the top of the picture);
* ``proprio``: (P,) float32 robot proprioception (Meta-World: hand xyz and gripper opening);
* ``instruction``: the task's natural-language instruction.

``step`` follows Gymnasium: ``(obs, reward, terminated, truncated, info)``; ``info["success"]`` carries the
simulator's success flag, ``info["object_position"]`` the world xyz of the task's main object (for task-free
play and for fidelity measures, never a policy input) and ``info["state"]`` the simulator's full state vector
(stored in datasets as ``observation.environment_state``; its layout is the backend's own); ``reset`` returns the
same keys. An episode succeeds when the simulator reports success at any step and ends there
(``terminated`` is True on success when ``end_on_success``); ``truncated`` is True at the step limit.
"""

from __future__ import annotations

import atexit
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from rawdream.registry import Registry

Observation = dict[str, Any]


@dataclass
class CameraConfig:
    """A free MuJoCo camera looking at ``lookat``; chosen so objects and goal markers are visible at 64x64."""

    lookat: tuple[float, float, float] = (0.0, 0.68, 0.1)
    distance: float = 0.88
    azimuth: float = 150.0
    elevation: float = -38.0


@dataclass
class EnvConfig:
    RANGES: ClassVar[dict] = {"image_size": "[16,512]", "max_steps": ">=1"}

    backend: str = "metaworld"
    image_size: int = 64
    max_steps: int = 128  # 16 action chunks of 8; every held-out task's expert finishes in about 50-105 steps
    end_on_success: bool = True
    camera: CameraConfig = field(default_factory=CameraConfig)

    def validate(self) -> None:
        if self.image_size < 16 or self.image_size > 512:
            raise ValueError(f"env.image_size={self.image_size} is out of range; use 16..512 (default 64)")
        if self.max_steps < 1:
            raise ValueError(f"env.max_steps={self.max_steps} must be positive")


@runtime_checkable
class Env(Protocol):
    task: str
    instruction: str
    action_dim: int
    proprio_dim: int
    max_steps: int

    def reset(self, seed: int) -> tuple[Observation, dict]: ...

    def step(
        self, action: np.ndarray, render: bool = True
    ) -> tuple[Observation, float, bool, bool, dict]: ...

    def close(self) -> None: ...


@runtime_checkable
class Instrumented(Env, Protocol):
    """What task-free play collection, expert demonstrations and fidelity measures ask of a simulator beyond the
    policy's contract (called through ``VectorEnv.call`` in worker processes). Never a policy input."""

    def expert_action(self) -> np.ndarray: ...  # a scripted expert's action at the current state

    def object_mask(self) -> np.ndarray: ...  # (H, W) bool: pixels of the task's objects in the current frame

    def object_position(self) -> np.ndarray: ...  # (3,) world xyz of the task's main object


_LIVE: weakref.WeakSet = weakref.WeakSet()


def _close_live_envs() -> None:
    for env in list(_LIVE):
        env.close()


def close_at_exit(env) -> None:
    """Close ``env``'s renderers at exit before the OpenGL (EGL) display goes away: MuJoCo and robosuite register
    its termination when they create their first context, and atexit runs handlers last-in first-out, so ours is
    (re-)registered after every env's construction - it then runs before any termination registered so far."""
    _LIVE.add(env)
    atexit.unregister(_close_live_envs)
    atexit.register(_close_live_envs)


def check_action(action: Any, action_dim: int, what: str = "action") -> np.ndarray:
    """Refuse actions of the wrong shape with a message that names the shape and the fix."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (action_dim,):
        raise ValueError(
            f"{what} has shape {tuple(a.shape)}, expected ({action_dim},): one {action_dim}-dim action per step "
            f"(Meta-World: xyz delta + gripper, each in [-1, 1])"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains NaN or inf: {a.tolist()}")
    return np.clip(a, -1.0, 1.0)


#: simulator backends, selected by ``--env.backend``; a new simulator is one file that registers itself here
ENVS = Registry(
    "simulator backend",
    "--env.backend",
    {"metaworld": "rawdream.envs.metaworld", "libero": "rawdream.envs.libero"},
)
register_env = ENVS.register


def make_env(task: str, cfg: EnvConfig | None = None) -> Env:
    cfg = cfg or EnvConfig()
    return ENVS.get(cfg.backend)(task, cfg)
