"""Scores of discovered behaviour labels against true (human or synthetic) labels.

:func:`evaluate_behavior` aligns two label tables on (frame, individual) and
reports:

- ``nmi``, ``ari``, ``homogeneity``, ``completeness`` (scikit-learn, on the
  raw discovered labels);
- ``f1_per_class`` and ``macro_f1`` after **many-to-one matching**: every
  discovered label is mapped to the true label it overlaps most (several
  discovered labels may map to one true label, because discovery
  over-segments on purpose; a true label no discovered label maps to scores
  F1 0). ``macro_f1`` is the unweighted mean over the true labels;
- ``macro_f1_one_to_one``: the same after Hungarian (one-to-one) matching, a
  stricter figure;
- ``boundary_f1`` (with ``boundary_precision``/``boundary_recall``): label
  changes of the *mapped* discovered labels against true label changes, per
  individual, matched one-to-one within +/- ``tolerance`` frames (5);
- ``n_discovered`` and ``n_true`` label counts, ``n_frames`` compared and
  the ``mapping`` used.

Examples
--------
>>> import pandas as pd
>>> truth = pd.DataFrame({"frame": range(6), "individual": "m", "label": list("aaabbb")})
>>> pred = pd.DataFrame({"frame": range(6), "individual": "m", "label": [0, 0, 1, 2, 2, 2]})
>>> r = evaluate_behavior(pred, truth)
>>> r["mapping"], round(r["macro_f1"], 3)
({'0': 'a', '1': 'a', '2': 'b'}, 1.0)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError

LABEL_COLUMNS = ("label", "behaviour", "behavior", "cluster", "name")


def read_label_table(source: pd.DataFrame | str | os.PathLike[str], what: str = "labels") -> pd.DataFrame:
    """A (frame, individual, label) table from a DataFrame, Parquet or CSV file.

    The label column may be called label, behaviour, behavior, cluster or
    name; a missing individual column means one animal.
    """
    if isinstance(source, pd.DataFrame):
        df = source.copy()
        name = what
    else:
        path = Path(source)
        name = str(path)
        if path.is_dir():
            for cand in ("labels.parquet", "labels.csv", "behaviour.parquet", "behavior.parquet"):
                if (path / cand).is_file():
                    path = path / cand
                    break
            else:
                raise InputError(f"{path}: folder holds no labels.parquet / labels.csv")
        if not path.is_file():
            raise InputError(f"{path}: label file not found")
        try:
            df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
        except Exception as exc:
            raise InputError(f"{path}: cannot be read as a label table ({exc})") from None
    if "frame" not in df.columns:
        raise InputError(f"{name}: a label table needs a 'frame' column (has {list(df.columns)})")
    label_col = next((c for c in LABEL_COLUMNS if c in df.columns), None)
    if label_col is None:
        raise InputError(f"{name}: no label column (one of {LABEL_COLUMNS}) in {list(df.columns)}")
    out = pd.DataFrame({
        "frame": df["frame"].astype(np.int64),
        "individual": df["individual"].astype(str) if "individual" in df.columns else "individual_0",
        "label": df[label_col].astype(str),
    })
    if out.duplicated(["frame", "individual"]).any():
        raise InputError(f"{name}: more than one label for some (frame, individual)")
    return out


def _boundaries(labels: np.ndarray) -> np.ndarray:
    return np.flatnonzero(labels[1:] != labels[:-1]) + 1


def _match_boundaries(pred: np.ndarray, true: np.ndarray, tol: int) -> int:
    """Greedy one-to-one matches of sorted boundary frames within tolerance."""
    used = np.zeros(true.size, bool)
    hits = 0
    for b in pred:
        lo, hi = np.searchsorted(true, [b - tol, b + tol + 1])
        cands = [j for j in range(lo, hi) if not used[j]]
        if cands:
            j = min(cands, key=lambda j: abs(true[j] - b))
            used[j] = True
            hits += 1
    return hits


def evaluate_behavior(
    pred_labels: pd.DataFrame | str | os.PathLike[str],
    truth_labels: pd.DataFrame | str | os.PathLike[str],
    tolerance: int = 5,
    ignore: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Compare discovered labels with true labels (see the module docstring).

    Parameters
    ----------
    pred_labels, truth_labels
        Tables (or files) with frame, individual (optional) and label.
    tolerance
        Boundary tolerance in frames.
    ignore
        True labels whose frames are left out (e.g. ``("unlabelled",)``).
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn import metrics

    pred = read_label_table(pred_labels, "prediction")
    truth = read_label_table(truth_labels, "truth")
    if set(pred["individual"]) != set(truth["individual"]):
        pi, ti = sorted(set(pred["individual"])), sorted(set(truth["individual"]))
        if len(pi) == len(ti) == 1:
            pred["individual"] = ti[0]
        else:
            missing = sorted(set(ti) - set(pi))
            if missing:
                raise InputError(f"individuals {missing} of the truth have no predicted labels (prediction has {pi})")
    df = truth.merge(pred, on=["frame", "individual"], how="inner", suffixes=("_true", "_pred"))
    if ignore:
        df = df[~df["label_true"].isin(ignore)]
    if df.empty:
        raise InputError("prediction and truth share no (frame, individual) rows")
    df = df.sort_values(["individual", "frame"]).reset_index(drop=True)
    y, p = df["label_true"].to_numpy(), df["label_pred"].to_numpy()
    ct = pd.crosstab(df["label_pred"], df["label_true"])
    mapping = {str(k): str(ct.columns[int(np.argmax(row))]) for k, row in zip(ct.index, ct.to_numpy())}
    mapped = np.array([mapping[v] for v in p], dtype=object)
    classes = sorted(set(y))
    f1 = metrics.f1_score(y, mapped, labels=classes, average=None, zero_division=0)
    # one-to-one (Hungarian) on the overlap counts
    r, c = linear_sum_assignment(-ct.to_numpy())
    one = {str(ct.index[i]): str(ct.columns[j]) for i, j in zip(r, c)}
    mapped1 = np.array([one.get(v, "__unmatched__") for v in p], dtype=object)
    f1_one = metrics.f1_score(y, mapped1, labels=classes, average=None, zero_division=0)
    # boundaries per individual
    n_pred_b = n_true_b = hits = 0
    for _, g in df.assign(mapped=mapped).groupby("individual", sort=True):
        g = g.sort_values("frame")
        frames = g["frame"].to_numpy()
        # a gap in the frames is not a boundary of either sequence
        tb = frames[_boundaries(g["label_true"].to_numpy())]
        pb = frames[_boundaries(g["mapped"].to_numpy())]
        n_true_b += tb.size
        n_pred_b += pb.size
        hits += _match_boundaries(pb, tb, tolerance)
    bp = hits / n_pred_b if n_pred_b else (1.0 if n_true_b == 0 else 0.0)
    br = hits / n_true_b if n_true_b else 1.0
    bf = 2 * bp * br / (bp + br) if bp + br > 0 else 0.0
    return {
        "nmi": float(metrics.normalized_mutual_info_score(y, p)),
        "ari": float(metrics.adjusted_rand_score(y, p)),
        "homogeneity": float(metrics.homogeneity_score(y, p)),
        "completeness": float(metrics.completeness_score(y, p)),
        "macro_f1": float(np.mean(f1)),
        "f1_per_class": {k: float(v) for k, v in zip(classes, f1)},
        "macro_f1_one_to_one": float(np.mean(f1_one)),
        "boundary_f1": float(bf),
        "boundary_precision": float(bp),
        "boundary_recall": float(br),
        "boundary_tolerance": int(tolerance),
        "n_discovered": int(len(set(p))),
        "n_true": int(len(classes)),
        "n_frames": int(len(df)),
        "mapping": mapping,
    }
