"""The chat client against real loopback HTTP servers: failure modes, repair, fallback, retries, concurrency, parsing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, field_validator

from ethoscribe.reasoning.accounting import Accounting
from ethoscribe.reasoning.client import ChatClient, Request, extract_json, parse_answer
from ethoscribe.reasoning.config import ReasonerConfig
from ethoscribe.reasoning.errors import ReasonerUnavailable
from ethoscribe.reasoning.messages import message_text, system, user
from ethoscribe.reasoning.prompts import load_prompt
from ethoscribe.reasoning.schemas import request_schema
from ethoscribe.reasoning.trace import TraceWriter, read_trace
from reasoning_fixtures import FakeChatServer, Reply, closed_port, completion


class KeypointChoice(BaseModel):
    keypoint: Literal["left_ear", "right_ear", "none"]
    candidate: int = Field(ge=0)

    @field_validator("candidate")
    @classmethod
    def _known(cls, v: int, info):  # noqa: ANN001
        known = (info.context or {}).get("candidates")
        if known is not None and v not in known:
            raise ValueError(f"candidate {v} is not one of the numbered dots {sorted(known)}")
        return v


GOOD = '{"keypoint": "left_ear", "candidate": 2}'


def cfg_for(base_url: str, tmp_path: Path, **kw) -> ReasonerConfig:
    values = dict(base_url=base_url, model="fake-model", cache_path=tmp_path / "cache.sqlite", max_retries=2,
                  backoff_s=0.05, backoff_max_s=1.0, timeout_s=5.0)
    values.update(kw)
    return ReasonerConfig(**values)


MSGS = [system("You label keypoints."), user("Which numbered dot is the left ear?")]


# ---------------------------------------------------------------------- happy path and request shape
def test_valid_answer_and_request_shape(tmp_path: Path) -> None:
    with FakeChatServer([Reply(completion(GOOD, 40, 9))]) as srv:
        acc = Accounting()
        client = ChatClient(cfg_for(srv.base_url, tmp_path), accounting=acc)
        ans = client.ask(MSGS, KeypointChoice, step="assign", context={"candidates": {1, 2, 3}})
    assert ans.ok and ans.valid_first and not ans.repaired and not ans.cached
    assert ans.value == KeypointChoice(keypoint="left_ear", candidate=2)
    assert ans.usage == {"prompt_tokens": 40, "completion_tokens": 9} and ans.calls == 1 and ans.attempts == 1
    body = srv.requests[0].body
    assert srv.requests[0].path == "/v1/chat/completions"
    assert body["model"] == "fake-model" and body["temperature"] == 0.0 and body["seed"] == 0 and body["max_tokens"] == 1024
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == request_schema(KeypointChoice)[0]
    assert rf["json_schema"]["strict"] is True and rf["json_schema"]["schema"]["additionalProperties"] is False
    assert body["messages"][0] == {"role": "system", "content": "You label keypoints."}
    assert "Which numbered dot is the left ear?" in body["messages"][1]["content"]
    assert '"keypoint"' in body["messages"][1]["content"]  # schema stated in the prompt too
    d = acc.to_dict()
    assert (d["calls"], d["prompt_tokens"], d["completion_tokens"], d["cache_misses"]) == (1, 40, 9, 1)


@pytest.mark.parametrize("mode", ["grammar", "json_object", "none"])
def test_other_schema_enforcement_modes(tmp_path: Path, mode: str) -> None:
    with FakeChatServer([Reply(completion(GOOD))]) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path, response_format=mode, cache=False))
        assert client.ask(MSGS, KeypointChoice).ok
    body = srv.requests[0].body
    if mode == "grammar":
        # llama.cpp: the schema in the body (the server compiles it to a grammar), asking for compact JSON
        sent = dict(body["json_schema"])
        assert sent.pop("x-guidance") == {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
        assert sent == request_schema(KeypointChoice)[0]
        assert "response_format" not in body and "grammar" not in body
    elif mode == "json_object":
        assert body["response_format"] == {"type": "json_object"}
    else:
        assert "response_format" not in body and "grammar" not in body
    assert '"keypoint"' in body["messages"][-1]["content"]


def test_grammar_mode_without_compact_json(tmp_path: Path) -> None:
    with FakeChatServer([Reply(completion(GOOD))]) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path, response_format="grammar", compact_json=False, cache=False))
        assert client.ask(MSGS, KeypointChoice).ok
    assert srv.requests[0].body["json_schema"] == request_schema(KeypointChoice)[0]


def test_truncated_answer_says_so(tmp_path: Path) -> None:
    cut = completion('{"keypoint": "left_', finish_reason="length")
    with FakeChatServer([Reply(cut)]) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path, max_tokens=6))
        ans = client.ask(MSGS, KeypointChoice)
    assert not ans.ok and ans.finish_reason == "length"
    assert "cut off at max_tokens=6" in ans.errors[0] and "cut off at max_tokens=6" in ans.reason


def test_server_refusing_response_format_is_asked_without_it(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> Reply:
        if "response_format" in body:
            return Reply({"error": {"message": "response_format type json_schema is not supported"}}, status=400)
        return Reply(completion(GOOD))

    with FakeChatServer(script) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path, cache=False))
        a1 = client.ask(MSGS, KeypointChoice)
        a2 = client.ask(MSGS, KeypointChoice)
    assert a1.ok and a2.ok and client.response_format == "none"
    assert any("refused response_format" in n for n in a1.notes)
    assert len(srv.requests) == 3  # refused once, then never sent again
    assert "response_format" not in srv.requests[2].body


# ---------------------------------------------------------------------- garbage answers: repair, then fallback
def test_garbage_answer_gets_one_repair_quoting_the_error_then_traced_fallback(tmp_path: Path) -> None:
    script = [Reply(completion("I think it is the second dot, probably.")),
              Reply(completion('{"keypoint": "nose", "candidate": 2}'))]
    trace_path = tmp_path / "trace.jsonl"
    with FakeChatServer(script) as srv, TraceWriter(trace_path) as tw:
        acc = Accounting()
        client = ChatClient(cfg_for(srv.base_url, tmp_path), accounting=acc, trace=tw)
        d = client.ask_or_fallback(MSGS, KeypointChoice, fallback=lambda: "geometric answer", step="assign",
                                   prompt=None, input={"frame": 12, "candidates": 3}, trace_fields={"frame": 12})
    assert d.source == "fallback" and d.value == "geometric answer"
    assert d.reason.startswith("invalid: still invalid after one repair request")
    assert "keypoint" in d.reason and "left_ear" in d.reason  # the schema error of the repaired answer
    assert len(srv.requests) == 2
    repair = srv.requests[1].body["messages"]
    assert repair[:-2] == srv.requests[0].body["messages"]  # same conversation...
    assert repair[-2] == {"role": "assistant", "content": "I think it is the second dot, probably."}  # ...its answer...
    quote = repair[-1]["content"]  # ...and the error quoted back
    assert "the answer contains no complete JSON object" in quote and '"keypoint"' in quote
    assert "response_format" in srv.requests[1].body  # still constrained
    rec = read_trace(trace_path)[-1]
    assert rec["step"] == "assign" and rec["frame"] == 12 and rec["source"] == "fallback"
    assert rec["fallback_reason"] == d.reason and rec["fallback_value"] == "geometric answer"
    assert rec["raw"] == "I think it is the second dot, probably." and rec["repair"]["raw"].startswith('{"keypoint": "nose"')
    assert "no complete JSON object" in rec["repair"]["error"] and rec["answer"] is None and rec["ok"] is False
    u = acc.to_dict()
    assert (u["calls"], u["repairs"], u["fallbacks"], u["valid_first"], u["invalid"]) == (2, 1, 1, 0, 1)
    assert u["fallback_reasons"] == {"invalid": 1}


def test_repair_that_succeeds_is_used(tmp_path: Path) -> None:
    script = [Reply(completion('{"keypoint": "left_ear", "candidate": 9}')), Reply(completion(GOOD))]
    with FakeChatServer(script) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path))
        d = client.ask_or_fallback(MSGS, KeypointChoice, fallback=lambda: None, context={"candidates": [1, 2, 3]})
    assert d.source == "model" and d.value.candidate == 2 and d.answer.repaired and not d.answer.valid_first
    assert "candidate 9 is not one of the numbered dots [1, 2, 3]" in srv.requests[1].body["messages"][-1]["content"]


def test_convert_can_reject_an_answer(tmp_path: Path) -> None:
    with FakeChatServer([Reply(completion(GOOD))]) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path))

        def convert(a: KeypointChoice) -> int:
            raise ValueError("geometry disagrees: candidate 2 is 40 px from the prediction")

        trace: list = []
        d = client.ask_or_fallback(MSGS, KeypointChoice, fallback=lambda: -1, convert=convert, trace=trace)
    assert d.value == -1 and d.reason == "rejected: geometry disagrees: candidate 2 is 40 px from the prediction"
    assert trace[0]["answer"] == {"keypoint": "left_ear", "candidate": 2} and trace[0]["source"] == "fallback"


def test_reply_that_is_not_a_chat_completion_is_a_clear_error(tmp_path: Path) -> None:
    with FakeChatServer([Reply(raw="<html>proxy error page</html>")]) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path))
        with pytest.raises(ReasonerUnavailable, match="not a chat completion|unusable response"):
            client.ask(MSGS, KeypointChoice)
    assert len(srv.requests) == 1  # not retried


# ---------------------------------------------------------------------- server down, slow, overloaded
def test_server_down_gives_clear_error_or_traced_fallback(tmp_path: Path) -> None:
    port = closed_port()
    acc = Accounting()
    client = ChatClient(cfg_for(f"http://127.0.0.1:{port}/v1", tmp_path, max_retries=1), accounting=acc)
    t = time.perf_counter()
    with pytest.raises(ReasonerUnavailable) as ei:
        client.ask(MSGS, KeypointChoice)
    assert time.perf_counter() - t < 5
    msg = str(ei.value)
    assert f"127.0.0.1:{port}" in msg and "cannot connect" in msg and "after 2 attempts" in msg
    trace: list = []
    d = client.ask_or_fallback(MSGS, KeypointChoice, fallback=lambda: "geo", trace=trace)
    assert d.value == "geo" and d.reason.startswith("unavailable: ") and "cannot connect" in d.reason
    assert trace[0]["source"] == "fallback" and trace[0]["fallback_reason"] == d.reason
    with pytest.raises(ReasonerUnavailable):
        client.ask_or_fallback(MSGS, KeypointChoice, fallback=lambda: "geo", on_unavailable="raise", trace=trace)
    assert trace[-1]["error"].startswith("language-model server")
    u = acc.to_dict()
    assert u["failures"] == 3 and u["calls"] == 0 and u["attempts"] == 6 and u["fallbacks"] == 1


def test_slow_server_times_out(tmp_path: Path) -> None:
    with FakeChatServer([Reply(completion(GOOD), delay_s=3.0)]) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path, timeout_s=0.4, max_retries=1))
        t = time.perf_counter()
        d = client.ask_or_fallback(MSGS, KeypointChoice, fallback=lambda: "geo")
        elapsed = time.perf_counter() - t
    assert d.source == "fallback" and "no answer within 0.4 s (timeout_s)" in d.reason
    assert len(srv.requests) == 2 and elapsed < 4.0  # two attempts of 0.4 s, not 2 x the server's 3 s


def test_429_then_success_retries_with_backoff(tmp_path: Path) -> None:
    script = [Reply({"error": {"message": "slow down"}}, status=429),
              Reply({"error": {"message": "overloaded"}}, status=503),
              Reply(completion(GOOD))]
    with FakeChatServer(script) as srv:
        acc = Accounting()
        client = ChatClient(cfg_for(srv.base_url, tmp_path, backoff_s=0.2, max_retries=3), accounting=acc)
        ans = client.ask(MSGS, KeypointChoice)
    assert ans.ok and ans.attempts == 3 and ans.calls == 1
    t = [r.t for r in srv.requests]
    assert t[1] - t[0] >= 0.1 and t[2] - t[1] >= 0.2  # base 0.2 * 2**i, jitter factor in [0.5, 1.5)
    assert "HTTP 429" in ans.notes[0] and "HTTP 503" in ans.notes[1]
    u = acc.to_dict()
    assert (u["attempts"], u["retries"], u["calls"], u["failures"]) == (3, 2, 1, 0)


def test_backoff_jitter_is_seeded(tmp_path: Path) -> None:
    def delays(seed: int) -> list[str]:
        script = [Reply({"error": {"message": "x"}}, status=500)] * 2 + [Reply(completion(GOOD))]
        with FakeChatServer(script) as srv:
            c = ChatClient(cfg_for(srv.base_url, tmp_path, backoff_s=0.01, seed=seed, cache=False))
            return [n.rsplit("retrying in", 1)[1] for n in c.ask(MSGS, KeypointChoice).notes]

    assert delays(1) == delays(1)


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    script = [Reply({"error": {"message": "rate"}}, status=429, headers={"Retry-After": "0.6"}), Reply(completion(GOOD))]
    with FakeChatServer(script) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path, backoff_s=0.01))
        assert client.ask(MSGS, KeypointChoice).ok
    assert srv.requests[1].t - srv.requests[0].t >= 0.55


def test_5xx_every_time_gives_up_after_max_retries(tmp_path: Path) -> None:
    with FakeChatServer([Reply({"error": {"message": "model crashed"}}, status=500)]) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path, max_retries=2, backoff_s=0.01))
        with pytest.raises(ReasonerUnavailable, match=r"after 3 attempts: HTTP 500 .*model crashed"):
            client.ask(MSGS, KeypointChoice)
    assert len(srv.requests) == 3


def test_4xx_is_not_retried(tmp_path: Path) -> None:
    with FakeChatServer([Reply({"error": {"message": "context length exceeded"}}, status=400)]) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path, max_retries=3))
        with pytest.raises(ReasonerUnavailable, match="HTTP 400 .*context length exceeded"):
            client.ask(MSGS, KeypointChoice)
    assert len(srv.requests) == 1 and client.response_format == "json_schema"


# ---------------------------------------------------------------------- cache and concurrency
def test_cache_makes_rerun_call_free(tmp_path: Path) -> None:
    with FakeChatServer([Reply(completion(GOOD, 30, 8))]) as srv:
        cfg = cfg_for(srv.base_url, tmp_path)
        a1 = ChatClient(cfg).ask(MSGS, KeypointChoice)
        acc = Accounting()
        a2 = ChatClient(cfg, accounting=acc).ask(MSGS, KeypointChoice)
        a3 = ChatClient(cfg).ask(MSGS, KeypointChoice, temperature=0.7)  # other sampling: another key
    assert len(srv.requests) == 2
    assert a2.cached and a2.calls == 0 and a2.value == a1.value and a2.key == a1.key and a3.key != a1.key
    u = acc.to_dict()
    assert (u["calls"], u["cache_hits"], u["prompt_tokens"], u["cache_hit_rate"]) == (0, 1, 0, 1.0)


def test_ask_many_respects_the_concurrency_limit_and_keeps_order(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> Reply:
        n = int(message_text(body["messages"][-1]).split("#", 1)[1].split()[0])
        return Reply(completion(json.dumps({"keypoint": "none", "candidate": n})), delay_s=0.25)

    with FakeChatServer(script) as srv:
        acc = Accounting()
        client = ChatClient(cfg_for(srv.base_url, tmp_path, max_concurrency=2, cache=False), accounting=acc)
        reqs = [Request([user(f"request #{i} please")], KeypointChoice, step="many") for i in range(6)]
        reqs.append(Request([user("request #99 please")], KeypointChoice, fallback=lambda: "fb"))
        t = time.perf_counter()
        out = client.ask_many(reqs)
        elapsed = time.perf_counter() - t
    assert [a.value.candidate for a in out[:6]] == list(range(6))
    assert out[6].source == "model" and out[6].value.candidate == 99
    assert srv.max_in_flight == 2 and acc.max_in_flight == 2
    assert elapsed >= 0.25 * 7 / 2 - 0.05  # never more than 2 at once


def test_concurrency_limit_holds_for_callers_own_threads(tmp_path: Path) -> None:
    import threading

    with FakeChatServer([Reply(completion(GOOD), delay_s=0.2)]) as srv:
        acc = Accounting()
        client = ChatClient(cfg_for(srv.base_url, tmp_path, max_concurrency=2, cache=False), accounting=acc)
        threads = [threading.Thread(target=client.ask, args=(MSGS, KeypointChoice)) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert len(srv.requests) == 6 and srv.max_in_flight == 2 and acc.max_in_flight == 2


def test_ask_many_return_exceptions(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> Reply:
        if "bad" in message_text(body["messages"][-1]):
            return Reply({"error": {"message": "nope"}}, status=400)
        return Reply(completion(GOOD))

    with FakeChatServer(script) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path, cache=False))
        reqs = [Request([user("good one")], KeypointChoice), Request([user("bad one")], KeypointChoice)]
        out = client.ask_many(reqs, return_exceptions=True)
        assert out[0].ok and isinstance(out[1], ReasonerUnavailable)
        with pytest.raises(ReasonerUnavailable):
            client.ask_many(reqs)


# ---------------------------------------------------------------------- parsing of recorded answers
RECORDED = [
    ('{"keypoint": "left_ear", "candidate": 2}', True),
    ('```json\n{"keypoint": "left_ear", "candidate": 2}\n```', True),
    ('Sure! Here is the answer:\n```\n{"keypoint": "left_ear", "candidate": 2}\n```\nLet me know.', True),
    ('The left ear is dot 2: {"keypoint": "left_ear", "candidate": 2} (dot 3 is the right ear)', True),
    ('{"keypoint": "left_ear", "candidate": 2, "reason": "closest to the head"}', True),  # extra keys tolerated by this model
    ('{"keypoint": "left ear", "candidate": 2}', False),
    ('{"keypoint": "left_ear", "candidate": "two"}', False),
    ('{"keypoint": "left_ear", "candidate": 2', False),  # cut at max_tokens
    ("", False),
    ("I cannot see any dots in this image.", False),
]


@pytest.mark.parametrize("raw,valid", RECORDED)
def test_parse_recorded_answers(raw: str, valid: bool) -> None:
    value, err = parse_answer(raw, KeypointChoice)
    assert (value is not None) == valid
    if valid:
        assert value == KeypointChoice(keypoint="left_ear", candidate=2) and err is None
    else:
        assert err and ("no complete JSON object" in err or "schema validation failed" in err)


def test_extract_json_takes_the_first_object() -> None:
    assert extract_json('noise {"a": {"b": 1}} {"c": 2}') == {"a": {"b": 1}}
    assert extract_json('[1, 2] then {"x": 1}') == {"x": 1}
    with pytest.raises(ValueError, match="no complete JSON object"):
        extract_json("[1, 2, 3]")


def test_repair_prompt_is_versioned_and_recorded(tmp_path: Path) -> None:
    p = load_prompt("json_repair")
    with FakeChatServer([Reply(completion("nope")), Reply(completion(GOOD))]) as srv:
        client = ChatClient(cfg_for(srv.base_url, tmp_path))
        client.ask(MSGS, KeypointChoice)
    rendered = p.render(error="ERR", schema="SCHEMA")[-1]["content"]
    head = rendered.split("ERR")[0]
    assert srv.requests[1].body["messages"][-1]["content"].startswith(head)
