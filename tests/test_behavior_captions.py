"""Kinematic captions: words from measured numbers, one schema for every captioner."""

from __future__ import annotations

import pytest

from ethoscribe.behavior.captions import CAPTION_JSON_SCHEMA, Caption, Captioner, KinematicCaptioner, Snippet


def _cap(**measures):
    return KinematicCaptioner().caption([Snippet("m0", 0, 60, 30.0, measures=measures)])[0]


def test_speed_words_and_numbers():
    assert _cap(speed=0.05, forward_speed=0.0).motion == "still"
    walk = _cap(speed=1.3, forward_speed=1.25, angular_speed=0.2)
    assert (walk.motion, walk.speed, walk.direction) == ("moving forward", "moderate", "straight")
    assert walk.numbers["speed"] == pytest.approx(1.3)
    assert "walking pace" in walk.text
    run = _cap(speed=4.0, forward_speed=3.9)
    assert run.speed == "fast" and "running" in run.text


def test_noise_floor_is_subtracted():
    assert _cap(speed=0.5, noise_speed=0.4, forward_speed=0.5).motion == "still"


def test_turn_groom_rear_and_social_words():
    assert _cap(speed=0.1, angular_speed=2.5).motion == "turning in place"
    groom = _cap(speed=0.05, pose_change=0.6, paw_motion=0.9)
    assert groom.motion.startswith("limbs moving") and "paws" in groom.text
    rear = _cap(speed=0.1, pitch=1.1, head_height=1.2)
    assert rear.height == "upright on hind legs" and rear.posture == "upright" and "hind legs" in rear.text
    assert _cap(speed=0.1).height == "unknown (2D)"
    close = _cap(speed=0.1, social_distance=0.9, nose_distance=0.2, closing_speed=0.0)
    assert close.contact != "none" and close.proximity == "close to the other animal"
    chase = _cap(speed=3.5, forward_speed=3.4, social_distance=2.0, nose_distance=1.5, bearing=0.2,
                 heading_alignment=0.9, partner_speed=3.3, closing_speed=0.1)
    assert chase.social == "chasing"
    approach = _cap(speed=1.2, forward_speed=1.2, social_distance=5.0, nose_distance=4.5, bearing=0.3,
                    heading_alignment=0.0, partner_speed=0.0, closing_speed=1.0)
    assert approach.social == "approaching"


def test_forward_motion_on_a_bend_is_worded_as_curving_not_turning():
    curve = _cap(speed=1.2, forward_speed=1.15, turn_rate=1.5, bend=0.6)
    assert (curve.motion, curve.direction) == ("moving forward", "turning")
    assert "curving" in curve.text and "turn" not in curve.text
    spin = _cap(speed=0.1, forward_speed=0.0, turn_rate=2.0, bend=0.6)
    assert spin.motion == "turning in place" and "turns" in spin.text


def test_a_curved_walk_is_named_walk_and_a_turn_in_place_turn():
    import numpy as np

    from ethoscribe.behavior.merge import ClusterSummary, EmbeddingMerger

    def summary(k, **measures):
        return ClusterSummary(cluster=k, captions=[_cap(**measures)], durations=[2.0], centroid=np.full(3, float(k)), n_frames=60)

    curve = summary(0, speed=1.2, forward_speed=1.15, turn_rate=1.5, bend=0.6, pitch=0.0)
    spin = summary(1, speed=0.1, forward_speed=0.0, turn_rate=2.0, bend=0.6, pitch=0.0)
    assert EmbeddingMerger().merge([curve, spin]).cluster_to_label == {0: "walk", 1: "turn"}


def test_schema_is_shared_and_strict():
    assert isinstance(KinematicCaptioner(), Captioner)
    assert set(CAPTION_JSON_SCHEMA["required"]) >= {"posture", "motion", "direction", "speed", "height", "proximity", "contact", "text"}
    c = _cap(speed=1.0, forward_speed=1.0)
    assert Caption.model_validate_json(c.model_dump_json()) == c
    with pytest.raises(ValueError):
        Caption.model_validate({**c.model_dump(), "colour": "brown"})


def test_following_means_behind_a_moving_animal_ahead():
    base = dict(speed=1.3, forward_speed=1.3, social_distance=1.2, nose_distance=0.3, partner_speed=1.2, closing_speed=0.0)
    follow = _cap(**base, bearing=0.4, partner_bearing=2.8)  # it is ahead of me, I am behind it
    assert follow.social == "following" and follow.contact == "none" and "following" in follow.text
    side = _cap(**base, bearing=1.9, partner_bearing=1.9)  # side by side, not behind
    assert side.social != "following"
    leader = _cap(**base, bearing=2.8, partner_bearing=0.4)  # it follows me
    assert leader.social == "being followed" and "follow" not in leader.text
    chase = _cap(**{**base, "speed": 3.4, "forward_speed": 3.4, "partner_speed": 3.3}, bearing=0.2, partner_bearing=2.9)
    assert chase.social == "chasing" and chase.contact == "none"  # touching while running is part of the chase


def test_net_turning_is_preferred_to_sway():
    # the heading sways (mean angular speed 1.5 rad/s) but does not turn on balance
    assert _cap(speed=0.1, angular_speed=1.5, turn_rate=0.2).motion != "turning in place"
    assert _cap(speed=0.1, angular_speed=1.5, turn_rate=1.6).motion == "turning in place"
