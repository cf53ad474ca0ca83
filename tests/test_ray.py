"""The Ray backend on a local 2-worker cluster: the same rollouts and update as the local path, a worker killed
by its pid mid-iteration changes nothing, and simulator workers are replayed back after a kill."""

import copy
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from rawdream.reward.base import Verdict

ray = pytest.importorskip("ray")

from rawdream.distributed import RayConfig, open_backend  # noqa: E402


class _RewardsRightward:
    """Success iff the rollout pushed the hand right on average (a known reward that reads actions, not
    pixels, so the comparison is not at the mercy of one-level rounding differences of batched kernels)."""

    name, privileged = "toy", True

    def __call__(self, videos, instructions, *, actions, **_):
        x = np.asarray(actions)[..., 0].mean(axis=(1, 2))
        return [Verdict(success=bool(v > 0.0)) for v in x]


@pytest.fixture(scope="module")
def cluster():
    cfg = RayConfig(
        enabled=True, imagine_workers=2, sim_workers=2, local_cpus=2, object_store_mb=128, max_restarts=2
    )
    with open_backend(cfg) as backend:
        yield backend


def _dreamer(tiny_dreamer, imagination=None, backend=None):
    kwargs = {"backend": backend} if backend is not None else {}
    overrides = {"group_size": 4, "horizon": 3, "lr": 1e-3}
    return tiny_dreamer(overrides, judge=_RewardsRightward(), imagination=imagination, **kwargs)


def _params(d):
    return torch.cat([p.detach().flatten().clone() for p in d.policy.model.parameters()])


def _iterate(d, it=0):
    torch.manual_seed(0)
    before = _params(d)
    metrics, buf = d.iteration(it)
    return metrics, buf, _params(d) - before


def _assert_same(a, b):
    """Same rollouts and the same update, within float32 rounding of batched kernels on other shard sizes."""
    (ma, ba, da), (mb, bb, db) = a, b
    assert torch.equal(ba["tokens"], bb["tokens"]), "the same seeds must sample the same actions"
    np.testing.assert_array_equal(ba["success"], bb["success"])
    torch.testing.assert_close(ba["logp"], bb["logp"], atol=1e-4, rtol=0)
    assert np.abs(ba["video"].astype(int) - bb["video"]).max() <= 1
    assert ma["reward_mean"] == mb["reward_mean"] and ma["updates"] == mb["updates"]
    assert da.norm() > 0 and (da - db).norm() / da.norm() < 1e-2, "the parameter updates differ by over 1%"


def test_ray_path_gives_the_local_rollouts_and_update(tiny_dreamer, cluster):
    from rawdream.distributed.ray_backend import RayImagination
    from rawdream.rl.imagination import LocalImagination

    local = _dreamer(tiny_dreamer)  # no backend given: this process
    assert isinstance(local.source.imagination, LocalImagination)
    remote = _dreamer(tiny_dreamer, backend=cluster)  # the Ray backend builds Ray imagination
    assert isinstance(remote.source.imagination, RayImagination)
    assert len(set(remote.source.imagination.pids())) == 2
    try:  # closed whatever happens: its actors hold the cluster's CPUs, and the next test's would wait forever
        _assert_same(_iterate(local), _iterate(remote))
        _assert_same(
            _iterate(local, 1), _iterate(remote, 1)
        )  # the second iteration runs on broadcast weights
    finally:
        remote.source.imagination.close()


def _slow_world_model(wm, marker, seconds: float):
    """The same world model, but each imagined rollout first says so (a file named by the worker's pid) and
    waits, so a test can kill a worker while it holds its shard. Shipped to the workers by value."""
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/

    class _Slow(type(wm)):
        def rollout(self, *args, **kwargs):
            open(f"{self._busy_marker}.{os.getpid()}", "w").close()
            time.sleep(self._busy_seconds)
            return super().rollout(*args, **kwargs)

    slow = copy.deepcopy(wm)
    slow.__class__ = _Slow
    slow._busy_marker, slow._busy_seconds = str(marker), seconds
    return slow


def test_a_worker_killed_mid_iteration_is_restarted_and_changes_nothing(tiny_dreamer, cluster, tmp_path):
    from rawdream.distributed.ray_backend import RayImagination
    from rawdream.rl.imagination import LocalImagination

    local = _dreamer(tiny_dreamer, imagination="placeholder")
    local.source.imagination = LocalImagination(local.policy, local.wm)
    reference = _iterate(local)

    marker = tmp_path / "busy"
    remote = _dreamer(tiny_dreamer, imagination="placeholder")
    remote.source.imagination = RayImagination(
        remote.policy, _slow_world_model(remote.wm, marker, seconds=2.0), cluster.cfg
    )
    try:
        victim = remote.source.imagination.pids()[0]
        result: dict = {}
        worker = threading.Thread(target=lambda: result.setdefault("out", _iterate(remote)))
        worker.start()
        deadline = time.time() + 120
        while not (tmp_path / f"busy.{victim}").exists():  # the victim holds its shard right now
            assert time.time() < deadline and worker.is_alive(), "the worker never started its shard"
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        worker.join(timeout=300)
        assert "out" in result, "the iteration did not finish after the kill"
        assert (
            victim not in remote.source.imagination.pids()
        )  # restarted: a new process took the victim's place
        _assert_same(reference, result["out"])  # its shard was redone: nothing lost, nothing counted twice
        assert result["out"][0]["rollouts"] == 8
    finally:
        remote.source.imagination.close()


def test_simulator_workers_are_replayed_back_after_a_kill(cluster):
    from rawdream.distributed.ray_backend import RayVectorEnv
    from rawdream.envs import EnvConfig
    from rawdream.envs.vector import VectorEnv

    env_cfg = EnvConfig(max_steps=64)
    rng = np.random.default_rng(0)
    chunks = rng.uniform(-1, 1, (4, 4, 8, 4)).astype(np.float32)
    with VectorEnv(4, env_cfg, num_workers=0) as ref:
        ref.reset([1, 2, 3, 4], "reach")
        expected = [ref.step_chunk(c) for c in chunks]
    with cluster.vector_env(4, env_cfg) as venv:
        assert isinstance(venv, RayVectorEnv)
        venv.reset([1, 2, 3, 4], "reach")
        got = [venv.step_chunk(chunks[0]), venv.step_chunk(chunks[1])]
        os.kill(venv.pids()[0], signal.SIGKILL)
        got += [venv.step_chunk(chunks[2]), venv.step_chunk(chunks[3])]
        assert venv.replays == 1
    for e, g in zip(expected, got):
        for a, b in zip(e, g):
            np.testing.assert_array_equal(a.obs["image"], b.obs["image"])
            np.testing.assert_allclose(a.state, b.state)
            assert a.success == b.success


def test_local_cluster_has_a_cpu_slot_for_every_actor():
    """2 cores, default 2 imagination + 2 simulator workers at 1 CPU each: a cluster sized to the cores left two
    actors pending forever (benchmarks/ray_scaling.py hung at 2 workers)."""
    from rawdream.distributed.ray_backend import _local_cpus

    assert _local_cpus(RayConfig(enabled=True, imagine_workers=2, sim_workers=2)) >= 4
    assert _local_cpus(RayConfig(enabled=True, imagine_workers=1, sim_workers=1, judge_workers=3)) >= 5
    assert _local_cpus(RayConfig(enabled=True, imagine_workers=1, sim_workers=1)) >= (os.cpu_count() or 1)
