"""``rawdream``: one entry point, one verb per pipeline stage.

Every verb that writes takes ``--out DIR``; verbs that train or build take ``--preset NAME``; any config key
is a flag (``--env.image_size=96``). The resolved config is written beside the outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rawdream import __version__
from rawdream.config import ConfigError, parse_overrides, preset_names, resolve


def _add_preset(p: argparse.ArgumentParser, stage: str) -> None:
    p.add_argument(
        "--preset",
        default="default",
        help=f"named preset from configs/presets.yaml ({', '.join(preset_names(stage))}); default: default",
    )


def _add_ray(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", action="store_true", help="run workers on a local Ray cluster (127.0.0.1)")
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="run workers on an existing Ray cluster (HOST:PORT)",
    )


def _ray_overrides(args, overrides: dict, *sections: str) -> None:
    """--ray / --ray-address -> ``<section>.ray.enabled`` / ``.address`` for each config section given."""
    if not (getattr(args, "ray", False) or getattr(args, "ray_address", None)):
        return
    for sec in sections:
        prefix = f"{sec}." if sec else ""
        overrides[f"{prefix}ray.enabled"] = True
        if args.ray_address:
            overrides[f"{prefix}ray.address"] = args.ray_address


def _epilog(stage: str) -> str:
    return (
        "Any config key is also a flag: --key=value or --section.key=value "
        f"(see `configs/presets.yaml`, stage {stage!r})."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rawdream",
        description="RAW-Dream: reinforce VLA policies inside a task-agnostic world model.",
    )
    parser.add_argument("--version", action="version", version=f"rawdream {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    # run -------------------------------------------------------------------------------------------------
    p = verbs.add_parser(
        "run",
        help="the main job on the embedded default, end to end",
        description="Run the RAW-Dream chain on the embedded benchmark; each stage resumes.",
        epilog=_epilog("run"),
    )
    p.add_argument(
        "--out", default="runs/quick", help="run directory (default: runs/quick); re-running resumes"
    )
    p.add_argument(
        "--preset", default="quick", help=f"run preset ({', '.join(preset_names('run'))}); default: quick"
    )
    p = verbs.add_parser("report", help="write one self-contained HTML report of a run directory")
    p.add_argument("run_dir", help="a run directory written by `rawdream run`")

    # collect ---------------------------------------------------------------------------------------------
    p = verbs.add_parser(
        "collect", help="collect play data, expert demos or labeled rollouts from the simulator"
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    k = kinds.add_parser(
        "play",
        help="task-free play data on the pretraining tasks (for the world model)",
        epilog=_epilog("collect_play"),
    )
    k.add_argument("--out", required=True, help="dataset directory (LeRobot v3); re-running resumes")
    _add_preset(k, "collect_play")
    k = kinds.add_parser(
        "demos",
        help="expert demonstrations (base policy; 1-shot SFT of a target)",
        epilog=_epilog("collect_demos"),
    )
    k.add_argument(
        "--task",
        action="append",
        default=None,
        help="task name, 'pretrain' or 'targets' (repeatable); default: the split's pretraining tasks",
    )
    k.add_argument("--episodes", type=int, default=None, help="episodes per task")
    k.add_argument("--out", required=True, help="dataset directory (LeRobot v3); re-running resumes")
    _add_preset(k, "collect_demos")
    k = kinds.add_parser(
        "labeled",
        help="rollouts with success labels and instructions (for judges)",
        epilog=_epilog("collect_labeled"),
    )
    k.add_argument(
        "--task", action="append", default=None, help="task name, 'pretrain' or 'targets' (repeatable)"
    )
    k.add_argument("--out", required=True, help="dataset directory (LeRobot v3); re-running resumes")
    _add_preset(k, "collect_labeled")
    k = kinds.add_parser(
        "policy",
        help="labeled rollouts of a learned policy on pretraining tasks, at the RL temperature (for judges)",
        epilog=_epilog("collect_policy"),
    )
    k.add_argument("--policy", required=True, help="policy directory (the base policy)")
    k.add_argument("--task", action="append", default=None, help="pretraining task name (repeatable)")
    k.add_argument("--out", required=True, help="dataset directory (LeRobot v3); re-running resumes")
    _add_preset(k, "collect_policy")

    # pretrain-wm -----------------------------------------------------------------------------------------
    p = verbs.add_parser(
        "pretrain-wm",
        help="train the task-agnostic world model on play data",
        description="Train the autoencoder, then the action-conditioned latent flow dynamics.",
        epilog=_epilog("pretrain_wm"),
    )
    p.add_argument(
        "--data", required=True, help="play dataset directory (LeRobot v3: ours or any with video + actions)"
    )
    p.add_argument("--out", required=True, help="output directory; re-running resumes from its checkpoints")
    p.add_argument(
        "--init",
        default=None,
        metavar="WM_DIR",
        help="fine-tune this world model (its autoencoder and latent statistics kept; e.g. --variant id-ft)",
    )
    p.add_argument(
        "--variant",
        default=None,
        choices=["zero-shot", "co-train", "id-ft"],
        help="zero-shot (default) refuses target-task data; co-train / id-ft use it, recorded in the checkpoint",
    )
    _add_preset(p, "pretrain_wm")

    p = verbs.add_parser(
        "eval-wm",
        help="world-model fidelity against the simulator under identical actions",
        epilog=_epilog("eval_wm"),
    )
    p.add_argument("--wm", required=True, help="world model directory (from pretrain-wm)")
    p.add_argument("--out", required=True, help="output directory for wm_eval.json and videos")
    _add_preset(p, "eval_wm")

    # policy ----------------------------------------------------------------------------------------------
    p = verbs.add_parser(
        "train-policy",
        help="behaviour cloning: --stage base (pretraining tasks) or sft (1-shot)",
        epilog=_epilog("train_policy_base / train_policy_sft"),
    )
    p.add_argument("--stage", required=True, choices=["base", "sft"])
    p.add_argument(
        "--data", required=True, help="demonstrations (LeRobot v3, every frame): `rawdream collect demos`"
    )
    p.add_argument("--out", required=True, help="output directory; re-running resumes from its checkpoint")
    p.add_argument("--init", default=None, help="sft: the base policy directory to fine-tune")
    p.add_argument(
        "--task", action="append", default=None, help="sft: target task(s); default: all split targets"
    )
    p.add_argument("--demos", type=int, default=None, help="sft: demonstrations per target task (default 1)")
    p.add_argument("--preset", default="default", help="tiny | default | large")

    p = verbs.add_parser(
        "eval-policy",
        help="policy success rate in the real simulator (fixed seeds, 95%% CI)",
        epilog=_epilog("eval_policy"),
    )
    p.add_argument("--policy", required=True, help="policy directory (from train-policy or dream)")
    p.add_argument("--out", required=True, help="output directory for eval.json and videos")
    p.add_argument(
        "--task", action="append", default=None, help="task(s), 'targets' or 'pretrain'; default: targets"
    )
    p.add_argument("--episodes", type=int, default=None, help="episodes per task (default 50)")
    p.add_argument(
        "--sampled", action="store_true", help="sample actions (at --temperature) instead of greedy"
    )
    p.add_argument(
        "--layouts",
        default=None,
        choices=["new", "practised"],
        help="new: seeds disjoint from all training (default); practised: the initial states RL trained from",
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="EVAL",
        help="an earlier eval.json (or its directory) on the same layouts: print the paired difference per task",
    )
    _add_ray(p)
    _add_preset(p, "eval_policy")

    # judges ----------------------------------------------------------------------------------------------
    p = verbs.add_parser(
        "train-judge",
        help="train the embedded generalist judge on labeled pretraining rollouts",
        epilog=_epilog("train_judge"),
    )
    p.add_argument(
        "--data", required=True, help="labeled rollouts of pretraining tasks: `rawdream collect labeled`"
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--wm", default=None, help="world model: add its imagined replays of the rollouts to training"
    )
    p.add_argument(
        "--references",
        default=None,
        help="demos of the pretraining tasks (`rawdream collect demos`): the judge learns to compare a video "
        "with a demonstration of the instructed task (--model.reference=false: instruction only)",
    )
    p.add_argument(
        "--blind", action="store_true", help="train the task-blind control (no instruction, no reference)"
    )
    _add_preset(p, "train_judge")

    p = verbs.add_parser(
        "eval-judge",
        help="judge accuracy on held-out target tasks (real and imagined videos)",
        epilog=_epilog("eval_judge") + " The judge is any backend: --judge.backend openai "
        "--judge.url http://host:8000/v1 points it at a served Qwen3-VL.",
    )
    p.add_argument("--out", required=True, help="output directory for judge_eval.json")
    p.add_argument(
        "--judge", dest="judge_path", default=None, help="generalist judge directory (--judge.path)"
    )
    p.add_argument("--blind", default=None, help="task-blind control judge directory")
    p.add_argument(
        "--reference",
        default=None,
        help="demos of the target tasks, shown to reference judges (--judge.reference)",
    )
    p.add_argument("--data", default=None, help="labeled target-task rollouts; default: collected into OUT")
    p.add_argument("--wm", default=None, help="world model for the imagined-video rows")
    p.add_argument(
        "--policy",
        default=None,
        help="also score the reward RL would see: this policy's own rollouts from the RL initial states, "
        "real vs imagined (needs --wm), before and after dual-noise verification",
    )
    p.add_argument(
        "--vlm-url", default=None, help="judge with a served VLM at this OpenAI-compatible URL (e.g. vLLM)"
    )
    _add_preset(p, "eval_judge")

    # dream -----------------------------------------------------------------------------------------------
    p = verbs.add_parser(
        "dream",
        help="GRPO on a held-out task inside the world model (or --env sim: online RL)",
        epilog=_epilog("dream"),
    )
    p.add_argument("--task", required=True, help="the target task")
    p.add_argument("--policy", required=True, help="starting policy directory (the 1-shot SFT policy)")
    p.add_argument("--wm", default=None, help="world model directory (from pretrain-wm)")
    p.add_argument(
        "--judge", dest="judge_path", default=None, help="generalist judge directory (--judge.path)"
    )
    p.add_argument(
        "--reference",
        default=None,
        help="the task's demonstration(s) (e.g. the 1-shot demo dataset), shown to reference judges",
    )
    p.add_argument(
        "--vlm-url",
        default=None,
        help="judge with a served VLM at this OpenAI-compatible URL (e.g. vLLM serving Qwen3-VL)",
    )
    p.add_argument(
        "--env",
        dest="env_mode",
        default=None,
        choices=["wm", "sim"],
        help="wm: in imagination (default); sim: the online-RL baseline in the real simulator",
    )
    p.add_argument(
        "--init-from", default=None, help="LeRobot v3 dataset whose first frames are the initial states"
    )
    p.add_argument("--no-dnv", action="store_true", help="ablation: switch dual-noise verification off")
    p.add_argument("--out", required=True, help="output directory; re-running resumes")
    _add_ray(p)
    _add_preset(p, "dream")

    # experiment ------------------------------------------------------------------------------------------
    p = verbs.add_parser("experiment", help="experiments combining stages (the paper's table in miniature)")
    ex = p.add_subparsers(dest="experiment", metavar="NAME", required=True)
    k = ex.add_parser(
        "paper-table",
        help="SFT vs online RL vs RAW-Dream (with/without DNV, oracle, co-train)",
        epilog=_epilog("paper_table"),
    )
    k.add_argument("--sft", required=True, help="the 1-shot SFT policy directory")
    k.add_argument("--wm", default=None, help="zero-shot world model directory")
    k.add_argument("--judge", dest="judge_path", default=None, help="generalist judge directory")
    k.add_argument("--reference", default=None, help="demos of the target tasks, shown to reference judges")
    k.add_argument(
        "--cotrain-wm", default=None, help="co-trained world model directory (pretrain-wm --variant co-train)"
    )
    k.add_argument(
        "--idft-wm", default=None, help="ID-FT world model directory (fine-tuned on target-task rollouts)"
    )
    k.add_argument(
        "--quick",
        action="store_true",
        help="SFT, online RL and RAW-Dream with/without DNV on the 5 targets, 1 seed (preset quick)",
    )
    k.add_argument(
        "--ladder",
        action="store_true",
        help="the link-by-link ladder: SFT, online RL, sim + judge, WM + sim success, RAW-Dream with/without "
        "DNV (preset ladder)",
    )
    k.add_argument(
        "--out", required=True, help="output directory (paper_table.md / .json); re-running resumes"
    )
    k.add_argument("--preset", default=None, help="tiny | quick | ladder | default")
    _add_ray(k)
    k = ex.add_parser(
        "rl-table",
        help="a table of `rawdream dream --eval_start=true` runs: settings, cost, paired success per protocol",
    )
    k.add_argument("runs", nargs="+", help="dream output directories")
    k.add_argument("--json", default=None, help="also write the rows as JSON here (e.g. results/....json)")

    # tasks -----------------------------------------------------------------------------------------------
    p = verbs.add_parser("tasks", help="list the tasks, their instructions and the benchmark split")
    p.add_argument("--split", default="metaworld-heldout5", help="named split (default: metaworld-heldout5)")
    p.add_argument(
        "--sheet", default=None, metavar="PNG", help="also render a contact sheet of all tasks to PNG"
    )
    p.add_argument("--scale", type=int, default=2, help="upscale factor of the contact sheet tiles")
    p.add_argument(
        "--measure",
        action="store_true",
        help="also measure how many pixels each task's objects cover (MuJoCo segmentation, 3 resets)",
    )

    # data ------------------------------------------------------------------------------------------------
    p = verbs.add_parser("info", help="summarise a LeRobot v3 dataset: manifest, features, episodes per task")
    p.add_argument("path", help="dataset directory")
    p.add_argument(
        "--json", help="also write the per-task table and object motion (per scene, per behaviour) here"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="also decode every video frame and check every file against the metadata (exit 1 if damaged)",
    )
    return parser


def _cmd_collect(args, overrides) -> int:
    from rawdream.data.collect import CollectConfig, collect

    if args.kind == "policy":
        from rawdream.data.policy_rollouts import PolicyRolloutsConfig, collect_policy_rollouts

        if args.task:
            overrides["tasks"] = args.task
        pcfg = resolve(PolicyRolloutsConfig, "collect_policy", args.preset, overrides)
        rep = collect_policy_rollouts(pcfg, args.policy, args.out)
        from rawdream.config import save_config

        save_config(pcfg, args.out)
        for task, rate in rep["success_rate"].items():
            print(f"{task:28s} success {rate:.2f}")
        print(
            f"{rep['episodes']} policy rollouts in {args.out} (mean success {rep['mean_success_rate']:.2f}); "
            f"{rep['new_episodes']} new in {rep['seconds']:.0f} s"
        )
        return 0
    if args.kind == "demos" and args.episodes is not None:
        overrides["episodes_per_task"] = args.episodes
    if getattr(args, "task", None):
        overrides["tasks"] = args.task
    cfg = resolve(CollectConfig, f"collect_{args.kind}", args.preset, overrides)
    summary = collect(cfg, args.out, progress=True)
    from rawdream.config import save_config

    save_config(cfg, args.out)
    print(summary.table())
    print(f"dataset: {Path(args.out).resolve()}")
    return 0


def _cmd_pretrain_wm(args, overrides) -> int:
    from rawdream.world_model.train import PretrainWMConfig, pretrain_wm

    if args.variant:
        overrides["variant"] = args.variant
    cfg = resolve(PretrainWMConfig, "pretrain_wm", args.preset, overrides)
    s = pretrain_wm(cfg, args.data, args.out, progress=True, init=args.init)
    recon = s["autoencoder_reconstruction"]
    print(f"world model: {Path(args.out).resolve() / 'world_model.safetensors'} (variant {s['variant']})")
    print(
        f"  autoencoder held-out PSNR {recon['psnr']:.2f} dB, SSIM {recon['ssim']:.3f}; "
        f"trained in {s['seconds']['total'] / 60:.1f} min"
    )
    return 0


def _cmd_eval_wm(args, overrides) -> int:
    from rawdream.eval.wm_fidelity import EvalWMConfig, evaluate_world_model, format_report
    from rawdream.world_model.train import load_world_model

    cfg = resolve(EvalWMConfig, "eval_wm", args.preset, overrides)
    wm = load_world_model(args.wm)
    report = evaluate_world_model(wm, cfg, args.out, progress=True)
    from rawdream.config import save_config

    save_config(cfg, args.out)
    print(format_report(report))
    print(f"\nresults: {Path(args.out).resolve() / 'wm_eval.json'}; videos: {Path(args.out).resolve()}/*.mp4")
    return 0


def _cmd_train_policy(args, overrides) -> int:
    from rawdream.policy.train import TrainPolicyConfig, train_policy

    if args.task:
        overrides["tasks"] = args.task
    if args.demos is not None:
        overrides["demos"] = args.demos
    cfg = resolve(TrainPolicyConfig, f"train_policy_{args.stage}", args.preset, overrides)
    info = train_policy(cfg, args.data, args.out, init=args.init, progress=True)
    print(
        f"policy ({args.stage}): {Path(args.out).resolve() / 'policy.safetensors'}; tasks: {', '.join(info['tasks'])}; "
        f"{info['seconds'] / 60:.1f} min; final {info['final_metrics']}"
    )
    if info["target_trajectories"]:
        print(
            f"target-task trajectories used: {len(info['target_trajectories'])} "
            f"({', '.join(str(u['task']) + ' seed ' + str(u['seed']) for u in info['target_trajectories'])})"
        )
    return 0


def _cmd_eval_policy(args, overrides) -> int:
    from rawdream.eval.success import EvalPolicyConfig, evaluate_policy, format_eval
    from rawdream.policy.train import load_policy

    if args.task:
        overrides["tasks"] = args.task
    if args.episodes is not None:
        overrides["episodes"] = args.episodes
    if args.sampled:
        overrides["greedy"] = False
    if args.layouts:
        overrides["layouts"] = args.layouts
    _ray_overrides(args, overrides, "")
    cfg = resolve(EvalPolicyConfig, "eval_policy", args.preset, overrides)
    before = _load_eval(args.compare, cfg) if args.compare else None  # checked before the long part
    policy = load_policy(args.policy)
    report = evaluate_policy(policy, cfg, args.out, progress=True)
    from rawdream.config import save_config

    save_config(cfg, args.out)
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


def _cmd_train_judge(args, overrides) -> int:
    from rawdream.reward.generalist import TrainJudgeConfig, train_judge

    if args.blind:
        overrides["model.blind"] = True
    cfg = resolve(TrainJudgeConfig, "train_judge", args.preset, overrides)
    info = train_judge(cfg, args.data, args.out, wm_path=args.wm, progress=True, references=args.references)
    v = info["validation"]
    print(
        f"judge: {Path(args.out).resolve()} ({'task-blind control' if cfg.model.blind else 'generalist'}); "
        f"held-out pretraining episodes: AUROC {v['auroc']:.3f}, balanced accuracy {v['balanced_accuracy']:.3f}; "
        f"own-instruction rows: AUROC {info['validation_own']['auroc']:.3f}"
    )
    return 0


def _cmd_eval_judge(args, overrides) -> int:
    from rawdream.eval.judge_accuracy import EvalJudgeConfig, evaluate_judges, format_judge_report

    if args.judge_path:
        overrides["judge.path"] = args.judge_path
    if args.blind:
        overrides["blind_path"] = args.blind
    if args.reference:
        overrides["judge.reference"] = args.reference
    if args.vlm_url:
        overrides.update({"judge.backend": "openai", "judge.url": args.vlm_url})
    cfg = resolve(EvalJudgeConfig, "eval_judge", args.preset, overrides)
    report = evaluate_judges(
        cfg, args.out, data=args.data, wm_path=args.wm, progress=True, policy_path=args.policy
    )
    print(format_judge_report(report))
    print(f"\nresults: {Path(args.out).resolve() / 'judge_eval.json'}")
    return 0


def _cmd_dream(args, overrides) -> int:
    from rawdream.rl.dream import DreamConfig, dream

    overrides["task"] = args.task
    if args.judge_path:
        overrides["judge.path"] = args.judge_path
    if args.reference:
        overrides["judge.reference"] = args.reference
    if args.vlm_url:
        overrides.update({"judge.backend": "openai", "judge.url": args.vlm_url})
    if args.env_mode:
        overrides["env_mode"] = args.env_mode
    if args.no_dnv:
        overrides["dnv"] = False
    _ray_overrides(args, overrides, "")
    cfg = resolve(DreamConfig, "dream", args.preset, overrides)
    info = dream(cfg, args.policy, args.out, wm_path=args.wm, init_from=args.init_from, progress=True)
    print(
        f"policy after RL ({info['env_mode']}, judge {info['judge']}): {Path(args.out).resolve()}; "
        f"{info['seconds'] / 60:.1f} min; real trajectories used by RL: {info['real_trajectories_rl']}"
    )
    for layouts, d in info.get("paired", {}).items():
        print(
            f"  {layouts:9s} layouts: {d['before'] * 100:.1f}% -> {d['after'] * 100:.1f}% "
            f"(paired {d['difference'] * 100:+.1f} [{d['ci95'][0] * 100:+.1f}, {d['ci95'][1] * 100:+.1f}], "
            f"+{d['gained']} / -{d['lost']} of {d['episodes']} episodes, McNemar p {d['mcnemar_p']:.3g})"
        )
    return 0


def _cmd_experiment(args, overrides) -> int:
    from rawdream.experiment.paper_table import PaperTableConfig, run_paper_table

    if args.experiment == "rl-table":
        from rawdream.experiment.rl_table import format_rl_table, rl_table
        from rawdream.io import atomic_write_json

        rows = rl_table(args.runs)
        if args.json:
            atomic_write_json(args.json, {"rows": rows})
        print(format_rl_table(rows), end="")
        return 0

    preset = args.preset or ("ladder" if args.ladder else "quick" if args.quick else "default")
    _ray_overrides(args, overrides, "dream", "eval")
    if args.reference:
        overrides["dream.judge.reference"] = args.reference
    cfg = resolve(PaperTableConfig, "paper_table", preset, overrides)
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


def _cmd_run(args, overrides) -> int:
    from rawdream.layout import RunLayout
    from rawdream.pipeline import format_summary, resolve_run, run

    cfg = resolve_run(args.preset, overrides)
    summary = run(cfg, args.out, progress=True)
    print(format_summary(summary))
    print(f"\nreport: {RunLayout(Path(args.out).resolve()).report}")
    return 0


def _cmd_report(args, overrides) -> int:
    from rawdream.report.html import write_report

    print(f"report: {write_report(args.run_dir).resolve()}")
    return 0


def _cmd_tasks(args, overrides) -> int:
    from rawdream.envs.tasks import instruction, tasks_of
    from rawdream.splits import SplitConfig, resolve_split

    split = resolve_split(SplitConfig(name=args.split))
    print(
        f"split {split.name} ({split.backend}): {len(split.targets)} targets, {len(split.pretrain)} pretraining "
        f"tasks\n"
    )
    for t in tasks_of(split.backend):
        role = "target" if t in split.targets else "pretrain"
        print(f"{t:28s} {role:9s} {instruction(t)}")
    if args.sheet:
        from rawdream.envs.sheet import contact_sheet

        path = contact_sheet(args.sheet, scale=args.scale, highlight=split.targets)
        print(f"\ncontact sheet: {path}")
    if args.measure:
        from rawdream.envs.base import EnvConfig
        from rawdream.envs.sheet import object_visibility

        cfg = EnvConfig()
        vis = object_visibility(cfg)
        print(f"\nobject pixels at {cfg.image_size}x{cfg.image_size} (median of 3 resets):")
        print(f"{'task':28s} {'objects':>8s} {'smallest':>9s}  smallest body")
        for t, m in vis.items():
            print(f"{t:28s} {m['object_px']:8d} {m['smallest_px']:9d}  {m['smallest_body']}")
        small = sorted(m["smallest_px"] for m in vis.values())
        print(
            f"smallest object over all tasks: {small[0]} px; median task's smallest object: {small[len(small) // 2]} px"
        )
    return 0


def _cmd_info(args, overrides) -> int:
    import json

    from rawdream.data.collect import dataset_summary, object_motion
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
    print(
        f"{ds.root}: LeRobot {ds.info['codebase_version']}, {ds.num_episodes} episodes, {ds.num_frames} frames, "
        f"{ds.fps:g} fps, frame stride {ds.frame_stride}"
    )
    for key, feat in ds.features.items():
        print(f"  {key:34s} {feat['dtype']:8s} {feat['shape']}")
    manifest = {k: v for k, v in ds.manifest.items() if k not in ("collect_config",)}
    print("manifest:", json.dumps(manifest, indent=None)[:2000])
    if not args.verify:
        print("(video frames not decoded; --verify decodes every frame and checks it against the metadata)")
    rows = dataset_summary(ds)
    motion = object_motion(ds) if "observation.environment_state" in ds.features else {}
    free = set(ds.manifest.get("task_free_scenes") or [])
    print(f"\n{'task':28s} {'episodes':>8s} {'frames':>8s} {'success':>8s} {'moves':>6s}")
    for task, row in sorted(rows.items()):
        success = "withheld" if row["success"] is None else f"{row['success']:.2f}"
        moves = f"{motion[task]['all']:.2f}" if task in motion else ""
        mark = "  (task-free play)" if task in free else ""
        print(f"{task:28s} {int(row['episodes']):8d} {int(row['frames']):8d} {success:>8s} {moves:>6s}{mark}")
    if motion:
        print("moves: fraction of frames in which an object moves; per behaviour (mean over scenes):")
        for group, names in (("task-free scenes", free), ("other scenes", set(motion) - free)):
            per_b: dict[str, list[float]] = {}
            for scene in names & set(motion):
                for b, v in motion[scene].items():
                    per_b.setdefault(b, []).append(v)
            if per_b:
                cells = "  ".join(f"{b} {sum(v) / len(v):.2f}" for b, v in sorted(per_b.items()))
                print(f"  {group:18s} {cells}")
    if args.json:
        atomic_write_json(
            args.json,
            {
                "dataset": str(ds.root.resolve()),
                "play_scenes": ds.manifest.get("play_scenes"),
                "task_free_scenes": sorted(free),
                "episodes": rows,
                "object_motion": motion,
            },
        )
        print(f"wrote {args.json}")
    return 0


COMMANDS = {
    "collect": _cmd_collect,
    "pretrain-wm": _cmd_pretrain_wm,
    "eval-wm": _cmd_eval_wm,
    "train-policy": _cmd_train_policy,
    "eval-policy": _cmd_eval_policy,
    "train-judge": _cmd_train_judge,
    "eval-judge": _cmd_eval_judge,
    "dream": _cmd_dream,
    "experiment": _cmd_experiment,
    "run": _cmd_run,
    "report": _cmd_report,
    "tasks": _cmd_tasks,
    "info": _cmd_info,
}


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
        overrides = parse_overrides(extra)
        return COMMANDS[args.verb](args, overrides)
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
