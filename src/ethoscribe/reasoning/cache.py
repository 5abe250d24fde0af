"""Persistent response cache (SQLite): a rerun with the same requests makes no calls.

The key is the sha256 of a canonical JSON of everything that can change an
answer: the model name, the messages (image bytes included, as they sit in
the data URLs), the answer schema, the sampling parameters, how the schema
was enforced, and the prompt version. The value is the raw answer text and
the server's token usage. No API key or base URL is part of either.

The database runs in WAL mode: readers do not block the writer, and several
threads (one connection per thread) and processes may read and write it at
once; writes retry while another writer holds the lock (``busy_timeout``).
Do not put it on a network file system (SQLite's WAL needs shared memory
between processes on one machine).

Examples
--------
>>> import tempfile, pathlib
>>> cache = ResponseCache(pathlib.Path(tempfile.mkdtemp()) / "c.sqlite")
>>> k = cache_key(model="m", messages=[{"role": "user", "content": "hi"}], schema=None, params={})
>>> cache.get(k) is None
True
>>> cache.put(k, '{"a": 1}', {"prompt_tokens": 3, "completion_tokens": 4}, model="m")
>>> cache.get(k).raw
'{"a": 1}'
>>> cache.hits, cache.misses
(1, 1)
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Bump when the key recipe changes (old entries then simply stop matching).
KEY_FORMAT = 1

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    raw TEXT NOT NULL,
    usage TEXT NOT NULL,
    meta TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def cache_key(
    *,
    model: str | None,
    messages: list[dict[str, Any]],
    schema: dict[str, Any] | None,
    params: dict[str, Any],
    prompt_version: str | None = None,
) -> str:
    """sha256 hex of (model, messages with image bytes, schema, sampling and format params, prompt version)."""
    payload = {
        "k": KEY_FORMAT,
        "model": model,
        "messages": messages,
        "schema": schema,
        "params": params,
        "prompt_version": prompt_version,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedResponse:
    """One stored answer."""

    key: str
    raw: str
    usage: dict[str, int]
    model: str
    meta: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0


class ResponseCache:
    """SQLite response cache, safe for concurrent threads and processes.

    Parameters
    ----------
    path
        Database file (created with its folder).
    timeout_s
        How long a write waits for another writer's lock.

    Attributes
    ----------
    hits, misses, writes
        Counts of this object's lookups and stores (thread-safe).
    """

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = float(timeout_s)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._connect()  # create the table now, so errors show at construction

    # ------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
            self._retry(lambda: conn.execute(_SCHEMA_SQL))
        except sqlite3.DatabaseError as exc:
            from ethoscribe.errors import InputError

            raise InputError(f"{self.path}: cannot open the response cache ({exc}); delete it or choose another cache_path") from None
        self._local.conn = conn
        with self._lock:
            self._conns.append(conn)
        return conn

    def _retry(self, fn: Any, attempts: int = 50) -> Any:
        """Run ``fn``, retrying briefly on 'database is locked' (WAL switch and DDL can race across processes)."""
        delay = 0.01
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or i == attempts - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        return None  # pragma: no cover

    # ------------------------------------------------------------ use
    def get(self, key: str) -> CachedResponse | None:
        """The stored answer for ``key``, or None (counted as a hit or a miss)."""
        conn = self._connect()
        row = self._retry(
            lambda: conn.execute("SELECT raw, usage, model, meta, created FROM responses WHERE key = ?", (key,)).fetchone()
        )
        with self._lock:
            if row is None:
                self.misses += 1
            else:
                self.hits += 1
        if row is None:
            return None
        return CachedResponse(key=key, raw=row[0], usage=json.loads(row[1]), model=row[2], meta=json.loads(row[3]), created=row[4])

    def put(self, key: str, raw: str, usage: dict[str, Any] | None, model: str | None, meta: dict[str, Any] | None = None) -> None:
        """Store (or replace) the answer for ``key``."""
        conn = self._connect()
        args = (key, model or "", raw, canonical_json(usage or {}), canonical_json(meta or {}), time.time())
        self._retry(lambda: conn.execute("INSERT OR REPLACE INTO responses (key, model, raw, usage, meta, created) VALUES (?, ?, ?, ?, ?, ?)", args))
        with self._lock:
            self.writes += 1

    def __contains__(self, key: str) -> bool:
        conn = self._connect()
        return self._retry(lambda: conn.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone()) is not None

    def __len__(self) -> int:
        conn = self._connect()
        return int(self._retry(lambda: conn.execute("SELECT COUNT(*) FROM responses").fetchone())[0])

    def stats(self) -> dict[str, Any]:
        """Hits, misses, writes and hit rate of this object's lookups."""
        with self._lock:
            n = self.hits + self.misses
            return {"hits": self.hits, "misses": self.misses, "writes": self.writes, "hit_rate": (self.hits / n) if n else None}

    def clear(self) -> None:
        """Delete every stored answer."""
        conn = self._connect()
        self._retry(lambda: conn.execute("DELETE FROM responses"))

    def close(self) -> None:
        """Close every connection this object opened (it reopens on next use)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        self._local = threading.local()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"
