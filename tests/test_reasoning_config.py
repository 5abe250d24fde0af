"""Reasoner configuration: file + environment precedence, clear errors, and the key never written anywhere."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ethoscribe.errors import EthoscribeError, InputError
from ethoscribe.reasoning.accounting import Accounting
from ethoscribe.reasoning.cache import ResponseCache
from ethoscribe.reasoning.client import ChatClient
from ethoscribe.reasoning.config import ReasonerConfig, load_config
from ethoscribe.reasoning.errors import ReasonerConfigError, ReasonerUnavailable
from ethoscribe.reasoning.messages import user
from ethoscribe.reasoning.trace import TraceWriter
from pydantic import BaseModel, ValidationError
from reasoning_fixtures import FakeChatServer, Reply, completion

SECRET = "sk-test-DO-NOT-LEAK-8f3a9c1e77"


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    f = write_toml(tmp_path / "ethoscribe.toml", """
[reasoner]
base_url = "http://file-host:1/v1"
model = "file-model"
max_concurrency = 3
timeout_s = 9
cache_path = "cache/llm.sqlite"
extra_body = { options = { num_ctx = 8192 } }
""")
    cfg = load_config(f, environ={})
    assert (cfg.base_url, cfg.model, cfg.max_concurrency, cfg.timeout_s) == ("http://file-host:1/v1", "file-model", 3, 9.0)
    assert cfg.cache_path == (tmp_path / "cache" / "llm.sqlite").resolve()  # relative to the file
    assert cfg.extra_body == {"options": {"num_ctx": 8192}}

    env = {"ETHOSCRIBE_MODEL": "env-model", "ETHOSCRIBE_MAX_CONCURRENCY": "7", "ETHOSCRIBE_RESPONSE_FORMAT": "grammar"}
    cfg = load_config(f, environ=env)
    assert cfg.model == "env-model" and cfg.max_concurrency == 7 and cfg.response_format == "grammar"
    assert cfg.base_url == "http://file-host:1/v1"  # not in env: file value stays

    cfg = load_config(f, environ=env, model="cli-model", timeout_s=None)
    assert cfg.model == "cli-model" and cfg.timeout_s == 9.0  # None overrides are ignored


def test_config_file_from_env_variable_and_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write_toml(tmp_path / "other.toml", '[reasoner]\nmodel = "m-from-named-file"\nbase_url = "http://h/v1"\n')
    assert load_config(environ={"ETHOSCRIBE_CONFIG": str(f)}).model == "m-from-named-file"
    monkeypatch.chdir(tmp_path)
    write_toml(tmp_path / "ethoscribe.toml", '[reasoner]\nmodel = "m-from-cwd"\n')
    assert load_config(environ={}).model == "m-from-cwd"
    assert load_config(environ={}, search=False).model is None


def test_missing_model_or_base_url_is_a_clear_error() -> None:
    with pytest.raises(ReasonerConfigError, match=r"model missing.*ETHOSCRIBE_MODEL"):
        ReasonerConfig(base_url="http://127.0.0.1:1/v1").require()
    with pytest.raises(ReasonerConfigError, match="base_url, model missing"):
        ChatClient(ReasonerConfig())
    assert issubclass(ReasonerConfigError, InputError) and issubclass(ReasonerUnavailable, EthoscribeError)


def test_named_but_unset_key_variable_is_a_clear_error() -> None:
    cfg = ReasonerConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="ETHOSCRIBE_TEST_UNSET_KEY")
    with pytest.raises(ReasonerConfigError, match="ETHOSCRIBE_TEST_UNSET_KEY is named .* but is not set"):
        cfg.api_key(environ={})
    assert cfg.api_key(environ={"ETHOSCRIBE_TEST_UNSET_KEY": "abc"}) == "abc"
    assert ReasonerConfig().api_key() == "EMPTY"


def test_bad_values_are_reported_by_field(tmp_path: Path) -> None:
    f = write_toml(tmp_path / "e.toml", '[reasoner]\nmax_concurrency = 0\nbase_url = "ftp://x"\nresponse_format = "xml"\n')
    with pytest.raises(ReasonerConfigError) as ei:
        load_config(f, environ={})
    msg = str(ei.value)
    assert "max_concurrency" in msg and "base_url" in msg and "response_format" in msg and str(f) in msg
    with pytest.raises(ReasonerConfigError, match="not valid TOML"):
        load_config(write_toml(tmp_path / "bad.toml", "[reasoner\n"), environ={})
    with pytest.raises(ReasonerConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_a_key_in_the_file_or_in_api_key_env_is_refused_without_echoing_it(tmp_path: Path) -> None:
    f = write_toml(tmp_path / "k.toml", f'[reasoner]\nmodel = "m"\napi_key = "{SECRET}"\n')
    with pytest.raises(ReasonerConfigError, match="api_key is not allowed") as ei:
        load_config(f, environ={})
    assert SECRET not in str(ei.value)
    f = write_toml(tmp_path / "k2.toml", f'[reasoner]\nmodel = "m"\napi_key_env = "{SECRET}"\n')
    with pytest.raises(ReasonerConfigError, match="NAME of an environment variable") as ei:
        load_config(f, environ={})
    assert SECRET not in str(ei.value)
    with pytest.raises(ValidationError) as ei2:
        ReasonerConfig(api_key_env=SECRET)
    assert SECRET not in str(ei2.value)


class Pick(BaseModel):
    choice: str


def test_api_key_is_sent_but_never_in_trace_cache_usage_or_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETHOSCRIBE_TEST_KEY", SECRET)
    # the model "echoes" the key in a broken answer, and an auth error quotes it: both must be scrubbed
    script = [
        Reply(completion(f"my key is {SECRET} and no JSON")),
        Reply(completion('{"choice": "left ear"}')),
        Reply({"error": {"message": f"Incorrect API key provided: {SECRET}"}}, status=401),
    ]
    with FakeChatServer(script) as srv:
        cfg = ReasonerConfig(base_url=srv.base_url, model="m", api_key_env="ETHOSCRIBE_TEST_KEY",
                             cache_path=tmp_path / "cache.sqlite", max_retries=0)
        acc = Accounting()
        trace_path = tmp_path / "trace.jsonl"
        with TraceWriter(trace_path) as tw:
            client = ChatClient(cfg, accounting=acc, trace=tw)
            ans = client.ask([user("which?")], Pick, step="t")
            assert ans.ok and ans.repaired
            with pytest.raises(ReasonerUnavailable) as ei:
                client.ask([user("another question")], Pick, step="t")
            client.close()
        assert srv.requests[0].headers.get("authorization") == f"Bearer {SECRET}"  # it was sent
    assert "not authorised" in str(ei.value) and "ETHOSCRIBE_TEST_KEY" in str(ei.value)
    assert SECRET not in str(ei.value)
    usage = acc.write(tmp_path / "out")
    cfg_dump = json.dumps(cfg.public_dict())
    for blob in (trace_path.read_bytes(), (tmp_path / "cache.sqlite").read_bytes(), usage.read_bytes(), cfg_dump.encode()):
        assert SECRET.encode() not in blob
    # the WAL may hold recent pages: read the cache through SQLite as well
    rows = sqlite3.connect(tmp_path / "cache.sqlite").execute("SELECT raw, usage, meta, key, model FROM responses").fetchall()
    assert rows and all(SECRET not in "".join(map(str, r)) for r in rows)
    assert any("***" in r[0] for r in rows)
    assert "ETHOSCRIBE_TEST_KEY" in cfg_dump  # the name is fine


def test_cache_is_off_when_configured(tmp_path: Path) -> None:
    cfg = ReasonerConfig(base_url="http://127.0.0.1:1/v1", model="m", cache=False)
    assert cfg.resolved_cache_path() is None
    assert ChatClient(cfg).cache is None
    c = ChatClient(cfg.model_copy(update={"cache": True, "cache_path": tmp_path / "c.sqlite"}))
    assert isinstance(c.cache, ResponseCache) and c.cache.path == tmp_path / "c.sqlite"


def test_to_toml_round_trips(tmp_path: Path) -> None:
    cfg = ReasonerConfig(base_url="http://127.0.0.1:8080/v1", model="gemma-3-270m", response_format="grammar", max_concurrency=2)
    f = write_toml(tmp_path / "rt.toml", cfg.to_toml())
    assert load_config(f, environ={}) == cfg
