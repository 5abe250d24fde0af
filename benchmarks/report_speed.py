"""Time ``build_report`` on a 5-minute, 2-animal synthetic session (target: under 30 s on this machine).

Setup (not timed): the synthetic rig writes a session of ``--frames`` frames
(default 9000 = 5 min at 30 fps) with two animals, ``--cameras`` cameras
(default 6) and one grey body video (the top view). The pose outputs
(``output/pose/``: a dense labels table of every frame, view, animal and
keypoint, 3D poses, review list, summary) are reference outputs written from
the ground truth (:func:`ethoscribe.analytics.reference.write_reference_outputs`:
the pose pipeline needs marker videos and takes minutes at this length, while
the report only reads its outputs, which have the same size and layout). The
behaviour outputs come from the real pipeline, ``run_behavior`` on the 3D
poses (``--behavior run``, default; clusterer ``--clusterer``, default DEC),
or from the true labels (``--behavior truth``).

Timed: ``build_report(session)`` with its defaults (review thumbnails,
example strips and clips per behaviour, social events and all plots).

Last stdout line: one JSON object with ``report_seconds`` (and the breakdown
the report records, its size, and the counts it covered).

Usage: ``python benchmarks/report_speed.py [--frames 9000] [--cameras 6] [--behavior run|truth] [--work DIR] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log, timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=9000)
    ap.add_argument("--animals", type=int, default=2)
    ap.add_argument("--cameras", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--behavior", choices=["run", "truth"], default="run")
    ap.add_argument("--clusterer", default="dec")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    from ethoscribe.analytics.reference import behavior_result_from_labels, write_reference_outputs
    from ethoscribe.progress import set_progress
    from ethoscribe.report.project import build_report
    from ethoscribe.synth.rig import synthesize

    set_progress(False)
    work = args.work or Path(tempfile.mkdtemp(prefix="ethoscribe-report-speed-"))
    root = work / "session"
    result: dict = {"frames": args.frames, "animals": args.animals, "cameras": args.cameras, "behavior_source": args.behavior}
    try:
        log(f"synthesising {args.frames} frames, {args.animals} animals, {args.cameras} cameras (body video of the top view)")
        s, t = timed(synthesize, root, animals=args.animals, frames=args.frames, cameras=args.cameras, render="body",
                     views_for_body=["top"], seed=args.seed)
        result["synth_s"] = t
        log(f"  {t:.1f} s; writing reference pose outputs")
        _, t = timed(write_reference_outputs, s.root, pose=True, behavior=False, seed=args.seed)
        result["reference_pose_s"] = t
        bdir = s.root / "output" / "behavior"
        if args.behavior == "run":
            try:
                from ethoscribe.behavior.pipeline import run_behavior
            except ImportError as exc:  # the behaviour pipeline is optional here
                log(f"run_behavior not importable ({exc}); using the true labels")
                args.behavior = "truth"
        if args.behavior == "run":
            log(f"run_behavior on the 3D poses (clusterer {args.clusterer})")
            res, t = timed(run_behavior, s.root / "output" / "pose" / "poses3d.nc", out_dir=bdir, clusterer=args.clusterer,
                           seed=args.seed)
            result["run_behavior_s"] = t
        else:
            truth = s.load_truth()
            res = behavior_result_from_labels(truth.behaviour.rename(columns={"behaviour": "label"}), truth.fps,
                                              source="synthetic truth", max_segment_s=5.0)
            res.meta["inputs"] = {"pose": str(s.root / "output" / "pose" / "poses3d.nc")}
            res.save(bdir)
        result["behavior_source"] = args.behavior
        result["n_segments"] = int(len(res.segments))
        result["n_behaviours"] = int((res.label_dictionary["label"] != "untracked").sum())
        log("timing build_report")
        path, t = timed(build_report, s.root)
        result["report_seconds"] = t
        html = path.read_text(encoding="utf-8")
        result["report_mb"] = path.stat().st_size / 1e6
        result["images"] = len(re.findall(r"<img ", html))
        m = re.search(r"report timings \(s\)</th><td><pre>(.*?)</pre>", html, re.S)
        if m:
            import html as _html

            result["report_breakdown_s"] = json.loads(_html.unescape(m.group(1)))
        ev = re.search(r'<div class="v">(\d+)</div><div class="k">social events</div>', html)
        result["social_events"] = int(ev.group(1)) if ev else None
        result["target_s"] = 30.0
        result["meets_target"] = t < 30.0
        log(f"report: {t:.1f} s, {result['report_mb']:.1f} MB -> {path}")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
