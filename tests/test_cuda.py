"""The GPU path (skipped where PyTorch sees no CUDA device; run on a GPU machine with `pytest tests/test_cuda.py`).

Training steps of the world model, the policy and the judge run on the GPU in bf16 autocast; imagination on the
GPU draws the same noise as on the CPU (drawn on the CPU from each rollout's generator), so the same seeds give
the same rollout up to kernel rounding; the GRPO update runs on the GPU against CPU rollout buffers.
"""

import numpy as np
import pytest
import torch

from rawdream.config import build, load_preset
from rawdream.training import autocast, resolve_device, resolve_precision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


def _wm():
    from rawdream.world_model.model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    return WorldModel(build(WorldModelConfig, load_preset("pretrain_wm", "tiny")["model"])).eval()


def _policy():
    from rawdream.policy.tokenizer import ActionTokenizer
    from rawdream.policy.vla import PolicyConfig, VLAPolicy

    torch.manual_seed(0)
    cfg = build(PolicyConfig, load_preset("train_policy_base", "tiny")["policy"])
    text = {"open the drawer": np.random.default_rng(0).normal(size=384).tolist()}  # no MiniLM needed
    return VLAPolicy(
        cfg, ActionTokenizer([-1] * 4, [1] * 4), np.zeros(cfg.proprio_dim), np.ones(cfg.proprio_dim), text
    )


def test_device_and_precision_resolution():
    assert resolve_device("auto").type == "cuda" and resolve_precision("auto", "cuda") == "bf16"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_world_model_trains_and_imagines_on_the_gpu():
    wm = _wm()
    b, k = 4, wm.cfg.dynamics.context
    c, h = wm.cfg.autoencoder.latent_channels, wm.cfg.image_size // wm.cfg.autoencoder.factor
    g = torch.Generator().manual_seed(0)
    batch = {
        "ctx": torch.randn(b, k, c, h, h, generator=g),
        "anchor": torch.randn(b, c, h, h, generator=g),
        "target": torch.randn(b, c, h, h, generator=g),
        "actions": torch.randn(b, wm.cfg.dynamics.chunk, wm.cfg.dynamics.action_dim, generator=g),
        "proprio": torch.randn(b, wm.cfg.dynamics.proprio_dim, generator=g),
        "proprio_next": torch.randn(b, wm.cfg.dynamics.proprio_dim, generator=g),
    }
    gpu = _wm().to(CUDA).train()
    with autocast("auto", CUDA):
        loss, _ = gpu.training_loss(
            {k_: v.to(CUDA) for k_, v in batch.items()}, torch.Generator().manual_seed(1)
        )
    loss.backward()
    assert torch.isfinite(loss) and all(
        p.grad is not None for p in gpu.dynamics.parameters() if p.requires_grad
    )

    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8))
    prop = torch.zeros(2, wm.cfg.dynamics.proprio_dim)
    acts = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (2, 3, 8, 4)).astype(np.float32))
    cpu_out = wm.rollout(frames, prop, acts, seeds=[3, 4])["frames"]
    gpu_out = _wm().to(CUDA).eval().rollout(frames, prop, acts, seeds=[3, 4])["frames"]
    assert gpu_out.device.type == "cpu" and gpu_out.shape == cpu_out.shape
    diff = (gpu_out.float() - cpu_out.float()).abs().mean().item()
    assert diff < 2.0, f"the same seeds drew other rollouts on the GPU (mean |diff| {diff:.2f} levels)"


def test_policy_samples_on_the_gpu_like_on_the_cpu():
    cpu, gpu = _policy().eval(), _policy().to(CUDA).eval()
    obs = {
        "image": np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8),
        "proprio": np.zeros((3, cpu.cfg.proprio_dim), np.float32),
        "instruction": ["open the drawer"] * 3,
    }
    _, tok, lp = gpu.sample(obs, 1.0, [torch.Generator().manual_seed(i) for i in range(3)])
    assert tok.device.type == "cpu" and lp.device.type == "cpu"
    lp_cpu, _ = cpu.logprob(obs, tok)
    assert torch.allclose(lp, lp_cpu, atol=1e-3)


def test_grpo_update_runs_on_the_gpu():
    from rawdream.rl.dream import DreamConfig, Dreamer

    policy = _policy().to(CUDA)
    d = Dreamer.__new__(Dreamer)  # the update alone: no simulator, world model or judge needed
    d.cfg, d.policy, d.instruction, d.ref = (
        DreamConfig(epochs=1, minibatch=8),
        policy,
        "open the drawer",
        None,
    )
    d.opt = torch.optim.AdamW(policy.model.parameters(), lr=1e-3)
    h, n = 2, 4
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 255, (h * n, 64, 64, 3), dtype=np.uint8)}
    obs["proprio"] = np.zeros((h * n, policy.cfg.proprio_dim), np.float32)
    obs["instruction"] = ["open the drawer"] * (h * n)
    _, tokens, logp = policy.sample(obs, 1.0, torch.Generator().manual_seed(0))
    buf = {
        "images": obs["image"].reshape(h, n, 64, 64, 3),
        "proprio": obs["proprio"].reshape(h, n, -1),
        "tokens": tokens.view(h, n, *tokens.shape[1:]),
        "logp": logp.view(h, n, *logp.shape[1:]),
        "alive": np.ones((h, n), bool),
    }
    before = [p.detach().clone() for p in policy.model.parameters()]
    stats = d.update(buf, torch.tensor([1.0, -1.0, 0.5, -0.5]), torch.ones(n, dtype=torch.bool))
    assert stats["updates"] == 1 and np.isfinite(stats["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.model.parameters()))


def test_judge_net_trains_on_the_gpu():
    from rawdream.reward.generalist import GeneralistConfig, JudgeNet

    net = JudgeNet(build(GeneralistConfig, load_preset("train_judge", "tiny")["model"])).to(CUDA)
    f = net.cfg.frames.middle + 2
    frames = torch.randint(0, 255, (2, f, 64, 64, 3), dtype=torch.uint8, device=CUDA)
    with autocast("auto", CUDA):
        logits = net(frames, torch.randn(2, 2 * 384, device=CUDA))
    torch.nn.functional.binary_cross_entropy_with_logits(
        logits.float(), torch.ones(2, device=CUDA)
    ).backward()
    assert logits.shape == (2,)
