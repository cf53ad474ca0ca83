"""``rawdream experiment judge-check``: which of several judges trained apart can RL in imagination follow?

Why: one training seed of the same judge recipe decided RAW-Dream's outcome on drawer-open (+18.8 points with one
seed, -37.5 with another, on the same world model and policy), and how well a judge reads videos before RL did not
say which seed would hold (closed-loop AUROC 0.55-0.92 on both sides; docs/judges.md, "Which link decided the main
job's fall"). What did tell them apart, with no target data at all: the same short RAW-Dream from the base policy
on pretraining tasks, where the simulator may score the result. A judge that RL exploits there (the policy learns
what the judge mistakes for success, and real success falls) collapsed the target too, 3 judges of 3.

Per candidate judge and check task: ``dream`` in the world model with that judge as the reward (read as the
target's RL will read it: object gate, calibration against a pretraining demonstration as reference), from the
base policy, scored in the simulator before and after on both protocols (paired, the same episodes). A judge's
score is the episodes gained minus lost, summed over check tasks and protocols (each protocol is reported on its
own); the pick is the highest score, ties going to the earlier candidate (the run's first judge).

The check tasks are pretraining tasks, and so part of every candidate's training data: the check says which judge
RL can follow on tasks it knows - a judge that collapses there will not hold on a new task; one that holds there
still may not.

Per target (``--per_target=true``): what RL exploits is the target's own (the judge that passed the check above
lost sweep-into, lever-pull and door-close, results/judge_check/), so the picked judge is also checked on each
target's scene family - the pretraining tasks that share the target's scene and objects (the catalogue's
``scene_families``: drawer-close for drawer-open, door-open/lock/unlock for door-close, ...) - and RL on a target
goes ahead only where RL against the judge did not lower real success on them (gained >= lost, summed over the
family's tasks and both protocols; no significance test: one lost episode more than gained stops it). A family on
which no episode changed (a task the base already solves, or one the judge gives no signal on) is no evidence
either way and does not stop RL. A target with no pretraining sibling has nothing to be checked on, and RL there
does not go ahead.

Hardening (``--harden_rounds=N``, with ``--per_target=true``): a check run that lowered real success left behind a
policy that does exactly what the judge mistakes for success in that scene - its exploit. When the per-target
check stops RL on a target, each family check run's policy acts in the world model on its task (imagined rollouts,
as RL's; the simulator replays the imagined actions and labels them: pretraining tasks only, no target data), the
judge is retrained by its own recipe and seed on its own training data plus those rollouts, and the per-target
check runs again with the retrained judge from the base policy - RL may find a new exploit, and the check would
show it. Up to N rounds, each adding the previous round's exploits (``OUT/hardenedK/``: ``exploits/TASK`` the new
data, ``judge/`` the judge, ``TASK/`` its check runs). The targets' RL uses the last round's judge and verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rawdream.config import build, save_config, to_dict
from rawdream.eval.success import before_after, pool_paired
from rawdream.io import atomic_write_json, atomic_write_text, read_json
from rawdream.reward.base import reading_through
from rawdream.rl.dream import DreamConfig, dream
from rawdream.splits import SplitConfig, resolve_split

PROTOCOLS = ("practised", "new")


@dataclass
class JudgeCheckConfig:
    RANGES: ClassVar[dict] = {
        "iterations": ">=1",
        "init_states": ">=1",
        "eval_episodes": ">=1",
        "harden_rounds": ">=0",
        "harden_episodes": ">=1",
    }

    split: SplitConfig = field(default_factory=SplitConfig)
    # pretraining tasks the simulator scores (the presets name them: one with room to rise, one to fall)
    tasks: list[str] = field(default_factory=list)
    # the check's size (the measured one, results/judge_seeds/: 40 iterations, 16 episodes per protocol); every
    # other RL setting is the recipe's (``dream``: in a run, the run's own --dream section, DNV included)
    iterations: int = 40
    init_states: int = 32
    eval_episodes: int = 16
    dream: DreamConfig = field(default_factory=DreamConfig)
    # rawdream run: when RL against no candidate raised real success on the check tasks, skip RL on the targets
    # and keep the SFT policy (the summary says why) rather than train against a reward RL is known to exploit
    abstain: bool = True
    # also check the picked judge on each target's scene family and keep RL to the targets where RL against it did
    # not lower real success there (module docstring); with it and one judge, ``tasks`` may be empty (no pick, and
    # no run-wide abstain). With abstain=false the family runs are still made and reported, and RL runs everywhere
    per_target: bool = False
    # rounds of hardening the judge on its own check runs' exploits while the per-target check skips a target that
    # has a family (module docstring; needs per_target and a judge trained by ``train-judge``); 0: none
    harden_rounds: int = 0
    harden_episodes: int = 32  # imagined rollouts of each family check run's policy per round

    def validate(self) -> None:
        if self.dream.env_mode != "wm":
            raise ValueError(
                f"judge-check runs RL in imagination (--dream.env_mode=wm), got {self.dream.env_mode!r}"
            )
        if self.dream.judge.backend != "generalist":
            raise ValueError(
                f"judge-check compares generalist judges (folders), got --dream.judge.backend="
                f"{self.dream.judge.backend}; drop the flag"
            )
        if not self.dream.eval_layouts:
            raise ValueError(
                "judge-check scores the paired change in real success per protocol: leave --dream.eval_layouts "
                "at [practised,new]"
            )
        if self.harden_rounds and not self.per_target:
            raise ValueError(
                f"--harden_rounds={self.harden_rounds} hardens the judge on the per-target check's exploits: add "
                "--per_target=true"
            )

    def check_tasks(self, flag: str = "--tasks", judges: int = 1) -> None:
        """The check tasks must be pretraining tasks of the split: a target is never scored for a choice made
        before it is named. (Not in ``validate``: a run's section is checked only when the run checks judges.)"""
        from rawdream.envs.tasks import canonical_task

        split = resolve_split(self.split)
        example = f"{flag}=[{','.join(split.pretrain[:2])}]"
        if not self.tasks and judges > 1:
            raise ValueError(
                f"judge-check of {judges} judges needs check tasks to pick one by: e.g. {example}"
            )
        if not self.tasks and not self.per_target:
            raise ValueError(f"judge-check needs at least one check task, a pretraining task: e.g. {example}")
        wrong = [t for t in self.tasks if canonical_task(t) not in split.pretrain]
        if wrong:
            raise ValueError(
                f"judge-check tasks {', '.join(wrong)}: not pretraining tasks of split {split.name} (a target task is "
                f"never scored for a choice made before it is named); name pretraining tasks, e.g. {example}"
            )


def family_tasks(split, targets: list[str] | None = None) -> dict[str, list[str]]:
    """Target -> the pretraining tasks of its scene family (the per-target check's tasks; may be empty)."""
    from rawdream.reward.siblings import siblings

    return {t: siblings(t, split) for t in (targets or split.targets)}


def family_union(families: dict[str, list[str]]) -> list[str]:
    """Every family's tasks once, in order (a task shared by two targets' families runs once)."""
    return list(dict.fromkeys(t for fam in families.values() for t in fam))


def check_dream_config(cfg: JudgeCheckConfig, task: str, judge: dict[str, Any]) -> DreamConfig:
    """The check's RL run of one judge on one task: the recipe's settings at the check's size, evaluated before
    and after (paired), the judge section given."""
    return build(
        DreamConfig,
        {
            **to_dict(cfg.dream),
            "task": task,
            "split": to_dict(cfg.split),
            "judge": judge,
            "iterations": cfg.iterations,
            "eval_every": cfg.iterations,
            "init_states": cfg.init_states,
            "eval_episodes": cfg.eval_episodes,
            "eval_start": True,
        },
    )


def run_judge_check(
    cfg: JudgeCheckConfig,
    judges: dict[str, str | Path],
    judge_section: dict[str, Any],
    policy: str | Path,
    wm: str | Path,
    out: str | Path,
    progress: bool = True,
    log=print,
    targets: list[str] | None = None,
) -> dict[str, Any]:
    """RL against each judge of ``judges`` (name -> folder) on each check task from ``policy`` in ``wm``;
    ``judge_section`` is how every judge is read (backend generalist, reference demos, gate, calibration).
    With ``cfg.per_target``, the picked judge on the scene family of each of ``targets`` (default: the split's).
    A finished (judge, task) run on disk is not run again; a killed one resumes (``dream`` checkpoints)."""
    if len(judges) < 1:
        raise ValueError("judge-check needs at least one judge: --judges A,B")
    cfg.check_tasks(judges=len(judges))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    runs: dict[str, dict[str, Any]] = {}

    if cfg.harden_rounds:  # refused before hours of check runs, not after them
        for path in judges.values():
            if not read_json(Path(path) / "judge.json").get("dataset"):
                raise ValueError(
                    f"judge {path}: its judge.json names no training data to retrain it on; harden a judge "
                    "trained by `rawdream train-judge`, or set harden_rounds=0"
                )

    def check(name: str, path: str | Path, task: str, seed_offset: int = 0) -> None:
        """RL against judge ``name`` on ``task``, or the finished run of it on disk (``out/name/task``)."""
        d = out / name / task
        dcfg = check_dream_config(cfg, task, {**judge_section, "backend": "generalist", "path": str(path)})
        dcfg.seed += seed_offset
        dcfg.judge = reading_through(dcfg.judge, wm)  # as dream records it: a resumed check compares the same
        if (d / "policy.json").exists():
            _same_run(d, dcfg)
        else:
            log(f"[judge-check] RL against judge {name} on {task}")
            dream(
                dcfg,
                policy,
                d,
                wm_path=wm,
                progress=progress,
                log_fn=log,
            )
        runs.setdefault(name, {})[task] = read_json(d / "policy.json")["paired"]

    for name, path in judges.items():
        for task in cfg.tasks:
            check(name, path, task)
    report = score_judges(runs, {n: str(p) for n, p in judges.items()}, cfg.tasks)
    if cfg.per_target:
        picked, path = report["selected"], judges[report["selected"]]
        families = family_tasks(resolve_split(cfg.split), targets)
        for task in family_union(families):
            check(picked, path, task)
        report["targets"] = score_targets(runs[picked], families)
        report["hardening"] = []
        report["targets_judge"] = str(path)
        for k in range(1, cfg.harden_rounds + 1):
            if all(v["rl"] for v in report["targets"].values() if v["tasks"]):
                break  # every target that can be checked passed: nothing left to harden against
            if cfg.abstain and report["tasks"] and not report["selected_gains"]:
                break  # the run-wide check already keeps RL off every target
            name = f"hardened{k}"
            source = report["hardening"][-1]["judge"] if report["hardening"] else str(path)
            source_runs = out / (f"hardened{k - 1}" if k > 1 else picked)
            log(f"[judge-check] hardening round {k}: the judge on its check runs' exploits")
            new = harden_judge(
                cfg, source, source_runs, family_union(families), wm, out / name, k, progress, log
            )
            # the re-check's RL draws other streams than the runs whose exploits the judge was just shown
            for task in family_union(families):
                check(name, new["judge"], task, seed_offset=k)
            before, report["targets"] = report["targets"], score_targets(runs[name], families)
            report["hardening"].append(
                {"round": k, "name": name, **new, "targets_before": before, "targets": report["targets"]}
            )
            report["targets_judge"] = new["judge"]  # the targets' RL reads the last round's judge
    atomic_write_json(out / "judge_check.json", report)
    atomic_write_text(out / "judge_check.md", format_judge_check(report))
    return report


def harden_judge(
    cfg: JudgeCheckConfig,
    judge: str | Path,
    check_runs: Path,
    tasks: list[str],
    wm: str | Path,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """One hardening round (module docstring): the imagined rollouts of each check run's policy
    (``check_runs/TASK``) on its task in ``wm``, labelled by the simulator, then ``judge`` retrained by its recipe
    on its training data plus them, into ``out/judge``. Resumes: finished collections and a finished judge are
    kept. Returns the new judge's folder, the data added and the exploits' replayed success per task."""
    from rawdream.config import load_config
    from rawdream.data.policy_rollouts import PolicyRolloutsConfig, collect_policy_rollouts
    from rawdream.envs.base import EnvConfig
    from rawdream.io import file_sha256
    from rawdream.reward.generalist import TrainJudgeConfig, train_judge

    judge = Path(judge)
    info = read_json(judge / "judge.json")
    # a round is reused only if made from these inputs: the judge, each check run's policy, the collection
    inputs = {
        "judge": str(judge),
        "judge_files": info.get("files"),
        "policies": {t: file_sha256(check_runs / t / "policy.safetensors") for t in tasks},
        "episodes": cfg.harden_episodes,
        "seed": seed,
        "rollouts": {
            k: v
            for k, v in to_dict(cfg.dream).items()
            if k in ("horizon", "temperature", "exploration", "env")
        },
    }
    record = out / "harden.json"
    if record.exists() and read_json(record) != inputs:
        raise ValueError(
            f"{out} holds a hardening round made from other inputs (judge, check runs or rollout settings); use "
            "another --out or delete that folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, inputs)
    exploits, success = [], {}
    for task in tasks:
        d = out / "exploits" / task
        pcfg = build(
            PolicyRolloutsConfig,
            {
                "split": to_dict(cfg.split),
                # the RL horizon sets the episode length (collect policy refuses a longer simulator episode)
                "env": {**to_dict(cfg.dream.env), "max_steps": EnvConfig().max_steps},
                "tasks": [task],
                "episodes_per_task": cfg.harden_episodes,
                # as the check's RL drew its rollouts
                "horizon": cfg.dream.horizon,
                "temperature": cfg.dream.temperature,
                "exploration": cfg.dream.exploration,
                "workers": cfg.dream.workers,
                "seed": seed,  # each round's sampling streams its own (the layouts are collect policy's)
            },
        )
        rep = collect_policy_rollouts(pcfg, check_runs / task, d, progress=progress, wm_path=wm)
        exploits.append(str(d))
        success[task] = rep["success_rate"].get(task)
    new = out / "judge"
    if not (new / "judge.json").exists():
        train_judge(
            load_config(TrainJudgeConfig, judge / "config.yaml"),
            ",".join([*str(info["dataset"]).split(","), *exploits]),
            new,
            wm_path=info.get("world_model"),
            progress=progress,
            log_fn=log,
            references=info.get("references"),
        )
    return {"judge": str(new), "from": str(judge), "exploits": exploits, "exploit_success": success}


def _same_run(d: Path, dcfg: DreamConfig) -> None:
    """A finished check run is reused only if it ran these settings (a changed check must not read old runs)."""
    import yaml

    saved = yaml.safe_load((d / "config.yaml").read_text()) or {}
    saved.pop("config_type", None)
    if saved != to_dict(dcfg):
        changed = sorted(k for k in set(saved) | set(to_dict(dcfg)) if saved.get(k) != to_dict(dcfg).get(k))
        raise ValueError(
            f"{d} holds a finished check run with other settings ({', '.join(changed)}); use another --out or "
            f"delete that folder"
        )


def score_judges(
    runs: dict[str, dict[str, dict[str, Any]]], paths: dict[str, str], tasks: list[str]
) -> dict[str, Any]:
    """``runs[judge][task][protocol]`` -> the paired before/after of that RL run. Each judge's score is gained minus
    lost episodes, summed over tasks and protocols; the pick is the highest (ties: the earlier judge)."""
    rows = []
    for name in paths:  # candidates' order: ties go to the earlier one
        per_task = runs.get(name, {})
        missing = [t for t in tasks if t not in per_task]
        if missing:
            raise ValueError(f"judge {name}: no check run on {', '.join(missing)}")
        net = {}
        for p in PROTOCOLS:
            cells = [per_task[t][p] for t in tasks if p in per_task[t]]
            if cells:
                net[p] = pool_paired(cells)
        rows.append(
            {
                "judge": name,
                "path": paths[name],
                "tasks": {t: per_task[t] for t in tasks},
                "pooled": net,
                "score": sum(v["gained"] - v["lost"] for v in net.values()),
            }
        )
    best = max(rows, key=lambda r: r["score"])  # max keeps the first of equal scores
    return {
        "rows": rows,
        "tasks": list(tasks),
        "selected": best["judge"],
        "selected_path": best["path"],
        "selected_score": best["score"],
        # the pick may only be the least harmful: the summary says so rather than call it a gain
        "selected_gains": best["score"] > 0 if tasks else None,  # None: no check tasks, nothing to pick by
    }


def score_targets(runs: dict[str, dict[str, Any]], families: dict[str, list[str]]) -> dict[str, Any]:
    """``runs[task][protocol]`` -> the picked judge's check runs; per target, gained - lost over its family's
    tasks and both protocols, and whether RL on the target goes ahead (it has a family, and gained >= lost)."""
    out = {}
    for target, fam in families.items():
        pool = pool_paired([runs[t][p] for t in fam for p in PROTOCOLS if p in runs[t]])
        gained, lost = pool["gained"], pool["lost"]
        if not fam:
            why = "no pretraining task shares its scene: nothing to check RL against the judge on"
        elif gained < lost:
            why = f"RL against the judge on {', '.join(fam)} lowered real success (+{gained} / -{lost} episodes)"
        else:  # 0 / 0 is no evidence either way (e.g. a family the base already solves): it does not stop RL
            why = (
                f"RL against the judge on {', '.join(fam)} did not lower real success (+{gained} / -{lost} episodes"
                + (", none changed)" if gained == lost == 0 else ")")
            )
        out[target] = {
            "tasks": list(fam),
            "runs": {t: runs[t] for t in fam},  # per task and protocol: the paired before / after
            **pool,
            "score": gained - lost,
            "rl": bool(fam) and gained >= lost,
            "why": why,
        }
    return out


def format_judge_check(report: dict[str, Any]) -> str:
    tasks = report["tasks"]
    head = [
        "judge",
        *[f"{t} {p}" for t in tasks for p in PROTOCOLS],
        "pooled practised",
        "pooled new",
        "score",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        cells = [r["judge"] + (" (picked)" if r["judge"] == report["selected"] else "")]
        for t in tasks:
            for p in PROTOCOLS:
                cells.append(before_after(r["tasks"][t].get(p)))
        for p in PROTOCOLS:
            v = r["pooled"].get(p)
            cells.append(f"+{v['gained']} / -{v['lost']} (p {v['mcnemar_p']:.2g})" if v else "-")
        cells.append(f"{r['score']:+d}")
        lines.append("| " + " | ".join(cells) + " |")
    verdict = (
        f"picked {report['selected']}: RL against it raised real success on the check tasks ({report['selected_score']:+d} episodes)"
        if report["selected_gains"]
        else f"picked {report['selected']}, the least harmful: RL against no candidate raised real success on the "
        f"check tasks (best {report['selected_score']:+d} episodes)"
    )
    text = (
        "\n".join(lines) + "\n\n" + verdict + "\n"
        if tasks
        else f"no check tasks: judge {report['selected']}\n"
    )
    if "targets" in report:
        rounds = report.get("hardening") or []
        first = rounds[0]["targets_before"] if rounds else report["targets"]
        text += _targets_table(report["selected"], first, final=not rounds)
        for r in rounds:
            added = ", ".join(f"{t} {v:.2f}" if v is not None else t for t, v in r["exploit_success"].items())
            text += (
                f"\nhardening round {r['round']}: {r['from']} retrained with the imagined rollouts of its check runs' "
                f"policies added (simulator-replayed success: {added}) -> {r['judge']}\n"
            )
            text += _targets_table(r["name"], r["targets"], final=r is rounds[-1])
    return text


def _targets_table(judge: str, targets: dict[str, Any], final: bool) -> str:
    head = f"\nper target, RL against {judge} on the target's scene family"
    text = head + (":\n\n" if final else " (before hardening):\n\n")
    text += "| target | RL on the family's pretraining tasks (practised / new) | gained / lost | RL on the target |\n"
    text += "|---|---|---|---|\n"
    for target, v in targets.items():
        runs = "; ".join(
            f"{t} " + " / ".join(before_after(v["runs"][t].get(p)) for p in PROTOCOLS) for t in v["tasks"]
        )
        verdict = ("goes ahead" if v["rl"] else "skipped") if final else ("passed" if v["rl"] else "failed")
        text += f"| {target} | {runs or '-'} | +{v['gained']} / -{v['lost']} | {verdict} |\n"
    return text
