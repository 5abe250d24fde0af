"""Exceptions with messages written for the person at the keyboard.

Every error that bad input can cause is an :class:`InputError` naming the
file or value at fault and what to do about it; the CLI prints its message
without a traceback.
"""

from __future__ import annotations


class EthoscribeError(Exception):
    """Base class of all errors ethoscribe raises on purpose."""


class InputError(EthoscribeError, ValueError):
    """Input that cannot be used: missing, corrupt, inconsistent or of the wrong kind.

    Examples
    --------
    >>> raise InputError("calibration.toml: camera 'top' has no 'matrix'")
    Traceback (most recent call last):
    ...
    ethoscribe.errors.InputError: calibration.toml: camera 'top' has no 'matrix'
    """


class VideoError(InputError):
    """A video file that is missing, unreadable, corrupt or not a video."""


class CalibrationError(InputError):
    """A calibration that cannot be loaded or does not fit the session."""


class SkeletonError(InputError):
    """Keypoints, regions or labels that do not match the skeleton."""
