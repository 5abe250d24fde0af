"""Embedding merger plumbing: cached sentence embeddings, background preload."""

from __future__ import annotations

import numpy as np

from ethoscribe.behavior import merge


class _FakeModel:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts, **kw):
        self.calls.append(list(texts))
        rng = np.random.default_rng(len(texts))
        v = rng.normal(size=(len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_embeddings_are_cached_per_text(monkeypatch):
    fake = _FakeModel()
    monkeypatch.setattr(merge, "sentence_model", lambda: fake)
    monkeypatch.setattr(merge, "_EMBED_CACHE", {})
    a = merge.embed_texts(["The animal rests (0.1 body lengths/s).", "The animal walks."])
    b = merge.embed_texts(["The animal walks.", "The animal rests (0.3 body lengths/s)."])
    assert fake.calls == [["The animal rests.", "The animal walks."]]  # numbers dropped, each text once
    np.testing.assert_array_equal(a[::-1], b)
    assert merge.embed_texts([]).shape == (0, 384)


def test_preload_runs_once_in_the_background(monkeypatch):
    fake = _FakeModel()
    monkeypatch.setattr(merge, "sentence_model", lambda: fake)
    monkeypatch.setattr(merge, "_EMBED_CACHE", {})
    monkeypatch.setattr(merge, "_PRELOAD", None)
    merge.preload_sentence_model({"rest": "The animal rests."})
    merge._PRELOAD.join(timeout=10)
    merge.preload_sentence_model({"walk": "The animal walks."})  # already done: no second thread
    assert fake.calls == [["The animal rests."]]
