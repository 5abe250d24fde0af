"""Marker spot detection benchmark: accuracy against the synthetic rig's truth, and speed against decoding.

Run ``python benchmarks/spots.py [--cameras 6] [--frames 400] [--seed 0]``.
Progress goes to stderr; the last stdout line is one JSON object.

For each noise level (``default``, then ``hard`` with suffix ``_hard``) the
synthetic rig (:func:`ethoscribe.synth.rig.synthesize`, marker videos only)
writes a session; :func:`ethoscribe.candidates.detect_session_spots` finds
the spots in every view's marker video (decoded from the H.264 files, as in
real use), and they are scored against ``truth/points2d.nc`` and
``truth/spurious.parquet``:

- ``spot_recall``: of the markers that were *rendered* (``marker_xy`` not
  NaN: visible, not occluded and not dropped as a missed detection), the
  fraction with a detection within 1.5 px (one-to-one, Hungarian matching
  per view and frame).
- ``spot_precision``: matched detections / all detections that are *not*
  within 1.5 px of a spurious spot. Spurious spots (reflections, look-alikes,
  specks) are real bright spots in the image; a spot detector is right to
  report them and the pose pipeline rejects them later, so they count
  neither for nor against precision. Everything else unmatched (noise, a
  streak split in two, a duplicate) is a false detection.
- ``spot_median_error_px`` (and ``spot_p90_error_px``): distance of matched
  detections to the rendered spot centre (``marker_xy``: projection plus the
  rig's jitter).

Speed (default noise only): per view, decoding alone (``VideoReader.iter_chunks``)
and decoding plus detection (``detect_spots``, same chunk size) are timed
alternately, best of ``--repeats``, summed over views:
``spot_throughput_vs_decode`` = decode-only time / detection time (target
>= 0.5), ``decode_fps`` and ``detect_fps`` in frames per second over all views.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log, timed  # noqa: E402

TOLERANCE_PX = 1.5


def score(spots, truth_dir: Path, views: list[str]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Recall, precision and centre errors of ``spots`` against the rig's 2D truth (see module docstring)."""
    import pandas as pd
    import xarray as xr
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    with xr.open_dataset(truth_dir / "points2d.nc") as ds:
        ds = ds.load()
    xy = ds["marker_xy"].transpose("views", "time", "keypoints", "individuals", "space")
    truth_views = [str(v) for v in ds["views"].values]
    marker = xy.values.reshape(len(truth_views), xy.sizes["time"], -1, 2)  # (V, T, K*I, 2)
    if "rendered" in ds:
        rendered = ds["rendered"].transpose("views", "time", "keypoints", "individuals").values.reshape(marker.shape[:3])
        marker = np.where(rendered[..., None], marker, np.nan)
    spurious = pd.read_parquet(truth_dir / "spurious.parquet")
    spur = {key: g[["x", "y"]].to_numpy() for key, g in spurious.groupby(["view", "frame"])}
    det = {key: g[["x", "y"]].to_numpy() for key, g in spots.groupby(["view", "frame"], observed=True)}

    n_truth = n_matched = n_det = n_spurious_hits = 0
    errors: list[np.ndarray] = []
    for v, view in enumerate(truth_views):
        if view not in views:
            continue
        for t in range(marker.shape[1]):
            pts = marker[v, t]
            pts = pts[np.isfinite(pts).all(axis=1)]
            found = det.get((view, t), np.empty((0, 2)))
            n_truth += len(pts)
            n_det += len(found)
            matched = np.zeros(len(found), bool)
            if len(pts) and len(found):
                dist = np.linalg.norm(pts[:, None] - found[None], axis=2)
                # pairs beyond the tolerance cost a fortune: the most matches first, then the closest
                rows, cols = linear_sum_assignment(np.where(dist <= TOLERANCE_PX, dist, 1e6))
                ok = dist[rows, cols] <= TOLERANCE_PX
                matched[cols[ok]] = True
                errors.append(dist[rows[ok], cols[ok]])
            n_matched += int(matched.sum())
            s = spur.get((view, t))
            if s is not None and len(s) and (~matched).any():
                d, _ = cKDTree(s).query(found[~matched])
                n_spurious_hits += int((d <= TOLERANCE_PX).sum())
    err = np.concatenate(errors) if errors else np.empty(0)
    judged = n_det - n_spurious_hits
    return {
        "recall": n_matched / max(n_truth, 1),
        "precision": n_matched / max(judged, 1),
        "median_error_px": float(np.median(err)) if len(err) else float("nan"),
        "p90_error_px": float(np.percentile(err, 90)) if len(err) else float("nan"),
        "n_rendered_markers": n_truth,
        "n_detections": n_det,
        "n_spurious_detected": n_spurious_hits,
        "false_per_view_frame": (judged - n_matched) / max(len(views) * marker.shape[1], 1),
    }


def speed(session, views: list[str], repeats: int, chunk_size: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Best-of-``repeats`` decode-only and decode+detect times per view, summed."""
    from ethoscribe.candidates import detect_spots
    from ethoscribe.io.video import VideoReader

    def decode(path: Path) -> int:
        n = 0
        with VideoReader(path) as video:
            for _, chunk in video.iter_chunks(chunk_size):
                n += len(chunk)
        return n

    t_dec = t_det = 0.0
    n_total = 0
    for view in views:
        path = session.video_path(view, "markers")
        best_dec = best_det = float("inf")
        for _ in range(repeats):  # alternate, so a busy machine slows both alike
            n, a = timed(decode, path)
            _, b = timed(detect_spots, path, view=view, chunk_size=chunk_size)
            best_dec, best_det = min(best_dec, a), min(best_det, b)
        log(f"  {view}: decode {n / best_dec:.0f} fps, decode+detect {n / best_det:.0f} fps")
        t_dec += best_dec
        t_det += best_det
        n_total += n
    return {"decode_fps": n_total / t_dec, "detect_fps": n_total / t_det, "throughput_vs_decode": t_dec / t_det}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats per view (best is kept)")
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the synthetic sessions (default: a temp folder)")
    args = parser.parse_args()

    try:
        from ethoscribe.synth.rig import SynthConfig, synthesize
    except ImportError as exc:
        log(f"the synthetic rig is not available ({exc}); nothing to benchmark against")
        raise SystemExit(2) from None
    from ethoscribe.candidates import detect_session_spots
    from ethoscribe.session import load_session

    t_start = time.perf_counter()
    result: dict[str, object] = {"cameras": args.cameras, "frames": args.frames, "seed": args.seed, "tolerance_px": TOLERANCE_PX}
    with tempfile.TemporaryDirectory(prefix="spots-bench-") as tmp:
        work = args.workdir or Path(tmp)
        for level in ("default", "hard"):
            suffix = "" if level == "default" else "_hard"
            out = work / f"synth_{level}"
            log(f"{level}: synthesising {args.cameras} cameras x {args.frames} frames (seed {args.seed})")
            _, t_syn = timed(synthesize, out, SynthConfig(cameras=args.cameras, frames=args.frames, seed=args.seed, noise=level, render="markers"))
            log(f"{level}: synthesised in {t_syn:.1f} s")
            session = load_session(out)
            views = session.config.view_names
            if level == "default":
                sp = speed(session, views, args.repeats, args.chunk_size)
                result.update({"spot_throughput_vs_decode": sp["throughput_vs_decode"], "decode_fps": sp["decode_fps"], "detect_fps": sp["detect_fps"]})
                log(f"speed: decode {sp['decode_fps']:.0f} fps, detect {sp['detect_fps']:.0f} fps, ratio {sp['throughput_vs_decode']:.2f}")
            spots, t_det = timed(detect_session_spots, session, chunk_size=args.chunk_size)
            acc = score(spots, out / "truth", views)
            log(f"{level}: {len(spots)} detections in {t_det:.1f} s; recall {acc['recall']:.4f}, precision {acc['precision']:.4f}, "
                f"median error {acc['median_error_px']:.3f} px, p90 {acc['p90_error_px']:.3f} px, "
                f"{acc['false_per_view_frame']:.3f} false detections per view and frame")
            result.update({
                f"spot_recall{suffix}": acc["recall"],
                f"spot_precision{suffix}": acc["precision"],
                f"spot_median_error_px{suffix}": acc["median_error_px"],
                f"spot_p90_error_px{suffix}": acc["p90_error_px"],
                f"spot_false_per_view_frame{suffix}": acc["false_per_view_frame"],
                f"n_rendered_markers{suffix}": acc["n_rendered_markers"],
                f"n_detections{suffix}": acc["n_detections"],
                f"n_spurious_detected{suffix}": acc["n_spurious_detected"],
            })
    result["seconds"] = time.perf_counter() - t_start
    emit(result)


if __name__ == "__main__":
    main()
