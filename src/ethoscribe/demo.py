"""The demo: the main job on built-in synthetic data, ending in an HTML report.

``ethoscribe demo`` (or :func:`run_demo`) synthesises a small multi-camera
session, detects marker spots in every view, triangulates the spots that the
ground truth assigns to each keypoint as a reference (the best any labelling
can do with this calibration), and writes ``report.html``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ethoscribe.progress import progress_bar


def match_candidates_to_truth(
    candidates: pd.DataFrame, marker_xy: NDArray[np.float64], views: list[str], max_px: float = 1.5
) -> NDArray[np.float64]:
    """The candidate nearest each drawn marker (within ``max_px``), as labels (C, T, K, I, 2).

    Uses one KD-tree per view over (x, y, frame * big) so all frames are
    matched in a single vectorised query.
    """
    from scipy.spatial import cKDTree

    n_views, n_frames, n_kp, n_ind, _ = marker_xy.shape
    out = np.full(marker_xy.shape, np.nan)
    big = 1e5
    for c, view in enumerate(views):
        cand = candidates[candidates["view"].astype(str) == view]
        if cand.empty:
            continue
        tree = cKDTree(np.c_[cand["x"].to_numpy(), cand["y"].to_numpy(), cand["frame"].to_numpy() * big])
        truth = marker_xy[c].reshape(-1, 2)
        frames = np.repeat(np.arange(n_frames), n_kp * n_ind)
        ok = np.isfinite(truth).all(axis=1)
        dist, idx = tree.query(np.c_[truth[ok], frames[ok] * big], distance_upper_bound=max_px)
        hit = np.isfinite(dist)
        xy = np.full((ok.sum(), 2), np.nan)
        xy[hit] = np.c_[cand["x"].to_numpy()[idx[hit]], cand["y"].to_numpy()[idx[hit]]]
        flat = np.full((truth.shape[0], 2), np.nan)
        flat[ok] = xy
        out[c] = flat.reshape(n_frames, n_kp, n_ind, 2)
    return out


def run_demo(out: str | os.PathLike[str] = "ethoscribe-demo", cameras: int = 4, frames: int = 300, seed: int = 0) -> Path:
    """Run the demo into ``out`` and return the path of its ``report.html``.

    Examples
    --------
    >>> report = run_demo("demo-out", cameras=3, frames=60)  # doctest: +SKIP
    >>> report.name  # doctest: +SKIP
    'report.html'
    """
    from ethoscribe.candidates.spots import detect_session_spots
    from ethoscribe.candidates.table import save_candidates
    from ethoscribe.geometry.triangulate import triangulate_ransac
    from ethoscribe.synth.rig import SynthConfig, synthesize

    out = Path(out)
    timings: dict[str, float] = {}
    with progress_bar(2, "demo: synthesising session") as advance:
        t0 = time.perf_counter()
        synth = synthesize(out / "session", SynthConfig(cameras=cameras, animals=1, frames=frames, seed=seed, noise="default"))
        timings["synthesise"] = time.perf_counter() - t0
        advance(2)
    session = synth.load_session()
    truth = synth.load_truth()

    t0 = time.perf_counter()
    candidates = detect_session_spots(session)
    timings["detect spots"] = time.perf_counter() - t0
    save_candidates(candidates, session.root / "output" / "candidates.parquet")

    t0 = time.perf_counter()
    labels = match_candidates_to_truth(candidates, truth.marker_xy, session.config.view_names)
    ransac = triangulate_ransac(session.rig, labels.reshape(len(session.config.view_names), -1, 2))
    points3d = ransac.points3d.reshape(labels.shape[1:-1] + (3,))
    timings["triangulate"] = time.perf_counter() - t0

    from ethoscribe.demo_report import write_demo_report

    return write_demo_report(out / "report.html", session, truth, candidates, labels, points3d, timings)
