"""Camera rig I/O and projection, undistortion, DLT and RANSAC triangulation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from ethoscribe.errors import CalibrationError, InputError
from ethoscribe.geometry import triangulate as tri
from ethoscribe.geometry.camera import CameraRig
from ethoscribe.geometry.triangulate import reprojection_error, triangulate_dlt, triangulate_ransac
from ethoscribe.synth.cameras import arena_rig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OUTDOOR_TOML = SHARED / "anipose_calibrations" / "mouse-outdoor__calibration_right_4_10_2026_adjusted.toml"
SLEAP4_TOML = SHARED / "sleap_4view_mouse" / "calibration.toml"


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


@pytest.fixture(scope="module")
def rig() -> CameraRig:
    return arena_rig(6, np.random.default_rng(0))


@pytest.fixture(scope="module")
def points3d() -> np.ndarray:
    """Points in a mouse-sized volume of the arena (mm), shape (40, 12, 3)."""
    rng = np.random.default_rng(1)
    return rng.uniform([-160, -160, 0], [160, 160, 90], size=(40, 12, 3))


def _in_image_pixels(r: CameraRig, rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0, 1, size=(r.n_cameras, n, 2)) * r.size[:, None, :] - 0.5


def _require_jax() -> None:
    """aniposelib's triangulate needs jax: skip the comparison when it cannot be imported."""
    try:
        import jax  # noqa: F401
    except Exception as exc:  # ImportError, or a broken jaxlib
        pytest.skip(f"jax is not importable: {exc}")


# ------------------------------------------------------------ calibration I/O
def test_calibration_round_trip_through_aniposelib(tmp_path, rig, points3d):
    from aniposelib.cameras import CameraGroup

    path = rig.save(tmp_path / "calibration.toml")
    group = CameraGroup.load(str(path))
    assert group.get_names() == rig.names
    for i, cam in enumerate(group.cameras):
        np.testing.assert_allclose(cam.get_camera_matrix(), rig.matrix[i], rtol=1e-12)
        np.testing.assert_allclose(cam.get_distortions(), rig.dist[i], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(cam.get_rotation(), rig.rvec[i], rtol=1e-12)
        np.testing.assert_allclose(cam.get_translation(), rig.tvec[i], rtol=1e-12)
        assert list(cam.get_size()) == rig.size[i].tolist()

    # aniposelib writes, we read
    group.dump(str(tmp_path / "dumped.toml"))
    back = CameraRig.load(tmp_path / "dumped.toml")
    assert back.names == rig.names
    for a, b in ((back.matrix, rig.matrix), (back.dist, rig.dist), (back.rvec, rig.rvec), (back.tvec, rig.tvec)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(back.size, rig.size)

    # same projection as aniposelib (cv2.projectPoints) on points inside the images
    flat = points3d.reshape(-1, 3)
    ours = back.project(flat)
    ref = group.project(flat)
    inside = rig.in_image(ours)
    assert inside.mean() > 0.9
    assert np.max(np.abs(ours - ref)[inside]) < 1e-6


# ----------------------------------------------------------------- undistort
def test_undistort_inverts_distort_arena(rig):
    px = _in_image_pixels(rig, np.random.default_rng(2), 5000)
    back = rig.distort(rig.undistort(px))
    assert np.max(np.abs(back - px)) < 1e-9
    # and the other way round, from normalised coordinates of in-image points
    norm = rig.undistort(px)
    np.testing.assert_allclose(rig.undistort(rig.distort(norm)), norm, atol=1e-12)


@pytest.mark.realdata
def test_undistort_inverts_distort_real_calibration():
    real = CameraRig.load(_need(OUTDOOR_TOML))  # k1 = -0.34, k2 = 0.18, k3 = -0.05
    px = _in_image_pixels(real, np.random.default_rng(3), 5000)
    back = real.distort(real.undistort(px))
    assert np.max(np.abs(back - px)) < 1e-9


@pytest.mark.realdata
def test_undistort_is_nan_where_the_model_has_no_preimage():
    # k1 = -0.29 alone folds back at r = 1/sqrt(3 |k1|): image corners cannot be produced
    real = CameraRig.load(_need(SLEAP4_TOML))
    px = _in_image_pixels(real, np.random.default_rng(4), 5000)
    norm = real.undistort(px)
    ok = np.isfinite(norm).all(axis=-1)
    assert 0.5 < ok.mean() < 1.0
    assert np.max(np.abs(real.distort(norm[:, :, None])[:, :, 0][ok] - px[ok])) < 1e-6
    corner = np.broadcast_to(np.array([0.0, 0.0]), (real.n_cameras, 1, 2))
    assert np.isnan(real.undistort(corner)).all()


# ----------------------------------------------------------------------- DLT
def test_dlt_exact_on_noiseless_data(rig, points3d):
    p2 = rig.project(points3d)  # (C, 40, 12, 2)
    out = triangulate_dlt(rig, p2)
    assert out.shape == points3d.shape
    assert np.max(np.abs(out - points3d)) < 1e-6

    # missing views: still exact with >= 2 views, NaN with fewer
    p2m = p2.copy()
    p2m[:4, 0] = np.nan  # frame 0: only views 4 and 5 left
    p2m[1:, 1, 0] = np.nan  # frame 1, keypoint 0: one view left
    p2m[2, 2, 3, 1] = np.nan  # half a NaN point counts as missing
    out = triangulate_dlt(rig, p2m)
    assert np.max(np.abs(out[0] - points3d[0])) < 1e-6
    assert np.isnan(out[1, 0]).all()
    assert np.max(np.abs(out[2, 3] - points3d[2, 3])) < 1e-6
    # a single point (C, 2) gives (3,)
    single = triangulate_dlt(rig, p2[:, 5, 5])
    assert single.shape == (3,)
    assert np.max(np.abs(single - points3d[5, 5])) < 1e-6


def test_dlt_weights(rig, points3d):
    rng = np.random.default_rng(5)
    p2 = rig.project(points3d) + rng.normal(0, 1.0, size=(rig.n_cameras,) + points3d.shape[:-1] + (2,))
    plain = triangulate_dlt(rig, p2)
    # uniform weights change nothing; a zero weight is the same as a missing view
    np.testing.assert_allclose(triangulate_dlt(rig, p2, weights=np.full(p2.shape[:-1], 3.0)), plain, rtol=1e-9)
    w = np.ones(p2.shape[:-1])
    w[2] = 0.0
    dropped = p2.copy()
    dropped[2] = np.nan
    np.testing.assert_allclose(triangulate_dlt(rig, p2, weights=w), triangulate_dlt(rig, dropped), rtol=1e-9)
    # down-weighting a corrupted view pulls the estimate back towards the truth
    bad = p2.copy()
    bad[0] += 40.0
    w = np.ones(p2.shape[:-1])
    w[0] = 1e-4
    err_plain = np.linalg.norm(triangulate_dlt(rig, bad) - points3d, axis=-1)
    err_w = np.linalg.norm(triangulate_dlt(rig, bad, weights=w) - points3d, axis=-1)
    assert np.median(err_w) < 0.2 * np.median(err_plain)


def test_dlt_matches_aniposelib(rig, points3d):
    _require_jax()
    rng = np.random.default_rng(6)
    p2 = rig.project(points3d) + rng.normal(0, 1.0, size=(rig.n_cameras,) + points3d.shape[:-1] + (2,))
    p2[rng.random(p2.shape[:-1]) < 0.2] = np.nan
    flat = p2.reshape(rig.n_cameras, -1, 2)
    ours = triangulate_dlt(rig, flat)
    group = rig.to_aniposelib()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = group.triangulate(flat.copy())
        ref_same = group.triangulate(rig.undistort(flat), undistort=False)
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    good = np.isfinite(ours[:, 0])
    scale = np.linalg.norm(ref[good], axis=-1).max()
    # the same linear system: equal to rounding
    assert np.max(np.abs(ours[good] - ref_same[good])) < 1e-9 * scale
    # end to end, including aniposelib's own (cv2) undistortion
    assert np.max(np.abs(ours[good] - ref[good])) < 1e-6 * scale


def test_reprojection_error(rig, points3d):
    p2 = rig.project(points3d)
    shift = np.zeros_like(p2)
    shift[1, ..., 0] = 3.0
    shift[1, ..., 1] = 4.0
    p2s = p2 + shift
    p2s[3, 0, 0] = np.nan
    err = reprojection_error(rig, points3d, p2s)
    assert err.shape == p2.shape[:-1]
    np.testing.assert_allclose(err[1], 5.0, atol=1e-9)
    assert np.nanmax(err[[0, 2, 4, 5]]) < 1e-9
    assert np.isnan(err[3, 0, 0]) and np.isfinite(err[3, 0, 1])


# -------------------------------------------------------------------- RANSAC
def test_ransac_rejects_an_outlier_view(rig, points3d):
    rng = np.random.default_rng(7)
    p2 = rig.project(points3d) + rng.normal(0, 0.3, size=(rig.n_cameras,) + points3d.shape[:-1] + (2,))
    bad = p2.copy()
    bad[2] += np.array([60.0, -45.0])  # view 2 sees something else, 75 px away, for every point
    # the plain DLT is dragged away by the bad view ...
    dlt_err = np.linalg.norm(triangulate_dlt(rig, bad) - points3d, axis=-1)
    assert np.median(dlt_err) > 5.0
    # ... RANSAC flags it and triangulates from the others
    res = triangulate_ransac(rig, bad)
    assert res.points3d.shape == points3d.shape
    assert res.inliers.shape == res.errors.shape == p2.shape[:-1]
    assert not res.inliers[2].any()
    assert res.inliers[[0, 1, 3, 4, 5]].all()
    assert (res.n_inliers == 5).all()
    assert np.max(np.linalg.norm(res.points3d - points3d, axis=-1)) < 1.0
    assert np.min(res.errors[2]) > 40.0 and np.max(res.errors[[0, 1, 3, 4, 5]]) < 3.0
    assert res.outliers[2].all() and not res.outliers[[0, 1, 3, 4, 5]].any()
    # with the inliers alone, RANSAC is exactly the DLT
    only = bad.copy()
    only[2] = np.nan
    np.testing.assert_allclose(res.points3d, triangulate_dlt(rig, only), rtol=1e-9, atol=1e-9)


def test_ransac_random_outliers_and_missing_views(rig, points3d):
    rng = np.random.default_rng(8)
    p2 = rig.project(points3d) + rng.normal(0, 0.5, size=(rig.n_cameras,) + points3d.shape[:-1] + (2,))
    is_out = rng.random(p2.shape[:-1]) < 0.15
    p2[is_out] += rng.uniform(30, 150, size=(is_out.sum(), 1)) * np.array([np.cos(1.0), np.sin(1.0)])
    missing = rng.random(p2.shape[:-1]) < 0.15
    p2[missing] = np.nan
    p2[:, 0, 0] = np.nan
    p2[0, 0, 0] = [100.0, 100.0]  # a single view: nothing to triangulate
    res = triangulate_ransac(rig, p2)
    assert np.isnan(res.points3d[0, 0]).all() and res.n_inliers[0, 0] == 0
    assert not res.inliers[:, 0, 0].any()
    assert not res.inliers[missing].any() and np.isnan(res.errors[missing]).all()
    # outliers are flagged wherever the remaining good views can outvote them
    good_views = (~is_out & ~missing).sum(axis=0)
    decidable = (good_views >= 3) & np.isfinite(res.points3d[..., 0])
    assert decidable.mean() > 0.8
    assert not res.inliers[:, decidable][is_out[:, decidable]].any()
    # as accurate as a DLT told which views are good (an oracle)
    oracle = triangulate_dlt(rig, np.where((is_out | missing)[..., None], np.nan, p2))
    err = np.linalg.norm(res.points3d - points3d, axis=-1)[decidable]
    err_oracle = np.linalg.norm(oracle - points3d, axis=-1)[decidable]
    assert np.median(err) < 1.05 * np.median(err_oracle) < 1.0
    # min_views: points need that many agreeing views
    strict = triangulate_ransac(rig, p2, min_views=4)
    fin = np.isfinite(strict.points3d[..., 0])
    assert (strict.n_inliers[fin] >= 4).all() and np.isnan(strict.points3d[strict.n_inliers < 4]).all()
    assert fin.sum() < np.isfinite(res.points3d[..., 0]).sum()


def test_ransac_prefers_more_inliers_over_a_tighter_pair(rig):
    # views 0, 1 agree exactly on point A; views 2, 3, 4 agree, less tightly, on point B
    a, b = np.array([[0.0, 0.0, 30.0]]), np.array([[60.0, 40.0, 30.0]])
    p2 = rig.project(b)
    p2[[0, 1]] = rig.project(a)[[0, 1]]
    p2[[2, 3, 4], 0] += [[11.0, 0.0], [0.0, -11.0], [-8.0, 8.0]]  # B's pairs reproject 1-19 px off
    p2[5] = np.nan
    res = triangulate_ransac(rig, p2, threshold_px=20.0)
    assert res.inliers[:, 0].tolist() == [False, False, True, True, True, False]
    assert np.linalg.norm(res.points3d[0] - b[0]) < 20.0  # B, not A (60 mm away)


def test_ransac_inlier_update_drops_views_the_final_point_does_not_explain(rig, points3d):
    # outliers 14-30 px off can fit a noisy two-view hypothesis within 12 px, but not
    # the point re-triangulated from all the good views: the inlier update drops them
    rng = np.random.default_rng(11)
    p2 = rig.project(points3d) + rng.normal(0, 1.0, size=(rig.n_cameras,) + points3d.shape[:-1] + (2,))
    is_out = rng.random(p2.shape[:-1]) < 0.2
    angle = rng.uniform(0, 2 * np.pi, size=is_out.sum())
    p2[is_out] += rng.uniform(14, 30, size=is_out.sum())[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    once = triangulate_ransac(rig, p2, threshold_px=12.0, refine=False)
    twice = triangulate_ransac(rig, p2, threshold_px=12.0, refine=True)
    assert (~twice.inliers[is_out]).mean() > (~once.inliers[is_out]).mean() + 0.01
    assert twice.inliers[~is_out].mean() > 0.99


def test_ransac_batches_give_the_same_answer(rig, points3d, monkeypatch):
    rng = np.random.default_rng(9)
    p2 = rig.project(points3d) + rng.normal(0, 1.0, size=(rig.n_cameras,) + points3d.shape[:-1] + (2,))
    p2[rng.random(p2.shape[:-1]) < 0.1] += 80.0
    p2[rng.random(p2.shape[:-1]) < 0.2] = np.nan
    whole = triangulate_ransac(rig, p2)
    monkeypatch.setattr(tri, "_BATCH_VIEW_POINTS", 200)  # dozens of batches of a few points
    parts = triangulate_ransac(rig, p2)
    np.testing.assert_array_equal(whole.inliers, parts.inliers)
    np.testing.assert_allclose(whole.points3d, parts.points3d, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(triangulate_dlt(rig, p2), triangulate_dlt(rig, p2), rtol=0)


# ---------------------------------------------------------------- bad input
def test_bad_shapes_raise_clear_errors(rig, points3d):
    p2 = rig.project(points3d)
    for fn in (triangulate_dlt, triangulate_ransac):
        with pytest.raises(CalibrationError, match="6 cameras"):
            fn(rig, p2[:5])
        with pytest.raises(InputError, match="axis of 2"):
            fn(rig, np.zeros(p2.shape[:-1] + (3,)))
        with pytest.raises(InputError):
            fn(rig, np.zeros(6))
    with pytest.raises(InputError, match="do not fit"):
        reprojection_error(rig, points3d[:3], p2)
    with pytest.raises(CalibrationError):
        reprojection_error(rig, points3d, p2[:4])
    with pytest.raises(InputError, match="threshold_px"):
        triangulate_ransac(rig, p2, threshold_px=0)
    with pytest.raises(InputError, match="min_views"):
        triangulate_ransac(rig, p2, min_views=1)
    with pytest.raises(InputError, match="weights"):
        triangulate_dlt(rig, p2, weights=np.ones((6, 3)))
    with pytest.raises(InputError, match=">= 0"):
        triangulate_dlt(rig, p2, weights=-np.ones(p2.shape[:-1]))


def test_bad_calibration_files(tmp_path, rig):
    missing = tmp_path / "nope.toml"
    with pytest.raises(CalibrationError, match="nope.toml"):
        CameraRig.load(missing)
    garbage = tmp_path / "garbage.toml"
    garbage.write_bytes(b"\x00\x01 this is [not toml = = \n")
    with pytest.raises(CalibrationError, match="garbage.toml"):
        CameraRig.load(garbage)
    good = rig.save(tmp_path / "good.toml")
    text = good.read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("matrix")]
    assert len(lines) < len(text.splitlines())
    lacking = tmp_path / "lacking.toml"
    lacking.write_text("\n".join(lines) + "\n")
    with pytest.raises(CalibrationError, match=r"lacking\.toml.*matrix"):
        CameraRig.load(lacking)


def test_session_view_missing_from_calibration(rig):
    with pytest.raises(CalibrationError, match="top"):
        rig.subset(["cam0", "top", "cam2"])
    sub = rig.subset(["cam3", "cam1"])
    assert sub.names == ["cam3", "cam1"]
    np.testing.assert_array_equal(sub.tvec, rig.tvec[[3, 1]])


# ------------------------------------------------------------- diagnostics
@pytest.mark.realdata
def test_duplicate_cameras_in_real_calibration(rig):
    real = CameraRig.load(_need(SLEAP4_TOML))
    assert real.duplicate_cameras() == [("side", "top")]
    assert rig.duplicate_cameras() == []
