"""A parametric 3D mouse: body ellipsoids, surface markers and a trotting gait.

World frame: millimetres, z up, floor z = 0. The body is a chain of spine
nodes from the tail base (``s = 0``) to the nose (``s = L``, about 96 mm),
shaped per frame by a few posture controls (:class:`Posture`): position and
heading, lateral bend, front pitch about the hips (rearing), hunch (arch),
stretch, head yaw and pitch, breathing and the tail's direction. Five
ellipsoids dress the chain: abdomen, thorax, head and two thin tail pieces.
The 12 markers of :func:`ethoscribe.skeleton.mouse12` sit on the body surface
(found by casting rays onto the ellipsoids), on the tail, and on the paws.

Paws follow a trot (diagonal pairs in phase): each paw is planted on the
floor during stance (its position does not move) and swings along an arc to
a footprint ahead of its nominal place under the shoulder or hip; stride
length and duty factor follow the speed. While rearing the front paws are
lifted in front of the chest, while grooming they stroke the face.

Examples
--------
>>> import numpy as np
>>> shape = MouseShape()
>>> post = Posture.still(5, x=0.0, y=0.0, heading=0.0)
>>> body = body_geometry(shape, post)
>>> body.markers.shape, body.ellipsoids.centers.shape
((5, 12, 3), (5, 5, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from numpy.typing import NDArray

from ethoscribe.skeleton import mouse12

FloatArray = NDArray[np.float64]

KEYPOINTS: tuple[str, ...] = mouse12().keypoints
KP = {k: i for i, k in enumerate(KEYPOINTS)}
ELLIPSOID_NAMES: tuple[str, ...] = ("abdomen", "thorax", "head", "tail_base", "tail_end")
PAW_NAMES: tuple[str, ...] = ("paw_front_left", "paw_front_right", "paw_hind_left", "paw_hind_right")
PAW_INDEX = np.array([KP[p] for p in PAW_NAMES])
#: trot: front-left with hind-right, front-right with hind-left
PAW_PHASE_OFFSET = np.array([0.0, 0.5, 0.5, 0.0])
#: height of a paw marker above the floor while the paw is planted (mm)
PAW_MARKER_Z = 1.8

# spine nodes (fraction of nose-to-tail-base length) and the flat centreline height profile (mm)
_S = np.array([0.0, 0.05, 0.12, 0.2, 0.27, 0.35, 0.45, 0.5, 0.59, 0.66, 0.74, 0.8, 0.87, 0.94, 1.0])
_PIVOT = 3  # hips: rearing pitches everything in front of this node
_ROOT_S = 0.45  # the trajectory's (x, y) is this point of the flat body
_NECK_S = 0.74
_H_PROFILE = (np.array([0.0, 0.05, 0.2, 0.35, 0.5, 0.65, 0.78, 0.9, 1.0]),
              np.array([10.0, 12.5, 17.0, 18.5, 18.0, 17.0, 16.0, 14.0, 10.0]))


@dataclass(frozen=True)
class MouseShape:
    """Size of one animal.

    ``scale`` multiplies the nose-to-tail-base length (96 mm at 1.0) and the
    body's height, ``width`` its girth, ``tail_scale`` the tail (80 mm).
    """

    scale: float = 1.0
    width: float = 1.0
    tail_scale: float = 1.0

    @property
    def body_length(self) -> float:
        """Nose to tail base (mm)."""
        return 96.0 * self.scale

    @property
    def tail_length(self) -> float:
        """Tail base to tip (mm)."""
        return 80.0 * self.tail_scale

    @classmethod
    def random(cls, rng: np.random.Generator) -> MouseShape:
        """A random adult mouse: +-6 % length, +-8 % girth, +-10 % tail."""
        return cls(
            scale=float(rng.uniform(0.94, 1.06)),
            width=float(rng.uniform(0.92, 1.08)),
            tail_scale=float(rng.uniform(0.9, 1.1)),
        )


@dataclass
class Posture:
    """Per-frame posture controls of one animal, each an array of shape (T,).

    Angles in radians, lengths in mm. ``heading`` is the yaw of the body at
    the root point (``x``, ``y``); ``bend`` the lateral curvature of the spine
    (1/mm, positive bends the front to the left); ``pitch`` the front body's
    pitch about the hips (rearing); ``arch`` the hunch (0..1); ``stretch`` a
    length factor; ``head_yaw`` / ``head_pitch`` relative to the neck;
    ``breath`` a relative girth change of the abdomen; ``rear_w`` / ``groom_w``
    how far the front paws have moved to their rearing / grooming places
    (0..1); ``groom_phase`` the phase (rad) of grooming strokes;
    ``tail_yaw1`` / ``tail_yaw2`` the world yaw of the two tail pieces
    (pointing from base towards tip).
    """

    x: FloatArray
    y: FloatArray
    heading: FloatArray
    bend: FloatArray
    pitch: FloatArray
    arch: FloatArray
    stretch: FloatArray
    head_yaw: FloatArray
    head_pitch: FloatArray
    breath: FloatArray
    rear_w: FloatArray
    groom_w: FloatArray
    groom_phase: FloatArray
    tail_yaw1: FloatArray
    tail_yaw2: FloatArray

    @property
    def n_frames(self) -> int:
        return len(self.x)

    @classmethod
    def still(cls, n: int, x: float = 0.0, y: float = 0.0, heading: float = 0.0, **values: float) -> Posture:
        """A constant posture for ``n`` frames (others default to a relaxed, flat body)."""
        base = dict(x=x, y=y, heading=heading, bend=0.0, pitch=0.0, arch=0.0, stretch=1.0, head_yaw=0.0,
                    head_pitch=0.0, breath=0.0, rear_w=0.0, groom_w=0.0, groom_phase=0.0,
                    tail_yaw1=heading + np.pi, tail_yaw2=heading + np.pi)
        base.update(values)
        return cls(**{k: np.full(n, float(v)) for k, v in base.items()})

    def take(self, idx: NDArray[np.int64] | slice) -> Posture:
        """The posture at the given frames."""
        return Posture(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass
class Ellipsoids:
    """Ellipsoids stacked over leading dimensions (..., E).

    ``centers`` (..., E, 3); ``axes`` (..., E, 3, 3) whose *columns* are the
    unit axes (long, lateral, up) in world coordinates; ``radii`` (..., E, 3)
    the semi-axes along them. A point X is inside when
    ``|axes^T (X - c) / radii| < 1``.
    """

    centers: FloatArray
    axes: FloatArray
    radii: FloatArray

    def take(self, idx: NDArray[np.int64] | slice) -> Ellipsoids:
        return Ellipsoids(self.centers[idx], self.axes[idx], self.radii[idx])

    @staticmethod
    def concat(items: list[Ellipsoids]) -> Ellipsoids:
        """Join ellipsoid sets along the ellipsoid dimension E."""
        return Ellipsoids(
            np.concatenate([e.centers for e in items], axis=-2),
            np.concatenate([e.axes for e in items], axis=-3),
            np.concatenate([e.radii for e in items], axis=-2),
        )

    def inside(self, points: FloatArray, margin: float = 0.0) -> NDArray[np.bool_]:
        """Whether points (..., P, 3) lie inside any ellipsoid (..., E): (..., P)."""
        d = points[..., :, None, :] - self.centers[..., None, :, :]
        local = np.einsum("...eji,...pej->...pei", self.axes, d) / (self.radii[..., None, :, :] + margin)
        return np.any(np.sum(local * local, axis=-1) < 1.0, axis=-1)


def ray_hits(origin: FloatArray, direction: FloatArray, ell: Ellipsoids) -> tuple[FloatArray, FloatArray]:
    """Entry and exit ray parameters of rays ``origin + t * direction`` with ellipsoids.

    ``origin``/``direction`` (..., R, 3), ellipsoids (..., E): returns
    ``t_in``, ``t_out`` (..., R, E), NaN where the ray misses.
    """
    inv_r = 1.0 / ell.radii[..., None, :, :]
    o = np.einsum("...eji,...rej->...rei", ell.axes, origin[..., :, None, :] - ell.centers[..., None, :, :]) * inv_r
    d = np.einsum("...eji,...rj->...rei", ell.axes, direction) * inv_r
    a = np.sum(d * d, axis=-1)
    b = np.sum(o * d, axis=-1)
    c = np.sum(o * o, axis=-1) - 1.0
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        root = np.sqrt(np.where(disc > 0, disc, np.nan))
    return (-b - root) / a, (-b + root) / a


def _surface_point(anchor: FloatArray, direction: FloatArray, ell: Ellipsoids, offset: float, reach: float = 80.0) -> FloatArray:
    """The outermost body surface point along ``direction`` from ``anchor``, pushed ``offset`` mm further out.

    anchor/direction (T, R, 3), ellipsoids (T, E): (T, R, 3).
    """
    origin = anchor + reach * direction
    t_in, _ = ray_hits(origin, -direction, ell)
    t = np.where(t_in > 0, t_in, np.inf).min(axis=-1)
    t = np.where(np.isfinite(t), t, reach)
    return origin - (t - offset)[..., None] * direction


def _unit(v: FloatArray) -> FloatArray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass
class BodyGeometry:
    """The body of one animal over T frames.

    ``markers`` (T, 12, 3) holds every keypoint except the paws (NaN there:
    the gait fills them); ``ellipsoids`` (T, 5); ``nominal_feet`` (T, 4, 3)
    the resting place of each paw under shoulders and hips;
    ``rear_paws``/``groom_paws`` (T, 4, 3) where the front paws go when
    rearing / grooming; ``spine`` (T, N, 3) the spine nodes.
    """

    markers: FloatArray
    ellipsoids: Ellipsoids
    nominal_feet: FloatArray
    rear_paws: FloatArray
    groom_paws: FloatArray
    spine: FloatArray


def _keep_inside(start: FloatArray, yaw: FloatArray, length: FloatArray, lim: float) -> FloatArray:
    """Yaw closest to ``yaw`` whose segment of horizontal ``length`` from ``start`` stays within +-lim."""
    yaw = yaw.copy()
    length = np.maximum(length, 1e-9)

    def outside(y: FloatArray) -> NDArray[np.bool_]:
        end = start[:, :2] + length[:, None] * np.stack([np.cos(y), np.sin(y)], axis=-1)
        return np.any(np.abs(end) > lim + 1e-6, axis=-1)

    for _ in range(3):
        for axis, sign in ((0, 1.0), (0, -1.0), (1, 1.0), (1, -1.0)):
            rot = 0.0 if axis == 0 else np.pi / 2  # angle measured from the wall's normal axis
            a = yaw - rot
            bound = (lim - sign * start[:, axis]) / length  # need sign * cos(a) <= bound
            bad = sign * np.cos(a) > bound
            if np.any(bad):
                new = np.arccos(np.clip(sign * bound, -1.0, 1.0))
                side = np.where(np.sin(a) >= 0, 1.0, -1.0)
                yaw = np.where(bad, side * new + rot, yaw)
    still = outside(yaw)
    if np.any(still):  # a corner: point the segment at the arena centre
        yaw = np.where(still, np.arctan2(-start[:, 1], -start[:, 0]), yaw)
    return yaw


def body_geometry(shape: MouseShape, post: Posture, arena_mm: float | None = None) -> BodyGeometry:
    """Spine, ellipsoids, surface markers and paw targets of one animal, vectorised over frames.

    With ``arena_mm`` the tail is kept inside the square arena (it slides along a wall).
    """
    T = post.n_frames
    L = shape.body_length
    S = _S
    n = len(S)
    # ---- sagittal (u forward, h up) profile of the flat body, then arch, stretch, pitch
    h = np.interp(S, *_H_PROFILE) * shape.scale  # (n,)
    u = S * L
    arch = post.arch[:, None]
    hh = h[None, :] + arch * 7.0 * shape.scale * np.sin(np.pi * S)[None, :]
    u_piv = u[_PIVOT]
    uu = u_piv + (u[None, :] - u_piv) * post.stretch[:, None] * (1.0 - 0.05 * arch)
    du = np.diff(uu, axis=1)  # (T, n-1)
    dh = np.diff(hh, axis=1)
    seg_s = S[:-1]
    seg_mid = 0.5 * (S[:-1] + S[1:])
    # rearing pitches the front about the hips, spread over the lumbar segments
    ramp = np.clip((seg_s - S[_PIVOT]) / 0.15 + 0.5, 0.0, 1.0) * (seg_s >= S[_PIVOT])
    alpha = post.pitch[:, None] * ramp[None, :] + post.head_pitch[:, None] * (seg_s >= _NECK_S)[None, :]
    ca, sa = np.cos(alpha), np.sin(alpha)
    du_p = du * ca - dh * sa
    dh_p = du * sa + dh * ca
    psi = (post.heading[:, None] + post.bend[:, None] * L * (seg_mid - _ROOT_S)[None, :]
           + post.head_yaw[:, None] * (seg_s >= _NECK_S)[None, :])
    cpsi, spsi = np.cos(psi), np.sin(psi)
    seg = np.stack([du_p * cpsi, du_p * spsi, dh_p], axis=-1)  # (T, n-1, 3)
    # hip position: the flat body's root sits at (x, y)
    root_node = int(np.nonzero(np.isclose(S, _ROOT_S))[0][0])
    flat = np.stack([du * cpsi, du * spsi], axis=-1)[:, _PIVOT:root_node].sum(axis=1)
    hip = np.stack([post.x - flat[:, 0], post.y - flat[:, 1], hh[:, _PIVOT]], axis=-1)
    nodes = np.empty((T, n, 3))
    nodes[:, _PIVOT] = hip
    nodes[:, _PIVOT + 1:] = hip[:, None, :] + np.cumsum(seg[:, _PIVOT:], axis=1)
    nodes[:, :_PIVOT] = hip[:, None, :] - np.cumsum(seg[:, :_PIVOT][:, ::-1], axis=1)[:, ::-1]

    def spine_at(s: float) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Position, tangent, lateral and up unit vectors at fraction s: each (T, 3)."""
        k = int(np.clip(np.searchsorted(S, s, side="right") - 1, 0, n - 2))
        w = (s - S[k]) / (S[k + 1] - S[k])
        pos = nodes[:, k] * (1 - w) + nodes[:, k + 1] * w
        tan = _unit(seg[:, k])
        yaw = psi[:, k]
        lat = np.stack([-np.sin(yaw), np.cos(yaw), np.zeros(T)], axis=-1)
        lat = _unit(lat - np.sum(lat * tan, axis=-1, keepdims=True) * tan)
        up = np.cross(tan, lat)
        return pos, tan, lat, up

    # ---- ellipsoids
    def ellipsoid(s0: float, s1: float, sc: float, lat_r: float, up_r: float, pad: float = 1.0) -> tuple[FloatArray, FloatArray, FloatArray]:
        p0, _, _, _ = spine_at(s0)
        p1, _, _, _ = spine_at(s1)
        pc, _, lat, _ = spine_at(sc)
        axis = _unit(p1 - p0)
        lat = _unit(lat - np.sum(lat * axis, axis=-1, keepdims=True) * axis)
        up = np.cross(axis, lat)
        half = 0.5 * np.linalg.norm(p1 - p0, axis=-1) * pad
        center = 0.25 * (p0 + p1) + 0.5 * pc  # between the chord's middle and the spine
        radii = np.stack([half, np.full(T, lat_r), np.full(T, up_r)], axis=-1)
        return center, np.stack([axis, lat, up], axis=-1), radii

    w = shape.width
    breath = 1.0 + post.breath
    c_abd, a_abd, r_abd = ellipsoid(0.05, 0.59, 0.32, 0.175 * L * w, 0.145 * L)
    r_abd[:, 1] *= breath
    r_abd[:, 2] *= breath
    c_tho, a_tho, r_tho = ellipsoid(0.43, 0.83, 0.63, 0.14 * L * w, 0.125 * L)
    c_head, a_head, r_head = ellipsoid(0.74, 1.0, 0.87, 0.095 * L, 0.085 * L)
    # ---- tail: two pieces from the tail base, lying towards the floor
    base = nodes[:, 0]
    lt = 0.5 * shape.tail_length
    z_mid, z_tip = 3.0, 1.6
    def tail_piece(start: FloatArray, yaw: FloatArray, z_end: float) -> FloatArray:
        dz = z_end - start[:, 2]
        hl = np.sqrt(np.maximum(lt * lt - dz * dz, 1.0))
        if arena_mm is not None:
            yaw = _keep_inside(start, yaw, hl, arena_mm / 2 - 3.0)
        return start + np.stack([hl * np.cos(yaw), hl * np.sin(yaw), dz], axis=-1)
    mid = tail_piece(base, post.tail_yaw1, z_mid)
    tip = tail_piece(mid, post.tail_yaw2, z_tip)
    r_t1 = 2.6 * shape.tail_scale
    r_t2 = 1.5 * shape.tail_scale

    def tail_ellipsoid(p0: FloatArray, p1: FloatArray, r: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        axis = _unit(p1 - p0)
        lat = _unit(np.cross(np.array([0.0, 0.0, 1.0]), axis))
        up = np.cross(axis, lat)
        half = 0.5 * np.linalg.norm(p1 - p0, axis=-1) + 3.0
        return 0.5 * (p0 + p1), np.stack([axis, lat, up], axis=-1), np.stack([half, np.full(T, r), np.full(T, r)], axis=-1)

    c_t1, a_t1, rr_t1 = tail_ellipsoid(base, mid, r_t1)
    c_t2, a_t2, rr_t2 = tail_ellipsoid(mid, tip, r_t2)
    ell = Ellipsoids(
        np.stack([c_abd, c_tho, c_head, c_t1, c_t2], axis=1),
        np.stack([a_abd, a_tho, a_head, a_t1, a_t2], axis=1),
        np.stack([r_abd, r_tho, r_head, rr_t1, rr_t2], axis=1),
    )
    body = ell.take((slice(None), slice(0, 3)))

    # ---- markers on the surface
    markers = np.full((T, 12, 3), np.nan)
    for name, s in (("back_rear", 0.24), ("back_mid", 0.5), ("back_front", 0.79)):
        pos, _, _, up = spine_at(s)
        markers[:, KP[name]] = _surface_point(pos[:, None], up[:, None], body, offset=1.0)[:, 0]
    hax, hlat, hup = a_head[..., 0], a_head[..., 1], a_head[..., 2]
    ear_anchor = c_head - 0.3 * r_head[:, :1] * hax
    for name, side in (("ear_left", 1.0), ("ear_right", -1.0)):
        d = _unit(0.8 * hup + side * 0.7 * hlat - 0.15 * hax)
        markers[:, KP[name]] = _surface_point(ear_anchor[:, None], d[:, None], body, offset=2.5)[:, 0]
    zup = np.array([0.0, 0.0, 1.0])
    markers[:, KP["tail_base"]] = base + (r_t1 + 0.8) * zup
    markers[:, KP["tail_mid"]] = mid + (r_t2 + 1.0) * zup
    markers[:, KP["tail_tip"]] = tip + 1.2 * zup

    # ---- paw targets
    feet = np.empty((T, 4, 3))
    for i, (s, lat_off, back) in enumerate(((0.66, 0.16, 0.0), (0.66, -0.16, 0.0), (0.18, 0.2, 0.02), (0.18, -0.2, 0.02))):
        # the flat body's shoulder / hip place on the floor (pitch ignored: these are where the paws rest)
        k = int(np.searchsorted(S, s, side="right") - 1)
        yaw = psi[:, k]
        fwd = np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)
        lat = np.stack([-np.sin(yaw), np.cos(yaw)], axis=-1)
        along = (s - back - _ROOT_S) * L * post.stretch
        feet[:, i, :2] = np.stack([post.x, post.y], axis=-1) + along[:, None] * fwd + (lat_off * L * w) * lat
        feet[:, i, 2] = PAW_MARKER_Z
    tax, tlat, tup = a_tho[..., 0], a_tho[..., 1], a_tho[..., 2]
    rear_paws = np.full((T, 4, 3), np.nan)
    groom_paws = np.full((T, 4, 3), np.nan)
    stroke = 0.5 * (1.0 + np.sin(post.groom_phase))
    for i, side in ((0, 1.0), (1, -1.0)):
        d = _unit(-0.8 * tup + 0.45 * tax + side * 0.5 * tlat)
        rear_paws[:, i] = _surface_point((c_tho + 0.3 * r_tho[:, :1] * tax)[:, None], d[:, None], body, offset=4.0)[:, 0]
        d = _unit(0.8 * hax - 0.6 * hup + side * 0.45 * hlat)
        off = 2.5 + 5.0 * (stroke if side > 0 else 1.0 - stroke)
        gp = _surface_point(c_head[:, None], d[:, None], body, offset=0.0)[:, 0]
        groom_paws[:, i] = gp + off[:, None] * d + (2.0 * np.cos(post.groom_phase))[:, None] * hup
    return BodyGeometry(markers, ell, feet, rear_paws, groom_paws, nodes)


@dataclass
class GaitResult:
    """Paw positions (T, 4, 3) and whether each paw is planted (T, 4)."""

    paws: FloatArray
    stance: NDArray[np.bool_]


def trot(shape: MouseShape, nominal_feet: FloatArray, speed: FloatArray, omega: FloatArray, fps: float,
         arena_mm: float | None = None) -> GaitResult:
    """Trotting paws that stay planted on the floor during stance.

    Stride frequency follows the demand on the feet (forward speed plus
    rotation); stride length grows with speed (about 40 mm at 100 mm/s, 80
    mm at 400 mm/s) and the duty factor falls from 0.68 to 0.44. When the
    animal is (nearly) still it takes a step only when a paw has drifted
    more than 10 mm from its resting place, then settles with all paws down.
    With ``arena_mm`` footprints stay on the arena floor (a paw lands at the wall, not in it).
    """
    T = len(speed)
    dt = 1.0 / fps
    L = shape.body_length
    v = np.abs(speed)
    v_eff = v + 0.25 * L * np.abs(omega)
    stride = (25.0 + 0.14 * v) * shape.scale
    freq = v_eff / stride
    duty = np.clip(0.68 - 0.0006 * v, 0.44, 0.68)
    lift = np.clip(4.5 + 0.015 * v, 4.5, 11.0) * shape.scale
    vel = np.gradient(nominal_feet[:, :, :2], axis=0) * fps if T > 1 else np.zeros((T, 4, 2))
    paws = np.empty((T, 4, 3))
    stance = np.zeros((T, 4), bool)
    wall = np.inf if arena_mm is None else arena_mm / 2 - 2.0
    planted = np.clip(nominal_feet[0, :, :2], -wall, wall)
    start = planted.copy()
    target = planted.copy()
    in_stance = np.ones(4, bool)
    beta = np.full(4, duty[0])
    phi = 0.0  # phase of the front-left paw, in cycles
    prev_u = np.mod(phi + PAW_PHASE_OFFSET, 1.0)
    stepping = False
    for t in range(T):
        f = freq[t]
        if f < 0.8:  # nearly still: step only to reposition, then settle with every paw down
            if not in_stance.all():
                stepping = True
            else:
                drift = np.max(np.hypot(*(planted - nominal_feet[t, :, :2]).T))
                stepping = bool(drift > (4.0 if stepping else 10.0))
            f = 2.5 if stepping else 0.0
        phi += f * dt
        u = np.mod(phi + PAW_PHASE_OFFSET, 1.0)
        wrapped = u < prev_u - 1e-9
        fr = max(f, 1.0)
        lim = 0.6 * stride[t]
        for p in range(4):
            if wrapped[p]:  # touchdown at the footprint chosen during the swing
                if in_stance[p]:  # the whole swing fell between two frames (low frame rate)
                    off = vel[t, p] * (0.5 * duty[t] / fr)
                    nrm = np.hypot(off[0], off[1])
                    target[p] = np.clip(nominal_feet[t, p, :2] + (off * (lim / nrm) if nrm > lim else off), -wall, wall)
                planted[p] = target[p]
                in_stance[p] = True
                beta[p] = duty[t]
            if in_stance[p] and u[p] >= beta[p]:  # lift-off
                in_stance[p] = False
                start[p] = planted[p]
            if in_stance[p]:
                paws[t, p, :2] = planted[p]
                paws[t, p, 2] = PAW_MARKER_Z
                stance[t, p] = True
                continue
            s = (u[p] - beta[p]) / (1.0 - beta[p])
            ahead = (1.0 - u[p]) / fr + 0.5 * duty[t] / fr
            off = vel[t, p] * ahead
            nrm = np.hypot(off[0], off[1])
            if nrm > lim:
                off = off * (lim / nrm)
            tgt = nominal_feet[t, p, :2] + off
            if arena_mm is not None:
                tgt = np.clip(tgt, -wall, wall)
            target[p] = tgt
            e = s * s * (3.0 - 2.0 * s)
            paws[t, p, :2] = start[p] + (tgt - start[p]) * e
            paws[t, p, 2] = PAW_MARKER_Z + lift[t] * np.sin(np.pi * s)
        prev_u = u
    return GaitResult(paws, stance)


@dataclass
class AnimalMotion:
    """Keypoints (T, 12, 3), ellipsoids (T, 5), paw stance (T, 4) of one animal."""

    keypoints: FloatArray
    ellipsoids: Ellipsoids
    stance: NDArray[np.bool_]
    shape: MouseShape = field(default_factory=MouseShape)


def animate(shape: MouseShape, post: Posture, speed: FloatArray, omega: FloatArray, fps: float,
            arena_mm: float | None = None) -> AnimalMotion:
    """Body geometry plus gait: the full 3D motion of one animal."""
    body = body_geometry(shape, post, arena_mm)
    gait = trot(shape, body.nominal_feet, speed, omega, fps, arena_mm)
    kp = body.markers.copy()
    paws = gait.paws.copy()
    wr = np.clip(post.rear_w, 0.0, 1.0)[:, None]
    wg = np.clip(post.groom_w, 0.0, 1.0)[:, None]
    wsum = np.clip(wr + wg, 1e-9, None)
    wtot = np.clip(wr + wg, 0.0, 1.0)
    for i in (0, 1):
        pose = (wr * np.nan_to_num(body.rear_paws[:, i]) + wg * np.nan_to_num(body.groom_paws[:, i])) / wsum
        paws[:, i] = np.where(wtot > 1e-6, (1 - wtot) * gait.paws[:, i] + wtot * pose, gait.paws[:, i])
    kp[:, PAW_INDEX] = paws
    stance = gait.stance.copy()
    stance[:, :2] &= (wtot[:, 0] < 1e-3)[:, None]
    return AnimalMotion(kp, body.ellipsoids, stance, shape)
