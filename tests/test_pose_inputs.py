"""Bad inputs to the pose pipeline give clear errors naming the file or value; the labels schema is enforced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_pose_support import animal_track, build_case

from ethoscribe.errors import CalibrationError, InputError, SkeletonError
from ethoscribe.io.seeds import load_seeds
from ethoscribe.pose import PoseConfig, empty_labels, load_labels, run_pose, save_labels, validate_labels
from ethoscribe.session import load_session
from ethoscribe.skeleton import Skeleton, mouse12

CFG = PoseConfig(chunk_size=10)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return build_case(tmp_path_factory.mktemp("inputs") / "s", [animal_track(12, (-60, 0), (3, 0))])


# ------------------------------------------------------------------ seeds
def _write_seeds(path: Path, skeleton: Skeleton, views: list[str], frames: list[int], predicted: bool = False) -> Path:
    import sleap_io as sio

    sk = skeleton.to_sleap()
    videos = [sio.Video(filename=f"videos/{v}_markers.mp4", open_backend=False) for v in views]
    track = sio.Track("mouse0")
    lfs = []
    for video in videos:
        for f in frames:
            pts = np.random.default_rng(f).uniform(50, 400, (len(skeleton.keypoints), 2))
            inst = (sio.PredictedInstance.from_numpy(pts, skeleton=sk, point_scores=np.ones(len(pts)), score=1.0, track=track)
                    if predicted else sio.Instance.from_numpy(pts, skeleton=sk, track=track))
            lfs.append(sio.LabeledFrame(video=video, frame_idx=f, instances=[inst]))
    sio.Labels(labeled_frames=lfs, videos=videos, skeletons=[sk], tracks=[track]).save(str(path))
    return path


def test_seeds_with_another_skeleton(tmp_path: Path) -> None:
    other = Skeleton(name="other", keypoints=tuple(k if k != "tail_tip" else "tail_end" for k in mouse12().keypoints))
    path = _write_seeds(tmp_path / "seeds.slp", other, ["cam0", "cam1"], [1, 2, 3])
    with pytest.raises(SkeletonError, match=r"seeds\.slp.*missing \['tail_tip'\].*unexpected \['tail_end'\]"):
        load_seeds(path, mouse12(), ["cam0", "cam1"], ["mouse0"])


def test_seeds_missing_a_view(tmp_path: Path) -> None:
    path = _write_seeds(tmp_path / "seeds.slp", mouse12(), ["cam0", "cam1"], [1, 2, 3])
    with pytest.raises(InputError, match=r"seeds\.slp: no video for view\(s\) \['cam2'\]"):
        load_seeds(path, mouse12(), ["cam0", "cam1", "cam2"], ["mouse0"])


def test_too_few_seed_frames(tmp_path: Path) -> None:
    path = _write_seeds(tmp_path / "seeds.slp", mouse12(), ["cam0", "cam1"], [1, 2])
    with pytest.raises(InputError, match=r"only 2 frame\(s\) \[1, 2\] are labelled in all 2 views.*at least 3"):
        load_seeds(path, mouse12(), ["cam0", "cam1"], ["mouse0"])


def test_seeds_without_user_instances(tmp_path: Path) -> None:
    path = _write_seeds(tmp_path / "seeds.slp", mouse12(), ["cam0", "cam1"], [1, 2, 3], predicted=True)
    with pytest.raises(InputError, match=r"no user-labelled instances.*pseudo-seeds"):
        load_seeds(path, mouse12(), ["cam0", "cam1"], ["mouse0"])


def test_seeds_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothere.slp: seed file not found"):
        load_seeds(tmp_path / "nothere.slp", mouse12(), ["cam0"], ["mouse0"])


def test_seeds_in_the_case_load(case) -> None:  # type: ignore[no-untyped-def]
    s = load_session(case.root)
    seeds = load_seeds(s.seeds_path, s.skeleton, s.config.view_names, s.config.individuals)
    assert seeds.frames.tolist() == case.seeds_frames


# ------------------------------------------------------------------ calibration and candidates
def test_views_missing_from_the_calibration(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    root = tmp_path / "s"
    shutil.copytree(case.root, root)
    text = (root / "session.toml").read_text()
    (root / "session.toml").write_text(text.replace('name = "cam3"', 'name = "cam9"'))
    with pytest.raises(CalibrationError, match=r"calibration\.toml: views \['cam9'\] are missing from the calibration"):
        load_session(root)


def test_empty_candidates(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="candidates table is empty"):
        run_pose(case.root, candidates=case.candidates.iloc[:0], out_dir=tmp_path / "o", config=CFG)


def test_view_without_candidates(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = case.candidates[case.candidates["view"].astype(str) != "cam2"]
    with pytest.raises(InputError, match=r"no candidates at all in view\(s\) \['cam2'\]"):
        run_pose(case.root, candidates=c, out_dir=tmp_path / "o", config=CFG)


def test_nan_coordinates_in_candidates(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = case.candidates.copy()
    c.loc[7, "x"] = np.nan
    with pytest.raises(InputError, match=r"column 'x' has NaN or infinite coordinates in row\(s\) 7"):
        run_pose(case.root, candidates=c, out_dir=tmp_path / "o", config=CFG)
    path = tmp_path / "cands.parquet"
    c.to_parquet(path)
    with pytest.raises(InputError, match=r"cands\.parquet: column 'x' has NaN"):
        run_pose(case.root, candidates=path, out_dir=tmp_path / "o", config=CFG)


def test_candidates_for_unknown_view_or_frame(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = case.candidates.copy()
    c["view"] = c["view"].astype(str)
    c.loc[0, "view"] = "camX"
    with pytest.raises(InputError, match=r"view\(s\) \['camX'\] that the session does not have"):
        run_pose(case.root, candidates=c, out_dir=tmp_path / "o", config=CFG)
    c = case.candidates.copy()
    c.loc[0, "frame"] = 999
    with pytest.raises(InputError, match=r"frame\(s\) \[999\] are outside the session's 12 frames"):
        run_pose(case.root, candidates=c, out_dir=tmp_path / "o", config=CFG)


def test_unknown_reasoner(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="unknown reasoner 'gpt'"):
        run_pose(case.root, candidates=case.candidates, reasoner="gpt", out_dir=tmp_path / "o", config=CFG)


def test_pseudo_seeds_need_hints(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="pseudo-seeds need predictions"):
        run_pose(case.root, candidates=case.candidates, seeds="pseudo", out_dir=tmp_path / "o", config=CFG)


# ------------------------------------------------------------------ labels schema
def _labels(case, tmp_path):  # type: ignore[no-untyped-def]
    return run_pose(case.root, candidates=case.candidates, out_dir=tmp_path / "o", config=CFG).labels


def test_labels_table_schema_and_roundtrip(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab = _labels(case, tmp_path)
    assert list(lab.columns) == ["frame", "view", "individual", "keypoint", "x", "y", "confidence", "flag", "reason",
                                 "stage", "reasoner", "candidate", "reproj_error"]
    assert len(lab) == 12 * 4 * 1 * 12
    assert lab["confidence"].dtype == np.float32 and lab["reproj_error"].dtype == np.float32
    assert lab["frame"].dtype == np.int64 and lab["candidate"].dtype == np.int64 and lab["flag"].dtype == bool
    assert set(lab["stage"]) <= {"seed", "assignment", "agreement", "refinement", "reprojection"}
    assert (lab.loc[lab["stage"] == "seed", "reason"] == "seed").all()
    assert set(lab.loc[lab["stage"] == "seed", "reasoner"]) == {"human"}
    path = save_labels(lab, tmp_path / "l.parquet")
    back = load_labels(path)
    pd.testing.assert_frame_equal(back, lab)
    assert validate_labels(empty_labels()).shape == (0, 13)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.drop(columns=["reason"]), "lacks column"),
        (lambda d: d.assign(confidence=np.float32(1.5)), "must lie in \\[0, 1\\]"),
        (lambda d: d.assign(reason="wrong_code"), "unknown reason code"),
        (lambda d: d.assign(stage="guess"), "unknown stage"),
        (lambda d: d.assign(flag=True, reason=""), "flagged without a reason"),
        (lambda d: d.iloc[1:], "not dense"),
        (lambda d: pd.concat([d, d.iloc[:1]]), "repeats"),
        (lambda d: d.assign(x=np.where(np.arange(len(d)) == 3, np.nan, d["x"]), y=d["y"].fillna(0.0)), "both finite or both NaN"),
    ],
)
def test_labels_validation_rejects(case, tmp_path: Path, change, message) -> None:  # type: ignore[no-untyped-def]
    lab = _labels(case, tmp_path)
    with pytest.raises(InputError, match=message):
        validate_labels(change(lab.copy()), "my_labels.parquet")
