"""Each stage of the pose pipeline on hand-built cases with a known answer.

Cases come from :mod:`test_pose_support`: rigid animals walking in front of a
4-camera rig, candidates at the exact projections (plus 0.15 px noise).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_pose_support import BODY, animal_track, build_case, label_array

from ethoscribe.pose import GeometricReasoner, PoseConfig, run_pose
from ethoscribe.pose.reasoner import Assignment
from ethoscribe.pose.stages import ReasonerAnswerError
from ethoscribe.skeleton import mouse12

K = 12
KP = {k: i for i, k in enumerate(mouse12().keypoints)}
CFG = PoseConfig(chunk_size=10)


def cand_owner(case, labels: pd.DataFrame) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(T, V, I, K): the truth owner (I*K index) of each label's candidate, -1 spurious, -2 none."""
    T, I = case.truth3d.shape[:2]
    V = case.rig.n_cameras
    key = pd.Series(case.owner, index=pd.MultiIndex.from_arrays(
        [case.candidates["frame"].to_numpy(), case.candidates["view"].astype(str).to_numpy(), case.candidates["candidate"].to_numpy()]))
    idx = pd.MultiIndex.from_arrays([labels["frame"], labels["view"], labels["candidate"]])
    own = key.reindex(idx).to_numpy()
    return np.where(labels["candidate"].to_numpy() >= 0, np.nan_to_num(own, nan=-1), -2).astype(int).reshape(T, V, I, K)


class SwappingReasoner(GeometricReasoner):
    """The geometric reasoner, but in one view and frame it answers the two front paws the wrong way round."""

    def __init__(self, frame: int, view: int) -> None:
        super().__init__()
        self.frame, self.view = frame, view

    def agree(self, ctx, boxes, assignment):  # type: ignore[no-untyped-def]
        out = super().agree(ctx, boxes, assignment)
        if ctx.frame == self.frame:
            cand = out.cand.copy()
            a, b = KP["paw_front_left"], KP["paw_front_right"]
            cand[self.view, 0, [a, b]] = cand[self.view, 0, [b, a]]
            out = Assignment(cand, out.cost, out.costs, out.conflict)
        return out


def test_left_right_swap_in_one_view_is_repaired(tmp_path: Path) -> None:
    case = build_case(tmp_path / "s", [animal_track(30, (-60, 0), (3, 0), wiggle=3)])
    res = run_pose(case.root, candidates=case.candidates, reasoner=SwappingReasoner(frame=13, view=2), config=CFG)
    owner = cand_owner(case, res.labels)
    t, v = 13, 2
    a, b = KP["paw_front_left"], KP["paw_front_right"]
    assert owner[t, v, 0, a] == a and owner[t, v, 0, b] == b
    lab = res.labels.set_index(["frame", "view", "keypoint"])
    assert lab.loc[(t, "cam2", "paw_front_left"), "stage"] == "refinement"
    trace = [json.loads(line) for line in res.paths["trace"].read_text().splitlines()]
    ref = [d for d in trace if d["stage"] == "refinement" and d["frame"] == t][0]
    kinds = {(c[0], c[2], c[5]) for c in ref["answer"]["changed"]}
    assert ("cam2", "paw_front_left", "left_right") in kinds
    # and nowhere else is a label on another keypoint's marker
    on = owner >= 0
    assert (owner[on] == np.broadcast_to(np.arange(K), owner.shape)[on]).all()


def test_spurious_spot_near_a_keypoint_is_not_taken(tmp_path: Path) -> None:
    case = build_case(tmp_path / "s", [animal_track(30, (-60, 0), (3, 0))])
    extra, owner_extra = [], []
    km = KP["back_mid"]
    for t in range(3, 28):
        for v, name in enumerate(case.rig.names[:2]):
            x, y = case.truth2d[v, t, 0, km] + np.array([3.0, -2.0])  # 3.6 px away, a marker's brightness
            extra.append((t, name, 100 + v, x, y, 150.0, 9))
            owner_extra.append(-1)
    cands = pd.concat([case.candidates, pd.DataFrame(extra, columns=case.candidates.columns)], ignore_index=True)
    # in frame 16 the real back_mid spot of cam0 is missing: only the spurious one is there
    drop = (cands["frame"] == 16) & (cands["view"].astype(str) == "cam0") & (cands.index < len(case.owner)) & \
        (np.r_[case.owner, owner_extra] == km)
    cands = cands[~drop].reset_index(drop=True)
    case.candidates = cands
    case.owner = np.r_[case.owner, owner_extra][~drop.to_numpy()]
    res = run_pose(case.root, candidates=cands, config=CFG)
    owner = cand_owner(case, res.labels)
    assert not (owner == -1).any(), "a spurious spot was taken"
    lab = res.labels.set_index(["frame", "view", "keypoint"])
    row = lab.loc[(16, "cam0", "back_mid")]
    # the marker is missing in cam0: the label is the reprojection of the point the three other views agree on,
    # marked but not doubtful
    assert row["stage"] == "reprojection" and "reprojected" in row["reason"] and not row["flag"]
    assert np.hypot(row["x"] - case.truth2d[0, 16, 0, km, 0], row["y"] - case.truth2d[0, 16, 0, km, 1]) < 1.5


def test_missing_marker_becomes_reprojected_and_flagged_when_doubtful(tmp_path: Path) -> None:
    case = build_case(tmp_path / "s", [animal_track(30, (-60, 0), (3, 0))])
    k = KP["paw_hind_left"]
    # frame 12: the marker is missed in cam1 only (three views still agree on it); frame 20: missed in every view
    one = (case.candidates["frame"] == 12) & (case.candidates["view"].astype(str) == "cam1") & (case.owner == k)
    every = (case.candidates["frame"] == 20) & (case.owner == k)
    assert one.sum() == 1 and every.sum() == 4
    cands = case.candidates[~(one | every).to_numpy()].reset_index(drop=True)
    res = run_pose(case.root, candidates=cands, config=CFG)
    lab = res.labels.set_index(["frame", "view", "keypoint"])

    # well supported: a reprojected label, marked as such, not doubtful
    row = lab.loc[(12, "cam1", "paw_hind_left")]
    assert row["stage"] == "reprojection" and row["candidate"] == -1
    assert "reprojected" in row["reason"] and not row["flag"]
    assert np.hypot(row["x"] - case.truth2d[1, 12, 0, k, 0], row["y"] - case.truth2d[1, 12, 0, k, 1]) < 1.0
    assert row["confidence"] > 0.8
    # the other views of that keypoint are ordinary candidate labels
    others = res.labels[(res.labels["frame"] == 12) & (res.labels["keypoint"] == "paw_hind_left") & (res.labels["view"] != "cam1")]
    assert (others["candidate"] >= 0).all() and not others["flag"].any()

    # weak support: observed in no view, its 3D point is a prediction (bridged from frames 19 and 21): flagged
    rows = res.labels[(res.labels["frame"] == 20) & (res.labels["keypoint"] == "paw_hind_left")]
    assert (rows["stage"] == "reprojection").all() and (rows["candidate"] == -1).all()
    assert rows["reason"].str.contains("reprojected").all() and rows["reason"].str.contains("predicted").all()
    assert rows["flag"].all() and (rows["confidence"] < 1.0).all()
    err = np.hypot(rows["x"].to_numpy() - case.truth2d[:, 20, 0, k, 0], rows["y"].to_numpy() - case.truth2d[:, 20, 0, k, 1])
    assert err.max() < 2.0  # a straight walk: the bridge is right
    n_views = res.poses3d["n_views"].sel(keypoints="paw_hind_left").values[20, 0]
    assert n_views == 0


def test_two_animals_crossing_keep_identities(tmp_path: Path) -> None:
    T = 40
    case = build_case(tmp_path / "s", [animal_track(T, (-110, 26), (5.5, 0), wiggle=3),
                                       animal_track(T, (110, -26), (-5.5, 0), wiggle=3)], seeds_frames=[0, 2, 4])
    res = run_pose(case.root, candidates=case.candidates, config=CFG)
    X = np.transpose(res.poses3d["position"].values, (0, 3, 2, 1))  # T, I, K, 3
    err = np.linalg.norm(X - case.truth3d, axis=-1)
    assert np.nanmax(err) < 2.0, f"3D points off by up to {np.nanmax(err):.1f} mm"
    owner = cand_owner(case, res.labels)
    ind = np.broadcast_to(np.arange(2)[None, None, :, None], owner.shape)
    on = owner >= 0
    assert (owner[on] // K == ind[on]).all(), "a label sits on the other animal's marker"
    assert (owner[on] % K == np.broadcast_to(np.arange(K), owner.shape)[on]).all()


def test_front_paws_in_the_same_order_on_every_seed_are_not_forced_into_it(tmp_path: Path) -> None:
    # paddling paws (opposite phases): on the three seeds the right front paw happens to be well behind the left
    # one, in between it is as far ahead. That order is no rule of the body: the tracked frames drop it, and the
    # structure repair must not rename an ear's or a paw's track to restore it
    case = build_case(tmp_path / "s", [animal_track(40, (-90, 0), (3, 0), wiggle=12)], seeds_frames=[2, 13, 23])
    res = run_pose(case.root, candidates=case.candidates, config=CFG)
    owner = cand_owner(case, res.labels)
    on = owner >= 0
    wrong = on & (owner != np.broadcast_to(np.arange(K), owner.shape))
    assert not wrong.any(), f"{int(wrong.sum())} labels on another keypoint's marker"


def test_order_pairs_do_not_depend_on_how_each_animal_is_turned() -> None:
    from ethoscribe.pose.association import order_pairs

    rng = np.random.default_rng(0)
    for angle in np.linspace(0.0, 6.0, 13):
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        tpl = np.stack([BODY, BODY @ rot.T + 50.0])
        seeds = np.stack([tpl + rng.normal(0, 0.3, tpl.shape) for _ in range(3)])
        one, _ = order_pairs(seeds[:, :1], tpl[:1], 30.0)
        two, axes = order_pairs(seeds, tpl, 30.0)
        # the second animal's axis points the same way along its body as the first's
        assert np.dot(rot @ axes[0], axes[1]) > 0.99
        assert sorted(map(tuple, two.tolist())) == sorted(map(tuple, one.tolist())), f"angle {angle:.1f}"


def test_identity_swap_answered_by_a_reasoner_is_repaired(tmp_path: Path) -> None:
    class IdentitySwapper(GeometricReasoner):
        def agree(self, ctx, boxes, assignment):  # type: ignore[no-untyped-def]
            out = super().agree(ctx, boxes, assignment)
            if ctx.frame == 20:
                cand = out.cand.copy()
                cand[1] = cand[1, ::-1].copy()  # view 1: the animals' labels exchanged
                out = Assignment(cand, out.cost, out.costs, out.conflict)
            return out

    case = build_case(tmp_path / "s", [animal_track(30, (-100, 40), (3, 0)), animal_track(30, (100, -40), (-3, 0))])
    res = run_pose(case.root, candidates=case.candidates, reasoner=IdentitySwapper(), config=CFG)
    owner = cand_owner(case, res.labels)
    assert (owner[20, 1, 0] == np.arange(K)).all() and (owner[20, 1, 1] == K + np.arange(K)).all()
    trace = [json.loads(x) for x in res.paths["trace"].read_text().splitlines()]
    ref = [d for d in trace if d["stage"] == "refinement" and d["frame"] == 20][0]
    assert {c[5] for c in ref["answer"]["changed"]} == {"identity_swap"}


def test_reasoner_answers_are_checked(tmp_path: Path) -> None:
    class Broken(GeometricReasoner):
        name = "broken"

        def assign(self, ctx, boxes):  # type: ignore[no-untyped-def]
            a = super().assign(ctx, boxes)
            return Assignment(a.cand[:, :, :3], a.cost)

    case = build_case(tmp_path / "s", [animal_track(12, (-60, 0), (3, 0))])
    with pytest.raises(ReasonerAnswerError, match="broken"):
        run_pose(case.root, candidates=case.candidates, reasoner=Broken(), config=CFG)


def test_conflicting_claims_resolved_by_total_cost() -> None:
    from ethoscribe.pose.reasoner import _hungarian_with_none

    # two keypoints both prefer candidate 0; the cheaper total gives it to row 1 and candidate 1 to row 0
    cost = np.array([[1.0, 2.0], [0.5, 9.0]])
    choice, c = _hungarian_with_none(cost, 16.0)
    assert choice.tolist() == [1, 0]
    # a candidate beyond the gate is not taken: "no candidate" is an answer
    choice, _ = _hungarian_with_none(np.array([[20.0]]), 16.0)
    assert choice.tolist() == [-1]


def test_region_boxes_cover_the_predictions(tmp_path: Path) -> None:
    case = build_case(tmp_path / "s", [animal_track(12, (-60, 0), (3, 0))])
    res = run_pose(case.root, candidates=case.candidates, config=CFG)
    trace = [json.loads(x) for x in res.paths["trace"].read_text().splitlines()]
    reg = [d for d in trace if d["stage"] == "region" and d["pass"] == "forward"]
    assert len(reg) == 12 - 3  # every tracked frame; the 3 seed frames have seed lines
    boxes = np.array(reg[0]["answer"]["boxes"])  # V, I, R, 4
    t = reg[0]["frame"]
    for r, kps in enumerate(mouse12().regions.values()):
        for k in kps:
            x, y = case.truth2d[:, t, 0, KP[k]].T
            b = boxes[:, 0, r]
            assert ((x >= b[:, 0]) & (x <= b[:, 2]) & (y >= b[:, 1]) & (y <= b[:, 3])).all()
    labels = label_array(res.labels, 12, 4, 1, K)
    assert np.nanmax(np.linalg.norm(labels - np.moveaxis(case.truth2d, 0, 1), axis=-1)) < 1.5


def test_motion_scale_after_a_long_rest_still_allows_a_sudden_start(tmp_path: Path) -> None:
    # at rest the prediction residuals are the label noise; the motion scale must not shrink to it, or the first
    # step of a sudden start or turn falls outside every gate (the keypoints are lost, and their markers taken by
    # others). Its floor is 5 % of the animal's size (the floor of the template spread)
    T = 300
    track = np.repeat((BODY + np.array([-40.0, 10.0, 0.0]))[None], T, axis=0)
    case = build_case(tmp_path / "s", [track], seeds_frames=[0, 4, 8])
    res = run_pose(case.root, candidates=case.candidates, config=CFG)
    trace = [json.loads(line) for line in res.paths["trace"].read_text().splitlines()]
    last = [d for d in trace if d["stage"] == "region" and d["frame"] == T - 1 and d["pass"] == "forward"][0]
    size = np.median(np.linalg.norm(BODY - BODY.mean(axis=0), axis=-1))
    xy = case.truth2d[:, 0, 0]  # V, K, 2 (at rest: every frame alike)
    size_px = np.median(np.linalg.norm(xy - xy.mean(axis=1, keepdims=True), axis=-1))
    mm_px = size_px / size  # at most the pixels per mm of the rig (the body is foreshortened in the views)
    assert last["input"]["sigma_px_median"] >= 0.05 * size * mm_px


def test_a_head_slid_by_one_marker_is_put_back_as_a_whole() -> None:
    # a fast head turn: the left ear's track slid onto the front back marker, whose own and the right ear's were
    # lost. No rigid pair of the head is measured (each lacks an end), so only the head as a whole can be put back;
    # the same where a paw's track took an ear's marker. The points are seen in three views each
    from ethoscribe.pose.association import BodyStructure, complete_rigid, lateral_axis

    tpl = BODY[None]
    head = [KP["ear_left"], KP["ear_right"], KP["back_front"]]
    rigid = np.array([[head[0], head[1]], [head[0], head[2]], [head[1], head[2]]])
    dist = np.linalg.norm(BODY[rigid[:, 0]] - BODY[rigid[:, 1]], axis=-1)[None]
    pairs = ((KP["ear_left"], KP["ear_right"]), (KP["paw_front_left"], KP["paw_front_right"]),
             (KP["paw_hind_left"], KP["paw_hind_right"]))
    st = BodyStructure(rigid=rigid, rigid_dist=dist, rigid_sd=np.full(3, 0.4), active=np.ones(3, bool), pairs=pairs,
                       lateral=lateral_axis(tpl, pairs)[0], seed_shape=tpl, seed_weight=np.full(K, 1 / 9.0),
                       side_scale=4.0)
    c, s = np.cos(0.7), np.sin(0.7)
    pose = BODY @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + np.array([100.0, -40.0, 0.0])
    pose += np.random.default_rng(0).normal(0, 0.05, pose.shape)
    support = np.tile(np.arange(K), (3, 1))
    left, right, front = head

    matched = np.arange(K)
    matched[left], matched[right], matched[front] = front, -1, -1
    moved = complete_rigid(matched, pose, support, st, 1, K)
    assert np.array_equal(matched, np.arange(K))
    assert sorted(moved) == [(0, left, -1), (0, right, -1), (0, front, left)]

    paw = KP["paw_front_right"]
    matched = np.arange(K)
    matched[left], matched[paw] = -1, left
    moved = complete_rigid(matched, pose, support, st, 1, K)
    assert matched[left] == left and matched[paw] == -1
    assert sorted(moved) == [(0, left, -1), (0, paw, -2)]

    # an ear without a point, and no free point at the distances of its partners: nothing to complete
    unseen = pose.copy()
    unseen[right] += 50.0
    matched = np.arange(K)
    matched[right] = -1
    assert complete_rigid(matched, unseen, support, st, 1, K) == [] and matched[right] == -1


def test_a_paw_on_a_lost_back_markers_point_hands_it_back() -> None:
    # the right front paw's track slid onto the rear back marker while that marker was lost: the left/right,
    # rigid and front/back rules all need both keypoints, so only the body's place can put it back. A tail
    # marker on its lost neighbour's place is left alone (a curled tail moves one onto the other)
    from ethoscribe.pose.association import (
        BodyStructure,
        hand_back,
        lateral_axis,
        template_neighbours,
    )

    tpl = BODY[None]
    spread = np.full(K, 3.0)
    pairs = ((KP["ear_left"], KP["ear_right"]), (KP["paw_front_left"], KP["paw_front_right"]),
             (KP["paw_hind_left"], KP["paw_hind_right"]))
    st = BodyStructure(rigid=np.zeros((0, 2), np.int64), rigid_dist=np.zeros((1, 0)), rigid_sd=np.zeros(0),
                       active=np.zeros(0, bool), pairs=pairs, lateral=lateral_axis(tpl, pairs)[0], seed_shape=tpl,
                       seed_weight=1.0 / spread ** 2, side_scale=4.0)
    c, s = np.cos(0.7), np.sin(0.7)
    pose = BODY @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + np.array([100.0, -40.0, 0.0])
    pose += np.random.default_rng(0).normal(0, 0.5, pose.shape)
    paw, back = KP["paw_front_right"], KP["back_rear"]
    nb = template_neighbours(tpl)

    # one hypothesis per keypoint; the paw's own marker is unseen, and its track holds the back marker's point
    matched = np.arange(K)
    matched[back], matched[paw] = -1, back
    handed = hand_back(matched, pose, st, nb, 1, K)
    assert handed == [(0, paw, back)]
    assert matched[back] == back and matched[paw] == -1

    # ... also where the current posture (the online template) last saw the back marker there
    matched = np.arange(K)
    matched[back], matched[paw] = -1, back
    assert hand_back(matched, pose, st, nb, 1, K, current=pose[None]) == [(0, paw, back)]
    # but not where the current posture puts the lost keypoint elsewhere
    elsewhere = pose.copy()
    elsewhere[back] += np.array([0.0, 0.0, 20.0])
    matched = np.arange(K)
    matched[back], matched[paw] = -1, back
    assert hand_back(matched, pose, st, nb, 1, K, current=elsewhere[None]) == [] and matched[paw] == back

    # a paw on its own marker keeps it
    matched = np.arange(K)
    matched[back] = -1
    assert hand_back(matched, pose, st, nb, 1, K) == [] and matched[paw] == paw

    # the middle of the tail on the place of its lost tip: the tail's neighbours are not told apart by the body
    mid, tip = KP["tail_mid"], KP["tail_tip"]
    matched = np.arange(K)
    matched[tip], matched[mid] = -1, tip
    assert hand_back(matched, pose, st, nb, 1, K) == []


@pytest.mark.parametrize("wrong, n_views", [(0.0, 4), (0.2, 4), (0.2, 2)])
def test_the_models_naming_accuracy_is_measured_from_how_its_views_agree(wrong: float, n_views: int) -> None:
    """Names agreeing across views are right; a share ``wrong`` of them is another keypoint's point."""
    from ethoscribe.pose.candidates import prepare_candidates
    from ethoscribe.pose.geometry import FrameGeometry
    from ethoscribe.pose.hints import hint_costs, measure_hint_agreement
    from ethoscribe.synth.cameras import arena_rig

    rng = np.random.default_rng(1)
    rig = arena_rig(n_views, rng)
    T, K = 60, 6
    kps = [f"k{i}" for i in range(K)]
    X = rng.uniform(-60, 60, (T, K, 3)) * [1, 1, 0.3] + [0, 0, 20]
    px = rig.project(X.reshape(-1, 3)).reshape(n_views, T, K, 2) + rng.normal(0, 0.3, (n_views, T, K, 2))
    rows = []
    for v in range(n_views):
        for t in range(T):
            names = np.arange(K)
            if rng.random() < 2 * wrong:  # this view names two points the other's way round
                a, b = rng.choice(K, 2, replace=False)
                names[[a, b]] = names[[b, a]]
            for k in range(K):
                rows.append((t, rig.names[v], k, *px[v, t, k], kps[names[k]]))
    table = pd.DataFrame(rows, columns=["frame", "view", "candidate", "x", "y", "hint_keypoint"])
    table["intensity"], table["area"] = 1.0, 1.0
    cands = prepare_candidates(table, rig.names, kps, ["a"], rig, T)
    got = measure_hint_agreement(cands, FrameGeometry(rig), 1, K, 3.0, np.ones(n_views, bool))
    # two names of a view exchanged in a share 2 * wrong of its frames: 2 / K of those points are wrong
    expected = 1.0 - 2 * wrong * 2 / K
    assert got.checked == n_views * T * K
    assert got.accuracy == pytest.approx(expected, abs=0.03)
    yes, no = hint_costs(got.accuracy, K)
    assert yes < 0 < no


def _structure(rigid: np.ndarray, sd: float = 0.4, spread: float = 3.0):  # type: ignore[no-untyped-def]
    from ethoscribe.pose.association import BodyStructure, lateral_axis

    tpl = BODY[None]
    dist = np.linalg.norm(BODY[rigid[:, 0]] - BODY[rigid[:, 1]], axis=-1)[None] if len(rigid) else np.zeros((1, 0))
    pairs = ((KP["ear_left"], KP["ear_right"]), (KP["paw_front_left"], KP["paw_front_right"]),
             (KP["paw_hind_left"], KP["paw_hind_right"]))
    return BodyStructure(rigid=rigid, rigid_dist=dist, rigid_sd=np.full(len(rigid), sd), active=np.ones(len(rigid), bool),
                         pairs=pairs, lateral=lateral_axis(tpl, pairs)[0], seed_shape=tpl,
                         seed_weight=np.full(K, 1.0 / spread ** 2), side_scale=4.0)


def _turned(noise: float = 0.05, seed: int = 0) -> np.ndarray:
    c, s = np.cos(0.7), np.sin(0.7)
    pose = BODY @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + np.array([100.0, -40.0, 0.0])
    return pose + np.random.default_rng(seed).normal(0, noise, pose.shape)


def test_a_rigid_head_with_wrong_names_keeps_its_pairs_confirmed() -> None:
    # the ears and the front back marker: exchanged names leave the triangle's shape, which the tracker's
    # rigidity count must not hold against the pairs (they are what puts the names right); a bent triangle is off
    from ethoscribe.pose.association import rigid_measured, rigid_triangles

    left, right, front = KP["ear_left"], KP["ear_right"], KP["back_front"]
    st = _structure(np.array([[left, right], [left, front], [right, front]]), sd=0.1)
    tri = rigid_triangles(st)
    assert (tri[:, 0] == np.arange(3)).all()
    pose = _turned()
    swapped = pose.copy()
    swapped[[right, front]] = pose[[front, right]]
    seen, off = rigid_measured(swapped[None], st)
    assert seen.all() and off[0, 0] and off[0, 1] and not off[0, 2]  # by names: two pairs off
    seen, off = rigid_measured(swapped[None], st, tri)
    assert seen.all() and not off.any()  # by shape: a relabelled head
    bent = pose.copy()
    bent[front] += np.array([0.0, 0.0, 6.0])
    assert rigid_measured(bent[None], st, tri)[1][0, [1, 2]].all()


def test_two_tracks_each_on_the_others_place_are_exchanged() -> None:
    # a paw's track on the rear back marker and the back marker's track on the paw's marker: left/right and
    # front/back order and rigid distances may all hold, the body's places do not
    from ethoscribe.pose.association import exchange_back

    st = _structure(np.zeros((0, 2), np.int64))
    pose = _turned(0.5)
    paw, back = KP["paw_hind_left"], KP["back_rear"]
    matched = np.arange(K)
    matched[[paw, back]] = [back, paw]
    assert exchange_back(matched, pose, st, 1, K) == [(0, min(paw, back), max(paw, back))]
    assert np.array_equal(matched, np.arange(K))
    # the right names stay; so do two neighbours that are close to each other's places anyway
    assert exchange_back(matched, pose, st, 1, K) == [] and np.array_equal(matched, np.arange(K))


def test_the_pass_the_body_agrees_with_is_preferred() -> None:
    # over a stretch, the forward pass has the front paws the wrong way round, the backward pass right
    from ethoscribe.pose.association import pass_preference

    st = _structure(np.zeros((0, 2), np.int64))
    S = 5
    good = np.repeat(_turned()[None, None], S, axis=0)  # S, I, K, 3
    l, r = KP["paw_front_left"], KP["paw_front_right"]
    bad = good.copy()
    bad[:, 0, [l, r]] = good[:, 0, [r, l]]
    agreed = good.copy()
    agreed[:, 0, [l, r]] = np.nan
    pick = pass_preference(st, agreed, 0, l, bad, good)
    assert pick is not None and pick[0] and 0 < pick[1] < 1
    pick = pass_preference(st, agreed, 0, r, good, bad)
    assert pick is not None and not pick[0]
    assert pass_preference(st, agreed, 0, l, good, good) is None  # nothing to tell them apart


def test_a_view_the_passes_label_differently_gets_the_reprojection() -> None:
    from ethoscribe.pose.stages import REPROJECTION, settle_view_labels

    T, V, I, Kk = 2, 3, 1, 2
    X = np.zeros((T, I, Kk, 3))

    class Geo:
        def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            n = np.asarray(pts).reshape(-1, 3).shape[0]
            return np.full((V, n, 2), 7.0), np.ones((V, n))

    def arrays(cid: np.ndarray) -> dict[str, np.ndarray]:
        return {"cid": cid.copy(), "xy": np.where((cid >= 0)[..., None], np.ones(cid.shape + (2,)), np.nan),
                "stage": np.full(cid.shape, 3, np.int8),
                "err": np.zeros(cid.shape, np.float32), "X": X.copy()}

    cf = np.zeros((T, V, I, Kk), np.int64)
    cb = cf.copy()
    cb[1, 2, 0, 1] = 5  # frame 1, view 2, keypoint 1: another spot in the backward pass
    f, b = arrays(cf), arrays(cb)
    out = arrays(cf)
    confirmed = np.ones((T, I, Kk), bool)
    assert settle_view_labels(Geo(), out, f, b, confirmed) == 1
    assert out["cid"][1, 2, 0, 1] == -1 and out["stage"][1, 2, 0, 1] == REPROJECTION
    assert np.allclose(out["xy"][1, 2, 0, 1], 7.0) and (out["cid"][out["cid"] != -1] == 0).all()
    # not where the passes disagree on the point, nor in a suspect camera
    out = arrays(cf)
    assert settle_view_labels(Geo(), out, f, b, ~confirmed) == 0
    assert settle_view_labels(Geo(), out, f, b, confirmed, np.array([False, False, True])) == 0


def test_a_spot_another_keypoint_is_expected_at_is_no_label_for_the_point() -> None:
    """A marker hidden in one view leaves its neighbour's spot within the inlier threshold of the point: when the
    other keypoint is expected about as close to that spot, the label is the point's reprojection instead."""
    from ethoscribe.pose.stages import _ambiguous_spots

    cand = np.array([[0, -1]])  # one view; keypoint 0 labelled with spot 0, keypoint 1 without a label
    got = np.array([True, False])
    proj = np.array([[[100.0, 100.0], [np.nan, np.nan]]])
    xy = np.array([[[102.0, 100.0]]])  # the spot, 2 px from keypoint 0's reprojection
    others = np.array([True, True])

    def ambiguous(rival_xy: tuple[float, float]) -> bool:
        predicted = np.array([[[102.0, 100.0], list(rival_xy)]])  # keypoint 0's own place never counts as a rival
        return bool(_ambiguous_spots(cand, got, proj, xy, predicted, others)[0, 0])

    assert ambiguous((106.0, 100.0))  # keypoint 1 expected 4 px from the spot: it may be its marker
    assert not ambiguous((130.0, 100.0))  # expected 28 px away: the spot is keypoint 0's
