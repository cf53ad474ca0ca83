"""Building blocks shared by the world model, the policy and the judge."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class SpatialSoftmax(nn.Module):
    """Expected (x, y) image coordinates of each channel's softmax: one keypoint per channel. Why: a global
    mean/max pool keeps what a feature map shows and drops where; keypoints keep where (Levine et al. 2016)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        att = F.softmax(x.flatten(2), dim=-1).view(b, c, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device)
        xs = torch.linspace(-1, 1, w, device=x.device)
        return torch.cat([(att.sum(2) * xs).sum(-1), (att.sum(3) * ys).sum(-1)], dim=1)


class ResBlock(nn.Module):
    """Conv residual block; optional AdaGN: scale/shift (and a gate on the residual) from a condition vector."""

    def __init__(self, ch_in: int, ch_out: int, cond_dim: int = 0):
        super().__init__()
        self.norm1 = group_norm(ch_in)
        self.conv1 = nn.Conv2d(ch_in, ch_out, 3, padding=1)
        self.norm2 = group_norm(ch_out)
        self.conv2 = nn.Conv2d(ch_out, ch_out, 3, padding=1)
        self.skip = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else nn.Identity()
        self.cond = None
        if cond_dim:
            self.cond = nn.Linear(cond_dim, 3 * ch_out)
            nn.init.zeros_(self.cond.weight)  # start as a plain residual block (gate 1, no modulation)
            nn.init.zeros_(self.cond.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        gate = 1.0
        if self.cond is not None and cond is not None:
            scale, shift, g = self.cond(cond)[:, :, None, None].chunk(3, dim=1)
            h = h * (1 + scale) + shift
            gate = 1 + g
        h = self.conv2(F.silu(h))
        return self.skip(x) + gate * h


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of a continuous level in [0, 1] (scaled to 0..1000 like diffusion timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class LevelEmbed(nn.Module):
    """MLP over a sinusoidal embedding of a scalar level (diffusion time, context/anchor noise level)."""

    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def mlp(d_in: int, d_hidden: int, d_out: int, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Linear(d_in, d_hidden), nn.SiLU()]
    for _ in range(layers - 2):
        mods += [nn.Linear(d_hidden, d_hidden), nn.SiLU()]
    mods.append(nn.Linear(d_hidden, d_out))
    return nn.Sequential(*mods)


def cell_sq_distances(pixels: torch.Tensor, size: int, grid) -> torch.Tensor:
    """pixels (..., 2) column/row positions in a ``size`` x ``size`` frame -> (..., h, w) the squared distance, in
    cells of the (h, w) ``grid`` laid over that frame, from each position to each cell's centre (NaN stays NaN):
    the judge's keypoint heatmap targets and the world model's object-region weight are Gaussians of it."""
    h, w = grid
    cells = (
        pixels * torch.tensor([w / size, h / size], device=pixels.device) - 0.5
    )  # cell centres at integers
    xs = torch.arange(w, device=pixels.device, dtype=torch.float32)
    ys = torch.arange(h, device=pixels.device, dtype=torch.float32)
    return (xs - cells[..., 0, None, None]) ** 2 + (ys[:, None] - cells[..., 1, None, None]) ** 2


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class EMA:
    """Exponential moving average of a module's parameters (used for sampling).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates: with a fixed 0.999 the average keeps
    0.999^n of the weights it started from (a random init, or the base policy under SFT) - 37% after 1,000
    steps - which biases short runs and comparisons at equal wall-clock against the slower model."""

    def __init__(self, module: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        self.num_updates += 1
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Restore (from a checkpoint read on the CPU) onto the device of the module being averaged."""
        self.shadow = {
            k: v.to(self.shadow[k].device, copy=True) if k in self.shadow else v.clone()
            for k, v in sd.items()
        }
