"""Matplotlib figures shared by reports: one consistent, quiet style.

Functions return a matplotlib ``Figure``; :meth:`ethoscribe.report.html.Image.from_figure`
embeds it in a report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

# A colour per keypoint region / behaviour, shared by all plots (tab10 order).
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _mpl():  # import lazily and force a non-interactive backend
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "ethoscribe"})
    return plt


def view_montage(
    images: Sequence[NDArray[np.uint8]],
    titles: Sequence[str],
    candidates: Sequence[NDArray[np.float64]] | None = None,
    labels: Sequence[NDArray[np.float64]] | None = None,
    label_colors: Sequence[str] | None = None,
    ncols: int = 3,
    zoom_to: Sequence[tuple[float, float, float, float] | None] | None = None,
):
    """Views side by side with candidates (white rings) and labels (coloured dots).

    Parameters
    ----------
    images
        One grey or RGB image per view.
    candidates
        Per view, an (n, 2) array of candidate positions (pixels).
    labels
        Per view, a (k, 2) array of labelled keypoints (NaN = none).
    label_colors
        One colour per labelled keypoint.
    zoom_to
        Per view, an optional (x0, y0, x1, y1) box to crop the view to.

    Examples
    --------
    >>> fig = view_montage([np.zeros((48, 64), np.uint8)], ["cam0"], [np.array([[10.0, 20.0]])])
    >>> len(fig.axes)
    1
    """
    plt = _mpl()
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    h, w = images[0].shape[:2]
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.6 * nrows * h / w + 0.3), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.remove()
            continue
        img = images[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        if candidates is not None and len(candidates[i]):
            c = np.asarray(candidates[i])
            ax.scatter(c[:, 0], c[:, 1], s=40, facecolors="none", edgecolors="white", linewidths=0.8)
        if labels is not None:
            lab = np.asarray(labels[i])
            ok = np.isfinite(lab).all(axis=1)
            colors = np.asarray(label_colors if label_colors is not None else [PALETTE[0]] * len(lab))
            ax.scatter(lab[ok, 0], lab[ok, 1], s=9, c=colors[ok], linewidths=0)
        if zoom_to is not None and zoom_to[i] is not None:
            x0, y0, x1, y1 = zoom_to[i]
            ax.set_xlim(x0, x1)
            ax.set_ylim(y1, y0)
        ax.set_title(titles[i])
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def error_histogram(errors: NDArray[np.float64], unit: str, title: str):
    """Histogram of errors with the median marked."""
    plt = _mpl()
    e = np.asarray(errors, dtype=float)
    e = e[np.isfinite(e)]
    fig, ax = plt.subplots(figsize=(5, 2.8))
    if e.size:
        hi = float(np.percentile(e, 99.5)) or 1.0
        ax.hist(np.clip(e, 0, hi), bins=60, color=PALETTE[0])
        med = float(np.median(e))
        ax.axvline(med, color=PALETTE[3], lw=1)
        ax.text(med, ax.get_ylim()[1] * 0.9, f" median {med:.2f} {unit}", color=PALETTE[3])
    ax.set_xlabel(f"error ({unit})")
    ax.set_ylabel("count")
    ax.set_title(title)
    fig.tight_layout()
    return fig
