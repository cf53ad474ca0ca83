"""The benchmark split, the target-task guard, and the config system (presets, dotted overrides, errors)."""

from dataclasses import dataclass, field

import pytest

from rawdream.config import ConfigError, build, parse_overrides, resolve
from rawdream.data.collect import CollectConfig, make_specs
from rawdream.splits import (
    SplitConfig,
    TargetTaskLeakError,
    check_task_agnostic,
    resolve_split,
    task_free_target_scenes,
)


def test_guard_refuses_target_data_unless_variant_named():
    split = resolve_split()
    clean = {"tasks": ["reach", "drawer-close"]}
    dirty = {"tasks": ["reach", "drawer-open-v3"]}
    assert check_task_agnostic(clean, split, "world model") == []
    with pytest.raises(TargetTaskLeakError, match="drawer-open.*--variant co-train"):
        check_task_agnostic(dirty, split, "world model")
    assert check_task_agnostic(dirty, split, "world model", variant="co-train") == ["drawer-open"]
    with pytest.raises(TargetTaskLeakError):
        check_task_agnostic(dirty, split, "world model", variant="typo")
    # foreign datasets name tasks by instruction text
    with pytest.raises(TargetTaskLeakError, match="door-close"):
        check_task_agnostic({"tasks": ["Shut the door"]}, split, "judge")


def test_custom_split_is_honoured_by_collection():
    split = resolve_split(SplitConfig(targets=["reach", "push"]))
    assert (
        split.targets == ("reach", "push") and "drawer-open" in split.pretrain and len(split.pretrain) == 48
    )
    cfg = build(
        CollectConfig,
        {"split": {"targets": ["reach", "push"]}, "episodes_per_task": 1, "scenes": "pretraining"},
    )
    tasks = {s.task for s in make_specs(cfg)}
    assert "reach" not in tasks and "drawer-open" in tasks and len(tasks) == 48
    with pytest.raises(ValueError, match="unknown split"):
        resolve_split(SplitConfig(name="libero-goal"))


def test_second_named_split_holds_out_five_of_the_first_splits_pretraining_tasks():
    first, second = resolve_split(), resolve_split(SplitConfig(name="metaworld-heldout5-b"))
    assert len(second.targets) == 5 and set(second.targets) <= set(first.pretrain)
    assert set(first.targets) <= set(second.pretrain) and len(second.pretrain) == 45
    with pytest.raises(TargetTaskLeakError, match=second.targets[0]):
        check_task_agnostic({"tasks": [second.targets[0], "reach"]}, second, "judge")


def test_workspace_play_visits_target_scenes_task_free_and_unlabelled():
    """The default play protocol covers every scene; in a target's scene only task-free behaviours run, labels
    withheld; the pretraining scenes get exactly the episodes of the strict protocol (its numbers unchanged)."""
    common = {"episodes_per_task": 40}
    workspace = make_specs(build(CollectConfig, common))
    strict = make_specs(build(CollectConfig, {**common, "scenes": "pretraining"}))
    split = resolve_split()
    assert {s.task for s in workspace} == set(split.pretrain) | set(split.targets)
    assert {s.task for s in strict} == set(split.pretrain)
    in_targets = [s for s in workspace if s.task in split.targets]
    assert in_targets and all(
        s.behaviour in ("random", "poke", "interact") and not s.labels for s in in_targets
    )
    assert {s.behaviour for s in in_targets} == {"random", "poke", "interact"}
    assert [s for s in workspace if s.task not in split.targets] == strict
    # demos and labeled data never touch target scenes unless asked by name
    assert build(CollectConfig, {"kind": "labeled"}).task_free_scenes() == []
    with pytest.raises(ValueError, match="scenes='everywhere' is not one of workspace, pretraining"):
        build(CollectConfig, {"scenes": "everywhere"})
    with pytest.raises(ValueError, match="free_mix"):
        build(CollectConfig, {"free_mix": {"random": 0.9}})


def test_guard_trusts_task_free_play_only_where_every_episode_says_so():
    split = resolve_split()
    manifest = {
        "kind": "play",
        "instructions_are_labels": False,
        "tasks": ["drawer-open", "reach"],
        "task_free_scenes": ["drawer-open"],
    }
    eps = {
        "rawdream/env_task": ["reach", "drawer-open", "drawer-open"],
        "rawdream/behaviour": ["expert", "poke", "interact"],
        "rawdream/labelled": [True, False, False],
    }
    free = task_free_target_scenes(manifest, split, eps)
    assert free == ["drawer-open"]
    assert check_task_agnostic(manifest, split, "world model", task_free_play=free) == []
    with pytest.raises(TargetTaskLeakError):  # the judge and policies never get the allowance
        check_task_agnostic(manifest, split, "generalist judge")
    # one expert episode, or one labelled episode, in the target's scene and the claim is void
    for key, value in (("rawdream/behaviour", "expert"), ("rawdream/labelled", True)):
        bad = {**eps, key: [*eps[key][:2], value]}
        assert task_free_target_scenes(manifest, split, bad) == []
    assert task_free_target_scenes({**manifest, "instructions_are_labels": True}, split, eps) == []
    assert task_free_target_scenes(manifest, split, None) == []


def test_overrides_and_presets():
    assert parse_overrides(["--a.b=3", "--c", "x", "--flag", "--tasks=reach,push"]) == {
        "a.b": 3,
        "c": "x",
        "flag": True,
        "tasks": "reach,push",
    }
    cfg = resolve(CollectConfig, "collect_demos", "tiny", {"env.image_size": 96, "tasks": "reach,push"})
    assert cfg.kind == "demos" and cfg.frame_stride == 1 and cfg.env.image_size == 96
    assert cfg.tasks == ["reach", "push"] and cfg.episodes_per_task == 1


def test_config_errors_name_the_key_and_fix():
    with pytest.raises(ConfigError, match="did you mean --episodes_per_task"):
        build(CollectConfig, {"episodes_per_tsk": 3})
    with pytest.raises(ConfigError, match="env.image_size must be an integer"):
        build(CollectConfig, {"env": {"image_size": "big"}})
    with pytest.raises(ConfigError, match="unknown preset 'tny'.*did you mean 'tiny'"):
        resolve(CollectConfig, "collect_play", "tny")
    with pytest.raises(ValueError, match="multiple of frame_stride"):
        build(CollectConfig, {"max_steps": 30, "frame_stride": 8})


@dataclass
class _Inner:
    x: int = 1


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    names: list[str] = field(default_factory=list)
    rate: float = 0.5


def test_nested_build_coerces_types():
    cfg = build(_Outer, {"inner": {"x": 4}, "names": "a,b", "rate": 2})
    assert cfg.inner.x == 4 and cfg.names == ["a", "b"] and cfg.rate == 2.0
    # "--lr=3e-4" reaches the config as the string "3e-4" (YAML 1.1 wants a dot in a float)
    assert build(_Outer, parse_overrides(["--rate=3e-4"])).rate == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match="rate must be a number"):
        build(_Outer, {"rate": "fast"})


def test_stable_seed_is_the_same_in_every_process():
    """Sampled evaluation seeds its generators from (task, episode): str hashes are salted per interpreter."""
    import os
    import subprocess
    import sys

    code = "from rawdream.seeds import stable_seed; print(stable_seed(('drawer-open', 3), 0))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": h},
        ).stdout.strip()
        for h in ("1", "2")
    }
    assert len(outs) == 1 and outs.pop().isdigit()


def test_device_resolution_and_clear_errors():
    import torch

    from rawdream.training import resolve_device, resolve_precision

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert resolve_precision("fp32", "cuda") == "fp32" and resolve_precision("auto", "cuda") == "bf16"
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp16")


def test_collect_refuses_env_settings_it_would_override():
    from rawdream.config import build
    from rawdream.data.collect import CollectConfig

    with pytest.raises(ValueError, match=r"--env.max_steps=40 would be ignored: pass --max_steps=40"):
        build(CollectConfig, {"env": {"max_steps": 40}})
    with pytest.raises(ValueError, match=r"--env.end_on_success=False would be ignored"):
        build(CollectConfig, {"end_on_success": True, "env": {"end_on_success": False}})
    ok = build(CollectConfig, {"max_steps": 40, "env": {"max_steps": 40}})
    assert ok.max_steps == 40


def test_configs_whose_episodes_are_a_horizon_refuse_an_env_step_limit():
    """RL-shaped rollouts are --horizon chunks long: an --env.max_steps there would be overridden, so it is refused
    with the flag to use; dream keeps --env.max_steps, the length of its real-simulator evaluations."""
    from rawdream.data.policy_rollouts import PolicyRolloutsConfig
    from rawdream.eval.judge_accuracy import EvalJudgeConfig
    from rawdream.rl.dream import DreamConfig

    with pytest.raises(ValueError, match="set --horizon instead"):
        build(PolicyRolloutsConfig, {"env": {"max_steps": 64}})
    with pytest.raises(ValueError, match="set --on_policy.horizon instead"):
        build(EvalJudgeConfig, {"on_policy": {"env": {"max_steps": 64}}})
    assert build(DreamConfig, {"env": {"max_steps": 64}}).env.max_steps == 64


def test_run_reads_its_trained_judge_through_the_readout_unless_a_section_sets_its_own(tmp_path):
    from rawdream.pipeline import MainJob, preflight, resolve_run
    from rawdream.splits import resolve_split

    cfg = resolve_run("tiny", {"dream.judge.object_gate": 0.3})
    job = MainJob(cfg, tmp_path / "run", False, print)
    dream, evaluation = job._judge_section(cfg.dream.judge), job._judge_section(cfg.eval_judge.judge)
    assert dream["object_gate"] == 0.3 and evaluation["object_gate"] == cfg.judge_readout.object_gate == 0.5
    assert dream["calibration"] == evaluation["calibration"] == "demo"
    assert dream["path"] == str(tmp_path / "run" / "judge") and dream["reference"].endswith("target_demos")
    # a served VLM judge has no object gate: the read-out leaves it as configured
    served = resolve_run(
        "tiny", {"dream.judge.backend": "openai", "dream.judge.url": "http://127.0.0.1:9/v1"}
    )
    section = MainJob(served, tmp_path / "run", False, print)._judge_section(served.dream.judge)
    assert "object_gate" not in section and section["url"] == "http://127.0.0.1:9/v1"
    # a read-out the trained judge cannot give is refused before any stage runs
    for overrides, fix in (
        ({"judge.object_loss": 0.0}, "--judge.object_loss=1"),
        ({"judge.model.reference": False}, "--judge.model.reference=false"),
    ):
        bad = resolve_run("tiny", overrides)
        with pytest.raises(ValueError, match=fix):
            preflight(bad, resolve_split(bad.split))
    with pytest.raises(ConfigError, match="judge_readout"):
        resolve_run("tiny", {"judge_readout.object_gate": 2.0})


def test_the_run_fine_tunes_the_world_model_it_pre_trained():
    from rawdream.pipeline import resolve_run

    cfg = resolve_run("tiny", {"wm.seed": 7, "wm.model.dynamics.context": 3, "wm.dyn_batch": 4})
    ft = cfg.wm_finetune
    # the pre-training's shape, data windows, seed and validation episodes; its own steps and training noise
    assert (ft.seed, ft.model.dynamics.context, ft.dyn_batch, ft.val_fraction) == (
        7,
        3,
        4,
        cfg.wm.val_fraction,
    )
    assert (
        ft.dyn_steps == 10
        and ft.model.flow.train_proprio_noise == 0.5 != cfg.wm.model.flow.train_proprio_noise
    )
    # the autoencoder is kept: the pre-training's weighting of it does not apply
    assert cfg.wm.ae_foreground_weight == 10.0 and ft.ae_foreground_weight == 0.0
    quick = resolve_run("quick")
    assert (quick.wm.ae_steps, quick.wm.dyn_steps, quick.wm_finetune.dyn_steps) == (3000, 8000, 3000)
    # the base the world model's gain carries from: the default preset's 20 demos per task and 5,000 steps
    assert (quick.demos.episodes_per_task, quick.base.steps) == (20, 5000)
    assert resolve_run("default").wm_finetune.dyn_steps == 0  # no fine-tune: stage wm is the pre-training
