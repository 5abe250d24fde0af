"""The labels table: one row per frame, view, individual and keypoint (dense), saved as Parquet.

============  =========  =============================================================
column        dtype      meaning
============  =========  =============================================================
frame         int64      frame index (0-based)
view          str        camera view name
individual    str        animal name (as in ``session.toml``)
keypoint      str        keypoint name (as in the skeleton)
x, y          float64    distorted pixel position (OpenCV convention); NaN: no label
confidence    float32    probability-like confidence that the label is right, in [0, 1] (0: no label)
flag          bool       worth a person's look (a flagging reason applies)
reason        str        '' if fine, else ';'-joined codes of :data:`REASONS`
stage         str        the stage that produced the label (:data:`STAGES`)
reasoner      str        ``geometric`` or a model name
candidate     int64      candidate id within (frame, view), -1 if none
reproj_error  float32    px between the label and its 3D point's reprojection (NaN if none)
============  =========  =============================================================

Reason codes (:data:`REASONS`) say what applies to a row; ``flag`` says whether
it is *doubtful*, worth a person's look:

- ``high_reprojection_error``: the label disagrees with the 3D point the other
  views agree on: it lies farther than the inlier threshold, or than 5 px
  (the distance within which a label counts as right), from the point's
  reprojection (always flagged);
- ``few_views``: the 3D point rests on fewer than ``verified_views`` agreeing
  views; flagged only when that support is genuinely weak: a single view
  (nothing checked it), or a confidence below 0.5;
- ``conflict``: two keypoints claimed one marker when the two tracking
  passes were reconciled: the keypoint that let go of it (its labels, if
  any, are ``predicted`` and flagged by their confidence), and the one that
  kept it, flagged unless both passes put it there, or the prediction of
  the keypoint that let go, from its own track, places that keypoint
  elsewhere (likely within 5 px, and farther than the inlier threshold from
  the label) (the tie-break between the claims is no evidence of which is
  right); or the label lost or won a candidate claimed twice and geometry
  did not confirm it (flagged);
- ``passes_disagree``: the two tracking passes put the keypoint on different
  markers and the one whose track joins the agreed track without a jump was
  taken, or the other pass followed a marker that another keypoint holds
  (that pass is explained away) (informational: the confidence says how
  decisive that was);
- ``reprojected``: no candidate in this view: the label is the reprojection of
  the 3D point. Every reprojected label carries it; it is flagged only when
  doubtful: its confidence (which counts the support of the point: fewer
  than ``verified_views`` views not confirmed by both passes lower it, and
  so does a wide spread of the point's labels about it: the chance that the
  reprojection is within 5 px when its error has the scale of their RMS
  reprojection error; for a ``predicted`` point, the chance that the
  prediction is within 5 px) is below 0.5, or another reason flags it;
- ``predicted``: the keypoint was observed in no view of this frame; its 3D
  point is interpolated over a short gap of its track (flagged through
  ``low_confidence``: the confidence of a predicted label is its chance of
  lying within 5 px of the keypoint, from the keypoint's displacement over
  the gap, or at least that of an n-view point when the predicted point
  lands, within 2.5 px, on spots that no label claims in n >= 2 views (the
  keypoint's marker, seen where its track puts it); a single view's
  candidate that the prediction confirms, within the inlier threshold,
  keeps its position and is wrong only if both the unverified view and the
  prediction are);
- ``large_jump``: the 3D point moved much more than the motion model expected,
  or it leaves its track for a frame and comes back (a spike: farther from the
  midpoint of its neighbours in time than three times the 90th percentile of
  that distance on the keypoint's track) (always flagged);
- ``detached_track``: the keypoint's 3D track reached this stretch only
  across a large jump or a loss of the keypoint from every stretch that a seed frame or the two
  tracking passes' agreement verifies, and the body disagrees too: the
  stretch's median distance from the keypoint's place in the body (the seed
  template fitted to the animal's other keypoints) exceeds the 90th
  percentile of that distance over the verified stretches. The track likely
  follows another marker for the whole stretch, a swap no clash reveals
  (always flagged; the confidence is at most 0.5);
- ``missing``: no label (flagged when the keypoint is lost outside the seeds,
  not when its point is known but outside this view's image);
- ``suspect_camera``: the view's calibration disagrees with the others
  (flagged);
- ``low_confidence``: the confidence is below 0.5 (flagged);
- ``seed``: a seed label (informational).

``confidence`` estimates the probability that the label is right (on the
right marker, within the label noise): the identity part from the
association margin and whether the two tracking passes agree, times the
geometric part from the support and the reprojection error (see
:func:`ethoscribe.pose.outputs.label_quality`).

Examples
--------
>>> df = empty_labels()
>>> list(df.columns)[:6]
['frame', 'view', 'individual', 'keypoint', 'x', 'y']
>>> validate_labels(df, "example").shape
(0, 13)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError
from ethoscribe.io.tables import numeric_column, read_table, write_table
from ethoscribe.io.tables import row_list as _rows

COLUMNS: dict[str, str] = {
    "frame": "int64",
    "view": "str",
    "individual": "str",
    "keypoint": "str",
    "x": "float64",
    "y": "float64",
    "confidence": "float32",
    "flag": "bool",
    "reason": "str",
    "stage": "str",
    "reasoner": "str",
    "candidate": "int64",
    "reproj_error": "float32",
}
"""Columns of a labels table and their dtypes (``str``: pandas' string dtype, ``object`` before pandas 3)."""

#: Reason codes, in the order they are joined.
REASONS: tuple[str, ...] = (
    "high_reprojection_error",
    "few_views",
    "conflict",
    "reprojected",
    "large_jump",
    "detached_track",
    "missing",
    "suspect_camera",
    "predicted",
    "low_confidence",
    "passes_disagree",
    "seed",
)
#: Codes that do not by themselves make a row worth a person's look.
INFORMATIONAL: frozenset[str] = frozenset({"seed", "passes_disagree"})

#: Stages that can produce a label, in pipeline order.
STAGES: tuple[str, ...] = ("seed", "assignment", "agreement", "refinement", "reprojection")

REASON_BIT: dict[str, int] = {r: 1 << i for i, r in enumerate(REASONS)}
KEY = ["frame", "view", "individual", "keypoint"]


def reason_string(bits: int) -> str:
    """The ';'-joined reason codes of a bit mask (see :data:`REASON_BIT`).

    Examples
    --------
    >>> reason_string(REASON_BIT["few_views"] | REASON_BIT["reprojected"])
    'few_views;reprojected'
    """
    return ";".join(r for r in REASONS if bits & REASON_BIT[r])


def reason_strings(bits: np.ndarray) -> np.ndarray:
    """Vectorised :func:`reason_string` (object array of the same shape)."""
    bits = np.asarray(bits, dtype=np.int64)
    uniq, inv = np.unique(bits, return_inverse=True)
    table = np.array([reason_string(int(b)) for b in uniq], dtype=object)
    return table[inv].reshape(bits.shape)


def empty_labels() -> pd.DataFrame:
    """A labels table with no rows, the right columns and dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in COLUMNS.items()})


def validate_labels(df: pd.DataFrame, source: str | os.PathLike[str] = "labels", dense: bool = True) -> pd.DataFrame:
    """Check a labels table; return it with canonical dtypes, column order and row order.

    Parameters
    ----------
    df
        The table.
    source
        What it came from (named in errors).
    dense
        Also require one row for every combination of the frames, views,
        individuals and keypoints present.

    Raises
    ------
    InputError
        Naming ``source`` and the offending column/rows: missing columns,
        values of the wrong type, confidences outside [0, 1], x without y,
        unknown reason codes or stages, a flag that does not match the
        reason, duplicate or (with ``dense``) missing rows.

    Examples
    --------
    >>> validate_labels(pd.DataFrame({"frame": [0]}), "labels.parquet")
    Traceback (most recent call last):
    ...
    ethoscribe.errors.InputError: labels.parquet: labels table lacks column(s) view, individual, keypoint, x, y, confidence, flag, reason, stage, reasoner, candidate, reproj_error
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{source}: a labels table must be a pandas DataFrame, not {type(df).__name__}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{source}: labels table lacks column(s) {', '.join(missing)}")
    out = df[list(COLUMNS)].copy()
    for name, dtype in COLUMNS.items():
        col = out[name]
        if dtype == "str":
            if col.isna().any():
                raise InputError(f"{source}: column {name!r} has missing values in row(s) {_rows(col.isna())}")
            out[name] = col.astype(str)
            continue
        if dtype == "bool":
            if col.dtype != bool:
                vals = pd.Series(col).map({True: True, False: False})
                if vals.isna().any():
                    raise InputError(f"{source}: column 'flag' must be boolean; row(s) {_rows(vals.isna())} are not")
                col = vals
            out[name] = col.astype(bool)
            continue
        out[name] = numeric_column(col, name, dtype, source)
    x, y = out["x"].to_numpy(), out["y"].to_numpy()
    bad = np.isinf(x) | np.isinf(y) | (np.isnan(x) != np.isnan(y))
    if bad.any():
        raise InputError(f"{source}: x and y must be both finite or both NaN; row(s) {_rows(bad)} are not")
    conf = out["confidence"].to_numpy()
    bad = ~((conf >= 0) & (conf <= 1))
    if bad.any():
        raise InputError(f"{source}: column 'confidence' must lie in [0, 1]; row(s) {_rows(bad)} do not")
    if (out["frame"].to_numpy() < 0).any():
        raise InputError(f"{source}: column 'frame' has negative frames in row(s) {_rows(out['frame'].to_numpy() < 0)}")
    if (out["candidate"].to_numpy() < -1).any():
        raise InputError(f"{source}: column 'candidate' must be >= -1; row(s) {_rows(out['candidate'].to_numpy() < -1)} are not")
    err = out["reproj_error"].to_numpy()
    if (err < 0).any():
        raise InputError(f"{source}: column 'reproj_error' has negative values in row(s) {_rows(err < 0)}")
    stages = out["stage"].to_numpy()
    bad = ~np.isin(stages, STAGES)
    if bad.any():
        raise InputError(f"{source}: unknown stage(s) {sorted(set(stages[bad]))} in row(s) {_rows(bad)} (stages: {list(STAGES)})")
    reasons = out["reason"].to_numpy()
    uniq = pd.unique(reasons)
    bad_codes = sorted({c for r in uniq for c in str(r).split(";") if c and c not in REASON_BIT})
    if bad_codes:
        bad = np.array([any(c in bad_codes for c in str(r).split(";")) for r in reasons])
        raise InputError(f"{source}: unknown reason code(s) {bad_codes} in row(s) {_rows(bad)} (codes: {list(REASONS)})")
    flagging = {r: any(c and c not in INFORMATIONAL for c in str(r).split(";")) for r in uniq}
    can_flag = np.array([flagging[r] for r in reasons], dtype=bool) if len(reasons) else np.zeros(0, bool)
    bad = out["flag"].to_numpy() & ~can_flag
    if bad.any():
        raise InputError(f"{source}: row(s) {_rows(bad)} are flagged without a reason")
    dup = out.duplicated(KEY)
    if dup.any():
        raise InputError(f"{source}: (frame, view, individual, keypoint) repeats in row(s) {_rows(dup)}")
    if dense and len(out):
        expected = int(np.prod([out[c].nunique() for c in KEY]))
        if expected != len(out):
            raise InputError(
                f"{source}: the table is not dense: {len(out)} rows but {expected} combinations of frame, view, "
                "individual and keypoint"
            )
    return out.reset_index(drop=True)


def save_labels(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Validate ``df`` and write it to Parquet atomically; return the path."""
    return write_table(validate_labels(df, path), path)


def load_labels(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a labels table written by :func:`save_labels`."""
    return read_table(path, "labels", validate_labels)
