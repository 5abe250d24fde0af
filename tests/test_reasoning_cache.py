"""The SQLite response cache: keys, persistence, and concurrent writers (threads and another process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np

from ethoscribe.reasoning.cache import ResponseCache, cache_key
from ethoscribe.reasoning.messages import user

BASE = dict(model="m", messages=[{"role": "user", "content": "hi"}], schema={"type": "object"},
            params={"temperature": 0.0, "seed": 0, "max_tokens": 10, "mode": "json_schema"}, prompt_version="p@v1")


def test_key_depends_on_everything_that_changes_an_answer() -> None:
    k = cache_key(**BASE)
    assert k == cache_key(**dict(BASE))  # stable
    changed = [
        dict(BASE, model="m2"),
        dict(BASE, messages=[{"role": "user", "content": "hi!"}]),
        dict(BASE, schema={"type": "object", "properties": {}}),
        dict(BASE, params={**BASE["params"], "temperature": 0.5}),
        dict(BASE, params={**BASE["params"], "seed": 1}),
        dict(BASE, params={**BASE["params"], "mode": "grammar"}),
        dict(BASE, prompt_version="p@v2"),
    ]
    keys = {cache_key(**c) for c in changed}
    assert k not in keys and len(keys) == len(changed)


def test_key_includes_image_bytes() -> None:
    img = np.zeros((16, 16, 3), np.uint8)
    k1 = cache_key(**dict(BASE, messages=[user("dots", img)]))
    img2 = img.copy()
    img2[3, 4, 0] = 1  # one pixel
    k2 = cache_key(**dict(BASE, messages=[user("dots", img2)]))
    assert k1 != k2 and k1 == cache_key(**dict(BASE, messages=[user("dots", img.copy())]))


def test_persistence_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.sqlite"
    c = ResponseCache(path)
    assert c.get("k") is None
    c.put("k", '{"a": 1}', {"prompt_tokens": 5, "completion_tokens": 2}, model="m", meta={"finish_reason": "stop"})
    c.close()
    c2 = ResponseCache(path)
    hit = c2.get("k")
    assert hit is not None and hit.raw == '{"a": 1}' and hit.usage == {"prompt_tokens": 5, "completion_tokens": 2}
    assert hit.meta == {"finish_reason": "stop"} and "k" in c2 and len(c2) == 1
    assert c.stats()["misses"] == 1 and c2.stats() == {"hits": 1, "misses": 0, "writes": 0, "hit_rate": 1.0}
    import sqlite3

    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


_WRITER = textwrap.dedent(
    """
    import sys
    from ethoscribe.reasoning.cache import ResponseCache
    c = ResponseCache(sys.argv[1])
    print("ready", flush=True)
    for i in range(int(sys.argv[2])):
        c.put(f"proc-{i}", "x" * 2000 + str(i), {"prompt_tokens": i, "completion_tokens": 1}, model="m")
        if i % 7 == 0:
            assert c.get(f"proc-{i}") is not None
        c.put("shared", f"proc {i}", {}, model="m")
    print("done")
    """
)


def test_concurrent_writers_threads_and_a_second_process(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    n_proc, n_thread, per_thread = 600, 6, 80
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(n_proc)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # the other process writes while the threads do
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                key = f"thread-{t}-{i}"
                cache.put(key, f"answer {t} {i}", {"prompt_tokens": i, "completion_tokens": t}, model="m")
                got = cache.get(key)
                assert got is not None and got.raw == f"answer {t} {i}"
                cache.put("shared", f"thread {t} {i}", {}, model="m")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_thread)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "done"
    assert not errors, errors
    fresh = ResponseCache(path)
    assert len(fresh) == n_proc + n_thread * per_thread + 1
    assert fresh.get("proc-123").raw == "x" * 2000 + "123"
    assert fresh.get("thread-5-79").usage == {"prompt_tokens": 79, "completion_tokens": 5}
    assert fresh.get("shared").raw.startswith(("thread", "proc"))
    assert cache.stats()["hits"] == n_thread * per_thread
