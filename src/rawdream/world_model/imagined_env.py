"""ImaginedEnv: a batched, Gymnasium-like environment whose physics is the frozen world model.

Observations have the real Env's format (upright uint8 ``image``, ``proprio``, ``instruction``), batched over
rollouts, so a policy cannot tell which one it talks to. One ``step`` consumes one action chunk per rollout and
imagines the frame and proprioception at the chunk's end. Each rollout carries its own noise seed; the second
draw of dual-noise verification replays the same actions under fresh seeds (:func:`rawdream.rl.imagination.reimagine`,
decided in :mod:`rawdream.rl.dnv`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rawdream.world_model.model import SamplerConfig, WorldModel


class ImaginedEnv:
    def __init__(self, world_model: WorldModel, horizon: int, sampler: SamplerConfig | None = None):
        self.wm = world_model.eval()
        self.horizon = horizon
        self.sampler = sampler or world_model.cfg.sampler
        self.chunk = world_model.cfg.dynamics.chunk
        self.action_dim = world_model.cfg.dynamics.action_dim
        self._state: dict[str, Any] | None = None

    # -- Gymnasium-like API ---------------------------------------------------------------------------------
    def reset(
        self, first_frames: np.ndarray, proprio: np.ndarray, instructions: list[str], seeds: list[int]
    ) -> tuple[dict[str, Any], dict]:
        """Start one imagined episode per first frame; returns (observations, info) like the real Env."""
        first_frames = np.asarray(first_frames, dtype=np.uint8)
        b = len(first_frames)
        if not (len(proprio) == len(instructions) == len(seeds) == b):
            raise ValueError(
                f"reset needs one proprio, instruction and seed per first frame ({b}); got "
                f"{len(proprio)}, {len(instructions)}, {len(seeds)}"
            )
        size = self.wm.cfg.image_size
        if first_frames.shape[1:] != (size, size, 3):
            raise ValueError(
                f"first frames are {first_frames.shape[1:]}, this world model imagines {(size, size, 3)}"
            )
        self._first = first_frames
        self._proprio0 = np.asarray(proprio, dtype=np.float32)
        self._instructions = list(instructions)
        self._seeds = list(seeds)
        self._actions: list[np.ndarray] = []
        self._frames = [first_frames]
        self._proprio = [self._proprio0]
        self._state = self.wm.start(
            torch.from_numpy(first_frames), torch.from_numpy(self._proprio0), self._seeds
        )
        return self._obs(), {"t": 0, "seeds": list(self._seeds)}

    def step(
        self, action_chunks: np.ndarray
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action_chunks, dtype=np.float32)
        if a.shape != (len(self._seeds), self.chunk, self.action_dim):
            raise ValueError(
                f"action chunks have shape {a.shape}, expected "
                f"({len(self._seeds)}, {self.chunk}, {self.action_dim}) - one chunk per rollout"
            )
        if self.t >= self.horizon:
            raise RuntimeError(
                f"imagined episode already reached its horizon ({self.horizon} chunks); reset()"
            )
        self.wm.advance(self._state, torch.from_numpy(a), self.sampler)
        self._actions.append(a)
        frame = self.wm.decode(self._state["latents"][-1]).numpy()
        proprio = self.wm.denorm_proprio(self._state["proprio"][-1]).cpu().numpy().astype(np.float32)
        self._frames.append(frame)
        self._proprio.append(proprio)
        b = len(self._seeds)
        truncated = np.full(b, self.t >= self.horizon)
        # the world model cannot tell success: the reward comes from a judge watching video() at the end
        return self._obs(), np.zeros(b, np.float32), np.zeros(b, bool), truncated, {"t": self.t}

    # -- what judges and RL need ----------------------------------------------------------------------------
    @property
    def t(self) -> int:
        return len(self._actions)

    def video(self) -> np.ndarray:
        """(B, t+1, H, W, 3) uint8: the real first frame, then the imagined chunk-end frames."""
        return np.stack(self._frames, axis=1)

    def actions(self) -> np.ndarray:
        """(B, t, chunk, action_dim) action chunks taken so far."""
        return np.stack(self._actions, axis=1)

    def proprio_history(self) -> np.ndarray:
        return np.stack(self._proprio, axis=1)

    def _obs(self) -> dict[str, Any]:
        return {
            "image": self._frames[-1],
            "proprio": self._proprio[-1],
            "instruction": list(self._instructions),
        }
