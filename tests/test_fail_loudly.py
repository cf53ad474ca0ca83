"""Fail loudly, never reward silently: each way a run could go wrong quietly ends in a one-line error and a
non-zero exit, or in an explicit abstain the run counts and acts on. The served-judge cases run against a real
HTTP server on 127.0.0.1 that misbehaves on purpose."""

import json
import logging
import re
from dataclasses import replace

import numpy as np
import pytest

from loopback import LoopbackVLM, RawResponse
from rawdream.cli import main
from rawdream.config import ConfigError, build
from rawdream.io import ModelFileError, load_weights, redact_url
from rawdream.reward.base import JudgeConfig, JudgeUnavailableError, Verdict, check_abstains, judge_config
from rawdream.reward.openai import OpenAIJudge


def _videos(n, t=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (t, 16, 16, 3), dtype=np.uint8) for _ in range(n)]


def _judge(server, **kw):
    return OpenAIJudge(
        judge_config(**{"backend": "openai", "url": server.url, "backoff": 0.01, "timeout": 2.0, **kw})
    )


def _one_line_error(capsys, *needles):
    """Exactly one error line (progress bars aside), no traceback, naming every needle."""
    err = capsys.readouterr().err
    lines = [x[x.index("rawdream ") :] for x in re.split(r"[\r\n]", err) if "error:" in x]
    assert "Traceback" not in err and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- the served-judge client --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "Yes",
        {"choices": [{"message": "Yes"}]},
        {"choices": []},
        {"choices": [{"message": {"content": 5}}]},
        {"error": "overloaded"},
        b"\xff\xfe not utf-8",
    ],
)
def test_a_200_that_is_not_a_chat_completion_is_an_abstain_not_a_crash(body):
    with LoopbackVLM(lambda req: RawResponse(200, body)) as server:
        judge = _judge(server, retries=1)
        v = judge(_videos(1), ["x"])[0]
    assert v.success is None and v.raw.startswith("abstain") and judge.stats["abstains"] == 1


@pytest.mark.parametrize(
    "text",
    [
        "It was not a success.",
        "I cannot tell from 1 frame.",
        "Based on frame 1 and frame 4, the drawer remains closed.",
        "No doubt, it succeeded.",
        "Based on frame 1",
        "1",
        "0",
        "Yesterday",
    ],
)
def test_prose_is_never_read_as_a_verdict(text):
    with LoopbackVLM(lambda req: (text, 0.9)) as server:  # logprobs present too: they must not decide
        judge = _judge(server)
        v = judge(_videos(1), ["x"])[0]
    assert v.success is None and v.raw == text and judge.stats["abstains"] == 1


def test_the_threshold_decides_a_scored_verdict_as_it_does_in_evaluation():
    with LoopbackVLM(lambda req: ("Yes", 0.8)) as server:
        assert _judge(server, threshold=0.9)(_videos(1), ["x"])[0].success is False
        assert _judge(server, threshold=0.5)(_videos(1), ["y"])[0].success is True
    with LoopbackVLM(lambda req: ("No", 0.3)) as server:  # P(yes) 0.3 clears a 0.2 threshold
        v = _judge(server, threshold=0.2)(_videos(1), ["x"])[0]
        assert v.success is True and v.score == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("status", "fix"), [(401, "rejected the key"), (404, "API root"), (400, "--judge.model")]
)
def test_a_4xx_other_than_429_stops_the_run_at_once(status, fix):
    with LoopbackVLM(lambda req: RawResponse(status, {"error": "no"})) as server:
        judge = _judge(server, retries=3)
        with pytest.raises(JudgeUnavailableError, match=f"HTTP {status}.*{fix}"):
            judge(_videos(1), ["x"])
        assert len(server.requests) == 1  # no retry can fix a configuration error


def test_429_is_retried():
    with LoopbackVLM(lambda req: RawResponse(429, {}) if len(server.requests) < 2 else "yes") as server:
        judge = _judge(server, retries=3)
        assert judge(_videos(1), ["x"])[0].success is True and judge.stats["retries"] == 1


def test_the_probe_names_the_url_and_the_fix(caplog):
    dead = OpenAIJudge(
        judge_config("openai", url="http://me:sk-SECRET@127.0.0.1:9/v1", retries=1, backoff=0.01, timeout=0.5)
    )
    with pytest.raises(JudgeUnavailableError, match=r"http://\*\*\*@127.0.0.1:9/v1.*does not answer") as e:
        dead.probe()
    assert "SECRET" not in str(e.value)
    with LoopbackVLM(lambda req: "Yes") as server:
        _judge(server).probe()  # answers: no error
    with (
        LoopbackVLM(lambda req: RawResponse(200, [])) as server,
        pytest.raises(JudgeUnavailableError, match="badly"),
    ):
        _judge(server).probe()


def test_url_credentials_are_sent_as_the_key_and_never_shown(caplog, tmp_path):
    assert redact_url("http://user:KEY@host:8000/v1") == "http://***@host:8000/v1"
    assert redact_url("https://host/v1?api_key=KEY&x=1") == "https://host/v1?api_key=***&x=1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    caplog.set_level(logging.DEBUG)
    with LoopbackVLM(lambda req: "maybe") as server:
        url = server.url.replace("http://", "http://me:sk-SECRET@")
        judge = OpenAIJudge(judge_config("openai", url=url, backoff=0.01, timeout=2.0))
        judge(_videos(1), ["x"])  # abstains: a warning is logged
        assert server.headers[-1]["Authorization"] == "Bearer sk-SECRET"
    assert (
        "SECRET" not in caplog.text and "SECRET" not in repr(judge.stats) and "SECRET" not in judge.shown_url
    )
    from rawdream.config import save_config

    save_config(judge_config("openai", url=url), tmp_path)
    assert "SECRET" not in (tmp_path / "config.yaml").read_text()


def test_abstains_stop_a_batch_past_the_configured_fraction():
    cfg = JudgeConfig()
    verdicts = [Verdict(success=None, raw="abstain: unreachable")] * 3 + [Verdict(success=True)]
    assert check_abstains(verdicts, cfg, "iteration 1") == 3  # default: only when all abstain
    with pytest.raises(JudgeUnavailableError, match="abstained on 3 of 4 verdicts in iteration 1"):
        check_abstains(verdicts, JudgeConfig(abstain_stop=0.5), "iteration 1")
    with pytest.raises(JudgeUnavailableError, match="unreachable"):
        check_abstains(verdicts[:3], cfg, "iteration 2")


def test_a_judge_setting_its_backend_does_not_have_is_refused_not_ignored():
    """Each backend's settings are its own config class (in its file): one another backend has is refused by
    name, naming the backends that have it - a reference demo given to the hf judge is not silently ignored."""
    from rawdream.config import ConfigError
    from rawdream.reward.base import JUDGES, for_backend, make_judge
    from rawdream.reward.generalist.judge import GeneralistJudgeConfig
    from rawdream.reward.openai import OpenAIJudgeConfig

    with pytest.raises(
        ConfigError,
        match=r"--judge.reference is not a setting of the hf judge \(it cannot compare with a reference "
        r"demonstration\); drop it, or choose a backend that has it: --judge.backend=generalist\|openai",
    ):
        judge_config("hf", path="/models/qwen", reference="demos")
    with pytest.raises(ConfigError, match=r"--judge.url is not a setting of the generalist judge.*=openai$"):
        judge_config("generalist", path="j", url="http://example.org/v1")
    with pytest.raises(
        ConfigError, match=r"--judge.path is not a setting of the oracle judge.*generalist\|hf"
    ):
        judge_config("oracle", path="j")
    with pytest.raises(ConfigError, match=r"unknown config key --judge.pth \(did you mean --judge.path\?\)"):
        judge_config("generalist", pth="j")
    assert isinstance(judge_config("openai", url="http://x/v1"), OpenAIJudgeConfig)
    # the shared class built in code for a backend becomes that backend's config inside any section
    from rawdream.rl.dream import DreamConfig

    assert isinstance(build(DreamConfig, {"judge": JudgeConfig(backend="openai")}).judge, OpenAIJudgeConfig)
    # a backend switched in code keeps the shared settings and drops the old backend's own
    cfg = for_backend(judge_config("openai", url="http://x/v1", threshold=0.7), "oracle", allow_oracle=True)
    assert (cfg.backend, cfg.threshold, hasattr(cfg, "url")) == ("oracle", 0.7, False)
    assert make_judge(cfg).name == "oracle"
    blind = for_backend(judge_config(path="judge", reference="demos"), "generalist", path="judge_blind")
    assert isinstance(blind, GeneralistJudgeConfig) and (blind.path, blind.reference) == ("judge_blind", "")
    # a config whose backend was replaced in code is rebuilt as that backend's, refusing what it lacks
    with pytest.raises(ConfigError, match="--judge.url is not a setting of the oracle judge"):
        make_judge(replace(judge_config("openai"), backend="oracle", allow_oracle=True))

    @JUDGES.register("undeclared")  # a plug-in without settings of its own gets the shared section
    def _make(cfg):
        return cfg

    try:
        assert type(make_judge(JudgeConfig(backend="undeclared", threshold=0.3))) is JudgeConfig
    finally:
        JUDGES.unregister("undeclared")


def test_metrics_with_no_decided_verdict_are_undefined_not_zero():
    from rawdream.eval.judge_accuracy import _num, judge_metrics

    m = judge_metrics([Verdict(success=None)] * 3, ["a"] * 3, np.array([1, 0, 1]), ["a"], 0.5)["a"]
    assert m["abstains"] == 3 and m["n"] == 0
    assert all(np.isnan(m[k]) for k in ("precision", "recall", "f1", "auroc", "base_rate"))
    assert _num(m["precision"], 5).strip() == "n/a"


# -- a run whose judge cannot judge stops ---------------------------------------------------------------------
def _dream_args(tiny_policy, tiny_wm, out, url):
    return [
        "dream",
        "--task",
        "reach",
        "--policy",
        str(tiny_policy),
        "--wm",
        str(tiny_wm),
        "--preset",
        "tiny",
        "--split.targets=push",
        "--judge.backend=openai",
        f"--judge.url={url}",
        "--judge.retries=0",
        "--judge.timeout=2",
        "--out",
        str(out),
    ]


def test_dream_against_a_dead_or_useless_vlm_exits_non_zero(tiny_policy, tiny_wm, tmp_path, capsys):
    assert main(_dream_args(tiny_policy, tiny_wm, tmp_path / "dead", "http://127.0.0.1:9/v1")) == 2
    _one_line_error(capsys, "127.0.0.1:9", "does not answer")
    assert not (tmp_path / "dead" / "policy.json").exists()
    # a server that answers the probe, then only prose: every verdict of iteration 1 abstains -> stop
    with LoopbackVLM(lambda req: "Yes" if "probe" in LoopbackVLM.text(req) else "Hard to say.") as server:
        assert main(_dream_args(tiny_policy, tiny_wm, tmp_path / "prose", server.url)) == 2
    _one_line_error(capsys, "abstained on 4 of 4 verdicts in iteration 1")
    assert not (tmp_path / "prose" / "policy.json").exists()


def test_eval_judge_against_a_judge_that_only_abstains_exits_non_zero(tmp_path, capsys):
    with LoopbackVLM(lambda req: "Yes" if "probe" in LoopbackVLM.text(req) else "Hard to say.") as server:
        argv = ["eval-judge", "--vlm-url", server.url, "--preset", "tiny", "--split.targets=reach"]
        assert main([*argv, "--judge.retries=0", "--out", str(tmp_path / "e")]) == 2
    _one_line_error(capsys, "abstained on 2 of 2 verdicts in eval-judge (openai, real videos)")
    assert not (tmp_path / "e" / "judge_eval.json").exists()


# -- config values are checked against their meaning, before anything is written -----------------------------
@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["pretrain-wm", "--data", "{tmp}/d", "--ae_steps=-5"], "--ae_steps=-5"),
        (["pretrain-wm", "--data", "{tmp}/d", "--ae_batch=0"], "--ae_batch=0"),
        (["train-policy", "--stage", "base", "--data", "{tmp}/d", "--steps=-3"], "--steps=-3"),
        (["dream", "--task", "reach", "--policy", "{tmp}/p", "--epochs=-1"], "--epochs=-1"),
        (["dream", "--task", "reach", "--policy", "{tmp}/p", "--dnv_redraws=-1"], "--dnv=false"),
        (["dream", "--task", "reach", "--policy", "{tmp}/p", "--minibatch=0"], "--minibatch=0"),
        (
            [
                "dream",
                "--task",
                "reach",
                "--policy",
                "{tmp}/p",
                "--vlm-url=http://h/v1",
                "--judge.timeout=-1",
            ],
            "--judge.timeout",
        ),
        (
            [
                "dream",
                "--task",
                "reach",
                "--policy",
                "{tmp}/p",
                "--judge.backend=openai",
                "--judge.retries=-1",
            ],
            "--judge.retries",
        ),
        (["dream", "--task", "reach", "--policy", "{tmp}/p", "--judge.threshold=1.5"], "in [0, 1]"),
        (["eval-policy", "--policy", "{tmp}/p", "--episodes=0"], "--episodes=0"),
        (["collect", "play", "--max_steps=0"], "--max_steps=0"),
        (["run", "--wm.dyn_batch=0"], "--wm.dyn_batch=0"),
    ],
)
def test_nonsense_numbers_are_refused_by_name_and_nothing_is_written(argv, flag, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--out", str(out)]
    assert main(argv) == 2
    _one_line_error(capsys, flag, "out of range")
    assert not out.exists()


def test_ranges_apply_to_configs_built_in_code():
    from rawdream.rl.dream import DreamConfig

    with pytest.raises(ConfigError, match=r"--judge.abstain_stop=0.0 .* in \(0, 1\]"):
        build(DreamConfig, {"judge": {"abstain_stop": 0}})
    with pytest.raises(ConfigError, match="--judge.concurrency=0"):
        OpenAIJudge(judge_config("openai", concurrency=0))


# -- model files ----------------------------------------------------------------------------------------------
def test_damaged_model_files_are_refused_with_the_fix(tiny_policy, tmp_path, capsys):
    import shutil

    pol = tmp_path / "pol"
    shutil.copytree(tiny_policy, pol)
    weights = pol / "policy.safetensors"
    meta = json.loads((pol / "policy.json").read_text())
    assert meta["files"]["policy.safetensors"]["sha256"]  # the checksum is saved beside the weights
    good = weights.read_bytes()
    # 4 KB overwritten inside the tensor data, header intact: the checksum catches it
    bad = bytearray(good)
    bad[-6000:-2000] = b"\xff" * 4000  # 0xffffffff is NaN in float32
    weights.write_bytes(bytes(bad))
    args = [
        "eval-policy",
        "--policy",
        str(pol),
        "--tasks=reach",
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "e"),
    ]
    assert main(args) == 2
    _one_line_error(capsys, "policy.safetensors", "checksum")
    # the same damage in a file saved before checksums existed: the NaN weights are refused
    meta["files"] = {}
    (pol / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="non-finite"):
        load_weights(weights)
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ModelFileError, match="truncated or not a safetensors file"):
        load_weights(weights)
    weights.write_bytes(np.random.default_rng(0).bytes(5000))  # random bytes
    assert main(args) == 2
    _one_line_error(capsys, "not a safetensors file")


# -- data ------------------------------------------------------------------------------------------------------
def test_demos_are_collected_until_success_or_a_clear_error(tmp_path, capsys):
    from rawdream.data.collect import CollectConfig, extra_demo_specs

    cfg = build(
        CollectConfig, {"kind": "demos", "tasks": ["reach"], "episodes_per_task": 2, "max_demo_tries": 3}
    )
    extra = extra_demo_specs(cfg, successes={"reach": 1}, tried={"reach": 2})
    assert [s.seed - extra[0].seed for s in extra] == [0] and extra[0].seed == 300_002  # the next seed
    assert len(extra_demo_specs(cfg, {"reach": 0}, {"reach": 2})) == 2
    assert extra_demo_specs(cfg, {"reach": 0}, {"reach": 6}) == []  # budget spent: 2 x 3 tries
    out = tmp_path / "d"
    argv = [
        "collect",
        "demos",
        "--preset",
        "tiny",
        "--task",
        "pick-place",
        "--max_steps=8",
        "--max_demo_tries=2",
    ]
    assert main([*argv, "--out", str(out)]) == 2
    _one_line_error(capsys, "pick-place: 0 successful of 2 tried", "--split.targets")


def test_run_checks_what_its_stages_need_before_it_starts(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--preset", "tiny", "--dream_tasks=reach", "--out", str(out)]) == 2
    _one_line_error(capsys, "dream_tasks names 'reach'", "not a target")
    assert not out.exists()
    argv = [
        "run",
        "--preset",
        "tiny",
        "--dream.judge.backend=openai",
        "--dream.judge.url=http://127.0.0.1:9/v1",
    ]
    assert main([*argv, "--dream.judge.retries=0", "--dream.judge.timeout=0.5", "--out", str(out)]) == 2
    _one_line_error(capsys, "does not answer")
    assert not out.exists()
    # the judge check scores pretraining tasks only, with a demonstration to show the judge
    check = ["run", "--preset", "tiny", "--judge_candidates=2", "--out", str(out)]
    assert main([*check, "--judge_check.tasks=[sweep-into]"]) == 2
    _one_line_error(capsys, "judge-check tasks sweep-into: not pretraining tasks", "--judge_check.tasks=[")
    assert main([*check, "--judge_check.tasks=[push]"]) == 2
    _one_line_error(capsys, "--judge_check.tasks push: no pretraining demonstration")
    assert main(["run", "--preset", "tiny", "--judge_candidates=0", "--out", str(out)]) == 2
    _one_line_error(capsys, "--judge_candidates=0: at least 1")
    assert not out.exists()


def test_info_verify_finds_a_damaged_dataset(play_data, tmp_path, capsys):
    import shutil

    ds = tmp_path / "play"
    shutil.copytree(play_data, ds)
    assert main(["info", str(ds), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out
    video = next(ds.rglob("*.mp4"))
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    assert main(["info", str(ds), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "damaged" in err and "Traceback" not in err
    data = next((ds / "data").rglob("*.parquet"))
    data.write_bytes(b"garbage" * 100)
    assert main(["info", str(ds)]) == 2
    _one_line_error(capsys, "not a readable parquet file")


def test_a_resumed_training_logs_each_step_once(tmp_path):
    from rawdream.training import MetricsLogger

    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in (10, 20, 30):
        log.log(step, {"loss": step}, stage="dyn")
    log.log(30, {"psnr": 1.0}, stage="samples")
    log.rewind(20, ("dyn",))  # killed after the checkpoint at 20: steps past it come again
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in rows] == [("dyn", 10), ("dyn", 20), ("samples", 30)]


def test_a_custom_split_is_saved_under_its_own_name():
    from rawdream.data.collect import CollectConfig

    cfg = build(CollectConfig, {"kind": "demos", "split": {"targets": ["reach"]}})
    assert cfg.split.name == "custom"
