"""A language-model merger: clusters' captions to merged, named and defined behaviours, in batches.

:class:`LLMMerger` implements the behaviour pipeline's
:class:`~ethoscribe.behavior.merge.Merger` protocol:

1. **summaries**: each cluster is given by its number of snippets, its total
   duration, duration-weighted means of a few measured numbers (speed,
   turning, pitch, ...), the share of its time at each speed word, and its
   ``captions_per_cluster`` (3) most common captions (by duration);
2. **batches**: the clusters are dealt, largest first, round-robin into
   ``min(ceil(n_clusters / max_clusters_per_batch), max(1, n_snippets //
   batch_snippets))`` batches, so there is **at most one request per
   ``batch_snippets`` (20) snippets** (one request for fewer than 20) and
   never more than the clusters need; one request per batch, sent
   concurrently (prompt ``name_cluster_summaries``);
3. **answers**: constrained by :func:`~ethoscribe.reasoning.schemas.cluster_names_model`
   (one required ``cluster_<id>`` entry per cluster of the batch with a
   lower-case ``name`` and a one-line ``definition``: a grammar-constrained
   server cannot leave a cluster out or invent one);
4. **check** (``check=True``): a name from the vocabulary must not
   contradict the measurements: a stationary behaviour (rest, groom, rear,
   sniff, hunch, turn, contact) for a cluster that moves at moderate or
   fast speed 60 % of its time, a locomotion (walk, run, approach, follow,
   chase, retreat, back up) for one that is stationary 60 % of its time, or
   run / chase for one that is stationary or slow 60 % of its time. A
   contradiction rejects the batch's answer;
5. **reconciliation** (deterministic): names are normalised
   (:func:`canonical_name`: lower case, "walking" -> "walk", "still" ->
   "rest", ...); clusters with the same name, in any batch, are one
   behaviour, defined by the answer for its largest cluster; labels are
   listed by total frames.

If any batch gets no valid answer (server down or too slow, invalid JSON
after the one repair, a rejected name), the whole merge is done by the
:class:`~ethoscribe.behavior.merge.EmbeddingMerger` instead (so the labels
are exactly the embedding merger's, never a mix), and every trace record
says ``source: fallback`` with the reasons. The embedding merger stays the
default: the packaged 270M base model names clusters worse than it does
(see ``benchmarks/reasoner_cost.py``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ethoscribe.behavior.merge import ClusterSummary, LabelEntry, Merger, MergeResult
from ethoscribe.behavior.vocabulary import BEHAVIOUR_VOCABULARY
from ethoscribe.reasoning.client import ChatClient, Request
from ethoscribe.reasoning.prompts import load_prompt
from ethoscribe.reasoning.schemas import ClusterNames, cluster_names_model
from ethoscribe.reasoning.steps import Consultant
from ethoscribe.reasoning.trace import emit

#: names that say the animal stays in place / moves / moves fast (for the kinematic check)
STATIONARY_NAMES = frozenset({"rest", "groom", "rear", "sniff", "hunch", "turn", "contact"})
MOVING_NAMES = frozenset({"walk", "run", "approach", "follow", "chase", "retreat", "back up"})
FAST_NAMES = frozenset({"run", "chase"})
_SYNONYMS = {
    "still": "rest", "resting": "rest", "immobile": "rest", "immobility": "rest", "sitting": "rest", "freezing": "rest",
    "locomotion": "walk", "self-grooming": "groom", "self grooming": "groom", "rearing up": "rear",
    "exploring": "sniff", "exploration": "sniff", "backing up": "back up", "backward": "back up",
}
_NUMBERS = ("speed", "forward_speed", "angular_speed", "pitch", "body_length", "pose_change", "paw_motion",
            "motion_energy", "social_distance")


def canonical_name(name: str, vocabulary: Sequence[str] = tuple(BEHAVIOUR_VOCABULARY)) -> str:
    """A model's behaviour name normalised, and mapped onto the vocabulary where it is a form of an entry.

    Examples
    --------
    >>> canonical_name("  Walking "), canonical_name("running"), canonical_name("still"), canonical_name("nose poke")
    ('walk', 'run', 'rest', 'nose poke')
    """
    n = " ".join(str(name).lower().replace("_", " ").split())
    vocab = set(vocabulary)
    if n in vocab:
        return n
    if n in _SYNONYMS and _SYNONYMS[n] in vocab:
        return _SYNONYMS[n]
    stems = []
    if n.endswith("ing"):
        b = n[:-3]
        stems += [b, b + "e"] + ([b[:-1]] if len(b) > 2 and b[-1] == b[-2] else [])
    if n.endswith("ed"):
        stems += [n[:-2], n[:-1]]
    if n.endswith("s"):
        stems.append(n[:-1])
    for s in stems:
        if s in vocab:
            return s
        if s in _SYNONYMS and _SYNONYMS[s] in vocab:
            return _SYNONYMS[s]
    return n


def speed_profile(c: ClusterSummary) -> dict[str, float]:
    """Share of the cluster's captioned time at each speed word (stationary, slow, moderate, fast, other)."""
    w: dict[str, float] = defaultdict(float)
    for cap, d in zip(c.captions, c.durations):
        word = cap.speed if cap.speed in ("stationary", "slow", "moderate", "fast") else "other"
        w[word] += float(d)
    tot = sum(w.values())
    return {k: round(v / tot, 4) for k, v in sorted(w.items())} if tot > 0 else {}


def kinematic_contradiction(name: str, profile: dict[str, float], share: float = 0.6) -> str | None:
    """Why ``name`` contradicts the measured speeds (None if it does not)."""
    moving = profile.get("moderate", 0.0) + profile.get("fast", 0.0)
    still = profile.get("stationary", 0.0)
    slow = still + profile.get("slow", 0.0)
    if name in STATIONARY_NAMES and moving >= share:
        return f"{name!r} means staying in place, but the cluster moves at moderate or fast speed {moving:.0%} of its time"
    if name in MOVING_NAMES and still >= share:
        return f"{name!r} means moving, but the cluster is stationary {still:.0%} of its time"
    if name in FAST_NAMES and slow >= share:
        return f"{name!r} means moving fast, but the cluster is stationary or slow {slow:.0%} of its time"
    return None


def _caption_counts(c: ClusterSummary) -> Counter[str]:
    counts: Counter[str] = Counter()
    for cap, d in zip(c.captions, c.durations):
        counts[cap.text] += float(d)
    return counts


def cluster_row(c: ClusterSummary, captions_per_cluster: int = 3) -> dict[str, Any]:
    """What the prompt says about one cluster: id, snippets, seconds, measured summary, typical captions."""
    dur = np.asarray(c.durations, float)
    parts = []
    for name in _NUMBERS:
        vals = [(cap.numbers[name], d) for cap, d in zip(c.captions, dur) if name in cap.numbers]
        if vals:
            v, w = np.array(vals, float).T
            parts.append(f"mean {name.replace('_', ' ')} {np.average(v, weights=w if w.sum() > 0 else None):.2g}")
    prof = speed_profile(c)
    if prof:
        top = max(prof.items(), key=lambda kv: kv[1])
        parts.append(f"{top[0]} {top[1]:.0%} of the time")
    caps = [t for t, _ in sorted(_caption_counts(c).items(), key=lambda kv: (-kv[1], kv[0]))[:captions_per_cluster]]
    return {"id": int(c.cluster), "n_snippets": len(c.captions), "seconds": float(dur.sum()), "summary": ", ".join(parts),
            "captions": caps or ["(no caption)"]}


class LLMMerger:
    """Merge and name clusters with a language model, in batches, checked, with the embedding merger as fallback.

    Parameters
    ----------
    client
        Chat client (any text model; the packaged llama.cpp backend works).
    vocabulary
        name -> definition of known behaviours (shown to the model; default
        :data:`~ethoscribe.behavior.vocabulary.BEHAVIOUR_VOCABULARY`).
    batch_snippets
        At most one request per this many snippets (20).
    max_clusters_per_batch
        Clusters per request when the snippets allow more requests (8).
    captions_per_cluster
        Typical captions shown per cluster (3).
    check
        Reject names that contradict the measured speeds (see the module docstring).
    fallback
        The merger used when the model's answer cannot be used (default
        :class:`~ethoscribe.behavior.merge.EmbeddingMerger` with ``vocabulary``).
    max_tokens
        Answer limit per request (default 48 per cluster + 32).
    """

    name = "llm"

    def __init__(
        self,
        client: ChatClient,
        *,
        vocabulary: dict[str, str] | None = None,
        batch_snippets: int = 20,
        max_clusters_per_batch: int = 8,
        captions_per_cluster: int = 3,
        check: bool = True,
        fallback: Merger | None = None,
        max_tokens: int | None = None,
    ) -> None:
        if batch_snippets < 1 or max_clusters_per_batch < 1:
            raise ValueError("batch_snippets and max_clusters_per_batch must be at least 1")
        self.client = client
        self.vocabulary = dict(vocabulary or BEHAVIOUR_VOCABULARY)
        self.batch_snippets = int(batch_snippets)
        self.max_clusters_per_batch = int(max_clusters_per_batch)
        self.captions_per_cluster = int(captions_per_cluster)
        self.check = check
        self._fallback = fallback
        self.max_tokens = max_tokens
        self.prompt = load_prompt("name_cluster_summaries")
        self.consultant = Consultant(client, "merge", None, 2)
        self.last: dict[str, Any] = {}

    @property
    def fallback(self) -> Merger:
        if self._fallback is None:
            from ethoscribe.behavior.merge import EmbeddingMerger

            self._fallback = EmbeddingMerger(vocabulary=self.vocabulary)
        return self._fallback

    def batches(self, clusters: Sequence[ClusterSummary]) -> list[list[ClusterSummary]]:
        """The clusters dealt into batches (see the module docstring), largest clusters first."""
        if not clusters:
            return []
        n_snip = sum(len(c.captions) for c in clusters)
        max_calls = max(1, n_snip // self.batch_snippets)
        n = max(1, min(max_calls, math.ceil(len(clusters) / self.max_clusters_per_batch)))
        order = sorted(clusters, key=lambda c: (-int(c.n_frames), int(c.cluster)))
        out: list[list[ClusterSummary]] = [[] for _ in range(n)]
        for i, c in enumerate(order):
            out[i % n].append(c)
        return [sorted(b, key=lambda c: int(c.cluster)) for b in out if b]

    def _request(self, b: int, batch: list[ClusterSummary]) -> Request:
        ids = [int(c.cluster) for c in batch]
        rows = [cluster_row(c, self.captions_per_cluster) for c in batch]
        vocab = [{"name": k, "definition": v} for k, v in self.vocabulary.items()]
        msgs = self.prompt.render(clusters=rows, cluster_ids=ids, vocabulary=vocab)
        profiles = {int(c.cluster): speed_profile(c) for c in batch}
        names = list(self.vocabulary)
        check = self.check
        verification: dict[str, Any] = {"speed_profiles": {str(k): v for k, v in profiles.items()}}

        def convert(ans: ClusterNames) -> dict[int, tuple[str, str, str]]:
            out: dict[int, tuple[str, str, str]] = {}
            problems = []
            for cid, cn in sorted(ans.names().items()):
                label = canonical_name(cn.name, names)
                if label in ("untracked",):
                    problems.append(f"cluster {cid}: {label!r} is reserved")
                why = kinematic_contradiction(label, profiles.get(cid, {})) if check else None
                if why:
                    problems.append(f"cluster {cid}: {why}")
                out[cid] = (label, cn.definition.strip(), cn.name)
            verification["names"] = {str(k): v[0] for k, v in out.items()}
            verification["contradictions"] = problems
            if problems:
                raise ValueError("; ".join(problems))
            return out

        budget = self.max_tokens or (48 * len(ids) + 32)
        inp = {"batch": b, "clusters": ids, "n_snippets": sum(len(c.captions) for c in batch)}
        return Request(msgs, cluster_names_model(ids), step="merge", prompt=self.prompt, fallback=lambda: None,
                       convert=convert, options={"input": inp, "verification": verification, "max_tokens": budget,
                                                 "trace_fields": {"batch": b}})

    def merge(self, clusters: Sequence[ClusterSummary]) -> MergeResult:
        """Map every cluster to a named, defined behaviour (see the module docstring)."""
        clusters = list(clusters)
        if not clusters:
            return MergeResult({}, [], [])
        batches = self.batches(clusters)
        n_snip = sum(len(c.captions) for c in clusters)
        self.last = {"n_clusters": len(clusters), "n_snippets": n_snip, "n_batches": len(batches),
                     "batches": [[int(c.cluster) for c in b] for b in batches]}
        allowed = [self.consultant.may_ask({"batch": b}) for b in range(len(batches))]
        if all(allowed):
            decisions = self.consultant.ask_many([self._request(b, batch) for b, batch in enumerate(batches)])
            failed = [(b, d.reason) for b, d in enumerate(decisions) if d.source != "model"]
        else:  # the server was given up on earlier in this run: no request at all
            decisions = []
            failed = [(b, self.consultant.breaker.skip_reason()) for b, ok in enumerate(allowed) if not ok]
        if failed:
            reason = "; ".join(f"batch {b}: {r}" for b, r in failed)
            res = self.fallback.merge(clusters)
            for rec in res.trace:
                rec.update({"source": "fallback", "fallback_merger": getattr(self.fallback, "name", "?"),
                            "fallback_reason": reason})
            self.last.update({"source": "fallback", "reason": reason})
            emit(self.client.trace, {"step": "merge_result", "source": "fallback", "fallback_reason": reason,
                                     "fallback_merger": getattr(self.fallback, "name", "?"),
                                     "mapping": {str(k): v for k, v in res.cluster_to_label.items()}, **self.last})
            return res
        answers: dict[int, tuple[str, str, str]] = {}
        batch_of: dict[int, int] = {}
        for b, d in enumerate(decisions):
            answers.update(d.value)
            for cid in d.value:
                batch_of[cid] = b
        by_id = {int(c.cluster): c for c in clusters}
        groups: dict[str, list[int]] = defaultdict(list)
        for cid in sorted(answers):
            groups[answers[cid][0]].append(cid)
        size = {lab: sum(int(by_id[c].n_frames) for c in ids) for lab, ids in groups.items()}
        entries: list[LabelEntry] = []
        mapping: dict[int, str] = {}
        for lab in sorted(groups, key=lambda x: (-size[x], x)):
            ids = sorted(groups[lab])
            biggest = max(ids, key=lambda c: (int(by_id[c].n_frames), -c))
            counts = _caption_counts(by_id[biggest])
            rep = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else ""
            entries.append(LabelEntry(label=lab, definition=answers[biggest][1], clusters=ids, caption=rep))
            for c in ids:
                mapping[c] = lab
        trace = [{"cluster": c, "n_frames": int(by_id[c].n_frames), "n_snippets": len(by_id[c].captions),
                  "name": answers[c][2], "label": mapping[c], "definition": answers[c][1], "batch": batch_of[c],
                  "speed_profile": speed_profile(by_id[c]), "source": "model"} for c in sorted(mapping)]
        self.last.update({"source": "model", "reason": None})
        emit(self.client.trace, {"step": "merge_result", "source": "model",
                                 "mapping": {str(k): v for k, v in mapping.items()}, **self.last})
        return MergeResult(mapping, entries, trace)

    def summary(self) -> dict[str, Any]:
        """Requests, model answers, fallbacks by kind, and the last merge's batches and source (JSON-ready)."""
        return {**self.consultant.stats(), "merger": self.name, "model": self.client.config.model, **self.last}
