"""The generalist judge's network: frames (+ a reference demo) and an instruction -> a success logit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rawdream.nn import ResBlock, SpatialSoftmax, group_norm, mlp
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
    # keypoints: where each channel of a frame's 16 x 16 feature map fires (spatial softmax), read beside the last
    # map's mean and max; and the object head becomes one keypoint per object (channel k for object k), mapped to
    # its xyz by an affine map of its own (the camera is fixed). Why: a head that reads pooled features - or a
    # linear mix of every keypoint - predicted the hand's position for the objects' (correlation 0.93-0.99 with
    # the hand on the main axis, on held-out and on its own training videos) and so read a puck left behind as
    # moved as far as the demo's (docs/judges.md). The idea: one channel's peak per object lowers the loss most
    # by sitting on that object. Measured (stop 39): it follows the hand less (0.6 instead of 0.96) but does not
    # yet follow the puck after 800 steps
    keypoints: bool = False


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
        self.keypoints = SpatialSoftmax() if cfg.keypoints else None
        # keypoints of the 16 x 16 map (64 px frames): a 2-3 px object is still about a cell there
        kp_level = max(len(chs) - 2, 0)
        n_kp = 2 * chs[kp_level] if cfg.keypoints else 0
        self._kp_level = kp_level
        feat = n_kp + 2 * chs[-1]  # per frame: [keypoints x, y], mean, max
        n_frames = len(cfg.frames.indices(64))  # frames per video (first, last, middle)
        self.fuse = nn.Sequential(
            nn.Linear(n_frames * feat + cfg.cond_dim, cfg.hidden),
            nn.SiLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.SiLU(),
            nn.Linear(cfg.hidden, 1),
        )
        self.object_head = None
        if cfg.object_outputs and cfg.keypoints:
            self.object_head = KeypointObjectHead(cfg.object_outputs, chs[kp_level])
        elif cfg.object_outputs:
            self.object_head = nn.Linear(feat, cfg.object_outputs)

    def forward(
        self,
        frames: torch.Tensor,
        text: torch.Tensor,
        reference: torch.Tensor | None = None,
        objects: bool = False,
        maps: bool = False,
    ):
        """frames (B, F, H, W, 3) uint8, text (B, 2*384), reference (B, 2, H, W, 3) uint8 (first and last frame
        of a demonstration of the instructed task; for ``reference`` models) -> success logits (B,); with
        ``objects`` (training, models with an object head) also the objects' positions per frame (B, F, O); with
        ``maps`` too (keypoint heads) also object k's keypoint channel's logits per frame (B x F, objects, h, w)."""
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
        kp = None
        for level, (block, down) in enumerate(zip(self.blocks, self.downs)):
            h = block(h, cond_f)
            if self.keypoints is not None and level == self._kp_level:
                kp = self.keypoints(h)
                kp_map = h
            h = down(h)
        h = F.silu(self.norm(h))
        pooled = [h.mean(dim=(2, 3)), h.amax(dim=(2, 3))]
        per_frame = torch.cat(pooled if kp is None else [kp, *pooled], dim=1)
        logits = self.fuse(torch.cat([per_frame.view(b, -1), cond], dim=1))[:, 0]
        if not objects:
            if maps:
                raise ValueError("maps come with the object head's outputs: pass objects=True too")
            return logits
        if self.object_head is None:
            raise ValueError("this judge has no object head (train it with --object_loss > 0)")
        seen = self.object_head(per_frame if kp is None else kp).view(b, f, -1)
        if not maps:
            return logits, seen
        if kp is None:
            raise ValueError("only a keypoint object head has maps (--model.keypoints=true)")
        return logits, seen, kp_map[:, : self.object_head.objects]

    def keypoints_of(self, frames, text, reference=None) -> torch.Tensor:
        """Where each object's keypoint is in every frame: (B, F, objects, 2) column, row in px of the frames
        (keypoint heads; a diagnostic of what the head follows, not a judge output)."""
        b, f, size = frames.shape[:3]
        _, _, kp_map = self(frames, text, reference, objects=True, maps=True)
        return self.map_pixels(kp_map, size).view(b, f, kp_map.shape[1], 2)

    def map_pixels(self, kp_map: torch.Tensor, size: int) -> torch.Tensor:
        """(N, objects, h, w) keypoint logits -> (N, objects, 2) their keypoints as column, row px of a ``size``
        frame."""
        xy = self.keypoints(
            kp_map
        )  # (N, 2 x objects): x of each, then y of each, in [-1, 1] over cell centres
        n, cells = kp_map.shape[1], kp_map.shape[-1]
        cell = (torch.stack([xy[:, :n], xy[:, n:]], dim=-1) + 1) / 2 * (cells - 1)
        return (cell + 0.5) * (size / cells)


class KeypointObjectHead(nn.Module):
    """Object k's xyz from channel k's keypoint alone: an affine map (2 -> 3) per object. ``outputs``: 3 x objects
    (a trailing 1 or 2 coordinates, e.g. image positions in a test, read as one more object's first coordinates)."""

    def __init__(self, outputs: int, channels: int):
        super().__init__()
        self.outputs = outputs
        self.objects = -(-outputs // 3)
        if self.objects > channels:
            raise ValueError(f"{self.objects} objects need as many keypoint channels; the map has {channels}")
        self.channels = channels
        self.weight = nn.Parameter(torch.randn(self.objects, 3, 2) * 0.5)
        self.bias = nn.Parameter(torch.zeros(self.objects, 3))

    def forward(self, kp: torch.Tensor) -> torch.Tensor:
        """kp (N, 2 x channels): every channel's x, then every channel's y -> (N, outputs)."""
        n = self.objects
        xy = torch.stack([kp[:, :n], kp[:, self.channels : self.channels + n]], dim=-1)  # (N, objects, 2)
        out = torch.einsum("ocd,nod->noc", self.weight, xy) + self.bias
        return out.flatten(1)[:, : self.outputs]


def text_features(enc: TextEncoder, texts: list[str]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([enc(texts), enc([verb_of(t) for t in texts])], axis=1))
