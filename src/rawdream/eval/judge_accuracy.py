"""``rawdream eval-judge``: judge accuracy against the simulator's ground truth on held-out target tasks.

Per task: base rate, AUROC, balanced accuracy, precision, recall, F1 (beside the F1 of always answering
"success", which is high at these base rates) and the confusion matrix, for (a) real videos of the target tasks,
(b) the world model's imagined videos of the same action sequences (ground truth: the real replay's success),
and (c) the instruction-blind control judge, which must do clearly worse - the proof that the instruction is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rawdream import seeds
from rawdream.config import save_config
from rawdream.eval.metrics import auroc, binary_metrics, nanmean, verdict_arrays  # noqa: F401  (auroc re-exported)
from rawdream.eval.on_policy import RewardFidelityConfig
from rawdream.io import atomic_write_json, read_json
from rawdream.reward.base import (
    JudgeConfig,
    check_abstains,
    for_backend,
    judge_config,
    make_judge,
    probe_judge,
    reading_through,
)
from rawdream.splits import SplitConfig, resolve_split


def judge_metrics(
    verdicts, tasks: list[str], labels: np.ndarray, targets: list[str], threshold: float
) -> dict[str, dict[str, Any]]:
    """Per-task metrics of ``verdicts`` against ``labels``. An abstain is neither a success nor a failure
    prediction: it is left out of the metrics and counted on its own (scoring it 0.5 would make it a "success"
    at the default threshold)."""
    answered = np.array([v.success is not None for v in verdicts], bool)
    scores, said_success = verdict_arrays(verdicts)
    labels = np.asarray(labels, bool)
    per_task = {}
    for t in targets:
        rows = [k for k, x in enumerate(tasks) if x == t]
        if not rows:
            continue
        ok = [k for k in rows if answered[k]]
        metrics = binary_metrics(scores[ok], labels[ok], threshold, predicted=said_success[ok])
        per_task[t] = {**metrics, "abstains": len(rows) - len(ok)}
    return per_task


@dataclass
class EvalJudgeConfig:
    # readout keys added after runs were recorded: at these values they leave a recorded stage's hash as it was
    HASH_QUIET: ClassVar[dict] = {
        "judge.object_gate_space": "head",
        "judge.object_gate_min_px": 3.0,
        "judge.object_fade_min": 0.0,
        "judge.calibration_wm": "",
        "judge.calibration_draws": 4,
    }
    RANGES: ClassVar[dict] = {"episodes_per_task": ">=1", "workers": (">=0", "0 or 1: in this process")}

    split: SplitConfig = field(default_factory=SplitConfig)
    judge: JudgeConfig = field(default_factory=judge_config)  # generalist unless --judge.backend
    blind_path: str = ""  # the instruction-blind control judge (generalist trained with --blind)
    episodes_per_task: int = 48
    workers: int = 2
    # with a policy: its own rollouts from the RL initial states, real vs imagined vs after DNV (what RL sees)
    on_policy: RewardFidelityConfig = field(default_factory=RewardFidelityConfig)


def collect_target_videos(cfg: EvalJudgeConfig, out: Path, progress: bool) -> Path:
    """Labeled rollouts of the target tasks for evaluation only (seeds in the JUDGE_EVAL range)."""
    from rawdream.config import resolve
    from rawdream.data.collect import CollectConfig, collect

    ccfg = resolve(
        CollectConfig,
        "collect_labeled",
        "default",
        {
            "tasks": ["targets"],
            "episodes_per_task": cfg.episodes_per_task,
            "workers": cfg.workers,
            "seed_offset": seeds.JUDGE_EVAL - seeds.LABELED,
        },
    )
    ccfg = replace(ccfg, split=cfg.split)
    collect(ccfg, out, progress=progress)
    return out


def evaluate_judges(
    cfg: EvalJudgeConfig,
    out: str | Path,
    data: str | Path | None = None,
    wm_path: str | Path | None = None,
    progress: bool = True,
    policy_path: str | Path | None = None,
) -> dict[str, Any]:
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.reward.generalist import imagine_videos, labeled_videos

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, judge=reading_through(cfg.judge, wm_path))
    save_config(cfg, out)
    split = resolve_split(cfg.split)
    judges = {cfg.judge.backend: cfg.judge}
    reference = getattr(cfg.judge, "reference", "")  # the backends that compare with a demonstration have one
    if cfg.blind_path:
        judges["blind control"] = for_backend(
            cfg.judge, "generalist", path=cfg.blind_path, reference=reference
        )
    built = {name: make_judge(jcfg, purpose="evaluation") for name, jcfg in judges.items()}
    for judge in built.values():  # before any collection or imagination: a dead judge fails in seconds
        probe_judge(judge)
    data = Path(data) if data else collect_target_videos(cfg, out / "target_videos", progress)
    ds = LeRobotDataset(data)
    vids = labeled_videos(ds)
    targets = list(split.targets)
    left_out: dict[str, str] = {}
    if reference:  # a reference judge can only score the tasks it has a demonstration of
        from rawdream.reward.references import References

        with_ref = set(References.from_dataset(reference).tasks)
        left_out = {
            t: f"no successful demonstration in {reference} (the reference judge needs one)"
            for t in targets
            if t not in with_ref
        }
        targets = [t for t in targets if t in with_ref]
    missing = [t for t in targets if t not in set(vids.task)]
    left_out.update({t: f"no labeled rollouts of it in {data}" for t in missing})
    targets = [t for t in targets if t not in missing]
    if not targets:
        raise ValueError(f"no target task can be scored: {left_out}")
    keep = [i for i, t in enumerate(vids.task) if t in targets]
    sources: dict[str, list[np.ndarray]] = {"real": [vids.video(i) for i in keep]}
    if wm_path:
        from rawdream.world_model.train import load_world_model

        sources["imagined"] = imagine_videos(load_world_model(wm_path), ds, np.asarray(keep), progress)
    tasks = [vids.task[i] for i in keep]
    labels = vids.success[keep]
    from rawdream.envs.tasks import instruction

    instructions = [instruction(t) for t in tasks]
    report: dict[str, Any] = {
        "data": str(data),
        "label": "simulator success reached at any step",
        "reference": reference or None,
        "left_out": left_out,  # targets not scored, and why: never dropped without a word
        "results": {},
    }
    for jname, jcfg in judges.items():
        judge = built[jname]
        for src, videos in sources.items():
            verdicts = judge(
                videos,
                instructions,
                tasks=tasks,
                seeds=[vids.seed[i] for i in keep],
                actions=np.stack(
                    [ds.column("action")[ds.episode_bounds(i)[0] : ds.episode_bounds(i)[1] - 1] for i in keep]
                )
                if jcfg.backend == "oracle"
                else None,
            )
            check_abstains(
                verdicts, jcfg, f"eval-judge ({jname}, {src} videos)", getattr(judge, "stats", None)
            )
            per_task = judge_metrics(verdicts, tasks, labels, targets, jcfg.threshold)
            abstains = sum(m["abstains"] for m in per_task.values())
            summary = {
                k: float(nanmean([m[k] for m in per_task.values()]))
                for k in (
                    "base_rate",
                    "auroc",
                    "balanced_accuracy",
                    "precision",
                    "recall",
                    "f1",
                    "f1_always_success",
                )
            }
            report["results"][f"{jname} | {src}"] = {
                "per_task": per_task,
                "mean": summary,
                "abstains": abstains,
            }
    if policy_path and wm_path:
        from rawdream.eval.reward_fidelity import reward_fidelity
        from rawdream.policy.train import load_policy
        from rawdream.world_model.train import load_world_model

        policy, wm = load_policy(policy_path), load_world_model(wm_path)
        report["on_policy"] = {
            "policy": str(Path(policy_path).resolve()),
            "world_model": world_model_provenance(wm, wm_path),
            "tasks": {t: reward_fidelity(policy, wm, cfg.on_policy, t, cfg.judge) for t in targets},
        }
    atomic_write_json(out / "judge_eval.json", report)
    return report


def world_model_provenance(wm, path: str | Path) -> dict[str, Any]:
    """What a world model is, for a table of reward fidelity against training budget and play protocol."""
    info = getattr(wm, "info", None) or {}
    seconds = info.get("seconds") or {}
    steps = (info.get("final_metrics") or {}).get("steps")
    init = info.get("init")
    init_json = Path(init) / "world_model.json" if init else None
    if steps is not None and init_json is not None and init_json.exists():
        # a fine-tune (pretrain-wm --init): its dynamics steps come on top of the model it started from
        init_steps = (read_json(init_json).get("final_metrics") or {}).get("steps")
        steps = steps + init_steps if init_steps is not None else None
    return {
        "path": str(Path(path).resolve()),
        "play_protocol": (info.get("play_protocol") or {}).get("scenes"),
        "dynamics_steps": steps,
        "fine_tuned_from": init,
        "train_minutes": round(seconds.get("total", float("nan")) / 60, 1) if seconds else None,
        "arch": wm.cfg.dynamics.arch,
    }


def _num(x: float, width: int) -> str:
    """A metric, or n/a where it is undefined (no decided verdicts, one class only)."""
    return f"{x:{width}.2f}" if x == x else f"{'n/a':>{width}s}"


PAPER_ANCHOR = "paper anchor: zero-shot Qwen3-VL on LIBERO-Goal, F1 0.35 (precision 0.61, recall 0.25)"


def format_judge_report(report: dict[str, Any]) -> str:
    from rawdream.eval.reward_fidelity import format_reward_fidelity

    lines = [PAPER_ANCHOR]
    for task, why in report.get("left_out", {}).items():
        lines.append(f"not scored: {task} - {why}")
    if report.get("on_policy"):
        lines.append("\non-policy reward fidelity (the policy's own rollouts; what RL in imagination sees):")
        lines += [format_reward_fidelity(r) for r in report["on_policy"]["tasks"].values()]
    for name, res in report["results"].items():
        lines.append(f"\n{name}  (abstains: {res['abstains']})")
        lines.append(
            f"  {'task':14s} {'base':>5s} {'AUROC':>6s} {'balAcc':>6s} {'prec':>5s} {'rec':>5s} {'F1':>5s} "
            f"{'F1(yes)':>7s}  confusion tp/fp/fn/tn"
        )
        for t, m in {**res["per_task"], "mean": res["mean"]}.items():
            c = m.get("confusion")
            conf = f"{c['tp']}/{c['fp']}/{c['fn']}/{c['tn']}" if c else ""
            cells = [
                _num(m[k], w)
                for k, w in (("base_rate", 5), ("auroc", 6), ("balanced_accuracy", 6), ("precision", 5))
            ]
            cells += [_num(m[k], w) for k, w in (("recall", 5), ("f1", 5), ("f1_always_success", 7))]
            lines.append(f"  {t:14s} {' '.join(cells)}  {conf}")
    return "\n".join(lines)
