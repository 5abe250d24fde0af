"""Outputs of the pose pipeline: labels, 3D poses, review list, trace and summary.

Written into the output folder (default ``<session>/output/pose/``), each
atomically (temporary file, then rename):

- ``labels.parquet``: the labels table (:mod:`ethoscribe.pose.labels`);
- ``poses3d.nc``: a `movement` poses dataset, ``position`` (time, space
  [x, y, z], keypoints, individuals) in the calibration's units,
  ``confidence`` (time, keypoints, individuals), plus ``n_views`` (agreeing
  views) and ``reproj_error`` (mean px over those views);
- ``review.csv``: frames ranked by how much a person's look is worth (see
  :func:`review_table`);
- ``trace.jsonl``: one JSON line per stage call (stage, frame, views, input
  summary, answer, verification);
- ``summary.json``: counts, thresholds, per-camera errors, suspect and
  duplicate cameras with reasons, timings.

How confidence and flags are computed from geometry (``thr`` the inlier
threshold, ``n`` the number of views agreeing on the 3D point, ``n_v`` =
``verified_views`` capped at the number of usable cameras, support =
``clip((n - 1) / (n_v - 1), 0, 1)``):

- a candidate label: ``support * exp(-(e / thr)^2)`` with ``e`` its
  reprojection error; 0.1 when there is no 3D point (one view, or views that
  do not agree), halved in a suspect camera;
- a reprojected label: ``0.5 * support * exp(-(mean inlier error / thr)^2)``;
- a seed label: 1; no label: 0.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path, write_json, write_text
from ethoscribe.pose.labels import (
    REASON_BIT,
    REASONS,
    STAGES,
    load_labels,
    reason_strings,
    save_labels,
    validate_labels,
)
from ethoscribe.pose.stages import REPROJECTION, SEED

FILES = {
    "labels": "labels.parquet",
    "poses3d": "poses3d.nc",
    "review": "review.csv",
    "trace": "trace.jsonl",
    "summary": "summary.json",
}

#: weight of each reason in the review score (per flagged label)
SEVERITY = {
    "high_reprojection_error": 3.0,
    "large_jump": 3.0,
    "conflict": 2.0,
    "few_views": 1.0,
    "reprojected": 1.0,
    "missing": 1.0,
    "suspect_camera": 0.0,  # a property of the camera, reported in the summary, not of a frame
    "seed": 0.0,
}


_FIELDS = ("xy", "cid", "stage", "conflict", "err", "X", "n_in", "err3", "jump", "threshold", "chain_seed", "chain_len")


def _empty_arrays(T: int, V: int, I: int, K: int) -> dict[str, np.ndarray]:
    return {
        "xy": np.full((T, V, I, K, 2), np.nan), "cid": np.full((T, V, I, K), -1, np.int64),
        "stage": np.full((T, V, I, K), 2, np.int8), "conflict": np.zeros((T, V, I, K), bool),
        "err": np.full((T, V, I, K), np.nan, np.float32), "X": np.full((T, I, K, 3), np.nan),
        "n_in": np.zeros((T, I, K), np.int8), "err3": np.full((T, I, K), np.nan, np.float32),
        "jump": np.zeros((T, I, K), bool), "threshold": np.full(T, np.nan, np.float32),
        "chain_seed": np.zeros((T, I, K), bool), "chain_len": np.zeros((T, I, K), np.int64),
        "done": np.zeros(T, bool),
    }


def _stack_chunks(su: Any, chunks: list[Any]) -> dict[str, np.ndarray]:
    """The two passes' frame arrays, merged (:func:`merge_passes`)."""
    T, V, I, K = su.n_frames, len(su.views), len(su.individuals), len(su.keypoints)
    passes = {"forward": _empty_arrays(T, V, I, K), "backward": _empty_arrays(T, V, I, K)}
    for ch in chunks:
        a = passes[ch.stats.get("direction", "forward")]
        fr = ch.frames
        for k in _FIELDS:
            a[k][fr] = getattr(ch, k)
        a["done"][fr] = True
    return merge_passes(su, passes["forward"], passes["backward"])


def merge_passes(su: Any, f: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reconcile the forward and the backward pass keypoint by keypoint.

    Frames between the first and the last seed are tracked twice, from the
    seed before and from the seed after. Where both passes put a keypoint on
    the same 3D point (within twice the inlier threshold, in world units at
    the typical depth) the result is confirmed. Where they disagree, one of
    them follows a wrong marker. For each stretch of frames where they
    disagree, the pass whose track joins the agreed track before and after
    the stretch with the smaller jump is taken (a wrong identity begins, or
    ends, with a jump to another marker); without an agreed neighbour, the
    pass whose track runs unbroken from a seed frame, else the one with the
    longer unbroken track. Every label of the keypoint in such a stretch gets
    the reason ``conflict`` (the directions disagree). A candidate that two keypoints
    then claim in one view is left to the keypoint whose passes agreed.
    """
    T, V, I, K = f["cid"].shape
    both = f["done"] & b["done"]
    only_b = b["done"] & ~f["done"]
    hf = f["n_in"] >= 2
    hb = b["n_in"] >= 2
    d = np.linalg.norm(f["X"] - b["X"], axis=-1)
    tol = 2.0 * np.nanmedian(np.where(np.isfinite(f["threshold"]), f["threshold"], b["threshold"])) / max(su_ppu(su), 1e-9)
    with np.errstate(invalid="ignore"):
        agree = hf & hb & (d <= tol)
    disagree = both[:, None, None] & hf & hb & ~agree
    # which pass to take, per (t, a, k)
    score_f = np.where(hf, 1, 0) * 1_000_000 + f["chain_seed"] * 100_000 + np.minimum(f["chain_len"], 99_999)
    score_b = np.where(hb, 1, 0) * 1_000_000 + b["chain_seed"] * 100_000 + np.minimum(b["chain_len"], 99_999)
    take_b = only_b[:, None, None] | (both[:, None, None] & (score_b > score_f))
    # a stretch where the passes disagree: take the pass that joins the agreed track on both sides without a jump
    ref = np.where((agree | (f["done"][:, None, None] & ~b["done"][:, None, None]))[..., None], f["X"],
                   np.where((b["done"][:, None, None] & ~f["done"][:, None, None])[..., None], b["X"], np.nan))
    runs = 0
    for a_i in range(I):
        for k_i in range(K):
            dis = disagree[:, a_i, k_i]
            if not dis.any():
                continue
            edges = np.flatnonzero(np.diff(np.r_[0, dis.astype(np.int8), 0]))
            for t0, t1 in zip(edges[::2], edges[1::2] - 1):
                jf = jb = 0.0
                n_ref = 0
                for tb, tr in ((t0, t0 - 1), (t1, t1 + 1)):
                    if 0 <= tr < T and np.isfinite(ref[tr, a_i, k_i]).all():
                        jf += float(np.linalg.norm(f["X"][tb, a_i, k_i] - ref[tr, a_i, k_i]))
                        jb += float(np.linalg.norm(b["X"][tb, a_i, k_i] - ref[tr, a_i, k_i]))
                        n_ref += 1
                if n_ref and np.isfinite(jf) and np.isfinite(jb) and jf != jb:
                    take_b[t0:t1 + 1, a_i, k_i] = jb < jf
                    runs += 1
    out: dict[str, np.ndarray] = {}
    for k in _FIELDS:
        x, y = f[k], b[k]
        if k == "threshold":
            out[k] = np.where(only_b, y, x)
            continue
        m = take_b
        if x.ndim == 4 and k not in ("X",):  # (T, V, I, K) label arrays
            m = take_b[:, None]
        elif k == "xy":
            m = take_b[:, None, ..., None]
        elif k == "X":
            m = take_b[..., None]
        out[k] = np.where(m, y, x)
    out["disagree"] = disagree
    out["confirmed"] = agree & both[:, None, None]
    # a candidate claimed twice in a view after merging: the keypoint whose passes disagreed lets go
    cid = out["cid"].reshape(T, V, -1)
    dis = np.broadcast_to(disagree.reshape(T, 1, -1), cid.shape)
    t_i, v_i, p_i = np.nonzero(cid >= 0)
    key = (t_i * V + v_i) * (int(cid.max(initial=0)) + 1) + cid[t_i, v_i, p_i]
    order = np.lexsort((~dis[t_i, v_i, p_i], key))  # per key: agreeing keypoints first
    ks = key[order]
    dup = np.r_[False, ks[1:] == ks[:-1]]
    drop = order[dup]
    if drop.size:
        # the keypoint that loses a candidate this way sits on another keypoint's marker: it has no label and
        # no 3D point in that frame (its other views' labels are reprojections of that wrong point, or the same marker)
        tt, ii, kk = t_i[drop], p_i[drop] // K, p_i[drop] % K
        lost = np.zeros((T, I, K), bool)
        lost[tt, ii, kk] = True
        lv = np.broadcast_to(lost[:, None], out["cid"].shape)
        out["cid"] = np.where(lv, -1, out["cid"])
        out["xy"] = np.where(lv[..., None], np.nan, out["xy"])
        out["err"] = np.where(lv, np.nan, out["err"])
        out["conflict"] = out["conflict"] | lv
        out["stage"] = np.where(lv, np.int8(2), out["stage"]).astype(np.int8)
        out["X"] = np.where(lost[..., None], np.nan, out["X"])
        out["n_in"] = np.where(lost, 0, out["n_in"]).astype(np.int8)
        out["err3"] = np.where(lost, np.nan, out["err3"]).astype(np.float32)
    out["from_backward"] = take_b
    return out


def su_ppu(su: Any) -> float:
    """Typical pixels per world unit of the rig at the seed poses."""
    X = su.seed_xyz.reshape(-1, 3)
    X = X[np.isfinite(X).all(-1)]
    if not len(X):
        return 1.0
    _, depth = su.geo.project(X)
    return float(np.nanmedian(su.geo.pixels_per_unit(depth)))


def label_quality(su: Any, a: dict[str, np.ndarray], suspect: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reason bits (T, V, I, K), flags and confidences from the stacked frame arrays."""
    cfg = su.config
    T, V, I, K = a["cid"].shape
    n_usable = int((~suspect).sum())
    n_v = min(cfg.verified_views, max(2, n_usable))
    thr = a["threshold"].astype(float)[:, None, None, None]
    labelled = np.isfinite(a["xy"][..., 0])
    stage = a["stage"]
    seed = stage == SEED
    reproj = stage == REPROJECTION
    n_in = a["n_in"].astype(float)[:, None]  # T, 1, I, K
    has3d = n_in >= 2
    err = a["err"].astype(float)
    cand_label = labelled & ~seed & ~reproj
    sus = suspect[None, :, None, None]
    bits = np.zeros((T, V, I, K), np.int64)
    with np.errstate(invalid="ignore"):
        high = cand_label & (err > thr)
        confirmed = (err <= thr) & (n_in >= n_v)
    bits |= np.where(seed, REASON_BIT["seed"], 0)
    bits |= np.where(high, REASON_BIT["high_reprojection_error"], 0)
    bits |= np.where(labelled & ~seed & (n_in < n_v), REASON_BIT["few_views"], 0)
    bits |= np.where(a["conflict"] & cand_label & ~confirmed, REASON_BIT["conflict"], 0)
    if "disagree" in a:
        bits |= np.where(a["disagree"][:, None] & labelled & ~seed, REASON_BIT["conflict"], 0)
    bits |= np.where(reproj, REASON_BIT["reprojected"], 0)
    bits |= np.where(a["jump"][:, None] & labelled & ~seed, REASON_BIT["large_jump"], 0)
    bits |= np.where(~labelled, REASON_BIT["missing"], 0)
    bits |= np.where(sus & labelled, REASON_BIT["suspect_camera"], 0)
    informational = REASON_BIT["seed"] | REASON_BIT["missing"]
    flag = (bits & ~informational) != 0
    if "confirmed" in a:
        # a point that only two views see, but that tracking from both sides put on the same marker, is not
        # worth a look for that alone (the reason stays, for the record)
        only_few = (bits & ~informational) == REASON_BIT["few_views"]
        flag &= ~(only_few & a["confirmed"][:, None])
    # a missing label is worth a look when the keypoint is lost (no 3D point) outside the seed frames
    flag |= ~labelled & ~np.broadcast_to(has3d, labelled.shape) & ~seed & ~sus
    support = np.clip((n_in - 1.0) / max(n_v - 1.0, 1.0), 0.0, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        c_cand = np.where(has3d & np.isfinite(err), support * np.exp(-(err / thr) ** 2), 0.1)
        e3 = a["err3"].astype(float)[:, None]
        c_rep = 0.5 * support * np.exp(-(np.where(np.isfinite(e3), e3, 0.0) / thr) ** 2)
    conf = np.where(seed & labelled, 1.0, np.where(reproj, c_rep, np.where(cand_label, c_cand, 0.0)))
    conf = np.where(sus & ~seed, 0.5 * conf, conf)
    conf = np.clip(np.nan_to_num(conf, nan=0.0), 0.0, 1.0).astype(np.float32)
    return bits, np.broadcast_to(flag, bits.shape).copy(), conf


def labels_table(su: Any, a: dict[str, np.ndarray], bits: np.ndarray, flag: np.ndarray, conf: np.ndarray,
                 seed_reasoner: str) -> pd.DataFrame:
    """The dense labels table in (frame, view, individual, keypoint) order."""
    T, V, I, K = bits.shape
    n = T * V * I * K
    stage = a["stage"].reshape(-1)
    stage_names = np.asarray(STAGES, dtype=object)[np.clip(stage, 0, len(STAGES) - 1)]
    reasoner_names = np.where(stage == SEED, seed_reasoner,
                              np.where(stage >= 3, "geometric", str(getattr(su.reasoner, "name", "geometric")))).astype(object)
    return pd.DataFrame({
        "frame": np.repeat(np.arange(T, dtype=np.int64), V * I * K),
        "view": np.tile(np.repeat(np.asarray(su.views, dtype=object), I * K), T),
        "individual": np.tile(np.repeat(np.asarray(su.individuals, dtype=object), K), T * V),
        "keypoint": np.tile(np.asarray(su.keypoints, dtype=object), T * V * I),
        "x": a["xy"][..., 0].reshape(-1), "y": a["xy"][..., 1].reshape(-1),
        "confidence": conf.reshape(-1), "flag": flag.reshape(-1), "reason": reason_strings(bits.reshape(-1)),
        "stage": stage_names, "reasoner": reasoner_names, "candidate": a["cid"].reshape(-1).astype(np.int64),
        "reproj_error": a["err"].reshape(-1).astype(np.float32),
    }, index=pd.RangeIndex(n))


def poses3d_dataset(su: Any, a: dict[str, np.ndarray], suspect: np.ndarray) -> Any:
    """The 3D poses as a `movement` dataset with ``n_views`` and ``reproj_error``."""
    from movement.io import load_poses

    cfg = su.config
    X = a["X"]  # T, I, K, 3
    n_in = a["n_in"].astype(np.int64)
    thr = a["threshold"].astype(float)[:, None, None]
    n_v = min(cfg.verified_views, max(2, int((~suspect).sum())))
    support = np.clip((n_in - 1.0) / max(n_v - 1.0, 1.0), 0.0, 1.0)
    e3 = a["err3"].astype(float)
    with np.errstate(invalid="ignore", over="ignore"):
        conf = np.where(n_in >= 2, support * np.exp(-(np.nan_to_num(e3) / thr) ** 2), 0.0)
    pos = np.transpose(X, (0, 3, 2, 1))  # time, space, keypoints, individuals
    ds = load_poses.from_numpy(
        pos, confidence_array=np.transpose(conf, (0, 2, 1)).astype(np.float32), individual_names=list(su.individuals),
        keypoint_names=list(su.keypoints), fps=su.fps, source_software="ethoscribe.pose",
    )
    ds["n_views"] = (("time", "keypoints", "individuals"), np.transpose(n_in, (0, 2, 1)).astype(np.int16))
    ds["reproj_error"] = (("time", "keypoints", "individuals"), np.transpose(e3, (0, 2, 1)).astype(np.float32))
    ds["n_views"].attrs["description"] = "number of views agreeing on the 3D point (RANSAC inliers)"
    ds["reproj_error"].attrs["description"] = "mean reprojection error over the agreeing views (px)"
    ds.attrs["space_unit"] = "calibration units"
    ds.attrs["suspect_cameras"] = json.dumps([v for v, s in zip(su.views, suspect) if s])
    ds.attrs["views"] = json.dumps(list(su.views))
    return ds


def review_table(su: Any, bits: np.ndarray, flag: np.ndarray, conf: np.ndarray, a: dict[str, np.ndarray]) -> pd.DataFrame:
    """Frames ranked by how much a person's look is worth.

    ``score`` = sum over flagged labels of the severity of their reasons
    (:data:`SEVERITY`: 3 for a label that disagrees with the other views or a
    large jump, 2 for an unconfirmed conflict, 1 for few views, reprojected or
    lost) + the sum of ``1 - confidence`` over the frame's candidate labels
    (low confidence and disagreement that stayed below the flags). Frames
    with a score of 0 are left out.
    """
    T, V, I, K = bits.shape
    flat = bits.reshape(T, -1)
    fl = flag.reshape(T, -1)
    score = np.zeros(T)
    counts = {}
    for r in REASONS:
        has = ((flat & REASON_BIT[r]) != 0) & fl
        counts[r] = has.sum(axis=1)
        score += SEVERITY[r] * counts[r]
    stage = a["stage"].reshape(T, -1)
    labelled = np.isfinite(a["xy"][..., 0]).reshape(T, -1)
    cand_label = labelled & (stage != SEED) & (stage != REPROJECTION)
    c = conf.reshape(T, -1)
    score += np.where(cand_label, 1.0 - c, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore"):
        mean_conf = np.where(labelled.any(axis=1), np.where(labelled, c, 0).sum(axis=1) / np.maximum(labelled.sum(axis=1), 1), 0.0)
    order = np.lexsort((np.arange(T), -np.round(score, 6)))
    order = order[score[order] > 1e-9]
    rows = []
    names = [(v, i, k) for v in su.views for i in su.individuals for k in su.keypoints]
    sev = np.zeros(flat.shape)
    for r in REASONS:
        sev = np.maximum(sev, np.where(((flat & REASON_BIT[r]) != 0) & fl, SEVERITY[r], 0.0))
    for rank, t in enumerate(order, start=1):
        reasons = ";".join(f"{r}:{int(counts[r][t])}" for r in REASONS if counts[r][t] > 0)
        j = int(np.argmax(sev[t] + (1 - c[t]) * cand_label[t] * 0.01))
        v, i, k = names[j]
        rows.append((rank, int(t), float(t) / su.fps, round(float(score[t]), 3), int(fl[t].sum()),
                     int(labelled[t].sum()), round(float(mean_conf[t]), 4), reasons, f"{v}/{i}/{k}"))
    return pd.DataFrame(rows, columns=["rank", "frame", "time_s", "score", "n_flagged", "n_labels", "mean_confidence",
                                       "reasons", "worst_label"])


def _per_camera(su: Any, a: dict[str, np.ndarray], bits: np.ndarray) -> dict[str, Any]:
    stage = a["stage"]
    err = a["err"].astype(float)
    cand_label = np.isfinite(a["xy"][..., 0]) & (stage != SEED) & (stage != REPROJECTION)
    out = {}
    for v, name in enumerate(su.views):
        e = err[:, v][cand_label[:, v] & np.isfinite(err[:, v])]
        out[name] = {
            "labels": int(np.isfinite(a["xy"][:, v, ..., 0]).sum()),
            "candidate_labels": int(cand_label[:, v].sum()),
            "median_reproj_error_px": float(np.median(e)) if e.size else None,
            "p90_reproj_error_px": float(np.percentile(e, 90)) if e.size else None,
        }
    return out


def assemble_and_write(su: Any, chunks: list[Any], out: Path, run_info: dict[str, Any]) -> Any:
    """Stack the chunks, compute confidence, flags, review and summary; write every output."""
    from ethoscribe.pose.pipeline import PoseResult

    t0 = time.perf_counter()
    a = _stack_chunks(su, chunks)
    suspect = np.asarray(run_info["final_suspect"], bool)
    bits, flag, conf = label_quality(su, a, suspect)
    seed_reasoner = "pseudo-seed" if su.seeds.pseudo else "human"
    labels = labels_table(su, a, bits, flag, conf, seed_reasoner)
    poses = poses3d_dataset(su, a, suspect)
    review = review_table(su, bits, flag, conf, a)
    paths = {k: out / v for k, v in FILES.items()}
    labels = validate_labels(labels, "labels table")
    save_labels(labels, paths["labels"])
    with atomic_path(paths["poses3d"]) as tmp:
        poses.to_netcdf(tmp, engine="netcdf4")
    with atomic_path(paths["review"]) as tmp:
        review.to_csv(tmp, index=False)
    write_text(paths["trace"], "".join(line + "\n" for ch in chunks for line in ch.trace))

    # ---- summary
    T, V, I, K = bits.shape
    labelled = np.isfinite(a["xy"][..., 0])
    by_reason = {r: int((((bits & REASON_BIT[r]) != 0) & flag).sum()) for r in REASONS}
    by_reason_all = {r: int(((bits & REASON_BIT[r]) != 0).sum()) for r in REASONS}
    by_stage = {s: int(((a["stage"] == i) & labelled).sum()) for i, s in enumerate(STAGES)}
    cam_labels = np.sum([ch.stats.get("cam_labels", [0] * V) for ch in chunks], axis=0)
    cam_outliers = np.sum([ch.stats.get("cam_outliers", [0] * V) for ch in chunks], axis=0)
    per_cam = _per_camera(su, a, bits)
    chk = su.check
    for v, name in enumerate(su.views):
        per_cam[name]["checked_labels"] = int(cam_labels[v])
        per_cam[name]["disagreeing_fraction"] = float(cam_outliers[v] / cam_labels[v]) if cam_labels[v] else None
        per_cam[name]["seed_median_error_px"] = None if not np.isfinite(chk.median_error_px[v]) else float(chk.median_error_px[v])
    suspect_info = []
    newly = {}
    for ch in chunks:
        for name in ch.stats.get("newly_suspect", []):
            newly.setdefault(name, int(ch.frames[0]))
    for v, name in enumerate(su.views):
        if not suspect[v]:
            continue
        if name in chk.reasons:
            why = chk.reasons[name]
        else:
            frac = per_cam[name]["disagreeing_fraction"]
            why = (f"during the run its labels disagreed with the other views' 3D points in "
                   f"{100 * (frac or 0):.0f} % of {per_cam[name]['checked_labels']} checks; excluded from triangulation "
                   f"from the chunk starting at frame {newly.get(name)}")
        suspect_info.append({"camera": name, "reason": why, "excluded_from_triangulation": True,
                             "median_reproj_error_px": per_cam[name]["median_reproj_error_px"]})
    dups = []
    for x, y in su.duplicates:
        sx, sy = bool(suspect[su.views.index(x)]), bool(suspect[su.views.index(y)])
        note = ("identical calibration parameters: at most one can be right; "
                + ("both disagree with the other views" if sx and sy else
                   f"{y if sy else x} disagrees with the other views and is excluded, {x if sy else y} agrees" if sx or sy
                   else "both agree with the other views here (check the cameras' placement)"))
        dups.append({"cameras": [x, y], "note": note})
    timing = {}
    for ch in chunks:
        for k, v in ch.stats.get("timing", {}).items():
            timing[k] = timing.get(k, 0.0) + float(v)
    loop_s = float(run_info["loop_s"])
    n_comp = int(run_info["frames_computed"])
    # timepoints of the recording per second of frame loop (frames between seeds are tracked twice)
    n_frames_total = int(T) if run_info["chunks_resumed"] == 0 else n_comp
    summary = {
        "frames": int(T), "views": list(su.views), "individuals": list(su.individuals), "keypoints": list(su.keypoints),
        "reasoner": str(getattr(su.reasoner, "name", "")), "candidates": {
            "source": su.candidates_source, "count": int(su.cands.n_candidates),
            "per_view": {v: int(c) for v, c in zip(su.views, su.cands.per_view_counts)},
            "with_hints": bool(su.cands.has_hints), "unknown_hint_names": int(su.cands.unknown_hints)},
        "seeds": {"source": su.seeds.source, "frames": [int(f) for f in su.seeds.frames], "pseudo": bool(su.seeds.pseudo),
                  **({"notes": su.seeds.notes} if su.seeds.notes else {})},
        "labels": {
            "rows": int(bits.size), "labelled": int(labelled.sum()), "flagged": int(flag.sum()),
            "flagged_fraction": float(flag.sum() / max(bits.size, 1)),
            "flagged_labelled": int((flag & labelled).sum()),
            "flagged_labelled_fraction": float((flag & labelled).sum() / max(labelled.sum(), 1)),
            "flagged_by_reason": by_reason, "rows_by_reason": by_reason_all, "by_stage": by_stage,
            "mean_confidence": float(conf[labelled].mean()) if labelled.any() else 0.0,
        },
        "poses3d": {"points": int(np.isfinite(a["X"][..., 0]).sum()), "of": int(a["X"][..., 0].size),
                    "median_views": float(np.median(a["n_in"][a["n_in"] >= 2])) if (a["n_in"] >= 2).any() else 0.0},
        "thresholds": {"inlier_threshold_px": sorted({round(float(x), 4) for x in np.unique(a["threshold"][np.isfinite(a["threshold"])])}),
                       "label_noise_px": float(su.sigma_px), "label_noise_source": su.noise_source,
                       "seed_label_noise_px": float(su.sigma_px0),
                       "seed_check_threshold_px": float(chk.threshold_px), "template_size": float(su.template.size),
                       "config": su.config.model_dump()},
        "cameras": per_cam,
        "suspect_cameras": suspect_info,
        "duplicate_calibrations": dups,
        "seed_camera_check": {"start_pair": list(chk.start_pair) if chk.start_pair else None, "note": chk.note,
                              "sigma_px": None if not np.isfinite(chk.sigma_px) else float(chk.sigma_px)},
        "review": {"frames_to_review": int(len(review)), "top": review.head(10).to_dict(orient="records")},
        "resume": {"chunks": int(run_info["n_chunks"]), "resumed": int(run_info["chunks_resumed"]),
                   "computed": int(run_info["chunks_computed"])},
        "timings_s": {"setup": float(run_info["setup_s"]), "frame_loop": loop_s,
                      "stages": timing, "assemble": time.perf_counter() - t0,
                      "total": time.perf_counter() - float(run_info["t_start"]),
                      "frame_loop_cpu": float(run_info.get("loop_cpu_s", 0.0)),
                      "frames_tracked": n_comp,
                      "timepoints_per_s": (n_frames_total / loop_s) if loop_s > 0 and n_comp else None,
                      "timepoints_per_cpu_s": (n_frames_total / run_info["loop_cpu_s"])
                      if run_info.get("loop_cpu_s") and n_comp else None},
        "files": {k: str(p) for k, p in paths.items()},
    }
    write_json(paths["summary"], summary)
    return PoseResult(labels=labels, poses3d=poses, review=review, summary=summary, paths=paths)


def load_pose_result(out_dir: str | os.PathLike[str]) -> Any:
    """Read back what :func:`~ethoscribe.pose.run_pose` wrote into ``out_dir``.

    Raises
    ------
    InputError
        If a file is missing or unreadable (naming it).
    """
    import xarray as xr

    from ethoscribe.pose.pipeline import PoseResult

    out = Path(out_dir)
    paths = {k: out / v for k, v in FILES.items()}
    missing = [str(p) for k, p in paths.items() if not p.is_file()]
    if missing:
        raise InputError(f"{out}: not a complete pose output folder (missing {missing})")
    labels = load_labels(paths["labels"])
    try:
        poses = xr.load_dataset(paths["poses3d"])
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{paths['poses3d']}: cannot be read ({type(exc).__name__}: {exc})") from None
    review = pd.read_csv(paths["review"], keep_default_na=False, na_values=[""])
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    return PoseResult(labels=labels, poses3d=poses, review=review, summary=summary, paths=paths)
