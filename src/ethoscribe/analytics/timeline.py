"""Time budgets, bouts and transition matrices from per-frame behaviour labels.

All functions are pure: they take a *labels table* (one row per frame and
animal: ``frame``, ``individual``, ``label``; what
:attr:`ethoscribe.behavior.pipeline.BehaviorResult.labels` holds, or any
annotation in that layout) or a *segments table* (``individual``,
``start_frame``, ``end_frame`` exclusive, ``label``) and return DataFrames.

Definitions
-----------
bout
    A maximal run of consecutive frames of one animal with the same label.
    A jump in the frame numbers (frames missing from the table) ends a bout.
time budget
    The fraction of an animal's frames spent in each label (sums to 1 per
    animal) and the same in seconds (``n_frames / fps``).
transition
    A change of label between two consecutive bouts of one animal. Labels in
    ``ignore`` (default ``("untracked",)``) are removed from the sequence
    first, so ``walk, untracked, walk`` is no transition and
    ``walk, untracked, rest`` counts as ``walk -> rest``; self-transitions
    are therefore never counted. Probabilities are per row (the chance that
    a bout of ``from_label`` is followed by one of ``to_label``): each row
    sums to 1, or is all 0 when the label never changes into another.
latency
    Seconds from the first frame of the table to the start of the animal's
    first bout of the label (NaN when it never shows it).

Examples
--------
>>> labels = pd.DataFrame({"frame": range(6), "individual": "m0",
...                        "label": ["rest", "rest", "walk", "walk", "walk", "rest"]})
>>> bouts(labels, fps=2.0)[["label", "start_frame", "end_frame", "duration_s"]].values.tolist()
[['rest', 0, 2, 1.0], ['walk', 2, 5, 1.5], ['rest', 5, 6, 0.5]]
>>> time_budgets(labels, fps=2.0)[["label", "fraction", "seconds"]].values.tolist()
[['rest', 0.5, 1.5], ['walk', 0.5, 1.5]]
>>> transition_matrices(labels)["m0"].counts.tolist()
[[0, 1], [1, 0]]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ethoscribe.errors import InputError

UNTRACKED = "untracked"
POOLED = "all"
"""Key of the matrix pooled over all animals in :func:`transition_matrices`."""


# ------------------------------------------------------------- validation
def check_labels(labels: pd.DataFrame, what: str = "labels") -> pd.DataFrame:
    """A clean copy of a labels table: columns ``frame`` (int), ``individual`` and ``label`` (str), sorted.

    Raises
    ------
    InputError
        Not a DataFrame, missing columns, non-integer frames, or the same
        (frame, individual) twice.
    """
    if not isinstance(labels, pd.DataFrame):
        raise InputError(f"{what}: a labels table must be a pandas DataFrame, not {type(labels).__name__}")
    missing = [c for c in ("frame", "individual", "label") if c not in labels.columns]
    if missing:
        raise InputError(f"{what}: labels table lacks column(s) {', '.join(missing)} (needs frame, individual, label)")
    df = labels[["frame", "individual", "label"]].copy()
    fr = pd.to_numeric(df["frame"], errors="coerce")
    if fr.isna().any() or (fr != np.round(fr)).any():
        raise InputError(f"{what}: column 'frame' must hold whole numbers")
    df["frame"] = fr.astype(np.int64)
    df["individual"] = df["individual"].astype(str)
    df["label"] = df["label"].fillna(UNTRACKED).astype(str)
    if df.duplicated(["individual", "frame"]).any():
        raise InputError(f"{what}: some (individual, frame) pairs appear twice")
    return df.sort_values(["individual", "frame"], kind="stable").reset_index(drop=True)


def labels_from_segments(segments: pd.DataFrame, n_frames: int | None = None, fill: str = UNTRACKED) -> pd.DataFrame:
    """Expand a segments table (``individual, start_frame, end_frame, label``) into a labels table.

    Frames of an animal not covered by any segment (up to ``n_frames``,
    default the last segment end) get ``fill``.
    """
    need = [c for c in ("individual", "start_frame", "end_frame", "label") if c not in segments.columns]
    if need:
        raise InputError(f"segments table lacks column(s) {', '.join(need)}")
    if not len(segments):
        return pd.DataFrame({"frame": pd.Series([], dtype=np.int64), "individual": pd.Series([], dtype=object),
                             "label": pd.Series([], dtype=object)})
    T = int(n_frames if n_frames is not None else segments["end_frame"].max())
    parts = []
    for ind, g in segments.groupby("individual", sort=False):
        lab = np.full(T, fill, dtype=object)
        for s, e, name in zip(g["start_frame"].to_numpy(int), g["end_frame"].to_numpy(int), g["label"].astype(str)):
            lab[max(0, s):min(T, e)] = name
        parts.append(pd.DataFrame({"frame": np.arange(T, dtype=np.int64), "individual": str(ind), "label": lab}))
    return pd.concat(parts, ignore_index=True)


def _individuals(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["individual"].tolist()))


# ------------------------------------------------------------------ bouts
def bouts(labels: pd.DataFrame, fps: float) -> pd.DataFrame:
    """One row per bout: ``individual, label, start_frame, end_frame`` (exclusive), ``start_s, end_s, duration_s``.

    Rows are ordered by animal (in order of first appearance) and time.
    """
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    df = check_labels(labels)
    rows = []
    for ind in _individuals(df):
        g = df[df["individual"] == ind]
        fr = g["frame"].to_numpy()
        codes, uniq = pd.factorize(g["label"])
        if not len(fr):
            continue
        cut = np.flatnonzero((np.diff(codes) != 0) | (np.diff(fr) != 1)) + 1
        starts = np.r_[0, cut]
        stops = np.r_[cut, len(fr)]
        rows.append(pd.DataFrame({
            "individual": ind, "label": np.asarray(uniq, dtype=object)[codes[starts]],
            "start_frame": fr[starts], "end_frame": fr[stops - 1] + 1,
        }))
    if not rows:
        return pd.DataFrame(columns=["individual", "label", "start_frame", "end_frame", "start_s", "end_s", "duration_s"])
    out = pd.concat(rows, ignore_index=True)
    out["start_s"] = out["start_frame"] / fps
    out["end_s"] = out["end_frame"] / fps
    out["duration_s"] = (out["end_frame"] - out["start_frame"]) / fps
    return out


def bout_statistics(labels: pd.DataFrame, fps: float, labels_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per animal and label: ``n_bouts, total_s, mean_s, median_s, max_s, latency_s, fraction``.

    Every (animal, label) combination of the labels seen in the table (or
    ``labels_order``) gets a row; one without bouts has ``n_bouts`` 0,
    durations 0 and ``latency_s`` NaN.
    """
    df = check_labels(labels)
    b = bouts(df, fps)
    t0 = {ind: int(df.loc[df["individual"] == ind, "frame"].min()) for ind in _individuals(df)}
    n_frames = df.groupby("individual").size()
    names = list(labels_order) if labels_order is not None else sorted(set(df["label"]))
    rows = []
    for ind in _individuals(df):
        bi = b[b["individual"] == ind]
        for name in names:
            d = bi.loc[bi["label"] == name, "duration_s"].to_numpy(float)
            s = bi.loc[bi["label"] == name, "start_frame"].to_numpy(int)
            rows.append({
                "individual": ind, "label": name, "n_bouts": int(d.size), "total_s": float(d.sum()),
                "mean_s": float(d.mean()) if d.size else 0.0, "median_s": float(np.median(d)) if d.size else 0.0,
                "max_s": float(d.max()) if d.size else 0.0,
                "latency_s": float((s.min() - t0[ind]) / fps) if s.size else float("nan"),
                "fraction": float(d.sum() * fps / n_frames[ind]),
            })
    return pd.DataFrame(rows, columns=["individual", "label", "n_bouts", "total_s", "mean_s", "median_s", "max_s",
                                       "latency_s", "fraction"])


# ------------------------------------------------------------ budgets
def time_budgets(labels: pd.DataFrame, fps: float, exclude: Iterable[str] = (), all_labels: bool = False) -> pd.DataFrame:
    """Per animal and label: ``n_frames, seconds, fraction`` (fractions sum to 1 per animal).

    Parameters
    ----------
    labels
        Labels table.
    fps
        Frame rate (for ``seconds``).
    exclude
        Labels left out *before* normalising (e.g. ``("untracked",)`` for
        the budget of tracked time only).
    all_labels
        Also give rows with 0 frames for labels that only other animals show.

    Rows are ordered by animal, then by decreasing fraction.
    """
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    df = check_labels(labels)
    ex = set(exclude)
    df = df[~df["label"].isin(ex)]
    g = df.groupby(["individual", "label"], sort=True).size().rename("n_frames")
    if all_labels and len(g):
        full = pd.MultiIndex.from_product([sorted(set(df["individual"])), sorted(set(df["label"]))], names=["individual", "label"])
        g = g.reindex(full, fill_value=0)
    g = g.reset_index()
    total = g.groupby("individual")["n_frames"].transform("sum")
    g["seconds"] = g["n_frames"] / fps
    g["fraction"] = np.where(total > 0, g["n_frames"] / total.where(total > 0, 1), 0.0)
    order = {ind: i for i, ind in enumerate(_individuals(df))}
    g["_o"] = g["individual"].map(order)
    g = g.sort_values(["_o", "fraction", "label"], ascending=[True, False, True], kind="stable").drop(columns="_o")
    return g[["individual", "label", "n_frames", "seconds", "fraction"]].reset_index(drop=True)


# --------------------------------------------------------- transitions
@dataclass
class TransitionMatrix:
    """Counts of transitions between consecutive bouts (rows: from, columns: to).

    Attributes
    ----------
    labels
        Row and column names.
    counts
        (n, n) int array; the diagonal is 0 (self-transitions excluded).
    individual
        The animal, or :data:`POOLED` for all animals together.
    """

    labels: list[str]
    counts: NDArray[np.int64]
    individual: str = POOLED
    n_bouts: dict[str, int] = field(default_factory=dict)

    @property
    def probabilities(self) -> NDArray[np.float64]:
        """Row-normalised counts (each row sums to 1, or is 0 when its label never changes into another)."""
        c = self.counts.astype(float)
        s = c.sum(axis=1, keepdims=True)
        return np.divide(c, s, out=np.zeros_like(c), where=s > 0)

    @property
    def total(self) -> int:
        """Number of transitions."""
        return int(self.counts.sum())

    def to_frame(self, nonzero: bool = True) -> pd.DataFrame:
        """Long table ``individual, from_label, to_label, count, probability``."""
        p = self.probabilities
        rows = [(self.individual, a, b, int(self.counts[i, j]), float(p[i, j]))
                for i, a in enumerate(self.labels) for j, b in enumerate(self.labels)
                if i != j and (self.counts[i, j] > 0 or not nonzero)]
        return pd.DataFrame(rows, columns=["individual", "from_label", "to_label", "count", "probability"])

    def count_frame(self) -> pd.DataFrame:
        """The counts as a square DataFrame (index: from, columns: to)."""
        return pd.DataFrame(self.counts, index=pd.Index(self.labels, name="from"), columns=pd.Index(self.labels, name="to"))


def bout_sequence(labels: pd.DataFrame, individual: str, ignore: Iterable[str] = (UNTRACKED,)) -> list[str]:
    """The labels of an animal's consecutive bouts, with ``ignore`` labels removed and repeats merged."""
    df = check_labels(labels)
    ig = set(ignore)
    seq = df.loc[(df["individual"] == individual) & ~df["label"].isin(ig), "label"].to_numpy()
    if not seq.size:
        return []
    keep = np.r_[True, seq[1:] != seq[:-1]]
    return [str(x) for x in seq[keep]]


def transition_matrices(
    labels: pd.DataFrame,
    ignore: Iterable[str] = (UNTRACKED,),
    labels_order: Sequence[str] | None = None,
    pooled: bool = True,
) -> dict[str, TransitionMatrix]:
    """Transition count matrices per animal (and pooled over all, key :data:`POOLED`).

    All matrices share the same label order: ``labels_order`` or the sorted
    labels of the table (without ``ignore``).
    """
    df = check_labels(labels)
    ig = set(ignore)
    names = list(labels_order) if labels_order is not None else sorted(set(df["label"]) - ig)
    index = {n: i for i, n in enumerate(names)}
    out: dict[str, TransitionMatrix] = {}
    total = np.zeros((len(names), len(names)), np.int64)
    nb_all: dict[str, int] = {}
    for ind in _individuals(df):
        seq = bout_sequence(df, ind, ig)
        c = np.zeros_like(total)
        for a, b in zip(seq[:-1], seq[1:]):
            if a in index and b in index and a != b:
                c[index[a], index[b]] += 1
        nb = pd.Series(seq, dtype=object).value_counts().to_dict() if seq else {}
        out[ind] = TransitionMatrix(names, c, ind, {str(k): int(v) for k, v in nb.items()})
        total += c
        for k, v in nb.items():
            nb_all[str(k)] = nb_all.get(str(k), 0) + int(v)
    if pooled:
        out[POOLED] = TransitionMatrix(names, total, POOLED, nb_all)
    return out


def transitions_table(labels: pd.DataFrame, ignore: Iterable[str] = (UNTRACKED,)) -> pd.DataFrame:
    """All per-animal transitions as one long table (``individual, from_label, to_label, count, probability``)."""
    mats = transition_matrices(labels, ignore=ignore, pooled=False)
    frames = [m.to_frame() for m in mats.values()]
    if not frames:
        return pd.DataFrame(columns=["individual", "from_label", "to_label", "count", "probability"])
    return pd.concat(frames, ignore_index=True)
