"""Reasoners: who answers stages 1-3 (where are the regions, which candidate is which keypoint).

A reasoner implements :class:`Reasoner`: three methods, each called once
per frame with a :class:`FrameContext` (every view, animal and region of the
frame) and returning a typed answer. :class:`GeometricReasoner` is the
deterministic default; a VLM reasoner (a later issue) implements the same
methods by showing crops to a model, and the pipeline treats its answers
exactly like the geometric ones: every answer is checked on receipt (shapes,
candidate ids, no candidate used twice) and then verified by stage 4's
cross-view geometry, which repairs or flags whatever it cannot confirm.

Costs of the geometric reasoner (all in units of a squared standard score,
so the terms add up like negative log-likelihoods; see :class:`CostWeights`):

- **motion**: ``d^2 / s^2`` with ``d`` the distance (px) of the candidate from
  the keypoint's predicted position (3D constant-velocity prediction
  projected into the view) and ``s`` the prediction's uncertainty in that
  view (the 3D residual scale learned online, times pixels per unit at the
  point's depth, combined with the label noise);
- **shape**: the same for the body template placed on the predicted pose
  (seed-learned shape; its uncertainty is the keypoint's seed spread plus
  the prediction's), weighted by ``shape`` (0.5);
- **appearance**: squared standard score of log intensity and log area
  against the keypoint's seed values in that view, capped at ``appearance_cap`` (4);
- **hints** (pose-model predictions): ``ctx.hint_costs`` when the
  candidate's ``hint_keypoint`` names the keypoint or another one, and
  ``ctx.hint_individual_costs`` for ``hint_individual``, times ``hint`` (1);
  the pipeline sets them from how often the model's names agree across views
  (:mod:`ethoscribe.pose.hints`);
- **no candidate** costs ``gate**2`` (16, i.e. 4 standard deviations: a
  correct candidate farther than that is rarer than 1 in 3000).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

FloatArray = NDArray[np.float64]
_BIG = 1e6


@dataclass(frozen=True, eq=False)
class FrameContext:
    """Everything a reasoner may use for one frame.

    Axes: V views, I individuals, K keypoints, R regions, M candidates (padded).

    Attributes
    ----------
    frame
        Frame index.
    views, individuals, keypoints, region_names
        Axis names.
    regions
        Keypoint indices of each region.
    region_of
        (K,) region index of each keypoint.
    symmetry
        Left/right keypoint index pairs.
    cand_xy
        (V, M, 2) candidate positions (distorted px), NaN padding.
    cand_valid
        (V, M) real and usable candidates.
    cand_id
        (V, M) candidate ids of the table (-1 padding).
    intensity, area
        (V, M) appearance (NaN unknown).
    hint_keypoint, hint_individual
        (V, M) keypoint / individual index a pose model gave (-1 none).
    score
        (V, M) a pose model's score (NaN none).
    hint_costs, hint_individual_costs
        (cost when a hint names the keypoint / animal, cost when it names
        another one); see :func:`ethoscribe.pose.hints.hint_costs`.
    predicted_px, predicted_sigma_px
        (V, I, K, 2) and (V, I, K): motion prediction and its uncertainty.
    template_px, template_sigma_px
        (V, I, K, 2) and (V, I, K): body template on the predicted pose.
    appearance_mu
        (V, K, 2) typical log intensity and log area (NaN: unknown);
        ``appearance_scale`` (2,) their spread.
    image_size
        (V, 2) width, height.
    gate
        Standard deviations beyond which "no candidate" is preferred.
    """

    frame: int
    views: tuple[str, ...]
    individuals: tuple[str, ...]
    keypoints: tuple[str, ...]
    region_names: tuple[str, ...]
    regions: tuple[tuple[int, ...], ...]
    region_of: NDArray[np.int64]
    symmetry: tuple[tuple[int, int], ...]
    cand_xy: FloatArray
    cand_valid: NDArray[np.bool_]
    cand_id: NDArray[np.int64]
    intensity: FloatArray
    area: FloatArray
    hint_keypoint: NDArray[np.int64]
    hint_individual: NDArray[np.int64]
    score: FloatArray
    predicted_px: FloatArray
    predicted_sigma_px: FloatArray
    template_px: FloatArray
    template_sigma_px: FloatArray
    appearance_mu: FloatArray
    appearance_scale: FloatArray
    image_size: NDArray[np.int64]
    gate: float = 4.0
    hint_costs: tuple[float, float] = (-2.0, 2.0)
    hint_individual_costs: tuple[float, float] = (-2.0, 2.0)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(V, I, K, M)."""
        return (len(self.views), len(self.individuals), len(self.keypoints), self.cand_xy.shape[1])


@dataclass(frozen=True, eq=False)
class RegionBoxes:
    """Stage 1 answer: ``boxes`` (V, I, R, 4) as x0, y0, x1, y1 px (NaN: no box)."""

    boxes: FloatArray
    note: str = ""


@dataclass(frozen=True, eq=False)
class Assignment:
    """Stage 2/3 answer: ``cand`` (V, I, K) index into the frame's candidate axis M (-1: none).

    ``cost`` (V, I, K) the cost of each choice (NaN if unknown); ``costs``
    (V, I, K, M) the full cost tensor when the reasoner has one (the
    geometric reasoner does; stage 3 uses it to resolve conflicts by total
    cost); ``conflict`` (V, I, K) keypoints whose candidate was contested.
    """

    cand: NDArray[np.int64]
    cost: FloatArray
    costs: FloatArray | None = None
    conflict: NDArray[np.bool_] | None = None


@runtime_checkable
class Reasoner(Protocol):
    """The interface of a stage-1-to-3 reasoner (see the module docstring)."""

    name: str

    def locate_regions(self, ctx: FrameContext) -> RegionBoxes:
        """Stage 1: a box per view, animal and body region."""
        ...

    def assign(self, ctx: FrameContext, boxes: RegionBoxes) -> Assignment:
        """Stage 2: candidates in each box to the region's keypoints ("none" allowed)."""
        ...

    def agree(self, ctx: FrameContext, boxes: RegionBoxes, assignment: Assignment) -> Assignment:
        """Stage 3: no candidate used twice; conflicts resolved; missing keypoints marked (-1)."""
        ...


@dataclass(frozen=True)
class CostWeights:
    """Weights of the geometric reasoner's cost terms (see the module docstring)."""

    shape: float = 0.5
    appearance: float = 1.0
    appearance_cap: float = 4.0
    hint: float = 1.0
    score: float = 1.0


def in_boxes(ctx: FrameContext, boxes: FloatArray) -> NDArray[np.bool_]:
    """(V, I, R, M): whether each candidate lies in each box."""
    x = ctx.cand_xy[:, None, None, :, 0]
    y = ctx.cand_xy[:, None, None, :, 1]
    b = boxes[..., None, :]
    with np.errstate(invalid="ignore"):
        inside = (x >= b[..., 0]) & (x <= b[..., 2]) & (y >= b[..., 1]) & (y <= b[..., 3])
    return inside & ctx.cand_valid[:, None, None, :]


class GeometricReasoner:
    """Deterministic reasoner: boxes from the motion prediction, Hungarian assignment, cost-based agreement.

    Parameters
    ----------
    weights
        Cost weights (:class:`CostWeights`).
    box_sigmas
        Half-width of a region box beyond its keypoints' predictions, in
        prediction standard deviations (default: the context's gate).
    """

    name = "geometric"

    def __init__(self, weights: CostWeights | None = None, box_sigmas: float | None = None) -> None:
        self.weights = weights or CostWeights()
        self.box_sigmas = box_sigmas

    # ------------------------------------------------------------ stage 1
    def locate_regions(self, ctx: FrameContext) -> RegionBoxes:
        """A box per view, animal and region: its keypoints' predictions +- ``box_sigmas`` prediction sigmas."""
        V, I, K, _ = ctx.shape
        k = ctx.gate if self.box_sigmas is None else self.box_sigmas
        pred = ctx.predicted_px
        half = k * ctx.predicted_sigma_px
        lo = pred - half[..., None]
        hi = pred + half[..., None]
        lo = np.where(np.isfinite(lo), lo, np.inf)
        hi = np.where(np.isfinite(hi), hi, -np.inf)
        boxes = np.full((V, I, len(ctx.regions), 4), np.nan)
        if ctx.regions and all(len(idx) for idx in ctx.regions):
            # every region's min / max at once: its keypoints side by side, reduced segment by segment
            order = np.concatenate([np.asarray(idx, np.int64) for idx in ctx.regions])
            starts = np.cumsum([0] + [len(idx) for idx in ctx.regions[:-1]])
            boxes[..., :2] = np.minimum.reduceat(lo[:, :, order], starts, axis=2)
            boxes[..., 2:] = np.maximum.reduceat(hi[:, :, order], starts, axis=2)
        else:
            for r, idx in enumerate(ctx.regions):
                ii = list(idx)
                boxes[:, :, r, :2] = lo[:, :, ii].min(axis=2)
                boxes[:, :, r, 2:] = hi[:, :, ii].max(axis=2)
        boxes[~np.isfinite(boxes)] = np.nan
        return RegionBoxes(boxes)

    # ------------------------------------------------------------ stage 2
    def costs(self, ctx: FrameContext) -> FloatArray:
        """The cost tensor (V, I, K, M) of every keypoint-candidate pair (inf for padding)."""
        w = self.weights
        c = ctx.cand_xy[:, None, None, :, :]  # V,1,1,M,2
        # squared distances: x^2 + y^2 (what np.sum over the pair gives, without a reduction per element)
        d2 = (c - ctx.predicted_px[:, :, :, None, :]) ** 2
        d2 = d2[..., 0] + d2[..., 1]
        cost = d2 / np.maximum(ctx.predicted_sigma_px, 1e-6)[..., None] ** 2
        if w.shape > 0:
            t2 = (c - ctx.template_px[:, :, :, None, :]) ** 2
            t2 = t2[..., 0] + t2[..., 1]
            tc = t2 / np.maximum(ctx.template_sigma_px, 1e-6)[..., None] ** 2
            cost = cost + w.shape * np.where(np.isfinite(tc), tc, 0.0)
        if w.appearance > 0 and np.isfinite(ctx.appearance_scale).any():
            feats = np.stack([np.log(np.maximum(ctx.intensity, 1e-6)), np.log(np.maximum(ctx.area, 1e-6))], axis=-1)  # V,M,2
            z = (feats[:, None, :, :] - ctx.appearance_mu[:, :, None, :]) / ctx.appearance_scale  # V,K,M,2
            z2 = np.where(np.isfinite(z), z * z, 0.0)
            z2 = z2[..., 0] + z2[..., 1]
            cost = cost + w.appearance * np.minimum(z2, w.appearance_cap)[:, None, :, :]
        # (the hint and score terms are zero without hints or scores, as for marker spots: not added then)
        if w.hint > 0 and (ctx.hint_keypoint >= 0).any():
            hk = ctx.hint_keypoint[:, None, None, :]
            kk = np.arange(ctx.shape[2])[None, None, :, None]
            yes, no = ctx.hint_costs
            cost = cost + w.hint * np.where(hk < 0, 0.0, np.where(hk == kk, yes, no))
        if w.hint > 0 and ctx.shape[1] > 1 and (ctx.hint_individual >= 0).any():
            hi = ctx.hint_individual[:, None, None, :]
            ii = np.arange(ctx.shape[1])[None, :, None, None]
            yes, no = ctx.hint_individual_costs
            cost = cost + w.hint * np.where(hi < 0, 0.0, np.where(hi == ii, yes, no))
        if w.score > 0 and np.isfinite(ctx.score).any():
            s = ctx.score
            pen = np.where(np.isfinite(s), 1.0 - np.clip(s, 0.0, 1.0), 0.0)
            cost = cost + w.score * pen[:, None, None, :]
        return np.where(ctx.cand_valid[:, None, None, :] & np.isfinite(cost), cost, np.inf)

    def assign(self, ctx: FrameContext, boxes: RegionBoxes) -> Assignment:
        """Each animal's keypoints in each view to the candidates in their regions' boxes.

        The regions of one animal in one view are solved as one Hungarian
        problem in which a keypoint may only take candidates inside its own
        region's box (and "none" at the gate cost): the same answer as
        solving region by region and then settling candidates claimed by two
        regions by total cost, in one call. Conflicts between animals are
        left to :meth:`agree`.
        """
        V, I, K, M = ctx.shape
        costs = self.costs(ctx)
        gate2 = ctx.gate ** 2
        inside = in_boxes(ctx, boxes.boxes)  # V,I,R,M
        allowed = inside[:, :, ctx.region_of, :]  # V, I, K, M
        self._inside = (ctx, boxes, inside)  # agree() asks again for the same frame
        masked = np.where(allowed, costs, np.inf)
        cand = np.full((V, I, K), -1, np.int64)
        cost = np.full((V, I, K), gate2)
        # what _hungarian_with_none does to each problem's costs, for all of them at once
        big = np.where(np.isfinite(masked), masked, _BIG)
        some = allowed.any(axis=2)  # V, I, M
        for v, a in zip(*np.nonzero(some.any(axis=2))):
            cols = np.flatnonzero(some[v, a])
            if K > 1:
                choice, c = _lsa_with_none(big[v, a][:, cols], gate2)
            else:
                choice, c = _hungarian_with_none(masked[v, a][:, cols], gate2)
            got = choice >= 0
            cand[v, a, got] = cols[choice[got]]
            cost[v, a] = c
        return Assignment(cand, cost, costs, np.zeros((V, I, K), bool))

    # ------------------------------------------------------------ stage 3
    def agree(self, ctx: FrameContext, boxes: RegionBoxes, assignment: Assignment) -> Assignment:
        V, I, K, M = ctx.shape
        cand = assignment.cand.copy()
        cost = assignment.cost.copy()
        conflict = np.zeros((V, I, K), bool) if assignment.conflict is None else assignment.conflict.copy()
        costs = assignment.costs if assignment.costs is not None else self.costs(ctx)
        dup_views = duplicated_views(cand)
        if not dup_views.size:
            return Assignment(cand, cost, costs, conflict)
        cached = getattr(self, "_inside", None)
        if cached is not None and cached[0] is ctx and cached[1] is boxes:
            inside = cached[2]
        else:
            inside = in_boxes(ctx, boxes.boxes)
        gate2 = ctx.gate ** 2
        for v in dup_views:
            flat = cand[v].reshape(-1)
            contested = np.bincount(flat[flat >= 0], minlength=M) > 1  # (M,) candidates claimed twice
            # every (animal, region) holding a contested candidate takes part, with all its keypoints
            hit = (cand[v] >= 0) & contested[np.maximum(cand[v], 0)]  # I, K
            aa, kk = np.nonzero(hit)
            groups = sorted({(int(a), int(ctx.region_of[k])) for a, k in zip(aa, kk)})
            ra = np.array([a for a, r in groups for _ in ctx.regions[r]], np.int64)
            rk = np.array([k for _, r in groups for k in ctx.regions[r]], np.int64)
            rr = np.array([r for _, r in groups for _ in ctx.regions[r]], np.int64)
            cols = np.flatnonzero(inside[v, ra, rr].any(axis=0))
            ok = inside[v, ra[:, None], rr[:, None], cols[None, :]]
            sub = np.where(ok, costs[v, ra[:, None], rk[:, None], cols[None, :]], np.inf)
            choice, c = _hungarian_with_none(sub, gate2)
            new = np.where(choice >= 0, cols[np.maximum(choice, 0)], -1)
            old = cand[v, ra, rk]
            conflict[v, ra, rk] |= ((old >= 0) & contested[np.maximum(old, 0)]) | (new != old)
            cand[v, ra, rk] = new
            cost[v, ra, rk] = c
        return Assignment(cand, cost, costs, conflict)


def duplicated_views(cand: NDArray[np.int64]) -> NDArray[np.int64]:
    """Views (indices) in which some candidate index is used more than once; cand (V, ...)."""
    V = cand.shape[0]
    flat = cand.reshape(V, -1)
    s = np.sort(flat, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    return np.flatnonzero(dup.any(axis=1))


def _hungarian_with_none(sub: FloatArray, none_cost: float) -> tuple[NDArray[np.int64], FloatArray]:
    """Optimal assignment of rows to columns where each row may take "none" at ``none_cost``.

    Returns the chosen column per row (-1 for none) and its cost.
    """
    n_rows, n_cols = sub.shape
    if n_rows == 1:  # one keypoint: the cheapest candidate, if it beats "none"
        row = np.where(np.isfinite(sub[0]), sub[0], np.inf)
        j = int(np.argmin(row)) if n_cols else -1
        if j >= 0 and row[j] < none_cost:
            return np.array([j], np.int64), np.array([row[j]])
        return np.array([-1], np.int64), np.array([none_cost])
    return _lsa_with_none(np.where(np.isfinite(sub), sub, _BIG), none_cost)


_DUMMY: dict[tuple[int, float], FloatArray] = {}


def _lsa_with_none(big: FloatArray, none_cost: float) -> tuple[NDArray[np.int64], FloatArray]:
    """:func:`_hungarian_with_none` of a problem with two or more rows whose costs are finite (``_BIG`` for
    "not allowed"): the rows' "none" columns appended (a row's own at ``none_cost``, the others' ``_BIG``),
    solved by ``linear_sum_assignment``. The solver takes microseconds on these small problems; the arrays
    around it are kept few (the "none" block is made once per size)."""
    n_rows, n_cols = big.shape
    dummy = _DUMMY.get((n_rows, none_cost))
    if dummy is None:
        dummy = np.full((n_rows, n_rows), _BIG)
        np.fill_diagonal(dummy, none_cost)
        dummy.flags.writeable = False
        if len(_DUMMY) < 256:
            _DUMMY[(n_rows, none_cost)] = dummy
    full = np.concatenate([big, dummy], axis=1)
    r, c = linear_sum_assignment(full)  # every row is assigned (more columns than rows): r = 0 .. n_rows - 1
    val = full[r, c]
    real = (c < n_cols) & (val < _BIG)
    return np.where(real, c, -1).astype(np.int64, copy=False), np.where(real, val, none_cost)
