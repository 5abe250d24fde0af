"""JSONL trace of reasoner calls: why any answer was chosen.

One JSON object per line, appended and flushed at once (a crash loses at
most the line being written), from any number of threads. A record of a
language-model answer (:meth:`~ethoscribe.reasoning.client.Answer.trace_record`,
written by the client's ``ask`` / ``ask_or_fallback``) holds:

- ``step``: the pipeline step (``"merge"``, ``"caption"``, ``"region"``, ...),
  plus whatever the caller adds (``frame``, ``views``, ``cluster``, ...);
- ``prompt``: ``{"name", "version"}`` of the prompt file;
- ``input``: the caller's summary of what the step was given;
- ``messages``: the request, images replaced by their sha256 and size;
- ``raw``: the answer text; ``repair``: the repair exchange, if any
  (``{"error", "raw"}``); ``answer``: the parsed answer (null if invalid);
- ``verification``: the caller's check of the answer (e.g. what geometry
  confirmed or overrode);
- ``ok``, ``source`` (``"model"`` or ``"fallback"``), ``fallback_reason``,
  ``fallback_value`` (what the deterministic reasoner answered instead);
- ``model``, ``cached``, ``attempts``, ``usage``, ``seconds``, ``key`` (cache key).

The layout follows the behaviour pipeline's ``trace.jsonl`` (``step`` plus
fields) and uses the pose pipeline's ``input`` / ``answer`` /
``verification`` names, so the records can go into either file.

Examples
--------
>>> import tempfile, pathlib, json
>>> p = pathlib.Path(tempfile.mkdtemp()) / "trace.jsonl"
>>> with TraceWriter(p) as tw:
...     tw.write({"step": "merge", "ok": True})
>>> json.loads(p.read_text())["step"]
'merge'
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

#: File name of the reasoner trace in a run's output folder.
TRACE_FILE = "reasoner_trace.jsonl"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    return str(o)


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def dumps(record: dict[str, Any]) -> str:
    """One trace line (sorted keys, NaN as null, numpy and pydantic values converted)."""
    return json.dumps(_finite(json.loads(json.dumps(record, default=_json_default))), sort_keys=True, ensure_ascii=False)


def scrub(obj: Any, secrets: Iterable[str]) -> Any:
    """``obj`` with every occurrence of each secret (of 4+ characters) in its strings replaced by ``***``."""
    secrets = [s for s in secrets if s and len(s) >= 4]
    if not secrets:
        return obj

    def go(o: Any) -> Any:
        if isinstance(o, str):
            for s in secrets:
                if s in o:
                    o = o.replace(s, "***")
            return o
        if isinstance(o, dict):
            return {k: go(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [go(v) for v in o]
        return o

    return go(obj)


class TraceSink(Protocol):
    """Anything with ``write(record: dict)``."""

    def write(self, record: dict[str, Any]) -> None: ...


class TraceWriter:
    """Append-only, thread-safe JSONL writer (one flushed line per record).

    Parameters
    ----------
    path
        The ``.jsonl`` file (created with its folder; appended to if it exists).
    truncate
        Start the file afresh instead of appending.
    """

    def __init__(self, path: str | os.PathLike[str], truncate: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(self.path, "w" if truncate else "a", encoding="utf-8")
        self.n_records = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line and flush it to the OS."""
        line = dumps(record) + "\n"
        with self._lock:
            if self._fh.closed:
                raise ValueError(f"{self.path}: trace writer is closed")
            self._fh.write(line)
            self._fh.flush()
            self.n_records += 1

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ListTrace:
    """An in-memory trace (records kept as dicts in ``records``), e.g. for a pipeline that writes its own file."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        rec = json.loads(dumps(record))
        with self._lock:
            self.records.append(rec)


Trace = TraceSink | list | Callable[[dict[str, Any]], Any] | None


def emit(trace: Trace, record: dict[str, Any]) -> None:
    """Send a record to a trace: a writer (``.write``), a list (appended, as a JSON-ready dict), a callable, or None."""
    if trace is None:
        return
    if hasattr(trace, "write"):
        trace.write(record)  # type: ignore[union-attr]
    elif isinstance(trace, list):
        trace.append(json.loads(dumps(record)))
    elif callable(trace):
        trace(record)
    else:
        raise TypeError(f"cannot write a trace record to {type(trace).__name__}")


def read_trace(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a JSONL trace (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
