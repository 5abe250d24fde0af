"""The pose pipeline: from candidates and seed frames to checked labels and 3D poses.

Setup (once): the seed frames are checked (which cameras agree, see
:mod:`ethoscribe.pose.seedcheck`), triangulated, and turned into a body
template (:class:`~ethoscribe.pose.model.BodyTemplate`), an appearance model,
the label noise of the candidates (from which the cross-view inlier
threshold follows: ``inlier_sigmas`` x noise, at least ``min_threshold_px``),
the body's history-free structure (rigid keypoint pairs, left/right and
front/back order, :class:`~ethoscribe.pose.association.BodyStructure`) and
how often a 3D point seen by ``n`` views is a real marker
(:func:`~ethoscribe.pose.association.support_costs`). Nothing is tuned to a
data set: scales are measured on the seeds and then on the tracked frames.

Tracking: every stretch between two seed frames is tracked from both of its
ends (forward from the seed before, backward from the seed after); frames
before the first seed backward from it, frames after the last seed forward
from it. Per frame:

1. **region localisation** (reasoner): the 3D pose is predicted by a
   constant-velocity (alpha-beta) filter per keypoint, moved with the
   coherent motion of each keypoint's neighbourhood
   (:func:`~ethoscribe.pose.association.group_shift`); a lost keypoint is
   placed by the animal's online body template fitted to its tracked
   keypoints (it was lost because it moved where its velocity did not say:
   extrapolating that velocity sends it onto another keypoint's marker);
   the prediction is projected into every view, and each body region gets a
   box of ``gate`` prediction standard deviations around its keypoints. A
   seed frame takes the seed labels.
2. **intra-region assignment** (reasoner): candidates in a box to the
   region's keypoints (the geometric reasoner: Hungarian on motion, shape,
   appearance and hint costs, "no candidate" allowed).
3. **cross-region agreement** (reasoner, enforced on receipt): no candidate
   used twice, across regions and animals.
4. **cross-view refinement** (geometry, always; :func:`~ethoscribe.pose.stages.refine_frame`):
   candidates are matched across views into 3D points, keypoints (all
   animals together) are associated to those points in 3D (motion, shape
   context, rigid distances, support, the animal's envelope, agreement with
   the reasoner), the result is checked against the history-free body
   structure and repaired, and the 2D labels are the points' candidates,
   view by view; views where a point has no candidate get its reprojection.

Only confidently associated keypoints teach the tracker (its online
template, its residual scales, whether seed-rigid pairs stay rigid and
seed-ordered pairs ordered): a wrong identity must not become the model
that keeps it. For the same reason a rigid triangle (the head) whose
distances are off by name but not in shape (two of its markers' names
exchanged) does not count against its pairs
(:func:`~ethoscribe.pose.association.rigid_measured`).

The two passes are then reconciled keypoint by keypoint
(:func:`~ethoscribe.pose.outputs.merge_passes`): where they agree the labels
are confirmed, where they disagree the one that joins the agreed track
without a jump is kept; keypoints neither pass observed are bridged over
short gaps (:func:`~ethoscribe.pose.outputs.fill_gaps`); confidence and flags
follow (:func:`~ethoscribe.pose.outputs.label_quality`).

After each chunk the tracker states and the chunk's labels are saved
atomically in ``<out>/partial/``; a run that stops (Ctrl-C, a kill, an
exception) resumes at the first unfinished chunk and produces the same
result as an uninterrupted run. See :mod:`ethoscribe.pose.outputs` for what
is written at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path, write_json, write_text
from ethoscribe.io.seeds import Seeds, load_seeds
from ethoscribe.pose.candidates import CandidateIndex, prepare_candidates
from ethoscribe.pose.config import PoseConfig
from ethoscribe.pose.geometry import FrameGeometry
from ethoscribe.pose.hints import HintAgreement, hint_costs, measure_hint_agreement
from ethoscribe.pose.association import (
    BodyPrior,
    BodyStructure,
    group_shift,
    support_costs,
    lateral_axis,
    order_pairs,
    order_reversed,
    rigid_measured,
    rigid_pairs,
    rigid_triangles,
    template_neighbours,
)
from ethoscribe.pose.model import (
    Appearance,
    BodyTemplate,
    TrackerState,
    _einsum,
    _nanmean0,
    _singular_values,
    kabsch,
)
from ethoscribe.pose.reasoner import FrameContext, GeometricReasoner, Reasoner
from ethoscribe.pose.seedcheck import CameraCheck, check_cameras, noise_scale
from ethoscribe.pose.stages import (
    Prior,
    SEED,
    agree,
    assign_candidates,
    locate_regions,
    refine_frame,
)
from ethoscribe.progress import progress_bar

PARTIAL = "partial"
#: a residual beyond this many current scales counts as this many in the running residual scales
RESID_CLIP = 2.5
#: a seed-rigid pair is used once confirmed in RIGID_MIN_SEEN confident frames, as long as its distance was off
#: (beyond 3 tolerances) in at most RIGID_MAX_OFF of all the confident frames that measured it: a truly rigid pair is
#: off only when an identity is wrong (which it then repairs); a pair that merely looked rigid on the seeds varies
#: with the animal's posture and is dropped for good. Front/back order pairs are confirmed the same way (off:
#: reversed): the front paws can be in the same order on three seeds by chance
RIGID_MIN_SEEN = 20.0
#: association margin recorded for seed labels (a person's label: beyond doubt)
SEED_MARGIN = 99.0
RIGID_MAX_OFF = 0.05
STATE_VERSION = 7


@dataclass
class ChunkInfo:
    """Passed to ``on_chunk`` after each chunk is saved."""

    index: int
    n_chunks: int
    frames: np.ndarray
    direction: str
    resumed: bool = False


@dataclass
class PoseResult:
    """What :func:`run_pose` produced (also read back by :func:`~ethoscribe.pose.outputs.load_pose_result`).

    Attributes
    ----------
    labels
        The labels table (:mod:`ethoscribe.pose.labels`).
    poses3d
        movement-style xarray Dataset: ``position`` (time, space, keypoints,
        individuals), ``confidence``, ``n_views``, ``reproj_error``.
    review
        Frames ranked by how much a person's look is worth.
    summary
        Counts, thresholds, per-camera errors, suspect and duplicate cameras, timings.
    paths
        Files written: ``labels``, ``poses3d``, ``review``, ``trace``, ``summary``.
    """

    labels: pd.DataFrame
    poses3d: Any
    review: pd.DataFrame
    summary: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------- setup
@dataclass
class _Setup:
    session: Any
    views: list[str]
    individuals: list[str]
    keypoints: list[str]
    rig: Any
    geo: FrameGeometry
    n_frames: int
    fps: float
    regions: tuple[tuple[int, ...], ...]
    region_names: tuple[str, ...]
    region_of: np.ndarray
    symmetry: tuple[tuple[int, int], ...]
    cands: CandidateIndex
    seeds: Seeds
    seed_xyz: np.ndarray  # S, I, K, 3
    seed_nin: np.ndarray  # S, I, K
    seed_err: np.ndarray  # S, V, I, K
    seed_err3: np.ndarray  # S, I, K
    check: CameraCheck
    template: BodyTemplate
    appearance: Appearance
    sigma_px0: float
    sigma_px: float
    threshold_px: float
    noise_source: str
    bias0: np.ndarray
    duplicates: list[tuple[str, str]]
    reasoner: Reasoner
    config: PoseConfig
    fingerprint: str
    candidates_source: str
    structure: BodyStructure | None = None
    support_cost: np.ndarray | None = None
    support_counts: dict[str, Any] | None = None
    hints: HintAgreement = HintAgreement(0, 0)

    @property
    def hint_costs(self) -> tuple[float, float]:
        return hint_costs(self.hints.accuracy, len(self.keypoints))

    @property
    def hint_individual_costs(self) -> tuple[float, float]:
        return hint_costs(self.hints.accuracy, len(self.individuals))


def _as_session(session: Any) -> Any:
    from ethoscribe.session import Session, load_session

    return session if isinstance(session, Session) else load_session(session)


def _resolve_candidates(session: Any, candidates: Any, out_dir: Path) -> tuple[Any, str]:
    if candidates is None or (isinstance(candidates, str) and candidates == "markers"):
        cache = out_dir / "candidates_markers.parquet"
        if cache.is_file():
            return cache, f"marker spots ({cache.name}, cached)"
        from ethoscribe.candidates import detect_session_spots, save_candidates

        spots = detect_session_spots(session)
        save_candidates(spots, cache)
        return cache, "marker spots (detect_session_spots)"
    if isinstance(candidates, pd.DataFrame):
        return candidates, "candidates table"
    return Path(candidates), str(candidates)


def _resolve_seeds(session: Any, seeds: Any, cands: CandidateIndex, skeleton: Any, views: list[str],
                   individuals: list[str], rig: Any) -> Seeds:
    if isinstance(seeds, Seeds):
        out = seeds.subset_views(views)
    elif isinstance(seeds, str) and seeds in ("pseudo", "auto"):
        from ethoscribe.pose.pseudoseeds import pseudo_seeds

        out = pseudo_seeds(cands, rig, skeleton, individuals)
    else:
        path = seeds if seeds is not None else session.seeds_path
        if path is None:
            raise InputError(f"{session.root}: the session names no seeds file; give seeds (a .slp with >= 3 labelled frames)")
        out = load_seeds(path, skeleton, views, individuals)
    if tuple(out.keypoints) != tuple(skeleton.keypoints):
        raise InputError(f"{out.source or 'seeds'}: seed keypoints {list(out.keypoints)} do not match the skeleton {list(skeleton.keypoints)}")
    if tuple(out.individuals) != tuple(individuals):
        raise InputError(f"{out.source or 'seeds'}: seed individuals {list(out.individuals)} do not match the session's {individuals}")
    bad = [int(f) for f in out.frames if not 0 <= f < session.config.n_frames]
    if bad:
        raise InputError(f"{out.source or 'seeds'}: seed frame(s) {bad} are outside the session's {session.config.n_frames} frames")
    return out


def _hash_arrays(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, str):
            h.update(a.encode())
        else:
            arr = np.ascontiguousarray(np.asarray(a))
            h.update(str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(arr.tobytes())
    return h.hexdigest()[:24]


def _setup(session: Any, candidates: Any, seeds: Any, reasoner: Any, config: PoseConfig, out_dir: Path) -> _Setup:
    views = list(session.config.view_names)
    if len(views) < 2:
        raise InputError(
            f"the pose pipeline checks labels across cameras and needs at least 2 calibrated views; this session has "
            f"{len(views)} ({', '.join(views)}). With one camera, give the pose model's predictions straight to "
            "'ethoscribe behavior' (it reads .slp, DeepLabCut .h5/.csv and Lightning Pose .csv)")
    individuals = list(session.config.individuals)
    skeleton = session.skeleton
    keypoints = list(skeleton.keypoints)
    rig = session.rig
    geo = FrameGeometry(rig)
    T = int(session.config.n_frames)
    if skeleton.regions:
        region_names = tuple(skeleton.regions)
        regions = tuple(tuple(skeleton.index(k) for k in ks) for ks in skeleton.regions.values())
    else:
        region_names, regions = ("body",), (tuple(range(len(keypoints))),)
    region_of = np.zeros(len(keypoints), np.int64)
    for r, idx in enumerate(regions):
        region_of[list(idx)] = r
    symmetry = tuple(tuple(p) for p in skeleton.symmetry_indices())

    cand_in, cand_source = _resolve_candidates(session, candidates, out_dir)
    cands = prepare_candidates(cand_in, views, keypoints, individuals, rig, T)
    seeds_obj = _resolve_seeds(session, seeds, cands, skeleton, views, individuals, rig)

    # ---- what the seeds say: camera agreement, noise, 3D, template, appearance
    S, V, I, K = seeds_obj.points.shape[:4]
    px = np.moveaxis(seeds_obj.points, 1, 0).reshape(V, -1, 2)
    norm = rig.undistort(px)
    duplicates = rig.duplicate_cameras()
    check = check_cameras(geo, px, norm, duplicates, config.inlier_sigmas, config.min_threshold_px)
    use = ~check.suspect
    thr0 = check.threshold_px
    tri = geo.triangulate(norm, px, thr0, use)
    seed_xyz = tri.points3d.reshape(S, I, K, 3)
    seed_nin = tri.n_inliers.reshape(S, I, K)
    seed_err = np.moveaxis(tri.errors.reshape(V, S, I, K), 0, 1)
    seed_err3 = tri.mean_inlier_error.reshape(S, I, K)
    sigma0 = noise_scale(tri.errors[use][:, tri.n_inliers >= 2][tri.inliers[use][:, tri.n_inliers >= 2]],
                         tri.n_inliers[tri.n_inliers >= 2])
    if not np.isfinite(sigma0):
        sigma0 = check.sigma_px if np.isfinite(check.sigma_px) else config.min_threshold_px / config.inlier_sigmas
    sigma_px, noise_source = _candidate_noise(geo, cands, seeds_obj, use, max(thr0, config.inlier_sigmas * sigma0), config)
    if not np.isfinite(sigma_px):
        sigma_px, noise_source = float(sigma0), "seed labels"
    threshold_px = max(config.min_threshold_px, config.inlier_sigmas * sigma_px)
    template = BodyTemplate.learn(seed_xyz)
    hints = measure_hint_agreement(cands, geo, I, K, threshold_px, use)
    # systematic offset of each camera's labels (used to predict in suspect views)
    proj, _ = geo.project(tri.points3d)
    off = px - proj
    with np.errstate(invalid="ignore"):
        bias0 = np.stack([np.nanmedian(off[v], axis=0) if np.isfinite(off[v]).any() else np.zeros(2) for v in range(V)])
    bias0 = np.where(np.isfinite(bias0), bias0, 0.0)
    appearance = _learn_appearance(cands, seeds_obj, thr0)

    if isinstance(reasoner, str):
        if reasoner != "geometric":
            raise InputError(f"unknown reasoner {reasoner!r} (available: 'geometric', or pass a Reasoner object)")
        reasoner_obj: Reasoner = GeometricReasoner()
    else:
        if not isinstance(reasoner, Reasoner):
            raise InputError(f"{reasoner!r} is not a Reasoner (it needs locate_regions, assign and agree methods and a name)")
        reasoner_obj = reasoner

    fingerprint = _hash_arrays(
        cands.frame, cands.view, cands.cid, cands.x, cands.y, cands.intensity, cands.area, cands.hint_keypoint,
        cands.hint_individual, cands.score, seeds_obj.frames, seeds_obj.points, rig.matrix, rig.dist, rig.rvec,
        rig.tvec, json.dumps(views), json.dumps(individuals), skeleton.model_dump_json(), config.model_dump_json(),
        str(getattr(reasoner_obj, "name", "?")), str(STATE_VERSION), str(T),
    )
    out = _Setup(
        session=session, views=views, individuals=individuals, keypoints=keypoints, rig=rig, geo=geo, n_frames=T,
        fps=float(session.config.fps), regions=regions, region_names=region_names, region_of=region_of,
        symmetry=symmetry, cands=cands, seeds=seeds_obj, seed_xyz=seed_xyz, seed_nin=seed_nin, seed_err=seed_err,
        seed_err3=seed_err3, check=check, template=template, appearance=appearance, sigma_px0=float(sigma0),
        sigma_px=float(sigma_px), threshold_px=float(threshold_px), noise_source=noise_source,
        bias0=bias0, duplicates=duplicates, reasoner=reasoner_obj, config=config, fingerprint=fingerprint,
        candidates_source=cand_source, hints=hints,
    )
    out.structure = _body_structure(out)
    X = seed_xyz.reshape(-1, 3)
    X = X[np.isfinite(X).all(-1)]
    ppu = 1.0
    if len(X):
        _, depth = geo.project(X)
        ppu = float(np.nanmedian(geo.pixels_per_unit(depth)))
    blk = cands.block(seeds_obj.frames)
    usable = blk.valid & use[None, :, None]
    from dataclasses import replace as _replace

    out.support_cost, out.support_counts = support_costs(
        geo, _replace(blk, valid=usable), np.where((seed_nin >= 2)[..., None], seed_xyz, np.nan), threshold_px,
        threshold_px / max(ppu, 1e-9), 0.5 * template.size, len(views))
    return out


def _body_structure(su: _Setup) -> BodyStructure:
    """Rigid keypoint pairs and left/right order from the seeds (:class:`~ethoscribe.pose.association.BodyStructure`)."""
    X = su.seed_xyz.reshape(-1, 3)
    X = X[np.isfinite(X).all(-1)]
    ppu = 1.0
    if len(X):
        _, depth = su.geo.project(X)
        ppu = float(np.nanmedian(su.geo.pixels_per_unit(depth)))
    # 3D noise of a distance between two triangulated points: the label noise in world units, averaged over the
    # views of a point (a point seen in n views is about sqrt(n / 2) times steadier than one pair), times sqrt(2)
    n_views = float(np.median(su.seed_nin[su.seed_nin >= 2])) if (su.seed_nin >= 2).any() else 2.0
    noise = np.sqrt(2.0) * su.sigma_px / max(ppu, 1e-9) / np.sqrt(max(n_views / 2.0, 1.0))
    pairs, dist, sd = rigid_pairs(np.where((su.seed_nin >= 2)[..., None], su.seed_xyz, np.nan), noise)
    lateral, side, centre = lateral_axis(su.template.shape, su.symmetry)
    seps = [abs(float(np.dot(su.template.shape[i, l] - su.template.shape[i, r], lateral[i])))
            for i in range(len(su.individuals)) for l, r in su.symmetry if np.isfinite(lateral[i]).all()]
    seps = [x for x in seps if np.isfinite(x) and x > 0]
    side_scale = 0.25 * float(min(seps)) if seps else float("nan")
    order, forward = order_pairs(np.where((su.seed_nin >= 2)[..., None], su.seed_xyz, np.nan), su.template.shape,
                                 su.template.size)
    return BodyStructure(rigid=pairs, rigid_dist=dist, rigid_sd=sd, active=np.ones(len(pairs), bool),
                         pairs=tuple(su.symmetry), lateral=lateral, seed_shape=su.template.shape,
                         seed_weight=1.0 / su.template.spread ** 2, side_scale=side_scale, order=order,
                         forward=forward, order_scale=0.1 * su.template.size)


def _candidate_noise(geo: FrameGeometry, cands: CandidateIndex, seeds: Seeds, use: np.ndarray, thr: float,
                     config: PoseConfig, min_residuals: int = 30) -> tuple[float, str]:
    """Label noise of the *candidates* (px, per axis), measured on the seed frames.

    The candidates of the seed frames are matched across the usable views
    (:meth:`~ethoscribe.pose.geometry.FrameGeometry.match_points`, threshold
    ``2 thr``); the residuals of points seen in three or more views give the
    noise scale (Rayleigh median, corrected for the fit's degrees of
    freedom); the threshold is then re-derived and the measurement repeated
    once. NaN if fewer than ``min_residuals`` residuals are available.
    """
    blk = cands.block(seeds.frames)
    sigma = float("nan")
    for _ in range(2):
        errs, ns = [], []
        for f in range(len(seeds.frames)):
            pts = geo.match_points(blk.norm[f], blk.xy[f], blk.valid[f] & use[:, None], 2.0 * thr)
            ok = pts.n_support >= 3
            if ok.any():
                e = pts.errors[:, ok]
                m = np.isfinite(e)
                errs.append(e[m])
                ns.append(np.broadcast_to(pts.n_support[ok][None], e.shape)[m])
        if not errs or sum(len(e) for e in errs) < min_residuals:
            return float("nan"), "seed labels"
        sigma = noise_scale(np.concatenate(errs), np.concatenate(ns))
        thr = max(config.min_threshold_px, config.inlier_sigmas * sigma)
    return sigma, "candidates of the seed frames"


def _learn_appearance(cands: CandidateIndex, seeds: Seeds, thr: float) -> Appearance:
    """Median log intensity / log area of the candidate nearest each seed label (within ``thr``)."""
    S, V, I, K = seeds.points.shape[:4]
    blk = cands.block(seeds.frames)
    feats = np.full((S, V, I, K, 2), np.nan)
    for s in range(S):
        for v in range(V):
            ok = blk.valid[s, v]
            if not ok.any():
                continue
            lab = seeds.points[s, v].reshape(-1, 2)
            d = np.linalg.norm(blk.xy[s, v][None, :, :] - lab[:, None, :], axis=-1)
            d = np.where(ok[None, :], d, np.inf)
            j = np.argmin(d, axis=1)
            near = d[np.arange(len(lab)), j] < thr
            f = np.stack([np.log(np.maximum(blk.intensity[s, v, j], 1e-6)), np.log(np.maximum(blk.area[s, v, j], 1e-6))], -1)
            feats[s, v] = np.where(near[:, None], f, np.nan).reshape(I, K, 2)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        mu = np.nanmedian(feats.reshape(S, V, I, K, 2), axis=(0, 2))  # V, K, 2
        mu_k = np.nanmedian(feats, axis=(0, 1, 2))  # K, 2
        mu = np.where(np.isfinite(mu), mu, mu_k[None])
        resid = feats - mu[None, :, None]
        mad = np.nanmedian(np.abs(resid.reshape(-1, 2)), axis=0) * 1.4826
    n_ok = np.isfinite(feats[..., 0]).sum()
    if n_ok < 5:
        return Appearance.none(V, K)
    scale = np.maximum(np.where(np.isfinite(mad), mad, np.nan), 0.05)
    # a feature that does not vary (e.g. area of pose-model points) carries no information
    const = np.nanstd(feats.reshape(-1, 2), axis=0) < 1e-9
    mu[..., const] = np.nan
    return Appearance(mu, scale)


# --------------------------------------------------------------------- state
def _well_spread(points: np.ndarray, min_points: int = 4, ratio: float = 0.2) -> np.ndarray:
    """(I,) whether each animal's known points (I, K, 3) (NaN unknown) fix a rotation: at least
    ``min_points`` and not close to a line (second singular value >= ``ratio`` x the first)."""
    out = np.zeros(points.shape[0], bool)
    for a in range(points.shape[0]):
        p = points[a][np.isfinite(points[a]).all(-1)]
        if len(p) < min_points:
            continue
        sv = _singular_values(p - p.mean(axis=0))
        out[a] = sv[1] >= ratio * sv[0]
    return out


def _initial_state(su: _Setup, seed_index: int, suspect: np.ndarray) -> TrackerState:
    I, K = len(su.individuals), len(su.keypoints)
    X = su.seed_xyz[seed_index].copy()
    ok = np.isfinite(X).all(-1) & (su.seed_nin[seed_index] >= 2)
    placed = su.template.place(np.where(ok[..., None], X, np.nan))
    X = np.where(ok[..., None], X, placed)
    sigma = np.full(K, su.config.initial_sigma_fraction * su.template.size)
    n_order = 0 if su.structure.order is None else len(su.structure.order)
    return TrackerState(
        position=X, velocity=np.zeros((I, K, 3)), age=np.where(ok, 0, 1).astype(np.int64), sigma=sigma,
        sigma_slow=sigma.copy(), body=su.template.shape.copy(),
        bias=su.bias0.copy(), suspect=su.check.suspect.copy() | suspect, cam_labels=np.zeros(len(su.views), np.int64),
        cam_outliers=np.zeros(len(su.views), np.int64), chain_seed=ok.copy(), chain_len=np.zeros((I, K), np.int64),
        rel_sigma=sigma.copy(), rigid_seen=np.zeros(len(su.structure.rigid)), rigid_off=np.zeros(len(su.structure.rigid)),
        order_seen=np.zeros(n_order), order_off=np.zeros(n_order),
        last_frame=int(su.seeds.frames[seed_index]),
    )


@dataclass(frozen=True)
class _Chunk:
    direction: str
    frames: np.ndarray
    segment: int
    restart: int | None = None  # seed index the backward state starts from (first chunk of a backward run)
    last_of_segment: bool = False


def _chunk_plan(su: _Setup) -> list[_Chunk]:
    """Chunks in processing order.

    With seeds ``s_0 < ... < s_n``: backward from ``s_0`` to frame 0; then,
    for each stretch between two seeds, forward from ``s_i`` up to
    ``s_{i+1}`` and backward from ``s_{i+1}`` down to ``s_i``; finally
    forward from ``s_n`` to the end. The forward pass is one continuous
    track (re-anchored at each seed); every stretch between seeds is tracked
    from both of its ends, and :func:`~ethoscribe.pose.outputs.merge_passes`
    reconciles the two.
    """
    T, C = su.n_frames, su.config.chunk_size
    seeds = [int(f) for f in su.seeds.frames]
    plan: list[_Chunk] = []

    def add(direction: str, frames: np.ndarray, seg: int, restart: int | None) -> None:
        parts = [frames[i:i + C] for i in range(0, len(frames), C)]
        for j, part in enumerate(parts):
            plan.append(_Chunk(direction, part, seg, restart if j == 0 else None, j == len(parts) - 1))

    if seeds[0] > 0:
        add("backward", np.arange(seeds[0], -1, -1), 0, 0)
    for i in range(len(seeds) - 1):
        add("forward", np.arange(seeds[i], seeds[i + 1]), i + 1, None)
        add("backward", np.arange(seeds[i + 1], seeds[i] - 1, -1), i + 1, i + 1)
    add("forward", np.arange(seeds[-1], T), len(seeds), None)
    return [c for c in plan if len(c.frames)]


# --------------------------------------------------------------------- frame loop
@dataclass
class _ChunkArrays:
    frames: np.ndarray
    xy: np.ndarray
    cid: np.ndarray
    stage: np.ndarray
    conflict: np.ndarray
    err: np.ndarray
    X: np.ndarray
    n_in: np.ndarray
    err3: np.ndarray
    jump: np.ndarray
    threshold: np.ndarray
    chain_seed: np.ndarray
    chain_len: np.ndarray
    margin: np.ndarray
    trace: list[str]
    stats: dict[str, float]

    @classmethod
    def empty(cls, frames: np.ndarray, V: int, I: int, K: int) -> _ChunkArrays:
        F = len(frames)
        return cls(
            frames=np.asarray(frames, np.int64), xy=np.full((F, V, I, K, 2), np.nan), cid=np.full((F, V, I, K), -1, np.int64),
            stage=np.full((F, V, I, K), 2, np.int8), conflict=np.zeros((F, V, I, K), bool),
            err=np.full((F, V, I, K), np.nan, np.float32), X=np.full((F, I, K, 3), np.nan), n_in=np.zeros((F, I, K), np.int8),
            err3=np.full((F, I, K), np.nan, np.float32), jump=np.zeros((F, I, K), bool), threshold=np.zeros(F, np.float32),
            chain_seed=np.zeros((F, I, K), bool), chain_len=np.zeros((F, I, K), np.int64),
            margin=np.full((F, I, K), np.nan, np.float32), trace=[], stats={},
        )

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, frames=self.frames, xy=self.xy, cid=self.cid, stage=self.stage, conflict=self.conflict,
                         err=self.err, X=self.X, n_in=self.n_in, err3=self.err3, jump=self.jump, threshold=self.threshold,
                         chain_seed=self.chain_seed, chain_len=self.chain_len, margin=self.margin,
                         stats=json.dumps(self.stats))
        write_text(path.with_suffix(".trace.jsonl"), "".join(line + "\n" for line in self.trace))

    @classmethod
    def load(cls, path: Path) -> _ChunkArrays:
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        trace_path = path.with_suffix(".trace.jsonl")
        trace = trace_path.read_text(encoding="utf-8").splitlines() if trace_path.is_file() else []
        stats = json.loads(str(d.pop("stats")))
        return cls(**d, trace=trace, stats=stats)


#: ``json.dumps`` with its default settings, except the check for circular references (a trace record is a tree
#: of lists and numbers): the same text
_TRACE_JSON = json.JSONEncoder(check_circular=False)


def _r(x: Any, nd: int = 2) -> Any:
    return np.round(np.asarray(x, float), nd).tolist()


def _nanmedian(a: np.ndarray, axis: int | None = None, keepdims: bool = False) -> np.ndarray:
    """``np.nanmedian`` along one axis (all axes for None), the same values (NaN for an all-NaN slice, no warning).

    For small arrays ``np.nanmedian`` goes through masked arrays: measured 160 us a call (three calls per
    frame, a tenth of the frame loop), against 23 us for this sort and two gathers.
    """
    if axis is None:
        a, axis = np.ravel(a), 0
    s = np.sort(a, axis=axis)  # NaN last
    nan = np.isnan(a)
    L = a.shape[axis]
    if L and not nan.any():  # every slice full: the middle two of each (the same values as below)
        med = (np.take(s, [(L - 1) // 2], axis=axis) + np.take(s, [L // 2], axis=axis)) / 2.0
        return med if keepdims else np.squeeze(med, axis=axis)
    n = (~nan).sum(axis=axis, keepdims=True)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0), axis=axis)
    hi = np.take_along_axis(s, n // 2, axis=axis)
    med = np.where(n > 0, (lo + hi) / 2.0, np.nan)
    return med if keepdims else np.squeeze(med, axis=axis)


def _duplicates(cid: np.ndarray) -> int:
    """Labels (V, L) on a candidate (>= 0) that another label of the same view also has: the count of labels on
    candidates less the count of distinct candidates per view."""
    s = np.sort(cid, axis=1)
    on = s >= 0
    distinct = on.copy()
    distinct[:, 1:] &= s[:, 1:] != s[:, :-1]
    return int(on.sum() - distinct.sum())


def _nansum(a: np.ndarray) -> float:
    """``np.nansum(a)`` (the same sum: NaN taken as 0), without its wrapper."""
    a = np.asarray(a, float)
    return np.where(np.isnan(a), 0.0, a).sum()


class _Tracker:
    """Runs the four stages frame by frame over one chunk, carrying a :class:`TrackerState`."""

    def __init__(self, su: _Setup) -> None:
        self.su = su
        self.cfg = su.config
        self.sigma_px = su.sigma_px
        self.threshold = su.threshold_px
        self.cache: dict[tuple[int, bytes], Any] = {}
        self.seed_pos = {int(f): s for s, f in enumerate(su.seeds.frames)}
        self.V, self.I, self.K = len(su.views), len(su.individuals), len(su.keypoints)
        self.spread = su.template.spread
        self.size = su.template.size
        self.timing = {"region": 0.0, "assignment": 0.0, "agreement": 0.0, "refinement": 0.0, "prepare": 0.0}
        self.reasoner_name = str(getattr(su.reasoner, "name", "reasoner"))
        self.neighbours = template_neighbours(su.template.shape, 3)
        self.triangles = rigid_triangles(su.structure) if su.structure is not None else None
        # how far each keypoint can be from its animal's centre: the seed template's distance (median keypoint),
        # three seed spreads and a quarter of the size (postures the seeds did not show)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tc = np.nanmedian(su.template.shape, axis=1, keepdims=True)
            far = np.nanmax(np.linalg.norm(su.template.shape - tc, axis=-1), axis=0)  # K
        self.extent = np.where(np.isfinite(far), far, np.inf) + 3.0 * su.template.spread + 0.25 * su.template.size

    # ---------------------------------------------------------------- chunk
    def run_chunk(self, frames: np.ndarray, st: TrackerState, direction: str = "forward") -> _ChunkArrays:
        su, V, I, K = self.su, self.V, self.I, self.K
        self.direction = direction
        t0 = time.perf_counter()
        blk = su.cands.block(frames)
        out = _ChunkArrays.empty(frames, V, I, K)
        out.threshold[:] = self.threshold
        self.timing["prepare"] += time.perf_counter() - t0
        cam_lab = np.zeros(V, np.int64)
        cam_out = np.zeros(V, np.int64)
        offsets: list[np.ndarray] = []
        resid: list[np.ndarray] = []
        n_views_used: list[np.ndarray] = []
        for f, t in enumerate(frames):
            t = int(t)
            if t in self.seed_pos:
                self._seed_frame(f, t, blk, st, out)
                out.chain_seed[f], out.chain_len[f] = st.chain_seed, st.chain_len
                continue
            res, Xp, sig = self._track_frame(f, t, blk, st, out)
            out.chain_seed[f], out.chain_len[f] = st.chain_seed, st.chain_len
            # camera statistics: labels checked against at least two other agreeing views
            fe, fi = res.first_errors.reshape(V, -1), res.tri.inliers
            checked = np.isfinite(fe) & ((res.tri.n_inliers[None, :] - fi) >= 2)
            cam_lab += checked.sum(axis=1)
            with np.errstate(invalid="ignore"):
                cam_out += (checked & (fe > self.threshold)).sum(axis=1)
            if st.suspect.any():
                proj, _ = su.geo.project(res.tri.points3d)
                lab = np.where((res.cand >= 0)[..., None], res.label_xy, np.nan).reshape(V, -1, 2)
                offsets.append(np.where(st.suspect[:, None, None], lab - proj, np.nan))
            use = ~st.suspect
            e = res.errors.reshape(V, -1)
            good = use[:, None] & res.tri.inliers & np.isfinite(e) & (res.tri.n_inliers >= 3)[None, :]
            if good.any():
                resid.append(e[good])
                n_views_used.append(np.broadcast_to(res.tri.n_inliers[None, :], e.shape)[good])
        # ---- chunk statistics: label noise, suspect cameras, bias of suspect cameras
        stats: dict[str, Any] = {"cam_labels": cam_lab.tolist(), "cam_outliers": cam_out.tolist()}
        if resid:
            r = np.concatenate(resid)
            n = np.concatenate(n_views_used)
            stats["sigma_px"] = noise_scale(r, n)
            stats["n_resid"] = int(r.size)
        st.cam_labels += cam_lab
        st.cam_outliers += cam_out
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = cam_out / np.maximum(cam_lab, 1)
        newly = (~st.suspect) & (cam_lab >= self.cfg.suspect_min_labels) & (frac > self.cfg.suspect_fraction)
        if (~(st.suspect | newly)).sum() >= 2 and newly.any():
            st.suspect |= newly
            stats["newly_suspect"] = [su.views[v] for v in np.flatnonzero(newly)]
        if offsets:
            o = np.concatenate(offsets, axis=1)
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter('ignore', RuntimeWarning)
                med = np.nanmedian(o, axis=1)
            st.bias = np.where(st.suspect[:, None] & np.isfinite(med), med, st.bias)
        out.stats = stats
        return out

    # ---------------------------------------------------------------- seed frame
    def _seed_frame(self, f: int, t: int, blk: Any, st: TrackerState, out: _ChunkArrays) -> None:
        su, V, I, K = self.su, self.V, self.I, self.K
        s = self.seed_pos[t]
        pts = np.moveaxis(su.seeds.points[s], 0, 0)  # V, I, K, 2
        out.xy[f] = pts
        out.stage[f] = SEED
        out.err[f] = su.seed_err[s]
        out.X[f] = su.seed_xyz[s]
        out.margin[f] = np.where(np.isfinite(su.seed_xyz[s]).all(-1), SEED_MARGIN, np.nan)
        out.n_in[f] = su.seed_nin[s]
        out.err3[f] = su.seed_err3[s]
        # the candidate under each seed label, if any (within the inlier threshold)
        for v in range(V):
            ok = blk.valid[f, v]
            if not ok.any():
                continue
            lab = pts[v].reshape(-1, 2)
            d = np.linalg.norm(blk.xy[f, v][None] - lab[:, None], axis=-1)
            d = np.where(ok[None], d, np.inf)
            j = np.argmin(d, axis=1)
            near = d[np.arange(len(lab)), j] < self.threshold
            out.cid[f, v] = np.where(near, blk.cid[f, v, j], -1).reshape(I, K)
        X = su.seed_xyz[s]
        good = np.isfinite(X).all(-1) & (su.seed_nin[s] >= 2)
        self._update(st, X, good, t, st.position + st.velocity, np.zeros((I, K)))
        out.trace.append(_TRACE_JSON.encode({
            "stage": "seed", "frame": t, "pass": self.direction, "views": su.views,
            "input": {"seed_source": su.seeds.source, "pseudo": su.seeds.pseudo},
            "answer": {"labels": int(np.isfinite(pts[..., 0]).sum())},
            "verification": {"n_views": su.seed_nin[s].tolist(), "mean_error_px": _r(su.seed_err3[s])},
        }))

    # ---------------------------------------------------------------- tracked frame
    def _predict(self, st: TrackerState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Xp = st.position + st.velocity
        tracked = (st.age == 0).astype(float)
        known = np.where((st.age == 0)[..., None], Xp, np.nan)
        # the seed template (for the shape cost) and the online template (where lost keypoints are now),
        # both fitted to the tracked keypoints in one call
        I = known.shape[0]
        src = np.concatenate([self.su.template.shape, st.body])
        w = tracked / self.spread[None, :] ** 2  # the steadier keypoints fix the body's frame
        r, t = kabsch(src, np.concatenate([known, known]), np.concatenate([w, w]))
        placed = _einsum("aij,akj->aki", r, src) + t[:, None]
        Xt, Xo = placed[:I], placed[I:]
        spread_ok = _well_spread(known)
        # a lost keypoint: where the body frame of the tracked ones puts it, not where its velocity would
        lost = (st.age > 0) & np.isfinite(Xo).all(-1) & spread_ok[:, None]
        Xp = np.where(lost[..., None], Xo, Xp)
        base = np.maximum(st.sigma, st.sigma_slow)[None, :]
        sig = np.minimum(base * np.sqrt(1.0 + st.age), 2.0 * self.size)
        rot = np.where(spread_ok[:, None, None], r[I:], np.nan)
        self._frame = (rot, t[I:])
        return Xp, Xt, sig

    def _track_frame(self, f: int, t: int, blk: Any, st: TrackerState, out: _ChunkArrays) -> Any:
        su, cfg, V, I, K = self.su, self.cfg, self.V, self.I, self.K
        tm = time.perf_counter()
        Xp, Xt, sig = self._predict(st)
        key = (t, st.suspect.tobytes())
        pts = self.cache.get(key)
        if pts is None:
            pts = su.geo.match_points(blk.norm[f], blk.xy[f], blk.valid[f] & ~st.suspect[:, None], self.threshold)
            self.cache[key] = pts
        if pts.points3d.shape[0]:
            # coherent motion of each keypoint's neighbourhood (an abrupt start or stop moves a body part at once)
            noise3 = self.sigma_px / self._ppu_typ()
            Xp, _shifted = group_shift(Xp, np.sqrt(sig ** 2 + noise3 ** 2), pts.points3d, self.neighbours,
                                       0.5 * self.size, known=st.age == 0)
        both, depth = su.geo.project(np.concatenate([Xp[None], Xt[None]]))  # V, 2, I, K, 2
        ppu = su.geo.pixels_per_unit(depth[:, 0])  # V, I, K
        pred_px = both[:, 0]
        tmpl_px = both[:, 1]
        noise2 = self.sigma_px ** 2
        sig_px = np.sqrt((sig[None] * ppu) ** 2 + noise2)
        tsig_px = np.sqrt(((sig[None] ** 2 + self.spread[None, None, :] ** 2)) * ppu ** 2 + noise2)
        if st.suspect.any():  # predict in a suspect view with its systematic offset, and less confidence
            b = np.where(st.suspect[:, None], st.bias, 0.0)
            pred_px = pred_px + b[:, None, None, :]
            tmpl_px = tmpl_px + b[:, None, None, :]
            extra = np.where(st.suspect, np.linalg.norm(st.bias, axis=-1) + self.threshold, 0.0)[:, None, None]
            sig_px = np.sqrt(sig_px ** 2 + extra ** 2)
            tsig_px = np.sqrt(tsig_px ** 2 + extra ** 2)
        ctx = FrameContext(
            frame=t, views=tuple(su.views), individuals=tuple(su.individuals), keypoints=tuple(su.keypoints),
            region_names=su.region_names, regions=su.regions, region_of=su.region_of, symmetry=su.symmetry,
            cand_xy=blk.xy[f], cand_valid=blk.valid[f], cand_id=blk.cid[f], intensity=blk.intensity[f],
            area=blk.area[f], hint_keypoint=blk.hint_keypoint[f], hint_individual=blk.hint_individual[f],
            score=blk.score[f], predicted_px=pred_px, predicted_sigma_px=sig_px, template_px=tmpl_px,
            template_sigma_px=tsig_px, appearance_mu=su.appearance.mu, appearance_scale=su.appearance.scale,
            image_size=su.rig.size, gate=cfg.gate, hint_costs=su.hint_costs,
            hint_individual_costs=su.hint_individual_costs,
        )
        t1 = time.perf_counter()
        self.timing["prepare"] += t1 - tm
        boxes = locate_regions(su.reasoner, ctx)
        t2 = time.perf_counter()
        asg = assign_candidates(su.reasoner, ctx, boxes)
        t3 = time.perf_counter()
        agr = agree(su.reasoner, ctx, boxes, asg)
        t4 = time.perf_counter()
        noise3 = self.sigma_px / self._ppu_typ()
        s3 = np.sqrt(sig ** 2 + noise3 ** 2)
        ts3 = np.sqrt(sig ** 2 + self.spread[None, :] ** 2 + noise3 ** 2)
        # a lost keypoint may have moved with the posture while unseen: the body model may vouch for a hypothesis
        # up to a quarter of the animal's size farther per frame lost (at most its size)
        reach = np.maximum(2.0 * cfg.gate * s3, np.minimum(0.25 * st.age, 1.0) * self.size)
        # the animal's envelope: its tracked keypoints' centre, and how far each keypoint can be from it
        tracked = (st.age == 0) & np.isfinite(Xp).all(-1)
        centre = _nanmedian(np.where(tracked[..., None], Xp, np.nan), axis=1)  # I, 3
        extent = self.extent[None, :] + np.sqrt(_nanmedian(s3, axis=1, keepdims=True) ** 2)  # I, K
        prior = Prior(Xp.reshape(-1, 3), s3.reshape(-1), Xt.reshape(-1, 3), ts3.reshape(-1), (st.age > 0).reshape(-1),
                      reach.reshape(-1), np.repeat(centre, K, axis=0),
                      np.where(tracked.sum(axis=1, keepdims=True) >= 3, extent, np.inf).reshape(-1),
                      su.support_cost)
        rot, trans = self._frame
        body = None
        if np.isfinite(rot).all(axis=(1, 2)).any():
            body = BodyPrior(rotation=rot, translation=trans, body=st.body, neighbours=self.neighbours,
                             rel_sigma=np.sqrt(st.rel_sigma ** 2 + noise3 ** 2),
                             available=st.age == 0)
        structure = self._structure(st)
        res = refine_frame(ctx, agr, blk.norm[f], su.geo, self.threshold, ~st.suspect, prior=prior, boxes=boxes,
                           points=pts, body=body, structure=structure,
                           same_radius=self.threshold / max(self._ppu_typ(), 1e-9), inlier_sigmas=cfg.inlier_sigmas)
        t5 = time.perf_counter()
        self.timing["region"] += t2 - t1
        self.timing["assignment"] += t3 - t2
        self.timing["agreement"] += t4 - t3
        self.timing["refinement"] += t5 - t4

        tracks = [st.position, st.velocity, Xp, st.age] + ([sig] if sig.ndim == 2 else [])
        for a, k1, k2 in res.relabel:  # the body structure exchanged two tracks' names: so does the tracker state
            for arr in (*tracks, st.body):
                arr[a, [k1, k2]] = arr[a, [k2, k1]]
        for a, k, j in res.handed:  # a track handed to the lost keypoint whose marker it held
            for arr in tracks:
                arr[a, [k, j]] = arr[a, [j, k]]
            # the holder, lost now, is looked for at its place in the seed template: what the online template
            # learned of it while it held the other marker is the other keypoint's place
            st.body[a, k] = self.su.template.shape[a, k]
        for a in sorted({a for a, _, _ in res.reassociated}):  # the animal's points renamed as a whole
            moved = [(k, s) for a_, k, s in res.reassociated if a_ == a]
            old = [arr[a].copy() for arr in (st.position, st.velocity, Xp, st.age)]
            for k, s in moved:
                if s >= 0:  # the track of keypoint s, now k's
                    for arr, o in zip((st.position, st.velocity, Xp, st.age), old):
                        arr[a, k] = o[s]
                elif s == -1:  # a free point: a new track, starting there without a velocity
                    p = res.tri.points3d.reshape(I, K, 3)[a, k]
                    if np.isfinite(p).all():
                        st.position[a, k], Xp[a, k] = p, p
                    st.velocity[a, k] = 0.0
                    st.age[a, k] = max(int(st.age[a, k]), 1)
                # (-2: a paw whose point the group took, lost now) what the online template learned of a moved
                # keypoint was another's place
                st.body[a, k] = self.su.template.shape[a, k]
        X = res.tri.points3d.reshape(I, K, 3)
        n_in = res.tri.n_inliers.reshape(I, K)
        good = np.isfinite(X).all(-1) & (n_in >= 2)
        r = np.linalg.norm(X - Xp, axis=-1)
        with np.errstate(invalid="ignore"):
            # against the residual scale of a tracked keypoint (not the wider gate of a lost one): a keypoint
            # found again far from where it was lost is where a wrong identity usually begins
            base = np.maximum(st.sigma, st.sigma_slow)[None, :]
            jump = good & (r > np.maximum(cfg.jump_sigmas * base, cfg.jump_min_fraction * self.size))
        out.xy[f] = res.label_xy
        cid = np.where(res.cand >= 0, blk.cid[f][np.arange(V)[:, None, None], np.maximum(res.cand, 0)], -1)
        out.cid[f] = cid
        out.stage[f] = res.stage
        out.conflict[f] = res.conflict
        out.err[f] = res.errors
        out.X[f] = X
        if res.margin is not None:
            out.margin[f] = res.margin.reshape(I, K)
        out.n_in[f] = n_in
        out.err3[f] = res.tri.mean_inlier_error.reshape(I, K)
        out.jump[f] = jump
        self._update(st, X, good, t, Xp, np.where(good, r, np.nan), sig, res.confident.reshape(I, K), res.proposed)

        if self.cfg.trace:
            a_cid = np.where(agr.cand >= 0, blk.cid[f][np.arange(V)[:, None, None], np.maximum(agr.cand, 0)], -1)
            s_cid = np.where(asg.cand >= 0, blk.cid[f][np.arange(V)[:, None, None], np.maximum(asg.cand, 0)], -1)
            confirmed = int(((res.cand == agr.cand) & (agr.cand >= 0) & (res.errors <= self.threshold)).sum())
            changed = int(((res.cand != agr.cand) & (agr.cand >= 0)).sum())
            verif = {"confirmed_by_geometry": confirmed, "changed_by_refinement": changed}
            nb = int(np.isfinite(boxes.boxes[..., 0]).sum())
            out.trace.append(_TRACE_JSON.encode({
                "stage": "region", "frame": t, "pass": self.direction, "views": su.views, "reasoner": self.reasoner_name,
                "input": {"predicted_keypoints": int(np.isfinite(pred_px[..., 0]).sum()),
                          "lost_keypoints": int((st.age > 0).sum()), "sigma_px_median": round(float(_nanmedian(sig_px)), 2)},
                "answer": {"boxes": _r(boxes.boxes, 1)},
                "verification": {"boxes": nb, "candidates": int(blk.valid[f].sum())},
            }))
            out.trace.append(_TRACE_JSON.encode({
                "stage": "assignment", "frame": t, "pass": self.direction, "views": su.views, "reasoner": self.reasoner_name,
                "input": {"candidates_per_view": blk.valid[f].sum(axis=1).tolist()},
                "answer": {"candidate": s_cid.tolist(), "total_cost": round(float(_nansum(asg.cost)), 2)},
                "verification": verif,
            }))
            out.trace.append(_TRACE_JSON.encode({
                "stage": "agreement", "frame": t, "pass": self.direction, "views": su.views, "reasoner": self.reasoner_name,
                "input": {"duplicates": _duplicates(s_cid.reshape(V, -1))},
                "answer": {"candidate": a_cid.tolist(), "conflicts": int(agr.conflict.sum()),
                           "missing": int((agr.cand < 0).sum())},
                "verification": verif,
            }))
            out.trace.append(_TRACE_JSON.encode({
                "stage": "refinement", "frame": t, "pass": self.direction, "views": su.views, "reasoner": "geometric",
                "input": {"labels": int((agr.cand >= 0).sum()), "threshold_px": round(self.threshold, 3),
                          "excluded_views": [su.views[v] for v in np.flatnonzero(st.suspect)]},
                "answer": {**res.events, "candidate": cid.tolist()},
                "verification": {"n_views": n_in.tolist(), "mean_error_px": _r(out.err3[f]),
                                 "outliers": int((res.first_errors > self.threshold).sum()),
                                 "large_jumps": int(jump.sum())},
            }))
        return res, Xp, sig

    def _update(self, st: TrackerState, X: np.ndarray, good: np.ndarray, t: int, Xp: np.ndarray, resid: np.ndarray,
                sig: np.ndarray | None = None, conf: np.ndarray | None = None,
                proposed: np.ndarray | None = None) -> None:
        """Carry the tracker to frame ``t``: position, velocity, online template and residual scales.

        ``good`` (I, K) keypoints with a 3D point; ``conf`` (I, K) those whose
        association was unambiguous (default: all good). Only confident
        keypoints teach the tracker (the online template, the residual
        scales): a wrong identity must not become the model that keeps it.
        ``sig`` is None on a seed frame.
        """
        cfg = self.cfg
        conf = good if conf is None else (conf & good)
        prev = st.position
        steps = (st.age + 1).astype(float)[..., None]
        meas_vel = (X - prev) / steps
        base = np.maximum(st.sigma, st.sigma_slow)[None, :]
        tracked_before = st.age == 0
        if st.last_frame >= 0 and abs(t - st.last_frame) == 1:
            upd_v = good
            if sig is None:
                # a seed frame: a keypoint the track had lost or put elsewhere tells nothing about its velocity
                with np.errstate(invalid="ignore"):
                    upd_v = good & tracked_before & (np.linalg.norm(X - Xp, axis=-1) <= cfg.gate * base)
            vel = np.where(upd_v[..., None], st.velocity + cfg.velocity_beta * (meas_vel - st.velocity),
                           np.where(good[..., None] & ~upd_v[..., None], 0.0, st.velocity * cfg.velocity_damping))
        else:
            vel = np.zeros_like(st.velocity)
        vel = np.where(np.isfinite(vel), vel, 0.0)
        st.position = np.where(good[..., None], X, np.where(np.isfinite(Xp), Xp, st.position))
        st.velocity = vel
        if sig is None:  # a seed frame
            st.chain_seed = good.copy()
            st.chain_len = np.zeros_like(st.chain_len)
        else:
            found_again = good & (st.age > 0)
            st.chain_seed = st.chain_seed & good & ~found_again
            st.chain_len = np.where(good & ~found_again, st.chain_len + 1, 0)
        st.age = np.where(good, 0, st.age + 1).astype(np.int64)
        # the online template: confidently measured keypoints take their current place in the body frame
        w = conf / self.spread[None, :] ** 2
        r, tr = kabsch(st.body, np.where(conf[..., None], X, np.nan), w)
        ok = np.isfinite(r).all(axis=(1, 2))
        rel_resid = None
        if ok.any() and sig is not None and self.neighbours.shape[1]:
            # offsets to the template neighbours: the online template's (rotated into this frame) against the measured
            nb = self.neighbours
            off_b = st.body[:, :, None, :] - st.body[:, nb, :]
            pred_off = _einsum("aij,akmj->akmi", r, off_b)
            meas_off = X[:, :, None, :] - X[:, nb, :]
            both = conf[:, :, None] & conf[:, nb] & ok[:, None, None]
            e2 = np.sum((meas_off - pred_off) ** 2, axis=-1)
            with np.errstate(invalid="ignore"):
                n_b = both.sum(axis=2)
                rel_resid = np.where(n_b > 0, np.where(both, e2, 0.0).sum(axis=2) / np.maximum(n_b, 1), np.nan)  # I, K
        if ok.any():
            local = _einsum("aji,akj->aki", r, X - tr[:, None])  # R^T (X - t)
            st.body = np.where((conf & ok[:, None])[..., None] & np.isfinite(local), local, st.body)
        bs = self.su.structure
        if sig is not None and bs is not None and proposed is not None:
            # whether the seed-rigid pairs stay rigid (and the seed-ordered ones ordered) is judged on what the
            # association proposed before the structure repair (which would otherwise hide the very frames that
            # disprove a pair)
            both, off = rigid_measured(proposed, bs, self.triangles)
            st.rigid_seen = st.rigid_seen + both.sum(axis=0)
            st.rigid_off = st.rigid_off + off.sum(axis=0)
            seen_o, rev_o = order_reversed(proposed, bs)
            st.order_seen = st.order_seen + seen_o.sum(axis=0)
            st.order_off = st.order_off + rev_o.sum(axis=0)
        if sig is not None:
            # residual scales (3D RMS): robust running estimates, from keypoints tracked in the previous frame and
            # confidently associated now; each squared residual is clipped at RESID_CLIP current scales, so a few
            # wrong associations cannot inflate the scale (which would open the gates to more of them)
            use = conf & tracked_before
            ceiling = cfg.max_sigma_fraction * self.size
            floor = self.sigma_px / max(self._ppu_typ(), 1e-9)
            motion_floor = max(floor, cfg.min_sigma_fraction * self.size)
            with np.errstate(invalid="ignore"):
                r2 = np.minimum(resid ** 2, (RESID_CLIP * base) ** 2)
                cnt = use.sum(axis=0)
                per_k = np.where(cnt > 0, np.where(use, r2, 0.0).sum(axis=0) / np.maximum(cnt, 1), np.nan)
            upd = np.isfinite(per_k)
            for name, rate in (("sigma", cfg.sigma_rate), ("sigma_slow", cfg.sigma_rate / 10)):
                old = getattr(st, name)
                new = np.sqrt((1 - rate) * old ** 2 + rate * np.where(upd, per_k, 0.0))
                setattr(st, name, np.clip(np.where(upd, new, old), motion_floor, ceiling))
            if rel_resid is not None:
                rk = _nanmean0(np.minimum(rel_resid, (RESID_CLIP * st.rel_sigma[None]) ** 2))
                upd = np.isfinite(rk)
                new = np.sqrt((1 - cfg.sigma_rate) * st.rel_sigma ** 2 + cfg.sigma_rate * np.where(upd, rk, 0.0))
                st.rel_sigma = np.clip(np.where(upd, new, st.rel_sigma), floor, ceiling)
        st.last_frame = int(t)

    def _structure(self, st: TrackerState) -> BodyStructure | None:
        """The body structure with the rigid and the front/back order pairs the tracked frames confirm."""
        from dataclasses import replace

        bs = self.su.structure
        if bs is None:
            return None
        active = (st.rigid_seen >= RIGID_MIN_SEEN) & (st.rigid_off <= RIGID_MAX_OFF * st.rigid_seen)
        order_active = (st.order_seen >= RIGID_MIN_SEEN) & (st.order_off <= RIGID_MAX_OFF * st.order_seen)
        last = self._structure_last
        if last is not None and np.array_equal(last.active, active) and np.array_equal(last.order_active, order_active):
            return last  # the pairs in use rarely change: the same (frozen) structure
        self._structure_last = replace(bs, active=active, order_active=order_active)
        return self._structure_last

    _structure_last: BodyStructure | None = None

    _ppu_cache: float | None = None

    def _ppu_typ(self) -> float:
        if self._ppu_cache is None:
            X = self.su.seed_xyz.reshape(-1, 3)
            X = X[np.isfinite(X).all(-1)]
            if len(X):
                _, depth = self.su.geo.project(X)
                self._ppu_cache = float(np.nanmedian(self.su.geo.pixels_per_unit(depth)))
            else:
                self._ppu_cache = 1.0
        return self._ppu_cache


# --------------------------------------------------------------------- run
def _default_out(session: Any) -> Path:
    return Path(session.root) / "output" / "pose"


def run_pose(
    session: Any,
    candidates: pd.DataFrame | str | os.PathLike[str] | None = "markers",
    seeds: Seeds | str | os.PathLike[str] | None = None,
    reasoner: Reasoner | str = "geometric",
    out_dir: str | os.PathLike[str] | None = None,
    config: PoseConfig | None = None,
    resume: bool = True,
    on_chunk: Callable[[ChunkInfo], None] | None = None,
) -> PoseResult:
    """Label every frame, view, animal and keypoint of a session, with confidence, QC flags and 3D poses.

    Parameters
    ----------
    session
        A :class:`~ethoscribe.session.Session` or the path of a session folder.
    candidates
        ``"markers"`` (default): marker spots detected in the session's
        marker videos (cached as ``candidates_markers.parquet`` in the output
        folder); or a candidates table (DataFrame or Parquet path) such as
        :func:`ethoscribe.candidates.predictions.read_predictions` returns.
    seeds
        The seed labels: a ``.slp`` path, a :class:`~ethoscribe.io.seeds.Seeds`,
        ``None`` for the session's ``seeds`` file, or ``"pseudo"`` to choose
        the 3 most geometrically consistent frames of pose-model predictions
        (needs ``hint_keypoint``; see :func:`ethoscribe.pose.pseudo_seeds`).
    reasoner
        ``"geometric"`` or an object implementing
        :class:`~ethoscribe.pose.reasoner.Reasoner`.
    out_dir
        Output folder (default ``<session>/output/pose``).
    config
        :class:`~ethoscribe.pose.config.PoseConfig`.
    resume
        Continue an interrupted run with the same inputs from its last saved
        chunk (a run with other inputs or settings starts over).
    on_chunk
        Called with a :class:`ChunkInfo` after each chunk is saved.

    Returns
    -------
    PoseResult
        Labels table, 3D poses, review list, summary and the written paths.

    Raises
    ------
    InputError
        For unusable inputs, naming the file or value at fault.

    Examples
    --------
    >>> result = run_pose("demo/session", seeds="demo/session/seeds.slp")  # doctest: +SKIP
    >>> result.summary["labels"]["flagged"]  # doctest: +SKIP
    """
    from ethoscribe.pose.outputs import assemble_and_write

    t_start = time.perf_counter()
    config = config or PoseConfig()
    session = _as_session(session)
    out = Path(out_dir) if out_dir is not None else _default_out(session)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    su = _setup(session, candidates, seeds, reasoner, config, out)
    t_setup = time.perf_counter() - t0
    partial = out / PARTIAL
    plan = _chunk_plan(su)
    state_file = partial / "state.npz"
    meta_file = partial / "state.json"

    done = 0
    resumed = 0
    st_fw: TrackerState | None = None
    st_bw: TrackerState | None = None
    if resume and meta_file.is_file() and state_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("fingerprint") == su.fingerprint and meta.get("n_chunks") == len(plan):
            done = int(meta["done"])
            with np.load(state_file) as z:
                arrays = {k: z[k] for k in z.files}
            st_fw = TrackerState.from_arrays(arrays, "fw_") if meta.get("has_fw") else None
            st_bw = TrackerState.from_arrays(arrays, "bw_") if meta.get("has_bw") else None
            resumed = done
    if done == 0:
        for old in partial.glob("chunk_*"):
            old.unlink()

    timing_loop = 0.0
    cpu_loop = 0.0
    frames_done = 0
    tracker = _Tracker(su)
    suspect_now = su.check.suspect.copy()
    with progress_bar(sum(len(c.frames) for c in plan[done:]), "pose labelling") as advance:
        for i in range(done, len(plan)):
            ch = plan[i]
            if ch.direction == "forward":
                if st_fw is None:
                    st_fw = _initial_state(su, 0, suspect_now)
                st = st_fw
            else:
                if ch.restart is not None or st_bw is None:
                    base = st_fw if st_fw is not None else _initial_state(su, 0, suspect_now)
                    st_bw = _initial_state(su, ch.restart if ch.restart is not None else 0, base.suspect)
                    st_bw.sigma, st_bw.sigma_slow = base.sigma.copy(), base.sigma_slow.copy()
                    st_bw.rel_sigma = base.rel_sigma.copy()
                    st_bw.rigid_seen, st_bw.rigid_off = base.rigid_seen.copy(), base.rigid_off.copy()
                    st_bw.order_seen, st_bw.order_off = base.order_seen.copy(), base.order_off.copy()
                st = st_bw
            tl = time.perf_counter()
            cl = time.process_time()
            tracker.timing = dict.fromkeys(tracker.timing, 0.0)
            arrays = tracker.run_chunk(ch.frames, st, ch.direction)
            timing_loop += time.perf_counter() - tl
            cpu_loop += time.process_time() - cl
            frames_done += len(ch.frames)
            suspect_now = st.suspect.copy()
            if st_fw is not None:
                st_fw.suspect |= suspect_now
            arrays.stats["timing"] = dict(tracker.timing)
            arrays.stats["direction"] = ch.direction
            arrays.stats["seconds"] = time.perf_counter() - tl
            arrays.save(partial / f"chunk_{i:05d}.npz")
            if ch.direction == "backward" and ch.last_of_segment:
                tracker.cache.clear()
            saved = {}
            if st_fw is not None:
                saved.update(st_fw.to_arrays("fw_"))
            if st_bw is not None:
                saved.update(st_bw.to_arrays("bw_"))
            with atomic_path(state_file) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **saved)
            write_json(meta_file, {"fingerprint": su.fingerprint, "done": i + 1, "n_chunks": len(plan),
                                   "has_fw": st_fw is not None, "has_bw": st_bw is not None, "version": STATE_VERSION})
            advance(len(ch.frames))
            if on_chunk is not None:
                on_chunk(ChunkInfo(i, len(plan), ch.frames, ch.direction, resumed=i < resumed))

    chunks = [_ChunkArrays.load(partial / f"chunk_{i:05d}.npz") for i in range(len(plan))]
    final_suspect = su.check.suspect.copy()
    for c in chunks:
        for name in c.stats.get("newly_suspect", []):
            final_suspect[su.views.index(name)] = True
    run_info = {
        "setup_s": t_setup, "loop_s": timing_loop, "loop_cpu_s": cpu_loop, "frames_computed": frames_done,
        "chunks_resumed": resumed, "chunks_computed": len(plan) - resumed, "n_chunks": len(plan),
        "final_suspect": final_suspect.tolist(), "t_start": t_start,
    }
    return assemble_and_write(su, chunks, out, run_info)
