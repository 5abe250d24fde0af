"""Synthesise a complete multi-camera session with ground truth: :func:`synthesize`.

One call writes a session folder that :func:`ethoscribe.session.load_session`
loads, plus everything needed to score a pipeline against the truth::

    OUT/
      session.toml            views cam0..camN-1, individuals mouse0.., arena_mm
      calibration.toml        anipose format, perturbed per noise level
      skeleton.json           mouse12
      seeds.slp               3 frames x all views of true labels (SLEAP)
      videos/camK_markers.mp4 marker channel (H.264, crf ~11)
      videos/camK_body.mp4    grey body video (H.264, crf ~19)
      truth/                  see ethoscribe.synth.truth

Randomness: one seed; each component (cameras, calibration error, animal
shapes, behaviour script, and per view: marker noise, spurious spots,
sensor noise) draws from its own child of ``np.random.SeedSequence(seed)``,
so changing the noise level, the number of cameras or what is rendered does
not change the animals' motion, and the same settings give the same bytes.

Examples
--------
>>> from ethoscribe.synth.rig import SynthConfig, synthesize
>>> session = synthesize("out/demo", SynthConfig(cameras=6, animals=2, frames=300))  # doctest: +SKIP
>>> session.load_truth().behaviour.head()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ethoscribe.errors import InputError
from ethoscribe.geometry.camera import CameraRig
from ethoscribe.progress import progress_bar
from ethoscribe.skeleton import mouse12
from ethoscribe.synth import truth as T_
from ethoscribe.synth.cameras import arena_rig, perturb_rig
from ethoscribe.synth.mouse import Ellipsoids, MouseShape
from ethoscribe.synth.noise import NOISE_LEVELS, NoiseLevel
from ethoscribe.synth.render import BodyRenderer, MarkerRenderer, Spots, visibility
from ethoscribe.synth.script import Script, make_script

#: child-stream numbers of SeedSequence(seed): never renumber (outputs would change)
_STREAMS = {"cameras": 0, "calibration": 1, "shapes": 2, "script": 3, "markers": 4, "spurious": 5, "sensor": 6, "body": 7}

# per-keypoint spot brightness and size factors (ears, back x3, paws x4, tail x3)
_BRIGHT = np.array([0.9, 0.9, 1.05, 1.05, 1.05, 0.95, 0.95, 0.95, 0.95, 1.0, 0.95, 0.85])
_SIZE = np.array([0.95, 0.95, 1.05, 1.05, 1.05, 0.95, 0.95, 0.95, 0.95, 1.0, 1.0, 0.95])
_PEAK = 185.0
_CHUNK = 32


def _rng(seed: int, stream: str, *sub: int) -> np.random.Generator:
    """Generator of one component: the child ``(stream, *sub)`` of ``SeedSequence(seed)`` (as ``spawn`` makes)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAMS[stream], *sub)))


class SynthConfig(BaseModel):
    """Settings of :func:`synthesize` (validated at construction).

    Examples
    --------
    >>> SynthConfig(cameras=4, frames=60).noise
    'default'
    >>> try:
    ...     SynthConfig(cameras=0)
    ... except ValueError as exc:  # pydantic's ValidationError
    ...     print("cameras" in str(exc))
    True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cameras: int = Field(6, ge=1, le=64, description="number of cameras")
    animals: int = Field(1, ge=1, le=6, description="number of mice")
    frames: int = Field(500, ge=1, description="number of frames")
    fps: float = Field(30.0, gt=0, le=1000)
    seed: int = Field(0, ge=0)
    noise: Literal["clean", "default", "hard"] = "default"
    arena_mm: float = Field(400.0, ge=250, le=2000, description="side of the square arena (mm)")
    image_size: tuple[int, int] = Field((640, 512), description="(width, height) in pixels, both even")
    render: Literal["all", "markers", "body", "none"] = "all"
    views_for_body: list[str] | None = Field(None, description="views that get a body video (None: all); 'top' is the most downward-looking camera")
    marker_crf: int = Field(11, ge=0, le=51)
    body_crf: int = Field(19, ge=0, le=51)
    marker_preset: str = "ultrafast"
    body_preset: str = "veryfast"
    seed_frames: int = Field(3, ge=1, le=20)

    @field_validator("image_size")
    @classmethod
    def _even(cls, v: tuple[int, int]) -> tuple[int, int]:
        w, h = v
        if w < 64 or h < 64 or w % 2 or h % 2:
            raise ValueError(f"image size must be even and at least 64x64 (H.264), got {w}x{h}")
        return v

    @model_validator(mode="after")
    def _views(self) -> SynthConfig:
        if self.views_for_body is not None:
            names = {f"cam{i}" for i in range(self.cameras)} | {"top"}
            bad = [v for v in self.views_for_body if v not in names]
            if bad:
                raise ValueError(f"views_for_body names unknown views {bad} (views are cam0..cam{self.cameras - 1}, or 'top')")
        return self

    @property
    def noise_level(self) -> NoiseLevel:
        return NOISE_LEVELS[self.noise]


@dataclass
class SynthSession:
    """What :func:`synthesize` wrote: the folder, the settings and the paths of every file."""

    root: Path
    config: SynthConfig
    views: list[str]
    individuals: list[str]
    marker_videos: dict[str, Path] = field(default_factory=dict)
    body_videos: dict[str, Path] = field(default_factory=dict)
    seed_frames: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def session_file(self) -> Path:
        return self.root / "session.toml"

    @property
    def calibration_path(self) -> Path:
        """The written (perturbed per noise level) calibration."""
        return self.root / "calibration.toml"

    @property
    def calibration_true_path(self) -> Path:
        return self.root / T_.CALIBRATION_TRUE

    @property
    def skeleton_path(self) -> Path:
        return self.root / "skeleton.json"

    @property
    def seeds_path(self) -> Path:
        return self.root / "seeds.slp"

    @property
    def truth_dir(self) -> Path:
        return self.root / T_.TRUTH_DIR

    @property
    def points3d_path(self) -> Path:
        return self.root / T_.POINTS3D

    @property
    def points2d_path(self) -> Path:
        return self.root / T_.POINTS2D

    @property
    def behaviour_path(self) -> Path:
        return self.root / T_.BEHAVIOUR

    @property
    def behaviour_csv_path(self) -> Path:
        return self.root / T_.BEHAVIOUR_CSV

    @property
    def spurious_path(self) -> Path:
        return self.root / T_.SPURIOUS

    def load_truth(self) -> T_.Truth:
        """The ground truth (:func:`ethoscribe.synth.truth.load_truth`)."""
        return T_.load_truth(self.root)

    def load_session(self) -> Any:
        """The session as :func:`ethoscribe.session.load_session` loads it."""
        from ethoscribe.session import load_session

        return load_session(self.root)


# ---------------------------------------------------------------- planning
def _top_view(rig: CameraRig) -> str:
    """The camera looking most steeply down."""
    fwd_z = rig.rotation[:, 2, 2]  # world z of each camera's optical axis
    return rig.names[int(np.argmin(fwd_z))]


def _marker_plan(
    pos: NDArray[np.float64], visible: NDArray[np.bool_], dist: NDArray[np.float64], d_ref: float,
    noise: NoiseLevel, rng: np.random.Generator, size: tuple[int, int],
) -> tuple[NDArray[np.bool_], NDArray[np.float64], Spots]:
    """One view: which markers draw a spot, where (marker_xy), and the spots to draw.

    ``pos`` (T, K, I, 2) true projections, ``visible`` (T, K, I), ``dist`` (T, K, I)
    camera-to-marker distances.
    """
    T, K, n = visible.shape
    # all draws have fixed shapes, so the stream is used the same way whatever is visible
    missed = rng.random((T, K, n)) < noise.miss_rate
    jitter = rng.normal(0.0, 1.0, (T, K, n, 2)) * noise.jitter_px
    flicker = rng.normal(0.0, 1.0, (T, K, n)) * noise.marker_flicker
    rendered = visible & ~missed
    xy = np.where(rendered[..., None], pos + jitter, np.nan)
    ratio = d_ref / np.where(np.isfinite(dist), dist, d_ref)
    sigma = np.clip(1.55 * ratio ** 0.8 * _SIZE[None, :, None], 1.2, 2.0)
    animal = np.ones(n) if noise.identical_animals else 1.0 - 0.12 * (np.arange(n) % 3)
    peak = np.clip(_PEAK * _BRIGHT[None, :, None] * animal[None, None, :] * ratio * (1.0 + flicker), 50.0, 245.0)
    tt, kk, aa = np.nonzero(rendered)
    k_sub = max(1, noise.motion_blur_substeps)
    if k_sub == 1 or noise.exposure <= 0:
        spots = Spots(tt.astype(np.int64), xy[tt, kk, aa, 0], xy[tt, kk, aa, 1], sigma[tt, kk, aa], peak[tt, kk, aa])
        return rendered, xy, spots
    # motion blur: the spot is the mean of k_sub sub-frame positions over the exposure (centred on the frame)
    prev = np.concatenate([pos[:1], pos[:-1]])
    nxt = np.concatenate([pos[1:], pos[-1:]])
    back = np.where(np.isfinite(prev), pos - prev, 0.0)
    fwd = np.where(np.isfinite(nxt), nxt - pos, 0.0)
    parts = []
    for tau in np.linspace(-noise.exposure / 2, noise.exposure / 2, k_sub):
        step = back if tau < 0 else fwd
        sub = xy + tau * step
        parts.append(Spots(tt.astype(np.int64), sub[tt, kk, aa, 0], sub[tt, kk, aa, 1], sigma[tt, kk, aa], peak[tt, kk, aa] / k_sub))
    return rendered, xy, Spots.concat(parts)


def _spurious_plan(
    view: str, pos: NDArray[np.float64], rendered: NDArray[np.bool_], typical_peak: float, noise: NoiseLevel,
    rng: np.random.Generator, size: tuple[int, int],
) -> tuple[Spots, pd.DataFrame]:
    """Spots that are no marker: flickering static reflections, look-alikes near the animals, random specks.

    ``pos`` (T, K, I, 2) true projections and ``rendered`` (T, K, I) of one view.
    Of the mean count per frame, a quarter are two static reflections (each
    lit in a frame at random), 40 % sit 6-35 px from a drawn marker with a
    marker's brightness and size, and the rest are anywhere, from hot pixels
    to dim blobs.
    """
    T = pos.shape[0]
    w, h = size
    mean = noise.spurious_per_view_frame
    parts: list[tuple[NDArray, NDArray, NDArray, NDArray, NDArray, str]] = []
    if mean > 0:
        # static reflections: fixed places, each lit in a frame with probability p
        n_static = 2
        p = min(1.0, 0.25 * mean / n_static)
        places = rng.uniform([0.05 * w, 0.05 * h], [0.95 * w, 0.95 * h], size=(n_static, 2))
        s_peak = rng.uniform(90, 220, n_static)
        s_sigma = rng.uniform(1.3, 2.2, n_static)
        tt, ss = np.nonzero(rng.random((T, n_static)) < p)
        wob = rng.normal(0, 0.15, (len(tt), 2))
        parts.append((tt, places[ss, 0] + wob[:, 0], places[ss, 1] + wob[:, 1],
                      s_peak[ss] * rng.uniform(0.85, 1.15, len(tt)), s_sigma[ss], "static"))
        # look-alikes near a drawn marker (reflections on the floor and walls)
        tt = np.repeat(np.arange(T), rng.poisson(0.4 * mean, T))
        u = rng.random(len(tt))
        r = rng.uniform(6, 35, len(tt))
        ang = rng.uniform(0, 2 * np.pi, len(tt))
        peak = typical_peak * rng.uniform(0.55, 1.1, len(tt))
        sigma = rng.uniform(1.2, 2.0, len(tt))
        flat = rendered.reshape(T, -1)
        mt, mk = np.nonzero(flat)  # drawn markers, sorted by frame
        counts = flat.sum(axis=1)
        first = np.r_[0, np.cumsum(counts)[:-1]]
        ok = counts[tt] > 0
        pick = first[tt[ok]] + np.minimum((u[ok] * counts[tt[ok]]).astype(np.int64), counts[tt[ok]] - 1)
        xy = pos.reshape(T, -1, 2)[mt[pick], mk[pick]]
        parts.append((tt[ok], xy[:, 0] + r[ok] * np.cos(ang[ok]), xy[:, 1] + r[ok] * np.sin(ang[ok]), peak[ok], sigma[ok], "near"))
        # random specks anywhere: hot pixels to broad dim blobs
        tt = np.repeat(np.arange(T), rng.poisson(0.35 * mean, T))
        parts.append((tt, rng.uniform(0, w - 1, len(tt)), rng.uniform(0, h - 1, len(tt)), rng.uniform(40, 210, len(tt)),
                      rng.uniform(0.8, 2.8, len(tt)), "random"))
    frame = np.concatenate([np.asarray(q[0], np.int64) for q in parts]) if parts else np.zeros(0, np.int64)
    x, y, peak, sigma = (np.concatenate([np.asarray(q[i], float) for q in parts]) if parts else np.zeros(0) for i in (1, 2, 3, 4))
    kind = np.concatenate([np.full(len(q[0]), q[5], dtype=object) for q in parts]) if parts else np.zeros(0, object)
    inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
    df = pd.DataFrame({"frame": frame[inside], "view": np.full(int(inside.sum()), view, dtype=object), "x": x[inside],
                       "y": y[inside], "peak": np.clip(peak[inside], 0, 245), "sigma": sigma[inside], "kind": kind[inside]})
    df = df.sort_values(["frame", "x"], kind="stable").reset_index(drop=True)
    spots = Spots(df["frame"].to_numpy(np.int64), df["x"].to_numpy(float), df["y"].to_numpy(float),
                  df["sigma"].to_numpy(float), df["peak"].to_numpy(float))
    return spots, df


def _encode(path: Path, fps: float, size: tuple[int, int], crf: int, preset: str, renderer: Any, n_frames: int,
            advance: Any) -> None:
    from ethoscribe.io.video import VideoWriter

    with VideoWriter(path, fps=fps, size=size, crf=crf, preset=preset) as writer:
        for start in range(0, n_frames, _CHUNK):
            stop = min(start + _CHUNK, n_frames)
            writer.write(renderer.render(start, stop))
            advance(stop - start)


# ---------------------------------------------------------------- main
def synthesize(out_dir: str | os.PathLike[str], config: SynthConfig | None = None, **overrides: Any) -> SynthSession:
    """Write a synthetic multi-camera session with ground truth into ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder to write (created if needed; files in it are replaced).
    config
        Settings; keyword arguments override its fields (or build one:
        ``synthesize("out", cameras=4, frames=60, seed=1)``).

    Returns
    -------
    SynthSession
        Paths of everything written, the settings, the seed frames and timings (s).
    """
    try:
        base = config.model_dump() if config is not None else {}
        cfg = SynthConfig(**{**base, **overrides})
    except ValidationError as exc:
        raise InputError(f"invalid synthesis settings:\n{exc}") from None
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    # the truth is rewritten first: an older session file must not outlive it if this run stops early
    (root / "session.toml").unlink(missing_ok=True)
    noise = cfg.noise_level
    seed = cfg.seed
    skeleton = mouse12()
    kp_names = list(skeleton.keypoints)
    individuals = [f"mouse{i}" for i in range(cfg.animals)]

    # ---- cameras
    rig = arena_rig(cfg.cameras, _rng(seed, "cameras"), arena_mm=cfg.arena_mm, image_size=tuple(cfg.image_size))
    written = perturb_rig(rig, _rng(seed, "calibration"), noise.calibration_px) if noise.calibration_px > 0 else rig.copy()
    views = list(rig.names)
    size = (int(cfg.image_size[0]), int(cfg.image_size[1]))

    # ---- animals and behaviour
    shape_rng = _rng(seed, "shapes")
    shapes = [MouseShape.random(shape_rng) for _ in range(cfg.animals)]
    script: Script = make_script(cfg.animals, cfg.frames, cfg.fps, cfg.arena_mm, _rng(seed, "script"), shapes, individuals)
    motions = script.motions()
    kp3 = np.stack([m.keypoints for m in motions], axis=2)  # (T, K, I, 3)
    ell = Ellipsoids.concat([m.ellipsoids for m in motions])  # (T, 5 I)
    timings["script"] = time.perf_counter() - t0

    # ---- 2D truth
    t1 = time.perf_counter()
    T, K, n = kp3.shape[:3]
    pts = kp3.reshape(T, K * n, 3)
    proj, seen = visibility(rig, pts, ell)
    position = proj.reshape(len(views), T, K, n, 2)
    visible = seen.reshape(len(views), T, K, n)
    dist = np.linalg.norm(pts[None] - rig.centers[:, None, None, :], axis=-1).reshape(len(views), T, K, n)
    d_ref = np.linalg.norm(rig.centers - np.array([0.0, 0.0, 20.0]), axis=-1)
    rendered = np.zeros_like(visible)
    marker_xy = np.full_like(position, np.nan)
    marker_spots: list[Spots] = []
    spurious_spots: list[Spots] = []
    spurious_tables = []
    for v, view in enumerate(views):
        r, xy, spots = _marker_plan(position[v], visible[v], dist[v], float(d_ref[v]), noise, _rng(seed, "markers", v), size)
        rendered[v], marker_xy[v] = r, xy
        s_spots, s_df = _spurious_plan(view, position[v], r, _PEAK, noise, _rng(seed, "spurious", v), size)
        marker_spots.append(Spots.concat([spots, s_spots]))
        spurious_spots.append(s_spots)
        spurious_tables.append(s_df)
    spurious = pd.concat(spurious_tables, ignore_index=True) if spurious_tables else pd.DataFrame()
    seed_frames = T_.choose_seed_frames(visible, cfg.seed_frames)

    # ---- write everything but the videos and the session file
    skeleton.save(root / "skeleton.json")
    written.save(root / "calibration.toml")
    rig.save(root / T_.CALIBRATION_TRUE)
    T_.write_config(root / T_.CONFIG, cfg.model_dump(mode="json"))
    T_.write_points3d(root / T_.POINTS3D, kp3, kp_names, individuals, cfg.fps)
    ds2 = T_.points2d_dataset(views, position, visible, rendered, marker_xy, kp_names, individuals, cfg.fps, rig.size)
    T_.write_points2d(root / T_.POINTS2D, ds2)
    T_.write_behaviour(root / T_.BEHAVIOUR, root / T_.BEHAVIOUR_CSV, script.labels, script.partners, individuals, cfg.fps)
    T_.write_spurious(root / T_.SPURIOUS, spurious)
    marker_files = [f"videos/{v}_markers.mp4" for v in views]
    T_.write_seeds(root / "seeds.slp", skeleton, views, marker_files, T, rig.size, cfg.fps, seed_frames, position, visible,
                   individuals, rig=written)
    timings["truth"] = time.perf_counter() - t1

    # ---- videos
    t2 = time.perf_counter()
    do_markers = cfg.render in ("all", "markers")
    do_body = cfg.render in ("all", "body")
    body_views = views if cfg.views_for_body is None else sorted(
        {(_top_view(rig) if v == "top" else v) for v in cfg.views_for_body}, key=views.index)
    jobs = []
    marker_paths: dict[str, Path] = {}
    body_paths: dict[str, Path] = {}
    for v, view in enumerate(views):
        if do_markers:
            marker_paths[view] = root / marker_files[v]

            def job(v: int = v, view: str = view, advance: Any = None) -> None:
                rend = MarkerRenderer(size, marker_spots[v], noise, _rng(seed, "sensor", v, 0), T)
                _encode(marker_paths[view], cfg.fps, size, cfg.marker_crf, cfg.marker_preset, rend, T, advance)

            jobs.append(job)
        if do_body and view in body_views:
            body_paths[view] = root / f"videos/{view}_body.mp4"

            def bjob(v: int = v, view: str = view, advance: Any = None) -> None:
                rend = BodyRenderer(rig, v, cfg.arena_mm, noise, _rng(seed, "sensor", v, 1), T)
                rend.prepare(ell, n)
                _encode(body_paths[view], cfg.fps, size, cfg.body_crf, cfg.body_preset, rend, T, advance)

            jobs.append(bjob)
    if jobs:
        with progress_bar(len(jobs) * T, "rendering videos") as advance:
            with ThreadPoolExecutor(max_workers=min(2, len(jobs))) as pool:
                futures = [pool.submit(j, advance=advance) for j in jobs]
                for f in futures:
                    f.result()
    timings["videos"] = time.perf_counter() - t2

    # ---- the session file last: it only names what exists
    from ethoscribe.session import SessionConfig, ViewConfig, save_session_config

    session_cfg = SessionConfig(
        name=f"synth-seed{seed}", fps=cfg.fps, n_frames=T,
        views=[ViewConfig(name=view,
                          markers=marker_files[v] if view in marker_paths else None,
                          body=f"videos/{view}_body.mp4" if view in body_paths else None)
               for v, view in enumerate(views)],
        skeleton="skeleton.json", calibration="calibration.toml", seeds="seeds.slp",
        individuals=individuals, arena_mm=cfg.arena_mm,
    )
    save_session_config(root, session_cfg)
    timings["total"] = time.perf_counter() - t0
    return SynthSession(root=root, config=cfg, views=views, individuals=individuals, marker_videos=marker_paths,
                        body_videos=body_paths, seed_frames=seed_frames, timings=timings)
