"""Noise levels of the synthetic rig: one documented table, three rows.

Every imperfection the rig can add is a field of :class:`NoiseLevel`; the
three named levels are the rows of :data:`NOISE_LEVELS`:

=========================  =======  ==========  ==========
field                      clean    default     hard
=========================  =======  ==========  ==========
jitter_px (per axis std)   0        0.3         1.0
miss_rate                  0        0.05        0.15
spurious_per_view_frame    0        2           6
calibration_px (RMS)       0        0.5         1.0
identical_animals          False    True        True
marker_flicker (rel. std)  0        0.08        0.15
read_noise (grey levels)   0        0.45        1.0
shot_noise (x sqrt(I))     0        0.35        0.6
fixed_pattern (grey lvls)  0        0.8         1.5
body_read_noise            0        0.6         1.4
motion_blur_substeps       1        1           5
exposure (frame fraction)  0        0           0.6
=========================  =======  ==========  ==========

Meaning of each field:

- ``jitter_px``: Gaussian error of a drawn spot's centre (the marker's
  distorted projection in the true rig plus this), per axis, in pixels.
- ``miss_rate``: probability that a visible marker draws no spot (a missed
  detection), independently per view, frame and marker.
- ``spurious_per_view_frame``: mean number (Poisson) of spots that belong to
  no marker, per view and frame: a quarter flickering static reflections,
  0.4 near the animals and looking like real markers, the rest anywhere.
- ``calibration_px``: RMS reprojection error of the *written*
  ``calibration.toml`` against the true rig (``perturb_rig``); the truth
  folder keeps the true rig.
- ``identical_animals``: if False (clean only), the markers of animal *k*
  are ``1 - 0.12 k mod 3`` times as bright, so identities could be read off
  the brightness; otherwise all animals' markers look alike.
- ``marker_flicker``: relative frame-to-frame spread of a spot's brightness.
- ``read_noise``, ``shot_noise``, ``fixed_pattern``: sensor noise of the
  marker channel: temporal Gaussian read noise, signal-dependent shot noise
  (std ``shot_noise * sqrt(signal)``) and a static per-pixel offset pattern.
- ``body_read_noise``: temporal noise of the grey body video (its fixed
  pattern is ``fixed_pattern`` too).
- ``motion_blur_substeps`` / ``exposure``: a spot is the mean of this many
  sub-frame positions spread over ``exposure`` of the frame interval
  (centred on the frame time), so fast markers smear along their motion.

Examples
--------
>>> noise_level("default").jitter_px
0.3
>>> noise_level("loud")
Traceback (most recent call last):
...
ethoscribe.errors.InputError: unknown noise level 'loud' (choose one of: clean, default, hard)
"""

from __future__ import annotations

from dataclasses import dataclass

from ethoscribe.errors import InputError


@dataclass(frozen=True)
class NoiseLevel:
    """One row of the noise table (see the module docstring for each field)."""

    name: str
    jitter_px: float
    miss_rate: float
    spurious_per_view_frame: float
    calibration_px: float
    identical_animals: bool
    marker_flicker: float
    read_noise: float
    shot_noise: float
    fixed_pattern: float
    body_read_noise: float
    motion_blur_substeps: int
    exposure: float


NOISE_LEVELS: dict[str, NoiseLevel] = {
    "clean": NoiseLevel(
        name="clean", jitter_px=0.0, miss_rate=0.0, spurious_per_view_frame=0.0, calibration_px=0.0,
        identical_animals=False, marker_flicker=0.0, read_noise=0.0, shot_noise=0.0, fixed_pattern=0.0,
        body_read_noise=0.0, motion_blur_substeps=1, exposure=0.0,
    ),
    "default": NoiseLevel(
        name="default", jitter_px=0.3, miss_rate=0.05, spurious_per_view_frame=2.0, calibration_px=0.5,
        identical_animals=True, marker_flicker=0.08, read_noise=0.45, shot_noise=0.35, fixed_pattern=0.8,
        body_read_noise=0.6, motion_blur_substeps=1, exposure=0.0,
    ),
    "hard": NoiseLevel(
        name="hard", jitter_px=1.0, miss_rate=0.15, spurious_per_view_frame=6.0, calibration_px=1.0,
        identical_animals=True, marker_flicker=0.15, read_noise=1.0, shot_noise=0.6, fixed_pattern=1.5,
        body_read_noise=1.4, motion_blur_substeps=5, exposure=0.6,
    ),
}


def noise_level(name: str) -> NoiseLevel:
    """The :class:`NoiseLevel` called ``name`` (``clean``, ``default`` or ``hard``)."""
    try:
        return NOISE_LEVELS[name]
    except KeyError:
        raise InputError(f"unknown noise level {name!r} (choose one of: {', '.join(NOISE_LEVELS)})") from None
