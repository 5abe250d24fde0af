"""run_behavior end to end: labels for every frame, clean segments, budgets, save/load, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ethoscribe.behavior.pipeline import BehaviorResult, load_behavior_result, run_behavior
from ethoscribe.behavior.toy import toy_poses
from ethoscribe.errors import InputError
from ethoscribe.io.video import VideoWriter

FAST_DEC = {"hidden": (32,), "latent": 4, "pretrain_epochs": 4, "finetune_epochs": 2}


def blob_video(path, n=90, size=(96, 64), fps=30.0, seed=0):
    """A dark ellipse moving over a light floor, plus its 2D 'pose' (nose, neck, tail_base) in pixels."""
    import cv2

    rng = np.random.default_rng(seed)
    W, H = size
    frames = np.full((n, H, W), 200, np.uint8)
    xy = np.zeros((n, 2))
    ang = np.zeros(n)
    x, y, a = W / 2, H / 2, 0.0
    for t in range(n):
        phase = (t // 30) % 3  # still, move, turn
        if phase == 1:
            x += 1.2 * np.cos(a)
            y += 1.2 * np.sin(a)
        elif phase == 2:
            a += 0.15
        x, y = np.clip(x, 15, W - 15), np.clip(y, 15, H - 15)
        xy[t], ang[t] = (x, y), a
        cv2.ellipse(frames[t], (int(x), int(y)), (10, 4), float(np.degrees(a)), 0, 360, 40, -1)
    frames = np.clip(frames + rng.normal(0, 2, frames.shape), 0, 255).astype(np.uint8)
    with VideoWriter(path, fps=fps, size=size) as w:
        w.write(frames)
    d = np.stack([np.cos(ang), np.sin(ang)], 1)
    pts = np.stack([xy + 10 * d, xy + 5 * d, xy - 9 * d], axis=2)  # (T, 2, 3)
    ds = xr.Dataset(
        {"position": (("time", "space", "keypoints", "individuals"), pts[..., None]),
         "confidence": (("time", "keypoints", "individuals"), np.ones((n, 3, 1)))},
        coords={"time": np.arange(n) / fps, "space": ["x", "y"], "keypoints": ["nose", "neck", "tail_base"], "individuals": ["blob"]},
        attrs={"fps": fps, "time_unit": "seconds", "ds_type": "poses"},
    )
    return path, ds


@pytest.fixture(scope="module")
def toy():
    ds, truth = toy_poses(n_frames=450, n_animals=2, seed=5, noise_mm=0.5)
    pos = ds["position"].values.copy()
    pos[200:240, :, 9, 1] = np.nan  # mouse1's tail_base lost for 1.3 s: untracked
    ds["position"] = (ds["position"].dims, pos)
    return ds, truth


@pytest.fixture(scope="module")
def result(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("beh")
    return run_behavior(toy[0], out_dir=out, n_clusters=6, seed=0, dec_params=FAST_DEC)


def test_every_frame_of_every_animal_is_labelled(result, toy):
    lab = result.labels
    assert len(lab) == 450 * 2
    assert set(lab["individual"]) == {"mouse0", "mouse1"}
    for _, g in lab.groupby("individual"):
        assert sorted(g["frame"]) == list(range(450))
    assert lab["label"].notna().all() and (lab["label"] != "").all()
    untracked = lab[(lab["individual"] == "mouse1") & lab["frame"].between(200, 239)]
    assert (untracked["label"] == "untracked").all()
    assert (lab[lab["individual"] == "mouse0"]["label"] != "untracked").all()
    assert set(lab["label"]) <= set(result.label_dictionary["label"])


def test_segments_do_not_overlap_and_cover_everything(result):
    seg = result.segments
    for ind, g in seg.groupby("individual"):
        g = g.sort_values("start_frame")
        s, e = g["start_frame"].to_numpy(), g["end_frame"].to_numpy()
        assert s[0] == 0 and e[-1] == 450 and np.array_equal(s[1:], e[:-1])
        assert ((e - s) <= 150).all()
        lab = result.labels[result.labels["individual"] == ind].set_index("frame")["label"]
        for row in g.itertuples():
            assert (lab.loc[row.start_frame : row.end_frame - 1] == row.label).all()
    tracked = seg[seg["label"] != "untracked"]
    assert (tracked["caption"].str.len() > 10).all()
    assert tracked["confidence"].between(0, 1).all()


def test_time_budgets_sum_to_one(result):
    sums = result.time_budgets.groupby("individual")["fraction"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)
    assert result.time_budgets["n_frames"].sum() == 900


def test_label_dictionary_and_trace(result):
    d = result.label_dictionary
    assert d["label"].is_unique and (d["definition"].str.len() > 0).all()
    clusters = [c for cs in d["clusters"] if cs for c in cs.split(",")]
    assert len(clusters) == len(set(clusters))  # each cluster in one label
    steps = {r["step"] for r in result.trace}
    assert {"inputs", "pose_features", "cluster", "smooth", "caption", "merge", "outputs"} <= steps
    cap = next(r for r in result.trace if r["step"] == "caption")
    assert cap["answer"]["text"] and cap["input"]


def test_save_load_round_trip(result):
    assert result.out_dir is not None
    files = {p.name for p in result.out_dir.iterdir()}
    assert {"labels.parquet", "labels.csv", "segments.parquet", "segments.csv", "label_dictionary.json",
            "time_budgets.csv", "trace.jsonl", "result.json"} <= files
    back = load_behavior_result(result.out_dir)
    assert isinstance(back, BehaviorResult)
    for name in ("labels", "segments", "label_dictionary", "time_budgets", "transitions"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(result, name), check_dtype=False)
    assert back.meta["individuals"] == ["mouse0", "mouse1"]
    assert len(back.trace) == len(result.trace)
    with pytest.raises(InputError, match="result.json"):
        load_behavior_result(result.out_dir / "nowhere")


def test_gap_policy_error(toy):
    with pytest.raises(InputError, match="tail_base"):
        run_behavior(toy[0], gap_policy="error", dec_params=FAST_DEC)


def test_single_frame_and_no_input_are_errors(toy):
    with pytest.raises(InputError, match="frame"):
        run_behavior(toy[0].isel(time=[0]))
    with pytest.raises(InputError, match="pose file, one or more videos"):
        run_behavior()


def test_video_only_and_pose_plus_video(tmp_path):
    path, ds = blob_video(tmp_path / "blob.mp4")
    res = run_behavior(videos=[path], n_clusters=3, dec_params=FAST_DEC)
    assert len(res.labels) == 90 and res.labels["label"].notna().all()
    assert res.meta["video_features"] == "motion_svd"
    both = run_behavior(ds, videos=[path], n_clusters=3, clusterer="kmeans")
    assert len(both.labels) == 90
    vf = next(r for r in both.trace if r["step"] == "video_features")
    assert vf["per_animal_crops"] is True


def test_video_shorter_than_pose_and_fps_mismatch(tmp_path):
    path, ds = blob_video(tmp_path / "blob.mp4", n=60)
    longer = xr.concat([ds, ds.assign_coords(time=ds["time"] + 2.0)], dim="time")
    with pytest.raises(InputError, match="shorter than its pose"):
        run_behavior(longer, videos=[path])
    with pytest.raises(InputError, match="mismatched frame rates"):
        run_behavior(ds.assign_attrs(fps=25.0), videos=[path])
    # a video longer than the pose is used up to the pose's length
    res = run_behavior(ds.isel(time=slice(0, 50)), videos=[path], n_clusters=3, clusterer="kmeans")
    assert len(res.labels) == 50
    assert "ignored" in next(r for r in res.trace if r["step"] == "inputs")["note"]
