"""Behaviour discovery on real recordings (no behaviour labels): what is found, and time budgets.

- ``../shared/data/mabe22_mouse_triplet``: DeepLabCut multi-animal pose of 3
  mice (top view, px, 1800 frames) + the 512x512 video: pose + video
  (per-animal body-aligned motion-energy crops).
- ``../shared/data/sleap_fly_courtship``: SLEAP predictions of 2 flies
  (3000 frames); the pose has no frame rate, so it is taken from the video
  header (25 fps); pose only.
- ``../shared/data/dlc_openfield_mouse``: one mouse in an open field (DeepLabCut's
  example video, 2330 frames, no pose): video only, the default video
  features (motion energy + silhouette).

Each run prints (stderr) the label dictionary and time budgets; the last
stdout line is one JSON object with, per data set, the labels, their
definitions and time budgets, segment counts and timings. Data sets that
are absent are skipped.

Usage: ``python benchmarks/behavior_real.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, emit, log  # noqa: E402

from ethoscribe.behavior.pipeline import BehaviorResult, run_behavior  # noqa: E402


def summary(res: BehaviorResult, seconds: float) -> dict:
    budgets = {
        ind: {r.label: round(float(r.fraction), 4) for r in g.itertuples()}
        for ind, g in res.time_budgets.groupby("individual")
    }
    return {
        "labels": {r.label: {"definition": r.definition, "clusters": r.clusters, "n_frames": int(r.n_frames)}
                   for r in res.label_dictionary.itertuples()},
        "time_budgets": budgets,
        "n_segments": int(len(res.segments)),
        "n_frames": int(res.meta["n_frames"]),
        "individuals": res.meta["individuals"],
        "fps": res.meta["fps"],
        "seconds": round(seconds, 1),
        "timings": res.meta["timings"],
    }


def show(name: str, res: BehaviorResult) -> None:
    log(f"{name}: {len(res.label_dictionary)} labels")
    for r in res.label_dictionary.itertuples():
        log(f"  {r.label:14s} clusters {r.clusters:10s} {r.n_frames:6d} frames | {r.definition}")
    for ind, g in res.time_budgets.groupby("individual"):
        log(f"  {ind}: " + ", ".join(f"{r.label} {r.fraction:.0%}" for r in g.itertuples()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="where to keep the outputs (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out_root = args.out or Path(tempfile.mkdtemp(prefix="ethoscribe-behreal-"))
    result: dict = {}

    mabe = SHARED_DATA / "mabe22_mouse_triplet"
    h5 = sorted(mabe.glob("*.h5"))
    if h5:
        videos = sorted(mabe.glob("*.mp4"))
        log(f"MABe22 mouse triplet: {h5[0].name} + {[v.name for v in videos]}")
        t = time.perf_counter()
        res = run_behavior(h5[0], videos=videos, out_dir=out_root / "mabe22", fps=30.0, seed=args.seed)
        result["mabe22_mouse_triplet"] = summary(res, time.perf_counter() - t)
        show("mabe22", res)
    else:
        log(f"skipping MABe22 ({mabe} absent)")

    fly = SHARED_DATA / "sleap_fly_courtship"
    slp = fly / "predictions.slp"
    if slp.is_file():
        from ethoscribe.io.video import VideoReader

        fly_videos = sorted(fly.glob("*.mp4"))
        fps = 25.0
        if fly_videos:
            with VideoReader(fly_videos[0]) as v:
                fps = v.fps
        log(f"SLEAP fly courtship: {slp.name} at {fps:g} fps (from the video header)")
        t = time.perf_counter()
        res = run_behavior(slp, out_dir=out_root / "fly", fps=fps, seed=args.seed)
        result["sleap_fly_courtship"] = summary(res, time.perf_counter() - t)
        show("fly", res)
    else:
        log(f"skipping the fly courtship ({slp} absent)")

    openfield = sorted((SHARED_DATA / "dlc_openfield_mouse").glob("*.mp4"))
    if openfield:
        log(f"DeepLabCut open field: {openfield[0].name}, video only")
        t = time.perf_counter()
        res = run_behavior(videos=openfield[:1], out_dir=out_root / "openfield", seed=args.seed)
        result["dlc_openfield_mouse"] = summary(res, time.perf_counter() - t)
        show("openfield", res)
    else:
        log("skipping the open field (video absent)")
    log(f"outputs in {out_root}")
    emit(result)


if __name__ == "__main__":
    main()
