"""Pose features: skeleton-agnostic roles, invariance to the arena frame, gaps, windows."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from ethoscribe.behavior.features import compute_pose_features, resolve_body_parts, window_features
from ethoscribe.behavior.toy import toy_poses
from ethoscribe.errors import InputError, SkeletonError
from ethoscribe.skeleton import mouse12


@pytest.fixture(scope="module")
def toy2():
    ds, _ = toy_poses(n_frames=240, n_animals=2, seed=4, noise_mm=0.3)
    return ds


def _transform(ds: xr.Dataset, angle: float, shift: tuple[float, ...], scale: float = 1.0) -> xr.Dataset:
    pos = ds["position"].values.copy()  # (T, S, K, I)
    c, s = np.cos(angle), np.sin(angle)
    x, y = pos[:, 0].copy(), pos[:, 1].copy()
    pos[:, 0] = c * x - s * y
    pos[:, 1] = s * x + c * y
    for i, d in enumerate(shift):
        pos[:, i] += d
    out = ds.copy()
    out["position"] = (ds["position"].dims, pos * scale)
    return out


def test_invariant_to_arena_translation_and_rotation(toy2):
    base = compute_pose_features(toy2)
    moved = compute_pose_features(_transform(toy2, angle=2.1, shift=(350.0, -120.0, 0.0)))
    assert base.names == moved.names
    assert {"speed", "angular_speed", "social_distance", "bearing", "head_height"} <= set(base.names)
    np.testing.assert_allclose(moved.values, base.values, atol=1e-6)
    wb, wm = window_features(base), window_features(moved)
    np.testing.assert_allclose(wm.values, wb.values, atol=1e-4)


def test_invariant_to_scale_through_body_length(toy2):
    base = compute_pose_features(toy2)
    scaled = compute_pose_features(_transform(toy2, angle=0.0, shift=(0.0, 0.0, 0.0), scale=3.7))
    np.testing.assert_allclose(scaled.values, base.values, atol=1e-6)
    np.testing.assert_allclose(scaled.body_length, 3.7 * base.body_length, rtol=1e-9)


def test_2d_pose_invariance_too(toy2):
    ds2 = toy2.isel(space=[0, 1])
    base = compute_pose_features(ds2)
    assert not base.is_3d and "head_height" not in base.names
    moved = compute_pose_features(_transform(ds2, angle=-0.7, shift=(40.0, 900.0)))
    np.testing.assert_allclose(moved.values, base.values, atol=1e-6)


def test_features_separate_speeds():
    ds, truth = toy_poses(n_frames=900, seed=2, noise_mm=0.3)
    f = compute_pose_features(ds)
    beh = truth["behaviour"].to_numpy()
    speed = f.column("speed")[:, 0]
    assert np.median(speed[beh == "run"]) > 2 * np.median(speed[beh == "walk"]) > 0
    assert np.median(speed[beh == "rest"]) < 0.3


def test_body_part_heuristics_on_known_skeletons():
    p = resolve_body_parts(mouse12().keypoints)
    assert p.head_tip == ("ear_left", "ear_right") and p.neck == ("back_front",) and p.rear == ("tail_base",)
    mabe = ["nose", "left ear", "right ear", "neck", "left forepaw", "right forepaw", "center back",
            "left hindpaw", "right hindpaw", "tail base", "tail middle", "tail tip"]
    p = resolve_body_parts(mabe)
    assert (p.head_tip, p.neck, p.rear, p.mid) == (("nose",), ("neck",), ("tail base",), ("center back",))
    assert "tail tip" not in p.core
    fly = ["head", "thorax", "abdomen", "wingL", "wingR", "forelegL4", "forelegR4", "midlegL4", "midlegR4",
           "hindlegL4", "hindlegR4", "eyeL", "eyeR"]
    p = resolve_body_parts(fly)
    assert (p.head_tip, p.neck, p.rear) == (("head",), ("thorax",), ("abdomen",))
    assert len(p.paws) == 6
    # user override, and clear errors
    assert resolve_body_parts(mabe, rear="center back").rear == ("center back",)
    with pytest.raises(SkeletonError, match="not in the pose"):
        resolve_body_parts(mabe, rear="tailbase")
    with pytest.raises(SkeletonError, match="cannot tell"):
        resolve_body_parts(["a", "b", "c"])


def _with_gap(ds: xr.Dataset, start: int, length: int, keypoint: str = "tail_base") -> xr.Dataset:
    pos = ds["position"].values.copy()
    k = list(ds["keypoints"].values).index(keypoint)
    pos[start : start + length, :, k, 0] = np.nan
    out = ds.copy()
    out["position"] = (ds["position"].dims, pos)
    return out


def test_short_gaps_are_interpolated(toy2):
    f = compute_pose_features(_with_gap(toy2, 50, 10), max_gap_s=0.5)  # 10 frames = 0.33 s
    assert f.valid.all()
    assert np.isfinite(f.values).all()
    assert f.interpolated_fraction > 0


def test_long_gaps_are_masked_or_an_error(toy2):
    gap = _with_gap(toy2, 50, 40)  # 1.33 s
    f = compute_pose_features(gap, max_gap_s=0.5)
    assert not f.valid[50:90, 0].any() and f.valid[:50, 0].all() and f.valid[90:, 0].all()
    assert f.valid[:, 1].all()
    assert np.isnan(f.values[60, 0]).all()
    with pytest.raises(InputError, match=r"tail_base.*40 frames"):
        compute_pose_features(gap, max_gap_s=0.5, gap_policy="error")
    w = window_features(f)
    assert np.isfinite(w.values).all() and not w.valid[60, 0]


def test_animal_without_pose_is_an_error(toy2):
    with pytest.raises(InputError, match="usable pose"):
        compute_pose_features(_with_gap(toy2, 0, 240))


def test_single_frame_is_an_error(toy2):
    with pytest.raises(InputError, match="1 frame"):
        compute_pose_features(toy2.isel(time=[0]))


def test_missing_frame_rate_is_an_error(toy2):
    ds = toy2.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k not in ("fps", "time_unit")}
    ds = ds.assign_coords(time=np.arange(ds.sizes["time"]))
    with pytest.raises(InputError, match="fps"):
        compute_pose_features(ds)
    assert compute_pose_features(ds, fps=30).fps == 30
    with pytest.raises(InputError, match="mismatched"):
        compute_pose_features(toy2, fps=25)


def test_zero_points_count_as_missing_in_2d(toy2):
    ds2 = toy2.isel(space=[0, 1])
    pos = ds2["position"].values.copy()
    pos[100:140, :, :, 1] = 0.0  # DeepLabCut / MABe "not detected"
    ds2 = ds2.copy()
    ds2["position"] = (ds2["position"].dims, pos)
    f = compute_pose_features(ds2)
    assert not f.valid[105:135, 1].any() and f.valid[:, 0].all()


def test_window_features_names_and_scaling(toy2):
    f = compute_pose_features(toy2)
    w = window_features(f, windows_s=(0.5, 1.0), stats=("mean", "std"))
    assert w.values.shape == (240, 2, len(f.names) * 5)
    assert "speed@0.5s:mean" in w.names and "speed@1s:std" in w.names
    X, frames, animals = w.stacked()
    assert X.shape[0] == 480 and np.all(np.abs(np.median(X, axis=0)) < 1e-3 + 0.2)


def test_turn_rate_is_net_turning_not_sway():
    from ethoscribe.behavior.features import net_turn_rate

    t = np.arange(300) / 30.0
    sway = 0.3 * np.sin(2 * np.pi * 2.0 * t)  # side to side at 2 Hz, no net turn
    turn = 2.0 * t  # 2 rad/s
    assert np.median(net_turn_rate(sway, 30.0)) < 0.3 < 2.0 < np.median(np.abs(np.gradient(sway) * 30))
    np.testing.assert_allclose(np.median(net_turn_rate(turn, 30.0)), 2.0, rtol=1e-6)


def test_head_scanning_and_paw_strokes_are_not_travel():
    # a mouse standing still that scans with its head and strokes with its front paws
    fps, T = 30.0, 300
    t = np.arange(T) / fps
    base = {"ear_left": (70, 6, 22), "ear_right": (70, -6, 22), "back_front": (55, 0, 18), "back_mid": (35, 0, 18),
            "back_rear": (15, 0, 15), "paw_front_left": (55, 10, 0), "paw_front_right": (55, -10, 0),
            "paw_hind_left": (15, 10, 0), "paw_hind_right": (15, -10, 0), "tail_base": (0, 0, 10),
            "tail_mid": (-30, 0, 5), "tail_tip": (-60, 0, 2)}
    pos = np.repeat(np.array(list(base.values()), dtype=float).T[None, :, :, None], T, axis=0)  # (T, 3, K, 1)
    k = list(base)
    for ear in ("ear_left", "ear_right"):
        pos[:, 1, k.index(ear), 0] += 20 * np.sin(2 * np.pi * 2 * t)
    for paw in ("paw_front_left", "paw_front_right"):
        pos[:, 0, k.index(paw), 0] += 8 * np.sin(2 * np.pi * 5 * t)
        pos[:, 2, k.index(paw), 0] += 8 * (1 + np.sin(2 * np.pi * 5 * t))
    ds = xr.Dataset({"position": (("time", "space", "keypoints", "individuals"), pos)},
                    coords={"time": t, "space": ["x", "y", "z"], "keypoints": k, "individuals": ["m"]}, attrs={"fps": fps})
    f = compute_pose_features(ds)
    assert np.median(f.column("speed")) < 0.02 and np.median(f.column("acceleration")) < 0.1
    assert np.median(f.column("pose_change")) > 0.3 and np.median(f.column("paw_motion")) > 0.3


def test_groups_of_components_weigh_as_one_feature():
    from ethoscribe.behavior.features import feature_group
    from ethoscribe.behavior.video_features import VideoFeatures

    assert feature_group("v0_motion_pc11@1s:mean") == "v0_motion_pc" and feature_group("speed@0.5s:mean") == "speed"
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(200, 1, 5))
    vf = VideoFeatures(values=vals, names=["speed", "pc0", "pc1", "pc2", "pc3"], individuals=["a"], fps=30.0,
                       valid=np.ones((200, 1), bool))
    plain = window_features(vf, windows_s=(0.5,), balance_groups=False).values[:, 0]
    balanced = window_features(vf, windows_s=(0.5,)).values[:, 0]
    np.testing.assert_allclose(balanced[:, [0, 5]], plain[:, [0, 5]], atol=1e-6)  # scalar feature unchanged
    np.testing.assert_allclose(balanced[:, 1:5], plain[:, 1:5] / 2, atol=1e-6)  # 4 components: 1/sqrt(4) each
