"""Evaluation: scikit-learn metrics, many-to-one F1 and boundary F1 on hand-made cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from ethoscribe.behavior.evaluate import evaluate_behavior, read_label_table
from ethoscribe.errors import InputError


def _table(labels, individual="m0", start=0):
    return pd.DataFrame({"frame": np.arange(start, start + len(labels)), "individual": individual, "label": labels})


def test_matches_sklearn_on_a_hand_made_case():
    y = list("aaaabbbbccccaaaa")
    p = [0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 0, 0, 0, 1, 1]
    r = evaluate_behavior(_table(p), _table(y))
    ys, ps = np.array(y), np.array([str(v) for v in p])
    assert r["nmi"] == pytest.approx(metrics.normalized_mutual_info_score(ys, ps))
    assert r["ari"] == pytest.approx(metrics.adjusted_rand_score(ys, ps))
    assert r["homogeneity"] == pytest.approx(metrics.homogeneity_score(ys, ps))
    assert r["completeness"] == pytest.approx(metrics.completeness_score(ys, ps))
    assert r["n_discovered"] == 4 and r["n_true"] == 3 and r["n_frames"] == 16


def test_many_to_one_f1_hand_computed():
    # truth: a x6, b x4; discovered: 0 (a, a, a, b), 1 (a, a, a), 2 (b, b, b)
    y = ["a", "a", "a", "b", "a", "a", "a", "b", "b", "b"]
    p = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    r = evaluate_behavior(_table(p), _table(y))
    assert r["mapping"] == {"0": "a", "1": "a", "2": "b"}
    # a: predicted 7 (0 and 1), correct 6, true 6 -> P 6/7, R 1 -> F1 12/13
    # b: predicted 3, correct 3, true 4 -> P 1, R 3/4 -> F1 6/7
    assert r["f1_per_class"]["a"] == pytest.approx(12 / 13)
    assert r["f1_per_class"]["b"] == pytest.approx(6 / 7)
    assert r["macro_f1"] == pytest.approx((12 / 13 + 6 / 7) / 2)
    # one-to-one: 0->a, 2->b, 1 unmatched: a P 3/4 R 3/6 -> 0.6; b 6/7
    assert r["macro_f1_one_to_one"] == pytest.approx((0.6 + 6 / 7) / 2)


def test_boundary_f1_with_tolerance():
    y = ["a"] * 20 + ["b"] * 20 + ["a"] * 20  # boundaries at 20 and 40
    p = [0] * 23 + [1] * 30 + [0] * 7  # mapped boundaries at 23 (within 5) and 53 (miss)
    r = evaluate_behavior(_table(p), _table(y), tolerance=5)
    assert r["boundary_precision"] == pytest.approx(0.5)
    assert r["boundary_recall"] == pytest.approx(0.5)
    assert r["boundary_f1"] == pytest.approx(0.5)
    r2 = evaluate_behavior(_table(p), _table(y), tolerance=2)
    assert r2["boundary_f1"] == 0.0


def test_perfect_over_segmentation_scores_full_f1():
    y = ["rest"] * 10 + ["walk"] * 10
    p = [0] * 5 + [1] * 5 + [2] * 10
    r = evaluate_behavior(_table(p), _table(y))
    assert r["macro_f1"] == 1.0 and r["homogeneity"] == pytest.approx(1.0)
    assert r["boundary_f1"] == 1.0  # boundaries of the mapped labels


def test_several_animals_and_files(tmp_path):
    truth = pd.concat([_table(list("aabb"), "m0"), _table(list("bbaa"), "m1")])
    pred = pd.concat([_table([1, 1, 2, 2], "m0"), _table([2, 2, 1, 1], "m1")])
    pred.to_csv(tmp_path / "pred.csv", index=False)
    truth.rename(columns={"label": "behaviour"}).to_parquet(tmp_path / "truth.parquet")
    r = evaluate_behavior(tmp_path / "pred.csv", tmp_path / "truth.parquet")
    assert r["macro_f1"] == 1.0 and r["nmi"] == pytest.approx(1.0) and r["n_frames"] == 8
    assert r["boundary_f1"] == 1.0


def test_clear_errors():
    with pytest.raises(InputError, match="frame"):
        read_label_table(pd.DataFrame({"label": [1]}))
    with pytest.raises(InputError, match="label column"):
        read_label_table(pd.DataFrame({"frame": [1]}))
    with pytest.raises(InputError, match="no .*rows"):
        evaluate_behavior(_table([0, 1]), _table(["a", "b"], start=10))
    with pytest.raises(InputError, match="not found"):
        evaluate_behavior("/nonexistent.csv", _table(["a"]))
    with pytest.raises(InputError, match="more than one"):
        read_label_table(pd.concat([_table([0]), _table([1])]))
