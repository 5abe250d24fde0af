"""The demo: the main job on built-in synthetic data, ending in an HTML report.

``ethoscribe demo`` (or :func:`run_demo`) synthesises a small multi-camera
session, detects marker spots, labels every keypoint in every view from 3
seed frames (``run_pose``), discovers and names behaviours from the 3D poses
(``run_behavior``), exports to the field's formats, and writes one report that
also scores every step against the synthetic ground truth.
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

    Examples
    --------
    >>> cand = pd.DataFrame({"frame": [0], "view": ["a"], "x": [10.2], "y": [5.0]})
    >>> match_candidates_to_truth(cand, np.array([[[[[10.0, 5.0]]]]]), ["a"])[0, 0, 0, 0].tolist()
    [10.2, 5.0]
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
        xy = np.full((int(ok.sum()), 2), np.nan)
        xy[hit] = np.c_[cand["x"].to_numpy()[idx[hit]], cand["y"].to_numpy()[idx[hit]]]
        flat = np.full((truth.shape[0], 2), np.nan)
        flat[ok] = xy
        out[c] = flat.reshape(n_frames, n_kp, n_ind, 2)
    return out


def run_demo(
    out: str | os.PathLike[str] = "ethoscribe-demo",
    cameras: int = 4,
    frames: int = 450,
    animals: int = 1,
    seed: int = 0,
) -> Path:
    """Run the demo into ``out`` and return the path of its ``report.html``.

    Examples
    --------
    >>> report = run_demo("demo-out", cameras=3, frames=300)  # doctest: +SKIP
    >>> report.name  # doctest: +SKIP
    'report.html'
    """
    from ethoscribe.behavior.pipeline import run_behavior
    from ethoscribe.demo_report import accuracy_section
    from ethoscribe.io.exports import export_all
    from ethoscribe.io.exports.behavior import export_behavior
    from ethoscribe.pose import run_pose
    from ethoscribe.report.project import build_report
    from ethoscribe.synth.rig import synthesize

    out = Path(out)
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with progress_bar(1, "demo: synthesising a session") as advance:
        synth = synthesize(out / "session", cameras=cameras, animals=animals, frames=frames, seed=seed, noise="default")
        advance(1)
    step("synthesise", t0)
    session = synth.load_session()
    truth = synth.load_truth()
    output = session.root / "output"

    t0 = time.perf_counter()
    pose = run_pose(session, candidates="markers", out_dir=output / "pose")
    step("pose labelling (incl. spot detection)", t0)
    t0 = time.perf_counter()
    export_all(output / "pose", session)
    step("pose exports", t0)

    t0 = time.perf_counter()
    behavior = run_behavior(pose=output / "pose" / "poses3d.nc", out_dir=output / "behavior", seed=seed)
    export_behavior(output / "behavior", output / "behavior" / "exports", media_file=session.video_path(session.config.view_names[-1], "body"))
    step("behaviour discovery", t0)

    t0 = time.perf_counter()
    accuracy = accuracy_section(session, truth, pose, behavior)
    report = build_report(session.root, out / "report.html", title="ethoscribe demo", extra_sections=[accuracy])
    step("report", t0)
    return report
