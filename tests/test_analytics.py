"""Behaviour analytics: budgets, bouts and transitions on hand-made timelines; social events on scripted motion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ethoscribe.analytics import (
    POOLED,
    SocialParams,
    bout_statistics,
    bouts,
    labels_from_segments,
    social_analysis,
    time_budgets,
    transition_matrices,
    transitions_table,
)
from ethoscribe.errors import InputError


def _timeline(ind: str, seq: list[tuple[str, int]]) -> pd.DataFrame:
    labels = [lab for lab, n in seq for _ in range(n)]
    return pd.DataFrame({"frame": np.arange(len(labels)), "individual": ind, "label": labels})


@pytest.fixture
def two_animals() -> pd.DataFrame:
    a = _timeline("a", [("rest", 30), ("walk", 15), ("untracked", 5), ("walk", 10), ("groom", 40), ("walk", 20)])
    b = _timeline("b", [("walk", 6), ("run", 3), ("walk", 9), ("rest", 12)])
    return pd.concat([a, b], ignore_index=True)


def test_budgets_sum_to_one_per_animal(two_animals: pd.DataFrame) -> None:
    fps = 10.0
    bud = time_budgets(two_animals, fps)
    sums = bud.groupby("individual")["fraction"].sum()
    assert np.allclose(sums.to_numpy(), 1.0)
    a = bud[bud["individual"] == "a"].set_index("label")
    assert a.loc["walk", "n_frames"] == 45 and a.loc["walk", "seconds"] == pytest.approx(4.5)
    assert a.loc["groom", "fraction"] == pytest.approx(40 / 120)
    # tracked-time budget: untracked left out before normalising
    tracked = time_budgets(two_animals, fps, exclude=("untracked",))
    assert "untracked" not in set(tracked["label"])
    assert np.allclose(tracked.groupby("individual")["fraction"].sum().to_numpy(), 1.0)
    assert tracked[(tracked.individual == "a") & (tracked.label == "groom")]["fraction"].item() == pytest.approx(40 / 115)
    full = time_budgets(two_animals, fps, all_labels=True)
    assert len(full) == 2 * 5 and np.allclose(full.groupby("individual")["fraction"].sum().to_numpy(), 1.0)


def test_known_sequence_gives_known_bouts_and_transitions(two_animals: pd.DataFrame) -> None:
    fps = 10.0
    b = bouts(two_animals, fps)
    a = b[b["individual"] == "a"]
    assert a["label"].tolist() == ["rest", "walk", "untracked", "walk", "groom", "walk"]
    assert a["duration_s"].tolist() == pytest.approx([3.0, 1.5, 0.5, 1.0, 4.0, 2.0])
    assert a["start_frame"].tolist() == [0, 30, 45, 50, 60, 100]
    st = bout_statistics(two_animals, fps).set_index(["individual", "label"])
    walk = st.loc[("a", "walk")]
    assert walk["n_bouts"] == 3
    assert walk["mean_s"] == pytest.approx(1.5) and walk["median_s"] == pytest.approx(1.5)
    assert walk["latency_s"] == pytest.approx(3.0)
    assert st.loc[("b", "run"), "latency_s"] == pytest.approx(0.6)
    assert st.loc[("b", "groom"), "n_bouts"] == 0 and np.isnan(st.loc[("b", "groom"), "latency_s"])

    mats = transition_matrices(two_animals)
    ma = mats["a"].count_frame()
    # untracked is skipped: walk, untracked, walk is one walk bout, so no self-transition
    assert ma.loc["rest", "walk"] == 1 and ma.loc["walk", "groom"] == 1 and ma.loc["groom", "walk"] == 1
    assert mats["a"].total == 3
    assert np.all(np.diag(mats[POOLED].counts) == 0)
    mb = mats["b"].count_frame()
    assert mb.loc["walk", "run"] == 1 and mb.loc["run", "walk"] == 1 and mb.loc["walk", "rest"] == 1
    assert mats[POOLED].total == 6
    p = mats[POOLED].probabilities
    rows = p.sum(axis=1)
    assert np.allclose(rows[rows > 0], 1.0)
    assert mats[POOLED].count_frame().loc["walk", "groom"] == 1
    long = transitions_table(two_animals)
    assert long["count"].sum() == 6 and set(long.columns) == {"individual", "from_label", "to_label", "count", "probability"}
    # counting untracked as a behaviour instead
    with_u = transition_matrices(two_animals, ignore=())["a"].count_frame()
    assert with_u.loc["walk", "untracked"] == 1 and with_u.loc["untracked", "walk"] == 1


def test_frame_gaps_end_bouts_and_segments_expand() -> None:
    df = pd.DataFrame({"frame": [0, 1, 2, 5, 6], "individual": "m", "label": ["a", "a", "a", "a", "b"]})
    b = bouts(df, 1.0)
    assert b[["start_frame", "end_frame"]].values.tolist() == [[0, 3], [5, 6], [6, 7]]
    segs = pd.DataFrame({"individual": ["m", "m"], "start_frame": [0, 4], "end_frame": [3, 6], "label": ["x", "y"]})
    lab = labels_from_segments(segs, n_frames=7)
    assert lab["label"].tolist() == ["x", "x", "x", "untracked", "y", "y", "untracked"]


def test_bad_labels_are_clear_errors() -> None:
    with pytest.raises(InputError, match="lacks column"):
        time_budgets(pd.DataFrame({"frame": [0]}), 30.0)
    with pytest.raises(InputError, match="twice"):
        bouts(pd.DataFrame({"frame": [0, 0], "individual": "m", "label": ["a", "b"]}), 30.0)
    with pytest.raises(InputError, match="fps"):
        bouts(pd.DataFrame({"frame": [0], "individual": "m", "label": ["a"]}), 0.0)


# ------------------------------------------------------------------ social
@pytest.fixture(scope="module")
def chase_truth(tmp_path_factory: pytest.TempPathFactory):
    from ethoscribe.synth.rig import synthesize

    root = tmp_path_factory.mktemp("chase")
    return synthesize(root, animals=2, frames=900, render="none", seed=11, cameras=2).load_truth()


def test_scripted_chase_is_detected_with_the_right_animals_and_timing(chase_truth) -> None:
    truth = chase_truth
    fps = truth.fps
    res = social_analysis(truth.points3d)
    tb = truth.bouts()
    chases = tb[tb["behaviour"] == "chase"]
    assert len(chases) >= 1, "the script always holds a chase in recordings of 10 s or more"
    ev = res.events[res.events["kind"] == "chase"]
    assert len(ev) >= 1
    first = chases.iloc[0]
    follower, leader = first["individual"], first["partner"]
    hit = ev[(ev["end_frame"] > first["start"]) & (ev["start_frame"] < first["stop"])]
    assert len(hit) == 1, f"one chase event should overlap the scripted chase, got {hit}"
    e = hit.iloc[0]
    assert (e["actor"], e["partner"]) == (follower, leader)  # actor = follower, partner = leader
    assert abs(e["start_s"] - first["start"] / fps) <= 0.5
    assert abs(e["end_s"] - first["stop"] / fps) <= 0.5
    assert e["unit"] == "mm" and e["actor_speed"] > 200 and e["partner_speed"] > 200
    # no chase event with the roles swapped during it
    assert not ((ev["actor"] == leader) & (ev["end_frame"] > first["start"]) & (ev["start_frame"] < first["stop"])).any()
    # group metrics
    nn = res.nearest
    assert len(nn) == truth.n_frames * 2 and set(nn["individual"]) == set(truth.individuals)
    assert (nn["distance"] > 0).all()
    assert len(res.contact) == 1 and 0 <= res.contact["fraction"].item() <= 1
    assert res.thresholds["contact_distance"] == pytest.approx(20.0) and res.scale == 1.0


def test_pixel_data_scale_thresholds_by_body_length(chase_truth) -> None:
    import xarray as xr

    mm = chase_truth.points3d
    k = 2.7
    pos = mm["position"].sel(space=["x", "y"]).values * k + 300.0  # "pixels" of a top camera
    px = xr.Dataset({"position": (("time", "space", "keypoints", "individuals"), pos)},
                    coords={"time": mm["time"].values, "space": ["x", "y"], "keypoints": mm["keypoints"].values,
                            "individuals": mm["individuals"].values}, attrs={"fps": mm.attrs["fps"], "space_unit": "pixels"})
    a = social_analysis(mm, SocialParams(scale="body_length"))
    b = social_analysis(px)  # auto: pixels are rescaled by body length
    assert b.unit == "px" and b.scale == pytest.approx(a.scale * k, rel=1e-6)
    cols = ["kind", "actor", "partner", "start_frame", "end_frame"]
    pd.testing.assert_frame_equal(a.events[cols], b.events[cols])
    assert np.allclose(b.events["mean_distance"], a.events["mean_distance"] * k)
    with pytest.raises(ValueError):
        SocialParams(contact_distance=-1)


def test_one_animal_has_no_social_events() -> None:
    from ethoscribe.behavior.toy import toy_poses

    ds, _ = toy_poses(n_frames=200, seed=0)
    res = social_analysis(ds)
    assert len(res.events) == 0 and len(res.contact) == 0
