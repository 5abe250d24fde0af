"""Per-run accounting of language-model use: calls, tokens, cache hits, failures, repairs, fallbacks, time.

One :class:`Accounting` per run, shared by every client of the run (it is
thread-safe). :meth:`Accounting.write` puts ``reasoner_usage.json`` into the
run's output folder atomically. Definitions:

- ``calls``: requests the server answered (a repair request is a call; a
  cache hit is not);
- ``attempts``: HTTP requests sent, including ones that failed and were
  retried; ``retries`` = attempts that were repeats;
- ``prompt_tokens``, ``completion_tokens``: as the server reported them, for
  real calls only (``usage_missing`` counts calls whose server reported none);
- ``cache_hits``, ``cache_misses``: lookups of the response cache;
- ``asks``: answers requested (:meth:`~ethoscribe.reasoning.client.ChatClient.ask`);
  ``valid_first``: answers valid before any repair; ``repairs``: repair
  requests; ``valid``: answers valid in the end; ``invalid``: still invalid
  after the repair;
- ``failures``: asks that got no answer (server down, timeouts after every
  retry, refused requests); ``fallbacks``: asks whose caller used its
  deterministic reasoner instead;
- ``call_s``: summed seconds inside HTTP requests; ``wall_s``: seconds from
  the first ask's start to the last ask's end; ``max_in_flight``: most
  requests in flight at once.

Examples
--------
>>> acc = Accounting()
>>> acc.add_call("merge", prompt_tokens=120, completion_tokens=30, seconds=0.5)
>>> acc.to_dict()["prompt_tokens"], acc.to_dict()["steps"]["merge"]["calls"]
(120, 1)
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ethoscribe.io.atomic import write_json

#: File name of the usage record in a run's output folder.
USAGE_FILE = "reasoner_usage.json"

_COUNTERS = (
    "asks", "calls", "attempts", "retries", "prompt_tokens", "completion_tokens", "usage_missing",
    "cache_hits", "cache_misses", "valid_first", "valid", "invalid", "repairs", "failures", "fallbacks",
)


class Accounting:
    """Thread-safe counters of one run, in total and per step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total: dict[str, float] = defaultdict(float)
        self._steps: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._first: float | None = None
        self._last: float | None = None
        self._in_flight = 0
        self.max_in_flight = 0
        self.models: set[str] = set()
        self.fallback_reasons: dict[str, int] = defaultdict(int)

    # ------------------------------------------------------------ recording
    def _add(self, step: str, **counts: float) -> None:
        with self._lock:
            for k, v in counts.items():
                self._total[k] += v
                self._steps[step][k] += v

    def begin(self) -> float:
        """Mark the start of an ask (for ``wall_s``); returns the time."""
        t = time.perf_counter()
        with self._lock:
            if self._first is None:
                self._first = t
        return t

    def end(self) -> None:
        """Mark the end of an ask."""
        with self._lock:
            self._last = time.perf_counter()

    def request_started(self) -> None:
        """An HTTP request goes out (for ``max_in_flight``)."""
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def add_ask(self, step: str) -> None:
        self._add(step, asks=1)

    def add_attempt(self, step: str, retry: bool) -> None:
        self._add(step, attempts=1, retries=1 if retry else 0)

    def add_call(self, step: str, prompt_tokens: int | None, completion_tokens: int | None, seconds: float, model: str | None = None) -> None:
        """A request the server answered."""
        missing = prompt_tokens is None and completion_tokens is None
        self._add(step, calls=1, prompt_tokens=prompt_tokens or 0, completion_tokens=completion_tokens or 0,
                  usage_missing=1 if missing else 0, call_s=seconds)
        if model:
            with self._lock:
                self.models.add(model)

    def add_cache(self, step: str, hit: bool) -> None:
        self._add(step, cache_hits=1 if hit else 0, cache_misses=0 if hit else 1)

    def add_validity(self, step: str, valid_first: bool, repaired: bool, valid: bool) -> None:
        self._add(step, valid_first=1 if valid_first else 0, repairs=1 if repaired else 0,
                  valid=1 if valid else 0, invalid=0 if valid else 1)

    def add_failure(self, step: str) -> None:
        self._add(step, failures=1)

    def add_fallback(self, step: str, reason: str = "") -> None:
        self._add(step, fallbacks=1)
        kind = reason.split(":", 1)[0].strip() or "unspecified"
        with self._lock:
            self.fallback_reasons[kind] += 1

    # ------------------------------------------------------------ reading
    def __getitem__(self, name: str) -> float:
        with self._lock:
            return self._total.get(name, 0)

    @staticmethod
    def _finish(d: dict[str, float]) -> dict[str, Any]:
        out: dict[str, Any] = {k: int(d.get(k, 0)) for k in _COUNTERS}
        out["call_s"] = round(float(d.get("call_s", 0.0)), 3)
        lookups = out["cache_hits"] + out["cache_misses"]
        out["cache_hit_rate"] = round(out["cache_hits"] / lookups, 4) if lookups else None
        answered = out["valid"] + out["invalid"]
        out["schema_valid_rate"] = round(out["valid_first"] / answered, 4) if answered else None
        out["fallback_rate"] = round(out["fallbacks"] / out["asks"], 4) if out["asks"] else None
        return out

    def to_dict(self) -> dict[str, Any]:
        """Totals, derived rates, and the same per step (JSON-ready)."""
        with self._lock:
            total = dict(self._total)
            steps = {k: dict(v) for k, v in self._steps.items()}
            wall = (self._last - self._first) if (self._first is not None and self._last is not None) else 0.0
            extra = {"max_in_flight": self.max_in_flight, "models": sorted(self.models),
                     "fallback_reasons": dict(self.fallback_reasons)}
        out = self._finish(total)
        out["wall_s"] = round(max(wall, 0.0), 3)
        out.update(extra)
        out["steps"] = {k: self._finish(v) for k, v in sorted(steps.items())}
        return out

    def write(self, out: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as ``reasoner_usage.json`` into the folder ``out`` (or to ``out`` if it ends in .json)."""
        path = Path(out)
        if path.suffix != ".json":
            path = path / USAGE_FILE
        return write_json(path, self.to_dict())
