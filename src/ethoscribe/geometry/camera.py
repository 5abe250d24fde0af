"""A calibrated multi-camera rig with vectorised projection and undistortion.

:class:`CameraRig` holds the parameters of N pinhole cameras with OpenCV's
5-coefficient distortion model (k1, k2, p1, p2, k3), exactly as anipose's
``calibration.toml`` stores them, and reads and writes that file through
:mod:`aniposelib`. Projection and undistortion are vectorised numpy over any
number of points; projection matches ``cv2.projectPoints`` (and therefore
``aniposelib.cameras.CameraGroup.project``) to float precision.

Units are those of the calibration's translations (the synthetic rig uses mm).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ethoscribe.errors import CalibrationError
from ethoscribe.io.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from aniposelib.cameras import CameraGroup

FloatArray = NDArray[np.float64]


def rodrigues_to_matrix(rvec: ArrayLike) -> FloatArray:
    """Rotation vectors (..., 3) to rotation matrices (..., 3, 3), as ``cv2.Rodrigues``.

    Examples
    --------
    >>> np.allclose(rodrigues_to_matrix([0, 0, np.pi / 2]) @ [1, 0, 0], [0, 1, 0])
    True
    """
    r = np.asarray(rvec, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    safe = np.where(theta < 1e-12, 1.0, theta)
    k = r / safe
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    kmat = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(r.shape[:-1] + (3, 3))
    th = theta[..., None]
    eye = np.broadcast_to(np.eye(3), kmat.shape)
    rot = eye + np.sin(th) * kmat + (1 - np.cos(th)) * (kmat @ kmat)
    return np.where(th < 1e-12, eye, rot)


def matrix_to_rodrigues(rot: ArrayLike) -> FloatArray:
    """Rotation matrices (..., 3, 3) to rotation vectors (..., 3)."""
    from scipy.spatial.transform import Rotation

    rot = np.asarray(rot, dtype=np.float64)
    return Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_rotvec().reshape(rot.shape[:-2] + (3,))


@dataclass(eq=False)
class CameraRig:
    """N calibrated cameras: intrinsics, distortion, pose, image size and names.

    Attributes are arrays stacked over cameras: ``matrix`` (N, 3, 3),
    ``dist`` (N, 5), ``rvec`` (N, 3) and ``tvec`` (N, 3) map world points X
    to camera coordinates ``R(rvec) @ X + tvec``; ``size`` (N, 2) is
    (width, height) in pixels.

    Examples
    --------
    >>> rig = CameraRig.from_params(
    ...     names=["a", "b"], matrix=[[[500, 0, 320], [0, 500, 240], [0, 0, 1]]] * 2,
    ...     rvec=[[0, 0, 0], [0, 0.5, 0]], tvec=[[0, 0, 500], [-200, 0, 500]],
    ...     size=[[640, 480]] * 2)
    >>> rig.project([[0.0, 0.0, 0.0]]).shape
    (2, 1, 2)
    >>> rig.project([[0.0, 0.0, 0.0]])[0, 0].tolist()
    [320.0, 240.0]
    """

    names: list[str]
    matrix: FloatArray
    dist: FloatArray
    rvec: FloatArray
    tvec: FloatArray
    size: NDArray[np.int64]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.names)
        self.names = [str(x) for x in self.names]
        self.matrix = np.asarray(self.matrix, dtype=np.float64).reshape(n, 3, 3)
        dist = np.asarray(self.dist, dtype=np.float64).reshape(n, -1)
        if dist.shape[1] > 5:
            raise CalibrationError(
                f"distortion with {dist.shape[1]} coefficients is not supported (at most 5: k1 k2 p1 p2 k3)"
            )
        self.dist = np.pad(dist, ((0, 0), (0, 5 - dist.shape[1])))
        self.rvec = np.asarray(self.rvec, dtype=np.float64).reshape(n, 3)
        self.tvec = np.asarray(self.tvec, dtype=np.float64).reshape(n, 3)
        self.size = np.asarray(self.size, dtype=np.int64).reshape(n, 2)
        if len(set(self.names)) != n:
            raise CalibrationError(f"camera names are not unique: {self.names}")
        for arr, what in ((self.matrix, "matrix"), (self.dist, "distortions"), (self.rvec, "rotation"), (self.tvec, "translation")):
            if not np.all(np.isfinite(arr)):
                bad = [self.names[i] for i in np.nonzero(~np.isfinite(arr.reshape(n, -1)).all(axis=1))[0]]
                raise CalibrationError(f"camera(s) {bad}: non-finite values in {what}")
        self.rotation = rodrigues_to_matrix(self.rvec)

    # --------------------------------------------------------------- basics
    @classmethod
    def from_params(
        cls,
        names: Sequence[str],
        matrix: ArrayLike,
        rvec: ArrayLike,
        tvec: ArrayLike,
        size: ArrayLike,
        dist: ArrayLike | None = None,
    ) -> CameraRig:
        """Build a rig from stacked parameters (distortion defaults to none)."""
        n = len(names)
        return cls(
            list(names),
            np.asarray(matrix, dtype=np.float64),
            np.zeros((n, 5)) if dist is None else np.asarray(dist, dtype=np.float64),
            np.asarray(rvec, dtype=np.float64),
            np.asarray(tvec, dtype=np.float64),
            np.asarray(size),
        )

    @property
    def n_cameras(self) -> int:
        """Number of cameras."""
        return len(self.names)

    def index(self, name: str) -> int:
        """Position of the camera called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise CalibrationError(f"camera {name!r} is not in the calibration (cameras: {self.names})") from None

    def subset(self, names: Sequence[str]) -> CameraRig:
        """The rig restricted to ``names``, in that order.

        Raises :class:`CalibrationError` naming every view the calibration lacks.
        """
        missing = [n for n in names if n not in self.names]
        if missing:
            raise CalibrationError(f"views {missing} are missing from the calibration (it has {self.names})")
        idx = [self.names.index(n) for n in names]
        return CameraRig(
            [self.names[i] for i in idx], self.matrix[idx], self.dist[idx], self.rvec[idx], self.tvec[idx],
            self.size[idx], dict(self.metadata),
        )

    def copy(self) -> CameraRig:
        """A deep copy."""
        return self.subset(self.names)

    @property
    def centers(self) -> FloatArray:
        """Camera centres in world coordinates, (N, 3)."""
        return -np.einsum("nji,nj->ni", self.rotation, self.tvec)

    def extrinsics(self) -> FloatArray:
        """[R | t] matrices (N, 3, 4): projection in normalised (undistorted) coordinates."""
        return np.concatenate([self.rotation, self.tvec[:, :, None]], axis=2)

    # ------------------------------------------------------------ projection
    def to_camera(self, points: ArrayLike) -> FloatArray:
        """World points (..., 3) to camera coordinates (N, ..., 3)."""
        p = np.asarray(points, dtype=np.float64)
        flat = p.reshape(-1, 3)
        cam = np.einsum("nij,pj->npi", self.rotation, flat) + self.tvec[:, None, :]
        return cam.reshape((self.n_cameras,) + p.shape)

    def distort(self, normalized: ArrayLike, cameras: Sequence[int] | None = None) -> FloatArray:
        """Normalised image coordinates (N, ..., 2) to distorted pixels (N, ..., 2)."""
        xy = np.asarray(normalized, dtype=np.float64)
        idx = np.arange(self.n_cameras) if cameras is None else np.asarray(cameras)
        shape = xy.shape
        xy = xy.reshape(len(idx), -1, 2)
        k1, k2, p1, p2, k3 = (self.dist[idx, i][:, None] for i in range(5))
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        m = self.matrix[idx]
        u = m[:, 0, 0, None] * xd + m[:, 0, 1, None] * yd + m[:, 0, 2, None]
        v = m[:, 1, 1, None] * yd + m[:, 1, 2, None]
        return np.stack([u, v], axis=-1).reshape(shape)

    def project(self, points: ArrayLike) -> FloatArray:
        """Project world points (..., 3) into every camera: pixels (N, ..., 2).

        Points at or behind a camera's centre plane give NaN in that camera.
        Matches ``cv2.projectPoints`` with the same parameters.
        """
        cam = self.to_camera(points)
        z = cam[..., 2:3]
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = np.where(z > 1e-9, cam[..., :2] / z, np.nan)
        return self.distort(norm)

    def undistort(self, pixels: ArrayLike, iterations: int = 20) -> FloatArray:
        """Distorted pixels (N, ..., 2) to normalised coordinates (N, ..., 2).

        Inverts OpenCV's distortion model by Newton's method to convergence.
        ``cv2.undistortPoints`` (what aniposelib uses) stops after 5
        fixed-point steps: on the ``sleap_4view_mouse`` rig (k1 = -0.29) that
        leaves a median 0.05 px and up to 21 px error inside the image, where
        this gives <= 0.02 px (measured on 20k points). NaN stays NaN, and a
        pixel that the distortion model cannot produce (no preimage, e.g. the
        corners of that rig's images) becomes NaN.
        """
        px = np.asarray(pixels, dtype=np.float64)
        shape = px.shape
        if shape[0] != self.n_cameras:
            raise CalibrationError(f"got 2D points for {shape[0]} views but the calibration has {self.n_cameras} cameras")
        px = px.reshape(self.n_cameras, -1, 2)
        m = self.matrix
        fx, fy, cx, cy, skew = m[:, 0, 0, None], m[:, 1, 1, None], m[:, 0, 2, None], m[:, 1, 2, None], m[:, 0, 1, None]
        yd = (px[..., 1] - cy) / fy
        xd = (px[..., 0] - cx - skew * yd) / fx
        if not np.any(self.dist != 0):
            return np.stack([xd, yd], axis=-1).reshape(shape)
        n_per = xd.shape[1]
        k1, k2, p1, p2, k3 = (np.repeat(self.dist[:, i], n_per) for i in range(5))
        xd, yd = xd.ravel(), yd.ravel()
        x, y = xd.copy(), yd.copy()
        active = np.nonzero(np.isfinite(xd) & np.isfinite(yd))[0]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for _ in range(iterations):
                if active.size == 0:
                    break
                xa, ya = x[active], y[active]
                c1, c2, q1, q2, c3 = k1[active], k2[active], p1[active], p2[active], k3[active]
                r2 = xa * xa + ya * ya
                radial = 1 + r2 * (c1 + r2 * (c2 + r2 * c3))
                drad = 2 * (c1 + r2 * (2 * c2 + 3 * c3 * r2))  # 2 d(radial)/d(r2)
                ex = xa * radial + 2 * q1 * xa * ya + q2 * (r2 + 2 * xa * xa) - xd[active]
                ey = ya * radial + q1 * (r2 + 2 * ya * ya) + 2 * q2 * xa * ya - yd[active]
                a = radial + xa * xa * drad + 2 * q1 * ya + 6 * q2 * xa
                b = xa * ya * drad + 2 * q1 * xa + 2 * q2 * ya
                d = radial + ya * ya * drad + 6 * q1 * ya + 2 * q2 * xa
                det = a * d - b * b
                sx = (d * ex - b * ey) / det
                sy = (a * ey - b * ex) / det
                x[active] = xa - sx
                y[active] = ya - sy
                active = active[~(np.abs(sx) + np.abs(sy) < 1e-13)]
            # A pixel beyond the range of the distortion model (the corners of a strongly
            # barrel-distorted image whose model folds back, e.g. k1 = -0.29 without k2) has
            # no physical preimage: Newton stops anywhere, or on a root past the fold (where
            # the radial factor is negative and the point lies on the other side of the
            # axis). Those become NaN, not a wrong coordinate.
            r2 = x * x + y * y
            radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
            slope = 1 + r2 * (3 * k1 + r2 * (5 * k2 + 7 * k3 * r2))  # d(r * radial) / dr
            ex = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
            ey = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
            focal = np.repeat(np.maximum(np.abs(fx), np.abs(fy))[:, 0], n_per)
            bad = ~((np.hypot(ex, ey) * focal < 1e-6) & (radial > 0) & (slope > 0))  # residual in pixels
        x[bad] = np.nan
        y[bad] = np.nan
        return np.stack([x, y], axis=-1).reshape(shape)

    def undistort_pixels(self, pixels: ArrayLike) -> FloatArray:
        """Distorted pixels (N, ..., 2) to the ideal pinhole pixels of the same cameras."""
        norm = self.undistort(pixels)
        m = self.matrix
        shape = norm.shape
        n = norm.reshape(self.n_cameras, -1, 2)
        u = m[:, 0, 0, None] * n[..., 0] + m[:, 0, 1, None] * n[..., 1] + m[:, 0, 2, None]
        v = m[:, 1, 1, None] * n[..., 1] + m[:, 1, 2, None]
        return np.stack([u, v], axis=-1).reshape(shape)

    def in_image(self, pixels: ArrayLike, margin: float = 0.0) -> NDArray[np.bool_]:
        """Whether pixels (N, ..., 2) fall inside each camera's image (NaN is outside)."""
        px = np.asarray(pixels, dtype=np.float64)
        w = self.size[:, 0].reshape((-1,) + (1,) * (px.ndim - 2))
        h = self.size[:, 1].reshape((-1,) + (1,) * (px.ndim - 2))
        x, y = px[..., 0], px[..., 1]
        return (x >= -0.5 + margin) & (x <= w - 0.5 - margin) & (y >= -0.5 + margin) & (y <= h - 0.5 - margin)

    # ----------------------------------------------------------- diagnostics
    def duplicate_cameras(self, rtol: float = 1e-9) -> list[tuple[str, str]]:
        """Pairs of cameras whose calibrations are identical (a copy-paste error).

        Examples
        --------
        >>> rig = CameraRig.from_params(["a", "b"], [np.eye(3)] * 2, [[0, 0, 0]] * 2, [[0, 0, 1]] * 2, [[10, 10]] * 2)
        >>> rig.duplicate_cameras()
        [('a', 'b')]
        """
        params = np.concatenate([self.matrix.reshape(self.n_cameras, -1), self.dist, self.rvec, self.tvec], axis=1)
        out = []
        for i, j in itertools.combinations(range(self.n_cameras), 2):
            if np.allclose(params[i], params[j], rtol=rtol, atol=1e-12):
                out.append((self.names[i], self.names[j]))
        return out

    # ------------------------------------------------------------------- I/O
    @classmethod
    def from_aniposelib(cls, group: CameraGroup) -> CameraRig:
        """Convert an ``aniposelib.cameras.CameraGroup``."""
        from aniposelib.cameras import FisheyeCamera

        cams = group.cameras
        if not cams:
            raise CalibrationError("the calibration has no cameras")
        fisheye = [c.get_name() for c in cams if isinstance(c, FisheyeCamera)]
        if fisheye:
            raise CalibrationError(f"fisheye cameras are not supported yet: {fisheye}")
        sizes = []
        for c in cams:
            size = c.get_size()
            if size is None:
                raise CalibrationError(f"camera {c.get_name()!r} has no image size")
            sizes.append(list(size))
        rig = cls(
            [c.get_name() for c in cams],
            np.stack([c.get_camera_matrix() for c in cams]),
            np.stack([np.pad(c.get_distortions(), (0, max(0, 5 - len(c.get_distortions())))) for c in cams]),
            np.stack([c.get_rotation() for c in cams]),
            np.stack([c.get_translation() for c in cams]),
            np.asarray(sizes),
            dict(group.metadata or {}),
        )
        return rig

    def to_aniposelib(self) -> CameraGroup:
        """Convert to an ``aniposelib.cameras.CameraGroup`` with the same parameters."""
        from aniposelib.cameras import Camera, CameraGroup

        cams = [
            Camera(
                matrix=self.matrix[i].copy(), dist=self.dist[i].copy(), size=[int(s) for s in self.size[i]],
                rvec=self.rvec[i].copy(), tvec=self.tvec[i].copy(), name=self.names[i],
            )
            for i in range(self.n_cameras)
        ]
        return CameraGroup(cams, metadata=dict(self.metadata))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CameraRig:
        """Read an anipose ``calibration.toml`` (through aniposelib).

        Every problem (missing file, not TOML, a camera lacking a field) is a
        :class:`CalibrationError` naming the file.
        """
        from aniposelib.cameras import CameraGroup

        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"{path}: calibration file not found")
        try:
            group = CameraGroup.load(str(path))
        except KeyError as exc:
            raise CalibrationError(f"{path}: a camera entry lacks the field {exc}") from None
        except Exception as exc:  # toml and numpy errors vary by version
            raise CalibrationError(f"{path}: not a readable anipose calibration ({type(exc).__name__}: {exc})") from None
        try:
            return cls.from_aniposelib(group)
        except CalibrationError as exc:
            raise CalibrationError(f"{path}: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise CalibrationError(f"{path}: malformed camera parameters ({exc})") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an anipose ``calibration.toml`` (through aniposelib), atomically."""
        with atomic_path(path) as tmp:
            self.to_aniposelib().dump(str(tmp))
        return Path(path)
