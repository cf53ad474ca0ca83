"""Many environments stepped in lockstep across worker processes (spawn), for a policy in the main process.

Each worker owns a slice of the env slots; each slot holds one simulator, rebuilt when the slot switches task
between episodes (multi-task evaluation). ``step_chunk`` executes a whole action chunk inside the worker
and renders once at its end - the cheap path for chunked policies. Workers use the "spawn" start method:
forking a process that holds an EGL context hangs MuJoCo (ENV-NOTES).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from rawdream.envs.base import EnvConfig, Observation, make_env


@dataclass
class ChunkResult:
    """What one env slot returns after a chunk: the observation at the chunk's end and what happened in it."""

    obs: Observation
    reward: float
    success: bool  # success reported at any step of the chunk
    terminated: bool
    truncated: bool
    steps: int  # control steps actually executed (fewer if the episode ended inside the chunk)
    state: np.ndarray
    object_position: np.ndarray  # world xyz of the task's main object at the chunk's end


class _Slots:
    """The env slots of one worker (also used in-process when num_workers == 0)."""

    def __init__(self, n: int, cfg: EnvConfig):
        self.cfg = cfg
        # One simulator per slot, never one per (slot, task): a Meta-World env with its renderer holds ~86 MB, and
        # evaluating 45 pretraining tasks on 8 slots kept 360 of them alive (31 GB) until the machine ran out.
        self.tasks: list[str | None] = [None] * n
        self.current: list[Any] = [None] * n

    def _env(self, slot: int, task: str):
        if self.tasks[slot] != task:
            if self.current[slot] is not None:
                self.current[slot].close()
            self.current[slot], self.tasks[slot] = (
                None,
                None,
            )  # if make_env raises, no closed env stays current
            self.current[slot], self.tasks[slot] = make_env(task, self.cfg), task
        return self.current[slot]

    def reset(self, items: list[tuple[int, str, int]]) -> list[tuple[Observation, dict]]:
        out = []
        for slot, task, seed in items:
            out.append(self._env(slot, task).reset(seed))
        return out

    def step_chunk(self, items: list[tuple[int, np.ndarray]]) -> list[ChunkResult]:
        out = []
        for slot, actions in items:
            env = self.current[slot]
            if env is None:
                raise RuntimeError(f"env slot {slot} was never reset")
            total, success, steps = 0.0, False, 0
            terminated = truncated = False
            info: dict = {}
            for i, a in enumerate(actions):
                last = i == len(actions) - 1
                obs, r, terminated, truncated, info = env.step(a, render=last)
                total += r
                success |= bool(info["success"])
                steps += 1
                if terminated or truncated:
                    if not last:
                        obs = {**obs, "image": env.render()}
                    break
            out.append(
                ChunkResult(
                    obs, total, success, terminated, truncated, steps, info["state"], info["object_position"]
                )
            )
        return out

    def call(self, items: list[tuple[int, str]]) -> list[Any]:
        return [getattr(self.current[slot], name)() for slot, name in items]

    def close(self) -> None:
        for slot, env in enumerate(self.current):
            if env is not None:
                env.close()
            self.current[slot], self.tasks[slot] = None, None


def _worker(conn, n: int, cfg: EnvConfig) -> None:
    import os

    from rawdream.io import die_with_parent

    die_with_parent()
    os.environ.setdefault("MUJOCO_GL", "egl")
    slots = _Slots(n, cfg)
    try:
        while True:
            cmd, payload = conn.recv()
            if cmd == "close":
                break
            try:
                conn.send(("ok", getattr(slots, cmd)(payload)))
            except Exception as e:  # report to the main process instead of dying silently
                conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        slots.close()
        conn.close()


class VectorEnv:
    """``num_envs`` env slots spread over ``num_workers`` processes (0 = in this process)."""

    def __init__(self, num_envs: int, cfg: EnvConfig | None = None, num_workers: int = 2):
        self.cfg = cfg or EnvConfig()
        self.num_envs = num_envs
        self.num_workers = min(num_workers, num_envs)
        if self.num_workers <= 0:
            self._local = _Slots(num_envs, self.cfg)
            self._owner = [(0, i) for i in range(num_envs)]
            return
        self._local = None
        ctx = mp.get_context("spawn")
        bounds = np.linspace(0, num_envs, self.num_workers + 1).astype(int)
        self._conns, self._procs, self._owner = [], [], []
        for w in range(self.num_workers):
            n = int(bounds[w + 1] - bounds[w])
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, n, self.cfg), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
            self._owner.extend((w, i) for i in range(n))

    def _dispatch(self, cmd: str, per_slot: dict[int, Any]) -> dict[int, Any]:
        """Send each worker its slots' items, then gather the answers (workers run concurrently)."""
        by_worker: dict[int, list[tuple[int, int]]] = {}
        for slot in per_slot:
            w, local = self._owner[slot]
            by_worker.setdefault(w, []).append((slot, local))
        if self._local is not None:
            items = [(local, *_as_tuple(per_slot[slot])) for slot, local in by_worker.get(0, [])]
            results = getattr(self._local, cmd)(items)
            return {slot: r for (slot, _), r in zip(by_worker.get(0, []), results)}
        for w, slots in by_worker.items():
            self._conns[w].send((cmd, [(local, *_as_tuple(per_slot[slot])) for slot, local in slots]))
        out = {}
        for w, slots in by_worker.items():
            status, payload = self._conns[w].recv()
            if status == "error":
                raise RuntimeError(f"env worker {w} failed: {payload}")
            out.update({slot: r for (slot, _), r in zip(slots, payload)})
        return out

    def reset(self, seeds: list[int], tasks: list[str] | str, slots: list[int] | None = None):
        """Reset ``slots`` (default: all) with per-slot seeds and tasks; returns a list of (obs, info)."""
        slots = list(range(self.num_envs)) if slots is None else list(slots)
        tasks = [tasks] * len(slots) if isinstance(tasks, str) else list(tasks)
        if not (len(seeds) == len(tasks) == len(slots)):
            raise ValueError(f"reset got {len(seeds)} seeds and {len(tasks)} tasks for {len(slots)} slots")
        res = self._dispatch("reset", {s: (t, int(seed)) for s, t, seed in zip(slots, tasks, seeds)})
        return [res[s] for s in slots]

    def step_chunk(self, actions: np.ndarray, slots: list[int] | None = None) -> list[ChunkResult]:
        """Execute one (k, action_dim) chunk per slot; returns one :class:`ChunkResult` per slot."""
        slots = list(range(self.num_envs)) if slots is None else list(slots)
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != len(slots):
            raise ValueError(
                f"step_chunk expects actions of shape (num_slots={len(slots)}, chunk, action_dim), got {actions.shape}"
            )
        res = self._dispatch("step_chunk", {s: (a,) for s, a in zip(slots, actions)})
        return [res[s] for s in slots]

    def call(self, name: str, slots: list[int] | None = None) -> list[Any]:
        """Call a no-argument method (e.g. ``expert_action``, ``object_mask``) on each slot's current env."""
        slots = list(range(self.num_envs)) if slots is None else list(slots)
        res = self._dispatch("call", {s: (name,) for s in slots})
        return [res[s] for s in slots]

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            return
        for conn, proc in zip(self._conns, self._procs):
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def make_vector_env(num_envs: int, cfg: EnvConfig | None = None, num_workers: int = 2, backend=None):
    """A :class:`VectorEnv` over local worker processes, or the same interface from ``backend`` (a
    :class:`rawdream.distributed.Backend`, e.g. Ray simulator actors)."""
    if backend is not None:
        return backend.vector_env(num_envs, cfg, num_workers=num_workers)
    return VectorEnv(num_envs, cfg, num_workers=num_workers)
