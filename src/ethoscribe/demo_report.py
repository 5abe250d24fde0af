"""The demo's accuracy page: every step scored against the synthetic ground truth."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from ethoscribe.report.figures import PALETTE, error_histogram, view_montage
from ethoscribe.report.html import Image, Section, Table


def _labels_array(labels: pd.DataFrame, views: list[str], keypoints: list[str], individuals: list[str], n_frames: int) -> np.ndarray:
    """The labels table as an array (C, T, K, I, 2), NaN where unlabelled."""
    out = np.full((len(views), n_frames, len(keypoints), len(individuals), 2), np.nan)
    v = pd.Categorical(labels["view"].astype(str), categories=views).codes
    k = pd.Categorical(labels["keypoint"].astype(str), categories=keypoints).codes
    i = pd.Categorical(labels["individual"].astype(str), categories=individuals).codes
    f = labels["frame"].to_numpy()
    ok = (v >= 0) & (k >= 0) & (i >= 0) & (f >= 0) & (f < n_frames)
    out[v[ok], f[ok], k[ok], i[ok]] = labels[["x", "y"]].to_numpy()[ok]
    return out


def _montage(session: Any, truth: Any, labels2d: np.ndarray, frame: int) -> Image:
    from ethoscribe.io.video import VideoReader

    views = session.config.view_names
    skeleton = session.skeleton
    regions = list(skeleton.regions)
    colors = [PALETTE[regions.index(skeleton.region_of(k))] for k in skeleton.keypoints] * len(truth.individuals)
    images, cands, labs, boxes = [], [], [], []
    for c, view in enumerate(views):
        with VideoReader(session.video_path(view, "markers")) as video:
            images.append(video[frame])
        truth_xy = truth.position2d[c, frame]  # (K, I, 2)
        cands.append(np.where(truth.visible[c, frame][..., None], truth_xy, np.nan).reshape(-1, 2))
        labs.append(labels2d[c, frame].transpose(1, 0, 2).reshape(-1, 2))
        pts = truth_xy.reshape(-1, 2)
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts):
            lo, hi = pts.min(axis=0) - 30, pts.max(axis=0) + 30
            half = max(hi - lo) / 2
            mid = (lo + hi) / 2
            boxes.append((mid[0] - 1.25 * half, mid[1] - half, mid[0] + 1.25 * half, mid[1] + half))
        else:
            boxes.append(None)
    fig = view_montage(images, views, cands, labs, colors, ncols=min(3, len(views)), zoom_to=boxes)
    return Image.from_figure(
        fig,
        f"Frame {frame}, marker channel, zoomed to the animal(s): white rings are the true positions of visible "
        "markers, dots the pipeline's labels coloured by body region (" + ", ".join(regions) + ").",
    )


def accuracy_section(session: Any, truth: Any, pose: Any, behavior: Any) -> Section:
    """Score the demo's pose labels and behaviours against the synthetic ground truth."""
    from ethoscribe.behavior.evaluate import evaluate_behavior
    from ethoscribe.geometry.triangulate import triangulate_ransac

    skeleton = session.skeleton
    views = session.config.view_names
    kps = list(skeleton.keypoints)
    inds = truth.individuals
    n_frames = truth.n_frames

    # pipeline 3D error
    est = np.transpose(pose.poses3d["position"].sel(keypoints=kps, individuals=inds).values, (0, 2, 3, 1))
    err = np.linalg.norm(est - truth.keypoints3d, axis=-1)  # (T, K, I)
    # reference: the truth-assigned spots triangulated through the same (perturbed) calibration
    cand_path = pose.paths["labels"].parent / "candidates_markers.parquet"
    from ethoscribe.demo import match_candidates_to_truth

    ref_err = np.full_like(err, np.nan)
    if cand_path.is_file():
        ref2d = match_candidates_to_truth(pd.read_parquet(cand_path), truth.marker_xy, views)
        ref3d = triangulate_ransac(session.rig, ref2d.reshape(len(views), -1, 2)).points3d.reshape(err.shape + (3,))
        ref_err = np.linalg.norm(ref3d - truth.keypoints3d, axis=-1)
    labels2d = _labels_array(pose.labels, views, kps, inds, n_frames)
    d2 = np.linalg.norm(labels2d - truth.position2d, axis=-1)  # (C, T, K, I)
    visible = truth.visible
    within5 = float(np.mean(d2[visible] <= 5.0)) if visible.any() else float("nan")
    labelled = np.isfinite(pose.labels["x"].to_numpy())
    flagged = pose.labels["flag"].to_numpy()[labelled]  # as the overview counts: among the labels given
    scores = evaluate_behavior(behavior.label_table(), truth.behaviour.rename(columns={"behaviour": "label"})[["frame", "individual", "label"]])

    e = err[np.isfinite(err)]
    r = ref_err[np.isfinite(ref_err)]
    figures = {
        "mean 3D error": f"{np.mean(e):.2f} mm",
        "reference 3D error": f"{np.mean(r):.2f} mm" if r.size else "-",
        "visible keypoints labelled within 5 px": f"{100 * within5:.1f} %",
        "labels flagged for review": f"{100 * flagged.mean():.1f} %",
        "behaviour NMI": f"{scores['nmi']:.2f}",
        "behaviour macro-F1": f"{scores['macro_f1']:.2f}",
        "behaviours found / true": f"{scores['n_discovered']} / {scores['n_true']}",
    }
    rows = []
    for k, name in enumerate(kps):
        ek, rk = err[:, k][np.isfinite(err[:, k])], ref_err[:, k][np.isfinite(ref_err[:, k])]
        dk = d2[:, :, k][visible[:, :, k]]
        rows.append([name, skeleton.region_of(name), f"{np.median(ek):.2f}" if ek.size else "-",
                     f"{np.percentile(ek, 95):.2f}" if ek.size else "-", f"{np.median(rk):.2f}" if rk.size else "-",
                     f"{100 * np.mean(dk <= 5):.1f} %" if dk.size else "-"])
    frame = int(np.argmax(visible.sum(axis=(0, 2, 3))))
    per_class = scores.get("f1_per_class", {})
    beh_rows = [[label, f"{f1:.2f}"] for label, f1 in sorted(per_class.items())]
    return Section(
        "Accuracy against ground truth", "accuracy",
        figures=figures,
        paragraphs=[
            Markup(
                "This session is synthetic, so every step can be scored. The <em>reference</em> 3D error triangulates, "
                "through the same deliberately imperfect calibration, the detected spot that the ground truth assigns "
                "to each keypoint: the floor any automatic labelling can approach. Behaviour scores compare the "
                "discovered, named behaviours with the scripted ones (F1 after matching each discovered label to the "
                "true behaviour it overlaps most)."
            ),
        ],
        tables=[
            Table(["keypoint", "region", "median 3D error (mm)", "95th pct (mm)", "reference median (mm)", "within 5 px"],
                  rows, "Pose labels per keypoint, all frames"),
            Table(["true behaviour", "F1"], beh_rows, "Behaviour F1 per true class"),
        ],
        images=[
            _montage(session, truth, labels2d, frame),
            Image.from_figure(error_histogram(e, "mm", "3D error of the pose labels"), "3D error over all frames and keypoints."),
        ],
    )
