"""The behaviour pipeline end to end: :func:`run_behavior` and its saved result.

Steps (each logged to ``trace.jsonl``):

1. **inputs**: pose (movement dataset or file) and/or videos; frame rates
   must agree; a video shorter than the pose is an error, a longer one is
   used up to the pose's length (noted in the trace).
2. **features**: pose features (:func:`~ethoscribe.behavior.features.compute_pose_features`)
   and/or video features (motion-energy SVD by default; per-animal crops when
   the pose is 2D pixels of the same video), windowed and robust-scaled
   (:func:`~ethoscribe.behavior.features.window_features`).
3. **cluster**: one model on the windows of all animals together (one label
   space, so animals are comparable), deliberately over-segmented
   (``n_clusters`` per animal, default 10 as in BehaviorVLM: 20 clusters
   for a pair, whose social roles add behaviours). ``clusterer`` is ``"dec"`` (default),
   or a baseline: ``"kmeans"``, ``"gmm"`` (diagonal covariances) or
   ``"umap_hdbscan"`` (B-SOiD's recipe: UMAP to 10 dimensions with 60
   neighbours and min_dist 0 fitted on at most 10,000 windows, HDBSCAN with a
   minimum cluster size of 0.5 % of them, other windows to their nearest
   clustered neighbour's cluster).
4. **smooth and cut**: the same for every clusterer, on hard labels
   (soft assignments only give the confidence): a mode filter of
   ``smooth_s``, bouts shorter than ``min_bout_s`` absorbed by a neighbour,
   boundaries moved (up to ``refine_s``) to where the per-frame (unwindowed)
   features change, then snippets of at most ``max_snippet_s``
   (:mod:`~ethoscribe.behavior.segments`).
5. **caption**: one structured caption per snippet (``captioner``, default
   :class:`~ethoscribe.behavior.captions.KinematicCaptioner`).
6. **merge and name**: ``merger`` (default
   :class:`~ethoscribe.behavior.merge.EmbeddingMerger`) maps clusters to named
   behaviours.
7. **outputs**: per-frame labels, segments, label dictionary, time budgets,
   transition counts; written atomically as Parquet and CSV (+ JSON) when
   ``out_dir`` is given, and reloadable with :func:`load_behavior_result`.

Frames whose pose is missing for longer than ``max_gap_s`` are labelled
``untracked`` (or an error with ``gap_policy="error"``).

Examples
--------
>>> from ethoscribe.behavior.toy import toy_poses
>>> ds, _ = toy_poses(n_frames=600, seed=0)
>>> res = run_behavior(ds, clusterer="kmeans", n_clusters=4)  # doctest: +SKIP
>>> res.time_budgets.groupby("individual")["fraction"].sum().round(6).tolist()  # doctest: +SKIP
[1.0]
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from ethoscribe.behavior.captions import Caption, Captioner, KinematicCaptioner, Snippet
from ethoscribe.behavior.features import PoseFeatures, WindowedFeatures, compute_pose_features, load_pose, pose_fps, window_features
from ethoscribe.behavior.merge import ClusterSummary, EmbeddingMerger, Merger, preload_sentence_model
from ethoscribe.behavior.segments import UNTRACKED, make_segments, refine_boundaries, runs, smooth_labels
from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path, write_json, write_text

UNTRACKED_LABEL = "untracked"
CLUSTERERS = ("dec", "kmeans", "gmm", "umap_hdbscan")
RESULT_FORMAT = "ethoscribe.behavior/1"


# ------------------------------------------------------------------ result
@dataclass
class BehaviorResult:
    """Everything :func:`run_behavior` found.

    Attributes
    ----------
    labels
        One row per frame and animal: frame, time_s, individual, label,
        cluster (``-1`` untracked), confidence.
    segments
        individual, start_frame, end_frame (exclusive), start_s, end_s, label,
        cluster, confidence, caption (text) and caption_json (the full
        structured caption).
    label_dictionary
        label, definition, clusters (comma-separated ids), caption,
        similarity, n_frames.
    time_budgets
        individual, label, n_frames, fraction (sums to 1 per animal).
    transitions
        individual, from_label, to_label, count (between consecutive bouts).
    meta
        Inputs, parameters, timings, counts.
    trace
        The step records written to ``trace.jsonl``.
    """

    labels: pd.DataFrame
    segments: pd.DataFrame
    label_dictionary: pd.DataFrame
    time_budgets: pd.DataFrame
    transitions: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None

    @property
    def individuals(self) -> list[str]:
        """Animal names."""
        return list(dict.fromkeys(self.labels["individual"]))

    def label_table(self) -> pd.DataFrame:
        """(frame, individual, label) for :func:`~ethoscribe.behavior.evaluate.evaluate_behavior`."""
        return self.labels[["frame", "individual", "label"]]

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write every table as Parquet and CSV, the dictionary and meta as JSON, the trace as JSONL (atomically)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("labels", "segments", "label_dictionary", "time_budgets", "transitions"):
            df: pd.DataFrame = getattr(self, name)
            with atomic_path(out / f"{name}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
            with atomic_path(out / f"{name}.csv") as tmp:
                df.to_csv(tmp, index=False)
        write_json(out / "label_dictionary.json", self.label_dictionary.to_dict(orient="records"))
        write_text(out / "trace.jsonl", "".join(json.dumps(r, default=_json_default, sort_keys=True) + "\n" for r in self.trace))
        write_json(out / "result.json", {"format": RESULT_FORMAT, **json.loads(json.dumps(self.meta, default=_json_default))})
        self.out_dir = out
        return out


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def load_behavior_result(out_dir: str | os.PathLike[str]) -> BehaviorResult:
    """Read a result written by :meth:`BehaviorResult.save`."""
    out = Path(out_dir)
    meta_file = out / "result.json"
    if not meta_file.is_file():
        raise InputError(f"{out}: no result.json (not a behaviour result folder)")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("format") != RESULT_FORMAT:
        raise InputError(f"{meta_file}: unknown format {meta.get('format')!r}")
    tables = {}
    for name in ("labels", "segments", "label_dictionary", "time_budgets", "transitions"):
        p = out / f"{name}.parquet"
        if not p.is_file():
            raise InputError(f"{out}: {p.name} is missing")
        tables[name] = pd.read_parquet(p)
    trace_file = out / "trace.jsonl"
    trace = [json.loads(line) for line in trace_file.read_text(encoding="utf-8").splitlines() if line.strip()] if trace_file.is_file() else []
    meta.pop("format", None)
    return BehaviorResult(**tables, meta=meta, trace=trace, out_dir=out)


# --------------------------------------------------------------- clustering
def cluster_windows(
    X: NDArray[np.float32],
    method: str = "dec",
    n_clusters: int = 10,
    seed: int = 0,
    dec_params: dict[str, Any] | None = None,
    sequences: NDArray[np.int64] | None = None,
    fps: float = 30.0,
) -> tuple[NDArray[np.int64], NDArray[np.float64] | None, Any]:
    """Cluster rows of ``X``: (labels, soft assignments (rows, clusters) or None, fitted model).

    ``sequences`` (animal of each row, rows in time order per animal) lets DEC
    average its soft assignments over 0.5 s before sharpening (temporal
    self-training, ``temporal_window``; set it to 1 in ``dec_params`` for
    plain DEC).
    """
    if X.shape[0] < n_clusters:
        raise InputError(f"only {X.shape[0]} usable frames for {n_clusters} clusters; give a longer recording or fewer clusters")
    if method == "dec":
        from ethoscribe.behavior.dec import DEC

        params = {"temporal_window": max(1, int(round(0.5 * fps))), **(dec_params or {})}
        model = DEC(n_clusters=n_clusters, seed=seed, **params).fit(X, sequences=sequences)
        q = model.predict_proba(X)
        return q.argmax(1).astype(np.int64), q, model
    if method == "kmeans":
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(X)
        return model.labels_.astype(np.int64), None, model
    if method == "gmm":
        from sklearn.mixture import GaussianMixture

        model = GaussianMixture(n_components=n_clusters, covariance_type="diag", random_state=seed, reg_covar=1e-4).fit(X)
        p = model.predict_proba(X)
        return p.argmax(1).astype(np.int64), p, model
    if method == "umap_hdbscan":
        import hdbscan
        import umap
        from sklearn.neighbors import KNeighborsClassifier

        rng = np.random.default_rng(seed)
        n = X.shape[0]
        fit_idx = np.sort(rng.choice(n, min(n, 10000), replace=False))
        reducer = umap.UMAP(n_components=10, n_neighbors=60, min_dist=0.0, random_state=seed, n_jobs=1)
        emb_fit = reducer.fit_transform(X[fit_idx])
        hd = hdbscan.HDBSCAN(min_cluster_size=max(10, int(0.005 * len(fit_idx))), min_samples=10).fit(emb_fit)
        lab_fit = hd.labels_
        ok = lab_fit >= 0
        if ok.sum() < 2 or len(set(lab_fit[ok])) < 2:
            lab_fit = np.zeros_like(lab_fit)
            ok = np.ones_like(ok)
        # B-SOiD trains a classifier on the clustered windows to label all of them
        clf = KNeighborsClassifier(n_neighbors=5).fit(X[fit_idx][ok], lab_fit[ok])
        lab = clf.predict(X)
        _, lab = np.unique(lab, return_inverse=True)
        return lab.astype(np.int64), None, (reducer, hd, clf)
    if hasattr(method, "fit_predict"):
        lab = np.asarray(method.fit_predict(X))  # type: ignore[attr-defined]
        _, lab = np.unique(lab, return_inverse=True)
        return lab.astype(np.int64), None, method
    raise ValueError(f"clusterer must be one of {CLUSTERERS} or an estimator with fit_predict, not {method!r}")


# ------------------------------------------------------------ the pipeline
def _resolve_captioner(c: str | Captioner) -> Captioner:
    if isinstance(c, str):
        if c == "kinematic":
            return KinematicCaptioner()
        raise ValueError(f"unknown captioner {c!r} (available: 'kinematic')")
    return c


def _resolve_merger(m: str | Merger) -> Merger:
    if isinstance(m, str):
        if m == "embedding":
            return EmbeddingMerger()
        raise ValueError(f"unknown merger {m!r} (available: 'embedding')")
    return m


class _Trace:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def add(self, step: str, **kw: Any) -> None:
        self.records.append({"step": step, "t_s": round(time.perf_counter() - self.t0, 3), **kw})


def _concat_features(parts: list[WindowedFeatures]) -> WindowedFeatures:
    if len(parts) == 1:
        return parts[0]
    return WindowedFeatures(
        values=np.concatenate([p.values for p in parts], axis=2),
        names=[n for p in parts for n in p.names],
        individuals=parts[0].individuals,
        fps=parts[0].fps,
        valid=np.logical_and.reduce([p.valid for p in parts]),
        center=np.concatenate([p.center for p in parts]),
        scale=np.concatenate([p.scale for p in parts]),
    )


def _measures(
    pose: PoseFeatures | None, video: Any, a: int, s: int, e: int, noise: dict[str, float]
) -> dict[str, float]:
    out: dict[str, float] = {}
    if pose is not None:
        ok = pose.valid[s:e, a]
        if ok.any():
            block = pose.values[s:e, a][ok]
            for j, name in enumerate(pose.names):
                out[name] = float(np.nanmean(block[:, j]))
        out.update(noise)
    elif video is not None:
        for name, arr in video.measures.items():
            out[name] = float(np.nanmean(arr[s:e, a]))
        out.update(noise)
    return out


def run_behavior(
    pose: xr.Dataset | str | os.PathLike[str] | None = None,
    videos: Sequence[str | os.PathLike[str]] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    n_clusters: int = 10,
    captioner: str | Captioner = "kinematic",
    merger: str | Merger = "embedding",
    clusterer: str | Any = "dec",
    seed: int = 0,
    fps: float | None = None,
    video_features: str = "motion_svd",
    head_tip: str | list[str] | None = None,
    neck: str | list[str] | None = None,
    rear: str | list[str] | None = None,
    max_gap_s: float = 0.5,
    gap_policy: str = "mask",
    windows_s: tuple[float, ...] = (0.25, 0.5, 1.0),
    smooth_s: float = 0.3,
    min_bout_s: float = 0.3,
    refine_s: float = 0.3,
    max_snippet_s: float = 5.0,
    dec_params: dict[str, Any] | None = None,
) -> BehaviorResult:
    """Discover, caption and name behaviours from pose and/or video.

    Parameters
    ----------
    pose
        movement poses dataset or pose file (netCDF, DeepLabCut, SLEAP, ...);
        2D pixels or 3D (mm), one or more animals.
    videos
        Video files (synchronised views of the same recording).
    out_dir
        Where to write the result (nothing is written when None).
    n_clusters
        Clusters per animal before merging (deliberate over-segmentation;
        the one model of all animals has ``n_clusters`` x animals).
    captioner, merger
        ``"kinematic"`` / ``"embedding"`` or objects implementing
        :class:`~ethoscribe.behavior.captions.Captioner` /
        :class:`~ethoscribe.behavior.merge.Merger`.
    clusterer
        ``"dec"`` or a baseline (``"kmeans"``, ``"gmm"``, ``"umap_hdbscan"``)
        or any estimator with ``fit_predict``.
    seed
        Seed of every random choice.
    fps
        Frame rate when neither the pose nor a video has one.
    video_features
        ``"motion_svd"`` (default), ``"cnn"`` or ``"both"``.
    head_tip, neck, rear
        Keypoint roles for the body axis (default: by name).
    max_gap_s, gap_policy
        Pose gaps interpolated up to ``max_gap_s``; longer ones are
        ``"mask"``-ed (labelled untracked) or an ``"error"``.
    windows_s
        Window lengths of the multi-scale features.
    smooth_s, min_bout_s, refine_s, max_snippet_s
        Mode-filter width, shortest bout, how far a boundary may move to
        where the per-frame features change
        (:func:`~ethoscribe.behavior.segments.refine_boundaries`; 0: off) and
        longest snippet (seconds).
    dec_params
        Extra :class:`~ethoscribe.behavior.dec.DEC` parameters.
    """
    trace = _Trace()
    timings: dict[str, float] = {}
    if pose is None and not videos:
        raise InputError("give a pose file, one or more videos, or both")
    videos = [str(v) for v in (videos or [])]
    cap = _resolve_captioner(captioner)
    mer = _resolve_merger(merger)
    if isinstance(mer, EmbeddingMerger):
        preload_sentence_model(mer.vocabulary)  # loads while the features are computed

    # 1. inputs and frame rates -----------------------------------------
    t = time.perf_counter()
    ds = load_pose(pose, fps=fps) if pose is not None else None
    video_fps = n_video = None
    if videos:
        from ethoscribe.behavior.video_features import check_videos

        video_fps, n_video, _ = check_videos(videos)
    if ds is not None:
        if video_fps is not None and ds.attrs.get("fps") is None and fps is None:
            fps_used = video_fps
        else:
            fps_used = pose_fps(ds, fps)
        if video_fps is not None and abs(video_fps - fps_used) > 1e-3 * fps_used:
            raise InputError(f"the pose is at {fps_used:g} fps but the video at {video_fps:g} fps (mismatched frame rates)")
        n_frames = int(ds.sizes["time"])
        if n_video is not None and n_video < n_frames:
            raise InputError(
                f"{videos[0]}: the video has {n_video} frames but the pose has {n_frames} "
                "(a video shorter than its pose: trim the pose or give the full video)"
            )
    else:
        fps_used = float(video_fps)  # type: ignore[arg-type]
        if fps is not None and abs(fps - fps_used) > 1e-3 * fps_used:
            raise InputError(f"the video is at {fps_used:g} fps but {fps:g} fps was given (mismatched frame rates)")
        n_frames = int(n_video)  # type: ignore[arg-type]
    if n_frames < 2:
        raise InputError(f"the input has {n_frames} frame(s); behaviour needs a time series (at least 2 frames, better several seconds)")
    trace.add("inputs", pose=None if pose is None else (str(pose) if not isinstance(pose, xr.Dataset) else "Dataset"),
              videos=videos, fps=fps_used, n_frames=n_frames,
              note=(f"the video has {n_video - n_frames} more frames than the pose; they are ignored"
                    if n_video is not None and ds is not None and n_video > n_frames else None))

    # 2. features ----------------------------------------------------------
    pf: PoseFeatures | None = None
    vf = None
    parts: list[WindowedFeatures] = []
    if ds is not None:
        pf = compute_pose_features(ds, fps=fps_used, head_tip=head_tip, neck=neck, rear=rear,
                                   max_gap_s=max_gap_s, gap_policy=gap_policy)
        parts.append(window_features(pf, windows_s=windows_s))
        trace.add("pose_features", individuals=pf.individuals, features=pf.names, unit=pf.unit, is_3d=pf.is_3d,
                  body_length=[round(float(b), 3) for b in pf.body_length],
                  body_parts={k: list(v) for k, v in vars(pf.parts).items()} if pf.parts else None,
                  interpolated_fraction=round(pf.interpolated_fraction, 5),
                  untracked_fraction=round(float(1 - pf.valid.mean()), 5))
    timings["pose_features_s"] = time.perf_counter() - t
    if videos:
        from ethoscribe.behavior.video_features import cnn_features, motion_svd_features

        t = time.perf_counter()
        tracks = heads = inds = None
        blen_px = None
        if pf is not None and not pf.is_3d:
            # 2D pose in the video's pixels: per-animal, body-aligned crops
            pos = ds["position"].transpose("time", "space", "keypoints", "individuals").values.astype(float)  # type: ignore[index]
            kps = list(map(str, ds["keypoints"].values))  # type: ignore[index]
            pos = np.where((pos == 0).all(axis=1, keepdims=True), np.nan, pos)[:n_frames]
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                tracks = np.nanmedian(pos[:, :, [kps.index(k) for k in pf.parts.core]], axis=2)  # type: ignore[union-attr]
                neck = np.nanmean(pos[:, :, [kps.index(k) for k in pf.parts.neck]], axis=2)  # type: ignore[union-attr]
                rr = np.nanmean(pos[:, :, [kps.index(k) for k in pf.parts.rear]], axis=2)  # type: ignore[union-attr]
            heads = np.arctan2(neck[:, 1] - rr[:, 1], neck[:, 0] - rr[:, 0])
            tracks = np.where(pf.valid[:, None, :], tracks, np.nan)
            inds = pf.individuals
            blen_px = float(np.median(pf.body_length))
        vparts = []
        if video_features in ("motion_svd", "both"):
            vparts.append(motion_svd_features(videos, tracks=tracks, headings=heads, body_length_px=blen_px,
                                              individuals=inds, n_frames=n_frames, seed=seed))
        if video_features in ("cnn", "both"):
            crop = None if blen_px is None else int(max(32, 1.6 * blen_px))
            vparts.append(cnn_features(videos, tracks=tracks, individuals=inds, n_frames=n_frames, crop_px=crop, seed=seed))
        if not vparts:
            raise ValueError(f"video_features must be 'motion_svd', 'cnn' or 'both', not {video_features!r}")
        vf = vparts[0]
        for other in vparts[1:]:
            vf.values = np.concatenate([vf.values, other.values], axis=2)
            vf.names = vf.names + other.names
        if pf is not None and tracks is None and len(pf.individuals) > 1:
            # one scene for all animals: share the scene features
            vf.values = np.repeat(vf.values, len(pf.individuals), axis=1)
            vf.valid = np.repeat(vf.valid, len(pf.individuals), axis=1)
            vf.individuals = pf.individuals
        if pf is not None:
            vf.individuals = pf.individuals
            vf.valid = vf.valid & pf.valid
        parts.append(window_features(vf, windows_s=windows_s))
        timings["video_features_s"] = time.perf_counter() - t
        trace.add("video_features", kind=video_features, features=len(vf.names), per_animal_crops=tracks is not None,
                  timing={k: round(v, 3) for k, v in vf.timing.items()})
    wf = _concat_features(parts)
    individuals = wf.individuals
    T, n_ind = wf.valid.shape

    # 3. cluster -----------------------------------------------------------
    t = time.perf_counter()
    X, f_idx, a_idx = wf.stacked()
    order = np.lexsort((f_idx, a_idx))  # rows by animal, then time
    X, f_idx, a_idx = X[order], f_idx[order], a_idx[order]
    k_total = n_clusters * n_ind
    lab, proba, model = cluster_windows(X, clusterer, n_clusters=k_total, seed=seed, dec_params=dec_params,
                                       sequences=a_idx, fps=fps_used)
    K = int(lab.max()) + 1 if proba is None else proba.shape[1]
    if proba is None:
        proba = np.eye(K)[lab]
    conf = proba[np.arange(len(lab)), lab]
    timings["cluster_s"] = time.perf_counter() - t
    trace.add("cluster", clusterer=clusterer if isinstance(clusterer, str) else type(clusterer).__name__,
              n_clusters=k_total, n_windows=int(X.shape[0]), n_features=int(X.shape[1]),
              found=int(len(set(lab.tolist()))), seconds=round(timings["cluster_s"], 3),
              history={k: v for k, v in getattr(model, "history_", {}).items() if k.endswith("_s") or k == "finetune_batches"})

    # 4. smooth and cut ------------------------------------------------------
    t = time.perf_counter()
    hard = np.zeros((T, n_ind, K))
    hard[f_idx, a_idx, lab] = 1.0
    conf_full = np.zeros((T, n_ind))
    conf_full[f_idx, a_idx] = conf
    smoothed = np.full((T, n_ind), UNTRACKED, np.int64)
    seg_frames = []
    frame_cols = [i for i, n in enumerate(wf.names) if "@" not in n]
    for a, ind in enumerate(individuals):
        smoothed[:, a] = smooth_labels(hard[:, a], fps_used, valid=wf.valid[:, a], smooth_s=smooth_s, min_bout_s=min_bout_s)
        if refine_s > 0:
            smoothed[:, a] = refine_boundaries(smoothed[:, a], wf.values[:, a][:, frame_cols], int(round(refine_s * fps_used)))
        # confidence of the smoothed cluster: the clusterer's own for agreeing frames, 0 elsewhere
        c = np.where(lab_at(hard[:, a]) == smoothed[:, a], conf_full[:, a], 0.0)
        seg_frames.append(make_segments(smoothed[:, a], fps_used, ind, max_snippet_s=max_snippet_s,
                                        proba=_onehot_conf(smoothed[:, a], c, K)))
    segs = pd.concat(seg_frames, ignore_index=True)
    timings["smooth_s"] = time.perf_counter() - t
    trace.add("smooth", smooth_s=smooth_s, min_bout_s=min_bout_s, refine_s=refine_s, max_snippet_s=max_snippet_s, n_segments=int(len(segs)),
              changed_fraction=round(float((smoothed[f_idx, a_idx] != lab).mean()), 4))

    # 5. captions -----------------------------------------------------------
    t = time.perf_counter()
    noise: list[dict[str, float]] = []
    for a in range(n_ind):
        nz: dict[str, float] = {}
        for name in ("speed", "pose_change", "paw_motion"):
            if pf is not None and name in pf.names:
                col = pf.column(name)[:, a][pf.valid[:, a]]
            elif pf is None and vf is not None and name in vf.measures:
                col = vf.measures[name][:, a][vf.valid[:, a]]
            else:
                continue
            nz[f"noise_{name}"] = float(np.nanpercentile(col, 5))
        noise.append(nz)
    tracked = segs[segs["cluster"] != UNTRACKED].reset_index()
    snippets = []
    for row in tracked.itertuples(index=False):
        a = individuals.index(row.individual)
        partner = None
        snippets.append(Snippet(
            individual=row.individual, start_frame=int(row.start_frame), end_frame=int(row.end_frame), fps=fps_used,
            measures=_measures(pf, vf, a, int(row.start_frame), int(row.end_frame), noise[a]),
            partner=partner, videos=tuple(videos), cluster=int(row.cluster),
        ))
    captions: list[Caption] = cap.caption(snippets) if snippets else []
    if len(captions) != len(snippets):
        raise RuntimeError(f"captioner {cap.name!r} returned {len(captions)} captions for {len(snippets)} snippets")
    for sn, c in zip(snippets, captions):
        trace.add("caption", captioner=cap.name, source=c.source, individual=sn.individual, start_frame=sn.start_frame,
                  end_frame=sn.end_frame, cluster=sn.cluster, input={k: round(v, 4) for k, v in sn.measures.items()},
                  prompt=None, answer=c.model_dump(), verified=True)
    timings["caption_s"] = time.perf_counter() - t

    # 6. merge and name -------------------------------------------------------
    t = time.perf_counter()
    summaries = []
    cl_all = smoothed[f_idx, a_idx]
    for k in sorted(set(tracked["cluster"].tolist())):
        idx = [i for i, sn in enumerate(snippets) if sn.cluster == k]
        rows = cl_all == k
        centroid = X[rows].mean(0) if rows.any() else np.zeros(X.shape[1])
        summaries.append(ClusterSummary(cluster=int(k), captions=[captions[i] for i in idx],
                                        durations=[snippets[i].duration_s for i in idx],
                                        centroid=centroid.astype(float), n_frames=int(rows.sum())))
    merged = mer.merge(summaries)
    for rec in merged.trace:
        trace.add("merge", merger=mer.name, **rec)
    timings["merge_s"] = time.perf_counter() - t

    # 7. outputs ---------------------------------------------------------------
    mapping = dict(merged.cluster_to_label)
    mapping[UNTRACKED] = UNTRACKED_LABEL
    frames = np.repeat(np.arange(T), n_ind)
    inds_col = np.tile(np.array(individuals, dtype=object), T)
    cl_flat = smoothed.reshape(-1)
    conf_flat = np.where(lab_at_full(smoothed, f_idx, a_idx, lab, T, n_ind), conf_full, 0.0).reshape(-1)
    labels_df = pd.DataFrame({
        "frame": frames.astype(np.int64), "time_s": frames / fps_used, "individual": inds_col.astype(str),
        "label": [mapping[int(c)] for c in cl_flat], "cluster": cl_flat.astype(np.int64), "confidence": conf_flat,
    }).sort_values(["individual", "frame"], kind="stable").reset_index(drop=True)
    cap_by_key = {(sn.individual, sn.start_frame): c for sn, c in zip(snippets, captions)}
    segs["label"] = [mapping[int(c)] for c in segs["cluster"]]
    segs["caption"] = [cap_by_key[(i, s)].text if (i, s) in cap_by_key else "pose missing (untracked)"
                       for i, s in zip(segs["individual"], segs["start_frame"])]
    segs["caption_json"] = [cap_by_key[(i, s)].model_dump_json() if (i, s) in cap_by_key else ""
                            for i, s in zip(segs["individual"], segs["start_frame"])]
    segs = segs[["individual", "start_frame", "end_frame", "start_s", "end_s", "label", "cluster", "confidence", "caption", "caption_json"]]
    n_by_label = labels_df["label"].value_counts().to_dict()
    dict_rows = [{"label": e.label, "definition": e.definition, "clusters": ",".join(map(str, e.clusters)),
                  "caption": e.caption, "similarity": float(e.similarity), "n_frames": int(n_by_label.get(e.label, 0))}
                 for e in merged.labels]
    if (smoothed == UNTRACKED).any():
        dict_rows.append({"label": UNTRACKED_LABEL, "definition": "The pose is missing for longer than the interpolated gap.",
                          "clusters": "", "caption": "", "similarity": float("nan"),
                          "n_frames": int(n_by_label.get(UNTRACKED_LABEL, 0))})
    label_dict = pd.DataFrame(dict_rows, columns=["label", "definition", "clusters", "caption", "similarity", "n_frames"])
    budgets = time_budgets(labels_df)
    trans = transition_counts(labels_df)
    meta = {
        "fps": fps_used, "n_frames": T, "individuals": individuals, "n_clusters": n_clusters,
        "clusterer": clusterer if isinstance(clusterer, str) else type(clusterer).__name__,
        "captioner": cap.name, "caption_sources": dict(Counter(c.source for c in captions)),
        "merger": mer.name, "merger_source": (getattr(mer, "last", None) or {}).get("source", mer.name), "seed": seed, "video_features": video_features if videos else None,
        "inputs": {"pose": None if pose is None or isinstance(pose, xr.Dataset) else str(pose), "videos": videos},
        "params": {"max_gap_s": max_gap_s, "gap_policy": gap_policy, "windows_s": list(windows_s), "smooth_s": smooth_s,
                   "min_bout_s": min_bout_s, "refine_s": refine_s, "max_snippet_s": max_snippet_s},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "n_labels": int(len(merged.labels)),
    }
    trace.add("outputs", n_labels=len(merged.labels), labels=[e.label for e in merged.labels], n_segments=int(len(segs)))
    res = BehaviorResult(labels=labels_df, segments=segs.reset_index(drop=True), label_dictionary=label_dict,
                         time_budgets=budgets, transitions=trans, meta=meta, trace=trace.records)
    if out_dir is not None:
        res.save(out_dir)
    return res


def lab_at(onehot: NDArray[np.float64]) -> NDArray[np.int64]:
    """Cluster of each frame from a one-hot (T, K) array (-1 where empty)."""
    out = onehot.argmax(1).astype(np.int64)
    out[onehot.sum(1) == 0] = UNTRACKED
    return out


def lab_at_full(smoothed: NDArray[np.int64], f_idx: NDArray[np.int64], a_idx: NDArray[np.int64], lab: NDArray[np.int64], T: int, n_ind: int) -> NDArray[np.bool_]:
    """Where the smoothed label equals the clusterer's raw label."""
    raw = np.full((T, n_ind), UNTRACKED, np.int64)
    raw[f_idx, a_idx] = lab
    return (raw == smoothed) & (smoothed != UNTRACKED)


def _onehot_conf(labels: NDArray[np.int64], conf: NDArray[np.float64], K: int) -> NDArray[np.float64]:
    out = np.zeros((labels.size, K))
    ok = labels >= 0
    out[np.flatnonzero(ok), labels[ok]] = conf[ok]
    return out


def time_budgets(labels: pd.DataFrame) -> pd.DataFrame:
    """Fraction of each animal's frames per label (sums to 1 per animal)."""
    g = labels.groupby(["individual", "label"], sort=True).size().rename("n_frames").reset_index()
    g["fraction"] = g["n_frames"] / g.groupby("individual")["n_frames"].transform("sum")
    return g.sort_values(["individual", "fraction"], ascending=[True, False]).reset_index(drop=True)


def transition_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Counts of label changes between consecutive bouts, per animal."""
    rows = []
    for ind, g in labels.sort_values(["individual", "frame"]).groupby("individual", sort=True):
        seq = g["label"].to_numpy()
        bouts = [seq[s] for s, _, _ in runs(pd.factorize(seq)[0])]
        for x, y in zip(bouts[:-1], bouts[1:]):
            rows.append((ind, x, y))
    df = pd.DataFrame(rows, columns=["individual", "from_label", "to_label"])
    return df.groupby(["individual", "from_label", "to_label"]).size().rename("count").reset_index()
