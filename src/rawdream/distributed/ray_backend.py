"""Scale-out on Ray: imagination, judging and simulation as Ray actors; the learner stays in the driver.

* :class:`RayImagination` - world-model replicas. A rollout batch is split into contiguous shards, one per
  worker; every call carries the policy weights as an object-store reference (put once per iteration), so a
  call is stateless: a worker that dies mid-iteration is restarted by Ray and its shard re-run with the same
  seeds, and the iteration's result is unchanged (nothing lost, nothing counted twice).
* :class:`RayJudge` - judge replicas (a local HF VLM or the generalist on GPUs); a served VLM is already a
  remote service, so by default the judge runs in the driver.
* :class:`RayVectorEnv` - simulator workers behind the :class:`rawdream.envs.vector.VectorEnv` interface, for
  evaluation and the online-RL baseline. A simulator's state cannot be shipped, but it is a deterministic
  function of its reset seed and the actions since: a restarted worker is brought back by replaying them.

Rollouts depend only on their own seeds (per-rollout policy streams, per-rollout world-model noise), so the Ray
path gives the same rollouts as the local one; the only differences are floating-point rounding of batched
kernels on shards of another size (stated tolerance: identical tokens and verdicts; log-probabilities within
1e-4; the parameter update within 1% of its norm).

    rawdream dream --task drawer-open ... --ray                      # a local cluster on this machine
    rawdream dream --task drawer-open ... --ray-address HOST:6379    # an existing cluster
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class RayConfig:
    enabled: bool = False
    address: str = ""  # "": start a local cluster; "auto" or HOST:PORT: connect to a running one
    imagine_workers: int = 2
    judge_workers: int = 0  # 0: judge in the driver (a served VLM is already remote)
    sim_workers: int = 2
    envs_per_sim_worker: int = 4
    cpus_per_worker: float = 1.0
    imagine_gpus: float = 0.0  # per imagination worker (e.g. 0.25 packs four world-model replicas per GPU)
    judge_gpus: float = 0.0
    worker_threads: int = 1  # torch threads inside each worker
    max_restarts: int = 4
    object_store_mb: int = 512  # the local cluster's object store (Ray reserves 30% of RAM otherwise)
    local_cpus: int = 0  # CPUs of a local cluster (0: this machine's count)

    def validate(self) -> None:
        if self.imagine_workers < 1 or self.sim_workers < 1:
            raise ValueError("ray.imagine_workers and ray.sim_workers must be at least 1")


def _ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            "the Ray backend needs Ray: `pip install -e '.[ray]'` in the rawdream checkout (or `pip install ray`)"
        ) from e
    return ray


def _local_cpus(cfg: RayConfig) -> int:
    """CPU slots of a local cluster: this machine's cores, or enough for every actor the config asks for.

    Ray's CPU counts are scheduling tokens, not cores: with 2 cores and the default 2 imagination + 2 simulator
    workers at 1 CPU each, a cluster sized to the cores leaves two actors pending forever (a silent hang)."""
    wanted = (cfg.imagine_workers + cfg.sim_workers + cfg.judge_workers) * cfg.cpus_per_worker
    return max(os.cpu_count() or 1, math.ceil(wanted))


@contextlib.contextmanager
def ray_session(cfg: RayConfig):
    """Connect to (or start) a Ray cluster for the duration of a block; a local cluster binds to 127.0.0.1."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token files in the home directory
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if cfg.address:
            kwargs["address"] = cfg.address
        else:
            kwargs.update(
                # "local": a cluster of this process's own, never one found through RAY_ADDRESS or `ray start`
                address="local",
                num_cpus=cfg.local_cpus or _local_cpus(cfg),
                object_store_memory=cfg.object_store_mb * 2**20,
                _node_ip_address="127.0.0.1",
            )
        ray.init(**kwargs)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _actor_options(cfg: RayConfig, num_gpus: float, retries: int) -> dict[str, Any]:
    return {
        "num_cpus": cfg.cpus_per_worker,
        "num_gpus": num_gpus,
        "max_restarts": cfg.max_restarts,
        "max_task_retries": retries,
    }


def _shards(n: int, k: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n, min(k, n) + 1).astype(int) if n else np.zeros(1, int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def _wait_restarted(ray, actor, timeout: float = 120.0) -> None:
    t0 = time.time()
    while True:
        try:
            ray.get(actor.pid.remote(), timeout=10)
            return
        except Exception:
            if time.time() - t0 > timeout:
                raise
            time.sleep(0.2)


# ------------------------------------------------------------------------------------------------------------
# imagination workers
# ------------------------------------------------------------------------------------------------------------
class _ImaginationWorker:
    """Holds a world model and a policy; takes shards of (first frames, seeds) and returns imagined rollouts."""

    def __init__(self, world_model, policy, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        # a worker given a GPU by Ray (ray.imagine_gpus > 0) sees it as its only device
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.wm = world_model.to(device).eval()
        self.policy = policy.to(device).eval()
        self.version = None

    def pid(self) -> int:
        return os.getpid()

    def _load(self, weights, version) -> None:
        if version != self.version:  # a restarted worker has none: every call brings the weights it needs
            self.policy.load_state_dict(weights)
            self.version = version

    def rollouts(
        self, weights, version, images, proprio, instruction, horizon, temperature, pseeds, nseeds, noise
    ):
        from rawdream.rl.imagination import imagine_rollouts

        self._load(weights, version)
        return imagine_rollouts(
            self.policy, self.wm, images, proprio, instruction, horizon, temperature, pseeds, nseeds, noise
        )

    def reimagine(self, first_frames, proprio, actions, noise_seeds):
        from rawdream.rl.imagination import reimagine

        return reimagine(self.wm, first_frames, proprio, actions, noise_seeds)


class RayImagination:
    """Same interface as :class:`rawdream.rl.imagination.LocalImagination`, over ``cfg.imagine_workers``."""

    def __init__(self, policy, world_model, cfg: RayConfig):
        ray = _ray()
        self.ray, self.cfg, self.policy = ray, cfg, policy
        # max_task_retries: a killed worker's shard is re-run on its restarted replica
        actor = ray.remote(**_actor_options(cfg, cfg.imagine_gpus, cfg.max_restarts))(_ImaginationWorker)
        # CPU copies travel (the learner's may live on a GPU); each worker moves them to its own device
        wm_ref, policy_ref = ray.put(copy.deepcopy(world_model).cpu()), ray.put(copy.deepcopy(policy).cpu())
        self._init_refs = (wm_ref, policy_ref)  # held for the life of the pool: a restart re-reads them
        self.workers = [
            actor.remote(wm_ref, policy_ref, cfg.worker_threads) for _ in range(cfg.imagine_workers)
        ]
        self._weights = None
        self._version = None

    def pids(self) -> list[int]:
        return self.ray.get([w.pid.remote() for w in self.workers])

    def sync(self, version: int) -> None:
        """Broadcast the learner's current weights through the object store (one put per iteration)."""
        sd = {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()}
        self._weights, self._version = self.ray.put(sd), version

    def rollouts(
        self, images, proprio, instruction, horizon, temperature, policy_seeds, noise_seeds, noise="token"
    ):
        if self._weights is None:
            self.sync(-1)
        shards = _shards(len(images), len(self.workers))
        refs = [
            w.rollouts.remote(
                self._weights,
                self._version,
                images[a:b],
                proprio[a:b],
                instruction,
                horizon,
                temperature,
                policy_seeds[a:b],
                noise_seeds[a:b],
                noise,
            )
            for w, (a, b) in zip(self.workers, shards)
        ]
        parts = self.ray.get(refs)
        import torch

        out: dict[str, Any] = {}
        for key in ("images", "proprio", "alive"):  # time-major (H, N, ...): rollouts on axis 1
            out[key] = np.concatenate([p[key] for p in parts], axis=1)
        for key in ("tokens", "logp"):
            out[key] = torch.cat([p[key] for p in parts], dim=1)
        for key in ("video", "actions"):  # rollout-major
            out[key] = np.concatenate([p[key] for p in parts], axis=0)
        return out

    def reimagine(self, first_frames, proprio, actions, noise_seeds) -> np.ndarray:
        shards = _shards(len(first_frames), len(self.workers))
        refs = [
            w.reimagine.remote(first_frames[a:b], proprio[a:b], actions[a:b], noise_seeds[a:b])
            for w, (a, b) in zip(self.workers, shards)
        ]
        return np.concatenate(self.ray.get(refs), axis=0)

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                self.ray.kill(w)


# ------------------------------------------------------------------------------------------------------------
# judge workers
# ------------------------------------------------------------------------------------------------------------
class _JudgeWorker:
    def __init__(self, judge_cfg, threads: int):
        import torch

        from rawdream.reward.base import make_judge

        torch.set_num_threads(max(1, threads))
        self.judge = make_judge(judge_cfg, purpose="evaluation")

    def judge_videos(self, videos, instructions, context):
        return self.judge(videos, instructions, **context)


class RayJudge:
    """A judge whose batches are split over ``cfg.judge_workers`` replicas (``judge_gpus`` each)."""

    def __init__(self, judge, judge_cfg, cfg: RayConfig):
        ray = _ray()
        self.ray, self.name, self.privileged = ray, judge.name, judge.privileged
        actor = ray.remote(**_actor_options(cfg, cfg.judge_gpus, cfg.max_restarts))(_JudgeWorker)
        self.workers = [actor.remote(judge_cfg, cfg.worker_threads) for _ in range(cfg.judge_workers)]
        self.stats = getattr(judge, "stats", {})

    def __call__(self, videos, instructions, **context):
        shards = _shards(len(videos), len(self.workers))
        refs = []
        for w, (a, b) in zip(self.workers, shards):
            ctx = {k: (v[a:b] if v is not None else None) for k, v in context.items()}
            refs.append(w.judge_videos.remote(list(videos[a:b]), list(instructions[a:b]), ctx))
        return [v for part in self.ray.get(refs) for v in part]


# ------------------------------------------------------------------------------------------------------------
# simulator workers
# ------------------------------------------------------------------------------------------------------------
class _SimWorker:
    def __init__(self, n: int, env_cfg):
        os.environ.setdefault("MUJOCO_GL", "egl")
        from rawdream.envs.vector import _Slots

        self.slots = _Slots(n, env_cfg)

    def pid(self) -> int:
        return os.getpid()

    def run(self, cmd: str, items: list) -> list:
        return getattr(self.slots, cmd)(items)


class RayVectorEnv:
    """:class:`rawdream.envs.vector.VectorEnv` over Ray actors. Each slot's history (reset seed, then every
    action chunk) is kept by the driver, so a killed worker is restarted and replayed to where it was."""

    def __init__(self, num_envs: int, env_cfg, cfg: RayConfig):
        ray = _ray()
        self.ray, self.cfg, self.num_envs = ray, env_cfg, num_envs
        k = max(1, min(cfg.sim_workers, num_envs))
        # no automatic retry: a restarted simulator is empty and must first be replayed (see _recover)
        actor = ray.remote(**_actor_options(cfg, 0.0, 0))(_SimWorker)
        self._bounds = _shards(num_envs, k)
        self.workers = [actor.remote(b - a, env_cfg) for a, b in self._bounds]
        self._owner = [(w, i - a) for w, (a, b) in enumerate(self._bounds) for i in range(a, b)]
        self._history: dict[int, list[tuple[str, tuple]]] = {}
        self.replays = 0

    def _dispatch(self, cmd: str, per_slot: dict[int, tuple]) -> dict[int, Any]:
        from ray.exceptions import RayActorError

        by_worker: dict[int, list[int]] = {}
        for slot in per_slot:
            by_worker.setdefault(self._owner[slot][0], []).append(slot)
        pending = {
            w: self.workers[w].run.remote(cmd, [(self._owner[s][1], *per_slot[s]) for s in slots])
            for w, slots in by_worker.items()
        }
        out: dict[int, Any] = {}
        for w, ref in pending.items():
            slots = by_worker[w]
            try:
                res = self.ray.get(ref)
            except RayActorError:
                res = self._recover(w, cmd, [(self._owner[s][1], *per_slot[s]) for s in slots])
            out.update(zip(slots, res))
        return out

    def _recover(self, w: int, cmd: str, items: list) -> list:
        """Worker ``w`` died: wait for Ray to restart it, replay its slots' histories, then redo ``items``."""
        _wait_restarted(self.ray, self.workers[w])
        a, b = self._bounds[w]
        for slot in range(a, b):
            for c, args in self._history.get(slot, []):
                self.ray.get(self.workers[w].run.remote(c, [(slot - a, *args)]))
        self.replays += 1
        return self.ray.get(self.workers[w].run.remote(cmd, items))

    def reset(self, seeds: list[int], tasks, slots: list[int] | None = None):
        slots = list(range(self.num_envs)) if slots is None else list(slots)
        tasks = [tasks] * len(slots) if isinstance(tasks, str) else list(tasks)
        if not (len(seeds) == len(tasks) == len(slots)):
            raise ValueError(f"reset got {len(seeds)} seeds and {len(tasks)} tasks for {len(slots)} slots")
        per = {s: (t, int(seed)) for s, t, seed in zip(slots, tasks, seeds)}
        res = self._dispatch("reset", per)
        for s in slots:
            self._history[s] = [("reset", per[s])]
        return [res[s] for s in slots]

    def step_chunk(self, actions: np.ndarray, slots: list[int] | None = None):
        slots = list(range(self.num_envs)) if slots is None else list(slots)
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != len(slots):
            raise ValueError(
                f"step_chunk expects actions of shape (num_slots={len(slots)}, chunk, action_dim), got "
                f"{actions.shape}"
            )
        per = {s: (a,) for s, a in zip(slots, actions)}
        res = self._dispatch("step_chunk", per)
        for s in slots:
            self._history.setdefault(s, []).append(("step_chunk", per[s]))
        return [res[s] for s in slots]

    def call(self, name: str, slots: list[int] | None = None) -> list[Any]:
        slots = list(range(self.num_envs)) if slots is None else list(slots)
        res = self._dispatch("call", {s: (name,) for s in slots})
        return [res[s] for s in slots]

    def pids(self) -> list[int]:
        return self.ray.get([w.pid.remote() for w in self.workers])

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                self.ray.kill(w)

    def __enter__(self) -> RayVectorEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------------------
# the backend
# ------------------------------------------------------------------------------------------------------------
class RayBackend:
    """:class:`rawdream.distributed.Backend` on a connected Ray cluster (see :func:`rawdream.distributed.open_backend`)."""

    name = "ray"

    def __init__(self, cfg: RayConfig):
        self.cfg = cfg

    def vector_env(self, num_envs: int, cfg=None, num_workers: int = 2) -> RayVectorEnv:
        from rawdream.envs.base import EnvConfig

        return RayVectorEnv(num_envs, cfg or EnvConfig(), self.cfg)  # ray.sim_workers actors, not num_workers

    def imagination(self, policy, world_model) -> RayImagination:
        return RayImagination(policy, world_model, self.cfg)

    def judge(self, judge, judge_cfg):
        if hasattr(judge, "backend"):  # a judge that runs simulators (the oracle) runs them as Ray actors too
            judge.backend = self
        # a served VLM is already remote: replicas only when asked for (ray.judge_workers > 0)
        return RayJudge(judge, judge_cfg, self.cfg) if self.cfg.judge_workers > 0 else judge
