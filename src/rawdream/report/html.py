"""``rawdream report RUN_DIR``: one self-contained HTML page per run (plots, videos and tables embedded as data
URLs - no network needed to view it).

Sections, each shown when its stage ran: the task-agnostic guarantee; the results table (1-shot SFT vs after RL
in imagination, 95% intervals); world-model fidelity curves and real | imagined videos; judge confusion matrices
(real and imagined videos); RL curves; a gallery of imagined rollouts with the judge's verdict and, for verified
ones, the second noise draw beside the first, flagged when it flipped.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from rawdream.eval.metrics import fmt
from rawdream.eval.success import before_after
from rawdream.io import atomic_write_text, read_json, read_jsonl
from rawdream.layout import RunLayout


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _gif(frames: np.ndarray, scale: int = 3, duration: int = 400) -> str:
    import imageio.v3 as iio

    frames = np.asarray(frames, np.uint8).repeat(scale, 1).repeat(scale, 2)
    data = iio.imwrite("<bytes>", list(frames), extension=".gif", duration=duration, loop=0)
    return f'<img alt="rollout" src="data:image/gif;base64,{base64.b64encode(data).decode()}">'


def _video(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><video controls autoplay muted loop playsinline src="data:video/mp4;base64,{data}"></video>'
        f"<figcaption>{html.escape(path.stem)}</figcaption></figure>"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _pct(m: dict[str, Any]) -> str:
    lo, hi = m["ci95"]
    return f"{m['success_rate'] * 100:.1f}% [{lo * 100:.1f}, {hi * 100:.1f}] (n={m['episodes']})"


def _results(summary: dict[str, Any]) -> str:
    rows = []
    skipped = set(summary.get("rl_skipped_targets") or {})
    for layouts, prot in summary.get("protocols", {}).items():
        rows += _result_rows(prot, layouts, skipped)
    return _table(
        [
            "task",
            "layouts",
            "1-shot SFT",
            "RAW-Dream (RL in imagination)",
            "paired difference on the same seeds",
        ],
        rows,
    )


def _paired(d: dict[str, Any]) -> str:
    return (
        f"{d['difference'] * 100:+.1f} [{d['ci95'][0] * 100:+.1f}, {d['ci95'][1] * 100:+.1f}] "
        f"(+{d['gained']} / -{d['lost']} episodes, McNemar p={d['mcnemar_p']:.3f})"
    )


def _result_rows(prot: dict[str, Any], layouts: str, skipped: set[str] = frozenset()) -> list[list[str]]:
    rows = []
    for task, before in prot.get("before", {}).items():
        after = prot.get("after", {}).get(task)
        d = prot.get("paired", {}).get(task)
        diff = _paired(d) if d else ""
        ran = _pct(after) if after else ("RL skipped (judge check): SFT" if task in skipped else "not run")
        rows.append([task, layouts, _pct(before), ran, diff])
    d = prot.get("pooled")
    if d:
        rows.append(
            [
                f"all {len(d['tasks'])} targets",
                layouts,
                "",
                "RL's policy where it ran, SFT where skipped",
                _paired(d),
            ]
        )
    return rows


def _wm_section(run: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = RunLayout(run) / f"{RunLayout.EVAL_WM}/wm_eval.json"
    if not ev.exists():
        return ""
    rep = read_json(ev)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, (key, label) in zip(axes, [("psnr", "whole-frame PSNR"), ("object_psnr", "object-region PSNR")]):
        for group, row in rep["groups"].items():
            steps = np.arange(1, len(row[key]) + 1)
            ax.plot(steps, row[key], "-o", label=f"world model ({group} tasks)")
            ax.plot(steps, row[key + "_copy"], "--", label=f"copy last frame ({group})")
        ax.set_xlabel("AR step (8-action chunks)")
        ax.set_ylabel("dB")
        ax.set_title(label)
        ax.legend(fontsize=7)
    videos = "".join(
        _video(p) for p in sorted((RunLayout(run) / RunLayout.EVAL_WM).glob("*_real_vs_imagined.mp4"))
    )
    return (
        f"<h2>World-model fidelity (held-out tasks never seen in training)</h2>{_png(fig)}"
        f"<p>Real (left) | imagined (right) under identical actions from the same first frame.</p>"
        f"<div class='grid'>{videos}</div>"
    )


def _judge_section(run: Path) -> str:
    ev = RunLayout(run) / f"{RunLayout.EVAL_JUDGE}/judge_eval.json"
    if not ev.exists():
        return ""
    rep = read_json(ev)
    parts = [
        "<h2>Judge accuracy on held-out tasks (ground truth: the simulator)</h2><p>Imagined rows: the world "
        "model's replay of the same actions, scored against the real replay's success. The task-blind control "
        "(neither instruction nor reference shown) must do clearly worse. Paper anchor: zero-shot Qwen3-VL on LIBERO-Goal, F1 0.35 "
        "(precision 0.61, recall 0.25).</p>"
    ]
    for name, res in rep["results"].items():
        rows = []
        for t, m in {**res["per_task"], "mean": res["mean"]}.items():
            c = m.get("confusion") or {}
            rows.append(
                [
                    t,
                    f"{m['base_rate']:.2f}",
                    f"{m['auroc']:.2f}",
                    f"{m['balanced_accuracy']:.2f}",
                    f"{m['precision']:.2f}",
                    f"{m['recall']:.2f}",
                    f"{m['f1']:.2f}",
                    f"{m['f1_always_success']:.2f}",
                    m.get("abstains", ""),
                    f"TP {c.get('tp', '')} FP {c.get('fp', '')} FN {c.get('fn', '')} TN {c.get('tn', '')}"
                    if c
                    else "",
                ]
            )
        parts.append(
            f"<h3>{html.escape(name)}</h3>"
            + _table(
                [
                    "task",
                    "base rate",
                    "AUROC",
                    "balanced acc.",
                    "precision",
                    "recall",
                    "F1",
                    "F1 always-yes",
                    "abstains",
                    "confusion",
                ],
                rows,
            )
        )
    parts.append(_on_policy_table(rep))
    return "".join(parts)


def _judge_check_section(summary: dict[str, Any]) -> str:
    """With judge_candidates > 1: RL in imagination against each judge on pretraining tasks, and the pick; with
    judge_check.per_target: RL against the picked judge on each target's scene family, and where RL went ahead."""
    check = summary.get("judge_check")
    if not check:
        return ""
    parts = ["<h2>Judge check: which judge can RL follow?</h2>"]
    if check["tasks"]:
        rows = []
        for r in check["rows"]:
            cells = [r["judge"] + (" (picked)" if r["judge"] == check["selected"] else "")]
            cells += [
                before_after(r["tasks"][t].get(p)) for t in check["tasks"] for p in ("practised", "new")
            ]
            rows.append([*cells, f"{r['score']:+d}"])
        header = [
            "judge",
            *[f"{t}, {p} layouts" for t in check["tasks"] for p in ("practised", "new")],
            "score",
        ]
        verdict = (
            "RL against it raised real success there"
            if check["selected_gains"]
            else "the least harmful: RL against no candidate raised real success there"
        )
        parts.append(
            "<p>Judges of the same recipe, other training seeds; RL in the world model against each, from the base "
            "policy, on pretraining tasks the simulator scores (no target data). Score: episodes gained minus lost, "
            f"both protocols. The pick: <b>{html.escape(check['selected'])}</b> ({verdict}).</p>"
            + _table(header, rows)
        )
    skipped = summary.get("rl_skipped")
    if skipped:
        parts.append("<p><b>RL in imagination skipped:</b> " + html.escape(skipped) + "</p>")
    targets = check.get("targets") or {}
    if targets:
        off = summary.get("rl_skipped_targets") or {}
        rows = [
            [
                t,
                "; ".join(
                    f"{task}: "
                    + " / ".join(before_after(v["runs"][task].get(p)) for p in ("practised", "new"))
                    for task in v["tasks"]
                )
                or "-",
                f"+{v['gained']} / -{v['lost']}",
                "skipped: the SFT policy stands" if t in off else "went ahead",
            ]
            for t, v in targets.items()
        ]
        rounds = check.get("hardening") or []
        judge = html.escape(rounds[-1]["name"] if rounds else check["selected"])
        hardened = (
            f" {judge} ({html.escape(rounds[-1]['judge'])}) is {html.escape(check['selected'])} hardened in "
            f"{len(rounds)} round(s): retrained with the imagined rollouts of its check runs' policies (labelled by "
            "the simulator) added, and checked again with other RL streams. Before hardening: "
            + "; ".join(
                f"{html.escape(t)} {'passed' if v['rl'] else 'failed'} (+{v['gained']} / -{v['lost']})"
                for t, v in rounds[0]["targets_before"].items()
            )
            + "."
            if rounds
            else ""
        )
        parts.append(
            f"<p>Per target: RL against {judge} on the pretraining tasks that share the "
            "target's scene (practised / new layouts); RL on the target goes ahead only where it did not lower real "
            f"success there.{hardened}</p>"
            + _table(
                ["target", "RL on its scene family's pretraining tasks", "gained / lost", "RL on the target"],
                rows,
            )
        )
    return "".join(parts)


def _on_policy_table(rep: dict[str, Any]) -> str:
    """The reward RL actually sees: the judge on the SFT policy's own rollouts, real and imagined."""
    on = (rep.get("on_policy") or {}).get("tasks") or {}
    if not on:
        return ""
    rows = []
    for t, r in on.items():
        f = r.get("frames") or {}
        rows.append(
            [
                t,
                r["rollouts"],
                fmt(r["real_success_rate"]),
                fmt(r["judge_on_real"]["auroc"]),
                fmt(r["judge_on_imagined"]["auroc"]),
                fmt(r.get("verdict_agreement", {}).get("kappa")),
                fmt(r.get("judged_success_rate", {}).get("real")),
                fmt(r.get("judged_success_rate", {}).get("imagined")),
                f"{fmt(f['object_ssim'][-1], '.3f')} / {fmt(f['object_ssim_copy'][-1], '.3f')}" if f else "",
                *_transfer_cells(r.get("imagination_transfer")),
            ]
        )
    return (
        "<h3>On the SFT policy's own rollouts (what RL in imagination rewards)</h3><p>The policy samples at the "
        "RL temperature from the RL initial states; the simulator labels each rollout; the world model replays the "
        "same actions. Kappa: agreement of the verdicts on imagined vs real video beyond chance. A systematic "
        "hallucination shows as an imagined judged-success rate far from the real success rate. Acting in "
        "imagination: the policy's success when it acts on the world model's frames (its actions replayed in the "
        "simulator) - far below the real success, RL in imagination trains a policy reality does not have; the judge's "
        "verdict on those closed-loop rollouts is the reward RL in imagination is given (kappa: against the "
        "simulator's success of the same imagined actions). Policy "
        "TV: how much its action distributions move on the imagined observation vs the real one (the first frame: "
        "a world model that draws nothing).</p>"
        + _table(
            [
                "task",
                "rollouts",
                "real success",
                "AUROC real",
                "AUROC imagined",
                "kappa imag. vs real",
                "judged success real",
                "judged success imagined",
                "object SSIM last step (WM / copy)",
                "success acting in imagination",
                "judged acting in imagination (the reward RL sees)",
                "policy TV (WM / first frame)",
            ],
            rows,
        )
    )


def _transfer_cells(t: dict[str, Any] | None) -> list[str]:
    """The on-policy row's imagination-transfer cells (empty in reports measured without them)."""
    if not t:
        return ["", "", ""]
    view, loop = t["policy_view"], t["closed_loop"]
    judged = loop.get("judge") or {}
    return [
        fmt(loop["imagined_policy_success_rate"]),
        f"{fmt(judged.get('judged_success_rate'))} (kappa {fmt(judged.get('kappa_with_replayed_success'))})"
        if judged
        else "",
        f"{fmt(float(np.mean(view['tv'][1:])))} / {fmt(float(np.mean(view['tv_copy'][1:])))}",
    ]


def _rl_section(run: Path, summary: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the RL this run did (its summary's evaluated tasks): a dream folder left by an earlier run is not shown
    ran = {t for prot in summary.get("protocols", {}).values() for t in prot.get("after", {})}
    runs = sorted(
        p
        for p in (RunLayout(run) / RunLayout.dream("")).glob("*")
        if (p / "metrics.jsonl").exists() and (not summary.get("protocols") or p.name in ran)
    )
    if not runs:
        return ""
    fig, axes = plt.subplots(1, 5, figsize=(18, 3))
    keys = [
        ("reward_mean", "judge reward"),
        ("dnv_flip_rate", "DNV flip rate"),
        ("dropped_groups", "dropped groups"),
        ("entropy", "policy entropy"),
        ("eval/practised/success_rate", "real success (o practised, s new layouts)"),
    ]
    for d in runs:
        rows = read_jsonl(d / "metrics.jsonl")
        for ax, (k, title) in zip(axes, keys):
            pts = [(r["step"], r[k]) for r in rows if k in r]
            if pts:
                ax.plot(*zip(*pts), "-o" if k.startswith("eval") else "-", label=d.name, markersize=3)
            if k.startswith("eval"):  # the other protocol on the same axes, never averaged with it
                new = [(r["step"], r["eval/new/success_rate"]) for r in rows if "eval/new/success_rate" in r]
                if new:
                    ax.plot(*zip(*new), "--s", label=f"{d.name} (new)", markersize=3)
            ax.set_title(title)
            ax.set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    gallery = []
    for d in runs:
        files = sorted((d / "gallery").glob("iter_*.npz"))[-1:] + sorted((d / "gallery").glob("verified.npz"))
        for f in files:
            gallery += _gallery(d.name, f)
    return (
        f"<h2>RL in imagination</h2>{_png(fig)}<h3>Imagined rollouts (the second draw beside verified "
        f"successes: other noise, or the second world model of --dnv_world_model)</h3><div class='grid'>{''.join(gallery)}</div>"
    )


def _gallery(name: str, path: Path) -> list[str]:
    g = np.load(path)
    where = f"iteration {int(g['iteration'])}" if "iteration" in g else path.stem
    out = []
    for i in range(len(g["video"])):
        verdict = "success" if g["success"][i] else "failure"
        flag = " - FLIPPED on the second draw (unreliable)" if g["flipped"][i] else ""
        score = "" if np.isnan(g["scores"][i]) else f" p={g['scores'][i]:.2f}"
        pair = _gif(g["video"][i])
        if g["has_second"][i]:
            pair += _gif(g["second"][i])
        out.append(
            f"<figure class='{'flip' if g['flipped'][i] else ''}'>{pair}<figcaption>"
            f"{html.escape(name)} ({where}): judge {verdict}{score}{flag}</figcaption></figure>"
        )
    return out


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}
th{background:#f3f3f3}.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figure.flip{outline:3px solid #d33}
figcaption{font-size:12px;max-width:420px}video{width:360px}img{image-rendering:pixelated}"""


def write_report(run: str | Path) -> Path:
    run = Path(run)
    layout = RunLayout(run)
    summary: dict[str, Any] = read_json(layout.summary) if layout.summary.exists() else {}
    guarantee = summary.get("guarantee", {})
    parts = [f"<h1>rawdream run: {html.escape(run.resolve().name)}</h1>"]
    if guarantee:
        parts.append(
            "<h2>Task-agnostic guarantee</h2><p>Tasks each component was trained on, read from the "
            "artefacts. Targets may only appear in the SFT policy (one demonstration each) and, under the "
            "workspace play protocol, as scenes of the world model's task-free play (no expert of the target, "
            "labels withheld).</p>"
        )
        parts.append(
            _table(["component", "tasks", "count"], [[k, ", ".join(v), len(v)] for k, v in guarantee.items()])
        )
        play = summary.get("play_protocol")
        if play:
            scenes = ", ".join(play["task_free_target_scenes"]) or "none"
            parts.append(
                f"<p>World model play protocol: <b>{html.escape(play['scenes'])}</b> "
                f"(target scenes with task-free play: {html.escape(scenes)}).</p>"
            )
    if summary.get("protocols"):
        parts.append(
            "<h2>Success in the real simulator (95% Wilson intervals)</h2><p>practised layouts: the initial "
            "states RL trained from (the paper's protocol); new layouts: seeds disjoint from every training use. "
            "The two are never averaged together.</p>"
        )
        parts.append(_results(summary))
    base = summary.get("base_on_pretraining_tasks")
    if base:
        lo, hi = base["pooled"]["ci95"]
        parts.append(
            f"<p>Base policy (before 1-shot SFT) on {base['tasks']} pretraining tasks: "
            f"{base['mean_success_rate'] * 100:.1f}% [{lo * 100:.1f}, {hi * 100:.1f}], "
            f"{base['pooled']['episodes']} episodes.</p>"
        )
    parts += [_wm_section(run), _judge_section(run), _judge_check_section(summary), _rl_section(run, summary)]
    if summary.get("stages"):
        parts.append(
            "<h2>Stages</h2>"
            + _table(
                ["stage", "minutes", "skipped"],
                [[s["name"], f"{s['seconds'] / 60:.1f}", s["skipped"]] for s in summary["stages"]],
            )
        )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>rawdream report</title><style>{CSS}</style>"
        f"</head><body>{''.join(parts)}</body></html>"
    )
    path = RunLayout(run).report
    atomic_write_text(path, page)
    return path
