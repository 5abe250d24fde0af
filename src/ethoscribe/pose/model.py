"""What the pipeline learns from the seed frames, and the motion model it tracks with.

- :class:`BodyTemplate`: each animal's keypoints in a body-aligned frame,
  learned from the triangulated seed frames by generalised Procrustes
  analysis (rigid: rotation and translation, no scaling), with the spread of
  each keypoint about the template (how much the body deforms there). It
  places the template onto a partly known pose (weighted Kabsch fit), which
  gives a position for every keypoint, tracked or not.
- :class:`Appearance`: typical brightness and size of each keypoint's
  candidate in each view, measured on the seed frames.
- :class:`TrackerState`: the per-keypoint 3D position and velocity of an
  alpha-beta (constant-velocity) filter, the scale of its prediction
  residuals (learned online), and the pipeline's running statistics; saved
  after every chunk so an interrupted run resumes exactly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

try:  # numpy's own routines behind np.einsum and np.linalg.svd / det / eigh, without their Python wrappers: kabsch
    # and the DLT run several times per frame on 3x3 / 4x4 matrices, where the wrappers cost more than the work
    # (with the other speed-ups, frame loop 1.25-1.36x faster, outputs bit-identical); private to numpy (2.0-2.4
    # have them), so any other numpy falls back to the public functions
    from numpy._core.multiarray import c_einsum as _einsum
    from numpy.linalg import _linalg, _umath_linalg

    _SVD_ERRSTATE = dict(call=_linalg._raise_linalgerror_svd_nonconvergence, invalid="call", over="ignore",
                         divide="ignore", under="ignore")
    _EIGH_ERRSTATE = dict(call=_linalg._raise_linalgerror_eigenvalues_nonconvergence, invalid="call", over="ignore",
                          divide="ignore", under="ignore")
except (ImportError, AttributeError):  # pragma: no cover
    _einsum = np.einsum
    _umath_linalg = None

FloatArray = NDArray[np.float64]


def _nanmean0(a: FloatArray) -> FloatArray:
    """Mean over axis 0 ignoring NaN, NaN (without a warning) where nothing is finite."""
    ok = np.isfinite(a)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, a, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


# --------------------------------------------------------------- Procrustes
def kabsch(src: FloatArray, dst: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Rigid transforms (R, t) with ``R @ src + t ~ dst``, weighted, batched over a leading axis.

    ``src``, ``dst`` (B, K, 3), ``w`` (B, K) (0 for unusable points). Returns
    R (B, 3, 3) and t (B, 3); NaN where fewer than 3 points have weight.
    """
    fs, fd = np.isfinite(src), np.isfinite(dst)
    w = np.where(fs.all(-1) & fd.all(-1), w, 0.0)
    s = np.where(fs, src, 0.0)  # unusable points have no weight: any finite value will do
    d = np.where(fd, dst, 0.0)
    ws = w.sum(axis=1, keepdims=True)
    ok = (w > 0).sum(axis=1) >= 3
    all_ok = bool(ok.all())
    with np.errstate(invalid="ignore", divide="ignore") if not all_ok else _NO_CONTEXT:  # all_ok: ws > 0
        cs = (w[..., None] * s).sum(axis=1) / ws
        cd = (w[..., None] * d).sum(axis=1) / ws
    h = _einsum("bk,bki,bkj->bij", w, s - cs[:, None], d - cd[:, None])
    if not all_ok:
        h = np.where(ok[:, None, None], h, np.eye(3))
    u, _, vt = _svd3(h)
    det = _det3(_einsum("bij,bjk->bik", u, vt))
    fix = np.ones((len(w), 3))
    fix[:, 2] = np.sign(np.where(det == 0, 1.0, det))
    r = _einsum("bji,bj,bkj->bik", vt, fix, u)  # V diag U^T
    t = cd - _einsum("bij,bj->bi", r, cs)
    if not all_ok:
        r[~ok] = np.nan
        t[~ok] = np.nan
    return r, t


_NO_CONTEXT = contextlib.nullcontext()


def _svd3(h: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``np.linalg.svd(h)`` of float64 matrices (B, 3, 3), without the wrapper's checks (the same gufunc and
    error handling): kabsch runs several times per frame and the wrapper cost more than the decomposition."""
    if _umath_linalg is None:  # pragma: no cover
        return np.linalg.svd(h)
    with np.errstate(**_SVD_ERRSTATE):
        return _umath_linalg.svd_f(h, signature="d->ddd")


def _singular_values(a: FloatArray) -> FloatArray:
    """``np.linalg.svd(a, compute_uv=False)`` of a float64 matrix (the same gufunc and error handling)."""
    if _umath_linalg is None:  # pragma: no cover
        return np.linalg.svd(a, compute_uv=False)
    with np.errstate(**_SVD_ERRSTATE):
        return _umath_linalg.svd(a, signature="d->d")


def _det3(m: FloatArray) -> FloatArray:
    """``np.linalg.det`` of float64 matrices (B, 3, 3) (the same gufunc, without the wrapper)."""
    if _umath_linalg is None:  # pragma: no cover
        return np.linalg.det(m)
    return _umath_linalg.det(m, signature="d->d")


def _eigh_vectors(m: FloatArray) -> FloatArray:
    """The eigenvectors of ``np.linalg.eigh(m)`` of symmetric float64 matrices (B, n, n) (the same gufunc)."""
    if _umath_linalg is None:  # pragma: no cover
        return np.linalg.eigh(m)[1]
    with np.errstate(**_EIGH_ERRSTATE):
        return _umath_linalg.eigh_lo(m, signature="d->dd")[1]


@dataclass
class BodyTemplate:
    """Per-animal keypoint template in a body frame: ``shape`` (I, K, 3), ``spread`` (K,), ``size``.

    ``spread`` is the median distance of a keypoint from its template place
    over the aligned seed frames (world units), floored at 5 % of ``size``,
    the median distance of the template's keypoints from their centroid.
    """

    shape: FloatArray
    spread: FloatArray
    size: float

    @classmethod
    def learn(cls, points3d: FloatArray, iterations: int = 5) -> BodyTemplate:
        """Learn from seed poses ``points3d`` (S, I, K, 3) (NaN where unknown)."""
        S, I, K, _ = points3d.shape
        shape = np.full((I, K, 3), np.nan)
        resid = np.full((S, I, K), np.nan)
        for a in range(I):
            pts = points3d[:, a]
            n_ok = np.isfinite(pts).all(-1).sum(axis=1)
            if n_ok.max(initial=0) < 3:
                continue
            ref = pts[int(np.argmax(n_ok))].copy()
            for _ in range(iterations):
                r, t = kabsch(pts, np.broadcast_to(ref, pts.shape), np.ones((S, K)))
                aligned = np.einsum("sij,skj->ski", r, pts) + t[:, None]
                mean = _nanmean0(aligned)
                ref = np.where(np.isfinite(mean), mean, ref)
            shape[a] = ref
            resid[:, a] = np.linalg.norm(aligned - ref[None], axis=-1)
        # keypoints an animal never showed: borrow the mean of the other animals' places
        if np.isnan(shape).any() and np.isfinite(shape).any():
            centred = shape - np.nanmean(shape, axis=1, keepdims=True)
            fill = _nanmean0(centred)
            for a in range(I):
                miss = ~np.isfinite(shape[a]).all(-1)
                if miss.any() and np.isfinite(shape[a]).any():
                    shape[a, miss] = fill[miss] + np.nanmean(shape[a], axis=0)
        c = _nanmean0(np.swapaxes(shape, 0, 1))[:, None] if np.isfinite(shape).any() else np.zeros((I, 1, 3))
        d = np.linalg.norm(shape - c, axis=-1)
        size = float(np.nanmedian(d)) if np.isfinite(d).any() else 1.0
        flat = resid.reshape(-1, K)
        spread = np.array([np.median(col[np.isfinite(col)]) if np.isfinite(col).any() else np.nan for col in flat.T])
        spread = np.where(np.isfinite(spread), spread, 0.25 * size)
        spread = np.maximum(spread, 0.05 * size)
        return cls(shape, spread, size)

    def place(self, pose: FloatArray, weights: FloatArray | None = None) -> FloatArray:
        """The template of each animal fitted onto ``pose`` (I, K, 3) (NaN where unknown): (I, K, 3).

        Animals with fewer than 3 known keypoints get NaN.
        """
        w = np.ones(pose.shape[:2]) if weights is None else weights
        r, t = kabsch(self.shape, pose, w)
        return np.einsum("aij,akj->aki", r, self.shape) + t[:, None]


@dataclass
class Appearance:
    """Typical log intensity and log area of each keypoint's candidates per view: ``mu`` (V, K, 2), ``scale`` (2,).

    NaN entries carry no information (no appearance cost).
    """

    mu: FloatArray
    scale: FloatArray

    @classmethod
    def none(cls, n_views: int, n_keypoints: int) -> Appearance:
        return cls(np.full((n_views, n_keypoints, 2), np.nan), np.full(2, np.nan))


# --------------------------------------------------------------- tracker
@dataclass
class TrackerState:
    """Everything the frame loop carries from one frame to the next (saved between chunks).

    Attributes
    ----------
    position, velocity
        (I, K, 3) last estimate and velocity per frame (world units).
    age
        (I, K) frames since the keypoint was last triangulated.
    sigma, sigma_slow
        (K,) scale of the 3D prediction residual (world units), learned online
        with a short memory (about 10 frames) and a long one (about 100
        frames); the prediction uses the larger, so that a keypoint that sat
        still for a while is not lost the moment it moves.
    body
        (I, K, 3) each keypoint's place in its animal's body frame when last
        seen (starts as the seed template): an online template that follows
        the animal's current posture, used to place keypoints that are lost.
    bias
        (V, 2) median 2D offset of each camera's labels from the reprojection
        of the 3D points (px): a systematic calibration error; used to predict
        in views reported suspect.
    suspect
        (V,) cameras excluded from triangulation.
    cam_labels, cam_outliers
        (V,) labels checked against the other views and labels that disagreed,
        over the chunks processed so far.
    chain_seed, chain_len
        (I, K): whether the keypoint has been tracked without a break since
        the last seed frame, and for how many frames its current unbroken
        track has lasted (a track starts at a seed or where a lost keypoint
        is found again; wrong identities start at such re-acquisitions).
    rel_sigma
        (K,) residual scale (3D RMS, world units) of a keypoint's offsets to
        its template neighbours from one frame to the next (the shape
        context of :mod:`ethoscribe.pose.association`).
    rigid_seen, rigid_off
        (R,) decayed counts of confident frames in which each rigid pair of
        the :class:`~ethoscribe.pose.association.BodyStructure` was measured,
        and in which its distance was off; a pair found off too often is
        not rigid after all.
    order_seen, order_off
        (O,) the same for the front/back order pairs: confident frames that
        measured each pair, and those that showed it reversed.
    last_frame
        The frame processed last (-1 before the first).
    """

    position: FloatArray
    velocity: FloatArray
    age: NDArray[np.int64]
    sigma: FloatArray
    sigma_slow: FloatArray
    body: FloatArray
    bias: FloatArray
    suspect: NDArray[np.bool_]
    cam_labels: NDArray[np.int64]
    cam_outliers: NDArray[np.int64]
    chain_seed: NDArray[np.bool_]
    chain_len: NDArray[np.int64]
    rel_sigma: FloatArray
    rigid_seen: FloatArray
    rigid_off: FloatArray
    order_seen: FloatArray
    order_off: FloatArray
    last_frame: int = -1

    def copy(self) -> TrackerState:
        return TrackerState(**{f.name: (getattr(self, f.name).copy() if isinstance(getattr(self, f.name), np.ndarray)
                                        else getattr(self, f.name)) for f in fields(self)})

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> TrackerState:
        kw = {}
        for f in fields(cls):
            v = arrays[prefix + f.name]
            kw[f.name] = int(v) if f.name == "last_frame" else np.array(v)
        return cls(**kw)
