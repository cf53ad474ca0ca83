"""``--model.dynamics.arch=wan``: the Wan video diffusion transformer (diffusers' ``WanTransformer3DModel``) as the
world model's denoiser - the backbone the field uses, behind the same two calls as the embedded U-Net and DiT.

One autoregressive step is a short clip along Wan's time axis: [anchor, context frames..., noisy target], each
frame a grid of latent patches of rawdream's own autoencoder. The conditioning goes where Wan's timestep goes:

* **per-token timesteps** (Wan 2.2's TI2V path, a ``(B, tokens)`` timestep): the anchor's tokens carry the anchor's
  noise level, the context's the context level, the target's the flow time - so the first-frame anchor and the
  lightly noised context are told their own noise level, as in the embedded models;
* **actions in the AdaLN of every block**: the action chunk, proprioception and noise levels (``Conditioning``)
  are projected and added to the timestep embedding before Wan's ``time_proj``, which makes the 6 x dim
  scale/shift/gate of every block; the projection starts at zero, so a pretrained Wan starts as itself;
* the cross-attention, which Wan gives to its text encoder, attends to one learned token (a world model has no
  prompt).

The target's output tokens are the prediction; the objective, the sampler, ImaginedEnv and DNV are the world
model's own. Wan attends over the whole clip at every Euler step (no context cache): on a CPU that is the price
of the field's backbone - the embedded ``dit`` caches the context's keys and values.

``--model.dynamics.pretrained=DIR`` loads public Wan weights (e.g. Wan2.1-T2V-1.3B-Diffusers, its ``transformer``
folder) from a local directory; its patch embedding and output projection are replaced when rawdream's latent
channels differ from Wan's VAE (16). Needs ``pip install rawdream[wan]`` (diffusers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rawdream.nn import mlp
from rawdream.world_model.dynamics import DENOISERS, Conditioning, DynamicsConfig


def _diffusers():
    try:
        from diffusers import WanTransformer3DModel
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError(
            "--model.dynamics.arch=wan needs diffusers: pip install 'rawdream[wan]' (or pip install diffusers)"
        ) from None
    return WanTransformer3DModel


def _load_wan(wan_cls, folder: Path):
    """Config + safetensors shards, read directly: diffusers' ``from_pretrained`` wants ``accelerate`` for Wan
    (its fp32-kept modules), which rawdream does not need otherwise."""
    from safetensors.torch import load_file

    model = wan_cls.from_config(wan_cls.load_config(folder))
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{folder} has a Wan config.json but no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"the Wan weights in {folder} do not fit their config: {len(missing)} missing "
            f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})"
        )
    return model


class WanDenoiser(nn.Module):
    def __init__(self, cfg: DynamicsConfig, latent_channels: int, latent_size: int):
        super().__init__()
        wan_cls = _diffusers()
        self.cfg, self.c = cfg, latent_channels
        if latent_size % cfg.patch:
            raise ValueError(f"model.dynamics.patch={cfg.patch} must divide the latent size {latent_size}")
        if cfg.pretrained:
            path = Path(cfg.pretrained)
            sub = "transformer" if (path / "transformer" / "config.json").exists() else None
            if not (path / (sub or "") / "config.json").exists():
                raise FileNotFoundError(
                    f"--model.dynamics.pretrained {path} holds no Wan transformer (config.json, or "
                    f"transformer/config.json of a Diffusers pipeline folder)"
                )
            self.wan = _load_wan(wan_cls, path / (sub or ""))
            self._fit_channels(latent_channels)
        else:
            if cfg.width % cfg.heads:
                raise ValueError(f"model.dynamics.width={cfg.width} must be a multiple of heads={cfg.heads}")
            self.wan = wan_cls(
                patch_size=(1, cfg.patch, cfg.patch),
                num_attention_heads=cfg.heads,
                attention_head_dim=cfg.width // cfg.heads,
                in_channels=latent_channels,
                out_channels=latent_channels,
                text_dim=cfg.cond_dim,
                freq_dim=min(256, cfg.width),
                ffn_dim=4 * cfg.width,
                num_layers=cfg.depth,
                rope_max_seq_len=64,
            )
        inner = self.wan.config.num_attention_heads * self.wan.config.attention_head_dim
        self.cond = Conditioning(cfg)  # no object head: the pooled patch embedding knows little of where
        self.to_temb = nn.Linear(cfg.cond_dim, inner)  # actions -> every block's AdaLN, through the timestep
        nn.init.zeros_(self.to_temb.weight)
        nn.init.zeros_(self.to_temb.bias)
        self.null_text = nn.Parameter(
            torch.zeros(1, 1, self.wan.config.text_dim)
        )  # the cross-attention's token
        self.proprio_head = mlp(inner + cfg.cond_dim, cfg.cond_dim, cfg.proprio_dim)

    def _fit_channels(self, channels: int) -> None:
        """Pretrained Wan reads its own VAE's latents; rawdream's autoencoder may have other channels."""
        pe, po = self.wan.patch_embedding, self.wan.proj_out
        if pe.in_channels != channels:
            self.wan.patch_embedding = nn.Conv3d(channels, pe.out_channels, pe.kernel_size, pe.stride)
        p = self.wan.config.patch_size
        out = channels * p[0] * p[1] * p[2]
        if po.out_features != out:
            self.wan.proj_out = nn.Linear(po.in_features, out)

    # -- the two calls the world model makes ------------------------------------------------------------------
    def encode_context(
        self, ctx, anchor, actions, proprio, ctx_level, anchor_level, proprio_next=None
    ) -> dict[str, Any]:
        cond = self.cond(actions, proprio, ctx_level, anchor_level)
        frames = torch.stack([anchor, *ctx.unbind(1)], dim=2)  # (B, C, 1 + K, h, w)
        pooled = self.wan.patch_embedding(frames).mean(dim=(2, 3, 4))
        cache = {
            "cond": cond,
            "frames": frames,
            "levels": (anchor_level, ctx_level),
            "proprio_delta": self.proprio_head(torch.cat([pooled, cond], dim=1)),
        }
        self.cond.target(cache, proprio, proprio_next)
        return cache

    def denoise(self, z, tau, cache) -> torch.Tensor:
        wan, ce = self.wan, self.wan.condition_embedder
        x = torch.cat([cache["frames"], z[:, :, None]], dim=2)  # (B, C, F, h, w), the target last
        b, _, f, h, w = x.shape
        p = wan.config.patch_size
        per_frame = (h // p[1]) * (w // p[2])
        anchor_level, ctx_level = cache["levels"]
        # per-token timesteps on Wan's 0..1000 scale: anchor, context frames, target
        levels = torch.stack([anchor_level, *[ctx_level] * (f - 2), tau], dim=1) * 1000.0  # (B, F)
        timestep = levels.repeat_interleave(per_frame, dim=1)  # (B, tokens)
        tokens = timestep.shape[1]

        rotary = wan.rope(x)
        hidden = wan.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        t = ce.timesteps_proj(timestep.flatten()).unflatten(0, (b, tokens))
        t = t.to(next(ce.time_embedder.parameters()).dtype)
        temb = ce.time_embedder(t) + self.to_temb(cache["cond"])[:, None, :]  # (B, tokens, dim)
        tproj = ce.time_proj(ce.act_fn(temb)).unflatten(2, (6, -1))
        text = ce.text_embedder(self.null_text.expand(b, -1, -1))
        for block in wan.blocks:
            hidden = block(hidden, text, tproj, rotary)
        shift, scale = (wan.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        hidden = wan.norm_out(hidden.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)
        hidden = wan.proj_out(hidden.type_as(temb))[:, -per_frame:]  # the target frame's tokens
        out = hidden.reshape(b, h // p[1], w // p[2], p[1], p[2], self.c)
        return out.permute(0, 5, 1, 3, 2, 4).reshape(b, self.c, h, w)


DENOISERS.register("wan")(WanDenoiser)
