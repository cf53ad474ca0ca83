"""Where GRPO's rollouts come from: the frozen world model (RAW-Dream) or the real simulator (the online baseline).

A rollout source turns a :class:`Draw` - iteration ``it``'s rollouts ``offset, offset + 1, ...`` from the initial
states ``rows`` - into one batch of the policy's sampled rollouts, the same whatever made them:

  images, proprio (H, N, ...)  what the policy saw before each action chunk (time-major: what the update flattens)
  tokens, logp (H, N, ...)     what it sampled, with which log-probability
  alive (H, N)                 steps that happened (a simulator episode ends at success; dead steps are never read)
  video (N, H + 1, ...)        what the judge watches, one frame per chunk, the first one real
  time {"imagine": s}          wall time of making the batch

plus ``actions`` (N, H, chunk, A) from imagination (DNV's redraw and the oracle judge replay them) and
``true_success`` (N,) from the simulator. Every rollout has its own random streams - policy sampling
``stable_seed("policy", seed, it, r)``, world-model noise ``stable_seed("wm-noise", seed, it, r)`` - so a rollout
is the same whichever batch, worker or resumed run makes it.

Only imagination can :meth:`~ImaginedRollouts.redraw` (the same actions under another noise draw: DNV's second
look); the simulator is deterministic and has nothing to redraw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rawdream import seeds
from rawdream.distributed import LOCAL, Backend
from rawdream.envs.base import EnvConfig
from rawdream.rl.imagination import collect_rollouts, reimagine


@dataclass(frozen=True)
class Draw:
    """Which rollouts a batch holds: iteration ``it``'s rollouts ``offset, offset + 1, ...``, one per entry of
    ``rows`` (indices into the run's initial states; a group is ``group_size`` equal rows)."""

    it: int
    rows: list[int]
    offset: int = 0

    @property
    def rollout_ids(self) -> range:
        return range(self.offset, self.offset + len(self.rows))

    def seeds(self, stream: str, run_seed: int) -> list[int]:
        """One seed per rollout for a random stream ("policy", "wm-noise"): fixed by (run seed, it, rollout id)."""
        return [seeds.stable_seed(stream, run_seed, self.it, r) for r in self.rollout_ids]


# ------------------------------------------------------------------------------------------------------------
# initial states
# ------------------------------------------------------------------------------------------------------------
def sim_initial_states(
    task: str, n: int, env: EnvConfig, workers: int, backend: Backend = LOCAL
) -> list[dict[str, Any]]:
    """Real reset observations of ``task`` (seeds DREAM_INIT + i, disjoint from evaluation seeds)."""
    from rawdream.envs.vector import make_vector_env

    out = []
    with make_vector_env(min(n, 4), env, num_workers=min(workers, n), backend=backend) as venv:
        for start in range(0, n, venv.num_envs):
            ids = list(range(start, min(n, start + venv.num_envs)))
            res = venv.reset([seeds.DREAM_INIT + i for i in ids], task, slots=list(range(len(ids))))
            out += [
                {"image": o["image"], "proprio": o["proprio"], "seed": seeds.DREAM_INIT + i}
                for i, (o, _) in zip(ids, res)
            ]
    return out


def dataset_initial_states(path: str | Path, n: int) -> list[dict[str, Any]]:
    """First frames and proprioception of a LeRobot v3 dataset's episodes (a real robot has no simulator to reset)."""
    from rawdream.data.lerobot import LeRobotDataset

    ds = LeRobotDataset(path)
    key = ds.default_image_key()
    state = ds.column("observation.state").astype(np.float32)
    out = []
    for e in range(min(n, ds.num_episodes)):
        lo, _ = ds.episode_bounds(e)
        out.append({"image": ds.decode_episode_frames(e, key)[0], "proprio": state[lo], "seed": None})
    return out


# ------------------------------------------------------------------------------------------------------------
# the two sources
# ------------------------------------------------------------------------------------------------------------
class ImaginedRollouts:
    """RAW-Dream's rollouts: the policy acts in the frozen world model from real first frames; no simulator."""

    real = False  # no real trajectory is used
    can_redraw = True

    def __init__(
        self,
        imagination,
        init: list[dict[str, Any]],
        instruction: str,
        horizon: int,
        temperature: float,
        seed: int,
        noise: str = "token",
    ):
        self.imagination = imagination  # LocalImagination or Ray workers holding model copies
        self.init = init
        self.instruction = instruction
        self.horizon = horizon
        self.temperature = temperature
        self.seed = seed
        self.noise = noise  # how the policy's tokens are drawn (VLAPolicy.sample)

    def _first(self, rows) -> tuple[np.ndarray, np.ndarray]:
        first = np.stack([self.init[s]["image"] for s in rows])
        prop0 = np.stack([self.init[s]["proprio"] for s in rows]).astype(np.float32)
        return first, prop0

    def __call__(self, draw: Draw) -> dict[str, Any]:
        noise_seeds, policy_seeds = draw.seeds("wm-noise", self.seed), draw.seeds("policy", self.seed)
        first, prop0 = self._first(draw.rows)
        t0 = time.perf_counter()
        self.imagination.sync(draw.it)  # Ray workers fetch the learner's weights once per iteration
        buf = self.imagination.rollouts(
            first,
            prop0,
            self.instruction,
            self.horizon,
            self.temperature,
            policy_seeds,
            noise_seeds,
            self.noise,
        )
        buf["time"] = {"imagine": time.perf_counter() - t0}
        return buf

    def redraw(
        self, draw: Draw, actions: np.ndarray, idx: np.ndarray, k: int, world_model=None
    ) -> np.ndarray:
        """Rollouts ``idx`` of ``draw`` again: the same first frames and actions under redraw ``k``'s noise - in
        the same world model, or in ``world_model`` (cross-model verification; in this process)."""
        redraw_seeds = [
            seeds.stable_seed("wm-noise-redraw", self.seed, draw.it, k, draw.offset + int(i)) for i in idx
        ]
        first, prop0 = self._first([draw.rows[i] for i in idx])
        if world_model is not None:
            return reimagine(world_model, first, prop0, actions[idx], redraw_seeds)
        return self.imagination.reimagine(first, prop0, actions[idx], redraw_seeds)

    def close(self) -> None:
        self.imagination.close()


class SimulatorRollouts:
    """The online-RL baseline's rollouts: the same sampling in the real simulator, from the simulator seeds of the
    initial states. An episode ends at its first success (the reward is success at any step)."""

    real = True  # every rollout is a real target-task trajectory (counted in the results tables)
    can_redraw = False

    def __init__(
        self,
        policy,
        init: list[dict[str, Any]],
        task: str,
        instruction: str,
        env: EnvConfig,
        horizon: int,
        temperature: float,
        seed: int,
        workers: int,
        backend: Backend = LOCAL,
        noise: str = "token",
    ):
        if any(s["seed"] is None for s in init):
            raise ValueError(
                "--env_mode=sim resets the simulator: it cannot start from --init-from dataset frames"
            )
        self.policy, self.init, self.task, self.instruction = policy, init, task, instruction
        self.env = replace(env, max_steps=horizon * policy.chunk)
        self.horizon, self.temperature, self.seed = horizon, temperature, seed
        self.workers, self.backend, self.noise = workers, backend, noise
        self._venv = None

    def _simulators(self, n: int):
        """Kept for the whole run: spawning worker processes every iteration cost seconds an iteration."""
        from rawdream.envs.vector import make_vector_env

        if self._venv is None:
            self._venv = make_vector_env(n, self.env, num_workers=self.workers, backend=self.backend)
        return self._venv

    def __call__(self, draw: Draw) -> dict[str, Any]:
        n = len(draw.rows)
        gens = [torch.Generator().manual_seed(s) for s in draw.seeds("policy", self.seed)]
        t0 = time.perf_counter()
        buf = simulate(
            self.policy,
            self._simulators(n),
            [(self.task, self.init[s]["seed"]) for s in draw.rows],
            [self.instruction] * n,
            self.horizon,
            self.temperature,
            gens,
            end_at_success=True,
            noise=self.noise,
        )
        # what GRPO reads; the per-chunk records (states, rewards, ...) are the other callers'
        keep = ("images", "proprio", "tokens", "logp", "alive", "video")
        return {
            **{k: buf[k] for k in keep},
            "true_success": buf["success"],
            "time": {"imagine": time.perf_counter() - t0},
        }

    def close(self) -> None:
        if self._venv is not None:
            self._venv.close()
            self._venv = None


def simulate(
    policy,
    venv,
    starts: list[tuple[str, int]],
    instructions: list[str],
    horizon: int,
    temperature: float,
    generators: list[torch.Generator] | torch.Generator,
    *,
    end_at_success: bool,
    noise: str = "token",
    objects: bool = False,
) -> dict[str, Any]:
    """The policy's sampled rollouts in the real simulator: the one loop that online RL, the on-policy reward
    fidelity of ``eval-judge`` and the judge's policy-rollout data all run.

    Rollout ``i`` resets slot ``i`` of ``venv`` to ``starts[i] = (task, seed)`` and acts for ``horizon`` chunks,
    drawing from ``generators[i]`` (or one shared generator). ``end_at_success``: an episode ends at its first
    success (online RL's reward is success at any step; later steps are dead); otherwise every rollout runs the
    whole horizon, as imagined ones do - which needs ``venv``'s simulators built with ``end_on_success=False``
    (an episode the simulator ends is dead either way). Returns :func:`collect_rollouts`' time-major buffer plus, per rollout,
    the ``video`` (N, H + 1, ...: one frame per chunk, an ended episode holding its last frame), ``actions``
    (N, H, chunk, A), ``proprio_video`` and ``state`` (N, H + 1, ...), per-chunk ``reward`` and ``chunk_success``
    (N, H), and
    ``success`` (N,) at any step; with ``objects`` also ``object_mask`` (N, H + 1, h, w) and ``object_position``
    (N, H + 1, 3) for object-region fidelity."""
    n = len(starts)
    slots = list(range(n))
    resets = venv.reset([s for _, s in starts], [t for t, _ in starts], slots=slots)
    obs = {
        "image": np.stack([o["image"] for o, _ in resets]),
        "proprio": np.stack([o["proprio"] for o, _ in resets]).astype(np.float32),
    }
    alive = np.ones(n, bool)
    success = np.zeros(n, bool)
    # per rollout, what each chunk ended in; index 0 is the reset
    track: dict[str, list] = {
        "proprio_video": [obs["proprio"].copy()],
        "state": [np.stack([info["state"] for _, info in resets])],
        "actions": [],
        "reward": [],
        "chunk_success": [],
    }
    if objects:
        track["object_mask"] = [np.stack(venv.call("object_mask", slots))]
        track["object_position"] = [np.stack([info["object_position"] for _, info in resets])]

    def step(actions):
        idx = np.nonzero(alive)[0].tolist()
        reward, done, state = np.zeros(n, np.float32), np.zeros(n, bool), track["state"][-1].copy()
        executed = np.zeros_like(actions, dtype=np.float32)  # an ended episode executes nothing
        executed[idx] = actions[idx]
        position = track["object_position"][-1].copy() if objects else None
        for i, r in zip(idx, venv.step_chunk(actions[idx], slots=idx)):
            obs["image"][i], obs["proprio"][i] = r.obs["image"], r.obs["proprio"]
            reward[i], done[i], state[i] = r.reward, r.success, r.state
            success[i] |= r.success
            if objects:
                position[i] = r.object_position
            if (r.success and end_at_success) or r.terminated or r.truncated:
                alive[i] = False
        track["proprio_video"].append(obs["proprio"].copy())
        track["state"].append(state)
        track["actions"].append(executed)
        track["reward"].append(reward)
        track["chunk_success"].append(done)
        if objects:
            track["object_mask"].append(np.stack(venv.call("object_mask", slots)))
            track["object_position"].append(position)
        return obs, None, None, None, None

    with torch.no_grad():  # rollouts are data: no autograd graph, whatever a policy's sample does
        buf = collect_rollouts(
            policy,
            obs,
            step,
            generators,
            horizon,
            temperature,
            instructions,
            alive_fn=alive.copy,
            noise=noise,
        )
    # per rollout, one frame per chunk; when every episode ended before the horizon, the frames (and states)
    # hold their last value and the chunks that never ran are zero
    video = np.concatenate([buf["images"], obs["image"][None]], 0).swapaxes(0, 1)
    buf["video"] = _pad(video, horizon + 1, hold=True)
    for key, x in track.items():
        per_chunk = key in ("actions", "reward", "chunk_success")
        buf[key] = _pad(np.stack(x, 1), horizon + (not per_chunk), hold=not per_chunk)
    buf["success"] = success
    return buf


def _pad(x: np.ndarray, length: int, hold: bool) -> np.ndarray:
    """Pad a per-rollout sequence (N, T, ...) to ``length`` steps: repeat its last step, or zeros."""
    if x.shape[1] >= length:
        return x
    extra = length - x.shape[1]
    tail = np.repeat(x[:, -1:], extra, axis=1) if hold else np.zeros((len(x), extra, *x.shape[2:]), x.dtype)
    return np.concatenate([x, tail], 1)


def merge_rollouts(bufs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rollout batches of one iteration side by side (rollout axis); time-major arrays are padded to the longest
    batch with dead steps (``alive`` False), which the update never reads."""
    if len(bufs) == 1:
        return bufs[0]
    h = max(b["alive"].shape[0] for b in bufs)

    def pad(x):
        extra = h - x.shape[0]
        if extra == 0:
            return x
        if isinstance(x, torch.Tensor):
            return torch.cat([x, torch.zeros((extra, *x.shape[1:]), dtype=x.dtype)], 0)
        return np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)], 0)

    out: dict[str, Any] = {}
    for key in ("images", "proprio", "tokens", "logp", "alive"):
        parts = [pad(b[key]) for b in bufs]
        out[key] = torch.cat(parts, 1) if isinstance(parts[0], torch.Tensor) else np.concatenate(parts, 1)
    for key in ("success", "reward", "abstain", "flipped", "scores", "true_success", "replayed_success"):
        if key in bufs[0]:
            out[key] = np.concatenate([b[key] for b in bufs])
    out["video"] = None if bufs[0].get("video") is None else np.concatenate([b["video"] for b in bufs])
    out["second"], start = {}, 0
    for b in bufs:
        out["second"].update({start + i: v for i, v in b["second"].items()})
        start += len(b["reward"])
    out["time"] = {k: sum(b["time"][k] for b in bufs) for k in bufs[0]["time"]}
    return out
