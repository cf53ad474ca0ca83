"""Judge speed: verdicts/s of the embedded generalist judge at batch 1 and 64, and of the ``openai`` client
against the loopback chat-completions server at concurrency 1 and 16 (our client's overhead - base64 PNG
encoding, HTTP, parsing - not a VLM's speed; the server answers after a fixed 20 ms "model time").

    python benchmarks/judge_speed.py [--judge runs/main/judge]

Without --judge a randomly initialised generalist of the default config is timed (cost does not depend on
weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dream_iteration import reference_demo
from rawdream.reward.base import judge_config, make_judge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the loopback server is a test double
from loopback import LoopbackVLM


def _videos(n: int, length: int = 17) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (length, 64, 64, 3), dtype=np.uint8) for _ in range(n)]


def _random_generalist(out: Path) -> Path:
    from rawdream.policy.text import TextEncoder
    from rawdream.reward.generalist import GeneralistConfig, JudgeNet, save_generalist

    torch.manual_seed(0)
    save_generalist(JudgeNet(GeneralistConfig()), TextEncoder(), out, {"temperature": 1.0})
    return out


def rate(fn, n_items: int, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_items * repeats / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default=None, help="generalist judge directory; default: random weights")
    ap.add_argument("--reference", default=None, help="demos of drawer-open (default: one collected here)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = args.judge or str(_random_generalist(Path(tmp) / "judge"))
        args.task = "drawer-open"
        reference = reference_demo(args, Path(tmp))
        judge = make_judge(judge_config("generalist", path=path, reference=reference))
        for batch in (1, 64):
            vids, inst = _videos(batch), ["open the drawer"] * batch
            rows.append((f"generalist, batch {batch}", rate(lambda v=vids, i=inst: judge(v, i), batch, 5)))
        for conc in (1, 16):
            with LoopbackVLM(answer=lambda req: ("Yes", 0.9), delay=0.02) as server:
                cfg = judge_config("openai", url=server.url, concurrency=conc)
                vids, inst = _videos(32), ["open the drawer"] * 32
                # a fresh client per call: its content-hash cache would answer the repeats for free
                rows.append(
                    (
                        f"openai client, concurrency {conc} (20 ms server)",
                        rate(lambda c=cfg, v=vids, i=inst: make_judge(c)(v, i), 32, 2),
                    )
                )
    print(f"{'judge':48s} {'verdicts/s':>11s}")
    for name, r in rows:
        print(f"{name:48s} {r:11.1f}")
    print(f"\ngeneralist batch 64 / batch 1: {rows[1][1] / rows[0][1]:.1f}x")
    print(f"openai client concurrency 16 / 1: {rows[3][1] / rows[2][1]:.1f}x")


if __name__ == "__main__":
    main()
