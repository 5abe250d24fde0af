"""Exports of labels and 3D poses: each round-trips through the library that owns the format.

Labels tables are fabricated from the synthetic rig's truth (exact projections
where visible, NaN elsewhere, random confidences and flags), so every
coordinate read back is compared with a known value.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ethoscribe.errors import InputError, SkeletonError
from ethoscribe.io.exports import (
    ExportInfo,
    dense_view,
    export_all,
    export_dlc_project,
    export_movement,
    export_nwb,
    export_slp,
    select_frames,
    validate_labels,
)
from ethoscribe.io.exports.dlc import dlc_config_text, image_name
from ethoscribe.io.video import VideoReader
from ethoscribe.synth.rig import synthesize


# ------------------------------------------------------------------ fixtures
def fabricate_labels(truth, seed: int = 0, flag_rate: float = 0.05) -> pd.DataFrame:
    """A dense labels table (the pose pipeline's contract) from the synthetic truth."""
    rng = np.random.default_rng(seed)
    pos, vis = truth.position2d, truth.visible  # (V, T, K, I, 2), (V, T, K, I)
    V, T, K, I, _ = pos.shape
    keypoints = [str(k) for k in truth.points3d["keypoints"].values]
    v, t, k, i = (a.ravel() for a in np.meshgrid(np.arange(V), np.arange(T), np.arange(K), np.arange(I), indexing="ij"))
    ok = vis[v, t, k, i]
    xy = pos[v, t, k, i]
    flag = ok & (rng.random(len(v)) < flag_rate)
    return pd.DataFrame({
        "frame": t.astype(np.int64),
        "view": np.asarray(truth.views, dtype=object)[v],
        "individual": np.asarray(truth.individuals, dtype=object)[i],
        "keypoint": np.asarray(keypoints, dtype=object)[k],
        "x": np.where(ok, xy[:, 0], np.nan),
        "y": np.where(ok, xy[:, 1], np.nan),
        "confidence": np.where(ok, rng.uniform(0.3, 1.0, len(v)), 0.0).astype(np.float32),
        "flag": flag,
        "reason": np.where(flag, "high_reprojection_error", np.where(ok, "", "missing")).astype(object),
        "stage": "refinement",
        "reasoner": "geometric",
        "candidate": np.where(ok, 0, -1).astype(np.int64),
        "reproj_error": np.where(ok, 0.4, np.nan).astype(np.float32),
    })


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("exports") / "session"
    s = synthesize(root, cameras=2, animals=2, frames=20, render="markers", seed=5)
    truth = s.load_truth()
    return s, truth, fabricate_labels(truth), ExportInfo.from_session(s.load_session())


def lookup(labels: pd.DataFrame) -> dict[tuple, tuple[float, float]]:
    lab = labels[np.isfinite(labels["x"])]
    return {(int(f), v, i, k): (x, y) for f, v, i, k, x, y in
            lab[["frame", "view", "individual", "keypoint", "x", "y"]].itertuples(index=False)}


# ------------------------------------------------------------------ shared helpers
def test_dense_view_places_every_row(synth):
    _, truth, labels, info = synth
    xy, conf, flag = dense_view(labels, "cam1", np.arange(20), list(info.skeleton.keypoints), ["mouse0", "mouse1"])
    want = truth.position2d[1]  # (T, K, I, 2)
    vis = truth.visible[1]
    np.testing.assert_array_equal(xy[vis], want[vis])
    assert np.isnan(xy[~vis]).all() and (conf[~vis] == 0).all()
    assert flag.sum() == labels.query("view == 'cam1'")["flag"].sum()


def test_select_frames_spreads_and_adds_flagged_and_included(synth):
    _, _, labels, _ = synth
    lab = labels.copy()
    lab["flag"] = False
    lab.loc[lab["frame"] == 13, "flag"] = True
    got = select_frames(lab, n=4, include=[3])
    assert got == sorted(set([0, 6, 13, 19, 3]))  # spread 0, 6, 13, 19 (rounded linspace), flagged 13, included 3
    assert select_frames(lab, n=50) == list(range(20))


# ------------------------------------------------------------------ SLEAP
def test_slp_round_trip_user_instances(synth, tmp_path: Path):
    import sleap_io as sio

    s, truth, labels, info = synth
    path = export_slp(labels, info, tmp_path / "labels.slp", suggestions="flagged")
    back = sio.load_slp(str(path), open_videos=False)
    assert [Path(v.filename) for v in back.videos] == [s.marker_videos[v].resolve() for v in info.views]
    assert [t.name for t in back.tracks] == ["mouse0", "mouse1"]
    assert [n.name for n in back.skeletons[0].nodes] == list(info.skeleton.keypoints)
    assert len(back.skeletons[0].edges) == len(info.skeleton.edges)
    want = lookup(labels)
    got = {}
    for lf in back.labeled_frames:
        view = info.views[[Path(v.filename) for v in back.videos].index(Path(lf.video.filename))]
        for inst in lf.instances:
            assert type(inst) is sio.Instance  # user-style instances
            for k, (x, y) in enumerate(inst.numpy()):
                if np.isfinite(x):
                    got[(lf.frame_idx, view, inst.track.name, info.skeleton.keypoints[k])] = (x, y)
    assert got.keys() == want.keys()
    np.testing.assert_allclose(np.array([got[k] for k in want]), np.array(list(want.values())), atol=1e-9)
    # flagged frames became labelling suggestions, the calibration a recording session
    flagged = {(v, int(f)) for v, f in labels.loc[labels["flag"], ["view", "frame"]].itertuples(index=False)}
    sugg = {(info.views[back.videos.index(sf.video)], sf.frame_idx) for sf in back.suggestions}
    assert sugg == flagged
    cams = back.sessions[0].camera_group.cameras
    assert [c.name for c in cams] == list(info.views)
    np.testing.assert_allclose(cams[1].matrix, info.rig.matrix[1])


def test_slp_predicted_frames_every_and_drop_flagged(synth, tmp_path: Path):
    import sleap_io as sio

    _, _, labels, info = synth
    path = export_slp(labels, info, tmp_path / "p.slp", predicted=True, frames=range(0, 20, 2), every=2,
                      drop_flagged=True, calibration=False)
    back = sio.load_slp(str(path), open_videos=False)
    assert sorted({lf.frame_idx for lf in back.labeled_frames}) == [0, 4, 8, 12, 16]
    assert not back.sessions
    conf = labels.set_index(["frame", "view", "individual", "keypoint"])
    n_flag_seen = 0
    for lf in back.labeled_frames:
        view = info.views[back.videos.index(lf.video)]
        for inst in lf.instances:
            assert isinstance(inst, sio.PredictedInstance)
            pts = inst.points
            for k, kp in enumerate(info.skeleton.keypoints):
                row = conf.loc[(lf.frame_idx, view, inst.track.name, kp)]
                if row["flag"]:
                    n_flag_seen += 1
                    assert not np.isfinite(pts["xy"][k]).all()  # dropped
                elif np.isfinite(row["x"]):
                    assert pts["score"][k] == pytest.approx(row["confidence"], abs=1e-6)
    assert n_flag_seen > 0


# ------------------------------------------------------------------ DeepLabCut
def test_dlc_project_round_trip_multi_animal(synth, tmp_path: Path):
    import cv2
    import ruamel.yaml
    import sleap_io as sio
    import yaml
    from movement.io import load_poses

    s, _, labels, info = synth
    out = tmp_path / "proj"
    cfg_path = export_dlc_project(labels, info, out, scorer="Ada", n=5, n_flagged=100, include=[11], date="Nov26",
                                  task="arena")
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg == dict(ruamel.yaml.YAML(typ="safe").load(cfg_path.read_text()))  # DeepLabCut reads with ruamel
    assert cfg["Task"] == "arena" and cfg["scorer"] == "Ada" and cfg["date"] == "Nov26"
    assert cfg["multianimalproject"] is True and cfg["bodyparts"] == "MULTI!"
    assert cfg["individuals"] == ["mouse0", "mouse1"] and cfg["uniquebodyparts"] == []
    assert cfg["multianimalbodyparts"] == list(info.skeleton.keypoints)
    assert cfg["skeleton"] == [list(e) for e in info.skeleton.edges]
    assert cfg["project_path"] == str(out.resolve())
    assert cfg["video_sets"] == {str(s.marker_videos[v].resolve()): {"crop": "0, 640, 0, 512"} for v in info.views}
    want = lookup(labels)
    flagged = set(labels.loc[labels["flag"], "frame"])
    for view in info.views:
        stem = s.marker_videos[view].stem
        folder = out / "labeled-data" / stem
        h5 = pd.read_hdf(folder / "CollectedData_Ada.h5")
        csv = pd.read_csv(folder / "CollectedData_Ada.csv", header=[0, 1, 2, 3], index_col=[0, 1, 2])
        assert list(h5.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
        assert set(h5.columns.get_level_values("coords")) == {"x", "y"}
        assert h5.index.nlevels == 3 and all(t[0] == "labeled-data" and t[1] == stem for t in h5.index)
        np.testing.assert_allclose(csv.to_numpy(), h5.to_numpy(), equal_nan=True)
        assert [tuple(t) for t in csv.index] == list(h5.index)
        with VideoReader(s.marker_videos[view]) as r:
            size = (r.height, r.width)
        frames = [int(t[2][3:-4]) for t in h5.index]
        assert {11} | (flagged & set(labels.query("view == @view & x == x")["frame"])) <= set(frames)
        for (_, _, img), row in h5.iterrows():
            f = int(img[3:-4])
            assert img == image_name(f, 20) and len(img) == len("img05.png")
            for (_, ind, kp, c), val in row.items():
                ref = want.get((f, view, ind, kp))
                if ref is None:
                    assert np.isnan(val)
                else:
                    assert val == pytest.approx(ref[0 if c == "x" else 1], abs=1e-9)
            png = cv2.imread(str(folder / img), cv2.IMREAD_UNCHANGED)
            assert png is not None and png.shape == size + (3,)
        ds = load_poses.from_dlc_file(folder / "CollectedData_Ada.h5")
        assert list(ds.individuals.values) == ["mouse0", "mouse1"] and ds.sizes["time"] == len(h5)
        np.testing.assert_allclose(ds.position.sel(individuals="mouse1", space="x").values,
                                   h5.xs(("mouse1", "x"), level=("individuals", "coords"), axis=1).to_numpy(),
                                   equal_nan=True)
    project = sio.load_dlc_project(str(out))
    assert len(project.videos) == 2 and len(project.labeled_frames) == sum(
        len(pd.read_hdf(out / "labeled-data" / s.marker_videos[v].stem / "CollectedData_Ada.h5")) for v in info.views)


def test_dlc_single_animal_layout(synth, tmp_path: Path):
    import yaml

    _, _, labels, info = synth
    one = labels[labels["individual"] == "mouse0"]
    info1 = ExportInfo(info.skeleton, info.views, ("mouse0",), info.fps, info.n_frames, info.videos,
                       info.image_sizes, info.rig, "one")
    cfg_path = export_dlc_project(one, info1, tmp_path / "p1", frames=[2, 4], images=False)
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["multianimalproject"] is False and cfg["bodyparts"] == list(info.skeleton.keypoints)
    assert "individuals" not in cfg
    h5 = pd.read_hdf(next((tmp_path / "p1" / "labeled-data").glob("*/CollectedData_ethoscribe.h5")))
    assert list(h5.columns.names) == ["scorer", "bodyparts", "coords"]
    assert [t[2] for t in h5.index] == ["img02.png", "img04.png"]
    assert not list((tmp_path / "p1" / "labeled-data").glob("*/*.png"))


def test_dlc_config_text_quotes_what_yaml_would_misread():
    import yaml

    cfg = {"Task": "2024-01-01", "scorer": "yes", "date": "Nov26", "project_path": "C:\\data: x",
           "bodyparts": ["on", "nose", "1.5"], "video_sets": {"/a b/v.mp4": {"crop": "0, 64, 0, 48"}}}
    assert yaml.safe_load(dlc_config_text(cfg)) == cfg


# ------------------------------------------------------------------ NWB
def test_nwb_round_trip_flat(synth, tmp_path: Path):
    import pynwb
    from movement.io import load_poses

    s, truth, labels, info = synth
    start = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    paths = export_nwb(labels, truth.points3d, info, tmp_path / "out.nwb", session_start_time=start,
                       subject={"species": "Mus musculus", "sex": "F"})
    assert [p.name for p in paths] == ["out_mouse0.nwb", "out_mouse1.nwb"]
    kps = list(info.skeleton.keypoints)
    for a, path in enumerate(paths):
        ind = f"mouse{a}"
        with pynwb.NWBHDF5IO(str(path), "r") as io:
            nwb = io.read()
            assert nwb.subject.subject_id == ind and nwb.subject.species == "Mus musculus"
            assert nwb.session_start_time == start
            beh = nwb.processing["behavior"]
            sk = beh["Skeletons"].skeletons[info.skeleton.name]
            assert list(sk.nodes[:]) == kps
            np.testing.assert_array_equal(sk.edges[:], np.array(info.skeleton.edge_indices()))
            for v, view in enumerate(info.views):
                pe = beh[f"PoseEstimation_{view}"]
                assert pe.skeleton.name == info.skeleton.name and pe.device.name == view
                np.testing.assert_allclose(pe.device.intrinsic_matrix[:], info.rig.matrix[v])
                ext = pe.source_video.external_file[0]
                assert (path.parent / ext).resolve() == s.marker_videos[view].resolve()
                for k, kp in enumerate(kps):
                    ser = pe.pose_estimation_series[kp]
                    assert ser.rate == info.fps and ser.unit == "pixels"
                    want = truth.position2d[v, :, k, a]
                    vis = truth.visible[v, :, k, a]
                    np.testing.assert_array_equal(ser.data[:][vis], want[vis])
                    assert np.isnan(ser.data[:][~vis]).all()
                    sel = labels[(labels["view"] == view) & (labels["individual"] == ind) & (labels["keypoint"] == kp)]
                    np.testing.assert_allclose(ser.confidence[:], sel.sort_values("frame")["confidence"], atol=1e-6)
            p3 = beh["PoseEstimation3D"].pose_estimation_series["tail_tip"]
            assert p3.unit == "meters" and p3.conversion == 0.001
            np.testing.assert_allclose(p3.data[:], truth.keypoints3d[:, kps.index("tail_tip"), a])
            flags = beh["label_flags"].to_dataframe()
            assert len(flags) == int(labels.loc[labels["individual"] == ind, "flag"].sum())
        ds = load_poses.from_nwb_file(path, pose_estimation_key="PoseEstimation_cam1")
        assert ds.individuals.values.tolist() == [ind]
        got = ds.position.sel(individuals=ind, keypoints=kps).transpose("time", "keypoints", "space").values
        vis = truth.visible[1, :, :, a]
        np.testing.assert_allclose(got[vis], truth.position2d[1, :, :, a][vis])


def test_nwb_multicamera_layout_single_animal(synth, tmp_path: Path):
    import pynwb

    _, truth, labels, info = synth
    one = labels[labels["individual"] == "mouse1"]
    info1 = ExportInfo(info.skeleton, info.views, ("mouse1",), info.fps, info.n_frames, {}, info.image_sizes, None)
    (path,) = export_nwb(one, truth.points3d, info1, tmp_path / "mc.nwb", layout="multicamera", identifier="run7")
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.identifier == "run7" and not nwb.acquisition
        mc = nwb.processing["behavior"]["MultiCameraPoseEstimation"]
        assert sorted(mc.pose_estimations) == ["cam0", "cam1"]
        assert type(mc.pose_estimations["cam0"].device).__name__ == "Device"  # no calibration given
        np.testing.assert_allclose(mc.pose_estimation_series["back_mid"].data[:],
                                   truth.keypoints3d[:, 3, 1])


# ------------------------------------------------------------------ movement
def test_movement_export_round_trip(synth, tmp_path: Path):
    from movement.io import load_poses

    s, truth, labels, info = synth
    paths = export_movement(labels, info, tmp_path / "mv", poses3d=truth.points3d)
    for v, view in enumerate(info.views):
        ds = xr.load_dataset(paths[view])
        assert ds.attrs["ds_type"] == "poses" and ds.attrs["view"] == view and ds.attrs["fps"] == info.fps
        assert ds.position.dims == ("time", "space", "keypoints", "individuals")
        pos = np.moveaxis(ds.position.values, 1, -1)  # T, K, I, 2
        vis = truth.visible[v]
        np.testing.assert_array_equal(pos[vis], truth.position2d[v][vis])
        assert np.isnan(pos[~vis]).all()
        assert int(ds["flag"].sum()) == int(labels.loc[labels["view"] == view, "flag"].sum())
        dlc = load_poses.from_dlc_file(paths[f"dlc:{view}"])
        np.testing.assert_allclose(dlc.position.values, ds.position.values, equal_nan=True)
        np.testing.assert_allclose(dlc.confidence.values, ds.confidence.values, atol=1e-6)
        assert paths[f"dlc:{view}"].name == f"{s.marker_videos[view].stem}_ethoscribe.h5"
    both = xr.load_dataset(paths["poses2d"])
    assert both.position.dims[0] == "view" and list(both["view"].values) == list(info.views)
    p3 = xr.load_dataset(paths["poses3d"])
    np.testing.assert_allclose(p3.position.values, truth.points3d.position.values)
    assert p3.attrs["ds_type"] == "poses"


# ------------------------------------------------------------------ everything
def test_export_all_from_a_pose_output_folder(synth, tmp_path: Path):
    s, truth, labels, _ = synth
    pose = tmp_path / "pose"
    pose.mkdir()
    labels.to_parquet(pose / "labels.parquet", index=False)
    truth.points3d.to_netcdf(pose / "poses3d.nc")
    pd.DataFrame({"frame": [17, 3]}).to_csv(pose / "review.csv", index=False)
    out = export_all(pose, s.load_session(), formats=("slp", "dlc", "nwb", "movement"),
                     dlc={"n": 2, "images": False})
    assert set(out) == {"slp", "dlc", "nwb:mouse0", "nwb:mouse1", "movement"}
    assert all(p.exists() for p in out.values())
    assert out["dlc"].name == "config.yaml" and out["slp"].parent == pose / "exports"
    h5 = pd.read_hdf(next((pose / "exports" / "dlc" / "labeled-data").glob("*/CollectedData_ethoscribe.h5")))
    assert {"img17.png", "img03.png"} <= {t[2] for t in h5.index}  # the review list is in the DLC frames
    with pytest.raises(InputError, match="unknown export format"):
        export_all(pose, s.load_session(), formats=("csv",))
    with pytest.raises(InputError, match="labels.parquet"):
        export_all(tmp_path, s.load_session())


# ------------------------------------------------------------------ errors
def test_bad_labels_give_clear_errors(synth, tmp_path: Path):
    _, _, labels, info = synth
    with pytest.raises(InputError, match="lacks column.*keypoint"):
        validate_labels(labels.drop(columns=["keypoint"]), info)
    bad = labels.copy()
    bad.loc[0, "keypoint"] = "nose"
    with pytest.raises(SkeletonError, match="'nose'"):
        export_slp(bad, info, tmp_path / "x.slp")
    bad = labels.copy()
    bad.loc[0, "view"] = "cam9"
    with pytest.raises(InputError, match="cam9"):
        export_movement(bad, info, tmp_path / "mv")
    bad = labels.copy()
    bad.loc[0, "frame"] = 20
    with pytest.raises(InputError, match="session has 20 frames"):
        export_nwb(bad, None, info, tmp_path / "x.nwb")
    with pytest.raises(InputError, match="duplicate"):
        validate_labels(pd.concat([labels, labels.iloc[:1]]), info)


def test_dlc_needs_videos_for_frames_and_distinct_stems(synth, tmp_path: Path):
    _, _, labels, info = synth
    partial = ExportInfo(info.skeleton, info.views, info.individuals, info.fps, info.n_frames,
                         {"cam0": info.videos["cam0"]}, info.image_sizes)
    with pytest.raises(InputError, match=r"\['cam1'\] have no video"):
        export_dlc_project(labels, partial, tmp_path / "d")
    same = ExportInfo(info.skeleton, info.views, info.individuals, info.fps, info.n_frames,
                      {"cam0": tmp_path / "a" / "v.mp4", "cam1": tmp_path / "b" / "v.mp4"}, info.image_sizes)
    with pytest.raises(InputError, match="share a video file stem"):
        export_dlc_project(labels, same, tmp_path / "d", images=False)


def test_unwritable_targets_are_named(synth, tmp_path: Path):
    _, _, labels, info = synth
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create the folder"):
        export_slp(labels, info, blocker / "sub" / "labels.slp")
    with pytest.raises(InputError, match="it is a file"):
        export_dlc_project(labels, info, blocker, images=False)
    with pytest.raises(InputError, match=r"must end in \.slp"):
        export_slp(labels, info, tmp_path / "labels.h5")
    assert not list(tmp_path.glob("**/*.tmp*"))  # nothing half-written left behind
