"""Task catalogues: which tasks a simulator backend has, what each one is called and what it asks for.

A catalogue is data, not a simulator: listing tasks, checking a name, resolving a split or looking up an
instruction never imports MuJoCo or the simulator package. Every simulator backend registers one
(``CATALOGUES.register("metaworld")(CATALOGUE)``) next to its environment factory; code outside ``envs/`` asks
this module - ``canonical_task``, ``instruction``, ``paraphrases``, ``tasks_of``, ``named_split`` - and never
knows which simulator a task belongs to. Task names are unique across backends (Meta-World's are short
hyphenated names, LIBERO's are scene sentences), so a name alone finds its catalogue.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from rawdream.registry import Registry


class UnknownTaskError(ValueError):
    """A task name that no simulator backend has."""


@dataclass(frozen=True)
class TaskCatalogue:
    backend: str  # the --env.backend that simulates these tasks
    # task -> (canonical instruction, paraphrases...): the first is what the policy is told; the rest make learned
    # judges read the meaning rather than memorise one string
    instructions: Mapping[str, tuple[str, ...]]
    title: str = ""  # the benchmark's name, for figures ("Meta-World v3")
    # named benchmark splits: name -> held-out target tasks (every other task of the backend is pretraining)
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # the spellings a user may type -> the canonical key (e.g. Meta-World's "drawer_open-v3" -> "drawer-open")
    normalise: Callable[[str], str] = str
    # where the objects' xyz positions sit in the simulator's state vector (``info["state"]``, stored in datasets as
    # ``observation.environment_state``): [start, stop) index ranges, for measures of object motion in data
    object_state: tuple[tuple[int, int], ...] = ()
    # splits whose pretraining tasks are not simply "every other task" (LIBERO: pretrain on LIBERO-90 only)
    pretraining: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # the dataset schema of this simulator's episodes: names of the proprioception and action entries (actions are
    # xyz deltas first and the gripper last, +1 closing, in every backend) and the length of ``info["state"]``
    proprio_names: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()
    state_dim: int = 0
    fps: float = 10.0
    robot: str = ""  # LeRobot's robot_type
    # where task-free play moves the hand: (low xyz, high xyz) in world coordinates, the table's surface at low z
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] = (
        (-0.3, -0.3, 0.0),
        (0.3, 0.3, 0.3),
    )
    # tasks that share a scene (the same object) but not a goal: a video of one is a counterfactual "not done"
    # under the others' instructions (the judge's sibling labels, reward/siblings.py)
    scene_families: tuple[tuple[str, ...], ...] = ()
    # pretraining tasks eval-wm measures beside the targets (a model that fits only the targets shows there)
    probe_tasks: tuple[str, ...] = ()
    experts: bool = False  # scripted experts for every task (demonstrations, noisy-expert play, labeled data)
    # why the catalogue is empty (an optional simulator package that is not installed), with the fix
    unavailable: str = ""

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(sorted(self.instructions))

    def find(self, name: str) -> str | None:
        key = self.normalise(name)
        return key if key in self.instructions else None


#: one catalogue per simulator backend, under the same name as its ``--env.backend``
CATALOGUES = Registry(
    "task catalogue",
    "--env.backend",
    {"metaworld": "rawdream.envs.metaworld_tasks", "libero": "rawdream.envs.libero_tasks"},
)
register_catalogue = CATALOGUES.register


def catalogue(backend: str) -> TaskCatalogue:
    return CATALOGUES.get(backend)


DEFAULT_BACKEND = "metaworld"


def _all() -> list[TaskCatalogue]:
    # the embedded default first in lookups; every catalogue is loaded (LIBERO's reads its package's task table,
    # which imports neither robosuite nor MuJoCo)
    names = sorted(CATALOGUES.names(), key=lambda n: n != DEFAULT_BACKEND)
    return [CATALOGUES.get(name) for name in names]


def backend_of(name: str) -> str:
    """The simulator backend that has task ``name``; unknown names fail with the closest known ones."""
    for cat in _all():
        if cat.find(name) is not None:
            return cat.backend
    known = [t for cat in _all() for t in cat.tasks]
    key = name.strip().lower().replace("_", "-")
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else "run `rawdream tasks` to list them"
    hint += "".join(f"; {cat.unavailable}" for cat in _all() if cat.unavailable)
    backends = ", ".join(CATALOGUES.names())
    raise UnknownTaskError(f"unknown task {name!r} (simulators: {backends}); {hint}")


def canonical_task(name: str) -> str:
    """'drawer-open-v3', 'drawer_open' or 'drawer-open' -> 'drawer-open'; unknown names fail with suggestions."""
    found = catalogue(backend_of(name)).find(name)
    assert found is not None
    return found


def paraphrases(task: str) -> tuple[str, ...]:
    """The task's instruction first, then its paraphrases."""
    cat = catalogue(backend_of(task))
    return cat.instructions[cat.find(task)]


def instruction(task: str) -> str:
    return paraphrases(task)[0]


def tasks_of(backend: str) -> tuple[str, ...]:
    return catalogue(backend).tasks


def named_split(name: str) -> tuple[str, tuple[str, ...]]:
    """A named split -> (its backend, its target tasks)."""
    for cat in _all():
        if name in cat.splits:
            if cat.unavailable:
                raise ValueError(f"split {name!r} is a {cat.backend} split: {cat.unavailable}")
            return cat.backend, tuple(cat.splits[name])
    names = [s for cat in _all() for s in cat.splits]
    raise ValueError(
        f"unknown split {name!r}; named splits: {', '.join(names)}, or give --split.targets task1,task2 for "
        f"your own"
    )
