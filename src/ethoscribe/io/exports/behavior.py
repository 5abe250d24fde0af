"""Exports of behaviour results: segments, per-frame labels, BORIS and NWB.

==================================  ==========================================  ==================================
what                                function                                    written with
==================================  ==========================================  ==================================
segments (CSV / Parquet)            :func:`export_segments`                     pandas / pyarrow
per-frame labels, one column per    :func:`export_frame_labels`                 pandas / pyarrow
animal, aligned to video frames
BORIS project (``.boris``)          :func:`export_boris` (``.boris``)           JSON, BORIS project format 7.0
BORIS spreadsheet events            :func:`export_boris` (``.xlsx``/``.csv``)   pandas + openpyxl
BORIS aggregated / tabular events   :func:`export_boris` (``layout=``)          pandas
NWB ``TimeIntervals``               :func:`export_nwb_intervals`,               pynwb
                                    :func:`append_nwb_intervals`
all of the above                    :func:`export_behavior`
==================================  ==========================================  ==================================

Every file is written atomically (temporary file, then rename).

BORIS
-----
BORIS (Friard & Gamba 2016) *imports* two things: a BORIS project file, and,
into an open observation, a spreadsheet of events (**Observations > Import
observations**). ethoscribe writes both:

``.boris``
    A complete project that BORIS opens directly (**File > Open project**)
    or whose observation it imports: the ethogram (every behaviour a *State
    event*, its definition as the description, social ones in the category
    ``social``), the subjects (the animals), and one media observation of the
    video (path relative to the project file, its length and fps) with a
    START and a STOP event per bout (``[time, subject, behaviour code,
    modifier, comment]``, times in seconds). A stop that coincides with the
    start of the same animal's next bout is written 1 ms earlier, as BORIS
    itself does.
``.xlsx`` (or ``.csv`` / ``.tsv``, ``layout="events"``)
    The spreadsheet BORIS imports into an observation: a header row with
    the columns ``time, subject, code, modifier, comment`` (BORIS reads them
    case-insensitively, in any order, from XLSX or ODS files; the CSV/TSV
    hold the same table for other tools or for saving as XLSX), one START
    and one STOP row per bout in time order. The behaviours must exist in
    the project's ethogram as State events (the ``.boris`` file has them).
``layout="aggregated"`` (CSV/TSV)
    BORIS's *aggregated events* export layout, one row per bout:
    ``Observation id, Observation date, Description, Observation type,
    Source, Total duration, Media duration (s), FPS, Subject, Behavior,
    Behavioral category, Behavior type, Start (s), Stop (s), Duration (s),
    Media file name, Comment start, Comment stop`` (what SimBA and most
    BORIS-reading scripts take).
``layout="tabular"`` (CSV/TSV)
    BORIS's *tabular events* export layout, two rows per bout:
    ``Observation id, Observation date, Description, Observation duration,
    Observation type, Source, Time offset (s), Media duration (s), FPS,
    Subject, Behavior, Behavioral category, Behavior type, Time, Media file
    name, Image index, Image file path, Comment`` with ``Behavior type``
    START or STOP (older BORIS versions called that column ``Status``;
    ``status_column=True`` adds it too).

NWB
---
:func:`export_nwb_intervals` writes a standalone NWB file whose
``intervals/behavior`` :class:`pynwb.epoch.TimeIntervals` table holds one row
per segment: ``start_time``, ``stop_time`` (s) and the columns ``label``,
``individual``, ``confidence`` and ``caption``. :func:`append_nwb_intervals`
adds the same table to an existing NWB file, e.g. the ndx-pose export of
:func:`ethoscribe.io.exports.export_nwb` (one file per animal: pass
``individual=`` to keep that animal's segments).

Examples
--------
>>> paths = export_behavior("session/output/behavior", "session/output/behavior/exports")  # doctest: +SKIP
>>> sorted(paths)  # doctest: +SKIP
['boris', 'boris_aggregated', 'boris_events', 'frames', 'nwb', 'segments_csv', 'segments_parquet']
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path, write_text

UNTRACKED = "untracked"
SOCIAL_LABELS = frozenset({"approach", "follow", "chase", "contact", "retreat", "sniff"})
SEGMENT_COLUMNS = ["individual", "label", "start_frame", "end_frame", "start_s", "end_s", "duration_s", "confidence", "caption"]
BORIS_EVENT_COLUMNS = ["time", "subject", "code", "modifier", "comment"]
BORIS_AGGREGATED_COLUMNS = [
    "Observation id", "Observation date", "Description", "Observation type", "Source", "Total duration",
    "Media duration (s)", "FPS", "Subject", "Behavior", "Behavioral category", "Behavior type", "Start (s)", "Stop (s)",
    "Duration (s)", "Media file name", "Comment start", "Comment stop",
]
BORIS_TABULAR_COLUMNS = [
    "Observation id", "Observation date", "Description", "Observation duration", "Observation type", "Source",
    "Time offset (s)", "Media duration (s)", "FPS", "Subject", "Behavior", "Behavioral category", "Behavior type", "Time",
    "Media file name", "Image index", "Image file path", "Comment",
]
BORIS_PROJECT_FORMAT = "7.0"
NWB_COLUMNS = ("label", "individual", "confidence", "caption")


# ------------------------------------------------------------------ inputs
def _result(source: Any) -> Any:
    """A BehaviorResult from a result object or a result folder."""
    if hasattr(source, "segments") and hasattr(source, "labels"):
        return source
    from ethoscribe.behavior.pipeline import load_behavior_result

    return load_behavior_result(source)


def clean_segments(segments: pd.DataFrame, fps: float | None = None) -> pd.DataFrame:
    """Segments with the columns of :data:`SEGMENT_COLUMNS` (times from frames when ``fps`` is given), sorted.

    Raises
    ------
    InputError
        Missing columns, end before start.
    """
    if not isinstance(segments, pd.DataFrame):
        raise InputError(f"segments must be a pandas DataFrame, not {type(segments).__name__}")
    need = [c for c in ("individual", "label") if c not in segments.columns]
    has_frames = {"start_frame", "end_frame"} <= set(segments.columns)
    has_times = {"start_s", "end_s"} <= set(segments.columns)
    if need or not (has_frames or has_times):
        raise InputError("segments need columns individual, label and start_frame/end_frame or start_s/end_s")
    df = segments.copy()
    df["individual"] = df["individual"].astype(str)
    df["label"] = df["label"].astype(str)
    if has_frames and (not has_times or fps is not None):
        if fps is None:
            raise InputError("segments have frames but no times: give fps")
        df["start_s"] = df["start_frame"] / fps
        df["end_s"] = df["end_frame"] / fps
    if not has_frames:
        if fps is None:
            raise InputError("segments have times but no frames: give fps")
        df["start_frame"] = np.round(df["start_s"] * fps).astype(np.int64)
        df["end_frame"] = np.round(df["end_s"] * fps).astype(np.int64)
    if (df["end_s"] < df["start_s"]).any():
        raise InputError("segments: some end before they start")
    df["duration_s"] = df["end_s"] - df["start_s"]
    if "confidence" not in df:
        df["confidence"] = 1.0
    if "caption" not in df:
        df["caption"] = ""
    df["caption"] = df["caption"].fillna("").astype(str)
    df["confidence"] = pd.to_numeric(df["confidence"], errors="coerce").fillna(0.0).astype(float)
    return df[SEGMENT_COLUMNS].sort_values(["start_s", "individual"], kind="stable").reset_index(drop=True)


def merge_segments(segments: pd.DataFrame) -> pd.DataFrame:
    """Join touching segments of one animal with the same label into bouts (mean confidence, first caption)."""
    df = segments.sort_values(["individual", "start_s"], kind="stable")
    rows = []
    for ind, g in df.groupby("individual", sort=False):
        cur: dict[str, Any] | None = None
        n = 0
        for r in g.to_dict("records"):
            if cur is not None and r["label"] == cur["label"] and abs(r["start_s"] - cur["end_s"]) < 1e-6:
                cur["end_s"], cur["end_frame"] = r["end_s"], r["end_frame"]
                cur["confidence"] = (cur["confidence"] * n + r["confidence"]) / (n + 1)
                n += 1
                continue
            if cur is not None:
                rows.append(cur)
            cur, n = dict(r), 1
        if cur is not None:
            rows.append(cur)
    out = pd.DataFrame(rows, columns=list(segments.columns))
    out["duration_s"] = out["end_s"] - out["start_s"]
    return out.sort_values(["start_s", "individual"], kind="stable").reset_index(drop=True)


def _write_table(df: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif suffix in (".csv", ".tsv", ".txt"):
            df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
        else:
            raise InputError(f"{path}: unknown table format {suffix!r} (use .csv, .tsv or .parquet)")
    return path


# ------------------------------------------------------------------ tables
def export_segments(segments: pd.DataFrame, path: str | os.PathLike[str], fps: float | None = None,
                    merge: bool = False) -> Path:
    """Write segments as CSV (``.csv``/``.tsv``) or Parquet (``.parquet``) with :data:`SEGMENT_COLUMNS`.

    ``merge`` joins touching same-label segments into bouts first.
    """
    df = clean_segments(segments, fps)
    if merge:
        df = merge_segments(df)
    return _write_table(df, Path(path))


def frame_labels_table(labels: pd.DataFrame, fps: float, n_frames: int | None = None,
                       individuals: Sequence[str] | None = None, fill: str = UNTRACKED) -> pd.DataFrame:
    """Per-frame labels aligned to the video: ``frame, time_s`` and one column per animal (``fill`` where unlabelled)."""
    need = [c for c in ("frame", "individual", "label") if c not in labels.columns]
    if need:
        raise InputError(f"labels table lacks column(s) {', '.join(need)}")
    inds = list(individuals) if individuals is not None else list(dict.fromkeys(labels["individual"].astype(str)))
    T = int(n_frames if n_frames is not None else (labels["frame"].max() + 1 if len(labels) else 0))
    out = pd.DataFrame({"frame": np.arange(T, dtype=np.int64), "time_s": np.arange(T) / float(fps)})
    for ind in inds:
        g = labels[labels["individual"].astype(str) == ind]
        col = np.full(T, fill, dtype=object)
        f = g["frame"].to_numpy(np.int64)
        ok = (f >= 0) & (f < T)
        col[f[ok]] = g["label"].astype(str).to_numpy()[ok]
        out[ind] = col
    return out


def export_frame_labels(labels: pd.DataFrame, path: str | os.PathLike[str], fps: float, n_frames: int | None = None,
                        individuals: Sequence[str] | None = None) -> Path:
    """Write :func:`frame_labels_table` as CSV or Parquet (by the suffix)."""
    return _write_table(frame_labels_table(labels, fps, n_frames, individuals), Path(path))


# ------------------------------------------------------------------ BORIS
def _bouts_for_boris(segments: pd.DataFrame, fps: float | None, exclude: Iterable[str]) -> pd.DataFrame:
    df = merge_segments(clean_segments(segments, fps))
    return df[~df["label"].isin(set(exclude))].reset_index(drop=True)


def boris_events(segments: pd.DataFrame, fps: float | None = None, exclude: Iterable[str] = (UNTRACKED,),
                 decimals: int = 3) -> pd.DataFrame:
    """START and STOP events of every bout: ``time, subject, code, modifier, comment, status`` in time order.

    A stop that coincides with the start of the same subject's next bout is
    moved 1 ms earlier (BORIS's convention), so every START/STOP pair is
    unambiguous.
    """
    b = _bouts_for_boris(segments, fps, exclude)
    rows = []
    step = 10.0 ** -decimals
    for ind, g in b.groupby("individual", sort=False):
        starts = set(np.round(g["start_s"].to_numpy(float), decimals))
        for r in g.itertuples(index=False):
            t0 = round(float(r.start_s), decimals)
            t1 = round(float(r.end_s), decimals)
            if t1 in starts and t1 - step > t0:
                t1 = round(t1 - step, decimals)
            rows.append((t0, 0, ind, r.label, "", "", "START"))
            rows.append((t1, 1, ind, r.label, "", "", "STOP"))
    ev = pd.DataFrame(rows, columns=["time", "_o", "subject", "code", "modifier", "comment", "status"])
    ev = ev.sort_values(["time", "_o", "subject"], kind="stable").drop(columns="_o").reset_index(drop=True)
    return ev


def write_xlsx(df: pd.DataFrame, path: str | os.PathLike[str], sheet: str = "events") -> Path:
    """Write a DataFrame as a one-sheet XLSX workbook (through pandas and openpyxl), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_excel(tmp, sheet_name=sheet[:31], index=False, engine="openpyxl")
    return path


def boris_project(
    segments: pd.DataFrame,
    fps: float,
    *,
    media_file: str | os.PathLike[str] | None = None,
    media_duration_s: float | None = None,
    definitions: Mapping[str, str] | None = None,
    subjects: Sequence[str] | None = None,
    observation_id: str = "ethoscribe",
    project_name: str = "ethoscribe behaviours",
    date: _dt.datetime | None = None,
    exclude: Iterable[str] = (UNTRACKED,),
    relative_to: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The BORIS project (a dict, JSON-ready) of the module docstring."""
    ev = boris_events(segments, fps, exclude)
    b = _bouts_for_boris(segments, fps, exclude)
    codes = sorted(set(b["label"]))
    defs = dict(definitions or {})
    keys = list("abcdefghijklmnopqrstuvwxyz")
    ethogram = {str(i): {"type": "State event", "key": keys[i] if i < len(keys) else "", "code": c,
                         "description": defs.get(c, ""), "category": "social" if c in SOCIAL_LABELS else "",
                         "modifiers": {}, "excluded": "", "coding map": ""} for i, c in enumerate(codes)}
    subj = list(subjects) if subjects is not None else list(dict.fromkeys(clean_segments(segments, fps)["individual"]))
    subjects_conf = {str(i): {"key": str(i + 1) if i < 9 else "", "name": s, "description": f"{s} (ethoscribe individual)"}
                     for i, s in enumerate(subj)}
    when = (date or _dt.datetime.now()).replace(microsecond=0).isoformat()
    obs: dict[str, Any] = {
        "date": when, "description": "behaviours found by ethoscribe", "time offset": 0.0,
        "events": [[float(r.time), r.subject, r.code, "", ""] for r in ev.itertuples(index=False)],
        "independent_variables": {}, "visualize_spectrogram": False, "visualize_waveform": False,
        "close_behaviors_between_videos": False,
    }
    if media_file is not None:
        m = Path(media_file)
        if relative_to is not None:
            try:
                m_str = os.path.relpath(m.resolve(), Path(relative_to).resolve())
            except ValueError:
                m_str = str(m)
        else:
            m_str = str(m)
        m_str = Path(m_str).as_posix()
        dur = float(media_duration_s if media_duration_s is not None else (b["end_s"].max() if len(b) else 0.0))
        obs.update({"type": "MEDIA", "file": {"1": [m_str], **{str(i): [] for i in range(2, 9)}},
                    "media_info": {"length": {m_str: dur}, "fps": {m_str: float(fps)}, "hasVideo": {m_str: True},
                                   "hasAudio": {m_str: False}, "offset": {"1": 0.0}}})
    else:
        obs.update({"type": "LIVE", "file": [], "scan_sampling_time": 0, "media_info": {"offset": {}}})
    return {
        "time_format": "s", "project_date": when, "project_name": project_name,
        "project_description": "Exported by ethoscribe: one State event per behaviour, one observation of the video.",
        "project_format_version": BORIS_PROJECT_FORMAT, "subjects_conf": subjects_conf, "behaviors_conf": ethogram,
        "observations": {observation_id: obs}, "behavioral_categories": ["social"] if any(c in SOCIAL_LABELS for c in codes) else [],
        "independent_variables": {}, "coding_map": {}, "behaviors_coding_map": [], "converters": {},
    }


def export_boris(
    segments: pd.DataFrame,
    path: str | os.PathLike[str],
    fps: float,
    *,
    layout: str = "events",
    media_file: str | os.PathLike[str] | None = None,
    media_duration_s: float | None = None,
    definitions: Mapping[str, str] | None = None,
    observation_id: str = "ethoscribe",
    exclude: Iterable[str] = (UNTRACKED,),
    status_column: bool = False,
) -> Path:
    """Write behaviours for BORIS (see the module docstring for what each file is).

    Parameters
    ----------
    segments
        Segments (or bouts) table; touching same-label segments are joined.
    path
        ``.boris`` (project), ``.xlsx`` (spreadsheet import), or ``.csv`` /
        ``.tsv`` with ``layout`` ``"events"`` (spreadsheet import columns),
        ``"aggregated"`` or ``"tabular"`` (BORIS's export layouts).
    fps
        Frame rate of the video.
    media_file, media_duration_s
        The video the observation codes (path written relative to the
        ``.boris`` file) and its length.
    definitions
        Behaviour definitions (the ethogram's descriptions).
    observation_id
        The observation's name.
    exclude
        Labels left out (default: ``untracked``).
    status_column
        Tabular layout: also add the ``Status`` column of older BORIS versions.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".boris":
        pj = boris_project(segments, fps, media_file=media_file, media_duration_s=media_duration_s, definitions=definitions,
                           observation_id=observation_id, exclude=exclude, relative_to=path.parent)
        return write_text(path, json.dumps(pj, indent=1))
    ev = boris_events(segments, fps, exclude)
    if suffix == ".xlsx":
        if layout != "events":
            raise InputError("an .xlsx BORIS file holds the import layout (time, subject, code, modifier, comment); "
                             "use .csv or .tsv for the aggregated or tabular layouts")
        return write_xlsx(ev[BORIS_EVENT_COLUMNS], path)
    if suffix not in (".csv", ".tsv"):
        raise InputError(f"{path}: BORIS files are .boris, .xlsx, .csv or .tsv")
    b = _bouts_for_boris(segments, fps, exclude)
    media = Path(media_file).name if media_file is not None else ""
    mdur = float(media_duration_s if media_duration_s is not None else (b["end_s"].max() if len(b) else 0.0))
    date = _dt.datetime.now().replace(microsecond=0).isoformat(sep=" ")
    cat = lambda c: "social" if c in SOCIAL_LABELS else ""  # noqa: E731
    if layout == "events":
        df = ev[BORIS_EVENT_COLUMNS]
    elif layout == "aggregated":
        df = pd.DataFrame({
            "Observation id": observation_id, "Observation date": date, "Description": "behaviours found by ethoscribe",
            "Observation type": "Media file" if media else "Live observation", "Source": media, "Total duration": mdur,
            "Media duration (s)": mdur, "FPS": float(fps), "Subject": b["individual"], "Behavior": b["label"],
            "Behavioral category": b["label"].map(cat), "Behavior type": "STATE", "Start (s)": b["start_s"].round(3),
            "Stop (s)": b["end_s"].round(3), "Duration (s)": (b["end_s"] - b["start_s"]).round(3), "Media file name": media,
            "Comment start": "", "Comment stop": "",
        }, columns=BORIS_AGGREGATED_COLUMNS)
    elif layout == "tabular":
        df = pd.DataFrame({
            "Observation id": observation_id, "Observation date": date, "Description": "behaviours found by ethoscribe",
            "Observation duration": mdur, "Observation type": "Media file" if media else "Live observation",
            "Source": media, "Time offset (s)": 0.0, "Media duration (s)": mdur, "FPS": float(fps), "Subject": ev["subject"],
            "Behavior": ev["code"], "Behavioral category": ev["code"].map(cat), "Behavior type": ev["status"],
            "Time": ev["time"], "Media file name": media,
            "Image index": np.round(ev["time"].to_numpy(float) * fps).astype(np.int64), "Image file path": "NA", "Comment": "",
        }, columns=BORIS_TABULAR_COLUMNS)
        if status_column:
            df["Status"] = ev["status"].to_numpy()
    else:
        raise InputError(f"unknown BORIS layout {layout!r} (events, aggregated or tabular)")
    return _write_table(df, path)


# ------------------------------------------------------------------ NWB
def _intervals_table(segments: pd.DataFrame, name: str, description: str) -> Any:
    from pynwb.epoch import TimeIntervals

    ti = TimeIntervals(name=name, description=description)
    ti.add_column(name="label", description="behaviour label (ethoscribe label dictionary)")
    ti.add_column(name="individual", description="animal the behaviour belongs to")
    ti.add_column(name="confidence", description="confidence of the label in [0, 1]")
    ti.add_column(name="caption", description="structured description of the segment (caption)")
    for r in segments.itertuples(index=False):
        ti.add_interval(start_time=float(r.start_s), stop_time=float(r.end_s), label=str(r.label),
                        individual=str(r.individual), confidence=float(r.confidence), caption=str(r.caption))
    return ti


def export_nwb_intervals(
    segments: pd.DataFrame,
    path: str | os.PathLike[str],
    fps: float | None = None,
    *,
    name: str = "behavior",
    session_description: str = "Behaviour segments found by ethoscribe",
    identifier: str | None = None,
    session_start_time: _dt.datetime | None = None,
    individual: str | None = None,
    exclude: Iterable[str] = (),
) -> Path:
    """Write a standalone NWB file with the segments as the ``intervals/<name>`` TimeIntervals table."""
    import pynwb

    path = Path(path)
    if path.suffix.lower() != ".nwb":
        raise InputError(f"{path}: an NWB file must end in .nwb")
    df = clean_segments(segments, fps)
    if individual is not None:
        df = df[df["individual"] == individual]
    df = df[~df["label"].isin(set(exclude))]
    start = session_start_time or _dt.datetime.now(_dt.timezone.utc)
    if start.tzinfo is None:
        raise InputError("session_start_time must carry a time zone")
    nwb = pynwb.NWBFile(session_description=session_description, identifier=identifier or f"ethoscribe-behavior-{path.stem}",
                        session_start_time=start)
    nwb.add_time_intervals(_intervals_table(df, name, "behaviour segments (ethoscribe): one row per segment"))
    with atomic_path(path) as tmp:
        with pynwb.NWBHDF5IO(str(tmp), mode="w") as io:
            io.write(nwb)
    return path


def append_nwb_intervals(
    path: str | os.PathLike[str],
    segments: pd.DataFrame,
    fps: float | None = None,
    *,
    name: str = "behavior",
    individual: str | None = None,
    exclude: Iterable[str] = (),
) -> Path:
    """Add the segments as ``intervals/<name>`` to an existing NWB file (e.g. the ndx-pose export), atomically.

    The file is copied, the copy opened in append mode, and renamed over the
    original only when the write succeeded. An existing table of that name
    is an error.
    """
    import pynwb

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: NWB file not found")
    try:  # the pose export's extension types must be registered to read it
        import ndx_pose  # noqa: F401
    except ImportError:  # pragma: no cover
        pass
    df = clean_segments(segments, fps)
    if individual is not None:
        df = df[df["individual"] == individual]
    df = df[~df["label"].isin(set(exclude))]
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with pynwb.NWBHDF5IO(str(tmp), mode="a") as io:
            nwb = io.read()
            if nwb.intervals is not None and name in nwb.intervals:
                raise InputError(f"{path}: already holds an intervals table {name!r}")
            nwb.add_time_intervals(_intervals_table(df, name, "behaviour segments (ethoscribe): one row per segment"))
            io.write(nwb)
    return path


# ------------------------------------------------------------------ all
BEHAVIOR_FORMATS: tuple[str, ...] = ("csv", "parquet", "frames", "boris", "nwb")


def export_behavior(
    result: Any,
    out_dir: str | os.PathLike[str],
    formats: Sequence[str] = BEHAVIOR_FORMATS,
    *,
    media_file: str | os.PathLike[str] | None = None,
    n_frames: int | None = None,
    nwb_pose_files: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, Path]:
    """Export a behaviour result (object or folder) in several formats at once.

    Writes into ``out_dir``: ``segments.csv`` / ``segments.parquet``
    (``csv``, ``parquet``), ``frame_labels.csv`` (``frames``),
    ``behavior.boris`` + ``behavior_events.xlsx`` + ``behavior_aggregated.csv``
    (``boris``), ``behavior.nwb`` (``nwb``). With ``nwb_pose_files`` (the
    ndx-pose exports, one per animal, named ``..._<animal>.nwb`` or a single
    file), the intervals are also appended to them.
    """
    unknown = [f for f in formats if f not in BEHAVIOR_FORMATS]
    if unknown:
        raise InputError(f"unknown behaviour export format(s) {unknown} (formats: {', '.join(BEHAVIOR_FORMATS)})")
    res = _result(result)
    fps = float(res.meta.get("fps") or 0) or None
    if fps is None:
        raise InputError("the behaviour result has no frame rate (meta.fps)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    segs = clean_segments(res.segments, fps)
    defs = dict(zip(res.label_dictionary["label"].astype(str), res.label_dictionary["definition"].fillna("").astype(str)))
    T = n_frames or int(res.meta.get("n_frames") or 0) or None
    paths: dict[str, Path] = {}
    if "csv" in formats:
        paths["segments_csv"] = _write_table(segs, out / "segments.csv")
    if "parquet" in formats:
        paths["segments_parquet"] = _write_table(segs, out / "segments.parquet")
    if "frames" in formats:
        paths["frames"] = export_frame_labels(res.labels, out / "frame_labels.csv", fps, T, res.individuals)
    if "boris" in formats:
        dur = T / fps if T else None
        paths["boris"] = export_boris(segs, out / "behavior.boris", fps, media_file=media_file, media_duration_s=dur, definitions=defs)
        paths["boris_events"] = export_boris(segs, out / "behavior_events.xlsx", fps)
        paths["boris_aggregated"] = export_boris(segs, out / "behavior_aggregated.csv", fps, layout="aggregated",
                                                 media_file=media_file, media_duration_s=dur)
    if "nwb" in formats:
        paths["nwb"] = export_nwb_intervals(segs, out / "behavior.nwb")
        for f in nwb_pose_files:
            f = Path(f)
            ind = next((i for i in res.individuals if f.stem.endswith(f"_{i}")), None)
            paths[f"nwb:{f.name}"] = append_nwb_intervals(f, segs, individual=ind if len(nwb_pose_files) > 1 else None)
    return paths
