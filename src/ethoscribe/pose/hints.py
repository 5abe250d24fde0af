"""How far to trust a pose model's names: measured on the recording, turned into costs.

Predictions come with the model's keypoint and animal names (*hints*). They
are evidence, and how strong depends on the model: a good network names 97 %
of its points right, a poor one far fewer. :func:`measure_hint_agreement`
measures it on the recording itself, without labels: the points a model gave
the same name in several views are triangulated (RANSAC over the usable
views), and the share of them that agree with the others is the model's
accuracy (a lower bound: jitter beyond the inlier threshold, or a guess at an
occluded keypoint, counts against it; see :func:`measure_hint_agreement`).

:func:`hint_costs` turns an accuracy ``a`` over ``n`` names into the costs the
reasoner and the association add, in the pipeline's units (squared standard
scores, i.e. twice a negative log-likelihood ratio against a model that names
at random): ``-2 log(a n)`` when the hint names the keypoint, ``-2 log((1 - a)
n / (n - 1))`` when it names another one.

Examples
--------
>>> [round(c, 2) for c in hint_costs(0.97, 12)]
[-4.91, 6.84]
>>> [round(c, 2) for c in hint_costs(1 / 12, 12)]
[-0.0, -0.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ethoscribe.pose.candidates import CandidateIndex
from ethoscribe.pose.geometry import FrameGeometry

#: frames sampled (evenly) to measure the agreement: plenty for a share, cheap on long recordings
SAMPLE_FRAMES = 500


@dataclass(frozen=True)
class HintAgreement:
    """What :func:`measure_hint_agreement` found.

    ``accuracy`` is Laplace-smoothed, ``(agree + 1) / (checked + 2)``, so
    it is 0.5 (weak evidence) when nothing could be checked.
    """

    checked: int
    agree: int

    @property
    def accuracy(self) -> float:
        return (self.agree + 1.0) / (self.checked + 2.0)


def hint_costs(accuracy: float, n_names: int) -> tuple[float, float]:
    """(cost when the hint names this keypoint or animal, cost when it names another one).

    >>> hint_costs(0.5, 2)
    (-0.0, -0.0)
    """
    if n_names < 2:
        return 0.0, 0.0
    a = float(np.clip(accuracy, 1e-6, 1 - 1e-6))
    return -2.0 * float(np.log(a * n_names)), -2.0 * float(np.log((1.0 - a) * n_names / (n_names - 1)))


def measure_hint_agreement(cands: CandidateIndex, geo: FrameGeometry, n_individuals: int, n_keypoints: int,
                           threshold_px: float, use: NDArray[np.bool_]) -> HintAgreement:
    """Share of the model's named points that the other views' same-named points confirm in 3D.

    For each sampled frame, each (animal, keypoint) name takes the model's
    best-scored point per usable view; names seen in at least two usable
    views are triangulated with RANSAC (``threshold_px``), and a point agrees
    when it is an inlier. A name seen in exactly two views cannot tell which
    one is wrong, so those pairs count by the square root of their agreeing
    share. With one animal, animal names are ignored.

    Examples
    --------
    >>> agreement = measure_hint_agreement(cands, geo, 1, 12, 4.0, np.ones(6, bool))  # doctest: +SKIP
    >>> agreement.accuracy  # doctest: +SKIP
    0.87
    """
    named = cands.hint_keypoint >= 0
    if n_individuals > 1:
        named &= cands.hint_individual >= 0
    if not named.any() or use.sum() < 2:
        return HintAgreement(0, 0)
    frames = np.unique(cands.frame[named])
    if len(frames) > SAMPLE_FRAMES:
        frames = frames[np.linspace(0, len(frames) - 1, SAMPLE_FRAMES).round().astype(int)]
    sel = named & np.isin(cands.frame, frames) & use[cands.view]
    ind = np.maximum(cands.hint_individual, 0) if n_individuals > 1 else np.zeros_like(cands.hint_individual)
    V, F, P = len(use), len(frames), n_individuals * n_keypoints
    px = np.full((V, F * P, 2), np.nan)
    point = np.searchsorted(frames, cands.frame[sel]) * P + ind[sel] * n_keypoints + cands.hint_keypoint[sel]
    # candidates are ordered best score first within a frame and view: the first one of a name wins
    order = np.flatnonzero(sel)[::-1]
    px[cands.view[order], point[::-1]] = np.stack([cands.x[order], cands.y[order]], axis=-1)
    present = np.isfinite(px).all(-1)
    multi = present.sum(axis=0) >= 2
    if not multi.any():
        return HintAgreement(0, 0)
    px, present = px[:, multi], present[:, multi]
    tri = geo.triangulate(geo.rig.undistort(px), px, threshold_px, use)
    agree = present & tri.inliers & (tri.n_inliers >= 2)[None, :]
    # a pair cannot say which of its two views is wrong: both agree with probability a^2, so its
    # agreeing share estimates a^2 and counts as sqrt(share) of its points
    pair = present.sum(axis=0) == 2
    n_pair, n_many = int(present[:, pair].sum()), int(present[:, ~pair].sum())
    ok_pair = n_pair * float(np.sqrt(agree[:, pair].sum() / n_pair)) if n_pair else 0.0
    return HintAgreement(n_pair + n_many, int(round(ok_pair)) + int(agree[:, ~pair].sum()))
