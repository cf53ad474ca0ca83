"""``openai`` judge: any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, Ollama, LM Studio).

Frames go as base64 PNG image parts after the instruction (and, with ``--judge.reference DEMOS``, after the first and
last frame of a demonstration of the task, as an in-context example); the question comes last and asks for a
one-word verdict. When the
server returns logprobs, the score is P("yes") / (P("yes") + P("no")) over the first token. Requests time out,
are retried with exponential backoff and jitter on timeouts, connection errors, 429 and 5xx, run at most
``concurrency`` at a time, and identical requests are answered from a content-hash cache. After the last retry
the verdict is an explicit abstain (counted in :attr:`stats`, the raw answer kept) - never a silent 0 reward, never
a crash of a long RL run on a strange response. What no retry can fix stops the run instead: a 4xx other than 429
(bad key, wrong path, unknown model) raises :class:`JudgeUnavailableError`, and :meth:`probe` sends one real
request before a long run starts. The API key is read from an environment variable and never logged or cached;
credentials inside the URL are redacted wherever it is shown.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rawdream.io import redact_url
from rawdream.reward.base import JudgeConfig, JudgeUnavailableError, Verdict, register_judge

log = logging.getLogger("rawdream.judge.openai")

# the instruction, (optionally) a reference demonstration, the frames, and the question last
PROMPT = 'A robot arm was given the instruction: "{instruction}".'
PROMPT_REFERENCE = "For reference, the first and the last frame of a demonstration that accomplished it:"
PROMPT_VIDEO = "The frames of the robot's video, in time order from the first to the last:"
PROMPT_QUESTION = "Did the robot accomplish the instruction? Answer with one word: Yes or No."
# scoring "top": the frames first, then a statement whose truth the next token rates (TOPReward's form)
PROMPT_STATEMENT = (
    'The frames above show a robot arm completing the task "{instruction}". Is this statement True or False? '
    "The statement is"
)
AFFIRMATIVE = "True"

#: how a VLM judge (openai, hf) turns its next-token distribution into a score: "yes_no" - asked a Yes/No
#: question, P(Yes) / (P(Yes) + P(No)); "top" - TOPReward-style (Chen et al. 2026): told that the video completes
#: the instruction, the probability of the affirmative "True" itself (its log-likelihood, not renormalised
#: against "False"), zero-shot
SCORINGS = ("yes_no", "top")


def check_scoring(scoring: str) -> None:
    if scoring not in SCORINGS:
        raise ValueError(f"judge.scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")


@dataclass
class OpenAIJudgeConfig(JudgeConfig):
    RANGES: ClassVar[dict] = {
        **JudgeConfig.RANGES,
        "timeout": (">0", "seconds"),
        "retries": (">=0", "0: one try, no retry"),
        "backoff": (">=0", "seconds"),
        "concurrency": ">=1",
    }

    url: str = "http://127.0.0.1:8000/v1"  # base URL of an OpenAI-compatible server (vLLM, SGLang, ...)
    model: str = "Qwen3-VL-8B-Instruct"
    api_key_env: str = "RAWDREAM_VLM_API_KEY"  # the key is read from this environment variable, never logged
    scoring: str = "yes_no"  # see SCORINGS
    # demos dataset: the first and last frame of a demo of the instructed task go in the prompt
    reference: str = ""
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5  # seconds; doubled per retry, plus up to 50% random jitter
    concurrency: int = 8
    cache_dir: str = ""  # content-hash cache of answers ("" = in memory only)

    def validate(self) -> None:
        check_scoring(self.scoring)


def encode_png(frame: np.ndarray) -> str:
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, np.asarray(frame, dtype=np.uint8), extension=".png")
    return base64.b64encode(buf.getvalue()).decode()


# A verdict is read only from an answer that *is* Yes or No: the word first (after markdown, quotes or
# whitespace), then the end of the answer or punctuation. Anything else - prose, "No doubt, it succeeded.",
# "Based on frame 1", "It was not a success." - is an abstain with the raw answer kept: a false success is the
# worst error an RL reward can make, and no yes/no word hunt through prose can rule it out.
_VERDICT = re.compile(r"^[\s*_`\"'(\[]*(yes|no)[\s*_`\"')\]]*(?:$|[.,!;:\-\u2013\u2014])", re.IGNORECASE)


def parse_answer(text: str) -> bool | None:
    """'Yes', '**no**', 'YES.', 'Yes - the drawer is open', '{"success": true}', '{"answer": "No"}' -> bool;
    anything that is not a plain Yes or No first (prose, digits, other words) -> None (abstain)."""
    t = (text or "").strip()
    if t.startswith("{"):
        try:
            obj = json.loads(t)
        except json.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        for key in ("success", "answer", "verdict"):
            if key in obj:
                v = obj[key]
                return v if isinstance(v, bool) else parse_answer(v) if isinstance(v, str) else None
        return None
    m = _VERDICT.match(t)
    return None if m is None else m.group(1).lower() == "yes"


def answer_text(body: Any) -> str:
    """The assistant's text of a chat-completions body; raises ValueError naming what is missing otherwise."""
    if not isinstance(body, dict):
        raise ValueError(f"the response is JSON {type(body).__name__}, not a chat-completion object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("the response has no choices[0] object")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ValueError("choices[0].message is not an object")
    content = message.get("content")
    if isinstance(content, list):  # some servers return content parts
        content = " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise ValueError(f"choices[0].message.content is {type(content).__name__}, not text")
    return content


def yes_probability(choice: Any) -> float | None:
    """P(yes) among yes/no first tokens from an OpenAI ``logprobs`` block, if the server sent a usable one."""
    try:
        first = choice["logprobs"]["content"][0]
        cands = first.get("top_logprobs") or [first]
        p_yes = p_no = 0.0
        for c in cands:
            token = str(c.get("token", "")).strip().lower()
            if token in ("yes", "no"):
                p = float(np.exp(float(c["logprob"])))
                p_yes, p_no = (p_yes + p, p_no) if token == "yes" else (p_yes, p_no + p)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
    if not p_yes + p_no > 0 or not np.isfinite(p_yes + p_no):
        return None
    return float(p_yes / (p_yes + p_no))


def true_probability(choice: Any) -> tuple[float | None, bool]:
    """P(the first token is "True") from an OpenAI ``logprobs`` block: (p, True) when "True" is listed, (an upper
    bound: the least likely listed token's probability, False) when it is not, (None, False) without logprobs."""
    try:
        first = choice["logprobs"]["content"][0]
        cands = first.get("top_logprobs") or [first]
        listed = [(str(c.get("token", "")).strip(), float(c["logprob"])) for c in cands]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None, False
    if not listed:
        return None, False
    true = [lp for tok, lp in listed if tok == AFFIRMATIVE]
    if true:
        return float(np.exp(max(true))), True
    return float(np.exp(min(lp for _, lp in listed))), False


class _Retryable(Exception):
    pass


class _Malformed(Exception):
    """A 200 whose body is not a chat completion: retrying the same request will not fix the server."""


class OpenAIJudge:
    name = "openai"
    privileged = False

    def __init__(self, cfg: OpenAIJudgeConfig):
        from rawdream.config import check_ranges

        check_ranges(cfg, "judge.")  # a config built in code, not from flags, is checked here
        self.cfg = cfg
        # credentials inside the URL (http://user:KEY@host/v1) leave it: urllib cannot send them, and the URL is
        # shown in messages; KEY becomes the bearer key unless the environment variable gives one
        parts = urllib.parse.urlsplit(cfg.url.rstrip("/"))
        self._url_key = parts.password or parts.username or None
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self.url = urllib.parse.urlunsplit(parts._replace(netloc=netloc)) + "/chat/completions"
        self.shown_url = redact_url(cfg.url.rstrip("/")) + "/chat/completions"  # what messages and logs say
        self._cache: dict[str, Verdict] = {}
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "abstains": 0, "cache_hits": 0, "errors": {}}
        self._cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
        if self._cache_dir:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
        self.references = None
        if cfg.reference:  # optional for a VLM (the paper's judge sees the instruction alone)
            from rawdream.reward.references import References

            self.references = References.from_dataset(cfg.reference)

    # -- public ---------------------------------------------------------------------------------------------
    def __call__(self, videos, instructions, **_: Any) -> list[Verdict]:
        if len(videos) != len(instructions):
            raise ValueError(f"{len(videos)} videos but {len(instructions)} instructions")
        jobs = [(self.cfg.frames.select(v), i) for v, i in zip(videos, instructions)]
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(lambda job: self._judge_one(*job), jobs))

    # -- one request ----------------------------------------------------------------------------------------
    def _payload(self, frames: np.ndarray, instruction: str) -> dict[str, Any]:
        def text(t: str) -> dict[str, Any]:
            return {"type": "text", "text": t}

        def images(fs) -> list[dict[str, Any]]:
            return [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + encode_png(f)}}
                for f in fs
            ]

        content = [text(PROMPT.format(instruction=instruction))]
        if self.references is not None:  # in-context: what success at this task looks like
            content += [text(PROMPT_REFERENCE), *images(self.references.for_instructions([instruction])[0])]
        content += [text(PROMPT_VIDEO), *images(frames)]
        top = self.cfg.scoring == "top"
        content += [text(PROMPT_STATEMENT.format(instruction=instruction) if top else PROMPT_QUESTION)]
        return {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 1 if top else 4,  # top reads the first token's distribution, nothing else
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 20 if top else 5,
        }

    def _judge_one(self, frames: np.ndarray, instruction: str) -> Verdict:
        payload = self._payload(frames, instruction)
        key = hashlib.sha256(json.dumps([self.url, payload], sort_keys=True).encode()).hexdigest()
        cached = self._cached(key)
        if cached is not None:
            return cached
        t0 = time.perf_counter()
        last_error = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                with self._lock:
                    self.stats["retries"] += 1
                delay = self.cfg.backoff * 2 ** (attempt - 1)
                time.sleep(delay * (1 + 0.5 * random.random()))
            try:
                body = self._post(payload)
                text = answer_text(body)
            except _Retryable as e:
                last_error = str(e)
                continue
            except ValueError as e:  # a 200 that is not a chat completion: abstain, keep what came back
                self._count_abstain(f"malformed response: {e}")
                return Verdict(success=None, raw=f"abstain: {e}", latency=time.perf_counter() - t0)
            verdict = self._verdict(text, body["choices"][0], time.perf_counter() - t0)
            if verdict.success is None:
                self._count_abstain(f"unparseable answer {text[:60]!r}")
                return verdict  # not cached: a retry later may parse
            self._store(key, verdict)
            return verdict
        self._count_abstain(last_error or "no answer")
        return Verdict(
            success=None, score=None, raw=f"abstain: {last_error}", latency=time.perf_counter() - t0
        )

    def _verdict(self, text: str, choice: dict[str, Any], latency: float) -> Verdict:
        """Only an answer that is Yes or No decides; where the server sent logprobs, P(yes) against the threshold
        decides it (the same rule ``eval-judge`` scores by), otherwise the word does. Scoring "top" reads
        P("True") from the logprobs alone (the answer's text does not matter)."""
        if self.cfg.scoring == "top":
            return self._top_verdict(choice, latency)
        said = parse_answer(text)
        score = yes_probability(choice) if said is not None else None
        success = said if score is None else score >= self.cfg.threshold
        return Verdict(success=success, score=score, raw=text, latency=latency)

    def _top_verdict(self, choice: dict[str, Any], latency: float) -> Verdict:
        p, exact = true_probability(choice)
        if p is None:
            return Verdict(
                success=None,
                raw="abstain: the server sent no logprobs; --judge.scoring=top needs them (vLLM and SGLang send "
                "them when asked)",
                latency=latency,
            )
        if exact:
            return Verdict(
                success=p >= self.cfg.threshold, score=p, raw=f"log P(True)={np.log(p):.3f}", latency=latency
            )
        # "True" is not among the top tokens: P(True) is below the least likely one listed
        if p < self.cfg.threshold:
            return Verdict(
                success=False, score=p, raw=f"P(True) <= {p:.4f} (not in the top logprobs)", latency=latency
            )
        return Verdict(
            success=None, raw=f"abstain: P(True) <= {p:.3f} is not below the threshold", latency=latency
        )

    def probe(self) -> None:
        """One real request (a blank 2-frame video): raises JudgeUnavailableError naming the URL, the failure and
        the fix when the endpoint cannot answer, so a long run never starts against a dead judge."""
        frames = np.zeros((2, 16, 16, 3), np.uint8)
        payload = self._payload(frames, "probe: is the scene empty?")
        tries = (
            min(self.cfg.retries, 1) + 1
        )  # a hung server costs at most two timeouts, not a whole retry ladder
        try:
            for attempt in range(tries):
                try:
                    answer_text(self._post(payload))
                    return
                except _Retryable as e:
                    if attempt == tries - 1:
                        raise JudgeUnavailableError(
                            f"the VLM judge at {self.shown_url} does not answer: {e}; start the server or fix "
                            f"--judge.url (a served model answers POST /v1/chat/completions)"
                        ) from None
                    time.sleep(self.cfg.backoff * 2**attempt)
        except ValueError as e:
            raise JudgeUnavailableError(
                f"the VLM judge at {self.shown_url} answered the probe badly: {e}"
            ) from None

    def _post(self, payload: dict[str, Any]) -> Any:
        with self._lock:
            self.stats["requests"] += 1
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env) or self._url_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            msg = f"HTTP {e.code} from {self.shown_url}"
            if e.code == 429 or e.code >= 500:
                raise _Retryable(msg) from None
            # any other 4xx is a configuration error that no retry and no abstain can fix: stop the run
            fix = {
                401: f"the server rejected the key: set ${self.cfg.api_key_env}",
                403: f"the server refused the key: check ${self.cfg.api_key_env}",
                404: "no chat-completions endpoint there: --judge.url must end in the API root, e.g. .../v1",
            }.get(e.code, f"check --judge.url, --judge.model ({self.cfg.model}) and ${self.cfg.api_key_env}")
            raise JudgeUnavailableError(f"{msg}: {fix}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Retryable(f"{self.shown_url} unreachable or timed out ({reason})") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable(f"{self.shown_url} returned a body that is not JSON") from None

    # -- cache and counters ---------------------------------------------------------------------------------
    def _cached(self, key: str) -> Verdict | None:
        with self._lock:
            v = self._cache.get(key)
        if v is None and self._cache_dir and (self._cache_dir / f"{key}.json").exists():
            v = Verdict(**json.loads((self._cache_dir / f"{key}.json").read_text()))
            with self._lock:
                self._cache[key] = v
        if v is not None:
            with self._lock:
                self.stats["cache_hits"] += 1
        return v

    def _store(self, key: str, verdict: Verdict) -> None:
        with self._lock:
            self._cache[key] = verdict
        if self._cache_dir:
            from rawdream.io import atomic_write_json

            atomic_write_json(self._cache_dir / f"{key}.json", verdict.__dict__)

    def _count_abstain(self, why: str) -> None:
        with self._lock:
            self.stats["abstains"] += 1
            self.stats["errors"][why] = self.stats["errors"].get(why, 0) + 1
        log.warning("judge abstained: %s", why)


@register_judge("openai", config=OpenAIJudgeConfig)
def _make(cfg: OpenAIJudgeConfig) -> OpenAIJudge:
    return OpenAIJudge(cfg)
