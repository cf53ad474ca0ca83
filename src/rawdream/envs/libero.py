"""LIBERO backend (optional: ``pip install 'rawdream[libero]'``): the paper's benchmark behind the Env contract.

What it maps, and why:

* **layouts**: LIBERO's fixed initial states (50 per task, shipped with the package) are the evaluation protocol of
  the paper and of SimpleVLA-RL; ``reset(seed)`` restores initial state ``seed % 50`` (robot and objects; the
  fixtures' small placement jitter comes from LIBERO's own RNG, seeded with ``seed``) and lets the objects settle
  for ``SETTLE_STEPS`` no-op steps, as LIBERO's own evaluation does. The same seed gives the same scene. With only 50 states, the *new layouts*
  protocol (seeds disjoint from RL's) meets the same states again: on LIBERO, report the practised protocol.
* **observation**: the agent-view camera at ``env.image_size``, rotated 180 degrees as LIBERO's public datasets
  store it (OpenVLA's and openpi's conversions; robosuite's raw frame is upside down); proprioception = end-effector xyz, its orientation as an axis-angle, and the two
  finger joints (8 values, the layout public LIBERO datasets use).
* **action**: 7-D OSC_POSE deltas in [-1, 1] (xyz, roll/pitch/yaw, gripper with +1 closing), the same convention
  (xyz first, gripper last) as Meta-World, so task-free play drives both.
* **success**: LIBERO's own BDDL goal check (``check_success``) after every step.
* ``info["state"]`` is 6 numbers: the world xyz of the task's first two objects of interest (zeros if it has one),
  for measures of object motion; LIBERO's full MuJoCo state differs in size from scene to scene.

Speed here: ``benchmarks/libero_speed.py`` (docs/libero.md has the numbers) - LIBERO is for users with more cores
or a GPU, Meta-World is the embedded default.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from rawdream.envs.base import CameraConfig, EnvConfig, Observation, SimulatorEnv, register_env
from rawdream.envs.libero_tasks import CATALOGUE, libero_task

SETTLE_STEPS = 10  # no-op steps after restoring an initial state, so objects rest before the episode starts
NOOP = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # hold still, gripper open


def _axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """robosuite's (x, y, z, w) quaternion -> axis * angle (3,)."""
    q = np.asarray(quat_xyzw, np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    s = np.sqrt(max(1.0 - w * w, 0.0))
    if s < 1e-8:
        return np.zeros(3)
    return q[:3] / s * (2.0 * np.arccos(w))


class LiberoEnv(SimulatorEnv):
    """One LIBERO task (any suite) behind the :class:`rawdream.envs.base.Env` contract."""

    action_dim = len(CATALOGUE.action_names)
    proprio_dim = len(CATALOGUE.proprio_names)
    fps = CATALOGUE.fps

    def __init__(self, task: str, cfg: EnvConfig | None = None):
        suite, record = libero_task(task)  # refuses a task of another simulator, or a missing package first
        from libero.libero import get_libero_path
        from libero.libero.benchmark import load_initial_states
        from libero.libero.envs import OffScreenRenderEnv

        self.cfg = cfg or EnvConfig(backend="libero")
        if self.cfg.camera != CameraConfig():
            raise ValueError(
                "--env.camera.* places Meta-World's free camera; LIBERO renders its own agentview camera (the view "
                "its datasets and policies use): drop --env.camera.* with --env.backend=libero"
            )
        self.task, self.suite = record.name, suite
        self.instruction = CATALOGUE.instructions[self.task][0]
        self.max_steps = self.cfg.max_steps
        size = self.cfg.image_size
        bddl = os.path.join(get_libero_path("bddl_files"), record.problem_folder, record.bddl_file)
        self._init_states = np.asarray(
            load_initial_states(
                os.path.join(get_libero_path("init_states"), record.problem_folder, record.init_states_file)
            )
        )
        self._env = OffScreenRenderEnv(
            bddl_file_name=bddl,
            camera_heights=size,
            camera_widths=size,
            camera_names=["agentview"],  # the wrist camera would halve the step rate; no policy here reads it
            hard_reset=False,  # a hard reset rebuilds the scene from XML (seconds); initial states set it anyway
        )
        horizon = int(self._env.env.horizon)
        if self.max_steps + SETTLE_STEPS > horizon:
            raise ValueError(
                f"--env.max_steps={self.max_steps} is too long: at most {horizon - SETTLE_STEPS} (LIBERO's horizon "
                f"{horizon} minus {SETTLE_STEPS} settling steps)"
            )
        self._interest = list(self._env.env.obj_of_interest)
        self._renderer = None  # a segmentation renderer, made on the first object_mask()
        self._obs: dict | None = None
        self._begin()

    # -- the simulator calls behind SimulatorEnv's reset / step / close ------------------------------------------
    def _reset_sim(self, seed: int) -> dict:
        rng = np.random.get_state()  # robosuite seeds NumPy's global generator: leave it as the caller had it
        self._env.seed(seed)
        self._env.reset()
        np.random.set_state(rng)
        # robosuite keeps the gripper's smoothed command across a soft reset; zero it so that the same seed
        # gives the same scene whatever ran before
        for robot in self._env.env.robots:
            robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)
        self._obs = self._env.set_init_state(self._init_states[seed % len(self._init_states)])
        for _ in range(SETTLE_STEPS):
            self._obs, *_ = self._env.step(NOOP)
        return {"init_state": seed % len(self._init_states)}

    def _step_sim(self, action: np.ndarray) -> tuple[float, bool]:
        # robosuite renders the camera at every step regardless
        self._obs, reward, _, _ = self._env.step(action)
        return float(reward), bool(self._env.check_success())

    def _close_sim(self) -> None:
        ctx = getattr(self._env.env.sim, "_render_context_offscreen", None)
        if ctx is not None:  # robosuite frees it only when collected, maybe after EGL has terminated
            ctx.con.free()
            ctx.gl_ctx.free()
        self._env.close()

    # -- extras (the Instrumented protocol) -------------------------------------------------------------------
    def proprio(self) -> np.ndarray:
        o = self._obs
        assert o is not None
        return np.concatenate(
            [o["robot0_eef_pos"], _axis_angle(o["robot0_eef_quat"]), o["robot0_gripper_qpos"]]
        ).astype(np.float32)

    def render(self) -> np.ndarray:
        assert self._obs is not None
        # rotated 180 degrees, as LIBERO's public datasets store it (OpenVLA's and openpi's conversions): a policy
        # trained on them sees the same picture here
        return np.ascontiguousarray(self._obs["agentview_image"][::-1, ::-1])

    def expert_action(self) -> np.ndarray:
        raise NotImplementedError(
            "LIBERO ships no scripted experts: bring demonstrations as a LeRobot v3 dataset of LIBERO (--data), "
            "and use task-free play (random / poke / interact) for world-model data"
        )

    def _position(self, name: str) -> np.ndarray:
        inner = self._env.env
        if name in inner.obj_body_id:
            return np.asarray(inner.sim.data.body_xpos[inner.obj_body_id[name]], np.float64).copy()
        model = inner.sim.model._model
        import mujoco

        site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)
        if site >= 0:  # a region of a fixture (a drawer's inside, a stove's burner): moves with its body
            return np.asarray(inner.sim.data._data.site_xpos[site], np.float64).copy()
        owner = max((o for o in inner.obj_body_id if name.startswith(o)), key=len, default=None)
        if owner is None:
            return np.zeros(3)
        return np.asarray(inner.sim.data.body_xpos[inner.obj_body_id[owner]], np.float64).copy()

    def object_position(self) -> np.ndarray:
        """World xyz of the task's first object of interest (a region's site for a fixture region)."""
        return self._position(self._interest[0]) if self._interest else np.zeros(3)

    def _state(self) -> np.ndarray:
        pos = [self._position(n) for n in self._interest[:2]]
        pos += [np.zeros(3)] * (2 - len(pos))
        return np.concatenate(pos).astype(np.float32)

    def _segmentation(self) -> np.ndarray:
        """(H, W, 2) MuJoCo segmentation (object id, object type) of the agent view, in ``render()``'s orientation."""
        import mujoco

        inner = self._env.env
        model, data = inner.sim.model._model, inner.sim.data._data
        if self._renderer is None:
            size = self.cfg.image_size
            self._renderer = mujoco.Renderer(model, size, size)
            roots = set()
            for name in self._interest:
                owner = max((o for o in inner.obj_body_id if name.startswith(o)), key=len, default=None)
                if owner is not None:
                    roots.add(int(inner.obj_body_id[owner]))
            bodies = {b for b in range(model.nbody) if self._under(model, b, roots)}
            self._object_geoms = np.array(
                [g for g in range(model.ngeom) if int(model.geom_bodyid[g]) in bodies], dtype=np.int64
            )
        self._renderer.enable_segmentation_rendering()
        try:
            self._renderer.update_scene(data, camera="agentview")
            seg = self._renderer.render()
        finally:
            self._renderer.disable_segmentation_rendering()
        # MuJoCo's renderer gives the upright view; mirror it to match render()'s 180-degree rotation
        return seg[:, ::-1]

    def _mj_model(self):
        return self._env.env.sim.model._model

    @staticmethod
    def _under(model, body: int, roots: set[int]) -> bool:
        while body > 0:
            if body in roots:
                return True
            body = int(model.body_parentid[body])
        return False

    def _observation(self, render: bool = True) -> Observation:
        # robosuite renders the camera at every step whatever ``render`` says, so the frame is always there
        return {"image": self.render(), "proprio": self.proprio(), "instruction": self.instruction}


@register_env("libero")
def _make_libero(task: str, cfg: EnvConfig) -> LiberoEnv:
    return LiberoEnv(task, cfg)
