"""Triangulation benchmark: ethoscribe's DLT and RANSAC against aniposelib's, side by side.

Run ``python benchmarks/triangulation.py [--quick]``. Progress goes to stderr;
the last stdout line is one JSON object with the figures:

- synthetic (always): a 6-camera ``arena_rig``, a mouse-sized body of 12
  keypoints on a random walk for 500 frames, 1 px Gaussian noise, about 10 %
  of the visible 2D points replaced by outliers uniform in the image, points
  outside the image and 8 % more missing. Both libraries triangulate the same
  points; aniposelib's RANSAC (a Python loop over points) is timed on a fixed
  random subset, on which both methods' 3D errors are also compared.
- ``real_outdoor_*`` (when ``../shared/data/anipose_calibrations`` exists):
  the 12-camera outdoor rig and its 2D detections.
- ``real_sleap4_*`` (when ``../shared/data/sleap_4view_mouse`` exists): the
  4-view SLEAP predictions, whose ``side`` and ``top`` calibrations are copies.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, emit, log, timed  # noqa: E402

from ethoscribe.geometry.camera import CameraRig  # noqa: E402
from ethoscribe.geometry.triangulate import (  # noqa: E402
    DEFAULT_RANSAC_THRESHOLD_PX,
    reprojection_error,
    triangulate_dlt,
    triangulate_ransac,
)
from ethoscribe.synth.cameras import arena_rig  # noqa: E402

# body-frame keypoints (x forward, y left, z up), mm: ears 2, back 3, paws 4, tail 3
MOUSE_MM = np.array([
    [52, 11, 32], [52, -11, 32],
    [38, 0, 36], [8, 0, 40], [-24, 0, 34],
    [34, 14, 3], [34, -14, 3], [-20, 17, 3], [-20, -17, 3],
    [-50, 0, 18], [-80, 0, 8], [-108, 0, 3],
], dtype=float)


def synth_mouse(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """3D keypoints (n_frames, 12, 3) of a mouse wandering in the arena (mm, z up)."""
    pos = np.zeros(2)
    heading = rng.uniform(0, 2 * np.pi)
    speed = 0.0
    out = np.empty((n_frames, len(MOUSE_MM), 3))
    for t in range(n_frames):
        speed = np.clip(speed + rng.normal(0, 0.8), 0, 8)  # mm per frame
        heading += rng.normal(0, 0.12)
        step = speed * np.array([np.cos(heading), np.sin(heading)])
        nxt = pos + step
        if np.any(np.abs(nxt) > 140):  # turn back at the walls
            heading += np.pi
            nxt = pos - step
        pos = nxt
        rear = max(0.0, np.sin(t / 37.0)) ** 4  # occasional rearing lifts the front
        body = MOUSE_MM.copy()
        body[:, 2] += rear * np.clip(body[:, 0] + 30, 0, None) * 0.6
        body += rng.normal(0, 2.0, size=body.shape)
        c, s = np.cos(heading), np.sin(heading)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        out[t] = body @ rot.T + [pos[0], pos[1], 0.0]
    out[..., 2] = np.maximum(out[..., 2], 0.5)
    return out


def corrupt(rig: CameraRig, p3: np.ndarray, rng: np.random.Generator, outlier_frac: float = 0.1,
            missing_frac: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 2D observations (C, P, 2) with missing points and outliers; and the outlier mask."""
    p2 = rig.project(p3) + rng.normal(0, 1.0, size=(rig.n_cameras,) + p3.shape[:-1] + (2,))
    p2[~rig.in_image(p2)] = np.nan
    p2[rng.random(p2.shape[:-1]) < missing_frac] = np.nan
    seen = np.isfinite(p2[..., 0])
    out = seen & (rng.random(p2.shape[:-1]) < outlier_frac)
    size = rig.size.reshape((-1,) + (1,) * (p2.ndim - 2) + (2,)).astype(float)
    uni = rng.uniform(0, 1, size=p2.shape) * size - 0.5
    p2[out] = uni[out]
    return p2, out


def err3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def nanmedian(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")


def aniposelib_ransac(cgroup, p2: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """aniposelib's RANSAC: (points3d (P, 3), views used (C, P), seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (p3, picked, _, _), sec = timed(cgroup.triangulate_ransac, p2, min_cams=2)
    return p3, picked[:, :, 0], sec


def warm_jax(cgroup, p2: np.ndarray) -> None:
    """Compile aniposelib's jax triangulation for every subset size before timing it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cgroup.triangulate(p2[:, :50].copy())
        n = len(cgroup.cameras)
        pt = np.nan_to_num(p2[:, :1].copy(), nan=100.0)
        for k in range(2, n + 1):
            cgroup.subset_cameras(list(range(k))).triangulate(pt[:k, 0].copy())


def solver_comparison(rig: CameraRig, p2: np.ndarray) -> dict:
    """The DLT's 4x4 eigen-solve against a batched SVD of the (2C, 4) system: speed and agreement."""
    from ethoscribe.geometry.triangulate import _rows, _smallest_eigvec_point

    norm = rig.undistort(p2)
    valid = np.isfinite(norm).all(-1)
    rows = _rows(rig.extrinsics(), np.where(valid[..., None], norm, 0.0)) * valid[..., None, None]
    a = np.ascontiguousarray(rows.transpose(1, 0, 2, 3).reshape(p2.shape[1], -1, 4))
    keep = valid.sum(0) >= 2
    a = a[keep]
    n = a.shape[0]
    t_eigh, t_svd = [], []
    for _ in range(3):
        t = time.perf_counter()
        m = np.matmul(a.transpose(0, 2, 1), a)
        x_eigh = _smallest_eigvec_point(m)
        t_eigh.append(time.perf_counter() - t)
        t = time.perf_counter()
        v = np.linalg.svd(a, full_matrices=False)[2][:, -1]
        x_svd = v[:, :3] / v[:, 3:]
        t_svd.append(time.perf_counter() - t)
    rel = np.linalg.norm(x_eigh - x_svd, axis=1) / np.linalg.norm(x_svd, axis=1)
    return {"us_per_point_eigh": 1e6 * min(t_eigh) / n, "us_per_point_svd": 1e6 * min(t_svd) / n,
            "max_rel_diff": float(np.max(rel)), "median_rel_diff": float(np.median(rel))}


def view_error_stats(rig: CameraRig, p3: np.ndarray, p2: np.ndarray, used: np.ndarray | None = None) -> dict:
    """Median reprojection error over all observed views, and over the views used."""
    e = reprojection_error(rig, p3, p2)
    out = {"all_views": nanmedian(e)}
    if used is not None:
        out["used_views"] = nanmedian(np.where(used, e, np.nan))
    return out


# ------------------------------------------------------------------ synthetic
def bench_synthetic(quick: bool, rng: np.random.Generator) -> dict:
    n_frames = 200 if quick else 500
    n_sub = 120 if quick else 1000
    rig = arena_rig(6, rng)
    cg = rig.to_aniposelib()
    truth = synth_mouse(rng, n_frames)
    p2, is_out = corrupt(rig, truth, rng)
    c, f, k = p2.shape[0], n_frames, truth.shape[1]
    flat2 = p2.reshape(c, -1, 2)
    flat3 = truth.reshape(-1, 3)
    n = flat3.shape[0]
    log(f"synthetic: {f} frames x {k} keypoints x {c} views; "
        f"{np.isnan(flat2[..., 0]).mean():.1%} missing, {is_out.sum() / np.isfinite(flat2[..., 0]).sum():.1%} outliers")
    res: dict = {"n_points": n, "n_cameras": c}

    # --- DLT
    warm_jax(cg, flat2)
    ours_dlt, t_ours = timed(triangulate_dlt, rig, flat2)
    ours_dlt, t_ours2 = timed(triangulate_dlt, rig, flat2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ani_dlt, t_ani = timed(cg.triangulate, flat2.copy())
        ani_dlt, t_ani2 = timed(cg.triangulate, flat2.copy())
        ani_same = cg.triangulate(rig.undistort(flat2), undistort=False)
    t_ours, t_ani = min(t_ours, t_ours2), min(t_ani, t_ani2)
    both = np.isfinite(ours_dlt).all(-1) & np.isfinite(ani_dlt).all(-1)
    res["dlt_points_per_s"] = n / t_ours
    res["aniposelib_dlt_points_per_s"] = n / t_ani
    res["dlt_speedup_vs_aniposelib"] = t_ani / t_ours
    # with outliers: wrecked, far-off points where cv2's 5-step undistortion near the image
    # corners (aniposelib) and our converged one differ most; the clean figures are below
    res["dlt_max_abs_diff_vs_aniposelib_with_outliers"] = float(np.max(np.abs(ours_dlt[both] - ani_dlt[both])))
    res["dlt_max_abs_diff_vs_aniposelib_with_outliers_same_undistort"] = float(
        np.nanmax(np.abs(ours_dlt[both] - ani_same[both])))
    clean2 = rig.project(flat3)
    clean = triangulate_dlt(rig, clean2)
    res["dlt_max_error_noiseless_mm"] = float(np.nanmax(err3d(clean, flat3)))
    # clean data = noisy views without outliers: the 1:1 comparison with aniposelib
    inl2 = np.where(is_out.reshape(c, -1)[..., None], np.nan, flat2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ani_clean = cg.triangulate(inl2.copy())
    ours_clean = triangulate_dlt(rig, inl2)
    ok = np.isfinite(ani_clean[:, 0]) & np.isfinite(ours_clean[:, 0])
    res["dlt_max_abs_diff_vs_aniposelib"] = float(np.max(np.abs(ours_clean[ok] - ani_clean[ok])))
    res["dlt_max_rel_diff_vs_aniposelib_clean"] = float(np.max(
        np.linalg.norm(ours_clean[ok] - ani_clean[ok], axis=1) / np.linalg.norm(ani_clean[ok], axis=1)))
    res["dlt_solver_noisy"] = solver_comparison(rig, inl2)
    res["dlt_solver_with_outliers"] = solver_comparison(rig, flat2)
    res["dlt_median_3d_error_mm"] = nanmedian(err3d(ours_dlt, flat3))
    log(f"DLT: ours {n / t_ours:,.0f} pts/s, aniposelib {n / t_ani:,.0f} pts/s, "
        f"max diff on clean data {res['dlt_max_abs_diff_vs_aniposelib']:.2e} mm")

    # --- our RANSAC on every point
    rr, t_r = timed(triangulate_ransac, rig, flat2)
    rr, t_r2 = timed(triangulate_ransac, rig, flat2)
    t_r = min(t_r, t_r2)
    e_ours = err3d(rr.points3d, flat3)
    res["ransac_points_per_s"] = n / t_r
    res["ransac_median_3d_error_mm_all_points"] = nanmedian(e_ours)
    res["ransac_coverage"] = float(np.isfinite(rr.points3d[:, 0]).mean())
    seen = np.isfinite(flat2[..., 0])
    res["ransac_outlier_views_rejected"] = float((~rr.inliers[is_out.reshape(c, -1)]).mean())
    res["ransac_good_views_kept"] = float(rr.inliers[seen & ~is_out.reshape(c, -1)].mean())
    log(f"RANSAC (ours): {n / t_r:,.0f} pts/s, median 3D error {res['ransac_median_3d_error_mm_all_points']:.3f} mm")

    # threshold sweep (ours), to support the default
    sweep = {}
    for thr in (3.0, 5.0, 8.0, 12.0, 20.0):
        r = triangulate_ransac(rig, flat2, threshold_px=thr)
        sweep[str(thr)] = nanmedian(err3d(r.points3d, flat3))
    res["ransac_threshold_sweep_median_3d_error_mm"] = sweep

    # --- aniposelib's RANSAC on a fixed random subset (same points for both)
    sub = np.sort(np.random.default_rng(7).choice(n, size=min(n_sub, n), replace=False))
    p2s = np.ascontiguousarray(flat2[:, sub])
    log(f"aniposelib RANSAC on {sub.size} points ...")
    ani_r, _, t_ar = aniposelib_ransac(cg, p2s)
    rs, t_rs = timed(triangulate_ransac, rig, p2s)
    e_ani = err3d(ani_r, flat3[sub])
    e_our_sub = err3d(rs.points3d, flat3[sub])
    res["n_points_aniposelib_ransac"] = int(sub.size)
    res["aniposelib_ransac_points_per_s"] = sub.size / t_ar
    res["ransac_speedup_vs_aniposelib"] = (n / t_r) / (sub.size / t_ar)
    res["ransac_speedup_vs_aniposelib_same_subset"] = t_ar / t_rs
    res["ransac_median_3d_error_mm"] = nanmedian(e_our_sub)
    res["aniposelib_ransac_median_3d_error_mm"] = nanmedian(e_ani)
    both = np.isfinite(e_ani) & np.isfinite(e_our_sub)
    res["ransac_median_3d_error_mm_common"] = nanmedian(e_our_sub[both])
    res["aniposelib_ransac_median_3d_error_mm_common"] = nanmedian(e_ani[both])
    res["ransac_p90_3d_error_mm"] = float(np.nanpercentile(e_our_sub, 90))
    res["aniposelib_ransac_p90_3d_error_mm"] = float(np.nanpercentile(e_ani, 90))
    res["ransac_coverage_subset"] = float(np.isfinite(e_our_sub).mean())
    res["aniposelib_ransac_coverage_subset"] = float(np.isfinite(e_ani).mean())
    res["dlt_median_3d_error_mm_subset"] = nanmedian(err3d(ours_dlt[sub], flat3[sub]))
    log(f"RANSAC aniposelib: {sub.size / t_ar:,.1f} pts/s, median 3D error {res['aniposelib_ransac_median_3d_error_mm']:.3f} mm "
        f"(ours {res['ransac_median_3d_error_mm']:.3f} mm); speedup {res['ransac_speedup_vs_aniposelib']:,.0f}x")
    return res


# ------------------------------------------------------------------ real data
def bench_outdoor(quick: bool, folder: Path) -> dict:
    calib = folder / "mouse-outdoor__calibration_right_4_10_2026_adjusted.toml"
    pts = folder / "mouse-outdoor__points_right_4_10_2026_sub.npz"
    if not (calib.is_file() and pts.is_file()):
        log("real outdoor rig: files absent, skipped")
        return {}
    rig = CameraRig.load(calib)
    cg = rig.to_aniposelib()
    p2 = np.load(pts)["p2d"].astype(np.float64)
    if quick:
        p2 = p2[:, :40000]
    n = p2.shape[1]
    n_views = np.isfinite(p2[..., 0]).sum(0)
    log(f"real outdoor: {rig.n_cameras} cameras, {n} points, {np.isnan(p2[..., 0]).mean():.0%} missing")
    res: dict = {"real_outdoor_n_points": n, "real_outdoor_n_cameras": rig.n_cameras,
                 "real_outdoor_points_with_2plus_views": int((n_views >= 2).sum())}
    warm_jax(cg, p2)
    dlt, t_d = timed(triangulate_dlt, rig, p2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adlt, t_ad = timed(cg.triangulate, p2.copy())
    res["real_outdoor_dlt_speedup_vs_aniposelib"] = t_ad / t_d
    both = np.isfinite(dlt).all(-1) & np.isfinite(adlt).all(-1)
    res["real_outdoor_dlt_median_abs_diff_vs_aniposelib"] = nanmedian(np.abs(dlt[both] - adlt[both]))
    rr, t_r = timed(triangulate_ransac, rig, p2)
    res["real_outdoor_ransac_points_per_s"] = n / t_r
    res["real_outdoor_ransac_seconds"] = t_r
    log(f"outdoor: DLT {t_d:.2f} s (aniposelib {t_ad:.2f} s), RANSAC {t_r:.2f} s ({n / t_r:,.0f} pts/s)")

    cand = np.nonzero(n_views >= 2)[0]
    sub = np.sort(np.random.default_rng(3).choice(cand, size=min(60 if quick else 400, cand.size), replace=False))
    p2s = np.ascontiguousarray(p2[:, sub])
    log(f"aniposelib RANSAC on {sub.size} outdoor points ...")
    ani3, used, t_ar = aniposelib_ransac(cg, p2s)
    res["real_outdoor_n_points_aniposelib_ransac"] = int(sub.size)
    res["real_outdoor_aniposelib_ransac_points_per_s"] = sub.size / t_ar
    # per-point rate of ours over points that have >= 2 views, like the subset
    res["real_outdoor_ransac_speedup_vs_aniposelib"] = (n / t_r) / (sub.size / t_ar)
    ours_sub = triangulate_ransac(rig, p2s)
    s_ours = view_error_stats(rig, ours_sub.points3d, p2s, ours_sub.inliers)
    s_ani = view_error_stats(rig, ani3, p2s, used)
    s_dlt = view_error_stats(rig, dlt[sub], p2s)
    s_adlt = view_error_stats(rig, adlt[sub], p2s)
    res["real_outdoor_dlt_median_reproj_px"] = s_dlt["all_views"]
    res["real_outdoor_aniposelib_dlt_median_reproj_px"] = s_adlt["all_views"]
    res["real_outdoor_ransac_median_reproj_px_inliers"] = s_ours["used_views"]
    res["real_outdoor_ransac_median_reproj_px_all_views"] = s_ours["all_views"]
    res["real_outdoor_aniposelib_ransac_median_reproj_px_used"] = s_ani["used_views"]
    res["real_outdoor_aniposelib_ransac_median_reproj_px_all_views"] = s_ani["all_views"]
    res["real_outdoor_ransac_mean_views_used"] = float(ours_sub.n_inliers[np.isfinite(ours_sub.points3d[:, 0])].mean())
    res["real_outdoor_aniposelib_ransac_mean_views_used"] = float(used.sum(0)[np.isfinite(ani3[:, 0])].mean())
    res["real_outdoor_ransac_coverage"] = float(np.isfinite(ours_sub.points3d[:, 0]).mean())
    res["real_outdoor_aniposelib_ransac_coverage"] = float(np.isfinite(ani3[:, 0]).mean())
    # how the inlier fraction depends on the threshold (all points, ours)
    sweep = {}
    seen = np.isfinite(p2s[..., 0])
    for thr in (3.0, 5.0, 8.0, 12.0, 20.0):
        r = triangulate_ransac(rig, p2s, threshold_px=thr)
        sweep[str(thr)] = float(r.inliers[seen].mean())
    res["real_outdoor_ransac_threshold_sweep_inlier_fraction"] = sweep
    return res


def bench_sleap4(quick: bool, folder: Path) -> dict:
    calib, slp = folder / "calibration.toml", folder / "minimal_proofread.slp"
    if not (calib.is_file() and slp.is_file()):
        log("real sleap_4view_mouse: files absent, skipped")
        return {}
    import sleap_io as sio

    rig = CameraRig.load(calib)
    labels = sio.load_slp(str(slp))
    session = labels.sessions[0]
    views = []
    for cam in session.camera_group.cameras:
        arr = labels.numpy(video=session.get_video(cam))  # (frames, tracks, nodes, 2)
        views.append(arr[:, 0])
    names = [cam.name for cam in session.camera_group.cameras]
    rig = rig.subset(names)
    p2 = np.stack(views).reshape(len(names), -1, 2).astype(np.float64)
    cg = rig.to_aniposelib()
    log(f"real sleap 4-view: {p2.shape[1]} points, duplicates {rig.duplicate_cameras()}")
    res: dict = {"real_sleap4_n_points": p2.shape[1], "real_sleap4_duplicate_cameras": rig.duplicate_cameras()}
    warm_jax(cg, p2)
    dlt = triangulate_dlt(rig, p2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adlt = cg.triangulate(p2.copy())
    rr, t_r = timed(triangulate_ransac, rig, p2)
    sub = np.arange(0, p2.shape[1], 12 if quick else 2)  # aniposelib: ~30 points/s here
    p2s = np.ascontiguousarray(p2[:, sub])
    ani3, used, t_ar = aniposelib_ransac(cg, p2s)
    res["real_sleap4_dlt_median_reproj_px"] = view_error_stats(rig, dlt, p2)["all_views"]
    res["real_sleap4_aniposelib_dlt_median_reproj_px"] = view_error_stats(rig, adlt, p2)["all_views"]
    res["real_sleap4_dlt_median_of_point_mean_reproj_px"] = nanmedian(  # aniposelib's mean=True measure
        np.nanmean(reprojection_error(rig, dlt, p2), axis=0))
    s = view_error_stats(rig, rr.points3d[sub], p2s, rr.inliers[:, sub])
    a = view_error_stats(rig, ani3, p2s, used)
    res["real_sleap4_ransac_median_reproj_px_inliers"] = s["used_views"]
    res["real_sleap4_ransac_median_reproj_px_all_views"] = s["all_views"]
    res["real_sleap4_aniposelib_ransac_median_reproj_px_used"] = a["used_views"]
    res["real_sleap4_aniposelib_ransac_median_reproj_px_all_views"] = a["all_views"]
    res["real_sleap4_ransac_coverage"] = float(np.isfinite(rr.points3d[sub, 0]).mean())
    res["real_sleap4_aniposelib_ransac_coverage"] = float(np.isfinite(ani3[:, 0]).mean())
    res["real_sleap4_ransac_mean_views_used"] = float(rr.n_inliers[sub][np.isfinite(rr.points3d[sub, 0])].mean())
    res["real_sleap4_aniposelib_ransac_mean_views_used"] = float(used.sum(0)[np.isfinite(ani3[:, 0])].mean())
    res["real_sleap4_ransac_speedup_vs_aniposelib"] = (p2.shape[1] / t_r) / (sub.size / t_ar)
    # which views RANSAC trusts: inlier fraction per camera
    seen = np.isfinite(p2[..., 0])
    res["real_sleap4_ransac_inlier_fraction_per_view"] = {
        nm: float(rr.inliers[i][seen[i]].mean()) for i, nm in enumerate(rig.names)
    }
    log(f"sleap 4-view: DLT median {res['real_sleap4_dlt_median_reproj_px']:.1f} px, RANSAC inliers "
        f"{s['used_views']:.1f} px (aniposelib {a['used_views']:.1f} px)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a ~30 s run with fewer points")
    args = ap.parse_args()
    os.environ.setdefault("ANIPOSE_DISABLE_JAX_X64", "0")
    t0 = time.perf_counter()
    rng = np.random.default_rng(2026)
    result: dict = {"benchmark": "triangulation", "quick": args.quick,
                    "ransac_threshold_px": DEFAULT_RANSAC_THRESHOLD_PX}
    result.update(bench_synthetic(args.quick, rng))
    result.update(bench_outdoor(args.quick, SHARED_DATA / "anipose_calibrations"))
    result.update(bench_sleap4(args.quick, SHARED_DATA / "sleap_4view_mouse"))
    result["runtime_s"] = time.perf_counter() - t0
    log(f"done in {result['runtime_s']:.0f} s")
    emit(result)


if __name__ == "__main__":
    main()
