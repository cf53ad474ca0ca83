import os

os.environ.setdefault("MUJOCO_GL", "egl")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the suite runs in one process per core (pytest -n auto, pyproject.toml): one torch thread each, or every
    # training step's threads wait on the other process's (the code under test asks for its configured count)
    import torch

    _set_num_threads = torch.set_num_threads
    torch.set_num_threads = lambda n: _set_num_threads(1)
    torch.set_num_threads(1)

import numpy as np
import pytest


@pytest.fixture(scope="session")
def drawer_env():
    from rawdream.envs import make_env

    env = make_env("drawer-open")
    yield env
    env.close()


@pytest.fixture
def family_lost_first(monkeypatch):
    """The per-target check's first verdicts say RL lowered real success on every family (so a hardening round
    runs); later verdicts are the real ones. Returns the list of verdicts scored so far (clear it to start over)."""
    import rawdream.experiment.judge_check as judge_check

    real_score = judge_check.score_targets
    calls = []

    def lost_first(runs, families):
        rep = real_score(runs, families)
        if not calls:
            for v in rep.values():
                v.update(lost=v["gained"] + 1, score=-1, rl=False, why="lowered real success")
        calls.append(rep)
        return rep

    monkeypatch.setattr(judge_check, "score_targets", lost_first)
    return calls


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def play_data(tmp_path_factory):
    from rawdream.cli import main

    out = tmp_path_factory.mktemp("data") / "play"
    assert main(["collect", "play", "--out", str(out), "--preset", "tiny"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_wm(play_data, tmp_path_factory):
    from rawdream.cli import main

    out = tmp_path_factory.mktemp("wm") / "wm"
    assert main(["pretrain-wm", "--data", str(play_data), "--out", str(out), "--preset", "tiny"]) == 0
    return out


@pytest.fixture(scope="session")
def reach_demo(tmp_path_factory):
    from rawdream.cli import main

    out = tmp_path_factory.mktemp("demos") / "reach"
    assert (
        main(["collect", "demos", "--task", "reach", "--out", str(out), "--preset", "tiny", "--max_steps=48"])
        == 0
    )
    return out


@pytest.fixture(scope="session")
def tiny_policy(reach_demo, tmp_path_factory):
    """A tiny policy trained on a reach demo, with 'push' as the split's target so reach is a pretraining task."""
    from rawdream.cli import main

    out = tmp_path_factory.mktemp("policy") / "base"
    assert (
        main(
            [
                "train-policy",
                "--stage",
                "base",
                "--data",
                str(reach_demo),
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--split.targets=push",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def labeled_data(tmp_path_factory):
    """Labeled rollouts of two pretraining tasks with a mix of successes and failures."""
    from rawdream.cli import main

    out = tmp_path_factory.mktemp("data") / "labeled"
    assert (
        main(
            [
                "collect",
                "labeled",
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--tasks=reach,drawer-close",
                "--episodes_per_task=16",
                "--max_steps=64",
                "--workers=2",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def pretrain_demos(tmp_path_factory):
    """Expert demonstrations of the two pretraining tasks of ``labeled_data``: the judge's references."""
    from rawdream.cli import main

    out = tmp_path_factory.mktemp("demos") / "pretrain"
    args = ["collect", "demos", "--tasks=reach,drawer-close", "--out", str(out), "--preset", "tiny"]
    assert main([*args, "--episodes_per_task=2", "--max_steps=96", "--split.targets=push"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_judge(labeled_data, pretrain_demos, tmp_path_factory):
    from rawdream.cli import main

    out = tmp_path_factory.mktemp("judge") / "judge"
    assert (
        main(
            [
                "train-judge",
                "--data",
                str(labeled_data),
                "--references",
                str(pretrain_demos),
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--split.targets=push",
                "--steps=300",
                "--batch=16",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def tiny_dreamer(tiny_policy, tiny_wm):
    """Build a :class:`Dreamer` on the tiny models: task reach (a pretraining task of the split whose target is
    push), the tiny dream preset plus ``overrides``; ``judge`` replaces the frozen judge (a scripted one), other
    keywords go to ``Dreamer`` (``imagination``, ``backend``). Each call loads fresh copies of the models."""
    from rawdream.config import resolve
    from rawdream.policy.train import load_policy
    from rawdream.rl.dream import DreamConfig, Dreamer
    from rawdream.world_model.train import load_world_model

    def make(overrides: dict | None = None, judge=None, world_model=None, **kwargs):
        base = {
            "task": "reach",
            "split.targets": ["push"],
            "judge.backend": "oracle",
            "judge.allow_oracle": True,
        }
        cfg = resolve(DreamConfig, "dream", "tiny", {**base, **(overrides or {})})
        wm = world_model if world_model is not None else load_world_model(tiny_wm)
        dreamer = Dreamer(cfg, load_policy(tiny_policy), wm, **kwargs)
        if judge is not None:
            dreamer.judge = judge
        return dreamer

    return make
