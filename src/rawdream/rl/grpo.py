"""GRPO arithmetic with dual-noise verification, readable top to bottom (CleanRL style).

Rewards are per rollout (1 success, 0 failure), grouped by initial state (G rollouts each). A rollout is
*unreliable* when its judge abstained or when dual-noise verification flipped its success to a failure. As in
the paper: an unreliable rollout's reward becomes the mean of its group's reliable rewards (advantage 0,
effectively masked); the group mean and std come from reliable rollouts only; a group with more than
``max_unreliable`` unreliable rollouts is dropped whole.

A group whose reliable rewards are all equal (all successes or all failures) has zero advantage everywhere: it
carries no signal, and under a per-token mean its tokens only dilute the rollouts that do. With
``drop_uninformative`` such groups leave the loss (DAPO's dynamic-sampling filter; SimpleVLA-RL does the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Advantages:
    advantages: torch.Tensor  # (B, G)
    mask: torch.Tensor  # (B, G) rollouts that enter the loss (reliable, in a kept group)
    rewards: torch.Tensor  # (B, G) after neutralising unreliable ones
    dropped: torch.Tensor  # (B,) groups dropped whole (too many unreliable rollouts)
    informative: torch.Tensor  # (B,) groups whose reliable rewards differ (a nonzero advantage somewhere)


def group_advantages(
    rewards: torch.Tensor,
    reliable: torch.Tensor,
    max_unreliable: int = 2,
    eps: float = 1e-6,
    drop_uninformative: bool = False,
) -> Advantages:
    rewards = rewards.float()
    reliable = reliable.bool()
    n_rel = reliable.sum(1, keepdim=True)
    mean = (rewards * reliable).sum(1, keepdim=True) / n_rel.clamp_min(1)
    neutral = torch.where(reliable, rewards, mean.expand_as(rewards))
    var = (((neutral - mean) ** 2) * reliable).sum(1, keepdim=True) / n_rel.clamp_min(1)
    std = var.sqrt()
    adv = torch.where(std > eps, (neutral - mean) / (std + eps), torch.zeros_like(neutral))
    dropped = (~reliable).sum(1) > max_unreliable
    dropped |= n_rel[:, 0] == 0
    informative = (std[:, 0] > eps) & ~dropped
    mask = reliable & ~dropped[:, None]
    if drop_uninformative:
        mask &= informative[:, None]
    adv = adv * mask
    return Advantages(advantages=adv, mask=mask, rewards=neutral, dropped=dropped, informative=informative)


def clipped_surrogate(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clip with asymmetric bounds [1 - clip_low, 1 + clip_high], averaged per token over valid tokens.

    logp_*: (N, T) per-token log-probabilities; adv: (N,) per-rollout advantages; mask: (N, T) valid tokens.
    """
    mask = mask.float()
    ratio = torch.exp(logp_new - logp_old)
    a = adv[:, None]
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * a
    surr = torch.minimum(unclipped, clipped)
    n = mask.sum().clamp_min(1)
    loss = -(surr * mask).sum() / n
    with torch.no_grad():
        clip_frac = (((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float() * mask).sum() / n
        approx_kl = (((ratio - 1) - torch.log(ratio)) * mask).sum() / n  # k3 estimator, >= 0
    return loss, {"clip_frac": clip_frac.item(), "approx_kl": approx_kl.item()}
