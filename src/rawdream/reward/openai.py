"""``openai`` judge: any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, Ollama, LM Studio).

Frames go as base64 PNG image parts after the instruction (and, with ``--judge.reference DEMOS``, after the first and
last frame of a demonstration of the task, as an in-context example); the question comes last and asks for a
one-word verdict. When the
server returns logprobs, the score is P("yes") / (P("yes") + P("no")) over the first token. Requests time out,
are retried with exponential backoff and jitter on timeouts, connection errors, 429 and 5xx, run at most
``concurrency`` at a time, and identical requests are answered from a content-hash cache. After the last retry
the verdict is an explicit abstain (counted in :attr:`stats`) - never a silent 0 reward, never a crash of a long
RL run. The API key is read from an environment variable and never logged or cached.
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
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rawdream.reward.base import JudgeConfig, Verdict, register_judge

log = logging.getLogger("rawdream.judge.openai")

# the instruction, (optionally) a reference demonstration, the frames, and the question last
PROMPT = 'A robot arm was given the instruction: "{instruction}".'
PROMPT_REFERENCE = "For reference, the first and the last frame of a demonstration that accomplished it:"
PROMPT_VIDEO = "The frames of the robot's video, in time order from the first to the last:"
PROMPT_QUESTION = "Did the robot accomplish the instruction? Answer with one word: Yes or No."
_YES = {"yes", "y", "true", "success", "succeeded", "1"}
_NO = {"no", "n", "false", "failure", "failed", "fail", "0"}


def encode_png(frame: np.ndarray) -> str:
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, np.asarray(frame, dtype=np.uint8), extension=".png")
    return base64.b64encode(buf.getvalue()).decode()


def parse_answer(text: str) -> bool | None:
    """'Yes.', '**no**', 'YES - the drawer is open', '{"success": true}', '{"answer": "No"}' -> bool; else None."""
    t = (text or "").strip()
    if t.startswith("{"):
        try:
            obj = json.loads(t)
            for key in ("success", "answer", "verdict", "result"):
                if key in obj:
                    v = obj[key]
                    if isinstance(v, bool):
                        return v
                    return parse_answer(str(v))
        except (json.JSONDecodeError, TypeError):
            pass
    words = re.findall(r"[a-z0-9]+", t.lower())
    if not words:
        return None
    if words[0] in _YES:
        return True
    if words[0] in _NO:
        return False
    has_yes, has_no = any(w in _YES for w in words), any(w in _NO for w in words)
    if has_yes != has_no:
        return has_yes
    return None


def yes_probability(choice: dict[str, Any]) -> float | None:
    """P(yes) among yes/no first tokens from an OpenAI ``logprobs`` block, if the server sent one."""
    try:
        first = choice["logprobs"]["content"][0]
    except (KeyError, IndexError, TypeError):
        return None
    cands = first.get("top_logprobs") or [first]
    p_yes = sum(np.exp(c["logprob"]) for c in cands if c.get("token", "").strip().lower() in ("yes", "y"))
    p_no = sum(np.exp(c["logprob"]) for c in cands if c.get("token", "").strip().lower() in ("no", "n"))
    if p_yes + p_no <= 0:
        return None
    return float(p_yes / (p_yes + p_no))


class _Retryable(Exception):
    pass


class OpenAIJudge:
    name = "openai"
    privileged = False

    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        self.url = cfg.url.rstrip("/") + "/chat/completions"
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
        content += [text(PROMPT_VIDEO), *images(frames), text(PROMPT_QUESTION)]
        return {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 4,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 5,
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
            except _Retryable as e:
                last_error = str(e)
                continue
            except ValueError as e:  # a 4xx that retrying cannot fix (bad key, unknown model)
                last_error = str(e)
                break
            choice = (body.get("choices") or [{}])[0]
            text = ((choice.get("message") or {}).get("content")) or ""
            if isinstance(text, list):  # some servers return content parts
                text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
            success = parse_answer(text)
            score = yes_probability(choice)
            if success is None and score is not None:
                success = score >= self.cfg.threshold
            verdict = Verdict(success=success, score=score, raw=text, latency=time.perf_counter() - t0)
            if success is None:
                self._count_abstain(f"unparseable answer {text[:60]!r}")
                return verdict  # not cached: a retry later may parse
            self._store(key, verdict)
            return verdict
        self._count_abstain(last_error or "no answer")
        return Verdict(
            success=None, score=None, raw=f"abstain: {last_error}", latency=time.perf_counter() - t0
        )

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.stats["requests"] += 1
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            msg = f"HTTP {e.code} from {self.url}"
            if e.code == 429 or e.code >= 500:
                raise _Retryable(msg) from None
            raise ValueError(
                f"{msg} (check --judge.url, --judge.model and ${self.cfg.api_key_env})"
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Retryable(f"{self.url} unreachable or timed out ({reason})") from None
        except json.JSONDecodeError:
            raise _Retryable(f"{self.url} returned a body that is not JSON") from None

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


@register_judge("openai")
def _make(cfg: JudgeConfig) -> OpenAIJudge:
    return OpenAIJudge(cfg)
