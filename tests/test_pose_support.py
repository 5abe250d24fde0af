"""Hand-built pose sessions for the pose tests: a small rig, rigid walking animals, exact candidates.

Every case is built here from a known 3D truth (no video), so each test can
say exactly what the right label is. Imported by the other ``test_pose_*``
modules; its own tests check the builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ethoscribe.skeleton import mouse12
from ethoscribe.synth.cameras import arena_rig

#: mouse12 keypoints in a body frame (mm): x forward, y left, z up
BODY = np.array([
    [32, 9, 22], [32, -9, 22],             # ears
    [18, 0, 26], [0, 0, 29], [-20, 0, 25],  # back
    [22, 16, 2], [22, -16, 2], [-22, 18, 2], [-22, -18, 2],  # paws FL FR HL HR
    [-42, 0, 10], [-72, 0, 4], [-102, 0, 2],  # tail
], dtype=float)


@dataclass
class Case:
    root: Path
    truth3d: np.ndarray      # T, I, K, 3
    truth2d: np.ndarray      # V, T, I, K, 2
    candidates: pd.DataFrame
    owner: np.ndarray        # per candidate row: I*K index, -1 spurious
    seeds_frames: list[int]
    rig: object


def animal_track(T: int, start: tuple[float, float], velocity: tuple[float, float], wiggle: float = 0.0) -> np.ndarray:
    """(T, K, 3): the rigid body moving at constant velocity, facing its motion (paws paddling by ``wiggle`` mm)."""
    t = np.arange(T)[:, None]
    pos = np.asarray(start, float)[None] + t * np.asarray(velocity, float)[None]
    heading = np.arctan2(velocity[1], velocity[0])
    c, s = np.cos(heading), np.sin(heading)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    body = np.repeat(BODY[None], T, axis=0)
    if wiggle:
        phase = np.arange(T) * 0.6
        body[:, 5:9, 0] += wiggle * np.sin(phase[:, None] + np.array([0, np.pi, np.pi, 0])[None])
    out = body @ rot.T
    out[..., 0] += pos[:, 0:1]
    out[..., 1] += pos[:, 1:2]
    return out


def build_case(
    root: Path,
    tracks: list[np.ndarray],
    n_cameras: int = 4,
    seed: int = 0,
    noise_px: float = 0.15,
    seeds_frames: list[int] | None = None,
    calibration=None,
) -> Case:
    """Write a session (no videos) with the given animal tracks (each (T, K, 3)); candidates = exact projections + noise."""
    from ethoscribe.session import SessionConfig, ViewConfig, save_session_config
    from ethoscribe.synth.truth import write_seeds

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rig = arena_rig(n_cameras, np.random.default_rng(seed + 1))
    sk = mouse12()
    truth3d = np.stack(tracks, axis=1)  # T, I, K, 3
    T, I, K, _ = truth3d.shape
    individuals = [f"mouse{i}" for i in range(I)]
    truth2d = rig.project(truth3d)  # V, T, I, K, 2
    V = rig.n_cameras
    rows, owner = [], []
    for v in range(V):
        for t in range(T):
            pts = truth2d[v, t].reshape(-1, 2) + rng.normal(0, noise_px, (I * K, 2))
            for j, (x, y) in enumerate(pts):
                rows.append((t, rig.names[v], x, y, 150.0 + rng.normal(0, 5), 9))
                owner.append(j)
    df = pd.DataFrame(rows, columns=["frame", "view", "x", "y", "intensity", "area"])
    df["owner"] = owner
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # identities must not leak through order
    df["candidate"] = df.groupby(["frame", "view"]).cumcount()
    sk.save(root / "skeleton.json")
    (calibration or rig).save(root / "calibration.toml")
    seeds_frames = seeds_frames or [0, T // 2, T - 1]
    write_seeds(root / "seeds.slp", sk, rig.names, [f"videos/{n}_markers.mp4" for n in rig.names], T, rig.size, 30.0,
                seeds_frames, np.transpose(truth2d, (0, 1, 3, 2, 4)), np.ones((V, T, K, I), bool), individuals, rig=rig)
    save_session_config(root, SessionConfig(name="case", fps=30.0, n_frames=T, views=[ViewConfig(name=n) for n in rig.names],
                                            individuals=individuals))
    owner_arr = df.pop("owner").to_numpy()
    cands = df[["frame", "view", "candidate", "x", "y", "intensity", "area"]].copy()
    cands["view"] = cands["view"].astype("category")
    return Case(root, truth3d, truth2d, cands, owner_arr, seeds_frames, rig)


def label_array(labels: pd.DataFrame, T: int, V: int, I: int, K: int) -> np.ndarray:
    """(T, V, I, K, 2) from a dense labels table."""
    return np.stack([labels["x"].to_numpy(), labels["y"].to_numpy()], -1).reshape(T, V, I, K, 2)


def test_builder_writes_a_loadable_session(tmp_path: Path) -> None:
    from ethoscribe.io.seeds import load_seeds
    from ethoscribe.session import load_session

    case = build_case(tmp_path / "s", [animal_track(12, (-40, 0), (2, 0))])
    s = load_session(case.root)
    seeds = load_seeds(s.seeds_path, s.skeleton, s.config.view_names, s.config.individuals)
    assert seeds.points.shape == (3, 4, 1, 12, 2)
    assert np.allclose(seeds.points[0, :, 0], case.truth2d[:, 0, 0], atol=1e-6)
