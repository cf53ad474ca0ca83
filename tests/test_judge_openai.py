"""The openai judge against a real HTTP server on 127.0.0.1 that speaks chat-completions with scripted answers."""

import logging
import threading

import numpy as np
import pytest

from loopback import LoopbackVLM, RawResponse
from rawdream.reward.base import FrameSelection, Verdict, judge_config
from rawdream.reward.openai import OpenAIJudge, parse_answer


def _videos(n, t=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (t, 16, 16, 3), dtype=np.uint8) for _ in range(n)]


def _judge(server, **kw):
    return OpenAIJudge(
        judge_config(**{"backend": "openai", "url": server.url, "backoff": 0.01, "timeout": 2.0, **kw})
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", True),
        ("no", False),
        ("YES.", True),
        ("**No**", False),
        (" yes, the drawer is open", True),
        ('{"success": true}', True),
        ('{"answer": "No"}', False),
        ("I cannot tell", None),
        ("", None),
        ("It could be yes or no", None),
        ("The task failed", None),  # prose: no verdict is read out of it (tests/test_fail_loudly.py)
        ("Yes - the drawer is open", True),
        ('"No."', False),
    ],
)
def test_parsing_of_varied_answers(text, expected):
    assert parse_answer(text) is expected


def test_images_arrive_as_base64_png_and_instruction_in_prompt():
    with LoopbackVLM(
        lambda req: ("Yes", 0.9) if "open the drawer" in LoopbackVLM.text(req) else ("No", 0.1)
    ) as server:
        judge = _judge(server, frames=FrameSelection(middle=2))
        out = judge(_videos(2), ["open the drawer", "close the door"])
        assert [v.success for v in out] == [True, False]
        assert out[0].score == pytest.approx(0.9)
        assert len(server.images(server.requests[0])) == 4  # first, last and 2 in between
        assert server.requests[0]["model"] == "Qwen3-VL-8B-Instruct"


def test_retry_on_500_then_success():
    with LoopbackVLM(lambda req: "no", fail_first=2) as server:
        judge = _judge(server, retries=3)
        assert judge(_videos(1), ["x"])[0].success is False
        assert judge.stats["retries"] == 2 and judge.stats["abstains"] == 0


def test_retry_on_timeout_then_success():
    with LoopbackVLM(lambda req: "yes", slow_first=1, slow_delay=4.0) as server:
        # the retry has 1.5 s to answer, room for a busy machine (the suite runs two processes on two cores)
        judge = _judge(server, retries=2, timeout=1.5)
        assert judge(_videos(1), ["x"])[0].success is True
        assert judge.stats["retries"] == 1


def test_abstain_after_last_retry_and_on_unreachable_endpoint(caplog):
    with LoopbackVLM(fail_first=100) as server:
        judge = _judge(server, retries=2)
        v = judge(_videos(1), ["x"])[0]
        assert v.success is None and v.abstained and judge.stats["abstains"] == 1
        assert len(server.requests) == 3
    judge = OpenAIJudge(
        judge_config("openai", url="http://127.0.0.1:9/v1", retries=1, backoff=0.01, timeout=0.5)
    )
    v = judge(_videos(1), ["x"])[0]
    assert v.success is None and "unreachable" in v.raw


def test_malformed_answer_is_an_explicit_abstain():
    with LoopbackVLM(lambda req: "Maybe, hard to say") as server:
        judge = _judge(server)
        v = judge(_videos(1), ["x"])[0]
        assert (
            v.success is None
            and judge.stats["abstains"] == 1
            and "unparseable" in next(iter(judge.stats["errors"]))
        )


def test_content_hash_cache(tmp_path):
    with LoopbackVLM(lambda req: "yes") as server:
        judge = _judge(server, cache_dir=str(tmp_path / "cache"))
        videos = _videos(2)
        judge(videos, ["a", "b"])
        judge(videos, ["a", "b"])
        assert len(server.requests) == 2 and judge.stats["cache_hits"] == 2
        judge(videos, ["a", "c"])  # a different instruction is a different request
        assert len(server.requests) == 3
        fresh = _judge(server, cache_dir=str(tmp_path / "cache"))  # the disk cache survives the process
        fresh(videos[:1], ["a"])
        assert len(server.requests) == 3


def test_concurrency_limit():
    with LoopbackVLM(lambda req: "yes", delay=0.5) as server:  # long enough for 3 at once
        judge = _judge(server, concurrency=3)
        judge(_videos(9, seed=1), [f"task {i}" for i in range(9)])
        assert server.max_active == 3


def test_api_key_is_sent_but_never_logged(monkeypatch, caplog):
    monkeypatch.setenv("RAWDREAM_VLM_API_KEY", "sk-secret-123")
    caplog.set_level(logging.DEBUG)
    with LoopbackVLM(fail_first=1) as server:
        judge = _judge(server, retries=0)
        judge(_videos(1), ["x"])  # abstains and logs a warning
        judge(_videos(1), ["y"])
        assert server.headers[-1]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in caplog.text and "sk-secret" not in repr(judge.stats)
    assert isinstance(judge(_videos(0), []), list)
    assert threading.active_count() < 50
    assert Verdict(success=None).abstained


def test_question_comes_after_the_frames_and_a_reference_demo_is_shown_first(pretrain_demos):
    with LoopbackVLM(lambda req: "yes") as server:
        judge = _judge(server, frames=FrameSelection(middle=2), reference=str(pretrain_demos))
        assert judge(_videos(1), ["close the drawer"])[0].success is True
        content = server.requests[0]["messages"][0]["content"]
        kinds = [p["type"] for p in content]
        # instruction, reference text + its 2 frames, video text + 4 frames, the question last
        assert kinds == ["text", "text", "image_url", "image_url", "text", *["image_url"] * 4, "text"]
        assert "close the drawer" in content[0]["text"] and "Yes or No" in content[-1]["text"]
        assert len(server.images(server.requests[0])) == 6
        with pytest.raises(ValueError, match="no reference demonstration"):
            judge(_videos(1), ["open the window"])


def _completion(top_logprobs: list[tuple[str, float]] | None) -> RawResponse:
    choice = {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "True"}}
    if top_logprobs is not None:
        listed = [{"token": t, "logprob": lp} for t, lp in top_logprobs]
        choice["logprobs"] = {"content": [{**listed[0], "top_logprobs": listed}]}
    return RawResponse(200, {"id": "c", "object": "chat.completion", "choices": [choice]})


def test_top_scoring_reads_the_affirmative_probability_after_a_statement():
    """TOPReward-style: the statement comes after the frames, one token is asked for, and P("True") itself -
    not renormalised against "False" - is the score; a "True" missing from the listed tokens bounds it."""
    import math

    answers = {
        "open the drawer": [("True", math.log(0.7)), ("False", math.log(0.2))],
        "close the door": [("False", math.log(0.5)), ("True", math.log(0.3)), ("Yes", math.log(0.1))],
        "push the puck": [("False", math.log(0.9)), ("No", math.log(0.05))],  # True not listed: <= 0.05
    }

    def answer(req):
        text = LoopbackVLM.text(req)
        return _completion(next(v for k, v in answers.items() if k in text))

    with LoopbackVLM(answer) as server:
        out = _judge(server, scoring="top")(_videos(3), list(answers))
        req = server.requests[0]
        last = req["messages"][0]["content"][-1]
        assert last["type"] == "text" and "True or False" in last["text"] and req["max_tokens"] == 1
        assert req["top_logprobs"] == 20
    assert [v.success for v in out] == [True, False, False]
    assert [v.score for v in out] == pytest.approx([0.7, 0.3, 0.05])  # 0.3, not 0.3 / (0.3 + 0.5)
    assert "not in the top logprobs" in out[2].raw


def test_top_scoring_abstains_without_logprobs_and_when_the_bound_cannot_decide():
    import math

    with LoopbackVLM(lambda req: _completion(None)) as server:
        v = _judge(server, scoring="top", retries=0)(_videos(1), ["open the drawer"])[0]
    assert v.success is None and "needs them" in v.raw
    with LoopbackVLM(lambda req: _completion([("False", math.log(0.6))])) as server:  # P(True) <= 0.6
        v = _judge(server, scoring="top", retries=0)(_videos(1), ["open the drawer"])[0]
    assert v.success is None and "not below the threshold" in v.raw
