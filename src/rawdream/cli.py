"""``rawdream``: one entry point, a table of verbs.

Each verb is a row of :data:`VERBS`: its config class and ``presets.yaml`` stage, its entry point, and its
arguments - inputs (``--data``, ``--policy``, ``--out``: paths the entry point reads or writes) and aliases of
config keys (``--task drawer-open`` is ``--task=drawer-open``, ``--no-dnv`` is ``--dnv=false``). Every config key
is a flag too (``--env.image_size=96``); an alias never shadows a config section. One handler resolves the config
(dataclass defaults <- the preset <- aliases and flags), calls the entry point, and the resolved config is
written beside the outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rawdream import __version__
from rawdream.config import ConfigError, parse_overrides, preset_names, resolve
from rawdream.splits import DEFAULT_SPLIT


# ------------------------------------------------------------------------------------------------------------
# the table's two row types
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arg:
    """One command-line argument. With ``key`` it is an alias of that config key (a switch sets ``value``;
    ``also`` names other keys it sets); without, an input of the entry point."""

    flags: tuple[str, ...]
    help: str
    key: str | None = None
    value: Any = None
    also: dict[str, Any] = field(default_factory=dict)
    kw: dict[str, Any] = field(
        default_factory=dict
    )  # argparse: required, action, choices, type, default, ...

    @property
    def dest(self) -> str:
        return self.kw.get("dest") or self.flags[0].lstrip("-").replace("-", "_")

    def add_to(self, p: argparse.ArgumentParser) -> None:
        kw = {"help": self.help, **self.kw}
        if self.value is not None:
            kw.setdefault("action", "store_true")
        p.add_argument(*self.flags, **kw)

    def overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        if self.key is None:
            return {}
        got = getattr(args, self.dest, None)
        if got is None or got is False:  # not given
            return {}
        return {self.key: self.value if self.value is not None else got, **self.also}


def inp(*flags: str, help: str, **kw: Any) -> Arg:
    """An input of the entry point (a path, a switch of the verb itself)."""
    return Arg(flags, help, kw=kw)


def alias(*flags: str, key: str, help: str, value: Any = None, also: dict | None = None, **kw: Any) -> Arg:
    """An alias of config key ``key``."""
    return Arg(flags, help, key=key, value=value, also=also or {}, kw=kw)


# the results-table verbs' --json: the rows as the file under results/ that a README table quotes
TABLE_JSON = inp("--json", default=None, help="also write the rows as JSON here (e.g. results/....json)")


OUT = inp("--out", required=True, help="output directory; re-running resumes")
DATASET_OUT = inp("--out", required=True, help="dataset directory (LeRobot v3); re-running resumes")


@dataclass(frozen=True)
class Verb:
    name: str
    help: str
    run: Callable[[argparse.Namespace, Any], int]  # entry point: (inputs, resolved config) -> exit code
    config: str = ""  # "module:Class", imported when the verb runs; "" takes no config keys
    stage: str = ""  # its presets.yaml stage
    args: tuple[Arg, ...] = ()
    preset: str | None = "default"  # the default --preset (None: the verb has no --preset)
    ray: tuple[str, ...] | None = (
        None  # config sections --ray / --ray-address switch on (None: no such flags)
    )
    description: str | None = None
    epilog: str = ""
    # a config built otherwise than resolve(config, stage, preset, overrides) (the run's sections)
    resolver: Callable[[str | None, dict[str, Any]], Any] | None = None
    preset_of: Callable[[argparse.Namespace], str | None] | None = None  # a preset named by other switches
    kinds: tuple[Verb, ...] = ()  # sub-verbs (collect KIND, experiment NAME)
    kind_dest: str = ""
    kind_metavar: str = ""


def _handle(verb: Verb, args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """The one handler: aliases and flags -> the resolved config -> the entry point."""
    for a in verb.args:
        overrides = {**overrides, **a.overrides(args)}
    if verb.ray is not None and (args.ray or args.ray_address):
        for sec in verb.ray:  # --ray / --ray-address -> <section>.ray.enabled / .address
            prefix = f"{sec}." if sec else ""
            overrides[f"{prefix}ray.enabled"] = True
            if args.ray_address:
                overrides[f"{prefix}ray.address"] = args.ray_address
    if not (verb.config or verb.resolver):
        if overrides:
            raise ConfigError(
                f"`rawdream {verb.name}` takes no config keys; unexpected --{', --'.join(sorted(overrides))}"
            )
        return verb.run(args, None)
    preset = verb.preset_of(args) if verb.preset_of else getattr(args, "preset", None)
    if verb.resolver is not None:
        return verb.run(args, verb.resolver(preset, overrides))
    module, cls = verb.config.split(":")
    return verb.run(
        args, resolve(getattr(importlib.import_module(module), cls), verb.stage, preset, overrides)
    )


# ------------------------------------------------------------------------------------------------------------
# entry points: (inputs, resolved config) -> exit code; what each prints is what the user sees at the end
# ------------------------------------------------------------------------------------------------------------
def _saved(cfg: Any, out: str) -> None:
    from rawdream.config import save_config

    save_config(cfg, out)


def _run(args, cfg) -> int:
    from rawdream.layout import RunLayout
    from rawdream.pipeline import format_summary, run

    summary = run(cfg, args.out, progress=True)
    print(format_summary(summary))
    print(f"\nreport: {RunLayout(Path(args.out).resolve()).report}")
    return 0


def _report(args, _cfg) -> int:
    from rawdream.report.html import write_report

    print(f"report: {write_report(args.run_dir).resolve()}")
    return 0


def _collect(args, cfg) -> int:
    from rawdream.data.collect import collect

    summary = collect(cfg, args.out, progress=True)
    _saved(cfg, args.out)
    print(summary.table())
    print(f"dataset: {Path(args.out).resolve()}")
    return 0


def _collect_policy(args, cfg) -> int:
    from rawdream.data.policy_rollouts import collect_policy_rollouts

    rep = collect_policy_rollouts(cfg, args.policy, args.out, wm_path=args.wm)
    _saved(cfg, args.out)
    for task, rate in rep["success_rate"].items():
        print(f"{task:28s} success {rate:.2f}")
    print(
        f"{rep['episodes']} {'imagined ' if args.wm else ''}policy rollouts in {args.out} (mean success "
        f"{rep['mean_success_rate']:.2f}{', of the imagined actions replayed' if args.wm else ''}); "
        f"{rep['new_episodes']} new in {rep['seconds']:.0f} s"
    )
    return 0


def _pretrain_wm(args, cfg) -> int:
    from rawdream.world_model.train import pretrain_wm

    s = pretrain_wm(cfg, args.data, args.out, progress=True, init=args.init)
    recon = s["autoencoder_reconstruction"]
    print(f"world model: {Path(args.out).resolve() / 'world_model.safetensors'} (variant {s['variant']})")
    print(
        f"  autoencoder held-out PSNR {recon['psnr']:.2f} dB, SSIM {recon['ssim']:.3f}; "
        f"trained in {s['seconds']['total'] / 60:.1f} min"
    )
    return 0


def _eval_wm(args, cfg) -> int:
    from rawdream.eval.wm_fidelity import evaluate_world_model, format_report
    from rawdream.world_model.train import load_world_model

    policy = None
    if args.policy:
        from rawdream.policy.train import load_policy

        policy = load_policy(args.policy)
    from rawdream.eval.judge_accuracy import world_model_provenance

    wm = load_world_model(args.wm)
    report = evaluate_world_model(
        wm, cfg, args.out, progress=True, policy=policy, world_model=world_model_provenance(wm, args.wm)
    )
    _saved(cfg, args.out)
    print(format_report(report))
    videos = f"; videos: {Path(args.out).resolve()}/*.mp4" if cfg.videos else ""
    print(f"\nresults: {Path(args.out).resolve() / 'wm_eval.json'}{videos}")
    return 0


def _train_policy(args, cfg) -> int:
    from rawdream.policy.train import train_policy

    info = train_policy(cfg, args.data, args.out, init=args.init, progress=True)
    print(
        f"policy ({cfg.stage}): {Path(args.out).resolve() / 'policy.safetensors'}; tasks: {', '.join(info['tasks'])}; "
        f"{info['seconds'] / 60:.1f} min; final {info['final_metrics']}"
    )
    if info["target_trajectories"]:
        print(
            f"target-task trajectories used: {len(info['target_trajectories'])} "
            f"({', '.join(str(u['task']) + ' seed ' + str(u['seed']) for u in info['target_trajectories'])})"
        )
    return 0


def _eval_policy(args, cfg) -> int:
    from rawdream.eval.success import evaluate_policy, format_eval
    from rawdream.policy.train import load_policy

    before = _load_eval(args.compare, cfg) if args.compare else None  # checked before the long part
    report = evaluate_policy(load_policy(args.policy), cfg, args.out, progress=True)
    _saved(cfg, args.out)
    print(format_eval(report))
    if before is not None:
        print(format_paired(before, report, args.compare))
    print(
        f"\nresults: {Path(args.out).resolve() / 'eval.json'}; videos: {Path(args.out).resolve() / 'videos'}"
    )
    return 0


def _load_eval(path: str, cfg) -> dict:
    """An earlier evaluation to pair with, refused when its protocol differs (pairs must be the same seeds)."""
    from rawdream.io import read_json

    p = Path(path)
    p = p / "eval.json" if p.is_dir() else p
    if not p.exists():
        raise FileNotFoundError(f"--compare {path}: no eval.json there; give an eval-policy output")
    rep = read_json(p)
    proto = rep.get("protocol", {})
    layouts = proto.get("layouts", "new")
    if layouts != cfg.layouts or proto.get("seeds") != f"{cfg.seed(0)}+i":
        raise ValueError(
            f"--compare {path} was evaluated on {layouts} layouts (seeds {proto.get('seeds')}), this run on "
            f"{cfg.layouts} (seeds {cfg.seed(0)}+i): paired differences need the same seeds; pass --layouts"
        )
    return rep


def format_paired(before: dict, after: dict, name: str) -> str:
    from rawdream.eval.success import paired_difference

    lines = [f"\npaired with {name} on the same episodes:"]
    lines.append(f"{'task':24s} {'difference [95% CI]':>24s} {'gained':>7s} {'lost':>5s} {'McNemar p':>10s}")
    for task, r in after["tasks"].items():
        if task not in before["tasks"]:
            continue
        d = paired_difference(before["tasks"][task]["episode_results"], r["episode_results"])
        ci = f"{d['difference'] * 100:+.1f} [{d['ci95'][0] * 100:+.1f}, {d['ci95'][1] * 100:+.1f}]"
        lines.append(f"{task:24s} {ci:>24s} {d['gained']:7d} {d['lost']:5d} {d['mcnemar_p']:10.3g}")
    return "\n".join(lines)


def _train_judge(args, cfg) -> int:
    from rawdream.reward.generalist import train_judge

    info = train_judge(cfg, args.data, args.out, wm_path=args.wm, progress=True, references=args.references)
    v = info["validation"]
    print(
        f"judge: {Path(args.out).resolve()} ({'task-blind control' if cfg.model.blind else 'generalist'}); "
        f"held-out pretraining episodes: AUROC {v['auroc']:.3f}, balanced accuracy {v['balanced_accuracy']:.3f}; "
        f"own-instruction rows: AUROC {info['validation_own']['auroc']:.3f}"
    )
    return 0


def _eval_judge(args, cfg) -> int:
    from rawdream.eval.judge_accuracy import evaluate_judges, format_judge_report

    report = evaluate_judges(
        cfg, args.out, data=args.data, wm_path=args.wm, progress=True, policy_path=args.policy
    )
    print(format_judge_report(report))
    print(f"\nresults: {Path(args.out).resolve() / 'judge_eval.json'}")
    return 0


def _dream(args, cfg) -> int:
    from rawdream.rl.dream import dream

    info = dream(cfg, args.policy, args.out, wm_path=args.wm, init_from=args.init_from, progress=True)
    print(
        f"policy after RL ({info['env_mode']}, judge {info['judge']}): {Path(args.out).resolve()}; "
        f"{info['seconds'] / 60:.1f} min; real trajectories used by RL: {info['real_trajectories_rl']}"
    )
    from rawdream.experiment.rl_table import judged_reward

    if j := judged_reward(args.out):
        print(
            f"  success of the rollouts RL trained on, as its reward ({info['judge']}) said: {j['first']:.2f} in the "
            f"first {j['window']} iterations -> {j['last']:.2f} in the last {j['window']} (compare the real rates)"
        )
    for layouts, d in info.get("paired", {}).items():
        print(
            f"  {layouts:9s} layouts: {d['before'] * 100:.1f}% -> {d['after'] * 100:.1f}% "
            f"(paired {d['difference'] * 100:+.1f} [{d['ci95'][0] * 100:+.1f}, {d['ci95'][1] * 100:+.1f}], "
            f"+{d['gained']} / -{d['lost']} of {d['episodes']} episodes, McNemar p {d['mcnemar_p']:.3g})"
        )
    return 0


def _paper_table(args, cfg) -> int:
    from dataclasses import replace

    from rawdream.experiment.paper_table import run_paper_table
    from rawdream.layout import RunLayout

    if args.run:  # a main job's models, found where RunLayout keeps them; an explicit flag still wins
        run = RunLayout(Path(args.run))
        if not (run / run.POLICY_SFT).exists():
            raise FileNotFoundError(
                f"--run {args.run}: no {run.POLICY_SFT}/ in it; run `rawdream run --out {args.run}`"
            )
        args.sft = args.sft or str(run / run.POLICY_SFT)
        args.wm = args.wm or str(run / run.WM)
        args.judge_path = args.judge_path or str(run / run.JUDGE)
        judge = _judge_as_the_run_reads_it(cfg.dream.judge, run, run.TARGET_DEMOS)
        cfg = replace(cfg, dream=replace(cfg.dream, judge=judge))
    if not args.sft:
        raise ValueError("paper-table needs the 1-shot SFT policy: --sft DIR, or --run RUN_DIR of a main job")
    report = run_paper_table(
        cfg,
        args.out,
        args.sft,
        args.wm,
        args.judge_path,
        args.cotrain_wm,
        progress=True,
        idft_wm=args.idft_wm,
    )
    print((Path(args.out) / "paper_table.md").read_text())
    print(f"results: {Path(args.out).resolve() / 'paper_table.json'}; {len(report['table'])} rows")
    return 0


def _run_config(run) -> dict[str, Any]:
    """A main job's saved config (config.yaml), or {} when it has none."""
    import yaml

    path = run / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def _judge_as_the_run_reads_it(judge, run, reference: str):
    """A judge section as a main job reads its judge: the run's ``reference`` dataset unless one is given, and a
    generalist through the run's judge_readout (object gate, demo cut) unless a flag set them."""
    from dataclasses import fields, replace

    from rawdream.pipeline import readout_settings

    if "reference" in {f.name for f in fields(judge)} and not judge.reference:
        judge = replace(judge, reference=str(run / reference))
    if judge.backend == "generalist":
        judge = replace(judge, **readout_settings(judge, _run_config(run).get("judge_readout") or {}))
    return judge


def _judge_check(args, cfg) -> int:
    from dataclasses import replace

    from rawdream.config import to_dict
    from rawdream.experiment.judge_check import run_judge_check
    from rawdream.layout import RunLayout

    judges = [j for j in (args.judges or "").split(",") if j]
    if args.run:  # a main job's models: its base policy, world model, pretraining demos and read-out
        run = RunLayout(Path(args.run))
        if not (run / run.POLICY_BASE).exists():
            raise FileNotFoundError(
                f"--run {args.run}: no {run.POLICY_BASE}/ in it; run `rawdream run --out {args.run}`"
            )
        args.policy = args.policy or str(run / run.POLICY_BASE)
        args.wm = args.wm or str(run / run.WM)
        # the run's trained candidates (a finished judge has its judge.json), in seed order as the run checks them
        done = [p for p in (run / run.JUDGE_CANDIDATES).glob("seed*") if (p / "judge.json").exists()]
        candidates = [str(p) for p in sorted(done, key=lambda p: int(p.name.removeprefix("seed")))]
        judges = judges or [str(run / run.JUDGE), *candidates]
        judge = _judge_as_the_run_reads_it(cfg.dream.judge, run, run.DEMOS)
        saved = _run_config(run)
        if saved.get("split"):  # the run's split: its targets are never check tasks
            from rawdream.config import build
            from rawdream.splits import SplitConfig

            cfg = replace(cfg, split=build(SplitConfig, saved["split"]))
        cfg = replace(cfg, dream=replace(cfg.dream, judge=judge))
    missing = [f for f, v in (("--policy", args.policy), ("--wm", args.wm), ("--judges", judges)) if not v]
    if missing:
        raise ValueError(f"judge-check needs {', '.join(missing)} (or --run RUN_DIR of a main job)")
    if not cfg.dream.judge.reference:
        raise ValueError(
            "judge-check reads each judge against a demonstration of the check task: --reference DEMOS "
            "(pretraining-task demos, e.g. runs/quick/data/demos)"
        )
    names = _judge_names(judges)
    report = run_judge_check(
        cfg, dict(zip(names, judges)), to_dict(cfg.dream.judge), args.policy, args.wm, args.out, progress=True
    )
    print((Path(args.out) / "judge_check.md").read_text(), end="")
    picked = f"picked {report['selected_path']}"
    if report.get("hardening"):  # the targets' RL is to read the hardened judge, not the pick
        picked += f", hardened: {report['targets_judge']}"
    print(f"results: {Path(args.out).resolve() / 'judge_check.json'}; {picked}")
    return 0


def _judge_names(paths: list[str]) -> list[str]:
    """Short unique names for judge folders: the folder name, with its parent's where two share one."""
    for depth in range(1, 8):
        names = ["__".join(Path(p).resolve().parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    raise ValueError(f"--judges names the same folder twice: {paths}")


def _table(rows: list, fmt, json_path: str | None, extra: dict | None = None) -> int:
    """A results table: markdown on stdout and, with --json, the rows (and ``extra``) as the file a README table
    quotes."""
    from rawdream.io import atomic_write_json

    if json_path:
        atomic_write_json(json_path, {"rows": rows, **(extra or {})})
    print(fmt(rows), end="")
    return 0


def _rl_table(args, _cfg) -> int:
    from rawdream.experiment.rl_table import format_rl_table, pooled, rl_table, skipped_by_check

    rows = rl_table(args.runs)
    skipped = skipped_by_check(args.check) if args.check else {}
    pool = pooled(rows, skipped)
    extra = {**({"pooled": pool} if pool else {}), **({"check_skipped": skipped} if args.check else {})}
    return _table(rows, lambda r: format_rl_table(r, pool, skipped), args.json, extra)


def _fidelity_table(args, _cfg) -> int:
    from rawdream.experiment.fidelity_table import fidelity_table, format_fidelity_table

    return _table(fidelity_table(args.runs), format_fidelity_table, args.json)


def _transfer_table(args, _cfg) -> int:
    from rawdream.experiment.transfer_table import format_transfer_table, transfer_table

    return _table(transfer_table(args.runs), format_transfer_table, args.json)


def _tasks(args, _cfg) -> int:
    from rawdream.envs.base import EnvConfig
    from rawdream.envs.sheet import contact_sheet, object_visibility, task_table, visibility_table
    from rawdream.splits import SplitConfig, resolve_split

    split = resolve_split(SplitConfig(name=args.split))
    env = EnvConfig(backend=split.backend)
    print(task_table(split))
    if args.sheet:
        print(f"\ncontact sheet: {contact_sheet(args.sheet, env, scale=args.scale, highlight=split.targets)}")
    if args.measure:
        print("\n" + visibility_table(object_visibility(env), env.image_size))
    return 0


def _info(args, _cfg) -> int:
    from rawdream.data.info import describe
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.io import atomic_write_json

    ds = LeRobotDataset(args.path)
    if args.verify:
        problems = ds.verify()
        for p in problems:
            print(f"rawdream info: {p}", file=sys.stderr)
        if problems:
            print(
                f"rawdream info: error: {ds.root} is damaged ({len(problems)} problem(s) above)",
                file=sys.stderr,
            )
            return 1
        print(f"{ds.root}: verified - every data file read, every video frame decoded")
    text, table = describe(ds, verified=args.verify)
    print(text)
    if args.json:
        atomic_write_json(args.json, table)
        print(f"wrote {args.json}")
    return 0


# ------------------------------------------------------------------------------------------------------------
# the verbs
# ------------------------------------------------------------------------------------------------------------
def _resolve_run(preset, overrides):
    from rawdream.pipeline import resolve_run

    return resolve_run(preset, overrides)


TASKS = alias(
    "--task",
    key="tasks",
    action="append",
    default=None,
    help="task name, 'pretrain' or 'targets' (repeatable)",
)
VLM_URL = alias(
    "--vlm-url",
    key="judge.url",
    also={"judge.backend": "openai"},
    default=None,
    help="judge with a served VLM at this OpenAI-compatible URL (e.g. vLLM serving Qwen3-VL)",
)

VERBS: tuple[Verb, ...] = (
    Verb(
        "run",
        "the main job on the embedded default, end to end",
        _run,
        resolver=_resolve_run,
        stage="run",
        preset="quick",
        description="Run the RAW-Dream chain on the embedded benchmark; each stage resumes.",
        args=(
            inp(
                "--out", default="runs/quick", help="run directory (default: runs/quick); re-running resumes"
            ),
        ),
    ),
    Verb(
        "report",
        "write one self-contained HTML report of a run directory",
        _report,
        preset=None,
        args=(inp("run_dir", help="a run directory written by `rawdream run`"),),
    ),
    Verb(
        "collect",
        "collect play data, expert demos or labeled rollouts from the simulator",
        _collect,
        kind_dest="kind",
        kind_metavar="KIND",
        kinds=(
            Verb(
                "play",
                "task-free play data on the pretraining tasks (for the world model)",
                _collect,
                config="rawdream.data.collect:CollectConfig",
                stage="collect_play",
                args=(DATASET_OUT,),
            ),
            Verb(
                "demos",
                "expert demonstrations (base policy; 1-shot SFT of a target)",
                _collect,
                config="rawdream.data.collect:CollectConfig",
                stage="collect_demos",
                args=(
                    alias(
                        "--task",
                        key="tasks",
                        action="append",
                        default=None,
                        help="task name, 'pretrain' or 'targets' (repeatable); default: the split's pretraining tasks",
                    ),
                    alias(
                        "--episodes",
                        key="episodes_per_task",
                        type=int,
                        default=None,
                        help="episodes per task",
                    ),
                    DATASET_OUT,
                ),
            ),
            Verb(
                "labeled",
                "rollouts with success labels and instructions (for judges)",
                _collect,
                config="rawdream.data.collect:CollectConfig",
                stage="collect_labeled",
                args=(
                    TASKS,
                    DATASET_OUT,
                ),
            ),
            Verb(
                "policy",
                "labeled rollouts of a learned policy on pretraining tasks, at the RL temperature (for judges)",
                _collect_policy,
                config="rawdream.data.policy_rollouts:PolicyRolloutsConfig",
                stage="collect_policy",
                args=(
                    inp("--policy", required=True, help="policy directory (the base policy)"),
                    inp(
                        "--wm",
                        default=None,
                        help="world model directory: the policy acts in it (closed loop, as in RL in imagination) "
                        "and the simulator labels the imagined actions",
                    ),
                    alias(
                        "--task",
                        key="tasks",
                        action="append",
                        default=None,
                        help="pretraining task name (repeatable)",
                    ),
                    DATASET_OUT,
                ),
            ),
        ),
    ),
    Verb(
        "pretrain-wm",
        "train the task-agnostic world model on play data",
        _pretrain_wm,
        config="rawdream.world_model.train:PretrainWMConfig",
        stage="pretrain_wm",
        description="Train the autoencoder, then the action-conditioned latent flow dynamics.",
        args=(
            inp(
                "--data",
                required=True,
                help="play dataset directory (LeRobot v3: ours or any with video + actions); several "
                "comma-separated train as one (e.g. play plus policy rollouts on pretraining tasks)",
            ),
            inp("--out", required=True, help="output directory; re-running resumes from its checkpoints"),
            inp(
                "--init",
                default=None,
                metavar="WM_DIR",
                help="fine-tune this world model (its autoencoder and latent statistics kept; e.g. --variant id-ft)",
            ),
            alias(
                "--variant",
                key="variant",
                default=None,
                choices=["zero-shot", "co-train", "id-ft"],
                help="zero-shot (default) refuses target-task data; co-train / id-ft use it, recorded in the checkpoint",
            ),
        ),
    ),
    Verb(
        "eval-wm",
        "world-model fidelity against the simulator under identical actions",
        _eval_wm,
        config="rawdream.eval.wm_fidelity:EvalWMConfig",
        stage="eval_wm",
        args=(
            inp("--wm", required=True, help="world model directory (from pretrain-wm)"),
            inp("--out", required=True, help="output directory for wm_eval.json and videos"),
            inp(
                "--policy",
                default=None,
                help="also measure whether this policy decides on imagined frames as on real ones (its own "
                "rollouts of the target tasks; --on_policy.* sets states, rollouts, horizon, temperature)",
            ),
        ),
    ),
    Verb(
        "train-policy",
        "behaviour cloning: --stage base (pretraining tasks) or sft (1-shot)",
        _train_policy,
        config="rawdream.policy.train:TrainPolicyConfig",
        stage="train_policy_{stage}",  # the preset stage follows --stage
        args=(
            alias("--stage", key="stage", required=True, choices=["base", "sft"], help="base or sft"),
            inp(
                "--data",
                required=True,
                help="demonstrations (LeRobot v3, every frame): `rawdream collect demos`",
            ),
            inp("--out", required=True, help="output directory; re-running resumes from its checkpoint"),
            inp("--init", default=None, help="sft: the base policy directory to fine-tune"),
            alias(
                "--task",
                key="tasks",
                action="append",
                default=None,
                help="sft: target task(s); default: all split targets",
            ),
            alias(
                "--demos",
                key="demos",
                type=int,
                default=None,
                help="sft: demonstrations per target task (default 1)",
            ),
        ),
    ),
    Verb(
        "eval-policy",
        "policy success rate in the real simulator (fixed seeds, 95%% CI)",
        _eval_policy,
        config="rawdream.eval.success:EvalPolicyConfig",
        stage="eval_policy",
        ray=("",),
        args=(
            inp("--policy", required=True, help="policy directory (from train-policy or dream)"),
            inp("--out", required=True, help="output directory for eval.json and videos"),
            alias(
                "--task",
                key="tasks",
                action="append",
                default=None,
                help="task(s), 'targets' or 'pretrain'; default: targets",
            ),
            alias(
                "--episodes", key="episodes", type=int, default=None, help="episodes per task (default 50)"
            ),
            alias(
                "--sampled",
                key="greedy",
                value=False,
                help="sample actions (at --temperature) instead of greedy",
            ),
            alias(
                "--layouts",
                key="layouts",
                default=None,
                choices=["new", "practised"],
                help="new: seeds disjoint from all training (default); practised: the initial states RL trained from",
            ),
            inp(
                "--compare",
                default=None,
                metavar="EVAL",
                help="an earlier eval.json (or its directory) on the same layouts: print the paired difference per task",
            ),
        ),
    ),
    Verb(
        "train-judge",
        "train the embedded generalist judge on labeled pretraining rollouts",
        _train_judge,
        config="rawdream.reward.generalist:TrainJudgeConfig",
        stage="train_judge",
        args=(
            inp(
                "--data",
                required=True,
                help="labeled rollouts of pretraining tasks: `rawdream collect labeled`",
            ),
            inp("--out", required=True, help="output directory"),
            inp(
                "--wm", default=None, help="world model: add its imagined replays of the rollouts to training"
            ),
            inp(
                "--references",
                default=None,
                help="demos of the pretraining tasks (`rawdream collect demos`): the judge learns to compare a video "
                "with a demonstration of the instructed task (--model.reference=false: instruction only)",
            ),
            alias(
                "--blind",
                key="model.blind",
                value=True,
                help="train the task-blind control (no instruction, no reference)",
            ),
        ),
    ),
    Verb(
        "eval-judge",
        "judge accuracy on held-out target tasks (real and imagined videos)",
        _eval_judge,
        config="rawdream.eval.judge_accuracy:EvalJudgeConfig",
        stage="eval_judge",
        epilog=" The judge is any backend: --judge.path DIR (the generalist), or --judge.backend openai "
        "--judge.url http://host:8000/v1 for a served Qwen3-VL.",
        args=(
            inp("--out", required=True, help="output directory for judge_eval.json"),
            alias("--blind", key="blind_path", default=None, help="task-blind control judge directory"),
            alias(
                "--reference",
                key="judge.reference",
                default=None,
                help="demos of the target tasks, shown to reference judges (--judge.reference)",
            ),
            inp("--data", default=None, help="labeled target-task rollouts; default: collected into OUT"),
            inp("--wm", default=None, help="world model for the imagined-video rows"),
            inp(
                "--policy",
                default=None,
                help="also score the reward RL would see: this policy's own rollouts from the RL initial states, "
                "real vs imagined (needs --wm), before and after dual-noise verification",
            ),
            VLM_URL,
        ),
    ),
    Verb(
        "dream",
        "GRPO on a held-out task inside the world model (or --env_mode=sim: online RL)",
        _dream,
        config="rawdream.rl.dream:DreamConfig",
        stage="dream",
        ray=("",),
        epilog=" The judge: --judge.path DIR (the generalist), or --vlm-url; --env_mode=sim runs the online-RL "
        "baseline in the real simulator.",
        args=(
            alias("--task", key="task", required=True, help="the target task"),
            inp("--policy", required=True, help="starting policy directory (the 1-shot SFT policy)"),
            inp("--wm", default=None, help="world model directory (from pretrain-wm)"),
            alias(
                "--reference",
                key="judge.reference",
                default=None,
                help="the task's demonstration(s) (e.g. the 1-shot demo dataset), shown to reference judges",
            ),
            VLM_URL,
            inp(
                "--init-from",
                default=None,
                help="LeRobot v3 dataset whose first frames are the initial states",
            ),
            alias("--no-dnv", key="dnv", value=False, help="ablation: switch dual-noise verification off"),
            OUT,
        ),
    ),
    Verb(
        "experiment",
        "experiments combining stages (the paper's table in miniature)",
        _paper_table,
        kind_dest="experiment",
        kind_metavar="NAME",
        kinds=(
            Verb(
                "paper-table",
                "SFT vs online RL vs RAW-Dream (with/without DNV, oracle, co-train)",
                _paper_table,
                config="rawdream.experiment.paper_table:PaperTableConfig",
                stage="paper_table",
                preset=None,
                ray=("dream", "eval"),
                preset_of=lambda a: a.preset or ("ladder" if a.ladder else "quick" if a.quick else "default"),
                args=(
                    inp(
                        "--run",
                        default=None,
                        help="a `rawdream run` directory: --sft, --wm, --judge and --reference default to its "
                        "policy_sft, wm, judge and data/target_demos",
                    ),
                    inp("--sft", default=None, help="the 1-shot SFT policy directory"),
                    inp("--wm", default=None, help="zero-shot world model directory"),
                    inp("--judge", dest="judge_path", default=None, help="generalist judge directory"),
                    alias(
                        "--reference",
                        key="dream.judge.reference",
                        default=None,
                        help="demos of the target tasks, shown to reference judges",
                    ),
                    inp(
                        "--cotrain-wm",
                        default=None,
                        help="co-trained world model directory (pretrain-wm --variant co-train)",
                    ),
                    inp(
                        "--idft-wm",
                        default=None,
                        help="ID-FT world model directory (fine-tuned on target-task rollouts)",
                    ),
                    inp(
                        "--quick",
                        action="store_true",
                        help="SFT, online RL and RAW-Dream with/without DNV on the 5 targets, 1 seed (preset quick)",
                    ),
                    inp(
                        "--ladder",
                        action="store_true",
                        help="the link-by-link ladder: SFT, online RL, sim + judge, WM + sim success, RAW-Dream "
                        "with/without DNV (preset ladder)",
                    ),
                    inp(
                        "--out",
                        required=True,
                        help="output directory (paper_table.md / .json); re-running resumes",
                    ),
                    inp("--preset", default=None, help="tiny | quick | ladder | default"),
                ),
            ),
            Verb(
                "judge-check",
                "RL in imagination against each candidate judge on pretraining tasks, scored by the simulator: "
                "the judge whose reward RL can follow",
                _judge_check,
                config="rawdream.experiment.judge_check:JudgeCheckConfig",
                stage="judge_check",
                args=(
                    inp(
                        "--run",
                        default=None,
                        help="a `rawdream run` directory: --policy, --wm, --judges and --reference default to its "
                        "policy_base, wm, judge (and judge_candidates/*) and data/demos, read as it reads its judge",
                    ),
                    inp("--judges", default=None, help="comma-separated generalist judge directories"),
                    inp("--policy", default=None, help="the base policy RL starts from (not the SFT policy)"),
                    inp("--wm", default=None, help="world model directory"),
                    alias(
                        "--reference",
                        key="dream.judge.reference",
                        default=None,
                        help="demos of the check tasks (pretraining demos), shown to reference judges",
                    ),
                    OUT,
                ),
            ),
            Verb(
                "rl-table",
                "a table of `rawdream dream --eval_start=true` runs: settings, cost, paired success per protocol",
                _rl_table,
                preset=None,
                args=(
                    inp("runs", nargs="+", help="dream output directories"),
                    inp(
                        "--check",
                        default=None,
                        help="a per-target judge check's judge_check.json: the rows of targets it kept RL away "
                        "from count as unchanged in the pooled line (the SFT policy stands there)",
                    ),
                    TABLE_JSON,
                ),
            ),
            Verb(
                "fidelity-table",
                "a table of `rawdream eval-judge --policy --wm` runs: the reward RL in imagination would see, per "
                "world model (play protocol, training minutes) and target",
                _fidelity_table,
                preset=None,
                args=(
                    inp("runs", nargs="+", help="eval-judge output directories (or their judge_eval.json)"),
                    TABLE_JSON,
                ),
            ),
            Verb(
                "transfer-table",
                "a table of `rawdream eval-wm --policy` runs: does the policy act in imagination as in the "
                "simulator, per world model and target",
                _transfer_table,
                preset=None,
                args=(
                    inp("runs", nargs="+", help="eval-wm (or eval-judge) output directories, or their JSON"),
                    TABLE_JSON,
                ),
            ),
        ),
    ),
    Verb(
        "tasks",
        "list the tasks, their instructions and the benchmark split",
        _tasks,
        preset=None,
        args=(
            inp("--split", default=DEFAULT_SPLIT, help=f"named split (default: {DEFAULT_SPLIT})"),
            inp(
                "--sheet", default=None, metavar="PNG", help="also render a contact sheet of all tasks to PNG"
            ),
            inp("--scale", type=int, default=2, help="upscale factor of the contact sheet tiles"),
            inp(
                "--measure",
                action="store_true",
                help="also measure how many pixels each task's objects cover (MuJoCo segmentation, 3 resets)",
            ),
        ),
    ),
    Verb(
        "info",
        "summarise a LeRobot v3 dataset: manifest, features, episodes per task",
        _info,
        preset=None,
        args=(
            inp("path", help="dataset directory"),
            inp(
                "--json",
                help="also write the per-task table and object motion (per scene, per behaviour) here",
            ),
            inp(
                "--verify",
                action="store_true",
                help="also decode every video frame and check every file against the metadata (exit 1 if damaged)",
            ),
        ),
    ),
)


def _add_verb(subparsers, verb: Verb) -> None:
    stages = (
        [verb.stage.format(stage=s) for s in ("base", "sft")] if "{stage}" in verb.stage else [verb.stage]
    )
    epilog = None
    if verb.config or verb.resolver:
        epilog = (
            "Any config key is also a flag: --key=value or --section.key=value "
            f"(see `configs/presets.yaml`, stage {' / '.join(stages)!r})." + verb.epilog
        )
    p = subparsers.add_parser(verb.name, help=verb.help, description=verb.description, epilog=epilog)
    if verb.kinds:
        kinds = p.add_subparsers(dest=verb.kind_dest, metavar=verb.kind_metavar, required=True)
        for kind in verb.kinds:
            _add_verb(kinds, kind)
        return
    for a in verb.args:
        a.add_to(p)
    if verb.preset is not None:
        names = ", ".join(preset_names(stages[0]))
        p.add_argument(
            "--preset",
            default=verb.preset,
            help=f"named preset from configs/presets.yaml ({names}); default: {verb.preset}",
        )
    if verb.ray is not None:
        p.add_argument("--ray", action="store_true", help="run workers on a local Ray cluster (127.0.0.1)")
        p.add_argument(
            "--ray-address",
            default=None,
            metavar="ADDR",
            help="run workers on an existing Ray cluster (HOST:PORT)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rawdream",
        description="RAW-Dream: reinforce VLA policies inside a task-agnostic world model.",
    )
    parser.add_argument("--version", action="version", version=f"rawdream {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        _add_verb(verbs, verb)
    return parser


def _chosen(args: argparse.Namespace) -> Verb:
    verb = next(v for v in VERBS if v.name == args.verb)
    while verb.kinds:
        verb = next(k for k in verb.kinds if k.name == getattr(args, verb.kind_dest))
    if "{stage}" in verb.stage:  # train-policy: the preset stage follows --stage
        verb = dataclasses.replace(verb, stage=verb.stage.format(stage=args.stage))
    return verb


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    import os

    from rawdream.data.lerobot import DatasetError
    from rawdream.envs.tasks import UnknownTaskError
    from rawdream.reward.base import JudgeUnavailableError
    from rawdream.splits import TargetTaskLeakError

    try:
        return _handle(_chosen(args), args, parse_overrides(extra))
    except (
        ConfigError,
        UnknownTaskError,
        DatasetError,
        TargetTaskLeakError,
        FileExistsError,
        FileNotFoundError,
        JudgeUnavailableError,
    ) as e:
        print(f"rawdream {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # config validation and bad inputs raise ValueError with a one-line fix
        if os.environ.get("RAWDREAM_DEBUG"):
            raise
        print(f"rawdream {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rawdream tasks | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(
            f"\nrawdream {args.verb}: interrupted; finished work is on disk and the same command resumes",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
