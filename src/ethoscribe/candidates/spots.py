"""Marker spot detection: bright, roughly Gaussian spots in marker-channel video.

Quantum-dot or fluorescent markers image as small bright spots (sigma about
1-2 px, elongated by motion blur, sometimes two touching) on a dark, noisy
background, plus reflections that are real bright spots too. The detector
finds them per frame and returns a candidates table
(:mod:`ethoscribe.candidates.table`): sub-pixel centre, peak intensity above
the local background and area above half maximum.

Method, per frame (vectorised over pixels and spots; a handful of OpenCV
calls per frame, no Python loop per spot or pixel):

1. **Background and noise.** The 3x3 box sum ``S`` of the frame is a matched
   filter for spots of sigma 1-2 px. On a regular subsample of ``S`` (about
   8k pixels) the background is the median of blocks of about
   ``background_block`` pixels (interpolated bilinearly in between, so a glow
   or vignetting does not raise the threshold elsewhere), and the noise is
   the MAD of the residuals (std = 1.4826 MAD), from a histogram with linear
   interpolation inside bins (exact enough on integer data where a plain MAD
   would be 0 or 1). The noise has a floor (``noise_floor``) so clean or
   synthetic video does not make every ripple a spot.
2. **Peaks.** A pixel is a peak when it is the brightest raw pixel within
   ``min_distance`` (a dilation) *and* its box sum ``S`` exceeds the background
   by ``threshold`` noise standard deviations of ``S``. Raw pixels (not the
   smoothed image) decide the maximum because smoothing merges touching
   spots; ``S`` decides significance because it has 3x the signal-to-noise
   ratio of one pixel. Ties on a plateau keep the peak with the largest ``S``.
3. **Measurement** in a (2 ``radius`` + 1)^2 window around each peak: local
   background = lower quartile of the window's border pixels; intensity =
   brightest pixel of the central 3x3 minus that background; area = pixels
   above half of it. Peaks with ``area < min_area`` (single hot pixels,
   area 1) or ``intensity < min_peak`` are dropped.
4. **Merging.** Two peaks closer than ``merge_distance`` are one spot unless
   the image dips between them by at least ``min_dip`` noise standard
   deviations of ``S`` (the weaker is dropped otherwise): motion-blurred
   streaks have several noisy maxima but no dip; touching spots have one.
5. **Sub-pixel centre.** Isolated spots: intensity-weighted centroid of the
   window, weights = (pixel - background - ``centroid_cut`` x peak) clipped at
   0, with the window re-centred once on the first estimate. Spots with another
   detection within 2 ``radius`` + 1 px, or whose centroid is pulled more than
   0.5 px off a round core (an undetected neighbour's light): Gaussian fit to
   the 3x3 log intensities (a 2D log-parabola). Blobs that spill out of the
   window (long streaks, big spots) are measured in 2x and 4x larger windows.
   The measurements behind this choice are in the comment above
   :class:`SpotParams`.
6. **Deblending** (``deblend``, ``split_pairs``). Two markers 2-4 px apart
   often make no second maximum. (a) A "shoulder" on a spot's flank is found
   in the residual after subtracting the spot's fitted Gaussian. (b) A blob
   whose second moments are those of two spots 1-2.5 sigma apart is split
   in two along its major axis if two Gaussians fit its pixels better than a
   motion-blur streak with the same moments (amplitude least squares over a
   few separations and lengths) and far better than one elongated Gaussian
   (a likelihood-ratio test against the pixel noise), unless most spots of
   the chunk are elongated (then it is taken as blur).

Examples
--------
>>> import numpy as np
>>> yy, xx = np.mgrid[:64, :80]
>>> frame = 10 + 120 * np.exp(-((xx - 30.3) ** 2 + (yy - 20.6) ** 2) / (2 * 1.5**2))
>>> frames = np.round(frame).astype(np.uint8)[None]
>>> spots = detect_spots_in_frames(frames)
>>> spots[["frame", "x", "y"]].round(1).to_dict("records")
[{'frame': 0, 'x': 30.3, 'y': 20.6}]
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ethoscribe.candidates.table import COLUMNS, empty_candidates
from ethoscribe.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ethoscribe.io.video import VideoReader
    from ethoscribe.session import Session

# Centre estimators measured on rendered spots (pixel-integrated Gaussians,
# sigma 1.2-2.0 px, peak 40-200 grey levels over 12, noise std 2 and 4, 1/4 of
# the spots motion-blurred by 0-6 px, 1/5 of them with a touching neighbour
# 4-5.5 px away, H.264 crf 12 round trip, 40 frames of 320x256 with ~24 spots;
# median error in px, noise 2 / noise 4). First on the early prototype (one
# background level per frame, fixed 7x7 window), to choose the estimators:
#
#   estimator                                    isolated     blurred      touching
#   centroid 7x7, global background, no cut      0.078/0.089  0.095/0.124  0.548/0.510
#   centroid 7x7, cut 0.2 x peak                 0.031/0.046  0.044/0.060  0.631/0.612
#   centroid 5x5, no cut                         0.164/0.168  0.192/0.190  0.278/0.278
#   Gaussian-weighted centroid (sigma 1.5)       0.072/0.079  0.093/0.108  0.324/0.296
#   log-parabola, raw 3x3 (x and y separately)   0.068/0.117  0.138/0.211  0.115/0.141
#   log-parabola on the 3x3 box sum              0.036/0.053  0.067/0.089  0.176/0.186
#   2D quadratic fit to 3x3 log (Gaussian fit)   0.055/0.094  0.091/0.152  0.105/0.123
#
# then on this module as it is (split_pairs off; recall within 1.5 px last):
#
#   centre="centroid" (cut 0.2, re-centred)      0.034/0.047  0.042/0.062  0.283/0.264  recall 0.830/0.820
#   centre="gaussian" (3x3 log-quadratic fit)    0.056/0.092  0.091/0.155  0.125/0.144  recall 0.975/0.957
#   centre="auto" (default)                      0.034/0.047  0.042/0.063  0.136/0.154  recall 0.971/0.951
#
# The cut centroid is best on isolated and blurred spots (and stays unbiased
# on long blur streaks, where a 3x3 fit follows the noisiest maximum), the
# Gaussian fit is best next to another spot (a centroid there is pulled so far
# that touching spots are lost), so "auto" uses each where it is best. See
# benchmarks/spots.py for the end-to-end figures on the synthetic rig.
CentreMethod = Literal["auto", "centroid", "gaussian"]


@dataclass(frozen=True)
class SpotParams:
    """Parameters of the spot detector (defaults suit spots of sigma ~1-2.5 px in 8-bit video).

    Parameters
    ----------
    threshold
        Detection threshold: how many noise standard deviations of the 3x3 box
        sum a peak must stand above the frame's background. 6 gives well under
        one false spot per 640x512 frame of Gaussian noise and finds spots
        whose peak is ~3 noise std above the background.
    min_peak
        Least peak height above the local background, in grey levels; guards
        clean video whose noise estimate is ~0.
    min_distance
        Peaks closer than this (in pixels, Chebyshev) are one peak.
    radius
        Half-size of the measurement window ((2 radius + 1)^2 pixels). Raise it
        for spots of sigma above ~2.5 px (about 1.5 sigma + 1).
    min_area
        Least number of pixels above half maximum; a single hot pixel has 1,
        the smallest real spot (sigma ~1) at least 3.
    min_dip
        Two peaks within ``merge_distance`` stay separate only if the 3x3 box
        sum dips between them by this many noise standard deviations of the box sum.
    merge_distance
        Pixels; peaks closer than this are tested for a dip. ``None``: 4 x radius.
    noise_floor
        Least per-pixel noise standard deviation assumed, in grey levels.
    background_block
        Side in pixels of the blocks whose medians, interpolated, make the
        background the threshold is relative to (uneven illumination, glow
        around the animal); at least 6 sample steps. ``None``: one
        background level per frame.
    sample_step
        Step of the pixel subsample used for background and noise; ``None``
        picks one giving ~8k samples.
    centre
        ``"centroid"``, ``"gaussian"`` (3x3 log-quadratic fit) or ``"auto"``
        (centroid for isolated spots, Gaussian fit next to another spot).
    centroid_cut
        Fraction of the peak subtracted from the centroid weights (cuts the
        noise of the window's dark pixels out of the centroid).
    deblend
        Look for spots hidden in the flank of a brighter one (a "shoulder",
        no maximum of its own; two markers a few pixels apart): the residual
        after subtracting each spot's fitted Gaussian is searched for maxima.
    shoulder_fraction
        Least peak of such a hidden spot, as a fraction of its neighbour's.
    split_pairs
        Report a blob elongated like two unresolved spots (1 to 2.5 spot
        sigmas apart: no dip between them) as two spots when two Gaussians
        fit it better than a motion-blur streak does and much better than
        one elongated spot (only in ``"auto"`` centre mode). Some short streaks still pass for pairs; turn it off
        for video with frequent, isolated blur streaks and few touching
        markers.

    Examples
    --------
    >>> SpotParams(threshold=8, radius=4).radius
    4
    """

    threshold: float = 6.0
    min_peak: float = 4.0
    min_distance: int = 2
    radius: int = 3
    min_area: int = 3
    min_dip: float = 3.0
    merge_distance: float | None = None
    noise_floor: float = 0.5
    background_block: int | None = 32
    sample_step: int | None = None
    centre: CentreMethod = "auto"
    centroid_cut: float = 0.2
    deblend: bool = True
    shoulder_fraction: float = 0.3
    split_pairs: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.threshold > 0, "threshold must be > 0"),
            (self.min_peak >= 0, "min_peak must be >= 0"),
            (int(self.min_distance) == self.min_distance and self.min_distance >= 1, "min_distance must be an integer >= 1"),
            (int(self.radius) == self.radius and self.radius >= 1, "radius must be an integer >= 1"),
            (self.min_area >= 1, "min_area must be >= 1"),
            (self.min_dip >= 0, "min_dip must be >= 0"),
            (self.merge_distance is None or self.merge_distance >= 0, "merge_distance must be >= 0"),
            (self.noise_floor > 0, "noise_floor must be > 0"),
            (self.sample_step is None or self.sample_step >= 1, "sample_step must be >= 1"),
            (self.background_block is None or self.background_block >= 1, "background_block must be >= 1 or None"),
            (self.centre in ("auto", "centroid", "gaussian"), "centre must be 'auto', 'centroid' or 'gaussian'"),
            (0 <= self.centroid_cut < 1, "centroid_cut must be in [0, 1)"),
            (0 <= self.shoulder_fraction <= 1, "shoulder_fraction must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"SpotParams: {message}")


# ---------------------------------------------------------------- statistics
def _hist_median(hist: NDArray[np.int64], folded: bool = False) -> NDArray[np.float64]:
    """Median of integer data per row of ``hist``, interpolated inside the bin.

    Value ``v`` is taken as spread uniformly over ``[v - 0.5, v + 0.5]``; with
    ``folded`` (absolute deviations) bin 0 covers ``[0, 0.5]`` only.
    """
    cum = np.cumsum(hist, axis=1)
    half = cum[:, -1] / 2.0
    idx = np.argmax(cum >= half[:, None], axis=1)
    rows = np.arange(len(hist))
    below = np.where(idx > 0, cum[rows, np.maximum(idx - 1, 0)], 0)
    frac = (half - below) / np.maximum(hist[rows, idx], 1)
    if folded:
        return np.where(idx == 0, 0.5 * frac, idx - 0.5 + frac)
    return idx - 0.5 + frac


def frame_background(sample: NDArray[np.integer]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-row median and noise std (1.4826 MAD) of non-negative integer samples ``(T, n)``.

    Robust to a few bright spots; interpolated inside histogram bins, so a
    noise std below one grey level is still estimated.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = np.round(rng.normal(50, 2, (1, 20000))).astype(np.int64)
    >>> med, std = frame_background(s)
    >>> round(float(med[0])), round(float(std[0]), 1)
    (50, 2.0)
    """
    sample = np.asarray(sample)
    if sample.ndim != 2 or sample.shape[1] == 0:
        raise ValueError("sample must be a non-empty (T, n) array")
    bins = int(sample.max(initial=0)) + 1
    hist = np.zeros((len(sample), bins), np.int64)
    for i, row in enumerate(sample):  # one bincount per frame: no wide temporary arrays
        counts = np.bincount(row)
        hist[i, : len(counts)] = counts
    med = _hist_median(hist)
    # histogram of |value - round(median)| straight from the value histogram
    centre = np.clip(np.round(med).astype(np.int64), 0, bins - 1)
    d = np.arange(bins)
    rows = np.arange(len(sample))[:, None]
    up = centre[:, None] + d
    down = centre[:, None] - d
    dev = np.where(up < bins, hist[rows, np.minimum(up, bins - 1)], 0)
    dev[:, 1:] += np.where(down[:, 1:] >= 0, hist[rows, np.maximum(down[:, 1:], 0)], 0)
    mad = _hist_median(dev, folded=True)
    return med, 1.4826 * mad


def _background_model(
    box: NDArray[np.uint16], step: int, block_px: int | None
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """Background of the 3x3 box sums ``box`` (T, H, W) and their noise std, per frame.

    Returns a (T, by, bx) map of block medians (blocks of ``cell`` pixels; a
    single block when ``block_px`` is None) over a subsample of step ``step``,
    the noise std (T,) from the MAD of the residuals to it, and ``cell``.
    """
    sub = box[:, 1 : box.shape[1] - 1 : step, 1 : box.shape[2] - 1 : step]
    n, rows, cols = sub.shape
    if block_px is None:
        b_r, b_c = rows, cols
    else:
        b_r = b_c = max(6, int(round(block_px / step)))  # at least 36 samples per block median
    by, bx = -(-rows // b_r), -(-cols // b_c)
    padded = np.pad(sub, ((0, 0), (0, by * b_r - rows), (0, bx * b_c - cols)), mode="edge")
    grid = padded.reshape(n, by, b_r, bx, b_c)
    blocks = grid.transpose(0, 1, 3, 2, 4).reshape(n, by, bx, b_r * b_c)
    mid = blocks.shape[-1] // 2
    bg = np.partition(blocks, mid, axis=-1)[..., mid].astype(np.float64)  # (np.median is 15x slower here)
    resid = grid.astype(np.int32) - bg.astype(np.int32)[:, :, None, :, None]
    low = int(resid.min(initial=0))
    med, std = frame_background((resid - low).reshape(n, -1))
    bg += (med + low)[:, None, None]  # the residuals' median: ~0, but keeps the global case exact
    return bg, std, b_r * step


def _box3_at(frames: NDArray[np.uint8], t: NDArray[np.int64], y: NDArray[np.int64], x: NDArray[np.int64]) -> NDArray[np.int64]:
    """3x3 box sums at given (t, y, x) with replicated borders (any matching shapes)."""
    _, h, w = frames.shape
    out = np.zeros(np.broadcast(t, y, x).shape, np.int64)
    for dy in (-1, 0, 1):
        yy = np.clip(y + dy, 0, h - 1)
        for dx in (-1, 0, 1):
            out += frames[t, yy, np.clip(x + dx, 0, w - 1)]
    return out


# --------------------------------------------------------------------- peaks
class _Workspace:
    """Per-thread frame-sized buffers (allocating them per frame costs more than the filtering)."""

    def __init__(self, h: int, w: int) -> None:
        self.shape = (h, w)
        self.box = np.empty((0, h, w), np.uint16)
        self.dil = np.empty((h, w), np.uint8)
        self.mask = np.empty((h, w), np.uint8)
        self.mask2 = np.empty((h, w), np.uint8)


_local = threading.local()


def _workspace(h: int, w: int) -> _Workspace:
    ws = getattr(_local, "ws", None)
    if ws is None or ws.shape != (h, w):
        ws = _local.ws = _Workspace(h, w)
    return ws


def _box_sums(frames: NDArray[np.uint8]) -> NDArray[np.uint16]:
    """3x3 box sums of every frame (replicated borders), in a per-thread buffer reused between calls."""
    import cv2

    n, h, w = frames.shape
    ws = _workspace(h, w)
    if len(ws.box) < n:
        ws.box = np.empty((n, h, w), np.uint16)
    box = ws.box[:n]
    for i in range(n):
        cv2.boxFilter(frames[i], cv2.CV_16U, (3, 3), dst=box[i], normalize=False, borderType=cv2.BORDER_REPLICATE)
    return box


def _find_peaks(
    frames: NDArray[np.uint8], box: NDArray[np.uint16], floor: NDArray[np.float64] | NDArray[np.uint16], min_distance: int
) -> tuple[NDArray[np.int64], ...]:
    """(t, y, x) of raw-pixel local maxima whose 3x3 box sum (``box``) exceeds ``floor``.

    ``floor`` is one value per frame (T,) or one (H, W) uint16 map for all frames.
    """
    import cv2

    n, h, w = frames.shape
    ws = _workspace(h, w)
    kernel = np.ones((2 * min_distance + 1, 2 * min_distance + 1), np.uint8)
    per_frame = floor.ndim == 1
    # S > floor  <=>  S > floor(floor) for integer S
    floor16 = np.clip(np.floor(floor), 0, 65535) if per_frame else floor
    ts, pts = [], []
    for i in range(n):
        frame = frames[i]
        cv2.compare(box[i], float(floor16[i]) if per_frame else floor16, cv2.CMP_GT, dst=ws.mask2)
        cv2.dilate(frame, kernel, dst=ws.dil)
        cv2.compare(frame, ws.dil, cv2.CMP_EQ, dst=ws.mask)
        cv2.bitwise_and(ws.mask, ws.mask2, dst=ws.mask)
        found = cv2.findNonZero(ws.mask)
        if found is not None:
            pts.append(found.reshape(-1, 2))
            ts.append(np.full(len(found), i, np.int64))
    if not pts:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    xy = np.concatenate(pts).astype(np.int64)
    return np.concatenate(ts), xy[:, 1].copy(), xy[:, 0].copy()


def _interp_map(grid: NDArray[np.float64], cell: int, t, y, x):  # type: ignore[no-untyped-def]
    """Bilinear interpolation of per-frame block maps (T, by, bx) at pixels (t, y, x); block centres as cv2.resize puts them."""
    _, by, bx = grid.shape
    fy = np.clip((y + 0.5) / cell - 0.5, 0, by - 1)
    fx = np.clip((x + 0.5) / cell - 0.5, 0, bx - 1)
    y0 = np.floor(fy).astype(np.int64)
    x0 = np.floor(fx).astype(np.int64)
    y1 = np.minimum(y0 + 1, by - 1)
    x1 = np.minimum(x0 + 1, bx - 1)
    wy = fy - y0
    wx = fx - x0
    top = grid[t, y0, x0] * (1 - wx) + grid[t, y0, x1] * wx
    bottom = grid[t, y1, x0] * (1 - wx) + grid[t, y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def _drop_ties(t, y, x, s, h, w, min_distance):  # type: ignore[no-untyped-def]
    """Mask keeping one peak per plateau: within ``min_distance`` the largest box sum, then the first in raster order."""
    key = (t * h + y) * w + x
    order = np.argsort(key)
    key_sorted = key[order]
    s_sorted = s[order]
    drop = np.zeros(len(key), bool)
    if len(key) < 2:
        return ~drop
    for dy in range(-min_distance, min_distance + 1):
        for dx in range(-min_distance, min_distance + 1):
            if dy == 0 and dx == 0:
                continue
            inside = (y + dy >= 0) & (y + dy < h) & (x + dx >= 0) & (x + dx < w)
            other = key + dy * w + dx
            pos = np.minimum(np.searchsorted(key_sorted, other), len(key) - 1)
            hit = inside & (key_sorted[pos] == other)
            s_other = s_sorted[pos]
            earlier = dy < 0 or (dy == 0 and dx < 0)
            drop |= hit & ((s_other > s) | ((s_other == s) & earlier))
    return ~drop


def _close_pairs(t, xf, yf, max_dist):  # type: ignore[no-untyped-def]
    """Index pairs (i, j), i < j, of points in the same frame closer than ``max_dist``."""
    from scipy.spatial import cKDTree

    if len(t) < 2 or max_dist <= 0:
        return np.empty((0, 2), np.int64)
    # frames far apart in a third coordinate: pairs never cross frames
    pts = np.stack([xf, yf, t.astype(np.float64) * (4.0 * max_dist + 1e5)], axis=1)
    return cKDTree(pts).query_pairs(max_dist, output_type="ndarray").astype(np.int64)


# --------------------------------------------------------------- measurement
def _windows(frames, t, yc, xc, r):  # type: ignore[no-untyped-def]
    _, h, w = frames.shape
    off = np.arange(-r, r + 1)
    yy = np.clip(yc[:, None, None] + off[None, :, None], 0, h - 1)
    xx = np.clip(xc[:, None, None] + off[None, None, :], 0, w - 1)
    return frames[t[:, None, None], yy, xx].astype(np.float32)


def _ring_background(win: NDArray[np.float32]) -> NDArray[np.float32]:
    ring = np.concatenate([win[:, 0, :], win[:, -1, :], win[:, 1:-1, 0], win[:, 1:-1, -1]], axis=1)
    k = ring.shape[1] // 4
    return np.partition(ring, k, axis=1)[:, k]


def _measure(frames, t, y, x, r):  # type: ignore[no-untyped-def]
    """Local background, peak above it, area above half peak, and whether that area reaches the window's edge."""
    if not len(t):
        z = np.empty(0, np.float32)
        return z, z.copy(), np.empty(0, np.int64), np.empty(0, bool)
    win = _windows(frames, t, y, x, r)
    bg = _ring_background(win)
    v = win - bg[:, None, None]
    peak = v[:, r - 1 : r + 2, r - 1 : r + 2].reshape(len(t), 9).max(axis=1)
    above = v > 0.5 * peak[:, None, None]
    area = above.sum(axis=(1, 2)).astype(np.int64)
    spill = above[:, 0, :].any(axis=1) | above[:, -1, :].any(axis=1) | above[:, :, 0].any(axis=1) | above[:, :, -1].any(axis=1)
    return bg, peak, area, spill


# Shape rules (dimensionless: pixels for _DISAGREE, ratios otherwise).
_DISAGREE = 0.5  # px: a centroid this far from the 3x3 Gaussian fit has been pulled by something
_ROUND = 0.5  # roundness (ratio of principal curvatures) above which a 3x3 core is a round spot, not a streak
_PARENT_ROUND = 0.5  # only round spots are subtracted to look for shoulders
_SPLIT_MIN = 1.0  # an elongated blob can be two spots d apart, d from 1.0 ...
_SPLIT_MAX = 2.5  # ... to 2.5 spot sigmas (farther pairs show a dip and two peaks)
_SPLIT_MIN_PX = 1.5  # and at least this many pixels
_SPLIT_SCALES = (0.85, 1.0, 1.15)  # pair separations / streak lengths tried around the moments' estimate
_BLUR_REGIME = 0.8  # median d / sigma of all spots above which a chunk is taken as motion-blurred
_SATURATED = 254  # grey level from which a pixel is taken as clipped
_SPLIT_EVIDENCE = 100.0  # least drop of the residual sum of squares, in background noise variances, for two spots
# over one ("10 sigma": the noise of bright pixels is larger, shot noise, and models are approximate)


def _centroid(frames, t, yc, xc, bg, peak, r, cut, iterations=2):  # type: ignore[no-untyped-def]
    """Cut, background-subtracted centroid; the window is re-centred on the estimate between iterations."""
    off = np.arange(-r, r + 1, dtype=np.float32)
    x = xc.astype(np.float64)
    y = yc.astype(np.float64)
    cy, cx = yc, xc
    for it in range(iterations):
        win = _windows(frames, t, cy, cx, r)
        wgt = np.maximum(win - (bg + cut * peak)[:, None, None], 0)
        tot = wgt.sum(axis=(1, 2))
        ok = tot > 0
        safe = np.where(ok, tot, 1)
        dx = (wgt.sum(axis=1) @ off) / safe
        dy = (wgt.sum(axis=2) @ off) / safe
        x = np.where(ok, cx + dx, x)
        y = np.where(ok, cy + dy, y)
        if it + 1 < iterations:
            ny, nx = np.round(y).astype(np.int64), np.round(x).astype(np.int64)
            # never wander off the peak by more than the window (a neighbour's light)
            cy = np.clip(ny, yc - r, yc + r)
            cx = np.clip(nx, xc - r, xc + r)
    return x, y


_QUAD_DESIGN = None


def _quad_design() -> NDArray[np.float64]:
    global _QUAD_DESIGN
    if _QUAD_DESIGN is None:
        gy, gx = np.mgrid[-1:2, -1:2]
        gx, gy = gx.ravel().astype(float), gy.ravel().astype(float)
        design = np.stack([np.ones(9), gx, gy, gx**2, gy**2, gx * gy], axis=1)
        _QUAD_DESIGN = np.linalg.pinv(design)  # (6, 9)
    return _QUAD_DESIGN


def _quad_fit(values: NDArray) -> tuple[NDArray[np.float64], ...]:
    """Gaussian fit to (n, 9) background-subtracted 3x3 values (row-major, centre = index 4).

    Least-squares quadratic in the log intensities. Returns the offsets of the
    maximum from the centre pixel (dx, dy, clipped to +-1), whether the fit is a
    proper maximum, its roundness (ratio of the principal curvatures: 1 round,
    ~0 along a streak) and the six coefficients (c0, bx, by, axx, ayy, axy).
    """
    logs = np.log(np.maximum(values, 0.5)).astype(np.float64)
    coef = _quad_design() @ logs.T
    _, bx, by, axx, ayy, axy = coef
    det = 4 * axx * ayy - axy**2
    ok = (axx < 0) & (ayy < 0) & (det > 0)
    safe = np.where(ok, det, 1.0)
    dx = np.clip(np.where(ok, (-2 * ayy * bx + axy * by) / safe, 0.0), -1, 1)
    dy = np.clip(np.where(ok, (-2 * axx * by + axy * bx) / safe, 0.0), -1, 1)
    mean = -(axx + ayy)
    spread = np.sqrt((axx - ayy) ** 2 + axy**2)
    roundness = np.where(ok, (mean - spread) / np.maximum(mean + spread, 1e-12), 0.0)
    return dx, dy, ok, roundness, coef


def _gaussian_fit(frames, t, yc, xc, bg):  # type: ignore[no-untyped-def]
    """Gaussian fit to the log of the background-subtracted 3x3 around each peak: x, y, roundness, fit ok, coefficients."""
    win = _windows(frames, t, yc, xc, 1).reshape(len(t), 9) - bg[:, None]
    dx, dy, ok, roundness, coef = _quad_fit(win)
    return xc + dx, yc + dy, roundness, ok, coef


def _shoulders(frames, t, y, x, bg, peak, coef, usable, sig_box, p):  # type: ignore[no-untyped-def]
    """Spots hidden in the flank of a detected one (no maximum of their own): residual maxima after
    subtracting each detection's fitted Gaussian.

    A residual maximum becomes a spot when its 3x3 sum passes the detection
    threshold, it is at least ``shoulder_fraction`` of the parent's peak, it
    lies 2+ px from the parent's centre, and its own fit is a round maximum
    (the ends of a motion-blur streak leave elongated residuals).
    Returns the new spots' t, x, y, peak and area.
    """
    idx = np.flatnonzero(usable)
    if not len(idx):
        return _no_spots()
    rr = 2 * p.radius
    off = np.arange(-rr, rr + 1, dtype=np.float64)
    tt, yc, xc = t[idx], y[idx], x[idx]
    v = _windows(frames, tt, yc, xc, rr) - bg[idx, None, None].astype(np.float32)
    c0, bx, by, axx, ayy, axy = (c[idx][:, None, None].astype(np.float32) for c in coef)
    off32 = off.astype(np.float32)
    dy_, dx_ = off32[None, :, None], off32[None, None, :]
    q = c0 + bx * dx_ + by * dy_ + axx * dx_**2 + ayy * dy_**2 + axy * dx_ * dy_
    res = v - np.exp(np.clip(q, -30.0, 8.0))
    # candidate pixels: residual maxima (3x3) away from the parent's core, with a full 3x3 inside the window
    k = 2 * rr + 1
    inner = res[:, 1:-1, 1:-1]
    local = inner.copy()
    for a in range(3):
        for b in range(3):
            if a != 1 or b != 1:
                np.maximum(local, res[:, a : a + k - 2, b : b + k - 2], out=local)
    core = ((dx_**2 + dy_**2) < 4.0)[:, 1:-1, 1:-1]
    score = np.where((inner >= local) & ~core & (inner > 0), inner, -np.inf)
    flat = score.reshape(len(idx), -1)
    best = np.argmax(flat, axis=1)
    by_, bx_ = np.divmod(best, k - 2)
    by_ += 1
    bx_ += 1
    rows = np.arange(len(idx))
    top = flat[rows, best]
    box = sum(res[rows, by_ + a, bx_ + b] for a in (-1, 0, 1) for b in (-1, 0, 1))
    strong = (
        np.isfinite(top)
        & (box > p.threshold * sig_box[tt])
        & (top >= np.maximum(p.min_peak, p.shoulder_fraction * peak[idx]))
    )
    if not strong.any():
        return _no_spots()
    rows, by_, bx_ = rows[strong], by_[strong], bx_[strong]
    patch = np.stack([res[rows, by_ + a, bx_ + b] for a in (-1, 0, 1) for b in (-1, 0, 1)], axis=1)
    dx, dy, ok, roundness, _ = _quad_fit(patch)
    good = ok & (roundness > _ROUND)
    rows, by_, bx_, dx, dy = rows[good], by_[good], bx_[good], dx[good], dy[good]
    nt = tt[rows]
    nx = xc[rows] + off[bx_] + dx
    ny = yc[rows] + off[by_] + dy
    npeak = res[rows, by_, bx_]
    narea = (res[rows] > 0.5 * npeak[:, None, None]).sum(axis=(1, 2)).astype(np.int64)
    return {"t": nt, "x": nx, "y": ny, "peak": npeak.astype(np.float64), "area": narea}


def _erf(z: NDArray[np.float64]) -> NDArray[np.float64]:
    from scipy.special import erf

    return erf(z)


def _two_term_fit(data, mask, b1, b2):  # type: ignore[no-untyped-def]
    """Least-squares amplitudes of two basis images per row (masked pixels ignored): residual sum of squares, (n, 2) amplitudes."""
    m = mask.astype(np.float64)
    g11 = (m * b1 * b1).sum(axis=(1, 2))
    g12 = (m * b1 * b2).sum(axis=(1, 2))
    g22 = (m * b2 * b2).sum(axis=(1, 2))
    r1 = (m * b1 * data).sum(axis=(1, 2))
    r2 = (m * b2 * data).sum(axis=(1, 2))
    det = g11 * g22 - g12**2
    two = np.abs(det) > 1e-12 * np.maximum(g11 * g22, 1e-300)
    safe = np.where(two, det, 1.0)
    # a degenerate second basis (all zero): one-term fit
    a1 = np.where(two, (g22 * r1 - g12 * r2) / safe, r1 / np.maximum(g11, 1e-300))
    a2 = np.where(two, (g11 * r2 - g12 * r1) / safe, 0.0)
    resid = data - a1[:, None, None] * b1 - a2[:, None, None] * b2
    return (m * resid**2).sum(axis=(1, 2)), np.stack([a1, a2], axis=1)


def _split_pair(frames, t, x, y, bg, noise, r, nb_idx, nb_x, nb_y):  # type: ignore[no-untyped-def]
    """Test blobs for being two unresolved spots, and place both.

    Second moments of the window around (x, y) (weights: pixel - background -
    0.1 peak, clipped at 0; pixels nearer another detection, ``nb_x, nb_y``
    of blob ``nb_idx``, are left out). With minor-axis std ``s`` the spot's
    own sigma is about 1.27 s (the cut narrows it); the major axis adds
    ``d^2 / 4`` for two equal spots ``d`` apart. Blobs with ``d`` from
    ``_SPLIT_MIN`` to ``_SPLIT_MAX`` sigma (farther pairs have a dip and were
    found as two peaks) are split into two spots ``d`` apart along the major
    axis if two Gaussians there fit the pixels better than a motion-blur
    streak of the same moments (length ``L = 1.73 d``) and better than one
    elongated Gaussian by ``_SPLIT_EVIDENCE`` noise variances (``noise``:
    per-pixel noise std of each blob's frame).
    Returns ok, d / sigma and, per part, x, y, intensity and area.
    """
    yc = np.round(y).astype(np.int64)
    xc = np.round(x).astype(np.int64)
    raw = _windows(frames, t, yc, xc, r)
    win = raw - bg[:, None, None]
    off = np.arange(-r, r + 1, dtype=np.float64)
    keep = raw < _SATURATED  # clipped pixels fit no model
    if len(nb_idx):
        px = xc[nb_idx, None, None] + off[None, None, :]
        py = yc[nb_idx, None, None] + off[None, :, None]
        own = (px - x[nb_idx, None, None]) ** 2 + (py - y[nb_idx, None, None]) ** 2
        other = (px - nb_x[:, None, None]) ** 2 + (py - nb_y[:, None, None]) ** 2
        mine = np.ones(win.shape, bool)
        np.logical_and.at(mine, nb_idx, own <= other)
        win = np.where(mine, win, 0.0)
        keep &= mine
    peak = win.max(axis=(1, 2))
    wgt = np.maximum(win - 0.1 * peak[:, None, None], 0)
    tot = np.maximum(wgt.sum(axis=(1, 2)), 1e-9)
    mx = (wgt.sum(axis=1) @ off) / tot
    my = (wgt.sum(axis=2) @ off) / tot
    dx = off[None, None, :] - mx[:, None, None]
    dy = off[None, :, None] - my[:, None, None]
    cxx = (wgt * dx * dx).sum(axis=(1, 2)) / tot
    cyy = (wgt * dy * dy).sum(axis=(1, 2)) / tot
    cxy = (wgt * dx * dy).sum(axis=(1, 2)) / tot
    half = 0.5 * (cxx + cyy)
    disc = np.sqrt(np.maximum(0.25 * (cxx - cyy) ** 2 + cxy**2, 0))
    minor = np.sqrt(np.maximum(half - disc, 1e-9))
    d = 2.0 * np.sqrt(2.0 * disc)
    sigma = 1.27 * minor
    ok = (d >= np.maximum(_SPLIT_MIN * sigma, _SPLIT_MIN_PX)) & (d <= _SPLIT_MAX * sigma)
    angle = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    ux, uy = np.cos(angle), np.sin(angle)
    if ok.any():
        # two spots or one streak with the same moments: keep the split only if two Gaussians fit better
        i = np.flatnonzero(ok)
        u = dx[i] * ux[i, None, None] + dy[i] * uy[i, None, None]
        v = dy[i] * ux[i, None, None] - dx[i] * uy[i, None, None]
        s2 = (np.sqrt(2.0) * sigma[i])[:, None, None]
        across = np.exp(-(v / s2) ** 2)
        m = keep[i]
        best_pair = np.full(len(i), np.inf)
        best_streak = np.full(len(i), np.inf)
        for scale in _SPLIT_SCALES:  # the moments give the geometry only roughly: try a little around it
            half_d = 0.5 * scale * d[i, None, None]
            pair = (np.exp(-((u + half_d) / s2) ** 2) * across, np.exp(-((u - half_d) / s2) ** 2) * across)
            rss, amps = _two_term_fit(win[i], m, *pair)
            best_pair = np.minimum(best_pair, np.where((amps > 0).all(axis=1), rss, np.inf))
            half_l = np.sqrt(3.0) * half_d
            line = 0.5 * (_erf((u + half_l) / s2) - _erf((u - half_l) / s2)) * across
            rss, _ = _two_term_fit(win[i], m, line, line * u / half_l)
            best_streak = np.minimum(best_streak, rss)
        # and two spots must explain the pixels significantly better than one elongated spot
        # (a likelihood-ratio test against the pixel noise), or noise would split single spots
        major = np.sqrt(sigma[i] ** 2 + 0.25 * d[i] ** 2)[:, None, None]
        single = np.exp(-((u / (np.sqrt(2.0) * major)) ** 2)) * across
        rss_single, _ = _two_term_fit(win[i], m, single, np.zeros_like(single))
        gain = (rss_single - best_pair) / np.maximum(noise[i], 0.5) ** 2
        ok[i] = (best_pair < best_streak) & (gain > _SPLIT_EVIDENCE)
    xa, ya = xc + mx - 0.5 * d * ux, yc + my - 0.5 * d * uy
    xb, yb = xc + mx + 0.5 * d * ux, yc + my + 0.5 * d * uy
    side = (dx * ux[:, None, None] + dy * uy[:, None, None]) < 0  # pixels nearer part a
    h, w = frames.shape[1:]
    ia = frames[t, np.clip(np.round(ya).astype(np.int64), 0, h - 1), np.clip(np.round(xa).astype(np.int64), 0, w - 1)] - bg
    ib = frames[t, np.clip(np.round(yb).astype(np.int64), 0, h - 1), np.clip(np.round(xb).astype(np.int64), 0, w - 1)] - bg
    aa = ((win > 0.5 * ia[:, None, None]) & side).sum(axis=(1, 2)).astype(np.int64)
    ab = ((win > 0.5 * ib[:, None, None]) & ~side).sum(axis=(1, 2)).astype(np.int64)
    return ok, d / sigma, xa, ya, xb, yb, ia.astype(np.float64), ib.astype(np.float64), aa, ab


Columns = dict[str, NDArray]
"""Per-spot arrays of equal length (t, y, x, s, bg, peak, area, rad, ...)."""


def _take(cols: Columns, keep: NDArray) -> Columns:
    return {k: v[keep] for k, v in cols.items()}


def _peaks(frames: NDArray[np.uint8], box: NDArray[np.uint16], thr: NDArray[np.float64], cell: int, p: SpotParams) -> Columns:
    """Stage 2: significant raw-pixel maxima, one per plateau: t, y, x and box sum s."""
    import cv2

    n, h, w = frames.shape
    by, bx = thr.shape[1:]
    if by * bx == 1:
        t, y, x = _find_peaks(frames, box, thr[:, 0, 0], p.min_distance)
        s = _box3_at(frames, t, y, x)
    else:
        # dense pass against a lower bound of every frame's threshold (the chunk's lowest block
        # thresholds, interpolated once per chunk), then each peak against its own frame's threshold
        envelope = np.clip(np.floor(thr.min(axis=0)), 0, 65535).astype(np.uint16)
        full = cv2.resize(envelope, (bx * cell, by * cell), interpolation=cv2.INTER_LINEAR)[:h, :w]
        t, y, x = _find_peaks(frames, box, np.ascontiguousarray(full), p.min_distance)
        s = _box3_at(frames, t, y, x)
        keep = s > _interp_map(thr, cell, t, y, x)
        t, y, x, s = t[keep], y[keep], x[keep], s[keep]
    cols = {"t": t, "y": y, "x": x, "s": s}
    if len(t):
        cols = _take(cols, _drop_ties(t, y, x, s, h, w, p.min_distance))
    return cols


def _measure_all(frames: NDArray[np.uint8], cols: Columns, p: SpotParams) -> Columns:
    """Stage 3: background, peak and area; spots spilling out of the window are measured in 2x, 4x larger ones."""
    t, y, x = cols["t"], cols["y"], cols["x"]
    r = p.radius
    bg, peak, area, spill = _measure(frames, t, y, x, r)
    rad = np.full(len(t), r, np.int64)
    for big in (2 * r, 4 * r):
        if not spill.any():
            break
        idx = np.flatnonzero(spill)
        bg[idx], peak[idx], area[idx], spill_big = _measure(frames, t[idx], y[idx], x[idx], big)
        rad[idx] = big
        spill[:] = False
        spill[idx] = spill_big
    cols = {**cols, "bg": bg, "peak": peak, "area": area, "rad": rad}
    return _take(cols, (peak >= p.min_peak) & (area >= p.min_area))


def _merge_streaks(frames: NDArray[np.uint8], cols: Columns, sig_box: NDArray[np.float64], p: SpotParams) -> Columns:
    """Stage 4: of two close peaks without a dip between them (a streak's noisy maxima), keep the stronger."""
    t, y, x, s = cols["t"], cols["y"], cols["x"], cols["s"]
    merge = 4.0 * p.radius if p.merge_distance is None else p.merge_distance
    pairs = _close_pairs(t, x.astype(np.float64), y.astype(np.float64), merge)
    if not len(pairs):
        return cols
    i, j = pairs[:, 0], pairs[:, 1]
    weak = np.where((s[i] < s[j]) | ((s[i] == s[j]) & (i > j)), i, j)
    frac = np.arange(1, 9) / 9.0
    py = np.round(y[i, None] + frac[None] * (y[j] - y[i])[:, None]).astype(np.int64)
    px = np.round(x[i, None] + frac[None] * (x[j] - x[i])[:, None]).astype(np.int64)
    lowest = _box3_at(frames, t[i, None], py, px).min(axis=1)
    no_dip = (s[weak] - lowest) < p.min_dip * sig_box[t[weak]]
    keep = np.ones(len(t), bool)
    keep[weak[no_dip]] = False
    return _take(cols, keep)


def _no_spots() -> Columns:
    return {"t": np.empty(0, np.int64), "x": np.empty(0), "y": np.empty(0), "peak": np.empty(0), "area": np.empty(0, np.int64)}


def _append(a: Columns, b: Columns) -> Columns:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def _locate(frames: NDArray[np.uint8], cols: Columns, sig_box: NDArray[np.float64], p: SpotParams) -> Columns:
    """Stages 5 and 6: sub-pixel centres, shoulder spots and split pairs; returns t, x, y, peak, area."""
    t, y, x, bg, peak, rad = cols["t"], cols["y"], cols["x"], cols["bg"], cols["peak"], cols["rad"]
    out = {"t": t, "x": x.astype(np.float64), "y": y.astype(np.float64), "peak": peak.astype(np.float64), "area": cols["area"]}
    if not len(t):
        return out
    r = p.radius
    if p.centre in ("auto", "centroid"):
        cx, cy = np.empty(len(t)), np.empty(len(t))
        for radius in np.unique(rad):
            g = rad == radius
            cx[g], cy[g] = _centroid(frames, t[g], y[g], x[g], bg[g], peak[g], int(radius), p.centroid_cut)
    gx, gy, roundness, fit_ok, coef = _gaussian_fit(frames, t, y, x, bg)

    new = _no_spots()
    if p.deblend:
        new = _shoulders(frames, t, y, x, bg, peak, coef, fit_ok & (roundness > _PARENT_ROUND), sig_box, p)
        if len(new["t"]):
            # drop a shoulder that is a detected spot already (or the second of two)
            pairs = _close_pairs(np.r_[t, new["t"]], np.r_[gx, new["x"]], np.r_[gy, new["y"]], p.min_distance + 0.5)
            dup = np.zeros(len(t) + len(new["t"]), bool)
            dup[pairs[:, 1][pairs[:, 1] >= len(t)]] = True
            new = _take(new, ~dup[len(t) :])

    if p.centre == "centroid":
        out["x"], out["y"] = cx, cy
    elif p.centre == "gaussian":
        out["x"], out["y"] = gx, gy
    else:
        # the Gaussian fit where another spot's light would pull a centroid: a detected neighbour,
        # a shoulder, or a centroid pulled off a round core
        crowded = np.zeros(len(t), bool)
        pairs = _close_pairs(np.r_[t, new["t"]], np.r_[gx, new["x"]], np.r_[gy, new["y"]], 2.0 * r + 1.0)
        crowded[pairs[pairs < len(t)]] = True
        crowded |= (np.hypot(cx - gx, cy - gy) > _DISAGREE) & (roundness > _ROUND)
        out["x"] = np.where(crowded, gx, cx)
        out["y"] = np.where(crowded, gy, cy)
        if p.split_pairs:
            out, more = _split_pairs(frames, out, bg, rad, new, sig_box / 3.0)
            new = _append(new, more)
    return _append(out, new) if len(new["t"]) else out


def _split_pairs(
    frames: NDArray[np.uint8], out: Columns, bg: NDArray, rad: NDArray[np.int64], shoulders: Columns, noise: NDArray[np.float64]
) -> tuple[Columns, Columns]:
    """Stage 6b: blobs that are two unresolved spots become two (see :func:`_split_pair`); returns (updated, added)."""
    t = out["t"]
    n = len(t)
    all_x = np.r_[out["x"], shoulders["x"]]
    all_y = np.r_[out["y"], shoulders["y"]]
    near = _close_pairs(np.r_[t, shoulders["t"]], all_x, all_y, 2.0 * rad.max() + 2.0)
    near = np.concatenate([near, near[:, ::-1]])
    near = near[near[:, 0] < n]
    radii = np.unique(rad)
    groups = [np.flatnonzero(rad == radius) for radius in radii]
    parts = []
    for radius, g in zip(radii, groups):
        pos = np.full(n, -1)
        pos[g] = np.arange(len(g))
        sel = near[pos[near[:, 0]] >= 0]
        parts.append(_split_pair(frames, t[g], out["x"][g], out["y"][g], bg[g], noise[t[g]], int(radius), pos[sel[:, 0]], all_x[sel[:, 1]], all_y[sel[:, 1]]))
    # motion blur makes streaks of moving spots: where the typical spot of these frames is
    # elongated, an elongated blob is more likely a streak than a pair
    ratios = np.concatenate([part[1] for part in parts])
    added = _no_spots()
    if float(np.median(ratios)) > _BLUR_REGIME:
        return out, added
    out = {k: v.copy() for k, v in out.items()}
    for g, (ok, _, xa, ya, xb, yb, ia, ib, aa, ab) in zip(groups, parts):
        gi = g[ok]
        out["x"][gi], out["y"][gi], out["peak"][gi], out["area"][gi] = xa[ok], ya[ok], ia[ok], aa[ok]
        added = _append(added, {"t": t[gi], "x": xb[ok], "y": yb[ok], "peak": ib[ok], "area": ab[ok]})
    return out, added


def _detect_arrays(frames: NDArray[np.uint8], params: SpotParams) -> Columns:
    """Detect spots in (T, H, W) uint8 frames; arrays t, x, y, peak (the intensity), area."""
    p = params
    n, h, w = frames.shape
    step = p.sample_step or max(1, int(np.sqrt(h * w / 8192.0)))
    box = _box_sums(frames)
    bg_map, std, cell = _background_model(box, step, p.background_block)
    sig_box = np.maximum(std, 3.0 * p.noise_floor)  # std of a 3x3 sum of independent noise is 3x a pixel's
    thr = bg_map + p.threshold * sig_box[:, None, None]
    cols = _peaks(frames, box, thr, cell, p)
    cols = _measure_all(frames, cols, p)
    cols = _merge_streaks(frames, cols, sig_box, p)
    return _locate(frames, cols, sig_box, p)


def _to_table(parts: Iterable[dict[str, NDArray]], view: str, first_frames: Iterable[int]) -> pd.DataFrame:
    frames, xs, ys, inten, areas = [], [], [], [], []
    for part, first in zip(parts, first_frames):
        frames.append(part["t"] + first)
        xs.append(part["x"])
        ys.append(part["y"])
        inten.append(part["peak"])
        areas.append(part["area"])
    if not frames or not sum(len(f) for f in frames):
        out = empty_candidates()
        out["view"] = pd.Categorical([], categories=[view])
        return out
    frame = np.concatenate(frames).astype(np.int64)
    intensity = np.concatenate(inten)
    # candidate ids: per frame, 0 = brightest
    order = np.lexsort((-intensity, frame))
    frame = frame[order]
    starts = np.r_[0, np.flatnonzero(np.diff(frame)) + 1]
    counts = np.diff(np.r_[starts, len(frame)])
    cand = np.arange(len(frame)) - np.repeat(starts, counts)
    return pd.DataFrame(
        {
            "frame": frame,
            "view": pd.Categorical.from_codes(np.zeros(len(frame), np.int8), categories=[view]),
            "candidate": cand.astype(np.int64),
            "x": np.concatenate(xs)[order],
            "y": np.concatenate(ys)[order],
            "intensity": intensity[order],
            "area": np.concatenate(areas)[order],
        }
    )[list(COLUMNS)]


# ------------------------------------------------------------------ public
def _check_frames(frames: object) -> NDArray[np.uint8]:
    arr = np.asarray(frames)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"frames must be a (T, H, W) grey stack, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"frames must be uint8 grey images, got {arr.dtype}")
    if arr.shape[1] < 3 or arr.shape[2] < 3:
        raise InputError(f"frames of {arr.shape[2]}x{arr.shape[1]} pixels are too small to hold spots")
    return np.ascontiguousarray(arr)


def detect_spots_in_frames(
    frames: NDArray[np.uint8], first_frame: int = 0, params: SpotParams | None = None, view: str = "view0"
) -> pd.DataFrame:
    """Detect marker spots in a stack of grey frames.

    Parameters
    ----------
    frames
        (T, H, W) uint8 grey frames (a single (H, W) frame is accepted).
    first_frame
        Frame number of ``frames[0]`` (the ``frame`` column counts from it).
    params
        Detector parameters (:class:`SpotParams`; defaults when ``None``).
    view
        Value of the ``view`` column.

    Returns
    -------
    pandas.DataFrame
        A candidates table (:mod:`ethoscribe.candidates.table`): ``frame``,
        ``view``, ``candidate`` (0 = brightest in its frame), ``x``, ``y``
        (OpenCV pixel convention), ``intensity`` (peak above local
        background, grey levels), ``area`` (pixels above half of that).
    """
    arr = _check_frames(frames)
    params = SpotParams() if params is None else params
    return _to_table([_detect_arrays(arr, params)], view, [int(first_frame)])


def _open(video: str | os.PathLike[str] | VideoReader) -> tuple[VideoReader, bool]:
    from ethoscribe.io.video import VideoReader

    if isinstance(video, VideoReader):
        if video.color != "grey":
            raise InputError(f"{video.path}: spot detection needs a grey VideoReader, not {video.color!r}")
        return video, False
    return VideoReader(video, color="grey"), True


def _view_name(video: str | os.PathLike[str] | VideoReader) -> str:
    path = getattr(video, "path", video)
    stem = os.path.basename(os.fspath(path)).rsplit(".", 1)[0]  # type: ignore[arg-type]
    return stem[: -len("_markers")] if stem.endswith("_markers") else stem


def _iter_detections(
    reader: VideoReader, chunk_size: int, params: SpotParams, overlap: bool
) -> Iterator[tuple[int, int, dict[str, NDArray]]]:
    """Yield (first_frame, n_frames, detections) per chunk, each frame decoded once.

    With ``overlap`` detection of a chunk runs in a worker thread while the next
    chunk decodes (OpenCV, NumPy and FFmpeg release the GIL).
    """
    chunks = reader.iter_chunks(chunk_size)
    if not overlap:
        for first, chunk in chunks:
            yield first, len(chunk), _detect_arrays(chunk, params)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="spots") as pool:
        pending = None
        for first, chunk in chunks:
            job = (first, len(chunk), pool.submit(_detect_arrays, chunk, params))
            if pending is not None:
                yield pending[0], pending[1], pending[2].result()
            pending = job
        if pending is not None:
            yield pending[0], pending[1], pending[2].result()


def detect_spots(
    video: str | os.PathLike[str] | VideoReader,
    view: str | None = None,
    chunk_size: int = 32,
    params: SpotParams | None = None,
    overlap: bool = True,
    progress: object | None = None,
) -> pd.DataFrame:
    """Detect marker spots in every frame of a grey marker-channel video.

    Each frame is decoded exactly once (``VideoReader.iter_chunks``).

    Parameters
    ----------
    video
        Path of the video, or an open grey :class:`~ethoscribe.io.video.VideoReader`
        (left open).
    view
        Value of the ``view`` column; default: the file name without its
        extension and a ``_markers`` suffix (``cam0_markers.mp4`` -> ``cam0``).
    chunk_size
        Frames decoded and processed together.
    params
        Detector parameters (:class:`SpotParams`).
    overlap
        Detect one chunk in a worker thread while the next one decodes.
    progress
        Optional callable advanced by the number of frames of each chunk.

    Returns
    -------
    pandas.DataFrame
        A candidates table, as :func:`detect_spots_in_frames`.

    Examples
    --------
    >>> spots = detect_spots("session/videos/cam0_markers.mp4")  # doctest: +SKIP
    >>> spots.groupby("frame").size().describe()  # doctest: +SKIP
    """
    params = SpotParams() if params is None else params
    if chunk_size < 1:
        raise InputError("chunk_size must be at least 1")
    reader, owned = _open(video)
    view = _view_name(video) if view is None else view
    try:
        parts, firsts = [], []
        for first, count, part in _iter_detections(reader, chunk_size, params, overlap):
            parts.append(part)
            firsts.append(first)
            if callable(progress):
                progress(count)
    finally:
        if owned:
            reader.close()
    return _to_table(parts, view, firsts)


def detect_session_spots(
    session: Session,
    views: Sequence[str] | None = None,
    params: SpotParams | None = None,
    chunk_size: int = 32,
) -> pd.DataFrame:
    """Detect marker spots in the marker videos of a session's views.

    Views are processed one after the other, each overlapping its decoding and
    detection on two threads (measured faster on 2 cores than a thread per
    view, since FFmpeg already decodes on both; see benchmarks/spots.py).

    Parameters
    ----------
    session
        A loaded :class:`~ethoscribe.session.Session`.
    views
        Names of the views to process (default: all, in session order).
    params, chunk_size
        As for :func:`detect_spots`.

    Returns
    -------
    pandas.DataFrame
        One candidates table for all views; ``view`` is a categorical with the
        views in session order.
    """
    from ethoscribe.io.video import VideoReader
    from ethoscribe.progress import progress_bar

    names = list(session.config.view_names if views is None else views)
    unknown = [v for v in names if v not in session.config.view_names]
    if unknown:
        raise InputError(f"{session.root}: session has no view(s) {unknown} (views: {session.config.view_names})")
    paths = [session.video_path(v, "markers") for v in names]
    readers = []
    try:
        for path in paths:
            readers.append(VideoReader(path, color="grey"))
        total = sum(r.n_frames for r in readers)
        tables = []
        with progress_bar(total, "detecting marker spots") as advance:
            for name, reader in zip(names, readers):
                tables.append(detect_spots(reader, view=name, chunk_size=chunk_size, params=params, progress=advance))
    finally:
        for reader in readers:
            reader.close()
    out = pd.concat(tables, ignore_index=True) if tables else empty_candidates()
    out["view"] = pd.Categorical(out["view"].astype(str), categories=names)
    return out
