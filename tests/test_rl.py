"""GRPO + dual-noise verification: hand-computed arithmetic, the clip, the gradient's sign, learning on a toy
imagined environment with a known reward, a tiny end-to-end dream run, and exact resume."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from rawdream.config import resolve
from rawdream.reward.base import Verdict
from rawdream.rl.grpo import clipped_surrogate, group_advantages


def test_all_equal_rewards_give_zero_advantage():
    a = group_advantages(torch.ones(2, 8), torch.ones(2, 8, dtype=torch.bool))
    assert torch.all(a.advantages == 0) and a.mask.all() and not a.dropped.any()


def test_hand_computed_advantages_and_dnv_neutralisation():
    rewards = torch.tensor([[1.0, 1, 0, 0]])
    a = group_advantages(rewards, torch.ones(1, 4, dtype=torch.bool))
    torch.testing.assert_close(a.advantages, torch.tensor([[1.0, 1, -1, -1]]), atol=1e-4, rtol=0)
    # rollout 0's success flipped under the second noise draw: unreliable -> reward = reliable mean (1/3)
    reliable = torch.tensor([[False, True, True, True]])
    a = group_advantages(rewards, reliable)
    assert a.rewards[0, 0].item() == pytest.approx(1 / 3)
    assert a.advantages[0, 0] == 0 and not a.mask[0, 0]
    mean, std = 1 / 3, np.sqrt(((1 - 1 / 3) ** 2 + 2 * (1 / 3) ** 2) / 3)  # over reliable rollouts only
    assert a.advantages[0, 1].item() == pytest.approx((1 - mean) / std, rel=1e-4)
    assert a.advantages[0, 2].item() == pytest.approx((0 - mean) / std, rel=1e-4)


def test_group_with_three_unreliable_is_dropped_and_abstains_are_unreliable():
    rewards = torch.tensor([[1.0, 1, 1, 0, 0, 1, 0, 1], [1.0, 0, 1, 0, 0, 1, 0, 1]])
    abstain = torch.zeros(2, 8, dtype=torch.bool)
    flipped = torch.zeros(2, 8, dtype=torch.bool)
    flipped[0, :3] = True  # three flips: group 0 dropped
    abstain[1, 1] = True  # an abstain is unreliable
    a = group_advantages(rewards, ~(abstain | flipped), max_unreliable=2)
    assert a.dropped.tolist() == [True, False]
    assert not a.mask[0].any() and torch.all(a.advantages[0] == 0)
    assert not a.mask[1, 1] and a.mask[1].sum() == 7


def test_uninformative_groups_leave_the_loss_only_when_asked():
    rewards = torch.tensor([[1.0, 1, 1, 1], [1.0, 0, 0, 0], [0.0, 0, 0, 0]])
    reliable = torch.ones(3, 4, dtype=torch.bool)
    kept = group_advantages(rewards, reliable)
    assert kept.mask.all() and kept.informative.tolist() == [False, True, False]
    a = group_advantages(rewards, reliable, drop_uninformative=True)
    assert a.mask.tolist() == [[False] * 4, [True] * 4, [False] * 4]
    torch.testing.assert_close(a.advantages, kept.advantages)  # the same advantages, fewer tokens in the mean
    # a group whose only difference came from a rollout DNV flipped is uninformative too: the flip is neutralised
    b = group_advantages(
        torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[False, True, True, True]]), 2, 1e-6, True
    )
    assert not b.informative.any() and not b.mask.any()


def test_practised_layouts_are_the_initial_states_rl_trains_from():
    from rawdream import seeds
    from rawdream.envs import make_env
    from rawdream.envs.base import EnvConfig
    from rawdream.eval.success import EvalPolicyConfig
    from rawdream.rl.rollouts import sim_initial_states

    practised, new = EvalPolicyConfig(layouts="practised"), EvalPolicyConfig(layouts="new")
    assert [practised.seed(i) for i in range(3)] == [seeds.DREAM_INIT + i for i in range(3)]
    assert new.seed(0) == seeds.EVAL
    init = sim_initial_states("drawer-open", 2, EnvConfig(), 1)
    env = make_env("drawer-open")
    try:
        for i in range(2):
            obs, _ = env.reset(practised.seed(i))
            np.testing.assert_array_equal(obs["image"], init[i]["image"])
        other, _ = env.reset(new.seed(0))
        assert np.abs(other["image"].astype(int) - init[0]["image"].astype(int)).max() > 0
    finally:
        env.close()
    with pytest.raises(ValueError, match="practised or new"):
        from rawdream.config import build

        build(EvalPolicyConfig, {"layouts": "old"})


def test_asymmetric_clipping():
    old = torch.zeros(2, 1)
    new = torch.log(torch.tensor([[1.5], [0.5]]))
    adv = torch.tensor([1.0, -1.0])
    loss, info = clipped_surrogate(new, old, adv, torch.ones(2, 1, dtype=torch.bool), 0.2, 0.28)
    # positive advantage: ratio capped at 1 + 0.28; negative: at 1 - 0.2 (min of the two surrogates)
    assert loss.item() == pytest.approx(-(1.28 * 1.0 + 0.8 * -1.0) / 2)
    assert info["clip_frac"] == 1.0


def test_policy_gradient_sign_on_a_two_action_toy():
    logits = torch.zeros(2, requires_grad=True)
    actions = torch.tensor([0, 1, 0, 1])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])  # action 0 rewarded
    old = torch.log_softmax(logits, 0)[actions].detach()[:, None]
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(5):
        new = torch.log_softmax(logits, 0)[actions][:, None]
        loss, _ = clipped_surrogate(new, old, adv, torch.ones(4, 1, dtype=torch.bool))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.softmax(logits, 0)[0] > 0.6


class _RewardsRightward:
    """A judge with a known reward: success iff the rollout pushed the hand right (mean x action above the
    batch median). Marked privileged so the loop hands it the actions, as it does the oracle."""

    name, privileged = "toy", True

    def __call__(self, videos, instructions, *, actions, **_):
        x = np.asarray(actions)[..., 0].mean(axis=(1, 2))
        return [Verdict(success=bool(v > np.median(x)), score=None) for v in x]


def test_grpo_raises_probability_of_rewarded_behaviour(tiny_dreamer):
    overrides = {"dnv": False, "lr": 3e-3, "epochs": 4, "iterations": 12}
    # 16 rollouts an iteration: enough for the rewarded direction to stand out
    dreamer = tiny_dreamer({**overrides, "group_size": 8}, judge=_RewardsRightward())
    cfg, policy = dreamer.cfg, dreamer.policy
    obs = {
        "image": np.stack([s["image"] for s in dreamer.init]),
        "proprio": np.stack([s["proprio"] for s in dreamer.init]),
        "instruction": ["reach the red goal"] * len(dreamer.init),
    }
    centres = policy.tokenizer.decode(torch.arange(policy.cfg.bins)[:, None].expand(-1, 4))[:, 0]

    def mean_x():
        with torch.no_grad():
            probs = torch.softmax(policy.logits(obs), -1)[:, :, 0]  # (B, chunk, bins) of the x dimension
            return float((probs * centres).sum(-1).mean())

    before = mean_x()
    for it in range(cfg.iterations):
        dreamer.iteration(it)
    assert mean_x() > before + 0.05, (before, mean_x())  # x actions span [-1, 1]


class _CoinOnPixels:
    """A deterministic judge whose verdict is a coin flip keyed on the video's bytes: the same video always gets
    the same verdict, a different noise draw of the world model gets an independent one."""

    name, privileged = "coin", False

    def __call__(self, videos, instructions, **_):
        import zlib

        return [Verdict(success=zlib.crc32(np.ascontiguousarray(v).tobytes()) % 2 == 0) for v in videos]


def test_dual_noise_verification_redraws_judged_successes_and_flags_flips(tiny_dreamer):
    from rawdream.rl.dream import DreamConfig
    from rawdream.rl.grpo import group_advantages

    judge = _CoinOnPixels()
    dreamer = tiny_dreamer({"group_size": 8}, judge=judge)
    buf = dreamer.rollout_round(dreamer.draw(0, states=[0, 1]))
    success, flipped = buf["success"], buf["flipped"]
    assert 0 < success.sum() < len(success)
    assert set(buf["second"]) == set(np.nonzero(success)[0].tolist())  # only judged successes are re-drawn
    assert not flipped[~success].any()
    for i, second in buf["second"].items():
        first = buf["video"][i]
        assert np.array_equal(second[0], first[0]) and not np.array_equal(
            second, first
        )  # same start, new noise
        assert flipped[i] == (not judge([second], ["-"])[0].success)
    assert flipped.any(), "with a coin-flip judge some re-drawn success should flip"
    a = group_advantages(
        torch.from_numpy(success.astype(np.float32)).view(2, 8),
        torch.from_numpy(~flipped).view(2, 8),
        max_unreliable=8,
    )
    assert not a.mask.flatten()[torch.from_numpy(flipped)].any()  # flipped rollouts never enter the loss
    # dnv off: no re-draws, nothing flagged
    dreamer.cfg = resolve(
        DreamConfig,
        "dream",
        "tiny",
        {**{"task": "reach", "split.targets": ["push"]}, "group_size": 8, "dnv": False},
    )
    buf = dreamer.rollout_round(dreamer.draw(0, states=[0, 1]))
    assert not buf["second"] and not buf["flipped"].any()


def test_cross_model_verification_redraws_the_successes_in_the_second_world_model(tiny_dreamer, tiny_wm):
    from rawdream.config import ConfigError, resolve
    from rawdream.rl.dream import DreamConfig
    from rawdream.world_model.train import load_world_model

    judge = _CoinOnPixels()
    plain = tiny_dreamer({"group_size": 8}, judge=judge)
    same = tiny_dreamer({"group_size": 8}, judge=judge, verifier=load_world_model(tiny_wm))
    other_wm = load_world_model(tiny_wm)
    with torch.no_grad():  # a model trained apart: other weights, the same frames in and out
        for p in other_wm.dynamics.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    other = tiny_dreamer({"group_size": 8}, judge=judge, verifier=other_wm)
    bufs = [d.rollout_round(d.draw(0, states=[0, 1])) for d in (plain, same, other)]
    for b in bufs[1:]:  # the first draw is the policy's world model's, whatever verifies it
        assert np.array_equal(b["video"], bufs[0]["video"]) and np.array_equal(
            b["success"], bufs[0]["success"]
        )
    assert bufs[0]["second"] and set(bufs[2]["second"]) == set(bufs[0]["second"])
    for i, second in bufs[0]["second"].items():
        assert np.array_equal(bufs[1]["second"][i], second)  # an identical verifier redraws identically
        assert np.array_equal(bufs[2]["second"][i][0], second[0])  # the same real first frame ...
        assert not np.array_equal(bufs[2]["second"][i], second)  # ... drawn on by the other model
        assert bufs[2]["flipped"][i] == (not judge([bufs[2]["second"][i]], ["-"])[0].success)
    with pytest.raises((ValueError, ConfigError), match="--dnv=true"):
        resolve(
            DreamConfig, "dream", "tiny", {"task": "reach", "dnv": False, "dnv_world_model": str(tiny_wm)}
        )


def _oracle_dream(tiny_policy, tiny_wm) -> list[str]:
    """`rawdream dream` on the tiny models, task reach (the split's target is push), rewarded by the oracle."""
    argv = [
        "dream",
        "--task",
        "reach",
        "--policy",
        str(tiny_policy),
        "--wm",
        str(tiny_wm),
        "--preset",
        "tiny",
    ]
    return [*argv, "--split.targets=push", "--judge.backend=oracle", "--judge.allow_oracle=true"]


def test_tiny_dream_end_to_end_with_dnv_and_resume(tiny_wm, tiny_policy, tmp_path):
    from rawdream.cli import main

    base = [
        *_oracle_dream(tiny_policy, tiny_wm),
        "--drop_uninformative=false",  # every iteration updates, even if no tiny rollout succeeds
    ]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["stage"] == "train"]
    assert len(train) == 2 and all("dnv_flip_rate" in r and "time_imagine" in r for r in train)
    assert any(r["stage"] == "eval" for r in rows)
    info = json.loads((tmp_path / "a" / "policy.json").read_text())
    assert info["env_mode"] == "wm" and info["judge"] == "oracle"
    # resume: a run stopped after iteration 1 and continued gives the same second iteration
    assert main([*base, "--out", str(tmp_path / "b"), "--iterations=1"]) == 0
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    rows_b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    second_a = next(r for r in train if r["step"] == 2)
    second_b = [r for r in rows_b if r["stage"] == "train" and r["step"] == 2][-1]
    for key in ("reward_mean", "loss", "approx_kl", "dnv_flips"):
        assert second_a[key] == second_b[key], key


def test_dream_verifies_in_a_second_world_model_named_on_the_command_line(tiny_wm, tiny_policy, tmp_path):
    from rawdream.cli import main

    argv = [*_oracle_dream(tiny_policy, tiny_wm), "--iterations=1"]
    assert main([*argv, f"--dnv_world_model={tiny_wm}", "--out", str(tmp_path / "x")]) == 0
    info = json.loads((tmp_path / "x" / "policy.json").read_text())
    assert info["dnv"] and info["dnv_world_model"] == str(tiny_wm.resolve())
    assert main([*argv, f"--dnv_world_model={tmp_path / 'nowhere'}", "--out", str(tmp_path / "y")]) != 0


def test_dnv_redraws_under_their_own_sampler_and_a_flip_can_count_as_a_failure(
    tiny_wm, tiny_policy, tmp_path
):
    from rawdream.cli import main
    from rawdream.rl.dream import DreamConfig, Dreamer

    argv = [*_oracle_dream(tiny_policy, tiny_wm), "--iterations=1", "--drop_uninformative=false"]
    out = tmp_path / "x"
    assert main([*argv, "--dnv_sampler.context_level=600", "--dnv_flip=failure", "--out", str(out)]) == 0
    info = json.loads((out / "policy.json").read_text())
    # the redraws' sampler is the model's own with only the key named changed; the first draws keep the model's
    assert info["dnv_flip"] == "failure" and info["dnv_sampler"]["context_level"] == 600.0
    from dataclasses import asdict

    from rawdream.world_model.train import load_world_model

    own = asdict(load_world_model(tiny_wm).cfg.sampler)
    assert {k: v for k, v in info["dnv_sampler"].items() if k != "context_level"} == {
        k: v for k, v in own.items() if k != "context_level"
    }
    # bad values name the key and the fix
    assert main([*argv, "--dnv_flip=maybe", "--out", str(tmp_path / "y")]) != 0
    assert main([*argv, "--dnv=false", "--dnv_sampler.steps=4", "--out", str(tmp_path / "z")]) != 0
    with pytest.raises(ValueError, match="dnv_flip must be unreliable or failure"):
        DreamConfig(dnv_flip="maybe").validate()
    # what a flip does to the reward and to reliability, on a hand-made buffer
    buf = {
        "reward": np.array([1, 1, 0, 0], np.float32),
        "abstain": np.array([False, False, False, True]),
        "flipped": np.array([False, True, False, False]),
    }
    paper = Dreamer.reliable(type("D", (), {"cfg": DreamConfig()})(), buf)
    strict = Dreamer.reliable(type("D", (), {"cfg": DreamConfig(dnv_flip="failure")})(), buf)
    assert paper.tolist() == [True, False, True, False] and strict.tolist() == [True, True, True, False]


def test_replay_diagnostic_says_how_often_kept_and_flipped_successes_are_real(tiny_dreamer):
    from rawdream.rl.dream import DreamConfig, replay_diagnostics

    # with the oracle judge the verdict is the replay: the diagnostic must agree with it rollout by rollout
    dreamer = tiny_dreamer({"group_size": 4, "diagnose_replay": True, "dnv": False})
    buf = dreamer.rollout_round(dreamer.draw(0, states=[0, 1]))
    assert buf["replayed_success"].shape == buf["success"].shape
    assert np.array_equal(buf["replayed_success"], buf["success"])
    # by hand: 2 kept (1 real), 1 flipped (real), 2 judged failures (0 real), 1 abstain
    hand = {
        "replayed_success": np.array([1, 0, 1, 0, 0, 1], bool),
        "success": np.array([1, 1, 1, 0, 0, 0], bool),
        "flipped": np.array([0, 0, 1, 0, 0, 0], bool),
        "abstain": np.array([0, 0, 0, 0, 0, 1], bool),
    }
    d = replay_diagnostics(hand)
    assert d["diag/true_rate_kept"] == 0.5 and d["diag/true_rate_flipped"] == 1.0
    assert d["diag/true_rate_judged_failure"] == 0.0 and d["diag/n_judged_failure"] == 2
    assert d["diag/true_rate"] == 0.5
    with pytest.raises(ValueError, match="env_mode=wm"):
        resolve(DreamConfig, "dream", "tiny", {"task": "reach", "env_mode": "sim", "diagnose_replay": True})


def test_online_baseline_counts_real_trajectories(tiny_policy, tmp_path):
    from rawdream.cli import main

    assert (
        main(
            [
                "dream",
                "--task",
                "reach",
                "--policy",
                str(tiny_policy),
                "--env_mode=sim",
                "--preset",
                "tiny",
                "--split.targets=push",
                "--eval_start=true",
                "--eval_episodes=2",
                "--out",
                str(tmp_path / "sim"),
            ]
        )
        == 0
    )
    info = json.loads((tmp_path / "sim" / "policy.json").read_text())
    assert info["env_mode"] == "sim" and info["real_trajectories_rl"] == 2 * 2 * 2
    # the starting and the final policy on the same episodes, both protocols, paired
    assert set(info["paired"]) == {"practised", "new"}
    for layouts, d in info["paired"].items():
        start = json.loads((tmp_path / "sim" / f"eval_start_{layouts}.json").read_text())
        final = json.loads((tmp_path / "sim" / f"eval_{layouts}.json").read_text())
        assert [e["seed"] for e in start["episode_results"]] == [e["seed"] for e in final["episode_results"]]
        assert d["episodes"] == 2 and d["before"] == start["success_rate"]
    seeds_of = {
        p: json.loads((tmp_path / "sim" / f"eval_{p}.json").read_text()) for p in ("practised", "new")
    }
    assert seeds_of["practised"]["episode_results"][0]["seed"] == 200_000  # the RL initial states
    assert seeds_of["new"]["episode_results"][0]["seed"] == 100_000
    # the candidates table reads the run back: what changed, what it cost, both protocols
    assert main(["experiment", "rl-table", str(tmp_path / "sim"), "--json", str(tmp_path / "t.json")]) == 0
    (row,) = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert row["changed"]["env_mode"] == "sim" and row["changed"]["eval_start"] is True
    assert row["real_trajectories_rl"] == 8 and set(row["protocols"]) == {"practised", "new"}
    # the reward RL followed, first and last iterations: here the simulator's success of the trained-on rollouts
    train = [json.loads(x) for x in (tmp_path / "sim" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["judged_success_rate"] for r in train if r.get("stage") == "train"]
    assert row["judged_reward"]["first"] == pytest.approx(np.mean(rates[:5]))
    assert row["judged_reward"]["last"] == pytest.approx(np.mean(rates[-5:]))
    # a per-target judge check that kept RL away from this task: the row says so; one row has nothing to pool
    check = tmp_path / "judge_check.json"
    check.write_text(json.dumps({"targets": {"reach": {"rl": False, "why": "lowered real success"}}}))
    assert (
        main(["experiment", "rl-table", str(tmp_path / "sim"), "--check", str(check), "--json", str(check)])
        == 0
    )
    table = json.loads(check.read_text())
    assert table["check_skipped"] == {"reach": "lowered real success"} and "pooled" not in table
    with pytest.raises(ValueError, match="eval_start"):
        from rawdream.experiment.rl_table import rl_table

        (tmp_path / "sim" / "policy.json").write_text(json.dumps({**info, "paired": {}}))
        rl_table([tmp_path / "sim"])


def test_online_rl_with_the_judges_verdict_on_the_real_video_as_the_reward(
    tiny_policy, tiny_judge, reach_demo, tmp_path
):
    """--env_mode=sim --sim_reward=judge (the ladder's "judge alone" row): the reward is the judge's verdict on the
    simulator's video, not the simulator's success - a threshold of 0 makes every rollout a success and one of 1
    none, whatever the simulator says - and the run records the judge as what gave it."""
    from rawdream.cli import main

    args = ["dream", "--task", "reach", "--policy", str(tiny_policy), "--env_mode=sim", "--sim_reward=judge"]
    args += [
        "--preset",
        "tiny",
        "--split.targets=push",
        "--judge.backend=generalist",
        f"--judge.path={tiny_judge}",
    ]
    args += [f"--judge.reference={reach_demo}"]
    for threshold, rate in ((0.0, 1.0), (1.0, 0.0)):
        out = tmp_path / f"t{threshold}"
        assert main([*args, f"--judge.threshold={threshold}", "--out", str(out)]) == 0
        train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["judged_success_rate"] for r in train if r.get("stage") == "train"] == [rate, rate]
        info = json.loads((out / "policy.json").read_text())
        assert (
            info["env_mode"] == "sim" and info["judge"] == "generalist" and info["real_trajectories_rl"] == 8
        )


def test_dynamic_sampling_draws_more_groups_and_counts_their_real_trajectories(tiny_policy, tmp_path):
    from rawdream.cli import main

    out = tmp_path / "sim"
    args = ["dream", "--task", "reach", "--policy", str(tiny_policy), "--env_mode=sim", "--preset", "tiny"]
    assert main([*args, "--split.targets=push", "--sample_rounds=3", "--out", str(out)]) == 0
    train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["stage"] == "train"]
    for r in train:  # a round is 2 groups x 2 rollouts; rounds stop once 2 groups carry an advantage
        assert r["rollouts"] == 4 * r["sample_rounds"] and 1 <= r["sample_rounds"] <= 3
        assert r["sample_rounds"] == 3 or r["informative_groups"] >= 2
    info = json.loads((out / "policy.json").read_text())
    assert info["real_trajectories_rl"] == sum(r["rollouts"] for r in train)


def test_merged_rounds_pad_shorter_batches_with_dead_steps():
    from rawdream.rl.rollouts import merge_rollouts

    def buf(h, n, reward):
        return {
            "images": np.ones((h, n, 2, 2, 3), np.uint8),
            "proprio": np.ones((h, n, 4), np.float32),
            "tokens": torch.ones((h, n, 1, 1), dtype=torch.long),
            "logp": torch.ones((h, n, 1, 1)),
            "alive": np.ones((h, n), bool),
            "success": np.array(reward, bool),
            "reward": np.array(reward, np.float32),
            "abstain": np.zeros(n, bool),
            "flipped": np.zeros(n, bool),
            "scores": np.array(reward, float),
            "video": None,
            "second": {1: "second draw"},
            "time": {"imagine": 1.0},
        }

    m = merge_rollouts([buf(3, 2, [1, 0]), buf(1, 2, [0, 0])])
    assert m["images"].shape == (3, 4, 2, 2, 3) and m["tokens"].shape == (3, 4, 1, 1)
    assert m["alive"][:, 2:].tolist() == [[True, True], [False, False], [False, False]]  # padding is dead
    assert m["alive"][:, :2].all()
    assert m["reward"].tolist() == [1, 0, 0, 0] and set(m["second"]) == {1, 3} and m["time"]["imagine"] == 2.0


def test_on_policy_reward_fidelity_is_exact_for_the_oracle(tiny_wm, tiny_policy):
    """The diagnostic behind RL in imagination: the policy's own real rollouts vs their imagined replays. The
    oracle replays the same actions in the deterministic simulator, so on real videos it has no errors."""
    from rawdream.eval.reward_fidelity import RewardFidelityConfig, format_reward_fidelity, reward_fidelity
    from rawdream.policy.train import load_policy
    from rawdream.reward.base import JudgeConfig
    from rawdream.world_model.train import load_world_model

    cfg = RewardFidelityConfig(states=2, rollouts_per_state=2, horizon=3, workers=1)
    rep = reward_fidelity(
        load_policy(tiny_policy), load_world_model(tiny_wm), cfg, "reach", JudgeConfig(backend="oracle")
    )
    assert rep["rollouts"] == 4
    c = rep["judge_on_real"]["confusion"]
    assert c["fp"] == 0 and c["fn"] == 0 and c["tp"] == round(rep["real_success_rate"] * 4)
    # the oracle ignores pixels: imagined draws get the same verdicts, so nothing flips
    assert rep["dnv_flips"] == {"of_real_successes": 0, "of_real_failures": 0}
    assert "after dual-noise verification" in format_reward_fidelity(rep)
    loop = rep["imagination_transfer"]["closed_loop"]
    assert (
        loop["rollouts"] == 4
        and loop["states"] == 2
        and loop["real_success_rate"] == rep["real_success_rate"]
    )
    assert "closed loop" in format_reward_fidelity(rep)
    # the reward RL sees: the oracle replays the actions the policy took in imagination, so its verdicts on the
    # closed-loop imagined rollouts are exactly the simulator's success of those actions
    said = loop["judge"]
    assert said["judged_success_rate"] == loop["imagined_policy_success_rate"]
    assert said["confusion"]["fp"] == 0 and said["confusion"]["fn"] == 0
    assert "the reward RL sees" in format_reward_fidelity(rep)


def test_imagination_transfer_is_zero_for_an_exact_world_model(tiny_wm, tiny_policy):
    """The policy's view: a world model that draws exactly the real frames and proprioception leaves the policy's
    token distributions unchanged (0 total variation, the same greedy actions); showing the first frame instead
    does change them once the arm has moved. The closed loop: rates are of the rollouts asked for, per state."""
    from rawdream.envs.tasks import instruction
    from rawdream.eval.imagination_transfer import format_transfer, imagination_transfer, policy_view, replay
    from rawdream.eval.on_policy import RewardFidelityConfig, policy_rollouts
    from rawdream.policy.train import load_policy
    from rawdream.world_model.train import load_world_model

    policy = load_policy(tiny_policy)
    cfg = RewardFidelityConfig(states=2, rollouts_per_state=2, horizon=3, workers=1)
    real = policy_rollouts(policy, "reach", cfg)

    class ExactWorldModel:
        def rollout(self, first_frames, proprio, actions, seeds):
            return {
                "frames": torch.from_numpy(real["video"].copy()),
                "proprio": torch.from_numpy(real["proprio"]),
            }

    view = policy_view(policy, replay(ExactWorldModel(), real, [0, 1, 2, 3]), real, instruction("reach"), 1.0)
    assert max(view["hand_err"]) == 0.0
    assert (
        len(view["tv"]) == 3 and max(view["tv"] + view["tv_frames"]) < 1e-6 and max(view["action_gap"]) == 0.0
    )
    assert view["tv_copy"][0] < 1e-6 and max(view["tv_copy"][1:]) > 1e-4  # step 0 is the first frame itself

    rep = imagination_transfer(policy, load_world_model(tiny_wm), "reach", cfg, real)
    loop = rep["closed_loop"]
    assert loop["rollouts"] == 4 and loop["states"] == 2
    assert 0.0 <= loop["imagined_policy_success_rate"] <= 1.0
    assert loop["real_success_rate"] == float(real["success"].mean())
    assert all(0.0 <= v <= 1.0 for v in rep["policy_view"]["tv"])
    # the hand's drift split: both start from the real hand, so their first steps agree; after that the fed-back
    # estimate is the model's own
    drift = rep["hand_drift"]
    assert len(drift["teacher_forced"]) == len(drift["own_hand"]) == 3
    assert drift["own_hand"][0] == pytest.approx(drift["teacher_forced"][0])
    assert drift["own_hand"][1:] != drift["teacher_forced"][1:]
    assert "closed loop" in format_transfer(rep) and "its own hand estimate" in format_transfer(rep)
    # --on_policy.exploration=chunk draws the rollouts as dream's recipe H does: other actions from the same seeds
    chunked = policy_rollouts(policy, "reach", replace(cfg, exploration="chunk"))
    assert not np.allclose(chunked["actions"], real["actions"])
    with pytest.raises(ValueError, match="on_policy.exploration must be"):
        replace(cfg, exploration="gauss").validate()


class _ScoreOnPixels:
    """A deterministic scoring judge: p = a hash of the video's bytes in [0, 1); success iff p >= 0.5."""

    name, privileged = "score", False

    def __call__(self, videos, instructions, **_):
        import zlib

        ps = [zlib.crc32(np.ascontiguousarray(v).tobytes()) % 1000 / 1000 for v in videos]
        return [Verdict(success=p >= 0.5, score=p) for p in ps]


def test_score_reward_averages_a_verified_success_over_its_noise_draws(tiny_dreamer):
    from rawdream.rl.dream import DreamConfig

    overrides = {"task": "reach", "split.targets": ["push"], "group_size": 8, "judge.backend": "oracle"}
    judge = _ScoreOnPixels()
    dreamer = tiny_dreamer({**overrides, "reward": "score"}, judge=judge)
    buf = dreamer.rollout_round(dreamer.draw(0, states=[0, 1]))
    first = np.array([v.score for v in judge(list(buf["video"]), ["-"] * 16)])
    assert np.array_equal(buf["success"], first >= 0.5) and buf["second"]
    for i in range(16):
        if i in buf["second"]:  # verified: the mean over both draws; a flip when the second draw says failure
            p2 = judge([buf["second"][i]], ["-"])[0].score
            assert buf["reward"][i] == pytest.approx((first[i] + p2) / 2)
            assert buf["flipped"][i] == (p2 < 0.5)
        else:  # a judged failure keeps its one score
            assert buf["reward"][i] == pytest.approx(first[i]) and not buf["flipped"][i]
    # the graded rewards reach the advantages: within each group, the reliable rollouts' scores standardised
    # (ranked by score, not by verdict), flipped ones out of the loss with zero advantage
    a = dreamer.advantages(buf)
    for g in range(2):
        rows = np.arange(8 * g, 8 * g + 8)
        kept = rows[~buf["flipped"][rows]]
        r = buf["reward"][kept]
        adv = a.advantages[g].numpy()[~buf["flipped"][rows]]
        if a.informative[g]:
            assert adv == pytest.approx((r - r.mean()) / (r.std() + 1e-6), abs=1e-4)
            assert np.argsort(adv).tolist() == np.argsort(r).tolist()
        assert (a.advantages[g].numpy()[buf["flipped"][rows]] == 0).all()
    assert a.informative.any()  # hashed scores differ within a group
    dreamer.cfg = resolve(
        DreamConfig, "dream", "tiny", {**overrides, "judge.allow_oracle": True, "reward": "verdict"}
    )
    verdict = dreamer.rollout_round(dreamer.draw(0, states=[0, 1]))
    assert np.array_equal(verdict["reward"], verdict["success"].astype(np.float32))
    with pytest.raises(ValueError, match="reward must be score or verdict"):
        resolve(DreamConfig, "dream", "tiny", {**overrides, "reward": "soft"})


def test_verify_flips_what_a_redraw_does_not_confirm_at_dnv_own_threshold():
    from rawdream.rl.dnv import verify

    success = np.array([True, True, False, True])
    redraw = {
        0: Verdict(success=True, score=0.6),
        1: Verdict(success=True, score=0.9),
        3: Verdict(success=None),
    }
    asked = []

    def reimagine(idx, k):
        asked.append(idx.tolist())
        return np.stack([np.full((2, 4, 4, 3), i, np.uint8) for i in idx])

    def judge(videos, idx, k):
        return [redraw[int(i)] for i in idx]

    own = verify(success, 1, reimagine, judge)  # the judge's verdict confirms; an abstain does not
    assert asked == [[0, 1, 3]]  # only judged successes are redrawn
    assert own.flipped.tolist() == [False, False, False, True]
    assert own.abstained.tolist() == [False, False, False, True]  # an abstain is told apart from a refusal
    assert own.kept(success).tolist() == [True, True, False, False]
    assert own.scores == {0: [0.6], 1: [0.9], 3: [0.0]} and own.videos[1][0, 0, 0, 0] == 1
    strict = verify(success, 1, reimagine, judge, threshold=0.8)  # DNV's own bar, above the judge's
    assert strict.flipped.tolist() == [True, False, False, True]
    twice = verify(
        success, 2, reimagine, lambda v, idx, k: [redraw[int(i)] if k == 0 else Verdict(False) for i in idx]
    )
    assert twice.flipped[[0, 1, 3]].all() and len(twice.scores[0]) == 2  # every redraw must confirm


def test_a_flip_as_a_failure_scores_the_flipped_success_as_its_group_failures_are(tiny_dreamer):
    """--dnv_flip=failure: a flipped success stays in the loss with reward 0 (verdict) or its lowest score over the
    draws (score), where the paper's default leaves it out of its group's statistics."""
    overrides = {"task": "reach", "split.targets": ["push"], "group_size": 8, "judge.backend": "oracle"}
    for reward in ("verdict", "score"):
        judge = _ScoreOnPixels()
        paper = tiny_dreamer({**overrides, "reward": reward}, judge=judge)
        strict = tiny_dreamer({**overrides, "reward": reward, "dnv_flip": "failure"}, judge=judge)
        a, b = (d.rollout_round(d.draw(0, states=[0, 1])) for d in (paper, strict))
        assert np.array_equal(a["flipped"], b["flipped"]) and a["flipped"].any()  # same draws, same flips
        first = np.array([v.score for v in judge(list(b["video"]), ["-"] * 16)])
        for i in np.nonzero(b["flipped"])[0]:
            second = judge([b["second"][i]], ["-"])[0].score
            assert b["reward"][i] == (min(first[i], second) if reward == "score" else 0.0)
        assert np.array_equal(a["reward"][~a["flipped"]], b["reward"][~b["flipped"]])
        assert not paper.reliable(a)[a["flipped"]].any() and strict.reliable(b)[b["flipped"]].all()


def test_dnv_sampler_gives_the_redraws_their_own_sampler_over_the_runs(tiny_dreamer, tiny_wm):
    from rawdream.world_model.train import load_world_model

    wm = load_world_model(tiny_wm)
    own = wm.cfg.sampler
    d = tiny_dreamer({"sampler.steps": own.steps + 2, "dnv_sampler.context_level": 600.0}, world_model=wm)
    # first draws: the run's sampler; redraws: the run's with the redraw's keys over it; weights shared
    assert d.wm.cfg.sampler.steps == own.steps + 2 and d.wm.cfg.sampler.context_level == own.context_level
    assert d.verifier.cfg.sampler.steps == own.steps + 2 and d.verifier.cfg.sampler.context_level == 600.0
    assert d.verifier.dynamics is wm.dynamics and wm.cfg.sampler == own
    with pytest.raises(ValueError, match="changes nothing in the redraws' sampler"):
        tiny_dreamer({"dnv_sampler.context_level": own.context_level}, world_model=wm)


def test_dream_sets_its_world_model_sampler_in_one_place(tiny_dreamer, tiny_wm):
    """--sampler.* is dream's sampler section: imagination (first draws and DNV's redraws) runs the world model with
    it, on the same weights; the caller's world model keeps its own sampler."""
    from dataclasses import replace

    from rawdream.world_model.train import load_world_model

    wm = load_world_model(tiny_wm)
    wm.cfg.sampler = replace(wm.cfg.sampler, anchor_noise=False)  # a model trained with a sampler of its own
    own = wm.cfg.sampler.steps
    assert (
        tiny_dreamer(world_model=wm).source.imagination.wm.cfg.sampler.steps == own
    )  # unset: the model's own
    d = tiny_dreamer({"sampler.steps": own + 2}, world_model=wm)
    used = d.source.imagination.wm
    assert used.cfg.sampler.steps == own + 2 and d.wm is used and wm.cfg.sampler.steps == own
    assert used.dynamics is wm.dynamics  # a view, not a copy of the weights
    assert used.cfg.sampler.anchor_noise is False  # what --sampler.* does not name stays the model's own
    with pytest.raises(ValueError, match="a given imagination brings its own world model"):
        tiny_dreamer({"sampler.steps": own + 2}, world_model=wm, imagination=object())


def test_re_imagining_with_the_first_draws_seeds_reproduces_it(tiny_dreamer):
    """DNV's second look differs from the first only by its noise: the same actions from the same first frames under
    the first draw's own world-model seeds give back the first draw's video exactly."""
    from rawdream.rl.rollouts import Draw

    d = tiny_dreamer()
    draw = Draw(it=3, rows=[0, 0, 1, 1])
    buf = d.source(draw)
    first, prop0 = d.source._first(draw.rows)
    again = d.source.imagination.reimagine(first, prop0, buf["actions"], draw.seeds("wm-noise", d.cfg.seed))
    np.testing.assert_array_equal(again, buf["video"])
    other = d.source.redraw(draw, buf["actions"], np.arange(4), k=0)  # a redraw: other noise, other frames
    assert (other[:, 1:] != buf["video"][:, 1:]).any()
    np.testing.assert_array_equal(other[:, 0], buf["video"][:, 0])  # the first frame is real in both


def test_init_from_a_dataset_starts_rl_from_its_first_frames(tiny_dreamer, play_data, tiny_judge, reach_demo):
    """--init-from: a real robot has no simulator to reset, so RL starts from the first frames of a dataset's
    episodes; imagination runs from them, and the simulator refuses them (it can only reset to its own seeds)."""
    from rawdream.data.lerobot import LeRobotDataset

    judge = {"judge.backend": "generalist", "judge.path": str(tiny_judge), "judge.reference": str(reach_demo)}
    d = tiny_dreamer(judge, init_from=str(play_data))
    ds = LeRobotDataset(play_data)
    assert len(d.init) == min(d.cfg.init_states, ds.num_episodes) and all(s["seed"] is None for s in d.init)
    for e, state in enumerate(d.init):
        np.testing.assert_array_equal(state["image"], ds.decode_episode_frames(e, ds.default_image_key())[0])
    _, buf = d.iteration(0)
    starts = {d.init[i]["image"].tobytes() for i in range(len(d.init))}
    assert all(v[0].tobytes() in starts for v in buf["video"])  # every rollout starts from a dataset frame
    with pytest.raises(ValueError, match="cannot start from --init-from"):
        tiny_dreamer({"env_mode": "sim"}, init_from=str(play_data))
