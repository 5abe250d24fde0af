"""What the seed frames tell before tracking starts: camera agreement, label noise, 3D seeds.

:func:`check_cameras` finds the cameras whose calibration disagrees with
the others, from labels whose identities are known (the seeds) and without
any threshold fixed in advance:

1. every pair of cameras triangulates the points both see; the pair whose
   own reprojection residuals are smallest (and whose calibrations are not
   identical copies: two identical cameras always "agree") starts a
   consensus;
2. the label noise scale ``sigma`` is estimated from the consensus residuals
   (median residual / 1.177, the Rayleigh median, divided by
   ``sqrt(1 - 3 / (2 n))`` for a fit of 3 unknowns to ``2 n`` coordinates);
3. the camera with the smallest median error against the consensus 3D joins
   if that median is below the inlier threshold ``max(min_px, k sigma)``,
   i.e. most of its labels agree; repeat;
4. cameras that never join disagree with the others on most of their labels:
   they are reported *suspect* and left out of triangulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ethoscribe.pose.geometry import FrameGeometry

FloatArray = NDArray[np.float64]
RAYLEIGH_MEDIAN = float(np.sqrt(2 * np.log(2)))  # median of |N(0, I_2)|


def dof_correction(n_views: float) -> float:
    """Residual shrinkage of a 3D fit to ``n_views`` 2D points: ``sqrt(1 - 3 / (2 n))``."""
    return float(np.sqrt(max(1.0 - 3.0 / (2.0 * max(n_views, 2.0)), 0.25)))


def noise_scale(errors: FloatArray, n_views: FloatArray | float) -> float:
    """Per-axis label noise (px) from reprojection residuals of points fitted to ``n_views`` views."""
    e = np.asarray(errors, float)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return float("nan")
    n = float(np.nanmean(n_views)) if np.ndim(n_views) else float(n_views)
    return float(np.median(e) / RAYLEIGH_MEDIAN / dof_correction(n))


@dataclass
class CameraCheck:
    """Result of :func:`check_cameras`."""

    suspect: NDArray[np.bool_]
    median_error_px: FloatArray
    outlier_fraction: FloatArray
    sigma_px: float
    threshold_px: float
    reasons: dict[str, str] = field(default_factory=dict)
    start_pair: tuple[str, str] | None = None
    note: str = ""


def _dlt_from(geo: FrameGeometry, norm: FloatArray, use: NDArray[np.bool_]) -> FloatArray:
    valid = np.isfinite(norm).all(-1) & use[:, None]
    gram = geo._gram(norm, valid)
    return geo.dlt(gram, valid.astype(float))


def check_cameras(
    geo: FrameGeometry,
    px: FloatArray,
    norm: FloatArray,
    duplicates: list[tuple[str, str]],
    inlier_sigmas: float = 4.0,
    min_threshold_px: float = 1.5,
    min_points: int = 5,
) -> CameraCheck:
    """Cameras whose labels disagree with the consensus of the others (see the module docstring).

    ``px`` and ``norm`` (V, P, 2): the same labelled points in every view (NaN where unlabelled).
    """
    names = geo.rig.names
    V = len(names)
    seen = np.isfinite(norm).all(-1) & np.isfinite(px).all(-1)
    dup_pairs = {frozenset(p) for p in duplicates}
    best, best_err = None, np.inf
    for a, b in geo.pairs:
        if frozenset((names[a], names[b])) in dup_pairs:
            continue
        both = seen[a] & seen[b]
        if both.sum() < min_points:
            continue
        use = np.zeros(V, bool)
        use[[a, b]] = True
        X = _dlt_from(geo, norm[:, both], use)
        e = geo.errors(X, px[:, both])[[a, b]]
        m = float(np.nanmedian(e))
        if m < best_err:
            best, best_err = (int(a), int(b)), m
    med = np.full(V, np.nan)
    frac = np.full(V, np.nan)
    if best is None:
        sigma = float("nan")
        thr = float(min_threshold_px)
        return CameraCheck(np.zeros(V, bool), med, frac, sigma, thr,
                           note="too few points seen by two cameras to check the calibration on the seeds")
    members = [best[0], best[1]]
    while True:
        use = np.zeros(V, bool)
        use[members] = True
        X = _dlt_from(geo, norm, use)
        e = geo.errors(X, px)
        e = np.where(seen, e, np.nan)
        n_used = (seen & use[:, None]).sum(axis=0)
        sigma = noise_scale(e[use][:, n_used >= 2], n_used[n_used >= 2])
        thr = max(min_threshold_px, inlier_sigmas * sigma) if np.isfinite(sigma) else min_threshold_px
        with np.errstate(invalid="ignore"):
            for v in range(V):
                ev = e[v][np.isfinite(e[v])]
                if v in members:
                    # leave-one-out error of a member, when the others can triangulate without it
                    others = use.copy()
                    others[v] = False
                    if others.sum() >= 2:
                        Xo = _dlt_from(geo, norm, others)
                        eo = geo.errors(Xo, px)[v]
                        ev = eo[seen[v] & np.isfinite(eo)]
                med[v] = float(np.median(ev)) if ev.size >= min_points else np.nan
                frac[v] = float(np.mean(ev > thr)) if ev.size >= min_points else np.nan
        outside = [v for v in range(V) if v not in members and np.isfinite(med[v])]
        if not outside:
            break
        cand = min(outside, key=lambda v: med[v])
        if med[cand] <= thr:
            members.append(cand)
            continue
        break
    suspect = np.zeros(V, bool)
    reasons: dict[str, str] = {}
    dup_of = {}
    for a, b in duplicates:
        dup_of.setdefault(a, []).append(b)
        dup_of.setdefault(b, []).append(a)
    for v in range(V):
        if v in members or not np.isfinite(med[v]):
            continue
        suspect[v] = True
        why = (f"its seed labels disagree with the other views' 3D points: median reprojection error "
               f"{med[v]:.1f} px against an inlier threshold of {thr:.1f} px ({100 * frac[v]:.0f} % of its labels beyond)")
        if names[v] in dup_of:
            why += f"; its calibration is identical to {dup_of[names[v]]} (a copied calibration?)"
        reasons[names[v]] = why
    return CameraCheck(suspect, med, frac, sigma, thr, reasons, (names[best[0]], names[best[1]]))
