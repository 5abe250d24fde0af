"""Triangulation from calibrated views: linear (DLT), reprojection error and RANSAC.

Every function here is vectorised numpy over all points at once (and, for
RANSAC, over camera pairs too), processed in batches of bounded size, so that
memory stays near 100 MB (plus inputs and outputs) for any number of points.

Conventions follow aniposelib, so results can be compared 1:1 with
``aniposelib.cameras.CameraGroup``:

- 2D points are *distorted pixels*, an array (C, ..., 2) with one row per
  camera of the rig (in the rig's order) and NaN for a missing detection;
- they are undistorted to normalised image coordinates with
  :meth:`~ethoscribe.geometry.camera.CameraRig.undistort`, then triangulated
  with the extrinsic matrices ``[R | t]`` by the homogeneous direct linear
  transform (DLT): the unit 4-vector minimising the algebraic error, as
  ``CameraGroup.triangulate`` does (it takes the last right singular vector of
  the stacked (2C, 4) system; we take the smallest eigenvector of its 4x4
  normal matrix, the same vector: with 6 views, batched ``eigh`` takes about
  2 us per point against 5 us for batched ``svd``, and agrees with it to
  ~3e-11 relative on noisy points, ~4e-9 on points wrecked by outliers;
  ``benchmarks/triangulation.py`` measures both);
- 3D points come out in the calibration's units (mm for the synthetic rig).

The one deliberate difference is undistortion: aniposelib calls
``cv2.undistortPoints`` (5 fixed-point steps), ours iterates Newton's method to
convergence, which matters only with strong distortion near the image edges; a
pixel that the distortion model cannot produce undistorts to NaN and its view
counts as missing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ethoscribe.errors import CalibrationError, InputError
from ethoscribe.geometry.camera import CameraRig
from ethoscribe.progress import progress_bar

__all__ = [
    "DEFAULT_RANSAC_THRESHOLD_PX",
    "RansacResult",
    "reprojection_error",
    "triangulate_dlt",
    "triangulate_ransac",
]

FloatArray = NDArray[np.float64]

#: Default inlier threshold of :func:`triangulate_ransac`, in pixels.
#:
#: A view is an inlier when the hypothesis reprojects within this distance of
#: its 2D point. Good detections miss by the label noise (about 1 px for marker
#: centroids, 2-5 px for pose-model keypoints) plus the calibration error
#: (0.3-1 px), and a point triangulated from only two noisy views reprojects
#: into the other views a few times worse than that, so a tight threshold
#: (2-3 px) throws good views away; the errors worth rejecting (identity swaps,
#: a paw taken for the other paw, reflections, a wrong calibration) are tens of
#: pixels off. Measured (``benchmarks/triangulation.py``): on the synthetic
#: 6-camera rig (640x512, 1 px noise, 10 % outliers) the median 3D error is
#: flat from 3 to 20 px; on the SLEAP 4-view mouse (1280x1024, pose-model
#: labels) 8 px keeps 99-100 % of the two mutually consistent views' labels,
#: 3 px only 91-93 %, and still rejects every label of the camera whose
#: calibration is a copy of another's. Raise it for large images or noisy
#: detectors, lower it for sub-pixel markers.
DEFAULT_RANSAC_THRESHOLD_PX = 8.0

# Work per batch, in (camera x point) evaluations of a projection: bounds the
# working memory of every function here to about 100 MB whatever the input size
# (measured: DLT ~130 MB, RANSAC ~90 MB peak on 300k points x 6 views).
_BATCH_VIEW_POINTS = 400_000


# ----------------------------------------------------------------- validation
def _as_points2d(rig: CameraRig, points2d: ArrayLike, name: str = "points2d") -> FloatArray:
    """Check and convert 2D points (C, ..., 2) to float64."""
    try:
        pts = np.asarray(points2d, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric array of shape (n_cameras, ..., 2): {exc}") from None
    if pts.ndim < 2:
        raise InputError(f"{name} must have shape (n_cameras, ..., 2), got shape {pts.shape}")
    if pts.shape[-1] != 2:
        raise InputError(f"{name} must end with an axis of 2 (x, y pixels), got shape {pts.shape}")
    if pts.shape[0] != rig.n_cameras:
        raise CalibrationError(
            f"{name} has {pts.shape[0]} views on its first axis but the calibration has "
            f"{rig.n_cameras} cameras {rig.names}; pass one row per camera, in the calibration's order"
        )
    return pts


def _as_weights(weights: ArrayLike | None, shape: tuple[int, ...]) -> FloatArray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != shape:
        try:
            w = np.broadcast_to(w, shape)
        except ValueError:
            raise InputError(f"weights of shape {w.shape} do not match the 2D points' views and points {shape}") from None
    if np.any(w < 0):
        raise InputError("weights must be >= 0 (0 ignores a view)")
    return np.where(np.isfinite(w), w, 0.0)


# ------------------------------------------------------------------ kernels
def _rows(extr: FloatArray, norm: FloatArray) -> FloatArray:
    """DLT rows (C, B, 2, 4): ``x P[2] - P[0]`` and ``y P[2] - P[1]`` per camera and point.

    ``extr`` is (C, 3, 4), ``norm`` (C, B, 2) undistorted normalised coordinates.
    """
    return norm[..., :, None] * extr[:, None, None, 2, :] - extr[:, None, :2, :]


def _smallest_eigvec_point(m: FloatArray) -> FloatArray:
    """Dehomogenised smallest eigenvector of symmetric (B, 4, 4) matrices: (B, 3)."""
    _, vec = np.linalg.eigh(m)
    v = vec[:, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return v[:, :3] / v[:, 3:4]


def solve_sym3(m: FloatArray) -> FloatArray:
    """Inhomogeneous solution of (..., 4, 4) normal matrices: ``M[:3,:3] X = -M[:3, 3]``, closed form.

    Used for two-view RANSAC hypotheses (fast, no LAPACK call per point); NaN
    where the two rays are (nearly) parallel.
    """
    a, b, c = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    d, e, f = m[..., 0, 1], m[..., 0, 2], m[..., 1, 2]
    r0, r1, r2 = -m[..., 0, 3], -m[..., 1, 3], -m[..., 2, 3]
    c00 = b * c - f * f
    c01 = e * f - d * c
    c02 = d * f - b * e
    c11 = a * c - e * e
    c12 = d * e - a * f
    c22 = a * b - d * d
    det = a * c00 + d * c01 + e * c02
    scale = (a + b + c) ** 3
    ok = np.abs(det) > 1e-12 * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(ok, 1.0 / det, np.nan)
    x = (c00 * r0 + c01 * r1 + c02 * r2) * inv
    y = (c01 * r0 + c11 * r1 + c12 * r2) * inv
    z = (c02 * r0 + c12 * r1 + c22 * r2) * inv
    return np.stack([x, y, z], axis=-1)


def _pixel_errors(rig: CameraRig, points3d: FloatArray, px: FloatArray) -> FloatArray:
    """Distances (C, B) between the projections of points3d (B, 3) and pixels (C, B, 2)."""
    proj = rig.project(points3d)
    diff = proj - px
    return np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2)


def _dlt_batch(extr: FloatArray, norm: FloatArray, w: FloatArray, need: int = 2) -> FloatArray:
    """Weighted homogeneous DLT of one batch: norm (C, B, 2), w (C, B) with 0 for unused views."""
    rows = _rows(extr, np.where(w[..., None] > 0, norm, 0.0))
    m = np.einsum("cbki,cbkj,cb->bij", rows, rows, w, optimize=True)
    out = np.full((norm.shape[1], 3), np.nan)
    good = np.count_nonzero(w > 0, axis=0) >= need
    if good.any():
        out[good] = _smallest_eigvec_point(m[good])
    return out


def _batches(n: int, size: int) -> list[slice]:
    size = max(1, int(size))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


# ---------------------------------------------------------------------- DLT
def triangulate_dlt(
    rig: CameraRig,
    points2d: ArrayLike,
    weights: ArrayLike | None = None,
) -> FloatArray:
    """Linear (DLT) triangulation of distorted pixels seen by the rig's cameras.

    The same estimate as ``aniposelib``'s ``CameraGroup.triangulate``: points
    are undistorted to normalised coordinates, each view contributes the two
    rows ``x P[2] - P[0]`` and ``y P[2] - P[1]`` of ``P = [R | t]``, and the 3D
    point is the unit homogeneous vector minimising the algebraic error.

    Parameters
    ----------
    rig
        The calibrated cameras.
    points2d
        Distorted pixel coordinates, shape (C, ..., 2) with C the rig's number
        of cameras in its order; NaN marks a missing detection.
    weights
        Optional non-negative weights (C, ...), e.g. detection confidences:
        each view's squared algebraic residual is multiplied by its weight
        (0, NaN or a missing point drops the view). None weighs views equally.

    Returns
    -------
    numpy.ndarray
        3D points, shape (..., 3), in the calibration's units; NaN where fewer
        than 2 views are usable.

    Raises
    ------
    CalibrationError
        If the first axis of ``points2d`` is not the number of cameras.
    InputError
        If the last axis is not 2 or the weights do not fit.

    Examples
    --------
    >>> from ethoscribe.synth.cameras import arena_rig
    >>> rig = arena_rig(4, np.random.default_rng(0))
    >>> truth = np.array([[10.0, -20.0, 30.0], [0.0, 50.0, 5.0]])
    >>> np.allclose(triangulate_dlt(rig, rig.project(truth)), truth)
    True
    """
    pts = _as_points2d(rig, points2d)
    lead = pts.shape[1:-1]
    flat = pts.reshape(rig.n_cameras, -1, 2)
    w = _as_weights(weights, pts.shape[:-1])
    w = None if w is None else w.reshape(rig.n_cameras, -1)
    n = flat.shape[1]
    extr = rig.extrinsics()
    out = np.full((n, 3), np.nan)
    chunks = _batches(n, _BATCH_VIEW_POINTS // max(1, rig.n_cameras))
    with progress_bar(n, "triangulating") as advance:
        for sl in chunks:
            px = flat[:, sl]
            valid = np.isfinite(px).all(axis=-1)
            wb = valid.astype(np.float64) if w is None else np.where(valid, w[:, sl], 0.0)
            norm = rig.undistort(np.where(valid[..., None], px, np.nan))
            wb = np.where(np.isfinite(norm).all(axis=-1), wb, 0.0)
            out[sl] = _dlt_batch(extr, norm, wb)
            advance(sl.stop - sl.start)
    return out.reshape(lead + (3,))


def reprojection_error(rig: CameraRig, points3d: ArrayLike, points2d: ArrayLike) -> FloatArray:
    """Pixel distance between each 2D point and the projection of its 3D point.

    Parameters
    ----------
    rig
        The calibrated cameras.
    points3d
        3D points, shape (..., 3).
    points2d
        Distorted pixels, shape (C, ..., 2), the same ``...`` as ``points3d``.

    Returns
    -------
    numpy.ndarray
        Distances in pixels, shape (C, ...); NaN where the 2D or 3D point is
        missing or the 3D point is behind the camera.

    Examples
    --------
    >>> from ethoscribe.synth.cameras import arena_rig
    >>> rig = arena_rig(4, np.random.default_rng(0))
    >>> p3 = np.array([[10.0, -20.0, 30.0]])
    >>> p2 = rig.project(p3) + [3.0, 4.0]
    >>> np.round(reprojection_error(rig, p3, p2), 9).tolist()
    [[5.0], [5.0], [5.0], [5.0]]
    """
    pts = _as_points2d(rig, points2d)
    p3 = np.asarray(points3d, dtype=np.float64)
    if p3.shape[-1:] != (3,) or p3.shape[:-1] != pts.shape[1:-1]:
        raise InputError(
            f"points3d of shape {p3.shape} do not fit points2d of shape {pts.shape}: "
            f"expected points3d of shape {pts.shape[1:-1] + (3,)}"
        )
    flat3 = p3.reshape(-1, 3)
    flat2 = pts.reshape(rig.n_cameras, -1, 2)
    out = np.empty(flat2.shape[:2])
    for sl in _batches(flat3.shape[0], _BATCH_VIEW_POINTS // max(1, rig.n_cameras)):
        out[:, sl] = _pixel_errors(rig, flat3[sl], flat2[:, sl])
    return out.reshape(pts.shape[:-1])


# ------------------------------------------------------------------- RANSAC
@dataclass(frozen=True, eq=False)
class RansacResult:
    """Result of :func:`triangulate_ransac`.

    Attributes
    ----------
    points3d
        3D points (..., 3); NaN where no hypothesis has ``min_views`` inliers.
    inliers
        Boolean (C, ...): the views used for the final triangulation.
    errors
        Reprojection errors (C, ...) in pixels of the final 3D point in every
        view, inlier or not (NaN where a view is missing or the point is NaN):
        the geometric confidence of each 2D point.
    n_inliers
        Number of inlier views per point, shape (...).
    threshold_px
        The inlier threshold that was used.
    """

    points3d: FloatArray
    inliers: NDArray[np.bool_]
    errors: FloatArray
    n_inliers: NDArray[np.int64]
    threshold_px: float

    @property
    def outliers(self) -> NDArray[np.bool_]:
        """Views whose 2D point the 3D point does not explain (error known, not an inlier), (C, ...)."""
        return np.isfinite(self.errors) & ~self.inliers

    @property
    def mean_inlier_error(self) -> FloatArray:
        """Mean reprojection error over the inlier views, (...); NaN without inliers."""
        err = np.where(self.inliers, self.errors, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n_inliers > 0, err / np.maximum(self.n_inliers, 1), np.nan)


def triangulate_ransac(
    rig: CameraRig,
    points2d: ArrayLike,
    threshold_px: float = DEFAULT_RANSAC_THRESHOLD_PX,
    min_views: int = 2,
    refine: bool = True,
) -> RansacResult:
    """Robust triangulation: choose, per point, the views that agree, and ignore the rest.

    For every point and every pair of cameras that both see it, a hypothesis
    is triangulated from that pair alone (a closed-form linear solve; all
    pairs of all points at once).
    Each hypothesis is projected into every view and scored by the number of
    views it reprojects within ``threshold_px`` of their 2D point; ties go to
    the smaller sum of errors truncated at the threshold (MSAC). The best
    hypothesis's inlier views are re-triangulated with the DLT
    (:func:`triangulate_dlt`), and, if ``refine``, the inliers are updated once
    from that estimate and re-triangulated again. Errors are reported in every
    view, so an outlier view keeps a large error and a False inlier flag.

    Work is vectorised over points and camera pairs and done in batches of
    bounded size (about 100 MB of working memory, whatever the number of
    points); the cost of a point grows with the number of camera pairs that
    see it (C(C-1)/2 hypotheses, each projected into C views).

    Parameters
    ----------
    rig
        The calibrated cameras.
    points2d
        Distorted pixels (C, ..., 2); NaN marks a missing detection.
    threshold_px
        Inlier threshold in pixels (see :data:`DEFAULT_RANSAC_THRESHOLD_PX`
        for why 8 px by default).
    min_views
        The fewest inlier views a point needs (at least 2); points with fewer
        are NaN.
    refine
        Update the inliers once from the re-triangulated point.

    Returns
    -------
    RansacResult
        ``points3d`` (..., 3), ``inliers`` (C, ...), ``errors`` (C, ...) in px
        and ``n_inliers`` (...).

    Raises
    ------
    CalibrationError
        If the first axis of ``points2d`` is not the number of cameras.
    InputError
        If the last axis is not 2, or ``threshold_px`` or ``min_views`` is invalid.

    Examples
    --------
    >>> from ethoscribe.synth.cameras import arena_rig
    >>> rig = arena_rig(4, np.random.default_rng(0))
    >>> truth = np.array([[10.0, -20.0, 30.0]])
    >>> p2 = rig.project(truth)
    >>> p2[1, 0] += [60.0, -40.0]          # view 1 sees something else
    >>> res = triangulate_ransac(rig, p2)
    >>> res.inliers[:, 0].tolist()
    [True, False, True, True]
    >>> bool(np.linalg.norm(res.points3d - truth) < 1e-6)
    True
    """
    pts = _as_points2d(rig, points2d)
    if not (np.isfinite(threshold_px) and threshold_px > 0):
        raise InputError(f"threshold_px must be a positive number of pixels, got {threshold_px!r}")
    if int(min_views) != min_views or min_views < 2:
        raise InputError(f"min_views must be an integer >= 2, got {min_views!r}")
    min_views = int(min_views)
    n_cam = rig.n_cameras
    lead = pts.shape[1:-1]
    flat = pts.reshape(n_cam, -1, 2)
    n = flat.shape[1]
    extr = rig.extrinsics()
    pairs = np.array(list(itertools.combinations(range(n_cam), 2)), dtype=np.int64).reshape(-1, 2)

    out3 = np.full((n, 3), np.nan)
    inl = np.zeros((n_cam, n), dtype=bool)
    err = np.full((n_cam, n), np.nan)

    # Batch so that (valid pairs x cameras) evaluations stay bounded: the cost
    # of a point is the number of camera pairs that both see it.
    finite = np.isfinite(flat).all(axis=-1)
    n_obs = finite.sum(axis=0)
    cost = np.maximum(n_obs * (n_obs - 1) // 2, 1) * n_cam
    cum = np.cumsum(cost)
    total = int(cum[-1]) if n else 0
    cuts = np.searchsorted(cum, np.arange(1, total // _BATCH_VIEW_POINTS + 1) * _BATCH_VIEW_POINTS, side="right")
    edges = np.unique(np.concatenate([[0], cuts, [n]]).astype(np.int64))
    with progress_bar(n, "RANSAC triangulation") as advance:
        for lo, hi in zip(edges[:-1], edges[1:]):
            sl = slice(int(lo), int(hi))
            p3, ib, eb = _ransac_batch(rig, extr, pairs, flat[:, sl], threshold_px, min_views, refine)
            out3[sl], inl[:, sl], err[:, sl] = p3, ib, eb
            advance(hi - lo)
    return RansacResult(
        points3d=out3.reshape(lead + (3,)),
        inliers=inl.reshape((n_cam,) + lead),
        errors=err.reshape((n_cam,) + lead),
        n_inliers=inl.sum(axis=0).reshape(lead).astype(np.int64),
        threshold_px=float(threshold_px),
    )


def _ransac_batch(
    rig: CameraRig,
    extr: FloatArray,
    pairs: NDArray[np.int64],
    px: FloatArray,
    thr: float,
    min_views: int,
    refine: bool,
) -> tuple[FloatArray, NDArray[np.bool_], FloatArray]:
    n_cam, b = px.shape[:2]
    valid = np.isfinite(px).all(axis=-1)
    norm = rig.undistort(np.where(valid[..., None], px, np.nan))
    valid &= np.isfinite(norm).all(axis=-1)
    norm = np.where(valid[..., None], norm, 0.0)
    rows = _rows(extr, norm)  # (C, B, 2, 4)
    gram = np.einsum("cbki,cbkj->cbij", rows, rows)  # (C, B, 4, 4) per-view normal matrices

    # every (pair, point) where both cameras see the point: a hypothesis
    pair_ok = valid[pairs[:, 0]] & valid[pairs[:, 1]]  # (K, B)
    k_idx, p_idx = np.nonzero(pair_ok)
    out3 = np.full((b, 3), np.nan)
    inl = np.zeros((n_cam, b), dtype=bool)
    err = np.full((n_cam, b), np.nan)
    if k_idx.size == 0:
        return out3, inl, err
    hyp = solve_sym3(gram[pairs[k_idx, 0], p_idx] + gram[pairs[k_idx, 1], p_idx])  # (E, 3)
    e = _pixel_errors(rig, hyp, px[:, p_idx])  # (C, E); NaN: missing view or behind camera
    with np.errstate(invalid="ignore"):
        is_in = e < thr
    n_in = is_in.sum(axis=0)
    trunc = np.where(is_in, e, thr).sum(axis=0)

    # best hypothesis per point: most inliers, then smallest truncated error
    order = np.lexsort((trunc, -n_in, p_idx))
    ps = p_idx[order]
    first = order[np.r_[True, ps[1:] != ps[:-1]]]
    best_p = p_idx[first]
    ok = n_in[first] >= min_views
    best_p, first = best_p[ok], first[ok]
    if best_p.size == 0:
        return out3, inl, err
    cur_in = is_in[:, first]  # (C, P')

    # re-triangulate from the inliers (homogeneous DLT), then update the inliers once
    sub_norm, sub_px, sub_valid = norm[:, best_p], px[:, best_p], valid[:, best_p]
    p3 = _dlt_batch(extr, sub_norm, cur_in.astype(np.float64))
    e3 = _pixel_errors(rig, p3, sub_px)
    if refine:
        with np.errstate(invalid="ignore"):
            new_in = (e3 < thr) & sub_valid
        changed = np.any(new_in != cur_in, axis=0) & (new_in.sum(axis=0) >= min_views)
        if changed.any():
            p3c = _dlt_batch(extr, sub_norm[:, changed], new_in[:, changed].astype(np.float64))
            p3[changed] = p3c
            e3[:, changed] = _pixel_errors(rig, p3c, sub_px[:, changed])
            cur_in[:, changed] = new_in[:, changed]
    e3 = np.where(sub_valid, e3, np.nan)
    out3[best_p] = p3
    inl[:, best_p] = cur_in
    err[:, best_p] = e3
    return out3, inl, err
