"""Reading pose-model predictions (SLEAP, DeepLabCut, Lightning Pose) as candidates.

Files are written here through the libraries that own the formats
(movement's savers for DeepLabCut / Lightning Pose tables, sleap-io for
``.slp``) from known arrays, and read back; the real recordings in
``../shared/data`` are read when present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import shared_data
from ethoscribe.candidates.predictions import read_predictions
from ethoscribe.candidates.table import COLUMNS, validate_candidates
from ethoscribe.errors import InputError

KP = ["nose", "ear_left", "ear_right", "tail"]


def poses(n_frames: int = 12, individuals=("m1", "m2"), seed: int = 0):
    """A movement poses dataset with some NaN points, some (0, 0) points and varied likelihoods."""
    from movement.io import load_poses

    rng = np.random.default_rng(seed)
    pos = rng.uniform(5, 500, (n_frames, 2, len(KP), len(individuals)))
    conf = rng.uniform(0.0, 1.0, (n_frames, len(KP), len(individuals)))
    pos[3, :, 1, 0] = np.nan
    pos[5, :, 2, -1] = 0.0  # "missing" as MABe writes it
    conf[7, 0, 0] = 0.0  # the model's own "not there"
    return load_poses.from_numpy(pos, conf, individual_names=list(individuals), keypoint_names=KP, fps=30)


def expected(ds) -> pd.DataFrame:
    """Rows read_predictions should return for ``ds`` (NaN, (0, 0) and score 0 dropped)."""
    rows = []
    for t in range(ds.sizes["time"]):
        for i, ind in enumerate(ds.individuals.values):
            for k, kp in enumerate(ds.keypoints.values):
                x, y = ds.position.values[t, :, k, i]
                c = ds.confidence.values[t, k, i]
                if np.isfinite(x) and not (x == 0 and y == 0) and c > 0:
                    rows.append((t, str(ind), str(kp), x, y, c))
    return pd.DataFrame(rows, columns=["frame", "hint_individual", "hint_keypoint", "x", "y", "score"])


def same_points(got: pd.DataFrame, want: pd.DataFrame) -> None:
    key = ["frame", "hint_individual", "hint_keypoint"]
    g = got.sort_values(key).reset_index(drop=True)
    w = want.sort_values(key).reset_index(drop=True)
    assert len(g) == len(w)
    assert g[key].astype(str).equals(w[key].astype(str))
    np.testing.assert_allclose(g[["x", "y"]].to_numpy(), w[["x", "y"]].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(g["score"].to_numpy(), w["score"].to_numpy(), atol=1e-6)


# ------------------------------------------------------------------ DeepLabCut / Lightning Pose
@pytest.mark.parametrize("suffix", [".h5", ".csv"])
def test_dlc_multi_animal_file_written_by_movement(tmp_path: Path, suffix: str):
    from movement.io import save_poses

    ds = poses()
    path = tmp_path / f"topDLC_resnet50{suffix}"
    save_poses.to_dlc_file(ds, path, split_individuals=False)
    df = read_predictions(path, views=["top"], n_frames=12)
    assert list(df.columns) == [*COLUMNS, "hint_keypoint", "hint_individual", "score"]
    assert set(df["view"]) == {"top"}
    same_points(df, expected(ds))
    assert (df["intensity"] == df["score"]).all() and (df["area"] == 1).all()
    validate_candidates(df, "again")  # valid candidates table


def test_dlc_single_animal_and_min_score(tmp_path: Path):
    from movement.io import save_poses

    ds = poses(individuals=("solo",))
    save_poses.to_dlc_file(ds, tmp_path / "cam0.csv", split_individuals=True)  # writes cam0_solo.csv
    path = tmp_path / "cam0_solo.csv"
    assert pd.read_csv(path, header=None, nrows=1).iloc[0, 0] == "scorer"
    df = read_predictions({"cam0": path}, views=["cam0"])
    want = expected(ds)
    want["hint_individual"] = "individual_0"  # a single-animal table names no individual
    same_points(df, want)
    high = read_predictions({"cam0": path}, views=["cam0"], min_score=0.5)
    assert len(high) == int((want["score"] > 0.5).sum()) and (high["score"] > 0.5).all()


def test_candidate_ids_count_from_the_best_score(tmp_path: Path):
    from movement.io import save_poses

    ds = poses()
    save_poses.to_dlc_file(ds, tmp_path / "cam0.h5", split_individuals=False)
    df = read_predictions(tmp_path / "cam0.h5", views=["cam0"])
    for _, g in df.groupby("frame"):
        assert list(g["candidate"]) == list(range(len(g)))
        assert (np.diff(g["score"].to_numpy()) <= 0).all()


def test_lightning_pose_csv_matches_movement_loader(tmp_path: Path):
    from movement.io import load_poses, save_poses

    ds = poses(individuals=("individual_0",))
    save_poses.to_lp_file(ds, tmp_path / "predictions_cam2.csv")
    path = tmp_path / "predictions_cam2_individual_0.csv"  # movement appends the individual's name
    df = read_predictions(path, views=["cam2"], kind="lp")
    ref = load_poses.from_lp_file(path)
    same_points(df, expected(ref))
    # extra coordinates of Lightning Pose ensembles (x_var, ...) are ignored
    table = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    for kp in KP:
        table[(table.columns[0][0], kp, "x_var")] = 1.0
    table.to_csv(tmp_path / "ens_cam2.csv")
    same_points(read_predictions(tmp_path / "ens_cam2.csv", views=["cam2"], kind="lp"), expected(ref))


def test_collected_data_tables_give_frames_from_image_names(tmp_path: Path):
    from ethoscribe.io.exports.dlc import collected_data

    xy = np.arange(3 * 4 * 2 * 2, dtype=float).reshape(3, 4, 2, 2) + 1
    table = collected_data(xy, [5, 40, 99], "cam0_body", 100, "Ada", KP, ["m1", "m2"])
    table.to_hdf(tmp_path / "CollectedData_Ada.h5", key="df_with_missing")
    table.to_csv(tmp_path / "CollectedData_Ada.csv")
    for name in ("CollectedData_Ada.h5", "CollectedData_Ada.csv"):
        df = read_predictions({"cam0": tmp_path / name}, views=["cam0"])
        assert sorted(df["frame"].unique()) == [5, 40, 99]
        row = df[(df["frame"] == 40) & (df["hint_individual"] == "m2") & (df["hint_keypoint"] == "tail")].iloc[0]
        assert (row["x"], row["y"]) == tuple(xy[1, 3, 1]) and np.isnan(row["score"]) and row["intensity"] == 1.0


# ------------------------------------------------------------------ SLEAP
def write_slp(path: Path, video_names: list[str], cameras: list[str] | None = None) -> dict:
    """Two videos, a tracked predicted animal, an untracked one, and a user instance made from a prediction."""
    import sleap_io as sio

    sk = sio.Skeleton(list(KP))  # sleap-io turns the list it is given into Nodes in place
    track = sio.Track("mouse_a")
    videos = [sio.Video(filename=n, open_backend=False, backend_metadata={"shape": [10, 64, 64, 1]}) for n in video_names]
    rng = np.random.default_rng(1)
    truth = {}
    lfs = []
    for v, video in enumerate(videos):
        for f in (0, 4, 9):
            pts = rng.uniform(1, 60, (len(KP), 2))
            pts[2] = np.nan
            scores = rng.uniform(0.1, 1.0, len(KP))
            pred = sio.PredictedInstance.from_numpy(pts, skeleton=sk, point_scores=scores, score=0.9, track=track)
            other = sio.PredictedInstance.from_numpy(pts + 1, skeleton=sk, point_scores=scores, score=0.5)
            insts = [pred, other]
            if f == 4:
                insts.append(sio.Instance.from_numpy(pts + 0.5, skeleton=sk, track=track, from_predicted=pred))
            lfs.append(sio.LabeledFrame(video=video, frame_idx=f, instances=insts))
            truth[(v, f)] = (pts, scores)
    sessions = []
    if cameras:
        session = sio.RecordingSession(camera_group=sio.CameraGroup(cameras=[sio.Camera(name=c) for c in cameras]))
        for video, cam in zip(videos, session.camera_group.cameras):
            session.add_video(video, cam)
        sessions.append(session)
    sio.save_slp(sio.Labels(labeled_frames=lfs, videos=videos, skeletons=[sk], tracks=[track], sessions=sessions),
                 str(path), verbose=False)
    return truth


def test_slp_views_by_video_stem_and_instances(tmp_path: Path):
    truth = write_slp(tmp_path / "p.slp", ["/data/run_cam10.mp4", "/data/run_cam1.mp4"])
    df = read_predictions(tmp_path / "p.slp", views=["cam1", "cam10"], n_frames=10)
    assert list(df["view"].cat.categories) == ["cam1", "cam10"]
    # cam10 is video 0 (not the substring cam1); video 1 is cam1
    top = df[(df["view"] == "cam10") & (df["frame"] == 0) & (df["hint_individual"] == "mouse_a")]
    pts, scores = truth[(0, 0)]
    assert sorted(top["hint_keypoint"]) == sorted(KP[:2] + KP[3:])  # NaN point dropped
    for _, r in top.iterrows():
        k = KP.index(r["hint_keypoint"])
        assert (r["x"], r["y"]) == tuple(pts[k]) and r["score"] == pytest.approx(scores[k])
    untracked = df[df["hint_individual"] == "instance1"]
    assert len(untracked) == 2 * 3 * 3  # 2 views x 3 frames x 3 finite points
    # frame 4: the user instance replaces the prediction it was made from
    f4 = df[(df["view"] == "cam1") & (df["frame"] == 4) & (df["hint_individual"] == "mouse_a")]
    assert len(f4) == 3 and (f4["score"] == 1.0).all()
    np.testing.assert_allclose(np.sort(f4["x"]), np.sort(truth[(1, 4)][0][[0, 1, 3], 0] + 0.5))
    pred = read_predictions(tmp_path / "p.slp", views=["cam1", "cam10"], instances="predicted")
    user = read_predictions(tmp_path / "p.slp", views=["cam1", "cam10"], instances="user").reset_index(drop=True)
    assert len(pred) == len(df)  # 6 user points in place of the 6 points of the predictions they came from
    assert (pred["score"] < 1).all() and set(user["frame"]) == {4} and len(user) == 6 and (user["score"] == 1).all()


def test_sleap_analysis_h5_is_read_through_sleap_io(tmp_path: Path):
    import sleap_io as sio

    write_slp(tmp_path / "one.slp", ["/d/cam3.mp4"])
    sio.save_analysis_h5(sio.load_slp(str(tmp_path / "one.slp"), open_videos=False), str(tmp_path / "a.h5"))
    got = read_predictions(tmp_path / "a.h5", views=["cam3"])  # an analysis file holds tracked animals only
    want = read_predictions(tmp_path / "one.slp", views=["cam3"], instances="predicted")
    want = want[want["hint_individual"] == "mouse_a"]
    key = ["frame", "hint_keypoint"]
    g = got[got["frame"] != 4].sort_values(key)  # frame 4: the analysis file keeps the user instance, unscored
    w = want[want["frame"] != 4].sort_values(key)
    np.testing.assert_allclose(g[["x", "y", "score"]].to_numpy(), w[["x", "y", "score"]].to_numpy(), atol=1e-6)
    assert set(got["hint_individual"]) == {"mouse_a"} and 4 in set(got["frame"])


def test_slp_views_by_recording_session_and_video_map(tmp_path: Path):
    write_slp(tmp_path / "s.slp", ["a.mp4", "b.mp4"], cameras=["left", "right"])
    df = read_predictions(tmp_path / "s.slp", views=["right", "left"])
    by_map = read_predictions(tmp_path / "s.slp", views=["right", "left"], video_map={"left": "a.mp4", "right": 1})
    pd.testing.assert_frame_equal(df, by_map)
    swapped = read_predictions(tmp_path / "s.slp", views=["right", "left"], video_map={"left": 1, "right": "a"})
    assert not np.allclose(swapped.query("view == 'left'")["x"].to_numpy()[:5],
                           df.query("view == 'left'")["x"].to_numpy()[:5])


def test_mixed_sources_one_per_view(tmp_path: Path):
    from movement.io import save_poses

    write_slp(tmp_path / "p.slp", ["x_back.mp4", "x_front.mp4"])
    save_poses.to_dlc_file(poses(), tmp_path / "topDLC.h5", split_individuals=False)
    df = read_predictions([tmp_path / "p.slp", tmp_path / "topDLC.h5"], views=["back", "front", "top"])
    assert list(df.groupby("view", observed=True).size().index) == ["back", "front", "top"]


# ------------------------------------------------------------------ errors
def test_errors_name_what_was_found(tmp_path: Path):
    from movement.io import save_poses

    with pytest.raises(InputError, match="not found"):
        read_predictions(tmp_path / "nope.slp", views=["a"])
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(InputError, match="unknown prediction format '.json'"):
        read_predictions(tmp_path / "p.json", views=["a"])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a DeepLabCut table"):
        read_predictions(tmp_path / "bad.csv", views=["a"])
    save_poses.to_dlc_file(poses(), tmp_path / "sideDLC.h5", split_individuals=False)
    with pytest.raises(InputError, match=r"'sideDLC' matches none of the session views \['top'"):
        read_predictions([tmp_path / "sideDLC.h5"], views=["top", "back"])
    with pytest.raises(InputError, match=r"no predictions for view\(s\) \['back'\]"):
        read_predictions([tmp_path / "sideDLC.h5"], views=["side", "back"])
    with pytest.raises(InputError, match="up to frame 11 .* session has 10 frames"):
        read_predictions({"side": tmp_path / "sideDLC.h5"}, views=["side"], n_frames=10)
    with pytest.raises(InputError, match="several prediction sources"):
        read_predictions([tmp_path / "sideDLC.h5", tmp_path / "sideDLC.h5"], views=["side"])
    with pytest.raises(InputError, match="unknown view"):
        read_predictions({"cam9": tmp_path / "sideDLC.h5"}, views=["side"])
    write_slp(tmp_path / "p.slp", ["/d/one.mp4", "/d/two.mp4"])
    with pytest.raises(InputError, match=r"none of its videos \['one.mp4', 'two.mp4'\]"):
        read_predictions(tmp_path / "p.slp", views=["top", "side"])
    write_slp(tmp_path / "q.slp", ["/d/top_side.mp4", "/d/x.mp4"])
    with pytest.raises(InputError, match="matches several views"):
        read_predictions(tmp_path / "q.slp", views=["top", "side"])


# ------------------------------------------------------------------ real files
@pytest.mark.realdata
def test_real_sleap_4view_mouse():
    import sleap_io as sio

    path = shared_data("sleap_4view_mouse", "minimal_proofread.slp")
    views = ["back", "mid", "side", "top"]
    df = read_predictions(path, views=views, n_frames=120)
    labels = sio.load_slp(str(path), open_videos=False)
    assert df.groupby("view", observed=True).size().index.tolist() == views
    assert df["hint_keypoint"].nunique() == 15 and df["frame"].max() < 120
    for video, view in zip(labels.videos, views):
        assert Path(video.filename).stem == f"minimal_{view}"
        n = sum(int(np.isfinite(i.numpy()[:, 0]).sum()) for lf in labels.find(video) for i in lf.instances)
        assert (df["view"] == view).sum() == n
    lf = labels.find(labels.videos[2], 60)[0]
    inst = lf.instances[0]
    k = [n.name for n in inst.skeleton.nodes].index("Nose")
    row = df[(df["view"] == "side") & (df["frame"] == 60) & (df["hint_keypoint"] == "Nose")]
    if np.isfinite(inst.numpy()[k, 0]):
        assert (row["x"].item(), row["y"].item()) == pytest.approx(tuple(inst.numpy()[k]))


@pytest.mark.realdata
def test_real_dlc_multi_animal_mabe():
    from movement.io import load_poses

    path = shared_data("mabe22_mouse_triplet", "EGS8X2MN4SSUGFWAV976.h5")
    df = read_predictions(path, views=["top"], n_frames=1800)
    assert sorted(df["hint_individual"].unique()) == ["mouse1", "mouse2", "mouse3"]
    assert df["hint_keypoint"].nunique() == 12 and df["score"].isna().all()
    ref = load_poses.from_dlc_file(path)
    pos = ref.position.values.astype(float)  # time, space, keypoints, individuals
    present = ~((pos[:, 0] == 0) & (pos[:, 1] == 0))
    assert len(df) == int(present.sum())
    r = df[(df["frame"] == 900) & (df["hint_individual"] == "mouse2") & (df["hint_keypoint"] == "nose")]
    k = list(ref.keypoints.values).index("nose")
    assert (r["x"].item(), r["y"].item()) == (pos[900, 0, k, 1], pos[900, 1, k, 1])


@pytest.mark.realdata
def test_real_sleap_fly_two_tracks():
    path = shared_data("sleap_fly_courtship", "predictions.slp")
    df = read_predictions(path, views=["arena"])
    assert sorted(df["hint_individual"].unique()) == ["track_0", "track_1"]
    assert df["hint_keypoint"].nunique() == 13 and df["frame"].max() == 2999
    with pytest.raises(InputError, match="session has 1000 frames"):
        read_predictions(path, views=["arena"], n_frames=1000)
