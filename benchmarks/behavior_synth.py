"""Behaviour discovery on the synthetic rig, against its true behaviours, with baselines.

Runs (progress on stderr, one JSON object on the last stdout line):

- **pose, one animal** (``nmi_pose``, ``macro_f1_pose``): the rig's true 3D
  keypoints (mm) degraded as a tracker would leave them: Gaussian noise of
  1.5 mm on every coordinate and about 2 % of the keypoints missing, in gaps
  of 1-10 frames (uniform) at random places (NaN; the pipeline interpolates
  them).
- **baselines** on the same windowed features and the same smoothing,
  snippets, captions and merging: k-means, a Gaussian mixture (diagonal
  covariances) and UMAP + HDBSCAN (B-SOiD's recipe); the best of each score
  is reported (``best_baseline_nmi_pose``, ``best_baseline_macro_f1_pose``).
- **video only, one animal** (``nmi_video``, ``macro_f1_video``): the overhead
  camera's grey body video, default video features (motion-energy SVD +
  silhouette); ``video_throughput_vs_decode`` is frames/s of the whole
  video -> labels run over decode-only frames/s of the same video (both
  measured here, the sentence model already loaded: a one-off cost per
  process, reported separately as ``sentence_model_load_s``).
- **pose, two animals** with social behaviours (``nmi_social``, plus
  ``macro_f1_social``), degraded as above.
- ``cnn_fps``: frames/s of the EfficientNet-Lite0 path on the body video
  (500 frames); ``dec_fit_s_100k``: seconds to fit DEC (default settings) on
  100,000 windows of 64 features.

All scores compare the final merged labels with the truth
(:func:`ethoscribe.behavior.evaluate.evaluate_behavior`: many-to-one F1).

Usage: ``python benchmarks/behavior_synth.py [--quick] [--work DIR] [--keep]``.
``--quick`` uses 3000 frames and skips UMAP + HDBSCAN and the 100k DEC fit.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log  # noqa: E402

from ethoscribe.behavior.evaluate import evaluate_behavior  # noqa: E402
from ethoscribe.behavior.pipeline import run_behavior  # noqa: E402


def degrade(ds: xr.Dataset, seed: int, noise_mm: float = 1.5, missing: float = 0.02, gap: tuple[int, int] = (1, 10)) -> xr.Dataset:
    """Tracker-like pose: Gaussian noise and short NaN gaps (about ``missing`` of the keypoints)."""
    rng = np.random.default_rng(seed)
    pos = ds["position"].transpose("time", "space", "keypoints", "individuals").values.astype(float).copy()
    T, S, K, n_ind = pos.shape
    pos += rng.normal(0.0, noise_mm, pos.shape)
    mean_gap = (gap[0] + gap[1]) / 2
    for k in range(K):
        for a in range(n_ind):
            n_gaps = rng.poisson(missing * T / mean_gap)
            for s in rng.integers(0, T, n_gaps):
                pos[s : s + rng.integers(gap[0], gap[1] + 1), :, k, a] = np.nan
    out = ds.copy()
    out["position"] = (("time", "space", "keypoints", "individuals"), pos)
    return out


def truth_table(session: Path) -> pd.DataFrame:
    b = pd.read_parquet(session / "truth" / "behaviour.parquet")
    return b.rename(columns={"behaviour": "label"})[["frame", "individual", "label"]]


def make_session(out: Path, animals: int, frames: int, seed: int) -> Path:
    from ethoscribe.synth.rig import SynthConfig, synthesize

    if (out / "truth" / "behaviour.parquet").is_file() and (out / "videos").is_dir():
        log(f"reusing {out}")
        return out
    log(f"synthesising {animals} animal(s), {frames} frames -> {out}")
    t = time.perf_counter()
    synthesize(out, SynthConfig(cameras=6, animals=animals, frames=frames, fps=30, seed=seed, render="body", views_for_body=["top"]))
    log(f"  done in {time.perf_counter() - t:.0f} s")
    return out


def score(res, truth: pd.DataFrame) -> dict:
    r = evaluate_behavior(res.label_table(), truth)
    return {k: r[k] for k in ("nmi", "ari", "macro_f1", "boundary_f1", "n_discovered", "n_true", "f1_per_class")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3000 frames, no UMAP+HDBSCAN, no 100k DEC fit")
    ap.add_argument("--work", type=Path, default=None, help="folder for the synthetic sessions (reused when present)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    frames = 3000 if args.quick else 9000
    work = args.work or Path(tempfile.mkdtemp(prefix="ethoscribe-behbench-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"frames": frames, "quick": bool(args.quick)}
    t_all = time.perf_counter()
    try:
        s1 = make_session(work / f"solo_{frames}", 1, frames, seed=args.seed + 1)
        s2 = make_session(work / f"pair_{frames}", 2, frames, seed=args.seed + 2)
        truth1, truth2 = truth_table(s1), truth_table(s2)

        # sentence model load: once per process
        from ethoscribe.behavior.merge import sentence_model

        t = time.perf_counter()
        sentence_model()
        out["sentence_model_load_s"] = time.perf_counter() - t

        # --- pose, one animal: ours and baselines
        pose1 = degrade(xr.load_dataset(s1 / "truth" / "points3d.nc"), seed=args.seed + 11)
        runs = {}
        methods = ["dec", "kmeans", "gmm"] + ([] if args.quick else ["umap_hdbscan"])
        for m in methods:
            log(f"pose, one animal: {m}")
            t = time.perf_counter()
            res = run_behavior(pose1, out_dir=work / f"out_pose_{m}", clusterer=m, seed=args.seed)
            runs[m] = {**score(res, truth1), "seconds": time.perf_counter() - t, "labels": res.label_dictionary["label"].tolist()}
            log(f"  {m}: nmi {runs[m]['nmi']:.3f} macro-F1 {runs[m]['macro_f1']:.3f} ({runs[m]['seconds']:.0f} s) labels {runs[m]['labels']}")
        out["nmi_pose"] = runs["dec"]["nmi"]
        out["macro_f1_pose"] = runs["dec"]["macro_f1"]
        base = {m: r for m, r in runs.items() if m != "dec"}
        out["best_baseline_nmi_pose"] = max(r["nmi"] for r in base.values())
        out["best_baseline_macro_f1_pose"] = max(r["macro_f1"] for r in base.values())
        out["pose_runs"] = {m: {k: v for k, v in r.items() if k != "f1_per_class"} for m, r in runs.items()}
        out["f1_per_class_pose"] = runs["dec"]["f1_per_class"]

        # --- video only, one animal
        from ethoscribe.behavior.video_features import decode_fps

        video = next((s1 / "videos").glob("*_body.mp4"))
        n_video = frames
        log(f"video only: {video.name}")
        dec_fps = decode_fps(video)
        t = time.perf_counter()
        res = run_behavior(videos=[video], out_dir=work / "out_video", seed=args.seed)
        elapsed = time.perf_counter() - t
        sv = score(res, truth1)
        out["nmi_video"] = sv["nmi"]
        out["macro_f1_video"] = sv["macro_f1"]
        out["f1_per_class_video"] = sv["f1_per_class"]
        out["video_labels"] = res.label_dictionary["label"].tolist()
        out["decode_fps"] = dec_fps
        out["video_to_labels_fps"] = n_video / elapsed
        out["video_throughput_vs_decode"] = (n_video / elapsed) / dec_fps
        out["video_timings"] = res.meta["timings"]
        log(f"  nmi {sv['nmi']:.3f} macro-F1 {sv['macro_f1']:.3f}; {n_video / elapsed:.0f} fps vs decode {dec_fps:.0f} fps")

        # --- pose, two animals (social)
        log("pose, two animals (social)")
        pose2 = degrade(xr.load_dataset(s2 / "truth" / "points3d.nc"), seed=args.seed + 12)
        res = run_behavior(pose2, out_dir=work / "out_social", seed=args.seed)
        ss = score(res, truth2)
        out["nmi_social"] = ss["nmi"]
        out["macro_f1_social"] = ss["macro_f1"]
        out["f1_per_class_social"] = ss["f1_per_class"]
        out["social_labels"] = res.label_dictionary["label"].tolist()
        log(f"  nmi {ss['nmi']:.3f} macro-F1 {ss['macro_f1']:.3f} labels {out['social_labels']}")

        # --- CNN path speed
        from ethoscribe.behavior.video_features import cnn_features

        log("EfficientNet-Lite0 on 500 frames")
        vf = cnn_features([video], n_frames=min(500, frames))
        out["cnn_fps"] = vf.timing["cnn_fps"]
        log(f"  {out['cnn_fps']:.1f} frames/s")

        # --- DEC on 100k windows
        if not args.quick:
            from ethoscribe.behavior.dec import DEC

            rng = np.random.default_rng(0)
            X = np.concatenate([rng.normal(c, 1.0, (20000, 64)) for c in rng.normal(0, 2, (5, 64))]).astype(np.float32)
            log("DEC fit on 100k x 64")
            t = time.perf_counter()
            DEC(n_clusters=10, seed=0).fit(X)
            out["dec_fit_s_100k"] = time.perf_counter() - t
            log(f"  {out['dec_fit_s_100k']:.1f} s")
        out["total_s"] = time.perf_counter() - t_all
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"outputs kept in {work}")
    emit(out)


if __name__ == "__main__":
    main()
