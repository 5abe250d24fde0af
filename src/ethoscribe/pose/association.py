"""Stage 4's association of keypoints (all animals) with 3D marker hypotheses: costs, body model, repair.

Identity is decided in 3D, where markers are far better separated than in any
single view. Every keypoint of every animal is scored against every 3D
hypothesis of the frame (a point that two or more views agree on, see
:meth:`~ethoscribe.pose.geometry.FrameGeometry.match_points`); the costs are
squared standard scores (mean about 1 for the right hypothesis) so that they
add up like negative log-likelihoods (:func:`association_cost`):

- **motion**: distance from the keypoint's constant-velocity prediction (after
  :func:`group_shift`, the coherent motion of its neighbourhood: an abrupt
  start or stop moves a body part at once), in units of its learned residual
  scale; ``z^2`` within ``gate`` standard deviations, growing at a quarter
  of the rate beyond, where the hypothesis is admissible only when the body
  model vouches for it and it lies within the keypoint's *reach* (which
  grows while the keypoint is lost: it may have moved with the posture);
- **shape context** (:class:`BodyPrior`, :func:`shape_context`): the
  keypoint's template neighbours sit at offsets from it that change slowly
  (the online template, rotated by the body's current orientation); for
  keypoint ``k`` on hypothesis ``h``, each neighbour should have *some*
  hypothesis at ``Y_h - R (B_k - B_j)``. It needs no identities, so it
  separates markers a few millimetres apart that move together;
- **rigid context** (:class:`BodyStructure`, :func:`rigid_context`): for
  keypoint pairs whose distance is constant (on the seeds, confirmed while
  tracking), some hypothesis should lie at that distance;
- **support**: per supporting view, and the measured chance that a
  hypothesis with that many views is a real marker
  (:func:`support_costs`); the reasoner's choice and a pose model's names
  (:func:`semantic_cost`);
- **envelope**: a hypothesis farther from the animal's centre than the
  keypoint can be is not admissible (it belongs to something else).

The Hungarian assignment (all animals together, "none" allowed) is then
checked against what does not depend on the tracking history
(:func:`structure_energy`: rigid distances, left/right order of the
symmetric pairs, front/back order along the body), and :func:`repair`
renames tracks or reassigns keypoints where that structure is violated: a
left paw is left of the right one whatever the speed, and an identity that
went wrong is put back instead of being carried on by the motion model;
:func:`exchange_back` exchanges two tracks that each sit on the other's place
in the body (a paw and a back marker, which the structure's rules may not
see). The same body settles, after tracking, which of the two passes to keep
where they disagree (:func:`pass_preference`).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: weights of the association cost (squared standard scores)
AGREE_BONUS = 0.25    # per view where the reasoner chose the point's candidate
SUPPORT_BONUS = 0.5   # per supporting view beyond two
SHAPE_WEIGHT = 1.0
SHAPE_CAP = 9.0       # a neighbour with no hypothesis where expected (3 sigma)
#: switches of the steps (all on; for ablations and diagnostics)
REPAIR = True           # the history-free structure repair (:func:`repair`)
LABEL_REFINE = True     # the per-view 2D label assignment of the associated points (stages._refine_labels)
KEEP_UNVERIFIED = True  # a keypoint without a 3D point keeps the reasoner's (unverified, single-view) labels
ADMIT_FAR = True        # a hypothesis the body model vouches for may lie beyond the motion gate (up to the reach)
CONFIDENT_MARGIN = 4.0  # an association this much cheaper than any alternative is unambiguous
AMBIGUOUS_RATIO = 3.0   # ... when another keypoint's expected place is within this many times the point's distance
TEMPLATE_WEIGHT = 0.25  # seed template placed on the prediction: a weak pull, for keypoints without neighbours' help


@dataclass(frozen=True)
class BodyPrior:
    """The online body model of each animal in this frame (I animals, K keypoints, J neighbours).

    Attributes
    ----------
    rotation, translation
        (I, 3, 3) and (I, 3): the online template's frame in the world
        (``world = R @ body + t``), fitted to the predicted pose; NaN when
        unknown.
    body
        (I, K, 3) each keypoint's place in its animal's body frame (the online
        template: the current posture).
    neighbours
        (K, J) the keypoints whose markers are expected at fixed offsets.
    rel_sigma
        (K,) residual scale (3D RMS, world units) of the offsets.
    available
        (I, K) neighbours expected to show a marker (tracked in the previous frame).
    """

    rotation: FloatArray
    translation: FloatArray
    body: FloatArray
    neighbours: NDArray[np.int64]
    rel_sigma: FloatArray
    available: NDArray[np.bool_]


def template_neighbours(template: FloatArray, n: int = 3) -> NDArray[np.int64]:
    """(K, n) the ``n`` nearest keypoints of each keypoint in the seed template (I, K, 3), over all animals."""
    from ethoscribe.pose.model import _nanmean0

    d = _nanmean0(np.linalg.norm(template[:, :, None] - template[:, None], axis=-1))  # K, K (frame-free)
    K = d.shape[0]
    n = max(0, min(n, K - 1))
    d = np.where(np.isfinite(d), d, np.inf)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :n].astype(np.int64)


def lateral_axis(template: FloatArray, pairs: tuple[tuple[int, int], ...]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Left-right axes (I, 3), side of each keypoint (K,) and midline centres (I, 3) of a seed template (I, K, 3).

    Each animal's template is in its own frame: its axis is the mean of
    ``first - second`` over the symmetric pairs, and the first keypoint of
    a pair is on the positive side (+1), the second on the negative (-1).
    NaN axes where an animal has no usable pair.
    """
    I, K, _ = template.shape
    side = np.zeros(K)
    axes = np.full((I, 3), np.nan)
    centres = np.full((I, 3), np.nan)
    if not pairs:
        return axes, side, centres
    for a, b in pairs:
        side[a], side[b] = 1.0, -1.0
    for i in range(I):
        diffs = np.array([template[i, a] - template[i, b] for a, b in pairs])
        ok = np.isfinite(diffs).all(-1)
        if not ok.any():
            continue
        axis = diffs[ok].sum(axis=0)
        norm = float(np.linalg.norm(axis))
        if norm <= 0:
            continue
        axes[i] = axis / norm
        mids = np.array([0.5 * (template[i, a] + template[i, b]) for a, b in pairs])[ok]
        centres[i] = mids.mean(axis=0)
    return axes, side, centres


def shape_context(Y: FloatArray, body: BodyPrior) -> FloatArray:
    """(I, K, N) mean truncated squared standard score of the neighbours' markers, per keypoint and hypothesis.

    NaN where the animal's frame or every neighbour is unknown (no evidence).
    """
    I, K, _ = body.body.shape
    N = Y.shape[0]
    nb = body.neighbours
    J = nb.shape[1]
    out = np.full((I, K, N), np.nan)
    if J == 0 or N < 2:
        return out
    off_b = body.body[:, :, None, :] - body.body[:, nb, :]  # I, K, J, 3 (body frame)
    off = np.einsum("aij,akmj->akmi", body.rotation, off_b)  # I, K, J, 3 (world)
    exp = Y[None, None, None, :, :] - off[:, :, :, None, :]  # I, K, J, N, 3: where neighbour j should be
    dmin = _nearest_other_d2(exp, Y)  # I, K, J, N
    s2 = np.maximum(body.rel_sigma, 1e-9)[None, :, None, None] ** 2
    z2 = np.minimum(dmin / s2, SHAPE_CAP)
    w = body.available[:, nb][..., None] & np.isfinite(off).all(-1)[..., None]  # I, K, J, 1
    w = np.broadcast_to(w, z2.shape)
    z2 = np.where(np.isfinite(z2), z2, SHAPE_CAP)
    n = w.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(n > 0, np.where(w, z2, 0.0).sum(axis=2) / np.maximum(n, 1), np.nan)
    return out


def _nearest_other_d2(exp: FloatArray, Y: FloatArray) -> FloatArray:
    """(I, K, J, N) squared distance from each expected neighbour place ``exp`` (I, K, J, N, 3) (for hypothesis n)
    to the nearest hypothesis of ``Y`` (N, 3) other than n (:func:`_min_d2`)."""
    I, K, J, N, _ = exp.shape
    return _min_d2(exp.reshape(-1, 3), Y, np.tile(np.arange(N), I * K * J)).reshape(I, K, J, N)


def _min_d2(places: FloatArray, Y: FloatArray, own: NDArray[np.int64] | None = None) -> FloatArray:
    """(Q,) squared distance from each of ``places`` (Q, 3) to the nearest of the points ``Y`` (N, 3), per
    coordinate: ``(dx dx + dy dy) + dz dz``; ``own`` (Q,): a point not to count for each place (the place's
    own hypothesis).

    The places are laid along the last axis (N, Q): every operation then runs over one long contiguous axis
    (1.3-1.6x faster than (Q, N) with its short rows); ``Y - place`` squares to the same values as
    ``place - Y``, and the minimum is the same in any order.
    """
    ex = np.ascontiguousarray(places.T)  # 3, Q
    d2 = Y[:, 0, None] - ex[0]  # N, Q
    np.multiply(d2, d2, out=d2)
    tmp = Y[:, 1, None] - ex[1]
    np.multiply(tmp, tmp, out=tmp)
    np.add(d2, tmp, out=d2)
    np.subtract(Y[:, 2, None], ex[2], out=tmp)
    np.multiply(tmp, tmp, out=tmp)
    np.add(d2, tmp, out=d2)
    if own is not None:
        d2[own, np.arange(ex.shape[1])] = np.inf
    return np.minimum.reduce(d2, axis=0)


def association_cost(ctx, reasoner: NDArray[np.int64], pts, prior, body: BodyPrior | None,  # type: ignore[no-untyped-def]
                     gate2: float, structure: BodyStructure | None = None,
                     shape: FloatArray | None = None) -> FloatArray:
    """(P, N) cost of each keypoint (P = I*K, animal-major) on each hypothesis; inf where not admissible.

    ``reasoner`` (V, P) the reasoner's candidate per view and keypoint;
    ``pts`` the frame's :class:`~ethoscribe.pose.geometry.MarkerPoints`;
    ``prior`` a :class:`~ethoscribe.pose.stages.Prior` or None (then only
    the support and the reasoner's agreement count); ``shape`` the
    :func:`shape_context` (P, N) if already computed (from ``body``).
    """
    V, I, K, _ = ctx.shape
    P = I * K
    Y = pts.points3d
    N = Y.shape[0]
    cost = np.zeros((P, N))
    admissible = np.ones((P, N), bool)
    shape_ok = np.zeros((P, N), bool)
    if body is not None:
        sc = shape_context(Y, body).reshape(P, N) if shape is None else shape
        has = np.isfinite(sc)
        cost += SHAPE_WEIGHT * np.where(has, sc, 0.0)
        shape_ok = has & (sc <= 2.0)
    if structure is not None:
        rc = rigid_context(Y, structure, I, K).reshape(P, N)
        has_r = np.isfinite(rc)
        if RIGID_WEIGHT:
            cost += RIGID_WEIGHT * np.where(has_r, rc, 0.0)
        shape_ok = (shape_ok & ~(has_r & (rc > 4.0))) | (has_r & (rc <= 1.0))
    if prior is not None:
        d = np.linalg.norm(Y[None] - prior.position[:, None], axis=-1)
        known = (np.isfinite(prior.position).all(-1) & np.isfinite(prior.sigma))[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            z2 = (d / prior.sigma[:, None]) ** 2
        z2 = np.where(known, z2, 0.0)
        near = z2 <= gate2
        cost += np.where(near, z2, np.minimum(gate2 + 0.25 * (z2 - gate2), 2.0 * gate2))
        reach = prior.reach if getattr(prior, "reach", None) is not None else 2.0 * np.sqrt(gate2) * prior.sigma
        far_ok = d <= np.where(np.isfinite(reach), reach, 0.0)[:, None]
        admissible &= near | (ADMIT_FAR & shape_ok & far_ok) | ~known
        centre, extent = getattr(prior, "centre", None), getattr(prior, "extent", None)
        if centre is not None and extent is not None:
            dc = np.linalg.norm(Y[None] - centre[:, None], axis=-1)
            with np.errstate(invalid="ignore"):
                admissible &= ~(dc > extent[:, None])
        if TEMPLATE_WEIGHT > 0:
            dt = np.linalg.norm(Y[None] - prior.template[:, None], axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                t2 = (dt / prior.template_sigma[:, None]) ** 2
            cost += TEMPLATE_WEIGHT * np.where(np.isfinite(t2), np.minimum(t2, gate2), 0.0)
    cost += semantic_cost(ctx, reasoner, pts)
    cost -= SUPPORT_BONUS * (pts.n_support[None, :] - 2)
    sc_n = getattr(prior, "support_cost", None) if prior is not None else None
    if sc_n is not None and len(sc_n):
        cost += np.asarray(sc_n)[np.clip(pts.n_support, 0, len(sc_n) - 1)][None, :]
    return np.where(admissible & np.isfinite(cost), cost, np.inf)


def semantic_cost(ctx, reasoner: NDArray[np.int64], pts) -> FloatArray:  # type: ignore[no-untyped-def]
    """(P, N) the label-specific evidence: the reasoner's choice (``-AGREE_BONUS`` per view) and a pose
    model's keypoint and individual names (``ctx.hint_costs`` and ``ctx.hint_individual_costs`` per supporting view)."""
    V, I, K, _ = ctx.shape
    agree_n = ((reasoner[:, :, None] == pts.support[:, None, :]) & (reasoner[:, :, None] >= 0)).sum(axis=0)
    cost = -AGREE_BONUS * agree_n.astype(float)
    if (ctx.hint_keypoint >= 0).any():  # predictions: the model's names are soft evidence here too
        vv_ = np.arange(V)[:, None]
        sup_ok = pts.support >= 0
        hk = np.where(sup_ok, ctx.hint_keypoint[vv_, np.maximum(pts.support, 0)], -1)  # V, N
        hi = np.where(sup_ok, ctx.hint_individual[vv_, np.maximum(pts.support, 0)], -1)
        kk = np.tile(np.arange(K), I)[:, None, None]
        ii = np.repeat(np.arange(I), K)[:, None, None]
        named = hk[None] >= 0
        yes, no = ctx.hint_costs
        cost = cost + np.where(named, np.where(hk[None] == kk, yes, no), 0.0).sum(axis=1)
        if I > 1:
            yes, no = ctx.hint_individual_costs
            cost = cost + np.where(hi[None] >= 0, np.where(hi[None] == ii, yes, no), 0.0).sum(axis=1)
    return cost


def association_margin(cost: FloatArray, matched: NDArray[np.int64], none_cost: float,
                       Y: FloatArray | None = None, same: float = 0.0) -> FloatArray:
    """(P,) how much cheaper each keypoint's chosen hypothesis is than its best alternative (another marker, or none).

    Hypotheses within ``same`` (world units) of the chosen one are the same
    marker seen with another set of views, not an alternative. NaN for
    keypoints without a hypothesis.
    """
    P, N = cost.shape
    out = np.full(P, np.nan)
    rows = np.flatnonzero(matched >= 0)
    if rows.size == 0:
        return out
    c = cost[rows].copy()
    chosen = c[np.arange(rows.size), matched[rows]]
    c[np.arange(rows.size), matched[rows]] = np.inf
    if Y is not None and same > 0 and N > 1:
        near = np.linalg.norm(Y[matched[rows]][:, None, :] - Y[None, :, :], axis=-1) <= same
        c = np.where(near, np.inf, c)
    alt = np.minimum(c.min(axis=1) if N > 1 else np.full(rows.size, np.inf), none_cost)
    out[rows] = alt - chosen
    return out


def confident_points(matched: NDArray[np.int64], margin: FloatArray, n_support: NDArray[np.int64],
                     n_usable: int) -> NDArray[np.bool_]:
    """(P,) keypoints whose hypothesis is unambiguous (``margin >= CONFIDENT_MARGIN``) and seen by
    at least ``min(3, n_usable)`` views."""
    need = max(2, min(3, n_usable))
    with np.errstate(invalid="ignore"):
        ok = (matched >= 0) & (margin >= CONFIDENT_MARGIN)
    sup = np.where(matched >= 0, n_support[np.maximum(matched, 0)] if n_support.size else 0, 0)
    return ok & (sup >= need)


# ------------------------------------------------------------------ history-free body structure
STRUCT_CAP = 16.0     # a violated constraint costs at most this (4 sigma)
STRUCT_WEIGHT = 1.0
RIGID_WEIGHT = 0.0    # identity-free rigid-distance context in the association cost
FIT_ROBUST_C = 2.0    # a robust body-frame fit (_fit_frames) downweights keypoints by their residual: Cauchy scale
FIT_ROBUST_ITERATIONS = 2  # ... in template spreads, and reweighting rounds


@dataclass(frozen=True)
class BodyStructure:
    """What does not depend on the tracking history: rigid distances and left/right order (I animals).

    Attributes
    ----------
    rigid
        (R, 2) keypoint pairs whose distance was the same on every seed frame
        (within the noise) and has stayed so while tracking (``active``).
    rigid_dist
        (I, R) the seed distance of each pair per animal (world units).
    rigid_sd
        (R,) its tolerance (world units): the seed spread, floored at the 3D
        noise of a distance.
    active
        (R,) pairs still considered rigid (a pair that the tracked frames
        show to vary is dropped, see :func:`rigid_pairs`).
    pairs, lateral, side_scale
        Left/right keypoint index pairs (first of a pair on the positive
        side), each animal's left-right axis in its seed template's frame
        (I, 3), and the distance (world units) on the wrong side of its
        partner that costs 1.
    seed_shape, seed_weight
        (I, K, 3) the seed template and (K,) the weight of each keypoint when
        it is fitted to a frame's points (1 / seed spread^2: the steadier
        keypoints fix the body's orientation).
    order, forward, order_scale
        (O, 2) keypoint pairs (front, back) ordered along the body's long axis
        on every seed by a wide margin (:func:`order_pairs`), the long axis
        (I, 3) in the seed template's frame, and the distance in reverse order
        that costs 1.
    order_active
        (O,) order pairs still considered ordered (None: all). Three seeds can
        show two keypoints in the same order by chance (the front paws in
        mid-stride); the tracker drops a pair that the tracked frames show
        reversed (:func:`order_reversed`), as it drops rigid pairs that vary.
    """

    rigid: NDArray[np.int64]
    rigid_dist: FloatArray
    rigid_sd: FloatArray
    active: NDArray[np.bool_]
    pairs: tuple[tuple[int, int], ...]
    lateral: FloatArray
    seed_shape: FloatArray
    seed_weight: FloatArray
    side_scale: float
    order: NDArray[np.int64] | None = None
    forward: FloatArray | None = None
    order_scale: float = float("nan")
    order_active: NDArray[np.bool_] | None = None


def order_reversed(Y: FloatArray, st: BodyStructure) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Which order pairs poses Y (I, K, 3) (NaN unknown) measure, and which of those they show reversed: (I, O) each.

    The body's long axis comes from the seed template fitted to the pose
    (all order pairs, active or not, are judged).
    """
    I = Y.shape[0]
    O = 0 if st.order is None else len(st.order)
    if O == 0 or st.forward is None:
        return np.zeros((I, O), bool), np.zeros((I, O), bool)
    rotation = _fit_frames(Y[None], st)[0][0]
    fw = np.einsum("aij,aj->ai", rotation, st.forward)
    d = np.einsum("aoi,ai->ao", Y[:, st.order[:, 0], :] - Y[:, st.order[:, 1], :], fw)
    seen = np.isfinite(d)
    return seen, seen & (d < 0)


def order_pairs(seed_xyz: FloatArray, template: FloatArray, size: float,
                min_fraction: float = 0.5) -> tuple[NDArray[np.int64], FloatArray]:
    """Keypoint pairs whose order along the body's long axis was the same, by a wide margin, on every seed.

    The long axis of each animal is its seed template's first principal
    axis, pointing the same way along the body for every animal (the first
    animal's direction: the sign of a principal axis is arbitrary, and
    animals whose axes pointed opposite ways would agree on no pair). A
    pair (j, k) is kept, j in front, when on every seed frame
    (aligned to the template) j lies ahead of k by more than
    ``min_fraction`` of the animal's size: far enough apart along the body
    that no posture reverses them (front and hind paws, head and tail), not
    a pair that only happened to be ordered on the seeds (a paw and an ear).
    Returns pairs (O, 2) and the axes (I, 3) in the template frame.
    """
    from ethoscribe.pose.model import kabsch

    S, I, K, _ = seed_xyz.shape
    axes = np.full((I, 3), np.nan)
    offs = np.full((S, I, K), np.nan)
    ref: FloatArray | None = None  # the first animal's keypoints along its axis (centred)
    for a in range(I):
        tpl = template[a]
        ok = np.isfinite(tpl).all(-1)
        if ok.sum() < 3:
            continue
        c = tpl[ok] - tpl[ok].mean(axis=0)
        _, _, vt = np.linalg.svd(c, full_matrices=False)
        along = np.full(K, np.nan)
        along[ok] = c @ vt[0]
        if ref is None:
            ref = along
        elif np.nansum(along * ref) < 0:
            vt[0], along = -vt[0], -along
        axes[a] = vt[0]
        r, t = kabsch(np.broadcast_to(tpl, (S, K, 3)), seed_xyz[:, a], np.isfinite(seed_xyz[:, a]).all(-1).astype(float))
        local = np.einsum("sji,skj->ski", r, seed_xyz[:, a] - t[:, None])  # seeds in the template frame
        offs[:, a] = local @ axes[a]
    d = offs[:, :, :, None] - offs[:, :, None, :]  # S, I, K, K: j ahead of k by d
    with np.errstate(invalid="ignore"):
        ahead = np.where(np.isfinite(d), d > min_fraction * size, True).all(axis=(0, 1)) & np.isfinite(d).any(axis=(0, 1))
    jj, kk = np.nonzero(ahead)
    return np.stack([jj, kk], axis=1).astype(np.int64), axes


def rigid_pairs(seed_xyz: FloatArray, noise: float, rel_tol: float = 0.01,
                max_fraction: float = 0.5) -> tuple[NDArray[np.int64], FloatArray, FloatArray]:
    """Keypoint pairs at a constant distance over the seed frames (S, I, K, 3).

    A pair is rigid when the RMS deviation of its distance from the
    per-animal mean over the seeds is at most ``max(noise, rel_tol x
    distance)`` (``noise`` the 3D noise of a distance), it was measured on
    at least two seed frames, and it is shorter than ``max_fraction`` of the
    largest seed distance (long chains are not rigid even when the seeds
    happen to agree). Returns pairs (R, 2), per-animal distances (I, R) and
    tolerances (R,). Three seeds can make a pair look rigid by chance; the
    tracker drops pairs that turn out to vary (:func:`update_rigid`).
    """
    S, I, K, _ = seed_xyz.shape
    D = np.linalg.norm(seed_xyz[:, :, :, None] - seed_xyz[:, :, None], axis=-1)  # S, I, K, K
    ok = np.isfinite(D)
    n = ok.sum(axis=0)  # I, K, K
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(ok, D, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)  # I, K, K
        dev2 = np.where(ok, (D - mean[None]) ** 2, 0.0).sum(axis=(0, 1))
        cnt = n.sum(axis=0)
        sd = np.sqrt(np.where(cnt > I, dev2 / np.maximum(cnt - I, 1), np.nan))  # K, K (per-animal means removed)
        okm = np.isfinite(mean)
        d_all = np.where(okm.any(axis=0), np.where(okm, mean, 0.0).sum(axis=0) / np.maximum(okm.sum(axis=0), 1), np.nan)
    longest = float(np.nanmax(d_all)) if np.isfinite(d_all).any() else 0.0
    tol = np.maximum(noise, rel_tol * d_all)
    jj, kk = np.triu_indices(K, 1)
    with np.errstate(invalid="ignore"):
        keep = (sd[jj, kk] <= tol[jj, kk]) & (n[:, jj, kk].min(axis=0) >= 2) & (d_all[jj, kk] <= max_fraction * longest)
    jj, kk = jj[keep], kk[keep]
    pairs = np.stack([jj, kk], axis=1).astype(np.int64) if keep.any() else np.zeros((0, 2), np.int64)
    dist = mean[:, jj, kk] if keep.any() else np.zeros((I, 0))
    # an animal without the pair on its seeds borrows the others' mean
    if dist.size:
        okd = np.isfinite(dist)
        fill = np.where(okd, dist, 0.0).sum(axis=0, keepdims=True) / np.maximum(okd.sum(axis=0, keepdims=True), 1)
        dist = np.where(okd, dist, fill)
    spread = np.maximum(np.nan_to_num(sd[jj, kk]), noise) if keep.any() else np.zeros(0)
    return pairs, dist, spread


def rigid_triangles(st: BodyStructure) -> NDArray[np.int64]:
    """(R, 3) for each rigid pair, the indices of three rigid pairs that close a triangle with it (the pair itself
    first), -1 where the pair is in no triangle of seed-rigid pairs."""
    R = st.rigid.shape[0]
    out = np.full((R, 3), -1, np.int64)
    index = {(int(j), int(k)): r for r, (j, k) in enumerate(st.rigid)}
    index.update({(k, j): r for (j, k), r in list(index.items())})
    ends = {int(x) for x in st.rigid.reshape(-1)}
    for r, (j, k) in enumerate(st.rigid):
        for m in sorted(ends - {int(j), int(k)}):
            if (int(j), m) in index and (int(k), m) in index:
                out[r] = (r, index[(int(j), m)], index[(int(k), m)])
                break
    return out


def rigid_measured(Y: FloatArray, st: BodyStructure, triangles: NDArray[np.int64] | None = None
                   ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Which rigid pairs poses Y (I, K, 3) (NaN unknown) measure, and which of those they show off (beyond three
    tolerances): (I, R) each.

    A pair off by its names but in a triangle of seed-rigid pairs (``triangles``, :func:`rigid_triangles`) whose
    shape is intact (its three distances, sorted, against the seed's sorted) is not counted off: a rigid group
    whose names are wrong (two ears exchanged, an ear on the front back marker and the other way round) still
    has its shape; a group that bends (the back in a rear) has not. Counted by names, every frame of a wrong
    identity would count against the pair's rigidity, until the pair is given up and can no longer put the
    identity right.
    """
    a_, b_ = st.rigid[:, 0], st.rigid[:, 1]
    ok = ~np.isnan(Y).any(-1)
    both = ok[:, a_] & ok[:, b_]  # I, R
    dv = Y[:, a_] - Y[:, b_]
    d = np.sqrt(np.einsum("irj,irj->ir", dv, dv))
    with np.errstate(invalid="ignore"):
        off = both & (np.abs(d - st.rigid_dist) > 3.0 * st.rigid_sd)
    if triangles is not None and off.any():
        tri = np.flatnonzero(triangles[:, 0] >= 0)
        tri = tri[off[:, tri].any(axis=0)]
        if tri.size:
            idx = triangles[tri]  # T, 3
            meas = np.sort(d[:, idx], axis=-1)  # I, T, 3
            seed = np.sort(st.rigid_dist[:, idx], axis=-1)
            tol = 3.0 * st.rigid_sd[idx].max(axis=-1)  # T
            full = both[:, idx].all(axis=-1)
            with np.errstate(invalid="ignore"):
                bad = (np.abs(meas - seed) > tol[None, :, None]).any(axis=-1)
            off[:, tri] &= ~(full & ~bad)  # off by name, in shape: a relabelled group, not a bent one
    return both, off


def _rigid_z2(Y: FloatArray, st: BodyStructure) -> FloatArray:
    """(..., I, R) squared standard scores of the rigid pairs' distances in poses Y (..., I, K, 3) (NaN unknown)."""
    if st.rigid.shape[0] == 0:
        return np.zeros(Y.shape[:-2] + (0,))
    a, b = st.rigid[:, 0], st.rigid[:, 1]
    d = np.linalg.norm(Y[..., a, :] - Y[..., b, :], axis=-1)
    return ((d - st.rigid_dist) / st.rigid_sd) ** 2


def structure_energy(Y: FloatArray, st: BodyStructure, rotation: FloatArray | None = None) -> FloatArray:
    """(..., I) history-free energy of poses Y (..., I, K, 3): violated rigid distances and left/right order.

    Each active rigid pair costs its squared standard score beyond 4 (two
    tolerances; capped at ``STRUCT_CAP``); each left/right pair whose points are on the wrong
    sides of each other by ``d`` costs ``(d / side_scale)^2`` (capped), and so
    does each active front/back pair in reverse order by ``d``, in units of
    ``order_scale``. The body's axes come from ``rotation`` (I, 3, 3), the seed
    template's frame fitted to the pose (fitted here if not given).
    """
    z2 = _rigid_z2(Y, st)
    # within two tolerances a rigid distance is just noise (no energy), beyond it costs its excess
    e = np.where(st.active & np.isfinite(z2), np.minimum(np.maximum(z2 - 4.0, 0.0), STRUCT_CAP), 0.0).sum(axis=-1)
    need_rot = (st.pairs and np.isfinite(st.lateral).any()) or (st.order is not None and len(st.order))
    if need_rot and rotation is None:
        rotation = _fit_frames(Y.reshape((-1,) + Y.shape[-3:]), st)[0].reshape(Y.shape[:-2] + (3, 3))
    if st.order is not None and len(st.order) and st.forward is not None:
        fw = np.einsum("...ij,...j->...i", rotation, np.broadcast_to(st.forward, rotation.shape[:-1]))
        d = np.einsum("...oi,...i->...o", Y[..., st.order[:, 0], :] - Y[..., st.order[:, 1], :], fw)
        wrong = np.where(np.isfinite(d), np.maximum(-d, 0.0), 0.0)
        e_o = np.minimum((wrong / max(st.order_scale, 1e-9)) ** 2, STRUCT_CAP)
        if st.order_active is not None:
            e_o = np.where(st.order_active, e_o, 0.0)
        e = e + e_o.sum(axis=-1)
    if st.pairs and np.isfinite(st.lateral).any():
        if rotation is None:
            rotation = _fit_frames(Y.reshape((-1,) + Y.shape[-3:]), st)[0].reshape(Y.shape[:-2] + (3, 3))
        ax = np.einsum("...ij,...j->...i", rotation, np.broadcast_to(st.lateral, rotation.shape[:-1]))  # (..., I, 3)
        for l, r in st.pairs:
            d = np.einsum("...i,...i->...", Y[..., l, :] - Y[..., r, :], ax)
            wrong = np.where(np.isfinite(d), np.maximum(-d, 0.0), 0.0)
            e = e + np.minimum((wrong / max(st.side_scale, 1e-9)) ** 2, STRUCT_CAP)
    return e


def _fit_frames(points: FloatArray, st: BodyStructure, robust: bool = False) -> tuple[FloatArray, FloatArray]:
    """The seed template fitted (weighted Kabsch) to poses (B, I, K, 3): rotations (B, I, 3, 3), translations (B, I, 3).

    ``robust``: reweighted by the residuals (``FIT_ROBUST_ITERATIONS`` times, Cauchy weights of scale
    ``FIT_ROBUST_C`` template spreads), so that a few keypoints far from their places do not turn the frame.
    """
    from ethoscribe.pose.model import kabsch

    B, I, K, _ = points.shape
    key = (points.shape, points.tobytes(), robust, st.seed_shape, st.seed_weight) if B == 1 else None
    hit = _FIT_MEMO.get("last")
    if key is not None and hit is not None and hit[0][:3] == key[:3] and hit[0][3] is key[3] and hit[0][4] is key[4]:
        return hit[1].copy(order="K"), hit[2].copy(order="K")
    tpl = np.broadcast_to(st.seed_shape, (B, I, K, 3)).reshape(-1, K, 3)
    pts = points.reshape(-1, K, 3)
    ok = np.isfinite(pts).all(-1)
    w0 = np.where(ok, np.broadcast_to(st.seed_weight, ok.shape), 0.0)
    r, t = kabsch(tpl, pts, w0)
    if robust:
        # a keypoint far from its template place (a curled tail, a turned head, a wrong identity) must not turn the
        # body's frame: reweighted by its residual in template spreads (Cauchy, scale FIT_ROBUST_C), twice
        spread = 1.0 / np.sqrt(np.asarray(st.seed_weight, float))
        for _ in range(FIT_ROBUST_ITERATIONS):
            res = np.linalg.norm(np.einsum("bij,bkj->bki", r, tpl) + t[:, None] - pts, axis=-1) / spread
            w = np.where(np.isfinite(res), w0 / (1.0 + (res / FIT_ROBUST_C) ** 2), 0.0)
            r2, t2 = kabsch(tpl, pts, w)
            fine = np.isfinite(r2).all(axis=(1, 2))
            r, t = np.where(fine[:, None, None], r2, r), np.where(fine[:, None], t2, t)
    r, t = r.reshape(B, I, 3, 3), t.reshape(B, I, 3)
    if key is not None:
        _FIT_MEMO["last"] = (key, r.copy(order="K"), t.copy(order="K"))
    return r, t


#: the last single pose :func:`_fit_frames` fitted and its frames: the structure repair fits the associated pose,
#: and the tracker fits the confident part of the same pose, which is all of it in most frames
_FIT_MEMO: dict[str, Any] = {}


def rigid_context(Y: FloatArray, st: BodyStructure, I: int, K: int) -> FloatArray:
    """(I, K, N) identity-free rigid-distance evidence: for keypoint k on hypothesis h, the mean over k's
    active rigid partners j of the capped squared standard score of the hypothesis nearest to the distance
    ``d_kj`` from h. NaN where k has no active rigid partner. (A frame's hypotheses are the same for every pass
    over it: the result is kept for the last few hundred (Y, active pairs).)"""
    N = Y.shape[0]
    out = np.full((I, K, N), np.nan)
    R = st.rigid.shape[0]
    if R == 0 or N < 2 or not st.active.any():
        return out
    key = (id(Y), Y.shape, I, K, st.rigid.tobytes(), st.active.tobytes())
    hit = _RIGID_MEMO.get(key)
    if hit is not None and hit[0] is Y and hit[1] is st.rigid_dist and hit[2] is st.rigid_sd:
        return hit[3].copy()
    D = np.linalg.norm(Y[:, None] - Y[None], axis=-1)  # N, N
    np.fill_diagonal(D, np.inf)
    act = np.flatnonzero(st.active)
    dist = st.rigid_dist[:, act].T[:, :, None, None]  # A, I, 1, 1
    z2 = np.min(((D - dist) / st.rigid_sd[act, None, None, None]) ** 2, axis=-1)  # A, I, N: best partner for each h
    z2 = np.minimum(np.where(np.isfinite(z2), z2, STRUCT_CAP), STRUCT_CAP)
    # each pair's score goes to both its keypoints, pair by pair (np.add.at adds in this order)
    ends = st.rigid[act].reshape(-1)  # j0, k0, j1, k1, ...
    tot = np.zeros((I, K, N))
    np.add.at(tot.transpose(1, 0, 2), ends, np.repeat(z2, 2, axis=0))
    cnt = np.bincount(ends, minlength=K).astype(float)
    has = cnt > 0
    out[:, has] = tot[:, has] / cnt[has][None, :, None]
    while len(_RIGID_MEMO) >= 512:
        try:
            _RIGID_MEMO.popitem(last=False)  # the oldest
        except KeyError:  # emptied meanwhile (another thread)
            break
    _RIGID_MEMO[key] = (Y, st.rigid_dist, st.rigid_sd, out.copy())
    return out


_RIGID_MEMO: OrderedDict[tuple[Any, ...], tuple[Any, ...]] = OrderedDict()


def shares_candidates(support: NDArray[np.int64], held: NDArray[np.int64]) -> NDArray[np.bool_]:
    """(N,) points that use a 2D candidate (in any view) that one of the ``held`` points uses.

    ``support`` (V, N) is the candidate index of each point per view (-1 none).

    Examples
    --------
    >>> support = np.array([[0, 0, 1], [2, -1, 3]])
    >>> shares_candidates(support, np.array([0])).tolist()
    [True, True, False]
    """
    V = support.shape[0]
    used = np.zeros((V, int(support.max(initial=0)) + 2), bool)
    if held.size:
        sv = support[:, held]
        vv = np.broadcast_to(np.arange(V)[:, None], sv.shape)
        used[vv[sv >= 0], sv[sv >= 0]] = True
    return ((support >= 0) & used[np.arange(V)[:, None], np.maximum(support, 0)]).any(axis=0)


_TRIU: dict[int, tuple[NDArray[np.int64], NDArray[np.int64]]] = {}


def _triu_pairs(K: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``np.triu_indices(K, 1)``, made once per K (read-only)."""
    if K not in _TRIU:
        ii, jj = np.triu_indices(K, 1)
        ii.flags.writeable = False
        jj.flags.writeable = False
        _TRIU[K] = (ii, jj)
    return _TRIU[K]


def repair(cost: FloatArray, matched: NDArray[np.int64], Y: FloatArray, support: NDArray[np.int64],
           st: BodyStructure, I: int, K: int, none_cost: float, semantic: FloatArray | None = None,
           rounds: int = 4, min_gain: float = 1.0
           ) -> tuple[NDArray[np.int64], list[tuple[int, int, int, int]], list[tuple[int, int, int]]]:
    """Local search that puts back what the history-free body structure rules out, per animal.

    Two kinds of move, for animals whose :func:`structure_energy` is above
    ``min_gain``:

    - **relabel**: two keypoints of an animal exchange their tracks (their
      hypotheses, and the caller exchanges their tracker state). Motion is
      no argument here (both tracks continue as they were; only their names
      change), so the move is scored by the structure energy and the
      label-specific evidence ``semantic`` (P, N) (a pose model's names,
      the reasoner's choice, and where the keypoint's body neighbours are:
      the shape context, without which an ear and a paw would exchange
      names to put a paw in front of another);
    - **reassign**: a keypoint takes a hypothesis no one holds (and that
      shares no candidate with a held one), or none, scored by the full
      association ``cost`` (P, N) plus the structure energy.

    The best move lowering the total by at least ``min_gain`` is taken, up to
    ``rounds`` times. Returns the assignment, the reassignments (animal,
    keypoint, old, new hypothesis) and the relabels (animal, k1, k2).
    """
    matched = matched.copy()
    moves: list[tuple[int, int, int, int]] = []
    swaps: list[tuple[int, int, int]] = []
    N = Y.shape[0]
    if N == 0:
        return matched, moves, swaps
    P = cost.shape[0]
    cost_n = np.concatenate([np.where(np.isfinite(cost), cost, np.inf), np.full((P, 1), none_cost)], axis=1)
    sem = np.zeros((P, N)) if semantic is None else semantic
    sem_n = np.concatenate([np.where(np.isfinite(sem), sem, 0.0), np.zeros((P, 1))], axis=1)
    Yn = np.concatenate([Y, np.full((1, 3), np.nan)])  # index N: none
    ii, jj = _triu_pairs(K)

    def pose(m: NDArray[np.int64]) -> FloatArray:
        return Yn[np.where(m >= 0, m, N)].reshape(I, K, 3)

    for _ in range(rounds):
        cur = pose(matched)
        rot, _t = _fit_frames(cur[None], st)
        e_struct = structure_energy(cur, st, rot[0])  # I
        bad = np.flatnonzero(e_struct > min_gain)
        if bad.size == 0:
            break
        clash = shares_candidates(support, matched[matched >= 0])
        free = np.flatnonzero(~clash)
        best: tuple[float, Any] = (0.0, None)
        for a in bad:
            rows = a * K + np.arange(K)
            m_a = matched[rows]
            col = np.where(m_a >= 0, m_a, N)
            # relabels
            sw = np.broadcast_to(m_a, (ii.size, K)).copy()
            sw[np.arange(ii.size), ii], sw[np.arange(ii.size), jj] = m_a[jj], m_a[ii]
            real = (m_a[ii] >= 0) & (m_a[jj] >= 0)  # a track without a point is not a track to rename
            sw_col = np.where(sw >= 0, sw, N)
            d_sw = sem_n[rows[None, :], sw_col].sum(axis=1) - sem_n[rows, col].sum()
            # reassignments
            opts = np.r_[free, -1]
            kk, hh = np.meshgrid(np.arange(K), opts, indexing="ij")
            mv = np.broadcast_to(m_a, (kk.size, K)).copy()
            mv[np.arange(kk.size), kk.reshape(-1)] = hh.reshape(-1)
            krow = rows[kk.reshape(-1)]
            with np.errstate(invalid="ignore"):
                d_mv = cost_n[krow, np.where(hh.reshape(-1) >= 0, hh.reshape(-1), N)] - cost_n[krow, col[kk.reshape(-1)]]
            alt = np.concatenate([sw, mv])
            delta = np.concatenate([np.where(real, d_sw, np.inf), d_mv])
            kind = np.r_[np.zeros(ii.size, bool), np.ones(mv.shape[0], bool)]
            changed = ~(alt == m_a[None]).all(axis=1)
            total = _move_totals(alt, delta, changed, cur, rot, st, a, e_struct[a], Yn, min(-min_gain, best[0]))
            i_best = int(np.argmin(total))
            if total[i_best] < -min_gain and total[i_best] < best[0]:
                swap = None if kind[i_best] else (int(ii[i_best]), int(jj[i_best]))
                best = (float(total[i_best]), (a, alt[i_best], swap))
        if best[1] is None:
            break
        a, new, swap = best[1]
        rows = a * K + np.arange(K)
        if swap is not None:
            swaps.append((int(a), swap[0], swap[1]))
        else:
            for k in np.flatnonzero(new != matched[rows]):
                moves.append((int(a), int(k), int(matched[rows[k]]), int(new[k])))
        matched[rows] = new
    return matched, moves, swaps


def _move_totals(alt: NDArray[np.int64], delta: FloatArray, changed: NDArray[np.bool_], cur: FloatArray,
                 rot: FloatArray, st: BodyStructure, a: int, e_cur: float, Yn: FloatArray, bar: float) -> FloatArray:
    """:func:`repair`'s score of each move of animal ``a`` (``alt`` the animal's assignment after it, ``delta``
    its cost change): ``delta + STRUCT_WEIGHT (energy after - e_cur)``, +inf where not finite or not a change.

    Only a move scoring below ``bar`` can be taken, and a structure energy is never negative, so a move with
    ``delta - STRUCT_WEIGHT e_cur`` at ``bar`` or above is not scored (+inf): its energy is not computed. The
    cheapest move below ``bar``, the one repair takes, is the same (a move left out scores ``bar`` or more).
    """
    N = Yn.shape[0] - 1
    I, K = cur.shape[:2]
    total = np.full(alt.shape[0], np.inf)
    with np.errstate(invalid="ignore"):
        sel = np.flatnonzero(changed & (delta + STRUCT_WEIGHT * (0.0 - e_cur) < bar))
    if sel.size:
        poses = np.broadcast_to(cur, (sel.size, I, K, 3)).copy()
        poses[:, a] = Yn[np.where(alt[sel] >= 0, alt[sel], N)]
        rot_b = np.broadcast_to(rot, (sel.size,) + rot.shape[1:])
        e_alt = structure_energy(poses, st, rot_b)[:, a]
        t = delta[sel] + STRUCT_WEIGHT * (e_alt - e_cur)
        total[sel] = np.where(np.isfinite(t), t, np.inf)
    return total


#: a held point this many template spreads from its keypoint's place in the body ...
HAND_OWN_Z = 3.0
#: ... and within this many spreads of the place of a keypoint without a point goes to that keypoint
HAND_LOST_Z = 2.0
#: the fewest other points of the animal that place the body
HAND_MIN_OTHERS = 4


def hand_back(matched: NDArray[np.int64], Y: FloatArray, st: BodyStructure, neighbours: NDArray[np.int64],
              I: int, K: int, current: FloatArray | None = None,
              min_gain: float = 1.0) -> list[tuple[int, int, int]]:
    """Tracks held by the wrong keypoint of a lost one, to be renamed: (animal, holder, lost keypoint).

    Every rule of :func:`repair` needs both keypoints of a pair present, so a
    keypoint whose track slid onto the marker of another that is lost at the
    time (a paw on a back marker while the back marker is unseen) keeps it
    for as long as the other stays lost. The body decides instead: each
    keypoint's place is the seed template fitted (weights ``1 / spread^2``)
    to the animal's *other* points, as the QC's body residual does. A point
    more than ``HAND_OWN_Z`` template spreads from its holder's place and
    within ``HAND_LOST_Z`` spreads of the place of a keypoint without a point
    is that keypoint's: the track is renamed (the holder becomes lost, and is
    looked for at its own place). Where ``current`` (I, K, 3) gives each
    keypoint's place in the current posture (the online template; NaN
    unknown), the point must be within ``HAND_LOST_Z`` spreads of that place
    too: a paw stepping far out may pass the seed place of another keypoint,
    but not where that keypoint was last seen on the body. Not between
    template neighbours or a left/right pair, whose places a bent posture (a
    curled tail, a stride) moves onto each other, and only where the body
    structure
    (:func:`structure_energy`) does not get worse by more than ``min_gain``
    and at least ``HAND_MIN_OTHERS`` other points place the body.
    ``matched`` (I*K,) hypothesis per keypoint (-1 none) of the points ``Y``
    (N, 3) is updated in place; ``neighbours`` (K, J) the template
    neighbours (:func:`template_neighbours`).
    """
    from ethoscribe.pose.model import kabsch

    out: list[tuple[int, int, int]] = []
    if Y.shape[0] == 0:
        return out
    alike = np.zeros((K, K), bool)
    alike[np.repeat(np.arange(K), neighbours.shape[1]), neighbours.reshape(-1)] = True
    for a, b in st.pairs:
        alike[a, b] = True
    alike |= alike.T
    spread = 1.0 / np.sqrt(st.seed_weight)
    Yn = np.concatenate([Y, np.full((1, 3), np.nan)])  # index N: none
    for a in range(I):
        rows = a * K + np.arange(K)
        held = matched[rows] >= 0
        if held.all() or held.sum() < HAND_MIN_OTHERS + 1:
            continue
        full = Yn[np.where(matched >= 0, matched, Y.shape[0])].reshape(I, K, 3)
        pose = full[a]
        # the body's place of every keypoint, fitted without each held keypoint in turn
        hk = np.flatnonzero(held)
        w = np.broadcast_to(np.where(held, st.seed_weight, 0.0), (hk.size, K)).copy()
        w[np.arange(hk.size), hk] = 0.0
        src = np.broadcast_to(st.seed_shape[a], (hk.size, K, 3))
        r, t = kabsch(src, np.broadcast_to(pose, (hk.size, K, 3)), w)
        place = np.einsum("bij,bkj->bki", r, src) + t[:, None]  # holder, keypoint, 3
        with np.errstate(invalid="ignore"):
            z = np.linalg.norm(pose[hk][:, None] - place, axis=-1) / spread[None, :]  # holder, keypoint
        own = z[np.arange(hk.size), hk]
        zl = np.where(alike[hk] | held[None, :] | ~np.isfinite(z), np.inf, z)  # only to keypoints without a point
        if current is not None:
            with np.errstate(invalid="ignore"):
                zc = np.linalg.norm(pose[hk][:, None] - current[a][None], axis=-1) / spread[None, :]
            zl = np.where(np.isfinite(zc) & (zc >= HAND_LOST_Z), np.inf, zl)
        for n in np.argsort(np.where(np.isfinite(own), own, -np.inf))[::-1]:
            if not own[n] > HAND_OWN_Z:
                break
            j = int(np.argmin(zl[n]))
            if not zl[n, j] < HAND_LOST_Z:
                continue
            k = int(hk[n])
            new = full.copy()
            new[a, j], new[a, k] = full[a, k], np.nan
            e_cur, e_new = structure_energy(np.stack([full, new]), st)[:, a]
            if e_new > e_cur + min_gain:
                continue
            matched[rows[j]], matched[rows[k]] = matched[rows[k]], -1
            out.append((a, k, j))
            full = new
            zl[:, j] = np.inf  # it holds a point now
    return out


def exchange_back(matched: NDArray[np.int64], Y: FloatArray, st: BodyStructure, I: int, K: int,
                  places: FloatArray | None = None, min_gain: float = 1.0) -> list[tuple[int, int, int]]:
    """Two tracks each on the other's place in the body, to be exchanged: (animal, k1, k2).

    The rules of :func:`repair` see a paw on a back marker and the back marker's track on the paw's marker only
    through rigid distances and left/right and front/back order, which such a pair may keep. The body sees it:
    with the seed template fitted (robustly, :func:`_fit_frames`) to the animal's points, each of the two points
    is more than ``HAND_OWN_Z`` template spreads from its own keypoint's place and within ``HAND_LOST_Z`` spreads
    of the other's. Exchanged (best first) where the structure (:func:`structure_energy`) does not get worse by
    more than ``min_gain``, with at least ``HAND_MIN_OTHERS`` other points placing the body. ``places``
    (I, K, 3), if given, is the seed template already placed on the animal (the prediction's): a cheap first look
    that skips the robust fit where no pair can qualify. ``matched`` (I*K,) is updated in place.
    """
    from ethoscribe.pose.model import kabsch

    out: list[tuple[int, int, int]] = []
    N = Y.shape[0]
    if N == 0:
        return out
    spread = 1.0 / np.sqrt(st.seed_weight)
    for a in range(I):
        rows = a * K + np.arange(K)
        m = matched[rows]
        held = m >= 0
        if held.sum() < HAND_MIN_OTHERS + 2:
            continue
        pose = np.full((K, 3), np.nan)
        pose[held] = Y[m[held]]
        p0 = places[a] if places is not None else None
        if p0 is None or np.isnan(p0).any():
            r0, t0 = kabsch(st.seed_shape[a][None], pose[None], np.where(held, st.seed_weight, 0.0)[None])
            p0 = st.seed_shape[a] @ r0[0].T + t0[0]
        dd = pose[:, None] - p0[None]
        z0 = np.sqrt(np.einsum("kjc,kjc->kj", dd, dd)) / spread
        with np.errstate(invalid="ignore"):  # a quick look first, with the plain places and wider margins
            far0 = np.diag(z0) > HAND_OWN_Z - 1.0
            if far0.sum() < 2:
                continue
            maybe = far0[:, None] & far0[None, :] & (z0 < HAND_LOST_Z + 1.0) & (z0.T < HAND_LOST_Z + 1.0)
        if not np.triu(maybe, 1).any():
            continue
        full = np.concatenate([Y, np.full((1, 3), np.nan)])[np.where(matched >= 0, matched, N)].reshape(I, K, 3)
        rot, tr = _fit_frames(full[None], st, True)
        place = np.einsum("ij,kj->ki", rot[0, a], st.seed_shape[a]) + tr[0, a]  # K, 3
        z = np.linalg.norm(pose[:, None] - place[None], axis=-1) / spread[None, :]  # point of k, place of j
        own = np.diag(z).copy()
        with np.errstate(invalid="ignore"):
            far = held & (own > HAND_OWN_Z)
            cand = far[:, None] & far[None, :] & (z < HAND_LOST_Z) & (z.T < HAND_LOST_Z)
        cand = np.triu(cand, 1)
        if not cand.any():
            continue
        jj, kk = np.nonzero(cand)
        gain = own[jj] ** 2 + own[kk] ** 2 - z[jj, kk] ** 2 - z[kk, jj] ** 2
        for n in np.argsort(-gain):
            j, k = int(jj[n]), int(kk[n])
            if any(x in (j, k) for _, p, q in out for x in (p, q)):
                continue
            new = full.copy()
            new[a, [j, k]] = full[a, [k, j]]
            e_cur, e_new = structure_energy(np.stack([full, new]), st)[:, a]
            if e_new > e_cur + min_gain:
                continue
            matched[rows[j]], matched[rows[k]] = matched[rows[k]], matched[rows[j]]
            out.append((a, j, k))
            full = new
    return out


#: a rigid pair is kept by a completion within this many tolerances
COMPLETE_Z = 3.0
#: the most member-to-point combinations a completion enumerates (a larger group is left to :func:`repair`)
COMPLETE_MAX_SEARCH = 4096


def _rigid_groups(st: BodyStructure, K: int) -> list[NDArray[np.int64]]:
    """The keypoint sets (three or more) that the active rigid pairs connect (made once per set of active pairs)."""
    key = (K, st.rigid.tobytes(), st.active.tobytes())
    if key not in _GROUPS:
        if len(_GROUPS) >= 64:
            _GROUPS.clear()
        groups = _rigid_groups_of(st, K)
        for g in groups:
            g.flags.writeable = False
        _GROUPS[key] = groups
    return list(_GROUPS[key])


_GROUPS: dict[tuple[int, bytes, bytes], list[NDArray[np.int64]]] = {}


def _rigid_groups_of(st: BodyStructure, K: int) -> list[NDArray[np.int64]]:
    parent = list(range(K))

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for j, k in st.rigid[st.active]:
        parent[root(int(j))] = root(int(k))
    groups: dict[int, list[int]] = {}
    for k in range(K):
        groups.setdefault(root(k), []).append(k)
    return [np.array(g) for g in groups.values() if len(g) >= 3]


def _completions(cols: NDArray[np.int64], m_g: NDArray[np.int64], held: NDArray[np.int64],
                 zp: dict[tuple[int, int], FloatArray], support: NDArray[np.int64]
                 ) -> list[tuple[int, float, NDArray[np.int64]]]:
    """The assignments of a rigid group's members to the points ``cols`` (see :func:`complete_rigid`).

    ``m_g`` the members' current points (-1 none), ``held`` those present,
    ``zp`` each rigid pair's (member, member) standard scores between the
    points (C, C). Depth first, every measured pair within ``COMPLETE_Z``: a
    member keeps its point, has none, or takes a point with two partners at
    their distances. Returns (members placed, sum of squared scores,
    assignment) of those that keep every held point, place more members,
    give every moved member two measured partners and share no candidate.
    """
    n, C = m_g.size, cols.size
    valid: list[tuple[int, float, NDArray[np.int64]]] = []
    fits = np.zeros((n, C), int)
    for (i1, i2), z in zp.items():
        ok = (np.abs(z) <= COMPLETE_Z).any(axis=1)
        fits[i1] += ok
        fits[i2] += ok
    own = cols[None, :] == m_g[:, None]
    allowed = [np.r_[np.flatnonzero((fits[i] >= 2) | own[i]), C] for i in range(n)]
    if np.prod([float(x.size) for x in allowed]) > COMPLETE_MAX_SEARCH:
        return valid
    pick = np.full(n, C)

    def search(i: int) -> None:
        if i == n:
            m = np.where(pick < C, cols[np.minimum(pick, C - 1)], -1)
            placed = int((m >= 0).sum())
            if placed <= held.size or not np.isin(held, m).all():
                return
            z2, kept = 0.0, np.zeros(n, int)
            for (i1, i2), z in zp.items():
                if pick[i1] < C and pick[i2] < C:
                    z2 += float(z[pick[i1], pick[i2]] ** 2)
                    kept[i1] += 1
                    kept[i2] += 1
            sv = support[:, m[m >= 0]]
            if (kept[m != m_g] >= 2).all() and all(np.unique(x[x >= 0]).size == (x >= 0).sum() for x in sv):
                valid.append((placed, z2, m))
            return
        for c in allowed[i]:
            if c < C:
                if (pick[:i] == c).any():
                    continue
                if any(o < i and pick[o] < C and abs(z[c, pick[o]]) > COMPLETE_Z
                       for (i1, i2), z in zp.items() if i in (i1, i2) for o in (i1 + i2 - i,)):
                    continue
            pick[i] = c
            search(i + 1)
        pick[i] = C

    search(0)
    return valid


def _mask(n: int, *index: NDArray[np.int64]) -> NDArray[np.bool_]:
    """(n,) True at the given indices (``np.isin(np.arange(n), ...)`` for indices in range, without sorting)."""
    m = np.zeros(n, bool)
    for i in index:
        m[i] = True
    return m


def complete_rigid(matched: NDArray[np.int64], Y: FloatArray, support: NDArray[np.int64], st: BodyStructure,
                   I: int, K: int) -> list[tuple[int, int, int]]:
    """Incomplete rigid groups re-associated as a whole: (animal, keypoint, source) of the moved keypoints.

    Three keypoints whose distances never change (the ears and the front
    back marker) can slide by one marker together: an ear on the back
    marker while the ear whose marker it left and the back marker have no
    point. No rigid pair is then measured (each has an end missing), so
    :func:`structure_energy` sees nothing wrong, and moving one keypoint at
    a time (:func:`repair`) only breaks a pair. Here a group of keypoints
    connected by active rigid pairs (:func:`_rigid_groups`) with a member
    without a point takes, as a whole, the assignment of its members to its
    own points and the free ones (held by no one, sharing no candidate with
    a held point, within the group's largest rigid distance of its points)
    that places the most members, every measured pair within ``COMPLETE_Z``
    tolerances, with the lowest sum of the pairs' squared standard scores
    and the animal's :func:`structure_energy` (which tells an assignment
    from its mirror image). It must keep all the group's points, place more
    members than now, give every member it moves at least two kept rigid
    partners (one distance is a sphere that a stray point may cross), share
    no candidate between two points, and not add more than ``COMPLETE_Z^2``
    to the structure energy. ``source`` is the keypoint whose point
    the keypoint takes (the tracker gives the keypoint that track's state),
    -1 a free point, -2: none (a keypoint outside every rigid group, a paw,
    whose point the group took: the paw's marker is not at the exact
    distances of two rigid partners, a head marker is). ``matched``
    (I*K,) is updated in place.
    """
    out: list[tuple[int, int, int]] = []
    N = Y.shape[0]
    if N == 0 or st.rigid.shape[0] == 0 or not st.active.any():
        return out
    groups = _rigid_groups(st, K)
    if not groups:
        return out
    Yn = np.concatenate([Y, np.full((1, 3), np.nan)])  # index N: none
    act = st.rigid[st.active]
    pair_idx = np.flatnonzero(st.active)
    grouped = np.zeros(K, bool)
    grouped[np.concatenate(groups)] = True
    for a in range(I):
        rows = a * K + np.arange(K)
        for g in groups:
            m_g = matched[rows[g]]
            held = m_g[m_g >= 0]
            if held.size == 0 or held.size == g.size:
                continue
            # the points of the animal's keypoints outside every rigid group (a paw that took a head marker) may go
            loose = matched[rows[~grouped]]
            loose = loose[loose >= 0]
            others = np.flatnonzero(_mask(N, matched[matched >= 0]) & ~_mask(N, held, loose))  # = np.setdiff1d
            clash = shares_candidates(support, others)
            clash[others] = True
            in_g = _mask(K, g)[act].all(axis=1)
            reach = float(st.rigid_dist[a, pair_idx[in_g]].max() + COMPLETE_Z * st.rigid_sd[pair_idx[in_g]].max())
            near = (np.linalg.norm(Y[:, None] - Y[held][None], axis=-1) <= reach).any(axis=1)
            seen = (support >= 0).sum(axis=0) >= 3  # two views may agree on a ghost of two other markers
            cols = np.flatnonzero(_mask(N, held) | (near & ~clash & (seen | _mask(N, loose))))  # = np.union1d
            if cols.size <= held.size:
                continue
            pairs = [(int(np.flatnonzero(g == j)[0]), int(np.flatnonzero(g == k)[0]), float(st.rigid_dist[a, r]),
                      float(st.rigid_sd[r])) for (j, k), r in zip(act[in_g], pair_idx[in_g])]
            D = np.linalg.norm(Y[cols][:, None] - Y[cols][None], axis=-1)
            zp = {(i1, i2): (D - d) / sd for i1, i2, d, sd in pairs}
            valid = _completions(cols, m_g, held, zp, support)
            if not valid:
                continue
            full = Yn[np.where(matched >= 0, matched, N)].reshape(I, K, 3)
            alts = np.broadcast_to(full, (len(valid) + 1,) + full.shape).copy()
            for i, (_p, _z, m) in enumerate(valid):
                alts[i + 1, a, ~grouped & np.isin(matched[rows], m[m >= 0])] = np.nan
                alts[i + 1, a, g] = Yn[np.where(m >= 0, m, N)]
            e = structure_energy(alts, st)[:, a]
            top = max(p for p, _z, _m in valid)
            score = [z + e[i + 1] if p == top else np.inf for i, (p, z, _m) in enumerate(valid)]
            i_best = int(np.argmin(score))
            if e[i_best + 1] > e[0] + COMPLETE_Z ** 2:
                continue
            choice = valid[i_best][2]
            for i in np.flatnonzero(choice != m_g):
                src = g[np.flatnonzero(m_g == choice[i])]
                out.append((a, int(g[i]), int(src[0]) if src.size else -1))
            for k in np.flatnonzero(~grouped & np.isin(matched[rows], choice[choice >= 0])):
                matched[rows[k]] = -1  # its point is the group's
                out.append((a, int(k), -2))
            matched[rows[g]] = choice
    return out


#: a pass is preferred on structure when its points are on average this much closer (squared template spreads,
#: capped at PLACE_CAP) to the keypoint's place in the body than the other pass's
PASS_MARGIN = 1.0
PLACE_CAP = 16.0
#: the fewest agreed keypoints that place the body
PLACE_MIN_AGREED = 4


def pass_preference(st: BodyStructure, agreed: FloatArray, a: int, k: int, Xf: FloatArray, Xb: FloatArray,
                    same: float = 0.0) -> tuple[bool, float] | None:
    """Which of two passes' points for keypoint ``k`` of animal ``a`` over a stretch of frames the body agrees with.

    ``agreed`` (S, I, K, 3): per frame, the points both passes agree on (NaN elsewhere); ``Xf``, ``Xb``
    (S, I, K, 3) the two passes' points. In each frame with at least ``PLACE_MIN_AGREED`` agreed keypoints of the
    animal (``k`` left out), the seed template is fitted to them (:func:`_fit_frames`) and each pass's point
    scores

    - its squared distance from the keypoint's place in template spreads,
    - the mean excess (beyond two tolerances) of the squared standard scores of its seed-rigid distances to
      agreed keypoints,
    - for a left/right keypoint, how far its pass puts it on the wrong side of its partner (the partner as that
      pass has it: a pass that swapped the pair has both on the wrong sides; :func:`structure_energy`'s term),
    - ``PLACE_CAP`` where it is within ``same`` (world units) of another keypoint's agreed point (that pass
      followed the other keypoint's marker),

    each capped at ``PLACE_CAP``. The body needs no history: a pass that followed another marker puts the keypoint
    where the rest of the body says it is not, frame after frame. Returns (backward preferred, how clearly in
    [0, 1)) when the two passes' mean scores differ by at least ``PASS_MARGIN``, else None.
    """
    pose = agreed.copy()
    pose[:, :, k] = np.nan
    others = np.isfinite(pose[:, a]).all(-1).sum(axis=1) >= PLACE_MIN_AGREED
    if not others.any():
        return None
    pose = pose[others]
    rot, tr = _fit_frames(pose, st)
    place = np.einsum("sij,j->si", rot[:, a], st.seed_shape[a, k]) + tr[:, a]  # S', 3
    spread = 1.0 / np.sqrt(float(st.seed_weight[k]))
    partner = [(l if k == r else r, 1.0 if k == l else -1.0) for l, r in st.pairs if k in (l, r)]
    ax = np.einsum("sij,j->si", rot[:, a], st.lateral[a]) if partner and np.isfinite(st.lateral[a]).all() else None
    held = pose[:, a].copy()  # the other keypoints' agreed points
    rig = [(int(j if kk == k else kk), r) for r, (j, kk) in enumerate(st.rigid) if k in (j, kk)]
    scores = []
    for X in (Xf[others], Xb[others]):
        x = X[:, a, k]
        e = np.minimum(np.sum((x - place) ** 2, axis=-1) / spread ** 2, PLACE_CAP)
        if rig:  # the seed-rigid distances to agreed keypoints (a marker a rigid neighbour's distance away)
            z2 = np.stack([((np.linalg.norm(x - held[:, j], axis=-1) - st.rigid_dist[a, r]) / st.rigid_sd[r]) ** 2
                           for j, r in rig], axis=1)
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                er = np.nanmean(np.minimum(np.maximum(z2 - 4.0, 0.0), PLACE_CAP), axis=1)
            e = e + np.where(np.isfinite(er), er, 0.0)
        if ax is not None:
            j, sign = partner[0]
            d = sign * np.einsum("si,si->s", x - X[:, a, j], ax)
            wrong = np.where(np.isfinite(d), np.maximum(-d, 0.0), 0.0)
            e = e + np.minimum((wrong / max(st.side_scale, 1e-9)) ** 2, PLACE_CAP)
        if same > 0:
            with np.errstate(invalid="ignore"):
                on_other = (np.linalg.norm(held - x[:, None], axis=-1) <= same).any(axis=1)
            e = np.where(on_other, PLACE_CAP, e)
        scores.append(np.minimum(e, PLACE_CAP))
    ef, eb = scores
    ok = np.isfinite(ef) & np.isfinite(eb)
    if not ok.any():
        return None
    mf, mb = float(ef[ok].mean()), float(eb[ok].mean())
    if abs(mf - mb) < PASS_MARGIN:
        return None
    return mb < mf, abs(mf - mb) / (mf + mb + 1.0)


def structure_violations(Y: FloatArray, matched: NDArray[np.int64], st: BodyStructure | None, I: int,
                         K: int) -> NDArray[np.bool_]:
    """(I*K,) keypoints in an active rigid pair whose distance is off by more than 3 tolerances."""
    out = np.zeros(I * K, bool)
    if st is None or st.rigid.shape[0] == 0 or Y.shape[0] == 0:
        return out
    pose = np.where((matched >= 0)[:, None], Y[np.maximum(matched, 0)], np.nan).reshape(I, K, 3)
    z2 = _rigid_z2(pose, st)  # I, R
    with np.errstate(invalid="ignore"):
        bad = (z2 > 9.0) & st.active[None]
    o = out.reshape(I, K)
    for r in np.flatnonzero(bad.any(axis=0)):
        j, k = st.rigid[r]
        o[bad[:, r], j] = True
        o[bad[:, r], k] = True
    return o.reshape(-1)


def group_shift(pred: FloatArray, sigma: FloatArray, Y: FloatArray, neighbours: NDArray[np.int64],
                radius: float, known: NDArray[np.bool_] | None = None) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Coherent motion: the translation that best carries each keypoint's neighbourhood onto hypotheses.

    A body part that starts, stops or turns abruptly moves all its markers
    together, and a per-keypoint constant-velocity prediction misses them
    all by the same vector. For each keypoint ``k`` of each animal the group
    is ``k`` and its template ``neighbours``; every (member, hypothesis)
    pair within ``radius`` proposes a translation ``d``; a member supports
    ``d`` when a hypothesis lies within 2.5 of its ``sigma`` of its
    prediction moved by ``d``. The translation with the most supporting
    members (then the smallest) replaces no translation when it has at
    least two supporters more than none and supports at least two members.

    ``pred`` (I, K, 3), ``sigma`` (I, K); ``known`` (I, K) members whose
    prediction counts (tracked keypoints). Returns the shifted predictions
    (I, K, 3) and where a shift was applied (I, K).
    """
    I, K, _ = pred.shape
    out = pred.copy()
    shifted = np.zeros((I, K), bool)
    N = Y.shape[0]
    if N == 0 or neighbours.shape[1] == 0:
        return out, shifted
    member = np.zeros((K, K), bool)  # member[k, m]: m is in k's group
    member[np.arange(K), np.arange(K)] = True
    member[np.repeat(np.arange(K), neighbours.shape[1]), neighbours.reshape(-1)] = True
    ok_pred = np.isfinite(pred).all(-1) if known is None else (known & np.isfinite(pred).all(-1))
    r_in = 2.5 * sigma  # I, K
    for a in range(I):
        P = np.where(ok_pred[a][:, None], pred[a], np.nan)
        d0 = np.linalg.norm(P[:, None, :] - Y[None], axis=-1)  # K, N
        with np.errstate(invalid="ignore"):
            inl0 = np.where(np.isfinite(d0), d0, np.inf).min(axis=1) < r_in[a]  # K (nothing NaN left: = nanmin)
        sup0 = member.astype(int) @ inl0.astype(int)  # K: support of no translation
        size = member.astype(int) @ ok_pred[a].astype(int)
        need = (size >= 2) & (sup0 < size)
        if not need.any():
            continue
        with np.errstate(invalid="ignore"):
            jj, hh = np.nonzero(d0 < radius)
        if jj.size == 0:
            continue
        cands = Y[hh] - P[jj]  # C, 3
        moved = P[None, :, :] + cands[:, None, :]  # C, K, 3
        dist = np.sqrt(_min_d2(moved.reshape(-1, 3), Y).reshape(moved.shape[:2]))  # C, K
        with np.errstate(invalid="ignore"):
            inl = dist < r_in[a][None, :]  # C, K
        sup = inl.astype(int) @ member.T.astype(int)  # C, K: support of candidate c for group k
        valid = member[:, jj].T  # C, K: the candidate comes from a member of group k
        sup = np.where(valid & need[None, :], sup, -1)
        length = np.linalg.norm(cands, axis=-1)
        order = np.lexsort((np.broadcast_to(length[:, None], sup.shape).T, -sup.T))  # per k: best candidate first
        best = order[:, 0]
        sb = sup[best, np.arange(K)]
        apply = need & (sb >= np.maximum(2, sup0 + 2))
        out[a, apply] = pred[a, apply] + cands[best[apply]]
        shifted[a, apply] = True
    return out, shifted


def support_costs(geo, blocks, seed_points: FloatArray, threshold: float, same: float, near: float,  # type: ignore[no-untyped-def]
                  n_views: int) -> tuple[FloatArray, dict[str, Any]]:
    """How likely a hypothesis seen by ``n`` views is a real marker, measured on the seed frames.

    On each seed frame the candidates are matched across views (as in
    tracking); a hypothesis within ``same`` of a seed keypoint's 3D point is
    a marker, one farther from all of them but within ``near`` of one is
    clutter near the animals (reflections that happen to agree across views,
    or candidates of two markers mixed). The cost of a hypothesis with
    ``n`` supporting views is ``-2 log P(marker | n)`` (Laplace-smoothed;
    counts pooled over ``n`` and more views until at least 10), in the units
    of the association cost. Returns costs indexed by ``n`` (0..n_views) and
    the counts.
    """
    true = np.zeros(n_views + 1)
    clutter = np.zeros(n_views + 1)
    for f, pts_seed in enumerate(seed_points):
        P = pts_seed.reshape(-1, 3)
        P = P[np.isfinite(P).all(-1)]
        if len(P) == 0:
            continue
        hyp = geo.match_points(blocks.norm[f], blocks.xy[f], blocks.valid[f], threshold)
        if hyp.points3d.shape[0] == 0:
            continue
        d = np.linalg.norm(hyp.points3d[:, None] - P[None], axis=-1).min(axis=1)
        n = np.clip(hyp.n_support, 0, n_views)
        np.add.at(true, n[d <= same], 1)
        np.add.at(clutter, n[(d > same) & (d <= near)], 1)
    cost = np.zeros(n_views + 1)
    for n in range(2, n_views + 1):
        t, c = true[n:].copy(), clutter[n:].copy()
        # pool with the better-supported levels until the evidence is enough
        tt, cc = t[0], c[0]
        j = 1
        while tt + cc < 10 and j < len(t):
            tt += t[j]
            cc += c[j]
            j += 1
        cost[n] = -2.0 * np.log((tt + 1.0) / (tt + cc + 2.0))
    cost[2:] -= cost[2:].min()
    return cost, {"marker": true[2:].astype(int).tolist(), "clutter": clutter[2:].astype(int).tolist()}
