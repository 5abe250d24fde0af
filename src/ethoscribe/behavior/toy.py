"""A tiny kinematic mouse for examples and tests of the behaviour pipeline.

Not the synthetic rig (:mod:`ethoscribe.synth`): no cameras, no rendering,
just 3D keypoints (mm) of the 12-point mouse doing scripted bouts of rest,
walk, run, turn, rear and groom, with known labels. Fast enough for unit
tests (a few ms per thousand frames).

Examples
--------
>>> ds, truth = toy_poses(n_frames=90, n_animals=2, seed=1)
>>> ds.position.shape
(90, 3, 12, 2)
>>> sorted(truth.columns)
['behaviour', 'frame', 'individual']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ethoscribe.skeleton import mouse12

TOY_BEHAVIOURS = ("rest", "walk", "run", "turn", "rear", "groom")

# body-frame template (x forward, y left, z up), mm
_TEMPLATE = {
    "ear_left": (28, 7, 26), "ear_right": (28, -7, 26),
    "back_front": (15, 0, 28), "back_mid": (-5, 0, 30), "back_rear": (-25, 0, 26),
    "paw_front_left": (18, 10, 0), "paw_front_right": (18, -10, 0),
    "paw_hind_left": (-22, 12, 0), "paw_hind_right": (-22, -12, 0),
    "tail_base": (-40, 0, 18), "tail_mid": (-75, 0, 6), "tail_tip": (-110, 0, 2),
}
_SPEED = {"rest": 0.0, "walk": 90.0, "run": 320.0, "turn": 5.0, "rear": 0.0, "groom": 0.0}
_TURN = {"rest": 0.0, "walk": 0.2, "run": 0.1, "turn": 2.8, "rear": 0.0, "groom": 0.0}


def _smooth(x: np.ndarray, w: int) -> np.ndarray:
    k = np.ones(w) / w
    pad = np.pad(x, [(w // 2, w - 1 - w // 2)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, pad)


def toy_poses(
    n_frames: int = 900,
    n_animals: int = 1,
    fps: float = 30.0,
    seed: int = 0,
    noise_mm: float = 0.5,
    bout_s: tuple[float, float] = (1.0, 4.0),
) -> tuple[xr.Dataset, pd.DataFrame]:
    """Poses (movement dataset, mm, 3D) and per-frame true behaviours.

    Returns
    -------
    (Dataset, DataFrame)
        The dataset has ``position`` (time, space, keypoints, individuals)
        and ``confidence``; the table has frame, individual, behaviour.
    """
    rng = np.random.default_rng(seed)
    kps = list(mouse12().keypoints)
    tmpl = np.array([_TEMPLATE[k] for k in kps], dtype=float)  # (K, 3)
    pos = np.zeros((n_frames, 3, len(kps), n_animals))
    rows = []
    t = np.arange(n_frames) / fps
    for a in range(n_animals):
        labels = []
        while len(labels) < n_frames:
            b = TOY_BEHAVIOURS[rng.integers(len(TOY_BEHAVIOURS))]
            if labels and b == labels[-1]:
                continue
            labels += [b] * int(rng.uniform(*bout_s) * fps)
        labels = labels[:n_frames]
        speed = np.array([_SPEED[b] for b in labels]) * rng.uniform(0.85, 1.15, n_frames).clip(0.85, 1.15)
        turn_dir = np.sign(rng.standard_normal(n_frames))
        turn = np.array([_TURN[b] for b in labels])
        # one turning direction per bout
        change = np.flatnonzero(np.r_[True, np.array(labels[1:]) != np.array(labels[:-1])])
        for s, e in zip(change, np.r_[change[1:], n_frames]):
            turn_dir[s:e] = turn_dir[s]
        rear = np.array([b == "rear" for b in labels], float)
        groom = np.array([b == "groom" for b in labels], float)
        w = max(1, int(0.15 * fps))
        speed, turn, rear, groom = (_smooth(v, w) for v in (speed, turn * turn_dir, rear, groom))
        heading = rng.uniform(-np.pi, np.pi) + np.cumsum(turn) / fps
        xy = np.cumsum(speed[:, None] * np.c_[np.cos(heading), np.sin(heading)], axis=0) / fps
        xy += rng.uniform(-300, 300, 2)
        for i in range(n_frames):
            body = tmpl.copy()
            # rear: pitch the body about the hind paws
            ang = 0.9 * rear[i]
            front = body[:, 0] > -30
            x, z = body[front, 0] + 22, body[front, 2]
            body[front, 0] = x * np.cos(ang) - z * np.sin(ang) - 22
            body[front, 2] = x * np.sin(ang) + z * np.cos(ang)
            # groom: head down, front paws oscillating near the face
            if groom[i] > 0:
                ph = 2 * np.pi * 5.0 * t[i]
                for k, side in ((kps.index("paw_front_left"), 1), (kps.index("paw_front_right"), -1)):
                    body[k] = body[k] * (1 - groom[i]) + groom[i] * np.array([26 + 4 * np.sin(ph), 5 * side, 14 + 6 * np.cos(ph + side)])
                for k in (kps.index("ear_left"), kps.index("ear_right")):
                    body[k, 2] -= 8 * groom[i]
            # gait: paws swing when moving
            gait = np.sin(2 * np.pi * (2 + speed[i] / 60) * t[i])
            for k, s in ((5, 1), (8, 1), (6, -1), (7, -1)):
                body[k, 0] += s * gait * min(speed[i], 300) / 40
            c, s_ = np.cos(heading[i]), np.sin(heading[i])
            R = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])
            pos[i, :, :, a] = (body @ R.T + np.r_[xy[i], 0]).T
        rows.append(pd.DataFrame({"frame": np.arange(n_frames), "individual": f"mouse{a}", "behaviour": labels}))
    pos += rng.normal(0, noise_mm, pos.shape)
    ds = xr.Dataset(
        {
            "position": (("time", "space", "keypoints", "individuals"), pos),
            "confidence": (("time", "keypoints", "individuals"), np.ones((n_frames, len(kps), n_animals))),
        },
        coords={"time": t, "space": ["x", "y", "z"], "keypoints": kps, "individuals": [f"mouse{a}" for a in range(n_animals)]},
        attrs={"fps": fps, "time_unit": "seconds", "ds_type": "poses", "source_software": "ethoscribe.toy", "space_unit": "mm"},
    )
    return ds, pd.concat(rows, ignore_index=True)
