"""``rawdream run``: the whole RAW-Dream chain on the embedded default, stage after stage.

collect (target demo, play, demos, labeled) -> base policy -> 1-shot SFT -> the base policy's rollouts -> pretrain
WM (and train it on: wm_finetune) -> the base policy's closed-loop imagination -> judge and its task-blind control
(with --judge_candidates=K: K-1 more judge seeds and the RL check on pretraining tasks that picks one; with
--judge_check.per_target=true the picked judge is also checked on each target's scene family) -> evaluate
WM, judges, base and SFT -> dream (RL in imagination) per target -> evaluate -> report.

Each stage writes its outputs into its own folder of the run directory, and ``.stages/<stage>.json`` records the
content hash of its resolved config and of its inputs' hashes. A stage is skipped when that record matches, and
rebuilt when its config or an input changed; stages that checkpoint (training, collection) resume where a killed
run stopped. One status line per stage; a summary table at the end.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rawdream.config import (
    ConfigError,
    build,
    load_preset,
    merge_dicts,
    nest_overrides,
    presets_file,
    save_config,
    to_dict,
)
from rawdream.data.collect import CollectConfig, collect
from rawdream.data.policy_rollouts import PolicyRolloutsConfig, collect_policy_rollouts
from rawdream.envs.base import EnvConfig
from rawdream.envs.tasks import catalogue
from rawdream.eval.judge_accuracy import EvalJudgeConfig, evaluate_judges
from rawdream.eval.success import EvalPolicyConfig, evaluate_policy
from rawdream.eval.wm_fidelity import EvalWMConfig, evaluate_world_model
from rawdream.experiment.judge_check import JudgeCheckConfig, family_tasks, family_union, run_judge_check
from rawdream.io import atomic_write_json, read_json, redact_url
from rawdream.layout import RunLayout
from rawdream.policy.train import TrainPolicyConfig, load_policy, train_policy
from rawdream.reward.base import judge_config
from rawdream.reward.generalist import TrainJudgeConfig, train_judge
from rawdream.rl.dream import DreamConfig, dream
from rawdream.splits import SplitConfig, resolve_split
from rawdream.world_model.train import PretrainWMConfig, pretrain_wm

# section of the run config -> the stage preset it starts from
SECTIONS = {
    "play": "collect_play",
    "demos": "collect_demos",
    "target_demos": "collect_demos",
    "labeled": "collect_labeled",
    "policy_rollouts": "collect_policy",
    "imagined_rollouts": "collect_policy",
    "wm": "pretrain_wm",
    "wm_finetune": "pretrain_wm",
    "judge": "train_judge",
    "base": "train_policy_base",
    "sft": "train_policy_sft",
    "eval": "eval_policy",
    "dream": "dream",
    "eval_wm": "eval_wm",
    "eval_judge": "eval_judge",
    "judge_check": "judge_check",
}


#: judge settings added after the judge-check and eval/judge stages were recorded (their configs are plain dicts);
#: the check's own dream section holds the judge too (only keys added since: quieting a key a recorded hash already
#: holds would change that hash)
READOUT_ADDED_LATER = {
    "judge.object_fade_min": 0.0,
    **{
        f"{where}judge.{key}": default
        for where in ("", "check.dream.")
        for key, default in (("calibration_wm", ""), ("calibration_draws", 4))
    },
    # the check's RL runs: DNV's redraw sampler and what a flip does (stop 45)
    "check.dream.dnv_sampler": None,
    "check.dream.dnv_flip": "unreliable",
}


@dataclass
class JudgeReadout:
    """How the run reads the generalist judge it trained, for RL and eval/judge alike (docs/judges.md): the object
    gate and the demo-calibrated cut. A judge section that sets one of these itself (``--dream.judge.object_gate``)
    keeps its own; a served or local VLM judge has none of them and is left as configured."""

    RANGES: ClassVar[dict] = {"object_gate": "[0,1]", "calibration_cut": "[0,1)"}

    object_gate: float = 0.0
    calibration: str = "fixed"
    calibration_cut: float = 0.0

    def validate(self) -> None:
        if self.calibration not in ("fixed", "demo", "imagined"):
            raise ValueError(f"--judge_readout.calibration={self.calibration!r}: use fixed, demo or imagined")


def readout_settings(jcfg, readout: dict[str, Any]) -> dict[str, Any]:
    """The read-out settings (``JudgeReadout``'s keys) a generalist judge section takes: those it does not set
    itself (still at the generalist's defaults); a flag on the section wins."""
    default = judge_config("generalist")
    return {k: v for k, v in readout.items() if getattr(jcfg, k) == getattr(default, k)}


@dataclass
class RunConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    play: CollectConfig = field(default_factory=CollectConfig)
    demos: CollectConfig = field(default_factory=lambda: CollectConfig(kind="demos"))
    target_demos: CollectConfig = field(default_factory=lambda: CollectConfig(kind="demos"))
    labeled: CollectConfig = field(default_factory=lambda: CollectConfig(kind="labeled"))
    # the base policy's own rollouts on pretraining tasks: the judge learns what a learned policy's near-misses
    # look like (episodes_per_task=0: the judge sees scripted-expert variants only)
    policy_rollouts: PolicyRolloutsConfig = field(default_factory=PolicyRolloutsConfig)
    # the base policy acting inside the trained world model on pretraining tasks, labelled by a simulator replay
    # of its actions: the reward's input distribution in RL, which the judge must learn to read
    imagined_rollouts: PolicyRolloutsConfig = field(default_factory=PolicyRolloutsConfig)
    wm: PretrainWMConfig = field(default_factory=PretrainWMConfig)
    # a second phase of the world model's training (pretrain-wm --init): dyn_steps more dynamics steps on a fresh
    # schedule, with the flow's training settings it changes (dyn_steps=0: none, the pre-trained model is used)
    wm_finetune: PretrainWMConfig = field(default_factory=lambda: PretrainWMConfig(dyn_steps=0))
    judge: TrainJudgeConfig = field(default_factory=TrainJudgeConfig)
    base: TrainPolicyConfig = field(default_factory=TrainPolicyConfig)
    sft: TrainPolicyConfig = field(default_factory=lambda: TrainPolicyConfig(stage="sft"))
    eval: EvalPolicyConfig = field(default_factory=EvalPolicyConfig)
    dream: DreamConfig = field(default_factory=DreamConfig)
    eval_wm: EvalWMConfig = field(default_factory=EvalWMConfig)
    eval_judge: EvalJudgeConfig = field(default_factory=EvalJudgeConfig)
    dream_tasks: list[str] = field(default_factory=list)  # targets to run RL on (default: all targets)
    base_eval_episodes: int = 10  # per pretraining task: is the base policy competent? (0: skip)
    base_eval_tasks: list[str] = field(default_factory=list)  # default: every pretraining task
    report: bool = True
    judge_sees_policies: bool = (
        True  # train the judge on the base policy's rollouts too (data/policy_rollouts)
    )
    judge_sees_imagination: bool = True  # ... and on its closed-loop imagination (data/imagined_rollouts)
    judge_readout: JudgeReadout = field(default_factory=JudgeReadout)
    # judges of the same recipe trained with seeds judge.seed + 0..K-1; with K > 1 a short RL check on pretraining
    # tasks (judge_check, simulator-scored, no target data) picks the one the run's RL and eval/judge use: one
    # training seed decided RAW-Dream's outcome (docs/judges.md). 1: the one judge, no check. The check's RL is
    # the run's own --dream recipe and read-out at judge_check's size (tasks, iterations, layouts, episodes)
    judge_candidates: int = 1
    judge_check: JudgeCheckConfig = field(default_factory=JudgeCheckConfig)

    def validate(self) -> None:
        if self.judge_candidates < 1:
            raise ValueError(f"--judge_candidates={self.judge_candidates}: at least 1 (1: no judge check)")


def resolve_run(preset: str | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Each section starts from its stage's ``default`` preset (``tiny`` for the tiny run); the run preset and
    the command line overlay it; the run's split is every section's split."""
    preset = preset or "quick"
    data = load_preset("run", preset)
    if overrides:
        data = merge_dicts(data, nest_overrides(overrides))
    stage_preset = "tiny" if preset == "tiny" else "default"
    split = data.get("split") or {}
    # the split's simulator is every section's simulator (a LIBERO split runs in LIBERO), unless a section says
    backend = resolve_split(build(SplitConfig, split)).backend if split else None
    if backend and not catalogue(backend).experts:
        raise ConfigError(
            f"rawdream run collects scripted-expert demonstrations, which {backend} does not have; run its "
            f"stages with your own LeRobot v3 demonstrations instead (--data; docs/libero.md shows how for LIBERO)"
        )
    for section, stage in SECTIONS.items():
        base = load_preset(stage, stage_preset) if stage_preset in (presets_file().get(stage) or {}) else {}
        if section == "wm_finetune":
            # the fine-tune continues the pre-trained model: its shape, data windows, seed and validation episodes
            # are the pre-training's (resolved just before), and the keys it names change the rest; the
            # autoencoder is kept, so the pre-training's weighting of it does not apply
            base = {k: v for k, v in data["wm"].items() if k != "split"}
            base["ae_foreground_weight"] = 0.0
        sim = _simulator_overlay(_section_class(section), backend) if backend else {}
        data[section] = merge_dicts(
            merge_dicts(merge_dicts(base, sim), data.get(section) or {}), {"split": split} if split else {}
        )
    return build(RunConfig, data)


def _section_class(section: str) -> type:
    import typing

    return typing.get_type_hints(RunConfig)[section]


def _simulator_overlay(cls: type, backend: str) -> dict[str, Any]:
    """``{"env": {"backend": b}, "on_policy": {"env": {...}}}``: the simulator of every env section inside the
    config class ``cls``, at any depth."""
    import dataclasses
    import typing

    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if t is EnvConfig:
            out[f.name] = {"backend": backend}
        elif dataclasses.is_dataclass(t):
            sub = _simulator_overlay(t, backend)
            if sub:
                out[f.name] = sub
    return out


def _without(config: dict, path: list[str], default: Any) -> dict:
    """``config`` without the key at ``path`` where it holds ``default`` (a copy; the rest as it was)."""
    head, rest = path[0], path[1:]
    if head not in config:
        return config
    if rest:
        inner = config[head]
        return {**config, head: _without(inner, rest, default)} if isinstance(inner, dict) else config
    return {k: v for k, v in config.items() if k != head} if config[head] == default else config


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageResult:
    name: str
    seconds: float
    skipped: bool
    summary: Any = None


class Runner:
    def __init__(self, out: Path, progress: bool, log: Callable[[str], None]):
        self.out = out
        self.progress = progress
        self.log = log
        self.results: list[StageResult] = []
        self.hashes: dict[str, str] = {}

    def stage(
        self, name: str, cfg: Any, inputs: list[str], fn: Callable[[Path], Any], quiet: dict | None = None
    ) -> Any:
        """Run ``fn(stage_dir)`` unless its record in .stages holds the same config and input hashes."""
        d = self.out / name
        config = to_dict(cfg) if hasattr(cfg, "__dataclass_fields__") else cfg
        # keys added later, at their defaults, leave the stages recorded before them valid (HASH_QUIET: key -> default,
        # "section.key" for a key of a section; ``quiet`` for a stage whose config is a plain dict)
        for key, default in (getattr(cfg, "HASH_QUIET", {}) if quiet is None else quiet).items():
            config = _without(config, key.split("."), default)
        h = _hash({"config": config, "inputs": [self.hashes.get(i) for i in inputs]})
        book = self.out / ".stages"  # bookkeeping lives outside the stage's folder (a dataset must be alone)
        book.mkdir(exist_ok=True)
        meta = book / f"{name.replace('/', '__')}.json"
        if meta.exists() and read_json(meta).get("hash") == h:
            self.hashes[name] = h
            self.log(f"[run] {name:24s} up to date, skipped")
            self.results.append(StageResult(name, 0.0, True, read_json(meta).get("summary")))
            return read_json(meta).get("summary")
        pending = book / f"{name.replace('/', '__')}.pending"
        if meta.exists() or (pending.exists() and pending.read_text() != h):
            # config or inputs changed: the stage's folder is its own, rebuild it from scratch
            self.log(f"[run] {name:24s} changed since its last run: rebuilding")
            shutil.rmtree(d, ignore_errors=True)
            meta.unlink(missing_ok=True)
        pending.write_text(h)  # a killed stage with this hash resumes from its checkpoints
        self.log(f"[run] {name:24s} running -> {d}")
        t0 = time.time()
        summary = fn(d)
        dt = time.time() - t0
        atomic_write_json(meta, {"hash": h, "seconds": dt, "summary": summary})
        pending.unlink()
        self.hashes[name] = h
        self.results.append(StageResult(name, dt, False, summary))
        self.log(f"[run] {name:24s} done in {dt / 60:.1f} min")
        return summary


def checks_judges(cfg: RunConfig) -> bool:
    """Whether the run has a judge_check stage: candidates to pick among, or the per-target check."""
    return cfg.judge_candidates > 1 or cfg.judge_check.per_target


def check_config(cfg: RunConfig) -> JudgeCheckConfig:
    """The run's judge check: its judge_check section's size and tasks, the run's own --dream recipe."""
    return build(
        JudgeCheckConfig,
        {**to_dict(cfg.judge_check), "split": to_dict(cfg.split), "dream": to_dict(cfg.dream)},
    )


def preflight(cfg: RunConfig, split, log=print) -> None:
    """What the stages will need, checked before any of them starts: RL tasks that are targets of the split,
    demonstrations of exactly the split's targets, and any judge outside this process answering a real request."""
    from rawdream.envs.tasks import canonical_task
    from rawdream.reward.base import make_judge, probe_judge

    sft_tasks = [canonical_task(t) for t in cfg.sft.tasks] or list(split.targets)
    for task in cfg.dream_tasks or split.targets:
        if canonical_task(task) not in split.targets or canonical_task(task) not in sft_tasks:
            raise ValueError(
                f"dream_tasks names {task!r}, which is not a target of split {split.name!r} that the SFT policy "
                f"learns ({', '.join(sft_tasks)}); RL post-trains held-out targets only"
            )
    demo_tasks = set(cfg.target_demos.resolved_tasks())
    missing = [t for t in sft_tasks if t not in demo_tasks]
    if missing:
        raise ValueError(
            f"target_demos would collect no demonstration of {', '.join(missing)}, which the SFT stage needs; "
            f"leave --target_demos.tasks at 'targets' (or name every task of --sft.tasks)"
        )
    readout = cfg.judge_readout
    if readout.object_gate > 0 and cfg.judge.object_loss <= 0:
        raise ValueError(
            f"--judge_readout.object_gate={readout.object_gate} reads the judge's object head, which "
            f"--judge.object_loss={cfg.judge.object_loss} does not train; set --judge.object_loss=1 or "
            f"--judge_readout.object_gate=0"
        )
    if readout.calibration != "fixed" and not cfg.judge.model.reference:
        raise ValueError(
            f"--judge_readout.calibration={readout.calibration} places the threshold with the target's demonstration as reference, "
            "which --judge.model.reference=false does not see; set one of them back"
        )
    if checks_judges(cfg):
        flag = (
            f"--judge_candidates={cfg.judge_candidates}"
            if cfg.judge_candidates > 1
            else "--judge_check.per_target=true"
        )
        if cfg.dream.judge.backend != "generalist":
            raise ValueError(
                f"{flag} checks the generalist judges this run trains, but RL is rewarded by "
                f"--dream.judge.backend={cfg.dream.judge.backend}; drop {flag}"
            )
        check_config(cfg).check_tasks("--judge_check.tasks", judges=cfg.judge_candidates)
        demo_tasks = set(cfg.demos.resolved_tasks())
        family = family_tasks(split, cfg.dream_tasks or None) if cfg.judge_check.per_target else {}
        for flag, tasks in (
            ("--judge_check.tasks", cfg.judge_check.tasks),
            ("the targets' scene families (--judge_check.per_target)", family_union(family)),
        ):
            unseen = [t for t in tasks if canonical_task(t) not in demo_tasks]
            if unseen and cfg.judge.model.reference:
                raise ValueError(
                    f"{flag} {', '.join(unseen)}: no pretraining demonstration to show the judge as reference "
                    f"(--demos.tasks); check on tasks the demos cover"
                )
    for name, jcfg in (("dream", cfg.dream.judge), ("eval_judge", cfg.eval_judge.judge)):
        if jcfg.backend == "openai":
            log(f"[run] checking the {name} judge at {jcfg.url and redact_url(jcfg.url)} ...")
            probe_judge(make_judge(jcfg, purpose="evaluation"))
        elif jcfg.backend == "hf" and not Path(jcfg.path).exists():
            raise FileNotFoundError(
                f"--{name}.judge.path {jcfg.path!r} does not exist (a local VLM directory)"
            )


def run(cfg: RunConfig, out: str | Path, progress: bool = True, log=print) -> dict[str, Any]:
    """The main job: data -> policies -> world model and judges -> their evaluations -> RL per target -> the
    summary and report. Each stage is skipped when its config and inputs are unchanged (see ``Runner``)."""
    return MainJob(cfg, Path(out), progress, log).run()


class MainJob:
    """``rawdream run`` as one method per phase, in the order they run; each phase is a few ``Runner`` stages
    (name, config, the stages it reads, what it does)."""

    def __init__(self, cfg: RunConfig, out: Path, progress: bool, log: Callable[[str], None]):
        self.cfg, self.out, self.progress, self.log = cfg, out, progress, log
        self.L = RunLayout(out)
        self.split = resolve_split(cfg.split)
        self.r = Runner(out, progress, log)
        self.judge_data = [self.L / self.L.LABELED]
        # the trained judge, when it compares with a demonstration, sees the target task's one demo (the SFT demo)
        # as reference; a served or local VLM judge gets one only if its section names it (--dream.judge.reference)
        self.reference = {"reference": str(self.L / self.L.TARGET_DEMOS)} if cfg.judge.model.reference else {}
        # the judge RL and eval/judge read, and the stages its choice depends on (the check's pick, with K > 1)
        self.judge_dir = self.L / self.L.JUDGE
        self.judge_deps = [self.L.JUDGE]
        self.rl_skipped: str | None = (
            None  # why RL on the targets did not run (the judge check), if it did not
        )
        self.skipped_targets: dict[str, str] = {}  # target -> why RL on it did not run (the per-target check)

    def run(self) -> dict[str, Any]:
        cfg, L, split = self.cfg, self.L, self.split
        preflight(cfg, split, self.log)  # before anything is written
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out)
        self.log(
            f"[run] split {split.name}: targets {', '.join(split.targets)}; {len(split.pretrain)} pretraining "
            f"tasks"
        )
        self.collect_data()
        self.train_policies()
        self.train_world_model_and_judges()
        self.evaluate_world_model_and_judges()
        base_eval = self.evaluate_base_policy()
        eval_cfgs, before, after = self.dream_and_evaluate()
        summary = {
            "protocols": {
                p: {
                    "before": before[p],
                    "after": after[p],
                    "paired": paired_results(L, list(after[p]), p),
                    # the run's outcome over every target it decided on: RL's policy where RL ran, the SFT policy
                    # where the per-target check skipped RL (unchanged episodes), one paired test
                    "pooled": None
                    if self.rl_skipped
                    else pooled_results(L, [*after[p], *self.skipped_targets], list(after[p]), p),
                    "episodes": eval_cfgs[p].episodes,
                }
                for p in eval_cfgs
            },
            "base_on_pretraining_tasks": base_eval,
            "stages": [s.__dict__ for s in self.r.results],
            "guarantee": task_agnostic_table(L, self.judge_dir),
            "play_protocol": play_protocol(L),
            "judge_check": read_json(L / L.JUDGE_CHECK / "judge_check.json") if checks_judges(cfg) else None,
            "rl_skipped": self.rl_skipped,
            # target -> why RL did not run on it: every target RL was to run on when the whole run abstained
            "rl_skipped_targets": (
                dict.fromkeys(cfg.dream_tasks or split.targets, "judge check: " + self.rl_skipped)
                if self.rl_skipped
                else self.skipped_targets
            ),
        }
        atomic_write_json(L.summary, summary)
        if cfg.report:
            from rawdream.report.html import write_report

            self.log(f"[run] report: {write_report(self.out)}")
        return summary

    # -- phases -----------------------------------------------------------------------------------------------
    def collect_data(self) -> None:
        cfg, L = self.cfg, self.L
        # the target demonstrations first: a target the scripted expert cannot demonstrate stops the run in a
        # minute (collect raises, naming the task), not after the long stages
        for name, sub in (
            (L.TARGET_DEMOS, cfg.target_demos),
            (L.PLAY, cfg.play),
            (L.DEMOS, cfg.demos),
            (L.LABELED, cfg.labeled),
        ):
            self.r.stage(name, sub, [], lambda d, sub=sub: self._collect(sub, d))

    def _collect(self, sub: CollectConfig, d: Path) -> dict[str, Any]:
        s = collect(sub, d, progress=self.progress)
        return {
            "episodes": sum(int(v["episodes"]) for v in s.per_task.values()),
            "frames": sum(int(v["frames"]) for v in s.per_task.values()),
            "tasks": sorted(s.per_task),
        }

    def train_policies(self) -> None:
        """The policies before the world model and judges: they need only the demos, and a target without a
        usable demo shows here, not after the long stages."""
        cfg, L, progress, log = self.cfg, self.L, self.progress, self.log

        def base_fn(d):
            return {"tasks": train_policy(cfg.base, L / L.DEMOS, d, progress=progress, log_fn=log)["tasks"]}

        def sft_fn(d):
            info = train_policy(
                cfg.sft, L / L.TARGET_DEMOS, d, init=L / L.POLICY_BASE, progress=progress, log_fn=log
            )
            return {"tasks": info["tasks"], "target_trajectories": info["target_trajectories"]}

        self.r.stage(L.POLICY_BASE, cfg.base, [L.DEMOS], base_fn)
        self.r.stage(L.POLICY_SFT, cfg.sft, [L.TARGET_DEMOS, L.POLICY_BASE], sft_fn)

    def train_world_model_and_judges(self) -> None:
        cfg, L, progress, log = self.cfg, self.L, self.progress, self.log
        if cfg.judge_sees_policies:

            def rollouts_fn(d):
                rep = collect_policy_rollouts(cfg.policy_rollouts, L / L.POLICY_BASE, d, progress=progress)
                return {"episodes": rep["episodes"], "mean_success_rate": rep["mean_success_rate"]}

            self.r.stage(L.POLICY_ROLLOUTS, cfg.policy_rollouts, [L.POLICY_BASE], rollouts_fn)
            self.judge_data.append(L / L.POLICY_ROLLOUTS)

        def wm_fn(wcfg, init=None):
            def fn(d):
                s = pretrain_wm(wcfg, L / L.PLAY, d, progress=progress, log_fn=log, init=init)
                return {
                    "variant": s["variant"],
                    "tasks": s["manifest"]["tasks"],
                    "reconstruction": s["autoencoder_reconstruction"],
                }

            return fn

        # pre-train, then train the dynamics on (the folder L.WM is the result either way)
        if cfg.wm_finetune.dyn_steps > 0:
            self.r.stage(L.WM_PRETRAIN, cfg.wm, [L.PLAY], wm_fn(cfg.wm))
            self.r.stage(
                L.WM, cfg.wm_finetune, [L.PLAY, L.WM_PRETRAIN], wm_fn(cfg.wm_finetune, L / L.WM_PRETRAIN)
            )
        else:
            self.r.stage(L.WM, cfg.wm, [L.PLAY], wm_fn(cfg.wm))
        judge_deps = [L.LABELED, L.WM, L.DEMOS] + ([L.POLICY_ROLLOUTS] if cfg.judge_sees_policies else [])
        if cfg.judge_sees_imagination:

            def imagined_fn(d):
                rep = collect_policy_rollouts(
                    cfg.imagined_rollouts, L / L.POLICY_BASE, d, progress=progress, wm_path=L / L.WM
                )
                return {"episodes": rep["episodes"], "mean_success_rate": rep["mean_success_rate"]}

            self.r.stage(L.IMAGINED_ROLLOUTS, cfg.imagined_rollouts, [L.POLICY_BASE, L.WM], imagined_fn)
            self.judge_data.append(L / L.IMAGINED_ROLLOUTS)
            judge_deps.append(L.IMAGINED_ROLLOUTS)
        self.r.stage(L.JUDGE, cfg.judge, judge_deps, lambda d: self._judge(cfg.judge, d))
        # the task-blind control: trained the same way with the instruction and the reference hidden; it must do
        # clearly worse
        blind_cfg = build(TrainJudgeConfig, merge_dicts(to_dict(cfg.judge), {"model": {"blind": True}}))
        self.r.stage(L.JUDGE_BLIND, blind_cfg, judge_deps, lambda d: self._judge(blind_cfg, d))
        if checks_judges(cfg):
            self.check_judges(judge_deps)

    def check_judges(self, judge_deps: list[str]) -> None:
        """More judges of the run's recipe (other training seeds), then RL against each on pretraining tasks in
        the world model, scored by the simulator: the run goes on with the judge whose reward RL could follow."""
        cfg, L = self.cfg, self.L
        names = [L.JUDGE]
        for k in range(1, cfg.judge_candidates):
            name = f"{L.JUDGE_CANDIDATES}/seed{cfg.judge.seed + k}"
            jcfg = build(TrainJudgeConfig, merge_dicts(to_dict(cfg.judge), {"seed": cfg.judge.seed + k}))
            self.r.stage(name, jcfg, judge_deps, lambda d, c=jcfg: self._judge(c, d))
            names.append(name)
        # RL as the targets' RL runs (the run's dream recipe) and reads its judge (its read-out), with a
        # pretraining demonstration of the check task as reference
        check_cfg = check_config(cfg)
        section = to_dict(cfg.dream.judge)
        section.update(readout_settings(cfg.dream.judge, to_dict(cfg.judge_readout)))
        if cfg.judge.model.reference:
            section["reference"] = str(L / L.DEMOS)

        def check_fn(d):
            rep = run_judge_check(
                check_cfg,
                {n: L / n for n in names},
                section,
                L / L.POLICY_BASE,
                L / L.WM,
                d,
                progress=self.progress,
                log=self.log,
                targets=cfg.dream_tasks or None,
            )
            self.log("[run] judge check:\n" + (d / "judge_check.md").read_text())
            return {
                "selected": rep["selected"],
                "selected_gains": rep["selected_gains"],
                "scores": {r["judge"]: r["score"] for r in rep["rows"]},
                "tasks": rep["tasks"],
                "targets": {t: {"rl": v["rl"], "why": v["why"]} for t, v in rep.get("targets", {}).items()},
                # the last hardening round's folder in this stage (its judge/ is the one the targets' RL reads)
                "hardened": rep["hardening"][-1]["name"] if rep.get("hardening") else None,
            }

        picked = self.r.stage(
            L.JUDGE_CHECK,
            # abstain decides what follows the check, not the check: toggling it must not rerun the check
            {
                # (per_target only when on: the runs before it existed keep their hash)
                "check": {
                    k: v
                    for k, v in to_dict(check_cfg).items()
                    if k != "abstain"
                    and not (k == "per_target" and not v)
                    and not (k in ("harden_rounds", "harden_episodes") and not check_cfg.harden_rounds)
                },
                "judge": section,
                # the targets whose scene families the per-target check runs on
                **({"targets": cfg.dream_tasks or list(self.split.targets)} if check_cfg.per_target else {}),
            },
            [*names, L.WM, L.POLICY_BASE, L.DEMOS],
            check_fn,
            quiet=READOUT_ADDED_LATER,
        )
        # the later stages depend on the pick alone: another check that picks the same judge reruns nothing
        self.judge_dir = L / picked["selected"]
        self.judge_deps = [picked["selected"]]
        if picked.get("hardened"):  # the per-target check hardened the pick: the targets read its last round
            self.judge_dir = L / L.JUDGE_CHECK / picked["hardened"] / "judge"
            self.judge_deps = [L.JUDGE_CHECK]
        if cfg.judge_check.abstain:
            self.skipped_targets = {t: v["why"] for t, v in picked.get("targets", {}).items() if not v["rl"]}
        if cfg.judge_check.abstain and picked["tasks"] and not picked["selected_gains"]:
            self.rl_skipped = (
                "RL against no judge candidate raised real success on the check tasks "
                f"({', '.join(picked['tasks'])}): the SFT policy stands (--judge_check.abstain=false runs RL with "
                f"the least harmful, {picked['selected']})"
            )

    def _judge_section(self, jcfg) -> dict[str, Any]:
        """A judge section as the stages get it: a generalist is the one this run trained (with the target demo as
        reference when it compares with one), read as ``judge_readout`` says where the section does not set its
        own; another backend (a served or local VLM) is left as configured."""
        section = to_dict(jcfg)
        if jcfg.backend == "generalist":
            readout = readout_settings(jcfg, to_dict(self.cfg.judge_readout))
            section.update({"path": str(self.judge_dir), **self.reference, **readout})
        return section

    def _judge(self, jcfg: TrainJudgeConfig, d: Path) -> dict[str, Any]:
        L = self.L
        info = train_judge(
            jcfg,
            self.judge_data,
            d,
            wm_path=L / L.WM,
            progress=self.progress,
            log_fn=self.log,
            references=L / L.DEMOS,
        )
        return {"tasks": info["trained_on_tasks"], "validation_auroc": info["validation"]["auroc"]}

    def evaluate_world_model_and_judges(self) -> None:
        cfg, L, progress = self.cfg, self.L, self.progress

        def eval_wm_fn(d):
            from rawdream.world_model.train import load_world_model

            rep = evaluate_world_model(load_world_model(L / L.WM), cfg.eval_wm, d, progress=progress)
            return {
                g: {"psnr": row["psnr"], "psnr_copy": row["psnr_copy"]} for g, row in rep["groups"].items()
            }

        def eval_judge_fn(d):
            jcfg = build(
                EvalJudgeConfig,
                {
                    **to_dict(cfg.eval_judge),
                    "judge": self._judge_section(cfg.eval_judge.judge),
                    "blind_path": str(L / L.JUDGE_BLIND),
                },
            )
            # with the SFT policy: its own rollouts, real vs imagined - the reward RL in imagination will see
            rep = evaluate_judges(jcfg, d, wm_path=L / L.WM, progress=progress, policy_path=L / L.POLICY_SFT)
            on_policy = {
                t: {
                    "real_success_rate": r["real_success_rate"],
                    "auroc_real": r["judge_on_real"]["auroc"],
                    "auroc_imagined": r["judge_on_imagined"]["auroc"],
                    "kappa": r["verdict_agreement"]["kappa"],
                    "judged_success_rate": r["judged_success_rate"],
                }
                for t, r in rep.get("on_policy", {}).get("tasks", {}).items()
            }
            return {**{k: v["mean"] for k, v in rep["results"].items()}, "on_policy": on_policy}

        self.r.stage(L.EVAL_WM, cfg.eval_wm, [L.WM], eval_wm_fn)
        self.r.stage(
            L.EVAL_JUDGE,
            {**to_dict(cfg.eval_judge), "judge_readout": to_dict(cfg.judge_readout)},  # how the judge is read
            [*self.judge_deps, L.JUDGE_BLIND, L.WM, L.TARGET_DEMOS, L.POLICY_SFT],
            eval_judge_fn,
            quiet=READOUT_ADDED_LATER,
        )

    def evaluate_base_policy(self) -> dict[str, Any] | None:
        """Is the base policy competent on the pretraining tasks it learned? (0 episodes: skipped)"""
        cfg, L = self.cfg, self.L
        if cfg.base_eval_episodes <= 0:
            return None
        base_tasks = cfg.base_eval_tasks or list(self.split.pretrain)
        base_cfg = build(
            EvalPolicyConfig, {**to_dict(cfg.eval), "episodes": cfg.base_eval_episodes, "tasks": base_tasks}
        )

        def base_eval_fn(d):
            rep = evaluate_policy(load_policy(L / L.POLICY_BASE), base_cfg, d, progress=self.progress)
            return {
                "tasks": len(base_tasks),
                "mean_success_rate": rep["mean_success_rate"],
                "pooled": rep["pooled"],
            }

        return self.r.stage(L.EVAL_BASE, base_cfg, [L.POLICY_BASE], base_eval_fn)

    def _evaluate(self, policy_dir: Path, tasks: list[str], ecfg_base: EvalPolicyConfig, d: Path) -> dict:
        ecfg = build(EvalPolicyConfig, {**to_dict(ecfg_base), "tasks": tasks})
        rep = evaluate_policy(load_policy(policy_dir), ecfg, d, progress=self.progress)
        return {t: {k: v for k, v in m.items() if k != "episode_results"} for t, m in rep["tasks"].items()}

    def dream_and_evaluate(self) -> tuple[dict[str, EvalPolicyConfig], dict, dict]:
        """The SFT policy under both evaluation protocols, then RL on each target and the same evaluations."""
        cfg, L, split = self.cfg, self.L, self.split
        # the two evaluation protocols, never mixed: practised = the initial states RL trains from (LIBERO's and
        # the paper's protocol), new = seeds disjoint from every training use
        practised_cfg = build(
            EvalPolicyConfig,
            {
                **to_dict(cfg.eval),
                "layouts": "practised",
                "episodes": min(cfg.eval.episodes, cfg.dream.init_states),
            },
        )
        eval_cfgs = {"practised": practised_cfg, "new": cfg.eval}
        sft = L / L.POLICY_SFT
        before = {
            p: self.r.stage(
                L.eval_sft(p),
                c,
                [L.POLICY_SFT],
                lambda d, c=c: self._evaluate(sft, list(split.targets), c, d),
            )
            for p, c in eval_cfgs.items()
        }
        after: dict[str, dict] = {p: {} for p in eval_cfgs}
        if self.rl_skipped:
            self.log(f"[run] RL in imagination skipped: {self.rl_skipped}")
            return eval_cfgs, before, after
        for task in cfg.dream_tasks or split.targets:
            if task in self.skipped_targets:
                self.log(
                    f"[run] RL in imagination on {task} skipped, the SFT policy stands: {self.skipped_targets[task]}"
                )
                continue
            dcfg = build(
                DreamConfig,
                {
                    **to_dict(cfg.dream),
                    "task": task,
                    "judge": self._judge_section(cfg.dream.judge),
                },
            )
            self.r.stage(
                L.dream(task),
                dcfg,
                [L.POLICY_SFT, L.WM, *self.judge_deps, L.TARGET_DEMOS],
                lambda d, c=dcfg: self._dream(c, d),
            )
            for p, c in eval_cfgs.items():
                after[p].update(
                    self.r.stage(
                        L.eval_dream(task, p),
                        c,
                        [L.dream(task)],
                        lambda d, c=c, task=task: self._evaluate(L / L.dream(task), [task], c, d),
                    )
                )
        return eval_cfgs, before, after

    def _dream(self, dcfg: DreamConfig, d: Path) -> dict[str, Any]:
        L = self.L
        info = dream(dcfg, L / L.POLICY_SFT, d, wm_path=L / L.WM, progress=self.progress, log_fn=self.log)
        return {
            "task": dcfg.task,
            **{
                k: v
                for k, v in info.items()
                if k in ("seconds", "iterations", "dnv", "dnv_world_model", "judge")
            },
        }


def paired_results(run: RunLayout, tasks: list[str], protocol: str = "new") -> dict[str, Any]:
    """After RL minus 1-shot SFT on the same evaluation episodes, per task (see ``paired_difference``)."""
    from rawdream.eval.success import paired_difference

    sft = read_json(run / f"{run.eval_sft(protocol)}/eval.json")["tasks"]
    res = {}
    for task in tasks:
        after = read_json(run / f"{run.eval_dream(task, protocol)}/eval.json")["tasks"][task]
        res[task] = paired_difference(sft[task]["episode_results"], after["episode_results"])
    return res


def pooled_results(
    run: RunLayout, tasks: list[str], rl_tasks: list[str], protocol: str
) -> dict[str, Any] | None:
    """After minus 1-shot SFT pooled over ``tasks`` (episodes keyed by task), the policy after RL for
    ``rl_tasks`` and the SFT policy for the rest (RL skipped there); None with fewer than two tasks."""
    from rawdream.eval.success import paired_difference

    if len(tasks) < 2:
        return None
    sft = read_json(run / f"{run.eval_sft(protocol)}/eval.json")["tasks"]
    before, after = [], []
    for task in tasks:
        mine = sft[task]["episode_results"]
        if task in rl_tasks:
            mine = read_json(run / f"{run.eval_dream(task, protocol)}/eval.json")["tasks"][task][
                "episode_results"
            ]
        before += [{**e, "episode": (task, e["episode"])} for e in sft[task]["episode_results"]]
        after += [{**e, "episode": (task, e["episode"])} for e in mine]
    return {"tasks": list(tasks), **paired_difference(before, after)}


def task_agnostic_table(run: RunLayout, judge: Path | None = None) -> dict[str, Any]:
    """Which tasks each component was trained on, read back from the artefacts themselves (``judge``: the judge
    RL read - a picked candidate or a hardened judge - when not the run's own)."""
    rows = {}
    for name, p, key in [
        ("world model", run.world_model_info, ("manifest", "tasks")),
        ("judge", Path(judge) / "judge.json" if judge else run.judge_info, ("trained_on_tasks",)),
        ("base policy", run.policy_info(run.POLICY_BASE), ("tasks",)),
        ("SFT policy", run.policy_info(run.POLICY_SFT), ("tasks",)),
    ]:
        if p.exists():
            v: Any = read_json(p)
            meta = v
            for k in key:
                v = v.get(k, {}) if isinstance(v, dict) else {}
            if name == "world model":  # target scenes in workspace play: a row of their own, never hidden
                free = set(meta.get("play_protocol", {}).get("task_free_target_scenes", []))
                rows[name] = [t for t in v if t not in free]
                if free:
                    rows["world model (task-free play in target scenes)"] = sorted(free)
                continue
            rows[name] = v
    return rows


def play_protocol(run: RunLayout) -> dict[str, Any] | None:
    """The play protocol the run's world model was trained with (workspace | pretraining), from its own file."""
    p = run.world_model_info
    return read_json(p).get("play_protocol") if p.exists() else None


def _rate(m: dict[str, Any]) -> str:
    return f"{m['success_rate'] * 100:5.1f}% [{m['ci95'][0] * 100:4.1f},{m['ci95'][1] * 100:5.1f}]"


def _diff(d: dict[str, Any]) -> str:
    return f"{d['difference'] * 100:+5.1f} [{d['ci95'][0] * 100:+.1f},{d['ci95'][1] * 100:+.1f}]"


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        "",
        f"{'task':16s} {'layouts':>9s} {'1-shot SFT':>22s} {'after RL in imagination':>26s} "
        f"{'paired difference [95% CI]':>28s} {'McNemar p':>9s}",
    ]
    for layouts, prot in summary["protocols"].items():
        # the tasks RL ran on, and the targets where the judge check skipped it (the SFT policy stands there)
        skipped = summary.get("rl_skipped_targets") or {}
        tasks = [t for t in prot["before"] if t in prot["after"] or t in skipped]
        for task in tasks:
            after, b = prot["after"].get(task), prot["before"].get(task, {})
            d = prot.get("paired", {}).get(task)
            diff = _diff(d) if d else ""
            p = f"{d['mcnemar_p']:.3f}" if d else ""
            lines.append(
                f"{task:16s} {layouts:>9s} {_rate(b) if b else '':>22s} "
                f"{_rate(after) if after else ('skipped (check): SFT' if task in skipped else 'not run'):>26s} "
                f"{diff:>28s} {p:>9s}"
            )
        pooled = prot.get("pooled")
        if pooled:
            moved = f"+{pooled['gained']} / -{pooled['lost']} episodes"
            lines.append(
                f"{'all ' + str(len(pooled['tasks'])) + ' targets':16s} {layouts:>9s} {'':>22s} {moved:>26s} {_diff(pooled):>28s} "
                f"{pooled['mcnemar_p']:>9.3f}"
            )
    lines.append(
        "layouts: practised = the initial states RL trained from; new = evaluation seeds disjoint from all "
        "training"
    )
    base = summary.get("base_on_pretraining_tasks")
    if base:
        lo, hi = base["pooled"]["ci95"]
        lines.append(
            f"\nbase policy on {base['tasks']} pretraining tasks: "
            f"{base['mean_success_rate'] * 100:.1f}% [{lo * 100:.1f}, {hi * 100:.1f}] "
            f"({base['pooled']['episodes']} episodes)"
        )
    check = summary.get("judge_check")
    if check and check["tasks"]:
        scores = ", ".join(f"{r['judge']} {r['score']:+d}" for r in check["rows"])
        how = (
            "raised real success there"
            if check["selected_gains"]
            else "the least harmful; none raised real success"
        )
        lines.append(
            f"\njudge check (RL in imagination on {', '.join(check['tasks'])}, episodes gained - lost): {scores}; "
            f"picked {check['selected']} ({how})"
        )
    if summary.get("rl_skipped"):
        lines.append(f"RL in imagination skipped: {summary['rl_skipped']}")
    for r in (check or {}).get("hardening") or []:
        lines.append(
            f"judge hardening round {r['round']}: retrained on its check runs' exploits -> {r['judge']}"
        )
    for task, t in ((check or {}).get("targets") or {}).items():
        skipped = task in (summary.get("rl_skipped_targets") or {})
        went = "RL skipped, the SFT policy stands" if skipped else "RL went ahead"
        lines.append(f"per-target check, {task}: {t['why']}; {went}")
    lines.append("\ntime per stage:")
    for s in summary["stages"]:
        took = "skipped (up to date)" if s["skipped"] else f"{s['seconds'] / 60:.1f} min"
        lines.append(f"  {s['name']:26s} {took}")
    lines.append("\ntask-agnostic guarantee (tasks each component was trained on):")
    for comp, tasks in summary["guarantee"].items():
        lines.append(f"  {comp:12s} {len(tasks):3d} tasks: {', '.join(tasks)[:150]}")
    if summary.get("play_protocol"):
        lines.append(
            f"world model play protocol: {summary['play_protocol']['scenes']} (target scenes with task-free play, "
            f"labels withheld: {', '.join(summary['play_protocol']['task_free_target_scenes']) or 'none'})"
        )
    return "\n".join(lines)
