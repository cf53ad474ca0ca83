"""A `dream --diagnose_replay` run's verification diagnostic in blocks of 10 iterations: how often the judged
successes DNV kept and flipped, and the judged failures, truly succeed (the simulator's replay of the imagined
actions; never a reward), weighted by their counts.

    python scripts/replay_diagnostic_blocks.py RUN_DIR OUT.json
"""

import json
import sys
from pathlib import Path

import numpy as np


def weighted(rows, rate, count):
    ok = [r for r in rows if r.get(count, 0) > 0 and not np.isnan(r.get(rate, np.nan))]
    n = sum(r[count] for r in ok)
    return (sum(r[rate] * r[count] for r in ok) / n if n else None), int(n)


def main(run: str, out: str) -> None:
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("stage") == "train"]
    blocks = []
    for lo in range(1, max(r["step"] for r in train) + 1, 10):
        s = [r for r in train if lo <= r["step"] <= lo + 9]
        n = sum(r["rollouts"] for r in s)
        judged = sum(r["judged_success_rate"] * r["rollouts"] for r in s)
        kept, n_kept = weighted(s, "diag/true_rate_kept", "diag/n_kept")
        flipped, n_flipped = weighted(s, "diag/true_rate_flipped", "diag/n_flipped")
        fail, n_fail = weighted(s, "diag/true_rate_judged_failure", "diag/n_judged_failure")
        blocks.append({
            "iterations": [lo, lo + 9], "rollouts": int(n), "judged_rate": judged / n,
            "flip_rate": sum(r["dnv_flips"] for r in s) / judged if judged else None,
            "imagined_actions_true_rate": float(np.mean([r["diag/true_rate"] for r in s])),
            "kept_true_rate": kept, "kept": n_kept, "flipped_true_rate": flipped, "flipped": n_flipped,
            "judged_failure_true_rate": fail, "judged_failures": n_fail,
        })  # fmt: skip
        print(blocks[-1], flush=True)
    command = "python scripts/replay_diagnostic_blocks.py " + " ".join(sys.argv[1:])
    Path(out).write_text(json.dumps({"run": run, "command": command, "blocks": blocks}, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
