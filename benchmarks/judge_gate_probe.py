"""How well does a judge read a learned policy's own rollouts, and which object gate helps? Pretraining tasks only.

RL in imagination rewards the policy by the judge's verdict on its own behaviour, not on scripted experts. This probe
rolls a policy out on pretraining tasks from initial states no judge training used (``seeds.DREAM_INIT``; cached in
``--rollouts`` so several judges are measured on the same videos), labels each rollout with the simulator's success,
and records per rollout the judge's success probability, its object head's reading of the first and last frame and
of the reference demonstration, and the simulator's true object positions. ``--rules`` scores the judge alone (mean
per-task AUROC over tasks with both outcomes) and gate rules (``--judge.object_gate``) - each on the head's reading
and on the true positions (the rule's ceiling) - so judges and gates are compared on pretraining tasks before any
of them sees a target.

    python benchmarks/judge_gate_probe.py --judge runs/wm16/judge_fix --policy runs/obj/base20_obj \\
        --reference runs/quick/data/demos --demos runs/quick/data/demos --tasks sweep push ... \\
        --rollouts runs/gate_rollouts.npz --out runs/gate_probe.npz
    python benchmarks/judge_gate_probe.py --rules runs/gate_probe.npz [--json results/judge_gate_probe.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from rawdream.eval.metrics import auroc


def simulate_rollouts(args) -> dict[str, np.ndarray]:
    """The policy's sampled rollouts per task (as online RL draws them), cached in ``--rollouts`` so that several
    judges are measured on the same videos."""
    import os

    from rawdream.envs.tasks import backend_of
    from rawdream.eval.on_policy import RewardFidelityConfig, policy_rollouts
    from rawdream.policy.train import load_policy

    if os.path.exists(args.rollouts):
        cached = dict(np.load(args.rollouts))
        print(f"rollouts from {args.rollouts}: {len(cached['task'])}")
        return cached
    policy = load_policy(args.policy)
    cfg = RewardFidelityConfig(states=args.states, rollouts_per_state=args.rollouts_per_state, transfer=False)
    out: dict[str, list] = {"task": [], "video": [], "success": [], "object_position": []}
    for task in args.tasks:
        if backend_of(task) != "metaworld":
            raise SystemExit(f"{task} is not a Meta-World task")
        roll = policy_rollouts(policy, task, cfg)
        out["task"] += [task] * len(roll["success"])
        for k in ("video", "success", "object_position"):
            out[k].append(roll[k])
        print(f"{task}: {int(roll['success'].sum())}/{len(roll['success'])} successes", flush=True)
    arrays = {"task": np.array(out["task"]), **{k: np.concatenate(out[k]) for k in out if k != "task"}}
    np.savez(args.rollouts, **arrays)
    return arrays


def record(args) -> None:
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.data.objects import object_positions
    from rawdream.envs.tasks import instruction
    from rawdream.reward.generalist.judge import GeneralistJudge, GeneralistJudgeConfig
    from rawdream.reward.generalist.model import text_features

    torch.set_num_threads(2)
    roll = simulate_rollouts(args)
    judge = GeneralistJudge(GeneralistJudgeConfig(path=args.judge, reference=args.reference, object_gate=0.5))
    demos = LeRobotDataset(args.demos)
    demo_obj = object_positions(demos, "metaworld")
    tasks_of = [str(t) for t in demos.episodes["rawdream/env_task"]]
    rows: dict[str, list] = {k: [] for k in ("p", "head", "demo_head", "demo_true")}
    sel = judge.model.cfg.frames
    for task in dict.fromkeys(roll["task"]):
        m = roll["task"] == task
        video, n = roll["video"][m], int(m.sum())
        text = [instruction(str(task))] * n
        with torch.no_grad():
            clips = torch.from_numpy(np.stack([sel.select(v) for v in video]))
            ref = torch.from_numpy(judge.references.for_instructions(text))
            logits, objects = judge.model(clips, text_features(judge.text, text), ref, objects=True)
            demo = torch.cat([ref[:1, :1], ref[:1, 1:].expand(-1, clips.shape[1] - 1, -1, -1, -1)], dim=1)
            _, demo_objects = judge.model(demo, text_features(judge.text, text[:1]), ref[:1], objects=True)
        e = tasks_of.index(
            str(task)
        )  # the reference is the task's first demonstration (References.get(task, 0))
        lo, hi = demos.episode_bounds(e)
        rows["p"].append(torch.sigmoid(logits / judge.temperature).numpy())
        rows["head"].append(objects[:, [0, -1]].numpy())
        rows["demo_head"].append(np.repeat(demo_objects[:, [0, -1]].numpy(), n, axis=0))
        # the simulator reports the main object only (the first three columns of the dataset's positions)
        rows["demo_true"].append(np.repeat(demo_obj[[lo, hi - 1], :3][None], n, axis=0))
    pos = roll["object_position"]  # (N, H+1, 3) at chunk ends
    np.savez(
        args.out,
        task=roll["task"],
        success=roll["success"].astype(bool),
        true=np.stack([pos[:, 0], pos[:, -1]], axis=1),
        **{k: np.concatenate(v) for k, v in rows.items()},
    )
    print(f"wrote {args.out}")


def gate_rules(video: np.ndarray, demo: np.ndarray) -> dict[str, np.ndarray]:
    """video, demo (N, 2, O) first and last object positions -> rule -> (N,) gate value (higher: more like the
    demonstration). ``along``: the projection of the video's displacement onto the demo's, as a fraction of it
    (today's gate); ``displacement``: one minus the distance between the two displacements, as a fraction of the
    demo's; ``end``: the same for where the objects end, absolute; ``either``: the better of the last two (a task
    whose goal is fixed in the scene ends where the demo ended, one whose goal moves with the object moves as the
    demo's did); ``none``: no gate, the judge's verdict alone."""
    moved, wanted = video[:, 1] - video[:, 0], demo[:, 1] - demo[:, 0]
    norm = np.maximum(np.linalg.norm(wanted, axis=1), 1e-6)
    along = (moved * wanted).sum(1) / norm**2
    displacement = 1 - np.linalg.norm(moved - wanted, axis=1) / norm
    end = 1 - np.linalg.norm(video[:, 1] - demo[:, 1], axis=1) / norm
    return {
        "none": np.full(len(video), np.inf),  # the judge alone, the gate always open
        "along": along,
        "displacement": displacement,
        "end": end,
        "either": np.maximum(displacement, end),
    }


def rules(args) -> None:
    d = np.load(args.rules)
    tasks, success, p = d["task"], d["success"], d["p"]
    out = {"source": args.rules, "rollouts": len(p), "rules": {}}
    print(
        f"{'rule':<14}{'reading':<8}{'threshold':>10}{'AUROC gated':>13}{'gate alone':>11}{'bal.acc':>9}"
        f"{'judged':>8}{'true':>6}"
    )
    for reading, (vid, dem) in {
        "head": (d["head"], d["demo_head"]),
        "true": (d["true"], d["demo_true"]),
    }.items():
        for name, g in gate_rules(vid, dem).items():
            for thr in args.thresholds:
                verdict = (p >= 0.5) & (g >= thr)
                score = np.where(g >= thr, p, 0.0)
                per_task = {}
                for t in dict.fromkeys(tasks):
                    m = tasks == t
                    if 0 < success[m].sum() < m.sum():
                        per_task[t] = auroc(score[m], success[m])
                mean_auc = float(np.mean(list(per_task.values()))) if per_task else float("nan")
                tpr = verdict[success].mean() if success.any() else float("nan")
                tnr = (~verdict[~success]).mean() if (~success).any() else float("nan")
                bal = float((tpr + tnr) / 2)
                key = f"{name}@{thr}/{reading}"
                alone = [auroc(g[tasks == t], success[tasks == t]) for t in per_task]
                out["rules"][key] = {
                    "gate_value_mean_task_auroc": float(np.mean(alone)) if alone else float("nan"),
                    "mean_task_auroc": mean_auc,
                    "balanced_accuracy": bal,
                    "judged_success": float(verdict.mean()),
                    "true_success": float(success.mean()),
                    "per_task_auroc": per_task,
                }
                alone_auc = out["rules"][key]["gate_value_mean_task_auroc"]
                print(
                    f"{name:<14}{reading:<8}{thr:>10}{mean_auc:>13.3f}{alone_auc:>11.3f}{bal:>9.3f}{verdict.mean():>8.2f}"
                    f"{success.mean():>6.2f}"
                )
    base = {
        t: auroc(p[tasks == t], success[tasks == t])
        for t in dict.fromkeys(tasks)
        if 0 < success[tasks == t].sum() < (tasks == t).sum()
    }
    out["ungated"] = {"mean_task_auroc": float(np.mean(list(base.values()))), "per_task_auroc": base}
    print(
        f"ungated judge: mean per-task AUROC {out['ungated']['mean_task_auroc']:.3f} over {len(base)} tasks"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--judge")
    ap.add_argument("--policy")
    ap.add_argument("--reference")
    ap.add_argument("--demos")
    ap.add_argument("--tasks", nargs="+")
    ap.add_argument("--states", type=int, default=16)
    ap.add_argument("--rollouts_per_state", type=int, default=2)
    ap.add_argument("--rollouts", default="runs/gate_rollouts.npz", help="cache of the simulated rollouts")
    ap.add_argument("--out", default="runs/gate_probe.npz")
    ap.add_argument("--rules")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.rules:
        rules(args)
    else:
        record(args)


if __name__ == "__main__":
    main()
