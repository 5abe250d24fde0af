"""Existing pose-model predictions as keypoint candidates (identities not trusted).

:func:`read_predictions` reads what SLEAP, DeepLabCut and Lightning Pose
write and returns a candidates table (:mod:`ethoscribe.candidates.table`):
one row per predicted point, with the model's keypoint and animal names kept
only as *hints*, because the pipeline re-decides which point is which.

Supported files
---------------
=====================  ==========================================================
kind                   files
=====================  ==========================================================
``"sleap"``            ``.slp`` (read with :func:`sleap_io.load_slp`; several
                       videos = several views; predicted and user instances),
                       or a SLEAP analysis ``.h5`` (:func:`sleap_io.load_analysis_h5`)
``"dlc"``              DeepLabCut ``.h5`` / ``.csv``: single-animal
                       (``scorer/bodyparts/coords``) and multi-animal
                       (``scorer/individuals/bodyparts/coords``) tables, with
                       or without a ``likelihood`` coordinate; frame numbers
                       from the row index, or from ``img00042.png`` image
                       names (``CollectedData_*`` files)
``"lp"``               Lightning Pose ``.csv`` (DeepLabCut's layout; extra
                       coordinates such as ``x_var`` are ignored)
=====================  ==========================================================

DeepLabCut and Lightning Pose tables are read with pandas (``read_hdf`` /
``read_csv`` with a multi-row header), the same layout
:func:`movement.io.load_poses.from_dlc_file` reads; unlike movement's loader
this keeps the frame numbers of the row index and accepts unique body parts
and extra coordinate columns.

Output columns
--------------
The candidates columns (``frame, view, candidate, x, y, intensity, area``)
plus:

===================  ========  ====================================================
column               dtype     meaning
===================  ========  ====================================================
``hint_keypoint``    str       the model's node / body-part name
``hint_individual``  str       the track or individual name; ``instance<i>`` for an
                               untracked SLEAP instance (its index in the frame),
                               ``individual_0`` for a single-animal DLC/LP table
``score``            float64   the model's per-point score (DLC/LP likelihood,
                               SLEAP point score; 1.0 for a SLEAP user instance);
                               NaN when the file holds none
===================  ========  ====================================================

``intensity`` is the score (1.0 when the file holds no score), ``area`` is 1.
Candidate ids count from 0 within a frame and view, highest score first.
Points with NaN coordinates are dropped, and so are points at exactly
(0, 0), the "missing" value of MABe-style tables (a real prediction there
is practically impossible).

Examples
--------
>>> df = read_predictions({"top": "top_predictionsDLC.h5"}, views=["top"])  # doctest: +SKIP
>>> df = read_predictions("proofread.slp", views=["back", "mid", "side", "top"])  # doctest: +SKIP
>>> df.groupby("view", observed=True).size()  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ethoscribe.candidates.table import COLUMNS, validate_candidates
from ethoscribe.errors import InputError

Kind = Literal["auto", "sleap", "dlc", "lp"]
KINDS = ("auto", "sleap", "dlc", "lp")
HINT_COLUMNS = ("hint_keypoint", "hint_individual", "score")
_DLC_LEVELS = ("scorer", "individuals", "bodyparts", "coords")
_IMG_RE = re.compile(r"(\d+)\.(?:png|jpe?g|bmp|tiff?)$", re.IGNORECASE)

PathLike = str | os.PathLike[str]


@dataclass
class _Points:
    """Points of one source for one view, as flat arrays."""

    frame: np.ndarray
    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    keypoint: np.ndarray
    individual: np.ndarray

    @classmethod
    def concat(cls, parts: list[_Points]) -> _Points:
        if not parts:
            e = np.zeros(0)
            return cls(e.astype(np.int64), e, e, e, e.astype(object), e.astype(object))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("frame", "x", "y", "score", "keypoint", "individual")))


# ----------------------------------------------------------------- public API
def read_predictions(
    paths_or_mapping: PathLike | Sequence[PathLike] | Mapping[str, PathLike],
    views: Sequence[str],
    kind: Kind = "auto",
    *,
    n_frames: int | None = None,
    min_score: float = 0.0,
    video_map: Mapping[str, str | int] | None = None,
    instances: Literal["all", "predicted", "user"] = "all",
) -> pd.DataFrame:
    """Read pose-model predictions as a candidates table.

    Parameters
    ----------
    paths_or_mapping
        One file, a list of files, or ``{view: file}``. Without a mapping,
        a file is matched to a view by its name (the view name contained in
        the file stem, the longest match winning); a SLEAP file with several
        videos serves several views (see ``video_map``). With one view and one
        file no matching is needed.
    views
        The session's view names. Every view must get predictions.
    kind
        ``"auto"`` (from the suffix and contents), ``"sleap"``, ``"dlc"`` or ``"lp"``.
    n_frames
        The session's number of frames; a file with predictions at or beyond
        it is an error (it belongs to another recording).
    min_score
        Keep points whose score is above this (default 0: drops only points
        the model itself scored 0). Points without a score are kept.
    video_map
        For SLEAP files with several videos: ``{view: video}`` where video is
        the video's index in the file, its file name or its stem. Without it
        a video is matched to a view by the camera name of the file's
        recording session, else by its file stem containing the view name.
    instances
        SLEAP only: ``"all"`` (default; a predicted instance that a user
        instance was made from is skipped), ``"predicted"`` or ``"user"``.

    Returns
    -------
    pandas.DataFrame
        Candidates table (validated) with ``hint_keypoint``,
        ``hint_individual`` and ``score`` columns, sorted by frame, view
        (in ``views`` order) and candidate.

    Raises
    ------
    InputError
        Missing file, unknown format, a view without predictions or a file
        matching no or several views (naming what was found), frames beyond
        ``n_frames``, unreadable tables.
    """
    views = [str(v) for v in views]
    if not views:
        raise InputError("read_predictions: no session views given")
    if len(set(views)) != len(views):
        raise InputError(f"read_predictions: view names repeat: {views}")
    if kind not in KINDS:
        raise InputError(f"read_predictions: unknown kind {kind!r} (use one of {', '.join(KINDS)})")
    if instances not in ("all", "predicted", "user"):
        raise InputError(f"read_predictions: instances must be 'all', 'predicted' or 'user', not {instances!r}")
    if video_map is not None:
        unknown = sorted(set(video_map) - set(views))
        if unknown:
            raise InputError(f"read_predictions: video_map names unknown view(s) {unknown} (session views: {views})")

    # ---- normalise the sources: list of (path, assigned view or None)
    if isinstance(paths_or_mapping, Mapping):
        unknown = sorted(set(map(str, paths_or_mapping)) - set(views))
        if unknown:
            raise InputError(f"read_predictions: mapping names unknown view(s) {unknown} (session views: {views})")
        sources = [(Path(p), str(v)) for v, p in paths_or_mapping.items()]
    elif isinstance(paths_or_mapping, (str, os.PathLike)):
        sources = [(Path(paths_or_mapping), None)]
    else:
        sources = [(Path(p), None) for p in paths_or_mapping]
    if not sources:
        raise InputError("read_predictions: no prediction files given")
    for path, _ in sources:
        if not path.exists():
            raise InputError(f"{path}: prediction file not found")
        if not path.is_file():
            raise InputError(f"{path}: not a file")

    per_view: dict[str, list[tuple[Path, _Points]]] = {v: [] for v in views}
    sleap_sources = []
    table_sources = []
    for path, view in sources:
        k = _detect_kind(path) if kind == "auto" else kind
        _check_suffix(path, k)
        (sleap_sources if k == "sleap" else table_sources).append((path, view, k))

    # ---- table files (one view each)
    unassigned = [(p, k) for p, v, k in table_sources if v is None]
    names = _match_names([p.stem for p, _ in unassigned], views, what="prediction file",
                         single=(len(views) == 1 and len(sources) == 1))
    for (path, k), view in zip(unassigned, names):
        per_view[view].append((path, _read_table(path, k)))
    for path, view, k in table_sources:
        if view is not None:
            per_view[view].append((path, _read_table(path, k)))

    # ---- SLEAP files (one or more views each)
    for path, view, _ in sleap_sources:
        for v, pts in _read_sleap(path, views, view, video_map, instances,
                                  single=(len(views) == 1 and len(sources) == 1)).items():
            per_view[v].append((path, pts))

    missing = [v for v in views if not per_view[v]]
    if missing:
        found = ", ".join(str(p) for p, _ in sources)
        raise InputError(f"no predictions for view(s) {missing} among {found} (session views: {views}); "
                         "name the files after the views or pass {view: file}")
    twice = [v for v in views if len(per_view[v]) > 1]
    if twice:
        detail = "; ".join(f"{v}: {', '.join(str(p) for p, _ in per_view[v])}" for v in twice)
        raise InputError(f"several prediction sources for the same view ({detail})")

    frames: list[pd.DataFrame] = []
    for v in views:
        path, pts = per_view[v][0]
        if n_frames is not None and len(pts.frame) and int(pts.frame.max()) >= n_frames:
            raise InputError(f"{path}: has predictions up to frame {int(pts.frame.max())} for view {v!r} but the "
                             f"session has {n_frames} frames (predictions of another recording?)")
        if len(pts.frame) and int(pts.frame.min()) < 0:
            raise InputError(f"{path}: has negative frame numbers")
        keep = np.isfinite(pts.x) & np.isfinite(pts.y) & ~((pts.x == 0) & (pts.y == 0))
        keep &= np.isnan(pts.score) | (pts.score > min_score)
        frames.append(pd.DataFrame({
            "frame": pts.frame[keep].astype(np.int64),
            "view": v,
            "x": pts.x[keep].astype(np.float64),
            "y": pts.y[keep].astype(np.float64),
            "score": pts.score[keep].astype(np.float64),
            "hint_keypoint": pts.keypoint[keep].astype(str).astype(object),
            "hint_individual": pts.individual[keep].astype(str).astype(object),
        }))
    df = pd.concat(frames, ignore_index=True)
    df["_view_order"] = df["view"].map({v: i for i, v in enumerate(views)})
    df["_neg_score"] = -df["score"].fillna(-np.inf)  # highest score first, missing scores last
    df = df.sort_values(["frame", "_view_order", "_neg_score"], kind="stable").reset_index(drop=True)
    df["candidate"] = df.groupby(["frame", "_view_order"], sort=False).cumcount().astype(np.int64)
    df["intensity"] = df["score"].fillna(1.0)
    df["area"] = np.int64(1)
    df["view"] = pd.Categorical(df["view"], categories=views)
    df = df[[*COLUMNS, *HINT_COLUMNS]]
    source = ", ".join(str(p) for p, _ in sources)
    return validate_candidates(df, source)


# ----------------------------------------------------------------- kinds
def _detect_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".slp":
        return "sleap"
    if suffix in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                keys = set(f.keys())
        except OSError as exc:
            raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
        if "tracks" in keys and "node_names" in keys:
            return "sleap"  # SLEAP analysis file
        return "dlc"
    if suffix == ".csv":
        return "dlc"  # Lightning Pose writes DeepLabCut's layout
    raise InputError(f"{path}: unknown prediction format {path.suffix!r} (expected SLEAP .slp, DeepLabCut .h5/.csv "
                     "or Lightning Pose .csv)")


def _check_suffix(path: Path, kind: str) -> None:
    ok = {"sleap": (".slp", ".h5", ".hdf5"), "dlc": (".h5", ".hdf5", ".csv"), "lp": (".csv",)}[kind]
    if path.suffix.lower() not in ok:
        raise InputError(f"{path}: a {kind!r} prediction file must end in {' or '.join(ok)}")


# ----------------------------------------------------------------- matching
def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^0-9a-zA-Z]+", name.lower()) if t]


def _match_score(name: str, view: str) -> int:
    """How well a file/video ``name`` names ``view``: 3 equal, 2 a whole token, 1 a substring, 0 not."""
    n, v = name.lower(), view.lower()
    if n == v:
        return 3
    if v in _tokens(n) or re.search(rf"(^|[^0-9a-z]){re.escape(v)}($|[^0-9a-z])", n):
        return 2
    if v in n:
        return 1
    return 0


def _tied(a: tuple[int, int, str], b: tuple[int, int, str]) -> bool:
    """Two (score, length, view) matches are a tie: both whole names/tokens, or substrings of the same length."""
    return a[0] == b[0] and (a[0] >= 2 or a[1] == b[1])


def _match_names(names: list[str], views: list[str], what: str, single: bool = False) -> list[str]:
    """Assign each name to one view (best score, then longest view name); error when unclear."""
    if not names:
        return []
    if single and len(names) == 1:
        return [views[0]]
    out = []
    for name in names:
        scored = [(_match_score(name, v), len(v), v) for v in views]
        scored = [s for s in scored if s[0] > 0]
        if not scored:
            raise InputError(f"{what} {name!r} matches none of the session views {views}; name it after its view "
                             "or pass {view: file}")
        scored.sort(reverse=True)
        if len(scored) > 1 and _tied(scored[0], scored[1]):
            raise InputError(f"{what} {name!r} matches several views ({scored[0][2]!r}, {scored[1][2]!r}); "
                             "pass {view: file} instead")
        out.append(scored[0][2])
    return out


# ----------------------------------------------------------------- DLC / LP
def _read_table(path: Path, kind: str) -> _Points:
    df = _read_dlc_dataframe(path, kind)
    return _points_from_dlc_df(df, path)


def _csv_header_rows(path: Path) -> int:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        n = 0
        for row in reader:
            if not row:
                break
            if row[0].strip().lower() in _DLC_LEVELS:
                n += 1
                continue
            break
    return n


def _read_dlc_dataframe(path: Path, kind: str) -> pd.DataFrame:
    label = "Lightning Pose" if kind == "lp" else "DeepLabCut"
    try:
        if path.suffix.lower() == ".csv":
            n = _csv_header_rows(path)
            if n not in (3, 4):
                raise InputError(f"{path}: not a {label} table (expected 3 or 4 header rows named "
                                 "scorer/[individuals/]bodyparts/coords, found {n})".replace("{n}", str(n)))
            # the DLC index column may be one (frame) or three (labeled-data, video, image) columns
            head = pd.read_csv(path, header=list(range(n)), nrows=1)
            n_index = 1
            while n_index < len(head.columns) and str(head.columns[n_index][0]).startswith("Unnamed"):
                n_index += 1
            df = pd.read_csv(path, header=list(range(n)), index_col=list(range(n_index)))
            df.columns = df.columns.set_names(list(_DLC_LEVELS) if n == 4 else ["scorer", "bodyparts", "coords"])
        else:
            with pd.HDFStore(path, mode="r") as store:
                keys = store.keys()
            if not keys:
                raise InputError(f"{path}: holds no pandas table (not a {label} .h5 file)")
            key = "/df_with_missing" if "/df_with_missing" in keys else ("/keypoints" if "/keypoints" in keys else keys[0])
            df = pd.read_hdf(path, key=key)
    except InputError:
        raise
    except Exception as exc:  # pandas / tables raise many types
        raise InputError(f"{path}: cannot be read as a {label} table ({type(exc).__name__}: {exc})") from None
    if not isinstance(df, pd.DataFrame) or not isinstance(df.columns, pd.MultiIndex):
        raise InputError(f"{path}: not a {label} table (no multi-level column header)")
    names = list(df.columns.names)
    if "bodyparts" not in names or "coords" not in names:
        if df.columns.nlevels == 4:
            df.columns = df.columns.set_names(list(_DLC_LEVELS))
        elif df.columns.nlevels == 3:
            df.columns = df.columns.set_names(["scorer", "bodyparts", "coords"])
        else:
            raise InputError(f"{path}: not a {label} table (column levels {names})")
    coords = set(df.columns.get_level_values("coords"))
    if not {"x", "y"} <= coords:
        raise InputError(f"{path}: {label} table has no x/y coordinates (coords: {sorted(map(str, coords))})")
    return df


def _frames_of_index(index: pd.Index, path: Path) -> np.ndarray:
    """Frame numbers from a DLC row index: integers, or image names like ``img00042.png``."""
    if isinstance(index, pd.MultiIndex):
        values = [str(t[-1]) for t in index]
    else:
        values = list(index)
        try:
            return np.asarray(pd.to_numeric(pd.Index(values), errors="raise"), dtype=np.int64)
        except (ValueError, TypeError):
            values = [str(v) for v in values]
    out = np.empty(len(values), np.int64)
    for i, v in enumerate(values):
        m = _IMG_RE.search(v.replace("\\", "/").rsplit("/", 1)[-1])
        if m is None:
            raise InputError(f"{path}: row {i} ({v!r}) is neither a frame number nor an image name with a frame number")
        out[i] = int(m.group(1))
    return out


def _points_from_dlc_df(df: pd.DataFrame, path: Path) -> _Points:
    frames = _frames_of_index(df.index, path)
    if len(np.unique(frames)) != len(frames):
        raise InputError(f"{path}: frame numbers repeat in the row index")
    cols = df.columns
    has_ind = "individuals" in cols.names
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for c in cols:
        key = (str(c[cols.names.index("individuals")]) if has_ind else "individual_0",
               str(c[cols.names.index("bodyparts")]))
        if key not in seen:
            seen.add(key)
            pairs.append(key)
    coords = cols.get_level_values("coords")
    parts = []
    for ind, bp in pairs:
        sel = (cols.get_level_values("bodyparts").astype(str) == bp)
        if has_ind:
            sel &= cols.get_level_values("individuals").astype(str) == ind

        def col(name: str) -> np.ndarray | None:
            m = sel & (coords == name)
            if not m.any():
                return None
            return pd.to_numeric(df.loc[:, m].iloc[:, 0], errors="coerce").to_numpy(np.float64)

        x, y, lik = col("x"), col("y"), col("likelihood")
        if x is None or y is None:
            continue
        n = len(frames)
        parts.append(_Points(frames, x, y, lik if lik is not None else np.full(n, np.nan),
                             np.full(n, bp, dtype=object), np.full(n, ind, dtype=object)))
    return _Points.concat(parts)


# ----------------------------------------------------------------- SLEAP
def _load_sleap(path: Path) -> Any:
    import sleap_io as sio

    try:
        if path.suffix.lower() == ".slp":
            return sio.load_slp(str(path), open_videos=False)
        return sio.load_analysis_h5(str(path))
    except Exception as exc:  # h5py / sleap-io raise many types
        raise InputError(f"{path}: cannot be read as a SLEAP file ({type(exc).__name__}: {exc})") from None


def _video_names(video: Any) -> tuple[str, str]:
    fn = video.filename
    if isinstance(fn, (list, tuple)):  # image sequence: name of its folder
        fn = str(Path(fn[0]).parent) if fn else ""
    p = Path(str(fn).replace("\\", "/"))
    return p.name, p.stem


def _sleap_view_of_videos(path: Path, labels: Any, views: list[str], view: str | None,
                          video_map: Mapping[str, str | int] | None, single: bool) -> dict[int, str]:
    videos = list(labels.videos)
    names = [_video_names(v) for v in videos]
    found = [n for n, _ in names]
    if not videos:
        raise InputError(f"{path}: SLEAP file holds no videos")
    if view is not None:  # {view: file}
        if len(videos) == 1:
            return {0: view}
        if video_map and view in video_map:
            return {_pick_video(path, video_map[view], names, view): view}
        stems = [s for _, s in names]
        hits = [i for i, s in enumerate(stems) if _match_score(s, view) > 0]
        if len(hits) == 1:
            return {hits[0]: view}
        raise InputError(f"{path}: holds {len(videos)} videos {found}; cannot tell which is view {view!r} "
                         "(pass video_map={view: video})")
    out: dict[int, str] = {}
    if video_map:
        for v, ref in video_map.items():
            out[_pick_video(path, ref, names, v)] = v
        if len(set(out)) != len(video_map):
            raise InputError(f"{path}: video_map assigns one video to several views ({dict(video_map)})")
        return out
    if single and len(videos) == 1:
        return {0: views[0]}
    # camera names of a recording session
    for session in getattr(labels, "sessions", []) or []:
        for i, video in enumerate(videos):
            try:
                cam = session.get_camera(video)
            except Exception:  # pragma: no cover - API variations
                cam = None
            if cam is not None and cam.name in views and cam.name not in out.values():
                out[i] = cam.name
    rest = [i for i in range(len(videos)) if i not in out]
    free = [v for v in views if v not in out.values()]
    for i in rest:
        stem = names[i][1]
        scored = sorted(((_match_score(stem, v), len(v), v) for v in free), reverse=True)
        scored = [s for s in scored if s[0] > 0]
        if not scored:
            continue  # a video of no session view: not used
        if len(scored) > 1 and _tied(scored[0], scored[1]):
            raise InputError(f"{path}: video {names[i][0]!r} matches several views ({scored[0][2]!r}, "
                             f"{scored[1][2]!r}); pass video_map={{view: video}}")
        if scored[0][2] in out.values():
            other = [names[j][0] for j, w in out.items() if w == scored[0][2]]
            raise InputError(f"{path}: videos {other + [names[i][0]]} all match view {scored[0][2]!r}; "
                             "pass video_map={view: video}")
        out[i] = scored[0][2]
    if not out:
        raise InputError(f"{path}: none of its videos {found} matches the session views {views} "
                         "(video file stems should contain the view name; or pass video_map={view: video})")
    unused = [names[i][0] for i in range(len(videos)) if i not in out]
    if unused:
        warnings.warn(f"{path}: video(s) {unused} match no session view and are not used", stacklevel=3)
    return out


def _pick_video(path: Path, ref: str | int, names: list[tuple[str, str]], view: str) -> int:
    if isinstance(ref, (int, np.integer)):
        if not 0 <= int(ref) < len(names):
            raise InputError(f"{path}: video_map[{view!r}] = {ref} but the file holds {len(names)} videos")
        return int(ref)
    ref_s = str(ref)
    ref_name = Path(ref_s.replace("\\", "/")).name
    hits = [i for i, (n, s) in enumerate(names) if ref_name in (n, s)]
    if len(hits) != 1:
        raise InputError(f"{path}: video_map[{view!r}] = {ref!r} matches {len(hits)} of its videos "
                         f"{[n for n, _ in names]}")
    return hits[0]


def _read_sleap(path: Path, views: list[str], view: str | None, video_map: Mapping[str, str | int] | None,
                instances: str, single: bool) -> dict[str, _Points]:
    import sleap_io as sio

    labels = _load_sleap(path)
    vmap = _sleap_view_of_videos(path, labels, views, view, video_map, single)
    video_index = {id(v): i for i, v in enumerate(labels.videos)}
    parts: dict[str, list[_Points]] = {v: [] for v in vmap.values()}
    for lf in labels.labeled_frames:
        vi = video_index.get(id(lf.video))
        if vi is None or vi not in vmap:
            continue
        insts = list(lf.instances)
        replaced = {id(i.from_predicted) for i in insts
                    if not isinstance(i, sio.PredictedInstance) and getattr(i, "from_predicted", None) is not None}
        for k, inst in enumerate(insts):
            predicted = isinstance(inst, sio.PredictedInstance)
            if instances == "predicted" and not predicted:
                continue
            if instances == "user" and predicted:
                continue
            if instances == "all" and predicted and id(inst) in replaced:
                continue
            pts = inst.points
            xy = np.asarray(pts["xy"], np.float64)
            if "visible" in pts.dtype.names:
                vis = np.asarray(pts["visible"], bool)
                xy = np.where(vis[:, None], xy, np.nan)
            if predicted and "score" in pts.dtype.names:
                score = np.asarray(pts["score"], np.float64)
            else:
                score = np.full(len(xy), np.nan if predicted else 1.0)
            names = [n.name for n in inst.skeleton.nodes]
            ind = inst.track.name if inst.track is not None else f"instance{k}"
            n = len(xy)
            parts[vmap[vi]].append(_Points(np.full(n, int(lf.frame_idx), np.int64), xy[:, 0], xy[:, 1], score,
                                           np.asarray(names, dtype=object), np.full(n, ind, dtype=object)))
    return {v: _Points.concat(p) for v, p in parts.items()}
