"""World model: training signal, sampling contract (shapes, seeds, causality, anchor schedule), ImaginedEnv,
the target-task guard, and exact resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from rawdream.cli import main
from rawdream.config import build, load_preset
from rawdream.splits import TargetTaskLeakError
from rawdream.world_model.imagined_env import ImaginedEnv
from rawdream.world_model.model import SamplerConfig, WorldModel, WorldModelConfig
from rawdream.world_model.train import load_world_model

TINY = load_preset("pretrain_wm", "tiny")["model"]


def _tiny_model(arch="unet", prediction="x") -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(
        build(
            WorldModelConfig,
            {**TINY, "dynamics": {**TINY["dynamics"], "arch": arch}, "flow": {"prediction": prediction}},
        )
    )


def _batch(model, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.cfg.autoencoder.latent_channels
    s = model.latent_size
    return {
        "ctx": torch.randn(b, 2, c, s, s, generator=g),
        "anchor": torch.randn(b, c, s, s, generator=g),
        "target": torch.randn(b, c, s, s, generator=g),
        "actions": torch.randn(b, 8, 4, generator=g),
        "proprio": torch.randn(b, 4, generator=g),
        "proprio_next": torch.randn(b, 4, generator=g),
    }


@pytest.mark.parametrize(("arch", "prediction"), [("unet", "x"), ("unet", "v"), ("dit", "x"), ("wan", "x")])
def test_loss_falls_when_fitting_a_batch(arch, prediction):
    if arch == "wan":
        pytest.importorskip("diffusers")
    model = _tiny_model(arch, prediction)
    opt = torch.optim.Adam(model.dynamics.parameters(), lr=3e-3)
    batch = _batch(model)
    losses = []
    for step in range(60):
        loss, _ = model.training_loss(batch, torch.Generator().manual_seed(step % 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses[::10]


@pytest.fixture(scope="module")
def trained():
    """A tiny world model after a few steps, with non-zero outputs (so noise matters)."""
    model = _tiny_model()
    opt = torch.optim.Adam(model.dynamics.parameters(), lr=3e-3)
    batch = _batch(model)
    for step in range(20):
        loss, _ = model.training_loss(batch, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _inputs(b=3, h=4, seed=0):
    rng = np.random.default_rng(seed)
    frames = torch.from_numpy(rng.integers(0, 255, (b, 64, 64, 3), dtype=np.uint8))
    return (
        frames,
        torch.from_numpy(rng.normal(size=(b, 4)).astype(np.float32)),
        torch.from_numpy(rng.uniform(-1, 1, (b, h, 8, 4)).astype(np.float32)),
    )


def test_rollout_shapes_dtypes_and_seeds(trained):
    frames, proprio, actions = _inputs()
    a = trained.rollout(frames, proprio, actions, seeds=[1, 2, 3])
    assert a["frames"].shape == (3, 5, 64, 64, 3) and a["frames"].dtype == torch.uint8
    assert a["proprio"].shape == (3, 5, 4)
    b = trained.rollout(frames, proprio, actions, seeds=[1, 2, 3])
    torch.testing.assert_close(a["latents"], b["latents"], rtol=0, atol=0)  # same seed: same video
    c = trained.rollout(frames, proprio, actions, seeds=[7, 8, 9])
    assert (a["latents"][:, 1:] - c["latents"][:, 1:]).abs().mean() > 1e-3  # another seed: another draw
    # a rollout does not depend on its batch neighbours
    d = trained.rollout(frames[1:2], proprio[1:2], actions[1:2], seeds=[2])
    torch.testing.assert_close(d["latents"][0], a["latents"][1], rtol=1e-5, atol=1e-5)


def test_causality_later_action_does_not_change_earlier_frames(trained):
    frames, proprio, actions = _inputs(b=2, h=5)
    changed = actions.clone()
    changed[:, 3] = -changed[:, 3]
    a = trained.rollout(frames, proprio, actions, seeds=[0, 1])
    b = trained.rollout(frames, proprio, changed, seeds=[0, 1])
    torch.testing.assert_close(a["latents"][:, :4], b["latents"][:, :4], rtol=0, atol=0)
    assert (a["latents"][:, 4] - b["latents"][:, 4]).abs().max() > 0


def test_anchor_and_context_noise_schedule():
    sc = SamplerConfig()
    assert [round(sc.anchor_level(s) * 1000) for s in (1, 2, 3, 4, 5, 13, 33, 34, 100)] == [
        0,
        0,
        0,
        10,
        20,
        100,
        300,
        300,
        300,
    ]
    assert sc.ctx_level() == 0.05
    off = SamplerConfig(anchor_noise=False, context_noise=False)
    assert off.anchor_level(50) == 0.0 and off.ctx_level() == 0.0


def test_imagined_env_speaks_the_real_env_contract(trained, drawer_env):
    real_obs, _ = drawer_env.reset(0)
    env = ImaginedEnv(trained, horizon=2)
    obs, info = env.reset(
        real_obs["image"][None], real_obs["proprio"][None], [real_obs["instruction"]], seeds=[5]
    )
    assert info["seeds"] == [5]
    np.testing.assert_array_equal(obs["image"][0], real_obs["image"])
    for key in ("image", "proprio"):
        assert obs[key][0].shape == real_obs[key].shape and obs[key].dtype == real_obs[key].dtype
    assert obs["instruction"] == [real_obs["instruction"]]
    _, _, _, trunc, _ = env.step(np.zeros((1, 8, 4), np.float32))
    obs, _, _, trunc, _ = env.step(np.zeros((1, 8, 4), np.float32))
    assert trunc.all() and env.video().shape == (1, 3, 64, 64, 3) and env.actions().shape == (1, 2, 8, 4)
    from rawdream.rl.imagination import reimagine

    again = reimagine(trained, env.video()[:, 0], real_obs["proprio"][None], env.actions(), noise_seeds=[5])
    # DNV's redraw with the first draw's seed, same actions: the same video (up to one intensity level: conv kernels round differently
    # for different batch sizes)
    assert np.abs(again.astype(int) - env.video()).max() <= 1
    with pytest.raises(ValueError, match="expected \\(1, 8, 4\\)"):
        env.reset(real_obs["image"][None], real_obs["proprio"][None], ["x"], [0])
        env.step(np.zeros((1, 8, 3)))
    with pytest.raises(RuntimeError, match="horizon"):
        env.step(np.zeros((1, 8, 4)))
        env.step(np.zeros((1, 8, 4)))
        env.step(np.zeros((1, 8, 4)))


@pytest.fixture(scope="module")
def target_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "demos"
    assert main(["collect", "demos", "--task", "drawer-open", "--out", str(out), "--preset", "tiny"]) == 0
    return out


def test_pretrain_wm_end_to_end_and_target_guard(play_data, target_data, tmp_path):
    out = tmp_path / "wm"
    assert main(["pretrain-wm", "--data", str(play_data), "--out", str(out), "--preset", "tiny"]) == 0
    wm = load_world_model(out)
    assert wm.info["variant"] == "zero-shot" and wm.info["manifest"]["tasks"] == ["drawer-close", "reach"]
    assert (out / "metrics.jsonl").exists() and list((out / "samples").glob("*.mp4"))
    with pytest.raises(TargetTaskLeakError, match="drawer-open"):
        from rawdream.config import resolve
        from rawdream.world_model.train import PretrainWMConfig, pretrain_wm

        pretrain_wm(
            resolve(PretrainWMConfig, "pretrain_wm", "tiny"), target_data, tmp_path / "bad", progress=False
        )
    assert (
        main(
            [
                "pretrain-wm",
                "--data",
                str(target_data),
                "--out",
                str(tmp_path / "co"),
                "--preset",
                "tiny",
                "--variant",
                "co-train",
            ]
        )
        == 0
    )
    co = load_world_model(tmp_path / "co")
    assert co.info["variant"] == "co-train" and co.info["target_tasks_in_data"] == ["drawer-open"]


def test_workspace_play_trains_a_world_model_and_says_so(tmp_path):
    """Play in a target's scene (task-free, labels withheld) is allowed for the world model, recorded as the
    workspace protocol, and counted in the object-motion measure; its success labels never reach the dataset."""
    from rawdream.data.collect import object_motion
    from rawdream.data.lerobot import LeRobotDataset

    data = tmp_path / "play"
    args = ["collect", "play", "--out", str(data), "--preset", "tiny", "--tasks=reach,drawer-open"]
    assert main([*args, "--episodes_per_task=3"]) == 0
    ds = LeRobotDataset(data)
    assert ds.manifest["play_scenes"] == "workspace" and ds.manifest["task_free_scenes"] == ["drawer-open"]
    eps = ds.episodes
    target = [i for i, t in enumerate(eps["rawdream/env_task"]) if t == "drawer-open"]
    assert all(not eps["rawdream/labelled"][i] and not eps["rawdream/success"][i] for i in target)
    assert all(eps["rawdream/behaviour"][i] in ("random", "poke", "interact") for i in target)
    lo, hi = ds.episode_bounds(target[0])
    assert not ds.column("next.success")[lo:hi].any() and not ds.column("next.reward")[lo:hi].any()
    motion = object_motion(ds)
    assert set(motion) == {"reach", "drawer-open"} and all(
        0 <= v <= 1 for m in motion.values() for v in m.values()
    )
    out = tmp_path / "wm"
    assert (
        main(["pretrain-wm", "--data", str(data), "--out", str(out), "--preset", "tiny", "--dyn_steps=2"])
        == 0
    )
    info = load_world_model(out).info
    assert info["play_protocol"] == {"scenes": "workspace", "task_free_target_scenes": ["drawer-open"]}
    assert info["target_tasks_in_data"] == []


def _losses(path):
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("stage") == "dyn" and "dyn/loss" in rec:
            out[rec["step"]] = rec["dyn/loss"]
    return out


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_next_losses(play_data, tmp_path):
    base = [
        sys.executable,
        "-m",
        "rawdream.cli",
        "pretrain-wm",
        "--data",
        str(play_data),
        "--preset",
        "tiny",
        "--dyn_steps=200",
        "--ckpt_every=20",
        "--log_every=1",
        "--sample_every=0",
        "--threads=1",
    ]
    ref = subprocess.run([*base, "--out", str(tmp_path / "ref")], capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*base, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    meta = out / "ckpt" / "dyn.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if meta.exists() and 40 <= json.loads(meta.read_text())["step"] < 180:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed_from = json.loads(meta.read_text())["step"]
    res = subprocess.run([*base, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = _losses(tmp_path / "ref" / "metrics.jsonl"), _losses(out / "metrics.jsonl")
    nxt = [s for s in sorted(a) if s > resumed_from][:20]
    assert nxt and [b[s] for s in nxt] == [a[s] for s in nxt]


def test_id_ft_fine_tunes_the_pretrained_model_on_target_data_only_when_named(tiny_wm, tmp_path):
    from safetensors.torch import load_file

    data = tmp_path / "target"
    args = ["collect", "labeled", "--out", str(data), "--preset", "tiny", "--tasks=drawer-open"]
    assert main([*args, "--episodes_per_task=2"]) == 0
    ft = ["pretrain-wm", "--data", str(data), "--init", str(tiny_wm), "--preset", "tiny"]
    # target-task data in a world model is refused unless the variant that uses it is named
    assert main([*ft, "--out", str(tmp_path / "refused")]) != 0
    # the flow's training settings the command changes apply to the fine-tune; the model's shape stays the init's
    shape = "--model.dynamics.channels=[8,8,8]"
    changed = [shape, "--model.flow.train_proprio_noise=0.3"]
    assert main([*ft, "--variant", "id-ft", "--out", str(tmp_path / "idft"), *changed]) == 0
    info = json.loads((tmp_path / "idft" / "world_model.json").read_text())
    assert info["variant"] == "id-ft" and info["init"] == str(tiny_wm.resolve())
    assert info["config"]["flow"]["train_proprio_noise"] == 0.3
    from rawdream.eval.judge_accuracy import world_model_provenance

    # tables of fidelity against budget count the init's dynamics steps too
    prov = world_model_provenance(load_world_model(tmp_path / "idft"), tmp_path / "idft")
    own = info["final_metrics"]["steps"]
    assert (
        prov["dynamics_steps"]
        == own + json.loads((tiny_wm / "world_model.json").read_text())["final_metrics"]["steps"]
    )
    assert prov["fine_tuned_from"] == str(tiny_wm.resolve())
    assert (
        info["config"]["dynamics"]
        == json.loads((tiny_wm / "world_model.json").read_text())["config"]["dynamics"]
    )
    assert "drawer-open" in info["target_tasks_in_data"]
    before = load_file(str(tiny_wm / "world_model.safetensors"))
    after = load_file(str(tmp_path / "idft" / "world_model.safetensors"))
    # the autoencoder and the latent statistics are kept (the dynamics' latent space must not move) ...
    for k in before:
        if k.startswith("ae.") or k in ("latent_mean", "latent_std", "delta_std"):
            assert torch.equal(before[k], after[k]), k
    # ... and the dynamics trained on
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("dynamics."))


def test_decoder_fine_tune_keeps_the_latent_space_and_weighs_the_foreground(play_data, tiny_wm, tmp_path):
    """--decoder_steps with --init trains the decoder alone (with --ae_foreground_weight: errors on pixels off the
    empty workspace weigh more): the encoder, the latent statistics and the dynamics stay the init's. Without
    --init it is refused; the weights are 1 on the background and 1 + w where a frame leaves it."""
    from safetensors.torch import load_file

    from rawdream.world_model.train import foreground_weights

    out = tmp_path / "dec"
    args = ["pretrain-wm", "--data", str(play_data), "--preset", "tiny", "--dyn_steps=0", "--decoder_steps=6"]
    assert main([*args, "--init", str(tiny_wm), "--ae_foreground_weight=10", "--out", str(out)]) == 0
    before = load_file(str(tiny_wm / "world_model.safetensors"))
    after = load_file(str(out / "world_model.safetensors"))
    for k in before:
        if k.startswith(("ae.encoder.", "dynamics.")) or k in ("latent_mean", "latent_std", "delta_std"):
            assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("ae.decoder."))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("decoder_ae/loss" in r for r in rows)
    assert json.loads((out / "autoencoder.json").read_text())["decoder_steps"] == 6
    assert main([*args, "--out", str(tmp_path / "refused")]) != 0  # a new autoencoder trains whole
    # a foreground weight with --init but no decoder steps would train nothing: refused, not ignored
    keep = [
        "pretrain-wm",
        "--data",
        str(play_data),
        "--preset",
        "tiny",
        "--dyn_steps=0",
        "--init",
        str(tiny_wm),
    ]
    assert main([*keep, "--ae_foreground_weight=10", "--out", str(tmp_path / "ignored")]) != 0

    background = torch.full((2, 2, 3), 100.0)
    batch = torch.full((1, 2, 2, 3), 100, dtype=torch.uint8)
    batch[0, 0, 1, 2] = 200  # one pixel off the background in one channel
    w = foreground_weights(batch, background, weight=10.0, threshold=40.0)
    assert w.shape == (1, 1, 2, 2) and w[0, 0, 0, 1] == 11.0 and w.sum() == 14.0


def test_replay_fidelity_scores_the_object_region_against_copy_first_frame():
    """A perfect replay scores SSIM 1 everywhere; copy-the-first-frame loses where the object moved; the object
    region counts only rollouts whose object moved; a full mask gives the whole-frame SSIM, an empty one NaN."""
    from rawdream.eval.wm_fidelity import replay_fidelity
    from rawdream.world_model.model import ssim

    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (3, 4, 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((3, 4, 16, 16), bool)
    masks[:, :, 4:10, 4:10] = True
    position = np.zeros((3, 4, 3), np.float32)
    position[0, 2:, 0] = 0.1  # only rollout 0's object moves, from step 2 on
    rep = replay_fidelity(real, real.copy(), masks, position, moved_threshold=0.02)
    assert rep["object_moved_episodes"] == [0, 1, 1]
    assert np.isnan(rep["object_ssim"][0]) and rep["object_ssim"][1] == pytest.approx(1.0)
    assert rep["object_ssim_copy"][1] < 0.5 and all(v == pytest.approx(1.0) for v in rep["ssim"])
    a, b = torch.from_numpy(real[:, 1]), torch.from_numpy(real[:, 2])
    full = torch.ones(3, 16, 16, dtype=torch.bool)
    assert torch.allclose(ssim(a, b, full), ssim(a, b), atol=1e-5)
    assert torch.isnan(ssim(a, b, torch.zeros_like(full))).all()


def test_wan_backbone_trains_imagines_and_loads_public_weights(play_data, tmp_path):
    """--model.dynamics.arch=wan: diffusers' Wan transformer behind the same denoiser calls - trained by
    pretrain-wm (preset wan-tiny), imagined through after loading, its actions reaching the frames through the
    AdaLN; and a directory of Wan weights (here a tiny random one, saved the way the public ones are) loads into it
    with the patch embedding and output projection fitted to rawdream's latent channels."""
    pytest.importorskip("diffusers")
    from diffusers import WanTransformer3DModel

    from rawdream.world_model.dynamics import DynamicsConfig, build_denoiser
    from rawdream.world_model.wan import WanDenoiser

    out = tmp_path / "wm"
    assert main(["pretrain-wm", "--data", str(play_data), "--out", str(out), "--preset", "wan-tiny"]) == 0
    wm = load_world_model(out)
    assert isinstance(wm.dynamics, WanDenoiser)
    assert wm.dynamics.to_temb.weight.abs().sum() > 0  # trained away from its zero start
    frames, proprio, actions = _inputs(b=2, h=2)
    a = wm.rollout(frames, proprio, actions, seeds=[0, 1])
    assert a["frames"].shape == (2, 3, 64, 64, 3)
    b = wm.rollout(frames, proprio, -actions, seeds=[0, 1])
    assert (a["latents"][:, 1:] - b["latents"][:, 1:]).abs().max() > 0  # the actions reach the prediction

    public = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=16,
        out_channels=16,
        text_dim=24,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
    )
    public.save_pretrained(tmp_path / "Wan-tiny" / "transformer")
    cfg = DynamicsConfig(arch="wan", pretrained=str(tmp_path / "Wan-tiny"), cond_dim=32)
    den = build_denoiser(cfg, 4, 16)  # rawdream's 4 latent channels, Wan's VAE has 16
    torch.testing.assert_close(den.wan.blocks[0].ffn.net[2].weight, public.blocks[0].ffn.net[2].weight)
    assert den.wan.patch_embedding.in_channels == 4 and den.wan.proj_out.out_features == 4 * 2 * 2
    ctx, anchor = torch.randn(2, 2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    cache = den.encode_context(
        ctx, anchor, torch.randn(2, 8, 4), torch.randn(2, 4), torch.rand(2), torch.rand(2)
    )
    assert den.denoise(torch.randn(2, 4, 16, 16), torch.rand(2), cache).shape == (2, 4, 16, 16)
    with pytest.raises(FileNotFoundError, match="holds no Wan transformer"):
        build_denoiser(DynamicsConfig(arch="wan", pretrained=str(tmp_path)), 4, 16)


def test_proprio_input_noise_makes_the_hand_head_read_the_frames():
    """With exact proprioception as input the head can integrate onto it and ignore the frames, so a rollout's own
    error feeds back; trained with noised inputs it places the hand from the context frames and corrects a wrong
    input. Here the true hand is a function of the last context frame, and the head is fed a wrong one."""

    def train(noise: float) -> float:
        model = _tiny_model()
        model.cfg.flow.train_proprio_noise = noise
        batch = _batch(model, b=32)
        hand = batch["ctx"][:, -1, :4].mean(dim=(2, 3)) * 4  # where the frame says the hand is (unit scale)
        batch["proprio"], batch["proprio_next"] = hand, hand.clone()
        opt = torch.optim.Adam(model.dynamics.parameters(), lr=3e-3)
        for step in range(150):
            loss, _ = model.training_loss(batch, torch.Generator().manual_seed(step))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            wrong = hand + 1.0  # an input one standard deviation off, as a drifted rollout feeds it
            cache = model.dynamics.encode_context(
                batch["ctx"], batch["anchor"], batch["actions"], wrong, torch.zeros(32), torch.zeros(32)
            )
            return float((wrong + cache["proprio_delta"] - hand).abs().mean())

    exact, noised = train(0.0), train(1.5)
    assert noised < 0.5 * exact, (noised, exact)


def test_training_on_its_own_rollouts_replaces_the_context_by_imagination(play_data, tiny_wm, tmp_path):
    """rollout_steps: a row's context frames and hand become the model's own imagination of the chunks before it,
    started from the real observation ``steps`` chunks back; rows too close to their episode's start stay
    teacher-forced; the target stays the real frame. End to end, pretrain-wm trains with it."""
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.world_model.data import build_transitions, make_batch
    from rawdream.world_model.train import own_context, previous_transition

    model = load_world_model(tiny_wm)
    tr = build_transitions(LeRobotDataset(play_data), 8, model.cfg.dynamics.context)
    prev = previous_transition(tr)
    has = prev >= 0
    assert has.any() and not has.all()  # every episode starts without one
    assert (tr.target[prev[has]] == tr.ctx[has, -1]).all() and (tr.step[prev[has]] == tr.step[has] - 1).all()
    assert (tr.step[~has] == 1).all()

    c, s = model.cfg.autoencoder.latent_channels, model.latent_size
    latents = torch.randn(int(tr.target.max()) + 1, c, s, s, generator=torch.Generator().manual_seed(0))
    idx = np.arange(len(tr))
    batch = make_batch(tr, latents, idx, model)
    own = {k: v.clone() for k, v in batch.items()}
    own_context(model, tr, latents, prev, idx, own, 1, 1.0, torch.Generator().manual_seed(0))
    changed = (own["ctx"] != batch["ctx"]).flatten(1).any(1).numpy()
    assert (changed == has).all()
    assert torch.equal(own["target"], batch["target"]) and torch.equal(
        own["proprio"][~has], batch["proprio"][~has]
    )
    # a row's new last context frame is one imagined step from the previous transition's real context
    i = int(np.nonzero(has)[0][0])
    j = int(prev[i])
    p_batch = make_batch(tr, latents, np.array([j]), model)
    assert torch.equal(own["ctx"][i, :-1], p_batch["ctx"][0, 1:])  # the context slides by one chunk

    out = tmp_path / "wm"
    args = [
        "pretrain-wm",
        "--data",
        str(play_data),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--rollout_steps=2",
    ]
    assert main(args) == 0
    assert load_world_model(out).info["final_metrics"]["steps"] == 20


def test_the_object_head_reads_where_the_objects_are_and_its_prediction_reaches_the_frame():
    """The object head must place objects from *where* things are in the context frames (a pooled mean would
    lose it): here the chunk-end objects are the top-left quarter of the last context latent. With
    object_target the denoiser is conditioned on them, so a different object position draws a different frame."""
    torch.manual_seed(0)
    cfg = {
        **TINY,
        "dynamics": {**TINY["dynamics"], "object_head": True, "object_target": True, "object_dim": 6},
    }
    model = WorldModel(build(WorldModelConfig, cfg))
    assert model.has_objects and model.object_mean.shape == (6,)

    def batch(seed):
        b = _batch(model, b=64, seed=seed)
        q = b["ctx"][:, -1, :, :4, :4].mean(dim=(2, 3)) * 4  # (B, C): the top-left quarter
        b["objects_next"] = torch.cat([q[:, :3], -q[:, :3]], dim=1)
        return b

    test = batch(-1)
    opt = torch.optim.Adam(model.dynamics.parameters(), lr=3e-3)
    for step in range(200):
        loss, metrics = model.training_loss(batch(step), torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert "dyn/objects" in metrics
    with torch.no_grad():
        args = (
            test["ctx"],
            test["anchor"],
            test["actions"],
            test["proprio"],
            torch.zeros(64),
            torch.zeros(64),
        )
        cache = model.dynamics.encode_context(*args)
        err = float(((cache["objects"] - test["objects_next"]) ** 2).mean())
        assert err < 0.5 * float(test["objects_next"].var()), err  # held-out rows: it reads, not memorises
        z, tau = torch.randn_like(test["target"]), torch.full((64,), 0.5)
        given = model.dynamics.encode_context(*args, objects_next=test["objects_next"])
        moved = model.dynamics.encode_context(*args, objects_next=test["objects_next"] + 1.0)
        d = (model.dynamics.denoise(z, tau, given) - model.dynamics.denoise(z, tau, moved)).abs().mean()
        assert d > 1e-3, float(d)


def test_an_object_head_fine_tunes_onto_a_world_model_without_one(play_data, tiny_wm, tmp_path, capsys):
    """pretrain-wm --init adds an object head (privileged simulator state at training time only) to a trained
    model and leaves everything else as it was; imagination then reports where the head puts the objects. The
    model without a head still loads as before, and a head is never dropped silently."""
    from safetensors.torch import load_file

    out = tmp_path / "objects"
    args = ["pretrain-wm", "--data", str(play_data), "--init", str(tiny_wm), "--preset", "tiny"]
    head = ["--model.dynamics.object_head=true", "--model.dynamics.object_target=true"]
    assert main([*args, "--out", str(out), *head]) == 0
    model = load_world_model(out)
    assert model.has_objects and model.cfg.dynamics.object_dim == 6  # two objects' xyz in Meta-World
    # statistics measured on the play data (Meta-World's first object, state[4:7], where the chunks end)
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.world_model.data import build_transitions
    from rawdream.world_model.train import PretrainWMConfig, _split_episodes

    ds = LeRobotDataset(play_data)
    state = ds.column("observation.environment_state")
    tr = build_transitions(ds, 8, 2, np.concatenate([state[:, 4:7], state[:, 11:14]], axis=1))
    frac = load_preset("pretrain_wm", "tiny").get("val_fraction", PretrainWMConfig.val_fraction)
    train_eps, _ = _split_episodes(ds.num_episodes, frac, 0)  # the statistics come from the training episodes
    expected = tr.objects_next[np.isin(tr.episode, train_eps), :3].mean(0)
    np.testing.assert_allclose(model.object_mean[:3].numpy(), expected, rtol=1e-4, atol=1e-5)
    assert not torch.equal(model.object_std, torch.ones(6))
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("dyn/objects" in row for row in logged)
    before = load_file(str(tiny_wm / "world_model.safetensors"))
    after = load_file(str(out / "world_model.safetensors"))
    assert set(after) - set(before) and all("object" in k for k in set(after) - set(before))
    for k in before:
        if k.startswith("ae.") or k in ("latent_mean", "latent_std", "delta_std", "proprio_mean"):
            assert torch.equal(before[k], after[k]), k
    frames = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    imagined = model.rollout(frames, torch.zeros(2, 4), torch.zeros(2, 3, 8, 4), seeds=[0, 1])
    assert imagined["objects"].shape == (2, 3, 6) and torch.isfinite(imagined["objects"]).all()
    # eval-wm --policy reads the head against the simulator: where the object really went, per rollout outcome
    from rawdream.eval.imagination_transfer import _format_objects, object_tracking, replay

    pos = np.zeros((4, 4, 3), np.float32)
    pos[:2, 1:, 1] = np.array([0.05, 0.1, 0.15])  # the two successes pull the object 15 cm along y
    real = {"video": np.zeros((4, 4, 64, 64, 3), np.uint8), "proprio": np.zeros((4, 4, 4), np.float32)}
    real |= {"actions": np.zeros((4, 3, 8, 4), np.float32), "object_position": pos}
    track = object_tracking(model, real | {"success": np.array([True, True, False, False])}, [0, 1, 2, 3])
    assert track["axis"] == 1 and len(track["error"]) == 3
    assert track["real_displacement"] == {"success": pytest.approx(0.15), "failure": 0.0}
    assert "on successes real 15.0" in _format_objects(track)
    # the replay eval-wm imagines anyway hands its objects over: the same numbers without a second imagination
    *_, head = replay(model, real, [0, 1, 2, 3], objects=True)
    again = object_tracking(
        model, real | {"success": np.array([True, True, False, False])}, [0, 1, 2, 3], head
    )
    assert again == track
    assert "objects" not in load_world_model(tiny_wm).rollout(
        frames, torch.zeros(2, 4), torch.zeros(2, 1, 8, 4), [0, 1]
    )
    # fine-tuning a model with a head without asking for it would drop the head: refused, with the fix
    assert main([*args[:3], "--init", str(out), "--preset", "tiny", "--out", str(tmp_path / "x")]) != 0
    assert (
        "has an object head; fine-tune it with --model.dynamics.object_head=true" in capsys.readouterr().err
    )


def test_pretrain_wm_trains_on_several_datasets_as_one_and_guards_each(
    play_data, labeled_data, target_data, tmp_path
):
    """Play plus policy rollouts on pretraining tasks (``--data A,B``): one model, transitions of both with frame
    and episode indices that point into the concatenated frames; a target-task dataset among them is refused."""
    from rawdream.data.cache import frame_cache
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.world_model.data import build_transitions, concat_transitions

    a, b = LeRobotDataset(play_data), LeRobotDataset(labeled_data)
    ta, tb = build_transitions(a), build_transitions(b)
    tr = concat_transitions([ta, tb], [a.num_frames, b.num_frames], [a.num_episodes, b.num_episodes])
    assert len(tr) == len(ta) + len(tb)
    frames = np.concatenate([frame_cache(a), frame_cache(b)])
    k = len(ta)  # the first transition of the second dataset reads its own frames, episode and actions
    assert np.array_equal(frames[tr.target[k]], frame_cache(b)[tb.target[0]])
    assert np.array_equal(frames[tr.ctx[k]], frame_cache(b)[tb.ctx[0]])
    assert tr.episode[k] == a.num_episodes + tb.episode[0] and np.array_equal(tr.actions[k], tb.actions[0])
    out = tmp_path / "wm"
    args = ["pretrain-wm", "--data", f"{play_data},{labeled_data}", "--out", str(out), "--preset", "tiny"]
    assert main(args) == 0
    info = load_world_model(out).info
    assert (
        info["dataset"] == f"{play_data.resolve()},{labeled_data.resolve()}" and len(info["manifests"]) == 2
    )
    assert set(info["manifest"]["tasks"]) == {"drawer-close", "reach"} and info["target_tasks_in_data"] == []
    bad = ["pretrain-wm", "--data", f"{play_data},{target_data}", "--out", str(tmp_path / "bad")]
    assert main([*bad, "--preset", "tiny"]) == 2
    assert not (tmp_path / "bad" / "world_model.json").exists()


def test_the_object_region_weight_makes_the_model_draw_a_small_object():
    """A puck covers ~3 of 4,096 pixels: the frame loss, even motion-weighted, lets a model leave it out. Here each
    sample's "object" is one latent cell, marked in the context at a random place and changed in the target; with
    --model.flow.object_region_weight the loss weighs the cells where the recorded position projects, and after the
    same steps the model's error there falls well below the unweighted model's, with the rest of the frame as good.
    The weight map itself: 1 at the object's cell, a Gaussian around it, 0 without objects."""
    from rawdream.world_model.model import _noise, object_region

    px = torch.tensor([[[10.0, 30.0], [float("nan")] * 2], [[float("nan")] * 2] * 2])  # (2 samples, 2 slots)
    region = object_region(px, 64, (16, 16), 1.0)
    assert region.shape == (2, 1, 16, 16) and region[1].abs().sum() == 0
    assert region[0, 0, 7, 2] == 1.0 and region[0, 0, 7, 3] == pytest.approx(np.exp(-0.5))  # px 10 -> cell 2

    b, steps = 32, 40
    batch = _batch(_tiny_model(), b=b)
    g = torch.Generator().manual_seed(1)
    cells = torch.randint(16, (b, 2), generator=g)
    rows = torch.arange(b)
    # the rest of the frame changes in ways the inputs do not tell (the arm's motion, as far as the object's loss
    # is concerned): its error dominates the unweighted loss's gradient
    batch["target"] = batch["ctx"][:, -1] + 0.5 * torch.randn(batch["target"].shape, generator=g)
    batch["ctx"][rows, -1, 0, cells[:, 1], cells[:, 0]] = 3.0  # the object, visible in the context
    batch["target"][rows, 0, cells[:, 1], cells[:, 0]] = 3.0
    batch["target"][rows, 1, cells[:, 1], cells[:, 0]] = (
        batch["ctx"][rows, -1, 1, cells[:, 1], cells[:, 0]] + 2
    )
    batch["object_px"] = (cells.float() + 0.5)[:, None] * 4  # its cell's centre in px of the 64 x 64 frame

    def error(weight: float) -> tuple[float, float]:
        model = _tiny_model()
        model.cfg.flow.object_region_weight = weight
        opt = torch.optim.Adam(model.dynamics.parameters(), lr=3e-3)
        for step in range(steps):
            loss, _ = model.training_loss(batch, torch.Generator().manual_seed(step))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with (
            torch.no_grad()
        ):  # the x-prediction's error half-way through the flow, at the object and elsewhere
            zeros = torch.zeros(b)
            cache = model.dynamics.encode_context(
                batch["ctx"], batch["anchor"], batch["actions"], batch["proprio"], zeros, zeros
            )
            x0 = batch["target"] - batch["ctx"][:, -1]
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
            tau = torch.full((b,), 0.5)
            err = ((model.dynamics.denoise(_noise(x0, eps, 0.5), tau, cache) - x0) ** 2)[:, :2].mean(1)
            at = torch.zeros_like(err, dtype=torch.bool)
            at[rows, cells[:, 1], cells[:, 0]] = True
            return float(err[at].mean()), float(err[~at].mean())

    (plain_obj, plain_rest), (weighted_obj, weighted_rest) = error(0.0), error(20.0)
    assert weighted_obj < 0.3 * plain_obj, (weighted_obj, plain_obj)  # measured 0.05 vs 0.57
    assert weighted_rest < 1.5 * plain_rest, (weighted_rest, plain_rest)  # 0.17 vs 0.15


def test_pretrain_wm_weighs_the_object_region_from_the_recorded_camera(
    play_data, tiny_wm, tmp_path, monkeypatch
):
    """End to end: a fine-tune with --model.flow.object_region_weight hands every training batch the objects'
    places (the play data's recorded xyz through its recorded camera, in the frame for the object every tiny task
    has) and keeps the weight in the model's config; a fine-tune of that model without the flag trains without it
    (the weight is the command's, not the init's)."""
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.data.objects import object_positions, pixel_projector

    seen = []
    real_loss = WorldModel.training_loss

    def spy(self, batch, gen):  # the training steps' batches (validation's, without gradients, stay plain)
        if torch.is_grad_enabled():
            seen.append("object_px" in batch)
        return real_loss(self, batch, gen)

    monkeypatch.setattr(WorldModel, "training_loss", spy)
    out, again = tmp_path / "region", tmp_path / "again"
    args = ["pretrain-wm", "--data", str(play_data), "--preset", "tiny"]
    assert (
        main([*args, "--init", str(tiny_wm), "--out", str(out), "--model.flow.object_region_weight=4"]) == 0
    )
    assert load_world_model(out).cfg.flow.object_region_weight == 4.0 and seen and all(seen)
    seen.clear()
    assert main([*args, "--init", str(out), "--out", str(again)]) == 0
    assert load_world_model(again).cfg.flow.object_region_weight == 0.0 and seen and not any(seen)
    ds = LeRobotDataset(play_data)
    px = pixel_projector(ds, "--x=0")(object_positions(ds, "metaworld"))
    assert px.shape == (ds.num_frames, 2, 2)
    assert np.isfinite(px[:, 0]).all() and ((px[:, 0] >= 0) & (px[:, 0] < 64)).all()
