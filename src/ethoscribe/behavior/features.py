"""Per-frame, per-animal pose features and their multi-scale windows.

Features are *egocentric*: they are computed in each animal's body frame, so
they do not change when the arena is translated or rotated about the vertical
axis (and, being normalised by the animal's median body length, when the data
are rescaled, e.g. mm versus px). They work on any skeleton: the keypoints
that play the roles *head tip*, *neck* and *rear* are picked by name (see
:func:`resolve_body_parts`) and can be given by the user.

Pipeline (:func:`compute_pose_features`):

1. **Missing data.** Keypoints at exactly ``(0, 0)`` in 2D data are taken as
   missing (the DeepLabCut / MABe convention). NaN gaps of at most
   ``max_gap_s`` seconds are filled by linear interpolation over time
   (:func:`movement.filtering.interpolate_over_time`), also at the start and
   end of a track (nearest value). A frame whose head tip, neck or rear is
   still missing after that is *invalid*: with ``gap_policy="mask"`` (the
   default) it is kept out of clustering and labelled ``untracked`` by the
   pipeline; with ``gap_policy="error"`` an :class:`~ethoscribe.errors.InputError`
   names the animal, keypoint and longest gap. Other keypoints still missing
   are interpolated without limit for computing (they only feed secondary
   features).
2. **Smoothing.** A Savitzky-Golay filter (order 2, ``smooth_s`` seconds,
   :func:`movement.filtering.savgol_filter`) before differentiating, so that
   keypoint noise does not dominate speeds and accelerations; the
   egocentric keypoint motion (``pose_change``, ``paw_motion``) uses a
   lighter one (5 frames, cubic) so that fast limb strokes survive.
3. **Kinematics.** Velocities and accelerations via
   :func:`movement.kinematics.compute_velocity` /
   :func:`~movement.kinematics.compute_acceleration` (travel from the trunk,
   see ``speed`` below); the body frame from the
   rear -> neck axis in the horizontal (x, y) plane; 3D data are taken as
   z-up with the floor at the 2nd percentile of the animal's keypoint heights.

Feature list (units in :attr:`PoseFeatures.units`; BL = the animal's median
head-tip to rear distance, so features are scale free):

=====================  =====================================================
``speed``              trunk speed in the horizontal plane (BL/s); the
                       trunk is the mean of the neck, mid-back and rear
                       keypoints, so that head scanning and limb strokes do
                       not read as travel
``forward_speed``      its component along the body axis (BL/s, signed)
``lateral_speed``      abs. component across the body axis (BL/s)
``acceleration``       abs. tangential acceleration (BL/s^2)
``angular_speed``      abs. angular velocity of the heading (rad/s)
``turn_rate``          abs. net change of the heading over a centred 0.5 s
                       window, per second (rad/s): turning that lasts, without
                       the side-to-side sway of the gait
``body_length``        head tip to rear distance / BL
``bend``               abs. angle between neck->mid and mid->rear (rad;
                       only when the skeleton has a mid-back keypoint)
``head_angle``         abs. angle of the head (neck->tip) to the body (rad)
``pose_change``        mean speed of the keypoints in the body frame (BL/s)
``paw_motion``         same, paws/legs only (when the skeleton has them)
``vertical_speed``     abs. vertical centroid speed (BL/s, 3D only)
``head_height``        head tip above the floor / BL (3D only)
``body_height``        centroid above the floor / BL (3D only)
``pitch``              elevation of the rear->head axis (rad, 3D only)
``paw_height``         mean paw height above the floor / BL (3D, paws only)
=====================  =====================================================

With two or more animals, per frame and relative to the *nearest* other
animal (by centroid distance): ``social_distance`` (BL), ``nose_distance``
(own head tip to the nearest keypoint of the other, BL), ``bearing`` (abs.
angle from own heading to the other, rad), ``partner_bearing`` (the same
seen from the other: is it facing me), ``closing_speed`` (rate at which the
distance shrinks, BL/s), ``partner_speed`` (BL/s) and ``heading_alignment``
(cosine of the heading difference).

Examples
--------
>>> from ethoscribe.behavior.toy import toy_poses
>>> ds, truth = toy_poses(n_frames=300, seed=0)
>>> feats = compute_pose_features(ds)
>>> feats.values.shape[:2], "speed" in feats.names
((300, 1), True)
>>> win = window_features(feats)
>>> win.values.shape[0] == 300
True
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from ethoscribe.errors import InputError, SkeletonError

# --------------------------------------------------------------- body parts
#: Name patterns (regular expressions) in priority order, matched against the
#: keypoint name split into lower-case words joined by single spaces
#: (``"tail_base"``, ``"tailBase"`` and ``"Tail base"`` all become
#: ``"tail base"``; ``"forelegL4"`` becomes ``"foreleg l 4"``). The first
#: pattern that matches any keypoint wins; all keypoints it matches are
#: averaged (e.g. both ears).
HEAD_TIP_PATTERNS: tuple[str, ...] = (r"\bnose\b", r"\bsnout\b", r"\bbeak\b", r"^head( tip)?( \d+)?$", r"\bears?\b", r"\beyes?\b")
NECK_PATTERNS: tuple[str, ...] = (
    r"\bneck\b", r"\bears?\b", r"\bback ?front\b|\bspine ?1\b|\bwithers\b|\bshoulders?\b", r"\bthorax\b",
    r"^head\b", r"\beyes?\b",
)
REAR_PATTERNS: tuple[str, ...] = (
    r"\btail ?(base|root|start|0)\b|\bbase ?(of )?tail\b", r"\babdomen\b",
    r"\bback ?rear\b|\brump\b|\bhips?\b|\bpelvis\b|\blower ?back\b", r"^tail$",
)
MID_PATTERNS: tuple[str, ...] = (
    r"\bback ?mid\b|\b(center|centre|mid) ?back\b|\bspine ?(2|mid)\b|\bcent(er|re|roid)\b|^mid( ?point| ?body)?$", r"\bthorax\b", r"^back$|^spine$",
)
PAW_PATTERNS: tuple[str, ...] = (r"paw|hand|foot|feet|leg|limb|claw|hoof",)
TAIL_PATTERNS: tuple[str, ...] = (r"\btail ?(mid|middle|tip|end|[1-9])|\btail ?\d", r"\bwing")


def _norm_name(name: str) -> str:
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(name))
    s = re.sub(r"([A-Za-z])(\d)|(\d)([A-Za-z])", lambda m: " ".join(x for x in m.groups() if x), s)
    return " ".join(re.split(r"[^a-z0-9]+", s.lower())).strip()


def _match(keypoints: list[str], patterns: tuple[str, ...], exclude: set[str] = frozenset()) -> tuple[str, ...]:
    for pat in patterns:
        hits = tuple(k for k in keypoints if k not in exclude and re.search(pat, _norm_name(k)))
        if hits:
            return hits
    return ()


@dataclass(frozen=True)
class BodyParts:
    """Which keypoints play which role; each role is the mean of its keypoints.

    Attributes
    ----------
    head_tip, neck, rear
        Anchor roles: the body axis runs rear -> neck, the body length is
        head tip -> rear, the head direction is neck -> head tip.
    mid
        The body's middle, for the bend angle (may be empty: then the
        midpoint of neck and rear).
    paws
        Limb keypoints (may be empty).
    core
        Keypoints averaged into the centroid (all but tail/wing tips).
    """

    head_tip: tuple[str, ...]
    neck: tuple[str, ...]
    rear: tuple[str, ...]
    mid: tuple[str, ...] = ()
    paws: tuple[str, ...] = ()
    core: tuple[str, ...] = ()


def _as_tuple(v: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    if v is None:
        return None
    return (v,) if isinstance(v, str) else tuple(v)


def resolve_body_parts(
    keypoints: list[str] | tuple[str, ...],
    *,
    head_tip: str | list[str] | None = None,
    neck: str | list[str] | None = None,
    rear: str | list[str] | None = None,
) -> BodyParts:
    """Pick the keypoints for each body role by name, unless given.

    Heuristics (first match wins, see the ``*_PATTERNS`` constants): head tip
    from nose, snout, head, ears, eyes; neck from neck, ears, back_front,
    thorax; rear from tail base, abdomen, back_rear/rump/hip. The three roles
    must be distinct keypoint sets.

    Examples
    --------
    >>> p = resolve_body_parts(["nose", "left ear", "right ear", "neck", "tail base", "tail tip"])
    >>> p.head_tip, p.neck, p.rear
    (('nose',), ('neck',), ('tail base',))
    >>> resolve_body_parts(["head", "thorax", "abdomen"]).neck
    ('thorax',)
    """
    kps = [str(k) for k in keypoints]
    known = set(kps)
    for role, given in (("head_tip", head_tip), ("neck", neck), ("rear", rear)):
        for k in _as_tuple(given) or ():
            if k not in known:
                raise SkeletonError(f"{role} keypoint {k!r} is not in the pose keypoints {kps}")
    rear_t = _as_tuple(rear) or _match(kps, REAR_PATTERNS)
    tip_t = _as_tuple(head_tip) or _match(kps, HEAD_TIP_PATTERNS, exclude=set(rear_t))
    neck_t = _as_tuple(neck) or _match(kps, NECK_PATTERNS, exclude=set(tip_t) | set(rear_t))
    if not neck_t and tip_t:
        neck_t = tip_t  # no separate neck: body axis ends at the head tip
    missing = [r for r, t in (("head tip", tip_t), ("rear", rear_t)) if not t]
    if missing:
        raise SkeletonError(
            f"cannot tell the {' and '.join(missing)} of the animal from keypoints {kps}; "
            "name them explicitly (front=/rear=, CLI --front/--rear)"
        )
    if set(tip_t) == set(rear_t):
        raise SkeletonError(f"head tip and rear are the same keypoints {tip_t}; name them explicitly")
    anchors = set(tip_t) | set(neck_t) | set(rear_t)
    mid_t = _match(kps, MID_PATTERNS, exclude=anchors)
    paws = _match(kps, PAW_PATTERNS)
    tails = set(_match(kps, TAIL_PATTERNS))
    core = tuple(k for k in kps if k not in tails) or tuple(kps)
    return BodyParts(head_tip=tip_t, neck=neck_t, rear=rear_t, mid=mid_t, paws=paws, core=core)


# ------------------------------------------------------------ result types
@dataclass
class PoseFeatures:
    """Per-frame features of each animal.

    Attributes
    ----------
    values
        (n_frames, n_individuals, n_features) float64; invalid frames hold NaN.
    names
        Feature names (see the module docstring).
    individuals
        Animal names.
    fps
        Frames per second.
    valid
        (n_frames, n_individuals) bool: frames with a usable pose.
    units
        Unit of each feature.
    body_length
        Median body length of each animal in data units (``unit``).
    unit
        ``"mm"``, ``"px"`` or the dataset's unit.
    is_3d
        Whether the pose was 3D.
    parts
        The resolved body parts.
    """

    values: NDArray[np.float64]
    names: list[str]
    individuals: list[str]
    fps: float
    valid: NDArray[np.bool_]
    units: dict[str, str]
    body_length: NDArray[np.float64]
    unit: str
    is_3d: bool
    parts: BodyParts | None = None
    interpolated_fraction: float = 0.0

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.values.shape[0])

    def column(self, name: str) -> NDArray[np.float64]:
        """(n_frames, n_individuals) values of one feature."""
        return self.values[:, :, self.names.index(name)]

    def to_dataframe(self) -> object:
        """Long table: frame, individual, one column per feature, valid."""
        import pandas as pd

        T, n_ind, _ = self.values.shape
        frames = np.repeat(np.arange(T), n_ind)
        inds = np.tile(np.array(self.individuals, dtype=object), T)
        df = pd.DataFrame(self.values.reshape(T * n_ind, -1), columns=self.names)
        df.insert(0, "individual", inds)
        df.insert(0, "frame", frames)
        df["valid"] = self.valid.reshape(-1)
        return df


@dataclass
class WindowedFeatures:
    """Standardised multi-scale window features, ready for clustering.

    Attributes
    ----------
    values
        (n_frames, n_individuals, n_features) float32, robust-scaled
        (median 0, inter-quartile range 1 over valid frames), tail-compressed
        by ``arcsinh`` and clipped; invalid frames hold the median (0).
    names
        ``"<feature>"`` for the frame value, ``"<feature>@<w>s:mean|std"``
        for the window statistics.
    individuals, fps, valid
        As in :class:`PoseFeatures`.
    center, scale
        The robust scaler's median and IQR per feature (before scaling).
    """

    values: NDArray[np.float32]
    names: list[str]
    individuals: list[str]
    fps: float
    valid: NDArray[np.bool_]
    center: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    scale: NDArray[np.float64] = field(default_factory=lambda: np.ones(0))

    def stacked(self) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.int64]]:
        """Valid rows of all animals as one matrix, with their frame and animal indices."""
        f, a = np.nonzero(self.valid)
        return self.values[f, a], f.astype(np.int64), a.astype(np.int64)


# ----------------------------------------------------------------- helpers
def load_pose(source: str | os.PathLike[str] | xr.Dataset, fps: float | None = None) -> xr.Dataset:
    """A movement-style poses dataset from a Dataset or a file.

    Files: netCDF (``.nc``, as written by movement / ethoscribe), DeepLabCut
    ``.h5``/``.csv``, SLEAP ``.slp``/``.h5`` analysis files, Lightning Pose
    and Anipose ``.csv`` (through :func:`movement.io.load_poses.from_file`,
    trying the likely sources in turn).
    """
    if isinstance(source, xr.Dataset):
        return source
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: pose file not found")
    suffix = path.suffix.lower()
    if suffix in (".nc", ".netcdf", ".cdf"):
        try:
            return xr.load_dataset(path)
        except Exception as exc:
            raise InputError(f"{path}: cannot be read as a netCDF pose dataset ({exc})") from None
    from movement.io import load_poses

    if suffix == ".slp":
        order = ["SLEAP"]
    elif suffix == ".h5":
        order = ["DeepLabCut", "SLEAP"]
    elif suffix == ".csv":
        order = ["DeepLabCut", "LightningPose", "Anipose"]
    else:
        raise InputError(f"{path}: unknown pose file type {suffix!r} (use .nc, .h5, .csv or .slp)")
    errors = []
    for src in order:
        try:
            return load_poses.from_file(path, source_software=src, fps=fps)
        except Exception as exc:  # movement raises various errors per format
            errors.append(f"{src}: {type(exc).__name__}: {exc}")
    raise InputError(f"{path}: cannot be read as a pose file ({'; '.join(errors)})")


def pose_fps(ds: xr.Dataset, fps: float | None = None) -> float:
    """The frame rate: ``fps`` if given (checked against the data), else the dataset's."""
    ds_fps = ds.attrs.get("fps")
    if ds_fps is not None and not (isinstance(ds_fps, float) and math.isnan(ds_fps)):
        ds_fps = float(ds_fps)
        if fps is not None and abs(ds_fps - float(fps)) > 1e-3 * ds_fps:
            raise InputError(f"the pose says {ds_fps:g} fps but {float(fps):g} fps was given (mismatched frame rates)")
        return ds_fps
    if fps is None:
        t = np.asarray(ds["time"].values, dtype=float)
        if ds.attrs.get("time_unit") == "seconds" and t.size > 1 and np.all(np.diff(t) > 0):
            return float(1.0 / np.median(np.diff(t)))
        raise InputError("the pose has no frame rate (time in frames); pass fps= (CLI --fps)")
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    return float(fps)


def _position_array(ds: xr.Dataset) -> xr.DataArray:
    if "position" not in ds:
        raise InputError("the pose dataset has no 'position' variable (not a movement poses dataset?)")
    pos = ds["position"]
    need = {"time", "space", "keypoints", "individuals"}
    missing = need - set(pos.dims)
    if "individuals" in missing and {"time", "space", "keypoints"} <= set(pos.dims):
        pos = pos.expand_dims(individuals=["individual_0"], axis=-1)
        missing = set()
    if "keypoints" in missing and {"time", "space", "individuals"} <= set(pos.dims):
        pos = pos.expand_dims(keypoints=["centroid"], axis=2)
        missing = set()
    if missing:
        raise InputError(f"the pose position has dims {pos.dims}; it needs {sorted(need)}")
    if "views" in pos.dims:
        raise InputError("the pose has a 'views' dimension; give 3D poses or a single view")
    pos = pos.transpose("time", "space", "keypoints", "individuals").astype(np.float64)
    spaces = [str(s) for s in pos["space"].values]
    if spaces not in (["x", "y"], ["x", "y", "z"]):
        raise InputError(f"the pose space must be [x, y] or [x, y, z], got {spaces}")
    return pos


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, stop) of runs of True in a 1D mask."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _fill_edges(arr: NDArray[np.float64], limit: int | None) -> NDArray[np.float64]:
    """Fill leading/trailing NaN runs along axis 0 with the nearest value (up to ``limit`` frames)."""
    out = arr.copy()
    flat = out.reshape(out.shape[0], -1)
    for j in range(flat.shape[1]):
        col = flat[:, j]
        ok = np.flatnonzero(np.isfinite(col))
        if ok.size == 0:
            continue
        first, last = ok[0], ok[-1]
        lo = 0 if limit is None else max(0, first - limit)
        col[lo:first] = col[first]
        hi = col.size if limit is None else min(col.size, last + 1 + limit)
        col[last + 1 : hi] = col[last]
    return out


def _interp_all(arr: NDArray[np.float64]) -> NDArray[np.float64]:
    """Linear interpolation of all NaNs along axis 0 (nearest value at the ends)."""
    out = arr.copy()
    flat = out.reshape(out.shape[0], -1)
    t = np.arange(flat.shape[0])
    for j in range(flat.shape[1]):
        col = flat[:, j]
        bad = ~np.isfinite(col)
        if bad.any() and (~bad).any():
            col[bad] = np.interp(t[bad], t[~bad], col[~bad])
    return out


def net_turn_rate(heading: NDArray[np.float64], fps: float, window_s: float = 0.5) -> NDArray[np.float64]:
    """abs(heading(t + w/2) - heading(t - w/2)) / w of an unwrapped heading (T, ...), in rad/s; windows clipped at the ends."""
    T = heading.shape[0]
    h = max(1, int(round(window_s * fps / 2)))
    idx = np.arange(T)
    lo, hi = np.clip(idx - h, 0, T - 1), np.clip(idx + h, 0, T - 1)
    span = np.maximum(hi - lo, 1) / fps
    return np.abs(heading[hi] - heading[lo]) / span.reshape((-1,) + (1,) * (heading.ndim - 1))


def _angle(u: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unsigned angle between 2D vectors (..., 2)."""
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = (u[..., :2] * v[..., :2]).sum(-1)
    return np.abs(np.arctan2(cross, dot))


def _mean_of(pos: NDArray[np.float64], idx: list[int]) -> NDArray[np.float64]:
    return pos[:, :, idx, :].mean(axis=2)  # (T, S, I)


# ------------------------------------------------------------ the features
def compute_pose_features(
    pose: xr.Dataset | str | os.PathLike[str],
    *,
    fps: float | None = None,
    head_tip: str | list[str] | None = None,
    neck: str | list[str] | None = None,
    rear: str | list[str] | None = None,
    max_gap_s: float = 0.5,
    gap_policy: str = "mask",
    smooth_s: float = 0.2,
    zero_is_missing: bool = True,
    min_valid_fraction: float = 0.05,
) -> PoseFeatures:
    """Per-frame egocentric features of every animal (see the module docstring).

    Parameters
    ----------
    pose
        A movement poses dataset or a pose file (:func:`load_pose`).
    fps
        Frame rate, needed when the pose has none.
    head_tip, neck, rear
        Keypoint name(s) for each role, overriding :func:`resolve_body_parts`.
    max_gap_s
        Longest NaN gap (seconds) filled by interpolation.
    gap_policy
        ``"mask"``: frames whose anchors are missing after interpolation are
        marked invalid; ``"error"``: raise :class:`InputError` instead.
    smooth_s
        Savitzky-Golay window (seconds) applied before derivatives.
    zero_is_missing
        Treat 2D keypoints at exactly (0, 0) as missing.
    min_valid_fraction
        An animal with fewer valid frames than this is an error.
    """
    from movement.filtering import interpolate_over_time, savgol_filter
    from movement.kinematics import compute_acceleration, compute_velocity

    ds = load_pose(pose, fps=fps)
    if gap_policy not in ("mask", "error"):
        raise ValueError(f"gap_policy must be 'mask' or 'error', not {gap_policy!r}")
    pos_da = _position_array(ds)
    fps = pose_fps(ds, fps)
    T, S, K, n_ind = pos_da.shape
    if T < 2:
        raise InputError(f"the pose has {T} frame(s); behaviour needs a time series (at least 2 frames, better several seconds)")
    keypoints = [str(k) for k in pos_da["keypoints"].values]
    individuals = [str(i) for i in pos_da["individuals"].values]
    is_3d = S == 3
    unit = str(ds.attrs.get("space_unit") or ds.attrs.get("unit") or ("mm" if is_3d else "px"))
    parts = resolve_body_parts(keypoints, head_tip=head_tip, neck=neck, rear=rear)
    kidx = {k: i for i, k in enumerate(keypoints)}

    raw = pos_da.values.copy()
    if zero_is_missing and not is_3d:
        zero = (raw[:, 0] == 0) & (raw[:, 1] == 0)
        raw = np.where(zero[:, None], np.nan, raw)
    n_missing = int(np.isnan(raw).any(axis=1).sum())

    # 1. gaps: interpolate up to max_gap over time (movement), edges by nearest value
    max_gap = max(1, int(round(max_gap_s * fps)))
    da = xr.DataArray(raw, dims=pos_da.dims, coords={**{d: pos_da[d].values for d in pos_da.dims}, "time": np.arange(T) / fps})
    filled = interpolate_over_time(da, method="linear", max_gap=max_gap).values
    filled = _fill_edges(filled, max_gap)
    n_left = int(np.isnan(filled).any(axis=1).sum())
    interp_frac = (n_missing - n_left) / max(1, T * K * n_ind)

    anchor_idx = [kidx[k] for k in (*parts.head_tip, *parts.neck, *parts.rear)]
    anchor_ok = np.isfinite(filled[:, :, anchor_idx, :]).all(axis=(1, 2))  # (T, I)
    if not anchor_ok.all():
        # longest gap for the message
        worst = (0, 0, 0, "")
        for a in range(n_ind):
            for k in anchor_idx:
                for s0, s1 in _runs(~np.isfinite(filled[:, :, k, a]).all(axis=1)):
                    if s1 - s0 > worst[1] - worst[0]:
                        worst = (s0, s1, a, keypoints[k])
        s0, s1, a, kname = worst
        msg = (
            f"animal {individuals[a]!r}: keypoint {kname!r} is missing for {s1 - s0} frames "
            f"({s0}-{s1 - 1}, {(s1 - s0) / fps:.2f} s), longer than the {max_gap_s:g} s that are interpolated; "
            f"{int((~anchor_ok).sum())} animal-frames lack a usable pose"
        )
        if gap_policy == "error":
            raise InputError(msg + " (use gap_policy='mask' to label them 'untracked', or raise max_gap_s)")
    for a in range(n_ind):
        if anchor_ok[:, a].mean() < min_valid_fraction or anchor_ok[:, a].sum() < 2:
            raise InputError(
                f"animal {individuals[a]!r} has a usable pose in only {int(anchor_ok[:, a].sum())} of {T} frames; "
                "drop it from the pose file or name other keypoints as head tip/neck/rear"
            )
    work = _interp_all(filled)  # remaining NaNs filled for computing; invalid frames masked below

    # 2. smoothing
    win = max(5, int(round(smooth_s * fps)) | 1)
    if win >= T:
        win = T if T % 2 else T - 1
    coords = {d: pos_da[d].values for d in pos_da.dims}
    coords["time"] = np.arange(T) / fps
    raw_da = xr.DataArray(work, dims=pos_da.dims, coords=coords)
    da = savgol_filter(raw_da, window=win, polyorder=min(2, win - 1), mode="interp") if win >= 3 else raw_da
    P = da.values  # (T, S, K, I)
    # limb and head motion is fast (grooming strokes at ~5 Hz): a lighter filter
    # (5 frames, cubic) for the egocentric keypoint motion
    P_fast = savgol_filter(raw_da, window=5, polyorder=3, mode="interp").values if T >= 5 else work

    # 3. kinematics
    core = [kidx[k] for k in parts.core]
    centroid = P[:, :, core, :].mean(axis=2)  # (T, S, I)
    cen_da = xr.DataArray(centroid, dims=("time", "space", "individuals"), coords={"time": coords["time"], "space": coords["space"], "individuals": coords["individuals"]})
    vel = compute_velocity(cen_da).values  # (T, S, I) per second
    tip = _mean_of(P, [kidx[k] for k in parts.head_tip])
    nk = _mean_of(P, [kidx[k] for k in parts.neck])
    rr = _mean_of(P, [kidx[k] for k in parts.rear])
    mid = _mean_of(P, [kidx[k] for k in parts.mid]) if parts.mid else None
    axis = nk - rr
    if np.allclose(axis, 0):
        axis = tip - rr
    axis_xy = axis[:, :2]  # (T, 2, I)
    ax_norm = np.linalg.norm(axis_xy, axis=1, keepdims=True)
    ax_norm = np.where(ax_norm < 1e-9, 1e-9, ax_norm)
    e_f = axis_xy / ax_norm  # forward unit vector (T, 2, I)
    e_l = np.stack([-e_f[:, 1], e_f[:, 0]], axis=1)  # left unit vector

    blen_t = np.linalg.norm(tip - rr, axis=1)  # (T, I)
    bl = np.array([np.nanmedian(np.where(anchor_ok[:, a], blen_t[:, a], np.nan)) for a in range(n_ind)])
    if np.any(~np.isfinite(bl)) or np.any(bl <= 0):
        raise InputError("the animal's head tip and rear coincide (zero body length); check the keypoint roles")

    # locomotion is the motion of the trunk (neck, mid-back, rear): the head and
    # limbs move on their own (scanning, grooming, strides), and their motion
    # would read as travel in a centroid of all keypoints
    trunk = (nk + rr + mid) / 3 if mid is not None else (nk + rr) / 2
    trunk_da = xr.DataArray(trunk, dims=cen_da.dims, coords=cen_da.coords)
    v_trunk = compute_velocity(trunk_da).values[:, :2]  # (T, 2, I)
    a_trunk = compute_acceleration(trunk_da).values[:, :2] if T >= 3 else np.zeros_like(v_trunk)
    v_xy = vel[:, :2]
    feats: dict[str, NDArray[np.float64]] = {}
    units: dict[str, str] = {}

    def put(name: str, val: NDArray[np.float64], u: str) -> None:
        feats[name] = val
        units[name] = u

    sp = np.linalg.norm(v_trunk, axis=1)
    put("speed", sp / bl, "BL/s")
    put("forward_speed", (v_trunk * e_f).sum(1) / bl, "BL/s")
    put("lateral_speed", np.abs((v_trunk * e_l).sum(1)) / bl, "BL/s")
    tang = (a_trunk * v_trunk).sum(1) / np.maximum(sp, 1e-9)
    put("acceleration", np.abs(tang) / bl, "BL/s^2")
    heading = np.unwrap(np.arctan2(e_f[:, 1], e_f[:, 0]), axis=0)
    put("angular_speed", np.abs(np.gradient(heading, axis=0) * fps), "rad/s")
    put("turn_rate", net_turn_rate(heading, fps), "rad/s")
    put("body_length", blen_t / bl, "BL")
    if parts.mid:
        put("bend", _angle(nk[:, :2].transpose(0, 2, 1) - mid[:, :2].transpose(0, 2, 1), mid[:, :2].transpose(0, 2, 1) - rr[:, :2].transpose(0, 2, 1)), "rad")
    put("head_angle", _angle((tip - nk)[:, :2].transpose(0, 2, 1), axis_xy.transpose(0, 2, 1)) if parts.neck != parts.head_tip else np.zeros((T, n_ind)), "rad")

    # egocentric keypoint coordinates (T, K, I, S)
    rel = P_fast - P_fast[:, :, core, :].mean(axis=2)[:, :, None, :]
    ego_x = (rel[:, 0] * e_f[:, 0, None, :] + rel[:, 1] * e_f[:, 1, None, :])
    ego_y = (rel[:, 0] * e_l[:, 0, None, :] + rel[:, 1] * e_l[:, 1, None, :])
    ego = [ego_x, ego_y] + ([rel[:, 2]] if is_3d else [])
    ego_v = np.sqrt(sum(np.gradient(c, axis=0) ** 2 for c in ego)) * fps  # (T, K, I)
    put("pose_change", ego_v.mean(axis=1) / bl, "BL/s")
    if parts.paws:
        paw_idx = [kidx[k] for k in parts.paws]
        put("paw_motion", ego_v[:, paw_idx].mean(axis=1) / bl, "BL/s")
    if is_3d:
        zs = P[:, 2]  # (T, K, I)
        floor = np.array([np.nanpercentile(zs[anchor_ok[:, a], :, a], 2) for a in range(n_ind)])
        put("vertical_speed", np.abs(vel[:, 2]) / bl, "BL/s")
        put("head_height", (tip[:, 2] - floor) / bl, "BL")
        put("body_height", (centroid[:, 2] - floor) / bl, "BL")
        d = tip - rr
        put("pitch", np.arctan2(d[:, 2], np.linalg.norm(d[:, :2], axis=1)), "rad")
        if parts.paws:
            put("paw_height", (zs[:, paw_idx].mean(axis=1) - floor) / bl, "BL")

    if n_ind >= 2:
        c2 = centroid[:, :2]  # (T, 2, I)
        dist = np.linalg.norm(c2[:, :, :, None] - c2[:, :, None, :], axis=1)  # (T, I, I)
        # invalid partners are far away
        big = np.where(anchor_ok[:, None, :], 0.0, np.inf)
        dist_m = dist + big
        idx = np.arange(n_ind)
        dist_m[:, idx, idx] = np.inf
        nearest = np.argmin(dist_m, axis=2)  # (T, I)
        tt = np.arange(T)[:, None]
        aa = np.arange(n_ind)[None, :]
        d_near = dist[tt, aa, nearest]
        put("social_distance", d_near / bl, "BL")
        # nose to nearest keypoint of the partner
        Pxy = P[:, :2]  # (T, 2, K, I)
        other = Pxy[tt, :, :, nearest]  # (T, I, 2, K)
        tip_xy = tip[:, :2].transpose(0, 2, 1)  # (T, I, 2)
        nd = np.linalg.norm(other - tip_xy[:, :, :, None], axis=2).min(axis=2)
        put("nose_distance", nd / bl, "BL")
        to_other = c2.transpose(0, 2, 1)[tt, nearest] - c2.transpose(0, 2, 1)  # (T, I, 2)
        ef = e_f.transpose(0, 2, 1)  # (T, I, 2)
        put("bearing", _angle(ef, to_other), "rad")
        put("partner_bearing", _angle(ef[tt, nearest], -to_other), "rad")
        # closing speed: -d/dt of the distance to the (current) nearest partner
        vv = v_xy.transpose(0, 2, 1)
        rel_v = vv[tt, nearest] - vv
        unit_to = to_other / np.maximum(np.linalg.norm(to_other, axis=2, keepdims=True), 1e-9)
        put("closing_speed", -(rel_v * unit_to).sum(2) / bl, "BL/s")
        put("partner_speed", np.linalg.norm(vv[tt, nearest], axis=2) / bl, "BL/s")
        put("heading_alignment", (ef * ef[tt, nearest]).sum(2), "cos")

    names = list(feats)
    values = np.stack([feats[n] for n in names], axis=-1).astype(np.float64)
    values[~anchor_ok] = np.nan
    return PoseFeatures(
        values=values, names=names, individuals=individuals, fps=fps, valid=anchor_ok.copy(),
        units=units, body_length=bl, unit=unit, is_3d=is_3d, parts=parts, interpolated_fraction=float(interp_frac),
    )


# ------------------------------------------------------------ windowing
def feature_group(name: str) -> str:
    """The group of a feature column: its base name without the window suffix and a trailing index.

    Columns of one multi-dimensional feature (``motion_pc0``...``motion_pc11``)
    form one group; :func:`window_features` gives every group the weight of
    one scalar feature.

    Examples
    --------
    >>> feature_group("v0_motion_pc3@0.5s:mean"), feature_group("speed")
    ('v0_motion_pc', 'speed')
    """
    return re.sub(r"\d+$", "", name.split("@")[0])


def _rolling_mean(x: NDArray[np.float64], w: int) -> NDArray[np.float64]:
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(x, size=max(1, w), axis=0, mode="nearest")


def window_features(
    features: PoseFeatures | object,
    windows_s: tuple[float, ...] = (0.25, 0.5, 1.0),
    stats: tuple[str, ...] = ("mean",),
    clip: float = 10.0,
    compress: bool = True,
    balance_groups: bool = True,
) -> WindowedFeatures:
    """Multi-scale window statistics of per-frame features, robust-scaled.

    For each feature, the frame value plus centred rolling statistics over
    each window in ``windows_s`` (seconds): the mean by default, and the
    standard deviation when ``stats`` includes ``"std"`` (off by default:
    on pose features the rolling standard deviations mostly carry keypoint
    jitter and bout transitions, and they blurred the clusters in our tests;
    oscillations such as grooming already show in the speed-like features). Invalid frames are
    given the feature's median before windowing (so they do not poison their
    neighbours) and stay invalid. The result is scaled per column to median 0
    and inter-quartile range 1 over the valid frames of all animals together
    (columns with zero IQR use their standard deviation); with ``compress``
    (default) each scaled column then goes through ``arcsinh``, linear near
    the median and logarithmic in the tails, so that a few extreme behaviours
    (running, rearing) do not dwarf the differences among the common, quiet
    ones (resting, turning, walking); finally values are clipped to
    +/- ``clip``. With ``balance_groups`` (default), the columns of a
    multi-dimensional feature (one :func:`feature_group`, e.g. the 12
    motion-SVD components) are divided by the square root of their number,
    so that the group weighs in distances as much as one scalar feature
    (as multiple factor analysis balances groups of variables): otherwise
    a block of many components would outvote speed, turning or body shape.

    ``features`` is anything with ``values`` (T, I, F), ``names``,
    ``individuals``, ``fps`` and ``valid`` (e.g. :class:`PoseFeatures` or
    :class:`~ethoscribe.behavior.video_features.VideoFeatures`).
    """
    vals = np.asarray(features.values, dtype=np.float64)  # type: ignore[attr-defined]
    valid = np.asarray(features.valid, dtype=bool)  # type: ignore[attr-defined]
    fps = float(features.fps)  # type: ignore[attr-defined]
    names_in = list(features.names)  # type: ignore[attr-defined]
    T, n_ind, F = vals.shape
    x = vals.copy()
    for j in range(F):
        col = x[:, :, j]
        ok = valid & np.isfinite(col)
        med = float(np.median(col[ok])) if ok.any() else 0.0
        col[~ok] = med
    cols = [x]
    names = list(names_in)
    for w_s in windows_s:
        w = max(1, int(round(w_s * fps)))
        m = _rolling_mean(x, w)
        if "mean" in stats:
            cols.append(m)
            names += [f"{n}@{w_s:g}s:mean" for n in names_in]
        if "std" in stats:
            m2 = _rolling_mean(x * x, w)
            cols.append(np.sqrt(np.maximum(m2 - m * m, 0.0)))
            names += [f"{n}@{w_s:g}s:std" for n in names_in]
    allv = np.concatenate(cols, axis=2)
    rows = allv[valid]
    center = np.median(rows, axis=0)
    q75, q25 = np.percentile(rows, [75, 25], axis=0)
    scale = q75 - q25
    sd = rows.std(axis=0)
    scale = np.where(scale > 1e-9 * (1 + np.abs(center)), scale, np.where(sd > 1e-12, sd, 1.0))
    z = (allv - center) / scale
    if compress:
        z = np.arcsinh(z)
    z = np.clip(z, -clip, clip)
    if balance_groups:
        groups = [feature_group(n) for n in names_in]
        size = {g: groups.count(g) for g in groups}
        weight = np.array([1.0 / math.sqrt(size[g]) for g in groups] * (len(names) // F))
        z = z * weight
    z[~valid] = 0.0
    return WindowedFeatures(
        values=z.astype(np.float32), names=names, individuals=list(features.individuals),  # type: ignore[attr-defined]
        fps=fps, valid=valid.copy(), center=center, scale=scale,
    )
