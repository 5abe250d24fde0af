"""A chat client for any OpenAI-compatible server, answering in validated JSON.

:class:`ChatClient` sends chat messages (text and images as data URLs) to
the configured server and returns an :class:`Answer`: the answer parsed into
a pydantic model, the raw text, token usage, whether it came from the cache,
and how many attempts it took. What it takes care of:

- **schema enforcement**: the model's JSON schema goes out as
  ``response_format`` (``json_schema``), or as a llama.cpp grammar
  constraint (``grammar``: the schema in the body's ``json_schema`` field,
  which llama.cpp compiles with ``json_schema_to_grammar``; or the grammar
  itself when ``xllamacpp`` is loaded in this process), or only in the
  prompt (``json_object`` / ``none``); see
  :class:`~ethoscribe.reasoning.config.ReasonerConfig`. A server that
  rejects ``response_format`` with HTTP 400 is asked again without it (the
  schema stays in the prompt) and the client remembers that.
- **robust parsing**: code fences are stripped and the first JSON object in
  the text is taken.
- **one repair**: an answer that is not valid (JSON error, schema error, or a
  check of the schema's validators against ``context``) gets one repair
  request quoting the error; if that is still invalid the answer comes back
  with ``ok=False`` and the reason, and the caller falls back.
- **retries** with exponential back-off and seeded jitter on HTTP 429, 5xx,
  timeouts and connection errors, up to ``max_retries``; then
  :class:`~ethoscribe.reasoning.errors.ReasonerUnavailable`.
- **concurrency**: at most ``max_concurrency`` requests in flight per
  client (a semaphore), whichever threads call; :meth:`ChatClient.ask_many`
  runs a list of requests on a thread pool of that size, results in input order.
- **cache** (:mod:`~ethoscribe.reasoning.cache`), **accounting**
  (:mod:`~ethoscribe.reasoning.accounting`) and **trace**
  (:mod:`~ethoscribe.reasoning.trace`).

The API key is read from the environment variable the config names, held by
the HTTP client only, and scrubbed from every error message, trace record and
cache entry.

Examples
--------
Typical use in a step that has a deterministic fallback (not run here)::

    client = ChatClient(load_config(), accounting=acc, trace=TraceWriter(out / "reasoner_trace.jsonl"))
    prompt = load_prompt("merge_behaviours")
    msgs = prompt.render(snippets=snips, cluster_ids=ids, vocabulary=vocab)
    d = client.ask_or_fallback(msgs, MergeAnswer, fallback=lambda: embedding_merge(...),
                               convert=to_merge_result, step="merge", prompt=prompt,
                               context={"cluster_ids": ids}, input={"n_snippets": len(snips)})
    d.value, d.source, d.reason
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from ethoscribe.reasoning.accounting import Accounting
from ethoscribe.reasoning.cache import ResponseCache, cache_key
from ethoscribe.reasoning.config import ReasonerConfig, ResponseFormat
from ethoscribe.reasoning.errors import ReasonerUnavailable
from ethoscribe.reasoning.messages import Message, append_to_last_user, assistant, redact_messages
from ethoscribe.reasoning.prompts import Prompt, load_prompt
from ethoscribe.reasoning.schemas import request_schema
from ethoscribe.reasoning.trace import Trace, emit, scrub

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V")

_DEFAULT = object()
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_MAX_ERRORS = 8
#: llguidance (llama.cpp's grammar engine in xllamacpp) option: JSON without free whitespace (~40 % fewer tokens)
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


# ====================================================================== parsing
def extract_json(text: str) -> Any:
    """The first JSON object in ``text`` (inside a code fence if there is one).

    Raises
    ------
    ValueError
        If the text holds no complete JSON object.

    Examples
    --------
    >>> extract_json('Sure! ```json\\n{"a": 1}\\n``` hope this helps')
    {'a': 1}
    >>> extract_json('The answer is {"a": [1, 2]} and {"b": 2}')
    {'a': [1, 2]}
    """
    if text is None:
        raise ValueError("the answer is empty")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    dec = json.JSONDecoder()
    for chunk in candidates:
        s = chunk.strip()
        try:
            obj = json.loads(s)
            if isinstance(obj, dict):
                return obj
        except json.JSONDecodeError:
            pass
        for m in re.finditer(r"\{", s):
            try:
                obj, _ = dec.raw_decode(s, m.start())
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    snippet = text.strip().replace("\n", " ")
    snippet = snippet[:80] + ("..." if len(snippet) > 80 else "")
    raise ValueError(f"the answer contains no complete JSON object (it begins: {snippet!r})")


def format_validation_error(exc: ValidationError) -> str:
    """A short, model-readable list of what is wrong (``location: message``; at most 8 items)."""
    items = []
    for e in exc.errors(include_url=False, include_input=False)[:_MAX_ERRORS]:
        loc = ".".join(str(x) for x in e["loc"]) or "(the object)"
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        items.append(f"{loc}: {msg}")
    more = exc.error_count() - len(items)
    return "; ".join(items) + (f"; and {more} more" if more > 0 else "")


def parse_answer(raw: str | None, schema: type[T], context: dict[str, Any] | None = None) -> tuple[T | None, str | None]:
    """(parsed model, None) or (None, error message) for an answer text."""
    try:
        obj = extract_json(raw or "")
    except ValueError as exc:
        return None, str(exc)
    try:
        return schema.model_validate(obj, context=context), None
    except ValidationError as exc:
        return None, "schema validation failed: " + format_validation_error(exc)


def compact_schema(schema: dict[str, Any]) -> str:
    """The schema as compact JSON for a prompt (titles and descriptions of $defs kept: they help a model)."""
    return json.dumps(schema, separators=(",", ":"), sort_keys=False)


def _llama_grammar(schema_json: str) -> str | None:
    """llama.cpp grammar for a schema via ``xllamacpp.json_schema_to_grammar``, if xllamacpp is already loaded.

    Never imports xllamacpp itself: it cannot share a process with cftime
    (see :mod:`ethoscribe.reasoning._llama_worker`). Otherwise None, and the
    request carries the schema as ``json_schema``, which the llama.cpp
    server turns into the same grammar with the same function.
    """
    mod = sys.modules.get("xllamacpp")
    if mod is None:
        return None
    return _grammar_cached(mod, schema_json)


@lru_cache(maxsize=64)
def _grammar_cached(mod: Any, schema_json: str) -> str:
    return mod.json_schema_to_grammar(json.loads(schema_json))


# ====================================================================== results
@dataclass
class Answer(Generic[T]):
    """What :meth:`ChatClient.ask` returns.

    Attributes
    ----------
    value
        The parsed answer (None if ``ok`` is False).
    ok
        Whether ``value`` is a valid answer.
    raw
        The answer text that was parsed (after the repair, if one was made).
    reason
        Why ``ok`` is False (the last validation error).
    errors
        Every validation error met (first answer, repair).
    valid_first
        Valid before any repair.
    repaired
        A repair request was made.
    first_raw
        The first answer's text when a repair was made.
    cached
        Every response came from the cache (no call).
    calls
        Responses received from the server (0: all from the cache).
    attempts
        HTTP requests sent, retries included.
    usage
        ``prompt_tokens`` and ``completion_tokens`` summed over the
        responses (as recorded, for cached ones too).
    finish_reason
        The server's last ``finish_reason`` (``"length"``: cut at ``max_tokens``).
    model, seconds, key
        Model name, time taken, cache key of the first request.
    notes
        Retries and downgrades that happened on the way.
    messages
        The request as sent (images replaced by their hash and size).
    """

    value: T | None
    ok: bool
    raw: str | None
    reason: str | None = None
    errors: list[str] = field(default_factory=list)
    valid_first: bool = False
    repaired: bool = False
    first_raw: str | None = None
    cached: bool = False
    calls: int = 0
    attempts: int = 0
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    finish_reason: str | None = None
    model: str | None = None
    seconds: float = 0.0
    key: str = ""
    notes: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list, repr=False)

    def trace_record(self, step: str, prompt: Prompt | None = None, input: Any = None, **extra: Any) -> dict[str, Any]:
        """The trace line of this answer (see :mod:`ethoscribe.reasoning.trace`)."""
        rec: dict[str, Any] = {
            "step": step,
            "prompt": prompt.ref if prompt is not None else None,
            "input": input,
            "messages": self.messages,
            "raw": self.first_raw if self.repaired else self.raw,
            "repair": {"error": self.errors[0] if self.errors else None, "raw": self.raw} if self.repaired else None,
            "answer": self.value.model_dump(mode="json") if self.value is not None else None,
            "ok": self.ok,
            "valid_first": self.valid_first,
            "errors": self.errors,
            "model": self.model,
            "cached": self.cached,
            "calls": self.calls,
            "attempts": self.attempts,
            "usage": self.usage,
            "finish_reason": self.finish_reason,
            "seconds": round(self.seconds, 3),
            "key": self.key,
            "notes": self.notes or None,
        }
        rec.update(extra)
        return rec


@dataclass
class Decision(Generic[V]):
    """What :meth:`ChatClient.ask_or_fallback` returns: the value used and where it came from."""

    value: V
    source: Literal["model", "fallback"]
    reason: str | None = None
    answer: Answer[Any] | None = None

    @property
    def used_fallback(self) -> bool:
        return self.source == "fallback"


@dataclass
class Request:
    """One request for :meth:`ChatClient.ask_many`.

    With ``fallback`` set the request goes through :meth:`ChatClient.ask_or_fallback`
    (result: a :class:`Decision`), otherwise through :meth:`ChatClient.ask` (an :class:`Answer`).
    ``options`` are further keyword arguments of those methods (``max_tokens``, ``input``, ...).
    """

    messages: list[Message]
    schema: type[BaseModel]
    step: str = "ask"
    prompt: Prompt | None = None
    context: dict[str, Any] | None = None
    fallback: Callable[[], Any] | None = None
    convert: Callable[[Any], Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)


class _FormatRejected(Exception):
    """The server refused the response_format / grammar field (HTTP 400)."""


@dataclass
class _Exchange:
    raw: str
    usage: dict[str, Any]
    finish_reason: str | None
    cached: bool
    attempts: int
    key: str
    notes: list[str]


# ====================================================================== client
class ChatClient:
    """OpenAI-compatible chat client with schema-validated answers, retries, cache, accounting and trace.

    Parameters
    ----------
    config
        Where the server is and how to talk to it (``require()``-d here:
        a missing model or base URL, or an unset key variable, raises
        :class:`~ethoscribe.reasoning.errors.ReasonerConfigError` now).
    cache
        A :class:`ResponseCache`, ``"config"`` (default: the config's
        cache path, or none if ``cache = false``) or None (no cache).
    accounting
        Counters to add to (a new :class:`Accounting` if None; shared by
        clients of one run).
    trace
        Default trace of :meth:`ask` / :meth:`ask_or_fallback`: a
        :class:`~ethoscribe.reasoning.trace.TraceWriter`, a list, a callable or None.
    """

    def __init__(
        self,
        config: ReasonerConfig,
        *,
        cache: ResponseCache | str | None = "config",
        accounting: Accounting | None = None,
        trace: Trace = None,
    ) -> None:
        import openai

        self.config = config.require()
        key = config.api_key()
        self._secrets = [key] if key and key != "EMPTY" else []
        self._openai = openai.OpenAI(base_url=config.base_url, api_key=key, timeout=config.timeout_s, max_retries=0)
        del key
        self._own_cache = False
        if cache == "config":
            path = config.resolved_cache_path()
            self.cache: ResponseCache | None = ResponseCache(path) if path is not None else None
            self._own_cache = self.cache is not None
        elif cache is None or isinstance(cache, ResponseCache):
            self.cache = cache
        else:
            raise TypeError("cache must be a ResponseCache, 'config' or None")
        self.accounting = accounting if accounting is not None else Accounting()
        self.trace = trace
        self._sem = threading.BoundedSemaphore(config.max_concurrency)
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self._mode: ResponseFormat = config.response_format
        self._sleep = time.sleep

    @classmethod
    def from_config(cls, path: str | None = None, **kwargs: Any) -> ChatClient:
        """A client from ``ethoscribe.toml`` / environment (:func:`~ethoscribe.reasoning.config.load_config`)."""
        from ethoscribe.reasoning.config import load_config

        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in ReasonerConfig.model_fields}
        return cls(load_config(path, **overrides), **kwargs)

    @property
    def response_format(self) -> ResponseFormat:
        """The schema enforcement in use (may have been downgraded to ``none`` after a server refused it)."""
        return self._mode

    def close(self) -> None:
        """Close the HTTP client (and the cache, if this client opened it)."""
        self._openai.close()
        if self._own_cache and self.cache is not None:
            self.cache.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ request building
    def _build(
        self, messages: Sequence[Message], schema: type[BaseModel], mode: ResponseFormat,
        max_tokens: int, temperature: float, seed: int | None,
    ) -> tuple[list[Message], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(messages to send, create() kwargs, schema dict, cache params)."""
        sch, strict = request_schema(schema)
        msgs = [dict(m) for m in messages]
        if self.config.schema_in_prompt or mode in ("json_object", "none"):
            msgs = append_to_last_user(msgs, "Answer with one JSON object that matches this JSON schema:\n" + compact_schema(sch))
        kw: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            kw["seed"] = seed
        extra = dict(self.config.extra_body)
        if mode == "json_schema":
            kw["response_format"] = {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": sch, "strict": strict}}
        elif mode == "json_object":
            kw["response_format"] = {"type": "json_object"}
        elif mode == "grammar":
            sent = dict(sch, **{"x-guidance": _COMPACT}) if self.config.compact_json else sch
            g = _llama_grammar(json.dumps(sent, sort_keys=True))
            if g is not None:
                extra["grammar"] = g
            else:
                extra["json_schema"] = sent
        if extra:
            kw["extra_body"] = extra
        params = {"temperature": temperature, "seed": seed, "max_tokens": max_tokens, "mode": mode,
                  "extra_body": self.config.extra_body}
        if mode == "grammar" and self.config.compact_json:
            params["compact_json"] = True
        return msgs, kw, sch, params

    # ------------------------------------------------------------ sending
    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        base = min(cfg.backoff_max_s, cfg.backoff_s * (2 ** attempt))
        with self._rng_lock:
            delay = base * (0.5 + self._rng.random())
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, cfg.backoff_max_s)

    def _scrub(self, obj: Any) -> Any:
        return scrub(obj, self._secrets)

    def _send(self, step: str, msgs: list[Message], kw: dict[str, Any], notes: list[str]) -> tuple[str, dict[str, Any], str | None, int]:
        """One answered request (with retries): (text, usage, finish_reason, attempts)."""
        import openai

        cfg = self.config
        acc = self.accounting
        last = "no attempt"
        attempts = 0
        for attempt in range(cfg.max_retries + 1):
            attempts += 1
            acc.add_attempt(step, retry=attempt > 0)
            retry_after: float | None = None
            retryable = True
            with self._sem:
                acc.request_started()
                t0 = time.perf_counter()
                try:
                    resp = self._openai.chat.completions.create(model=cfg.model, messages=msgs, **kw)
                except openai.APITimeoutError:
                    last = f"no answer within {cfg.timeout_s:g} s (timeout_s)"
                except openai.APIConnectionError as exc:
                    cause = exc.__cause__ or exc
                    last = f"cannot connect to {cfg.base_url} ({type(cause).__name__}: {cause})"
                except openai.APIStatusError as exc:
                    status = exc.status_code
                    detail = self._scrub(_status_detail(exc))
                    last = f"HTTP {status} from {cfg.base_url}: {detail}"
                    retry_after = _retry_after(exc)
                    if status in (401, 403):
                        retryable = False
                        var = cfg.api_key_env or "(none named: api_key_env is unset)"
                        last = f"HTTP {status} from {cfg.base_url}: not authorised (check the key in the variable {var}): {detail}"
                    elif (status == 400 and self._mode != "none" and ("response_format" in kw or "extra_body" in kw)
                          and re.search(r"response_format|json_schema|json_object|grammar|schema", detail, re.I)):
                        raise _FormatRejected(last) from None
                    elif not (status >= 500 or status in (408, 409, 425, 429)):
                        retryable = False
                except openai.APIError as exc:  # malformed responses and the like
                    last = f"unusable response from {cfg.base_url}: {type(exc).__name__}: {self._scrub(str(exc))}"
                    retryable = False
                else:
                    seconds = time.perf_counter() - t0
                    text, usage, finish = _read_completion(resp)
                    if text is None:
                        last = f"the server's reply is not a chat completion: {str(resp)[:120]!r}"
                        retryable = False
                    else:
                        acc.add_call(step, usage.get("prompt_tokens"), usage.get("completion_tokens"), seconds, model=cfg.model)
                        return self._scrub(text), usage, finish, attempts
                finally:
                    acc.request_finished()
            last = self._scrub(last)
            if not retryable:
                break
            if attempt < cfg.max_retries:
                delay = self._backoff(attempt, retry_after)
                notes.append(f"attempt {attempt + 1}: {last}; retrying in {delay:.2f} s")
                self._sleep(delay)
        acc.add_failure(step)
        tried = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        raise ReasonerUnavailable(f"language-model server {cfg.base_url} (model {cfg.model}) gave no usable answer {tried}: {last}")

    def _exchange(self, step: str, msgs: list[Message], kw: dict[str, Any], sch: dict[str, Any], params: dict[str, Any],
                  prompt_id: str | None, use_cache: bool, notes: list[str]) -> _Exchange:
        """An answer for exactly this request: from the cache, or from the server (then cached)."""
        key = cache_key(model=self.config.model, messages=msgs, schema=sch, params=params, prompt_version=prompt_id)
        if self.cache is not None and use_cache:
            hit = self.cache.get(key)
            self.accounting.add_cache(step, hit is not None)
            if hit is not None:
                return _Exchange(hit.raw, dict(hit.usage), hit.meta.get("finish_reason"), True, 0, key, notes)
        text, usage, finish, attempts = self._send(step, msgs, kw, notes)
        if self.cache is not None and use_cache:
            self.cache.put(key, text, usage, self.config.model, {"finish_reason": finish, "step": step, "prompt": prompt_id})
        return _Exchange(text, usage, finish, False, attempts, key, notes)

    # ------------------------------------------------------------ asking
    def _ask(
        self, messages: Sequence[Message], schema: type[T], *, step: str, prompt: Prompt | None,
        context: dict[str, Any] | None, max_tokens: int | None, temperature: float | None,
        seed: Any, repair: bool | None, use_cache: bool,
    ) -> Answer[T]:
        cfg = self.config
        acc = self.accounting
        t0 = acc.begin()
        acc.add_ask(step)
        try:
            mt = cfg.max_tokens if max_tokens is None else int(max_tokens)
            temp = cfg.temperature if temperature is None else float(temperature)
            sd = cfg.seed if seed is _DEFAULT else seed
            do_repair = cfg.repair if repair is None else repair
            pid = prompt.id if prompt is not None else None
            notes: list[str] = []
            while True:
                mode = self._mode
                msgs, kw, sch, params = self._build(messages, schema, mode, mt, temp, sd)
                try:
                    ex = self._exchange(step, msgs, kw, sch, params, pid, use_cache, notes)
                    break
                except _FormatRejected as exc:
                    notes.append(f"server refused response_format={mode} ({exc}); asking without it from now on")
                    self._mode = "none"
            value, err = parse_answer(ex.raw, schema, context)
            if err is not None and ex.finish_reason == "length":
                err += f" (the answer was cut off at max_tokens={mt})"
            ans: Answer[T] = Answer(
                value=value, ok=value is not None, raw=ex.raw, valid_first=value is not None, cached=ex.cached,
                calls=0 if ex.cached else 1, attempts=ex.attempts, usage=_usage_ints(ex.usage),
                finish_reason=ex.finish_reason, model=cfg.model, key=ex.key, notes=notes,
                messages=self._scrub(redact_messages(msgs)),
            )
            if err is not None:
                ans.errors.append(err)
                ans.reason = err
                if do_repair:
                    rp = load_prompt("json_repair")
                    fix_msgs = list(msgs) + [assistant(ex.raw)] + rp.render(error=err, schema=compact_schema(sch))
                    # the repair turn is sent as-is (schema already quoted); same format constraint
                    _, kw2, _, params2 = self._build([], schema, self._mode, mt, temp, sd)
                    try:
                        ex2 = self._exchange(step, fix_msgs, kw2, sch, {**params2, "repair": rp.id}, pid, use_cache, notes)
                    except _FormatRejected as exc:  # accepted for the question, refused for the repair: give up
                        self.accounting.add_failure(step)
                        raise ReasonerUnavailable(f"the server refused the repair request: {exc}") from None
                    value2, err2 = parse_answer(ex2.raw, schema, context)
                    if err2 is not None and ex2.finish_reason == "length":
                        err2 += f" (the answer was cut off at max_tokens={mt})"
                    ans.repaired = True
                    ans.first_raw = ex.raw
                    ans.raw = ex2.raw
                    ans.cached = ans.cached and ex2.cached
                    ans.calls += 0 if ex2.cached else 1
                    ans.attempts += ex2.attempts
                    u2 = _usage_ints(ex2.usage)
                    ans.usage = {k: ans.usage.get(k, 0) + u2.get(k, 0) for k in ("prompt_tokens", "completion_tokens")}
                    ans.finish_reason = ex2.finish_reason
                    if err2 is None:
                        ans.value, ans.ok, ans.reason = value2, True, None
                    else:
                        ans.errors.append(err2)
                        ans.reason = f"still invalid after one repair request: {err2}"
                else:
                    ans.reason = f"invalid answer (no repair requested): {err}"
            acc.add_validity(step, valid_first=ans.valid_first, repaired=ans.repaired, valid=ans.ok)
            ans.seconds = time.perf_counter() - t0
            return ans
        finally:
            acc.end()

    def ask(
        self,
        messages: Sequence[Message],
        schema: type[T],
        *,
        step: str = "ask",
        prompt: Prompt | None = None,
        context: dict[str, Any] | None = None,
        input: Any = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: Any = _DEFAULT,
        repair: bool | None = None,
        use_cache: bool = True,
        trace: Trace | object = _DEFAULT,
        trace_fields: dict[str, Any] | None = None,
    ) -> Answer[T]:
        """Ask for one answer of type ``schema``.

        Parameters
        ----------
        messages
            OpenAI-format chat messages (see :mod:`ethoscribe.reasoning.messages`
            or :meth:`Prompt.render <ethoscribe.reasoning.prompts.Prompt.render>`).
        schema
            The pydantic model the answer must validate against.
        step
            Name of the pipeline step (accounting and trace).
        prompt
            The prompt the messages came from (its version goes into the
            trace and the cache key).
        context
            Validation context for the schema's validators (e.g. the valid
            candidate or cluster ids).
        input
            A short, JSON-able summary of the step's input for the trace.
        max_tokens, temperature, seed
            Override the config for this request.
        repair
            Make the one repair request for an invalid answer (default: config).
        use_cache
            Look up and store this request in the cache.
        trace
            Where to write the trace record (default: the client's trace).
        trace_fields
            Extra fields of the trace record (``frame``, ``views``, ...).

        Returns
        -------
        Answer
            ``ok`` False (with ``reason``) if the answer stayed invalid.

        Raises
        ------
        ReasonerUnavailable
            No answer at all: server down, timeouts or 5xx after every
            retry, a refused request (4xx), or a reply that is not a chat completion.
        """
        tr = self.trace if trace is _DEFAULT else trace
        try:
            ans = self._ask(messages, schema, step=step, prompt=prompt, context=context, max_tokens=max_tokens,
                            temperature=temperature, seed=seed, repair=repair, use_cache=use_cache)
        except ReasonerUnavailable as exc:
            emit(tr, {"step": step, "prompt": prompt.ref if prompt else None, "input": input, "ok": False,
                      "error": str(exc), "model": self.config.model, **(trace_fields or {})})
            raise
        emit(tr, ans.trace_record(step, prompt, input, **(trace_fields or {})))
        return ans

    def ask_or_fallback(
        self,
        messages: Sequence[Message],
        schema: type[T],
        fallback: Callable[[], V],
        *,
        convert: Callable[[T], V] | None = None,
        on_unavailable: Literal["fallback", "raise"] = "fallback",
        step: str = "ask",
        prompt: Prompt | None = None,
        context: dict[str, Any] | None = None,
        input: Any = None,
        verification: Any = None,
        trace: Trace | object = _DEFAULT,
        trace_fields: dict[str, Any] | None = None,
        **options: Any,
    ) -> Decision[V]:
        """The model's answer if it is valid, otherwise ``fallback()``; either way one trace record.

        Parameters
        ----------
        fallback
            The deterministic reasoner's answer (called only when needed).
        convert
            Turns the parsed answer into the value the caller uses; a
            ``ValueError`` (or pydantic ``ValidationError``) raised here
            rejects the answer and takes the fallback, with the message as reason.
        on_unavailable
            ``"fallback"`` (default): a server that is down or failing
            falls back like an invalid answer; ``"raise"``: re-raise
            :class:`ReasonerUnavailable` (after tracing it).
        verification
            Recorded in the trace record as ``verification``.
        options
            Passed to :meth:`ask` (``max_tokens``, ``temperature``, ``seed``,
            ``repair``, ``use_cache``).

        Returns
        -------
        Decision
            ``value``, ``source`` (``"model"`` / ``"fallback"``), ``reason``, ``answer``.
        """
        tr = self.trace if trace is _DEFAULT else trace
        fields = dict(trace_fields or {})
        ans: Answer[T] | None = None
        reason: str | None = None
        value: Any = None
        opts = {"max_tokens": options.pop("max_tokens", None), "temperature": options.pop("temperature", None),
                "seed": options.pop("seed", _DEFAULT), "repair": options.pop("repair", None),
                "use_cache": options.pop("use_cache", True)}
        if options:
            raise TypeError(f"ask_or_fallback() got unexpected options: {sorted(options)}")
        try:
            ans = self._ask(messages, schema, step=step, prompt=prompt, context=context, **opts)
        except ReasonerUnavailable as exc:
            reason = f"unavailable: {exc}"
            if on_unavailable == "raise":
                emit(tr, {"step": step, "prompt": prompt.ref if prompt else None, "input": input, "ok": False,
                          "error": str(exc), "source": None, "model": self.config.model, **fields})
                raise
        if ans is not None:
            if ans.ok:
                try:
                    value = convert(ans.value) if convert is not None else ans.value  # type: ignore[arg-type]
                except ValidationError as exc:
                    reason = f"rejected: {format_validation_error(exc)}"
                except ValueError as exc:
                    reason = f"rejected: {exc}"
            else:
                reason = f"invalid: {ans.reason}"
        source: Literal["model", "fallback"] = "model"
        if reason is not None:
            reason = self._scrub(reason)
            source = "fallback"
            self.accounting.add_fallback(step, reason)
            value = fallback()
        if ans is not None:
            rec = ans.trace_record(step, prompt, input, **fields)
        else:
            rec = {"step": step, "prompt": prompt.ref if prompt else None, "input": input, "ok": False,
                   "model": self.config.model, **fields}
        rec.update({"source": source, "fallback_reason": reason, "verification": verification})
        if source == "fallback":
            rec["fallback_value"] = _jsonable(value)
        emit(tr, rec)
        return Decision(value=value, source=source, reason=reason, answer=ans)

    def ask_many(self, requests: Sequence[Request], *, return_exceptions: bool = False) -> list[Any]:
        """Run ``requests`` on a thread pool of ``max_concurrency`` workers; results in input order.

        Each result is an :class:`Answer` (or a :class:`Decision` for a
        request with a ``fallback``). With ``return_exceptions`` an exception
        takes its request's place; otherwise the first one is raised after
        every request has finished.
        """
        if not requests:
            return []

        def one(r: Request) -> Any:
            if r.fallback is not None:
                return self.ask_or_fallback(r.messages, r.schema, r.fallback, convert=r.convert, step=r.step,
                                            prompt=r.prompt, context=r.context, **r.options)
            return self.ask(r.messages, r.schema, step=r.step, prompt=r.prompt, context=r.context, **r.options)

        workers = min(self.config.max_concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ethoscribe-llm") as pool:
            futures = [pool.submit(one, r) for r in requests]
            results: list[Any] = []
            first_exc: BaseException | None = None
            for f in futures:
                exc = f.exception()
                if exc is not None:
                    results.append(exc)
                    first_exc = first_exc or exc
                else:
                    results.append(f.result())
        if first_exc is not None and not return_exceptions:
            raise first_exc
        return results


# ====================================================================== helpers
def _read_completion(resp: Any) -> tuple[str | None, dict[str, Any], str | None]:
    choices = getattr(resp, "choices", None)
    if not choices:
        return None, {}, None
    ch = choices[0]
    msg = getattr(ch, "message", None)
    text = getattr(msg, "content", None) if msg is not None else None
    if text is None and msg is not None:  # refusals and reasoning-only replies
        text = getattr(msg, "refusal", None) or ""
    u = getattr(resp, "usage", None)
    usage: dict[str, Any] = {}
    if u is not None:
        usage = {"prompt_tokens": getattr(u, "prompt_tokens", None), "completion_tokens": getattr(u, "completion_tokens", None)}
    return text, usage, getattr(ch, "finish_reason", None)


def _usage_ints(u: dict[str, Any]) -> dict[str, int]:
    return {"prompt_tokens": int(u.get("prompt_tokens") or 0), "completion_tokens": int(u.get("completion_tokens") or 0)}


def _status_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:300]
        return str(err)[:300]
    resp = getattr(exc, "response", None)
    try:
        return (resp.text if resp is not None else str(exc))[:300]
    except Exception:  # pragma: no cover
        return str(exc)[:300]


def _retry_after(exc: Any) -> float | None:
    resp = getattr(exc, "response", None)
    if resp is None:
        return None
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _jsonable(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)[:500]
