"""Candidates as padded arrays for the frame loop: checked once, undistorted once per chunk.

:func:`prepare_candidates` validates a candidates table against the session
(views known, frames in range, no NaN coordinates, at least one candidate in
every view) and indexes it by frame; :meth:`CandidateIndex.block` returns
the candidates of a list of frames as arrays (F, V, M, ...) padded to the
largest count M, with normalised (undistorted) coordinates computed in one
vectorised call.

Optional columns of predictions (``hint_keypoint``, ``hint_individual``,
``score``) become integer hints (index of the named keypoint / individual,
-1 when absent or unknown) and a float score.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ethoscribe.candidates.table import validate_candidates
from ethoscribe.errors import InputError
from ethoscribe.geometry.camera import CameraRig

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class CandidateBlock:
    """Candidates of F frames: every array (F, V, M) or (F, V, M, 2), padded with NaN / -1 / False."""

    frames: NDArray[np.int64]
    xy: FloatArray
    norm: FloatArray
    valid: NDArray[np.bool_]
    cid: NDArray[np.int64]
    intensity: FloatArray
    area: FloatArray
    hint_keypoint: NDArray[np.int64]
    hint_individual: NDArray[np.int64]
    score: FloatArray


class CandidateIndex:
    """A validated candidates table sorted by (frame, view), ready to cut into blocks."""

    def __init__(self, table: pd.DataFrame, views: Sequence[str], keypoints: Sequence[str],
                 individuals: Sequence[str], rig: CameraRig, source: str) -> None:
        self.views = list(views)
        self.rig = rig
        self.source = source
        v_code = pd.Categorical(table["view"].astype(str), categories=self.views).codes.astype(np.int64)
        order = np.lexsort((table["candidate"].to_numpy(), v_code, table["frame"].to_numpy()))
        self.frame = table["frame"].to_numpy(np.int64)[order]
        self.view = v_code[order]
        self.cid = table["candidate"].to_numpy(np.int64)[order]
        self.x = table["x"].to_numpy(np.float64)[order]
        self.y = table["y"].to_numpy(np.float64)[order]
        self.intensity = table["intensity"].to_numpy(np.float64)[order]
        self.area = table["area"].to_numpy(np.float64)[order]
        n = len(order)
        self.hint_keypoint = np.full(n, -1, np.int64)
        self.hint_individual = np.full(n, -1, np.int64)
        self.score = np.full(n, np.nan)
        self.unknown_hints = 0
        if "hint_keypoint" in table:
            self.hint_keypoint, bad = _names_to_index(table["hint_keypoint"].to_numpy()[order], keypoints)
            self.unknown_hints += bad
        if "hint_individual" in table:
            self.hint_individual, bad = _names_to_index(table["hint_individual"].to_numpy()[order], individuals)
            self.unknown_hints += 0 if len(individuals) == 1 else bad
            if len(individuals) == 1:
                self.hint_individual[:] = -1
        if "score" in table:
            self.score = pd.to_numeric(table["score"], errors="coerce").to_numpy(np.float64)[order]
        self.has_hints = bool((self.hint_keypoint >= 0).any())
        self.n_views = len(self.views)
        key = self.frame * self.n_views + self.view
        self._key = key
        self.per_view_counts = np.bincount(self.view, minlength=self.n_views)

    @property
    def n_candidates(self) -> int:
        return len(self.frame)

    def block(self, frames: Sequence[int]) -> CandidateBlock:
        """Arrays of the candidates of ``frames`` (in the given order)."""
        frames = np.asarray(frames, np.int64)
        F, V = len(frames), self.n_views
        keys = frames[:, None] * V + np.arange(V)[None, :]
        lo = np.searchsorted(self._key, keys, side="left")
        hi = np.searchsorted(self._key, keys, side="right")
        counts = hi - lo
        M = max(1, int(counts.max(initial=0)))
        idx = lo[..., None] + np.arange(M)[None, None, :]
        real = np.arange(M)[None, None, :] < counts[..., None]
        idx = np.where(real, idx, 0)
        if self.n_candidates == 0:
            real[:] = False
            idx = np.zeros_like(idx)
            take = lambda arr, fill: np.full(idx.shape, fill, dtype=np.asarray(fill).dtype)  # noqa: E731
        else:
            take = lambda arr, fill: np.where(real, arr[idx], fill)  # noqa: E731
        x = take(self.x, np.nan)
        y = take(self.y, np.nan)
        xy = np.stack([x, y], axis=-1)
        # undistort all of them at once: (V, F*M, 2)
        px = np.moveaxis(xy, 1, 0).reshape(V, -1, 2)
        norm = np.moveaxis(self.rig.undistort(px).reshape(V, F, M, 2), 0, 1)
        valid = real & np.isfinite(norm).all(-1)
        return CandidateBlock(
            frames=frames, xy=xy, norm=norm, valid=valid, cid=take(self.cid, -1).astype(np.int64),
            intensity=take(self.intensity, np.nan), area=take(self.area, np.nan),
            hint_keypoint=take(self.hint_keypoint, -1).astype(np.int64),
            hint_individual=take(self.hint_individual, -1).astype(np.int64), score=take(self.score, np.nan),
        )


def _names_to_index(values: np.ndarray, names: Sequence[str]) -> tuple[NDArray[np.int64], int]:
    lookup = {str(n): i for i, n in enumerate(names)}
    s = pd.Series(values, dtype=object)
    present = s.notna() & (s.astype(str) != "")
    idx = s.astype(str).map(lookup)
    bad = int((present & idx.isna()).sum())
    # a copy: pandas may hand out a read-only view, and the caller may blank the hints
    return np.array(idx.fillna(-1), dtype=np.int64), bad


def prepare_candidates(
    candidates: pd.DataFrame | str | os.PathLike[str],
    views: Sequence[str],
    keypoints: Sequence[str],
    individuals: Sequence[str],
    rig: CameraRig,
    n_frames: int,
) -> CandidateIndex:
    """Check a candidates table (or Parquet file) against the session and index it.

    Raises
    ------
    InputError
        Naming the table/file: what :func:`~ethoscribe.candidates.table.validate_candidates`
        rejects (missing columns, NaN or infinite coordinates, duplicate ids),
        views the session does not have, frames outside ``[0, n_frames)``, no
        candidates at all, or a view without any candidate.
    """
    if isinstance(candidates, (str, os.PathLike)):
        from ethoscribe.candidates.table import load_candidates

        source = str(candidates)
        table = load_candidates(Path(candidates))
    else:
        source = "candidates table"
        table = validate_candidates(candidates, source)
    if len(table) == 0:
        raise InputError(f"{source}: the candidates table is empty (no keypoint candidates in any frame or view)")
    present = sorted(set(table["view"].astype(str)))
    unknown = [v for v in present if v not in views]
    if unknown:
        raise InputError(f"{source}: candidates for view(s) {unknown} that the session does not have (views: {list(views)})")
    fr = table["frame"].to_numpy()
    bad = (fr < 0) | (fr >= n_frames)
    if bad.any():
        raise InputError(
            f"{source}: frame(s) {sorted(set(fr[bad].tolist()))[:5]} are outside the session's {n_frames} frames"
        )
    index = CandidateIndex(table, views, keypoints, individuals, rig, source)
    empty = [v for v, c in zip(views, index.per_view_counts) if c == 0]
    if empty:
        raise InputError(f"{source}: no candidates at all in view(s) {empty}; every view needs candidates")
    return index
