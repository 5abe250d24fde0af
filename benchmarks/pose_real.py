"""Pose pipeline on real data: the SLEAP 4-view mouse (predictions as candidates, pseudo-seeds).

Run ``python benchmarks/pose_real.py [--data DIR] [--keep DIR]``. Progress goes
to stderr; the last stdout line is one JSON object. Skips cleanly (a JSON
line with ``"skipped"``) when the data folder is absent.

The recording (``../shared/data/sleap_4view_mouse``): 4 cameras (back, mid,
side, top), an anipose ``calibration.toml`` in which ``side`` and ``top``
carry identical parameters, and ``minimal_proofread.slp`` holding only
*predicted* instances (15-node skeleton, one per frame and view, 120
frames). There are no hand-labelled seeds, so:

- the skeleton is built from the file (:func:`ethoscribe.pose.skeletons.skeleton_from_sleap`:
  regions by name - head, body, tail - and left/right pairs from ``_left``/``_right``, ``_L``/``_R``);
- the candidates are every predicted point of every view
  (:func:`ethoscribe.candidates.predictions.read_predictions`), identities
  kept only as hints;
- the seeds are pseudo-seeds (``seeds="pseudo"``): the 3 frames whose hinted
  predictions agree best across views.

Figures: ``median_reproj_error_before_px`` (plain DLT of the raw predictions
with their own identities, all views, as in ``shared/data/README.md``) and
``median_reproj_error_after_px`` (the pipeline's candidate labels against
its 3D points: over the cameras used for 3D, and over all cameras);
labels flagged (count, fraction, by reason; and among the labels of the
cameras not reported suspect, since every label of a suspect camera is
flagged); the cameras reported suspect and why; identical calibrations found.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, emit, log  # noqa: E402

VIEWS = ["back", "mid", "side", "top"]


def build_session(data: Path, root: Path):  # type: ignore[no-untyped-def]
    """A session folder for the recording: skeleton from the .slp, the calibration, the 4 views."""
    from ethoscribe.pose.skeletons import skeleton_from_sleap
    from ethoscribe.session import SessionConfig, ViewConfig, load_session, save_session_config

    root.mkdir(parents=True, exist_ok=True)
    slp = data / "minimal_proofread.slp"
    skeleton = skeleton_from_sleap(slp, name="sleap_4view_mouse")
    skeleton.save(root / "skeleton.json")
    shutil.copy(data / "calibration.toml", root / "calibration.toml")
    save_session_config(root, SessionConfig(
        name="sleap_4view_mouse", fps=30.0, n_frames=120, views=[ViewConfig(name=v) for v in VIEWS],
        skeleton="skeleton.json", calibration="calibration.toml", seeds=None, individuals=["mouse0"]))
    return load_session(root), skeleton


def read_candidates(slp: Path):  # type: ignore[no-untyped-def]
    from ethoscribe.candidates.predictions import read_predictions

    return read_predictions(slp, views=VIEWS)


def before_error(session, cands, skeleton) -> float:  # type: ignore[no-untyped-def]
    """Median reprojection error of a plain DLT of the predictions with their own identities (all views)."""
    from ethoscribe.geometry.triangulate import reprojection_error, triangulate_dlt

    T, K = session.config.n_frames, skeleton.n_keypoints
    pts = np.full((len(VIEWS), T, K, 2), np.nan)
    kidx = {k: i for i, k in enumerate(skeleton.keypoints)}
    v = cands["view"].astype(str).map({n: i for i, n in enumerate(VIEWS)}).to_numpy()
    k = cands["hint_keypoint"].map(kidx).to_numpy()
    ok = np.isfinite(k.astype(float))
    pts[v[ok], cands["frame"].to_numpy()[ok], k[ok].astype(int)] = cands[["x", "y"]].to_numpy()[ok]
    X = triangulate_dlt(session.rig, pts)
    return float(np.nanmedian(reprojection_error(session.rig, X, pts)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "sleap_4view_mouse")
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    if not (args.data / "minimal_proofread.slp").is_file():
        log(f"{args.data}: not found, skipping")
        emit({"skipped": f"{args.data} not found"})
        return
    from ethoscribe.pose import run_pose

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pose_real_") as tmp:
        root = (args.keep or Path(tmp)) / "session"
        session, skeleton = build_session(args.data, root)
        log(f"skeleton: regions {dict((r, len(k)) for r, k in skeleton.regions.items())}, symmetry {skeleton.symmetry}")
        cands = read_candidates(args.data / "minimal_proofread.slp")
        log(f"{len(cands)} predicted points as candidates")
        before = before_error(session, cands, skeleton)
        t0 = time.perf_counter()
        res = run_pose(session, candidates=cands, seeds="pseudo", out_dir=root / "output" / "pose", resume=False)
        wall = time.perf_counter() - t0
        s = res.summary
        lab = res.labels
        cand_lab = lab[(lab["candidate"] >= 0) & lab["stage"].isin(["assignment", "agreement", "refinement"])]
        suspect = [c["camera"] for c in s["suspect_cameras"]]
        used = cand_lab[~cand_lab["view"].isin(suspect)]
        labelled = lab[np.isfinite(lab["x"])]
        out = {
            "views": VIEWS, "frames": int(s["frames"]), "keypoints": len(skeleton.keypoints),
            "regions": {r: list(k) for r, k in skeleton.regions.items()}, "symmetry": [list(p) for p in skeleton.symmetry],
            "seeds": s["seeds"],
            "median_reproj_error_before_px": before,
            "median_reproj_error_after_px": float(np.nanmedian(used["reproj_error"])) if len(used) else None,
            "median_reproj_error_after_all_views_px": float(np.nanmedian(cand_lab["reproj_error"])) if len(cand_lab) else None,
            "per_camera_median_reproj_error_px": {v: c["median_reproj_error_px"] for v, c in s["cameras"].items()},
            "labels": int(len(labelled)),
            "labels_flagged": int(labelled["flag"].sum()),
            "labels_flagged_fraction": float(labelled["flag"].mean()) if len(labelled) else None,
            "labels_usable_views": int((~labelled["view"].isin(suspect)).sum()),
            "labels_flagged_usable_views": int(labelled.loc[~labelled["view"].isin(suspect), "flag"].sum()),
            "labels_reprojected": int((labelled["stage"] == "reprojection").sum()),
            "flagged_by_reason": s["labels"]["flagged_by_reason"],
            "labels_by_stage": s["labels"]["by_stage"],
            "suspect_cameras": s["suspect_cameras"],
            "duplicate_calibrations": s["duplicate_calibrations"],
            "inlier_threshold_px": s["thresholds"]["inlier_threshold_px"],
            "poses3d_points": s["poses3d"],
            "timepoints_per_s": s["timings_s"]["timepoints_per_s"],
            "pipeline_wall_s": wall,
        }
        log(f"before {before:.1f} px, after {out['median_reproj_error_after_px']} px; suspect {suspect}; "
            f"flagged {out['labels_flagged']} of {out['labels']}")
    out["benchmark_wall_s"] = time.perf_counter() - t_all
    emit(out)


if __name__ == "__main__":
    main()
