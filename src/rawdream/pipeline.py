"""``rawdream run``: the main job on the embedded default, stage after stage, each stage resumable.

Today the chain is: collect task-free play data on the pretraining tasks -> collect one expert demonstration
of each held-out target task. Later stages (world model, judge, policy, dream, evaluation) plug in here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rawdream.config import build, load_preset, merge_dicts, nest_overrides, presets_file, save_config
from rawdream.data.collect import CollectConfig, CollectSummary, collect
from rawdream.splits import SplitConfig, resolve_split

# sections of the run config and the stage whose "_base" they start from
SECTIONS = {"play": "collect_play", "demos": "collect_demos"}


@dataclass
class RunConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    play: CollectConfig = field(default_factory=CollectConfig)
    demos: CollectConfig = field(default_factory=lambda: CollectConfig(kind="demos"))


def resolve_run(preset: str | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    data = load_preset("run", preset or "default")
    if overrides:
        data = merge_dicts(data, nest_overrides(overrides))
    for section, stage in SECTIONS.items():
        base = dict((presets_file().get(stage) or {}).get("_base") or {})
        data[section] = merge_dicts(base, data.get(section) or {})
    split = data.get("split") or {}
    data["play"]["split"] = merge_dicts(split, data["play"].get("split") or {})
    data["demos"]["split"] = merge_dicts(split, data["demos"].get("split") or {})
    data["demos"].setdefault("tasks", ["targets"])
    data["demos"].setdefault("episodes_per_task", 1)
    return build(RunConfig, data)


@dataclass
class StageResult:
    name: str
    seconds: float
    summary: Any


def run(cfg: RunConfig, out: str | Path, progress: bool = True, log=print) -> list[StageResult]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    split = resolve_split(cfg.split)
    log(
        f"[run] split {split.name}: targets {', '.join(split.targets)}; {len(split.pretrain)} pretraining tasks"
    )
    results = []
    for name, sub, path in (
        ("collect play", cfg.play, out / "play"),
        ("collect demos", cfg.demos, out / "demos"),
    ):
        t0 = time.time()
        log(f"[run] {name} -> {path}")
        summary: CollectSummary = collect(sub, path, progress=progress)
        results.append(StageResult(name, time.time() - t0, summary))
        log(f"[run] {name} done in {time.time() - t0:.0f} s")
    return results
