"""The generalist judge's network: frames (+ a reference demo) and an instruction -> a success logit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rawdream.nn import ResBlock, group_norm, mlp
from rawdream.policy.text import TEXT_DIM, TextEncoder
from rawdream.reward.base import FrameSelection


@dataclass
class GeneralistConfig:
    frames: FrameSelection = field(default_factory=lambda: FrameSelection(middle=4))
    channels: tuple[int, ...] = (16, 32, 64)  # six frames per video: the first level dominates CPU cost
    cond_dim: int = 128
    hidden: int = 256
    # condition on a reference demonstration of the instructed task (its first and last frame, stacked with
    # every frame judged): see :mod:`rawdream.reward.references`
    reference: bool = True
    blind: bool = False  # the task-blind control: neither the instruction nor the reference is shown
    # show the instruction; false: judge by the reference demonstration alone. Why: a new task's instruction is
    # words the judge never read among its 45 pretraining instructions, its demonstration is frames like any other
    instruction: bool = True
    # size of an auxiliary head from each judged frame's features to the objects' positions in it (0: none); set
    # by train-judge --object_loss, which trains it on the simulator state so the features follow the objects
    object_outputs: int = 0


def verb_of(text: str) -> str:
    words = text.strip().lower().split()
    return words[0] if words else ""


class JudgeNet(nn.Module):
    def __init__(self, cfg: GeneralistConfig):
        super().__init__()
        self.cfg = cfg
        chs = cfg.channels
        self.text = mlp(2 * TEXT_DIM, cfg.hidden, cfg.cond_dim)
        # per frame: the frame and its change since the first frame (+ the reference's last frame and its change)
        in_ch = 4 * (12 if cfg.reference else 6)  # after a 2x2 pixel-unshuffle
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(in_ch, chs[0], 3, padding=1))
        self.blocks = nn.ModuleList([ResBlock(ch, ch, cfg.cond_dim) for ch in chs])
        self.downs = nn.ModuleList(
            [
                nn.Conv2d(ch, chs[i + 1], 3, stride=2, padding=1) if i + 1 < len(chs) else nn.Identity()
                for i, ch in enumerate(chs)
            ]
        )
        self.norm = group_norm(chs[-1])
        n_frames = len(cfg.frames.indices(64))  # frames per video (first, last, middle)
        self.fuse = nn.Sequential(
            nn.Linear(n_frames * 2 * chs[-1] + cfg.cond_dim, cfg.hidden),
            nn.SiLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.SiLU(),
            nn.Linear(cfg.hidden, 1),
        )
        self.object_head = nn.Linear(2 * chs[-1], cfg.object_outputs) if cfg.object_outputs else None

    def forward(
        self,
        frames: torch.Tensor,
        text: torch.Tensor,
        reference: torch.Tensor | None = None,
        objects: bool = False,
    ):
        """frames (B, F, H, W, 3) uint8, text (B, 2*384), reference (B, 2, H, W, 3) uint8 (first and last frame
        of a demonstration of the instructed task; for ``reference`` models) -> success logits (B,); with
        ``objects`` (training, models with an object head) also the objects' positions per frame (B, F, O)."""
        b, f = frames.shape[:2]
        if self.cfg.blind or not self.cfg.instruction:
            text = torch.zeros_like(text)
        cond = self.text(text)
        x = frames.float() / 127.5 - 1.0
        first = x[:, :1].expand_as(x)
        parts = [x, x - first]  # the frame and its change since the start
        if self.cfg.reference:
            if reference is None or reference.shape[0] != b or reference.shape[1] != 2:
                raise ValueError(
                    "this judge compares with a reference demonstration: pass reference (B, 2, H, W, 3)"
                )
            r = reference.float() / 127.5 - 1.0
            if self.cfg.blind:
                r = torch.zeros_like(r)
            goal = r[:, 1:].expand_as(x)
            parts += [goal, goal - r[:, :1].expand_as(x)]  # where the demo ended, and how it got there
        x = torch.cat(parts, dim=-1).flatten(0, 1).permute(0, 3, 1, 2)
        h = self.stem(x)
        cond_f = cond.repeat_interleave(f, dim=0)
        for block, down in zip(self.blocks, self.downs):
            h = down(block(h, cond_f))
        h = F.silu(self.norm(h))
        per_frame = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        logits = self.fuse(torch.cat([per_frame.view(b, -1), cond], dim=1))[:, 0]
        if not objects:
            return logits
        if self.object_head is None:
            raise ValueError("this judge has no object head (train it with --object_loss > 0)")
        return logits, self.object_head(per_frame).view(b, f, -1)


def text_features(enc: TextEncoder, texts: list[str]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([enc(texts), enc([verb_of(t) for t in texts])], axis=1))
