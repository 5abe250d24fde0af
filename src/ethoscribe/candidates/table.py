"""The candidates table: located keypoint candidates per frame and view.

One row per candidate (a marker spot, or a point predicted by a pose model
whose identity is not trusted). Columns:

============  =========  ==========================================================
column        dtype      meaning
============  =========  ==========================================================
frame         int64      frame index in the session's videos (0-based, >= 0)
view          category   camera view name (as in ``session.toml``)
candidate     int64      id of the candidate, unique within (frame, view); for
                         marker spots 0 is the brightest
x, y          float64    sub-pixel position in pixels, OpenCV convention: the
                         centre of the top-left pixel is (0, 0), x to the right,
                         y down
intensity     float64    for marker spots: *peak* (not integrated) grey level
                         above the local background: the brightest pixel of
                         the 3x3 around the peak minus the background, in grey
                         levels of the 8-bit frame (for a spot separated from
                         a touching one: its own pixel, or its peak left after
                         subtracting the neighbour)
area          int64      number of pixels brighter than half the peak above the
                         background, in the spot's measurement window (a
                         single hot pixel has area 1)
============  =========  ==========================================================

Extra columns are allowed and kept (e.g. a pose model's ``score``).

Examples
--------
>>> df = empty_candidates()
>>> list(df.columns)
['frame', 'view', 'candidate', 'x', 'y', 'intensity', 'area']
>>> validate_candidates(df, "example").shape
(0, 7)
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
    "view": "category",
    "candidate": "int64",
    "x": "float64",
    "y": "float64",
    "intensity": "float64",
    "area": "int64",
}
"""Required columns of a candidates table and their dtypes."""


def empty_candidates() -> pd.DataFrame:
    """A candidates table with no rows and the right columns and dtypes."""
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in COLUMNS.items()})


def validate_candidates(df: pd.DataFrame, source: str | os.PathLike[str] = "candidates") -> pd.DataFrame:
    """Check a candidates table and return it with canonical dtypes and column order.

    Parameters
    ----------
    df
        The table to check.
    source
        What the table came from (a file name, a function), named in errors.

    Raises
    ------
    InputError
        Naming ``source``: not a DataFrame, missing columns, values that do
        not convert to the column's type, NaN or infinite coordinates,
        negative frames, or duplicate ``(frame, view, candidate)`` ids.

    Examples
    --------
    >>> validate_candidates(pd.DataFrame({"frame": [0]}), "spots.parquet")
    Traceback (most recent call last):
    ...
    ethoscribe.errors.InputError: spots.parquet: candidates table lacks column(s) view, candidate, x, y, intensity, area
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{source}: a candidates table must be a pandas DataFrame, not {type(df).__name__}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{source}: candidates table lacks column(s) {', '.join(missing)}")
    out = df.copy()
    for name, dtype in COLUMNS.items():
        col = out[name]
        if name == "view":
            if col.isna().any():
                raise InputError(f"{source}: column 'view' has missing values in row(s) {_rows(col.isna())}")
            out[name] = col.astype(str).astype("category") if col.dtype != "category" else col
            continue
        out[name] = numeric_column(col, name, dtype, source)
    for name in ("x", "y"):
        bad = ~np.isfinite(out[name].to_numpy())
        if bad.any():
            raise InputError(f"{source}: column {name!r} has NaN or infinite coordinates in row(s) {_rows(bad)}")
    bad = out["frame"].to_numpy() < 0
    if bad.any():
        raise InputError(f"{source}: column 'frame' has negative frame numbers in row(s) {_rows(bad)}")
    dup = out.duplicated(["frame", "view", "candidate"])
    if dup.any():
        raise InputError(f"{source}: candidate ids repeat within a frame and view in row(s) {_rows(dup)}")
    extra = [c for c in out.columns if c not in COLUMNS]
    return out[[*COLUMNS, *extra]].reset_index(drop=True)


def save_candidates(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Validate ``df`` and write it to a Parquet file atomically; return the path.

    Examples
    --------
    >>> import tempfile
    >>> p = save_candidates(empty_candidates(), Path(tempfile.mkdtemp()) / "spots.parquet")
    >>> load_candidates(p).shape
    (0, 7)
    """
    return write_table(validate_candidates(df, path), path)


def load_candidates(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a candidates table written by :func:`save_candidates` (or any Parquet file with its columns)."""
    return read_table(path, "candidates", validate_candidates)
