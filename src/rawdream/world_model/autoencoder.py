"""A small convolutional VAE: 64x64x3 frames <-> a (latent_channels, 16, 16) latent grid (4x downsampling).

The dynamics model works on the latent grid (4x fewer positions per side, cheap convolutions on a CPU). The KL
term is tiny (as in latent diffusion): it only keeps the latent scale bounded so that per-channel normalisation
statistics, measured after training, make the latents roughly unit-variance for the flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rawdream.nn import ResBlock, group_norm


@dataclass
class AutoencoderConfig:
    latent_channels: int = 4
    # A pixel-unshuffle stem (lossless space-to-depth) replaces full-resolution convolutions, which cost 10x
    # more on a CPU; then one stride-2 level per entry of `channels` after the first.
    stem: int = 2
    channels: tuple[int, ...] = (32, 64)
    decoder_blocks: int = 2  # the decoder gets more capacity at the latent resolution than the encoder
    kl_weight: float = 1e-6

    @property
    def factor(self) -> int:
        return self.stem * 2 ** (len(self.channels) - 1)


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chs = cfg.channels
        layers: list[nn.Module] = [
            nn.PixelUnshuffle(cfg.stem),
            nn.Conv2d(3 * cfg.stem**2, chs[0], 3, padding=1),
        ]
        for i, ch in enumerate(chs):
            layers.append(ResBlock(ch, ch))
            if i + 1 < len(chs):
                layers.append(nn.Conv2d(ch, chs[i + 1], 3, stride=2, padding=1))
        layers += [group_norm(chs[-1]), nn.SiLU(), nn.Conv2d(chs[-1], 2 * cfg.latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=1)
        return mean, logvar.clamp(-20, 5)


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chs = list(reversed(cfg.channels))
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, chs[0], 3, padding=1)]
        layers += [ResBlock(chs[0], chs[0]) for _ in range(cfg.decoder_blocks)]
        for i in range(1, len(chs)):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(chs[i - 1], chs[i], 3, padding=1),
                ResBlock(chs[i], chs[i]),
            ]
        layers += [
            group_norm(chs[-1]),
            nn.SiLU(),
            nn.Conv2d(chs[-1], 3 * cfg.stem**2, 3, padding=1),
            nn.PixelShuffle(cfg.stem),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Autoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig | None = None):
        super().__init__()
        self.cfg = cfg or AutoencoderConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)

    @staticmethod
    def to_input(frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
        return frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    @staticmethod
    def to_frames(x: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
        return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)

    def encode(self, frames: torch.Tensor, sample: bool = False) -> torch.Tensor:
        mean, logvar = self.encoder(self.to_input(frames))
        if sample:
            return mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_frames(self.decoder(z))

    def loss(
        self, frames: torch.Tensor, weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 + MSE reconstruction (+ the tiny KL); ``weight`` (B, 1, H, W) weighs each pixel's error (the
        foreground weighting of ``PretrainWMConfig.ae_foreground_weight``); the logged l1/mse stay unweighted."""
        x = self.to_input(frames)
        mean, logvar = self.encoder(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        rec = self.decoder(z)
        l1 = F.l1_loss(rec, x)
        l2 = F.mse_loss(rec, x)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        if weight is None:
            loss = l1 + l2 + self.cfg.kl_weight * kl
        else:
            err = rec - x
            loss = (err.abs() * weight).mean() + (err.pow(2) * weight).mean() + self.cfg.kl_weight * kl
        return loss, {"ae/l1": l1.item(), "ae/mse": l2.item(), "ae/kl": kl.item()}
