"""Session loading: the boundary checks on session.toml, calibration and videos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ethoscribe.errors import CalibrationError, InputError
from ethoscribe.geometry.camera import CameraRig
from ethoscribe.io.video import VideoWriter
from ethoscribe.session import load_session


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_synthetic_session_loads_and_checks(small_session) -> None:
    s = load_session(small_session.root)
    assert s.rig.names == ["cam0", "cam1", "cam2"]
    assert s.skeleton.n_keypoints == 12
    s.check_videos("markers")
    s.check_videos("body")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "session.toml").write_text("name = [unclosed")
    with pytest.raises(InputError, match="session.toml: not valid TOML"):
        load_session(tmp_path)


def test_unknown_field_and_no_views(tmp_path: Path) -> None:
    (tmp_path / "session.toml").write_text('name = "x"\nfps = 30\nn_frames = 10\nviews = []\n')
    with pytest.raises(InputError, match="at least one view"):
        load_session(tmp_path)


def test_video_with_wrong_size_for_calibration(tmp_path: Path, small_session) -> None:
    root = _copy(small_session.root, tmp_path / "s")
    with VideoWriter(root / "videos" / "cam1_markers.mp4", fps=30, size=(320, 256)) as w:
        w.write(np.zeros((40, 256, 320), np.uint8))
    s = load_session(root)
    with pytest.raises(CalibrationError, match="cam1_markers.mp4: frames are 320x256 but camera 'cam1' is calibrated for 640x512"):
        s.check_videos("markers")


def test_video_with_wrong_frame_count(tmp_path: Path, small_session) -> None:
    root = _copy(small_session.root, tmp_path / "s")
    with VideoWriter(root / "videos" / "cam0_markers.mp4", fps=30, size=(640, 512)) as w:
        w.write(np.zeros((12, 512, 640), np.uint8))
    with pytest.raises(InputError, match="has 12 frames, the session expects 40"):
        load_session(root).check_videos("markers")


def test_calibration_with_nan_is_rejected(tmp_path: Path, small_session) -> None:
    root = _copy(small_session.root, tmp_path / "s")
    rig = CameraRig.load(root / "calibration.toml")
    text = (root / "calibration.toml").read_text()
    first_t = repr(float(rig.tvec[0, 0]))
    assert first_t in text
    (root / "calibration.toml").write_text(text.replace(first_t, "nan", 1))
    with pytest.raises(CalibrationError, match="non-finite values in translation"):
        load_session(root)
