"""Flags and confidence of the pose outputs on hand-built pass arrays (:mod:`ethoscribe.pose.outputs`).

Two keypoints, three views, one animal; ``A`` and ``B`` are the two
markers (keypoint 0 belongs on ``A``, keypoint 1 on ``B``). The forward and
backward tracking passes are written by hand, then reconciled by
:func:`merge_passes` and judged by :func:`label_quality`.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ethoscribe.pose import PoseConfig
from ethoscribe.pose.labels import REASON_BIT
from ethoscribe.pose.model import BodyTemplate
from ethoscribe.pose.outputs import _empty_arrays, fill_gaps, label_quality, merge_passes

V, I, K = 3, 1, 2
A = np.array([0.0, 0.0, 0.0])
B = np.array([20.0, 0.0, 0.0])
C = np.array([0.0, 20.0, 0.0])
THRESHOLD = 2.0  # px; one pixel per world unit: two points within 2 units are one marker


class _Geo:
    """One pixel per world unit everywhere."""

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = np.asarray(X).reshape(-1, 3).shape[0]
        return np.zeros((V, n, 2)), np.ones((V, n))

    def pixels_per_unit(self, depth: np.ndarray) -> np.ndarray:
        return np.ones_like(depth)


SU = SimpleNamespace(seed_xyz=np.zeros((1, I, K, 3)), geo=_Geo(), config=PoseConfig(),
                     template=BodyTemplate(np.stack([A, B])[None], np.full(K, 2.0), 40.0))


def _passes(T: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Both passes over T frames: keypoint 0 on A (candidate 0), keypoint 1 on B (candidate 1), in every view."""
    out = []
    for _ in range(2):
        p = _empty_arrays(T, V, I, K)
        p["done"][:] = True
        p["threshold"][:] = THRESHOLD
        for k, (X, cid) in enumerate(((A, 0), (B, 1))):
            _put(p, slice(None), k, X, cid, V)
        out.append(p)
    return out[0], out[1]


def _put(p: dict[str, np.ndarray], t: int | slice, k: int, X: np.ndarray | None, cid: int, n: int) -> None:
    """Keypoint k of frame(s) t on point X (candidate ``cid`` in ``n`` views), or lost (X None)."""
    if X is None:
        p["X"][t, 0, k], p["n_in"][t, 0, k], p["cid"][t, :, 0, k] = np.nan, 0, -1
        p["xy"][t, :, 0, k], p["err"][t, :, 0, k], p["margin"][t, 0, k] = np.nan, np.nan, np.nan
        return
    p["X"][t, 0, k], p["n_in"][t, 0, k], p["margin"][t, 0, k], p["err3"][t, 0, k] = X, n, 10.0, 0.3
    p["cid"][t, :, 0, k], p["xy"][t, :, 0, k], p["err"][t, :, 0, k], p["stage"][t, :, 0, k] = -1, np.nan, np.nan, 2
    p["cid"][t, :n, 0, k], p["xy"][t, :n, 0, k], p["err"][t, :n, 0, k], p["stage"][t, :n, 0, k] = cid, X[:2] + 100, 0.3, 3


def _judge(f: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    a = merge_passes(SU, f, b)
    a["predicted"] = np.zeros(a["n_in"].shape, bool)
    bits, flag, conf = label_quality(SU, a, np.zeros(V, bool))
    return a, bits, flag, conf


def test_a_marker_kept_against_a_claim_is_a_conflict_unless_both_passes_confirm_it() -> None:
    f, b = _passes(5)
    # frame 2: the forward pass put keypoint 1 on keypoint 0's marker A (3 views) and lost keypoint 0; the backward
    # pass has keypoint 0 on A (2 views) and lost keypoint 1. Keypoint 0 has fewer views and lets go: keypoint 1
    # keeps A, a wrong label that nothing but a tie-break backs
    _put(f, 2, 0, None, -1, 0)
    _put(f, 2, 1, A, 0, 3)
    _put(b, 2, 0, A, 0, 2)
    _put(b, 2, 1, None, -1, 0)
    # frame 3: both passes have keypoint 0 on A; the forward pass also put keypoint 1 there (2 views), the backward
    # pass lost it. Keypoint 1 lets go: keypoint 0 keeps its marker, confirmed by both passes, and is right
    _put(f, 3, 1, A, 0, 2)
    _put(b, 3, 1, None, -1, 0)
    a, bits, flag, conf = _judge(f, b)
    assert a["dropped"][2, 0, 0] and a["won"][2, 0, 1]
    assert a["dropped"][3, 0, 1] and a["won"][3, 0, 0] and a["confirmed"][3, 0, 0]
    wrong = (bits[2, :, 0, 1] & REASON_BIT["conflict"]) != 0
    assert wrong.all() and flag[2, :, 0, 1].all() and (conf[2, :, 0, 1] <= 0.5).all()
    right = (bits[3, :, 0, 0] & REASON_BIT["conflict"]) != 0
    assert not right.any() and not flag[3, :, 0, 0].any() and (conf[3, :, 0, 0] > 0.9).all()
    # frames without a claim are untouched
    assert not flag[[0, 1, 4]].any()


def test_a_disagreement_is_settled_when_the_other_pass_followed_a_held_marker() -> None:
    # one frame, no agreed neighbour to judge the passes by: the forward pass (taken) has keypoint 0 on A
    f, b = _passes(1)
    _put(b, 0, 0, B, 1, 3)  # the backward pass followed keypoint 1's marker, which keypoint 1 holds
    a, bits, flag, conf = _judge(f, b)
    assert a["disagree"][0, 0, 0] and not a["from_backward"][0, 0, 0] and a["decisive"][0, 0, 0] == 1.0
    assert (bits[0, :, 0, 0] & REASON_BIT["passes_disagree"]).all()
    assert not flag[0, :, 0, 0].any() and (conf[0, :, 0, 0] > 0.9).all()

    f, b = _passes(1)
    _put(b, 0, 0, C, 2, 3)  # ... a marker nobody holds: nothing says which pass is right
    a, _, _, conf = _judge(f, b)
    assert a["disagree"][0, 0, 0] and a["decisive"][0, 0, 0] == 0.0
    assert (conf[0, :, 0, 0] <= 0.5).all()  # a coin toss between the passes


def _body_track(T: int, jump_at: int, paw_after: np.ndarray, shift_after: np.ndarray) -> tuple[SimpleNamespace, np.ndarray]:
    """A walking body of four keypoints and a paw (keypoint 4), tracked by both passes up to frame 19 and by the
    forward pass alone after it (as after the last seed). From ``jump_at`` on, the whole animal is shifted by
    ``shift_after`` and the paw sits at ``paw_after`` in the body's frame. Returns the SU and the judged flags."""
    body = np.array([[0.0, 0, 0], [20, 0, 0], [0, 20, 0], [20, 20, 0], [10, 10, -10]])
    su = SimpleNamespace(seed_xyz=body[None, None], geo=_Geo(), config=PoseConfig(),
                         template=BodyTemplate(body[None], np.full(5, 2.0), 40.0))
    f, b = _empty_arrays(T, V, 1, 5), _empty_arrays(T, V, 1, 5)
    f["done"][:] = True
    b["done"][:20] = True
    for p in (f, b):
        p["threshold"][:] = THRESHOLD
    for t in range(T):
        pose = body.copy()
        pose[4] += [np.sin(t / 2.0), 0.0, 0.0]  # the paw swings a little
        if t >= jump_at:
            pose[4] = paw_after
            pose += shift_after
        pose += [0.5 * t, 0.0, 0.0]  # the animal walks
        for p in (f, b):
            if p["done"][t]:
                for k in range(5):
                    _put(p, t, k, pose[k], k, 3)
    f["stage"][0], b["stage"][0] = 0, 0  # frame 0 is a seed
    a = merge_passes(su, f, b)
    a["predicted"] = np.zeros(a["n_in"].shape, bool)
    bits, flag, _ = label_quality(su, a, np.zeros(V, bool))
    return bits, flag


def test_a_track_that_jumps_onto_another_marker_and_stays_there_is_flagged_to_its_end() -> None:
    # after the last seed, one pass only: the paw jumps 20 units to the other side of the body at frame 30 and
    # stays there (a marker another keypoint left, followed smoothly): nothing clashes, every frame after it is wrong
    bits, flag = _body_track(40, 30, np.array([10.0, 10, 10]), np.zeros(3))
    detached = (bits[:, :, 0, 4] & REASON_BIT["detached_track"]) != 0
    assert detached[30:].all() and flag[30:, :, 0, 4].all()
    assert not detached[:30].any() and not flag[:29, :, 0, 4].any()  # frame 29 borders the jump (large_jump)
    assert not (bits[:, :, 0, :4] & REASON_BIT["detached_track"]).any()


def test_a_whole_animal_that_moves_fast_is_not_a_detached_track() -> None:
    # the same jump of the paw, but the whole body moves with it (a startle): the body agrees, nothing is flagged
    bits, flag = _body_track(40, 30, np.array([10.0, 10, -10]), np.array([0.0, 20.0, 0.0]))
    assert not (bits & REASON_BIT["detached_track"]).any()
    assert not flag[:29].any() and not flag[31:].any()  # only the jump itself is worth a look (large_jump)


class _OrthoGeo(_Geo):
    """Every view sees (x, y) of a point, one pixel per world unit."""

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X).reshape(-1, 3)
        return np.broadcast_to(X[:, :2], (V, len(X), 2)).copy(), np.ones((V, len(X)))


class _Spots:
    """Detected spots: ``spots[(frame, view)]`` is a list of (candidate id, x, y); no other spot anywhere."""

    def __init__(self, spots: dict[tuple[int, int], list[tuple[int, float, float]]] | None = None) -> None:
        self.spots = spots or {}

    def block(self, frames: np.ndarray) -> SimpleNamespace:
        M = max([1] + [len(s) for s in self.spots.values()])
        xy = np.full((len(frames), V, M, 2), np.nan)
        cid = np.full((len(frames), V, M), -1)
        for (t, v), spots in self.spots.items():
            for r in np.flatnonzero(np.asarray(frames) == t):
                for m, (c, x, y) in enumerate(spots):
                    cid[r, v, m], xy[r, v, m] = c, (x, y)
        return SimpleNamespace(xy=xy, cid=cid, valid=cid >= 0)


def _ortho_su(spots: _Spots) -> SimpleNamespace:
    return SimpleNamespace(seed_xyz=np.stack([A, B])[None, None], geo=_OrthoGeo(), config=PoseConfig(), fps=30.0,
                           sigma_px=0.5, rig=SimpleNamespace(in_image=lambda p: np.ones(p.shape[:-1], bool)),
                           template=BodyTemplate(np.stack([A, B])[None], np.full(K, 2.0), 40.0), cands=spots)


def test_a_single_view_on_the_keypoints_track_is_trusted_and_one_off_it_is_replaced() -> None:
    su = _ortho_su(_Spots())
    for offset, kept in ((0.5, True), (30.0, False)):
        f, b = _passes(7)
        for p in (f, b):
            for t in range(7):
                _put(p, t, 0, A + [0.2 * t, 0.0, 0.0], 0, 3)  # keypoint 0 walks slowly along x
            # frame 3: keypoint 0 is seen in view 0 only; nothing checked that label but its track
            _put(p, 3, 0, A + [0.6, 0.0, 0.0], 0, 1)
            p["X"][3, 0, 0] = np.nan
            p["xy"][3, 0, 0, 0] = [0.6 + offset, 0.0]
        a = merge_passes(su, f, b)
        a["predicted"] = fill_gaps(su, a, np.zeros(V, bool))
        bits, flag, conf = label_quality(su, a, np.zeros(V, bool))
        assert a["predicted"][3, 0, 0]
        assert (a["cid"][3, 0, 0, 0] == 0) == kept  # a label off the track gives way to the track's prediction
        assert not flag[3, 0, 0, 0] and conf[3, 0, 0, 0] > 0.9


def test_a_prediction_that_lands_on_spots_nobody_took_is_trusted() -> None:
    # keypoint 0 moves fast (3 px a frame) and is lost in frame 3: its interpolation alone is too uncertain to trust
    for spots, trusted in (({}, False), ({(3, 0): [(5, 9.5, 0.0)], (3, 1): [(6, 9.0, 0.5)]}, True),
                           ({(3, 0): [(5, 9.5, 0.0)]}, False), ({(3, 0): [(5, 9.5, 0.0)], (3, 1): [(6, 14.0, 0.0)]}, False)):
        f, b = _passes(7)
        for p in (f, b):
            for t in range(7):
                _put(p, t, 0, A + [3.0 * t, 0.0, 0.0], 0, 3)
            _put(p, 3, 0, None, -1, 0)
        su = _ortho_su(_Spots(spots))
        a = merge_passes(su, f, b)
        a["predicted"] = fill_gaps(su, a, np.zeros(V, bool))
        _, flag, conf = label_quality(su, a, np.zeros(V, bool))
        assert a["predicted"][3, 0, 0] and np.allclose(a["xy"][3, :, 0, 0], [9.0, 0.0])
        # two views see a spot that no keypoint took where the track predicts the keypoint: the point is there
        assert (not flag[3, :, 0, 0].any()) == trusted and (conf[3, :, 0, 0] >= 0.9).all() == trusted
        assert flag[3, :, 0, 0].all() != trusted


def test_a_label_more_than_5px_from_its_point_is_flagged_even_within_a_wide_inlier_threshold() -> None:
    # noisy spots widen the inlier threshold to 8 px: a label 6 px from where its 3D point projects still joined the
    # point, but it is likely more than 5 px off the keypoint; one 4 px away is fine
    f, b = _passes(3)
    for p in (f, b):
        p["threshold"][:] = 8.0
        p["err"][1, 0, 0, 0], p["err"][1, 1, 0, 0] = 6.0, 4.0
    _, bits, flag, conf = _judge(f, b)
    assert bits[1, 0, 0, 0] & REASON_BIT["high_reprojection_error"] and flag[1, 0, 0, 0] and conf[1, 0, 0, 0] < 0.5
    assert not bits[1, 1, 0, 0] & REASON_BIT["high_reprojection_error"] and not flag[1, 1, 0, 0]


def test_a_reprojected_label_is_doubtful_when_the_views_of_its_point_spread_widely() -> None:
    # noisy spots (inlier threshold 8 px): keypoint 0 is seen in views 0 and 1 and reprojected into view 2; the point
    # is only as good as its views agree: labels 4.5 px off it (RMS) leave its reprojection likely beyond 5 px
    for spread, doubtful in ((1.0, False), (4.5, True)):
        f, b = _passes(3)
        for p in (f, b):
            p["threshold"][:] = 8.0
            p["err"][1, :2, 0, 0] = spread
            p["cid"][1, 2, 0, 0], p["xy"][1, 2, 0, 0], p["err"][1, 2, 0, 0], p["stage"][1, 2, 0, 0] = -1, 0.0, np.nan, 4
        _, bits, flag, conf = _judge(f, b)
        assert bits[1, 2, 0, 0] & REASON_BIT["reprojected"]
        assert flag[1, 2, 0, 0] == doubtful and (conf[1, 2, 0, 0] < 0.5) == doubtful
        assert not flag[1, :2, 0, 0].any()
