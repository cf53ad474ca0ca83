"""Does a policy look at the object? Its greedy rollouts from layouts whose objects lie in different places: a policy
that conditions on the object moves its hand differently per layout (spread, and a correlation with where the object
is); one that replays its demonstration open loop moves the hand along the same path in every layout.

Per task: the hand's spread across layouts at each chunk (std of its xyz, cm) against the spread of the object's
starting position, the correlation of the hand's position with the object's (per axis, at the chunk where it is
largest) and the greedy success. An episode that ends at success keeps its last hand position, so the spread
also reflects when episodes end: read the axes along which the object varies and the motion does not end. Validation layouts by default (seeds DREAM_INIT + 1000 + i: used by no RL run and
no evaluation).

    python benchmarks/object_conditioning.py --policy runs/quick/policy_sft --tasks sweep-into drawer-open \\
        [--layouts 16] [--json results/object_conditioning.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from rawdream import seeds
from rawdream.envs import EnvConfig, make_env
from rawdream.envs.tasks import backend_of, canonical_task
from rawdream.policy.train import load_policy


def measure(policy, task: str, layouts: int, first_seed: int, horizon: int = 16) -> dict:
    env = make_env(task, EnvConfig(backend=backend_of(task)))
    obj0, hands, success = [], [], []
    try:
        for i in range(layouts):
            obs, info = env.reset(first_seed + i)
            obj0.append(np.asarray(info["object_position"], float))
            path, ok = [], False
            for _ in range(horizon):
                batch = {
                    "image": obs["image"][None],
                    "proprio": obs["proprio"][None],
                    "instruction": [obs["instruction"]],
                }
                done = False
                for a in policy.greedy(batch)[0]:
                    obs, _, terminated, truncated, info = env.step(a)
                    ok |= bool(info["success"])
                    done = terminated or truncated
                    if done:
                        break
                path.append(np.asarray(obs["proprio"][:3], float))
                if done:
                    break
            path += [path[-1]] * (horizon - len(path))  # a finished episode's hand stays where it ended
            hands.append(path)
            success.append(ok)
    finally:
        env.close()
    obj0, hands = np.array(obj0), np.array(hands)  # (L, 3), (L, H, 3)
    spread = hands.std(0) * 100  # (H, 3) cm
    corr = np.zeros((hands.shape[1], 3))
    for h in range(hands.shape[1]):
        for ax in range(3):
            if hands[:, h, ax].std() > 1e-6 and obj0[:, ax].std() > 1e-6:
                corr[h, ax] = np.corrcoef(hands[:, h, ax], obj0[:, ax])[0, 1]
    return {
        "task": task,
        "layouts": layouts,
        "object_spread_cm": (obj0.std(0) * 100).round(2).tolist(),
        "hand_spread_cm_max": spread.max(0).round(2).tolist(),
        "hand_object_correlation_max": np.abs(corr).max(0).round(2).tolist(),
        "greedy_success": float(np.mean(success)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", nargs="+", required=True)
    ap.add_argument("--tasks", nargs="+", required=True)
    ap.add_argument("--layouts", type=int, default=16)
    ap.add_argument("--first_seed", type=int, default=seeds.DREAM_INIT + 1000)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for path in args.policy:
        policy = load_policy(path).eval()
        for task in args.tasks:
            r = {"policy": path, **measure(policy, canonical_task(task), args.layouts, args.first_seed)}
            rows.append(r)
            print(
                f"{path} {r['task']}: object spread (cm) {r['object_spread_cm']}, hand spread max "
                f"{r['hand_spread_cm_max']}, |corr| max {r['hand_object_correlation_max']}, "
                f"greedy success {r['greedy_success']:.2f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "layouts_first_seed": args.first_seed}, f, indent=1)


if __name__ == "__main__":
    main()
