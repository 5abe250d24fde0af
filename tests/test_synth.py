"""Tests of the synthetic rig: determinism, realism of the motion, occlusion, spots, calibration, seeds, social bouts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ethoscribe.errors import InputError
from ethoscribe.geometry.camera import CameraRig, matrix_to_rodrigues
from ethoscribe.skeleton import mouse12
from ethoscribe.synth.cameras import look_at
from ethoscribe.synth.mouse import KP, MouseShape, Posture, animate
from ethoscribe.synth.render import project_conics, projection_matrices, visibility
from ethoscribe.synth.rig import SynthConfig, synthesize
from ethoscribe.synth.script import BEHAVIOURS, SOLO, make_script
from ethoscribe.synth.truth import load_truth

FPS = 30.0


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("small") / "session"
    return synthesize(root, SynthConfig(cameras=2, animals=2, frames=40, seed=3, noise="default"))


@pytest.fixture(scope="module")
def script():
    """A 100 s script of two mice and its 3D motion."""
    sc = make_script(2, 3000, FPS, 400.0, np.random.default_rng(11))
    return sc, sc.motions()


# ------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_different_seed_differs(small, tmp_path: Path) -> None:
    again = synthesize(tmp_path / "again", small.config)
    first, second = _hashes(small.root), _hashes(again.root)
    assert set(first) == set(second)
    assert any(k.endswith("_markers.mp4") for k in first) and any(k.endswith("_body.mp4") for k in first)
    differ = [k for k in first if first[k] != second[k]]
    assert differ == [], f"files differ between identical runs: {differ}"
    other = _hashes(synthesize(tmp_path / "other", small.config.model_copy(update={"seed": 4})).root)
    for name in ("truth/points3d.nc", "truth/behaviour.parquet", "videos/cam0_markers.mp4", "videos/cam0_body.mp4",
                 "calibration.toml", "seeds.slp"):
        assert other[name] != first[name], name


def test_noise_level_does_not_change_the_motion(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", cameras=2, frames=30, noise="clean", render="none").load_truth()
    b = synthesize(tmp_path / "b", cameras=3, frames=30, noise="hard", render="none").load_truth()
    np.testing.assert_array_equal(a.keypoints3d, b.keypoints3d)
    assert a.behaviour.equals(b.behaviour)
    assert not np.array_equal(a.rendered, b.rendered[:2])  # but the marker noise does differ


# ------------------------------------------------------------------ session files
def test_session_loads_and_videos_match(small) -> None:
    from ethoscribe.session import load_session

    s = load_session(small.root)
    assert s.config.view_names == ["cam0", "cam1"]
    assert s.config.individuals == ["mouse0", "mouse1"]
    assert s.config.n_frames == 40 and s.config.arena_mm == 400.0
    assert s.rig.names == ["cam0", "cam1"]
    s.check_videos("markers")
    s.check_videos("body")
    assert s.skeleton == mouse12()
    truth = small.load_truth()
    assert truth.keypoints3d.shape == (40, 12, 2, 3)
    assert truth.position2d.shape == (2, 40, 12, 2, 2)
    assert set(truth.behaviour.columns) >= {"frame", "time_s", "individual", "behaviour", "partner"}
    assert len(truth.behaviour) == 80
    import pandas as pd

    csv = pd.read_csv(small.behaviour_csv_path, keep_default_na=False)
    assert list(csv["behaviour"]) == list(truth.behaviour["behaviour"])
    # the 3D truth is a movement dataset
    assert truth.points3d.attrs["fps"] == FPS and list(truth.points3d["space"].values) == ["x", "y", "z"]
    # rendered markers carry a spot centre, others do not
    assert np.all(np.isfinite(truth.marker_xy[truth.rendered]))
    assert np.all(np.isnan(truth.marker_xy[~truth.rendered]))
    assert np.all(truth.visible[truth.rendered])


def test_render_options_and_top_view(tmp_path: Path) -> None:
    s = synthesize(tmp_path / "s", cameras=6, frames=6, render="body", views_for_body=["top"])
    assert list(s.marker_videos) == []
    assert list(s.body_videos) == ["cam5"]  # with 6 cameras the last one looks down
    from ethoscribe.session import load_session

    cfg = load_session(s.root).config
    assert [v.body for v in cfg.views] == [None] * 5 + ["videos/cam5_body.mp4"]
    assert all(v.markers is None for v in cfg.views)


@pytest.mark.parametrize(
    "bad",
    [dict(cameras=0), dict(animals=0), dict(frames=0), dict(fps=0), dict(noise="loud"), dict(image_size=(641, 512)),
     dict(views_for_body=["cam9"]), dict(render="some")],
)
def test_config_is_validated(bad: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        synthesize(tmp_path / "x", **bad)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ kinematics
def _speed(xy: np.ndarray) -> np.ndarray:
    return np.r_[0.0, np.linalg.norm(np.diff(xy, axis=0), axis=-1) * FPS]


def _runs(labels: np.ndarray) -> list[tuple[str, int, int]]:
    cut = np.r_[0, np.nonzero(labels[1:] != labels[:-1])[0] + 1, len(labels)]
    return [(labels[a], int(a), int(b)) for a, b in zip(cut[:-1], cut[1:])]


def test_body_size_and_speeds_are_those_of_a_mouse(script) -> None:
    sc, motions = script
    for i, m in enumerate(motions):
        kp = m.keypoints
        lab = sc.labels[:, i]
        path = sum(np.linalg.norm(kp[:, KP[a]] - kp[:, KP[b]], axis=-1)
                   for a, b in (("back_front", "back_mid"), ("back_mid", "back_rear"), ("back_rear", "tail_base")))
        assert 70 <= np.median(path) <= 110
        assert np.all((path > 60) & (path < 115))
        tail = sum(np.linalg.norm(kp[:, KP[a]] - kp[:, KP[b]], axis=-1) for a, b in (("tail_base", "tail_mid"), ("tail_mid", "tail_tip")))
        assert 65 <= np.median(tail) <= 95
        speed = _speed(kp[:, KP["back_mid"], :2])
        walk = speed[lab == "walk"]
        assert 50 <= np.median(walk) <= 150
        assert np.percentile(walk, 90) <= 200
        run = speed[lab == "run"]
        assert np.percentile(run, 90) >= 250
        assert speed.max() <= 450
        assert np.median(speed[lab == "rest"]) < 5
        # speeds overlap at the edges: some walking is faster than some running
        assert np.percentile(walk, 97) > np.percentile(run, 5)
        # the whole body stays in the arena
        assert np.nanmax(np.abs(kp[..., :2])) <= 201


def test_walking_and_running_get_somewhere() -> None:
    """A walking mouse that meets a corner head-on turns out of it instead of stepping in place (net speed over 1 s)."""
    for seed in (0, 1):
        sc = make_script(1, 3000, FPS, 400.0, np.random.default_rng(seed), [MouseShape()])
        xy = sc.motions()[0].keypoints[:, KP["back_front"], :2]
        idx = np.arange(len(xy))
        net = np.linalg.norm(xy[np.minimum(idx + 15, len(xy) - 1)] - xy[np.maximum(idx - 15, 0)], axis=-1)  # mm in ~1 s
        moving = np.isin(sc.labels[:, 0], ["walk", "run"])
        assert (net[moving] < 20).mean() < 0.05


def test_turns_rears_and_grooming(script) -> None:
    sc, motions = script
    for i, m in enumerate(motions):
        kp = m.keypoints
        lab = sc.labels[:, i]
        axis = kp[:, KP["back_mid"], :2] - kp[:, KP["back_rear"], :2]
        heading = np.unwrap(np.arctan2(axis[:, 1], axis[:, 0]))
        turn_rate = np.degrees(np.abs(np.gradient(heading) * FPS))
        assert 80 <= np.median(turn_rate[lab == "turn"]) <= 220
        assert np.median(turn_rate[lab == "walk"]) < np.median(turn_rate[lab == "turn"])
        z = kp[:, KP["back_front"], 2]
        assert np.median(z[lab == "rear"]) - np.median(z[lab == "walk"]) >= 35
        assert np.median(z[lab == "rear"]) - np.median(z[lab == "walk"]) <= 65
        # rearing: hind paws down, front paws up
        assert np.median(kp[lab == "rear"][:, [KP["paw_hind_left"], KP["paw_hind_right"]], 2]) < 3
        assert np.median(kp[lab == "rear"][:, [KP["paw_front_left"], KP["paw_front_right"]], 2]) > 20
        # grooming: front paws lifted to the head, stroking at 4-6 Hz
        ears = kp[:, [KP["ear_left"], KP["ear_right"]]].mean(axis=1)
        near = np.linalg.norm(kp[:, KP["paw_front_left"]] - ears, axis=-1)
        assert np.median(near[lab == "groom"]) < 30
        assert np.median(kp[lab == "groom"][:, KP["paw_front_left"], 2]) > 12 > np.median(kp[lab == "walk"][:, KP["paw_front_left"], 2])
        freqs = []
        for name, a, b in _runs(lab):
            if name == "groom" and b - a >= 60:
                x = near[a + 10:b] - near[a + 10:b].mean()
                spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=1024))
                freqs.append(np.fft.rfftfreq(1024, 1 / FPS)[np.argmax(spec)])
        assert freqs and all(3.5 <= f <= 6.5 for f in freqs), freqs


def test_paws_are_planted_during_stance(script) -> None:
    sc, motions = script
    for i, m in enumerate(motions):
        walk = sc.labels[:, i] == "walk"
        paws = m.keypoints[:, [KP["paw_front_left"], KP["paw_front_right"], KP["paw_hind_left"], KP["paw_hind_right"]]]
        step = np.linalg.norm(np.diff(paws, axis=0), axis=-1)  # (T-1, 4)
        still = (step < 1e-9) & walk[1:, None]
        # diagonal pairs alternate: a good share of paw-frames are planted, some are in the air
        frac = still.sum() / (4 * walk[1:].sum())
        assert 0.35 <= frac <= 0.8
        assert np.all(paws[1:][still][:, 2] < 2.5)
        assert np.percentile(paws[walk][..., 2], 95) > 4
        # trot: the front-left and hind-right paws move together more often than front-left and front-right
        moving = ~(step < 1e-9)
        fl, fr, hr = moving[walk[1:], 0], moving[walk[1:], 1], moving[walk[1:], 3]
        assert np.mean(fl == hr) > np.mean(fl == fr)


def test_behaviours_present_and_bouts_plausible(script) -> None:
    sc, _ = script
    labels = sc.labels
    assert set(np.unique(labels)) == set(BEHAVIOURS)
    for i in range(labels.shape[1]):
        runs = _runs(labels[:, i])
        for name, a, b in runs[1:-1]:  # the first and last bouts are cut by the recording
            assert 0.3 <= (b - a) / FPS <= 6.0, (name, a, b)
        lengths = {}
        for name, a, b in runs[1:-1]:
            lengths.setdefault(name, []).append((b - a) / FPS)
        for name in SOLO:
            assert 0.5 <= np.median(lengths[name]) <= 4.0, (name, lengths[name])
    # partners only in social bouts
    social = np.isin(labels, ["approach", "follow", "chase", "contact"])
    assert np.all(sc.partners[social] != "") and np.all(sc.partners[~social] == "")


def test_markers_lie_on_the_body_surface(script) -> None:
    _, motions = script
    for m in motions:
        inside = m.ellipsoids.inside(m.keypoints)
        assert inside.mean() < 0.01
        # back markers sit on the body, within a few mm of its top
        kp = m.keypoints
        assert np.all(kp[:, KP["back_mid"], 2] > 20)


# ------------------------------------------------------------------ social
def test_chase_with_two_animals(tmp_path: Path) -> None:
    truth = synthesize(tmp_path / "two", animals=2, frames=500, cameras=2, seed=5, render="none").load_truth()
    bouts = truth.bouts()
    chases = bouts[bouts["behaviour"] == "chase"]
    assert len(chases) >= 1
    kp = truth.keypoints3d
    ind = truth.individuals
    labels = truth.labels()
    for _, c in chases.iterrows():
        follower, leader = ind.index(c["individual"]), ind.index(c["partner"])
        assert follower != leader
        frames = slice(c["start"], c["stop"])
        assert (labels.iloc[frames][c["partner"]] == "run").all()
        d = np.linalg.norm(kp[frames, KP["back_mid"], follower, :2] - kp[frames, KP["back_mid"], leader, :2], axis=-1)
        assert np.median(d) < 200
        speed = _speed(kp[:, KP["back_mid"], follower, :2])[frames]
        assert np.median(speed) > 150
    # follow bouts trail a walking animal
    sc = make_script(2, 3000, FPS, 400.0, np.random.default_rng(2))
    mot = sc.motions()
    for i in range(2):
        f = sc.labels[:, i] == "follow"
        if f.any():
            j = 1 - i
            assert np.all(sc.labels[f, j] == "walk")
            d = np.linalg.norm(mot[i].keypoints[f, KP["back_mid"], :2] - mot[j].keypoints[f, KP["back_mid"], :2], axis=-1)
            assert 60 <= np.median(d) <= 200


# ------------------------------------------------------------------ geometry and images
def _side_camera(center: list[float]) -> CameraRig:
    rot = look_at(np.array(center, float), np.array([0.0, 0.0, 15.0]))
    return CameraRig.from_params(["side"], [[[600, 0, 320], [0, 600, 256], [0, 0, 1]]], [matrix_to_rodrigues(rot)],
                                 [-rot @ np.array(center, float)], [[640, 512]])


def test_far_side_markers_are_occluded() -> None:
    post = Posture.still(1, x=0.0, y=0.0, heading=0.0)  # facing +x: the left side is +y
    m = animate(MouseShape(), post, np.zeros(1), np.zeros(1), FPS)
    pts = m.keypoints.reshape(1, 12, 3)
    left, right = KP["paw_hind_left"], KP["paw_hind_right"]
    _, seen = visibility(_side_camera([0.0, 400.0, 60.0]), pts, m.ellipsoids)
    assert seen[0, 0, left] and not seen[0, 0, right]
    _, seen = visibility(_side_camera([0.0, -400.0, 60.0]), pts, m.ellipsoids)
    assert seen[0, 0, right] and not seen[0, 0, left]
    # the back is seen from both sides and from above
    assert seen[0, 0, KP["back_mid"]]


def test_visible_fraction_per_view(tmp_path: Path) -> None:
    truth = synthesize(tmp_path / "vis", cameras=6, animals=1, frames=300, render="none").load_truth()
    frac = truth.visible.mean(axis=(1, 2, 3))
    assert np.all((frac > 0.6) & (frac < 0.95)), frac
    missed = 1 - truth.rendered.sum() / truth.visible.sum()
    assert 0.03 < missed < 0.07
    jitter = (truth.marker_xy - truth.position2d)[truth.rendered]
    assert 0.25 < jitter.std() < 0.35


def test_conic_projection_is_exact() -> None:
    from ethoscribe.synth.cameras import arena_rig

    rig = arena_rig(3, np.random.default_rng(0))
    post = Posture.still(1, x=30.0, y=-20.0, heading=0.7, pitch=0.6)
    ell = animate(MouseShape(), post, np.zeros(1), np.zeros(1), FPS).ellipsoids
    center, axes, angle = project_conics(rig, ell)
    pmat = projection_matrices(rig)
    u = np.random.default_rng(1).normal(size=(4000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    for e in range(ell.centers.shape[1]):
        x = ell.centers[0, e] + (ell.axes[0, e] @ (u * ell.radii[0, e]).T).T
        for v in range(3):
            h = x @ pmat[v, :, :3].T + pmat[v, :, 3]
            d = h[:, :2] / h[:, 2:] - center[v, 0, e]
            a = np.radians(angle[v, 0, e])
            lx = d[:, 0] * np.cos(a) + d[:, 1] * np.sin(a)
            ly = -d[:, 0] * np.sin(a) + d[:, 1] * np.cos(a)
            r = np.sqrt((lx / axes[v, 0, e, 0]) ** 2 + (ly / axes[v, 0, e, 1]) ** 2)
            assert 0.995 < r.max() < 1.0 + 1e-6


def test_clean_spots_sit_on_marker_xy(tmp_path: Path) -> None:
    from scipy.ndimage import maximum_filter

    from ethoscribe.io.video import VideoReader

    s = synthesize(tmp_path / "clean", cameras=2, animals=1, frames=12, noise="clean", render="markers")
    truth = s.load_truth()
    assert truth.spurious.empty and truth.rendered.sum() == truth.visible.sum()
    n_checked = 0
    for v, view in enumerate(truth.views):
        frames = VideoReader(s.marker_videos[view]).read()
        for t in range(0, 12, 3):
            img = frames[t].astype(float)
            pts = truth.marker_xy[v, t].reshape(-1, 2)
            pts = pts[np.isfinite(pts).all(axis=1)]
            peaks = np.argwhere((img == maximum_filter(img, size=5)) & (img > 60))
            assert len(peaks) >= len(pts) - 2  # merged spots of touching markers aside
            for y, x in peaks:
                d = np.linalg.norm(pts - [x, y], axis=1)
                j = int(np.argmin(d))
                assert d[j] < 1.5, "a bright spot that is no marker"
                if np.sort(np.linalg.norm(pts - pts[j], axis=1))[1:2].min(initial=99) < 8:
                    continue  # another marker too close for a clean centroid
                win = img[y - 3:y + 4, x - 3:x + 4]
                ring = np.r_[img[y - 5, x - 5:x + 6], img[y + 5, x - 5:x + 6]]
                w = np.clip(win - np.median(ring), 0, None)
                yy, xx = np.mgrid[-3:4, -3:4]
                c = np.array([x + (w * xx).sum() / w.sum(), y + (w * yy).sum() / w.sum()])
                assert np.linalg.norm(c - pts[j]) < 0.2
                n_checked += 1
    assert n_checked >= 20


@pytest.mark.parametrize("noise,target", [("clean", 0.0), ("default", 0.5), ("hard", 1.0)])
def test_written_calibration_error(noise: str, target: float, tmp_path: Path) -> None:
    s = synthesize(tmp_path / noise, cameras=4, frames=2, noise=noise, render="none")
    true = CameraRig.load(s.calibration_true_path)
    written = CameraRig.load(s.calibration_path)
    pts = np.random.default_rng(7).uniform([-180, -180, 0], [180, 180, 80], size=(2000, 3))
    err = np.linalg.norm(written.project(pts) - true.project(pts), axis=-1)
    rms = float(np.sqrt(np.mean(err ** 2)))
    assert abs(rms - target) <= 0.2 * target + 1e-9, rms


def test_seed_labels(small) -> None:
    import sleap_io as sio

    labels = sio.load_slp(str(small.seeds_path), open_videos=False)
    truth = small.load_truth()
    assert len(labels.videos) == 2 and [Path(v.filename).name for v in labels.videos] == ["cam0_markers.mp4", "cam1_markers.mp4"]
    frames = sorted({lf.frame_idx for lf in labels.labeled_frames})
    assert len(frames) == 3 and 0 not in frames and frames == small.seed_frames
    assert frames[-1] - frames[0] >= 15  # spread over the 40 frames
    assert len(labels.labeled_frames) == 3 * 2
    assert [t.name for t in labels.tracks] == ["mouse0", "mouse1"]
    assert labels.skeletons[0].node_names == list(mouse12().keypoints)
    for lf in labels.labeled_frames:
        v = [Path(x.filename).name for x in labels.videos].index(Path(lf.video.filename).name)
        for inst in lf.instances:
            assert type(inst) is sio.Instance  # a user instance, not a prediction
            a = truth.individuals.index(inst.track.name)
            want = np.where(truth.visible[v, lf.frame_idx, :, a, None], truth.position2d[v, lf.frame_idx, :, a], np.nan)
            np.testing.assert_allclose(inst.numpy(), want, atol=1e-9)
    assert labels.sessions and len(labels.sessions[0].camera_group.cameras) == 2


def test_load_truth_rejects_other_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_truth(tmp_path)
