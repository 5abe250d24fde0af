"""Pseudo-seeds: seed frames chosen from pose-model predictions when no person has labelled any.

The pipeline needs seed frames to learn the body template, the label noise
and which cameras agree. Without hand labels, :func:`pseudo_seeds` takes the
predictions' own keypoint (and individual) names as provisional identities
and picks the ``n`` frames whose predictions agree best across views:

1. per frame, view, individual and keypoint, the highest-scoring candidate
   whose ``hint_keypoint`` (and ``hint_individual``) names it;
2. all of them triangulated with the plain DLT (every view), and each
   frame scored by the median reprojection error of its labels;
3. among frames where every view labels at least half of every animal's
   keypoints, the ``n`` best, at least ``T / (2 n)`` frames apart.

These are *not* ground truth: a systematic error (a swapped pair in one
view, a miscalibrated camera) survives into them. The camera check, the 3D
refinement and the QC flags still apply, and the summary says the seeds are
pseudo-seeds. Skeletons for such files can be built with
:func:`ethoscribe.pose.skeletons.skeleton_from_sleap`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ethoscribe.errors import InputError
from ethoscribe.geometry.triangulate import reprojection_error, triangulate_dlt
from ethoscribe.io.seeds import Seeds


def hinted_labels(cands: Any, n_frames: int, n_individuals: int, n_keypoints: int) -> np.ndarray:
    """(T, V, I, K, 2) the best-scoring hinted candidate per frame, view, individual and keypoint (NaN none)."""
    V = cands.n_views
    kp = cands.hint_keypoint
    ind = cands.hint_individual if n_individuals > 1 else np.zeros_like(kp)
    ok = (kp >= 0) & (ind >= 0) & (cands.frame < n_frames)
    score = np.where(np.isfinite(cands.score), cands.score, 0.0)
    idx = np.flatnonzero(ok)
    idx = idx[np.lexsort((-score[idx],))]  # best first
    key = ((cands.frame[idx] * V + cands.view[idx]) * n_individuals + ind[idx]) * n_keypoints + kp[idx]
    _, first = np.unique(key, return_index=True)
    sel = idx[first]
    out = np.full((n_frames, V, n_individuals, n_keypoints, 2), np.nan)
    ii = ind[sel]
    out[cands.frame[sel], cands.view[sel], ii, kp[sel], 0] = cands.x[sel]
    out[cands.frame[sel], cands.view[sel], ii, kp[sel], 1] = cands.y[sel]
    return out


def pseudo_seeds(cands: Any, rig: Any, skeleton: Any, individuals: list[str], n: int = 3,
                 n_frames: int | None = None) -> Seeds:
    """The ``n`` most geometrically consistent frames of hinted predictions, as :class:`Seeds` (see module docstring).

    Raises
    ------
    InputError
        If the candidates carry no ``hint_keypoint`` (or, with several
        animals, no ``hint_individual``), or fewer than ``n`` frames are
        labelled well enough in every view.
    """
    if not getattr(cands, "has_hints", False):
        raise InputError(f"{cands.source}: pseudo-seeds need predictions whose candidates name a keypoint "
                         "(column hint_keypoint); marker spots need seeds labelled by a person")
    I, K = len(individuals), skeleton.n_keypoints
    if I > 1 and not (cands.hint_individual >= 0).any():
        raise InputError(f"{cands.source}: pseudo-seeds for {I} animals need the hint_individual column")
    T = int(n_frames if n_frames is not None else cands.frame.max() + 1)
    lab = hinted_labels(cands, T, I, K)  # T, V, I, K, 2
    pts = np.moveaxis(lab, 1, 0)  # V, T, I, K, 2
    X = triangulate_dlt(rig, pts)
    err = reprojection_error(rig, X, pts)  # V, T, I, K
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        med = np.nanmedian(err.transpose(1, 0, 2, 3).reshape(T, -1), axis=1)
    cover = np.isfinite(lab[..., 0]).mean(axis=3)  # T, V, I
    eligible = (cover >= 0.5).all(axis=(1, 2)) & np.isfinite(med)
    gap = max(1, T // (2 * n))
    chosen: list[int] = []
    for t in np.argsort(np.where(eligible, med, np.inf), kind="stable"):
        if not eligible[t]:
            break
        if all(abs(int(t) - c) >= gap for c in chosen):
            chosen.append(int(t))
        if len(chosen) == n:
            break
    if len(chosen) < n:
        raise InputError(f"{cands.source}: only {len(chosen)} frame(s) have predictions for at least half of the "
                         f"keypoints in every view; pseudo-seeds need {n}")
    chosen.sort()
    return Seeds(
        np.asarray(chosen, np.int64), lab[chosen], tuple(cands.views), tuple(individuals), tuple(skeleton.keypoints),
        source=f"pseudo-seeds from {cands.source}", pseudo=True,
        notes={"rule": "most consistent frames of the hinted predictions (median all-view DLT reprojection error)",
               "median_error_px": [round(float(med[t]), 3) for t in chosen],
               "median_error_px_all_frames": round(float(np.nanmedian(med[eligible])), 3) if eligible.any() else None},
    )
