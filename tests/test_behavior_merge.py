"""Embedding merger plumbing with the packaged sentence model: cached embeddings, background preload."""

from __future__ import annotations

import numpy as np

from ethoscribe.behavior import merge


class _Recording:
    """The packaged sentence model, recording which texts it is asked to encode."""

    def __init__(self) -> None:
        self.model = merge.sentence_model()
        self.calls: list[list[str]] = []

    def encode(self, texts, **kw):
        self.calls.append(list(texts))
        return self.model.encode(texts, **kw)


def test_embeddings_are_cached_per_text(monkeypatch):
    fake = _Recording()
    monkeypatch.setattr(merge, "sentence_model", lambda: fake)
    monkeypatch.setattr(merge, "_EMBED_CACHE", {})
    a = merge.embed_texts(["The animal rests (0.1 body lengths/s).", "The animal walks."])
    b = merge.embed_texts(["The animal walks.", "The animal rests (0.3 body lengths/s)."])
    assert fake.calls == [["The animal rests.", "The animal walks."]]  # numbers dropped, each text once
    np.testing.assert_array_equal(a[::-1], b)
    assert merge.embed_texts([]).shape == (0, 384)


def test_preload_runs_once_in_the_background(monkeypatch):
    fake = _Recording()
    monkeypatch.setattr(merge, "sentence_model", lambda: fake)
    monkeypatch.setattr(merge, "_EMBED_CACHE", {})
    monkeypatch.setattr(merge, "_PRELOAD", None)
    merge.preload_sentence_model({"rest": "The animal rests."})
    merge._PRELOAD.join(timeout=10)
    merge.preload_sentence_model({"walk": "The animal walks."})  # already done: no second thread
    assert fake.calls == [["The animal rests."]]
