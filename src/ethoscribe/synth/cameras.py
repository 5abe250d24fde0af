"""Camera placement for the synthetic arena: a ring around and above the floor.

World frame: millimetres, z up, the arena floor is the plane z = 0 centred on
the origin. Camera frames follow OpenCV (x right, y down, z forward).
"""

from __future__ import annotations

import numpy as np

from ethoscribe.geometry.camera import CameraRig, matrix_to_rodrigues


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """World-to-camera rotation for a camera at ``center`` looking at ``target``.

    Examples
    --------
    >>> r = look_at(np.array([0, 0, 500.0]), np.zeros(3), up=np.array([0, 1.0, 0]))
    >>> np.allclose(r @ np.array([0, 0, -1.0]), [0, 0, 1])
    True
    """
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=float)
    fwd = np.asarray(target, dtype=float) - np.asarray(center, dtype=float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    if np.linalg.norm(right) < 1e-6:  # looking straight along `up`
        right = np.cross(fwd, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd])


def arena_rig(
    n_cameras: int,
    rng: np.random.Generator,
    arena_mm: float = 400.0,
    image_size: tuple[int, int] = (640, 512),
) -> CameraRig:
    """A ring of ``n_cameras`` cameras around and above a square arena.

    Cameras sit 480-560 mm from the arena centre horizontally and 300-420 mm
    up, evenly spread in azimuth with a little jitter, each aimed at a point
    near the arena centre, with focal lengths that frame the whole arena,
    principal points near the image centre and mild barrel distortion
    (k1 in [-0.12, -0.04]). With 6 or more cameras one of them looks down
    from above, as in most mouse rigs.

    Examples
    --------
    >>> rig = arena_rig(4, np.random.default_rng(0))
    >>> rig.names
    ['cam0', 'cam1', 'cam2', 'cam3']
    >>> bool(rig.in_image(rig.project(np.zeros((1, 3)))).all())
    True
    """
    if n_cameras < 1:
        raise ValueError("the rig needs at least one camera")
    w, h = image_size
    names = [f"cam{i}" for i in range(n_cameras)]
    matrices, rvecs, tvecs, dists = [], [], [], []
    n_ring = n_cameras - 1 if n_cameras >= 6 else n_cameras
    phase = rng.uniform(0, 2 * np.pi)
    for i in range(n_cameras):
        if i < n_ring:
            az = phase + 2 * np.pi * i / n_ring + rng.uniform(-0.15, 0.15)
            radius = rng.uniform(480, 560)
            height = rng.uniform(300, 420)
            center = np.array([radius * np.cos(az), radius * np.sin(az), height])
            up = None
        else:  # overhead camera
            center = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(620, 680)])
            up = np.array([0.0, 1.0, 0.0])
        target = np.array([rng.uniform(-25, 25), rng.uniform(-25, 25), 20.0])
        rot = look_at(center, target, up)
        # frame the whole arena volume (floor to 120 mm up) with a 6 % margin
        corners = np.array([[sx * arena_mm / 2, sy * arena_mm / 2, z] for sx in (-1, 1) for sy in (-1, 1) for z in (0, 120)])
        cam_pts = (corners - center) @ rot.T
        norm = np.abs(cam_pts[:, :2] / cam_pts[:, 2:3])
        f = 0.94 * min((0.5 * w) / norm[:, 0].max(), (0.5 * h) / norm[:, 1].max()) * rng.uniform(0.97, 1.0)
        k = np.array([[f, 0, w / 2 - 0.5 + rng.uniform(-6, 6)], [0, f, h / 2 - 0.5 + rng.uniform(-6, 6)], [0, 0, 1]])
        dist = np.array([rng.uniform(-0.12, -0.04), rng.uniform(0.0, 0.05), rng.uniform(-5e-4, 5e-4), rng.uniform(-5e-4, 5e-4), 0.0])
        matrices.append(k)
        rvecs.append(matrix_to_rodrigues(rot))
        tvecs.append(-rot @ center)
        dists.append(dist)
    return CameraRig.from_params(names, matrices, rvecs, tvecs, [[w, h]] * n_cameras, dist=dists)


def perturb_rig(rig: CameraRig, rng: np.random.Generator, target_px: float) -> CameraRig:
    """A copy of ``rig`` with small calibration errors of about ``target_px`` reprojection error.

    Rotation, translation and focal length are perturbed, then the size of the
    perturbation is rescaled (by bisection) so that the RMS reprojection error
    of points spread over the arena volume is ``target_px``: a calibration as
    good as a careful lab's (0.5 px) or a hurried one's (1 px).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rig = arena_rig(4, rng)
    >>> bad = perturb_rig(rig, rng, 0.5)
    >>> pts = rng.uniform([-200, -200, 0], [200, 200, 80], size=(500, 3))
    >>> err = np.linalg.norm(bad.project(pts) - rig.project(pts), axis=-1)
    >>> bool(0.4 < np.sqrt(np.mean(err ** 2)) < 0.6)
    True
    """
    if target_px <= 0:
        return rig.copy()
    pts = rng.uniform([-200, -200, 0], [200, 200, 80], size=(400, 3))
    ref = rig.project(pts)
    d_rot = rng.normal(size=(rig.n_cameras, 3))
    d_t = rng.normal(size=(rig.n_cameras, 3))
    d_f = rng.normal(size=rig.n_cameras)

    def make(scale: float) -> CameraRig:
        out = rig.copy()
        out.rvec = rig.rvec + scale * 1e-3 * d_rot
        out.tvec = rig.tvec + scale * 0.5 * d_t
        out.matrix = rig.matrix.copy()
        out.matrix[:, 0, 0] *= 1 + scale * 2e-3 * d_f
        out.matrix[:, 1, 1] *= 1 + scale * 2e-3 * d_f
        out.__post_init__()
        return out

    def rms(scale: float) -> float:
        return float(np.sqrt(np.nanmean(np.sum((make(scale).project(pts) - ref) ** 2, axis=-1))))

    lo, hi = 0.0, 1.0
    while rms(hi) < target_px:
        hi *= 2
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rms(mid) < target_px else (lo, mid)
    return make(0.5 * (lo + hi))
