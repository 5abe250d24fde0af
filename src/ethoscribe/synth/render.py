"""Seeing the synthetic animals: visibility, marker spots and a grey body image.

- :func:`visibility`: a marker is visible in a camera when it projects into
  the image and the ray from the camera centre to it enters no body
  ellipsoid (of any animal) before reaching it.
- :func:`project_conics`: the exact image ellipse of an ellipsoid through the
  dual quadric, ``C* = P Q* P^T`` (ideal pinhole; lens distortion is applied
  to the whole image afterwards with one ``cv2.remap`` per camera).
- :class:`MarkerRenderer`: the marker channel, Gaussian spots integrated over
  each pixel on a dark background, with the sensor noise of a noise level.
- :class:`BodyRenderer`: the body video, ellipsoids drawn far to near with a
  few nested, brighter ellipses for shading and soft floor shadows, on a
  floor with the arena's walls.

Examples
--------
>>> import numpy as np
>>> from ethoscribe.synth.cameras import arena_rig
>>> from ethoscribe.synth.mouse import Ellipsoids
>>> rig = arena_rig(2, np.random.default_rng(0))
>>> ell = Ellipsoids(np.array([[[0.0, 0.0, 20.0]]]), np.eye(3)[None, None], np.array([[[30.0, 15.0, 15.0]]]))
>>> center, axes, angle = project_conics(rig, ell)
>>> center.shape, axes.shape, angle.shape
((2, 1, 1, 2), (2, 1, 1, 2), (2, 1, 1))
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.special import erf

from ethoscribe.geometry.camera import CameraRig
from ethoscribe.synth.mouse import Ellipsoids
from ethoscribe.synth.noise import NoiseLevel

FloatArray = NDArray[np.float64]


# ---------------------------------------------------------------- visibility
def occluded(centers: FloatArray, points: FloatArray, ell: Ellipsoids, chunk: int = 512) -> NDArray[np.bool_]:
    """Whether body ellipsoids hide points from cameras.

    ``centers`` (V, 3) camera centres, ``points`` (T, P, 3), ellipsoids (T, E):
    (V, T, P) True where the segment from the camera to the point crosses an
    ellipsoid before the point. NaN points count as occluded.
    """
    V = len(centers)
    T, P = points.shape[:2]
    E = ell.centers.shape[1]
    # world -> unit-sphere coordinates of each ellipsoid: rows are axis_k / r_k
    to_unit = np.swapaxes(ell.axes, -1, -2) / ell.radii[..., :, None]  # (T, E, 3, 3)
    out = np.ones((V, T, P), bool)
    bad_pts = ~np.isfinite(points).all(axis=-1)
    for s in range(0, T, chunk):
        m = to_unit[s:s + chunk]
        n = len(m)
        flat = m.reshape(n, E * 3, 3)
        for v in range(V):
            cam = centers[v]
            o = np.einsum("teij,tej->tei", m, cam - ell.centers[s:s + chunk])  # (n, E, 3)
            d = (flat @ np.swapaxes(points[s:s + chunk] - cam, 1, 2)).reshape(n, E, 3, P)
            a = np.einsum("teip,teip->tep", d, d)
            b = np.einsum("tei,teip->tep", o, d)
            c = (np.einsum("tei,tei->te", o, o) - 1.0)[..., None]
            disc = b * b - a * c
            with np.errstate(invalid="ignore"):
                root = np.sqrt(np.where(disc > 0, disc, np.nan))
                hit = ((-b - root) < (1.0 - 1e-9) * a) & ((-b + root) > 1e-9 * a)
            out[v, s:s + chunk] = hit.any(axis=1) | bad_pts[s:s + chunk]
    return out


def visibility(rig: CameraRig, points: FloatArray, ell: Ellipsoids) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Projections (V, T, P, 2) of points (T, P, 3) and whether each is seen: in the image and not hidden."""
    proj = rig.project(points)
    seen = rig.in_image(proj) & ~occluded(rig.centers, points, ell)
    return proj, seen


# ---------------------------------------------------------------- conics
def _shape_matrix(ell: Ellipsoids) -> FloatArray:
    a = ell.axes * ell.radii[..., None, :]
    return a @ np.swapaxes(a, -1, -2)


def projection_matrices(rig: CameraRig, offsets: FloatArray | None = None) -> FloatArray:
    """Ideal pinhole projection matrices (V, 3, 4); ``offsets`` (V, 2) shift the principal point."""
    k = rig.matrix.copy()
    if offsets is not None:
        k[:, 0, 2] += offsets[:, 0]
        k[:, 1, 2] += offsets[:, 1]
    return k @ rig.extrinsics()


def conics_from_shapes(pmat: FloatArray, centers: FloatArray, shapes: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Image ellipses of ellipsoids given by centres (..., 3) and shape matrices (..., 3, 3).

    ``pmat`` (V, 3, 4). Returns centres (V, ..., 2), semi-axes (V, ..., 2)
    and angles (V, ...) in degrees (of the first axis, as ``cv2.ellipse``).
    """
    lead = centers.shape[:-1]
    c = centers.reshape(-1, 3)
    s = shapes.reshape(-1, 3, 3)
    n = len(c)
    q = np.empty((n, 4, 4))
    q[:, :3, :3] = s - c[:, :, None] * c[:, None, :]
    q[:, :3, 3] = -c
    q[:, 3, :3] = -c
    q[:, 3, 3] = -1.0
    dual = np.einsum("vij,njk,vlk->vnil", pmat, q, pmat)  # (V, n, 3, 3)
    d = dual / -dual[..., 2:3, 2:3]
    x0 = -d[..., :2, 2]
    m = d[..., :2, :2] + x0[..., :, None] * x0[..., None, :]
    w, vec = np.linalg.eigh(m)
    w = np.maximum(w, 1e-12)
    axes = np.sqrt(w)[..., ::-1]  # major first
    major = vec[..., :, 1]
    angle = np.degrees(np.arctan2(major[..., 1], major[..., 0]))
    V = pmat.shape[0]
    return x0.reshape((V,) + lead + (2,)), axes.reshape((V,) + lead + (2,)), angle.reshape((V,) + lead)


def project_conics(rig: CameraRig, ell: Ellipsoids, offsets: FloatArray | None = None) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Image ellipses (ideal pinhole pixels) of every ellipsoid in every camera: see :func:`conics_from_shapes`."""
    return conics_from_shapes(projection_matrices(rig, offsets), ell.centers, _shape_matrix(ell))


# ---------------------------------------------------------------- spots
@dataclass
class Spots:
    """Spots to draw in one view: frame index, centre (distorted pixels), sigma (px) and peak (grey levels)."""

    frame: NDArray[np.int64]
    x: FloatArray
    y: FloatArray
    sigma: FloatArray
    peak: FloatArray

    @staticmethod
    def concat(items: list[Spots]) -> Spots:
        return Spots(*(np.concatenate([getattr(s, f) for s in items]) for f in ("frame", "x", "y", "sigma", "peak")))

    def sorted(self) -> Spots:
        order = np.argsort(self.frame, kind="stable")
        return Spots(self.frame[order], self.x[order], self.y[order], self.sigma[order], self.peak[order])


def draw_spots(canvas: NDArray[np.float32], frame0: int, spots: Spots, shot: float = 0.0,
               rng: np.random.Generator | None = None) -> None:
    """Add pixel-integrated Gaussian spots into ``canvas`` (F, H, W) in place (frames ``frame0``...).

    With ``shot`` > 0 each spot pixel gets photon (shot) noise of std ``shot * sqrt(value)``.
    """
    if len(spots.frame) == 0:
        return
    F, H, W = canvas.shape
    r = int(np.ceil(3.5 * max(1.0, float(spots.sigma.max()))))
    offs = np.arange(-r, r + 1)
    ix = np.floor(spots.x + 0.5).astype(np.int64)
    iy = np.floor(spots.y + 0.5).astype(np.int64)
    px = ix[:, None] + offs[None, :]
    py = iy[:, None] + offs[None, :]
    s2 = (spots.sigma * np.sqrt(2.0))[:, None]
    gx = 0.5 * (erf((px + 0.5 - spots.x[:, None]) / s2) - erf((px - 0.5 - spots.x[:, None]) / s2))
    gy = 0.5 * (erf((py + 0.5 - spots.y[:, None]) / s2) - erf((py - 0.5 - spots.y[:, None]) / s2))
    amp = spots.peak * 2 * np.pi * spots.sigma ** 2
    vals = amp[:, None, None] * gy[:, :, None] * gx[:, None, :]
    if shot > 0 and rng is not None:
        vals = vals + shot * np.sqrt(vals) * rng.standard_normal(vals.shape)
    fx = np.broadcast_to(px[:, None, :], vals.shape)
    fy = np.broadcast_to(py[:, :, None], vals.shape)
    ff = np.broadcast_to((spots.frame - frame0)[:, None, None], vals.shape)
    ok = (fx >= 0) & (fx < W) & (fy >= 0) & (fy < H) & (ff >= 0) & (ff < F)
    flat = (ff[ok] * H + fy[ok]) * W + fx[ok]
    np.add.at(canvas.reshape(-1), flat, vals[ok].astype(np.float32))


class _NoiseBank:
    """Cheap temporal noise: crops at random offsets of a few stored normal images (no per-frame draws)."""

    PAD = 64

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], n_frames: int, scale: float,
                 n_bank: int = 4, dtype: type = np.float32) -> None:
        h, w = shape
        self.h, self.w = h, w
        bank = scale * rng.standard_normal((n_bank, h + self.PAD, w + self.PAD), dtype=np.float32)
        self.bank = np.round(bank).astype(dtype) if np.issubdtype(dtype, np.integer) else bank
        self.pick = rng.integers(0, n_bank, size=n_frames)
        self.dy = rng.integers(0, self.PAD + 1, size=n_frames)
        self.dx = rng.integers(0, self.PAD + 1, size=n_frames)

    def __call__(self, t: int) -> NDArray:
        y, x = int(self.dy[t]), int(self.dx[t])
        return self.bank[self.pick[t], y:y + self.h, x:x + self.w]


class MarkerRenderer:
    """Renders one view's marker channel (uint8 frames) from a list of spots.

    The background is dark (about 6-10 grey levels, a little brighter in the
    middle); noise follows the :class:`~ethoscribe.synth.noise.NoiseLevel`:
    a static per-pixel pattern, shot noise on the spots and temporal read noise.
    """

    def __init__(self, size: tuple[int, int], spots: Spots, noise: NoiseLevel, rng: np.random.Generator, n_frames: int) -> None:
        w, h = size
        self.w, self.h = w, h
        self.spots = spots.sorted()
        self.noise = noise
        self.rng = rng
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        self.background = (6.0 + 4.0 * np.exp(-r2)).astype(np.float32)
        if noise.fixed_pattern > 0:
            self.background += noise.fixed_pattern * rng.standard_normal((h, w), dtype=np.float32)
        self.read = _NoiseBank(rng, (h, w), n_frames, noise.read_noise) if noise.read_noise > 0 else None
        self._bounds = np.searchsorted(self.spots.frame, np.arange(n_frames + 1))

    def render(self, start: int, stop: int) -> NDArray[np.uint8]:
        """Frames ``start`` to ``stop`` (exclusive) as (F, H, W) uint8 (call in order for reproducible noise)."""
        canvas = np.empty((stop - start, self.h, self.w), np.float32)
        canvas[:] = self.background
        a, b = self._bounds[start], self._bounds[stop]
        s = self.spots
        draw_spots(canvas, start, Spots(s.frame[a:b], s.x[a:b], s.y[a:b], s.sigma[a:b], s.peak[a:b]),
                   shot=self.noise.shot_noise, rng=self.rng)
        out = np.empty(canvas.shape, np.uint8)
        for k in range(stop - start):
            f = canvas[k]
            if self.read is not None:
                np.add(f, self.read(start + k), out=f)
            out[k] = cv2.convertScaleAbs(f)  # round to nearest, saturate at 255
        return out


# ---------------------------------------------------------------- body video
class BodyRenderer:
    """Renders one view's grey body video.

    The scene is drawn in the camera's ideal pinhole image (on a canvas large
    enough to cover the distorted image), then distorted with one precomputed
    ``cv2.remap``. Ellipsoids are filled far to near, each as four nested
    ellipses growing brighter towards the part facing the overhead light;
    bodies cast soft shadows straight down on the floor.
    """

    SUB = 4  # cv2 sub-pixel bits
    FLOOR, ROOM, WALL_EDGE, SHADOW = 168, 92, 215, 128

    def __init__(self, rig: CameraRig, view: int, arena_mm: float, noise: NoiseLevel, rng: np.random.Generator,
                 n_frames: int) -> None:
        self.rig = rig.subset([rig.names[view]])
        w, h = (int(x) for x in self.rig.size[0])
        self.w, self.h = w, h
        # map every distorted pixel to the ideal pinhole image
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        ideal = self.rig.undistort_pixels(np.stack([xx, yy], axis=-1)[None])[0]
        lo = np.floor(np.nanmin(ideal.reshape(-1, 2), axis=0)) - 4
        hi = np.ceil(np.nanmax(ideal.reshape(-1, 2), axis=0)) + 4
        self.offset = -lo
        cw, ch = int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1
        self.canvas_size = (cw, ch)
        # pixels the distortion model cannot produce (NaN) stay black
        mx = np.nan_to_num(ideal[..., 0] + self.offset[0], nan=-10.0).astype(np.float32)
        my = np.nan_to_num(ideal[..., 1] + self.offset[1], nan=-10.0).astype(np.float32)
        self.map1, self.map2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
        self.pmat = projection_matrices(self.rig, self.offset[None])
        self.center = self.rig.centers[0]
        self.background = self._scene(arena_mm)
        self.canvas = self.background.copy()
        self.bg_distorted = cv2.remap(self.background, self.map1, self.map2, cv2.INTER_LINEAR)
        self.noise = noise
        self.fpn = (np.round(noise.fixed_pattern * rng.standard_normal((h, w))).astype(np.int16)
                    if noise.fixed_pattern > 0 else None)
        self.read = (_NoiseBank(rng, (h, w), n_frames, noise.body_read_noise, dtype=np.int16)
                     if noise.body_read_noise > 0 else None)

    def _px(self, pts: FloatArray) -> NDArray[np.int32]:
        cam = pts @ self.pmat[0, :, :3].T + self.pmat[0, :, 3]
        xy = cam[:, :2] / cam[:, 2:3]
        return np.round(xy * (1 << self.SUB)).astype(np.int32)

    def _scene(self, arena_mm: float) -> NDArray[np.uint8]:
        cw, ch = self.canvas_size
        img = np.full((ch, cw), self.ROOM, np.uint8)
        a = arena_mm / 2
        wall_h = 150.0
        corners = np.array([[-a, -a], [a, -a], [a, a], [-a, a]])
        floor = np.c_[corners, np.zeros(4)]
        top = np.c_[corners, np.full(4, wall_h)]
        # a wider table under the arena, then the arena floor
        table = np.c_[corners * 1.6, np.full(4, -2.0)]
        cv2.fillPoly(img, [self._px(table)], 120, cv2.LINE_AA, self.SUB)
        cv2.fillPoly(img, [self._px(floor)], self.FLOOR, cv2.LINE_AA, self.SUB)
        # transparent walls: a faint tint and bright edges
        tint = img.copy()
        for i in range(4):
            quad = np.array([floor[i], floor[(i + 1) % 4], top[(i + 1) % 4], top[i]])
            cv2.fillPoly(tint, [self._px(quad)], 200, cv2.LINE_AA, self.SUB)
        img = cv2.addWeighted(img, 0.88, tint, 0.12, 0)
        for i in range(4):
            j = (i + 1) % 4
            for p, q, val in ((floor[i], floor[j], 70), (top[i], top[j], self.WALL_EDGE), (floor[i], top[i], self.WALL_EDGE)):
                seg = self._px(np.array([p, q]))
                cv2.line(img, tuple(int(v) for v in seg[0]), tuple(int(v) for v in seg[1]), val, 2, cv2.LINE_AA, self.SUB)
        return img

    def prepare(self, ell: Ellipsoids, n_animals: int) -> None:
        """Precompute every image ellipse for all frames: ellipsoids (T, E_all), E_all = animals x per-animal."""
        T, E = ell.centers.shape[:2]
        shapes = _shape_matrix(ell)
        c, ax, ang = conics_from_shapes(self.pmat, ell.centers, shapes)
        self.c, self.ax, self.ang = c[0], ax[0], ang[0]
        # shading: the point facing the light (straight up) and its image
        s_up = shapes[..., :, 2]
        top = ell.centers + s_up / np.sqrt(np.maximum(shapes[..., 2, 2], 1e-9))[..., None]
        cam = top @ self.pmat[0, :, :3].T + self.pmat[0, :, 3]
        self.top = cam[..., :2] / cam[..., 2:3]
        self.depth = np.linalg.norm(ell.centers - self.center, axis=-1)
        # shadows: the vertical footprint of each body ellipsoid (not the tail) as a flat ellipsoid on the floor
        per = E // max(n_animals, 1)
        body_idx = np.array([a * per + k for a in range(n_animals) for k in range(min(3, per))])
        sh = np.zeros((T, len(body_idx), 3, 3))
        sh[..., :2, :2] = shapes[:, body_idx, :2, :2] * 1.08
        sh[..., 2, 2] = 0.05
        sc = ell.centers[:, body_idx].copy()
        sc[..., 2] = 0.2
        c2, ax2, ang2 = conics_from_shapes(self.pmat, sc, sh)
        self.sc, self.sax, self.sang = c2[0], ax2[0], ang2[0]
        self.is_tail = np.array([(k % per) >= 3 for k in range(E)])
        # per frame, the region that changes: ideal-image box of every ellipse, then its distorted box
        lo = np.minimum(np.nanmin(self.c - self.ax[..., :1], axis=1), np.nanmin(self.sc - self.sax[..., :1], axis=1)) - 3
        hi = np.maximum(np.nanmax(self.c + self.ax[..., :1], axis=1), np.nanmax(self.sc + self.sax[..., :1], axis=1)) + 3
        cw, ch = self.canvas_size
        lo = np.clip(np.nan_to_num(lo, nan=0.0), 0, [cw - 1, ch - 1])
        hi = np.clip(np.nan_to_num(hi, nan=0.0), 0, [cw - 1, ch - 1])
        self.box = np.concatenate([np.floor(lo), np.ceil(hi)], axis=1).astype(np.int64)  # x0, y0, x1, y1 (ideal canvas)
        u = np.linspace(0.0, 1.0, 17)
        xs = lo[:, :1] + (hi[:, :1] - lo[:, :1]) * u[None]
        ys = lo[:, 1:] + (hi[:, 1:] - lo[:, 1:]) * u[None]
        per_x = np.concatenate([xs, xs, np.repeat(lo[:, :1], 17, 1), np.repeat(hi[:, :1], 17, 1)], axis=1)
        per_y = np.concatenate([np.repeat(lo[:, 1:], 17, 1), np.repeat(hi[:, 1:], 17, 1), ys, ys], axis=1)
        k = self.rig.matrix[0]
        nx = (per_x - self.offset[0] - k[0, 2]) / k[0, 0]
        ny = (per_y - self.offset[1] - k[1, 2]) / k[1, 1]
        d = self.rig.distort(np.stack([nx, ny], axis=-1)[None])[0]
        dlo = np.floor(d.min(axis=1)) - 2
        dhi = np.ceil(d.max(axis=1)) + 3
        self.dbox = np.concatenate([np.clip(dlo, 0, [self.w, self.h]), np.clip(dhi, 0, [self.w, self.h])], axis=1).astype(np.int64)

    def _ellipse(self, img: NDArray[np.uint8], c: FloatArray, ax: FloatArray, ang: float, val: int) -> None:
        f = 1 << self.SUB
        axes = (max(int(round(ax[0] * f)), 1), max(int(round(ax[1] * f)), 1))
        if not (np.all(np.isfinite(c)) and np.isfinite(ang)) or max(axes) > 4000 * f:
            return
        cv2.ellipse(img, (int(round(c[0] * f)), int(round(c[1] * f))), axes, float(ang), 0, 360, int(val), -1,
                    cv2.LINE_AA, self.SUB)

    def render(self, start: int, stop: int) -> NDArray[np.uint8]:
        """Frames ``start`` to ``stop`` (exclusive) as (F, H, W) uint8 (after :meth:`prepare`)."""
        out = np.empty((stop - start, self.h, self.w), np.uint8)
        scales = (1.0, 0.8, 0.6, 0.38)
        img = self.canvas
        for k, t in enumerate(range(start, stop)):
            x0, y0, x1, y1 = (int(v) for v in self.box[t])
            for j in range(self.sc.shape[1]):
                self._ellipse(img, self.sc[t, j], self.sax[t, j], self.sang[t, j], self.SHADOW)
            depth = self.depth[t]
            dmin, dmax = float(depth.min()), float(depth.max())
            for e in np.argsort(-depth, kind="stable"):
                near = 1.0 - 0.25 * (depth[e] - dmin) / max(dmax - dmin, 60.0)
                c, ax, ang, top = self.c[t, e], self.ax[t, e], self.ang[t, e], self.top[t, e]
                layers = scales[:2] if self.is_tail[e] else scales
                for i, s in enumerate(layers):
                    val = (48 + 22 * i) * near
                    cc = c + (1.0 - s) * 0.85 * (top - c)
                    self._ellipse(img, cc, ax * s, ang, int(val))
            frame = out[k]
            frame[:] = self.bg_distorted
            a0, b0, a1, b1 = (int(v) for v in self.dbox[t])
            if a1 > a0 and b1 > b0:
                frame[b0:b1, a0:a1] = cv2.remap(img, np.ascontiguousarray(self.map1[b0:b1, a0:a1]),
                                                np.ascontiguousarray(self.map2[b0:b1, a0:a1]), cv2.INTER_LINEAR)
            img[y0:y1 + 1, x0:x1 + 1] = self.background[y0:y1 + 1, x0:x1 + 1]  # undo the drawing
            if self.fpn is not None or self.read is not None:
                f = frame.astype(np.int16)
                if self.fpn is not None:
                    f += self.fpn
                if self.read is not None:
                    f += self.read(t)
                np.clip(f, 0, 255, out=f)
                frame[:] = f
        return out
