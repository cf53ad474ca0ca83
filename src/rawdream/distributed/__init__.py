"""Where the work runs: an explicit execution backend, handed to the code that runs many simulators or models.

:func:`open_backend` yields the :class:`LocalBackend` (worker processes on this machine, the default) or, with
``--ray`` / ``--ray-address``, a Ray backend connected for the block. The dream loop, the evaluation harness and
:func:`rawdream.envs.vector.make_vector_env` take it as an argument; there is no module-level state to consult.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from rawdream.distributed.ray_backend import RayConfig


class Backend(Protocol):
    """Builds the parallel parts of a run: simulators, imagination workers, judge replicas."""

    name: str

    def vector_env(self, num_envs: int, cfg: Any = None, num_workers: int = 2) -> Any:
        """A :class:`rawdream.envs.vector.VectorEnv`-like batch of ``num_envs`` simulators."""
        ...

    def imagination(self, policy: Any, world_model: Any) -> Any:
        """Where imagined rollouts run (:class:`rawdream.rl.imagination.LocalImagination`'s interface)."""
        ...

    def judge(self, judge: Any, judge_cfg: Any) -> Any:
        """The judge as the run calls it (itself, or its batches spread over replicas)."""
        ...


class LocalBackend:
    """Simulators in worker processes of this machine, imagination and the judge in this process."""

    name = "local"

    def vector_env(self, num_envs: int, cfg: Any = None, num_workers: int = 2) -> Any:
        from rawdream.envs.vector import VectorEnv

        return VectorEnv(num_envs, cfg, num_workers=num_workers)

    def imagination(self, policy: Any, world_model: Any) -> Any:
        from rawdream.rl.imagination import LocalImagination

        return LocalImagination(policy, world_model)

    def judge(self, judge: Any, judge_cfg: Any) -> Any:
        return judge


LOCAL = LocalBackend()


@contextlib.contextmanager
def open_backend(cfg: RayConfig | None) -> Iterator[Backend]:
    """The backend for a block: Ray (connecting to or starting a cluster) when ``cfg.enabled``, else local."""
    if cfg is None or not cfg.enabled:
        yield LOCAL
        return
    from rawdream.distributed.ray_backend import RayBackend, ray_session

    with ray_session(cfg):
        yield RayBackend(cfg)


__all__ = ["LOCAL", "Backend", "LocalBackend", "RayConfig", "open_backend"]
