"""Checks shared by the validated tables (candidates, labels): row lists in errors, typed columns, Parquet I/O.

Examples
--------
>>> import pandas as pd
>>> row_list([False, True, True])
'1, 2'
>>> numeric_column(pd.Series([1.0, 2.0]), "frame", "int64", "t.parquet").dtype
dtype('int64')
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path


def row_list(mask: object, limit: int = 5) -> str:
    """The indices where ``mask`` is true, the first ``limit`` of them, for an error message."""
    idx = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(i) for i in idx[:limit])
    return shown + (f" (and {len(idx) - limit} more)" if len(idx) > limit else "")


def numeric_column(col: pd.Series, name: str, dtype: str, source: str | os.PathLike[str]) -> pd.Series:
    """``col`` converted to the numeric ``dtype``; whole numbers required for ``int64``.

    Raises
    ------
    InputError
        Naming ``source`` and ``name``: non-numeric values, or (for ``int64``)
        missing or fractional values, with the rows at fault.
    """
    try:
        values = pd.to_numeric(col, errors="raise")
    except (ValueError, TypeError):
        raise InputError(f"{source}: column {name!r} holds non-numeric values") from None
    if dtype == "int64":
        bad = values.isna() | (values != np.round(values))
        if bad.any():
            raise InputError(f"{source}: column {name!r} must hold whole numbers; row(s) {row_list(bad)} do not")
    return values.astype(dtype)


def write_table(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write an already validated table to Parquet atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return path


def read_table(path: str | os.PathLike[str], what: str,
               validate: Callable[[pd.DataFrame, Path], pd.DataFrame]) -> pd.DataFrame:
    """Read a Parquet table and validate it; a missing or unreadable file is an :class:`InputError` naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several unrelated types
        raise InputError(f"{path}: cannot be read as a Parquet table ({type(exc).__name__}: {exc})") from None
    return validate(df, path)
