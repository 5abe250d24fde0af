"""Behaviour exports: segments CSV/Parquet, per-frame labels, BORIS files and NWB intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ethoscribe.errors import InputError
from ethoscribe.io.exports.behavior import (
    BORIS_AGGREGATED_COLUMNS,
    BORIS_EVENT_COLUMNS,
    BORIS_TABULAR_COLUMNS,
    SEGMENT_COLUMNS,
    append_nwb_intervals,
    export_behavior,
    export_boris,
    export_frame_labels,
    export_nwb_intervals,
    export_segments,
)

FPS = 30.0


@pytest.fixture
def result():
    from ethoscribe.analytics.reference import behavior_result_from_labels

    seq = {"m0": [("rest", 45), ("walk", 60), ("untracked", 6), ("walk", 30), ("groom", 90), ("chase", 39)],
           "m1": [("walk", 30), ("run", 45), ("rest", 105), ("contact", 90)]}
    rows = []
    for ind, s in seq.items():
        labels = [lab for lab, n in s for _ in range(n)]
        rows.append(pd.DataFrame({"frame": np.arange(len(labels)), "individual": ind, "label": labels}))
    res = behavior_result_from_labels(pd.concat(rows, ignore_index=True), FPS, captions={"walk": "moves forward, \"steady\""},
                                      max_segment_s=1.5)
    return res


def test_segments_round_trip_csv_and_parquet(result, tmp_path: Path) -> None:
    segs = result.segments
    assert len(segs) > 10  # bouts were cut into segments of <= 1.5 s
    for name in ("segments.csv", "segments.parquet"):
        p = export_segments(segs, tmp_path / name)
        back = pd.read_csv(p, keep_default_na=False) if name.endswith(".csv") else pd.read_parquet(p)
        assert list(back.columns) == SEGMENT_COLUMNS
        assert len(back) == len(segs)
        want = segs.sort_values(["start_s", "individual"], kind="stable").reset_index(drop=True)
        assert back["label"].tolist() == want["label"].tolist()
        assert back["individual"].tolist() == want["individual"].tolist()
        assert np.array_equal(back["start_frame"].to_numpy(), want["start_frame"].to_numpy())
        assert np.allclose(back["end_s"].to_numpy(), want["end_s"].to_numpy())
        assert back["caption"].tolist() == want["caption"].tolist()
    merged = pd.read_csv(export_segments(segs, tmp_path / "bouts.csv", merge=True))
    assert len(merged) == 10  # one row per bout
    with pytest.raises(InputError, match="format"):
        export_segments(segs, tmp_path / "segments.xls")


def test_frame_labels_align_with_video_frames(result, tmp_path: Path) -> None:
    p = export_frame_labels(result.labels, tmp_path / "frames.csv", FPS, n_frames=300)
    df = pd.read_csv(p)
    assert list(df.columns) == ["frame", "time_s", "m0", "m1"]
    assert len(df) == 300 and df["frame"].tolist() == list(range(300))
    assert np.allclose(df["time_s"].to_numpy(), np.arange(300) / FPS)
    assert df.loc[0, "m0"] == "rest" and df.loc[105, "m0"] == "untracked" and df.loc[269, "m1"] == "contact"
    assert (df.loc[270:, ["m0", "m1"]] == "untracked").all().all()  # beyond the labels


def test_nwb_file_opens_with_pynwb_and_holds_the_intervals(result, tmp_path: Path) -> None:
    import pynwb

    p = export_nwb_intervals(result.segments, tmp_path / "behavior.nwb")
    with pynwb.NWBHDF5IO(str(p), "r") as io:
        nwb = io.read()
        df = nwb.intervals["behavior"].to_dataframe()
    assert len(df) == len(result.segments)
    assert {"start_time", "stop_time", "label", "individual", "confidence", "caption"} <= set(df.columns)
    assert set(df["individual"]) == {"m0", "m1"} and "chase" in set(df["label"])
    assert (df["stop_time"] > df["start_time"]).all()
    assert np.isclose(df["stop_time"].max(), 270 / FPS)
    assert "steady" in " ".join(df["caption"])

    # appended beside the pose export of an existing file
    base = tmp_path / "pose_m0.nwb"
    import datetime as dt

    nwb = pynwb.NWBFile(session_description="pose", identifier="m0", session_start_time=dt.datetime.now(dt.timezone.utc))
    with pynwb.NWBHDF5IO(str(base), "w") as io:
        io.write(nwb)
    append_nwb_intervals(base, result.segments, individual="m0")
    with pynwb.NWBHDF5IO(str(base), "r") as io:
        got = io.read()
        assert got.session_description == "pose"
        df = got.intervals["behavior"].to_dataframe()
    assert set(df["individual"]) == {"m0"}
    with pytest.raises(InputError, match="already"):
        append_nwb_intervals(base, result.segments)


def _boris_pairs(events: list[list], subject: str, code: str) -> list[tuple[float, float]]:
    """Pair START/STOP the way BORIS does for a state event: alternate occurrences of (subject, code) in time order."""
    ts = sorted(e[0] for e in events if e[1] == subject and e[2] == code)
    assert len(ts) % 2 == 0, f"unpaired state event {subject}/{code}"
    return list(zip(ts[0::2], ts[1::2]))


def test_boris_files_have_what_boris_imports(result, tmp_path: Path) -> None:
    video = tmp_path / "videos" / "top.mp4"
    video.parent.mkdir()
    video.write_bytes(b"")
    defs = dict(zip(result.label_dictionary["label"], result.label_dictionary["definition"]))
    p = export_boris(result.segments, tmp_path / "out" / "behavior.boris", FPS, media_file=video, media_duration_s=10.0,
                     definitions=defs)
    pj = json.loads(p.read_text())
    for key in ("project_format_version", "subjects_conf", "behaviors_conf", "observations", "time_format"):
        assert key in pj
    codes = {b["code"]: b for b in pj["behaviors_conf"].values()}
    assert set(codes) == {"rest", "walk", "groom", "chase", "run", "contact"}  # untracked left out
    assert all(b["type"] == "State event" for b in codes.values())
    assert codes["chase"]["category"] == "social" and codes["walk"]["description"].startswith("The animal walks")
    assert [s["name"] for s in pj["subjects_conf"].values()] == ["m0", "m1"]
    obs = pj["observations"]["ethoscribe"]
    assert obs["type"] == "MEDIA" and obs["file"]["1"] == ["../videos/top.mp4"]
    assert obs["media_info"]["fps"]["../videos/top.mp4"] == FPS
    ev = obs["events"]
    assert all(len(e) == 5 for e in ev)
    assert [e[0] for e in ev] == sorted(e[0] for e in ev)
    # BORIS's pairing gives back the bouts (walk of m0: 45-105 and 111-141, separated by untracked)
    assert _boris_pairs(ev, "m0", "walk") == [(1.5, 3.5), (3.7, 4.699)]
    # a stop that meets the next start of the same animal is 1 ms earlier
    assert _boris_pairs(ev, "m1", "walk") == [(0.0, 0.999)]
    assert len(ev) == 2 * 9

    x = export_boris(result.segments, tmp_path / "events.xlsx", FPS)
    sheet = pd.read_excel(x, engine="openpyxl")
    assert list(sheet.columns) == BORIS_EVENT_COLUMNS  # BORIS reads time, subject, code, modifier, comment
    assert len(sheet) == 2 * 9
    assert float(sheet.iloc[0]["time"]) == 0.0 and sheet.iloc[0]["subject"] in ("m0", "m1")

    agg = pd.read_csv(export_boris(result.segments, tmp_path / "agg.csv", FPS, layout="aggregated", media_file=video))
    assert list(agg.columns) == BORIS_AGGREGATED_COLUMNS and len(agg) == 9
    assert set(agg["Behavior type"]) == {"STATE"}
    assert np.allclose(agg["Duration (s)"], agg["Stop (s)"] - agg["Start (s)"], atol=2e-3)
    tab = pd.read_csv(export_boris(result.segments, tmp_path / "tab.tsv", FPS, layout="tabular", status_column=True), sep="\t")
    assert list(tab.columns) == BORIS_TABULAR_COLUMNS + ["Status"]
    assert (tab["Behavior type"] == "START").sum() == (tab["Behavior type"] == "STOP").sum() == 9
    csv_events = pd.read_csv(export_boris(result.segments, tmp_path / "events.csv", FPS), keep_default_na=False)
    assert list(csv_events.columns) == BORIS_EVENT_COLUMNS
    with pytest.raises(InputError, match="layout"):
        export_boris(result.segments, tmp_path / "x.csv", FPS, layout="nope")


def test_export_behavior_writes_every_format(result, tmp_path: Path) -> None:
    folder = result.save(tmp_path / "behavior")
    paths = export_behavior(folder, tmp_path / "exports")
    assert {"segments_csv", "segments_parquet", "frames", "boris", "boris_events", "boris_aggregated", "nwb"} <= set(paths)
    for p in paths.values():
        assert Path(p).is_file() and Path(p).stat().st_size > 0
    assert not list((tmp_path / "exports").glob(".*tmp*"))  # atomic writes leave no temporaries
    with pytest.raises(InputError, match="unknown"):
        export_behavior(folder, tmp_path / "x", formats=["xls"])
