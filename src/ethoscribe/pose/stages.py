"""The four stages of the pose pipeline, each a function with a typed input and output.

Stages 1-3 ask a :class:`~ethoscribe.pose.reasoner.Reasoner` and check its
answer on receipt (:func:`locate_regions`, :func:`assign_candidates`,
:func:`agree`: shapes, candidate ids, no candidate used twice); stage 4
(:func:`refine_frame`) is geometry and always runs: it matches the frame's
candidates across views into 3D points and associates every keypoint of
every animal with one of them (or none), using the motion prediction, the
body template, the reasoner's answer and, for pose-model predictions, the
model's keypoint names as evidence (:mod:`ethoscribe.pose.association`),
then checks the result against the body's history-free structure and repairs
it. Whatever the reasoner answered that the cross-view geometry does not
support is replaced (left/right swaps, another keypoint's or another
animal's marker, a reflection), and each replacement is recorded for the
trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ethoscribe.errors import EthoscribeError
from ethoscribe.pose import association
from ethoscribe.pose.association import (
    BodyPrior,
    BodyStructure,
    association_cost,
    association_margin,
    complete_rigid,
    confident_points,
    exchange_back,
    hand_back,
    repair,
    semantic_cost,
    shape_context,
    structure_violations,
    template_neighbours,
)
from ethoscribe.pose.geometry import FrameGeometry, MarkerPoints, Triangulation
from ethoscribe.pose.model import _einsum
from ethoscribe.pose.reasoner import Assignment, FrameContext, Reasoner, RegionBoxes, duplicated_views

FloatArray = NDArray[np.float64]

#: stage codes of the frame arrays (index into labels.STAGES); -1 none
SEED, ASSIGNMENT, AGREEMENT, REFINEMENT, REPROJECTION = 0, 1, 2, 3, 4


class ReasonerAnswerError(EthoscribeError):
    """A reasoner answered something that does not fit the question (wrong shape, unknown candidate)."""


# ------------------------------------------------------------------ stage 1
def locate_regions(reasoner: Reasoner, ctx: FrameContext) -> RegionBoxes:
    """Stage 1: a box per view, animal and region; the answer's shape is checked."""
    boxes = reasoner.locate_regions(ctx)
    V, I, K, _ = ctx.shape
    want = (V, I, len(ctx.regions), 4)
    b = np.asarray(getattr(boxes, "boxes", None), dtype=np.float64) if boxes is not None else None
    if b is None or b.shape != want:
        raise ReasonerAnswerError(f"reasoner {reasoner.name!r}, frame {ctx.frame}: region boxes of shape "
                                  f"{None if b is None else b.shape}, expected {want}")
    return boxes


# ------------------------------------------------------------------ stage 2
def _check_assignment(reasoner: Reasoner, ctx: FrameContext, a: Assignment, what: str) -> Assignment:
    V, I, K, M = ctx.shape
    cand = np.asarray(a.cand)
    if cand.shape != (V, I, K):
        raise ReasonerAnswerError(f"reasoner {reasoner.name!r}, frame {ctx.frame}: {what} of shape {cand.shape}, expected {(V, I, K)}")
    cand = cand.astype(np.int64, copy=False)
    bad = (cand >= M) | (cand < -1)
    if bad.any():
        raise ReasonerAnswerError(f"reasoner {reasoner.name!r}, frame {ctx.frame}: {what} names candidates that do not exist")
    usable = np.where(cand >= 0, ctx.cand_valid[np.arange(V)[:, None, None], np.maximum(cand, 0)], True)
    cand = np.where(usable, cand, -1)
    cost = np.asarray(a.cost, float) if a.cost is not None else np.full((V, I, K), np.nan)
    return Assignment(cand, cost, a.costs, a.conflict)


def assign_candidates(reasoner: Reasoner, ctx: FrameContext, boxes: RegionBoxes) -> Assignment:
    """Stage 2: candidates to keypoints within each region box (-1: no candidate)."""
    return _check_assignment(reasoner, ctx, reasoner.assign(ctx, boxes), "assignment")


# ------------------------------------------------------------------ stage 3
def agree(reasoner: Reasoner, ctx: FrameContext, boxes: RegionBoxes, assignment: Assignment) -> Assignment:
    """Stage 3: no candidate used twice (enforced here too: the costlier claim loses), missing marked."""
    out = _check_assignment(reasoner, ctx, reasoner.agree(ctx, boxes, assignment), "agreement")
    if duplicated_views(out.cand).size:  # a reasoner left a conflict: keep the cheapest claim
        cand = out.cand.copy()
        conflict = np.zeros(cand.shape, bool) if out.conflict is None else out.conflict.copy()
        cost = np.where(np.isfinite(out.cost), out.cost, np.inf)
        for v in duplicated_views(cand):
            flat = cand[v].reshape(-1)
            fc = cost[v].reshape(-1)
            order = np.lexsort((np.arange(flat.size), fc))
            # in that order, a candidate's first claim keeps it, every later one loses it
            oc = flat[order]
            first = np.zeros(oc.size, bool)
            first[np.unique(oc, return_index=True)[1]] = True
            lose = order[(oc >= 0) & ~first]
            flat[lose] = -1
            conflict[v].reshape(-1)[lose] = True
            cand[v] = flat.reshape(cand[v].shape)
        out = Assignment(cand, out.cost, out.costs, conflict)
    if out.conflict is None:
        out = Assignment(out.cand, out.cost, out.costs, np.zeros(out.cand.shape, bool))
    return out


# ------------------------------------------------------------------ stage 4
@dataclass
class FrameResult:
    """Stage 4 output for one frame (V views, I animals, K keypoints).

    ``label_xy`` (V, I, K, 2) final 2D labels; ``cand`` (V, I, K) candidate
    index along the frame's M axis (-1: none); ``stage`` (V, I, K) stage
    codes; ``conflict`` (V, I, K); ``errors`` (V, I, K) reprojection error of
    candidate labels; ``first_errors`` (V, I, K) errors of the reasoner's
    labels against the final 3D points (for the camera statistics);
    ``tri`` the final triangulation (P = I*K points); ``events`` what was
    changed (for the trace); ``relabel`` the tracks the structure repair
    renamed and ``handed`` those handed to a lost keypoint (animal,
    holder, keypoint); ``reassociated`` the keypoints a rigid group's
    re-association moved (animal, keypoint, source: see
    :func:`~ethoscribe.pose.association.complete_rigid`).
    """

    label_xy: FloatArray
    cand: NDArray[np.int64]
    stage: NDArray[np.int8]
    conflict: NDArray[np.bool_]
    errors: FloatArray
    first_errors: FloatArray
    first_inliers: NDArray[np.bool_]
    tri: Triangulation
    reprojected: NDArray[np.bool_]
    events: dict[str, Any] = field(default_factory=dict)
    margin: FloatArray | None = None
    confident: NDArray[np.bool_] | None = None
    relabel: list[tuple[int, int, int]] = field(default_factory=list)
    handed: list[tuple[int, int, int]] = field(default_factory=list)
    reassociated: list[tuple[int, int, int]] = field(default_factory=list)
    proposed: FloatArray | None = None


@dataclass(frozen=True)
class Prior:
    """What the motion model and the body template expect of each keypoint's 3D point (P = I*K).

    ``position`` (P, 3) and ``sigma`` (P,) the motion prediction and its
    standard deviation (world units, label noise included); ``template``
    (P, 3) and ``template_sigma`` (P,) the body template placed on the
    prediction; NaN: no expectation. ``weak`` (P,): keypoints not tracked in
    the previous frame (their prediction is a guess). ``reach`` (P,): how
    far (world units) from the prediction a hypothesis that the body model
    vouches for may still be taken (a lost keypoint may have moved with a
    posture change while it was unseen); default ``2 gate sigma``.
    ``centre`` (P, 3) and ``extent`` (P,): the keypoint's animal's body
    centre (its tracked keypoints) and how far from it the keypoint can be
    (its seed-template distance plus three seed spreads and a quarter of
    the animal's size); a hypothesis farther out belongs to something else
    (another animal), whatever the motion or shape say. ``support_cost``
    (V + 1,): the cost of a hypothesis seen by ``n`` views being a real
    marker (measured on the seed frames, see
    :func:`~ethoscribe.pose.association.support_costs`).
    """

    position: FloatArray
    sigma: FloatArray
    template: FloatArray
    template_sigma: FloatArray
    weak: NDArray[np.bool_]
    reach: FloatArray | None = None
    centre: FloatArray | None = None
    extent: FloatArray | None = None
    support_cost: FloatArray | None = None


def _associate(cost: FloatArray, support: NDArray[np.int64], none_cost: float, rounds: int = 12) -> NDArray[np.int64]:
    """Keypoints (rows) to 3D point hypotheses (columns) with no candidate in two chosen points.

    Hypotheses may share candidates (two ways to explain the same spot). The
    Hungarian assignment is solved; where two chosen hypotheses share a
    candidate, the keypoint whose choice costs more is forbidden that
    hypothesis and the problem is solved again (at most ``rounds`` times;
    then the costlier of any remaining clashes gets no point).
    """
    from ethoscribe.pose.reasoner import _hungarian_with_none

    cost = cost.copy()
    for it in range(rounds + 1):
        choice, c = _hungarian_with_none(cost, none_cost)
        rows = np.flatnonzero(choice >= 0)
        if rows.size < 2:
            return choice
        sup = support[:, choice[rows]]  # V, R
        # rows sharing a candidate in some view: all but the cheapest clash (equal costs: the first row wins)
        same = (sup[:, :, None] == sup[:, None, :]) & (sup >= 0)[:, :, None]  # V, R, R
        cr = c[rows]
        order = np.arange(rows.size)
        beaten = (cr[None, :] < cr[:, None]) | ((cr[None, :] == cr[:, None]) & (order[None, :] < order[:, None]))
        clash_rows = rows[(same & beaten[None]).any(axis=(0, 2))]
        if not clash_rows.size:
            return choice
        if it == rounds:
            choice[clash_rows] = -1
        else:
            cost[clash_rows, choice[clash_rows]] = np.inf
    return choice


def _gather(arr: FloatArray, cand: NDArray[np.int64]) -> FloatArray:
    """arr (V, M, 2) at cand (V, P) -> (V, P, 2), NaN for -1."""
    V = arr.shape[0]
    out = arr[np.arange(V)[:, None], np.maximum(cand, 0)]
    return np.where((cand >= 0)[..., None], out, np.nan)


def _refine_labels(matched: NDArray[np.int64], pts: MarkerPoints, xy: FloatArray, norm: FloatArray,
                   valid: NDArray[np.bool_], use_views: NDArray[np.bool_], geo: FrameGeometry,
                   threshold: float, names: FloatArray | None = None, inlier_sigmas: float = 4.0,
                   ) -> tuple[NDArray[np.int64], FloatArray, NDArray[np.bool_], FloatArray]:
    """2D labels of the associated keypoints, view by view: each takes the candidate nearest its 3D point's
    reprojection (within ``threshold``), no candidate for two keypoints (Hungarian), and its 3D point is
    triangulated again from its labels.

    A 3D hypothesis was built from the candidates that fitted it within the
    threshold; where two markers' spots are close in a view it can hold the
    neighbour's spot, which the joint per-view assignment gives back. A spot
    within the threshold of two points' reprojections is left to neither
    (they overlap in that view; both are labelled by their reprojection).
    Where several spots are within reach, ``names`` (V, P, M; squared
    standard scores; the label noise is ``threshold / inlier_sigmas``) adds what a
    pose model's names say (:func:`_name_costs`): with two or three views
    many spots fit a point's reprojection, and the model's name is then the
    better evidence.
    Returns ``cand`` (V, P), the new points (P, 3) (NaN where fewer than two
    views keep a label: the hypothesis' point stands) and the views (V, P)
    whose spot is such a shared one (it counts for the point; the caller
    labels the view by the reprojection), and the new points' reprojections (V, P, 2) (NaN where the point
    is NaN; for an unchanged point, the hypothesis' own), which the caller would otherwise project again.
    """
    from ethoscribe.pose.reasoner import _hungarian_with_none

    V = xy.shape[0]
    P = matched.shape[0]
    rows = np.flatnonzero(matched >= 0)
    Xm = pts.points3d[matched[rows]]
    proj = pts.projected[:, matched[rows]]  # V, G, 2
    cand = np.full((V, P), -1, np.int64)
    evidence = np.zeros((V, P), bool)  # views where the point's spot is shared with another point
    t2 = threshold ** 2
    d2 = (proj[:, :, None, :] - xy[:, None, :, :]) ** 2  # V, G, M: x^2 + y^2 (= the sum over the pair)
    d2 = d2[..., 0] + d2[..., 1]
    with np.errstate(invalid="ignore"):
        near = (d2 <= t2) & valid[:, None, :] & np.asarray(use_views, bool)[:, None, None]
        # a spot that two points project onto where they overlap in this view (one marker maybe hidden behind
        # the other) is evidence for neither: both get their reprojection
        pp = (proj[:, :, None, :] - proj[:, None, :, :]) ** 2  # V, G, G
        pp = pp[..., 0] + pp[..., 1]
    idx_g = np.arange(len(rows))
    pp[:, idx_g, idx_g] = np.inf
    with np.errstate(invalid="ignore"):
        overlap = (pp <= t2).any(axis=2)  # V, G
    shared = (near & overlap[:, :, None]).sum(axis=1) >= 2  # V, M
    n_row = near.sum(axis=2)
    n_col = near.sum(axis=1)
    has = near.any(axis=(1, 2))
    simple = (n_row <= 1).all(axis=1) & (n_col <= 1).all(axis=1)
    # views where nothing is contested: each point takes the one spot within reach (all such views at once)
    vs, g, m = np.nonzero(near & (has & simple)[:, None, None])
    cand[vs, rows[g]] = m
    evidence[vs, rows[g]] = shared[vs, m]
    contested = np.flatnonzero(has & ~simple)
    if contested.size:
        d_near = np.where(near, d2, np.inf)
    for v in contested:
        sub_r = np.flatnonzero(n_row[v] > 0)
        sub_c = np.flatnonzero(n_col[v] > 0)
        c = d_near[v][np.ix_(sub_r, sub_c)]
        if names is not None:
            c = c + names[v][np.ix_(rows[sub_r], sub_c)] * (t2 / inlier_sigmas ** 2)
        choice, _ = _hungarian_with_none(c, t2)
        ok = choice >= 0
        g, m = sub_r[ok], sub_c[choice[ok]]
        cand[v, rows[g]] = m
        evidence[v, rows[g]] = shared[v, m]
    # triangulate again from the labels, where they differ from the hypothesis' own support
    X = np.full((P, 3), np.nan)
    changed = (cand[:, rows] != pts.support[:, matched[rows]]).any(axis=0)
    X[rows[~changed]] = Xm[~changed]
    X_px = np.full((V, P, 2), np.nan)  # the points' reprojections (the hypothesis' where it stands)
    X_px[:, rows[~changed]] = proj[:, ~changed]
    if changed.any():
        cr = rows[changed]
        sub = cand[:, cr]
        w = (sub >= 0).astype(float)
        idx = np.maximum(sub, 0)
        vv = np.arange(V)[:, None]
        nsel = np.where((sub >= 0)[..., None], norm[vv, idx], np.nan)
        Xn = geo.dlt(geo._gram(nsel, sub >= 0), w)
        X[cr] = Xn
        # keep a label only if it agrees with the new point too
        pr, _ = geo.project(Xn)
        X_px[:, cr] = pr
        lab = np.where((sub >= 0)[..., None], xy[vv, idx], np.nan)
        e = np.linalg.norm(pr - lab, axis=-1)
        with np.errstate(invalid="ignore"):
            bad = (sub >= 0) & ~(e <= threshold)
        sub = sub.copy()
        sub[bad] = -1
        cand[:, cr] = sub
    few = (cand[:, rows] >= 0).sum(axis=0) < 2
    X[rows[few]] = np.nan
    evidence &= cand >= 0
    return cand, X, evidence, X_px


def _name_costs(ctx: FrameContext) -> FloatArray | None:
    """(V, P, M) cost of labelling keypoint ``p`` with candidate ``m`` by the names a pose model gave it (None: no names)."""
    if not (ctx.hint_keypoint >= 0).any():
        return None
    V, I, K, M = ctx.shape
    yes, no = ctx.hint_costs
    hk = ctx.hint_keypoint[:, None, None, :]
    cost = np.where(hk < 0, 0.0, np.where(hk == np.arange(K)[None, None, :, None], yes, no))  # V, 1, K, M
    cost = np.broadcast_to(cost, (V, I, K, M))
    if I > 1:
        yes, no = ctx.hint_individual_costs
        hi = ctx.hint_individual[:, None, None, :]
        cost = cost + np.where(hi < 0, 0.0, np.where(hi == np.arange(I)[None, :, None, None], yes, no))
    return cost.reshape(V, I * K, M)


def _same_marker_radius(geo: FrameGeometry, pts: MarkerPoints, threshold: float) -> float:
    """World distance below which two hypotheses are one marker: the inlier threshold at the points' depth."""
    if pts.points3d.shape[0] == 0:
        return 0.0
    _, depth = geo.project(pts.points3d)
    ppu = geo.pixels_per_unit(depth)
    with np.errstate(invalid="ignore"):
        med = float(np.nanmedian(ppu)) if np.isfinite(ppu).any() else np.nan
    return float(threshold / med) if np.isfinite(med) and med > 0 else 0.0


def _ambiguous_spots(cand: NDArray[np.int64], got: NDArray[np.bool_], proj: FloatArray, xy: FloatArray,
                     predicted: FloatArray, others: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(V, P) labels of associated points (``got``) whose spot is within ``AMBIGUOUS_RATIO`` times its distance to the
    point's own reprojection ``proj`` (V, P, 2) of the place ``predicted`` (V, Q, 2) of one of the ``others`` (Q,)
    (keypoint ``q % P``; a keypoint is not its own rival)."""
    out = np.zeros(cand.shape, bool)
    vv, pp = np.nonzero((cand >= 0) & got[None, :])
    qq = np.flatnonzero(others)
    if not vv.size or not qq.size:
        return out
    spot = xy[vv, cand[vv, pp]]  # n, 2
    dv = spot - proj[vv, pp]
    own2 = np.einsum("ij,ij->i", dv, dv)
    dd = spot[:, None, :] - predicted[:, qq][vv]  # n, U, 2
    d2 = np.einsum("iuj,iuj->iu", dd, dd)
    d2[(qq % cand.shape[1])[None, :] == pp[:, None]] = np.inf
    with np.errstate(invalid="ignore"):
        near = np.fmin.reduce(d2, axis=1) < association.AMBIGUOUS_RATIO ** 2 * own2
    out[vv[near], pp[near]] = True
    return out


def _fill_candidates(cand: NDArray[np.int64], matched: NDArray[np.int64], support: NDArray[np.int64]) -> None:
    """Set ``cand`` (V, P) in place to the per-view candidates of each keypoint's matched point (-1 none)."""
    cand[:] = -1
    got = matched >= 0
    cand[:, got] = support[:, matched[got]]


def refine_frame(
    ctx: FrameContext,
    assignment: Assignment,
    norm: FloatArray,
    geo: FrameGeometry,
    threshold: float,
    use_views: NDArray[np.bool_],
    prior: Prior | None = None,
    boxes: RegionBoxes | None = None,
    points: MarkerPoints | None = None,
    body: BodyPrior | None = None,
    structure: BodyStructure | None = None,
    same_radius: float | None = None,
    inlier_sigmas: float = 4.0,
) -> FrameResult:
    """Stage 4: verify the reasoner's assignment across views and repair it.

    1. **3D points**: candidates of the usable views are matched across views
       (:meth:`FrameGeometry.match_points`): every epipolar-consistent pair is
       triangulated and counts the views that have a candidate at its
       reprojection; best-supported points first.
    2. **association**: keypoints (all animals together) are matched to those
       points by the Hungarian algorithm on the costs of
       :func:`~ethoscribe.pose.association.association_cost` (motion, shape
       context, rigid context, support, envelope, and the reasoner's choice
       and a pose model's names as soft evidence; "no point" costs
       ``gate**2``). This enumerates every alternative at once: a left/right
       swap, another candidate in a view, or a whole-animal identity swap all
       show as the reasoner's labels disagreeing with the chosen point.
    3. **structure repair** (:func:`~ethoscribe.pose.association.repair`):
       where the result breaks the body's history-free structure (rigid
       distances, left/right and front/back order), tracks are renamed or
       keypoints reassigned; renamed tracks are reported in ``relabel`` so
       the tracker exchanges their state too; so are two tracks each on the
       other's place in the body (:func:`~ethoscribe.pose.association.exchange_back`,
       a paw and a back marker exchanged). Then a track that sits on the
       marker of a keypoint without a point, far from its own place in the
       body and at that keypoint's, is handed to it
       (:func:`~ethoscribe.pose.association.hand_back`, reported in
       ``handed``: the tracker gives the lost keypoint the track's state).
       Last, a rigid group of keypoints (the ears and the front back
       marker) with a member without a point is re-associated as a whole
       where free points complete it at its rigid distances
       (:func:`~ethoscribe.pose.association.complete_rigid`, reported in
       ``reassociated``).
    4. **labels** (:func:`_refine_labels`): each associated point takes, view
       by view, the candidate nearest its reprojection (no candidate for two
       points; a spot two overlapping points share labels neither) and is
       triangulated again from its labels. A keypoint without a point keeps
       the reasoner's labels (unverified). Views of a point without a label,
       or whose spot another keypoint is expected about as close to
       (``AMBIGUOUS_RATIO``), get the reprojection (stage ``reprojection``)
       when it is in the image.

    Parameters
    ----------
    ctx, assignment
        The frame and the reasoner's stage-3 answer.
    norm
        (V, M, 2) normalised coordinates of the frame's candidates.
    geo
        The rig's per-frame geometry.
    threshold
        Inlier threshold (px).
    use_views
        (V,) cameras used for 3D (not suspect); labels of the others are the
        reasoner's, unverified.
    prior
        The motion/template expectation (:class:`Prior`); without it the
        association uses the reasoner's agreement and support only.
    boxes
        The stage-1 boxes (candidates outside every box are not matched).
    points
        The frame's 3D points, if already matched (the same for every pass
        over the frame); otherwise they are matched here from the candidates
        of the usable views inside some region box.
    body
        The online body model (:class:`~ethoscribe.pose.association.BodyPrior`)
        for the shape context; None: no shape context.
    structure
        The history-free body structure
        (:class:`~ethoscribe.pose.association.BodyStructure`); None: no repair.
    same_radius
        World distance below which two hypotheses are one marker (for the
        association margin); default: the threshold at the points' depth.
    inlier_sigmas
        ``threshold`` in label-noise sigmas (:attr:`PoseConfig.inlier_sigmas`),
        to weigh a pose model's names against distances.
    """
    V, I, K, M = ctx.shape
    P = I * K
    xy = ctx.cand_xy
    reasoner = assignment.cand.reshape(V, P)
    conflict = (assignment.conflict if assignment.conflict is not None else np.zeros((V, I, K), bool)).reshape(V, P)
    stage = np.where(conflict, AGREEMENT, ASSIGNMENT).astype(np.int8)
    events: dict[str, Any] = {}
    gate2 = ctx.gate ** 2

    if points is None:
        usable = ctx.cand_valid & use_views[:, None]
        if boxes is not None:
            from ethoscribe.pose.reasoner import in_boxes

            usable &= in_boxes(ctx, boxes.boxes).any(axis=(1, 2))
        # reasoner labels always compete, even outside the boxes
        vv, pp = np.nonzero(reasoner >= 0)
        usable[vv, reasoner[vv, pp]] |= ctx.cand_valid[vv, reasoner[vv, pp]] & use_views[vv]
        points = geo.match_points(norm, xy, usable, threshold, disjoint=True)
    pts = points
    N = pts.points3d.shape[0]

    cand = np.full((V, P), -1, np.int64)
    matched = np.full(P, -1, np.int64)
    margin = np.full(P, np.nan)
    relabel: list[tuple[int, int, int]] = []
    handed: list[tuple[int, int, int]] = []
    reassociated: list[tuple[int, int, int]] = []
    pre_matched = np.full(P, -1, np.int64)
    pre_conf = np.zeros(P, bool)
    if N:
        shape = shape_context(pts.points3d, body).reshape(P, N) if body is not None else None
        cost = association_cost(ctx, reasoner, pts, prior, body, gate2, structure, shape)
        matched = _associate(cost, pts.support, gate2)
        got = matched >= 0
        cand[:, got] = pts.support[:, matched[got]]
        pre_matched = matched.copy()
        same = _same_marker_radius(geo, pts, threshold) if same_radius is None else same_radius
        margin = association_margin(cost, matched, gate2, pts.points3d, same)
        pre_conf = confident_points(matched, margin, pts.n_support, int(use_views.sum()))
        if structure is not None and association.REPAIR:
            evidence_k = semantic_cost(ctx, reasoner, pts)  # what names a hypothesis, whatever the motion
            if shape is not None:
                evidence_k = evidence_k + association.SHAPE_WEIGHT * np.where(np.isfinite(shape), shape, 0.0)
            new_m, moves, swaps = repair(cost, matched, pts.points3d, pts.support, structure, I, K, gate2, evidence_k)
            if moves or swaps:
                matched = new_m
                _fill_candidates(cand, matched, pts.support)
            if moves:
                events["structure_repairs"] = [[ctx.individuals[a], ctx.keypoints[k], int(h0), int(h1)]
                                               for a, k, h0, h1 in moves]
            if swaps:
                relabel = swaps
                events["relabelled"] = [[ctx.individuals[a], ctx.keypoints[k1], ctx.keypoints[k2]] for a, k1, k2 in swaps]
            exchanged = exchange_back(matched, pts.points3d, structure, I, K,
                                      prior.template.reshape(I, K, 3) if prior is not None else None)
            if exchanged:
                _fill_candidates(cand, matched, pts.support)
                relabel = relabel + exchanged
                events["exchanged"] = [[ctx.individuals[a], ctx.keypoints[j], ctx.keypoints[k]]
                                       for a, j, k in exchanged]
            # a track on the marker of a lost keypoint, far from its own place in the body, is that keypoint's
            if body is not None:  # the online template's places too: where each keypoint was last seen on the body
                nb = body.neighbours
                current = _einsum("aij,akj->aki", body.rotation, body.body) + body.translation[:, None]
            else:
                nb, current = template_neighbours(structure.seed_shape), None
            handed = hand_back(matched, pts.points3d, structure, nb, I, K, current)
            if handed:
                _fill_candidates(cand, matched, pts.support)
                events["handed_back"] = [[ctx.individuals[a], ctx.keypoints[k], ctx.keypoints[j]] for a, k, j in handed]
            reassociated = complete_rigid(matched, pts.points3d, pts.support, structure, I, K)
            if reassociated:
                _fill_candidates(cand, matched, pts.support)
                events["reassociated"] = [[ctx.individuals[a], ctx.keypoints[k], int(s)] for a, k, s in reassociated]
        if not np.array_equal(matched, pre_matched):
            margin = association_margin(cost, matched, gate2, pts.points3d, same)
    X_ref = X_ref_px = None
    evidence = np.zeros((V, P), bool)
    if N and association.LABEL_REFINE and (matched >= 0).any():
        cand, X_ref, evidence, X_ref_px = _refine_labels(matched, pts, xy, norm, ctx.cand_valid, use_views, geo,
                                                         threshold, _name_costs(ctx), inlier_sigmas)
    # keypoints without a point keep the reasoner's labels where no point took the candidate
    taken = np.zeros((V, M), bool)
    v2, p2 = np.nonzero(cand >= 0)
    taken[v2, cand[v2, p2]] = True
    keep = (matched < 0)[None, :] & (reasoner >= 0) & association.KEEP_UNVERIFIED
    keep &= ~taken[np.arange(V)[:, None], np.maximum(reasoner, 0)]
    cand = np.where(keep, reasoner, cand)
    # unusable (suspect) views: the reasoner's label, unless a point took that candidate
    sus = ~use_views
    if sus.any():
        r_ok = (reasoner >= 0) & ~taken[np.arange(V)[:, None], np.maximum(reasoner, 0)]
        cand = np.where(sus[:, None] & (cand < 0) & r_ok, reasoner, cand)

    changed = (cand != reasoner) & (cand >= 0)
    stage = np.where(changed, REFINEMENT, stage).astype(np.int8)
    if changed.any():
        kinds = []
        sym = {frozenset(s) for s in ctx.symmetry}
        vc, pc = np.nonzero(changed)
        # the keypoint the reasoner gave each new candidate to (the last one, if several), -1: none
        hit = reasoner[vc] == cand[vc, pc][:, None]  # changed, P
        owner = np.where(hit.any(axis=1), P - 1 - np.argmax(hit[:, ::-1], axis=1), -1)
        for v, p, prev in zip(vc.tolist(), pc.tolist(), owner.tolist()):
            c = int(cand[v, p])
            if prev < 0:
                kind = "other_candidate"
            elif prev // K != p // K:
                kind = "identity_swap"
            elif frozenset((prev % K, p % K)) in sym:
                kind = "left_right"
            else:
                kind = "keypoint_swap"
            old = int(reasoner[v, p])
            kinds.append([ctx.views[v], ctx.individuals[p // K], ctx.keypoints[p % K],
                          int(ctx.cand_id[v, old]) if old >= 0 else -1, int(ctx.cand_id[v, c]), kind])
        events["changed"] = kinds
    dropped = (reasoner >= 0) & (cand < 0)
    if dropped.any():
        events["dropped"] = int(dropped.sum())

    # the 3D point of a keypoint is its matched point (DLT over its supporting candidates)
    X = np.full((P, 3), np.nan)
    got = matched >= 0
    if N:
        X[got] = pts.points3d[matched[got]]
    # its reprojection: the hypothesis' (projected once per frame) unless the labels moved the point
    proj = np.full((V, P, 2), np.nan)
    from_pts = got.copy()
    if X_ref is not None:
        X = np.where(np.isfinite(X_ref), X_ref, X)
        from_pts &= ~np.isfinite(X_ref).any(axis=-1)
        moved = np.isfinite(X).any(axis=-1) & ~from_pts
        if moved.any():
            if X_ref_px is not None and np.isfinite(X_ref[moved]).all():  # X = X_ref there: its reprojection
                proj[:, moved] = X_ref_px[:, moved]
            else:
                proj[:, moved] = geo.project(X[moved])[0]
    if N:
        proj[:, from_pts] = pts.projected[:, matched[from_pts]]
    lab_px = _gather(xy, cand)
    dd = proj - lab_px
    err_all = np.sqrt(dd[..., 0] ** 2 + dd[..., 1] ** 2)
    inl = np.zeros((V, P), bool)
    if N:
        inl[:, got] = ((cand[:, got] >= 0) & use_views[:, None]) if X_ref is not None else (pts.support[:, matched[got]] >= 0)
    tri = Triangulation(X, inl, np.where(np.isfinite(err_all), err_all, np.nan), inl.sum(axis=0).astype(np.int64))
    rd = proj - _gather(xy, reasoner)
    first_err = np.where(reasoner >= 0, np.sqrt(rd[..., 0] ** 2 + rd[..., 1] ** 2), np.nan)
    first_inl = np.zeros((V, P), bool)
    with np.errstate(invalid="ignore"):
        first_inl = (first_err <= threshold) & use_views[:, None]

    if prior is not None and got.any():
        # a point's spot may be another keypoint's marker when that keypoint is expected about as close to it (its
        # prediction, if it was tracked, or its point's reprojection): a marker hidden in this view leaves the point
        # a neighbour's spot within the inlier threshold. The spot still counts for the point (the tracker is not
        # changed); the label is the reprojection
        rivals = np.concatenate([ctx.predicted_px.reshape(V, P, 2), np.where(got[None, :, None], proj, np.nan)], axis=1)
        evidence |= _ambiguous_spots(cand, got, proj, xy, rivals, np.r_[~np.asarray(prior.weak, bool), got]) \
            & use_views[:, None]
    # views of a 3D point without a label (or whose spot two points share): its reprojection, when inside the image
    if evidence.any():
        cand = np.where(evidence, -1, cand)
        lab_px = np.where(evidence[..., None], np.nan, lab_px)
    label = lab_px
    with np.errstate(invalid="ignore"):
        inside = geo.rig.in_image(proj)
    reproj = use_views[:, None] & (cand < 0) & (tri.n_inliers >= 2)[None, :] & inside
    errors = np.where(cand >= 0, tri.errors, np.nan)
    label = np.where(reproj[..., None], proj, label)
    stage = np.where(reproj, REPROJECTION, stage).astype(np.int8)
    if reproj.any():
        events["reprojected"] = int(reproj.sum())
    return FrameResult(
        label_xy=label.reshape(V, I, K, 2), cand=cand.reshape(V, I, K), stage=stage.reshape(V, I, K),
        conflict=conflict.reshape(V, I, K), errors=errors.reshape(V, I, K),
        first_errors=first_err.reshape(V, I, K), first_inliers=first_inl.reshape(V, I, K), tri=tri,
        reprojected=reproj.reshape(V, I, K), events=events, margin=margin, relabel=relabel, handed=handed,
        reassociated=reassociated,
        proposed=np.where((pre_conf & (pre_matched >= 0))[:, None], pts.points3d[np.maximum(pre_matched, 0)]
                          if N else np.nan, np.nan).reshape(I, K, 3),
        confident=confident_points(matched, margin, pts.n_support, int(use_views.sum()))
        & ~structure_violations(pts.points3d, matched, structure, I, K),
    )


def settle_view_labels(geo: FrameGeometry, out: dict[str, Any], f: dict[str, Any], b: dict[str, Any],
                       confirmed: NDArray[np.bool_], suspect: NDArray[np.bool_] | None = None) -> int:
    """Where both passes put a keypoint on the same 3D point (``confirmed``, (T, I, K)) but labelled a view with
    different candidates (or one with a candidate, the other with none), that view's spot is in doubt: its label
    becomes the point's reprojection (no label when it falls outside the image). ``out`` (the merged frame arrays,
    ``xy`` (T, V, I, K, 2), ``cid``, ``stage``, ``err`` (T, V, I, K), ``X`` (T, I, K, 3)) is changed in place;
    ``f`` and ``b`` are the passes' arrays; ``suspect`` (V,) cameras left alone. Returns the number of labels
    changed.
    """
    differ = confirmed[:, None] & (f["cid"] != b["cid"]) & (out["stage"] != SEED)
    if suspect is not None:  # a suspect camera's labels are not the points' (its calibration is off)
        differ &= ~np.asarray(suspect, bool)[None, :, None, None]
    tt, vv, ii, kk = np.nonzero(differ)
    if not tt.size:
        return 0
    X = out["X"][tt, ii, kk]
    proj, _ = geo.project(X)  # V, n, 2
    xy = proj[vv, np.arange(tt.size)]
    rig = getattr(geo, "rig", None)
    inside = np.isfinite(xy).all(-1)
    if rig is not None:
        inside &= rig.in_image(proj)[vv, np.arange(tt.size)]
    out["cid"][tt, vv, ii, kk] = -1
    out["err"][tt, vv, ii, kk] = np.nan
    out["xy"][tt, vv, ii, kk] = np.where(inside[:, None], xy, np.nan)
    out["stage"][tt, vv, ii, kk] = np.where(inside, REPROJECTION, AGREEMENT)
    return int(tt.size)
