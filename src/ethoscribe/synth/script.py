"""The behaviour script: who does what, when, and the motion that goes with it.

Each animal runs a Markov chain of bouts (0.5-4 s) over six solo behaviours,
with plausible transitions (a rear follows a walk or a rest, a run ends in a
walk or a turn, ...):

- ``rest``: still, breathing (about 3 Hz), small head movements.
- ``walk``: 50-150 mm/s trot, wandering heading (turns happen during walks).
- ``run``: 220-390 mm/s, less wandering, slowing near walls and corners.
- ``turn``: rotation in place or a tight turn (90-200 deg/s, 0-40 mm/s) with a bent body.
- ``rear``: hind paws planted, front body pitched up 60-82 degrees about the hips
  (back_front rises 40-55 mm), front paws lifted, head scanning.
- ``groom``: sitting hunched, front paws stroking the face at 4-6 Hz, head bobbing.

With two or more animals there are social bouts, labelled on the animal that
does them, with the other animal as ``partner``:

- ``approach``: walk towards another animal until close (or give up after 4 s).
- ``contact``: after an approach, nose and ears close to the other's body, slow.
- ``follow``: trail a walking animal (labelled ``walk``) 60-150 mm behind.
- ``chase``: follow a running animal (labelled ``run``) at running speed.

Follows and chases are preceded by an approach when the animals are apart.
With 2+ animals the first chase is scheduled about 3 s in (after the
approach it needs): scripts of 10 s or more always contain one. Animals steer away from the arena walls and from each
other; they never leave the arena.

Motion is simulated frame by frame (speed and turn rate relax towards each
behaviour's targets with 0.1 s time constants, posture controls blend over
about 0.25 s), so behaviours change smoothly and the label is faithful to the
motion while still overlapping at the edges (slow runs, fast walks, turns
inside walks).

Examples
--------
>>> import numpy as np
>>> script = make_script(n_animals=1, n_frames=90, fps=30, arena_mm=400, rng=np.random.default_rng(0))
>>> script.labels.shape
(90, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

from ethoscribe.synth.mouse import AnimalMotion, MouseShape, Posture, animate

SOLO: tuple[str, ...] = ("rest", "walk", "run", "turn", "rear", "groom")
SOCIAL: tuple[str, ...] = ("approach", "follow", "chase", "contact")
BEHAVIOURS: tuple[str, ...] = SOLO + SOCIAL

#: solo transition probabilities (rows: current behaviour; social bouts continue as the row named)
TRANSITIONS: dict[str, dict[str, float]] = {
    "rest": {"walk": 0.40, "groom": 0.22, "rear": 0.15, "turn": 0.23},
    "walk": {"rest": 0.22, "run": 0.15, "turn": 0.25, "rear": 0.23, "groom": 0.07, "walk": 0.0},
    "run": {"walk": 0.55, "turn": 0.25, "rest": 0.20},
    "turn": {"walk": 0.50, "rest": 0.15, "rear": 0.15, "run": 0.10, "groom": 0.10},
    "rear": {"rest": 0.35, "walk": 0.30, "turn": 0.25, "groom": 0.10},
    "groom": {"rest": 0.45, "walk": 0.30, "turn": 0.15, "rear": 0.10},
}
_AS_ROW = {"approach": "walk", "follow": "walk", "chase": "run", "contact": "rest"}

#: bout durations (s): lower and upper bounds of the draw
DURATIONS: dict[str, tuple[float, float]] = {
    "rest": (0.8, 3.5), "walk": (0.8, 3.5), "run": (0.6, 1.8), "turn": (0.5, 1.3),
    "rear": (0.8, 2.5), "groom": (1.5, 4.0), "follow": (1.2, 3.5), "chase": (0.9, 2.2),
    "contact": (0.6, 2.0), "approach": (0.4, 4.0),
}
#: probability that a bout decision of an animal (2+ animals) starts a social bout, and the mix
P_SOCIAL = 0.3
SOCIAL_MIX = {"approach": 0.45, "follow": 0.3, "chase": 0.25}
MIN_DYNAMIC_BOUT_S = 0.4
MAX_MERGED_S = 5.0


@dataclass
class Bout:
    """One bout of one animal: frames ``start`` (inclusive) to ``end`` (exclusive)."""

    individual: int
    behaviour: str
    start: int
    end: int
    partner: int | None = None


@dataclass
class Script:
    """A behaviour script and the motion controls it produced.

    ``labels`` / ``partners`` (T, I) strings (partner is ``""`` outside social
    bouts); ``speed`` (mm/s, along the heading) and ``omega`` (rad/s) (T, I);
    ``postures`` one :class:`~ethoscribe.synth.mouse.Posture` per animal.
    """

    fps: float
    arena_mm: float
    individuals: list[str]
    shapes: list[MouseShape]
    labels: NDArray[np.str_]
    partners: NDArray[np.str_]
    speed: NDArray[np.float64]
    omega: NDArray[np.float64]
    postures: list[Posture]
    bouts: list[Bout] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return self.labels.shape[0]

    def motions(self) -> list[AnimalMotion]:
        """The 3D motion (keypoints, ellipsoids, paw stance) of every animal."""
        return [animate(self.shapes[i], self.postures[i], self.speed[:, i], self.omega[:, i], self.fps, self.arena_mm)
                for i in range(len(self.individuals))]


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _smooth(x: NDArray[np.float64], tau: float, fps: float, passes: int = 2) -> NDArray[np.float64]:
    """Causal exponential smoothing of a 1-D series, ``passes`` times (critically damped for 2)."""
    a = 1.0 - math.exp(-1.0 / (tau * fps))
    out = np.asarray(x, dtype=np.float64)
    for _ in range(passes):
        out, _ = lfilter([a], [1, -(1 - a)], out, zi=np.array([(1 - a) * out[0]]))
    return out


class _Agent:
    __slots__ = ("i", "shape", "L", "x", "y", "h", "v", "w", "beh", "start", "end", "partner", "goal", "role",
                 "vb", "wb", "alpha", "fg", "ou_w", "ou_v", "ou_head", "wall_turn")

    def __init__(self, i: int, shape: MouseShape, x: float, y: float, h: float) -> None:
        self.i = i
        self.shape = shape
        self.L = shape.body_length
        self.x, self.y, self.h = x, y, h
        self.v = 0.0
        self.w = 0.0
        self.beh = "rest"
        self.start = 0
        self.end = 0
        self.partner: int | None = None
        self.goal: str | None = None
        self.role: str | None = None  # "leader" while another animal follows or chases it
        self.vb = 0.0
        self.wb = 0.0
        self.alpha = 0.0
        self.fg = 5.0
        self.ou_w = 0.0
        self.ou_v = 0.0
        self.ou_head = 0.0
        self.wall_turn = 0.0  # the side it turns away from a wall it faces head-on (kept until clear of the wall)

    def nose(self) -> tuple[float, float]:
        return self.x + 0.55 * self.L * math.cos(self.h), self.y + 0.55 * self.L * math.sin(self.h)


def _ell_distance(px: float, py: float, other: _Agent) -> float:
    """Distance of a point from ``other``'s body in body-ellipse units (1 = on its outline)."""
    cx = other.x + 0.05 * other.L * math.cos(other.h)
    cy = other.y + 0.05 * other.L * math.sin(other.h)
    dx, dy = px - cx, py - cy
    c, s = math.cos(other.h), math.sin(other.h)
    lx, ly = dx * c + dy * s, -dx * s + dy * c
    return math.hypot(lx / (0.5 * other.L), ly / (0.18 * other.L))


class _Simulator:
    def __init__(self, n_animals: int, n_frames: int, fps: float, arena_mm: float, rng: np.random.Generator,
                 shapes: list[MouseShape]) -> None:
        self.n, self.T, self.fps, self.A = n_animals, n_frames, fps, arena_mm
        self.dt = 1.0 / fps
        self.rng = rng
        self.shapes = shapes
        self.walk_pref = [float(rng.uniform(80, 115)) for _ in range(n_animals)]
        self.agents: list[_Agent] = []
        half = arena_mm / 2 - 70
        for i in range(n_animals):
            for _ in range(200):
                x, y = rng.uniform(-half, half, size=2)
                if all(math.hypot(x - a.x, y - a.y) > 120 for a in self.agents):
                    break
            self.agents.append(_Agent(i, shapes[i], float(x), float(y), float(rng.uniform(-math.pi, math.pi))))
        self.bouts: list[Bout] = []
        self.chases = 0
        dur = n_frames / fps
        self.chase_due = int(round(min(3.0, 0.25 * dur) * fps)) if (n_animals >= 2 and dur >= 5.0) else None

    # ------------------------------------------------------------ bouts
    def _frames(self, lo: float, hi: float) -> int:
        # log-uniform: many short bouts, some long ones
        return max(1, int(round(math.exp(self.rng.uniform(math.log(lo), math.log(hi))) * self.fps)))

    def _begin(self, a: _Agent, beh: str, t: int, n_frames: int, partner: int | None = None, goal: str | None = None) -> None:
        a.beh, a.start, a.end, a.partner, a.goal = beh, t, t + n_frames, partner, goal
        rng = self.rng
        if beh == "walk":
            a.vb = _clamp(float(rng.normal(self.walk_pref[a.i], 22)), 50, 150)
        elif beh == "run":
            a.vb = float(rng.uniform(220, 390))
        elif beh == "turn":
            a.vb = float(rng.uniform(0, 40))
            sign = 1.0 if rng.random() < 0.5 else -1.0
            # near a wall, turn towards the arena centre
            to_c = math.atan2(-a.y, -a.x)
            if math.hypot(a.x, a.y) > 0.25 * self.A:
                sign = 1.0 if _wrap(to_c - a.h) > 0 else -1.0
            a.wb = sign * math.radians(float(rng.uniform(90, 200)))
        elif beh == "rear":
            a.alpha = math.radians(float(rng.uniform(60, 82)))
        elif beh == "groom":
            a.fg = float(rng.uniform(4.0, 6.0))

    def _eligible_leader(self, j: int, t: int, i: int) -> bool:
        b = self.agents[j]
        if j == i or b.role is not None or b.beh in SOCIAL:
            return False
        if any(o.partner == j and o.beh in ("follow", "chase") for o in self.agents):
            return False
        return (t - b.start) >= MIN_DYNAMIC_BOUT_S * self.fps

    def _start_episode(self, a: _Agent, kind: str, j: int, t: int) -> None:
        b = self.agents[j]
        self._record_bout(b, t)
        lead = "walk" if kind == "follow" else "run"
        n = self._frames(*DURATIONS[kind])
        if b.beh == lead:  # the leader's label continues: keep the merged bout bounded
            n = min(n, max(int(0.8 * self.fps), int((MAX_MERGED_S - (t - b.start) / self.fps) * self.fps)))
        self._begin(b, lead, t, n)
        if kind == "follow":
            b.vb = float(self.rng.uniform(90, 140))
        else:
            b.vb = float(self.rng.uniform(280, 380))
        b.role = "leader"
        self._begin(a, kind, t, n, partner=j)
        if kind == "chase":
            self.chases += 1

    def _solo_next(self, a: _Agent, t: int, prev: str, short: bool = False) -> None:
        row = TRANSITIONS[_AS_ROW.get(prev, prev)]
        names = [k for k, p in row.items() if p > 0 and k != prev]
        p = np.array([row[k] for k in names])
        beh = names[int(self.rng.choice(len(names), p=p / p.sum()))]
        lo, hi = DURATIONS[beh]
        if short:
            hi = max(lo, min(hi, 1.2))
        self._begin(a, beh, t, self._frames(lo, hi))

    def _decide(self, a: _Agent, t: int) -> None:
        prev = a.beh
        if a.role == "leader":
            a.role = None
        if prev == "approach" and a.goal in ("follow", "chase") and a.partner is not None:
            if self._eligible_leader(a.partner, t, a.i):
                self._start_episode(a, a.goal, a.partner, t)
                return
        if prev == "approach" and a.goal == "contact" and a.partner is not None:
            b = self.agents[a.partner]
            nx, ny = a.nose()
            if _ell_distance(nx, ny, b) < 1.6:
                self._begin(a, "contact", t, self._frames(*DURATIONS["contact"]), partner=a.partner)
                return
        if self.n >= 2:
            due = self.chase_due is not None and self.chases == 0 and t >= self.chase_due
            kind = None
            if due:
                kind = "chase"
            elif prev not in SOCIAL and self.rng.random() < P_SOCIAL:
                names = list(SOCIAL_MIX)
                p = np.array([SOCIAL_MIX[k] for k in names])
                kind = names[int(self.rng.choice(len(names), p=p / p.sum()))]
            if kind is not None:
                others = [j for j in range(self.n) if j != a.i]
                if kind != "approach":
                    others = [j for j in others if self._eligible_leader(j, t, a.i)]
                if others:
                    # prefer the nearest
                    d = [math.hypot(self.agents[j].x - a.x, self.agents[j].y - a.y) for j in others]
                    j = others[int(np.argmin(d))]
                    b = self.agents[j]
                    close = 150.0 if kind == "follow" else 130.0
                    if kind != "approach" and min(d) < close:
                        self._start_episode(a, kind, j, t)
                    else:
                        goal = "contact" if kind == "approach" else kind
                        self._begin(a, "approach", t, int(DURATIONS["approach"][1] * self.fps), partner=j, goal=goal)
                        a.vb = float(self.rng.uniform(90, 170))
                    return
                self._solo_next(a, t, prev, short=due)
                return
        self._solo_next(a, t, prev)

    def _dynamic_end(self, a: _Agent, t: int) -> bool:
        if t - a.start < MIN_DYNAMIC_BOUT_S * self.fps or a.partner is None:
            return False
        b = self.agents[a.partner]
        if a.beh == "approach":
            if a.goal == "contact":
                nx, ny = a.nose()
                return _ell_distance(nx, ny, b) < 1.45
            close = 150.0 if a.goal == "follow" else 130.0
            return math.hypot(b.x - a.x, b.y - a.y) < close and self._eligible_leader(a.partner, t, a.i)
        if a.beh == "contact":
            nx, ny = a.nose()
            return _ell_distance(nx, ny, b) > 2.3
        return False

    # ------------------------------------------------------------ control
    def _wall(self, a: _Agent, v: float) -> tuple[float, float]:
        """Turn rate (rad/s) away from walls and a speed factor for the look-ahead point."""
        look = 25.0 + 0.25 * v
        c, s = math.cos(a.h), math.sin(a.h)
        px = a.x + (0.55 * a.L + look) * c
        py = a.y + (0.55 * a.L + look) * s
        lim = self.A / 2 - 18.0
        push_x = (lim - px if px > lim else 0.0) + (-lim - px if px < -lim else 0.0)
        push_y = (lim - py if py > lim else 0.0) + (-lim - py if py < -lim else 0.0)
        mag = math.hypot(push_x, push_y)
        if mag < 1e-9:
            a.wall_turn = 0.0
            return 0.0, 1.0
        r = math.hypot(a.x, a.y) + 1e-9
        dx = c * look + 2.5 * push_x - 0.4 * mag * a.x / r
        dy = s * look + 2.5 * push_y - 0.4 * mag * a.y / r
        err = _wrap(math.atan2(dy, dx) - a.h)
        # facing a corner head-on, the way out is behind and err flips between +pi and -pi from step to step:
        # keep turning to the side chosen first, as a mouse does, instead of stepping in place
        if abs(err) > 0.8 * math.pi and a.wall_turn:
            err = math.copysign(abs(err), a.wall_turn)
        a.wall_turn = math.copysign(1.0, err)
        return 5.0 * err, max(0.5, 1.0 - 0.6 * mag / look)

    def _avoid(self, a: _Agent) -> float:
        w = 0.0
        for b in self.agents:
            if b is a or (a.partner == b.i and a.beh in SOCIAL):
                continue
            dx, dy = b.x - a.x, b.y - a.y
            d = math.hypot(dx, dy)
            if d < 110:
                ang = _wrap(math.atan2(dy, dx) - a.h)
                if abs(ang) < 1.2:
                    w -= math.copysign(2.5 * (110 - d) / 110, ang)
        return w

    def _controls(self, a: _Agent) -> tuple[float, float]:
        """Target speed (mm/s) and turn rate (rad/s) of agent ``a`` now."""
        rng, dt = self.rng, self.dt
        beh = a.beh
        k_ou = math.exp(-dt / 0.6)
        a.ou_w = a.ou_w * k_ou + math.sqrt(1 - k_ou * k_ou) * float(rng.normal())
        a.ou_v = a.ou_v * k_ou + math.sqrt(1 - k_ou * k_ou) * float(rng.normal())
        if beh in ("rest", "groom", "rear"):
            return 0.0, 0.0
        if beh == "turn":
            wall_w, _ = self._wall(a, a.vb)
            return a.vb, a.wb + (0.3 * wall_w if a.vb > 5 else 0.0)
        if beh in ("walk", "run"):
            sigma = 0.9 if beh == "walk" else 0.5
            v = a.vb * (1.0 + (0.12 if beh == "walk" else 0.07) * a.ou_v)
            wall_w, f = self._wall(a, v)
            return v * f, sigma * a.ou_w + wall_w + self._avoid(a)
        b = self.agents[a.partner] if a.partner is not None else a
        if beh == "approach":
            err = _wrap(math.atan2(b.y - a.y, b.x - a.x) - a.h)
            d = math.hypot(b.x - a.x, b.y - a.y)
            v = _clamp(a.vb * min(1.0, 0.4 + d / 250.0), 50, 170)
            if a.goal == "contact":
                nx, ny = a.nose()
                e = _ell_distance(nx, ny, b)
                if e < 2.2:
                    v = _clamp(55.0 * (e - 1.2), 15.0, v)
            wall_w, f = self._wall(a, v)
            return v * f, 5.0 * err + 0.3 * wall_w + 0.3 * a.ou_w
        if beh in ("follow", "chase"):
            gap = 45.0 if beh == "follow" else 30.0
            bc, bs = math.cos(b.h), math.sin(b.h)
            px = b.x - (0.5 * b.L + gap) * bc + 0.2 * b.v * bc
            py = b.y - (0.5 * b.L + gap) * bs + 0.2 * b.v * bs
            nx, ny = a.nose()
            err = _wrap(math.atan2(py - a.y, px - a.x) - a.h)
            along = (px - nx) * math.cos(a.h) + (py - ny) * math.sin(a.h)
            vmax = 200.0 if beh == "follow" else 430.0
            v = _clamp(b.v + 3.0 * along, 0.0, vmax)
            wall_w, _ = self._wall(a, v)
            return v, 6.0 * err + 0.2 * wall_w
        if beh == "contact":
            err = _wrap(math.atan2(b.y - a.y, b.x - a.x) - a.h)
            nx, ny = a.nose()
            e = _ell_distance(nx, ny, b)
            return _clamp(50.0 * (e - 1.25), 0.0, 40.0), 3.0 * err + 0.4 * a.ou_w
        return 0.0, 0.0

    # ------------------------------------------------------------ run
    def run(self) -> dict[str, NDArray]:
        T, n, dt = self.T, self.n, self.dt
        rec = {k: np.zeros((T, n)) for k in ("x", "y", "h", "v", "w", "pitch", "arch", "stretch", "head_pitch",
                                             "rear", "groom", "fg", "head_noise")}
        label = np.zeros((T, n), np.int64)
        partner = np.full((T, n), -1, np.int64)
        beh_index = {b: k for k, b in enumerate(BEHAVIOURS)}
        for a in self.agents:  # first bouts
            self._solo_next(a, 0, "rest")
        kv, kw = 1.0 - math.exp(-dt / 0.12), 1.0 - math.exp(-dt / 0.08)
        k_head = math.exp(-dt / 0.5)
        for t in range(T):
            for a in self.agents:
                if t >= a.end or self._dynamic_end(a, t):
                    self._record_bout(a, t)
                    self._decide(a, t)
            targets = [self._controls(a) for a in self.agents]
            for a in self.agents:
                i = a.i
                rec["x"][t, i], rec["y"][t, i], rec["h"][t, i] = a.x, a.y, a.h
                rec["v"][t, i], rec["w"][t, i] = a.v, a.w
                label[t, i] = beh_index[a.beh]
                partner[t, i] = -1 if a.partner is None else a.partner
                b = a.beh
                rec["pitch"][t, i] = a.alpha if b == "rear" else (0.45 if b == "groom" else 0.0)
                rec["arch"][t, i] = {"groom": 1.0, "rest": 0.35, "contact": 0.2}.get(b, 0.0)
                rec["stretch"][t, i] = {"run": 1.06, "chase": 1.06, "rest": 0.97, "groom": 0.95, "turn": 0.98,
                                        "rear": 1.02}.get(b, 1.0)
                rec["head_pitch"][t, i] = {"groom": -0.55, "rear": -0.6 * a.alpha, "rest": -0.1,
                                           "contact": -0.15}.get(b, 0.0)
                rec["rear"][t, i] = 1.0 if b == "rear" else 0.0
                rec["groom"][t, i] = 1.0 if b == "groom" else 0.0
                rec["fg"][t, i] = a.fg
                sig = {"rest": 0.15, "rear": 0.35, "contact": 0.2, "walk": 0.12, "approach": 0.08}.get(b, 0.05)
                a.ou_head = a.ou_head * k_head + math.sqrt(1 - k_head * k_head) * float(self.rng.normal())
                rec["head_noise"][t, i] = sig * a.ou_head
            # integrate
            for a, (vt, wt) in zip(self.agents, targets):
                dv = (vt - a.v) * kv
                a.v += _clamp(dv, -3000.0 * dt, 2500.0 * dt)
                a.w += (_clamp(wt, -6.0, 6.0) - a.w) * kw
                a.h = _wrap(a.h + a.w * dt)
                a.x += a.v * math.cos(a.h) * dt
                a.y += a.v * math.sin(a.h) * dt
            self._constrain()
        for a in self.agents:
            self._record_bout(a, T)
        rec["label"] = label
        rec["partner"] = partner
        return rec

    def _record_bout(self, a: _Agent, t: int) -> None:
        if t > a.start and (a.end > a.start):
            self.bouts.append(Bout(a.i, a.beh, a.start, min(t, self.T), a.partner if a.beh in SOCIAL else None))

    def _constrain(self) -> None:
        lim = self.A / 2 - 6.0
        for a in self.agents:
            c, s = math.cos(a.h), math.sin(a.h)
            kappa = _clamp(0.9 * a.w / max(a.v, 70.0), -1 / 55, 1 / 55)  # the body's bend (see make_script)
            for f, g in ((0.55, 0.0), (-0.45, 0.0), (-0.27, 0.21), (-0.27, -0.21), (0.2, 0.17), (0.2, -0.17)):
                g = g + 0.5 * kappa * a.L * f * f  # a bent body curves sideways at both ends
                px, py = a.x + a.L * (f * c - g * s), a.y + a.L * (f * s + g * c)
                if px > lim:
                    a.x -= px - lim
                if px < -lim:
                    a.x += -lim - px
                if py > lim:
                    a.y -= py - lim
                if py < -lim:
                    a.y += -lim - py
        # bodies do not overlap: three discs along each body axis push the animals apart
        # (by at most 150 mm/s, so a collision does not look like a jump)
        cap = 150.0 * self.dt
        for ii, a in enumerate(self.agents):
            for b in self.agents[ii + 1:]:
                x0, y0, x1, y1 = a.x, a.y, b.x, b.y
                for _ in range(2):
                    ca, sa, cb, sb = math.cos(a.h), math.sin(a.h), math.cos(b.h), math.sin(b.h)
                    for fa in (-0.25, 0.05, 0.35):
                        for fb in (-0.25, 0.05, 0.35):
                            dx = (b.x + fb * b.L * cb) - (a.x + fa * a.L * ca)
                            dy = (b.y + fb * b.L * sb) - (a.y + fa * a.L * sa)
                            d = math.hypot(dx, dy)
                            dmin = 0.16 * (a.L + b.L)
                            if d < dmin:
                                push = 0.5 * (dmin - d) / max(d, 1e-6)
                                a.x -= dx * push
                                a.y -= dy * push
                                b.x += dx * push
                                b.y += dy * push
                for o, px, py in ((a, x0, y0), (b, x1, y1)):
                    mx, my = o.x - px, o.y - py
                    m = math.hypot(mx, my)
                    if m > cap:
                        o.x, o.y = px + mx * cap / m, py + my * cap / m


def make_script(
    n_animals: int,
    n_frames: int,
    fps: float,
    arena_mm: float,
    rng: np.random.Generator,
    shapes: list[MouseShape] | None = None,
    individuals: list[str] | None = None,
) -> Script:
    """Simulate a behaviour script of ``n_animals`` mice for ``n_frames`` frames.

    ``rng`` drives every choice (bouts, speeds, wandering); the same
    generator state gives the same script.
    """
    if shapes is None:
        shapes = [MouseShape.random(rng) for _ in range(n_animals)]
    individuals = individuals or [f"mouse{i}" for i in range(n_animals)]
    sim = _Simulator(n_animals, n_frames, fps, arena_mm, rng, shapes)
    rec = sim.run()
    T, n = n_frames, n_animals
    labels = np.asarray(BEHAVIOURS)[rec["label"]]
    partners = np.where(rec["partner"] >= 0, np.asarray(individuals + [""])[rec["partner"]], "")
    # the motion actually made (walls and other animals can stop or push an animal): speed and turn rate
    if T > 1:
        speed = np.hypot(np.gradient(rec["x"], axis=0), np.gradient(rec["y"], axis=0)) * fps
        omega = np.gradient(np.unwrap(rec["h"], axis=0), axis=0) * fps
    else:
        speed, omega = np.zeros((T, n)), np.zeros((T, n))
    postures = []
    for i in range(n):
        L = shapes[i].body_length
        v, w, h = speed[:, i], omega[:, i], rec["h"][:, i]
        stride_f = v / (25.0 + 0.14 * v) / fps
        gait_phase = 2 * np.pi * np.cumsum(stride_f)
        bend_t = np.clip(0.9 * w / np.maximum(v, 70.0), -1 / 55, 1 / 55)
        bend = _smooth(bend_t, 0.05, fps) + 0.0018 * np.clip(v / 150, 0, 1) * np.sin(gait_phase)
        pitch = _smooth(rec["pitch"][:, i], 0.07, fps)
        rear_w = _smooth(rec["rear"][:, i], 0.07, fps)
        groom_w = _smooth(rec["groom"][:, i], 0.07, fps)
        groom_phase = 2 * np.pi * np.cumsum(rec["fg"][:, i]) / fps
        head_pitch = _smooth(rec["head_pitch"][:, i], 0.07, fps) + groom_w * 0.12 * np.sin(groom_phase + 0.6)
        head_yaw = _smooth(rec["head_noise"][:, i] + 0.12 * w, 0.05, fps, passes=1)
        still = np.clip(1 - v / 120, 0, 1)
        breath_f = 3.0 + 1.5 * (1 - still)
        breath = (0.015 + 0.02 * still) * np.sin(2 * np.pi * np.cumsum(breath_f) / fps)
        # tail: trails the rear of the body with a lag, swaying with the stride
        yaw0 = h + bend * L * (0.025 - 0.45) + np.pi
        sway = 0.14 * np.clip(v / 200, 0, 1)
        y1 = np.angle(_smooth(np.exp(1j * yaw0).real, 0.2, fps, 1) + 1j * _smooth(np.exp(1j * yaw0).imag, 0.2, fps, 1))
        y1 = yaw0 + np.clip(_wrap_arr(y1 - yaw0), -1.1, 1.1) + sway * np.sin(gait_phase + 1.0)
        y2 = np.angle(_smooth(np.cos(y1), 0.35, fps, 1) + 1j * _smooth(np.sin(y1), 0.35, fps, 1))
        y2 = y1 + np.clip(_wrap_arr(y2 - y1), -0.9, 0.9) + 1.4 * sway * np.sin(gait_phase + 2.2)
        postures.append(Posture(
            x=rec["x"][:, i].copy(), y=rec["y"][:, i].copy(), heading=h.copy(), bend=bend, pitch=pitch,
            arch=_smooth(rec["arch"][:, i], 0.07, fps), stretch=_smooth(rec["stretch"][:, i], 0.1, fps),
            head_yaw=head_yaw, head_pitch=head_pitch, breath=breath, rear_w=rear_w, groom_w=groom_w,
            groom_phase=groom_phase, tail_yaw1=y1, tail_yaw2=y2,
        ))
    bouts = sorted(sim.bouts, key=lambda b: (b.start, b.individual))
    return Script(fps, arena_mm, individuals, shapes, labels, partners, speed, omega, postures, bouts)


def _wrap_arr(a: NDArray[np.float64]) -> NDArray[np.float64]:
    return (a + np.pi) % (2 * np.pi) - np.pi
