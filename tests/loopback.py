"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests and the client benchmark.

It stands in for a served VLM (which cannot exist on this machine) and speaks the real protocol over a real
socket: it validates that image parts are base64 PNG/JPEG data URLs, records every request, answers from a
script (a function of the request), and can fail on purpose (HTTP 500, a slow answer) to exercise retries.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RawResponse:
    """Send exactly this status and body (JSON-encoded unless bytes): misbehaving servers for tests."""

    status: int
    body: Any = None


Answer = str | tuple[str, float] | RawResponse  # text, (text, P(yes)) to return logprobs, or a raw response


class LoopbackVLM:
    def __init__(
        self,
        answer: Callable[[dict[str, Any]], Answer] | None = None,
        fail_first: int = 0,
        delay: float = 0.0,
        slow_first: int = 0,
        slow_delay: float = 0.0,
    ):
        self.answer = answer or (lambda req: "Yes")
        self.fail_first = fail_first
        self.delay = delay
        self.slow_first = slow_first
        self.slow_delay = slow_delay
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- request checks -------------------------------------------------------------------------------------
    @staticmethod
    def images(request: dict[str, Any]) -> list[bytes]:
        """Decoded image bytes of a request; raises if a part is not a base64 PNG/JPEG data URL."""
        out = []
        for msg in request["messages"]:
            content = msg["content"] if isinstance(msg["content"], list) else []
            for part in content:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    header, data = url.split(",", 1)
                    raw = base64.b64decode(data, validate=True)
                    if not (raw.startswith(b"\x89PNG") or raw.startswith(b"\xff\xd8")):
                        raise ValueError(f"image part is not PNG/JPEG ({header})")
                    out.append(raw)
        return out

    @staticmethod
    def text(request: dict[str, Any]) -> str:
        parts = []
        for msg in request["messages"]:
            if isinstance(msg["content"], str):
                parts.append(msg["content"])
            else:
                parts += [p["text"] for p in msg["content"] if p.get("type") == "text"]
        return "\n".join(parts)

    # -- server ---------------------------------------------------------------------------------------------
    def __enter__(self) -> LoopbackVLM:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._active = True
                with outer._lock:
                    outer.active += 1
                    outer.max_active = max(outer.max_active, outer.active)
                    n = len(outer.requests)
                    try:
                        req = json.loads(body)
                    except json.JSONDecodeError:
                        req = {}
                    outer.requests.append(req)
                    outer.headers.append(dict(self.headers))
                try:
                    if n < outer.fail_first:
                        self._send(500, {"error": {"message": "scripted failure"}})
                        return
                    if n < outer.slow_first:
                        time.sleep(outer.slow_delay)
                    elif outer.delay:
                        time.sleep(outer.delay)
                    try:
                        outer.images(req)
                    except Exception as e:
                        self._send(400, {"error": {"message": str(e)}})
                        return
                    ans = outer.answer(req)
                    if isinstance(ans, RawResponse):
                        self._send(ans.status, ans.body)
                        return
                    text, p_yes = (ans, None) if isinstance(ans, str) else ans
                    choice: dict[str, Any] = {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                    if p_yes is not None and req.get("logprobs"):
                        import math

                        lp = lambda p: math.log(max(p, 1e-12))  # noqa: E731
                        choice["logprobs"] = {
                            "content": [
                                {
                                    "token": "Yes",
                                    "logprob": lp(p_yes),
                                    "top_logprobs": [
                                        {"token": "Yes", "logprob": lp(p_yes)},
                                        {"token": "No", "logprob": lp(1 - p_yes)},
                                    ],
                                }
                            ]
                        }
                    self._send(
                        200,
                        {
                            "id": f"cmpl-{n}",
                            "object": "chat.completion",
                            "model": req.get("model"),
                            "choices": [choice],
                        },
                    )
                finally:
                    self._done()

            def _done(self):
                # a request stops counting as active before its answer is written: once the client has the answer
                # it may send its next request, which must not find this one still counted (a false overlap)
                if getattr(self, "_active", False):
                    self._active = False
                    with outer._lock:
                        outer.active -= 1

            def _send(self, code, obj):
                data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                self._done()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
