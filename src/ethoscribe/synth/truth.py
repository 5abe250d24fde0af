"""Ground truth of a synthetic session: writing it, and :func:`load_truth` to read it back.

Files under ``OUT/truth/`` (all written atomically):

- ``points3d.nc``: `movement` poses dataset, ``position`` (time, space[x,y,z],
  keypoints, individuals) in mm, ``fps`` set.
- ``points2d.nc``: ``position`` (views, time, space[x,y], keypoints,
  individuals), the exact distorted projections in the *true* rig (NaN
  behind a camera); ``visible`` (views, time, keypoints, individuals) in the
  image and not hidden by a body; ``rendered`` visible and not missed (a
  spot was drawn); ``marker_xy`` the drawn spot's centre (projection plus
  jitter, NaN where not rendered).
- ``spurious.parquet``: ``frame, view, x, y, peak, sigma, kind`` of every
  spot that belongs to no marker (kind: ``static``, ``near``, ``random``).
- ``behaviour.parquet`` and ``behaviour.csv``: ``frame, time_s, individual,
  behaviour, partner`` (partner is empty outside social bouts).
- ``calibration_true.toml``: the true rig (``OUT/calibration.toml`` is the
  written, perturbed one).
- ``synth.json``: the :class:`~ethoscribe.synth.rig.SynthConfig` used.

``OUT/seeds.slp`` holds the seed labels (see :func:`write_seeds`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from ethoscribe.errors import InputError
from ethoscribe.geometry.camera import CameraRig
from ethoscribe.io.atomic import atomic_path, write_text
from ethoscribe.skeleton import Skeleton

TRUTH_DIR = "truth"
POINTS3D = f"{TRUTH_DIR}/points3d.nc"
POINTS2D = f"{TRUTH_DIR}/points2d.nc"
SPURIOUS = f"{TRUTH_DIR}/spurious.parquet"
BEHAVIOUR = f"{TRUTH_DIR}/behaviour.parquet"
BEHAVIOUR_CSV = f"{TRUTH_DIR}/behaviour.csv"
CALIBRATION_TRUE = f"{TRUTH_DIR}/calibration_true.toml"
CONFIG = f"{TRUTH_DIR}/synth.json"
SOURCE = "ethoscribe.synth"


# ------------------------------------------------------------------ writing
def _save_nc(ds: xr.Dataset, path: Path) -> Path:
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return path


def write_points3d(path: Path, keypoints3d: NDArray[np.float64], keypoint_names: list[str], individuals: list[str], fps: float) -> Path:
    """Save (T, K, I, 3) keypoints as a `movement` poses dataset."""
    from movement.io import load_poses

    pos = np.transpose(keypoints3d, (0, 3, 1, 2))  # time, space, keypoints, individuals
    ds = load_poses.from_numpy(
        pos, confidence_array=np.ones(pos.shape[:1] + pos.shape[2:], np.float32),
        individual_names=list(individuals), keypoint_names=list(keypoint_names), fps=fps, source_software=SOURCE,
    )
    ds.attrs["space_unit"] = "mm"
    return _save_nc(ds, path)


def points2d_dataset(views: list[str], position: NDArray[np.float64], visible: NDArray[np.bool_], rendered: NDArray[np.bool_],
                     marker_xy: NDArray[np.float64], keypoint_names: list[str], individuals: list[str], fps: float,
                     image_size: NDArray[np.int64]) -> xr.Dataset:
    """The 2D truth as an xarray Dataset (arrays as documented in the module docstring)."""
    T = position.shape[1]
    coords = {
        "views": list(views), "time": np.arange(T) / fps, "space": ["x", "y"],
        "keypoints": list(keypoint_names), "individuals": list(individuals),
    }
    dims4 = ("views", "time", "keypoints", "individuals")
    dims5 = ("views", "time", "space", "keypoints", "individuals")
    ds = xr.Dataset(
        {
            "position": (dims5, np.moveaxis(position, -1, 2)),
            "marker_xy": (dims5, np.moveaxis(marker_xy, -1, 2)),
            "visible": (dims4, visible),
            "rendered": (dims4, rendered),
            "image_size": (("views", "size"), np.asarray(image_size, np.int64)),
        },
        coords={**coords, "size": ["width", "height"]},
        attrs={"fps": float(fps), "source_software": SOURCE, "space_unit": "pixels",
               "description": "exact distorted projections in the true rig; marker_xy = drawn spot centres"},
    )
    return ds


def write_points2d(path: Path, ds: xr.Dataset) -> Path:
    """Save the 2D truth dataset of :func:`points2d_dataset`."""
    return _save_nc(ds, path)


def write_behaviour(parquet: Path, csv: Path, labels: NDArray[np.str_], partners: NDArray[np.str_], individuals: list[str], fps: float) -> pd.DataFrame:
    """Save per-frame behaviour labels (long format: one row per frame and individual)."""
    T, n = labels.shape
    frame = np.repeat(np.arange(T), n)
    df = pd.DataFrame({
        "frame": frame.astype(np.int64),
        "time_s": frame / float(fps),
        "individual": np.tile(np.asarray(individuals, dtype=object), T),
        "behaviour": labels.reshape(-1).astype(object),
        "partner": partners.reshape(-1).astype(object),
    })
    with atomic_path(parquet) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    return df


def write_spurious(path: Path, df: pd.DataFrame) -> Path:
    """Save the spurious-spot table."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


def choose_seed_frames(visible: NDArray[np.bool_], n: int = 3) -> list[int]:
    """``n`` frames spread over the recording, each where the most keypoints are visible in the most views.

    ``visible`` (V, T, K, I). The recording (without frame 0) is cut into
    ``n`` equal parts; in the middle 60 % of each part the frame with the
    most (view, keypoint, individual) visible wins (earliest on ties).
    """
    T = visible.shape[1]
    if T <= 1:
        return [0]
    score = visible.sum(axis=(0, 2, 3))
    edges = np.linspace(1, T, n + 1)
    out: list[int] = []
    for k in range(n):
        lo, hi = edges[k], edges[k + 1]
        a = int(np.floor(lo + 0.2 * (hi - lo)))
        b = max(a + 1, int(np.ceil(hi - 0.2 * (hi - lo))))
        a, b = max(a, 1), min(b, T)
        if a >= b:
            continue
        f = a + int(np.argmax(score[a:b]))
        if f not in out:
            out.append(f)
    return sorted(out)


class _OrderedPair(set):
    """A two-node set that iterates in a fixed order (sleap-io stores symmetries as sets of
    nodes hashed by identity, so their order in the file would change from run to run)."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(items)
        self._order = list(items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._order)


def _deterministic_sleap_skeleton(skeleton: Skeleton) -> Any:
    sk = skeleton.to_sleap()
    by_name = {n.name: n for n in sk.nodes}
    for sym, (a, b) in zip(sk.symmetries, skeleton.symmetry):
        object.__setattr__(sym, "nodes", _OrderedPair([by_name[a], by_name[b]]))
    return sk


def write_seeds(path: Path, skeleton: Skeleton, views: list[str], video_files: list[str], n_frames: int, image_size: NDArray[np.int64],
                fps: float, frames: list[int], position: NDArray[np.float64], visible: NDArray[np.bool_],
                individuals: list[str], rig: CameraRig | None = None) -> Path:
    """Seed labels as a person would give them: exact projections of the visible keypoints.

    One ``sleap_io.Video`` per view (its path relative to the session
    folder), one ``Track`` per individual, and a user ``Instance`` per frame,
    view and individual with at least one visible keypoint (occluded or
    out-of-image keypoints are missing). With ``rig``, the labels also hold a
    ``RecordingSession`` linking each video to its calibrated camera.
    """
    import sleap_io as sio

    sk = _deterministic_sleap_skeleton(skeleton)
    tracks = [sio.Track(name) for name in individuals]
    videos = []
    for i, (view, file) in enumerate(zip(views, video_files)):
        w, h = (int(x) for x in image_size[i])
        videos.append(sio.Video(filename=file, open_backend=False,
                                backend_metadata={"shape": [int(n_frames), h, w, 1], "fps": float(fps), "grayscale": True}))
    lfs = []
    for v, video in enumerate(videos):
        for f in frames:
            insts = []
            for a, track in enumerate(tracks):
                vis = visible[v, f, :, a]
                if not vis.any():
                    continue
                pts = np.where(vis[:, None], position[v, f, :, a], np.nan)
                insts.append(sio.Instance.from_numpy(pts, skeleton=sk, track=track))
            if insts:
                lfs.append(sio.LabeledFrame(video=video, frame_idx=int(f), instances=insts))
    sessions = []
    if rig is not None:
        cams = [sio.Camera(matrix=rig.matrix[i], dist=rig.dist[i], size=tuple(int(x) for x in rig.size[i]),
                           rvec=rig.rvec[i], tvec=rig.tvec[i], name=rig.names[i]) for i in range(rig.n_cameras)]
        session = sio.RecordingSession(camera_group=sio.CameraGroup(cameras=cams))
        by_name = dict(zip(rig.names, cams))
        for view, video in zip(views, videos):
            if view in by_name:
                session.add_video(video, by_name[view])
        sessions.append(session)
    labels = sio.Labels(labeled_frames=lfs, videos=videos, skeletons=[sk], tracks=tracks, sessions=sessions)
    with atomic_path(path) as tmp:
        labels.save(str(tmp))
    return path


def write_config(path: Path, config: dict[str, Any]) -> Path:
    return write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ reading
@dataclass
class Truth:
    """Everything the synthetic rig knows about a session it wrote.

    Attributes
    ----------
    root
        The session folder.
    points3d
        `movement` poses dataset: ``position`` (time, space, keypoints, individuals), mm.
    points2d
        ``position``, ``marker_xy`` (views, time, space, keypoints,
        individuals) and ``visible``, ``rendered`` (views, time, keypoints,
        individuals).
    behaviour
        One row per frame and individual: ``frame, time_s, individual, behaviour, partner``.
    spurious
        ``frame, view, x, y, peak, sigma, kind`` of each spurious spot.
    rig
        The true camera rig (the session's ``calibration.toml`` is perturbed by the noise level).
    config
        The synthesis settings (``SynthConfig`` as a dict).
    """

    root: Path
    points3d: xr.Dataset
    points2d: xr.Dataset
    behaviour: pd.DataFrame
    spurious: pd.DataFrame
    rig: CameraRig
    config: dict[str, Any]

    @property
    def fps(self) -> float:
        return float(self.points3d.attrs["fps"])

    @property
    def n_frames(self) -> int:
        return int(self.points3d.sizes["time"])

    @property
    def individuals(self) -> list[str]:
        return [str(x) for x in self.points3d["individuals"].values]

    @property
    def views(self) -> list[str]:
        return [str(x) for x in self.points2d["views"].values]

    @property
    def keypoints3d(self) -> NDArray[np.float64]:
        """Keypoints as (time, keypoints, individuals, 3)."""
        return np.transpose(self.points3d["position"].values, (0, 2, 3, 1))

    @property
    def position2d(self) -> NDArray[np.float64]:
        """True projections as (views, time, keypoints, individuals, 2)."""
        return np.moveaxis(self.points2d["position"].values, 2, -1)

    @property
    def marker_xy(self) -> NDArray[np.float64]:
        """Drawn spot centres as (views, time, keypoints, individuals, 2) (NaN where none)."""
        return np.moveaxis(self.points2d["marker_xy"].values, 2, -1)

    @property
    def visible(self) -> NDArray[np.bool_]:
        return self.points2d["visible"].values.astype(bool)

    @property
    def rendered(self) -> NDArray[np.bool_]:
        return self.points2d["rendered"].values.astype(bool)

    def labels(self) -> pd.DataFrame:
        """Behaviour labels as a (frame x individual) table of strings."""
        return self.behaviour.pivot(index="frame", columns="individual", values="behaviour")[self.individuals]

    def bouts(self) -> pd.DataFrame:
        """Runs of one label per individual: ``individual, behaviour, partner, start, stop`` (frames, stop exclusive), ``duration_s``."""
        rows = []
        for ind, g in self.behaviour.sort_values(["individual", "frame"]).groupby("individual", sort=False):
            lab = g["behaviour"].to_numpy()
            par = g["partner"].to_numpy()
            fr = g["frame"].to_numpy()
            cut = np.r_[0, np.nonzero((lab[1:] != lab[:-1]) | (par[1:] != par[:-1]))[0] + 1, len(lab)]
            for a, b in zip(cut[:-1], cut[1:]):
                rows.append((ind, lab[a], par[a], int(fr[a]), int(fr[b - 1]) + 1))
        df = pd.DataFrame(rows, columns=["individual", "behaviour", "partner", "start", "stop"])
        df["duration_s"] = (df["stop"] - df["start"]) / self.fps
        return df.sort_values(["start", "individual"], kind="stable").reset_index(drop=True)


def load_truth(session_dir: str | os.PathLike[str]) -> Truth:
    """Read the ground truth a synthetic session holds (see the module docstring).

    Examples
    --------
    >>> truth = load_truth("out/session")  # doctest: +SKIP
    >>> truth.keypoints3d.shape  # doctest: +SKIP
    (500, 12, 1, 3)
    """
    root = Path(session_dir)
    if root.suffix == ".toml":
        root = root.parent
    missing = [p for p in (POINTS3D, POINTS2D, BEHAVIOUR, SPURIOUS, CALIBRATION_TRUE) if not (root / p).is_file()]
    if missing:
        raise InputError(f"{root}: not a synthetic session with ground truth (missing {missing})")
    cfg_path = root / CONFIG
    config = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    return Truth(
        root=root,
        points3d=xr.load_dataset(root / POINTS3D),
        points2d=xr.load_dataset(root / POINTS2D),
        behaviour=pd.read_parquet(root / BEHAVIOUR).fillna({"partner": ""}),
        spurious=pd.read_parquet(root / SPURIOUS),
        rig=CameraRig.load(root / CALIBRATION_TRUE),
        config=config,
    )
