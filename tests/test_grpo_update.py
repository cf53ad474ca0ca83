"""Dreamer.update, the step that turns advantages into a parameter change: what may not reach the gradient does
not (masked rollouts, dead steps), each time step carries its own rollout's advantage, and the entropy and KL
terms pull the way they should."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from rawdream.reward.base import Verdict


class _Alternating:
    name, privileged = "alternating", False

    def __call__(self, videos, instructions, **_):
        return [Verdict(success=i % 2 == 0) for i in range(len(videos))]


@pytest.fixture(scope="module")
def setup(tiny_dreamer):
    overrides = {"group_size": 4, "horizon": 3, "dnv": False, "lr": 3e-3, "epochs": 2, "minibatch": 4}
    dreamer = tiny_dreamer({**overrides, "entropy_coef": 0.0}, judge=_Alternating())
    buf = dreamer.rollout_round(dreamer.draw(0, states=[0, 1]))  # 8 rollouts x 3 steps
    return dreamer, buf


def _update(dreamer, buf, adv, mask, **cfg_changes):
    """The parameter change of one update from the same starting weights and optimiser state."""
    model = dreamer.policy.model
    weights, opt_state, cfg = (
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(dreamer.opt.state_dict()),
        dreamer.cfg,
    )
    dreamer.cfg = dataclasses.replace(cfg, **cfg_changes) if cfg_changes else cfg
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    try:
        stats = dreamer.update(buf, torch.as_tensor(adv, dtype=torch.float32), torch.as_tensor(mask), 0)
        after = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        return after - before, stats
    finally:
        model.load_state_dict(weights)
        dreamer.opt.load_state_dict(opt_state)
        dreamer.cfg = cfg


def _scrambled(buf, rollout, steps=slice(None)):
    """``buf`` with rollout ``rollout``'s tokens and images at ``steps`` replaced by other values."""
    out = {**buf, "tokens": buf["tokens"].clone(), "images": buf["images"].copy()}
    bins = int(out["tokens"].max()) + 1
    out["tokens"][steps, rollout] = (out["tokens"][steps, rollout] + 7) % max(bins, 8)
    out["images"][steps, rollout] = 255 - out["images"][steps, rollout]
    return out


def test_masked_rollouts_give_no_gradient(setup):
    """A flipped (DNV), abstained or dropped rollout is masked: whatever it contains, the update is the same."""
    dreamer, buf = setup
    adv = np.array([1.0, -1.0, 1.0, -1.0, 0.5, -0.5, 1.0, -1.0])
    mask = np.ones(8, bool)
    mask[[2, 5]] = False
    d, stats = _update(dreamer, buf, adv, mask)
    assert stats["updates"] > 0 and d.norm() > 0
    for r in (2, 5):
        d_other, _ = _update(dreamer, _scrambled(buf, r), adv, mask)
        assert torch.equal(d, d_other), f"masked rollout {r} reached the gradient"
    # the same scramble on a rollout that is in the loss changes the update: the check above can fail
    d_live, _ = _update(dreamer, _scrambled(buf, 0), adv, mask)
    assert not torch.equal(d, d_live)


def test_dead_steps_give_no_gradient(setup):
    """Steps after a rollout ended (alive False, e.g. a simulator episode that succeeded early) are left out."""
    dreamer, buf = setup
    adv, mask = np.array([1.0, -1.0] * 4), np.ones(8, bool)
    ended = {**buf, "alive": buf["alive"].copy()}
    ended["alive"][1:, 3] = False  # rollout 3 ended after its first step
    d, _ = _update(dreamer, ended, adv, mask)
    d_scrambled, _ = _update(dreamer, _scrambled(ended, 3, slice(1, None)), adv, mask)
    assert torch.equal(d, d_scrambled)
    d_alive, _ = _update(dreamer, _scrambled(buf, 3, slice(1, None)), adv, mask)
    assert not torch.equal(d_alive, _update(dreamer, buf, adv, mask)[0])  # alive steps do count


def _logp(dreamer, buf, rollout):
    """Mean log-probability of rollout ``rollout``'s own tokens at its own steps."""
    obs = {
        "image": buf["images"][:, rollout],
        "proprio": buf["proprio"][:, rollout],
        "instruction": [dreamer.instruction] * buf["images"].shape[0],
    }
    with torch.no_grad():
        logp, _ = dreamer.policy.logprob(obs, buf["tokens"][:, rollout], dreamer.cfg.temperature)
    return float(logp.mean())


def test_each_step_carries_its_own_rollouts_advantage(setup):
    """Rollout 0 rewarded, rollout 1 punished, the rest masked: the policy makes rollout 0's actions more
    likely and rollout 1's less (a transposed (H, N) flattening would mix them)."""
    dreamer, buf = setup
    model = dreamer.policy.model
    weights, opt_state = copy.deepcopy(model.state_dict()), copy.deepcopy(dreamer.opt.state_dict())
    before = [_logp(dreamer, buf, r) for r in (0, 1)]
    adv, mask = np.zeros(8), np.zeros(8, bool)
    adv[[0, 1]], mask[[0, 1]] = [1.0, -1.0], True
    try:
        for _ in range(3):
            dreamer.update(buf, torch.as_tensor(adv, dtype=torch.float32), torch.as_tensor(mask), 0)
        after = [_logp(dreamer, buf, r) for r in (0, 1)]
    finally:
        model.load_state_dict(weights)
        dreamer.opt.load_state_dict(opt_state)
    assert after[0] > before[0] and after[1] < before[1], (before, after)


def test_no_rollout_in_the_loss_means_no_update(setup):
    dreamer, buf = setup
    d, stats = _update(dreamer, buf, np.ones(8), np.zeros(8, bool))
    assert stats == {"updates": 0} and d.abs().max() == 0


def test_the_entropy_term_raises_entropy_and_the_kl_term_pulls_back_to_the_reference(setup):
    dreamer, buf = setup
    model = dreamer.policy.model
    obs = {
        "image": buf["images"][0],
        "proprio": buf["proprio"][0],
        "instruction": [dreamer.instruction] * buf["images"].shape[1],
    }

    def entropy():
        with torch.no_grad():
            return float(dreamer.policy.logprob(obs, buf["tokens"][0], dreamer.cfg.temperature)[1].mean())

    zero, every = np.zeros(8), np.ones(8, bool)  # zero advantages: only the regularisers move the policy
    weights, opt_state = copy.deepcopy(model.state_dict()), copy.deepcopy(dreamer.opt.state_dict())
    h0 = entropy()
    d, stats = _update(dreamer, buf, zero, every, entropy_coef=1.0)
    assert "kl_ref" not in stats  # no reference policy, no KL to report
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(
            torch.nn.utils.parameters_to_vector(model.parameters()) + d, model.parameters()
        )
    assert entropy() > h0
    model.load_state_dict(weights)

    # KL: move the policy away from a frozen reference, then a KL-only update brings it closer
    dreamer.ref = copy.deepcopy(dreamer.policy).eval()
    try:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))

        def kl():
            with torch.no_grad():
                ref = torch.log_softmax(dreamer.ref.logits(obs), -1)
                cur = torch.log_softmax(dreamer.policy.logits(obs), -1)
                return float((cur.exp() * (cur - ref)).sum(-1).mean())

        k0 = kl()
        d, stats = _update(dreamer, buf, zero, every, kl_coef=1.0)
        assert stats["kl_ref"] > 0  # the drift from the reference is logged (metrics.jsonl kl_ref)
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(
                torch.nn.utils.parameters_to_vector(model.parameters()) + d, model.parameters()
            )
        assert kl() < k0
    finally:
        dreamer.ref = None
        model.load_state_dict(weights)
        dreamer.opt.load_state_dict(opt_state)
