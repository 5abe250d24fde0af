"""The four stages of the pose pipeline, each a function with a typed input and output.

Stages 1-3 ask a :class:`~ethoscribe.pose.reasoner.Reasoner` and check its
answer on receipt (:func:`locate_regions`, :func:`assign_candidates`,
:func:`agree`: shapes, candidate ids, no candidate used twice); stage 4
(:func:`refine_frame`) is geometry and always runs: it matches the frame's
candidates across views into 3D points and associates every keypoint of
every animal with one of them (or none), using the motion prediction, the
body template, the reasoner's answer and, for pose-model predictions, the
model's keypoint names as evidence. Whatever the reasoner answered that the
cross-view geometry does not support is replaced (left/right swaps, another
keypoint's or another animal's marker, a reflection), and each replacement
is recorded for the trace; :class:`ShapeCheck` puts back keypoints that a
fast rotation left on each other's markers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ethoscribe.errors import EthoscribeError
from ethoscribe.pose.geometry import FrameGeometry, MarkerPoints, Triangulation
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
    cand = cand.astype(np.int64)
    bad = (cand >= M) | (cand < -1)
    if bad.any():
        raise ReasonerAnswerError(f"reasoner {reasoner.name!r}, frame {ctx.frame}: {what} names candidates that do not exist")
    vv = np.broadcast_to(np.arange(V)[:, None, None], cand.shape)
    usable = np.where(cand >= 0, ctx.cand_valid[vv, np.maximum(cand, 0)], True)
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
            seen: set[int] = set()
            for i in order:
                c = int(flat[i])
                if c < 0:
                    continue
                if c in seen:
                    flat[i] = -1
                    conflict[v].reshape(-1)[i] = True
                seen.add(c)
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
    changed (for the trace).
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


@dataclass(frozen=True)
class Prior:
    """What the motion model and the body template expect of each keypoint's 3D point (P = I*K).

    ``position`` (P, 3) and ``sigma`` (P,) the motion prediction and its
    standard deviation (world units, label noise included); ``template``
    (P, 3) and ``template_sigma`` (P,) the body template placed on the
    prediction; NaN: no expectation. ``weak`` (P,): keypoints not tracked in
    the previous frame (their prediction is a guess).
    """

    position: FloatArray
    sigma: FloatArray
    template: FloatArray
    template_sigma: FloatArray
    weak: NDArray[np.bool_]


#: weights of stage 4's association cost (squared standard scores, like the reasoner's)
AGREE_BONUS = 1.0     # per view where the reasoner chose the point's candidate
SUPPORT_BONUS = 0.5   # per supporting view beyond two
TEMPLATE_WEIGHT = 0.5
HINT_WEIGHT = 2.0     # per supporting view whose candidate a pose model named this (-) or another (+) keypoint


class ShapeCheck:
    """Local body-shape check: are a keypoint and its template neighbours where the template says?

    For each keypoint ``k`` the *group* is ``k`` and its two nearest
    keypoints in the seed template, the *anchors* the two nearest of the
    steadier half of the keypoints (least seed spread). Each permutation of
    the group's 3D points (anchors fixed) is fitted rigidly (Kabsch, no
    reflection) to the template; a permutation replaces the current one when
    the current fit's RMS residual exceeds three times the residual the same
    fit has on the seed frames and the permutation at least halves it. A fast rotation of
    the head can leave three keypoints each on its neighbour's marker with
    every view agreeing; the rigid neighbourhood cannot be rotated that way.
    """

    def __init__(self, template: FloatArray, spread: FloatArray, seeds: FloatArray | None = None) -> None:
        import itertools

        self.template = template  # I, K, 3
        I, K, _ = template.shape
        self.K = K
        from ethoscribe.pose.model import _nanmean0

        mean = _nanmean0(template)
        d = np.linalg.norm(mean[:, None] - mean[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        d = np.where(np.isfinite(d), d, np.inf)
        self.ok = K >= 5 and np.isfinite(mean).all()
        if not self.ok:
            return
        near = np.argsort(d, axis=1, kind="stable")
        self.groups = np.concatenate([np.arange(K)[:, None], near[:, :2]], axis=1)  # K, 3
        # anchors: the two nearest of the steadier half of the keypoints (least seed spread), outside the group
        steady = spread <= np.median(spread)
        anchors = []
        for k in range(K):
            opts = [int(j) for j in near[k] if steady[j] and j not in self.groups[k] and np.isfinite(d[k, j])]
            opts += [int(j) for j in near[k] if j not in opts and j not in self.groups[k] and np.isfinite(d[k, j])]
            anchors.append(opts[:2])
        self.anchors = np.asarray(anchors, dtype=np.int64)  # K, 2
        self.perms = np.array(list(itertools.permutations(range(3))), dtype=np.int64)  # 6, 3 (first: identity)
        self.scale = np.full(K, np.nan)
        if seeds is not None:
            self.scale = self._seed_scale(seeds)
        floor = 0.02 * float(np.nanmedian(np.linalg.norm(mean - mean.mean(axis=0), axis=-1)))
        self.scale = np.where(np.isfinite(self.scale), np.maximum(self.scale, floor), np.sqrt(np.mean(spread[self.groups] ** 2, axis=1)))

    def _seed_scale(self, seeds: FloatArray) -> FloatArray:
        """Median RMS residual of each neighbourhood's rigid fit over the seed poses (S, I, K, 3)."""
        from ethoscribe.pose.model import kabsch

        full = np.concatenate([self.groups, self.anchors], axis=1)  # K, 5
        res = []
        for a in range(seeds.shape[1]):
            src = np.broadcast_to(self.template[a][full][None], (seeds.shape[0],) + full.shape + (3,)).reshape(-1, 5, 3)
            dst = seeds[:, a][:, full].reshape(-1, 5, 3)
            r, t = kabsch(src, dst, np.ones(src.shape[:2]))
            fit = np.einsum("bij,bkj->bki", r, src) + t[:, None]
            res.append(np.sqrt(np.mean(np.sum((fit - dst) ** 2, -1), axis=1)).reshape(seeds.shape[0], -1))
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            return np.nanmedian(np.concatenate(res, axis=0), axis=0)

    def check(self, points: FloatArray, weak: NDArray[np.bool_] | None = None) -> list[tuple[int, int, int]] | None:
        """Keypoint moves (animal, from, to) that restore local shapes, or None.

        ``points`` (I, K, 3); ``weak`` (I, K): keypoints whose motion
        prediction is not to be trusted (recently lost, or far from their
        prediction); only groups holding one are checked, so a shape that the
        template does not know (a pose absent from the seeds) cannot override
        confident tracking.
        """
        if not self.ok:
            return None
        from ethoscribe.pose.model import kabsch

        I, K = points.shape[:2]
        G, A, Pm = self.groups, self.anchors, self.perms
        out: list[tuple[int, int, int]] = []
        for a in range(I):
            full = np.concatenate([G, A], axis=1)  # K, 5
            have = np.isfinite(points[a][full]).all(-1).all(-1)  # K
            if weak is not None:
                have &= weak[a][G].any(axis=1)
            if not have.any():
                continue
            ks = np.flatnonzero(have)
            src_idx = np.concatenate([G[ks][:, None, :].repeat(len(Pm), 1), A[ks][:, None, :].repeat(len(Pm), 1)], axis=2)
            dst_g = G[ks][:, Pm]  # k, 6, 3 (permuted group)
            dst_idx = np.concatenate([dst_g, A[ks][:, None, :].repeat(len(Pm), 1)], axis=2)  # k, 6, 5
            src = self.template[a][src_idx].reshape(-1, 5, 3)
            dst = points[a][dst_idx].reshape(-1, 5, 3)
            r, t = kabsch(src, dst, np.ones(src.shape[:2]))
            fit = np.einsum("bij,bkj->bki", r, src) + t[:, None]
            rms = np.sqrt(np.mean(np.sum((fit - dst) ** 2, axis=-1), axis=1)).reshape(len(ks), len(Pm))
            best = np.argmin(rms, axis=1)
            rb = rms[np.arange(len(ks)), best]
            gain = (best > 0) & (rms[:, 0] > 3 * self.scale[ks]) & (rb < 0.5 * rms[:, 0])
            moved: set[int] = set()
            for i in np.argsort(-(rms[:, 0] - rms[np.arange(len(ks)), best])):
                if not gain[i]:
                    continue
                g = G[ks[i]]
                if moved & set(g.tolist()):
                    continue
                pm = Pm[best[i]]
                for j in range(3):
                    if pm[j] != j:
                        out.append((a, int(g[pm[j]]), int(g[j])))
                moved |= set(g.tolist())
        return out or None


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
    V = support.shape[0]
    for it in range(rounds + 1):
        choice, c = _hungarian_with_none(cost, none_cost)
        rows = np.flatnonzero(choice >= 0)
        if rows.size < 2:
            return choice
        sup = support[:, choice[rows]]  # V, R
        clash_rows: set[int] = set()
        for v in range(V):
            col = sup[v]
            ok = col >= 0
            if ok.sum() < 2:
                continue
            vals, inv, cnt = np.unique(col[ok], return_inverse=True, return_counts=True)
            if (cnt < 2).all():
                continue
            rr = rows[ok]
            for g in np.flatnonzero(cnt > 1):
                members = rr[inv == g]
                worst = members[np.argsort(c[members])[1:]]  # all but the cheapest
                clash_rows.update(int(r) for r in worst)
        if not clash_rows:
            return choice
        for r in clash_rows:
            if it == rounds:
                choice[r] = -1
            else:
                cost[r, choice[r]] = np.inf
    return choice


def _gather(arr: FloatArray, cand: NDArray[np.int64]) -> FloatArray:
    """arr (V, M, 2) at cand (V, P) -> (V, P, 2), NaN for -1."""
    V = arr.shape[0]
    out = arr[np.arange(V)[:, None], np.maximum(cand, 0)]
    return np.where((cand >= 0)[..., None], out, np.nan)


def refine_frame(
    ctx: FrameContext,
    assignment: Assignment,
    norm: FloatArray,
    geo: FrameGeometry,
    threshold: float,
    use_views: NDArray[np.bool_],
    prior: Prior | None = None,
    boxes: RegionBoxes | None = None,
    shape: ShapeCheck | None = None,
    points: MarkerPoints | None = None,
) -> FrameResult:
    """Stage 4: verify the reasoner's assignment across views and repair it.

    1. **3D points**: candidates of the usable views (inside some region box)
       are matched across views (:meth:`FrameGeometry.match_points`): every
       epipolar-consistent pair is triangulated and counts the views that
       have a candidate at its reprojection; best-supported points first, no
       candidate in two points.
    2. **association**: keypoints (all animals together) are matched to those
       points by the Hungarian algorithm on a cost of squared standard scores:
       distance to the motion prediction, ``TEMPLATE_WEIGHT`` x distance to
       the body template, minus ``AGREE_BONUS`` per view in which the
       reasoner chose the point's candidate, minus ``SUPPORT_BONUS`` per
       supporting view beyond two, and (for pose-model predictions) minus or
       plus ``HINT_WEIGHT`` per supporting candidate that the model named this
       or another keypoint; farther than ``gate`` standard deviations
       from the prediction is not allowed, "no point" costs ``gate**2``.
       This enumerates every alternative at once: a left/right swap, another
       candidate in a view, or a whole-animal identity swap all show as the
       reasoner's labels disagreeing with the chosen point.
    3. **labels**: a matched keypoint takes the point's candidates; where the
       reasoner's label differs it is replaced (recorded). A keypoint without
       a point keeps the reasoner's labels (unverified: fewer than two
       agreeing views). Views of a point without a supporting candidate get
       the reprojection (stage ``reprojection``) when the point is in the image.

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
        The motion/template expectation; without it the association uses
        the reasoner's agreement and support only.
    boxes
        The stage-1 boxes (candidates outside every box are not matched).
    points
        The frame's 3D points, if already matched (the same for every pass
        over the frame); otherwise they are matched here from the candidates
        of the usable views inside some region box.
    shape
        The local shape check (:class:`ShapeCheck`): after the association,
        keypoints whose points are a permutation of their body-template
        neighbourhood (a label "conveyor" after a fast rotation) are put back.
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
    if N:
        cost = np.zeros((P, N))
        if prior is not None:
            d = np.linalg.norm(pts.points3d[None] - prior.position[:, None], axis=-1)
            z2 = (d / prior.sigma[:, None]) ** 2
            known = np.isfinite(prior.position).all(-1) & np.isfinite(prior.sigma)
            z2 = np.where(known[:, None], z2, 0.0)
            cost += np.where(np.isfinite(z2) & (z2 <= gate2), z2, np.inf)
            dt = np.linalg.norm(pts.points3d[None] - prior.template[:, None], axis=-1)
            t2 = (dt / prior.template_sigma[:, None]) ** 2
            cost += TEMPLATE_WEIGHT * np.where(np.isfinite(t2), np.minimum(t2, gate2), 0.0)
        agree_n = ((reasoner[:, :, None] == pts.support[:, None, :]) & (reasoner[:, :, None] >= 0)).sum(axis=0)
        cost -= AGREE_BONUS * agree_n
        cost -= SUPPORT_BONUS * (pts.n_support[None, :] - 2)
        if (ctx.hint_keypoint >= 0).any():  # predictions: the model's names are soft evidence here too
            vv_ = np.arange(V)[:, None]
            sup_ok = pts.support >= 0
            hk = np.where(sup_ok, ctx.hint_keypoint[vv_, np.maximum(pts.support, 0)], -1)  # V, N
            hi = np.where(sup_ok, ctx.hint_individual[vv_, np.maximum(pts.support, 0)], -1)
            kk = np.tile(np.arange(K), I)[:, None, None]
            ii = np.repeat(np.arange(I), K)[:, None, None]
            named = hk[None] >= 0
            term = np.where(named, np.where(hk[None] == kk, -1.0, 1.0), 0.0).sum(axis=1)
            if I > 1:
                term += np.where(hi[None] >= 0, np.where(hi[None] == ii, -1.0, 1.0), 0.0).sum(axis=1)
            cost += HINT_WEIGHT * term

        from ethoscribe.pose.reasoner import _hungarian_with_none

        matched = _associate(cost, pts.support, gate2)
        got = matched >= 0
        cand[:, got] = pts.support[:, matched[got]]
    if N and shape is not None:
        Y = np.where((matched >= 0)[:, None], pts.points3d[np.maximum(matched, 0)], np.nan).reshape(I, K, 3)
        weak = None
        if prior is not None:
            dz = np.linalg.norm(Y.reshape(-1, 3) - prior.position, axis=-1) / prior.sigma
            with np.errstate(invalid="ignore"):
                weak = (prior.weak | (dz > 2.0)).reshape(I, K)
        perm = shape.check(Y, weak)
        if perm is not None:
            new_m = matched.reshape(I, K).copy()
            swaps = []
            for a, k_from, k_to in perm:
                new_m[a, k_to] = matched.reshape(I, K)[a, k_from]
                swaps.append([ctx.individuals[a], ctx.keypoints[k_from], ctx.keypoints[k_to]])
            matched = new_m.reshape(-1)
            cand[:] = -1
            got = matched >= 0
            cand[:, got] = pts.support[:, matched[got]]
            events["shape_swaps"] = swaps
    # keypoints without a point keep the reasoner's labels where no point took the candidate
    taken = np.zeros((V, M), bool)
    v2, p2 = np.nonzero(cand >= 0)
    taken[v2, cand[v2, p2]] = True
    keep = (matched < 0)[None, :] & (reasoner >= 0)
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
        owner = {}
        for v, p in zip(*np.nonzero(reasoner >= 0)):
            owner[(int(v), int(reasoner[v, p]))] = int(p)
        for v, p in zip(*np.nonzero(changed)):
            c = int(cand[v, p])
            prev = owner.get((int(v), c))
            if prev is None:
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
    lab_px = _gather(xy, cand)
    proj, _ = geo.project(X)
    dd = proj - lab_px
    err_all = np.sqrt(dd[..., 0] ** 2 + dd[..., 1] ** 2)
    inl = np.zeros((V, P), bool)
    if N:
        inl[:, got] = pts.support[:, matched[got]] >= 0
    tri = Triangulation(X, inl, np.where(np.isfinite(err_all), err_all, np.nan), inl.sum(axis=0).astype(np.int64))
    rd = proj - _gather(xy, reasoner)
    first_err = np.where(reasoner >= 0, np.sqrt(rd[..., 0] ** 2 + rd[..., 1] ** 2), np.nan)
    first_inl = np.zeros((V, P), bool)
    with np.errstate(invalid="ignore"):
        first_inl = (first_err <= threshold) & use_views[:, None]

    # views of a 3D point without a label: its reprojection, when inside the image
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
        reprojected=reproj.reshape(V, I, K), events=events,
    )
