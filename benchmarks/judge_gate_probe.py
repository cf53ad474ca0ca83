"""How well does a judge read a learned policy's own rollouts, and which object gate and calibration help?

RL in imagination rewards the policy by the judge's verdict on its own behaviour, not on scripted experts. This probe
rolls a policy out on pretraining tasks from initial states no judge training used (``seeds.DREAM_INIT``; cached in
``--rollouts`` so several judges are measured on the same videos), labels each rollout with the simulator's success,
and records per rollout the judge's success probability, its object head's reading of the first and last frame and
of the reference demonstration, and the simulator's true object positions. ``--rules`` scores the judge alone (mean
per-task AUROC over tasks with both outcomes) and gate rules (``--judge.object_gate``) - each on the head's reading
and on the true positions (the rule's ceiling) - so judges and gates are compared on pretraining tasks before any
of them sees a target. It also records the demo-calibration anchors (the reference demo's score and the demo cut at
each ``--cuts`` fraction), so ``--rules`` reports where each ``--judge.calibration`` puts the verdicts (judged vs
true success per task). With ``--wm`` every rollout is also replayed in the world model and judged there (real vs
imagined verdicts, kappa): pointed at the targets (``--policy`` the SFT policy, ``--reference`` / ``--demos`` their
one demo each) it measures, once a calibration has been chosen on pretraining tasks, what RL would be rewarded with.

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
    """The policy's sampled rollouts per task (as online RL draws them) and, with ``--wm``, the world model's replay
    of each one's actions from its real first frame (one noise draw, as eval-judge's first); cached in
    ``--rollouts`` so that several judges and calibrations are measured on the same videos."""
    import os

    from rawdream import seeds
    from rawdream.envs.tasks import backend_of
    from rawdream.eval.imagination_transfer import replay
    from rawdream.eval.on_policy import RewardFidelityConfig, policy_rollouts
    from rawdream.policy.train import load_policy

    if os.path.exists(args.rollouts):
        cached = dict(np.load(args.rollouts))
        print(f"rollouts from {args.rollouts}: {len(cached['task'])}")
        return cached
    policy = load_policy(args.policy)
    wm = None
    if args.wm:
        from rawdream.world_model.train import load_world_model

        wm = load_world_model(args.wm)
    cfg = RewardFidelityConfig(states=args.states, rollouts_per_state=args.rollouts_per_state, transfer=False)
    out: dict[str, list] = {"task": [], "video": [], "success": [], "object_position": []}
    if wm is not None:
        out["imagined"] = []
    for task in args.tasks:
        if backend_of(task) != "metaworld":
            raise SystemExit(f"{task} is not a Meta-World task")
        roll = policy_rollouts(policy, task, cfg)
        out["task"] += [task] * len(roll["success"])
        for k in ("video", "success", "object_position"):
            out[k].append(roll[k])
        if wm is not None:
            noise = [
                seeds.stable_seed("reward-fidelity-noise", task, 0, 0, i) for i in range(len(roll["success"]))
            ]
            with torch.no_grad():
                out["imagined"].append(replay(wm, roll, noise)[0])
        print(f"{task}: {int(roll['success'].sum())}/{len(roll['success'])} successes", flush=True)
    arrays = {"task": np.array(out["task"]), **{k: np.concatenate(out[k]) for k in out if k != "task"}}
    np.savez(args.rollouts, **arrays)
    return arrays


def record(args) -> None:
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.data.objects import object_positions
    from rawdream.envs.tasks import instruction
    from rawdream.reward.generalist.judge import GeneralistJudge, GeneralistJudgeConfig, demo_cut

    torch.set_num_threads(2)
    roll = simulate_rollouts(args)
    judge = GeneralistJudge(GeneralistJudgeConfig(path=args.judge, reference=args.reference, object_gate=0.5))
    demos = LeRobotDataset(args.demos)
    demo_obj = object_positions(demos, "metaworld")
    tasks_of = [str(t) for t in demos.episodes["rawdream/env_task"]]
    kinds = ["", "im_"] if "imagined" in roll else [""]  # real videos, then the world model's replays
    keys = [f"{k}{x}" for k in kinds for x in ("p", "head")] + ["demo_head", "demo_true", "anchors"]
    rows: dict[str, list] = {k: [] for k in keys}
    for task in dict.fromkeys(roll["task"]):
        m = roll["task"] == task
        n = int(m.sum())
        text = [instruction(str(task))] * n
        with torch.no_grad():
            for kind in kinds:
                videos = roll["imagined" if kind else "video"][m]
                logits, objects = judge.model(*judge._inputs(videos, text), objects=True)
                rows[f"{kind}p"].append(torch.sigmoid(logits / judge.temperature).numpy())
                rows[f"{kind}head"].append(objects[:, [0, -1]].numpy())
            # the demo as the gate reads it: its first frame, then its last (GeneralistJudge._demo_motion)
            _, text_feat, ref = judge._inputs(roll["video"][m][:1], text[:1])
            demo = torch.cat(
                [ref[:, :1], ref[:, 1:].expand(-1, judge.model.cfg.frames.middle + 1, -1, -1, -1)], 1
            )
            _, demo_objects = judge.model(demo, text_feat, ref, objects=True)
            # calibration anchors (--judge.calibration=demo): logits of the reference demo's own video and of
            # the demo cut at each --cuts fraction, its last kept frame held
            demo_video = judge.references.videos[str(task)]
            anchors = [demo_video] + [demo_cut(demo_video, c) for c in args.cuts]
            anchor_logits = judge.model(*judge._inputs(anchors, text[:1] * len(anchors))) / judge.temperature
        rows["anchors"].append(np.repeat(anchor_logits.numpy()[None], n, axis=0))
        # the reference is the task's first demonstration (References.get(task, 0))
        lo, hi = demos.episode_bounds(tasks_of.index(str(task)))
        rows["demo_head"].append(np.repeat(demo_objects[:, [0, -1]].numpy(), n, axis=0))
        # the simulator reports the main object only (the first three columns of the dataset's positions)
        rows["demo_true"].append(np.repeat(demo_obj[[lo, hi - 1], :3][None], n, axis=0))
    pos = roll["object_position"]  # (N, H+1, 3) at chunk ends
    np.savez(
        args.out,
        task=roll["task"],
        success=roll["success"].astype(bool),
        true=np.stack([pos[:, 0], pos[:, -1]], axis=1),
        cuts=np.array(args.cuts, dtype=float),
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
    if "anchors" in d:
        out["calibration"] = calibrations(d)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def calibrations(d) -> dict:
    """Where each calibration puts the threshold, per task: the judged success rate against the true one (mean
    absolute gap over all tasks) and the per-task balanced accuracy (tasks with both outcomes), the judge alone and
    behind today's gate (``along`` >= 0.5 on the head's reading), on real videos and - recorded with ``--wm`` - on
    the world model's replays, with the agreement of the two verdicts (Cohen's kappa). ``fixed``: 0.5 everywhere;
    ``demo@c``: halfway in logits between the demo's score and the demo cut at fraction c
    (``--judge.calibration=demo --judge.calibration_cut=c``)."""
    from rawdream.eval.metrics import cohen_kappa

    tasks, success, anchors = d["task"], d["success"], d["anchors"]
    thresholds = {"fixed": np.zeros(len(success))}
    for i, c in enumerate(d["cuts"]):
        thresholds[f"demo@{c:g}"] = (anchors[:, 0] + anchors[:, 1 + i]) / 2
    kinds = {"real": ""} | ({"imagined": "im_"} if "im_p" in d else {})
    out = {}
    print(
        f"\n{'calibration':<12}{'gate':<6}{'videos':<10}{'|judged-true|':>14}{'bal.acc':>9}{'judged':>8}"
        f"{'true':>6}{'kappa':>7}"
    )
    for name, thr in thresholds.items():
        for gated in (False, True):
            verdicts = {}
            for kind, prefix in kinds.items():
                p = d[f"{prefix}p"]
                logit = np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1))
                gate = gate_rules(d[f"{prefix}head"], d["demo_head"])["along"] >= 0.5
                verdict = verdicts[kind] = (logit >= thr) & (gate if gated else True)
                gaps, bal, per_task = [], [], {}
                for t in dict.fromkeys(tasks):
                    m = tasks == t
                    judged, true = float(verdict[m].mean()), float(success[m].mean())
                    gaps.append(abs(judged - true))
                    per_task[str(t)] = {"judged": judged, "true": true}
                    if 0 < success[m].sum() < m.sum():
                        s, v = success[m], verdict[m]
                        bal.append((v[s].mean() + (~v[~s]).mean()) / 2)
                kappa = cohen_kappa(verdicts["real"], verdict) if kind != "real" else float("nan")
                key = f"{name}/{'gated' if gated else 'alone'}/{kind}"
                out[key] = {
                    "mean_abs_gap": float(np.mean(gaps)),
                    "mean_task_balanced_accuracy": float(np.mean(bal)) if bal else float("nan"),
                    "judged_success": float(verdict.mean()),
                    "true_success": float(success.mean()),
                    "kappa_with_real": kappa,
                    "per_task": per_task,
                }
                print(
                    f"{name:<12}{'on' if gated else 'off':<6}{kind:<10}{out[key]['mean_abs_gap']:>14.3f}"
                    f"{out[key]['mean_task_balanced_accuracy']:>9.3f}{verdict.mean():>8.2f}{success.mean():>6.2f}"
                    f"{kappa:>7.2f}"
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--judge")
    ap.add_argument("--policy")
    ap.add_argument("--reference")
    ap.add_argument("--demos")
    ap.add_argument("--tasks", nargs="+")
    ap.add_argument("--wm", help="also replay every rollout in this world model and judge the replays")
    ap.add_argument("--states", type=int, default=16)
    ap.add_argument("--rollouts_per_state", type=int, default=2)
    ap.add_argument("--rollouts", default="runs/gate_rollouts.npz", help="cache of the simulated rollouts")
    ap.add_argument("--out", default="runs/gate_probe.npz")
    ap.add_argument("--rules")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--json")
    ap.add_argument(
        "--cuts",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75],
        help="demo-calibration anchors to record",
    )
    args = ap.parse_args()
    if args.rules:
        rules(args)
    else:
        record(args)


if __name__ == "__main__":
    main()
