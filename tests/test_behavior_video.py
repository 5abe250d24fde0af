"""Video features: body-aligned motion-energy SVD and EfficientNet-Lite0 embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from ethoscribe.behavior.video_features import check_videos, cnn_features, efficientnet_lite0, motion_svd_features
from ethoscribe.errors import InputError
from ethoscribe.io.video import VideoWriter

from test_behavior_pipeline import blob_video


def test_motion_svd_tracks_the_blob(tmp_path):
    path, ds = blob_video(tmp_path / "b.mp4", n=90)
    vf = motion_svd_features([path], n_components=4, n_appearance=2)
    assert vf.values.shape[:2] == (90, 1) and np.isfinite(vf.values).all()
    assert vf.names[0] == "v0_motion_energy" and "v0_speed" in vf.names
    speed = vf.measures["speed"][:, 0]
    # the blob moves in frames 30-59 and stays put (or turns) elsewhere
    assert np.median(speed[35:55]) > 3 * np.median(speed[5:25])
    turn = vf.measures["angular_speed"][:, 0]
    assert np.median(turn[65:85]) > 3 * np.median(turn[5:25])  # turning at 0.15 rad/frame vs still
    with pytest.raises(InputError, match="shorter than its pose"):
        motion_svd_features([path], n_frames=200)


def test_motion_svd_with_tracks(tmp_path):
    path, ds = blob_video(tmp_path / "b.mp4", n=60)
    pos = ds["position"].values[:, :, 1, :]  # neck as the track
    vf = motion_svd_features([path], tracks=pos, headings=np.zeros((60, 1)), body_length_px=20.0, individuals=["blob"])
    assert vf.individuals == ["blob"] and vf.values.shape[:2] == (60, 1)


def test_videos_must_agree(tmp_path):
    a, _ = blob_video(tmp_path / "a.mp4", n=30)
    b, _ = blob_video(tmp_path / "b.mp4", n=40)
    with pytest.raises(InputError, match="different frame counts"):
        check_videos([a, b])
    with VideoWriter(tmp_path / "c.mp4", fps=25, size=(96, 64)) as w:
        w.write(np.zeros((30, 64, 96), np.uint8))
    with pytest.raises(InputError, match="mismatched frame rates"):
        check_videos([a, tmp_path / "c.mp4"])


def test_efficientnet_lite0_loads_packaged_weights():
    import torch

    net = efficientnet_lite0()
    x = torch.zeros(1, 3, 224, 224)
    with torch.inference_mode():
        f = net.features(x)
        logits = net(x)
    assert f.shape == (1, 1280) and logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()


def test_cnn_features_on_frames_and_crops(tmp_path):
    path, ds = blob_video(tmp_path / "b.mp4", n=12)
    vf = cnn_features([path], image_size=96, batch_size=8, n_components=4)
    assert vf.values.shape == (12, 1, 4) and vf.timing["cnn_fps"] > 0
    tracks = ds["position"].values[:, :, 1, :]
    crops = cnn_features([path], tracks=tracks, individuals=["blob"], image_size=64, crop_px=32, stride=3, n_components=3)
    assert crops.values.shape == (12, 1, 3) and crops.individuals == ["blob"]


def test_silhouette_ignores_a_thin_tail():
    import cv2

    from ethoscribe.behavior.video_features import _silhouettes

    frames = np.full((40, 120, 240), 200, np.uint8)
    for t in range(40):
        x = 30 + 4 * t  # moves on: the median background is the floor
        cv2.ellipse(frames[t], (x, 60), (20, 7), 0.0, 0, 360, 40, -1)  # body: 40 px long
        cv2.line(frames[t], (x - 20, 60), (x - 55, 60 + (t % 8) - 4), 40, 1)  # a swinging 1-px tail
    st = _silhouettes(frames, seed=0)
    length = 4 * np.sqrt(st[:, 3])  # 4 sqrt(mu20) along x
    assert np.all(np.abs(length - 40) < 6)  # the tail (35 px) would add much more
    np.testing.assert_allclose(st[:, 2], 60, atol=1.0)  # the centroid does not swing with the tail
