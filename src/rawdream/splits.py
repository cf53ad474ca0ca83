"""The benchmark split in one place, and the guard that keeps task-agnostic components task-agnostic.

A split names the held-out *target* tasks; every other task of the simulator (or the tasks the split names - LIBERO's
splits pretrain on LIBERO-90 only) is a *pretraining* task. The world
model, the generalist judge and the base policy may only see pretraining tasks; a target task contributes one
demonstration (policy SFT) and reset observations, nothing else - unless a named variant (``co-train``,
``id-ft``) explicitly allows it, and then the variant is recorded with the component.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rawdream.envs.tasks import (
    DEFAULT_BACKEND,
    backend_of,
    canonical_task,
    catalogue,
    named_split,
    paraphrases,
    tasks_of,
)

# the embedded default simulator's first named split (Meta-World's metaworld-heldout5); splits live in the task
# catalogues (envs/)
DEFAULT_SPLIT = next(iter(catalogue(DEFAULT_BACKEND).splits))
TARGET_DATA_VARIANTS = ("co-train", "id-ft")


@dataclass
class SplitConfig:
    """``--split.name metaworld-heldout5`` or your own ``--split.targets drawer-open,door-close``."""

    name: str = DEFAULT_SPLIT
    targets: list[str] = field(default_factory=list)  # non-empty: a custom split; the rest become pretraining

    def __post_init__(self) -> None:
        if self.targets and self.name == DEFAULT_SPLIT:  # a saved config must not name a split it is not
            self.name = "custom"

    def validate(self) -> None:
        resolve_split(self)  # raises on unknown names


@dataclass(frozen=True)
class Split:
    name: str
    targets: tuple[str, ...]
    pretrain: tuple[str, ...]
    backend: str = "metaworld"  # the simulator whose tasks these are

    def as_dict(self) -> dict:
        return {"name": self.name, "targets": list(self.targets), "pretrain": list(self.pretrain)}


def resolve_split(cfg: SplitConfig | None = None) -> Split:
    """A split of one simulator's tasks: the targets, and for pretraining the tasks the split names (LIBERO's
    LIBERO-90) or else every other task of that simulator."""
    cfg = cfg or SplitConfig()
    if cfg.targets:
        targets = tuple(dict.fromkeys(canonical_task(t) for t in cfg.targets))
        backends = sorted({backend_of(t) for t in targets})
        if len(backends) > 1:
            raise ValueError(
                f"--split.targets mixes tasks of simulators {', '.join(backends)}; use one simulator"
            )
        backend, name = backends[0], (cfg.name if cfg.name != DEFAULT_SPLIT else "custom")
    else:
        backend, targets = named_split(cfg.name)
        name = cfg.name
    pretrain = catalogue(backend).pretraining.get(name) or tuple(
        t for t in tasks_of(backend) if t not in targets
    )
    return Split(name=name, targets=targets, pretrain=pretrain, backend=backend)


class TargetTaskLeakError(ValueError):
    """A task-agnostic component was about to be trained on data of a held-out target task."""


def _normalise(name: str) -> str:
    try:
        return canonical_task(name)
    except ValueError:
        return name.strip().lower()


def target_tasks_in(manifest: dict, split: Split) -> list[str]:
    """Target tasks a dataset manifest contains (by scene name, or by instruction text for foreign data)."""
    found = set()
    target_texts = {p.lower(): t for t in split.targets for p in paraphrases(t)}
    for name in manifest.get("tasks", []):
        norm = _normalise(str(name))
        if norm in split.targets:
            found.add(norm)
        elif str(name).strip().lower() in target_texts:
            found.add(target_texts[str(name).strip().lower()])
    return sorted(found)


TASK_FREE_BEHAVIOURS = ("random", "poke", "interact")


def task_free_target_scenes(manifest: dict, split: Split, episodes: dict | None) -> list[str]:
    """Target scenes that a play dataset covers with task-free behaviour only (the workspace play protocol).

    Trusted only when every episode in those scenes says so itself: behaviour in TASK_FREE_BEHAVIOURS and the
    simulator's labels withheld; a dataset without per-episode records gets none."""
    if manifest.get("kind") != "play" or manifest.get("instructions_are_labels") or not episodes:
        return []
    claimed = set(manifest.get("task_free_scenes") or []) & set(split.targets)
    scenes = episodes.get("rawdream/env_task") or []
    behaviours = episodes.get("rawdream/behaviour") or []
    labelled = episodes.get("rawdream/labelled") or []
    if not (len(scenes) == len(behaviours) == len(labelled)):
        return []
    for scene, behaviour, lab in zip(scenes, behaviours, labelled):
        if scene in claimed and (behaviour not in TASK_FREE_BEHAVIOURS or lab):
            claimed.discard(scene)
    return sorted(claimed)


def check_task_agnostic(
    manifest: dict,
    split: Split,
    component: str,
    variant: str | None = None,
    task_free_play: list[str] | None = None,
) -> list[str]:
    """Refuse to train ``component`` on data containing target tasks unless ``variant`` allows it.

    ``task_free_play``: target scenes the caller verified hold task-free play only (``task_free_target_scenes``);
    only the world model passes them - the judge and the base policy never see a target scene.
    Returns the target tasks present with task-directed data (empty for task-agnostic data) so callers can record
    them.
    """
    leaked = [t for t in target_tasks_in(manifest, split) if t not in set(task_free_play or [])]
    if leaked and variant not in TARGET_DATA_VARIANTS:
        raise TargetTaskLeakError(
            f"refusing to train the {component} on data containing held-out target task(s) {', '.join(leaked)} "
            f"of split {split.name!r}; collect data on pretraining tasks only, or name a variant that uses "
            f"target data explicitly (--variant {' / --variant '.join(TARGET_DATA_VARIANTS)})"
        )
    return leaked
