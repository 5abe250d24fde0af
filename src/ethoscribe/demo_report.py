"""The demo's HTML report: what was synthesised, detected and triangulated, and how well."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup
from numpy.typing import NDArray

from ethoscribe.report.figures import PALETTE, error_histogram, view_montage
from ethoscribe.report.html import Image, Section, Table, render_report


def _candidate_montage(session: Any, truth: Any, candidates: pd.DataFrame, frame: int) -> Image:
    from ethoscribe.io.video import VideoReader

    views = session.config.view_names
    images, cands, labs, boxes = [], [], [], []
    region_of = [session.skeleton.region_of(k) for k in session.skeleton.keypoints]
    regions = list(session.skeleton.regions)
    colors = [PALETTE[regions.index(r)] for r in region_of] * len(truth.individuals)
    for c, view in enumerate(views):
        with VideoReader(session.video_path(view, "markers")) as video:
            images.append(video[frame])
        sel = candidates[(candidates["view"].astype(str) == view) & (candidates["frame"] == frame)]
        cands.append(sel[["x", "y"]].to_numpy())
        truth_xy = truth.position2d[c, frame]  # (K, I, 2)
        lab = np.where(truth.visible[c, frame][..., None], truth_xy, np.nan).transpose(1, 0, 2).reshape(-1, 2)
        labs.append(lab)
        pts = truth_xy.reshape(-1, 2)
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts):
            lo, hi = pts.min(axis=0) - 40, pts.max(axis=0) + 40
            side = max(hi - lo) / 2
            mid = (lo + hi) / 2
            boxes.append((mid[0] - side * 1.25, mid[1] - side, mid[0] + side * 1.25, mid[1] + side))
        else:
            boxes.append(None)
    fig = view_montage(images, views, cands, labs, colors, ncols=min(3, len(views)), zoom_to=boxes)
    return Image.from_figure(
        fig,
        f"Frame {frame}, marker channel, zoomed to the animal: white rings are detected spots (candidates), "
        "dots the true keypoint projections coloured by body region (" + ", ".join(regions) + ").",
    )


def write_demo_report(
    path: str | os.PathLike[str],
    session: Any,
    truth: Any,
    candidates: pd.DataFrame,
    labels: NDArray[np.float64],
    points3d: NDArray[np.float64],
    timings: dict[str, float],
) -> Path:
    """Write the demo report (see :func:`ethoscribe.demo.run_demo`)."""
    from ethoscribe import __version__

    skeleton = session.skeleton
    true3d = truth.keypoints3d  # (T, K, I, 3)
    err3d = np.linalg.norm(points3d - true3d, axis=-1)  # (T, K, I)
    rendered = truth.rendered  # (C, T, K, I)
    matched = np.isfinite(labels).all(axis=-1)
    n_views = len(session.config.view_names)
    recall = float(matched[rendered].mean()) if rendered.any() else float("nan")
    per_frame_view = candidates.groupby(["frame", "view"], observed=True).size()
    e = err3d[np.isfinite(err3d)]

    overview = Section(
        "Overview", "overview",
        figures={
            "views": str(n_views),
            "frames": f"{session.config.n_frames} @ {session.config.fps:g} fps",
            "candidates per view and frame": f"{per_frame_view.mean():.1f}",
            "visible markers detected": f"{100 * recall:.1f} %",
            "median 3D error (reference)": f"{np.median(e):.2f} mm",
            "mean 3D error (reference)": f"{np.mean(e):.2f} mm",
            "keypoints triangulated": f"{100 * np.isfinite(err3d).mean():.1f} %",
        },
        paragraphs=[
            f"A synthetic session ({n_views} calibrated cameras around a 400 mm arena, one mouse with "
            f"{skeleton.n_keypoints} markers in {len(skeleton.regions)} body regions, default noise: 0.3 px "
            "marker jitter, 5 % missed markers, about 2 spurious reflections per view and frame, and a "
            "calibration perturbed to about 0.5 px) was rendered to marker and body videos. Marker spots were "
            "detected in every view and frame.",
            Markup("The 3D error here is a <em>reference</em>: each keypoint's detected spot was picked using the ground "
            "truth, then triangulated with RANSAC through the (deliberately imperfect) calibration. It is the "
            "floor that automatic labelling can approach, not the labelling itself."),
        ],
    )
    frame = int(np.argmax(truth.visible.sum(axis=(0, 2, 3))))
    montage = Section("Views and candidates", "views", images=[_candidate_montage(session, truth, candidates, frame)])

    rows = []
    for k, name in enumerate(skeleton.keypoints):
        ek = err3d[:, k, :]
        ek = ek[np.isfinite(ek)]
        det = matched[:, :, k][rendered[:, :, k]]
        rows.append([name, skeleton.region_of(name), f"{100 * det.mean():.1f} %" if det.size else "-",
                     f"{np.median(ek):.2f}" if ek.size else "-", f"{np.percentile(ek, 95):.2f}" if ek.size else "-"])
    accuracy = Section(
        "3D accuracy", "accuracy",
        tables=[Table(["keypoint", "region", "detected (of drawn)", "median 3D error (mm)", "95th pct (mm)"], rows,
                      "Per keypoint, over all frames")],
        images=[Image.from_figure(error_histogram(e, "mm", "3D error of the reference triangulation"),
                                  "Distribution of 3D errors over all frames and keypoints.")],
    )
    provenance: dict[str, Any] = {
        "ethoscribe": __version__,
        "session": str(session.root),
        "timings (s)": ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
    }
    return render_report(path, "ethoscribe demo", [overview, montage, accuracy],
                         subtitle="Synthetic multi-camera session: spots, reference triangulation, accuracy",
                         provenance=provenance)
