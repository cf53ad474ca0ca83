"""The world model: autoencoder + action-conditioned latent rectified flow, rolled out autoregressively.

Rectified flow: ``z_tau = tau * eps + (1 - tau) * z0``; the denoiser predicts either the clean target (``x``) or
the velocity ``eps - z0`` (``v``). The clean variable is the change of the latent over one action chunk
(``predict_delta``), normalised to unit variance, so a static background costs nothing to predict.

Autoregressive rollout: each step predicts the latent of the frame at the end of one 8-step action chunk and the
proprioception there, from the last ``context`` latents (noised to ``t_c``), the first real frame (the anchor,
noised by ``t_anchor(s) = min(rate * max(s - start, 0), max)`` against first-frame ghosting) and the actions.
Every rollout owns a ``torch.Generator``: the same actions and seed give the same video, another seed another
draw (dual-noise verification re-draws it), whatever else is in the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

import torch
from torch import nn

from rawdream.nn import cell_sq_distances
from rawdream.world_model.autoencoder import Autoencoder, AutoencoderConfig
from rawdream.world_model.dynamics import DynamicsConfig, build_denoiser


def object_region(pixels: torch.Tensor, size: int, grid, sigma: float) -> torch.Tensor:
    """pixels (B, O, 2) where each object is in a ``size`` x ``size`` frame (column, row in px; NaN: none) ->
    (B, 1, h, w) on the latent ``grid`` (h, w): a Gaussian of ``sigma`` cells around each object, the largest
    where they overlap (1 at an object's cell, 0 in a frame without objects)."""
    g = torch.exp(-cell_sq_distances(pixels, size, grid) / (2 * sigma**2)).nan_to_num(0.0)  # (B, O, h, w)
    return g.amax(1, keepdim=True) if g.shape[1] else g.new_zeros(len(g), 1, *grid)


@dataclass
class FlowConfig:
    prediction: str = "x"  # x (clean target) | v (velocity eps - z0)
    predict_delta: bool = True
    tau_mean: float = 0.0  # logit-normal training times: tau = sigmoid(N(mean, std))
    tau_std: float = 1.0
    train_context_noise: float = 0.1  # context latents noised at U(0, this) during training
    train_anchor_noise: float = 0.35  # anchor noised at U(0, this) in half of the samples
    motion_weight: float = 4.0  # extra loss weight where the latent changes (moving arm and objects)
    proprio_target_noise: float = 0.1  # noise on the teacher-forced chunk-end proprio (normalised units)
    proprio_weight: float = 1.0
    # the proprioception *input* noised at N(0, U(0, this)^2) (normalised units), the head still asked for the true
    # chunk-end value: a model fed only exact proprioception learns to integrate actions onto it and ignores the
    # frames, so in a rollout its own error feeds back and the imagined hand drifts; noised, it must place the
    # hand from the context frames too (0: off, the committed models' training)
    train_proprio_noise: float = 0.0
    # with an object head (``dynamics.object_head``): its loss weight, and the noise on the teacher-forced
    # chunk-end object positions the denoiser is conditioned on (``dynamics.object_target``; normalised units)
    object_weight: float = 1.0
    object_target_noise: float = 0.1
    # extra loss weight on the latent cells where the objects are at the chunk's end (projected from the recorded
    # simulator state, a training-time label only; Meta-World play): a puck covers ~3 of 4,096 pixels and sits
    # still most of the time, so neither the plain loss nor the motion weight keeps it - the model then stops
    # drawing it when the arm sweeps by (docs/world-model.md). A Gaussian of ``object_region_sigma`` latent cells
    # around each object, times this weight, is added to the weight map (0: off, the committed models' training;
    # a fine-tune takes the command's, not the init's)
    object_region_weight: float = 0.0
    object_region_sigma: float = 1.0

    # training-only settings: a fine-tune (``pretrain-wm --init``) may change them, the model's shape stays
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = (
        "tau_mean",
        "tau_std",
        "train_context_noise",
        "train_anchor_noise",
        "motion_weight",
        "proprio_target_noise",
        "proprio_weight",
        "train_proprio_noise",
        "object_weight",
        "object_target_noise",
        "object_region_weight",
        "object_region_sigma",
    )

    def validate(self) -> None:
        if self.prediction not in ("x", "v"):
            raise ValueError(f"flow.prediction must be 'x' or 'v', got {self.prediction!r}")
        if self.object_region_weight < 0 or self.object_region_sigma <= 0:
            raise ValueError(
                f"--model.flow.object_region_weight must be >= 0 and --model.flow.object_region_sigma > 0, got "
                f"{self.object_region_weight} and {self.object_region_sigma}"
            )


@dataclass
class SamplerConfig:
    RANGES: ClassVar[dict] = {
        "steps": ">=1",
        "anchor_start": ">=0",
        "anchor_rate": ">=0",
        "anchor_max": "[0,1000]",
        "context_level": "[0,1000]",
    }

    steps: int = 2  # Euler steps per AR step
    anchor_noise: bool = True
    anchor_start: int = 3
    anchor_rate: float = 10.0  # per AR step, on the 0..1000 scale
    anchor_max: float = 300.0
    context_noise: bool = True
    context_level: float = 50.0  # 0..1000

    def anchor_level(self, s: int) -> float:
        """t_anchor(s) on 0..1 for the AR step s = 1, 2, ... (the paper's schedule on 0..1000)."""
        if not self.anchor_noise:
            return 0.0
        return min(self.anchor_rate * max(s - self.anchor_start, 0), self.anchor_max) / 1000.0

    def ctx_level(self) -> float:
        return self.context_level / 1000.0 if self.context_noise else 0.0


def overlay_changed(own, given, names: tuple[str, ...] | None = None):
    """``own`` with the settings of ``given`` that differ from their dataclass's defaults (what a ``--KEY``
    changes), so a command changes only what it names; ``names`` limits which settings may be taken."""
    default = type(given)()
    changed = {
        f.name: getattr(given, f.name)
        for f in fields(given)
        if getattr(given, f.name) != getattr(default, f.name) and (names is None or f.name in names)
    }
    return replace(own, **changed)


@dataclass
class WorldModelConfig:
    image_size: int = 64
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)


class WorldModel(nn.Module):
    def __init__(self, cfg: WorldModelConfig | None = None):
        super().__init__()
        self.cfg = cfg or WorldModelConfig()
        self.ae = Autoencoder(self.cfg.autoencoder)
        c = self.cfg.autoencoder.latent_channels
        self.latent_size = self.cfg.image_size // self.cfg.autoencoder.factor
        self.dynamics = build_denoiser(self.cfg.dynamics, c, self.latent_size)
        # normalisation statistics, measured on the training data after the autoencoder is trained
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))
        self.register_buffer("delta_std", torch.ones(c))
        self.register_buffer("proprio_mean", torch.zeros(self.cfg.dynamics.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(self.cfg.dynamics.proprio_dim))
        self.register_buffer("action_mean", torch.zeros(self.cfg.dynamics.action_dim))
        self.register_buffer("action_std", torch.ones(self.cfg.dynamics.action_dim))
        if self.has_objects:  # only then: the models saved before the object head load as they were
            self.register_buffer("object_mean", torch.zeros(self.cfg.dynamics.object_dim))
            self.register_buffer("object_std", torch.ones(self.cfg.dynamics.object_dim))

    @property
    def has_objects(self) -> bool:
        """Whether the dynamics predict the objects' positions (an object head, trained on simulator state)."""
        return self.cfg.dynamics.object_head and self.cfg.dynamics.object_dim > 0

    # -- normalisation --------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model lives (``model.to("cuda")`` moves imagination to a GPU; inputs and outputs of the
        sampling API stay CPU tensors, and noise is drawn on the CPU from each rollout's generator, so a
        rollout is the same draw on any device up to kernel rounding)."""
        return self.latent_mean.device

    def _shape(self, v: torch.Tensor) -> torch.Tensor:
        return v.view(1, -1, 1, 1)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> normalised latents (B, C, h, w), on the model's device."""
        z = self.ae.encode(frames.to(self.device))
        return (z - self._shape(self.latent_mean)) / self._shape(self.latent_std)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> uint8 frames on the CPU."""
        return self.ae.decode(z * self._shape(self.latent_std) + self._shape(self.latent_mean)).cpu()

    def norm_proprio(self, p: torch.Tensor) -> torch.Tensor:
        return (p - self.proprio_mean) / self.proprio_std

    def denorm_proprio(self, p: torch.Tensor) -> torch.Tensor:
        return p * self.proprio_std + self.proprio_mean

    def norm_objects(self, o: torch.Tensor) -> torch.Tensor:
        return (o - self.object_mean) / self.object_std

    def denorm_objects(self, o: torch.Tensor) -> torch.Tensor:
        return o * self.object_std + self.object_mean

    def norm_actions(self, a: torch.Tensor) -> torch.Tensor:
        return (a.float() - self.action_mean) / self.action_std

    # -- training -------------------------------------------------------------------------------------------
    def training_loss(
        self, batch: dict[str, torch.Tensor], gen: torch.Generator
    ) -> tuple[torch.Tensor, dict]:
        """batch: ctx (B,K,C,h,w), anchor, target (B,C,h,w) normalised latents; actions (B,k,A);
        proprio, proprio_next (B,P) normalised; with an object head, objects_next (B,O) normalised."""
        fcfg = self.cfg.flow
        ctx, anchor, target = batch["ctx"], batch["anchor"], batch["target"]
        b = target.shape[0]

        # drawn on the CPU from the step's generator (the same draw on any device), then moved to the model
        def rand(*shape):
            return torch.rand(*shape, generator=gen).to(target.device)

        def randn(*shape):
            return torch.randn(*shape, generator=gen).to(target.device)

        ctx_level = rand(b) * fcfg.train_context_noise
        anchor_level = rand(b) * fcfg.train_anchor_noise * (rand(b) < 0.5)
        ctx_in = _noise(ctx, randn(*ctx.shape), ctx_level.view(b, 1, 1, 1, 1))
        anchor_in = _noise(anchor, randn(*anchor.shape), anchor_level.view(b, 1, 1, 1))
        p_next = batch["proprio_next"] + fcfg.proprio_target_noise * randn(*batch["proprio_next"].shape)
        p_in = batch["proprio"]
        if fcfg.train_proprio_noise > 0:  # drawn only when on: the committed models' random streams stay
            p_level = rand(b, 1) * fcfg.train_proprio_noise
            p_in = p_in + p_level * randn(*p_in.shape)
        objects = {}
        if self.has_objects:
            o = batch["objects_next"]
            objects["objects_next"] = o + fcfg.object_target_noise * randn(*o.shape)
        cache = self.dynamics.encode_context(
            ctx_in,
            anchor_in,
            batch["actions"],
            p_in,
            ctx_level,
            anchor_level,
            proprio_next=p_next,
            **objects,
        )
        last = ctx[:, -1]
        x0 = (target - last) / self._shape(self.delta_std) if fcfg.predict_delta else target
        tau = torch.sigmoid(randn(b) * fcfg.tau_std + fcfg.tau_mean)
        eps = randn(*x0.shape)
        z = _noise(x0, eps, tau.view(b, 1, 1, 1))
        out = self.dynamics.denoise(z, tau, cache)
        goal = x0 if fcfg.prediction == "x" else eps - x0
        motion = (target - last).abs().mean(1, keepdim=True)
        # regions that change (arm, moved objects) weigh up to (1 + motion_weight) times the static background
        weight = 1.0 + fcfg.motion_weight * (
            motion / (4 * motion.mean(dim=(2, 3), keepdim=True) + 1e-6)
        ).clamp(max=1)
        if (
            fcfg.object_region_weight > 0 and "object_px" in batch
        ):  # validation batches carry none: plain loss
            weight = weight + fcfg.object_region_weight * object_region(
                batch["object_px"], self.cfg.image_size, target.shape[-2:], fcfg.object_region_sigma
            )
        frame_loss = (weight * (out - goal) ** 2).mean()
        # from the (noised) input to the true chunk-end proprioception: the head learns to correct its input
        proprio_loss = ((cache["proprio_delta"] - (batch["proprio_next"] - p_in)) ** 2).mean()
        loss = frame_loss + fcfg.proprio_weight * proprio_loss
        metrics = {"dyn/frame": frame_loss.item(), "dyn/proprio": proprio_loss.item()}
        if self.has_objects:
            object_loss = ((cache["objects"] - batch["objects_next"]) ** 2).mean()
            loss = loss + fcfg.object_weight * object_loss
            metrics["dyn/objects"] = object_loss.item()
        return loss, metrics

    # -- sampling -------------------------------------------------------------------------------------------
    def _per_rollout_randn(self, gens: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(self.device)

    @torch.no_grad()
    def predict_next(
        self,
        ctx: torch.Tensor,
        anchor: torch.Tensor,
        actions: torch.Tensor,
        proprio_n: torch.Tensor,
        s: int | list[int],
        gens: list[torch.Generator],
        sampler: SamplerConfig | None = None,
        objects: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """One AR step: normalised latents of the chunk-end frame and normalised proprioception (and, with
        ``objects``, the object head's normalised chunk-end object positions, None without a head). ``s``: the
        AR step (1 = the first chunk), one for all rows or one per row."""
        sc = sampler or self.cfg.sampler
        b = ctx.shape[0]
        lat = tuple(anchor.shape[1:])
        dev = self.device
        ctx_level = torch.full((b,), sc.ctx_level(), device=dev)
        steps = [s] * b if isinstance(s, int) else list(s)
        anchor_level = torch.tensor([sc.anchor_level(int(x)) for x in steps], device=dev)
        # noise is drawn per rollout, in a fixed order, so a rollout does not depend on its batch neighbours
        eps_anchor = self._per_rollout_randn(gens, lat)
        eps_ctx = self._per_rollout_randn(gens, tuple(ctx.shape[1:]))
        eps = self._per_rollout_randn(gens, lat)
        ctx_in = _noise(ctx, eps_ctx, ctx_level.view(b, 1, 1, 1, 1))
        anchor_in = _noise(anchor, eps_anchor, anchor_level.view(b, 1, 1, 1))
        cache = self.dynamics.encode_context(ctx_in, anchor_in, actions, proprio_n, ctx_level, anchor_level)
        z = eps
        taus = torch.linspace(1.0, 0.0, sc.steps + 1)
        for i in range(sc.steps):
            t, t_next = float(taus[i]), float(taus[i + 1])
            out = self.dynamics.denoise(z, torch.full((b,), t, device=dev), cache)
            x0 = out if self.cfg.flow.prediction == "x" else z - t * out
            z = x0 if t_next == 0 else (t_next / t) * z + (1 - t_next / t) * x0
        nxt = ctx[:, -1] + z * self._shape(self.delta_std) if self.cfg.flow.predict_delta else z
        if objects:
            return nxt, proprio_n + cache["proprio_delta"], cache.get("objects")
        return nxt, proprio_n + cache["proprio_delta"]

    def with_sampler(self, sampler: SamplerConfig) -> WorldModel:
        """This model (the same weights, not a copy) imagining with ``sampler`` instead of its own."""
        import copy

        view = copy.copy(self)
        view.cfg = replace(self.cfg, sampler=sampler)
        return view

    @torch.no_grad()
    def rollout(
        self,
        first_frames: torch.Tensor,
        proprio: torch.Tensor,
        action_chunks: torch.Tensor,
        seeds: list[int],
        sampler: SamplerConfig | None = None,
        decode: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Imagine H chunks from real first frames: frames (B, H+1, H_img, W_img, 3) uint8, proprio (B, H+1, P)."""
        state = self.start(first_frames, proprio, seeds)
        for h in range(action_chunks.shape[1]):
            self.advance(state, action_chunks[:, h], sampler)
        return self.finish(state, decode)

    def start(self, first_frames: torch.Tensor, proprio: torch.Tensor, seeds: list[int]) -> dict:
        z0 = self.encode(first_frames)
        k = self.cfg.dynamics.context
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        p = self.norm_proprio(proprio.float().to(self.device))
        return {
            "anchor": z0,
            "ctx": z0[:, None].repeat(1, k, 1, 1, 1),
            "latents": [z0],
            "proprio": [p],
            "objects": [],
            "gens": gens,
            "s": 0,
        }

    def advance(self, state: dict, actions: torch.Tensor, sampler: SamplerConfig | None = None) -> None:
        state["s"] += 1
        actions = torch.as_tensor(actions)
        if actions.shape[1:] != (self.cfg.dynamics.chunk, self.cfg.dynamics.action_dim):
            raise ValueError(
                f"action chunks have shape {tuple(actions.shape[1:])}, this world model expects "
                f"({self.cfg.dynamics.chunk}, {self.cfg.dynamics.action_dim}) per rollout"
            )
        nxt, p, objects = self.predict_next(
            state["ctx"],
            state["anchor"],
            self.norm_actions(actions.to(self.device)),
            state["proprio"][-1],
            state["s"],
            state["gens"],
            sampler,
            objects=True,
        )
        state["ctx"] = torch.cat([state["ctx"][:, 1:], nxt[:, None]], dim=1)
        state["latents"].append(nxt)
        state["proprio"].append(p)
        if objects is not None:
            state["objects"].append(objects)

    def finish(self, state: dict, decode: bool = True) -> dict[str, torch.Tensor]:
        lat = torch.stack(state["latents"], dim=1)
        out = {
            "latents": lat.cpu(),
            "proprio": self.denorm_proprio(torch.stack(state["proprio"], dim=1)).cpu(),
        }
        if state.get("objects"):  # (B, H, O): where the object head puts the objects at each chunk's end
            out["objects"] = self.denorm_objects(torch.stack(state["objects"], dim=1)).cpu()
        if decode:
            b, t = lat.shape[:2]
            out["frames"] = self.decode(lat.flatten(0, 1)).view(b, t, *self._frame_shape())
        return out

    def _frame_shape(self) -> tuple[int, int, int]:
        return (self.cfg.image_size, self.cfg.image_size, 3)


def _noise(z: torch.Tensor, eps: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    return level * eps + (1 - level) * z


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB between uint8 images, per leading index (averaging over the last three dims)."""
    mse = ((a.float() - b.float()) ** 2).mean(dim=(-3, -2, -1))
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM (7x7 uniform window, per channel) between uint8 images (..., H, W, 3); with a boolean ``mask``
    (..., H, W), the mean of the SSIM map over the masked pixels only (NaN where the mask is empty)."""
    import torch.nn.functional as F

    shape = a.shape[:-3]
    x = a.reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    y = b.reshape(-1, *b.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    c1, c2 = 0.01**2, 0.03**2
    pool = lambda t: F.avg_pool2d(t, 7, 1, 3, count_include_pad=False)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx**2, pool(y * y) - my**2, pool(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    if mask is None:
        return s.mean(dim=(1, 2, 3)).view(shape)
    m = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    total = m.sum(dim=(1, 2, 3))
    per = (s.mean(1, keepdim=True) * m).sum(dim=(1, 2, 3)) / total.clamp(min=1)
    return torch.where(total > 0, per, torch.full_like(per, float("nan"))).view(shape)


def lr_schedule(step: int, total: int, warmup: int = 500) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))) * 0.9 + 0.1
