"""Scale-out backends. Local processes are the default; Ray is one flag away (``--ray`` / ``--ray-address``).

Inside :func:`use_ray`, the pieces that run many simulators or models ask :func:`active` and build Ray-backed
versions of themselves (:func:`rawdream.envs.vector.make_vector_env`, the dream loop's imagination and judge).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rawdream.distributed.ray_backend import RayConfig

_ACTIVE: RayConfig | None = None


def active() -> RayConfig | None:
    """The Ray configuration in force, or None when running locally."""
    return _ACTIVE


@contextlib.contextmanager
def use_ray(cfg: RayConfig | None) -> Iterator[RayConfig | None]:
    """Run the enclosed block on Ray when ``cfg.enabled`` (connecting to or starting a cluster), else locally."""
    global _ACTIVE
    if cfg is None or not cfg.enabled:
        yield None
        return
    from rawdream.distributed.ray_backend import ray_session

    with ray_session(cfg):
        previous, _ACTIVE = _ACTIVE, cfg
        try:
            yield cfg
        finally:
            _ACTIVE = previous


__all__ = ["RayConfig", "active", "use_ray"]
