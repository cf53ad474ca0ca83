"""``rawdream experiment rl-table RUN...``: one row per ``rawdream dream --eval_start=true`` run - what was changed
from the defaults, what it cost, and success before -> after under both evaluation protocols, paired on the same
episodes - as markdown and as the JSON a README table is checked against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rawdream.config import to_dict
from rawdream.io import read_json
from rawdream.rl.dream import DreamConfig

# keys that say where a run was, not what it did
_IGNORED = {
    "task",
    "split",
    "judge",
    "env",
    "ray",
    "workers",
    "threads",
    "device",
    "gallery",
    "eval_every",
    "config_type",
}
# the settings an RL recipe is told apart by, always shown
RECIPE = (
    "lr",
    "temperature",
    "exploration",
    "drop_uninformative",
    "sample_rounds",
    "groups",
    "group_size",
    "init_states",
    "iterations",
)


def changed_settings(config: dict[str, Any]) -> dict[str, Any]:
    base = to_dict(DreamConfig())
    return {k: v for k, v in config.items() if k not in _IGNORED and base.get(k) != v}


def judged_reward(run: str | Path, window: int = 5) -> dict[str, float] | None:
    """The judged success rate of the rollouts RL trained on, averaged over its first and its last ``window``
    iterations (``metrics.jsonl``). Beside the real success before -> after it shows whether RL followed the
    reward and whether the reward followed the real task: judged rising while real success stays put is a reward
    being exploited (in imagination: by the judge's reading or by what the world model draws)."""
    from rawdream.io import read_jsonl

    path = Path(run) / "metrics.jsonl"
    rows = [r for r in read_jsonl(path) if r.get("stage") == "train"] if path.exists() else []
    rates = [float(r["judged_success_rate"]) for r in rows if "judged_success_rate" in r]
    if not rates:
        return None
    return {
        "first": float(sum(rates[:window]) / len(rates[:window])),
        "last": float(sum(rates[-window:]) / len(rates[-window:])),
        "window": window,
    }


def rl_table(runs: list[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        run = Path(run)
        info_file, cfg_file = run / "policy.json", run / "config.yaml"
        if not info_file.exists() or not cfg_file.exists():
            raise FileNotFoundError(
                f"{run}: no policy.json/config.yaml - is it a finished `rawdream dream` run?"
            )
        info = read_json(info_file)
        if not info.get("paired"):
            raise ValueError(
                f"{run}: no paired evaluation; run dream with --eval_start=true (and eval_every > 0)"
            )
        cfg = yaml.safe_load(cfg_file.read_text())
        rows.append(
            {
                "run": run.name,
                "task": info["task"],
                "env_mode": info["env_mode"],
                "judge": info["judge"],
                "changed": changed_settings(cfg),
                "recipe": {k: cfg.get(k) for k in RECIPE},
                "iterations": info["iterations"],
                "real_trajectories_rl": info["real_trajectories_rl"],
                "minutes": round(info["seconds"] / 60, 1),
                "judged_reward": judged_reward(run),
                "protocols": info["paired"],
            }
        )
    return rows


def pooled(rows: list[dict[str, Any]], skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """Per protocol, the rows' paired results pooled - one row per task (rows that share a task compare recipes on
    the same episodes: nothing to pool, ``{}``): episodes gained and lost summed, one McNemar test. ``skipped``
    (task -> why, a per-target judge check's verdicts) counts those rows as unchanged - the SFT policy stands where
    the check kept RL away, so their episodes stay in, none gained or lost."""
    from rawdream.eval.success import pool_paired

    tasks = [r["task"] for r in rows]
    if len(rows) < 2 or len(set(tasks)) < len(tasks):
        return {}
    skipped = skipped or {}
    out = {}
    for p in ("practised", "new"):
        cells = [(r["task"], r["protocols"][p]) for r in rows if p in r["protocols"]]
        if not cells:
            continue
        episodes = sum(c["episodes"] for _, c in cells)
        pool = pool_paired([c for task, c in cells if task not in skipped])
        out[p] = {
            "rows": len(cells),
            "skipped_tasks": sorted(task for task, _ in cells if task in skipped),
            "episodes": episodes,
            "before": sum(c["before"] * c["episodes"] for _, c in cells) / episodes,
            "difference": (pool["gained"] - pool["lost"]) / episodes,
            **pool,
        }
    return out


def skipped_by_check(check_json: str | Path) -> dict[str, str]:
    """The targets a per-target judge check (``judge-check --per_target=true``) kept RL away from."""
    rep = read_json(check_json)
    if "targets" not in rep:
        raise ValueError(f"{check_json}: no per-target verdicts; run judge-check with --per_target=true")
    return {t: v["why"] for t, v in rep["targets"].items() if not v["rl"]}


def format_pooled(pool: dict[str, Any]) -> str:
    parts = []
    for p, d in pool.items():
        skip = (
            f"; RL skipped by the check on {', '.join(d['skipped_tasks'])}: unchanged"
            if d["skipped_tasks"]
            else ""
        )
        parts.append(
            f"{p} layouts {d['difference'] * 100:+.1f} points (+{d['gained']} / -{d['lost']} episodes of "
            f"{d['episodes']}, McNemar p={d['mcnemar_p']:.2g}{skip})"
        )
    return f"\npooled over the {max(d['rows'] for d in pool.values())} rows: " + "; ".join(parts) + "\n"


def format_rl_table(
    rows: list[dict[str, Any]], pool: dict[str, Any] | None = None, skipped: dict[str, str] | None = None
) -> str:
    def cell(d):
        if not d:
            return ""
        return (
            f"{d['before'] * 100:.1f} -> {d['after'] * 100:.1f} ({d['difference'] * 100:+.1f}, "
            f"+{d['gained']}/-{d['lost']}, p={d['mcnemar_p']:.2g})"
        )

    def judged(j):
        return "" if not j else f"{j['first']:.2f} -> {j['last']:.2f}"

    lines = [
        "| run | task | lr | T | noise | filter | rounds | groups x size | layouts | iterations | real trajectories "
        "| minutes | judged reward, first -> last iterations | practised layouts | new layouts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["recipe"]
        lines.append(
            f"| {r['run']}{' (RL skipped by the check: SFT stands)' if r['task'] in (skipped or {}) else ''} | "
            f"{r['task']} | {c['lr']:g} | {c['temperature']:g} | {c.get('exploration') or 'token'} | "
            f"{'yes' if c['drop_uninformative'] else 'no'} | {c['sample_rounds']} | {c['groups']} x "
            f"{c.get('group_size') or '?'} | {c['init_states']} | {c['iterations']} | {r['real_trajectories_rl']} | "
            f"{r['minutes']} | {judged(r.get('judged_reward'))} | "
            f"{cell(r['protocols'].get('practised'))} | {cell(r['protocols'].get('new'))} |"
        )
    text = "\n".join(lines) + "\n"
    if pool:
        text += format_pooled(pool)
    elif len(rows) > 1:
        text += "\n(no pooled line: rows share a task - they compare recipes on the same episodes)\n"
    return text
