"""A vision-language-model reasoner for pose stages 1-3, consulted only where the geometry is unsure.

:class:`VLMPoseReasoner` implements the pose pipeline's
:class:`~ethoscribe.pose.reasoner.Reasoner` protocol. For every frame it
first takes the :class:`~ethoscribe.pose.reasoner.GeometricReasoner`'s
answer, and puts a question to the model only where that answer is
doubtful; the model's answer then replaces the geometric one for that
region, and stage 4 (cross-view geometry, run by the pipeline as always)
verifies and overrides whatever the views do not support.

When the model is consulted (``PoseConsultPolicy.consult = "ambiguous"``, the default)
-----------------------------------------------------------------------------------------

- **stage 1, region box**: the region's box holds no candidate although
  candidates lie within ``search_scale`` times the box around it (the
  track was lost or the prediction is off). Question: a crop of that search
  window with the candidates drawn as numbered dots, "which dots lie on the
  ears of mouse0?" (prompt ``pose_regions``, answer :class:`RegionDots`).
  The box is *widened* to take in the chosen dots; it is never shrunk.
- **stage 2, assignment**: within one view, animal and region, the
  second-best assignment of candidates to keypoints costs less than
  ``margin`` more than the best (costs are squared standard scores, so a
  margin of 2 is a likelihood ratio of e = 2.7). This is exact: the
  second-best assignment (Murty's first partition) of the region's small
  cost matrix, with "no candidate" allowed at the gate cost. Question: a
  crop around the region's candidates drawn as numbered dots, "which dot is
  ear_left, which ear_right (or none)?" (prompt ``pose_assign``, answer
  :func:`keypoint_dots_model`, few-shot with the seed frames).
- **stage 3, agreement**: one candidate is claimed by two keypoints (of two
  regions or two animals). Question: "dot 1 was claimed by mouse0 ear_left
  and mouse1 ear_right: which is it (or neither)?" (prompt
  ``pose_conflict``, answer :func:`conflict_owner_model`, no examples). The
  losers give the candidate up; the geometric agreement settles the rest.

``consult = "always"`` asks every region of every frame (within the budget;
for experiments), ``"never"`` never asks (the geometric reasoner under
another name). ``stages`` limits the stages that may ask.

Why calls never scale with frames
---------------------------------

Questions are limited per run (``max_questions``, default 100) and per frame
and stage (``max_per_frame``, default 2); a stretch between seed frames is
tracked twice (forward and backward), and a question asked again (same
frame, view, dots) is answered from memory, not asked twice. After
``max_failures`` (2) consecutive unavailable answers (server down or too
slow) no more questions are asked in the run. When the budget is used up,
the geometric reasoner answers alone; the trace says so once, and
:meth:`VLMPoseReasoner.summary` counts what was not asked. With the
defaults a session costs at most 100 questions, whatever its length; only
sessions where the geometry is often unsure use them all.

Images
------

The picture of a view at a frame is, by ``images`` = ``"auto"``: the
session's body video of that view if it has one (a model sees the animal:
head, tail, paws), else its marker video, else a *canvas*: the frame's
candidates drawn as grey spots on black (what a marker video shows). A crop
around the dots (padding 30 % of their extent, at least 24 px) is scaled to
``image_px`` (384) on its long side, and each dot gets a ring and its number
(:func:`~ethoscribe.reasoning.images.draw_numbered_points`); the dots'
full-image coordinates are also listed in the text. Dots are numbered in
the order of their candidate ids, so the same question (same dots) gives the
same image and text in both tracking passes and on a rerun (the response
cache answers it).

Few-shot examples
-----------------

For stages 1 and 2, up to ``n_shots`` (2) seed frames of the same view
become examples: the same kind of picture and text, and the correct answer
as the assistant's turn. Their dots are the seed frame's candidates near
the region (with ``candidates`` given) matched to the seed labels within 4
px, or else the seed labels themselves. Examples are built once per view and
region and cached.

Trace and verification
----------------------

Each question is one record of the client's trace (``reasoner_trace.jsonl``):
``step`` (``pose_region``, ``pose_assign``, ``pose_conflict``), frame,
view, animal, region, the dots (candidate ids and positions), the geometric
reasoner's answer, the prompt version, the images' hashes, the raw and
parsed answers, ``source`` (model or fallback) and ``verification``
(whether the model agreed with the geometric reasoner). After the pipeline
ran, :meth:`VLMPoseReasoner.verify` compares every keypoint the model chose
with the final label (stage 4 and the merge of the two tracking passes) and
the pipeline trace's refinement events, writes a ``pose_verification``
record for each label that geometry overrode (with the kind: left_right,
keypoint_swap, identity_swap, other_candidate, dropped) and a summary
record, and returns the table. Nothing here measures how often a VLM is
right: that needs a VLM and ground truth (see the synthetic rig).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from scipy.optimize import linear_sum_assignment

from ethoscribe.pose.reasoner import Assignment, FrameContext, GeometricReasoner, RegionBoxes, duplicated_views, in_boxes
from ethoscribe.reasoning.client import ChatClient
from ethoscribe.reasoning.images import EncodedImage, crop_box, draw_numbered_points, encode_image
from ethoscribe.reasoning.messages import assistant, user
from ethoscribe.reasoning.prompts import Prompt, load_prompt
from ethoscribe.reasoning.schemas import register_schema
from ethoscribe.reasoning.steps import Consultant
from ethoscribe.reasoning.trace import emit

STAGES: tuple[str, ...] = ("region", "assignment", "agreement")
#: accounting / trace step of each stage's questions
STEP_NAMES = {"region": "pose_region", "assignment": "pose_assign", "agreement": "pose_conflict"}
VERIFICATION_FILE = "vlm_pose_verification.csv"
_BIG = 1e6
_FORBID = 1e9


# ====================================================================== answer schemas
@register_schema
class KeypointDots(BaseModel):
    """Stage 2 answer: keypoint name -> dot number (or null). Built per question by :func:`keypoint_dots_model`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    keypoints: ClassVar[tuple[str, ...]] = ()
    n_dots: ClassVar[int] = 0

    def choices(self) -> dict[str, int | None]:
        """keypoint name -> dot number (None: no dot)."""
        out: dict[str, int | None] = {}
        for fname, info in type(self).model_fields.items():
            out[info.alias or fname] = getattr(self, fname)
        return out

    @model_validator(mode="after")
    def _distinct(self) -> KeypointDots:
        used = [v for v in self.choices().values() if v is not None]
        dup = sorted({v for v in used if used.count(v) > 1})
        if dup:
            raise ValueError(f"dot(s) {dup} given to more than one keypoint; one dot can only be one keypoint")
        return self


def keypoint_dots_model(keypoints: Sequence[str], n_dots: int) -> type[KeypointDots]:
    """The answer model of a stage-2 question: one required field per keypoint, a dot number 1..n or null.

    Examples
    --------
    >>> M = keypoint_dots_model(["ear_left", "ear_right"], 3)
    >>> M.model_validate({"ear_left": 2, "ear_right": None}).choices()
    {'ear_left': 2, 'ear_right': None}
    >>> M.model_json_schema()["properties"]["ear_left"]["anyOf"][0]["enum"]
    [1, 2, 3]
    """
    if n_dots < 1:
        raise ValueError("a question needs at least one dot")
    Dot = Literal[tuple(range(1, int(n_dots) + 1))]  # type: ignore[valid-type]
    fields = {f"k{i}": (Dot | None, Field(..., alias=str(k), description=f"dot number of {k}, or null if no dot is it"))
              for i, k in enumerate(keypoints)}
    model = create_model("KeypointDots", __base__=KeypointDots, **fields)  # type: ignore[call-overload]
    model.keypoints = tuple(str(k) for k in keypoints)
    model.n_dots = int(n_dots)
    return model


@register_schema
class RegionDots(BaseModel):
    """Stage 1 answer: the dots that lie on the region. Built per question by :func:`region_dots_model`."""

    model_config = ConfigDict(extra="forbid")

    dots: list[int] = Field(default_factory=list, description="numbers of the dots on the region")

    @model_validator(mode="after")
    def _distinct(self) -> RegionDots:
        if len(set(self.dots)) != len(self.dots):
            raise ValueError("a dot is listed twice")
        return self


def region_dots_model(n_dots: int, max_dots: int) -> type[RegionDots]:
    """The answer model of a stage-1 question: a list of distinct dot numbers 1..n, at most ``max_dots``."""
    Dot = Literal[tuple(range(1, int(n_dots) + 1))]  # type: ignore[valid-type]
    return create_model("RegionDots", __base__=RegionDots,
                        dots=(list[Dot], Field(..., max_length=max(1, int(max_dots)),  # type: ignore[valid-type]
                                               description="numbers of the dots on the region (empty if none)")))


@register_schema
class ConflictOwner(BaseModel):
    """Stage 3 answer: which claimant a contested dot belongs to (or "neither"). Built by :func:`conflict_owner_model`."""

    model_config = ConfigDict(extra="forbid")

    owner: str


def conflict_owner_model(options: Sequence[str]) -> type[ConflictOwner]:
    """The answer model of a stage-3 question: ``owner`` is one of ``options`` or ``"neither"``."""
    choices = tuple(dict.fromkeys([*map(str, options), "neither"]))
    return create_model("ConflictOwner", __base__=ConflictOwner,
                        owner=(Literal[choices], Field(..., description="the keypoint the dot is, or neither")))  # type: ignore[valid-type]


# ====================================================================== policy
@dataclass(frozen=True)
class PoseConsultPolicy:
    """When :class:`VLMPoseReasoner` asks the model (see the module docstring).

    Attributes
    ----------
    consult
        ``"ambiguous"`` (default): only where the geometric reasoner is
        unsure; ``"always"``: every region (within the budget); ``"never"``.
    stages
        Stages that may ask: any of ``"region"``, ``"assignment"``, ``"agreement"``.
    margin
        Stage 2 asks when the second-best assignment of a region costs less
        than this much more than the best (squared standard scores).
    max_questions
        Questions per run (None: no limit; not recommended).
    max_per_frame
        Questions per frame and stage.
    max_dots
        Most numbered dots in one picture (the most plausible are kept).
    search_scale
        Stage 1 search window: the region box scaled by this around its centre.
    n_shots
        Seed-frame examples per question (stages 1 and 2).
    max_failures
        Consecutive unavailable answers after which the run stops asking.
    """

    consult: Literal["ambiguous", "always", "never"] = "ambiguous"
    stages: tuple[str, ...] = STAGES
    margin: float = 2.0
    max_questions: int | None = 100
    max_per_frame: int = 2
    max_dots: int = 9
    search_scale: float = 3.0
    n_shots: int = 2
    max_failures: int = 2

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ValueError(f"unknown pose stage(s) {bad} (stages: {list(STAGES)})")
        if self.consult not in ("ambiguous", "always", "never"):
            raise ValueError(f"consult must be 'ambiguous', 'always' or 'never', not {self.consult!r}")
        if self.max_dots < 1 or self.max_per_frame < 0:
            raise ValueError("max_dots must be >= 1 and max_per_frame >= 0")


# ====================================================================== geometry helpers
def assignment_margin(sub: NDArray[np.float64], none_cost: float, threshold: float | None = None) -> float:
    """Extra cost of the second-best assignment of rows (keypoints) to columns (candidates) over the best.

    Each row may also take "none" at ``none_cost``; infinite entries are
    forbidden. Exact (the minimum over the best assignment's rows of the best
    assignment with that row's choice forbidden). With ``threshold``, a
    cheap bound is tried first: when every row's cheapest option is its own
    and beats its second option by at least ``threshold``, the smallest such
    gap is returned (a lower bound of the margin, enough to say "not
    ambiguous").

    Examples
    --------
    >>> assignment_margin(np.array([[0.0, 9.0], [9.0, 0.0]]), 16.0)  # next best: one keypoint without a candidate
    16.0
    >>> assignment_margin(np.array([[1.0, 1.2], [1.1, 1.0]]), 16.0)
    0.3
    """
    sub = np.asarray(sub, float)
    n, m = sub.shape
    if n == 0:
        return float("inf")
    full = np.full((n, m + n), _BIG)
    full[:, :m] = np.where(np.isfinite(sub), np.minimum(sub, _BIG), _BIG)
    full[np.arange(n), m + np.arange(n)] = none_cost
    if threshold is not None:
        srt = np.sort(full, axis=1)
        best = np.argmin(full, axis=1)
        gaps = srt[:, 1] - srt[:, 0]
        if len(set(best.tolist())) == n and (gaps >= threshold).all():
            return float(round(gaps.min(), 9))
    r, c = linear_sum_assignment(full)
    c1 = float(full[r, c].sum())
    best2 = float("inf")
    for i in range(n):
        f2 = full.copy()
        f2[r[i], c[i]] = _FORBID
        r2, c2 = linear_sum_assignment(f2)
        vals = f2[r2, c2]
        if (vals >= _BIG).any():
            continue
        best2 = min(best2, float(vals.sum()))
    return float(round(best2 - c1, 9)) if np.isfinite(best2) else float("inf")


def candidate_canvas(size: Sequence[int], xy: NDArray[np.float64], intensity: NDArray[np.float64] | None = None,
                     sigma: float = 1.6) -> NDArray[np.uint8]:
    """A grey (H, W) picture of candidates as Gaussian spots on black (for views without a video)."""
    w, h = int(size[0]), int(size[1])
    img = np.zeros((h, w), np.float32)
    pts = np.asarray(xy, float).reshape(-1, 2)
    amp = np.full(len(pts), 200.0)
    if intensity is not None:
        it = np.asarray(intensity, float).reshape(-1)
        ok = np.isfinite(it) & (it > 0)
        if ok.any():
            amp = np.where(ok, 120.0 + 135.0 * it / max(float(np.nanmax(it[ok])), 1e-9), 200.0)
    r = int(np.ceil(3 * sigma))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    for (x, y), a in zip(pts, amp):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cx, cy = int(round(x)), int(round(y))
        x0, x1, y0, y1 = max(cx - r, 0), min(cx + r + 1, w), max(cy - r, 0), min(cy + r + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        g = a * np.exp(-(((xx + cx - x) ** 2) + ((yy + cy - y) ** 2)) / (2 * sigma ** 2))
        patch = g[y0 - (cy - r):y1 - (cy - r), x0 - (cx - r):x1 - (cx - r)]
        img[y0:y1, x0:x1] = np.maximum(img[y0:y1, x0:x1], patch)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class Picture:
    """A rendered question image: the RGB array sent, and how it maps to the full camera image."""

    image: NDArray[np.uint8]
    offset: tuple[int, int]
    scale: float


def render_dots(base: NDArray[Any], dots_xy: NDArray[np.float64], labels: Sequence[int | str], image_px: int = 384,
                extra_xy: NDArray[np.float64] | None = None) -> Picture:
    """Crop ``base`` around the dots (and ``extra_xy``), enlarge to ``image_px`` on the long side, draw the numbered dots."""
    pts = np.asarray(dots_xy, float).reshape(-1, 2)
    span = pts if extra_xy is None else np.concatenate([pts, np.asarray(extra_xy, float).reshape(-1, 2)])
    span = span[np.isfinite(span).all(axis=1)]
    x0, y0 = span.min(axis=0)
    x1, y1 = span.max(axis=0)
    pad = max(24.0, 0.3 * max(x1 - x0, y1 - y0))
    crop, (ox, oy) = crop_box(base, (x0, y0, x1, y1), pad=pad, min_size=64)
    long = max(crop.shape[:2])
    scale = min(8.0, float(image_px) / float(long))
    img = draw_numbered_points(crop, pts - np.array([ox, oy]), labels=list(labels), scale=scale)
    return Picture(img, (int(ox), int(oy)), scale)


# ====================================================================== frame images
class FrameImages:
    """The picture of a view at a frame: from the session's body or marker video, or None (then a canvas is drawn).

    Parameters
    ----------
    session
        A :class:`~ethoscribe.session.Session`, a session folder, or None.
    kind
        ``"auto"`` (body video, else marker video), ``"body"``, ``"markers"``,
        ``"canvas"`` (never read a video), or a callable ``(view, frame) -> array | None``.
    """

    def __init__(self, session: Any = None, kind: str | Callable[[str, int], Any] = "auto") -> None:
        if isinstance(session, (str, os.PathLike)):
            from ethoscribe.session import load_session

            session = load_session(session)
        self.session = session
        self.kind = kind
        self._readers: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def video_for(self, view: str) -> Path | None:
        """The video file used for ``view`` (None: none usable)."""
        if self.session is None or callable(self.kind) or self.kind == "canvas":
            return None
        kinds = ("body", "markers") if self.kind == "auto" else (str(self.kind),)
        cfg = {v.name: v for v in self.session.config.views}.get(view)
        if cfg is None:
            return None
        for k in kinds:
            rel = getattr(cfg, k, None)
            if rel:
                p = self.session.path(rel)
                if p.is_file():
                    return p
        return None

    def source(self, view: str) -> str:
        """``"body"``, ``"markers"``, ``"callable"`` or ``"canvas"`` for ``view``."""
        if callable(self.kind):
            return "callable"
        p = self.video_for(view)
        if p is None or view in self.errors:
            return "canvas"
        cfg = {v.name: v for v in self.session.config.views}[view]
        return "body" if cfg.body and self.session.path(cfg.body) == p else "markers"

    def get(self, view: str, frame: int) -> NDArray[Any] | None:
        """The frame's picture, or None (no video; or it could not be read: see ``errors``)."""
        if callable(self.kind):
            return self.kind(view, int(frame))
        if view in self.errors:
            return None
        path = self.video_for(view)
        if path is None:
            return None
        from ethoscribe.errors import VideoError
        from ethoscribe.io.video import VideoReader

        try:
            reader = self._readers.get(view)
            if reader is None:
                reader = self._readers[view] = VideoReader(path)
            return reader[int(frame)]
        except (VideoError, IndexError) as exc:
            self.errors[view] = str(exc)
            return None

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()


# ====================================================================== the reasoner
@dataclass
class _Shot:
    variables: dict[str, Any]
    image: EncodedImage
    answer: str


@dataclass
class _Question:
    stage: str
    view: int
    animal: int
    region: int  # region index (stage 1, 2) or -1
    cols: NDArray[np.int64]  # candidate indices (M axis) of the dots, in dot order
    priority: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _as_table(candidates: Any) -> pd.DataFrame | None:
    if candidates is None or isinstance(candidates, str) and candidates == "markers":
        return None
    if isinstance(candidates, pd.DataFrame):
        return candidates
    return pd.read_parquet(candidates)


class VLMPoseReasoner:
    """Pose stages 1-3 by a vision-language model where the geometric reasoner is unsure (see the module docstring).

    Parameters
    ----------
    client
        A :class:`~ethoscribe.reasoning.client.ChatClient` for a server with a
        vision model (its trace receives one record per question).
    session
        The session (or its folder): views' videos for pictures, seeds for examples.
    seeds
        Seed labels (:class:`~ethoscribe.io.seeds.Seeds` or a ``.slp``);
        default the session's seeds file. Without seeds there are no examples.
    candidates
        The candidates table the pipeline runs on (DataFrame or Parquet), for
        realistic examples at the seed frames; optional.
    images
        ``"auto"``, ``"body"``, ``"markers"``, ``"canvas"`` or a callable
        ``(view, frame) -> array`` (see :class:`FrameImages`).
    policy
        When to ask (:class:`PoseConsultPolicy`).
    geometric
        The reasoner whose answers are the default and the fallback.
    image_px
        Long side of every picture sent.
    max_tokens
        Answer length limit per question.

    Attributes
    ----------
    decisions
        One dict per keypoint (stages 2, 3) or region (stage 1) the model decided.
    """

    def __init__(
        self,
        client: ChatClient,
        *,
        session: Any = None,
        seeds: Any = None,
        candidates: Any = None,
        images: str | Callable[[str, int], Any] = "auto",
        policy: PoseConsultPolicy | None = None,
        geometric: GeometricReasoner | None = None,
        image_px: int = 384,
        max_tokens: int = 128,
    ) -> None:
        self.client = client
        self.policy = policy or PoseConsultPolicy()
        self.name = f"vlm:{client.config.model}"
        self.geometric = geometric or GeometricReasoner()
        self.frames = FrameImages(session, images)
        self.session = self.frames.session
        self.image_px = int(image_px)
        self.max_tokens = int(max_tokens)
        self.consultant = Consultant(client, "pose", self.policy.max_questions, self.policy.max_failures)
        self.prompts = {"region": load_prompt("pose_regions"), "assignment": load_prompt("pose_assign"),
                        "agreement": load_prompt("pose_conflict")}
        self.decisions: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._memo_hits = 0
        self._asked_per_frame: Counter[tuple[int, str]] = Counter()
        self._frame_images: dict[tuple[int, int], NDArray[Any]] = {}
        self._frame_key: int | None = None
        self._shots: dict[tuple[str, int, int], list[_Shot]] = {}
        self._seeds = self._load_seeds(seeds)
        self._cand_table = self._seed_candidates(_as_table(candidates))

    # ------------------------------------------------------------ setup
    def _load_seeds(self, seeds: Any) -> Any:
        from ethoscribe.io.seeds import Seeds, load_seeds

        if isinstance(seeds, Seeds):
            return seeds
        if self.session is None:
            return None
        path = seeds if seeds is not None else self.session.seeds_path
        if path is None or not Path(path).is_file():
            self.notes.append("no seed labels: questions are asked without examples")
            return None
        try:
            return load_seeds(path, self.session.skeleton, self.session.config.view_names, self.session.config.individuals)
        except Exception as exc:  # examples are optional: say why there are none
            self.notes.append(f"seed labels could not be read ({exc}): questions are asked without examples")
            return None

    def _seed_candidates(self, table: pd.DataFrame | None) -> dict[tuple[int, str], pd.DataFrame]:
        if table is None or self._seeds is None:
            return {}
        sub = table[table["frame"].isin([int(f) for f in self._seeds.frames])]
        return {(int(f), str(v)): g.sort_values("candidate") for (f, v), g in sub.groupby(["frame", "view"], observed=True)}

    # ------------------------------------------------------------ protocol
    def _stage_on(self, stage: str) -> bool:
        return self.policy.consult != "never" and stage in self.policy.stages and self.policy.max_per_frame > 0

    def locate_regions(self, ctx: FrameContext) -> RegionBoxes:
        """Stage 1: the geometric boxes, widened where the model finds the region's dots outside them."""
        boxes = self.geometric.locate_regions(ctx)
        if not self._stage_on("region"):
            return boxes
        b = boxes.boxes.copy()
        V, I, K, M = ctx.shape
        inside = in_boxes(ctx, b)
        qs: list[_Question] = []
        for v in range(V):
            for a in range(I):
                for r, ks in enumerate(ctx.regions):
                    box = b[v, a, r]
                    if not np.isfinite(box).all():
                        continue
                    n_in = int(inside[v, a, r].sum())
                    if self.policy.consult == "ambiguous" and n_in > 0:
                        continue
                    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                    hw = max(box[2] - box[0], 8.0) * self.policy.search_scale / 2
                    hh = max(box[3] - box[1], 8.0) * self.policy.search_scale / 2
                    xy = ctx.cand_xy[v]
                    with np.errstate(invalid="ignore"):
                        win = ctx.cand_valid[v] & (np.abs(xy[:, 0] - cx) <= hw) & (np.abs(xy[:, 1] - cy) <= hh)
                    cols = np.flatnonzero(win)
                    if cols.size == 0:
                        continue
                    if cols.size > self.policy.max_dots:
                        d = np.hypot(xy[cols, 0] - cx, xy[cols, 1] - cy)
                        cols = cols[np.argsort(d, kind="stable")[: self.policy.max_dots]]
                    cols = cols[np.argsort(ctx.cand_id[v, cols], kind="stable")]
                    qs.append(_Question("region", v, a, r, cols, priority=float(n_in)))
        qs.sort(key=lambda q: (q.priority, q.view, q.animal, q.region))
        widened = 0
        for q in qs:
            chosen = self._ask(ctx, q)
            if not chosen:
                continue
            ks = list(ctx.regions[q.region])
            sig = ctx.predicted_sigma_px[q.view, q.animal, ks]
            pad = max(4.0, float(np.nanmedian(sig)) if np.isfinite(sig).any() else 4.0)
            pts = ctx.cand_xy[q.view, chosen]
            lo = pts.min(axis=0) - pad
            hi = pts.max(axis=0) + pad
            box = b[q.view, q.animal, q.region]
            b[q.view, q.animal, q.region] = [min(box[0], lo[0]), min(box[1], lo[1]), max(box[2], hi[0]), max(box[3], hi[1])]
            widened += 1
        if widened:
            return RegionBoxes(b, note=f"{widened} box(es) widened by the model")
        return boxes

    def assign(self, ctx: FrameContext, boxes: RegionBoxes) -> Assignment:
        """Stage 2: the geometric assignment, with the model's answer where a region's assignment is ambiguous."""
        g = self.geometric.assign(ctx, boxes)
        if not self._stage_on("assignment"):
            return g
        V, I, K, M = ctx.shape
        costs = g.costs if g.costs is not None else self.geometric.costs(ctx)
        gate2 = ctx.gate ** 2
        inside = in_boxes(ctx, boxes.boxes)
        qs: list[_Question] = []
        for v in range(V):
            for a in range(I):
                for r, ks in enumerate(ctx.regions):
                    cols = np.flatnonzero(inside[v, a, r])
                    if cols.size == 0:
                        continue
                    sub = costs[v, a][np.ix_(list(ks), cols)]
                    margin = float("nan")
                    if self.policy.consult == "ambiguous":
                        margin = assignment_margin(sub, gate2, self.policy.margin)
                        if margin >= self.policy.margin:
                            continue
                    if cols.size > self.policy.max_dots:  # keep the most plausible candidates
                        best = np.nanmin(np.where(np.isfinite(sub), sub, np.inf), axis=0)
                        cols = cols[np.argsort(best, kind="stable")[: self.policy.max_dots]]
                    cols = cols[np.argsort(ctx.cand_id[v, cols], kind="stable")]
                    qs.append(_Question("assignment", v, a, r, cols, priority=margin if np.isfinite(margin) else -1.0,
                                        extra={"margin": None if not np.isfinite(margin) else round(margin, 3)}))
        qs.sort(key=lambda q: (q.priority, q.view, q.animal, q.region))
        if not qs:
            return g
        cand, cost = g.cand.copy(), g.cost.copy()
        for q in qs:
            q.extra["geometric"] = [int(c) for c in g.cand[q.view, q.animal, list(ctx.regions[q.region])]]
            choice = self._ask(ctx, q)
            if choice is None:
                continue
            for k, m in zip(ctx.regions[q.region], choice):
                cand[q.view, q.animal, k] = m
                cost[q.view, q.animal, k] = costs[q.view, q.animal, k, m] if m >= 0 else gate2
        return Assignment(cand, cost, costs, g.conflict)

    def agree(self, ctx: FrameContext, boxes: RegionBoxes, assignment: Assignment) -> Assignment:
        """Stage 3: the model settles contested candidates (where asked), the geometric agreement the rest."""
        if not self._stage_on("agreement") or not duplicated_views(assignment.cand).size:
            return self.geometric.agree(ctx, boxes, assignment)
        V, I, K, M = ctx.shape
        cand = assignment.cand.copy()
        cost = np.asarray(assignment.cost, float).copy()
        conflict = np.zeros(cand.shape, bool) if assignment.conflict is None else assignment.conflict.copy()
        gate2 = ctx.gate ** 2
        for v in duplicated_views(cand):
            flat = cand[v].reshape(-1)
            used, counts = np.unique(flat[flat >= 0], return_counts=True)
            contested = used[counts > 1]
            for m in contested[np.argsort(ctx.cand_id[v, contested], kind="stable")]:
                claim = [(int(a), int(k)) for a, k in zip(*np.nonzero(cand[v] == m))]
                # context: the other keypoints of the claimants' regions and the candidates they hold now
                others: list[tuple[int, int, int]] = []
                seen = {int(m)}
                for a, k in claim:
                    for k2 in ctx.regions[int(ctx.region_of[k])]:
                        m2 = int(cand[v, a, k2])
                        if m2 >= 0 and m2 not in seen and len(others) + 1 < self.policy.max_dots:
                            seen.add(m2)
                            others.append((m2, a, int(k2)))
                q = _Question("agreement", int(v), -1, -1, np.array([m], np.int64), extra={"claimants": claim, "others": others})
                owner = self._ask(ctx, q)
                if owner is None:  # not asked, or fell back: the geometric agreement decides
                    continue
                for a, k in claim:
                    conflict[v, a, k] = True
                    if (a, k) != owner:
                        cand[v, a, k] = -1
                        cost[v, a, k] = gate2
        return self.geometric.agree(ctx, boxes, Assignment(cand, cost, assignment.costs, conflict))

    # ------------------------------------------------------------ asking
    def _where(self, ctx: FrameContext, q: _Question) -> dict[str, Any]:
        out: dict[str, Any] = {"frame": int(ctx.frame), "view": ctx.views[q.view]}
        if q.animal >= 0:
            out["individual"] = ctx.individuals[q.animal]
        if q.region >= 0:
            out["region"] = ctx.region_names[q.region]
        return out

    def _ask(self, ctx: FrameContext, q: _Question) -> Any:
        """The converted model answer for a question, or None (not asked, or the fallback answered)."""
        prompt = self.prompts[q.stage]
        cid = ctx.cand_id[q.view]
        key = (q.stage, int(ctx.frame), q.view, q.animal, q.region, tuple(int(c) for c in cid[q.cols]),
               json.dumps(q.extra.get("claimants")),
               json.dumps([(int(cid[m2]), a, k2) for m2, a, k2 in q.extra.get("others", [])]), prompt.id)
        if key in self._memo:
            self._memo_hits += 1
            return self._memo[key]
        if self._asked_per_frame[(int(ctx.frame), q.stage)] >= self.policy.max_per_frame:
            return None
        where = self._where(ctx, q)
        if not self.consultant.may_ask(where):
            return None
        self._asked_per_frame[(int(ctx.frame), q.stage)] += 1
        builder = {"region": self._region_question, "assignment": self._assign_question, "agreement": self._conflict_question}[q.stage]
        messages, schema, convert, inp, verification = builder(ctx, q)
        d = self.consultant.ask(
            messages, schema, lambda: None, convert=convert, step=STEP_NAMES[q.stage],
            prompt=prompt, input=inp, verification=verification, trace_fields={**where, "stage": q.stage},
            max_tokens=self.max_tokens,
        )
        value = d.value if d.source == "model" else None
        self._memo[key] = value
        if value is not None:
            self._record(ctx, q, value)
        return value

    def _record(self, ctx: FrameContext, q: _Question, value: Any) -> None:
        base = {"frame": int(ctx.frame), "stage": q.stage, "view": ctx.views[q.view]}
        cid = ctx.cand_id[q.view]
        if q.stage == "region":
            self.decisions.append({**base, "individual": ctx.individuals[q.animal], "region": ctx.region_names[q.region],
                                   "keypoint": None, "model_candidate": -1, "geometric_candidate": -1,
                                   "region_candidates": [int(cid[m]) for m in value]})
        elif q.stage == "assignment":
            geo = q.extra.get("geometric", [])
            for j, (k, m) in enumerate(zip(ctx.regions[q.region], value)):
                gm = geo[j] if j < len(geo) else -1
                self.decisions.append({**base, "individual": ctx.individuals[q.animal], "region": ctx.region_names[q.region],
                                       "keypoint": ctx.keypoints[k], "model_candidate": int(cid[m]) if m >= 0 else -1,
                                       "geometric_candidate": int(cid[gm]) if gm >= 0 else -1})
        else:
            m = int(q.cols[0])
            for a, k in q.extra["claimants"]:
                self.decisions.append({**base, "individual": ctx.individuals[a], "region": ctx.region_names[int(ctx.region_of[k])],
                                       "keypoint": ctx.keypoints[k], "model_candidate": int(cid[m]) if (a, k) == value else -1,
                                       "geometric_candidate": -1, "contested_candidate": int(cid[m])})

    # ------------------------------------------------------------ pictures
    def _base_image(self, ctx: FrameContext, v: int) -> NDArray[Any]:
        if self._frame_key != int(ctx.frame):
            self._frame_images.clear()
            self._frame_key = int(ctx.frame)
        key = (int(ctx.frame), v)
        if key not in self._frame_images:
            img = self.frames.get(ctx.views[v], int(ctx.frame))
            if img is None:
                ok = ctx.cand_valid[v]
                img = candidate_canvas(ctx.image_size[v], ctx.cand_xy[v][ok], ctx.intensity[v][ok])
            self._frame_images[key] = img
        return self._frame_images[key]

    def _seed_image(self, view: str, frame: int, size: Sequence[int], dots_xy: NDArray[np.float64]) -> NDArray[Any]:
        img = self.frames.get(view, int(frame))
        if img is not None:
            return img
        tab = self._cand_table.get((int(frame), view))
        if tab is not None:
            return candidate_canvas(size, tab[["x", "y"]].to_numpy(float), tab["intensity"].to_numpy(float))
        return candidate_canvas(size, dots_xy)

    @staticmethod
    def _dots(xy: NDArray[np.float64]) -> list[dict[str, Any]]:
        return [{"n": i + 1, "x": float(x), "y": float(y)} for i, (x, y) in enumerate(xy)]

    def _messages(self, prompt: Prompt, shots: list[_Shot], variables: dict[str, Any], image: NDArray[Any]) -> list[dict[str, Any]]:
        msgs = prompt.render(**variables, example=False)
        out = [m for m in msgs if m["role"] == "system"]
        for s in shots:
            text = prompt.render(**s.variables, example=True)[-1]["content"]
            out += [user(text, s.image), assistant(s.answer)]
        out.append(user(msgs[-1]["content"], image))
        return out

    # ------------------------------------------------------------ few-shot examples
    def _seed_dots(self, s: int, v: int, window: tuple[float, float, float, float]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Dots of seed frame ``s`` in view ``v`` inside ``window``: its candidates (if known) or all seed labels; (xy, ids)."""
        seeds = self._seeds
        view = seeds.views[v]
        frame = int(seeds.frames[s])
        tab = self._cand_table.get((frame, view))
        if tab is not None:
            xy = tab[["x", "y"]].to_numpy(float)
            ids = tab["candidate"].to_numpy(np.int64)
        else:
            xy = seeds.points[s, v].reshape(-1, 2)
            ok = np.isfinite(xy).all(axis=1)
            xy = xy[ok]
            order = np.lexsort((xy[:, 1], xy[:, 0]))
            xy, ids = xy[order], np.arange(len(xy), dtype=np.int64)
        x0, y0, x1, y1 = window
        inw = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        xy, ids = xy[inw], ids[inw]
        if len(xy) > self.policy.max_dots:
            c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
            keep = np.sort(np.argsort(np.hypot(*(xy - c).T), kind="stable")[: self.policy.max_dots])
            xy, ids = xy[keep], ids[keep]
        return xy, ids

    def _shots_for(self, stage: str, ctx: FrameContext, v: int, r: int) -> list[_Shot]:
        key = (stage, v, r)
        if key in self._shots:
            return self._shots[key]
        shots: list[_Shot] = []
        seeds = self._seeds
        if seeds is not None and self.policy.n_shots > 0 and ctx.views[v] in seeds.views:
            sv = list(seeds.views).index(ctx.views[v])
            ks = list(ctx.regions[r])
            kp_names = [ctx.keypoints[k] for k in ks]
            size = ctx.image_size[v]
            for s in range(seeds.n_frames):
                if len(shots) >= self.policy.n_shots:
                    break
                for a in range(len(seeds.individuals)):
                    lab = seeds.points[s, sv, a][ks]
                    if not np.isfinite(lab).all():
                        continue
                    lo, hi = lab.min(axis=0), lab.max(axis=0)
                    if stage == "region":
                        c = (lo + hi) / 2
                        half = np.maximum(hi - lo, 8.0) * self.policy.search_scale / 2
                    else:
                        c = (lo + hi) / 2
                        half = np.maximum(hi - lo, 8.0) / 2 + 12.0
                    xy, ids = self._seed_dots(s, sv, (c[0] - half[0], c[1] - half[1], c[0] + half[0], c[1] + half[1]))
                    if len(xy) == 0:
                        continue
                    d = np.hypot(xy[None, :, 0] - lab[:, None, 0], xy[None, :, 1] - lab[:, None, 1])  # k, n
                    match = [int(np.argmin(row)) if row.min() <= 4.0 else None for row in d]
                    frame = int(seeds.frames[s])
                    variables = {"frame": frame, "view": ctx.views[v], "animal": seeds.individuals[a],
                                 "region": ctx.region_names[r], "keypoints": kp_names, "dots": self._dots(xy)}
                    if stage == "region":
                        answer = {"dots": sorted({m + 1 for m in match if m is not None})}
                    else:
                        answer = {name: (m + 1 if m is not None else None) for name, m in zip(kp_names, match)}
                    base = self._seed_image(ctx.views[v], frame, size, xy)
                    pic = render_dots(base, xy, list(range(1, len(xy) + 1)), self.image_px)
                    shots.append(_Shot(variables, encode_image(pic.image), json.dumps(answer, separators=(", ", ": "))))
                    break
        self._shots[key] = shots
        return shots

    # ------------------------------------------------------------ the three questions
    def _region_question(self, ctx: FrameContext, q: _Question) -> tuple[Any, ...]:
        ks = list(ctx.regions[q.region])
        xy = ctx.cand_xy[q.view, q.cols]
        variables = {"frame": int(ctx.frame), "view": ctx.views[q.view], "animal": ctx.individuals[q.animal],
                     "region": ctx.region_names[q.region], "keypoints": [ctx.keypoints[k] for k in ks], "dots": self._dots(xy)}
        pic = render_dots(self._base_image(ctx, q.view), xy, list(range(1, len(xy) + 1)), self.image_px)
        shots = self._shots_for("region", ctx, q.view, q.region)
        msgs = self._messages(self.prompts["region"], shots, variables, pic.image)
        schema = region_dots_model(len(xy), len(ks))
        cols = q.cols
        verification: dict[str, Any] = {}

        def convert(ans: RegionDots) -> list[int]:
            chosen = [int(cols[d - 1]) for d in ans.dots]
            verification["dots_on_region"] = list(ans.dots)
            return chosen

        inp = {"dots": [{"n": i + 1, "candidate": int(ctx.cand_id[q.view, m]), "x": round(float(x), 2), "y": round(float(y), 2)}
                        for i, (m, (x, y)) in enumerate(zip(cols, xy))],
               "candidates_in_geometric_box": int(q.priority), "shots": len(shots), "image_source": self.frames.source(ctx.views[q.view]),
               "image": {"width": int(pic.image.shape[1]), "height": int(pic.image.shape[0]), "offset": list(pic.offset),
                         "scale": round(pic.scale, 4)}}
        return msgs, schema, convert, inp, verification

    def _assign_question(self, ctx: FrameContext, q: _Question) -> tuple[Any, ...]:
        ks = list(ctx.regions[q.region])
        names = [ctx.keypoints[k] for k in ks]
        xy = ctx.cand_xy[q.view, q.cols]
        variables = {"frame": int(ctx.frame), "view": ctx.views[q.view], "animal": ctx.individuals[q.animal],
                     "region": ctx.region_names[q.region], "keypoints": names, "dots": self._dots(xy)}
        pic = render_dots(self._base_image(ctx, q.view), xy, list(range(1, len(xy) + 1)), self.image_px)
        shots = self._shots_for("assignment", ctx, q.view, q.region)
        msgs = self._messages(self.prompts["assignment"], shots, variables, pic.image)
        schema = keypoint_dots_model(names, len(xy))
        cols = q.cols
        pos = {int(m): i + 1 for i, m in enumerate(cols)}
        geo = q.extra.get("geometric", [])
        geo_dots = {n: pos.get(int(m)) if m >= 0 else None for n, m in zip(names, geo)}
        verification: dict[str, Any] = {"geometric": geo_dots}

        def convert(ans: KeypointDots) -> list[int]:
            ch = ans.choices()
            verification["agrees_with_geometric"] = all(ch.get(n) == geo_dots.get(n) for n in names)
            verification["differs"] = sorted(n for n in names if ch.get(n) != geo_dots.get(n))
            return [int(cols[ch[n] - 1]) if ch.get(n) is not None else -1 for n in names]

        inp = {"dots": [{"n": i + 1, "candidate": int(ctx.cand_id[q.view, m]), "x": round(float(x), 2), "y": round(float(y), 2)}
                        for i, (m, (x, y)) in enumerate(zip(cols, xy))],
               "margin": q.extra.get("margin"), "consult": self.policy.consult, "shots": len(shots),
               "image_source": self.frames.source(ctx.views[q.view]),
               "image": {"width": int(pic.image.shape[1]), "height": int(pic.image.shape[0]), "offset": list(pic.offset),
                         "scale": round(pic.scale, 4)}}
        return msgs, schema, convert, inp, verification

    def _conflict_question(self, ctx: FrameContext, q: _Question) -> tuple[Any, ...]:
        v = q.view
        m = int(q.cols[0])
        claim = q.extra["claimants"]
        options = [f"{ctx.individuals[a]} {ctx.keypoints[k]}" for a, k in claim]
        xy_all = ctx.cand_xy[v]
        pts = [xy_all[m]]
        others = []
        for j, (m2, a, k2) in enumerate(q.extra.get("others", [])):
            pts.append(xy_all[m2])
            others.append({"n": j + 2, "label": f"{ctx.individuals[a]} {ctx.keypoints[k2]}",
                           "x": float(xy_all[m2, 0]), "y": float(xy_all[m2, 1])})
        variables = {"frame": int(ctx.frame), "view": ctx.views[v], "options": options,
                     "contested": {"x": float(xy_all[m, 0]), "y": float(xy_all[m, 1])}, "others": others}
        pic = render_dots(self._base_image(ctx, v), np.array(pts), list(range(1, len(pts) + 1)), self.image_px)
        msgs = self._messages(self.prompts["agreement"], [], variables, pic.image)
        schema = conflict_owner_model(options)
        by_name = dict(zip(options, claim))
        verification: dict[str, Any] = {}

        def convert(ans: ConflictOwner) -> tuple[int, int] | tuple[()]:
            verification["owner"] = ans.owner
            return tuple(by_name[ans.owner]) if ans.owner in by_name else ()

        inp = {"contested_candidate": int(ctx.cand_id[v, m]), "claimants": options,
               "context_dots": [{"n": o["n"], "label": o["label"]} for o in others],
               "image_source": self.frames.source(ctx.views[v]),
               "image": {"width": int(pic.image.shape[1]), "height": int(pic.image.shape[0]), "offset": list(pic.offset),
                         "scale": round(pic.scale, 4)}}
        return msgs, schema, convert, inp, verification

    # ------------------------------------------------------------ after the run
    def summary(self) -> dict[str, Any]:
        """Questions asked, answered by the model, fallbacks, skips, memory hits, notes (JSON-ready)."""
        st = self.consultant.stats()
        by_stage = Counter(d["stage"] for d in self.decisions)
        return {**st, "reasoner": self.name, "policy": {k: (list(v) if isinstance(v, tuple) else v)
                                                         for k, v in vars(self.policy).items()},
                "answers_reused": self._memo_hits, "model_decisions": dict(by_stage), "notes": list(self.notes),
                "image_errors": dict(self.frames.errors)}

    def verify(self, result: Any, out_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
        """Compare the model's keypoint choices with the final labels; trace where geometry overrode them.

        Parameters
        ----------
        result
            The :class:`~ethoscribe.pose.pipeline.PoseResult` (or its output folder).
        out_dir
            Where to write ``vlm_pose_verification.csv`` (default: the result's folder, if known).

        Returns
        -------
        pandas.DataFrame
            One row per (frame, view, individual, keypoint) the model chose:
            ``model_candidate``, ``geometric_candidate`` (stage 2's geometric
            answer), ``final_candidate``, ``final_stage``, ``status``
            (``confirmed``; ``overridden``: another candidate in the end;
            ``dropped``: no candidate in the end (missing, or the 3D point's
            reprojection); ``filled``: the model said none, geometry found
            one; ``none``), and ``kinds`` (the refinement events of the
            pipeline trace that changed the model's label).
        """
        from ethoscribe.pose.labels import load_labels

        if hasattr(result, "labels"):
            labels = result.labels
            paths = getattr(result, "paths", {}) or {}
            trace_path = paths.get("trace")
            folder = Path(paths["labels"]).parent if "labels" in paths else None
        else:
            folder = Path(result)
            labels = load_labels(folder / "labels.parquet")
            trace_path = folder / "trace.jsonl"
        rows_in = [d for d in self.decisions if d.get("keypoint")]
        cols = ["frame", "stage", "view", "individual", "keypoint", "model_candidate", "geometric_candidate",
                "final_candidate", "final_stage", "flag", "status", "kinds"]
        if not rows_in:
            df = pd.DataFrame(columns=cols)
        else:
            dec = pd.DataFrame(rows_in).drop_duplicates(["frame", "view", "individual", "keypoint", "model_candidate"], keep="last")
            lab = labels[["frame", "view", "individual", "keypoint", "candidate", "stage", "flag"]].copy()
            for c in ("view", "individual", "keypoint"):
                lab[c] = lab[c].astype(str)
            lab = lab.rename(columns={"candidate": "final_candidate", "stage": "final_stage"})
            df = dec.merge(lab, on=["frame", "view", "individual", "keypoint"], how="left")
            df["final_candidate"] = df["final_candidate"].fillna(-1).astype(np.int64)
            mc, fc = df["model_candidate"].to_numpy(), df["final_candidate"].to_numpy()
            df["status"] = np.where(mc >= 0, np.where(fc == mc, "confirmed", np.where(fc >= 0, "overridden", "dropped")),
                                    np.where(fc >= 0, "filled", "none"))
            events = _refinement_events(trace_path, set(df["frame"].tolist()))
            df["kinds"] = [",".join(sorted(events.get((int(f), str(v), str(i), str(k), int(m)), set())))
                           for f, v, i, k, m in zip(df["frame"], df["view"], df["individual"], df["keypoint"], df["model_candidate"])]
            df = df[cols].sort_values(["frame", "view", "individual", "keypoint"]).reset_index(drop=True)
        counts = df["status"].value_counts().to_dict() if len(df) else {}
        differed = int((df["model_candidate"] != df["geometric_candidate"]).sum()) if len(df) else 0
        for row in df[df["status"].isin(["overridden", "dropped"])].itertuples(index=False):
            emit(self.client.trace, {
                "step": "pose_verification", "frame": int(row.frame), "view": row.view, "individual": row.individual,
                "keypoint": row.keypoint, "stage": row.stage, "model_candidate": int(row.model_candidate),
                "final_candidate": int(row.final_candidate), "final_stage": row.final_stage, "status": row.status,
                "kinds": row.kinds or None, "overridden_by_geometry": True,
            })
        summ = {"model_labels": int(len(df)), "confirmed": int(counts.get("confirmed", 0)),
                "overridden_by_geometry": int(counts.get("overridden", 0)), "dropped_by_geometry": int(counts.get("dropped", 0)),
                "filled_by_geometry": int(counts.get("filled", 0)),
                "model_differed_from_geometric_reasoner": differed}
        emit(self.client.trace, {"step": "pose_verification_summary", **summ, **self.summary()})
        self.verification_summary = summ
        target = Path(out_dir) if out_dir is not None else folder
        if target is not None:
            from ethoscribe.io.atomic import atomic_path

            target.mkdir(parents=True, exist_ok=True)
            with atomic_path(target / VERIFICATION_FILE) as tmp:
                df.to_csv(tmp, index=False)
        return df

    def close(self) -> None:
        """Release the video readers."""
        self.frames.close()


def _refinement_events(trace_path: Any, frames: set[int]) -> dict[tuple[int, str, str, str, int], set[str]]:
    """(frame, view, individual, keypoint, replaced candidate id) -> kinds of stage-4 changes, from the pipeline trace."""
    out: dict[tuple[int, str, str, str, int], set[str]] = {}
    if trace_path is None or not Path(trace_path).is_file():
        return out
    with open(trace_path, encoding="utf-8") as fh:
        for line in fh:
            if '"refinement"' not in line:
                continue
            rec = json.loads(line)
            if rec.get("stage") != "refinement" or int(rec.get("frame", -1)) not in frames:
                continue
            for ch in (rec.get("answer") or {}).get("changed", []) or []:
                if not isinstance(ch, (list, tuple)) or len(ch) < 6:  # [view, individual, keypoint, old, new, kind]
                    continue
                view, ind, kp, old, _new, kind = ch[:6]
                out.setdefault((int(rec["frame"]), str(view), str(ind), str(kp), int(old)), set()).add(str(kind))
    return out
