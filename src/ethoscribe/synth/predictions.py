"""A trained pose network's predictions, simulated from a synthetic session's truth.

Most users bring candidates from a pose model (SLEAP, DeepLabCut, Lightning
Pose), not marker spots. Such predictions fail in typical ways, each a field
of :class:`PredictionErrors`:

- **jitter**: a good prediction is off by a few pixels (Gaussian per axis);
- **left/right confusions**: a symmetric pair (the two ears, the two front
  paws, ...) comes out exchanged in one view, for a run of frames (a
  network's confusions are temporally correlated);
- **jumps**: a visible keypoint is predicted on another keypoint of the
  body, with a lower score;
- **misses**: a visible keypoint gets no prediction;
- **guesses**: an occluded keypoint is still predicted (networks output a
  position for every node), far from the truth and with a low score.

:func:`simulate_predictions` applies them to the true projections
(``truth/points2d.nc``) and returns a table in the layout of
:func:`ethoscribe.candidates.predictions.read_predictions` plus the true
source of each row, so a benchmark can score both the raw predictions and
what the pose pipeline makes of them. :func:`write_dlc_predictions` writes
the table as one DeepLabCut ``.h5`` per view, so the real reader is used.

Examples
--------
>>> from ethoscribe.synth.truth import load_truth  # doctest: +SKIP
>>> table = simulate_predictions(load_truth("session"), PredictionErrors(), seed=0)  # doctest: +SKIP
>>> sorted(table.columns)[:4]  # doctest: +SKIP
['frame', 'hint_individual', 'hint_keypoint', 'score']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ethoscribe.io.atomic import atomic_path
from ethoscribe.skeleton import Skeleton
from ethoscribe.synth.truth import Truth


@dataclass(frozen=True)
class PredictionErrors:
    """How wrong the simulated network is (see the module docstring).

    The defaults are those of a decent but imperfect model on a held-out
    video: about 2 px of jitter, a left/right pair confused in about 5 % of
    its frames per view, 2 % jumps, 2 % misses, and most occluded keypoints
    guessed about 15 px off.

    >>> PredictionErrors().jitter_px, PredictionErrors(confusion_start=0.05).confusion_start
    (1.5, 0.05)
    """

    jitter_px: float = 1.5
    confusion_start: float = 0.01
    confusion_mean_frames: float = 5.0
    jump_rate: float = 0.02
    miss_rate: float = 0.02
    guess_rate: float = 0.7
    guess_px: float = 15.0


def simulate_predictions(truth: Truth, skeleton: Skeleton, errors: PredictionErrors = PredictionErrors(),
                         seed: int = 0) -> pd.DataFrame:
    """Per view, frame, animal and keypoint, one simulated prediction (or none).

    Returns the columns of :func:`~ethoscribe.candidates.predictions.read_predictions`
    (``frame, view, x, y, hint_keypoint, hint_individual, score``) plus
    ``source``: the flat index ``individual * K + keypoint`` of the keypoint
    the point was drawn from (the truth it belongs to), and ``kind``:
    ``good``, ``confused``, ``jump`` or ``guess``.

    Examples
    --------
    >>> table = simulate_predictions(truth, skeleton, seed=0)  # doctest: +SKIP
    >>> (table["kind"] == "confused").mean() < 0.1  # doctest: +SKIP
    True
    """
    rng = np.random.default_rng(seed)
    pos = truth.position2d  # V, T, K, I, 2
    vis = truth.visible  # V, T, K, I
    V, T, K, I = vis.shape
    names = list(skeleton.keypoints)
    if len(names) != K:
        raise ValueError(f"the skeleton has {len(names)} keypoints, the truth {K}")
    # which keypoint each prediction slot is drawn from (identity, then exchanged pairs and jumps)
    src = np.broadcast_to(np.arange(K)[None, None, :, None], (V, T, K, I)).copy()
    kind = np.full((V, T, K, I), "good", dtype=object)
    for a, b in skeleton.symmetry_indices():
        on = _confusion_runs(rng, (V, I), T, errors.confusion_start, errors.confusion_mean_frames)  # V, T, I
        on &= vis[:, :, a] & vis[:, :, b]
        src[:, :, a][on], src[:, :, b][on] = b, a
        kind[:, :, a][on] = kind[:, :, b][on] = "confused"
    jump = (rng.random((V, T, K, I)) < errors.jump_rate) & vis & (kind == "good")
    other = (np.arange(K)[None, None, :, None] + rng.integers(1, K, (V, T, K, I))) % K
    src = np.where(jump, other, src)
    kind[jump] = "jump"
    v_, t_, k_, i_ = np.indices((V, T, K, I))
    xy = pos[v_, t_, src, i_] + rng.normal(0.0, errors.jitter_px, (V, T, K, I, 2))
    guess = ~vis & (rng.random((V, T, K, I)) < errors.guess_rate) & np.isfinite(pos).all(-1)
    xy[guess] = pos[guess] + rng.normal(0.0, errors.guess_px, (int(guess.sum()), 2))
    kind[guess] = "guess"
    keep = (vis & (rng.random((V, T, K, I)) >= errors.miss_rate)) | guess
    keep &= np.isfinite(xy).all(-1)
    score = np.where(kind == "good", rng.uniform(0.8, 1.0, keep.shape),
                     np.where(kind == "guess", rng.uniform(0.05, 0.6, keep.shape), rng.uniform(0.4, 0.95, keep.shape)))
    vv, tt, kk, ii = np.nonzero(keep)
    table = pd.DataFrame({
        "frame": tt.astype(np.int64),
        "view": np.asarray(truth.views)[vv],
        "x": xy[vv, tt, kk, ii, 0], "y": xy[vv, tt, kk, ii, 1],
        "hint_keypoint": np.asarray(names)[kk],
        "hint_individual": np.asarray(truth.individuals)[ii],
        "score": score[vv, tt, kk, ii],
        "source": (ii * K + src[vv, tt, kk, ii]).astype(np.int64),
        "kind": kind[vv, tt, kk, ii].astype(str),
    })
    return table.sort_values(["frame", "view", "hint_individual", "hint_keypoint"], kind="stable").reset_index(drop=True)


def _confusion_runs(rng: np.random.Generator, shape: tuple[int, int], T: int, start: float,
                    mean_frames: float) -> NDArray[np.bool_]:
    """(V, T, I) runs of True: each starts with probability ``start`` per frame, lasts ~geometric(mean_frames)."""
    V, I = shape
    out = np.zeros((V, T, I), bool)
    for v in range(V):
        for i in range(I):
            t = 0
            while t < T:
                if rng.random() < start:
                    n = int(rng.geometric(1.0 / mean_frames))
                    out[v, t:t + n, i] = True
                    t += n
                t += 1
    return out


def write_dlc_predictions(table: pd.DataFrame, folder: str | os.PathLike[str], n_frames: int,
                          scorer: str = "DLC_simulated") -> dict[str, Path]:
    """Write ``table`` as one DeepLabCut multi-animal ``.h5`` per view (``<view>DLC_simulated.h5``).

    Rows are frames ``0..n_frames-1``; columns ``scorer/individuals/bodyparts/coords``
    with ``x, y, likelihood``; NaN where there is no prediction.

    Examples
    --------
    >>> paths = write_dlc_predictions(table, "preds", n_frames=500)  # doctest: +SKIP
    >>> paths["cam0"].name  # doctest: +SKIP
    'cam0DLC_simulated.h5'
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inds = list(dict.fromkeys(table["hint_individual"]))
    kps = list(dict.fromkeys(table["hint_keypoint"]))
    cols = pd.MultiIndex.from_product([[scorer], inds, kps, ["x", "y", "likelihood"]],
                                      names=["scorer", "individuals", "bodyparts", "coords"])
    paths: dict[str, Path] = {}
    for view, g in table.groupby("view", sort=False):
        wide = g.pivot_table(index="frame", columns=["hint_individual", "hint_keypoint"],
                             values=["x", "y", "score"], aggfunc="first")
        df = pd.DataFrame(np.nan, index=pd.RangeIndex(n_frames), columns=cols)
        for (coord, ind, kp), values in wide.items():
            df.loc[values.index, (scorer, ind, kp, "likelihood" if coord == "score" else coord)] = values.to_numpy()
        path = folder / f"{view}{scorer}.h5"
        with atomic_path(path) as tmp:
            df.to_hdf(tmp, key="df_with_missing", format="table")
        paths[str(view)] = path
    return paths
