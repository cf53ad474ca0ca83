"""One GRPO iteration in imagination, timed: imagine / judge / verify (dual-noise re-draws) / update, and DNV's
overhead as the ratio to the same iteration without DNV - measured in one run (the paper reports about 1.3x
world-model inference).

    python benchmarks/dream_iteration.py --policy runs/quick/policy_sft --wm runs/quick/wm --judge runs/quick/judge \
        --reference runs/quick/data/target_demos

Without checkpoints, randomly initialised default-preset models are timed: the cost does not depend on the
weights, but the verify share does (it re-imagines only the rollouts the judge called successful), so the
random judge's threshold is set to re-draw about half of them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rawdream.config import resolve
from rawdream.rl.dream import DreamConfig, Dreamer


def _models(args, tmp: Path):
    from rawdream.policy.tokenizer import ActionTokenizer
    from rawdream.policy.train import TrainPolicyConfig, load_policy
    from rawdream.policy.vla import VLAPolicy
    from rawdream.world_model.model import WorldModel
    from rawdream.world_model.train import PretrainWMConfig, load_world_model

    torch.manual_seed(0)
    if args.policy:
        policy = load_policy(args.policy)
    else:
        cfg = resolve(TrainPolicyConfig, "train_policy_base").policy
        policy = VLAPolicy(cfg, ActionTokenizer([-1] * 4, [1] * 4), np.zeros(4), np.ones(4))
    wm = (
        load_world_model(args.wm)
        if args.wm
        else WorldModel(resolve(PretrainWMConfig, "pretrain_wm").model).eval()
    )
    judge = args.judge
    if not judge:
        from rawdream.policy.text import TextEncoder
        from rawdream.reward.generalist import GeneralistConfig, JudgeNet, save_generalist

        judge = str(tmp / "judge")
        save_generalist(JudgeNet(GeneralistConfig()), TextEncoder(), Path(judge), {"temperature": 1.0})
    return policy, wm, judge


def reference_demo(args, tmp: Path) -> str:
    """The judge's reference: ``--reference DEMOS``, or one expert demo of the task collected here."""
    if getattr(args, "reference", None):
        return args.reference
    from rawdream.config import resolve
    from rawdream.data.collect import CollectConfig, collect

    out = tmp / "reference"
    overrides = {"tasks": [args.task], "episodes_per_task": 1, "workers": 1, "split.targets": ["reach"]}
    collect(resolve(CollectConfig, "collect_demos", "default", overrides), out, progress=False)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=None)
    ap.add_argument("--wm", default=None)
    ap.add_argument("--judge", default=None)
    ap.add_argument("--reference", default=None, help="demos of the task (default: one collected here)")
    ap.add_argument("--task", default="drawer-open")
    ap.add_argument(
        "--iterations", type=int, default=2, help="timed iterations per setting (after a warm-up)"
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        policy, wm, judge = _models(args, Path(tmp))
        reference = reference_demo(args, Path(tmp))
        results = {}
        for dnv in (False, True):
            overrides = {"task": args.task, "dnv": dnv, "judge.path": judge, "judge.reference": reference}
            cfg = resolve(DreamConfig, "dream", "default", overrides)
            dreamer = Dreamer(cfg, policy, wm, log_fn=lambda *_: None)
            if not args.judge:  # a random judge: put its threshold at the median score so half are re-drawn
                buf = dreamer.rollout_round(dreamer.draw(0))
                dreamer.judge.cfg.threshold = float(np.median(buf["scores"]))
            dreamer.iteration(0)  # warm-up
            split = {"imagine": 0.0, "judge": 0.0, "verify": 0.0, "update": 0.0}
            t0 = time.perf_counter()
            for it in range(1, args.iterations + 1):
                m, _ = dreamer.iteration(it)
                for k in split:
                    split[k] += m[f"time_{k}"] / args.iterations
            results[dnv] = ((time.perf_counter() - t0) / args.iterations, split, m)
    n = cfg.groups * cfg.group_size
    print(
        f"one iteration: {cfg.groups} initial states x {cfg.group_size} rollouts x {cfg.horizon} chunks "
        f"({n * cfg.horizon} imagined chunk transitions), {cfg.epochs} update epochs\n"
    )
    print(f"{'':14s} {'total s':>8s} {'imagine':>8s} {'judge':>8s} {'verify':>8s} {'update':>8s}")
    for dnv, (total, split, _) in results.items():
        print(
            f"{'DNV on' if dnv else 'DNV off':14s} {total:8.2f} "
            + " ".join(f"{split[k]:8.2f}" for k in ("imagine", "judge", "verify", "update"))
        )
    on, off = results[True], results[False]
    wm_on = on[1]["imagine"] + on[1]["verify"]
    print(
        f"\nDNV overhead: iteration {on[0] / off[0]:.2f}x; world-model inference {wm_on / off[1]['imagine']:.2f}x "
        f"(judged successes re-drawn per iteration: {on[2]['judged_success_rate'] * n:.0f} of {n}; paper: about 1.3x)"
    )


if __name__ == "__main__":
    main()
