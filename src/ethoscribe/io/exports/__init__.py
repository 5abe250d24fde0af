"""Exports of pose labels and 3D poses to the formats of the field.

Each format is written through the library that owns it:

==============  =====================================  =================================
format          function                               library
==============  =====================================  =================================
SLEAP ``.slp``  :func:`~.sleap.export_slp`             sleap-io
DeepLabCut      :func:`~.dlc.export_dlc_project`       pandas (DLC's table layout)
NWB             :func:`~.nwb.export_nwb`               pynwb + ndx-pose
movement        :func:`~.movement.export_movement`     movement / xarray (netCDF)
==============  =====================================  =================================

Every export takes the labels table (one row per frame, view, individual
and keypoint: ``frame, view, individual, keypoint, x, y`` and usually
``confidence, flag, reason``; see :mod:`ethoscribe.pose.labels`) and an
:class:`ExportInfo` (views, skeleton, individuals, fps, video paths, image
sizes, calibration), which :meth:`ExportInfo.from_session` builds from a
loaded session. Every file is written atomically.

Examples
--------
>>> from ethoscribe.session import load_session  # doctest: +SKIP
>>> paths = export_all("out/pose", load_session("session"))  # doctest: +SKIP
>>> sorted(paths)  # doctest: +SKIP
['dlc', 'movement', 'nwb', 'slp']
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ethoscribe.errors import InputError, SkeletonError
from ethoscribe.skeleton import Skeleton

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

    from ethoscribe.geometry.camera import CameraRig
    from ethoscribe.session import Session

REQUIRED_COLUMNS: tuple[str, ...] = ("frame", "view", "individual", "keypoint", "x", "y")
"""Columns an exported labels table must have."""

OPTIONAL_COLUMNS: dict[str, Any] = {"confidence": None, "flag": False, "reason": ""}
"""Columns used when present (``confidence`` defaults to 1 where labelled, 0 elsewhere)."""

FORMATS: tuple[str, ...] = ("slp", "dlc", "nwb", "movement")
"""Format names accepted by :func:`export_all`."""

LABELS_FILE = "labels.parquet"
POSES3D_FILE = "poses3d.nc"
REVIEW_FILES = ("review.parquet", "review.csv")


# ----------------------------------------------------------------- context
@dataclass(frozen=True)
class ExportInfo:
    """What an export needs to know about the session besides the labels.

    Attributes
    ----------
    skeleton
        Keypoint names, edges and symmetries.
    views
        View names, in order.
    individuals
        Animal names, in order (empty: taken from the labels).
    fps
        Frame rate of the videos.
    n_frames
        Frames in the recording (None: one past the last labelled frame).
    videos
        ``{view: video file}`` (the video frames are extracted from / linked to).
    image_sizes
        ``{view: (width, height)}``; missing views fall back to ``rig``, then to the video.
    rig
        The calibration (written to SLEAP sessions and NWB cameras when given).
    name
        Session / project name.

    Examples
    --------
    >>> from ethoscribe.skeleton import mouse12
    >>> info = ExportInfo(mouse12(), views=("cam0",), individuals=("mouse0",), fps=30.0)
    >>> info.image_size("cam0") is None
    True
    """

    skeleton: Skeleton
    views: tuple[str, ...]
    individuals: tuple[str, ...] = ()
    fps: float = 30.0
    n_frames: int | None = None
    videos: Mapping[str, Path] = field(default_factory=dict)
    image_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    rig: CameraRig | None = None
    name: str = "ethoscribe"

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", tuple(str(v) for v in self.views))
        object.__setattr__(self, "individuals", tuple(str(i) for i in self.individuals))
        object.__setattr__(self, "videos", {str(k): Path(v) for k, v in dict(self.videos).items()})
        object.__setattr__(self, "image_sizes", {str(k): (int(v[0]), int(v[1])) for k, v in dict(self.image_sizes).items()})
        if not self.views:
            raise InputError("export: no views given")
        if len(set(self.views)) != len(self.views):
            raise InputError(f"export: view names repeat: {list(self.views)}")
        if not (self.fps > 0):
            raise InputError(f"export: fps must be positive, not {self.fps}")
        unknown = sorted(set(self.videos) - set(self.views))
        if unknown:
            raise InputError(f"export: videos given for unknown view(s) {unknown} (views: {list(self.views)})")

    @classmethod
    def from_session(cls, session: Session, video: str = "auto") -> ExportInfo:
        """Build from a loaded :class:`~ethoscribe.session.Session`.

        ``video`` picks each view's video: ``"body"``, ``"markers"`` or
        ``"auto"`` (the body video where a view has one, else the markers video).
        """
        if video not in ("auto", "body", "markers"):
            raise InputError(f"video must be 'auto', 'body' or 'markers', not {video!r}")
        videos: dict[str, Path] = {}
        for v in session.config.views:
            kinds = ("body", "markers") if video == "auto" else (video,)
            for kind in kinds:
                rel = getattr(v, kind)
                if rel is not None:
                    videos[v.name] = session.path(rel)
                    break
        rig = session.rig
        return cls(
            skeleton=session.skeleton,
            views=tuple(session.config.view_names),
            individuals=tuple(session.config.individuals),
            fps=float(session.config.fps),
            n_frames=int(session.config.n_frames),
            videos=videos,
            image_sizes={n: (int(s[0]), int(s[1])) for n, s in zip(rig.names, rig.size)},
            rig=rig,
            name=session.config.name,
        )

    def video(self, view: str) -> Path | None:
        """The video of ``view`` (None when not given)."""
        return self.videos.get(view)

    def image_size(self, view: str) -> tuple[int, int] | None:
        """(width, height) of ``view``: given, else calibrated, else read from its video, else None."""
        if view in self.image_sizes:
            return self.image_sizes[view]
        if self.rig is not None and view in self.rig.names:
            w, h = self.rig.size[self.rig.names.index(view)]
            return int(w), int(h)
        path = self.videos.get(view)
        if path is not None and path.is_file():
            from ethoscribe.io.video import VideoReader

            with VideoReader(path) as r:
                return r.width, r.height
        return None

    def frame_count(self, labels: pd.DataFrame) -> int:
        """Frames to cover: ``n_frames``, or one past the last frame of ``labels``."""
        if self.n_frames is not None:
            return int(self.n_frames)
        return int(labels["frame"].max()) + 1 if len(labels) else 0


def as_info(info: ExportInfo | Session, **overrides: Any) -> ExportInfo:
    """``info`` itself, or :meth:`ExportInfo.from_session` of a session; keyword arguments replace fields."""
    from ethoscribe.session import Session

    if isinstance(info, Session):
        info = ExportInfo.from_session(info)
    elif not isinstance(info, ExportInfo):
        raise TypeError(f"expected an ExportInfo or a Session, not {type(info).__name__}")
    return replace(info, **overrides) if overrides else info


# ----------------------------------------------------------------- labels
def validate_labels(labels: pd.DataFrame, info: ExportInfo, source: str = "labels") -> pd.DataFrame:
    """Check a labels table against ``info`` and return a clean copy for export.

    Keeps the rows of ``info.views``; fills ``confidence`` (1 where
    labelled, 0 elsewhere), ``flag`` (False) and ``reason`` ('') when absent;
    labelled rows have finite x and y.

    Raises
    ------
    InputError
        Not a DataFrame, missing columns (named), views or individuals not
        in ``info``, non-numeric or negative frames, frames beyond
        ``info.n_frames``, x without y, duplicate rows.
    SkeletonError
        Keypoints that are not in the skeleton (named).

    Examples
    --------
    >>> from ethoscribe.skeleton import mouse12
    >>> info = ExportInfo(mouse12(), views=("cam0",), individuals=("mouse0",))
    >>> validate_labels(pd.DataFrame({"frame": [0]}), info)
    Traceback (most recent call last):
    ...
    ethoscribe.errors.InputError: labels: labels table lacks column(s) view, individual, keypoint, x, y
    """
    if not isinstance(labels, pd.DataFrame):
        raise InputError(f"{source}: a labels table must be a pandas DataFrame, not {type(labels).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in labels.columns]
    if missing:
        raise InputError(f"{source}: labels table lacks column(s) {', '.join(missing)}")
    df = labels.copy()
    for c in ("view", "individual", "keypoint"):
        if df[c].isna().any():
            raise InputError(f"{source}: column {c!r} has missing values")
        df[c] = df[c].astype(str).astype(object)
    try:
        frame = pd.to_numeric(df["frame"], errors="raise")
        x = pd.to_numeric(df["x"], errors="raise").astype(np.float64)
        y = pd.to_numeric(df["y"], errors="raise").astype(np.float64)
    except (ValueError, TypeError):
        raise InputError(f"{source}: columns frame, x and y must be numeric") from None
    if frame.isna().any() or (frame != np.round(frame)).any():
        raise InputError(f"{source}: column 'frame' must hold whole numbers")
    df["frame"] = frame.astype(np.int64)
    if (df["frame"] < 0).any():
        raise InputError(f"{source}: column 'frame' has negative frames")
    if info.n_frames is not None and len(df) and int(df["frame"].max()) >= info.n_frames:
        raise InputError(f"{source}: labels reach frame {int(df['frame'].max())} but the session has {info.n_frames} frames")
    xv, yv = x.to_numpy(), y.to_numpy()
    if (np.isnan(xv) != np.isnan(yv)).any() or np.isinf(xv).any() or np.isinf(yv).any():
        raise InputError(f"{source}: x and y must be both finite or both NaN in every row")
    df["x"], df["y"] = xv, yv
    unknown_kp = sorted(set(df["keypoint"]) - set(info.skeleton.keypoints))
    if unknown_kp:
        raise SkeletonError(f"{source}: keypoint(s) {unknown_kp} are not in skeleton {info.skeleton.name!r} "
                            f"{list(info.skeleton.keypoints)}")
    unknown_views = sorted(set(df["view"]) - set(info.views))
    if unknown_views:
        raise InputError(f"{source}: labels name view(s) {unknown_views} that are not among the views {list(info.views)}")
    if info.individuals:
        unknown_ind = sorted(set(df["individual"]) - set(info.individuals))
        if unknown_ind:
            raise InputError(f"{source}: labels name individual(s) {unknown_ind} that are not among "
                             f"{list(info.individuals)}")
    labelled = np.isfinite(xv)
    if "confidence" in df.columns:
        conf = pd.to_numeric(df["confidence"], errors="coerce").to_numpy(np.float64)
        df["confidence"] = np.where(np.isfinite(conf), conf, 0.0).astype(np.float32)
    else:
        df["confidence"] = labelled.astype(np.float32)
    df["flag"] = df["flag"].fillna(False).astype(bool) if "flag" in df.columns else False
    df["reason"] = df["reason"].fillna("").astype(str).astype(object) if "reason" in df.columns else ""
    dup = df.duplicated(["frame", "view", "individual", "keypoint"])
    if dup.any():
        first = df.loc[dup, ["frame", "view", "individual", "keypoint"]].iloc[0].tolist()
        raise InputError(f"{source}: {int(dup.sum())} duplicate (frame, view, individual, keypoint) rows, e.g. {first}")
    return df.reset_index(drop=True)


def individuals_of(labels: pd.DataFrame, info: ExportInfo) -> list[str]:
    """The individuals to export: ``info.individuals``, else those of the labels (in order of appearance)."""
    if info.individuals:
        return list(info.individuals)
    return [str(i) for i in pd.unique(labels["individual"])] or ["individual_0"]


def labelled_frames(labels: pd.DataFrame, view: str | None = None) -> NDArray[np.int64]:
    """Sorted frames that carry at least one label (in ``view``, or in any view)."""
    sel = np.isfinite(labels["x"].to_numpy(np.float64))
    if view is not None:
        sel &= (labels["view"] == view).to_numpy()
    return np.unique(labels["frame"].to_numpy(np.int64)[sel])


def select_frames(
    labels: pd.DataFrame,
    n: int = 50,
    include: Iterable[int] | None = None,
    flagged: int | None = None,
) -> list[int]:
    """A manageable set of frames to hand to a person: well spread, plus the doubtful ones.

    Parameters
    ----------
    labels
        Labels table (with ``flag`` if flagged frames are wanted).
    n
        Frames picked evenly over the labelled frames (all when fewer).
    include
        Frames always included (e.g. the review list).
    flagged
        Up to this many frames with the most flagged rows are added
        (default: ``n``; 0 for none).

    Examples
    --------
    >>> df = pd.DataFrame({"frame": range(100), "x": 1.0, "flag": [i == 7 for i in range(100)]})
    >>> select_frames(df, n=5)
    [0, 7, 25, 50, 74, 99]
    """
    frames = labelled_frames(labels)
    out: set[int] = set()
    if len(frames) and n > 0:
        if len(frames) <= n:
            out.update(int(f) for f in frames)
        else:
            idx = np.unique(np.round(np.linspace(0, len(frames) - 1, n)).astype(int))
            out.update(int(f) for f in frames[idx])
    n_flag = n if flagged is None else int(flagged)
    if n_flag > 0 and "flag" in labels.columns:
        fl = labels.loc[labels["flag"].astype(bool), "frame"].value_counts()
        if len(fl):
            fl = fl.reset_index()
            fl.columns = ["frame", "count"]
            fl = fl.sort_values(["count", "frame"], ascending=[False, True], kind="stable")
            out.update(int(f) for f in fl["frame"].head(n_flag))
    if include is not None:
        out.update(int(f) for f in include)
    return sorted(out)


def dense_view(
    labels: pd.DataFrame, view: str, frames: Sequence[int] | NDArray[np.int64], keypoints: Sequence[str],
    individuals: Sequence[str],
) -> tuple[NDArray[np.float64], NDArray[np.float32], NDArray[np.bool_]]:
    """Labels of one view as arrays over ``frames``: xy (F, K, I, 2), confidence (F, K, I) and flag (F, K, I).

    Rows of other frames are ignored; combinations without a row are NaN / 0 / False.
    """
    frames = np.asarray(frames, dtype=np.int64)
    F, K, I = len(frames), len(keypoints), len(individuals)
    xy = np.full((F, K, I, 2), np.nan)
    conf = np.zeros((F, K, I), np.float32)
    flag = np.zeros((F, K, I), bool)
    sub = labels[(labels["view"] == view).to_numpy()]
    if not len(sub) or not F:
        return xy, conf, flag
    order = np.argsort(frames, kind="stable")
    fr = sub["frame"].to_numpy(np.int64)
    pos = np.searchsorted(frames[order], fr)
    pos = np.clip(pos, 0, F - 1)
    ok = frames[order][pos] == fr
    k_idx = sub["keypoint"].map({k: i for i, k in enumerate(keypoints)}).to_numpy()
    i_idx = sub["individual"].map({k: i for i, k in enumerate(individuals)}).to_numpy()
    ok &= ~pd.isna(k_idx) & ~pd.isna(i_idx)
    f_i = order[pos[ok]]
    k_i = k_idx[ok].astype(np.int64)
    a_i = i_idx[ok].astype(np.int64)
    xy[f_i, k_i, a_i, 0] = sub["x"].to_numpy(np.float64)[ok]
    xy[f_i, k_i, a_i, 1] = sub["y"].to_numpy(np.float64)[ok]
    conf[f_i, k_i, a_i] = sub["confidence"].to_numpy(np.float32)[ok]
    flag[f_i, k_i, a_i] = sub["flag"].to_numpy(bool)[ok]
    return xy, conf, flag


def check_writable(target: str | os.PathLike[str], what: str = "export", directory: bool = False) -> Path:
    """Make the folder of ``target`` (or ``target`` itself with ``directory``) and check it can be written.

    Raises :class:`InputError` naming the path when it cannot.
    """
    target = Path(target)
    folder = target if directory else target.parent
    if directory and target.exists() and not target.is_dir():
        raise InputError(f"{target}: cannot write the {what} here: it is a file, not a folder")
    if not directory and target.is_dir():
        raise InputError(f"{target}: cannot write the {what} here: it is a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{folder}: cannot create the folder for the {what} ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{folder}: folder is not writable (needed for the {what})")
    if not directory and target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"{target}: file exists and is not writable (needed for the {what})")
    return target


def _clean_attrs(ds: xr.Dataset) -> xr.Dataset:
    """Drop attributes netCDF cannot store (None), stringify paths."""
    ds = ds.copy()
    for obj in [ds, *ds.variables.values()]:
        for k, v in list(obj.attrs.items()):
            if v is None:
                del obj.attrs[k]
            elif isinstance(v, Path):
                obj.attrs[k] = str(v)
            elif isinstance(v, (bool, np.bool_)):
                obj.attrs[k] = int(v)
    return ds


def frames_of_poses(poses3d: xr.Dataset, fps: float) -> NDArray[np.int64]:
    """Frame numbers of a movement dataset's ``time`` coordinate (seconds or frames)."""
    t = np.asarray(poses3d["time"].values, dtype=np.float64)
    if poses3d.attrs.get("time_unit", "seconds") == "frames":
        return np.round(t).astype(np.int64)
    return np.round(t * fps).astype(np.int64)


# ----------------------------------------------------------------- everything
def load_pose_outputs(pose_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, xr.Dataset | None, list[int] | None]:
    """Read ``labels.parquet``, ``poses3d.nc`` (if present) and the review list (if present) of a pose output folder.

    The review list is ``review.parquet`` or ``review.csv`` with a ``frame`` column, best first.
    """
    import xarray as xr

    pose_dir = Path(pose_dir)
    lp = pose_dir / LABELS_FILE
    if not lp.is_file():
        raise InputError(f"{pose_dir}: no {LABELS_FILE} (is this the output folder of `ethoscribe pose`?)")
    try:
        labels = pd.read_parquet(lp)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise InputError(f"{lp}: cannot be read as a Parquet table ({type(exc).__name__}: {exc})") from None
    poses3d = None
    pp = pose_dir / POSES3D_FILE
    if pp.is_file():
        try:
            poses3d = xr.load_dataset(pp)
        except Exception as exc:  # netCDF back-ends raise several types
            raise InputError(f"{pp}: cannot be read as a netCDF dataset ({type(exc).__name__}: {exc})") from None
    review = None
    for name in REVIEW_FILES:
        rp = pose_dir / name
        if rp.is_file():
            rv = pd.read_parquet(rp) if rp.suffix == ".parquet" else pd.read_csv(rp)
            if "frame" not in rv.columns:
                raise InputError(f"{rp}: review list has no 'frame' column")
            review = [int(f) for f in pd.unique(rv["frame"])]
            break
    return labels, poses3d, review


def export_all(
    pose_out_dir: str | os.PathLike[str],
    session: Session | ExportInfo,
    formats: Sequence[str] = FORMATS,
    out_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Export a pose run's labels (and 3D poses) to several formats at once.

    Parameters
    ----------
    pose_out_dir
        Output folder of the pose pipeline (``labels.parquet``, optionally
        ``poses3d.nc`` and ``review.parquet``/``review.csv``).
    session
        The session (or an :class:`ExportInfo`).
    formats
        Any of ``"slp"``, ``"dlc"``, ``"nwb"``, ``"movement"``.
    out_dir
        Where to write (default ``<pose_out_dir>/exports``): ``labels.slp``,
        ``dlc/`` (a DeepLabCut project), ``labels.nwb`` (or one
        ``labels_<individual>.nwb`` per animal), ``movement/``.
    **options
        Per-format keyword arguments, as ``slp={...}``, ``dlc={...}``,
        ``nwb={...}``, ``movement={...}``.

    Returns
    -------
    dict
        ``{"slp": file, "dlc": config.yaml, "nwb": file, "movement": folder}``;
        with several animals the NWB files are ``"nwb:<individual>"``.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown export format(s) {unknown} (formats: {', '.join(FORMATS)})")
    bad_opts = sorted(set(options) - set(FORMATS))
    if bad_opts:
        raise TypeError(f"export_all: unexpected option group(s) {bad_opts} (use {', '.join(FORMATS)})")
    info = as_info(session)
    labels, poses3d, review = load_pose_outputs(pose_out_dir)
    out = Path(out_dir) if out_dir is not None else Path(pose_out_dir) / "exports"
    check_writable(out, "exports", directory=True)
    result: dict[str, Path] = {}
    if "slp" in formats:
        opts = {"suggestions": review, **options.get("slp", {})}
        result["slp"] = export_slp(labels, info, out / "labels.slp", **opts)
    if "dlc" in formats:
        opts = {"include": review, **options.get("dlc", {})}
        result["dlc"] = export_dlc_project(labels, info, out / "dlc", **opts)
    if "nwb" in formats:
        paths = export_nwb(labels, poses3d, info, out / "labels.nwb", **options.get("nwb", {}))
        if len(paths) == 1:
            result["nwb"] = paths[0]
        else:
            for ind, p in zip(individuals_of(validate_labels(labels, info), info), paths):
                result[f"nwb:{ind}"] = p
    if "movement" in formats:
        export_movement(labels, info, out / "movement", poses3d=poses3d, **options.get("movement", {}))
        result["movement"] = out / "movement"
    return result


from ethoscribe.io.exports.dlc import export_dlc_project  # noqa: E402
from ethoscribe.io.exports.movement import export_movement, labels_to_movement  # noqa: E402
from ethoscribe.io.exports.nwb import export_nwb  # noqa: E402
from ethoscribe.io.exports.sleap import export_slp  # noqa: E402

__all__ = [
    "FORMATS",
    "ExportInfo",
    "as_info",
    "dense_view",
    "export_all",
    "export_dlc_project",
    "export_movement",
    "export_nwb",
    "export_slp",
    "labelled_frames",
    "labels_to_movement",
    "load_pose_outputs",
    "select_frames",
    "validate_labels",
]
