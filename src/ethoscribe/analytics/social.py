"""Social events between animals from their poses: approach, follow, chase and contact.

Works on any movement-style poses dataset (``position``: time, space[x, y]
or [x, y, z], keypoints, individuals), 2D pixels or 3D millimetres, with any
skeleton: each animal's *body centre* is the mean of its core keypoints (all
but tail and wing tips) and its *heading* runs from its rear to its neck
(roles found by keypoint name, as the behaviour features do:
:func:`ethoscribe.behavior.features.resolve_body_parts`). Only the horizontal
plane (x, y) is used. Keypoints at exactly (0, 0) in 2D data are missing
(the DeepLabCut/MABe convention); gaps up to ``max_interp_s`` are
interpolated, then centres are smoothed (Savitzky-Golay, ``smooth_s``)
before speeds are taken.

Definitions (actor A, partner B). Each is a per-frame criterion; an event is
a run of frames of a *relaxed* criterion (speeds above ``relax_speed`` times
their thresholds, angles below ``relax_angle_deg``, velocity cosine above 0)
with gaps up to ``max_gap_s`` closed, that lasts at least the event's minimum
duration and holds at least half that many frames meeting the full criterion
(hysteresis: an event is not cut, nor its start delayed, by one measure
wobbling past its threshold):

``chase``
    A follows B (below) and both move at ``chase_min_speed`` or faster.
``follow``
    B is within ``follow_max_distance`` (centre to centre), ahead of A (the
    bearing from A's heading to B is at most ``follow_max_bearing_deg``),
    A is behind B (the angle between B's heading and the line A -> B is at
    most ``follow_max_behind_deg``), both move at ``follow_min_speed`` or
    faster in similar directions (cosine of their velocities at least
    ``follow_min_alignment``), and it is not part of a chase.
``approach``
    A moves towards B (A's velocity component along A -> B at least
    ``approach_min_speed``, B within ``approach_max_bearing_deg`` of A's
    heading), the distance shrinks, the two are not in contact and it is
    not part of a follow or chase; kept when the distance shrank by at least
    ``approach_min_closing`` over the event.
``contact``
    The two bodies (nearest pair of core keypoints, one of each animal) are
    within ``contact_distance``. One event per pair and bout; the *actor* is
    the animal whose head tip was nearer the other's body over the bout (the
    one making contact).

Units and scale
---------------
Defaults are in millimetres and seconds, written for a mouse whose body
(head tip to tail base, as measured here) is ``body_length_mm`` = 80 mm
long. With ``scale="auto"`` (default) they are used as they are for data in
mm (3D or calibrated 2D: the dataset's ``space_unit`` is ``mm``), and for
pixel data (anything else) every length and speed threshold is multiplied
by ``median body length (px) / body_length_mm``, i.e. the thresholds keep
their size *relative to the animal*. ``scale="body_length"`` does that for
mm data too (other species), ``scale="none"`` never does it (thresholds in
the data's own units). :attr:`SocialResult.thresholds` records what was
used.

Examples
--------
>>> from ethoscribe.synth.truth import load_truth  # doctest: +SKIP
>>> res = social_analysis(load_truth("session").points3d)  # doctest: +SKIP
>>> res.events[["kind", "actor", "partner", "start_s", "end_s"]]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from ethoscribe.errors import InputError

EVENT_KINDS: tuple[str, ...] = ("approach", "follow", "chase", "contact")
EVENT_COLUMNS = ["kind", "actor", "partner", "start_frame", "end_frame", "start_s", "end_s", "duration_s",
                 "distance_start", "distance_end", "mean_distance", "min_distance", "actor_speed", "partner_speed",
                 "closing_speed", "unit"]

_LENGTHS = ("contact_distance", "approach_min_closing", "follow_max_distance")
_SPEEDS = ("approach_min_speed", "follow_min_speed", "chase_min_speed")


class SocialParams(BaseModel):
    """Thresholds of the social events (see the module docstring for the definitions and units).

    Lengths in mm, speeds in mm/s, durations in s, angles in degrees; for
    pixel data lengths and speeds are rescaled by body length (``scale``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    contact_distance: float = Field(20.0, gt=0, description="bodies closer than this (nearest core keypoints) are in contact (mm)")
    contact_min_s: float = Field(0.3, ge=0, description="shortest contact (s)")
    approach_min_speed: float = Field(50.0, ge=0, description="actor's speed towards the partner (mm/s)")
    approach_max_bearing_deg: float = Field(60.0, gt=0, le=180, description="partner at most this far off the actor's heading (deg)")
    approach_min_closing: float = Field(30.0, ge=0, description="distance shrinks by at least this over an approach (mm)")
    approach_min_s: float = Field(0.4, ge=0, description="shortest approach (s)")
    follow_max_distance: float = Field(250.0, gt=0, description="centre-to-centre distance at most this while following (mm)")
    follow_min_speed: float = Field(60.0, ge=0, description="both animals at least this fast (mm/s)")
    follow_max_bearing_deg: float = Field(45.0, gt=0, le=180, description="leader at most this far off the follower's heading (deg)")
    follow_max_behind_deg: float = Field(60.0, gt=0, le=180, description="follower at most this far off the line behind the leader (deg)")
    follow_min_alignment: float = Field(0.6, ge=-1, le=1, description="cosine between the two velocities at least this")
    follow_min_s: float = Field(0.8, ge=0, description="shortest follow (s)")
    chase_min_speed: float = Field(200.0, ge=0, description="both animals at least this fast (mm/s)")
    chase_min_s: float = Field(0.4, ge=0, description="shortest chase (s)")
    max_gap_s: float = Field(0.2, ge=0, description="gaps up to this long inside an event are closed (s)")
    relax_speed: float = Field(0.6, gt=0, le=1, description="an event extends while speeds stay above this fraction of their thresholds")
    relax_angle_deg: float = Field(90.0, gt=0, le=180, description="... and angles below this (deg; alignment cosine above 0)")
    smooth_s: float = Field(0.2, ge=0, description="Savitzky-Golay window on body centres before speeds (s)")
    max_interp_s: float = Field(0.5, ge=0, description="missing keypoints interpolated over gaps up to this long (s)")
    body_length_mm: float = Field(80.0, gt=0, description="body length (head tip to tail base) the mm defaults are written for")
    scale: Literal["auto", "none", "body_length"] = Field("auto", description="rescale lengths/speeds by body length: auto = for px data only")


@dataclass
class SocialResult:
    """Social events and group metrics of a recording.

    Attributes
    ----------
    events
        One row per event (:data:`EVENT_COLUMNS`): kind, actor, partner,
        start/end frame (end exclusive) and seconds, duration, centre
        distance at start and end, mean and minimum distance, mean speeds of
        actor and partner, mean closing speed (rate at which the distance
        shrinks), and the unit of the lengths.
    nearest
        One row per frame and animal: ``frame, time_s, individual, nearest,
        distance`` (centre to centre; NaN where unknown).
    contact
        One row per pair: ``individual_a, individual_b, contact_frames,
        contact_s, fraction`` (of the frames where both are tracked).
    pair_distance
        (n_frames, n_pairs) centre distances, pairs as in ``pairs``.
    pairs
        Unordered pairs (a, b) of animal names.
    thresholds
        The thresholds used, in the data's units (after any rescaling).
    unit
        ``"mm"`` or ``"px"`` (or the dataset's unit).
    scale
        Factor applied to the mm defaults (1 when none).
    body_length
        Median body length of each animal, in ``unit``.
    fps
        Frames per second.
    """

    events: pd.DataFrame
    nearest: pd.DataFrame
    contact: pd.DataFrame
    pair_distance: NDArray[np.float64]
    pairs: list[tuple[str, str]]
    thresholds: dict[str, float]
    unit: str
    scale: float
    body_length: dict[str, float]
    fps: float
    individuals: list[str] = field(default_factory=list)

    def counts(self) -> pd.DataFrame:
        """Events per kind, actor and partner: ``kind, actor, partner, n_events, total_s, mean_s``."""
        if not len(self.events):
            return pd.DataFrame(columns=["kind", "actor", "partner", "n_events", "total_s", "mean_s"])
        g = self.events.groupby(["kind", "actor", "partner"], sort=True)["duration_s"]
        return g.agg(n_events="size", total_s="sum", mean_s="mean").reset_index()


# ---------------------------------------------------------------- helpers
def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    m = np.concatenate([[False], np.asarray(mask, bool), [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def close_gaps(mask: NDArray[np.bool_], max_gap: int) -> NDArray[np.bool_]:
    """Fill runs of False of at most ``max_gap`` frames that lie between runs of True."""
    out = np.asarray(mask, bool).copy()
    if max_gap <= 0 or not out.any():
        return out
    for s, e in _runs(~out):
        if s > 0 and e < out.size and e - s <= max_gap:
            out[s:e] = True
    return out


def event_runs(mask: NDArray[np.bool_], min_len: int, max_gap: int,
               extend: NDArray[np.bool_] | None = None) -> list[tuple[int, int]]:
    """(start, stop) of events: runs of ``mask`` after closing gaps up to ``max_gap``, at least ``min_len`` long.

    With ``extend`` (a looser criterion that holds wherever ``mask`` does),
    events are runs of ``extend`` (gaps closed) that last at least
    ``min_len`` and hold at least ``min_len / 2`` frames of ``mask``:
    hysteresis, so that an event is not cut where one measure wobbles past
    its threshold for a moment.
    """
    if extend is None:
        return [(s, e) for s, e in _runs(close_gaps(mask, max_gap)) if e - s >= max(1, min_len)]
    ext = close_gaps(np.asarray(extend, bool) | np.asarray(mask, bool), max_gap)
    core = np.asarray(mask, bool)
    return [(s, e) for s, e in _runs(ext) if e - s >= max(1, min_len) and core[s:e].sum() >= max(1, min_len / 2)]


def _interp_short(x: NDArray[np.float64], max_gap: int) -> NDArray[np.float64]:
    """Linear interpolation along axis 0 over NaN runs of at most ``max_gap`` frames (vectorised per column)."""
    out = x.copy()
    flat = out.reshape(out.shape[0], -1)
    t = np.arange(flat.shape[0])
    for j in range(flat.shape[1]):
        col = flat[:, j]
        bad = ~np.isfinite(col)
        if not bad.any() or bad.all():
            continue
        good = ~bad
        filled = np.interp(t, t[good], col[good])
        for s, e in _runs(bad):
            if s > 0 and e < col.size and e - s <= max_gap:
                col[s:e] = filled[s:e]
    return out


def _smooth(x: NDArray[np.float64], win: int) -> NDArray[np.float64]:
    """Savitzky-Golay (order 2) along axis 0, NaN-aware (NaNs are bridged for filtering, then restored)."""
    if win < 5 or x.shape[0] < win:
        return x
    from scipy.signal import savgol_filter

    bad = ~np.isfinite(x)
    if bad.all():
        return x
    filled = _interp_short(x, x.shape[0])
    filled = np.where(np.isfinite(filled), filled, np.nanmean(filled, axis=0, keepdims=True))
    out = savgol_filter(filled, win, 2, axis=0, mode="interp")
    out[bad] = np.nan
    return out


def _angle(u: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unsigned angle (rad) between 2D vectors (..., 2); NaN where either is zero or NaN."""
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = (u * v).sum(-1)
    with np.errstate(invalid="ignore"):
        a = np.abs(np.arctan2(cross, dot))
    nz = (np.linalg.norm(u, axis=-1) > 0) & (np.linalg.norm(v, axis=-1) > 0)
    return np.where(nz, a, np.nan)


@dataclass
class _Bodies:
    centre: NDArray[np.float64]  # (T, I, 2)
    heading: NDArray[np.float64]  # (T, I, 2) unit vectors
    tip: NDArray[np.float64]  # (T, I, 2)
    core: NDArray[np.float64]  # (T, K_core, I, 2)
    velocity: NDArray[np.float64]  # (T, I, 2) per second
    body_length: NDArray[np.float64]  # (I,)
    individuals: list[str]
    unit: str
    fps: float


def pose_array(pose: xr.Dataset) -> tuple[NDArray[np.float64], list[str], list[str], str]:
    """(T, S, K, I) positions, keypoint names, animal names and unit of a movement dataset (2D zeros -> NaN)."""
    if "position" not in pose:
        raise InputError("the pose dataset has no 'position' variable (not a movement poses dataset?)")
    pos = pose["position"]
    if "views" in pos.dims:
        raise InputError("the pose has a 'views' dimension; give 3D poses or the poses of one view")
    if "individuals" not in pos.dims:
        pos = pos.expand_dims(individuals=["individual_0"], axis=-1)
    if "keypoints" not in pos.dims:
        pos = pos.expand_dims(keypoints=["centroid"], axis=2)
    pos = pos.transpose("time", "space", "keypoints", "individuals")
    arr = pos.values.astype(np.float64)
    S = arr.shape[1]
    if S not in (2, 3):
        raise InputError(f"the pose space must be [x, y] or [x, y, z], got {S} entries")
    unit = str(pose.attrs.get("space_unit") or pose.attrs.get("unit") or ("mm" if S == 3 else "px"))
    if unit in ("calibration units", "millimetres", "millimeters"):
        unit = "mm"
    if unit == "pixels":
        unit = "px"
    if S == 2:
        zero = (arr[:, 0] == 0) & (arr[:, 1] == 0)
        arr = np.where(zero[:, None], np.nan, arr)
    return arr, [str(k) for k in pos["keypoints"].values], [str(i) for i in pos["individuals"].values], unit


def body_kinematics(pose: xr.Dataset, fps: float | None = None, params: SocialParams | None = None,
                    head_tip: str | list[str] | None = None, neck: str | list[str] | None = None,
                    rear: str | list[str] | None = None) -> _Bodies:
    """Body centres, headings, head tips, core keypoints and velocities of every animal."""
    from ethoscribe.behavior.features import pose_fps, resolve_body_parts

    params = params or SocialParams()
    fps = pose_fps(pose, fps)
    arr, kps, inds, unit = pose_array(pose)
    T = arr.shape[0]
    if T < 2:
        raise InputError(f"the pose has {T} frame(s); social events need a time series")
    xy = np.transpose(arr[:, :2], (0, 2, 3, 1))  # (T, K, I, 2)
    xy = _interp_short(xy, max(1, int(round(params.max_interp_s * fps))))
    if len(kps) == 1:
        parts = None
        core_idx = [0]
    else:
        parts = resolve_body_parts(kps, head_tip=head_tip, neck=neck, rear=rear)
        core_idx = [kps.index(k) for k in parts.core]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        core = xy[:, core_idx]
        centre = np.nanmean(core, axis=1)  # (T, I, 2)
        if parts is not None:
            tip = np.nanmean(xy[:, [kps.index(k) for k in parts.head_tip]], axis=1)
            nk = np.nanmean(xy[:, [kps.index(k) for k in parts.neck]], axis=1)
            rr = np.nanmean(xy[:, [kps.index(k) for k in parts.rear]], axis=1)
        else:
            tip = nk = rr = centre
    win = max(5, int(round(params.smooth_s * fps)) | 1) if params.smooth_s > 0 else 0
    centre_s = _smooth(centre, win)
    axis = _smooth(nk, win) - _smooth(rr, win)
    if parts is None:  # one keypoint: heading from the direction of motion
        axis = np.gradient(centre_s, axis=0)
    norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        heading = np.where(norm > 1e-9, axis / norm, np.nan)
    vel = np.gradient(centre_s, axis=0) * fps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bl = np.nanmedian(np.linalg.norm(tip - rr, axis=-1), axis=0) if parts is not None else np.full(len(inds), np.nan)
    return _Bodies(centre=centre_s, heading=heading, tip=tip, core=core, velocity=vel, body_length=bl,
                   individuals=inds, unit=unit, fps=fps)


def resolve_thresholds(params: SocialParams, unit: str, body_length: float) -> tuple[dict[str, float], float]:
    """The thresholds in the data's units and the factor applied to the mm defaults."""
    rescale = params.scale == "body_length" or (params.scale == "auto" and unit != "mm")
    factor = 1.0
    if rescale:
        if not (np.isfinite(body_length) and body_length > 0):
            raise InputError("cannot rescale the social thresholds: the body length is unknown (one keypoint?); "
                             "use SocialParams(scale='none') with thresholds in the data's units")
        factor = float(body_length / params.body_length_mm)
    th = params.model_dump()
    for k in _LENGTHS + _SPEEDS:
        th[k] = float(th[k]) * factor
    th.pop("scale")
    return {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in th.items()}, factor


# ---------------------------------------------------------------- the analysis
def social_analysis(
    pose: xr.Dataset | str | os.PathLike[str],
    params: SocialParams | None = None,
    *,
    fps: float | None = None,
    head_tip: str | list[str] | None = None,
    neck: str | list[str] | None = None,
    rear: str | list[str] | None = None,
) -> SocialResult:
    """Social events (approach, follow, chase, contact), nearest-neighbour distances and contact time.

    Parameters
    ----------
    pose
        movement poses dataset or pose file (anything
        :func:`ethoscribe.behavior.features.load_pose` reads), 2D or 3D,
        two or more animals (with one animal the result is empty).
    params
        :class:`SocialParams` (defaults documented there).
    fps
        Frame rate when the pose has none.
    head_tip, neck, rear
        Keypoint roles (default: by name).

    Returns
    -------
    SocialResult
    """
    from ethoscribe.behavior.features import load_pose

    params = params or SocialParams()
    ds = load_pose(pose, fps=fps)
    b = body_kinematics(ds, fps=fps, params=params, head_tip=head_tip, neck=neck, rear=rear)
    T, n = b.centre.shape[0], len(b.individuals)
    bl_all = float(np.nanmedian(b.body_length)) if np.isfinite(b.body_length).any() else float("nan")
    th, factor = resolve_thresholds(params, b.unit, bl_all)
    fps_ = b.fps
    frames = np.arange(T)

    # nearest neighbour per frame
    d_all = np.linalg.norm(b.centre[:, :, None, :] - b.centre[:, None, :, :], axis=-1)  # (T, I, I)
    idx = np.arange(n)
    d_m = d_all.copy()
    d_m[:, idx, idx] = np.inf
    d_m = np.where(np.isfinite(d_m), d_m, np.inf)
    nearest_idx = np.argmin(d_m, axis=2) if n > 1 else np.zeros((T, n), int)
    nn_d = np.take_along_axis(d_m, nearest_idx[:, :, None], axis=2)[:, :, 0] if n > 1 else np.full((T, n), np.nan)
    nn_d = np.where(np.isfinite(nn_d), nn_d, np.nan)
    nearest = pd.DataFrame({
        "frame": np.repeat(frames, n), "time_s": np.repeat(frames / fps_, n),
        "individual": np.tile(np.array(b.individuals, dtype=object), T),
        "nearest": (np.array(b.individuals, dtype=object)[nearest_idx.reshape(-1)] if n > 1 else np.full(T * n, "", dtype=object)),
        "distance": nn_d.reshape(-1),
    })
    nearest.loc[~np.isfinite(nearest["distance"]), "nearest"] = ""

    speed = np.linalg.norm(b.velocity, axis=-1)  # (T, I)
    gap = int(round(params.max_gap_s * fps_))
    events: list[dict[str, Any]] = []
    pairs = [(b.individuals[i], b.individuals[j]) for i in range(n) for j in range(i + 1, n)]
    pair_d = np.full((T, len(pairs)), np.nan)
    contact_rows = []

    def summary(kind: str, a: int, p: int, s: int, e: int, dist: NDArray[np.float64]) -> dict[str, Any]:
        seg = dist[s:e]
        dd = -np.gradient(dist)[s:e] * fps_ if e - s > 1 else np.zeros(e - s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {
                "kind": kind, "actor": b.individuals[a], "partner": b.individuals[p], "start_frame": int(s), "end_frame": int(e),
                "start_s": s / fps_, "end_s": e / fps_, "duration_s": (e - s) / fps_,
                "distance_start": float(seg[0]), "distance_end": float(seg[-1]), "mean_distance": float(np.nanmean(seg)),
                "min_distance": float(np.nanmin(seg)), "actor_speed": float(np.nanmean(speed[s:e, a])),
                "partner_speed": float(np.nanmean(speed[s:e, p])), "closing_speed": float(np.nanmean(dd)), "unit": b.unit,
            }

    core = b.core  # (T, Kc, I, 2)
    for pi, (na, nb_) in enumerate(pairs):
        i, j = b.individuals.index(na), b.individuals.index(nb_)
        pair_d[:, pi] = d_all[:, i, j]
        # nearest core keypoints of the two bodies, and each head tip to the other body
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            body = np.nanmin(np.linalg.norm(core[:, :, None, i] - core[:, None, :, j], axis=-1), axis=(1, 2))
            tip_i = np.nanmin(np.linalg.norm(b.tip[:, None, i] - core[:, :, j], axis=-1), axis=1)
            tip_j = np.nanmin(np.linalg.norm(b.tip[:, None, j] - core[:, :, i], axis=-1), axis=1)
        both = np.isfinite(b.centre[:, i, 0]) & np.isfinite(b.centre[:, j, 0])
        touching = both & (body <= th["contact_distance"])
        contact_rows.append({"individual_a": na, "individual_b": nb_, "contact_frames": int(touching.sum()),
                             "contact_s": float(touching.sum() / fps_),
                             "fraction": float(touching.sum() / both.sum()) if both.any() else float("nan")})
        for s, e in event_runs(touching, int(math.ceil(params.contact_min_s * fps_)), gap):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ti, tj = np.nanmean(tip_i[s:e]), np.nanmean(tip_j[s:e])
            a, p = (i, j) if not (tj < ti) else (j, i)
            ev = summary("contact", a, p, s, e, d_all[:, a, p])
            ev["min_distance"] = float(np.nanmin(body[s:e]))
            events.append(ev)

        for a, p in ((i, j), (j, i)):
            dist = d_all[:, a, p]
            r = b.centre[:, p] - b.centre[:, a]  # A -> B
            with np.errstate(invalid="ignore", divide="ignore"):
                u = r / np.linalg.norm(r, axis=-1, keepdims=True)
            toward = (b.velocity[:, a] * u).sum(-1)
            bearing = np.degrees(_angle(b.heading[:, a], r))
            behind = np.degrees(_angle(b.heading[:, p], r))
            align = np.cos(_angle(b.velocity[:, a], b.velocity[:, p]))
            ddist = np.gradient(dist) * fps_
            rs, ra = params.relax_speed, params.relax_angle_deg
            with np.errstate(invalid="ignore"):
                trail = ((dist <= th["follow_max_distance"]) & (bearing <= params.follow_max_bearing_deg)
                         & (behind <= params.follow_max_behind_deg) & (align >= params.follow_min_alignment))
                trail_x = (dist <= th["follow_max_distance"]) & (bearing <= ra) & (behind <= ra) & (align >= 0)
                fast = np.minimum(speed[:, a], speed[:, p])
                chase_pred = trail & (fast >= th["chase_min_speed"])
                chase_ext = trail_x & (fast >= rs * th["chase_min_speed"])
                follow_pred = trail & (fast >= th["follow_min_speed"])
                follow_ext = trail_x & (fast >= rs * th["follow_min_speed"])
            taken = np.zeros(T, bool)
            for s, e in event_runs(chase_pred, int(math.ceil(params.chase_min_s * fps_)), gap, chase_ext):
                events.append(summary("chase", a, p, s, e, dist))
                taken[s:e] = True
            for s, e in event_runs(follow_pred & ~taken, int(math.ceil(params.follow_min_s * fps_)), gap, follow_ext & ~taken):
                events.append(summary("follow", a, p, s, e, dist))
                taken[s:e] = True
            with np.errstate(invalid="ignore"):
                appr = ((toward >= th["approach_min_speed"]) & (bearing <= params.approach_max_bearing_deg)
                        & (ddist < 0) & ~touching & ~taken)
                appr_ext = (toward >= rs * th["approach_min_speed"]) & (bearing <= ra) & ~touching & ~taken
            for s, e in event_runs(appr, int(math.ceil(params.approach_min_s * fps_)), gap, appr_ext):
                if dist[s] - dist[e - 1] >= th["approach_min_closing"]:
                    events.append(summary("approach", a, p, s, e, dist))

    ev_df = pd.DataFrame(events, columns=EVENT_COLUMNS)
    if len(ev_df):
        ev_df["_k"] = ev_df["kind"].map({k: i for i, k in enumerate(EVENT_KINDS)})
        ev_df = ev_df.sort_values(["start_frame", "_k", "actor"], kind="stable").drop(columns="_k").reset_index(drop=True)
    return SocialResult(
        events=ev_df, nearest=nearest,
        contact=pd.DataFrame(contact_rows, columns=["individual_a", "individual_b", "contact_frames", "contact_s", "fraction"]),
        pair_distance=pair_d, pairs=pairs, thresholds=th, unit=b.unit, scale=factor,
        body_length={ind: float(v) for ind, v in zip(b.individuals, b.body_length)}, fps=fps_, individuals=list(b.individuals),
    )


def social_events(pose: xr.Dataset | str | os.PathLike[str], params: SocialParams | None = None, **kwargs: Any) -> pd.DataFrame:
    """Just the events table of :func:`social_analysis`."""
    return social_analysis(pose, params, **kwargs).events


def nearest_neighbour_distance(pose: xr.Dataset | str | os.PathLike[str], params: SocialParams | None = None,
                               **kwargs: Any) -> pd.DataFrame:
    """Per frame and animal, the nearest other animal and its centre distance (see :class:`SocialResult`)."""
    return social_analysis(pose, params, **kwargs).nearest


def contact_time(pose: xr.Dataset | str | os.PathLike[str], params: SocialParams | None = None, **kwargs: Any) -> pd.DataFrame:
    """Per pair of animals, the time their bodies are in contact (see :class:`SocialResult`)."""
    return social_analysis(pose, params, **kwargs).contact
