"""Plots of behaviour, social events and pose quality, plus frame thumbnails and clips with the pose drawn.

One quiet style for every figure (:func:`style`), and one colour per
behaviour shared by every plot and every report (:func:`behavior_colors`):
the common behaviours of ethoscribe's vocabulary and the social event kinds
have fixed colours; any other label gets one from an extra palette chosen
from a hash of its name (so the same name keeps its colour across reports),
moving on to the next free colour when two names would collide.

Figures are matplotlib ``Figure`` objects (Agg backend; embed them with
:meth:`ethoscribe.report.html.Image.from_figure`); thumbnails, strips and
clips are drawn with Pillow and returned as images or encoded bytes.

Examples
--------
>>> colors = behavior_colors(["walk", "rest", "behaviour 3"])
>>> colors["walk"], colors["rest"]
('#1f77b4', '#7f8c99')
>>> behavior_colors(["behaviour 3"])["behaviour 3"] == colors["behaviour 3"]
True
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

#: Fixed colours of the common behaviours (ethoscribe's vocabulary) and of ``untracked``.
BEHAVIOR_COLORS: dict[str, str] = {
    "rest": "#7f8c99", "walk": "#1f77b4", "run": "#d62728", "turn": "#ff7f0e", "rear": "#9467bd", "groom": "#2ca02c",
    "sniff": "#bcbd22", "approach": "#17becf", "follow": "#e377c2", "chase": "#8c564b", "contact": "#f5b700",
    "retreat": "#393b79", "back up": "#637939", "hunch": "#843c39", "untracked": "#d9d9d9",
}
#: Colours for other labels (picked by a hash of the name).
EXTRA_COLORS: tuple[str, ...] = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#a6cee3", "#b2df8a", "#fb9a99",
    "#fdbf6f", "#cab2d6", "#6a3d9a", "#b15928",
)
#: Colours of QC reason codes.
REASON_COLORS: dict[str, str] = {
    "high_reprojection_error": "#d62728", "large_jump": "#9467bd", "detached_track": "#e377c2", "conflict": "#ff7f0e",
    "few_views": "#bcbd22", "reprojected": "#17becf", "missing": "#7f7f7f", "suspect_camera": "#8c564b",
}
FLAG_RING = (214, 39, 40)
WORST_MARK = (255, 215, 0)


def behavior_colors(labels: Iterable[str]) -> dict[str, str]:
    """A colour (hex) per label: fixed for known behaviours, hashed for the others (see the module docstring)."""
    names = sorted({str(x) for x in labels})
    out: dict[str, str] = {}
    used = set()
    for n in names:
        if n in BEHAVIOR_COLORS:
            out[n] = BEHAVIOR_COLORS[n]
            used.add(out[n])
    for n in names:
        if n in out:
            continue
        k = zlib.crc32(n.encode("utf-8")) % len(EXTRA_COLORS)
        for step in range(len(EXTRA_COLORS)):
            c = EXTRA_COLORS[(k + step) % len(EXTRA_COLORS)]
            if c not in used:
                break
        out[n] = c
        used.add(c)
    return out


def hex_to_rgb(c: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    c = c.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def style() -> Any:
    """pyplot with the Agg backend and ethoscribe's figure style."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.spines.top": False,
        "axes.spines.right": False, "axes.grid": False, "legend.frameon": False, "figure.dpi": 100,
        "svg.hashsalt": "ethoscribe", "axes.edgecolor": "#555555", "xtick.color": "#333333", "ytick.color": "#333333",
    })
    return plt


def _legend_patches(colors: Mapping[str, str], names: Sequence[str]) -> list[Any]:
    from matplotlib.patches import Patch

    return [Patch(facecolor=colors[n], edgecolor="none", label=n) for n in names]


# ------------------------------------------------------------- behaviour
def ethogram(bouts: pd.DataFrame, individuals: Sequence[str], duration_s: float, colors: Mapping[str, str],
             title: str = "Ethogram", events: pd.DataFrame | None = None) -> Any:
    """One row of coloured bouts per animal over time (``bouts``: individual, label, start_s, end_s).

    With ``events`` (social events: kind, actor, start_s, end_s), a thin
    strip under each animal's row shows the events it is the actor of.
    """
    plt = style()
    n = max(1, len(individuals))
    fig, ax = plt.subplots(figsize=(11, 0.55 * n + 1.4))
    names = [x for x in colors if x in set(bouts["label"])]
    for r, ind in enumerate(individuals):
        b = bouts[bouts["individual"] == ind]
        for lab, g in b.groupby("label", sort=False):
            spans = list(zip(g["start_s"].to_numpy(float), (g["end_s"] - g["start_s"]).to_numpy(float)))
            ax.broken_barh(spans, (r - 0.38, 0.62), facecolors=colors.get(str(lab), "#999999"), linewidth=0)
        if events is not None and len(events):
            e = events[events["actor"] == ind]
            for kind, g in e.groupby("kind", sort=False):
                spans = list(zip(g["start_s"].to_numpy(float), (g["end_s"] - g["start_s"]).to_numpy(float)))
                ax.broken_barh(spans, (r + 0.27, 0.12), facecolors=colors.get(str(kind), "#333333"), linewidth=0)
    ax.set_yticks(range(n))
    ax.set_yticklabels(list(individuals))
    ax.set_ylim(n - 0.5, -0.6)
    ax.set_xlim(0, max(duration_s, 1e-6))
    ax.set_xlabel("time (s)")
    ax.set_title(title, loc="left")
    ax.legend(handles=_legend_patches(colors, names), loc="upper center", bbox_to_anchor=(0.5, -0.35 if n < 3 else -0.2),
              ncol=min(8, max(1, len(names))), fontsize=8)
    fig.tight_layout()
    return fig


def time_budget_bars(budgets: pd.DataFrame, individuals: Sequence[str], colors: Mapping[str, str],
                     title: str = "Time budgets") -> Any:
    """Stacked horizontal bars: each animal's fraction of time per label (``budgets``: individual, label, fraction, seconds)."""
    plt = style()
    n = max(1, len(individuals))
    fig, ax = plt.subplots(figsize=(9, 0.5 * n + 1.3))
    order = [x for x in colors if x in set(budgets["label"])]
    for r, ind in enumerate(individuals):
        left = 0.0
        b = budgets[budgets["individual"] == ind].set_index("label")
        for lab in order:
            if lab not in b.index:
                continue
            w = float(b.loc[lab, "fraction"])
            if w <= 0:
                continue
            ax.barh(r, w, left=left, color=colors[lab], height=0.6, linewidth=0)
            if w >= 0.06:
                ax.text(left + w / 2, r, f"{100 * w:.0f}%", ha="center", va="center", fontsize=7, color="white")
            left += w
    ax.set_yticks(range(n))
    ax.set_yticklabels(list(individuals))
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of time")
    ax.set_title(title, loc="left")
    ax.legend(handles=_legend_patches(colors, order), loc="upper center", bbox_to_anchor=(0.5, -0.35 if n < 3 else -0.2),
              ncol=min(8, max(1, len(order))), fontsize=8)
    fig.tight_layout()
    return fig


def transition_heatmap(matrix: Any, colors: Mapping[str, str], title: str = "Transitions") -> Any:
    """Heat map of a :class:`~ethoscribe.analytics.timeline.TransitionMatrix` (row probabilities, counts written in)."""
    plt = style()
    labels = list(matrix.labels)
    k = max(1, len(labels))
    side = min(9.0, 1.2 + 0.55 * k)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    p = matrix.probabilities if k else np.zeros((1, 1))
    im = ax.imshow(p, cmap="Blues", vmin=0, vmax=1)
    c = matrix.counts
    for i in range(len(labels)):
        for j in range(len(labels)):
            if c[i, j]:
                ax.text(j, i, str(int(c[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if p[i, j] > 0.55 else "#1d2430")
    ax.set_xticks(range(len(labels)))
    ax.set_yticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    for t in ax.get_xticklabels() + ax.get_yticklabels():
        t.set_color(colors.get(t.get_text(), "#333333"))
        t.set_fontweight("bold")
    ax.set_xlabel("to")
    ax.set_ylabel("from")
    ax.set_title(f"{title} ({matrix.total} between bouts; numbers are counts)", loc="left")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="P(to | from)")
    fig.tight_layout()
    return fig


def bout_duration_histograms(bouts: pd.DataFrame, colors: Mapping[str, str], labels: Sequence[str] | None = None,
                             ncols: int = 4, title: str = "Bout durations") -> Any:
    """Small multiples: a histogram of bout durations per label (all animals), median marked."""
    plt = style()
    names = list(labels) if labels is not None else [x for x in colors if x in set(bouts["label"])]
    names = names or ["(none)"]
    ncols = min(ncols, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.7 * ncols, 1.9 * nrows + 0.5), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        d = bouts.loc[bouts["label"] == name, "duration_s"].to_numpy(float)
        if d.size:
            hi = max(float(np.percentile(d, 99)), 1e-3)
            ax.hist(np.clip(d, 0, hi), bins=min(30, max(5, d.size // 3)), color=colors.get(name, "#999999"))
            med = float(np.median(d))
            ax.axvline(med, color="#1d2430", lw=0.8, ls="--")
            ax.set_title(f"{name}: n={d.size}, median {med:.2f} s", fontsize=8, loc="left")
        else:
            ax.set_title(f"{name}: no bouts", fontsize=8, loc="left")
        ax.set_xlabel("s", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.remove()
    fig.suptitle(title, x=0.01, ha="left", fontweight="bold", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ social
def social_timeline(events: pd.DataFrame, individuals: Sequence[str], duration_s: float, colors: Mapping[str, str],
                    title: str = "Social events") -> Any:
    """One row per ordered pair (actor -> partner) with its events coloured by kind."""
    from ethoscribe.analytics.social import EVENT_KINDS

    plt = style()
    pairs = [(a, b) for a in individuals for b in individuals if a != b]
    n = max(1, len(pairs))
    fig, ax = plt.subplots(figsize=(11, 0.42 * n + 1.4))
    for r, (a, b) in enumerate(pairs):
        e = events[(events["actor"] == a) & (events["partner"] == b)] if len(events) else events
        for kind, g in e.groupby("kind", sort=False) if len(e) else []:
            spans = list(zip(g["start_s"].to_numpy(float), (g["end_s"] - g["start_s"]).to_numpy(float)))
            ax.broken_barh(spans, (r - 0.35, 0.7), facecolors=colors.get(str(kind), "#333333"), linewidth=0)
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{a} \u2192 {b}" for a, b in pairs] or [""])
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, max(duration_s, 1e-6))
    ax.set_xlabel("time (s)")
    ax.set_title(title, loc="left")
    ax.legend(handles=_legend_patches(colors, list(EVENT_KINDS)), loc="upper center", ncol=4, fontsize=8,
              bbox_to_anchor=(0.5, -0.35 if n < 3 else -0.15))
    fig.tight_layout()
    return fig


def nearest_neighbour_plot(nearest: pd.DataFrame, individuals: Sequence[str], unit: str,
                           contact_distance: float | None = None, title: str = "Nearest-neighbour distance") -> Any:
    """Each animal's distance to its nearest neighbour over time (1 s median bins)."""
    plt = style()
    fig, ax = plt.subplots(figsize=(11, 2.6))
    cmap = [EXTRA_COLORS[i % len(EXTRA_COLORS)] for i in range(len(individuals))]
    for i, ind in enumerate(individuals):
        g = nearest[nearest["individual"] == ind]
        t = g["time_s"].to_numpy(float)
        d = g["distance"].to_numpy(float)
        if not t.size:
            continue
        bins = np.floor(t).astype(int)
        s = pd.Series(d).groupby(bins).median()
        ax.plot(s.index.to_numpy() + 0.5, s.to_numpy(), lw=1.0, color=cmap[i], label=ind)
    if contact_distance:
        ax.axhline(contact_distance, color="#f5b700", lw=0.8, ls="--", label="contact threshold (bodies)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"centre distance ({unit})")
    ax.set_title(title, loc="left")
    ax.legend(fontsize=8, ncol=min(6, len(individuals) + 1), loc="upper right")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ pose QC
def reprojection_error_plot(errors: pd.DataFrame, title: str = "Reprojection error",
                            orders: Mapping[str, Sequence[str]] | None = None) -> Any:
    """Per keypoint and per camera: median, inter-quartile range and 90th percentile of the error (px).

    ``errors`` has columns ``view, keypoint, reproj_error`` (finite values only are used).
    """
    plt = style()
    e = errors[np.isfinite(errors["reproj_error"].to_numpy(float))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 1.4]})
    for ax, col, what in ((axes[0], "keypoint", "per keypoint"), (axes[1], "view", "per camera")):
        names = list((orders or {}).get(col) or pd.unique(errors[col]))
        q = e.groupby(col)["reproj_error"].quantile([0.25, 0.5, 0.75, 0.9]).unstack() if len(e) else pd.DataFrame()
        for i, n in enumerate(names):
            if n not in q.index:
                continue
            q25, q50, q75, q90 = (float(q.loc[n, x]) for x in (0.25, 0.5, 0.75, 0.9))
            ax.plot([i, i], [q75, q90], color="#555555", lw=0.8)
            ax.bar(i, q75 - q25, bottom=q25, width=0.6, color="#9ecae1", edgecolor="#2b6cb0", linewidth=0.6)
            ax.plot([i - 0.3, i + 0.3], [q50, q50], color="#1d2430", lw=1.2)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45 if col == "keypoint" else 0, ha="right" if col == "keypoint" else "center", fontsize=7)
        ax.set_ylabel("px")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{title} {what}", loc="left")
    fig.text(0.01, 0.01, "bars: inter-quartile range, line: median, whisker: 90th percentile", fontsize=7, color="#5b6675")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def flags_over_time(flags: pd.DataFrame, fps: float, n_frames: int, n_labels_per_frame: int, bin_s: float | None = None,
                    title: str = "Flagged labels over time") -> Any:
    """Stacked flagged-label fractions per time bin, by reason (``flags``: frame, reason of flagged rows).

    A label with several reasons counts under its first (most severe) one.
    """
    plt = style()
    dur = n_frames / fps
    bin_s = bin_s or max(1.0 / fps, dur / 150)
    nb = max(1, int(np.ceil(dur / bin_s)))
    fig, ax = plt.subplots(figsize=(11, 2.8))
    first = flags["reason"].astype(str).str.split(";").str[0] if len(flags) else pd.Series([], dtype=object)
    b = np.minimum((flags["frame"].to_numpy(float) / fps / bin_s).astype(int), nb - 1) if len(flags) else np.zeros(0, int)
    per_bin = max(1.0, n_labels_per_frame * bin_s * fps)
    x = (np.arange(nb) + 0.5) * bin_s
    bottom = np.zeros(nb)
    for r, col in REASON_COLORS.items():
        m = (first == r).to_numpy()
        if not m.any():
            continue
        y = np.bincount(b[m], minlength=nb) / per_bin
        ax.fill_between(x, bottom, bottom + y, step="mid", color=col, label=r, linewidth=0)
        bottom = bottom + y
    ax.set_xlim(0, dur)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("fraction flagged")
    ax.set_title(title, loc="left")
    if len(flags):
        ax.legend(fontsize=8, ncol=4, loc="upper right")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ frames
def read_frames(video: str | os.PathLike[str], frames: Iterable[int], color: str = "grey") -> dict[int, NDArray[np.uint8]]:
    """Frames of a video by index (sorted, read with as few seeks as possible); missing frames are left out."""
    from ethoscribe.io.video import VideoReader

    want = sorted({int(f) for f in frames})
    out: dict[int, NDArray[np.uint8]] = {}
    if not want:
        return out
    with VideoReader(video, color=color) as v:  # type: ignore[arg-type]
        want = [f for f in want if 0 <= f < v.n_frames]
        i = 0
        while i < len(want):
            # read a short run in one go when the next wanted frames are close
            j = i
            while j + 1 < len(want) and want[j + 1] - want[j] <= 8 and want[j + 1] - want[i] < 64:
                j += 1
            block = v.read(want[i], want[j] + 1)
            for f in want[i:j + 1]:
                out[f] = block[f - want[i]]
            i = j + 1
    return out


def crop_box(points: NDArray[np.float64], shape: tuple[int, int], pad: float = 0.35, min_side: float = 80.0,
             aspect: float = 1.0) -> tuple[int, int, int, int]:
    """A box (x0, y0, x1, y1) around finite ``points`` (n, 2), padded, at least ``min_side``, clipped to the image."""
    h, w = shape
    p = np.asarray(points, float).reshape(-1, 2)
    p = p[np.isfinite(p).all(1)]
    if not len(p):
        return 0, 0, w, h
    lo, hi = p.min(0), p.max(0)
    c = (lo + hi) / 2
    side = max(float(max(hi - lo)) * (1 + 2 * pad), min_side)
    half = np.array([side * aspect, side]) / 2
    x0, y0 = c - half
    x1, y1 = c + half
    dx = max(0.0, -x0) - max(0.0, x1 - w)
    dy = max(0.0, -y0) - max(0.0, y1 - h)
    x0, x1, y0, y1 = x0 + dx, x1 + dx, y0 + dy, y1 + dy
    return int(max(0, np.floor(x0))), int(max(0, np.floor(y0))), int(min(w, np.ceil(x1))), int(min(h, np.ceil(y1)))


def pose_thumbnail(
    frame: NDArray[np.uint8],
    poses: Mapping[str, NDArray[np.float64]],
    box: tuple[int, int, int, int] | None = None,
    size: int = 180,
    focus: str | None = None,
    focus_color: str = "#ffffff",
    keypoint_colors: Sequence[str] | None = None,
    edges: Sequence[tuple[int, int]] = (),
    flagged: Mapping[str, NDArray[np.bool_]] | None = None,
    mark: tuple[float, float] | None = None,
    caption: str = "",
) -> Any:
    """A Pillow RGB image: ``frame`` cropped to ``box``, scaled to ``size`` px wide, with poses drawn.

    ``poses`` maps an animal to its (K, 2) keypoints in frame pixels (NaN:
    none). The ``focus`` animal is drawn in ``focus_color`` (or
    ``keypoint_colors`` per keypoint), others in grey; ``edges`` join
    keypoints; ``flagged`` rings labels in red; ``mark`` puts a yellow square
    on one point; ``caption`` is written on a dark band at the bottom.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw

    img = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=2)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box or (0, 0, w, h)
    x1, y1 = max(x1, x0 + 2), max(y1, y0 + 2)
    crop = PILImage.fromarray(np.ascontiguousarray(img[y0:y1, x0:x1]))
    s = size / max(1, (x1 - x0))
    out = crop.resize((size, max(2, int(round((y1 - y0) * s)))), PILImage.BILINEAR)
    d = ImageDraw.Draw(out)
    r = max(2.0, size / 70)
    for ind, pts in poses.items():
        p = (np.asarray(pts, float) - [x0, y0]) * s
        is_focus = focus is None or ind == focus
        base = hex_to_rgb(focus_color) if is_focus else (60, 60, 60)
        for a, b in edges:
            if a < len(p) and b < len(p) and np.isfinite(p[[a, b]]).all():
                d.line([tuple(p[a]), tuple(p[b])], fill=base if is_focus else (60, 60, 60), width=1)
        for k, (x, y) in enumerate(p):
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            col = hex_to_rgb(keypoint_colors[k]) if (is_focus and keypoint_colors is not None and k < len(keypoint_colors)) else base
            rr = r if is_focus else r * 0.7
            d.ellipse([x - rr, y - rr, x + rr, y + rr], fill=col, outline=(0, 0, 0))
            if flagged is not None and ind in flagged and k < len(flagged[ind]) and flagged[ind][k]:
                d.ellipse([x - 2.4 * rr, y - 2.4 * rr, x + 2.4 * rr, y + 2.4 * rr], outline=FLAG_RING, width=2)
    if mark is not None and np.isfinite(mark).all():
        mx, my = (np.asarray(mark, float) - [x0, y0]) * s
        q = 3.2 * r
        d.rectangle([mx - q, my - q, mx + q, my + q], outline=WORST_MARK, width=2)
    if caption:
        band = 14
        d.rectangle([0, out.height - band, out.width, out.height], fill=(20, 24, 32))
        d.text((4, out.height - band + 1), caption[:60], fill=(255, 255, 255))
    return out


def image_strip(images: Sequence[Any], gap: int = 4, background: tuple[int, int, int] = (255, 255, 255)) -> Any:
    """Pillow images side by side (top-aligned) on one canvas."""
    from PIL import Image as PILImage

    if not images:
        return PILImage.new("RGB", (1, 1), background)
    w = sum(im.width for im in images) + gap * (len(images) - 1)
    h = max(im.height for im in images)
    canvas = PILImage.new("RGB", (w, h), background)
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width + gap
    return canvas


def encode_image(image: Any, fmt: str = "PNG", **kwargs: Any) -> bytes:
    """Encode a Pillow image (``PNG`` or ``JPEG``) to bytes."""
    buf = io.BytesIO()
    im = image.convert("RGB") if fmt.upper() == "JPEG" else image
    im.save(buf, format=fmt, **({"quality": 85, "optimize": True} if fmt.upper() == "JPEG" else {"optimize": False}) | kwargs)
    return buf.getvalue()


def animated_gif(frames: Sequence[Any], fps: float = 10.0) -> bytes:
    """A looping animated GIF of Pillow images (same size), ``fps`` frames per second."""
    if not frames:
        raise ValueError("no frames for the clip")
    buf = io.BytesIO()
    pal = [f.convert("P", palette=1, colors=128) for f in frames]  # 1 = ADAPTIVE
    pal[0].save(buf, format="GIF", save_all=True, append_images=pal[1:], loop=0, duration=int(round(1000 / fps)),
                disposal=1, optimize=False)
    return buf.getvalue()
