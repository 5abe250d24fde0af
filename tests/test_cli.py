"""The command line end to end: synth, detect-spots, demo, and clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ethoscribe.cli import app

runner = CliRunner()


def test_synth_then_detect_spots(tmp_path: Path) -> None:
    out = tmp_path / "s"
    res = runner.invoke(app, ["-q", "synth", str(out), "--cameras", "2", "--frames", "15", "--seed", "3", "--render", "markers"])
    assert res.exit_code == 0, res.output
    assert (out / "session.toml").is_file() and (out / "calibration.toml").is_file() and (out / "seeds.slp").is_file()
    res = runner.invoke(app, ["-q", "detect-spots", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(out / "output" / "candidates.parquet")
    assert set(table["view"].astype(str)) == {"cam0", "cam1"}
    assert table["frame"].nunique() == 15
    # about 12 markers per view and frame, a few missed or occluded, ~2 spurious
    per = table.groupby(["frame", "view"], observed=True).size()
    assert 6 <= per.median() <= 18


def test_missing_session_is_one_clear_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["detect-spots", str(tmp_path / "nowhere")])
    assert res.exit_code == 2
    assert "session file not found" in res.output
    assert "Traceback" not in res.output


def test_view_missing_from_calibration(tmp_path: Path, small_session) -> None:
    root = tmp_path / "s"
    shutil.copytree(small_session.root, root)
    text = (root / "session.toml").read_text()
    (root / "session.toml").write_text(text.replace('name = "cam2"', 'name = "cam9"'))
    res = runner.invoke(app, ["detect-spots", str(root)])
    assert res.exit_code == 2
    assert "cam9" in res.output and "missing from the calibration" in res.output


def test_bad_synth_option_is_rejected(tmp_path: Path) -> None:
    res = runner.invoke(app, ["synth", str(tmp_path / "x"), "--noise", "extreme"])
    assert res.exit_code != 0
    assert "extreme" in res.output


@pytest.mark.slow
def test_demo_writes_report(tmp_path: Path) -> None:
    res = runner.invoke(app, ["-q", "demo", "--out", str(tmp_path / "demo"), "--cameras", "3", "--frames", "150"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "demo" / "report.html").read_text()
    for section in ("Accuracy against ground truth", "Pose QC", "Review list", "Behaviour", "Label dictionary"):
        assert section in html
    assert html.count("data:image/") >= 6
    assert "src=\"http" not in html and "href=\"http" not in html  # self-contained
    session = tmp_path / "demo" / "session" / "output"
    assert (session / "pose" / "labels.parquet").is_file() and (session / "pose" / "exports" / "labels.slp").is_file()
    segments = pd.read_parquet(session / "behavior" / "segments.parquet")
    assert len(segments) > 0 and (segments["end_frame"] > segments["start_frame"]).all()
    # the console says what was found and where to look
    out = " ".join(res.output.split())
    assert "of labels flagged" in out and "review.csv" in out and "segments.csv" in out
    assert all(str(n) in out for n in pd.read_csv(session / "behavior" / "label_dictionary.csv")["label"])
