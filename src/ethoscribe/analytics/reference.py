"""Behaviour results from given labels, and reference outputs written from a synthetic session's truth.

- :func:`behavior_result_from_labels` turns any per-frame labels (a person's
  annotation, an imported BORIS or SimBA file, the synthetic truth) into a
  :class:`~ethoscribe.behavior.pipeline.BehaviorResult`, so they get the same
  analytics, plots, report and exports as discovered behaviours.
- :func:`write_reference_outputs` writes, into a synthetic session's
  ``output/``, a pose output folder and a behaviour result folder made from
  the ground truth (labels = true projections plus noise and a few
  deliberate errors, which are flagged; behaviours = the scripted ones).
  They are marked as such (``reasoner: "reference (synthetic truth)"``) and
  exist so that the report, the exports and their tests and benchmarks can
  run in seconds on realistic outputs, without the pose and behaviour
  pipelines.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ethoscribe.analytics.timeline import UNTRACKED, bouts, check_labels
from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path, write_json, write_text

REFERENCE_REASONER = "reference (synthetic truth)"


def behavior_result_from_labels(
    labels: pd.DataFrame,
    fps: float,
    definitions: dict[str, str] | None = None,
    captions: dict[str, str] | None = None,
    source: str = "given labels",
    confidence: float = 1.0,
    max_segment_s: float | None = None,
) -> Any:
    """A :class:`~ethoscribe.behavior.pipeline.BehaviorResult` from per-frame labels.

    Parameters
    ----------
    labels
        ``frame, individual, label`` (extra columns are ignored).
    fps
        Frame rate.
    definitions
        One-line definition per label (default: ethoscribe's behaviour
        vocabulary where the name is in it, else empty).
    captions
        A caption per label, used for every segment of it.
    source
        Where the labels come from (kept in ``meta``).
    confidence
        Confidence given to every frame and segment.
    max_segment_s
        Cut bouts into segments of at most this long (default: one segment per bout).
    """
    from ethoscribe.behavior.pipeline import BehaviorResult, time_budgets, transition_counts
    from ethoscribe.behavior.vocabulary import BEHAVIOUR_VOCABULARY

    df = check_labels(labels)
    defs = {**BEHAVIOUR_VOCABULARY, **(definitions or {})}
    caps = captions or {}
    names = sorted(set(df["label"]))
    cl = {n: i for i, n in enumerate(n for n in names if n != UNTRACKED)}
    lab = pd.DataFrame({
        "frame": df["frame"].to_numpy(np.int64), "time_s": df["frame"].to_numpy() / fps,
        "individual": df["individual"].to_numpy(object), "label": df["label"].to_numpy(object),
        "cluster": df["label"].map(lambda x: cl.get(x, -1)).to_numpy(np.int64),
        "confidence": np.where(df["label"].to_numpy() == UNTRACKED, 0.0, float(confidence)),
    })
    b = bouts(df, fps)
    rows = []
    for r in b.itertuples(index=False):
        n = r.end_frame - r.start_frame
        k = 1 if not max_segment_s else max(1, int(np.ceil(n / (max_segment_s * fps))))
        edges = np.linspace(r.start_frame, r.end_frame, k + 1).round().astype(int)
        for s, e in zip(edges[:-1], edges[1:]):
            rows.append({"individual": r.individual, "start_frame": int(s), "end_frame": int(e), "start_s": s / fps,
                         "end_s": e / fps, "label": r.label, "cluster": cl.get(r.label, -1),
                         "confidence": 0.0 if r.label == UNTRACKED else float(confidence),
                         "caption": caps.get(r.label, ""), "caption_json": ""})
    segs = pd.DataFrame(rows, columns=["individual", "start_frame", "end_frame", "start_s", "end_s", "label", "cluster",
                                       "confidence", "caption", "caption_json"])
    n_by = lab["label"].value_counts().to_dict()
    ld = pd.DataFrame([{"label": n, "definition": defs.get(n, ""), "clusters": str(cl[n]) if n in cl else "",
                        "caption": caps.get(n, ""), "similarity": float("nan"), "n_frames": int(n_by.get(n, 0))}
                       for n in names], columns=["label", "definition", "clusters", "caption", "similarity", "n_frames"])
    inds = list(dict.fromkeys(lab["individual"]))
    meta = {"fps": float(fps), "n_frames": int(lab["frame"].max() + 1) if len(lab) else 0, "individuals": inds,
            "source": source, "clusterer": None, "captioner": None, "merger": None, "n_labels": len(cl),
            "params": {}, "timings": {}}
    return BehaviorResult(labels=lab, segments=segs, label_dictionary=ld, time_budgets=time_budgets(lab),
                          transitions=transition_counts(lab), meta=meta,
                          trace=[{"step": "labels", "source": source, "n_labels": len(cl)}])


# ------------------------------------------------------------ reference outputs
def _reason_join(*parts: tuple[np.ndarray, str]) -> np.ndarray:
    n = parts[0][0].size
    out = np.full(n, "", dtype=object)
    for mask, code in parts:
        m = mask.reshape(-1)
        out[m] = np.where(out[m] == "", code, out[m] + ";" + code)
    return out


def reference_pose_outputs(truth: Any, out_dir: str | os.PathLike[str], noise_px: float = 0.4,
                           error_rate: float = 0.004, seed: int = 0) -> Path:
    """Write a pose output folder (as :func:`ethoscribe.pose.run_pose` does) from a synthetic session's truth.

    Visible keypoints get their true projection plus Gaussian noise
    (``noise_px`` per axis); hidden ones inside the image the reprojection of
    the true 3D point (stage ``reprojection``, flagged ``reprojected``);
    ``error_rate`` of the visible labels are moved 6-20 px off (flagged
    ``high_reprojection_error``). ``poses3d.nc`` holds the true 3D points.
    """
    from ethoscribe.pose.labels import save_labels

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pos = truth.position2d  # (V, T, K, I, 2)
    vis = truth.visible  # (V, T, K, I)
    V, T, K, I, _ = pos.shape
    views, inds = truth.views, truth.individuals
    kps = [str(k) for k in truth.points3d["keypoints"].values]
    size = truth.points2d["image_size"].values  # (V, 2)
    inside = (np.isfinite(pos).all(-1) & (pos[..., 0] >= 0) & (pos[..., 1] >= 0)
              & (pos[..., 0] < size[:, None, None, None, 0]) & (pos[..., 1] < size[:, None, None, None, 1]))
    noise = rng.normal(0, noise_px, pos.shape)
    bad = vis & (rng.random(vis.shape) < error_rate)
    ang = rng.uniform(0, 2 * np.pi, vis.shape)
    r = rng.uniform(6, 20, vis.shape)
    off = np.stack([r * np.cos(ang), r * np.sin(ang)], -1)
    reproj = ~vis & inside
    xy = np.where(vis[..., None], pos + noise + np.where(bad[..., None], off, 0.0), np.where(reproj[..., None], pos, np.nan))
    err = np.where(vis, np.linalg.norm(noise + np.where(bad[..., None], off, 0.0), axis=-1), np.nan).astype(np.float32)
    thr = max(1.5, 4 * noise_px)
    conf = np.where(vis, np.exp(-(np.nan_to_num(err) / thr) ** 2), np.where(reproj, 0.4, 0.0)).astype(np.float32)
    high = vis & (err > thr)
    missing = ~vis & ~reproj
    # (V, T, K, I) -> (T, V, I, K) row order of the labels table
    order = (1, 0, 3, 2)
    tr = lambda a: np.transpose(a, order).reshape(-1)  # noqa: E731
    reason = _reason_join((tr(high), "high_reprojection_error"), (tr(reproj), "reprojected"), (tr(missing), "missing"))
    flag = tr(high) | tr(reproj)
    n = T * V * I * K
    stage = np.where(tr(reproj), "reprojection", np.where(tr(missing), "refinement", "assignment")).astype(object)
    labels = pd.DataFrame({
        "frame": np.repeat(np.arange(T, dtype=np.int64), V * I * K),
        "view": np.tile(np.repeat(np.asarray(views, dtype=object), I * K), T),
        "individual": np.tile(np.repeat(np.asarray(inds, dtype=object), K), T * V),
        "keypoint": np.tile(np.asarray(kps, dtype=object), T * V * I),
        "x": np.transpose(xy[..., 0], order).reshape(-1), "y": np.transpose(xy[..., 1], order).reshape(-1),
        "confidence": tr(conf), "flag": flag, "reason": reason, "stage": stage,
        "reasoner": np.full(n, "reference", dtype=object), "candidate": np.where(tr(vis), 0, -1).astype(np.int64),
        "reproj_error": tr(err),
    })
    save_labels(labels, out / "labels.parquet")
    ds = truth.points3d.copy()
    ds["n_views"] = (("time", "keypoints", "individuals"), np.transpose(vis.sum(0), (0, 1, 2)).astype(np.int16))
    ds["reproj_error"] = (("time", "keypoints", "individuals"), np.full((T, K, I), noise_px, np.float32))
    ds.attrs["space_unit"] = "mm"
    ds.attrs["source_software"] = "ethoscribe.analytics.reference"
    ds.attrs["views"] = json.dumps(list(views))
    with atomic_path(out / "poses3d.nc") as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    # review list: frames by flagged labels
    fl = (high.astype(float) * 3 + reproj.astype(float) * 1).sum(axis=(0, 2, 3))  # (T,)
    order_t = np.lexsort((np.arange(T), -fl))
    order_t = order_t[fl[order_t] > 0][:200]
    rows = []
    for rank, f in enumerate(order_t, start=1):
        hv = np.argwhere(high[:, f])
        if len(hv):
            v, k, i = hv[0]
        else:
            v, k, i = np.argwhere(reproj[:, f])[0]
        rows.append((rank, int(f), f / truth.fps, float(fl[f]), int(high[:, f].sum() + reproj[:, f].sum()),
                     int(np.isfinite(xy[:, f, ..., 0]).sum()), float(conf[:, f][np.isfinite(xy[:, f, ..., 0])].mean()),
                     ";".join(x for x in (f"high_reprojection_error:{int(high[:, f].sum())}" if high[:, f].any() else "",
                                          f"reprojected:{int(reproj[:, f].sum())}" if reproj[:, f].any() else "") if x),
                     f"{views[v]}/{inds[i]}/{kps[k]}"))
    review = pd.DataFrame(rows, columns=["rank", "frame", "time_s", "score", "n_flagged", "n_labels", "mean_confidence",
                                         "reasons", "worst_label"])
    with atomic_path(out / "review.csv") as tmp:
        review.to_csv(tmp, index=False)
    cams = {}
    for v, name in enumerate(views):
        e = err[v][vis[v]]
        cams[name] = {"labels": int(np.isfinite(xy[v, ..., 0]).sum()), "candidate_labels": int(vis[v].sum()),
                      "median_reproj_error_px": float(np.median(e)) if e.size else None,
                      "p90_reproj_error_px": float(np.percentile(e, 90)) if e.size else None,
                      "checked_labels": int(vis[v].sum()), "disagreeing_fraction": float(high[v].sum() / max(vis[v].sum(), 1)),
                      "seed_median_error_px": None}
    labelled = np.isfinite(xy[..., 0])
    summary = {
        "frames": int(T), "views": list(views), "individuals": list(inds), "keypoints": kps, "reasoner": REFERENCE_REASONER,
        "candidates": {"source": "synthetic truth", "count": int(vis.sum())},
        "seeds": {"source": "synthetic truth", "frames": [], "pseudo": False},
        "labels": {"rows": int(n), "labelled": int(labelled.sum()), "flagged": int(flag.sum()),
                   "flagged_fraction": float(flag.sum() / n), "flagged_labelled": int(flag.sum()),
                   "flagged_labelled_fraction": float(flag.sum() / max(labelled.sum(), 1)),
                   "flagged_by_reason": {"high_reprojection_error": int(high.sum()), "reprojected": int(reproj.sum())},
                   "mean_confidence": float(conf[labelled].mean()) if labelled.any() else 0.0},
        "poses3d": {"points": int(np.isfinite(truth.keypoints3d[..., 0]).sum()), "of": int(T * K * I)},
        "thresholds": {"inlier_threshold_px": [thr], "config": {"noise_px": noise_px, "error_rate": error_rate, "seed": seed}},
        "cameras": cams, "suspect_cameras": [], "duplicate_calibrations": [],
        "review": {"frames_to_review": int(len(review))},
        "timings_s": {"total": time.perf_counter() - t0},
        "files": {k: str(out / f) for k, f in (("labels", "labels.parquet"), ("poses3d", "poses3d.nc"),
                                               ("review", "review.csv"), ("summary", "summary.json"))},
        "note": "reference outputs made from the synthetic ground truth, not by the pose pipeline",
    }
    write_text(out / "trace.jsonl", json.dumps({"stage": "reference", "note": summary["note"]}) + "\n")
    write_json(out / "summary.json", summary)
    return out


def write_reference_outputs(session_dir: str | os.PathLike[str], pose: bool = True, behavior: bool = True,
                            seed: int = 0) -> dict[str, Path]:
    """Write ``output/pose/`` and ``output/behavior/`` of a synthetic session from its ground truth.

    Returns the folders written. See the module docstring.
    """
    from ethoscribe.synth.truth import load_truth

    root = Path(session_dir)
    truth = load_truth(root)
    written: dict[str, Path] = {}
    if pose:
        written["pose"] = reference_pose_outputs(truth, root / "output" / "pose", seed=seed)
    if behavior:
        lab = truth.behaviour.rename(columns={"behaviour": "label"})
        res = behavior_result_from_labels(lab, truth.fps, source=REFERENCE_REASONER)
        res.meta["inputs"] = {"pose": str(root / "output" / "pose" / "poses3d.nc") if pose else None, "videos": []}
        written["behavior"] = res.save(root / "output" / "behavior")
    if not written:
        raise InputError("nothing to write: pose and behavior are both False")
    return written
