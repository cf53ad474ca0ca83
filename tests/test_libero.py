"""LIBERO backend (``rawdream[libero]``, in the test extra): catalogue, splits, the Env contract on a real LIBERO
scene (reset from the fixed initial states, step, render, success from LIBERO's own goal check), the evaluation
harness for one short episode, and task-free play written as a LeRobot dataset. Building a LIBERO scene takes
seconds here, so the scene-level tests share one environment where they can."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from rawdream.config import ConfigError, build
from rawdream.envs import EnvConfig, canonical_task, instruction, make_env, tasks_of
from rawdream.envs.base import CameraConfig
from rawdream.splits import SplitConfig, resolve_split

pytest.importorskip("libero.libero", reason="pip install 'rawdream[libero]'")

TASK = "turn_on_the_stove"  # LIBERO-Goal; its goal is one joint, so a test can satisfy it directly
LIBERO = EnvConfig(backend="libero", max_steps=16)


def test_catalogue_suites_splits_and_names():
    assert len(tasks_of("libero")) == 130  # LIBERO-90 + Goal, Spatial, Object, 10
    split = resolve_split(SplitConfig(name="libero-90-to-goal"))
    assert split.backend == "libero" and len(split.targets) == 10 and len(split.pretrain) == 90
    assert TASK in split.targets and not set(split.targets) & set(split.pretrain)
    assert all(t.startswith(("KITCHEN", "LIVING", "STUDY")) for t in split.pretrain)  # LIBERO-90 only
    spatial = resolve_split(SplitConfig(name="libero-90-to-spatial"))
    assert spatial.pretrain == split.pretrain and len(spatial.targets) == 10
    assert canonical_task("Turn-On-The-Stove") == TASK and instruction(TASK) == "turn on the stove"
    assert canonical_task("drawer-open") == "drawer-open"  # Meta-World's names still resolve to Meta-World


def test_configs_refuse_a_simulator_that_cannot_run_the_split_or_has_no_experts():
    from rawdream.data.collect import CollectConfig
    from rawdream.pipeline import resolve_run

    with pytest.raises(ConfigError, match="add --env.backend=libero"):
        build(CollectConfig, {"split": {"name": "libero-90-to-goal"}})
    # a simulator section nested deeper is checked too (eval-judge's on-policy rollouts), and the run sets them all
    from rawdream.eval.judge_accuracy import EvalJudgeConfig
    from rawdream.pipeline import _section_class, _simulator_overlay

    with pytest.raises(ConfigError, match="add --on_policy.env.backend=libero"):
        build(EvalJudgeConfig, {"split": {"name": "libero-90-to-goal"}})
    assert _simulator_overlay(_section_class("eval_judge"), "libero") == {
        "on_policy": {"env": {"backend": "libero"}}
    }
    # a section with a split of its own answers to that split, not to its parent's
    from rawdream.pipeline import RunConfig

    build(RunConfig, {"eval": {"split": {"name": "libero-90-to-goal"}, "env": {"backend": "libero"}}})
    # LeRobot's spelling of the simulator's flag points to ours
    with pytest.raises(ConfigError, match=r"--env.type \(did you mean --env.backend\?\)"):
        build(CollectConfig, {"env": {"type": "libero"}})
    libero = {"split": {"name": "libero-90-to-goal"}, "env": {"backend": "libero"}}
    demos = {"kind": "demos", "frac_expert": 1.0, "frac_stall": 0.0, "frac_random": 0.0, "frac_poke": 0.0}
    with pytest.raises(ValueError, match="needs scripted experts.*--data"):
        build(CollectConfig, {**libero, **demos})
    with pytest.raises(ValueError, match="--frac_expert=0.5.*--preset libero"):
        build(CollectConfig, libero)
    # the main job collects expert demonstrations: it says what to do instead
    with pytest.raises(ConfigError, match="scripted-expert demonstrations.*--data"):
        resolve_run("tiny", {"split.name": "libero-90-to-goal"})


def test_libero_refuses_meta_worlds_camera():
    with pytest.raises(ValueError, match="drop --env.camera"):
        make_env(TASK, EnvConfig(backend="libero", camera=CameraConfig(distance=2.0)))


@pytest.fixture(scope="module")
def stove():
    env = make_env(TASK, LIBERO)
    yield env
    env.close()


@pytest.mark.slow
def test_env_contract_initial_states_and_success(stove):
    obs, info = stove.reset(3)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8 and obs["image"].std() > 5
    assert obs["proprio"].shape == (8,) and obs["instruction"] == "turn on the stove"
    assert info["state"].shape == (6,) and info["init_state"] == 3 and not info["success"]
    # the fixed initial states: another seed, another layout; the same seed, the same scene again
    other, _ = stove.reset(4)  # the next initial state moves the loose objects by centimetres
    assert (other["image"] != obs["image"]).any()
    for _ in range(3):  # an episode in between, gripper closing: nothing of it may leak into the next reset
        stove.step(np.array([0.5, 0.5, 0, 0, 0, 0, 1.0]))
    again, info = stove.reset(3)
    np.testing.assert_array_equal(again["proprio"], obs["proprio"])
    np.testing.assert_array_equal(again["image"], obs["image"])
    other, _ = stove.reset(4)
    # 7-D delta actions move the hand; the wrong dimension is refused with the expected shape
    start = other["proprio"][:3].copy()
    for _ in range(4):
        obs, _, terminated, truncated, info = stove.step(np.array([1.0, 0, 0, 0, 0, 0, -1]))
    assert obs["proprio"][0] - start[0] > 0.01 and not (terminated or truncated or info["success"])
    with pytest.raises(ValueError, match=r"expected \(7,\)"):
        stove.step(np.zeros(4))
    mask, pixels = stove.object_mask(), stove.object_pixels()
    assert mask.sum() > 10 and sum(pixels.values()) == mask.sum()  # the stove is in view, body by body
    assert all(name.startswith("flat_stove_1") for name in pixels)
    with pytest.raises(NotImplementedError, match="no scripted experts"):
        stove.expert_action()
    # success comes from LIBERO's own goal check: turn the stove's knob into its "on" range, take a step
    inner = stove._env.env
    model, data = inner.sim.model._model, inner.sim.data._data
    joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "flat_stove_1_button")
    data.qpos[model.jnt_qposadr[joint]] = 1.0
    mujoco.mj_forward(model, data)
    _, _, terminated, _, info = stove.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert info["success"] and terminated


def _untrained_libero_policy():
    """A small VLA policy for LIBERO's 7-D actions and 8-D proprioception (no LIBERO data here to train one)."""
    import torch

    from rawdream.policy.tokenizer import ActionTokenizer
    from rawdream.policy.vla import POLICIES, PolicyConfig

    torch.manual_seed(0)
    pcfg = build(PolicyConfig, {"action_dim": 7, "proprio_dim": 8, "channels": [8, 16], "hidden": 32})
    tokenizer = ActionTokenizer(-np.ones(7, np.float32), np.ones(7, np.float32), pcfg.bins)
    return POLICIES.get(pcfg.type)(pcfg, tokenizer, np.zeros(8), np.ones(8))


def test_libero_demonstrations_come_from_a_dataset_that_names_tasks_by_instruction(tmp_path):
    """A LeRobot v3 dataset of LIBERO from elsewhere names episodes by instruction, not by our task names: 1-shot
    SFT of a LIBERO-Goal target finds its demonstration by the instruction."""
    from rawdream.data.collect import episode_features
    from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotWriter
    from rawdream.data.video import VideoConfig
    from rawdream.policy.train import TrainPolicyConfig, save_policy, train_policy

    rng = np.random.default_rng(0)
    feats = episode_features("libero", 64, 20.0, VideoConfig(), 1)
    writer = LeRobotWriter(
        tmp_path / "libero_demos", fps=20.0, features=feats, robot_type="panda", manifest={}
    )
    for text in ("put the bowl on the plate", "turn on the stove"):
        n = 12
        writer.add_episode(
            {DEFAULT_IMAGE_KEY: rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)},
            {
                "observation.state": rng.normal(size=(n, 8)).astype(np.float32),
                "observation.environment_state": np.zeros((n, 6), np.float32),
                "action": rng.uniform(-1, 1, (n, 7)).astype(np.float32),
                "next.reward": np.zeros(n, np.float32),
                "next.success": np.zeros(n, bool),
                "next.done": np.arange(n) == n - 1,
            },
            task=text,
        )
    writer.close()
    save_policy(_untrained_libero_policy(), tmp_path / "base", {"stage": "base"})
    cfg = build(
        TrainPolicyConfig,
        {"stage": "sft", "split": {"name": "libero-90-to-goal"}, "tasks": [TASK], "steps": 2, "batch": 4},
    )
    info = train_policy(
        cfg, tmp_path / "libero_demos", tmp_path / "sft", init=tmp_path / "base", progress=False
    )
    assert info["tasks"] == [TASK] and [u["episode"] for u in info["target_trajectories"]] == [1]
    # LIBERO-90 has "turn on the stove" in other scenes: the match says so (a mixed dataset is the user's to check)
    used = info["target_trajectories"][0]
    assert (
        used["matched_by"] == "instruction"
        and "KITCHEN_SCENE3_turn_on_the_stove" in used["instruction_also_names"]
    )


@pytest.mark.slow
def test_evaluation_harness_runs_one_short_libero_episode(tmp_path):
    from rawdream.eval.success import EvalPolicyConfig, evaluate_policy

    policy = _untrained_libero_policy()
    cfg = build(
        EvalPolicyConfig,
        {
            "split": {"name": "libero-90-to-goal"},
            "env": {"backend": "libero", "max_steps": 8},
            "tasks": [TASK],
            "episodes": 1,
            "workers": 0,
            "videos": 1,
        },
    )
    report = evaluate_policy(policy, cfg, tmp_path, progress=False)
    row = report["tasks"][TASK]
    assert row["episodes"] == 1 and row["success_rate"] == 0.0  # a random policy does not turn the stove on
    assert list(tmp_path.rglob("*.mp4"))


@pytest.mark.slow
def test_task_free_play_in_a_libero_scene_is_a_lerobot_dataset(tmp_path):
    from rawdream.config import resolve
    from rawdream.data.collect import CollectConfig, collect
    from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotDataset

    cfg = resolve(
        CollectConfig,
        "collect_play",
        "libero",
        {"tasks": [TASK], "episodes_per_task": 2, "max_steps": 16, "env.max_steps": 16, "workers": 0},
    )
    collect(cfg, tmp_path / "play", progress=False)
    ds = LeRobotDataset(tmp_path / "play")
    assert ds.num_episodes == 2 and ds.manifest["env"] == "libero"
    assert ds.manifest["task_free_scenes"] == [TASK]  # a target scene: task-free behaviour, labels withheld
    assert ds.features["action"]["shape"] == [8, 7] and ds.features["observation.state"]["shape"] == [8]
    assert ds.features["observation.environment_state"]["shape"] == [6] and ds.fps == 20.0 / 8
    actions = ds.column("action")
    assert np.abs(actions[..., :3]).max() > 0.3 and not actions[..., 3:6].any()  # xyz moves, rotation still
    assert set(ds.episodes["rawdream/behaviour"]) <= {"random", "poke", "interact"}

    # the play trains a world model that imagines LIBERO's 7-D action chunks from a real first frame
    import torch

    from rawdream.world_model.train import PretrainWMConfig, load_world_model, pretrain_wm

    pretrain_wm(
        resolve(PretrainWMConfig, "pretrain_wm", "tiny"), tmp_path / "play", tmp_path / "wm", progress=False
    )
    wm = load_world_model(tmp_path / "wm")
    assert (wm.cfg.dynamics.action_dim, wm.cfg.dynamics.proprio_dim) == (7, 8)
    lo, _ = ds.episode_bounds(0)
    first = torch.from_numpy(np.asarray(ds.episode(0).frames[DEFAULT_IMAGE_KEY][:1]))
    proprio = torch.from_numpy(ds.column("observation.state")[lo : lo + 1])
    out = wm.rollout(first, proprio, torch.from_numpy(actions[lo : lo + 1][None]), seeds=[0])
    assert out["frames"].shape == (1, 2, 64, 64, 3)
