"""A small VLA: vision + language + proprioception -> a chunk of action tokens, decoded in parallel (OFT-style).

* vision: a CNN trained here (pixel-unshuffle stem, FiLM from the instruction at every stage, spatial-softmax
  keypoints + pooled features) - manipulation needs *where* things are;
* language: the frozen all-MiniLM-L6-v2 sentence embedding of the instruction (:mod:`rawdream.policy.text`);
* proprioception: hand position and gripper opening, normalised with the dataset's stats;
* optionally (``object_outputs`` > 0) a linear head from the vision features to the objects' positions, trained by
  ``train-policy --object_loss`` from the simulator state recorded in the demonstrations and never used to act:
  the behaviour-cloning loss alone lets a small CNN replay a task's mean motion without finding the object, and
  this auxiliary target makes its keypoints track where the objects are;
* head: one linear layer to ``chunk x action_dim x bins`` logits: every token of the chunk is predicted at
  once, so sampling and log-probabilities are exact and cheap (what GRPO needs).

Policy = config + model + processor (normalisation, tokenizer, text cache), as in LeRobot; all three are saved
together. Selected by ``type`` through a registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rawdream.nn import ResBlock, SpatialSoftmax, group_norm, mlp
from rawdream.policy.base import POLICIES, PolicyConfig
from rawdream.policy.text import TEXT_DIM, TextEncoder
from rawdream.policy.tokenizer import ActionTokenizer


@dataclass
class VLAPolicyConfig(PolicyConfig):
    channels: tuple[int, ...] = (32, 64, 128)
    hidden: int = 512
    bins: int = 256
    dropout: float = 0.1
    object_outputs: int = 0  # size of the auxiliary object-position head (0: none); set by train-policy


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VLAPolicyConfig, cond_dim: int):
        super().__init__()
        chs = cfg.channels
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, chs[0], 3, padding=1))  # 32x32
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, ch in enumerate(chs):
            self.blocks.append(ResBlock(ch, ch, cond_dim))  # FiLM from the instruction
            self.downs.append(
                nn.Conv2d(ch, chs[i + 1], 3, stride=2, padding=1) if i + 1 < len(chs) else nn.Identity()
            )
        self.norm = group_norm(chs[-1])
        self.keypoints = SpatialSoftmax()
        self.out_dim = 3 * chs[-1]

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.stem(images.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
        for block, down in zip(self.blocks, self.downs):
            x = down(block(x, cond))
        x = F.silu(self.norm(x))
        return torch.cat([self.keypoints(x), x.mean(dim=(2, 3))], dim=1)


class VLAModel(nn.Module):
    def __init__(self, cfg: VLAPolicyConfig):
        super().__init__()
        self.cfg = cfg
        cond = 128
        self.text = mlp(TEXT_DIM, 256, cond)
        self.vision = VisionEncoder(cfg, cond)
        self.proprio = mlp(cfg.proprio_dim, 128, 128)
        self.trunk = nn.Sequential(
            nn.Linear(self.vision.out_dim + 128 + cond, cfg.hidden),
            nn.SiLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.SiLU(),
            nn.Dropout(cfg.dropout),
        )
        self.head = nn.Linear(cfg.hidden, cfg.chunk * cfg.action_dim * cfg.bins)
        self.object_head = nn.Linear(self.vision.out_dim, cfg.object_outputs) if cfg.object_outputs else None

    def forward(
        self, images: torch.Tensor, proprio: torch.Tensor, text: torch.Tensor, objects: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """-> logits (B, chunk, action_dim, bins); with ``objects``, also the object-position head's (B, outputs)."""
        t = self.text(text)
        seen = self.vision(images, t)
        h = torch.cat([seen, self.proprio(proprio), t], dim=1)
        logits = self.head(self.trunk(h)).view(-1, self.cfg.chunk, self.cfg.action_dim, self.cfg.bins)
        if not objects:
            return logits
        if self.object_head is None:
            raise ValueError("this policy has no object-position head (trained with --object_loss=0)")
        return logits, self.object_head(seen)


class VLAPolicy(nn.Module):
    """Model + processor; a :class:`rawdream.policy.base.Policy`. Observations are dicts of batched ``image`` (B,H,W,3) uint8, ``proprio`` (B,P) and
    ``instruction`` (list of B strings), exactly what :class:`Env` / ImaginedEnv return (stacked)."""

    def __init__(
        self,
        cfg: VLAPolicyConfig,
        tokenizer: ActionTokenizer,
        proprio_mean,
        proprio_std,
        text_cache: dict | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.model = VLAModel(cfg)
        self.tokenizer = tokenizer
        self.register_buffer("proprio_mean", torch.as_tensor(np.asarray(proprio_mean, np.float32)))
        self.register_buffer("proprio_std", torch.as_tensor(np.asarray(proprio_std, np.float32)))
        self.text_encoder = TextEncoder(text_cache)

    # -- processor ------------------------------------------------------------------------------------------
    def _inputs(self, obs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = torch.as_tensor(np.asarray(obs["image"]))
        proprio = torch.as_tensor(np.asarray(obs["proprio"], dtype=np.float32))
        instr = obs["instruction"]
        instr = [instr] * len(images) if isinstance(instr, str) else list(instr)
        size = self.cfg.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (size, size, 3) or images.dtype != torch.uint8:
            raise ValueError(
                f"policy expects images of shape (B, {size}, {size}, 3) uint8, got "
                f"{tuple(images.shape)} {images.dtype}"
            )
        if proprio.ndim != 2 or proprio.shape[1] != self.cfg.proprio_dim:
            raise ValueError(
                f"policy expects proprio of shape (B, {self.cfg.proprio_dim}), got {tuple(proprio.shape)}"
                f" - this policy was trained with {self.cfg.proprio_dim}-dim proprioception"
            )
        if not (len(instr) == len(images) == len(proprio)):
            raise ValueError(
                f"batch sizes differ: {len(images)} images, {len(proprio)} proprio, {len(instr)} instructions"
            )
        text = torch.from_numpy(self.text_encoder(instr))
        dev = self.proprio_mean.device  # inputs follow the model (``policy.to("cuda")``)
        return images.to(dev), (proprio.to(dev) - self.proprio_mean) / self.proprio_std, text.to(dev)

    def logits(self, obs: dict[str, Any]) -> torch.Tensor:
        return self.model(*self._inputs(obs))

    # -- the API RL needs -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        obs: dict[str, Any],
        temperature: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: str = "token",
    ):
        """-> (actions (B,chunk,A) float32 numpy, tokens (B,chunk,A) long, logprobs (B,chunk,A) of the *sampled*
        tokens under the sampling distribution softmax(logits / temperature); temperature 0 is greedy (and its
        log-probabilities are those of temperature 1). ``generator`` may be one per row: then each row's
        draw depends only on its own stream, not on which other rows share the batch (so a batch split across
        workers samples what the whole batch would).

        ``noise``: "token" draws every token independently; "chunk" draws one uniform number per row and action
        dimension and reads every step of the chunk from it through that step's inverse CDF (needs a generator
        per row). Each token's distribution is the same either way; with "chunk" the deviations from the mode
        are correlated along the chunk instead of averaging out over its steps, so a rollout explores a
        different motion rather than jitter. Log-probabilities are per token in both cases."""
        if noise not in ("token", "chunk"):
            raise ValueError(f"noise must be token or chunk, got {noise!r}")
        logits = self.logits(obs)
        if temperature <= 0:
            tokens = logits.argmax(-1)
        else:
            # sampled on the CPU from CPU generators: the same draw whichever device computed the logits
            probs = F.softmax(logits.float() / temperature, dim=-1).cpu()
            if isinstance(generator, list | tuple):
                if len(generator) != len(probs):
                    raise ValueError(f"{len(generator)} generators for a batch of {len(probs)}")
                rows = [
                    _inverse_cdf(p, torch.rand(p.shape[1], generator=g))
                    if noise == "chunk"
                    else torch.multinomial(p.reshape(-1, p.shape[-1]), 1, generator=g)
                    for p, g in zip(probs, generator)
                ]
                tokens = torch.stack(rows).view(logits.shape[:-1])
            else:
                if noise == "chunk":
                    raise ValueError("chunk noise needs one generator per row")
                flat = probs.reshape(-1, probs.shape[-1])
                tokens = torch.multinomial(flat, 1, generator=generator).view(logits.shape[:-1])
        scaled = logits / temperature if temperature > 0 else logits
        logp = F.log_softmax(scaled, dim=-1).gather(-1, tokens.to(logits.device)[..., None])[..., 0]
        tokens, logp = tokens.cpu(), logp.cpu()  # rollout buffers live on the CPU whatever the device
        return self.tokenizer.decode(tokens).numpy().astype(np.float32), tokens, logp

    def logprob(
        self, obs: dict[str, Any], tokens: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable per-token log-probabilities (B,chunk,A) of ``tokens`` under softmax(logits /
        temperature) - the distribution they were sampled from, so PPO ratios compare like with like - and the
        per-token entropy of that distribution."""
        logits = self.logits(obs)
        logp_all = F.log_softmax(logits / temperature if temperature > 0 else logits, dim=-1)
        logp = logp_all.gather(-1, tokens[..., None].long().to(logp_all.device))[..., 0]
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy

    @torch.no_grad()
    def greedy(self, obs: dict[str, Any]) -> np.ndarray:
        return self.sample(obs, temperature=0.0)[0]

    @property
    def chunk(self) -> int:
        return self.cfg.chunk

    def processor_state(self) -> dict:
        return {"tokenizer": self.tokenizer.state_dict(), "text_cache": self.text_encoder.state()}

    @classmethod
    def from_saved(cls, cfg: VLAPolicyConfig, processor: dict, state_dict: dict[str, Any]) -> VLAPolicy:
        policy = cls(
            cfg,
            ActionTokenizer.from_state(processor["tokenizer"]),
            state_dict["proprio_mean"],
            state_dict["proprio_std"],
            processor.get("text_cache"),
        )
        policy.load_state_dict(state_dict)
        return policy


POLICIES.register("vla", config=VLAPolicyConfig)(VLAPolicy)


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Tokens (chunk, A) read from per-step distributions ``probs`` (chunk, A, bins) at one uniform ``u`` (A,)
    per action dimension, shared by the chunk's steps."""
    cdf = probs.cumsum(-1)
    q = u[None, :, None].expand(probs.shape[0], -1, 1).contiguous()
    return torch.searchsorted(cdf, q).clamp_max(probs.shape[-1] - 1)[..., 0]
