"""The VLA policy: tokenizer, sampling contract, behaviour cloning, and the real-simulator evaluation harness."""

import numpy as np
import pytest
import torch

from rawdream.config import build, load_preset, resolve
from rawdream.eval.success import EvalPolicyConfig, evaluate_policy, wilson
from rawdream.policy.tokenizer import ActionTokenizer
from rawdream.policy.train import TrainPolicyConfig, load_policy, train_policy
from rawdream.policy.vla import PolicyConfig, VLAPolicy

TINY = load_preset("train_policy_base", "tiny")["policy"]


def test_tokenizer_round_trip_within_one_bin():
    tok = ActionTokenizer([-1, -1, -1, -1], [1, 1, 1, 1], bins=256)
    a = np.random.default_rng(0).uniform(-1, 1, (1000, 4)).astype(np.float32)
    a[0] = [-1, 1, 0, 0.999]  # the edges land in the first and last bins
    back = tok.decode(tok.encode(a)).numpy()
    assert np.abs(back - a).max() <= tok.bin_width.max().item() / 2 + 1e-6
    assert tok.encode(a).min() >= 0 and tok.encode(a).max() <= 255
    with pytest.raises(ValueError, match="3 dimensions"):
        tok.encode(np.zeros((2, 3)))


def _policy(seed=0):
    torch.manual_seed(seed)
    cfg = build(PolicyConfig, TINY)
    p = VLAPolicy(
        cfg,
        ActionTokenizer([-1] * 4, [1] * 4),
        np.zeros(4),
        np.ones(4),
        text_cache={"open the drawer": list(np.random.default_rng(0).normal(size=384))},
    )
    return p.eval()


def _obs(b=3):
    rng = np.random.default_rng(1)
    return {
        "image": rng.integers(0, 255, (b, 64, 64, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(b, 4)).astype(np.float32),
        "instruction": ["open the drawer"] * b,
    }


def test_sampled_logprobs_equal_logprob_and_temperature_zero_is_greedy():
    p, obs = _policy(), _obs()
    actions, tokens, logp = p.sample(obs, temperature=1.0, generator=torch.Generator().manual_seed(0))
    again, _ = p.logprob(obs, tokens)
    torch.testing.assert_close(logp, again)
    assert actions.shape == (3, 8, 4) and tokens.shape == (3, 8, 4)
    np.testing.assert_array_equal(p.sample(obs, temperature=0.0)[0], p.greedy(obs))
    _, tok_t, logp_t = p.sample(obs, temperature=0.5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(logp_t, p.logprob(obs, tok_t, temperature=0.5)[0])  # the sampling distribution
    a1 = p.sample(obs, 1.0, torch.Generator().manual_seed(5))[1]
    a2 = p.sample(obs, 1.0, torch.Generator().manual_seed(5))[1]
    assert torch.equal(a1, a2)


def test_one_generator_per_row_makes_a_rows_sample_independent_of_its_batch():
    p, obs = _policy(), _obs(4)
    gens = lambda ids: [torch.Generator().manual_seed(i) for i in ids]  # noqa: E731
    whole = p.sample(obs, 1.0, gens([10, 11, 12, 13]))[1]
    half = p.sample({k: v[2:] for k, v in obs.items()}, 1.0, gens([12, 13]))[1]
    assert torch.equal(whole[2:], half)
    assert not torch.equal(whole[0], whole[1])  # different streams, different draws
    with pytest.raises(ValueError, match="generators for a batch"):
        p.sample(obs, 1.0, gens([1]))


def test_chunk_noise_keeps_each_tokens_distribution_and_correlates_it_along_the_chunk():
    p = _policy()
    n = 2000  # rollouts from one observation, each with its own generator
    obs = {k: (v[:1].repeat(n, 0) if k != "instruction" else v[:1] * n) for k, v in _obs(1).items()}
    probs = torch.softmax(p.logits({k: v[:1] for k, v in obs.items()})[0], -1)  # (chunk, A, bins)
    bins = torch.arange(probs.shape[-1]).float()
    mean = (probs * bins).sum(-1)
    sem = ((probs * bins**2).sum(-1) - mean**2).sqrt() / n**0.5
    draws = {
        noise: p.sample(obs, 1.0, [torch.Generator().manual_seed(i) for i in range(n)], noise=noise)[1]
        for noise in ("token", "chunk")
    }  # (n, chunk, A)
    for noise, tok in draws.items():
        # each token's distribution is the policy's either way: every step's mean bin within 5 standard errors
        assert ((tok.float().mean(0) - mean).abs() / sem).max() < 5.0, noise
    # the log-probabilities are per token, as PPO's ratio needs
    one = {k: v[:2] for k, v in obs.items()}
    _, tok, logp = p.sample(one, 1.0, [torch.Generator().manual_seed(i) for i in range(2)], noise="chunk")
    torch.testing.assert_close(logp, p.logprob(one, tok)[0])

    def step_correlation(tok):  # between the first and the last step of the chunk, per action dimension
        a, b = tok[:, 0].float(), tok[:, -1].float()
        a, b = a - a.mean(0), b - b.mean(0)
        return ((a * b).mean(0) / (a.std(0) * b.std(0))).min().item()

    assert abs(step_correlation(draws["token"])) < 0.1  # independent: the chunk's deviations average out
    assert step_correlation(draws["chunk"]) > 0.5  # one draw per dimension: the deviation persists
    with pytest.raises(ValueError, match="noise must be token or chunk"):
        p.sample(one, 1.0, [torch.Generator()] * 2, noise="pink")
    with pytest.raises(ValueError, match="one generator per row"):
        p.sample(one, 1.0, torch.Generator(), noise="chunk")


def test_episode_noise_repeats_its_draw_in_every_chunk_of_a_rollout():
    """exploration=episode: the same uniform numbers in every chunk of a rollout (its generator rewound), so from
    the same observation every chunk samples the same tokens - a deviation that persists over the episode - while
    chunk noise draws anew each chunk, and two rollouts still differ."""
    from rawdream.rl.imagination import collect_rollouts

    p = _policy()
    obs = {k: (v[:1].repeat(3, 0) if k != "instruction" else v[:1] * 3) for k, v in _obs(1).items()}

    def stay(actions):  # a world in which nothing moves: every chunk sees the same observation
        return obs, None, None, None, None

    def tokens(noise):
        gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
        return collect_rollouts(p, obs, stay, gens, 4, 1.0, obs["instruction"][0], noise=noise)["tokens"]

    episode, chunk = tokens("episode"), tokens("chunk")  # (H, N, chunk, A)
    assert all(torch.equal(episode[h], episode[0]) for h in range(4))
    assert not torch.equal(episode[:, 0], episode[:, 1])  # rollouts have their own draws
    assert not all(torch.equal(chunk[h], chunk[0]) for h in range(4))
    torch.testing.assert_close(episode[0], chunk[0])  # the first chunk is chunk noise's first draw
    with pytest.raises(ValueError, match="episode noise needs one generator per rollout"):
        collect_rollouts(p, obs, stay, torch.Generator(), 2, 1.0, "x", noise="episode")


def test_wrong_dimensions_are_refused():
    p, obs = _policy(), _obs()
    with pytest.raises(ValueError, match="proprio of shape \\(B, 4\\)"):
        p.greedy({**obs, "proprio": obs["proprio"][:, :3]})
    with pytest.raises(ValueError, match="images of shape"):
        p.greedy({**obs, "image": obs["image"][:, :32]})


def test_wilson_interval():
    lo, hi = wilson(0, 50)
    assert lo == 0 and 0.05 < hi < 0.09
    lo, hi = wilson(25, 50)
    assert 0.36 < lo < 0.37 and 0.63 < hi < 0.64


def test_policy_overfits_one_demo(reach_demo, tmp_path):
    cfg = resolve(
        TrainPolicyConfig,
        "train_policy_base",
        "tiny",
        {
            "steps": 300,
            "lr": 3e-3,
            "batch": 32,
            "augment_shift": 0,
            "label_smoothing": 0.0,
            "target_sigma": 0.0,  # one-hot targets: the loss can fall towards 0 (Gaussian ones floor at ~1.8)
            "ema_decay": 0.0,
            "policy.dropout": 0.0,
            "precision": "fp32",
            "log_every": 25,
            "split.targets": ["drawer-open"],
        },
    )
    info = train_policy(cfg, reach_demo, tmp_path / "p", progress=False)
    losses = [
        r["bc/loss"]
        for r in map(__import__("json").loads, (tmp_path / "p" / "metrics.jsonl").read_text().splitlines())
    ]
    assert losses[-1] < 0.5 * losses[0] and losses[-1] < 0.25 * np.log(256), losses
    policy = load_policy(tmp_path / "p")
    from rawdream.data.cache import frame_cache
    from rawdream.data.lerobot import LeRobotDataset

    ds = LeRobotDataset(reach_demo)
    frames, ep = frame_cache(ds), ds.episode(0)
    pred = policy.greedy(
        {
            "image": np.array(frames[:8]),
            "proprio": ep.data["observation.state"][:8],
            "instruction": ["reach the red goal"] * 8,
        }
    )
    err = np.abs(pred[:, 0] - ep.data["action"][:8])  # first action of each predicted chunk vs the demo's
    assert np.median(err) < 0.1, err
    assert info["tasks"] == ["reach"]


def test_eval_harness_on_the_real_simulator_reproduces(reach_demo, tmp_path):
    policy = _policy()
    cfg = resolve(EvalPolicyConfig, "eval_policy", "tiny", {"tasks": ["reach"], "env.max_steps": 24})
    a = evaluate_policy(policy, cfg, tmp_path / "a", progress=False)
    b = evaluate_policy(policy, cfg, None, progress=False)
    assert a["tasks"]["reach"]["episode_results"] == b["tasks"]["reach"]["episode_results"]
    assert a["tasks"]["reach"]["episodes"] == 2 and (tmp_path / "a" / "eval.json").exists()
    assert list((tmp_path / "a" / "videos").glob("reach_ep0_*.mp4"))
    sampled = resolve(
        EvalPolicyConfig, "eval_policy", "tiny", {"tasks": ["reach"], "env.max_steps": 24, "greedy": False}
    )
    c = evaluate_policy(policy, sampled, None, progress=False)
    d = evaluate_policy(policy, sampled, None, progress=False)
    assert c["tasks"]["reach"]["episode_results"] == d["tasks"]["reach"]["episode_results"]


def test_sft_refuses_missing_demos_and_base_refuses_targets(reach_demo, tmp_path):
    from rawdream.splits import TargetTaskLeakError

    with pytest.raises(TargetTaskLeakError):
        train_policy(
            resolve(TrainPolicyConfig, "train_policy_base", "tiny", {"split.targets": ["reach"]}),
            reach_demo,
            tmp_path / "x",
            progress=False,
        )
    train_policy(
        resolve(TrainPolicyConfig, "train_policy_base", "tiny", {"split.targets": ["push"]}),
        reach_demo,
        tmp_path / "base",
        progress=False,
    )
    with pytest.raises(Exception, match="successful demos of push"):
        train_policy(
            resolve(TrainPolicyConfig, "train_policy_sft", "tiny", {"split.targets": ["push"]}),
            reach_demo,
            tmp_path / "sft",
            init=tmp_path / "base",
            progress=False,
        )


def test_paired_difference_against_hand_computed_cases():
    from rawdream.eval.success import paired_difference

    ep = lambda flags: [{"episode": i, "success": f} for i, f in enumerate(flags)]  # noqa: E731
    same = paired_difference(ep([1, 0, 1, 0]), ep([1, 0, 1, 0]))
    assert same["difference"] == 0 and same["ci95"] == [0, 0] and same["mcnemar_p"] == 1.0
    # 10 gained, 5 lost of 30: +5/30; exact McNemar p = 2 P(Binomial(15, 1/2) <= 5) = 0.30176
    before = ep([0] * 10 + [1] * 5 + [1] * 7 + [0] * 8)
    after = ep([1] * 10 + [0] * 5 + [1] * 7 + [0] * 8)
    d = paired_difference(before, after)
    assert (d["gained"], d["lost"], d["episodes"]) == (10, 5, 30)
    assert abs(d["difference"] - 5 / 30) < 1e-12 and abs(d["mcnemar_p"] - 0.3017578125) < 1e-9
    assert d["ci95"][0] < d["difference"] < d["ci95"][1]
    strong = paired_difference(ep([0] * 20), ep([1] * 20))
    assert strong["ci95"] == [1.0, 1.0] and strong["mcnemar_p"] < 1e-5
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(ep([1]), [{"episode": 5, "success": True}])


def test_gaussian_targets_put_mass_on_neighbouring_bins_only():
    from rawdream.policy.train import gaussian_targets, token_loss

    q = gaussian_targets(256, 1.5)
    assert torch.allclose(q.sum(1), torch.ones(256)) and q[100].argmax() == 100
    assert q[100, 97:104].sum() > 0.95 and q[100, :90].sum() < 1e-6  # local, no far-away mass
    assert q[0, 0] > q[100, 100]  # the edge bin keeps the mass that would fall off the range
    target = torch.tensor([[100]])
    peaked = torch.full((1, 1, 256), -20.0)
    peaked[0, 0, 100] = 20.0
    spread = torch.log(q[100] + 1e-12).view(1, 1, 256)
    # against Gaussian targets, the Gaussian itself beats a one-hot spike; against one-hot targets, the reverse
    assert token_loss(spread, target, q) < token_loss(peaked, target, q)
    assert token_loss(peaked, target, None) < token_loss(spread, target, None)


def test_object_loss_teaches_the_vision_features_where_the_object_is(tmp_path):
    """--object_loss: an auxiliary head reads the objects' positions (the recorded simulator state) from the vision
    features; it learns them across layouts, is saved with the policy, and SFT refuses to train a head the base lacks."""
    import json

    from rawdream.cli import main
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.data.objects import object_positions

    data = tmp_path / "reach3"  # three layouts: the puck lies somewhere else in each
    assert main(["collect", "demos", "--task", "reach", "--out", str(data), "--preset", "tiny",
                 "--episodes_per_task=3", "--max_steps=48"]) == 0  # fmt: skip
    ds = LeRobotDataset(data)
    pos = object_positions(ds, "metaworld")
    assert pos.shape == (ds.num_frames, 6)
    starts = [pos[ds.episode_bounds(e)[0], :2] for e in range(3)]
    assert (
        min(np.abs(a - b).max() for i, a in enumerate(starts) for b in starts[i + 1 :]) > 0.01
    )  # layouts differ
    overrides = {"steps": 150, "lr": 3e-3, "log_every": 10, "object_loss": 1.0, "split.targets": ["push"]}
    cfg = resolve(TrainPolicyConfig, "train_policy_base", "tiny", overrides)
    train_policy(cfg, data, tmp_path / "p", progress=False)
    mse = [
        json.loads(r)["bc/object_mse"] for r in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()
    ]
    assert mse[-1] < 0.5 * mse[0], mse  # z-scored targets: 1.0 is predicting the mean
    policy = load_policy(tmp_path / "p")
    assert policy.cfg.object_outputs == 6 and policy.model.object_head is not None
    # the head is never used to act: the policy's actions come from the same forward pass without it
    _, head = policy.model(*policy._inputs(_first_frames(ds)), objects=True)
    assert head.shape == (2, 6)
    no_head = {"steps": 2, "object_loss": 0.0, "split.targets": ["push"]}
    plain = resolve(TrainPolicyConfig, "train_policy_base", "tiny", no_head)
    train_policy(plain, data, tmp_path / "plain", progress=False)
    sft = resolve(
        TrainPolicyConfig, "train_policy_sft", "tiny", {"object_loss": 1.0, "split.targets": ["reach"]}
    )
    with pytest.raises(ValueError, match="6-output object head"):
        train_policy(sft, data, tmp_path / "sft", init=tmp_path / "plain", progress=False)


def _first_frames(ds):
    from rawdream.data.cache import frame_cache

    ep = ds.episode(0)
    return {
        "image": np.array(frame_cache(ds)[:2]),
        "proprio": ep.data["observation.state"][:2],
        "instruction": ["reach the red goal"] * 2,
    }
