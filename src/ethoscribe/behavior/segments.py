"""Temporal smoothing of per-frame cluster assignments and cutting into snippets.

1. :func:`smooth_labels`: the soft assignments of each animal are averaged
   over a centred window of ``smooth_s`` seconds and the most likely cluster
   taken (a soft mode filter); then every bout shorter than ``min_bout_s`` is
   given to the neighbouring bout whose cluster is more likely over its
   frames, shortest bouts first, until none is left. Masked (untracked)
   frames, label ``-1``, form bouts of their own and are never merged.
2. :func:`make_segments`: bouts (runs of one label) are cut into snippets of
   at most ``max_snippet_s`` seconds (equal parts), so every frame of every
   animal is in exactly one segment and segments never overlap. Frames are
   half-open: a segment covers ``start_frame <= frame < end_frame``.

Examples
--------
>>> import numpy as np
>>> proba = np.eye(3)[[0] * 30 + [1] * 2 + [0] * 30 + [2] * 40]
>>> smooth_labels(proba, fps=30, smooth_s=0.0, min_bout_s=0.2).tolist().count(1)
0
>>> seg = make_segments(np.array([0] * 200 + [1] * 50), fps=30, individual="m0", max_snippet_s=5)
>>> seg[["start_frame", "end_frame", "cluster"]].values.tolist()
[[0, 100, 0], [100, 200, 0], [200, 250, 1]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

UNTRACKED = -1


def runs(labels: NDArray[np.int64]) -> list[tuple[int, int, int]]:
    """(start, stop, label) of each run of equal labels (stop exclusive).

    Examples
    --------
    >>> runs(np.array([1, 1, 2, 2, 2, 1]))
    [(0, 2, 1), (2, 5, 2), (5, 6, 1)]
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.r_[0, change]
    stops = np.r_[change, labels.size]
    return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, stops)]


def smooth_labels(
    proba: NDArray[np.float64],
    fps: float,
    valid: NDArray[np.bool_] | None = None,
    smooth_s: float = 0.3,
    min_bout_s: float = 0.3,
) -> NDArray[np.int64]:
    """Smoothed per-frame labels of one animal from (n_frames, n_clusters) soft assignments."""
    from scipy.ndimage import uniform_filter1d

    proba = np.asarray(proba, dtype=np.float64)
    T = proba.shape[0]
    valid = np.ones(T, bool) if valid is None else np.asarray(valid, bool)
    w = int(round(smooth_s * fps))
    sm = uniform_filter1d(proba, size=w, axis=0, mode="nearest") if w > 1 else proba
    labels = sm.argmax(axis=1).astype(np.int64)
    labels[~valid] = UNTRACKED
    min_len = int(round(min_bout_s * fps))
    if min_len <= 1:
        return labels
    bouts = [list(r) for r in runs(labels)]
    while True:
        cand = [
            (b[1] - b[0], i) for i, b in enumerate(bouts)
            if b[2] != UNTRACKED and b[1] - b[0] < min_len
            and any(0 <= j < len(bouts) and bouts[j][2] != UNTRACKED for j in (i - 1, i + 1))
        ]
        if not cand:
            break  # short bouts between untracked frames (or alone) are kept
        _, i = min(cand)
        s, e, _ = bouts[i]
        options = [j for j in (i - 1, i + 1) if 0 <= j < len(bouts) and bouts[j][2] != UNTRACKED]
        best = max(options, key=lambda j: (sm[s:e, bouts[j][2]].mean(), bouts[j][1] - bouts[j][0]))
        bouts[i][2] = bouts[best][2]
        merged: list[list[int]] = []
        for bout in bouts:
            if merged and merged[-1][2] == bout[2]:
                merged[-1][1] = bout[1]
            else:
                merged.append(list(bout))
        bouts = merged
    out = np.empty(T, np.int64)
    for s, e, lab in bouts:
        out[s:e] = lab
    return out


def make_segments(
    labels: NDArray[np.int64],
    fps: float,
    individual: str,
    max_snippet_s: float = 5.0,
    proba: NDArray[np.float64] | None = None,
) -> pd.DataFrame:
    """Segments (snippets) of one animal's label sequence.

    Columns: individual, start_frame, end_frame (exclusive), start_s, end_s,
    cluster (``-1``: untracked), confidence (mean soft assignment of the
    segment's cluster, 0 for untracked; 1 when ``proba`` is not given).
    """
    max_len = max(1, int(round(max_snippet_s * fps)))
    rows = []
    for s, e, lab in runs(np.asarray(labels)):
        n_parts = -(-(e - s) // max_len)
        edges = np.linspace(s, e, n_parts + 1).round().astype(int)
        for a, b in zip(edges[:-1], edges[1:]):
            if proba is None:
                conf = 1.0
            elif lab == UNTRACKED:
                conf = 0.0
            else:
                conf = float(np.asarray(proba)[a:b, lab].mean())
            rows.append((individual, int(a), int(b), a / fps, b / fps, int(lab), conf))
    return pd.DataFrame(rows, columns=["individual", "start_frame", "end_frame", "start_s", "end_s", "cluster", "confidence"])


def refine_boundaries(
    labels: NDArray[np.int64],
    frame_features: NDArray[np.float64],
    max_shift: int,
) -> NDArray[np.int64]:
    """Move each boundary between two tracked bouts to where the per-frame features change.

    Window features and smoothing blur where one behaviour ends and the next
    begins. For each boundary between bouts A and B, the split point within
    ``max_shift`` frames (each bout keeping at least one frame) is the one
    that minimises the squared distances of the frames before it to A's mean
    per-frame feature vector and of the frames after it to B's (a one-change
    point fit: a prefix-sum argmin). Cluster means are over all frames of
    each label. Untracked frames (``-1``) are never moved.

    Examples
    --------
    >>> x = np.r_[np.zeros(10), np.ones(10)][:, None]
    >>> refine_boundaries(np.array([0] * 13 + [1] * 7), x, max_shift=5).tolist().index(1)
    10
    """
    labels = np.asarray(labels).copy()
    X = np.asarray(frame_features, dtype=np.float64)
    if max_shift < 1 or labels.size < 3:
        return labels
    ks = [k for k in np.unique(labels) if k != UNTRACKED]
    mu = {k: X[labels == k].mean(axis=0) for k in ks}
    bouts = [list(r) for r in runs(labels)]
    for i in range(len(bouts) - 1):
        (sa, ea, la), (_, eb, lb) = bouts[i], bouts[i + 1]
        if la == UNTRACKED or lb == UNTRACKED:
            continue
        lo, hi = max(sa + 1, ea - max_shift), min(eb - 1, ea + max_shift)
        if hi <= lo:
            continue
        seg = X[lo:hi]
        diff = ((seg - mu[la]) ** 2).sum(1) - ((seg - mu[lb]) ** 2).sum(1)
        prefix = np.r_[0.0, np.cumsum(diff)]
        cut = lo + int(np.argmin(prefix))
        bouts[i][1] = cut
        bouts[i + 1][0] = cut
    out = np.empty_like(labels)
    for s, e, lab in bouts:
        out[s:e] = lab
    return out
