"""Outputs of the pose pipeline: labels, 3D poses, review list, trace and summary.

Written into the output folder (default ``<session>/output/pose/``), each
atomically (temporary file, then rename):

- ``labels.parquet``: the labels table (:mod:`ethoscribe.pose.labels`);
- ``poses3d.nc``: a `movement` poses dataset, ``position`` (time, space
  [x, y, z], keypoints, individuals) in the calibration's units,
  ``confidence`` (time, keypoints, individuals), plus ``n_views`` (agreeing
  views) and ``reproj_error`` (mean px over those views);
- ``review.csv``: frames ranked by how much a person's look is worth (see
  :func:`review_table`);
- ``trace.jsonl``: one JSON line per stage call (stage, frame, views, input
  summary, answer, verification);
- ``summary.json``: counts, thresholds, per-camera errors, suspect and
  duplicate cameras with reasons, timings.

The labels' confidence and flags are computed by :func:`label_quality` (the
reason codes are described in :mod:`ethoscribe.pose.labels`); the 3D
points' confidence in ``poses3d.nc`` is ``support * exp(-(e / thr)^2)``
(``thr`` the inlier threshold, ``e`` the mean inlier reprojection error,
support = ``clip((n - 1) / (n_v - 1), 0, 1)`` with ``n`` the number of views
agreeing on the point and ``n_v`` = ``verified_views`` capped at the number
of usable cameras).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path, write_json, write_text
from ethoscribe.pose.association import pass_preference
from ethoscribe.pose.labels import (
    REASON_BIT,
    REASONS,
    STAGES,
    load_labels,
    reason_strings,
    save_labels,
    validate_labels,
)
from ethoscribe.pose.model import kabsch
from ethoscribe.pose.stages import REPROJECTION, SEED, settle_view_labels

FILES = {
    "labels": "labels.parquet",
    "poses3d": "poses3d.nc",
    "review": "review.csv",
    "trace": "trace.jsonl",
    "summary": "summary.json",
}

#: weight of each reason in the review score (per flagged label)
SEVERITY = {
    "high_reprojection_error": 3.0,
    "large_jump": 3.0,
    "detached_track": 3.0,
    "conflict": 2.0,
    "few_views": 1.0,
    "reprojected": 1.0,
    "missing": 1.0,
    "suspect_camera": 0.0,  # a property of the camera, reported in the summary, not of a frame
    "predicted": 1.0,
    "low_confidence": 1.0,
    "passes_disagree": 0.0,
    "seed": 0.0,
}


#: codes counted in the review's reasons even on labels that are not flagged
INFORMATIVE = frozenset({"reprojected", "few_views", "passes_disagree"})

_FIELDS = ("xy", "cid", "stage", "conflict", "err", "X", "n_in", "err3", "jump", "threshold", "chain_seed", "chain_len",
           "margin")


def _empty_arrays(T: int, V: int, I: int, K: int) -> dict[str, np.ndarray]:
    return {
        "xy": np.full((T, V, I, K, 2), np.nan), "cid": np.full((T, V, I, K), -1, np.int64),
        "stage": np.full((T, V, I, K), 2, np.int8), "conflict": np.zeros((T, V, I, K), bool),
        "err": np.full((T, V, I, K), np.nan, np.float32), "X": np.full((T, I, K, 3), np.nan),
        "n_in": np.zeros((T, I, K), np.int8), "err3": np.full((T, I, K), np.nan, np.float32),
        "jump": np.zeros((T, I, K), bool), "threshold": np.full(T, np.nan, np.float32),
        "chain_seed": np.zeros((T, I, K), bool), "chain_len": np.zeros((T, I, K), np.int64),
        "margin": np.full((T, I, K), np.nan, np.float32),
        "done": np.zeros(T, bool),
    }


def _stack_chunks(su: Any, chunks: list[Any]) -> dict[str, np.ndarray]:
    """The two passes' frame arrays, merged (:func:`merge_passes`)."""
    T, V, I, K = su.n_frames, len(su.views), len(su.individuals), len(su.keypoints)
    passes = {"forward": _empty_arrays(T, V, I, K), "backward": _empty_arrays(T, V, I, K)}
    for ch in chunks:
        a = passes[ch.stats.get("direction", "forward")]
        fr = ch.frames
        for k in _FIELDS:
            a[k][fr] = getattr(ch, k)
        a["done"][fr] = True
    return merge_passes(su, passes["forward"], passes["backward"])


def merge_passes(su: Any, f: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reconcile the forward and the backward pass keypoint by keypoint, without losing labels.

    Frames between the first and the last seed are tracked twice, from the
    seed before and from the seed after. Where both passes put a keypoint on
    the same 3D point (within twice the inlier threshold, in world units at
    the typical depth, and sharing a candidate in some view unless within a
    quarter of that) the result is *confirmed*; a view the two passes label
    with different spots gets the point's reprojection
    (:func:`~ethoscribe.pose.stages.settle_view_labels`). Where they disagree,
    one of them follows a wrong marker (a wrong identity begins, or ends,
    with a jump to another marker): for each stretch of frames where they
    disagree, the pass the rest of the body agrees with is taken when it is
    clear (:func:`~ethoscribe.pose.association.pass_preference`), else
    the pass whose track joins the agreed track before and after the stretch
    with the smaller jump is taken; without an agreed neighbour, the pass
    whose track runs unbroken from a seed frame, else the one with the longer
    unbroken track. Every label of the keypoint in such a stretch gets the
    reason ``conflict``. A keypoint that only one pass found takes that pass.

    Two keypoints that end up on the same marker (the same 3D point, or a
    candidate shared in a view): the one whose passes disagreed switches to
    its other pass when that is free, otherwise it keeps no point in that
    frame (``dropped``; the keypoint it last gave way to ``won`` the marker,
    and so did the one it first gave way to before switching); :func:`fill_gaps`
    then bridges it (and any keypoint neither pass found) over short gaps by
    interpolation, as a *predicted* point. A disagreement whose rejected pass
    followed a marker that another keypoint holds is settled
    (:func:`_explained`).
    """
    T, V, I, K = f["cid"].shape
    both = f["done"] & b["done"]
    only_b = b["done"] & ~f["done"]
    hf = f["n_in"] >= 2
    hb = b["n_in"] >= 2
    d = np.linalg.norm(f["X"] - b["X"], axis=-1)
    tol = 2.0 * np.nanmedian(np.where(np.isfinite(f["threshold"]), f["threshold"], b["threshold"])) / max(su_ppu(su), 1e-9)
    with np.errstate(invalid="ignore"):
        agree = hf & hb & (d <= tol)
    # markers closer than the tolerance (the head's, 7 mm apart under a wide inlier threshold) are told apart
    # by their spots: points that share no candidate in any view are on one marker only when very close
    shared = ((f["cid"] == b["cid"]) & (f["cid"] >= 0)).any(axis=1)
    with np.errstate(invalid="ignore"):
        agree &= shared | (d <= 0.25 * tol)
    disagree = both[:, None, None] & hf & hb & ~agree
    # which pass to take, per (t, a, k)
    score_f = np.where(hf, 1, 0) * 1_000_000 + f["chain_seed"] * 100_000 + np.minimum(f["chain_len"], 99_999)
    score_b = np.where(hb, 1, 0) * 1_000_000 + b["chain_seed"] * 100_000 + np.minimum(b["chain_len"], 99_999)
    take_b = only_b[:, None, None] | (both[:, None, None] & (score_b > score_f))
    # a stretch where the passes disagree: take the pass that joins the agreed track on both sides without a jump
    ref = np.where((agree | (f["done"][:, None, None] & ~b["done"][:, None, None]))[..., None], f["X"],
                   np.where((b["done"][:, None, None] & ~f["done"][:, None, None])[..., None], b["X"], np.nan))
    one_marker = _one_marker_radius(su, tol, I, K)
    decisive = np.zeros((T, I, K))  # 0: the tracks did not settle which pass is right; 1: clearly
    body = getattr(su, "structure", None)
    agreed = np.where(agree[..., None], f["X"], np.nan) if body is not None else None
    for a_i in range(I):
        for k_i in range(K):
            dis = disagree[:, a_i, k_i]
            if not dis.any():
                continue
            edges = np.flatnonzero(np.diff(np.r_[0, dis.astype(np.int8), 0]))
            for t0, t1 in zip(edges[::2], edges[1::2] - 1):
                if body is not None:  # the pass whose point the rest of the body agrees with
                    pick = pass_preference(body, agreed[t0:t1 + 1], a_i, k_i, f["X"][t0:t1 + 1], b["X"][t0:t1 + 1],
                                           0.5 * tol)
                    if pick is not None:
                        take_b[t0:t1 + 1, a_i, k_i], decisive[t0:t1 + 1, a_i, k_i] = pick
                        continue
                jf = jb = 0.0
                n_ref = 0
                for tb, tr in ((t0, t0 - 1), (t1, t1 + 1)):
                    if 0 <= tr < T and np.isfinite(ref[tr, a_i, k_i]).all():
                        jf += float(np.linalg.norm(f["X"][tb, a_i, k_i] - ref[tr, a_i, k_i]))
                        jb += float(np.linalg.norm(b["X"][tb, a_i, k_i] - ref[tr, a_i, k_i]))
                        n_ref += 1
                if n_ref and np.isfinite(jf) and np.isfinite(jb) and jf != jb:
                    take_b[t0:t1 + 1, a_i, k_i] = jb < jf
                    lo, hi = min(jf, jb), max(jf, jb)
                    decisive[t0:t1 + 1, a_i, k_i] = (hi - lo) / (hi + lo + tol)
    out = _take(f, b, take_b)
    out["disagree"] = disagree
    out["decisive"] = decisive
    out["confirmed"] = agree & both[:, None, None]
    settle_view_labels(su.geo, out, f, b, out["confirmed"], getattr(getattr(su, "check", None), "suspect", None))
    # two keypoints on one marker: the one whose passes disagreed switches pass, or lets go
    lost = np.zeros((T, I, K), bool)
    out["dropped"] = np.zeros((T, I, K), bool)
    out["won"] = np.zeros((T, I, K), bool)
    out["won_from"] = np.full((T, I, K), -1, np.int64)  # the keypoint (flat I*K index) that gave way to the winner
    for t in np.flatnonzero(both | only_b | f["done"]):
        rivals: dict[int, int] = {}  # a keypoint that switched pass -> the one it first gave way to
        for _ in range(I * K):
            clash = _clashes(out, t, one_marker)
            if not clash:
                break
            p, q = clash
            loser = p if disagree[t].reshape(-1)[p] >= disagree[t].reshape(-1)[q] else q
            if disagree[t].reshape(-1)[p] == disagree[t].reshape(-1)[q]:  # neither (or both) disagreed: fewer views loses
                loser = p if out["n_in"][t].reshape(-1)[p] <= out["n_in"][t].reshape(-1)[q] else q
            winner = q if loser == p else p
            a_l, k_l = divmod(int(loser), K)
            if both[t] and not lost[t, a_l, k_l]:
                rivals[int(loser)] = int(winner)
                other = b if not take_b[t, a_l, k_l] else f
                trial = {key: out[key].copy() for key in ("X", "cid", "n_in")}
                _copy_point(out, other, t, a_l, k_l)
                take_b[t, a_l, k_l] = not take_b[t, a_l, k_l]
                lost[t, a_l, k_l] = True  # tried once: if it clashes again, it lets go
                if _clashes(out, t, one_marker) != clash and np.isfinite(out["X"][t, a_l, k_l]).all():
                    continue
                for key, v in trial.items():
                    out[key] = v
            _drop_point(out, t, a_l, k_l)
            out["conflict"][t, :, a_l, k_l] = True
            out["dropped"][t, a_l, k_l] = True
            out["won"][t].reshape(-1)[[winner, rivals.get(int(loser), winner)]] = True
            out["won_from"][t].reshape(-1)[[winner, rivals.get(int(loser), winner)]] = int(loser)
    out["from_backward"] = take_b
    _explained(out, f, b, disagree, take_b, one_marker)
    return out


def _one_marker_radius(su: Any, tol: float, I: int, K: int) -> np.ndarray:
    """(I*K, I*K) distance below which two keypoints' points are one marker: half ``tol``, and within an
    animal at most half the two keypoints' distance in the seed template.

    The inlier threshold sets ``tol``; with coarse labels (a pose model's
    predictions seen by a few distant cameras) it can exceed the distance
    between neighbouring keypoints (the ears), which would then always
    "clash" and one of them be dropped.
    """
    radius = np.full((I * K, I * K), 0.5 * tol)
    shape = getattr(getattr(su, "template", None), "shape", None)
    if shape is not None and shape.shape[:2] == (I, K):
        within = 0.5 * np.linalg.norm(shape[:, :, None] - shape[:, None], axis=-1)  # I, K, K
        for a in range(I):
            block = radius[a * K:(a + 1) * K, a * K:(a + 1) * K]
            radius[a * K:(a + 1) * K, a * K:(a + 1) * K] = np.fmin(block, within[a])
    return radius


def _explained(out: dict[str, np.ndarray], f: dict[str, np.ndarray], b: dict[str, np.ndarray], disagree: np.ndarray,
               take_b: np.ndarray, one_marker: np.ndarray) -> None:
    """Settle the disagreements whose rejected pass followed a marker another keypoint holds (``decisive`` 1).

    When the pass that was not taken put the keypoint on the same 3D point
    (within ``one_marker``, as :func:`_clashes` tests it) as another
    keypoint's merged point, that pass followed the other keypoint's marker:
    the alternative is explained away, and the taken pass is not in doubt.
    """
    tt, ii, kk = np.nonzero(disagree)
    if not tt.size:
        return
    _, I, K = disagree.shape
    rejected = np.where(take_b[tt, ii, kk][:, None], f["X"][tt, ii, kk], b["X"][tt, ii, kk])  # n, 3
    held = np.where((out["n_in"][tt] >= 2)[..., None], out["X"][tt], np.nan).reshape(tt.size, I * K, 3)
    dist = np.linalg.norm(held - rejected[:, None], axis=-1)
    dist[np.arange(tt.size), ii * K + kk] = np.inf
    with np.errstate(invalid="ignore"):
        settled = (np.where(np.isfinite(dist), dist, np.inf) <= one_marker[ii * K + kk]).any(axis=1)
    out["decisive"][tt[settled], ii[settled], kk[settled]] = 1.0


def _take(f: dict[str, np.ndarray], b: dict[str, np.ndarray], take_b: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    only_b = b["done"] & ~f["done"]
    for k in _FIELDS:
        x, y = f[k], b[k]
        if k == "threshold":
            out[k] = np.where(only_b, y, x)
            continue
        m = take_b
        if x.ndim == 4 and k not in ("X",):  # (T, V, I, K) label arrays
            m = take_b[:, None]
        elif k == "xy":
            m = take_b[:, None, ..., None]
        elif k == "X":
            m = take_b[..., None]
        out[k] = np.where(m, y, x)
    return out


_POINT_FIELDS_TVIK = ("xy", "cid", "stage", "conflict", "err")
_POINT_FIELDS_TIK = ("X", "n_in", "err3", "jump", "chain_seed", "chain_len", "margin")


def _copy_point(out: dict[str, np.ndarray], src: dict[str, np.ndarray], t: int, a: int, k: int) -> None:
    for key in _POINT_FIELDS_TVIK:
        out[key][t, :, a, k] = src[key][t, :, a, k]
    for key in _POINT_FIELDS_TIK:
        out[key][t, a, k] = src[key][t, a, k]


def _drop_point(out: dict[str, np.ndarray], t: int, a: int, k: int) -> None:
    out["cid"][t, :, a, k] = -1
    out["xy"][t, :, a, k] = np.nan
    out["err"][t, :, a, k] = np.nan
    out["stage"][t, :, a, k] = 2
    out["X"][t, a, k] = np.nan
    out["n_in"][t, a, k] = 0
    out["err3"][t, a, k] = np.nan
    out["margin"][t, a, k] = np.nan


def _clashes(out: dict[str, np.ndarray], t: int, one_marker: np.ndarray) -> tuple[int, int] | None:
    """The first pair of keypoints (flat I*K indices) of frame t on one marker (closer than ``one_marker``), or None."""
    X = out["X"][t].reshape(-1, 3)
    ok = np.isfinite(X).all(-1)
    if ok.sum() >= 2:
        dd = np.linalg.norm(X[:, None] - X[None], axis=-1)
        dd[~ok] = np.inf
        dd[:, ~ok] = np.inf
        np.fill_diagonal(dd, np.inf)
        with np.errstate(invalid="ignore"):
            pp, qq = np.nonzero(np.triu(dd < one_marker))
        if pp.size:
            return int(pp[0]), int(qq[0])
    cid = out["cid"][t].reshape(out["cid"].shape[1], -1)  # V, P
    for v in range(cid.shape[0]):
        c = cid[v]
        m = c >= 0
        if m.sum() < 2:
            continue
        vals, inv, cnt = np.unique(c[m], return_inverse=True, return_counts=True)
        if (cnt > 1).any():
            idx = np.flatnonzero(m)[inv == int(np.flatnonzero(cnt > 1)[0])]
            return int(idx[0]), int(idx[1])
    return None


#: a predicted label counts as right within this many pixels (the benchmark's and the QC's "off" distance)
PREDICTED_OK_PX = 5.0
#: an interpolation is anchored only on points the two passes confirm or whose association margin is at least this
GAP_ANCHOR_MARGIN = 4.0


def _step(X: np.ndarray, idx: np.ndarray, p: int, i: int, k: int) -> float:
    """Typical per-frame displacement of keypoint (i, k) around observed frame ``p`` (world units)."""
    j = int(np.searchsorted(idx, p))
    steps = []
    for q0, q1 in ((j - 1, j), (j, j + 1)):
        if 0 <= q0 and q1 < idx.size and idx[q1] - idx[q0] <= 3:
            steps.append(float(np.linalg.norm(X[idx[q1], i, k] - X[idx[q0], i, k])) / (idx[q1] - idx[q0]))
    return max(steps) if steps else 0.0


def fill_gaps(su: Any, a: dict[str, np.ndarray], suspect: np.ndarray) -> np.ndarray:
    """Bridge keypoints without a 3D point over short gaps (linear interpolation in time); (T, I, K) predicted.

    A gap of at most ``round(fps / 6)`` frames between two frames with a
    sure point (confirmed by both passes, or associated with a margin of at
    least ``GAP_ANCHOR_MARGIN``) is interpolated; the ends of a track are not
    extended. Predicted points get labels in every usable view where
    they project into the image (stage ``reprojection``, no candidate) and
    ``n_in`` 0: nothing was observed, the position is a prediction. A single
    view's candidate within the inlier threshold of the predicted point keeps
    its label (the track confirms it); one farther off gives way to the
    prediction. ``a["predicted_conf"]`` gets, for every view, the chance that
    the prediction lies within ``PREDICTED_OK_PX``: from the keypoint's
    displacement over the gap, or, when the predicted point lands on spots
    that no label claims in ``n >= 2`` views (:func:`_spot_views`), at least
    that of an ``n``-view point (``1 - TWO_VIEW_DOUBT / 2^(n - 2)``).
    """
    T, V, I, K = a["cid"].shape
    X = a["X"]
    has = np.isfinite(X).all(-1) & (a["n_in"] >= 2)
    # only points whose identity is sure anchor an interpolation (a wrong end makes a wrong bridge)
    with np.errstate(invalid="ignore"):
        sure = has & ((a.get("confirmed", np.zeros_like(has)) & (a["n_in"] >= 2))
                      | (np.nan_to_num(a["margin"], nan=0.0) >= GAP_ANCHOR_MARGIN))
    predicted = np.zeros((T, I, K), bool)
    scale = np.zeros((T, I, K))
    max_gap = max(1, int(round(su.fps / 6)))
    for i in range(I):
        for k in range(K):
            idx = np.flatnonzero(sure[:, i, k])
            if idx.size == 0:
                continue
            miss = np.flatnonzero(~has[:, i, k])
            if miss.size == 0:
                continue
            pos = np.searchsorted(idx, miss)
            prev = np.where(pos > 0, idx[np.maximum(pos - 1, 0)], -1)
            nxt = np.where(pos < idx.size, idx[np.minimum(pos, idx.size - 1)], -1)
            # only inside a track: holding the last point at a track's end is a guess, not a prediction
            inner = (prev >= 0) & (nxt >= 0) & (nxt - prev - 1 <= max_gap)
            for m, p0, p1 in zip(miss[inner], prev[inner], nxt[inner]):
                w = (m - p0) / (p1 - p0)
                X[m, i, k] = (1 - w) * X[p0, i, k] + w * X[p1, i, k]
                # a smooth path deviates from the chord by a fraction of the distance covered, and by the
                # keypoint's typical step per frame away from the ends
                scale[m, i, k] = np.linalg.norm(X[p1, i, k] - X[p0, i, k]) * min(w, 1 - w) \
                    + _step(X, idx, p0, i, k) * min(m - p0, p1 - m)
                predicted[m, i, k] = True
    a["predicted_conf"] = np.zeros((T, V, I, K))
    if predicted.any():
        tt, ii, kk = np.nonzero(predicted)
        proj, depth = su.geo.project(X[tt, ii, kk])  # V, n, 2
        ppu = su.geo.pixels_per_unit(depth)  # V, n
        inside = su.rig.in_image(proj) & (~suspect)[:, None]
        thr = a["threshold"].astype(float)[tt]
        for v in range(V):
            # a single view's unverified label far from the predicted point is dropped for the prediction
            cur = a["xy"][tt, v, ii, kk]
            with np.errstate(invalid="ignore"):
                far = np.linalg.norm(cur - proj[v], axis=-1) > thr
            free = inside[v] & (~np.isfinite(cur[:, 0]) | far)
            gone = far & ~inside[v]
            a["xy"][tt[gone], v, ii[gone], kk[gone]] = np.nan
            a["cid"][tt[gone], v, ii[gone], kk[gone]] = -1
            a["xy"][tt[free], v, ii[free], kk[free]] = proj[v, free]
            a["stage"][tt[free], v, ii[free], kk[free]] = REPROJECTION
            a["cid"][tt[free], v, ii[free], kk[free]] = -1
            a["err"][tt[free], v, ii[free], kk[free]] = np.nan
            # the error of an interpolated point grows with the keypoint's displacement over the gap
            s_px = np.sqrt((scale[tt, ii, kk] * ppu[v]) ** 2 + su.sigma_px ** 2)
            with np.errstate(invalid="ignore", divide="ignore"):
                pc = 1.0 - np.exp(-PREDICTED_OK_PX ** 2 / (2.0 * s_px ** 2))
            a["predicted_conf"][tt, v, ii, kk] = np.nan_to_num(pc)
        a["n_in"][tt, ii, kk] = 0
    # a predicted point on free spots in n >= 2 views (:func:`_spot_views`) is as sure as an n-view point
    a["spot_views"] = _spot_views(su, a, predicted)
    n_spot = a["spot_views"][:, None].astype(float)
    on_spots = 1.0 - TWO_VIEW_DOUBT / 2.0 ** (n_spot - 2.0)
    a["predicted_conf"] = np.where(n_spot >= 2, np.maximum(a["predicted_conf"], on_spots), a["predicted_conf"])
    return predicted


def _spot_views(su: Any, a: dict[str, np.ndarray], predicted: np.ndarray) -> np.ndarray:
    """(T, I, K) number of views in which a predicted point lands on a spot no label claims.

    The prediction comes from the keypoint's track, the spots from the
    images: a detected spot that no keypoint took, within half
    ``PREDICTED_OK_PX`` of the predicted label, in two or more views is a
    marker seen where the track puts the keypoint (seen but not associated,
    e.g. given up in a clash), and then the point is within
    ``PREDICTED_OK_PX`` of it.
    """
    T, V, I, K = a["cid"].shape
    out = np.zeros((T, V, I, K), bool)
    tt, vv, ii, kk = np.nonzero(predicted[:, None] & (a["stage"] == REPROJECTION) & np.isfinite(a["xy"][..., 0]))
    if not tt.size:
        return out.sum(axis=1)
    frames = np.unique(tt)
    block = su.cands.block(frames)
    row = np.searchsorted(frames, tt)
    spots = block.xy[row, vv]  # n, M, 2
    cid = block.cid[row, vv]  # n, M
    claimed = (cid[:, :, None] == a["cid"][tt, vv].reshape(tt.size, 1, I * K)).any(-1)
    free = block.valid[row, vv] & (cid >= 0) & ~claimed
    with np.errstate(invalid="ignore"):
        dist = np.linalg.norm(spots - a["xy"][tt, vv, ii, kk][:, None], axis=-1)
    out[tt, vv, ii, kk] = (free & (dist <= 0.5 * PREDICTED_OK_PX)).any(-1)
    return out.sum(axis=1)


def su_ppu(su: Any) -> float:
    """Typical pixels per world unit of the rig at the seed poses."""
    X = su.seed_xyz.reshape(-1, 3)
    X = X[np.isfinite(X).all(-1)]
    if not len(X):
        return 1.0
    _, depth = su.geo.project(X)
    return float(np.nanmedian(su.geo.pixels_per_unit(depth)))


#: identity: how much two passes that agree lower the chance of a wrong identity
AGREED_FACTOR = 0.1
#: a point two views agree on (not confirmed by the other pass) can be two spots on one epipolar line: its doubt
TWO_VIEW_DOUBT = 0.1
#: a label with no 3D point (one view, or views that do not agree): geometry could not check it
UNVERIFIED_CONFIDENCE = 0.3
#: identity: at most this for a keypoint that kept a marker another keypoint also claimed, without both passes
#: confirming it (the tie-break between the claims is no evidence of which is right)
CONTESTED_IDENTITY = 0.5



def identity_probability(margin: np.ndarray) -> np.ndarray:
    """P(right identity) from an association margin in squared standard scores (a log-likelihood ratio x 2)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(np.isfinite(margin), 1.0 / (1.0 + np.exp(-np.asarray(margin, float) / 2.0)), 0.5)


#: a point is a spike when it leaves the midpoint of its neighbours in time by more than SPIKE_FACTOR x the 90th
#: percentile of that distance over the keypoint's track (and more than a quarter of the animal's size)
SPIKE_FACTOR = 3.0


def _spikes(a: dict[str, np.ndarray], size: float) -> np.ndarray:
    """(T, I, K) points that jump away from their track and back (a wrong marker for a frame or two).

    With both neighbours in time: the distance from their midpoint; with one:
    the distance from it; each against ``SPIKE_FACTOR`` x the 90th percentile
    of that distance over the keypoint's track (and a quarter of the size).
    """
    X = np.where((a["n_in"] >= 2)[..., None], a["X"], np.nan)
    T = X.shape[0]
    out = np.zeros(X.shape[:-1], bool)
    if T < 3:
        return out
    prev = np.full_like(X, np.nan)
    nxt = np.full_like(X, np.nan)
    prev[1:], nxt[:-1] = X[:-1], X[1:]
    mid = np.linalg.norm(X - 0.5 * (prev + nxt), axis=-1)
    step = np.fmin(np.linalg.norm(X - prev, axis=-1), np.linalg.norm(X - nxt, axis=-1))
    one = ~np.isfinite(mid) & np.isfinite(step)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q_mid = np.nanpercentile(mid, 90, axis=0)  # I, K
        q_step = np.nanpercentile(step, 90, axis=0)
        floor = 0.25 * size
        out = (mid > np.maximum(SPIKE_FACTOR * q_mid, floor)[None]) \
            | (one & (step > np.maximum(SPIKE_FACTOR * q_step, floor)[None]))
    return out


def body_residual(template: Any, X: np.ndarray) -> np.ndarray:
    """(T, I, K) distance of each point of poses X (T, I, K, 3) (NaN unknown) from its place in the body.

    The place of keypoint k is the seed template fitted (weighted Kabsch,
    weights ``1 / spread^2``: the steadier keypoints fix the body) to the
    animal's *other* keypoints in that frame, so a point on a wrong marker
    does not pull its own reference along. NaN where fewer than 3 other
    keypoints are known.
    """
    T, I, K, _ = X.shape
    out = np.full((T, I, K), np.nan)
    src = np.broadcast_to(template.shape[None], (T, I, K, 3)).reshape(-1, K, 3)
    dst = X.reshape(-1, K, 3)
    for k in range(K):
        w = np.broadcast_to(1.0 / template.spread ** 2, (T * I, K)).copy()
        w[:, k] = 0.0
        r, t = kabsch(src, dst, w)
        place = np.einsum("bij,bj->bi", r, src[:, k]) + t  # T*I, 3
        out[..., k] = np.linalg.norm(dst[:, k] - place, axis=-1).reshape(T, I)
    return out


#: a stretch of a keypoint's track cut off from its verified stretches is doubtful when its median distance from
#: its place in the body exceeds this percentile of that distance over the verified stretches
DETACHED_PERCENTILE = 90.0
#: a track resumed after more than this many frames without a point is cut there: continuity does not carry identity
#: across a loss
LOST_CUT_FRAMES = 2
#: the fewest one-frame moves and verified points of a keypoint that make its 90th percentiles meaningful
DETACHED_MIN_SAMPLES = 10


def _detached(su: Any, a: dict[str, np.ndarray]) -> np.ndarray:
    """(T, I, K) points on stretches of track that likely follow another marker throughout (``detached_track``).

    Each keypoint's track (points with >= 2 agreeing views) is cut at large
    jumps: a move between observed frames ``g`` apart larger than
    ``SPIKE_FACTOR`` x the 90th percentile of the keypoint's one-frame moves x
    ``g`` (and a quarter of the animal's size), and where it resumes after
    more than ``LOST_CUT_FRAMES`` frames without a point (the keypoint was
    lost: whatever it found again is not carried by continuity). A stretch with a seed frame
    or a point both tracking passes confirm is *verified*. A stretch reached
    only across a jump is doubtful when, in addition, the body disagrees:
    its median distance from the keypoint's place in the body
    (:func:`body_residual`) exceeds the ``DETACHED_PERCENTILE`` th percentile
    of that distance over the verified stretches (most of it lies where the
    verified points of the keypoint do not). Both are needed: a fast
    movement also jumps, and a posture also bends the body. A keypoint with
    fewer than ``DETACHED_MIN_SAMPLES`` one-frame moves or verified points is
    not judged.
    """
    ok = (a["n_in"] >= 2) & np.isfinite(a["X"]).all(-1)
    X = np.where(ok[..., None], a["X"], np.nan)
    T, I, K, _ = X.shape
    out = np.zeros((T, I, K), bool)
    anchor = (a.get("confirmed", np.zeros((T, I, K), bool)) | (a["stage"] == SEED).any(axis=1)) & ok
    if T < 3 or not anchor.any():
        return out
    resid = body_residual(su.template, X)
    floor = 0.25 * su.template.size
    for i in range(I):
        for k in range(K):
            idx = np.flatnonzero(ok[:, i, k])
            if idx.size < 3:
                continue
            gap = np.diff(idx)
            if (gap == 1).sum() < DETACHED_MIN_SAMPLES:
                continue
            move = np.linalg.norm(np.diff(X[idx, i, k], axis=0), axis=-1)
            q = float(np.percentile(move[gap == 1], 90))
            cut = (move > np.maximum(SPIKE_FACTOR * q * gap, floor)) | (gap > LOST_CUT_FRAMES)
            stretch = np.r_[0, np.cumsum(cut)]
            verified = np.zeros(stretch[-1] + 1, bool)
            np.logical_or.at(verified, stretch, anchor[idx, i, k])
            if verified.all() or not verified.any():
                continue
            ref = resid[idx[verified[stretch]], i, k]
            ref = ref[np.isfinite(ref)]
            if ref.size < DETACHED_MIN_SAMPLES:
                continue
            limit = float(np.percentile(ref, DETACHED_PERCENTILE))
            for j in np.flatnonzero(~verified):
                frames = idx[stretch == j]
                r = resid[frames, i, k]
                if np.isfinite(r).any() and float(np.nanmedian(r)) > limit:
                    out[frames, i, k] = True
    return out


def _rival_elsewhere(a: dict[str, np.ndarray], predicted: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """(T, V, I, K) labels of a keypoint that won a marker whose rival's own track places the rival elsewhere.

    The keypoint that gave way (``won_from``) is predicted there by
    :func:`fill_gaps` from its own sure track, independently of the winner;
    the marker is not the rival's when that prediction lands on spots no
    label claims (so not the winner's) in two or more views
    (:func:`_spot_views`), or, in a view, when it is likely within
    ``PREDICTED_OK_PX`` (confidence at least 0.5) and lies farther than the
    inlier threshold ``thr`` from the winner's label.
    """
    T, V, I, K = a["cid"].shape
    out = np.zeros((T, V, I, K), bool)
    won_from = a.get("won_from")
    if won_from is None or "predicted_conf" not in a:
        return out
    tt, ii, kk = np.nonzero(won_from >= 0)
    jj, ll = np.divmod(won_from[tt, ii, kk], K)
    rival_pred = predicted[tt, jj, ll]
    tt, ii, kk, jj, ll = tt[rival_pred], ii[rival_pred], kk[rival_pred], jj[rival_pred], ll[rival_pred]
    own_spots = a.get("spot_views", np.zeros((T, I, K), int))[tt, jj, ll] >= 2
    for v in range(V):
        gap = np.linalg.norm(a["xy"][tt, v, ii, kk] - a["xy"][tt, v, jj, ll], axis=-1)
        with np.errstate(invalid="ignore"):
            ok = own_spots | ((gap > thr[tt, 0, 0, 0]) & (a["predicted_conf"][tt, v, jj, ll] >= 0.5))
        out[tt[ok], v, ii[ok], kk[ok]] = True
    return out


def label_quality(su: Any, a: dict[str, np.ndarray], suspect: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reason bits (T, V, I, K), flags and confidences from the merged frame arrays.

    **Confidence** (probability-like, see :mod:`ethoscribe.pose.labels`):

    - identity: ``p = 1 / (1 + exp(-margin / 2))`` with ``margin`` how much
      cheaper the chosen 3D point was than the keypoint's best alternative
      (costs are squared standard scores, so ``margin / 2`` is a log-likelihood
      ratio); where both passes confirm the point, the chance of a wrong
      identity is multiplied by ``AGREED_FACTOR``; where they disagree it is at
      most ``0.5 + 0.5 d`` with ``d`` in [0, 1] how decisively the tracks'
      continuity chose between them (1 when the rejected pass followed a
      marker another keypoint holds); a keypoint that kept a marker another
      one also claimed, without both passes confirming it, at most
      ``CONTESTED_IDENTITY`` (not when the other keypoint's own prediction
      places it elsewhere: :func:`_rival_elsewhere`); a seed label is 1;
    - geometry: a label on a candidate: ``exp(-max(0, e^2 - r^2) / (2 s^2))``
      with ``e`` its reprojection error, ``r`` the inlier threshold or
      ``PREDICTED_OK_PX`` if smaller, and ``s`` the label noise (1 within
      ``r``); a label whose 3D point rests on ``n`` views: times
      ``1 - TWO_VIEW_DOUBT / 2^(n - 2)`` below ``verified_views`` unless the
      other pass confirms it (two spots on an epipolar line agree by chance);
      a reprojected label: the same support factor, times
      ``1 - exp(-(5 px)^2 / (2 r^2))`` with ``r`` the RMS reprojection error
      of the point's candidate labels in usable views (the reprojection is as
      far off as the point, and the spread of its views about it is the scale
      of that error); a predicted point: ``1 - exp(-(5 px)^2 / (2 s^2))``, the
      chance that it is within 5 px when its error has the scale ``s`` of the
      keypoint's displacement over the gap (see :func:`fill_gaps`), at least
      ``1 - TWO_VIEW_DOUBT / 2^(n - 2)`` when it lands on spots no label
      claims in ``n >= 2`` views, and for a single view's candidate within
      the threshold of that prediction
      ``1 - (1 - UNVERIFIED_CONFIDENCE) (1 - that chance)`` (the view and the
      track are independent: both must be wrong); a label with no 3D point
      (one view, unverified): ``UNVERIFIED_CONFIDENCE``; the identity of a
      ``detached_track`` point (:func:`_detached`) at most ``CONTESTED_IDENTITY``;
    - halved in a suspect camera.

    **Flags** (see :mod:`ethoscribe.pose.labels`): ``high_reprojection_error``
    (a candidate label farther than the inlier threshold, or than
    ``PREDICTED_OK_PX``, from its 3D point's reprojection),
    ``large_jump``, ``detached_track`` and ``suspect_camera`` always flag; so does a confidence
    below 0.5 (``low_confidence``: a weakly supported reprojection or 2-view
    point, an ambiguous association, a prediction likely more than
    ``PREDICTED_OK_PX`` off); ``conflict`` flags an unconfirmed contested
    candidate and a marker kept against another keypoint's claim unless
    both passes confirm it or the other keypoint's prediction places it
    elsewhere (not the predicted labels of the keypoint that let go); a
    ``few_views`` label with a single view (nothing checked it) is flagged;
    ``reprojected``, ``predicted`` and ``passes_disagree`` do not flag by
    themselves.
    """
    cfg = su.config
    T, V, I, K = a["cid"].shape
    n_usable = int((~suspect).sum())
    n_v = min(cfg.verified_views, max(2, n_usable))
    thr = a["threshold"].astype(float)[:, None, None, None]
    sig = thr / max(cfg.inlier_sigmas, 1e-9)
    labelled = np.isfinite(a["xy"][..., 0])
    stage = a["stage"]
    seed = stage == SEED
    reproj = stage == REPROJECTION
    n_in3 = a["n_in"].astype(float)  # T, I, K
    n_in = n_in3[:, None]
    has3d = n_in >= 2
    err = a["err"].astype(float)
    cand_label = labelled & ~seed & ~reproj
    sus = suspect[None, :, None, None]
    predicted = a.get("predicted", np.zeros((T, I, K), bool))[:, None]
    confirmed = a.get("confirmed", np.zeros((T, I, K), bool))[:, None]
    disagree = a.get("disagree", np.zeros((T, I, K), bool))[:, None]
    bits = np.zeros((T, V, I, K), np.int64)
    # a label farther than PREDICTED_OK_PX from where its 3D point projects is likely off, even within the (wider)
    # inlier threshold that let it into the point
    ok_px = np.minimum(thr, PREDICTED_OK_PX)
    with np.errstate(invalid="ignore"):
        high = cand_label & (err > ok_px)
        verified = (err <= thr) & (n_in >= n_v)
    bits |= np.where(seed, REASON_BIT["seed"], 0)
    bits |= np.where(high, REASON_BIT["high_reprojection_error"], 0)
    bits |= np.where(labelled & ~seed & ~predicted & (n_in < n_v), REASON_BIT["few_views"], 0)
    decisive = a.get("decisive", np.zeros((T, I, K)))[:, None]
    dropped = a.get("dropped", np.zeros((T, I, K), bool))[:, None]
    won = a.get("won", np.zeros((T, I, K), bool))[:, None]
    # a doubtful conflict: an unconfirmed contested candidate, or a marker kept against a keypoint that let go of it
    # (unless both passes put the keypoint there, or the prediction of the keypoint that let go, from its own track,
    # places that keypoint elsewhere); the labels of a keypoint that let go of its marker are predicted and flagged by
    # their own confidence
    contested = won & ~confirmed & ~_rival_elsewhere(a, predicted[:, 0], thr)
    doubt_conflict = labelled & ~seed & ((a["conflict"] & cand_label & ~verified) | contested)
    bits |= np.where(doubt_conflict | (dropped & labelled & ~seed), REASON_BIT["conflict"], 0)
    bits |= np.where(disagree & labelled & ~seed, REASON_BIT["passes_disagree"], 0)
    bits |= np.where(reproj, REASON_BIT["reprojected"], 0)
    bits |= np.where(predicted & labelled, REASON_BIT["predicted"], 0)
    spike = _spikes(a, su.template.size)[:, None]
    bits |= np.where((a["jump"][:, None] | spike) & labelled & ~seed, REASON_BIT["large_jump"], 0)
    detached = _detached(su, a)[:, None]
    bits |= np.where(detached & labelled & ~seed, REASON_BIT["detached_track"], 0)
    bits |= np.where(~labelled, REASON_BIT["missing"], 0)
    bits |= np.where(sus & labelled, REASON_BIT["suspect_camera"], 0)

    # ---- confidence
    p_id = identity_probability(a.get("margin", np.full((T, I, K), np.nan)))[:, None]
    p_id = np.where(confirmed, 1.0 - (1.0 - p_id) * AGREED_FACTOR, p_id)
    p_id = np.where(disagree, np.minimum(p_id, 0.5 + 0.5 * decisive), p_id)
    # a marker two keypoints claimed, kept by a tie-break that neither pass's agreement backs: a coin toss
    p_id = np.where(contested, np.minimum(p_id, CONTESTED_IDENTITY), p_id)
    # a stretch the body and the track's continuity both set apart from the verified track: as doubtful
    p_id = np.where(detached, np.minimum(p_id, CONTESTED_IDENTITY), p_id)
    support = np.where(n_in >= n_v, 1.0, 1.0 - TWO_VIEW_DOUBT / 2.0 ** np.maximum(n_in - 2.0, 0.0))
    support = np.where(confirmed, 1.0, support)
    with np.errstate(invalid="ignore", over="ignore"):
        p_err = np.where(np.isfinite(err), np.exp(-np.maximum(err ** 2 - ok_px ** 2, 0.0) / (2.0 * sig ** 2)), 1.0)
    c_cand = np.where(has3d, p_id * support * p_err, UNVERIFIED_CONFIDENCE)
    # a reprojected label is as far off as the point: the spread of its usable views' labels about it (their RMS
    # reprojection error) is the scale of that error
    err_used = np.where(sus, np.nan, err)
    n_err = np.isfinite(err_used).sum(axis=1, keepdims=True)
    rms = np.sqrt(np.nansum(err_used ** 2, axis=1, keepdims=True) / np.maximum(n_err, 1))
    with np.errstate(divide="ignore"):
        p_rep = np.where(n_err > 0, 1.0 - np.exp(-PREDICTED_OK_PX ** 2 / (2.0 * rms ** 2)), 1.0)
    c_rep = p_id * support * p_rep
    c_pred = a.get("predicted_conf", np.zeros((T, V, I, K)))
    # a candidate the prediction agrees with (fill_gaps kept it within the threshold of the predicted point): two
    # independent sources, the single view and the keypoint's track, must both be wrong for the label to be wrong
    c_pred = np.where(cand_label, 1.0 - (1.0 - UNVERIFIED_CONFIDENCE) * (1.0 - c_pred), c_pred)
    conf = np.where(seed & labelled, 1.0,
                    np.where(predicted & labelled, c_pred,
                             np.where(reproj, c_rep, np.where(cand_label, c_cand, 0.0))))
    conf = np.where(sus & ~seed, 0.5 * conf, conf)
    conf = np.clip(np.nan_to_num(conf, nan=0.0), 0.0, 1.0).astype(np.float32)
    low = labelled & ~seed & (conf < 0.5)
    bits |= np.where(low, REASON_BIT["low_confidence"], 0)

    # ---- flags: doubtful rows
    hard = (REASON_BIT["high_reprojection_error"] | REASON_BIT["large_jump"] | REASON_BIT["detached_track"]
            | REASON_BIT["suspect_camera"] | REASON_BIT["low_confidence"])
    # a predicted point's confidence is its chance of lying within PREDICTED_OK_PX: it flags through low_confidence
    flag = ((bits & hard) != 0) | doubt_conflict
    flag |= labelled & ~seed & ((bits & REASON_BIT["few_views"]) != 0) & (n_in < 2)
    # a missing label is worth a look when the keypoint is lost (no 3D point) outside the seed frames
    flag |= ~labelled & ~np.broadcast_to(has3d, labelled.shape) & ~seed & ~sus
    return bits, np.broadcast_to(flag, bits.shape).copy(), conf


def labels_table(su: Any, a: dict[str, np.ndarray], bits: np.ndarray, flag: np.ndarray, conf: np.ndarray,
                 seed_reasoner: str) -> pd.DataFrame:
    """The dense labels table in (frame, view, individual, keypoint) order."""
    T, V, I, K = bits.shape
    n = T * V * I * K
    stage = a["stage"].reshape(-1)
    stage_names = np.asarray(STAGES, dtype=object)[np.clip(stage, 0, len(STAGES) - 1)]
    reasoner_names = np.where(stage == SEED, seed_reasoner,
                              np.where(stage >= 3, "geometric", str(getattr(su.reasoner, "name", "geometric")))).astype(object)
    return pd.DataFrame({
        "frame": np.repeat(np.arange(T, dtype=np.int64), V * I * K),
        "view": np.tile(np.repeat(np.asarray(su.views, dtype=object), I * K), T),
        "individual": np.tile(np.repeat(np.asarray(su.individuals, dtype=object), K), T * V),
        "keypoint": np.tile(np.asarray(su.keypoints, dtype=object), T * V * I),
        "x": a["xy"][..., 0].reshape(-1), "y": a["xy"][..., 1].reshape(-1),
        "confidence": conf.reshape(-1), "flag": flag.reshape(-1), "reason": reason_strings(bits.reshape(-1)),
        "stage": stage_names, "reasoner": reasoner_names, "candidate": a["cid"].reshape(-1).astype(np.int64),
        "reproj_error": a["err"].reshape(-1).astype(np.float32),
    }, index=pd.RangeIndex(n))


def poses3d_dataset(su: Any, a: dict[str, np.ndarray], suspect: np.ndarray) -> Any:
    """The 3D poses as a `movement` dataset with ``n_views`` and ``reproj_error``."""
    from movement.io import load_poses

    cfg = su.config
    X = a["X"]  # T, I, K, 3
    n_in = a["n_in"].astype(np.int64)
    thr = a["threshold"].astype(float)[:, None, None]
    n_v = min(cfg.verified_views, max(2, int((~suspect).sum())))
    support = np.clip((n_in - 1.0) / max(n_v - 1.0, 1.0), 0.0, 1.0)
    e3 = a["err3"].astype(float)
    with np.errstate(invalid="ignore", over="ignore"):
        conf = np.where(n_in >= 2, support * np.exp(-(np.nan_to_num(e3) / thr) ** 2), 0.0)
    pos = np.transpose(X, (0, 3, 2, 1))  # time, space, keypoints, individuals
    ds = load_poses.from_numpy(
        pos, confidence_array=np.transpose(conf, (0, 2, 1)).astype(np.float32), individual_names=list(su.individuals),
        keypoint_names=list(su.keypoints), fps=su.fps, source_software="ethoscribe.pose",
    )
    ds["n_views"] = (("time", "keypoints", "individuals"), np.transpose(n_in, (0, 2, 1)).astype(np.int16))
    ds["reproj_error"] = (("time", "keypoints", "individuals"), np.transpose(e3, (0, 2, 1)).astype(np.float32))
    ds["n_views"].attrs["description"] = "number of views agreeing on the 3D point (RANSAC inliers)"
    ds["reproj_error"].attrs["description"] = "mean reprojection error over the agreeing views (px)"
    ds.attrs["space_unit"] = "calibration units"
    ds.attrs["suspect_cameras"] = json.dumps([v for v, s in zip(su.views, suspect) if s])
    ds.attrs["views"] = json.dumps(list(su.views))
    return ds


def review_table(su: Any, bits: np.ndarray, flag: np.ndarray, conf: np.ndarray, a: dict[str, np.ndarray]) -> pd.DataFrame:
    """Frames ranked by how much a person's look is worth.

    ``score`` = sum over flagged labels of the severity of their reasons
    (:data:`SEVERITY`: 3 for a label that disagrees with the other views, a
    large jump or a detached track, 2 for an unconfirmed conflict, 1 for few views, reprojected,
    predicted, low confidence or lost) + the sum of ``1 - confidence`` over
    the frame's labels (doubt that stayed below the flags). Frames with a
    score of 0 are left out. ``reasons`` counts, per code, the flagged labels
    and the labels that carry an informative code (``reprojected``,
    ``few_views``, ``passes_disagree``) whether flagged or not.
    """
    T, V, I, K = bits.shape
    flat = bits.reshape(T, -1)
    fl = flag.reshape(T, -1)
    score = np.zeros(T)
    counts = {}
    stage = a["stage"].reshape(T, -1)
    labelled = np.isfinite(a["xy"][..., 0]).reshape(T, -1)
    for r in REASONS:
        code = (flat & REASON_BIT[r]) != 0
        score += SEVERITY[r] * (code & fl).sum(axis=1)
        # the reasons column counts flagged labels, and the labels that carry a code for the record
        counts[r] = (code & (fl | (labelled & (r in INFORMATIVE)))).sum(axis=1)
    cand_label = labelled & (stage != SEED)
    c = conf.reshape(T, -1)
    score += np.where(cand_label, 1.0 - c, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore"):
        mean_conf = np.where(labelled.any(axis=1), np.where(labelled, c, 0).sum(axis=1) / np.maximum(labelled.sum(axis=1), 1), 0.0)
    order = np.lexsort((np.arange(T), -np.round(score, 6)))
    order = order[score[order] > 1e-9]
    rows = []
    names = [(v, i, k) for v in su.views for i in su.individuals for k in su.keypoints]
    sev = np.zeros(flat.shape)
    for r in REASONS:
        sev = np.maximum(sev, np.where(((flat & REASON_BIT[r]) != 0) & fl, SEVERITY[r], 0.0))
    for rank, t in enumerate(order, start=1):
        reasons = ";".join(f"{r}:{int(counts[r][t])}" for r in REASONS if counts[r][t] > 0)
        j = int(np.argmax(sev[t] + (1 - c[t]) * cand_label[t] * 0.01))
        v, i, k = names[j]
        rows.append((rank, int(t), float(t) / su.fps, round(float(score[t]), 3), int(fl[t].sum()),
                     int(labelled[t].sum()), round(float(mean_conf[t]), 4), reasons, f"{v}/{i}/{k}"))
    return pd.DataFrame(rows, columns=["rank", "frame", "time_s", "score", "n_flagged", "n_labels", "mean_confidence",
                                       "reasons", "worst_label"])


def _per_camera(su: Any, a: dict[str, np.ndarray], bits: np.ndarray) -> dict[str, Any]:
    stage = a["stage"]
    err = a["err"].astype(float)
    cand_label = np.isfinite(a["xy"][..., 0]) & (stage != SEED) & (stage != REPROJECTION)
    out = {}
    for v, name in enumerate(su.views):
        e = err[:, v][cand_label[:, v] & np.isfinite(err[:, v])]
        out[name] = {
            "labels": int(np.isfinite(a["xy"][:, v, ..., 0]).sum()),
            "candidate_labels": int(cand_label[:, v].sum()),
            "median_reproj_error_px": float(np.median(e)) if e.size else None,
            "p90_reproj_error_px": float(np.percentile(e, 90)) if e.size else None,
        }
    return out


def assemble_and_write(su: Any, chunks: list[Any], out: Path, run_info: dict[str, Any]) -> Any:
    """Stack the chunks, compute confidence, flags, review and summary; write every output."""
    from ethoscribe.pose.pipeline import PoseResult

    t0 = time.perf_counter()
    a = _stack_chunks(su, chunks)
    suspect = np.asarray(run_info["final_suspect"], bool)
    a["predicted"] = fill_gaps(su, a, suspect)
    bits, flag, conf = label_quality(su, a, suspect)
    seed_reasoner = "pseudo-seed" if su.seeds.pseudo else "human"
    labels = labels_table(su, a, bits, flag, conf, seed_reasoner)
    poses = poses3d_dataset(su, a, suspect)
    review = review_table(su, bits, flag, conf, a)
    paths = {k: out / v for k, v in FILES.items()}
    labels = validate_labels(labels, "labels table")
    save_labels(labels, paths["labels"])
    with atomic_path(paths["poses3d"]) as tmp:
        poses.to_netcdf(tmp, engine="netcdf4")
    with atomic_path(paths["review"]) as tmp:
        review.to_csv(tmp, index=False)
    write_text(paths["trace"], "".join(line + "\n" for ch in chunks for line in ch.trace))

    # ---- summary
    T, V, I, K = bits.shape
    labelled = np.isfinite(a["xy"][..., 0])
    by_reason = {r: int((((bits & REASON_BIT[r]) != 0) & flag).sum()) for r in REASONS}
    by_reason_all = {r: int(((bits & REASON_BIT[r]) != 0).sum()) for r in REASONS}
    by_stage = {s: int(((a["stage"] == i) & labelled).sum()) for i, s in enumerate(STAGES)}
    cam_labels = np.sum([ch.stats.get("cam_labels", [0] * V) for ch in chunks], axis=0)
    cam_outliers = np.sum([ch.stats.get("cam_outliers", [0] * V) for ch in chunks], axis=0)
    per_cam = _per_camera(su, a, bits)
    chk = su.check
    for v, name in enumerate(su.views):
        per_cam[name]["checked_labels"] = int(cam_labels[v])
        per_cam[name]["disagreeing_fraction"] = float(cam_outliers[v] / cam_labels[v]) if cam_labels[v] else None
        per_cam[name]["seed_median_error_px"] = None if not np.isfinite(chk.median_error_px[v]) else float(chk.median_error_px[v])
    suspect_info = []
    newly = {}
    for ch in chunks:
        for name in ch.stats.get("newly_suspect", []):
            newly.setdefault(name, int(ch.frames[0]))
    for v, name in enumerate(su.views):
        if not suspect[v]:
            continue
        if name in chk.reasons:
            why = chk.reasons[name]
        else:
            frac = per_cam[name]["disagreeing_fraction"]
            why = (f"during the run its labels disagreed with the other views' 3D points in "
                   f"{100 * (frac or 0):.0f} % of {per_cam[name]['checked_labels']} checks; excluded from triangulation "
                   f"from the chunk starting at frame {newly.get(name)}")
        suspect_info.append({"camera": name, "reason": why, "excluded_from_triangulation": True,
                             "median_reproj_error_px": per_cam[name]["median_reproj_error_px"]})
    dups = []
    for x, y in su.duplicates:
        sx, sy = bool(suspect[su.views.index(x)]), bool(suspect[su.views.index(y)])
        note = ("identical calibration parameters: at most one can be right; "
                + ("both disagree with the other views" if sx and sy else
                   f"{y if sy else x} disagrees with the other views and is excluded, {x if sy else y} agrees" if sx or sy
                   else "both agree with the other views here (check the cameras' placement)"))
        dups.append({"cameras": [x, y], "note": note})
    timing = {}
    for ch in chunks:
        for k, v in ch.stats.get("timing", {}).items():
            timing[k] = timing.get(k, 0.0) + float(v)
    loop_s = float(run_info["loop_s"])
    n_comp = int(run_info["frames_computed"])
    # timepoints of the recording per second of frame loop (frames between seeds are tracked twice)
    n_frames_total = int(T) if run_info["chunks_resumed"] == 0 else n_comp
    summary = {
        "frames": int(T), "views": list(su.views), "individuals": list(su.individuals), "keypoints": list(su.keypoints),
        "reasoner": str(getattr(su.reasoner, "name", "")), "candidates": {
            "source": su.candidates_source, "count": int(su.cands.n_candidates),
            "per_view": {v: int(c) for v, c in zip(su.views, su.cands.per_view_counts)},
            "with_hints": bool(su.cands.has_hints), "unknown_hint_names": int(su.cands.unknown_hints),
            **({"hint_agreement": {"checked": su.hints.checked, "agree": su.hints.agree,
                                   "accuracy": round(su.hints.accuracy, 4),
                                   "costs": [round(c, 3) for c in su.hint_costs]}} if su.cands.has_hints else {})},
        "seeds": {"source": su.seeds.source, "frames": [int(f) for f in su.seeds.frames], "pseudo": bool(su.seeds.pseudo),
                  **({"notes": su.seeds.notes} if su.seeds.notes else {})},
        "labels": {
            "rows": int(bits.size), "labelled": int(labelled.sum()), "flagged": int(flag.sum()),
            "flagged_fraction": float(flag.sum() / max(bits.size, 1)),
            "flagged_labelled": int((flag & labelled).sum()),
            "flagged_labelled_fraction": float((flag & labelled).sum() / max(labelled.sum(), 1)),
            "flagged_by_reason": by_reason, "rows_by_reason": by_reason_all, "by_stage": by_stage,
            "mean_confidence": float(conf[labelled].mean()) if labelled.any() else 0.0,
        },
        "poses3d": {"points": int(np.isfinite(a["X"][..., 0]).sum()), "of": int(a["X"][..., 0].size),
                    "median_views": float(np.median(a["n_in"][a["n_in"] >= 2])) if (a["n_in"] >= 2).any() else 0.0},
        "thresholds": {"inlier_threshold_px": sorted({round(float(x), 4) for x in np.unique(a["threshold"][np.isfinite(a["threshold"])])}),
                       "label_noise_px": float(su.sigma_px), "label_noise_source": su.noise_source,
                       "seed_label_noise_px": float(su.sigma_px0),
                       "seed_check_threshold_px": float(chk.threshold_px), "template_size": float(su.template.size),
                       "config": su.config.model_dump()},
        "cameras": per_cam,
        "suspect_cameras": suspect_info,
        "duplicate_calibrations": dups,
        "seed_camera_check": {"start_pair": list(chk.start_pair) if chk.start_pair else None, "note": chk.note,
                              "sigma_px": None if not np.isfinite(chk.sigma_px) else float(chk.sigma_px)},
        "review": {"frames_to_review": int(len(review)), "top": review.head(10).to_dict(orient="records")},
        "resume": {"chunks": int(run_info["n_chunks"]), "resumed": int(run_info["chunks_resumed"]),
                   "computed": int(run_info["chunks_computed"])},
        "timings_s": {"setup": float(run_info["setup_s"]), "frame_loop": loop_s,
                      "stages": timing, "assemble": time.perf_counter() - t0,
                      "total": time.perf_counter() - float(run_info["t_start"]),
                      "frame_loop_cpu": float(run_info.get("loop_cpu_s", 0.0)),
                      "frames_tracked": n_comp,
                      "timepoints_per_s": (n_frames_total / loop_s) if loop_s > 0 and n_comp else None,
                      "timepoints_per_cpu_s": (n_frames_total / run_info["loop_cpu_s"])
                      if run_info.get("loop_cpu_s") and n_comp else None},
        "files": {k: str(p) for k, p in paths.items()},
    }
    write_json(paths["summary"], summary)
    return PoseResult(labels=labels, poses3d=poses, review=review, summary=summary, paths=paths)


def load_pose_result(out_dir: str | os.PathLike[str]) -> Any:
    """Read back what :func:`~ethoscribe.pose.run_pose` wrote into ``out_dir``.

    Raises
    ------
    InputError
        If a file is missing or unreadable (naming it).
    """
    import xarray as xr

    from ethoscribe.pose.pipeline import PoseResult

    out = Path(out_dir)
    paths = {k: out / v for k, v in FILES.items()}
    missing = [str(p) for k, p in paths.items() if not p.is_file()]
    if missing:
        raise InputError(f"{out}: not a complete pose output folder (missing {missing})")
    labels = load_labels(paths["labels"])
    try:
        poses = xr.load_dataset(paths["poses3d"])
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{paths['poses3d']}: cannot be read ({type(exc).__name__}: {exc})") from None
    review = pd.read_csv(paths["review"], keep_default_na=False, na_values=[""])
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    return PoseResult(labels=labels, poses3d=poses, review=review, summary=summary, paths=paths)
