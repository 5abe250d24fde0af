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
    """Word boundaries of the kinematic captioner (BL = median body length)."""

    still_bl_s: float = 0.3
    slow_bl_s: float = 1.0
    fast_bl_s: float = 2.5
    turn_rad_s: float = 1.0
    limb_motion_bl_s: float = 0.35
    small_motion_bl_s: float = 0.12
    small_motion_energy: float = 2.0
    limb_motion_energy: float = 4.0
    upright_pitch_rad: float = 0.6
    raised_pitch_rad: float = 0.3
    lowered_pitch_rad: float = -0.15
    compact_length: float = 0.8
    stretched_length: float = 1.12
    bent_rad: float = 0.5
    contact_bl: float = 0.35
    close_bl: float = 1.5
    near_bl: float = 4.0
    closing_bl_s: float = 0.4
    aligned_cos: float = 0.6
    ahead_rad: float = 0.7


class KinematicCaptioner:
    """Captions from measured features, by the thresholds in :class:`KinematicThresholds`.

    Measures used (when present): speed, forward_speed, lateral_speed,
    angular_speed, pose_change, paw_motion (each minus its ``noise_``
    baseline: the recording's 5th percentile, so keypoint jitter is not
    described as movement), body_length, bend, pitch, head_height; social:
    social_distance, nose_distance, closing_speed, bearing, partner_bearing,
    heading_alignment, partner_speed. Video-only snippets have speeds from
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
        lat = val("lateral_speed")
        ang = val("angular_speed")
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
            del lat

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

        # social
        proximity, contact, social = "alone", "none", "none"
        other = s.partner or "the other animal"
        if "social_distance" in m:
            dist = val("social_distance")
            nose = val("nose_distance", dist)
            closing = val("closing_speed")
            bearing = val("bearing", 3.14)
            pbear = val("partner_bearing", 3.14)
            align = val("heading_alignment", 0.0)
            pspeed = max(0.0, val("partner_speed") - float(g("noise_speed", 0.0)))
            if nose <= t.contact_bl:
                contact = "nose touching the other animal"
            if dist <= t.close_bl:
                proximity = "close to the other animal"
            elif dist <= t.near_bl:
                proximity = "near the other animal"
            else:
                proximity = "far from the other animal"
            moving = speed >= t.still_bl_s
            if moving and pspeed >= t.still_bl_s and align >= t.aligned_cos and bearing <= t.ahead_rad and dist <= t.near_bl:
                social = "chasing" if speed >= t.fast_bl_s else "following"
            elif moving and closing >= t.closing_bl_s and bearing <= t.ahead_rad:
                social = "approaching"
            elif moving and closing <= -t.closing_bl_s and dist <= t.close_bl:
                social = "moving away"
            elif pspeed >= t.still_bl_s and align >= t.aligned_cos and pbear <= t.ahead_rad and bearing >= 3.14 - t.ahead_rad and dist <= t.near_bl:
                social = "being followed"

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
            turn = ", turning" if direction == "turning" else ""
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
        if social == "being followed":
            parts.append(f"while {other} follows behind it")
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
