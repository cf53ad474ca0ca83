"""Does a second draw of the world model tell a real success from a hallucinated one? DNV's premise, measured on
fixed actions with the simulator's labels, for several samplers of the world model.

    python scripts/redraw_separation.py WM JUDGE TASK[,TASK...] DATA_ROOT[,DATA_ROOT...] OUT.json [SAMPLER;SAMPLER...] [DRAWS]

DATA_ROOT/TASK is a dataset of `rawdream collect policy --wm` (a policy acting inside a world model; every episode
labelled by the simulator's replay of its imagined actions). Each episode's actions are imagined again, open loop,
from its real first frame, DRAWS times under independent noise seeds, with each SAMPLER (comma-separated
SamplerConfig keys, e.g. "steps=8,context_level=300"; "" is the model's own sampler), and every draw is judged as
RL reads it (JUDGE as in scripts/judge_on_rollouts.py: PATH or PATH:image). Per dataset and sampler it prints the
judged-success rate of the true successes and of the true failures in one open-loop redraw, the rate at which all
DRAWS redraws confirm each, and - what `dream --dnv_redraws=DRAWS` keeps - the rate at which the closed-loop video
(the dataset's, the draw RL judges) is judged a success and every redraw confirms it: verification helps only where
it keeps true successes clearly more often than failures. The first frame comes from the dataset's video (lossy
mp4, as RL's initial states are not). Set RAWDREAM_DEMOS=runs/quick/data/target_demos for target tasks.
"""

import importlib.util
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotDataset
from rawdream.envs.tasks import instruction
from rawdream.eval.metrics import auroc
from rawdream.rl.dnv import verdict_score
from rawdream.rl.imagination import reimagine
from rawdream.world_model.train import load_world_model

_spec = importlib.util.spec_from_file_location("jor", Path(__file__).with_name("judge_on_rollouts.py"))
jor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jor)


def parse_sampler(base, text: str):
    """``base`` (a SamplerConfig) with the ``key=value`` pairs of ``text`` set, typed as the field is."""
    kinds = {f.name: type(getattr(base, f.name)) for f in fields(base)}
    changes = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = pair.partition("=")
        if key not in kinds:
            raise SystemExit(f"unknown sampler key {key!r}; use one of {', '.join(kinds)}")
        kind = kinds[key]
        changes[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return replace(base, **changes)


def episode_inputs(ds: LeRobotDataset):
    """Per episode: the real first frame, its proprioception and the (H, chunk, A) actions the policy took."""
    state = np.asarray(ds.column("observation.state"), np.float32)
    action = np.asarray(ds.column("action"), np.float32)
    out = []
    for i in range(ds.num_episodes):
        lo, hi = ds.episode_bounds(i)
        frames = ds.decode_episode_frames(i, DEFAULT_IMAGE_KEY)
        # row t's action chunk is taken after frame t; the last row has no successor frame
        out.append((frames[0], state[lo], action[lo : hi - 1]))
    return out


def rates(judged: np.ndarray, true: np.ndarray) -> dict:
    return {
        "of_successes": float(judged[true].mean()) if true.any() else None,
        "of_failures": float(judged[~true].mean()) if (~true).any() else None,
        "all": float(judged.mean()),
    }


def main(wm_path, judge_spec, tasks, roots, out, samplers="", draws="2"):
    import torch

    torch.set_num_threads(2)
    wm = load_world_model(wm_path).eval()
    judge = jor.judge_as_rl_reads_it(judge_spec)
    rows = []
    for task, root in ((t, r) for t in tasks.split(",") for r in roots.split(",")):
        text = instruction(task)
        ds = LeRobotDataset(f"{root}/{task}")
        true = np.array(ds.episodes["rawdream/success"], bool)
        inputs = episode_inputs(ds)
        closed = judge(
            [ds.decode_episode_frames(i, DEFAULT_IMAGE_KEY) for i in range(ds.num_episodes)],
            [text] * len(true),
        )
        closed_judged = np.array([v.success for v in closed], bool)
        for spec in samplers.split(";"):
            sampler = parse_sampler(wm.cfg.sampler, spec)
            view = wm.with_sampler(sampler)
            judged, score = [], []
            for k in range(int(draws)):
                # all episodes in one batch: each has its own noise generator, so batching changes no draw
                first, prop, acts = (np.stack(x) for x in zip(*inputs))
                videos = list(
                    reimagine(view, first, prop, acts, [1_000_003 * (k + 1) + i for i in range(len(inputs))])
                )
                v = judge(videos, [text] * len(videos))
                judged.append(np.array([x.success for x in v], bool))
                score.append(np.array([verdict_score(x) for x in v], float))
            judged = np.stack(judged)
            confirmed = judged.all(0)
            row = {
                "task": task,
                "data": f"{root}/{task}",
                "sampler": spec or "(the model's own)",
                "episodes": len(true),
                "true_rate": float(true.mean()),
                "closed_loop_judged": rates(closed_judged, true),
                "first_draw_judged": rates(judged[0], true),
                "dnv_confirmed": rates(confirmed, true),
                # dream's DNV with this sampler for its redraws: the closed-loop verdict, confirmed by every redraw
                "closed_loop_kept": rates(closed_judged & confirmed, true),
                "per_episode": {
                    "true": true.tolist(),
                    "closed_loop_judged": closed_judged.tolist(),
                    "redraws_judged": judged.tolist(),
                },
                "draw_agreement": float((judged[0] == judged[1]).mean()) if len(judged) > 1 else None,
                "first_draw_auroc": float(auroc(score[0], true)) if 0 < true.sum() < len(true) else None,
            }
            rows.append(row)
            print(
                f"{task:12s} {root:22s} {row['sampler']:30s} true {row['true_rate']:.2f} | first draw judged "
                f"S {row['first_draw_judged']['of_successes']} F {row['first_draw_judged']['of_failures']} | "
                f"DNV confirmed S {row['dnv_confirmed']['of_successes']} F {row['dnv_confirmed']['of_failures']} | "
                f"closed loop kept S {row['closed_loop_kept']['of_successes']} F {row['closed_loop_kept']['of_failures']} | "
                f"agreement {row['draw_agreement']} auroc {row['first_draw_auroc']}",
                flush=True,
            )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    command = "python scripts/redraw_separation.py " + " ".join(
        f"'{a}'" if (";" in a or not a) else a for a in sys.argv[1:]
    )
    Path(out).write_text(
        json.dumps({"command": command, "wm": wm_path, "judge": judge_spec, "rows": rows}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
