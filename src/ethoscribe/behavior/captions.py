"""Structured captions of snippets: the schema, the captioner protocol, the kinematic captioner.

A :class:`Caption` is what any captioner answers for one snippet: the
kinematic describer here (default, deterministic, no model) or, later, a VLM
that sees frames sampled at about 10 fps and answers the same schema as JSON
(validated by pydantic). :data:`CAPTION_JSON_SCHEMA` is that schema, for
constrained decoding.

The kinematic captioner turns the snippet's measured features (means over the
snippet; see :mod:`~ethoscribe.behavior.features`) into words by fixed,
documented thresholds in body lengths (BL) and radians
(:class:`KinematicThresholds`). They are generic small-rodent values (a
mouse walks at roughly 0.5-2 BL/s and runs above 2.5 BL/s), not fitted to any
data set; change them for other species (e.g. flies walk at several BL/s).
The snippet's text mentions only what is salient (a VLM would not say "the
animal is on all fours" every time); the numbers it used are kept.

Examples
--------
>>> snip = Snippet(individual="m0", start_frame=0, end_frame=60, fps=30.0,
...                measures={"speed": 4.0, "forward_speed": 3.9, "angular_speed": 0.2})
>>> cap = KinematicCaptioner().caption([snip])[0]
>>> cap.speed, cap.motion
('fast', 'moving forward')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class Caption(BaseModel):
    """The structured description of one snippet (the one schema for all captioners)."""

    model_config = ConfigDict(extra="forbid")

    posture: str = Field(description="body shape: normal, stretched, compact, bent, upright, hunched")
    motion: str = Field(description="what the body does: still, moving forward, turning in place, limbs moving in place, ...")
    direction: str = Field(description="direction of motion: straight, turning, backward, sideways, none")
    speed: str = Field(description="stationary, slow, moderate or fast")
    height: str = Field(description="on all fours, front raised, upright on hind legs, head lowered, or unknown (2D)")
    proximity: str = Field(description="alone, far from / near / close to another animal")
    contact: str = Field(description="none, or the kind of contact with another animal")
    social: str = Field(default="none", description="approaching, moving away, following, chasing, being followed, or none")
    text: str = Field(description="one sentence saying what the animal does")
    numbers: dict[str, float] = Field(default_factory=dict, description="the measurements the caption used")
    source: str = Field(default="kinematic", description="which captioner wrote it")


#: JSON schema of :class:`Caption`, for constrained decoding by a language model.
CAPTION_JSON_SCHEMA = Caption.model_json_schema()


@dataclass
class Snippet:
    """One snippet to caption: who, when, and what was measured.

    ``measures`` holds means over the snippet of the per-frame features
    (names as in :mod:`~ethoscribe.behavior.features`, e.g. ``speed`` in
    BL/s), plus ``noise_*`` baselines. ``videos`` are the video files a
    visual captioner may sample frames from.
    """

    individual: str
    start_frame: int
    end_frame: int
    fps: float
    measures: dict[str, float] = field(default_factory=dict)
    partner: str | None = None
    videos: tuple[str, ...] = ()
    cluster: int | None = None

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return (self.end_frame - self.start_frame) / self.fps


@runtime_checkable
class Captioner(Protocol):
    """Anything that writes one :class:`Caption` per :class:`Snippet`."""

    name: str

    def caption(self, snippets: Sequence[Snippet]) -> list[Caption]:
        """Captions in the order of ``snippets``."""
        ...


class KinematicThresholds(BaseModel):
    """Word boundaries of the kinematic captioner, in body lengths (BL: the median head-tip to rear distance), seconds and radians.

    Generic small-rodent values, not fitted to any data set (a mouse walks at
    roughly 0.5-2 BL/s and runs above 2.5 BL/s); change them for other
    species (flies walk at several BL/s).
    """

    still_bl_s: float = Field(0.3, description="below this speed (BL/s, above the noise floor) the animal is stationary: less than a third of its length per second")
    slow_bl_s: float = Field(1.0, description="slow below one body length per second")
    fast_bl_s: float = Field(2.5, description="fast (running) above 2.5 BL/s")
    turn_rad_s: float = Field(1.0, description="turning when the heading changes by more than 1 rad/s (a quarter turn in 1.5 s), net over 0.5 s when measured")
    limb_motion_bl_s: float = Field(0.35, description="paws (or the whole skeleton) moving relative to the body faster than 0.35 BL/s: limbs at work")
    small_motion_bl_s: float = Field(0.12, description="keypoints moving relative to the body faster than 0.12 BL/s: small head and body movements")
    small_motion_energy: float = Field(2.0, description="video only: motion energy in the body-aligned crop above 2x its noise floor: small movements")
    limb_motion_energy: float = Field(4.0, description="video only: above 4x its noise floor: vigorous movements in place")
    upright_pitch_rad: float = Field(0.6, description="3D: rear-to-head axis pitched up more than 0.6 rad (34 deg): upright on the hind legs")
    raised_pitch_rad: float = Field(0.3, description="3D: more than 0.3 rad (17 deg): front body raised")
    lowered_pitch_rad: float = Field(-0.15, description="3D: below -0.15 rad: head lowered")
    compact_length: float = Field(0.8, description="body length below 0.8 of its median: compact, hunched")
    stretched_length: float = Field(1.12, description="above 1.12 of its median: stretched")
    bent_rad: float = Field(0.5, description="neck-mid-rear bend above 0.5 rad: bent to one side")
    contact_bl: float = Field(0.35, description="nose within 0.35 BL of the other animal's nearest keypoint: touching")
    close_bl: float = Field(1.5, description="centroids within 1.5 BL: close to each other")
    near_bl: float = Field(4.0, description="within 4 BL: near; farther: far")
    closing_bl_s: float = Field(0.4, description="distance shrinking (approaching) or growing (moving away) faster than 0.4 BL/s")
    ahead_rad: float = Field(1.5708, description="the other animal is ahead when it lies within this angle (pi/2: the front half) of the heading")


class KinematicCaptioner:
    """Captions from measured features, by the thresholds in :class:`KinematicThresholds`.

    Measures used (when present): speed, forward_speed, turn_rate (else
    angular_speed), pose_change, paw_motion (speeds minus their ``noise_``
    baseline: the recording's 5th percentile, so keypoint jitter is not
    described as movement), body_length, bend, pitch; social:
    social_distance, nose_distance, closing_speed, bearing, partner_bearing,
    partner_speed. Turning is worded by what the body does: *turns ... in
    place* when it barely moves, and *curving* (never "turning") when it moves
    forward on a bend, which is a curved walk or run, not a turn (the
    structured ``direction`` is ``"turning"`` in both). Social words:
    *chasing* / *following* when both animals move and the other is ahead
    while this one is behind it (fast: chasing);
    *approaching* when the distance shrinks with the other ahead; *moving
    away*; *being followed*; nose *contact* only when this animal is slower
    than walking and not following (touching while running is part of the
    chase). Video-only snippets have speeds from
    the silhouette's track and ``motion_energy`` (in multiples of its noise
    floor) in place of the keypoint motion, and no heights.
    """

    name = "kinematic"

    def __init__(self, thresholds: KinematicThresholds | None = None) -> None:
        self.t = thresholds or KinematicThresholds()

    def caption(self, snippets: Sequence[Snippet]) -> list[Caption]:
        """One caption per snippet."""
        return [self._one(s) for s in snippets]

    # ---------------------------------------------------------------- words
    def _speed_word(self, v: float) -> str:
        t = self.t
        if v < t.still_bl_s:
            return "stationary"
        if v < t.slow_bl_s:
            return "slow"
        if v < t.fast_bl_s:
            return "moderate"
        return "fast"

    def _one(self, s: Snippet) -> Caption:
        m = s.measures
        if "speed" not in m and "motion_energy" in m:
            return self._video(s)
        t = self.t
        video_only = "pose_change" not in m and "motion_energy" in m
        g = m.get
        used: dict[str, float] = {}

        def val(name: str, default: float = 0.0, noise: bool = False) -> float:
            x = float(g(name, default))
            if noise:
                x = max(0.0, x - float(g(f"noise_{name}", 0.0)))
            if name in m:
                used[name] = round(x, 3)
            return x

        speed = val("speed", noise=True)
        fwd = val("forward_speed")
        # net turning over 0.5 s when measured (the gait's sway cancels), else the mean angular speed
        ang = val("turn_rate") if "turn_rate" in m else val("angular_speed")
        if video_only:
            # motion energy in the body-aligned crop, in multiples of its noise floor
            me = val("motion_energy", 1.0)
            pose = t.small_motion_bl_s if me >= t.small_motion_energy else 0.0
            paws = t.limb_motion_bl_s if me >= t.limb_motion_energy else 0.0
        else:
            pose = val("pose_change", noise=True)
            paws = val("paw_motion", noise=True) if "paw_motion" in m else pose
        blen = val("body_length", 1.0)
        bend = val("bend")
        pitch = val("pitch", 0.0) if "pitch" in m else None
        speed_w = self._speed_word(speed)

        # motion and direction
        if speed_w == "stationary":
            if ang >= t.turn_rad_s:
                motion, direction = "turning in place", "turning"
            elif paws >= t.limb_motion_bl_s:
                motion, direction = "limbs moving while the body stays in place", "none"
            elif pose >= t.small_motion_bl_s:
                motion, direction = "small head and body movements while staying in place", "none"
            else:
                motion, direction = "still", "none"
        else:
            if fwd >= 0.5 * speed:
                motion = "moving forward"
                direction = "turning" if ang >= t.turn_rad_s else "straight"
            elif fwd <= -0.5 * speed:
                motion, direction = "moving backward", "backward"
            else:
                motion, direction = "moving sideways", "sideways"

        # posture and height
        if pitch is not None:
            if pitch >= t.upright_pitch_rad:
                height = "upright on hind legs"
            elif pitch >= t.raised_pitch_rad:
                height = "front raised"
            elif pitch <= t.lowered_pitch_rad:
                height = "head lowered"
            else:
                height = "on all fours"
        else:
            height = "unknown (2D)"
        if height == "upright on hind legs":
            posture = "upright"
        elif blen <= t.compact_length:
            posture = "compact"
        elif blen >= t.stretched_length:
            posture = "stretched"
        elif bend >= t.bent_rad:
            posture = "bent"
        else:
            posture = "normal"

        # social: where the other animal is (ahead: within ahead_rad of my heading; I am behind
        # it when I am outside ahead_rad of its heading) and how both move
        proximity, contact, social = "alone", "none", "none"
        other = s.partner or "the other animal"
        if "social_distance" in m:
            dist = val("social_distance")
            nose = val("nose_distance", dist)
            closing = val("closing_speed")
            bearing = val("bearing", math.pi)
            pbear = val("partner_bearing", math.pi)
            pspeed = max(0.0, val("partner_speed") - float(g("noise_speed", 0.0)))
            if dist <= t.close_bl:
                proximity = "close to the other animal"
            elif dist <= t.near_bl:
                proximity = "near the other animal"
            else:
                proximity = "far from the other animal"
            moving, partner_moving = speed >= t.still_bl_s, pspeed >= t.still_bl_s
            ahead = bearing <= t.ahead_rad
            behind_it = pbear >= math.pi - t.ahead_rad
            if moving and partner_moving and ahead and behind_it and dist <= t.near_bl:
                social = "chasing" if speed >= t.fast_bl_s else "following"
            elif moving and closing >= t.closing_bl_s and ahead:
                social = "approaching"
            elif moving and closing <= -t.closing_bl_s and dist <= t.close_bl:
                social = "moving away"
            elif partner_moving and not ahead and pbear <= t.ahead_rad and dist <= t.near_bl:
                social = "being followed"
            if nose <= t.contact_bl and speed < t.slow_bl_s and social not in ("chasing", "following"):
                contact = "nose touching the other animal"

        text = self._sentence(motion, direction, speed_w, posture, height, contact, social, other, speed, ang)
        return Caption(
            posture=posture, motion=motion, direction=direction, speed=speed_w, height=height,
            proximity=proximity, contact=contact, social=social, text=text, numbers=used, source=self.name,
        )

    @staticmethod
    def _sentence(motion: str, direction: str, speed_w: str, posture: str, height: str, contact: str,
                  social: str, other: str, speed: float, ang: float) -> str:
        parts: list[str] = []
        if social == "chasing":
            parts.append(f"runs fast right behind {other}, chasing it")
        elif social == "following":
            parts.append(f"moves behind {other} in the same direction, following it")
        elif social == "approaching":
            parts.append(f"moves toward {other}, getting closer")
        elif social == "moving away":
            parts.append(f"moves away from {other}")
        if contact != "none":
            parts.append(f"touches {other} with its nose, in close contact")
        if motion == "still":
            parts.append("stays still, not moving")
        elif motion == "turning in place":
            parts.append(f"turns its body around in place ({ang:.1f} rad/s) without moving forward")
        elif motion.startswith("limbs moving"):
            parts.append("stays in place while its paws move near its head and body")
        elif motion.startswith("small"):
            parts.append("stays nearly in place with small head movements")
        elif height == "upright on hind legs" and speed_w != "fast":
            parts.append("stays in place")
        elif not social.startswith(("chas", "follow")):
            pace = {"slow": "slowly, at a slow walking pace", "moderate": "at a walking pace", "fast": "fast, at a running pace"}[speed_w]
            # forward motion on a curve is a walk or run that bends, not a turn in place
            turn = ", curving" if direction == "turning" else ""
            parts.append(f"{motion.replace('moving', 'moves')} {pace}{turn} ({speed:.1f} body lengths/s)")
        if height == "upright on hind legs":
            parts.append("standing upright on its hind legs with its head raised high")
        elif height == "front raised":
            parts.append("with its head and front body raised")
        elif height == "head lowered":
            parts.append("with its head lowered")
        if posture in ("compact", "stretched", "bent"):
            parts.append({"compact": "its body shortened and compact", "stretched": "its body stretched long",
                          "bent": "its body bent to one side"}[posture])
        # "being followed" stays in the structured field only: the sentence says what this animal does
        return "The animal " + ", ".join(parts) + "."

    def _video(self, s: Snippet) -> Caption:
        m = s.measures
        me = float(m.get("motion_energy", 0.0))
        ms = float(m.get("motion_speed", 0.0))
        used = {"motion_energy": round(me, 3), "motion_speed": round(ms, 3)}
        if me < 0.5:
            motion, speed_w, text = "still", "stationary", "The animal stays still, not moving."
        elif ms >= 1.0:
            motion, speed_w = "moving forward", "fast" if ms >= 2.5 else "moderate"
            text = "The animal moves across the arena " + ("fast, at a running pace." if speed_w == "fast" else "at a walking pace.")
        else:
            motion, speed_w = "small movements while staying in place", "slow"
            text = "The animal stays nearly in place while parts of its body move."
        return Caption(posture="unknown", motion=motion, direction="unknown", speed=speed_w, height="unknown (video)",
                       proximity="unknown", contact="unknown", social="none", text=text, numbers=used, source=self.name)
