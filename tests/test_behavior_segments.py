"""Smoothing and snippets: every frame in exactly one segment, no overlaps, bounded lengths."""

from __future__ import annotations

import numpy as np
import pytest

from ethoscribe.behavior.segments import UNTRACKED, make_segments, runs, smooth_labels


def test_min_bout_removes_short_flickers():
    lab = np.array([0] * 30 + [1] * 3 + [0] * 30 + [2] * 40 + [1] * 2 + [2] * 20)
    out = smooth_labels(np.eye(3)[lab], fps=30, smooth_s=0.0, min_bout_s=0.3)
    assert all(e - s >= 9 for s, e, _ in runs(out))
    assert out[31] == 0 and out[104] == 2
    assert len(out) == len(lab)


def test_untracked_frames_stay_untracked_and_unmerged():
    lab = np.array([0] * 40 + [1] * 40)
    valid = np.ones(80, bool)
    valid[38:45] = False
    out = smooth_labels(np.eye(2)[lab], fps=30, valid=valid, smooth_s=0.2, min_bout_s=0.5)
    assert (out[38:45] == UNTRACKED).all()
    assert (out[valid] != UNTRACKED).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segments_cover_every_frame_once(seed):
    rng = np.random.default_rng(seed)
    lab = np.repeat(rng.integers(-1, 4, 60), rng.integers(1, 400, 60))
    seg = make_segments(lab, fps=30, individual="m0", max_snippet_s=5.0)
    starts, ends = seg["start_frame"].to_numpy(), seg["end_frame"].to_numpy()
    assert starts[0] == 0 and ends[-1] == len(lab)
    assert np.array_equal(starts[1:], ends[:-1])  # contiguous: no gap, no overlap
    assert (ends - starts <= 150).all() and (ends > starts).all()
    covered = np.zeros(len(lab), int)
    for s, e, c in zip(starts, ends, seg["cluster"]):
        covered[s:e] += 1
        assert (lab[s:e] == c).all()
    assert (covered == 1).all()
    np.testing.assert_allclose(seg["end_s"] - seg["start_s"], (ends - starts) / 30)


def test_long_bouts_split_evenly():
    seg = make_segments(np.zeros(330, int), fps=30, individual="a", max_snippet_s=5.0)
    assert (seg["end_frame"] - seg["start_frame"]).tolist() == [110, 110, 110]


def test_boundary_refinement_moves_to_the_feature_change():
    from ethoscribe.behavior.segments import refine_boundaries

    x = np.r_[np.zeros(40), np.ones(40), np.zeros(40)][:, None] + np.random.default_rng(0).normal(0, 0.1, (120, 1))
    blurred = np.array([0] * 46 + [1] * 40 + [0] * 34)  # both boundaries 6 frames late
    out = refine_boundaries(blurred, x, max_shift=9)
    b = np.flatnonzero(out[1:] != out[:-1]) + 1
    assert b.tolist() == [40, 80]
    assert refine_boundaries(blurred, x, max_shift=0).tolist() == blurred.tolist()
    # untracked frames stay where they are
    lab = np.array([0] * 40 + [UNTRACKED] * 10 + [1] * 30)
    assert refine_boundaries(lab, np.zeros((80, 1)), max_shift=5).tolist() == lab.tolist()
