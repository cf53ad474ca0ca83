"""Collect the three kinds of data the method needs, from the real simulator, in parallel worker processes.

* play (task-free): noisy expert rollouts at several noise scales, stalled experts, random exploratory motion
  and random pokes/drags around the scene's objects on the pretraining tasks, so successes and failures mix and
  objects move in directions no single task needs. The instruction is *not* stored as a label
  of the behaviour (the world model must not learn from it): every episode's LeRobot task is ``"play"``.
  Under the ``workspace`` protocol (default) play also covers the target tasks' scenes - the paper's world model
  is trained on play in the deployment workspace - but there only with *task-free* behaviours (random motion,
  pokes, object-directed reach/grasp/push/pull/release in random directions), never the target's expert, and
  with the simulator's success/reward withheld (written as 0/False, the episode marked unlabelled). The strict
  ``pretraining`` protocol plays in pretraining scenes only.
* demos: expert demonstrations, one rendered frame per control step (BC can start from any step).
* labeled: rollouts with the simulator's success label and the instruction, for training and evaluating judges.

Rendering dominates the cost (about 10 ms per 64x64 frame against 0.5 ms of physics), so play and labeled data
render one frame per 8-step action chunk (``frame_stride``): the world model predicts the frame at each chunk's
end and judges watch those frames. A row of a strided dataset holds the frame at a chunk boundary and the
``frame_stride`` actions executed after it.

Each episode is a deterministic function of its :class:`EpisodeSpec` (task, seed, behaviour), so a killed
collection resumes by skipping the specs already on disk.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

from rawdream import seeds
from rawdream.config import config_hash, to_dict
from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotDataset, LeRobotWriter, video_feature
from rawdream.data.video import VideoConfig
from rawdream.envs.base import EnvConfig
from rawdream.envs.tasks import UnknownTaskError, backend_of, canonical_task, catalogue, instruction
from rawdream.splits import TASK_FREE_BEHAVIOURS, SplitConfig, resolve_split  # noqa: F401

BEHAVIOURS = ("expert", "stall", "random", "poke", "interact", "mimic", "retreat")
PLAY_SCENES = ("workspace", "pretraining")


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that determines one collected episode."""

    task: str
    seed: int
    behaviour: str  # expert | stall | random | poke | interact | mimic | retreat
    sigma: float = 0.0  # std of Gaussian action noise added to the expert (xyz and gripper)
    stall_at: int = -1  # stall: expert until this step, then small random motion
    max_steps: int = 128
    frame_stride: int = 1
    end_on_success: bool = False
    object_masks: bool = (
        False  # also return the task objects' segmentation mask at every kept frame (eval-wm)
    )
    labels: bool = (
        True  # False: the simulator's reward/success are withheld (task-free play in a target scene)
    )

    @property
    def key(self) -> str:
        return f"{self.task}|{self.seed}|{self.behaviour}|{self.sigma:.3f}|{self.stall_at}"


# --------------------------------------------------------------------------------------------------------------
# behaviours (run inside the worker, next to the simulator)
# --------------------------------------------------------------------------------------------------------------
def _action(xyz: np.ndarray, grip: float, action_dim: int) -> np.ndarray:
    """A full action from a hand motion and a gripper command: every backend puts xyz first and the gripper last
    (rotation, where a backend has it, stays still in task-free play)."""
    a = np.zeros(action_dim, np.float64)
    a[:3], a[-1] = xyz, grip
    return np.clip(a, -1, 1).astype(np.float32)


class _RandomExplorer:
    """Smooth exploratory motion: move toward random waypoints in the hand's workspace (the simulator's
    ``workspace`` box from its catalogue), toggling the gripper."""

    def __init__(self, rng: np.random.Generator, workspace, action_dim: int):
        self.rng = rng
        self.LOW, self.HIGH = np.asarray(workspace[0], np.float64), np.asarray(workspace[1], np.float64)
        self.action_dim = action_dim
        self.waypoint = rng.uniform(self.LOW, self.HIGH)
        self.grip = rng.choice([-1.0, 1.0])
        self.hold = 0

    def __call__(self, hand: np.ndarray) -> np.ndarray:
        if self.hold <= 0 or np.linalg.norm(self.waypoint - hand) < 0.02:
            self.waypoint = self.rng.uniform(self.LOW, self.HIGH)
            self.hold = int(self.rng.integers(12, 40))
            if self.rng.random() < 0.5:
                self.grip = -self.grip
        self.hold -= 1
        xyz = np.clip((self.waypoint - hand) * 10.0, -1, 1) + self.rng.normal(0, 0.2, 3)
        return _action(xyz, self.grip, self.action_dim)


class _ObjectPoker(_RandomExplorer):
    """Task-free interaction: random waypoints around the scene's main object (its position from the simulator
    state, as a teleoperator sees where things are), with random gripper closing - pushes, drags and pulls of
    handles, drawers, doors and pucks in every direction, not only the direction a task would need."""

    def __init__(self, rng: np.random.Generator, obj: np.ndarray, workspace, action_dim: int):
        self.obj = obj
        super().__init__(rng, workspace, action_dim)

    def __call__(self, hand: np.ndarray, obj: np.ndarray | None = None) -> np.ndarray:
        if obj is not None:
            self.obj = obj
        if self.hold <= 0 or np.linalg.norm(self.waypoint - hand) < 0.015:
            self.waypoint = np.clip(self.obj + self.rng.normal(0, [0.06, 0.06, 0.04]), self.LOW, self.HIGH)
            self.waypoint[2] = max(
                self.waypoint[2], self.LOW[2] - 0.01
            )  # (a no-op after the clip; kept as is)
            self.hold = int(self.rng.integers(8, 24))
            if self.rng.random() < 0.4:
                self.grip = -self.grip
        self.hold -= 1
        xyz = np.clip((self.waypoint - hand) * 12.0, -1, 1) + self.rng.normal(0, 0.1, 3)
        return _action(xyz, self.grip, self.action_dim)


class _Interactor:
    """Task-free object-directed interaction, as a teleoperator plays with whatever is on the table: reach above a
    point on the scene's main object, descend, grasp it or not, move in a random direction (axis-aligned half the
    time: pushes, pulls, lifts; any direction otherwise) for a random while, release, lift, repeat. Nothing here
    knows the scene's task; drawers open and close, levers and doors swing, and pucks slide by chance."""

    def __init__(self, rng: np.random.Generator, obj: np.ndarray, action_dim: int):
        self.rng = rng
        self.obj = obj
        self.action_dim = action_dim
        self._next()

    def _next(self) -> None:
        r = self.rng
        self.target = self.obj + r.normal(0, [0.015, 0.015, 0.01])
        self.phase, self.n = "above", 0
        self.grasp = r.random() < 0.6
        if r.random() < 0.5:
            d = np.zeros(3)
            d[r.integers(3)] = r.choice([-1.0, 1.0])
        else:
            d = r.normal(0, [1.0, 1.0, 0.5])
        self.direction = d / (np.linalg.norm(d) + 1e-8)
        self.move_steps = int(r.integers(15, 50))
        self.speed = r.uniform(0.5, 1.0)

    def __call__(self, hand: np.ndarray, obj: np.ndarray) -> np.ndarray:
        grip = -1.0
        if self.phase == "above":  # approach from above so the hand does not sweep the object away first
            above = self.target + np.array([0.0, 0.0, 0.08])
            xyz = (above - hand) * 10.0
            if np.linalg.norm(above - hand) < 0.02 or self.n > 40:
                self.phase, self.n = "down", 0
        elif self.phase == "down":
            xyz = (self.target - hand) * 10.0
            if np.linalg.norm(self.target - hand) < 0.015 or self.n > 25:
                self.phase, self.n = "grip", 0
        elif self.phase == "grip":
            xyz, grip = np.zeros(3), (1.0 if self.grasp else -1.0)
            if self.n > 6:
                self.phase, self.n = "move", 0
        elif self.phase == "move":
            xyz, grip = self.direction * self.speed, (1.0 if self.grasp else -1.0)
            if self.n > self.move_steps:
                self.phase, self.n = "release", 0
        else:  # release and lift, then pick a new point on the object where it is now
            xyz = np.array([0.0, 0.0, 0.6])
            if self.n > 8:
                self.obj = obj
                self._next()
        self.n += 1
        xyz = np.clip(xyz, -1, 1) + self.rng.normal(0, 0.05, 3)
        return _action(xyz, grip, self.action_dim)


class _Mimic:
    """What a success looks like to the hand, without its effect on the object - the judge's hard negatives.
    Half the episodes (``path``) follow the path the scripted expert took from this very initial state (gripper
    commands included), displaced by a fixed offset of 2-10 cm: the hand closes on air beside the handle, slides
    past the object and ends near where a success ends. The other half (``goal``) take the hand over and down onto
    the task's goal marker, where a success leaves the object (or, for reach tasks, the hand), and linger there.
    A judge that scores where the hand goes rather than what the object does calls these successes; RL against such
    a judge found exactly that behaviour (docs/judges.md), so the judge is trained on it. The simulator labels
    every episode: a small offset that still does the task, or a reach task's hand on its goal, is a success."""

    def __init__(
        self, rng: np.random.Generator, path: np.ndarray, grips: np.ndarray, goal: np.ndarray, action_dim: int
    ):
        self.rng, self.action_dim, self.t = rng, action_dim, 0
        self.form = "path" if rng.random() < 0.5 else "goal"
        d = rng.normal(0.0, 1.0, 3)
        d[2] = abs(d[2])  # never below the path: a hand pressed into the table drags everything with it
        self.offset = d / (np.linalg.norm(d) + 1e-8) * rng.uniform(0.02, 0.10)
        self.path, self.grips = path, grips
        # goal: wait a while (so the arrival time varies), rise, cross over, descend onto the marker and stay
        self.goal = goal + rng.normal(0.0, [0.01, 0.01, 0.005])
        self.start = int(rng.integers(0, len(path) // 3 + 1))
        self.grip = float(rng.choice([-1.0, 1.0]))
        self.phase = "wait"

    def __call__(self, hand: np.ndarray) -> np.ndarray:
        t, self.t = self.t, self.t + 1
        if self.form == "path":
            i = min(t, len(self.path) - 1)
            return _action((self.path[i] + self.offset - hand) * 15.0, self.grips[i], self.action_dim)
        if self.phase == "wait" and t >= self.start:
            self.phase, self.high = "rise", max(hand[2], self.goal[2]) + 0.10  # cruise above both
        if self.phase == "wait":
            xyz = np.zeros(3)
        elif self.phase == "rise":
            xyz = np.array([0.0, 0.0, (self.high - hand[2]) * 15.0])
            if hand[2] >= self.high - 0.02 or t > self.start + 20:
                self.phase = "over"
        elif self.phase == "over":
            above = np.array([self.goal[0], self.goal[1], hand[2]])
            xyz = (above - hand) * 15.0
            if np.linalg.norm(above[:2] - hand[:2]) < 0.02:
                self.phase = "down"
        else:
            xyz = (self.goal - hand) * 15.0 + self.rng.normal(0.0, 0.1, 3)
        return _action(xyz, self.grip, self.action_dim)


class _Retreat:
    """A success that does not end with the hand where the success happened - the judge's hard positives, the
    mirror of ``_Mimic``. The scripted expert runs until the task succeeds; then the gripper opens, the hand lifts
    ``lift`` metres and goes back over the table toward where it started, for ``steps`` more steps. Why: scripted
    successes ended on success, with the hand on the handle, the lever or the puck, and the mimic negatives put the
    hand there without the object - so "where the hand is" still separated them less than "what the object did" only
    where the data had both. Counted at stop 43: of 476 drawer frames the judge trained on, 2 showed a shut drawer
    with the hand away, and RL on drawer-open found the demo's final arm pose, drawer shut, judged a success. A
    success the release undoes (an object held in the air) is recorded as it is; ``held_at_end`` says so."""

    def __init__(self, home: np.ndarray, action_dim: int, steps: int = 24, lift: float = 0.10):
        self.home, self.action_dim, self.steps, self.lift = home, action_dim, steps, lift
        self.n, self.high = 0, None

    def done(self) -> bool:
        return self.n >= self.steps

    def __call__(self, hand: np.ndarray) -> np.ndarray:
        if self.high is None:
            self.high = hand[2] + self.lift
        self.n += 1
        if hand[2] < self.high - 0.02 and self.n <= self.steps // 3:  # up first: do not drag the object back
            return _action(np.array([0.0, 0.0, 1.0]), -1.0, self.action_dim)
        away = np.array([self.home[0], self.home[1], max(self.home[2], self.high)])
        return _action((away - hand) * 10.0, -1.0, self.action_dim)


def expert_path(env, seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The scripted expert's hand positions after each of ``steps`` steps from ``seed``'s initial state, and its
    gripper commands (nothing rendered); leaves the env mid-episode: reset it before use."""
    env.reset(seed)
    path, grips = [], []
    for _ in range(steps):
        a = env.expert_action()
        env.step(a, render=False)
        path.append(env.proprio()[:3].astype(np.float64))
        grips.append(float(a[-1]))
    return np.stack(path), np.asarray(grips)


# A few simulators per worker, least recently used closed first: each holds ~86 MB with its renderer, and episodes
# come task by task, so keeping all 45 tasks' envs alive would only cost memory (3.9 GB per worker).
_ENVS: OrderedDict[tuple, Any] = OrderedDict()
_MAX_ENVS = 4


def _worker_env(task: str, env_cfg: EnvConfig):
    from rawdream.envs.base import make_env

    key = (task, config_hash(env_cfg))
    if key not in _ENVS:
        while len(_ENVS) >= _MAX_ENVS:
            _ENVS.popitem(last=False)[1].close()
        _ENVS[key] = make_env(task, env_cfg)
    _ENVS.move_to_end(key)
    return _ENVS[key]


def _worker_init() -> None:
    import os

    from rawdream.io import die_with_parent

    die_with_parent()
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(1)


def run_episode(spec: EpisodeSpec, env_cfg: EnvConfig) -> dict[str, Any]:
    """Roll out one episode and return the rows of a (strided) dataset episode."""
    env = _worker_env(
        # a retreat runs on past its success whatever the collection's --end_on_success says
        spec.task,
        replace(
            env_cfg,
            max_steps=spec.max_steps,
            end_on_success=spec.end_on_success and spec.behaviour != "retreat",
        ),
    )
    rng = np.random.default_rng([spec.seed, BEHAVIOURS.index(spec.behaviour), int(spec.sigma * 1000)])
    path = expert_path(env, spec.seed, spec.max_steps) if spec.behaviour == "mimic" else None
    obs, info = env.reset(spec.seed)
    mimic = _Mimic(rng, *path, env.goal_position(), env.action_dim) if path else None
    k = spec.frame_stride
    adim, workspace = env.action_dim, catalogue(env_cfg.backend).workspace
    explorer = _RandomExplorer(rng, workspace, adim)
    poker = _ObjectPoker(rng, info["object_position"], workspace, adim)
    interactor = _Interactor(rng, info["object_position"], adim)
    retreat = _Retreat(env.proprio()[:3].astype(np.float64), adim) if spec.behaviour == "retreat" else None
    frames, proprio, states = [obs["image"]], [obs["proprio"]], [info["state"]]
    positions = [info["object_position"]]
    masks = [env.object_mask()] if spec.object_masks else []
    actions, rewards, chunk_success = [], [], []
    chunk_a, chunk_r, chunk_s = [], 0.0, False
    success_step = -1
    t = 0
    while True:
        if spec.behaviour == "random":
            a = explorer(env.proprio()[:3])
        elif spec.behaviour == "poke":
            a = poker(env.proprio()[:3], info["object_position"])
        elif spec.behaviour == "interact":
            a = interactor(env.proprio()[:3], info["object_position"])
        elif mimic is not None:
            a = mimic(env.proprio()[:3])
        elif retreat is not None and success_step >= 0:
            a = retreat(env.proprio()[:3])
        elif spec.behaviour == "stall" and t >= spec.stall_at:
            a = rng.normal(0, 0.3, adim)
        else:
            a = env.expert_action()
        if spec.sigma > 0:
            a = a + rng.normal(0, spec.sigma, adim)
        a = np.clip(a, -1, 1).astype(np.float32)
        boundary = (t + 1) % k == 0
        obs, r, terminated, truncated, info = env.step(a, render=boundary or False)
        t += 1
        chunk_a.append(a)
        chunk_r += r
        if info["success"]:
            chunk_s = True
            if success_step < 0:
                success_step = t
        done = truncated or terminated or (spec.end_on_success and success_step >= 0 and retreat is None)
        done = done or (retreat is not None and retreat.done() and boundary)  # retreated: end with the chunk
        if boundary or done:
            if not boundary:  # an episode that ends mid-chunk still needs its last frame
                obs = {**obs, "image": env.render()}
            while len(chunk_a) < k:  # pad a final partial chunk with no-ops (only demos end mid-chunk, k=1)
                chunk_a.append(np.zeros(adim, np.float32))
            actions.append(np.stack(chunk_a))
            rewards.append(chunk_r)
            chunk_success.append(chunk_s)
            frames.append(obs["image"])
            if spec.object_masks:
                masks.append(env.object_mask())
            proprio.append(obs["proprio"])
            states.append(info["state"])
            positions.append(info["object_position"])
            chunk_a, chunk_r, chunk_s = [], 0.0, False
        if done:
            break
    n = len(frames)
    action = np.concatenate([np.stack(actions), np.zeros((1, k, adim), np.float32)])  # last frame: no action
    if k == 1:
        action = action[:, 0]
    done_flags = np.zeros(n, bool)
    done_flags[-1] = True
    if not spec.labels:  # withheld: nothing of the scene's task success leaves the worker
        rewards, chunk_success, success_step = [0.0] * len(rewards), [False] * len(chunk_success), -1
    return {
        "frames": np.stack(frames).astype(np.uint8),
        "masks": np.stack(masks) if masks else None,
        "object_position": np.stack(positions).astype(np.float32),  # per kept frame, for fidelity measures
        "data": {
            "observation.state": np.stack(proprio).astype(np.float32),
            "observation.environment_state": np.stack(states).astype(np.float32),
            "action": action.astype(np.float32),
            "next.reward": np.append(np.asarray(rewards, np.float32), 0.0).astype(np.float32),
            "next.success": np.append(np.asarray(chunk_success, bool), False),
            "next.done": done_flags,
        },
        "success": success_step >= 0,
        "success_step": success_step,
        "steps": t,
    }


# --------------------------------------------------------------------------------------------------------------
# configs and spec generation
# --------------------------------------------------------------------------------------------------------------
@dataclass
class TaskFreeMix:
    """Behaviour mix (fractions of episodes) of play in a target task's scene: task-free behaviours only."""

    random: float = 0.2
    poke: float = 0.4
    interact: float = 0.4


@dataclass
class CollectConfig:
    # keys added after runs were recorded: at these values they leave a run's collect stage hashes as they were
    HASH_QUIET: ClassVar[dict] = {"frac_retreat": 0.0}
    RANGES: ClassVar[dict] = {
        "episodes_per_task": ">=1",
        "max_steps": ">=1",
        "frame_stride": ">=1",
        "workers": (">=0", "0 or 1: in this process"),
        "episodes_per_file": ">=1",
        "seed_offset": ">=0",
        "max_demo_tries": (">=1", "episodes tried per demonstration before giving up on a task"),
    }

    kind: str = "play"  # play | demos | labeled
    split: SplitConfig = field(default_factory=SplitConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    tasks: list[str] = field(
        default_factory=list
    )  # empty: the split's pretraining tasks (+ targets, see scenes)
    # play only - which scenes play covers when `tasks` is empty: workspace = every scene of the benchmark, the
    # targets' with task-free behaviours (free_mix) and withheld labels; pretraining = pretraining scenes only
    scenes: str = "workspace"
    free_mix: TaskFreeMix = field(default_factory=TaskFreeMix)
    episodes_per_task: int = 60
    max_steps: int = 128
    frame_stride: int = 8
    # play / labeled behaviour mix (fractions of episodes); noisy-expert sigmas are drawn from noise_scales
    frac_expert: float = 0.5
    frac_stall: float = 0.15
    frac_random: float = 0.1
    frac_poke: float = 0.25
    frac_mimic: float = 0.0  # labeled only: the expert's hand path displaced so it misses (see _Mimic)
    frac_retreat: float = 0.0  # labeled only: the expert until success, then the hand leaves (see _Retreat)
    noise_scales: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.6, 1.0])
    end_on_success: bool = False
    workers: int = 2
    episodes_per_file: int = 100
    seed_offset: int = 0  # added to the kind's seed range (see rawdream.seeds)
    # demos: a failed expert episode is replaced by the next seed's until each task has episodes_per_task
    # successful demonstrations, at most episodes_per_task * max_demo_tries tries; then a clear error
    max_demo_tries: int = 10

    def validate(self) -> None:
        # collection owns its episodes' length and ending: an env.* value that disagrees would be overridden
        # silently, so it is refused instead
        if self.env.max_steps not in (EnvConfig().max_steps, self.max_steps):
            raise ValueError(
                f"collect sets the episode length with --max_steps (now {self.max_steps}); "
                f"--env.max_steps={self.env.max_steps} would be ignored: pass --max_steps={self.env.max_steps}"
            )
        if (
            self.env.end_on_success != EnvConfig().end_on_success
            and self.env.end_on_success != self.end_on_success
        ):
            raise ValueError(
                f"collect decides whether an episode ends on success with --end_on_success (now "
                f"{self.end_on_success}); --env.end_on_success={self.env.end_on_success} would be ignored"
            )
        if self.kind not in ("play", "demos", "labeled"):
            raise ValueError(f"collect kind {self.kind!r} is not one of play, demos, labeled")
        if self.frame_stride < 1 or self.max_steps % self.frame_stride:
            raise ValueError(
                f"max_steps={self.max_steps} must be a multiple of frame_stride={self.frame_stride} (whole chunks)"
            )
        fracs = (
            self.frac_expert,
            self.frac_stall,
            self.frac_random,
            self.frac_poke,
            self.frac_mimic,
            self.frac_retreat,
        )
        if min(fracs) < 0 or abs(sum(fracs) - 1.0) > 1e-6:
            raise ValueError(
                "frac_expert + frac_stall + frac_random + frac_poke + frac_mimic + frac_retreat must be 1, "
                f"got {sum(fracs):.3f}"
            )
        if self.frac_mimic and self.kind != "labeled":
            raise ValueError(
                f"--frac_mimic={self.frac_mimic} is for labeled judge data only (it follows the expert's path): "
                f"use it with `collect labeled`"
            )
        if self.frac_retreat and self.kind != "labeled":
            raise ValueError(
                f"--frac_retreat={self.frac_retreat} is for labeled judge data only (it runs the expert to "
                f"success): use it with `collect labeled`"
            )
        if self.episodes_per_task < 1:
            raise ValueError(f"episodes_per_task={self.episodes_per_task} must be at least 1")
        if self.scenes not in PLAY_SCENES:
            raise ValueError(f"scenes={self.scenes!r} is not one of {', '.join(PLAY_SCENES)}")
        free = (self.free_mix.random, self.free_mix.poke, self.free_mix.interact)
        if min(free) < 0 or abs(sum(free) - 1.0) > 1e-6:
            raise ValueError(
                f"free_mix.random + free_mix.poke + free_mix.interact must be 1, got {sum(free):.3f}"
            )
        for t in self.tasks:
            if t not in ("pretrain", "targets"):
                canonical_task(t)
        backend = self.env.backend
        if not catalogue(backend).experts:
            if self.kind != "play":
                raise ValueError(
                    f"collect {self.kind} needs scripted experts, which {backend} does not have: bring "
                    f"demonstrations as a LeRobot v3 dataset instead (--data DIR)"
                )
            if self.frac_expert or self.frac_stall:
                raise ValueError(
                    f"{backend} has no scripted experts, so play there cannot have --frac_expert="
                    f"{self.frac_expert} / --frac_stall={self.frac_stall}: set both to 0 and give the episodes "
                    f"to --frac_random / --frac_poke (the `{backend}` preset does: --preset {backend})"
                )

    def task_free_scenes(self) -> list[str]:
        """The scenes of this collection that get task-free behaviours only, with labels withheld: in play, every
        target task's scene (whichever protocol brought it in)."""
        if self.kind != "play":
            return []
        targets = set(resolve_split(self.split).targets)
        return [t for t in self.resolved_tasks() if t in targets]

    def content_hash(self) -> str:
        """Hash of what determines an episode's content. Workers, file sizes, and which/how many episodes are
        left out: a resumed or extended collection with other values appends to the same dataset."""
        keep = {
            k: v
            for k, v in to_dict(self).items()
            if k not in ("workers", "episodes_per_file", "tasks", "episodes_per_task", "split")
        }
        for later in ("frac_mimic", "frac_retreat"):  # added later: datasets collected before keep their hash
            if not keep[later]:
                del keep[later]
        import hashlib
        import json

        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def resolved_tasks(self) -> list[str]:
        split = resolve_split(self.split)
        if not self.tasks:
            if self.kind == "play" and self.scenes == "workspace":
                return list(split.pretrain) + list(split.targets)
            return list(split.pretrain)
        out: list[str] = []
        for t in self.tasks:
            out.extend(
                split.pretrain
                if t == "pretrain"
                else split.targets
                if t == "targets"
                else [canonical_task(t)]
            )
        return list(dict.fromkeys(out))


class DemoCollectionError(ValueError):
    """The scripted expert did not succeed often enough to give a task its demonstrations."""


def extra_demo_specs(
    cfg: CollectConfig, successes: dict[str, int], tried: dict[str, int]
) -> list[EpisodeSpec]:
    """Next seeds of each task still short of ``episodes_per_task`` successful demos, within its try budget:
    deterministic in what is on disk, so a resumed collection asks for the same episodes."""
    base = seeds.DEMOS + cfg.seed_offset
    budget = cfg.episodes_per_task * cfg.max_demo_tries
    out = []
    for task in cfg.resolved_tasks():
        short = cfg.episodes_per_task - successes.get(task, 0)
        n = min(short, budget - tried.get(task, 0))
        for i in range(tried.get(task, 0), tried.get(task, 0) + max(n, 0)):
            out.append(
                EpisodeSpec(
                    task=task,
                    seed=base + i,
                    behaviour="expert",
                    max_steps=cfg.max_steps,
                    frame_stride=cfg.frame_stride,
                    end_on_success=cfg.end_on_success,
                )
            )
    return out


def make_specs(cfg: CollectConfig) -> list[EpisodeSpec]:
    base = {"play": seeds.PLAY, "demos": seeds.DEMOS, "labeled": seeds.LABELED}[cfg.kind] + cfg.seed_offset
    specs = []
    free_scenes = set(cfg.task_free_scenes())
    for task in cfg.resolved_tasks():
        rng = np.random.default_rng([base, sum(map(ord, task))])
        for i in range(cfg.episodes_per_task):
            common = {
                "task": task,
                "seed": base + i,
                "max_steps": cfg.max_steps,
                "frame_stride": cfg.frame_stride,
                "end_on_success": cfg.end_on_success,
            }
            if task in free_scenes:  # a target's scene: task-free behaviour, no labels
                u = rng.random()
                mix = cfg.free_mix
                behaviour = (
                    "random" if u < mix.random else "poke" if u < mix.random + mix.poke else "interact"
                )
                specs.append(EpisodeSpec(behaviour=behaviour, labels=False, **common))
                continue
            if cfg.kind == "demos":
                specs.append(EpisodeSpec(behaviour="expert", **common))
                continue
            u = rng.random()
            if u < cfg.frac_expert:
                sigma = float(rng.choice(cfg.noise_scales))
                specs.append(EpisodeSpec(behaviour="expert", sigma=sigma, **common))
            elif u < cfg.frac_expert + cfg.frac_stall:
                stall = int(rng.integers(cfg.frame_stride, max(cfg.frame_stride + 1, cfg.max_steps * 3 // 4)))
                specs.append(EpisodeSpec(behaviour="stall", stall_at=stall, sigma=0.05, **common))
            elif u < cfg.frac_expert + cfg.frac_stall + cfg.frac_random:
                specs.append(EpisodeSpec(behaviour="random", **common))
            elif u >= 1.0 - cfg.frac_mimic:
                specs.append(EpisodeSpec(behaviour="mimic", **common))
            elif (
                u >= 1.0 - cfg.frac_mimic - cfg.frac_retreat
            ):  # runs on past success, whatever end_on_success
                specs.append(EpisodeSpec(behaviour="retreat", **common))
            else:
                specs.append(EpisodeSpec(behaviour="poke", **common))
    return specs


def episode_features(
    backend: str, image_size: int, fps: float, video: VideoConfig, actions_per_frame: int
) -> dict[str, dict]:
    """The LeRobot feature schema of a simulator's episodes (names and sizes from its task catalogue);
    ``actions_per_frame`` > 1: each row holds the actions executed until the next recorded frame."""
    cat = catalogue(backend)
    k, adim = actions_per_frame, len(cat.action_names)
    return {
        DEFAULT_IMAGE_KEY: video_feature(image_size, image_size, fps, video),
        "observation.state": {
            "dtype": "float32",
            "shape": [len(cat.proprio_names)],
            "names": list(cat.proprio_names),
        },
        "observation.environment_state": {"dtype": "float32", "shape": [cat.state_dim], "names": None},
        "action": {
            "dtype": "float32",
            "shape": [adim] if k == 1 else [k, adim],
            "names": (list(cat.action_names) if k == 1 else ["step", "dim"]),
        },
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
    }


# --------------------------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------------------------
@dataclass
class CollectSummary:
    out: Path
    per_task: dict[str, dict[str, float]]
    episodes: int
    frames: int
    seconds: float
    skipped: int

    def table(self) -> str:
        w = max(28, *(len(t) for t in self.per_task))  # LIBERO's task names are sentences
        lines = [f"{'task (whole dataset)':{w}s} {'episodes':>8s} {'frames':>8s} {'success':>8s}"]
        for task, row in sorted(self.per_task.items()):
            success = "withheld" if row["success"] is None else f"{row['success']:.2f}"
            lines.append(f"{task:{w}s} {int(row['episodes']):8d} {int(row['frames']):8d} {success:>8s}")
        rate = self.frames / self.seconds if self.seconds > 0 else float("nan")
        tot_e = sum(int(r["episodes"]) for r in self.per_task.values())
        tot_f = sum(int(r["frames"]) for r in self.per_task.values())
        lines.append(f"{'total':{w}s} {tot_e:8d} {tot_f:8d}")
        lines.append(
            f"this run: {self.episodes} episodes, {self.frames} frames in {self.seconds:.0f} s "
            f"({rate:.{1 if rate < 10 else 0}f} rendered frames/s); {self.skipped} episodes were already on disk"
        )
        return "\n".join(lines)


def episode_results(specs: list[EpisodeSpec], env_cfg: EnvConfig, workers: int) -> Iterator[dict]:
    """Run episodes in ``workers`` spawn processes (0 or 1: in this process), yielding results in spec order."""
    if workers <= 1:  # in this process: leave its torch thread count alone (a model may run here next)
        import os

        os.environ.setdefault("MUJOCO_GL", "egl")
        for s in specs:
            yield run_episode(s, env_cfg)
        return
    ctx = mp.get_context("spawn")  # fork + MuJoCo EGL hangs (ENV-NOTES)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        # ordered results keep episode indices deterministic; a few in flight per worker hide the latency
        yield from pool.map(run_episode, specs, [env_cfg] * len(specs), chunksize=1)


def collect(cfg: CollectConfig, out: str | Path, progress: bool = True) -> CollectSummary:
    """Collect ``cfg.kind`` data into a LeRobot v3 dataset at ``out``; resumes a killed run of the same config."""
    out = Path(out)
    split = resolve_split(cfg.split)
    specs = make_specs(cfg)
    fps = catalogue(cfg.env.backend).fps / cfg.frame_stride
    manifest = {
        "kind": cfg.kind,
        "env": cfg.env.backend,
        "frame_stride": cfg.frame_stride,
        "image_size": cfg.env.image_size,
        "camera": asdict(cfg.env.camera),
        "split": split.as_dict(),
        "config_hash": cfg.content_hash(),
        "instructions_are_labels": cfg.kind != "play",
        # play protocol: the target scenes played in (task-free behaviours only, success/reward withheld)
        "play_scenes": (
            None if cfg.kind != "play" else "workspace" if cfg.task_free_scenes() else "pretraining"
        ),
        "task_free_scenes": cfg.task_free_scenes(),
        "collect_config": to_dict(cfg),
    }
    resume = (out / "meta" / "info.json").exists()
    # outcomes per task, what is on disk included: a resumed demos collection continues the same seed sequence
    outcomes: dict[str, list[bool]] = {t: [] for t in cfg.resolved_tasks()}
    if resume:
        existing = LeRobotDataset(out)
        if existing.manifest.get("config_hash") != manifest["config_hash"]:
            raise FileExistsError(
                f"{out} holds a dataset collected with a different config; use a new --out (or delete {out})"
            )
        eps = existing.episodes
        for task, ok in zip(eps.get("rawdream/env_task", []), eps.get("rawdream/success", [])):
            outcomes.setdefault(str(task), []).append(bool(ok))
    writer = LeRobotWriter(
        out,
        fps=fps,
        features=episode_features(cfg.env.backend, cfg.env.image_size, fps, cfg.video, cfg.frame_stride),
        robot_type=catalogue(cfg.env.backend).robot,
        manifest=manifest,
        episodes_per_file=cfg.episodes_per_file,
        video=cfg.video,
        resume=resume,
    )
    done = writer.committed_keys()
    todo = [s for s in specs if s.key not in done]
    t0 = time.time()
    frames = 0
    bar = tqdm(
        total=len(specs),
        initial=len(specs) - len(todo),
        desc=f"collect {cfg.kind}",
        unit="ep",
        disable=not progress,
        dynamic_ncols=True,
    )

    def write(batch: list[EpisodeSpec]) -> None:
        nonlocal frames
        for spec, ep in zip(batch, episode_results(batch, cfg.env, cfg.workers)):
            task_label = "play" if cfg.kind == "play" else instruction(spec.task)
            writer.add_episode(
                {DEFAULT_IMAGE_KEY: ep["frames"]},
                ep["data"],
                task=task_label,
                extra={
                    "rawdream/spec": spec.key,
                    "rawdream/env_task": spec.task,
                    "rawdream/seed": spec.seed,
                    "rawdream/behaviour": spec.behaviour,
                    "rawdream/sigma": spec.sigma,
                    "rawdream/success": bool(ep["success"]),
                    "rawdream/labelled": spec.labels,
                    "rawdream/success_step": int(ep["success_step"]),
                },
            )
            outcomes[spec.task].append(bool(ep["success"]))
            frames += len(ep["frames"])
            bar.update()
            bar.set_postfix(fps=f"{frames / max(time.time() - t0, 1e-6):.0f}")

    with writer:
        write(todo)
        while cfg.kind == "demos":  # replace failed expert episodes by the next seeds', within the budget
            extra = extra_demo_specs(
                cfg, {t: sum(o) for t, o in outcomes.items()}, {t: len(o) for t, o in outcomes.items()}
            )
            if not extra:
                break
            bar.total += len(extra)
            write(extra)
    bar.close()
    seconds = time.time() - t0
    if cfg.kind == "demos":
        short = {t: o for t, o in outcomes.items() if sum(o) < cfg.episodes_per_task}
        if short:
            what = "; ".join(
                f"{t}: {sum(o)} successful of {len(o)} tried (seeds {seeds.DEMOS + cfg.seed_offset}.."
                f"{seeds.DEMOS + cfg.seed_offset + len(o) - 1})"
                for t, o in short.items()
            )
            raise DemoCollectionError(
                f"the scripted expert could not give every task {cfg.episodes_per_task} successful "
                f"demonstration(s) - {what}; drop the task from --split.targets / --tasks, raise --max_steps, or "
                f"bring your own demonstration dataset (LeRobot v3) with --data"
            )
    return CollectSummary(
        out=out,
        per_task=dataset_summary(LeRobotDataset(out)),
        episodes=len(todo),
        frames=frames,
        seconds=seconds,
        skipped=len(specs) - len(todo),
    )


def dataset_summary(ds: LeRobotDataset) -> dict[str, dict[str, float]]:
    """Episodes, frames and success rate per scene task of a collected dataset."""
    per_task: dict[str, dict[str, float]] = {}
    eps = ds.episodes
    tasks = eps.get("rawdream/env_task") or [t[0] for t in eps.get("tasks", [])]
    successes = eps.get("rawdream/success") or [False] * ds.num_episodes
    labelled = eps.get("rawdream/labelled") or [True] * ds.num_episodes
    for task, length, ok, lab in zip(tasks, eps["length"], successes, labelled):
        row = per_task.setdefault(str(task), {"episodes": 0, "frames": 0, "success": 0.0, "labelled": 0})
        row["episodes"] += 1
        row["frames"] += int(length)
        row["success"] += float(bool(ok) and bool(lab))
        row["labelled"] += int(bool(lab))
    for row in per_task.values():  # success rate over labelled episodes; None where all were withheld
        row["success"] = row["success"] / row["labelled"] if row["labelled"] else None
    return per_task


# an object "moves" between two kept frames when its position changes by more than this (metres): well above
# the simulator's settling jitter, well below a push
MOTION_EPS = 0.002


def _object_state(scene: str) -> tuple[tuple[int, int], ...]:

    try:
        return catalogue(backend_of(scene)).object_state
    except UnknownTaskError:  # a foreign dataset's scene name: no known state layout
        return ()


def object_motion(ds: LeRobotDataset) -> dict[str, dict[str, float]]:
    """Fraction of frames in which an object of the scene moves, per scene and per behaviour (``all``: every
    behaviour), from the recorded simulator state (where the objects sit in it: the scene's task catalogue).

    This is how much interaction play contains: a world model learns what a pushed drawer or a lifted lever looks
    like only from frames where one moves."""
    if "observation.environment_state" not in ds.features:
        raise ValueError(f"{ds.root} has no observation.environment_state column; object motion needs it")
    state = ds.column("observation.environment_state")
    eps = ds.episodes
    scenes = eps.get("rawdream/env_task") or ["?"] * ds.num_episodes
    behaviours = eps.get("rawdream/behaviour") or ["?"] * ds.num_episodes
    counts: dict[str, dict[str, list[int]]] = {}
    for e in range(ds.num_episodes):
        lo, hi = ds.episode_bounds(e)
        s = state[lo:hi]
        if len(s) < 2:
            continue
        slots = _object_state(str(scenes[e]))
        if not slots:
            continue
        delta = np.max([np.abs(np.diff(s[:, a:b], axis=0)).max(1) for a, b in slots], axis=0)
        moved = int((delta > MOTION_EPS).sum())
        for b in (str(behaviours[e]), "all"):
            c = counts.setdefault(str(scenes[e]), {}).setdefault(b, [0, 0])
            c[0] += moved
            c[1] += len(delta)
    return {
        scene: {b: m / n for b, (m, n) in sorted(per_b.items()) if n}
        for scene, per_b in sorted(counts.items())
    }
