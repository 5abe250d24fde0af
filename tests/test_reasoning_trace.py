"""JSONL trace writer (thread-safe, flushed per line) and per-run accounting."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from ethoscribe.reasoning.accounting import USAGE_FILE, Accounting
from ethoscribe.reasoning.trace import ListTrace, TraceWriter, emit, read_trace, scrub


def test_lines_are_flushed_as_written(tmp_path: Path) -> None:
    p = tmp_path / "t" / "trace.jsonl"
    tw = TraceWriter(p)
    tw.write({"step": "merge", "x": np.float32(1.5), "arr": np.arange(3), "nan": float("nan")})
    # readable before close: a crash loses nothing already written
    rec = json.loads(p.read_text().splitlines()[0])
    assert rec == {"step": "merge", "x": 1.5, "arr": [0, 1, 2], "nan": None}
    tw.close()
    with TraceWriter(p) as tw2:  # appends
        tw2.write({"step": "again"})
    assert [r["step"] for r in read_trace(p)] == ["merge", "again"]
    with TraceWriter(p, truncate=True) as tw3:
        tw3.write({"step": "fresh"})
    assert [r["step"] for r in read_trace(p)] == ["fresh"]


def test_concurrent_writes_give_whole_lines(tmp_path: Path) -> None:
    p = tmp_path / "trace.jsonl"
    big = "y" * 5000
    with TraceWriter(p) as tw:
        def work(t: int) -> None:
            for i in range(200):
                tw.write({"step": "s", "thread": t, "i": i, "pad": big})

        ths = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
    recs = read_trace(p)
    assert len(recs) == 1600 and all(r["pad"] == big for r in recs)
    assert sorted((r["thread"], r["i"]) for r in recs) == [(t, i) for t in range(8) for i in range(200)]


def test_emit_to_lists_callables_and_none() -> None:
    lst: list = []
    emit(lst, {"step": "a", "v": np.int64(3)})
    got: list = []
    emit(got.append, {"step": "b"})
    emit(None, {"step": "c"})
    lt = ListTrace()
    emit(lt, {"step": "d"})
    assert lst == [{"step": "a", "v": 3}] and got == [{"step": "b"}] and lt.records == [{"step": "d"}]


def test_scrub_replaces_secrets_everywhere() -> None:
    rec = {"a": "key=abcd1234 here", "b": ["x abcd1234"], "c": {"d": "abcd1234"}, "n": 3}
    assert scrub(rec, ["abcd1234"]) == {"a": "key=*** here", "b": ["x ***"], "c": {"d": "***"}, "n": 3}
    assert scrub(rec, ["ab"]) == rec  # too short to be a key: left alone


def test_accounting_totals_steps_rates_and_file(tmp_path: Path) -> None:
    acc = Accounting()
    acc.begin()
    for step, pt, ct in [("merge", 100, 20), ("merge", 50, 10), ("caption", 7, 3)]:
        acc.add_ask(step)
        acc.add_attempt(step, retry=False)
        acc.add_cache(step, hit=False)
        acc.add_call(step, pt, ct, 0.25, model="m")
    acc.add_validity("merge", valid_first=True, repaired=False, valid=True)
    acc.add_validity("merge", valid_first=False, repaired=True, valid=False)
    acc.add_validity("caption", valid_first=False, repaired=True, valid=True)
    acc.add_fallback("merge", "invalid: still invalid")
    acc.add_ask("merge")
    acc.add_cache("merge", hit=True)
    acc.add_call("caption", None, None, 0.1)
    acc.end()
    d = acc.to_dict()
    assert (d["calls"], d["prompt_tokens"], d["completion_tokens"], d["usage_missing"]) == (4, 157, 33, 1)
    assert (d["cache_hits"], d["cache_misses"], d["cache_hit_rate"]) == (1, 3, 0.25)
    assert (d["repairs"], d["valid_first"], d["valid"], d["invalid"]) == (2, 1, 2, 1)
    assert d["schema_valid_rate"] == round(1 / 3, 4) and d["fallback_rate"] == 0.25
    assert d["steps"]["merge"]["calls"] == 2 and d["steps"]["caption"]["prompt_tokens"] == 7
    assert d["fallback_reasons"] == {"invalid": 1} and d["models"] == ["m"] and d["wall_s"] >= 0
    path = acc.write(tmp_path / "run")
    assert path == tmp_path / "run" / USAGE_FILE and json.loads(path.read_text())["calls"] == 4
    assert not list((tmp_path / "run").glob(".*tmp*"))  # written atomically, no temp left


def test_accounting_is_thread_safe() -> None:
    acc = Accounting()

    def work() -> None:
        for _ in range(1000):
            acc.add_call("s", 1, 2, 0.0)

    ths = [threading.Thread(target=work) for _ in range(8)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert acc["calls"] == 8000 and acc["completion_tokens"] == 16000
