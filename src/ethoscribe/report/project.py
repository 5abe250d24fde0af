"""The project report: :func:`build_report` turns a session's saved outputs into one self-contained HTML file.

A *project* is a session folder (``session.toml``) whose outputs live in
``PROJECT/output/``::

    output/candidates.parquet      keypoint candidates (ethoscribe detect-spots; else
                                   output/pose/candidates_markers.parquet, kept by the pose run)
    output/pose/                   labels.parquet, poses3d.nc, review.csv, summary.json, trace.jsonl
    output/behavior/               result.json, labels/segments/label_dictionary .parquet, trace.jsonl
    output/**/reasoner_usage.json  language-model calls, tokens and cache hits (when a reasoner wrote it)

Every part is optional: the report shows what exists and says what is
missing. It only reads and summarises (plus cheap analytics: budgets,
bouts, transitions, social events from the saved poses); nothing expensive
is recomputed. Pages:

1. **Overview**: the session, what was found, headline figures.
2. **Pose QC**: per-camera reprojection errors, suspect cameras and
   identical calibrations, error per keypoint and camera, flags over time,
   and the ranked review list with thumbnails of the flagged frames (labels
   drawn; flagged ones ringed in red, the worst one boxed in yellow).
3. **Behaviour**: the label dictionary (definitions, captions), ethogram,
   time budgets, transitions, bout statistics and durations, and example
   frames per behaviour (a strip of stills and a short looping clip) with
   the pose drawn.
4. **Social** (two or more animals): events (approach, follow, chase,
   contact; :mod:`ethoscribe.analytics.social`), their timeline,
   nearest-neighbour distance and time in contact per pair.
5. **Provenance**: versions, session and pipeline settings, reasoner usage,
   timings.

Examples
--------
>>> path = build_report("demo/session")  # doctest: +SKIP
>>> path.name  # doctest: +SKIP
'report.html'
"""

from __future__ import annotations

import json
import os
import platform
import time
import tomllib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from ethoscribe.errors import InputError
from ethoscribe.report.html import Gallery, Image, Section, Table, render_report

OUTPUT_DIR = "output"
REPORT_FILE = "report.html"
USAGE_FILE = "reasoner_usage.json"
LABEL_COLUMNS = ["frame", "view", "individual", "keypoint", "x", "y", "confidence", "flag", "reason", "stage", "reproj_error"]


# ------------------------------------------------------------------ loading
@dataclass
class ProjectOutputs:
    """What a project folder holds, loaded for the report (every part may be None)."""

    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    skeleton: Any = None
    fps: float = 30.0
    n_frames: int = 0
    individuals: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    body_videos: dict[str, Path] = field(default_factory=dict)
    marker_videos: dict[str, Path] = field(default_factory=dict)
    candidates: dict[str, Any] | None = None
    pose_summary: dict[str, Any] | None = None
    pose_labels: pd.DataFrame | None = None
    poses3d: Any = None
    review: pd.DataFrame | None = None
    behavior: Any = None
    behavior_pose: Any = None
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative path -> reasoner_usage.json
    parts: list[tuple[str, str, str]] = field(default_factory=list)  # (part, status, detail)
    problems: list[str] = field(default_factory=list)

    @property
    def output(self) -> Path:
        return self.root / OUTPUT_DIR

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps if self.fps else 0.0


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def load_project(project_dir: str | os.PathLike[str]) -> ProjectOutputs:
    """Read a project's session description and every output that exists (see the module docstring)."""
    root = Path(project_dir)
    if root.suffix == ".toml":
        root = root.parent
    if not root.is_dir():
        raise InputError(f"{root}: project folder not found")
    root = root.resolve()
    po = ProjectOutputs(root=root)
    cfg_file = root / "session.toml"
    if cfg_file.is_file():
        try:
            po.config = tomllib.loads(cfg_file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            po.problems.append(f"session.toml is not valid TOML ({exc})")
        try:  # checked, but not loaded with its calibration (that needs aniposelib: seconds to import)
            from ethoscribe.session import SessionConfig

            SessionConfig.model_validate(po.config)
        except Exception as exc:  # a report must still be made from whatever exists
            po.problems.append(f"session.toml does not validate ({type(exc).__name__}: {exc}); what it says is used where possible")
        po.parts.append(("session", "found", "session.toml"))
    else:
        po.parts.append(("session", "missing", "no session.toml: a project is a session folder"))
    cfg = po.config
    po.fps = float(cfg.get("fps") or 0) or 30.0
    po.n_frames = int(cfg.get("n_frames") or 0)
    po.individuals = [str(x) for x in cfg.get("individuals", [])]
    for v in cfg.get("views", []) or []:
        name = str(v.get("name"))
        po.views.append(name)
        for kind, store in (("body", po.body_videos), ("markers", po.marker_videos)):
            rel = v.get(kind)
            if rel and (root / rel).is_file():
                store[name] = (root / rel).resolve()
    if cfg.get("skeleton") and (root / cfg["skeleton"]).is_file():
        try:
            from ethoscribe.skeleton import Skeleton

            po.skeleton = Skeleton.load(root / cfg["skeleton"])
        except Exception as exc:  # noqa: BLE001
            po.problems.append(f"skeleton {cfg['skeleton']!r} could not be read ({exc})")
    out = po.output

    # candidates: from `ethoscribe detect-spots`, or the marker spots the pose run detected and kept
    cp = next((p for p in (out / "candidates.parquet", out / "pose" / "candidates_markers.parquet") if p.is_file()),
              out / "candidates.parquet")
    if cp.is_file():
        try:
            import pyarrow.parquet as pq

            t = pq.read_table(cp, columns=["view"])
            counts = t.column("view").to_pandas().astype(str).value_counts().to_dict()
            po.candidates = {"path": cp, "rows": int(t.num_rows), "per_view": {str(k): int(v) for k, v in counts.items()}}
            po.parts.append(("candidates", "found", f"{_rel(cp, root)}: {t.num_rows:,} candidates"))
        except Exception as exc:  # noqa: BLE001
            po.parts.append(("candidates", "unreadable", f"{_rel(cp, root)}: {exc}"))
    else:
        po.parts.append(("candidates", "missing", "no output/candidates.parquet (ethoscribe detect-spots) "
                                                  "and no marker spots kept by the pose run"))

    # pose
    pdir = out / "pose"
    if (pdir / "summary.json").is_file() or (pdir / "labels.parquet").is_file():
        if (pdir / "summary.json").is_file():
            try:
                po.pose_summary = json.loads((pdir / "summary.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                po.problems.append(f"output/pose/summary.json is not valid JSON ({exc})")
        if (pdir / "labels.parquet").is_file():
            try:
                import pyarrow.parquet as pq

                have = set(pq.read_schema(pdir / "labels.parquet").names)
                po.pose_labels = pd.read_parquet(pdir / "labels.parquet", columns=[c for c in LABEL_COLUMNS if c in have])
            except Exception as exc:  # noqa: BLE001
                po.problems.append(f"output/pose/labels.parquet could not be read ({exc})")
        if (pdir / "poses3d.nc").is_file():
            try:
                import xarray as xr

                po.poses3d = xr.load_dataset(pdir / "poses3d.nc")
            except Exception as exc:  # noqa: BLE001
                po.problems.append(f"output/pose/poses3d.nc could not be read ({exc})")
        for name in ("review.csv", "review.parquet"):
            if (pdir / name).is_file():
                rv = pd.read_csv(pdir / name, keep_default_na=False, na_values=[""]) if name.endswith(".csv") else pd.read_parquet(pdir / name)
                po.review = rv
                break
        got = [n for n, ok in (("labels", po.pose_labels is not None), ("3D poses", po.poses3d is not None),
                               ("review list", po.review is not None), ("summary", po.pose_summary is not None)) if ok]
        po.parts.append(("pose", "found", f"output/pose/: {', '.join(got)}"))
    else:
        po.parts.append(("pose", "missing", "no output/pose/ (ethoscribe pose)"))

    # behaviour
    bdir = out / "behavior"
    if (bdir / "result.json").is_file():
        try:
            from ethoscribe.behavior.pipeline import load_behavior_result

            po.behavior = load_behavior_result(bdir)
            n_lab = int((po.behavior.label_dictionary["label"] != "untracked").sum())
            po.parts.append(("behaviour", "found", f"output/behavior/: {n_lab} behaviours, {len(po.behavior.segments)} segments"))
        except Exception as exc:  # noqa: BLE001
            po.parts.append(("behaviour", "unreadable", f"output/behavior/: {exc}"))
    else:
        po.parts.append(("behaviour", "missing", "no output/behavior/result.json (ethoscribe behavior)"))

    # reasoner usage
    for p in sorted(out.glob(f"**/{USAGE_FILE}")) if out.is_dir() else []:
        try:
            po.usage[_rel(p, root)] = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            po.problems.append(f"{_rel(p, root)} is not valid JSON")

    # fill what the session did not say
    if not po.n_frames:
        if po.behavior is not None:
            po.n_frames = int(po.behavior.meta.get("n_frames") or po.behavior.labels["frame"].max() + 1)
        elif po.pose_labels is not None and len(po.pose_labels):
            po.n_frames = int(po.pose_labels["frame"].max()) + 1
        elif po.poses3d is not None:
            po.n_frames = int(po.poses3d.sizes["time"])
    if not cfg.get("fps"):
        if po.behavior is not None and po.behavior.meta.get("fps"):
            po.fps = float(po.behavior.meta["fps"])
        elif po.poses3d is not None and po.poses3d.attrs.get("fps"):
            po.fps = float(po.poses3d.attrs["fps"])
    if not po.individuals:
        src = (po.behavior.individuals if po.behavior is not None else
               list(map(str, po.poses3d["individuals"].values)) if po.poses3d is not None else [])
        po.individuals = list(src)
    if not po.views and po.pose_summary:
        po.views = list(po.pose_summary.get("views", []))
    # the pose the behaviour was computed from, when there are no 3D poses
    if po.poses3d is None and po.behavior is not None:
        p = (po.behavior.meta.get("inputs") or {}).get("pose")
        if p and Path(p).is_file():
            try:
                from ethoscribe.behavior.features import load_pose

                po.behavior_pose = load_pose(p, fps=po.fps)
            except Exception as exc:  # noqa: BLE001
                po.problems.append(f"the behaviour's pose file {p} could not be read ({exc})")
    return po


# ------------------------------------------------------------- small helpers
def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if not np.isfinite(x):
            return "-"
        return f"{x:.{nd}f}"
    return str(x)


def _pct(x: float | None, nd: int = 1) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.{nd}f} %"


def _swatch(label: str, color: str) -> Markup:
    return Markup('<span class="swatch" style="background:{}"></span>{}').format(color, label)


def _img_tag(data: bytes, mime: str, alt: str) -> Markup:
    im = Image(data, alt=alt, mime=mime)
    return Markup('<img src="{}" alt="{}">').format(im.data_url, alt)


def _keypoint_colors(skeleton: Any, keypoints: Sequence[str]) -> list[str]:
    from ethoscribe.report.figures import PALETTE

    if skeleton is not None and getattr(skeleton, "regions", None):
        regions = list(skeleton.regions)
        out = []
        for k in keypoints:
            try:
                out.append(PALETTE[regions.index(skeleton.region_of(k)) % len(PALETTE)])
            except Exception:  # noqa: BLE001
                out.append("#ffffff")
        return out
    return [PALETTE[i % len(PALETTE)] for i in range(len(keypoints))]


def _edges(skeleton: Any, keypoints: Sequence[str]) -> list[tuple[int, int]]:
    if skeleton is None:
        return []
    idx = {k: i for i, k in enumerate(keypoints)}
    return [(idx[a], idx[b]) for a, b in getattr(skeleton, "edges", ()) if a in idx and b in idx]


class _Overlay:
    """2D keypoints of every animal in one view, for chosen frames, from the pose labels table."""

    def __init__(self, labels: pd.DataFrame, view: str, frames: Sequence[int], keypoints: Sequence[str],
                 individuals: Sequence[str]) -> None:
        self.keypoints = list(keypoints)
        self.individuals = list(individuals)
        fr = np.asarray(sorted(set(int(f) for f in frames)), np.int64)
        self.frames = fr
        F, K, I = len(fr), len(self.keypoints), len(self.individuals)
        self.xy = np.full((F, I, K, 2), np.nan)
        self.flag = np.zeros((F, I, K), bool)
        if not F:
            return
        v = labels["view"].to_numpy()
        sel = (v == view) & np.isin(labels["frame"].to_numpy(), fr)
        sub = labels[sel]
        f_i = np.searchsorted(fr, sub["frame"].to_numpy())
        k_i = sub["keypoint"].map({k: i for i, k in enumerate(self.keypoints)}).to_numpy()
        a_i = sub["individual"].map({a: i for i, a in enumerate(self.individuals)}).to_numpy()
        ok = ~(pd.isna(k_i) | pd.isna(a_i))
        f_i, k_i, a_i = f_i[ok], k_i[ok].astype(int), a_i[ok].astype(int)
        self.xy[f_i, a_i, k_i, 0] = sub["x"].to_numpy(float)[ok]
        self.xy[f_i, a_i, k_i, 1] = sub["y"].to_numpy(float)[ok]
        if "flag" in sub:
            self.flag[f_i, a_i, k_i] = sub["flag"].to_numpy(bool)[ok]

    def at(self, frame: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        j = int(np.searchsorted(self.frames, frame))
        if j >= len(self.frames) or self.frames[j] != frame:
            return {}, {}
        return ({a: self.xy[j, i] for i, a in enumerate(self.individuals)},
                {a: self.flag[j, i] for i, a in enumerate(self.individuals)})


def _overlay_from_pose(ds: Any, frames: Sequence[int]) -> _Overlay | None:
    """An overlay from a 2D pose dataset (the behaviour's input) when there is no labels table."""
    from ethoscribe.analytics.social import pose_array

    try:
        arr, kps, inds, _ = pose_array(ds)
    except Exception:  # noqa: BLE001
        return None
    if arr.shape[1] != 2:
        return None
    o = _Overlay.__new__(_Overlay)
    o.keypoints, o.individuals = kps, inds
    fr = np.asarray(sorted({int(f) for f in frames if 0 <= int(f) < arr.shape[0]}), np.int64)
    o.frames = fr
    o.xy = np.transpose(arr[fr], (0, 3, 2, 1)) if len(fr) else np.zeros((0, len(inds), len(kps), 2))
    o.flag = np.zeros(o.xy.shape[:3], bool)
    return o


def _body_view(po: ProjectOutputs) -> str | None:
    """The view whose body video shows the behaviour (the first with one; 'top' when so named)."""
    if not po.body_videos:
        return None
    for name in po.body_videos:
        if "top" in name.lower():
            return name
    return next(iter(po.body_videos))


# ------------------------------------------------------------------ overview
def _overview(po: ProjectOutputs, extra: dict[str, str]) -> Section:
    name = po.config.get("name") or po.root.name
    figures = {
        "session": str(name),
        "recording": f"{po.n_frames:,} frames @ {po.fps:g} fps ({po.duration_s:.1f} s)",
        "views": str(len(po.views)) if po.views else "-",
        "animals": str(len(po.individuals)) if po.individuals else "-",
        **extra,
    }
    rows = [[p, Markup('<span class="ok">found</span>') if s == "found" else Markup('<span class="flag">{}</span>').format(s), d]
            for p, s, d in po.parts]
    sec = Section("Overview", "overview", figures=figures, tables=[Table(["part", "status", "detail"], rows, "What this project holds")])
    sec.paragraphs.append(Markup("Project folder <code>{}</code>. Views: {}. Animals: {}.").format(
        str(po.root), ", ".join(po.views) or "-", ", ".join(po.individuals) or "-"))
    if po.usage:
        keys = ("calls", "cache_hits", "cache_misses", "prompt_tokens", "completion_tokens", "fallbacks", "failures", "call_s")
        rows = []
        for path, u in po.usage.items():
            for step, d in [("all steps", u), *sorted((u.get("steps") or {}).items())]:
                rows.append([path, step] + [d.get(k, "-") for k in keys] + [_pct(d.get("cache_hit_rate")) if d.get("cache_hit_rate") is not None else "-"])
        tot_calls = sum(int(u.get("calls", 0) or 0) for u in po.usage.values())
        tot_hits = sum(int(u.get("cache_hits", 0) or 0) for u in po.usage.values())
        sec.figures["reasoner calls"] = f"{tot_calls:,} ({tot_hits:,} cache hits)"
        sec.subsections.append(Section("Reasoner usage", "usage", tables=[Table(
            ["file", "step", "calls", "cache hits", "cache misses", "prompt tokens", "completion tokens", "fallbacks",
             "failures", "call time (s)", "hit rate"], rows, "Language-model calls recorded by the reasoners (reasoner_usage.json)")]))
    missing = [p for p, s, _ in po.parts if s != "found"]
    if missing:
        sec.notes.append("Not in this project (so not in this report): " + ", ".join(missing) + ".")
    sec.notes.extend(po.problems)
    return sec


# ------------------------------------------------------------------ pose QC
def _pose_section(po: ProjectOutputs, n_thumbs: int, timings: dict[str, float]) -> tuple[Section, dict[str, str]]:
    from ethoscribe.report.plots import flags_over_time, pose_thumbnail, read_frames, reprojection_error_plot, crop_box, encode_image

    sec = Section("Pose QC", "pose")
    headline: dict[str, str] = {}
    if po.pose_summary is None and po.pose_labels is None:
        sec.notes.append("No pose outputs (output/pose/): run `ethoscribe pose SESSION` to label keypoints; "
                         "this page then shows per-camera errors, flags and the frames worth a look.")
        return sec, headline
    s = po.pose_summary or {}
    lab = po.pose_labels
    if s.get("note"):
        sec.notes.append(str(s["note"]))
    L = s.get("labels", {})
    rows_total = L.get("rows") or (len(lab) if lab is not None else 0)
    labelled = L.get("labelled")
    if labelled is None and lab is not None:
        labelled = int(np.isfinite(lab["x"].to_numpy(float)).sum())
    sec.figures = {
        "labels": f"{labelled or 0:,} of {rows_total:,}",
        "flagged": f"{L.get('flagged', 0):,} ({_pct(L.get('flagged_labelled_fraction'))} of labels)",
        "mean confidence": _fmt(L.get("mean_confidence"), 3),
        "3D points": _pct((s.get("poses3d", {}).get("points") or 0) / max(1, s.get("poses3d", {}).get("of") or 1)) if s.get("poses3d") else "-",
        "frames to review": f"{len(po.review) if po.review is not None else 0:,}",
        "reasoner": str(s.get("reasoner", "-")),
    }
    headline["pose labels flagged"] = _pct(L.get("flagged_labelled_fraction"))
    # cameras
    sus = {d.get("camera"): d for d in s.get("suspect_cameras", [])}
    for d in s.get("suspect_cameras", []):
        sec.notes.append(f"Suspect camera {d.get('camera')}: {d.get('reason')}")
    for d in s.get("duplicate_calibrations", []):
        sec.notes.append(f"Identical calibrations of {' and '.join(d.get('cameras', []))}: {d.get('note')}")
    if not sus:
        sec.paragraphs.append("No camera was found suspect: every camera's labels agree with the 3D points the other views agree on.")
    cams = s.get("cameras", {})
    if cams:
        rows = []
        for cam, c in cams.items():
            status = Markup('<span class="flag">suspect</span>') if cam in sus else Markup('<span class="ok">ok</span>')
            rows.append([cam, status, f"{c.get('labels', 0):,}", f"{c.get('candidate_labels', 0):,}",
                         _fmt(c.get("median_reproj_error_px")), _fmt(c.get("p90_reproj_error_px")),
                         _pct(c.get("disagreeing_fraction")), _fmt(c.get("seed_median_error_px"))])
        sec.tables.append(Table(["camera", "status", "labels", "from candidates", "median error (px)", "90th pct (px)",
                                 "disagreeing", "seed error (px)"], rows, "Per camera"))
    by_reason = L.get("flagged_by_reason") or {}
    if by_reason:
        sec.tables.append(Table(["reason", "flagged labels"], [[k, f"{v:,}"] for k, v in by_reason.items() if v],
                                "Flagged labels by reason (a label may have several)"))
    t = time.perf_counter()
    if lab is not None and len(lab):
        stage = lab["stage"].astype(str).to_numpy() if "stage" in lab else np.full(len(lab), "assignment")
        err = lab["reproj_error"].to_numpy(float) if "reproj_error" in lab else np.full(len(lab), np.nan)
        m = np.isfinite(err) & ~np.isin(stage, ["seed", "reprojection"])
        if m.any():
            kp_order = list(po.skeleton.keypoints) if po.skeleton is not None else list(pd.unique(lab["keypoint"]))
            view_order = po.views or list(pd.unique(lab["view"]))
            sec.images.append(Image.from_figure(reprojection_error_plot(lab.loc[m, ["view", "keypoint", "reproj_error"]],
                                                                        orders={"keypoint": kp_order, "view": view_order}),
                                                "Reprojection error of the labels taken from candidates (px): how far each "
                                                "2D label lies from the reprojection of its keypoint's 3D point."))
        if "flag" in lab:
            fl = lab.loc[lab["flag"].to_numpy(bool), ["frame", "reason"]]
            per_frame = len(lab) / max(1, lab["frame"].nunique())
            sec.images.append(Image.from_figure(
                flags_over_time(fl, po.fps, max(po.n_frames, int(lab["frame"].max()) + 1), int(round(per_frame))),
                "Fraction of labels flagged over time, by (first) reason. Bursts point at occlusions, fast motion "
                "or identity trouble; a steady level in one reason at a camera problem."))
    timings["pose plots"] = time.perf_counter() - t

    # review list with thumbnails
    t = time.perf_counter()
    rv = po.review
    if rv is not None and len(rv):
        top = rv.head(max(20, n_thumbs)).copy()
        thumbs: dict[int, Markup] = {}
        if lab is not None and n_thumbs > 0:
            want = top.head(n_thumbs)
            by_view: dict[str, list[int]] = {}
            worst: dict[int, tuple[str, str, str]] = {}
            for r in want.itertuples(index=False):
                parts = str(getattr(r, "worst_label", "") or "").split("/")
                if len(parts) == 3:
                    worst[int(r.frame)] = (parts[0], parts[1], parts[2])
                    by_view.setdefault(parts[0], []).append(int(r.frame))
            kps = list(po.skeleton.keypoints) if po.skeleton is not None else list(dict.fromkeys(lab["keypoint"].astype(str)))
            inds = po.individuals or list(dict.fromkeys(lab["individual"].astype(str)))
            kcol = _keypoint_colors(po.skeleton, kps)
            edges = _edges(po.skeleton, kps)
            fallback = _body_view(po)
            for wview, frames in list(by_view.items()):
                if wview not in po.body_videos and wview not in po.marker_videos and fallback is not None:
                    by_view.setdefault(fallback, []).extend(frames)
                    del by_view[wview]
            for view, frames in by_view.items():
                video = po.body_videos.get(view) or po.marker_videos.get(view)
                if video is None:
                    continue
                try:
                    imgs = read_frames(video, frames)
                except Exception as exc:  # noqa: BLE001
                    sec.notes.append(f"Could not read frames of {video.name} for thumbnails ({exc}).")
                    continue
                ov = _Overlay(lab, view, frames, kps, inds)
                for f in frames:
                    if f not in imgs:
                        continue
                    poses, flags = ov.at(f)
                    _, ind, kp = worst[f]
                    pts = poses.get(ind)
                    if pts is None:
                        continue
                    box = crop_box(pts, imgs[f].shape[:2], pad=0.6, min_side=90)
                    mark = tuple(pts[kps.index(kp)]) if (kp in kps and worst[f][0] == view) else None
                    im = pose_thumbnail(imgs[f], poses, box, size=200, focus=ind, keypoint_colors=kcol, edges=edges,
                                        flagged=flags, mark=mark, caption=f"frame {f} · {view} · {ind}")
                    thumbs[f] = _img_tag(encode_image(im, "JPEG"), "image/jpeg", f"frame {f} {view}")
        rows = [[int(r.rank), int(r.frame), _fmt(float(r.time_s)), _fmt(float(r.score), 1), int(r.n_flagged),
                 str(r.reasons).replace(";", "; "), str(r.worst_label), thumbs.get(int(r.frame), "")]
                for r in top.itertuples(index=False)]
        sub = Section("Review list", "review", tables=[Table(
            ["rank", "frame", "time (s)", "score", "flagged", "reasons", "worst label", "view"], rows,
            f"The {len(top)} frames most worth a person's time (of {len(rv):,} with flags)")])
        sub.paragraphs.append("Thumbnails show the view of the worst label (or, when that view has no video, the view with "
                              "the body video), cropped to its animal: labels are coloured by body region, flagged labels "
                              "ringed in red, the worst label boxed in yellow.")
        sec.subsections.append(sub)
    timings["review thumbnails"] = time.perf_counter() - t
    return sec, headline


# ---------------------------------------------------------------- behaviour
def _examples(po: ProjectOutputs, bouts_df: pd.DataFrame, colors: dict[str, str], labels_order: list[str],
              max_examples: int, clips: bool, sec: Section) -> None:
    from ethoscribe.report.plots import animated_gif, crop_box, encode_image, image_strip, pose_thumbnail, read_frames

    view = _body_view(po)
    if view is None:
        sec.notes.append("No body video in the session, so no example frames (add a `body` video to a view in session.toml).")
        return
    video = po.body_videos[view]
    fps = po.fps
    picks: dict[str, list[tuple[str, int, int, int]]] = {}
    for lab in labels_order:
        b = bouts_df[bouts_df["label"] == lab].copy()
        if not len(b):
            continue
        b["len"] = b["end_frame"] - b["start_frame"]
        chosen: list[tuple[str, int, int, int]] = []
        # longest bouts first, alternating animals, spread in time
        per_ind = {ind: g.sort_values("len", ascending=False) for ind, g in b.groupby("individual", sort=True)}
        k = 0
        while len(chosen) < max_examples and any(k < len(g) for g in per_ind.values()):
            for ind, g in per_ind.items():
                if k < len(g) and len(chosen) < max_examples:
                    r = g.iloc[k]
                    chosen.append((ind, int(r["start_frame"]), int(r["end_frame"]), (int(r["start_frame"]) + int(r["end_frame"])) // 2))
            k += 1
        picks[lab] = chosen
    frames = {c[3] for v in picks.values() for c in v}
    clip_frames: dict[str, list[int]] = {}
    if clips:
        for lab, ch in picks.items():
            if not ch:
                continue
            ind, s, e, mid = ch[0]
            half = int(round(0.6 * fps))
            step = max(1, int(round(fps / 10)))
            fr = list(range(max(s, mid - half), min(e, mid + half), step))[:14]
            if len(fr) >= 3:
                clip_frames[lab] = fr
                frames.update(fr)
    try:
        imgs = read_frames(video, frames)
    except Exception as exc:  # noqa: BLE001
        sec.notes.append(f"Could not read {video.name} for example frames ({exc}).")
        return
    if po.pose_labels is not None:
        kps = list(po.skeleton.keypoints) if po.skeleton is not None else list(dict.fromkeys(po.pose_labels["keypoint"].astype(str)))
        ov: _Overlay | None = _Overlay(po.pose_labels, view, sorted(frames), kps, po.individuals)
    elif po.behavior_pose is not None:
        ov = _overlay_from_pose(po.behavior_pose, sorted(frames))
        kps = ov.keypoints if ov is not None else []
    else:
        ov, kps = None, []
    edges = _edges(po.skeleton, kps)
    strips, gifs = [], []
    for lab in labels_order:
        ch = picks.get(lab)
        if not ch:
            continue
        tiles = []
        for ind, s, e, mid in ch:
            if mid not in imgs:
                continue
            poses = ov.at(mid)[0] if ov is not None else {}
            pts = poses.get(ind)
            box = crop_box(pts, imgs[mid].shape[:2], pad=0.7, min_side=110) if pts is not None else None
            tiles.append(pose_thumbnail(imgs[mid], poses, box, size=180, focus=ind, focus_color=colors[lab], edges=edges,
                                        caption=f"{ind} · {mid / fps:.1f} s"))
        if tiles:
            strips.append(Image(encode_image(image_strip(tiles), "JPEG"), caption=f"{lab}: {len(tiles)} example(s), the "
                                f"longest bouts, middle frame; the animal doing it drawn in the behaviour's colour",
                                alt=f"examples of {lab}", mime="image/jpeg"))
        if lab in clip_frames:
            ind, s, e, mid = ch[0]
            fr = [f for f in clip_frames[lab] if f in imgs]
            poses_mid = ov.at(mid)[0] if ov is not None else {}
            pts = poses_mid.get(ind)
            box = crop_box(pts, imgs[fr[0]].shape[:2], pad=1.0, min_side=130) if pts is not None else None
            tiles = [pose_thumbnail(imgs[f], ov.at(f)[0] if ov is not None else {}, box, size=170, focus=ind,
                                    focus_color=colors[lab], edges=edges) for f in fr]
            gifs.append(Image(animated_gif(tiles, fps=10), caption=f"{lab} ({ind}, {fr[0] / fps:.1f}-{fr[-1] / fps:.1f} s)",
                              alt=f"clip of {lab}", mime="image/gif"))
    sub = Section("Examples", "examples", images=strips)
    sub.paragraphs.append(f"Frames from the body video of view {view}, cropped to the animal; its pose is drawn over it.")
    if gifs:
        sub.galleries.append(Gallery("Clips", gifs, "About 1 s around the middle of the longest bout of each behaviour, at 10 frames/s, looping."))
    sec.subsections.append(sub)


def _behavior_section(po: ProjectOutputs, colors: dict[str, str], social: Any, max_examples: int, clips: bool,
                      timings: dict[str, float]) -> tuple[Section, dict[str, str], pd.DataFrame | None]:
    from ethoscribe.analytics.timeline import POOLED, bout_statistics, bouts, time_budgets, transition_matrices
    from ethoscribe.report.plots import bout_duration_histograms, ethogram, time_budget_bars, transition_heatmap

    sec = Section("Behaviour", "behaviour")
    if po.behavior is None:
        sec.notes.append("No behaviour result (output/behavior/): run `ethoscribe behavior` to discover and name "
                         "behaviours; this page then shows the label dictionary, ethogram, budgets, transitions and examples.")
        return sec, {}, None
    t = time.perf_counter()
    res = po.behavior
    labels = res.labels[["frame", "individual", "label"]]
    fps = float(res.meta.get("fps") or po.fps)
    inds = res.individuals
    b = bouts(labels, fps)
    budgets = time_budgets(labels, fps)
    stats = bout_statistics(labels, fps)
    ld = res.label_dictionary
    order = [x for x in ld["label"].astype(str) if x != "untracked"] + (["untracked"] if "untracked" in set(ld["label"]) else [])
    order += sorted(set(labels["label"]) - set(order))
    mats = transition_matrices(labels, labels_order=[x for x in order if x != "untracked"])
    timings["behaviour analytics"] = time.perf_counter() - t
    n_beh = len([x for x in order if x != "untracked"])
    dur = float(po.n_frames / fps) if po.n_frames else float(labels["frame"].max() + 1) / fps
    sec.figures = {"behaviours": str(n_beh), "segments": f"{len(res.segments):,}", "bouts": f"{len(b):,}",
                   "animals": str(len(inds)), "method": " + ".join(str(res.meta.get(k)) for k in ("clusterer", "captioner", "merger")
                                                                  if res.meta.get(k)) or str(res.meta.get("source", "-"))}
    # dictionary
    tot = budgets.groupby("label")["seconds"].sum()
    nb = b.groupby("label").size()
    rows = []
    for r in ld.itertuples(index=False):
        lab = str(r.label)
        rows.append([_swatch(lab, colors.get(lab, "#999")), str(r.definition or ""), str(r.caption or "")[:300],
                     str(r.clusters or ""), _fmt(float(tot.get(lab, 0.0)), 1), _pct(float(tot.get(lab, 0.0)) / max(dur * len(inds), 1e-9)),
                     int(nb.get(lab, 0))])
    sub = Section("Label dictionary", "dictionary", tables=[Table(
        ["behaviour", "definition", "caption", "clusters", "time (s, all animals)", "share", "bouts"], rows,
        "Named behaviours with their definitions and a representative caption")])
    sec.subsections.append(sub)
    # plots
    t = time.perf_counter()
    ev = social.events if social is not None else None
    plots = Section("Timeline and budgets", "ethogram")
    plots.images.append(Image.from_figure(ethogram(b, inds, dur, colors, events=ev),
                                          "Ethogram: each animal's behaviour over time" +
                                          (" (thin strip: social events the animal is the actor of)" if ev is not None and len(ev) else "") + "."))
    plots.images.append(Image.from_figure(time_budget_bars(budgets, inds, colors), "Time budgets: fraction of each animal's time per behaviour."))
    sec.subsections.append(plots)
    tr = Section("Transitions", "transitions")
    tr.images.append(Image.from_figure(transition_heatmap(mats[POOLED], colors, "Transitions, all animals"),
                                       "Probability that a bout of the row's behaviour is followed by one of the column's "
                                       "(self-transitions excluded; untracked stretches skipped); numbers are counts."))
    if len(inds) > 1:
        rows = [[ind, mats[ind].total] + [", ".join(f"{a}\u2192{c}" for a, c, _ in _top_pairs(mats[ind], 3))] for ind in inds]
        tr.tables.append(Table(["animal", "transitions", "most frequent"], rows, "Per animal"))
    sec.subsections.append(tr)
    bt = Section("Bouts", "bouts")
    bt.images.append(Image.from_figure(bout_duration_histograms(b, colors, [x for x in order if x in set(b["label"])]),
                                       "Bout durations per behaviour (all animals; dashed: median)."))
    st_rows = [[ind, _swatch(lab, colors.get(lab, "#999")), int(n), _fmt(tt, 1), _fmt(m), _fmt(md), _fmt(lat, 1), _pct(fr)]
               for ind, lab, n, tt, m, md, _mx, lat, fr in stats.itertuples(index=False) if n > 0]
    bt.tables.append(Table(["animal", "behaviour", "bouts", "total (s)", "mean (s)", "median (s)", "latency (s)", "share"],
                           st_rows, "Bout statistics per animal (latency: time to the first bout)", collapsed=len(st_rows) > 30))
    sec.subsections.append(bt)
    timings["behaviour plots"] = time.perf_counter() - t
    t = time.perf_counter()
    if max_examples > 0:
        _examples(po, b, colors, [x for x in order if x != "untracked"], max_examples, clips, sec)
    timings["example frames"] = time.perf_counter() - t
    top = budgets[budgets["label"] != "untracked"].groupby("label")["seconds"].sum().sort_values(ascending=False)
    head = {"behaviours": str(n_beh)}
    if len(top):
        head["most common behaviour"] = f"{top.index[0]} ({_pct(top.iloc[0] / max(dur * len(inds), 1e-9), 0)})"
    return sec, head, budgets


def _top_pairs(m: Any, k: int) -> list[tuple[str, str, int]]:
    c = m.counts
    idx = np.dstack(np.unravel_index(np.argsort(-c, axis=None), c.shape))[0][:k]
    return [(m.labels[i], m.labels[j], int(c[i, j])) for i, j in idx if c[i, j] > 0]


# ------------------------------------------------------------------ social
def _social_pose(po: ProjectOutputs) -> Any:
    return po.poses3d if po.poses3d is not None else po.behavior_pose


def _social_section(po: ProjectOutputs, social: Any, colors: dict[str, str], error: str | None) -> Section:
    from ethoscribe.analytics.social import EVENT_KINDS
    from ethoscribe.report.plots import nearest_neighbour_plot, social_timeline

    sec = Section("Social", "social")
    if error:
        sec.notes.append(error)
        return sec
    ev = social.events
    u = social.unit
    inds = social.individuals
    counts = ev["kind"].value_counts().to_dict() if len(ev) else {}
    sec.figures = {k: str(counts.get(k, 0)) for k in EVENT_KINDS}
    sec.paragraphs.append(
        f"Events between animals from the {'3D' if po.poses3d is not None else 'saved'} poses ({u}). Definitions: "
        "chase and follow: the actor stays behind a moving partner (partner ahead within the bearing limit, actor on the line "
        "behind it, similar directions), both fast for a chase; approach: the actor moves towards the partner and the "
        "distance shrinks; contact: the two bodies within the contact distance (actor: the animal whose head was nearer "
        "the other's body). Thresholds below" + (f" (scaled from the mm defaults by the animals' body length, x{social.scale:.3g})"
                                                  if social.scale != 1 else "") + ".")
    sec.images.append(Image.from_figure(social_timeline(ev, inds, po.duration_s or float(social.nearest["time_s"].max()), colors),
                                        "Social events per ordered pair (actor \u2192 partner) over time."))
    c = social.counts()
    if len(c):
        sec.tables.append(Table(["event", "actor", "partner", "events", "total (s)", "mean (s)"],
                                [[_swatch(k, colors.get(k, "#999")), a, p, int(n), _fmt(tt, 1), _fmt(m)]
                                 for k, a, p, n, tt, m in c.itertuples(index=False)], "Events per kind and pair"))
    else:
        sec.notes.append("No social event met the thresholds.")
    if len(ev):
        rows = [[_swatch(r.kind, colors.get(r.kind, "#999")), r.actor, r.partner, _fmt(r.start_s), _fmt(r.end_s), _fmt(r.duration_s),
                 _fmt(r.distance_start, 0), _fmt(r.distance_end, 0), _fmt(r.min_distance, 0), _fmt(r.actor_speed, 0),
                 _fmt(r.partner_speed, 0)] for r in ev.itertuples(index=False)]
        sec.tables.append(Table(["event", "actor", "partner", "start (s)", "end (s)", "duration (s)", f"distance start ({u})",
                                 f"end ({u})", f"min ({u})", f"actor speed ({u}/s)", f"partner speed ({u}/s)"], rows,
                                f"All {len(ev)} events", collapsed=True))
    grp = Section("Group", "group")
    grp.images.append(Image.from_figure(nearest_neighbour_plot(social.nearest, inds, u, None),
                                        "Each animal's distance to its nearest neighbour (body centres, 1 s medians)."))
    grp.tables.append(Table(["animal", "animal", "time in contact (s)", "share of tracked time"],
                            [[a, b_, _fmt(s_, 1), _pct(f)] for a, b_, _n, s_, f in social.contact.itertuples(index=False)],
                            "Time in contact per pair (bodies within the contact distance)"))
    th = social.thresholds
    grp.tables.append(Table(["threshold", "value"], [[k, _fmt(v, 3) if isinstance(v, float) else str(v)] for k, v in th.items()],
                            f"Thresholds used (lengths in {u}, speeds in {u}/s, times in s, angles in degrees)", collapsed=True))
    sec.subsections.append(grp)
    return sec


# ---------------------------------------------------------------- provenance
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("ethoscribe", "numpy", "pandas", "xarray", "movement", "matplotlib", "jinja2", "pillow", "pynwb", "torch",
                "scikit-learn", "sleap-io"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def _provenance(po: ProjectOutputs, timings: dict[str, float], social: Any) -> dict[str, Any]:
    prov: dict[str, Any] = {"versions": _versions(), "project": str(po.root)}
    if po.config:
        prov["session.toml"] = po.config
    s = po.pose_summary or {}
    if s:
        prov["pose"] = {k: s.get(k) for k in ("reasoner", "candidates", "seeds", "thresholds", "resume") if k in s}
        prov["pose timings (s)"] = s.get("timings_s", {})
    if po.behavior is not None:
        m = po.behavior.meta
        prov["behaviour"] = {k: m.get(k) for k in ("clusterer", "captioner", "merger", "n_clusters", "seed", "video_features",
                                                   "inputs", "params", "source") if m.get(k) is not None}
        prov["behaviour timings (s)"] = m.get("timings", {})
    if po.usage:
        prov["reasoner calls"] = po.usage
    else:
        prov["reasoner calls"] = f"no {USAGE_FILE} in output/: no language-model reasoner recorded calls (deterministic reasoners)"
    if social is not None:
        prov["social thresholds"] = social.thresholds
    prov["report timings (s)"] = {k: round(v, 3) for k, v in timings.items()}
    return prov


# ------------------------------------------------------------------ the report
def build_report(
    project_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    *,
    social_params: Any = None,
    max_examples: int = 4,
    clips: bool = True,
    review_thumbnails: int = 12,
    title: str | None = None,
    extra_sections: Sequence[Section] = (),
) -> Path:
    """Write the project's report as one self-contained HTML file and return its path.

    Parameters
    ----------
    project_dir
        The session folder (with ``session.toml``; outputs in ``output/``).
    out_path
        Where to write (default ``PROJECT/output/report.html``).
    social_params
        :class:`~ethoscribe.analytics.social.SocialParams` for the social events.
    max_examples
        Example frames per behaviour (0: none).
    clips
        Add a short looping clip (animated GIF) per behaviour.
    review_thumbnails
        Thumbnails for the first frames of the review list (0: none).
    title
        Report title (default: the session name).
    extra_sections
        Sections placed after the overview (the demo adds its accuracy
        against the synthetic ground truth).

    Raises
    ------
    InputError
        When the folder does not exist or the report cannot be written.
    """
    from ethoscribe.analytics.social import EVENT_KINDS, social_analysis
    from ethoscribe.report.plots import behavior_colors

    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    po = load_project(project_dir)
    timings["load outputs"] = time.perf_counter() - t
    target = Path(out_path) if out_path is not None else po.output / REPORT_FILE
    labels_all = list(po.behavior.label_dictionary["label"].astype(str)) if po.behavior is not None else []
    if po.behavior is not None:
        labels_all += list(set(po.behavior.labels["label"].astype(str)))
    colors = behavior_colors(labels_all + list(EVENT_KINDS))

    # social events (cheap, from the saved poses)
    t = time.perf_counter()
    social, social_error = None, None
    pose = _social_pose(po)
    n_ind = int(pose.sizes.get("individuals", 1)) if pose is not None else len(po.individuals)
    if n_ind < 2:
        social_error = "One animal: no social events." if pose is not None or po.individuals else None
    elif pose is None:
        social_error = ("Social events need poses: no output/pose/poses3d.nc and no pose file recorded by the behaviour run.")
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                social = social_analysis(pose, social_params, fps=po.fps)
        except Exception as exc:  # noqa: BLE001
            social_error = f"Social events could not be computed ({type(exc).__name__}: {exc})."
    timings["social events"] = time.perf_counter() - t

    pose_sec, pose_head = _pose_section(po, review_thumbnails, timings)
    beh_sec, beh_head, _ = _behavior_section(po, colors, social, max_examples, clips, timings)
    t = time.perf_counter()
    sections = [None, *extra_sections, pose_sec, beh_sec]
    if social is not None or (social_error and n_ind >= 2):
        sections.append(_social_section(po, social, colors, social_error))
    timings["social page"] = time.perf_counter() - t
    extra = {**pose_head, **beh_head}
    if social is not None:
        extra["social events"] = str(len(social.events))
    sections[0] = _overview(po, extra)
    timings["total before writing"] = time.perf_counter() - t_all
    prov = _provenance(po, timings, social)
    name = po.config.get("name") or po.root.name
    try:
        return render_report(target, title or f"ethoscribe report: {name}", [s for s in sections if s is not None],
                             subtitle=f"{po.root} · {po.n_frames:,} frames @ {po.fps:g} fps · "
                                      f"{len(po.individuals)} animal(s) · {len(po.views)} view(s)",
                             provenance=prov)
    except OSError as exc:
        raise InputError(f"{target}: cannot write the report ({exc})") from None
