"""Uniform binning of each action dimension into categorical tokens (OpenVLA style, decoded in parallel)."""

from __future__ import annotations

import numpy as np
import torch


class ActionTokenizer:
    """Maps actions to ``bins`` uniform bins per dimension over [low, high] (from the dataset's stats).

    Decoding returns bin centres, so a round trip is exact to within half a bin width.
    """

    def __init__(self, low, high, bins: int = 256):
        self.low = torch.as_tensor(np.asarray(low, dtype=np.float32))
        self.high = torch.as_tensor(np.asarray(high, dtype=np.float32))
        if self.low.shape != self.high.shape or (self.high <= self.low).any():
            raise ValueError(
                f"action range must have high > low per dimension, got {self.low} .. {self.high}"
            )
        self.bins = bins

    @property
    def dim(self) -> int:
        return int(self.low.numel())

    @property
    def bin_width(self) -> torch.Tensor:
        return (self.high - self.low) / self.bins

    def encode(self, actions) -> torch.Tensor:
        a = torch.as_tensor(actions, dtype=torch.float32)
        if a.shape[-1] != self.dim:
            raise ValueError(f"actions have {a.shape[-1]} dimensions, the tokenizer expects {self.dim}")
        frac = (a - self.low) / (self.high - self.low)
        return (frac * self.bins).floor().clamp(0, self.bins - 1).long()

    def decode(self, tokens) -> torch.Tensor:
        t = torch.as_tensor(tokens).float()
        return self.low + (t + 0.5) * self.bin_width

    def state_dict(self) -> dict:
        return {"low": self.low.tolist(), "high": self.high.tolist(), "bins": self.bins}

    @classmethod
    def from_state(cls, state: dict) -> ActionTokenizer:
        return cls(state["low"], state["high"], state["bins"])
