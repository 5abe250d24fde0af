"""Small, fast multi-view geometry for one frame at a time (the pose pipeline's inner loop).

The library functions in :mod:`ethoscribe.geometry.triangulate` are built for
many points per call (about 2 ms of fixed cost per call); the pose pipeline
triangulates a dozen points per frame several times, so this module keeps
the same estimates (pairwise RANSAC hypotheses scored by inlier count and
truncated error, then a homogeneous DLT over the inliers, refined once) with
the per-call overhead cut down: candidates are undistorted once per chunk
(:meth:`~ethoscribe.geometry.camera.CameraRig.undistort`), so a frame works
on normalised coordinates, and errors are measured in distorted pixels
through :meth:`~ethoscribe.geometry.camera.CameraRig.project`, exactly as
:func:`~ethoscribe.geometry.triangulate.reprojection_error` does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ethoscribe.geometry.camera import CameraRig
from ethoscribe.geometry.triangulate import solve_sym3
from ethoscribe.pose.model import _eigh_vectors, _einsum

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Triangulation:
    """Robust triangulation of P points: ``points3d`` (P, 3), ``inliers`` and ``errors`` (V, P), ``n_inliers`` (P,)."""

    points3d: FloatArray
    inliers: NDArray[np.bool_]
    errors: FloatArray
    n_inliers: NDArray[np.int64]

    @property
    def mean_inlier_error(self) -> FloatArray:
        """Mean reprojection error over inlier views (P,), NaN without inliers."""
        s = np.where(self.inliers, self.errors, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n_inliers > 0, s / np.maximum(self.n_inliers, 1), np.nan)


class FrameGeometry:
    """Per-frame robust triangulation and projection for a fixed rig.

    Examples
    --------
    >>> from ethoscribe.synth.cameras import arena_rig
    >>> rig = arena_rig(4, np.random.default_rng(0))
    >>> geo = FrameGeometry(rig)
    >>> X = np.array([[10.0, -20.0, 30.0]])
    >>> px = rig.project(X); px[1, 0] += 50          # view 1 is wrong
    >>> tri = geo.triangulate(rig.undistort(px), px, threshold=3.0)
    >>> tri.inliers[:, 0].tolist()
    [True, False, True, True]
    """

    def __init__(self, rig: CameraRig) -> None:
        self.rig = rig
        self.n_views = rig.n_cameras
        self.extr = rig.extrinsics()
        self.pairs = np.array(list(itertools.combinations(range(self.n_views), 2)), dtype=np.int64).reshape(-1, 2)
        # the distortion's coefficients and the intrinsics, (V, 1) each, for :meth:`project`
        self._k1, self._k2, self._p1, self._p2, self._k3 = (rig.dist[:, i, None] for i in range(5))
        m = rig.matrix
        self._fx, self._skew, self._cx, self._fy, self._cy = m[:, 0, 0, None], m[:, 0, 1, None], m[:, 0, 2, None], m[:, 1, 1, None], m[:, 1, 2, None]

    # ------------------------------------------------------------ projection
    def project(self, points: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Distorted pixels (V, ..., 2) and depths (V, ...) of world points (..., 3); NaN behind a camera.

        The same arithmetic as :meth:`~ethoscribe.geometry.camera.CameraRig.project` (bit for bit), with the
        per-call set-up of :meth:`~ethoscribe.geometry.camera.CameraRig.distort` done once: 66 -> 50 us for a
        frame's keypoints (the frame loop projects 3-4 times per frame).
        """
        p = np.asarray(points, dtype=np.float64)
        # CameraRig.to_camera, inline
        cam = _einsum("nij,pj->npi", self.rig.rotation, p.reshape(-1, 3)) + self.rig.tvec[:, None, :]
        cam = cam.reshape((self.rig.n_cameras,) + p.shape)
        z = cam[..., 2]
        V = cam.shape[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            front = (z > 1e-9).reshape(V, -1)
            x = np.where(front, cam[..., 0].reshape(V, -1) / z.reshape(V, -1), np.nan)
            y = np.where(front, cam[..., 1].reshape(V, -1) / z.reshape(V, -1), np.nan)
        k1, k2, p1, p2, k3 = self._k1, self._k2, self._p1, self._p2, self._k3
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        u = self._fx * xd + self._skew * yd + self._cx
        v = self._fy * yd + self._cy
        out = np.empty(u.shape + (2,))  # np.stack([u, v], axis=-1)
        out[..., 0] = u
        out[..., 1] = v
        return out.reshape(z.shape + (2,)), z

    def pixels_per_unit(self, depth: FloatArray) -> FloatArray:
        """Approximate pixels per world unit at ``depth`` (V, ...) in each view (focal / depth)."""
        f = 0.5 * (self.rig.matrix[:, 0, 0] + self.rig.matrix[:, 1, 1])
        f = f.reshape((-1,) + (1,) * (np.ndim(depth) - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(depth > 1e-9, f / depth, np.nan)

    # -------------------------------------------------------- triangulation
    def _gram(self, norm: FloatArray, valid: NDArray[np.bool_]) -> FloatArray:
        n = np.where(valid[..., None], norm, 0.0)
        rows = n[..., :, None] * self.extr[:, None, 2, None, :] - self.extr[:, None, :2, :]  # (V, P, 2, 4)
        return _einsum("vpki,vpkj->vpij", rows, rows)

    def dlt(self, gram: FloatArray, weights: FloatArray) -> FloatArray:
        """Weighted DLT from per-view normal matrices (V, P, 4, 4) and weights (V, P): (P, 3), NaN with < 2 views."""
        m = _einsum("vpij,vp->pij", gram, weights)
        out = np.full((m.shape[0], 3), np.nan)
        good = np.count_nonzero(weights > 0, axis=0) >= 2
        if good.any():
            vec = _eigh_vectors(m[good])
            v = vec[:, :, 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[good] = v[:, :3] / v[:, 3:4]
        return out

    def errors(self, points3d: FloatArray, px: FloatArray) -> FloatArray:
        """Reprojection errors (V, P) of points (P, 3) against distorted pixels (V, P, 2)."""
        proj, _ = self.project(points3d)
        d = proj - px
        return np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)

    def triangulate(
        self,
        norm: FloatArray,
        px: FloatArray,
        threshold: float,
        use_views: NDArray[np.bool_] | None = None,
        min_views: int = 2,
        prior: FloatArray | None = None,
        prior_radius: FloatArray | None = None,
    ) -> Triangulation:
        """RANSAC over camera pairs, DLT over the inliers, inliers updated once.

        Parameters
        ----------
        norm, px
            Normalised (undistorted) coordinates and distorted pixels of the
            labels, (V, P, 2); NaN marks a missing label.
        threshold
            Inlier threshold (px).
        use_views
            (V,) views allowed in hypotheses and fits (others only get
            errors): cameras reported suspect are left out here.
        min_views
            Fewest inliers for a point.
        prior, prior_radius
            Optional expected positions (P, 3) and radii (P,): hypotheses
            farther than the radius from the expected position are not
            considered (NaN: no constraint). Two views can always be made to
            agree by a wrong pair of points on an epipolar line; the motion
            prediction rules most such pairs out.
        """
        V, P = px.shape[:2]
        valid = np.isfinite(norm).all(axis=-1) & np.isfinite(px).all(axis=-1)
        fit_ok = valid if use_views is None else valid & np.asarray(use_views, bool)[:, None]
        out3 = np.full((P, 3), np.nan)
        err = np.full((V, P), np.nan)
        inl = np.zeros((V, P), bool)
        if P == 0 or len(self.pairs) == 0:
            return Triangulation(out3, inl, err, inl.sum(axis=0))
        gram = self._gram(norm, valid)
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        pair_ok = fit_ok[a] & fit_ok[b]  # (Q, P)
        if not pair_ok.any():
            return Triangulation(out3, inl, err, inl.sum(axis=0))
        hyp = solve_sym3(gram[a] + gram[b])  # (Q, P, 3)
        if prior is not None and prior_radius is not None:
            dist = np.linalg.norm(hyp - prior[None], axis=-1)
            with np.errstate(invalid="ignore"):
                far = dist > prior_radius[None, :]
            pair_ok = pair_ok & ~far
        hyp[~pair_ok] = np.nan
        e = self.errors(hyp.reshape(-1, 3), np.repeat(px[:, None], len(self.pairs), axis=1).reshape(V, -1, 2))
        e = e.reshape(V, len(self.pairs), P)
        with np.errstate(invalid="ignore"):
            is_in = (e < threshold) & fit_ok[:, None, :]
        n_in = is_in.sum(axis=0)  # (Q, P)
        trunc = np.where(is_in, e, threshold).sum(axis=0)
        score = np.where(pair_ok, n_in * (threshold * V + 1.0) - trunc, -np.inf)
        best = np.argmax(score, axis=0)
        cols = np.arange(P)
        cur = is_in[:, best, cols]  # (V, P)
        ok = pair_ok[best, cols] & (cur.sum(axis=0) >= min_views)
        w = np.where(ok[None, :], cur, False).astype(np.float64)
        x3 = self.dlt(gram, w)
        e3 = self.errors(x3, px)
        with np.errstate(invalid="ignore"):
            new = (e3 < threshold) & fit_ok
        changed = ok & np.any(new != cur, axis=0) & (new.sum(axis=0) >= min_views)
        if changed.any():
            w2 = np.where(changed[None, :], new, cur & ok[None, :]).astype(np.float64)
            x3 = self.dlt(gram, w2)
            e3 = self.errors(x3, px)
            cur = np.where(changed[None, :], new, cur)
        x3[~ok] = np.nan
        e3 = np.where(valid & ok[None, :], e3, np.nan)
        inl = cur & ok[None, :] & valid
        return Triangulation(x3, inl, e3, inl.sum(axis=0).astype(np.int64))


@dataclass(frozen=True, eq=False)
class MarkerPoints:
    """3D points found by matching candidates across views (:meth:`FrameGeometry.match_points`).

    ``points3d`` (N, 3); ``support`` (V, N) the candidate index (along M)
    each point uses in each view (-1: none); ``errors`` (V, N) px of those
    candidates; ``n_support`` (N,); ``projected`` (V, N, 2) the points'
    distorted pixels (:meth:`FrameGeometry.project`, kept because the points
    are projected again by every pass over the frame). A candidate belongs to at most one point
    seen in three or more views; two-view points may compete for candidates
    (all points compete with ``disjoint=False``).
    """

    points3d: FloatArray
    support: NDArray[np.int64]
    errors: FloatArray
    n_support: NDArray[np.int64]
    projected: FloatArray


def _skew(t: FloatArray) -> FloatArray:
    z = np.zeros(t.shape[:-1])
    return np.stack([z, -t[..., 2], t[..., 1], t[..., 2], z, -t[..., 0], -t[..., 1], t[..., 0], z], -1).reshape(t.shape[:-1] + (3, 3))


def _essential(rig: CameraRig, pairs: NDArray[np.int64]) -> FloatArray:
    """Essential matrices (Q, 3, 3) with ``x_b^T E x_a = 0`` for normalised coordinates of pairs (a, b)."""
    ra, rb = rig.rotation[pairs[:, 0]], rig.rotation[pairs[:, 1]]
    ta, tb = rig.tvec[pairs[:, 0]], rig.tvec[pairs[:, 1]]
    r = rb @ np.swapaxes(ra, -1, -2)
    t = tb - np.einsum("qij,qj->qi", r, ta)
    return _skew(t) @ r


def _disjoint_supports(rows: NDArray[np.int64], M: int) -> NDArray[np.int64]:
    """The hypotheses ``rows`` (V, J; candidate per view, -1 none; best first) made disjoint, as
    :meth:`FrameGeometry.match_points` describes: taken in order, each keeps only the candidates that no earlier
    hypothesis seen in three or more views took, and is dropped with fewer than two left; one with three or more
    left takes them.

    The same result as taking the rows one by one, without a Python step per row: all rows at once
    (:func:`_disjoint_fixed_point`), or, should that not settle, a row of three or more views none of whose
    candidates an earlier such row uses (a *clean* row) keeps them all and takes them, whatever happened before
    it; only the other rows of three or more views are taken one by one (no later clean row shares a candidate
    with them), and the two-view rows, which take nothing, lose the candidates taken before them. (A point three
    views agree on owns its candidates; a two-view point is ambiguous, any two spots on an epipolar line agree:
    competing two-view points are all kept, and the caller's association decides between them.)
    """
    V, J = rows.shape
    if J == 0:
        return rows
    has = rows >= 0
    nv = has.sum(axis=0)
    key = np.where(has, np.arange(V)[:, None] * (M + 1) + rows, 0)  # (view, candidate) as one index
    pos = np.broadcast_to(np.arange(J), rows.shape)
    big = nv >= 3
    fixed = _disjoint_fixed_point(has, nv, key, pos, big, J)
    if fixed is not None:
        taken, keep = fixed
        return np.where(taken, -1, rows)[:, keep]
    mb = has & big[None, :]
    first = np.full(V * (M + 1), J, np.int64)  # the first row of three or more views using each candidate
    np.minimum.at(first, key[mb], pos[mb])
    clean = big & (~has | (first[key] == pos)).all(axis=0)
    taken = np.full(V * (M + 1), J, np.int64)  # the row that took each candidate (J: none)
    cm = has & clean[None, :]
    taken[key[cm]] = pos[cm]
    out = rows.copy()
    keep = np.ones(J, bool)
    rest = np.flatnonzero(big & ~clean)
    if rest.size:
        tk = taken.tolist()
        sub = rest.tolist()
        vk = np.where(has[:, rest], key[:, rest] * V + np.arange(V)[:, None], -1).T.tolist()  # (key, view) packed
        dropped, cleared = [], []
        for r, row in zip(sub, vk):
            kept = [x for x in row if x >= 0 and tk[x // V] >= r]
            n = len(kept)
            if n < 2:
                dropped.append(r)
                continue
            if n >= 3:
                for x in kept:
                    tk[x // V] = r
            cleared.extend((x % V, r) for x in row if x >= 0 and tk[x // V] < r)
        if dropped:
            keep[dropped] = False
        if cleared:
            cv, cr = zip(*cleared)
            out[list(cv), list(cr)] = -1
        taken = np.asarray(tk, np.int64)
    small = ~big
    if small.any():
        lost = has & small[None, :] & (taken[key] < pos)
        out = np.where(lost, -1, out)
        keep &= ~(small & ((nv - lost.sum(axis=0)) < 2))
    return out[:, keep]


def _disjoint_fixed_point(has: NDArray[np.bool_], nv: NDArray[np.int64], key: NDArray[np.int64],
                          pos: NDArray[np.int64], big: NDArray[np.bool_], J: int, max_rounds: int = 8
                          ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]] | None:
    """:func:`_disjoint_supports` solved for all rows at once: (taken (V, J): candidates an earlier row took,
    keep (J,): rows kept), or None if not settled within ``max_rounds``.

    Guess which rows (of three or more views) take their candidates, T (first: all of them); a candidate is taken
    before row r when a row of T before r uses it (the first such row keeps it, so takes it); a row then takes
    when three or more of its candidates are left. The guess is revised until it reproduces itself: such a T is
    the one-by-one result (row r depends only on the rows before it, so by induction each row agrees), and a
    revision settles at least one more leading row each time (in practice one to three rounds).
    """
    kf, pf = key[has], pos[has]  # every (candidate, row) use
    n_keys = int(key.max(initial=0)) + 1
    T = big
    for _ in range(max_rounds):
        first_t = np.full(n_keys, J, np.int64)
        m = T[pf]
        np.minimum.at(first_t, kf[m], pf[m])  # the first row of T using each candidate
        taken_f = first_t[kf] < pf
        kept = nv - np.bincount(pf[taken_f], minlength=J)
        T_new = big & (kept >= 3)
        if np.array_equal(T_new, T):
            taken = np.zeros(has.shape, bool)
            taken[has] = taken_f
            return taken, kept >= 2
        T = T_new
    return None


def _match_points(self: FrameGeometry, norm: FloatArray, px: FloatArray, usable: NDArray[np.bool_],
                  threshold: float, disjoint: bool = True) -> MarkerPoints:
    """3D points seen by at least two views, from every pair of usable candidates that fits the epipolar geometry.

    1. every pair of candidates of two views whose epipolar distance (in
       either view, px) is below twice the threshold is triangulated;
    2. each such hypothesis is projected into every view; a view *supports*
       it when a usable candidate lies within ``threshold`` of the projection
       (both generating views must support it);
    3. hypotheses with the same supporting candidates are merged; with
       ``disjoint`` they are then taken best first (most supporting views,
       then the smallest summed error), each keeping only candidates no
       earlier point seen in three or more views took, while at least two
       remain (two-view points may share candidates: any two spots on an
       epipolar line agree, so the caller decides between them); otherwise every
       distinct hypothesis is returned (competing ones share candidates, and
       the caller decides); the points are re-triangulated (DLT) from their
       supporting candidates.
    """
    V, M = usable.shape
    empty = MarkerPoints(np.zeros((0, 3)), np.zeros((V, 0), np.int64), np.zeros((V, 0)), np.zeros(0, np.int64),
                         np.zeros((V, 0, 2)))
    if not hasattr(self, "_ess"):
        self._ess = _essential(self.rig, self.pairs)
        self._focal = 0.5 * (self.rig.matrix[:, 0, 0] + self.rig.matrix[:, 1, 1])
    ok = usable & np.isfinite(norm).all(-1)
    if len(self.pairs) == 0 or ok.sum() < 2:
        return empty
    h = np.concatenate([np.where(ok[..., None], norm, 0.0), np.ones((V, M, 1))], axis=-1)  # V, M, 3
    a, b = self.pairs[:, 0], self.pairs[:, 1]
    la = _einsum("qij,qmj->qmi", self._ess, h[a])  # lines in b of points of a: (Q, Ma, 3)
    lb = _einsum("qji,qnj->qni", self._ess, h[b])  # lines in a of points of b: (Q, Mb, 3)
    num = np.abs(_einsum("qni,qmi->qmn", h[b], la))  # (Q, Ma, Mb)
    with np.errstate(invalid="ignore", divide="ignore"):
        db = num / np.linalg.norm(la[..., :2], axis=-1)[:, :, None] * self._focal[b][:, None, None]
        da = num / np.linalg.norm(lb[..., :2], axis=-1)[:, None, :] * self._focal[a][:, None, None]
    keep = (np.maximum(da, db) < 2 * threshold) & ok[a][:, :, None] & ok[b][:, None, :]
    q, i, j = np.nonzero(keep)
    if q.size == 0:
        return empty
    valid = ok.copy()
    gram = self._gram(norm, valid)  # V, M, 4, 4
    hyp = solve_sym3(gram[a[q], i] + gram[b[q], j])  # N, 3
    proj, _ = self.project(hyp)  # V, N, 2
    d2 = proj[:, :, None, 0] - px[:, None, :, 0]  # V, N, M: dx dx + dy dy (in place), inf for unusable candidates
    np.multiply(d2, d2, out=d2)
    dy = proj[:, :, None, 1] - px[:, None, :, 1]
    np.multiply(dy, dy, out=dy)
    np.add(d2, dy, out=d2)
    np.copyto(d2, np.inf, where=~ok[:, None, :])
    near = np.argmin(d2, axis=2)  # V, N
    n_idx = np.arange(q.size)
    with np.errstate(invalid="ignore"):
        dn = np.sqrt(d2[np.arange(V)[:, None], n_idx[None, :], near])
        sup = dn < threshold
    gen_ok = sup[a[q], n_idx] & sup[b[q], n_idx] & (near[a[q], n_idx] == i) & (near[b[q], n_idx] == j)
    n_sup = sup.sum(axis=0)
    cand = np.flatnonzero(gen_ok & (n_sup >= 2))
    if cand.size == 0:
        return empty
    trunc = np.where(sup, dn, threshold).sum(axis=0)
    order = cand[np.lexsort((trunc[cand], -n_sup[cand]))]
    # the same marker is found from several camera pairs: keep the best hypothesis per support signature
    sig = np.where(sup[:, order], near[:, order], -1) + 1  # V, N'
    if V * np.log(M + 1) < 62 * np.log(2):
        key = (sig * ((M + 1) ** np.arange(V, dtype=np.int64))[:, None]).sum(axis=0)
        _, first = np.unique(key, return_index=True)
    else:
        _, first = np.unique(sig.T, axis=0, return_index=True)
    order = order[np.sort(first)]
    vv = np.arange(V)
    rows = np.where(sup[:, order], near[:, order], -1)  # V, J: per hypothesis, its candidate per view
    if disjoint:
        rows = _disjoint_supports(rows, M)
    if rows.shape[1] == 0:
        return empty
    support = np.ascontiguousarray(rows.T).T  # V, J (the layout a (J, V) list of rows gave)
    w = (support >= 0).astype(float)
    idx = np.maximum(support, 0)
    g = gram[vv[:, None], idx]  # V, J, 4, 4
    X = self.dlt(g, w)
    sel_px = np.where((support >= 0)[..., None], px[vv[:, None], idx], np.nan)
    proj, _ = self.project(X)
    d = proj - sel_px
    err = np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)
    return MarkerPoints(X, support, err, (support >= 0).sum(axis=0).astype(np.int64), proj)


FrameGeometry.match_points = _match_points  # type: ignore[attr-defined]

