"""Keypoint candidates: located points per frame and view whose identity is still unknown.

:mod:`~ethoscribe.candidates.spots` finds marker spots in marker-channel
video; :mod:`~ethoscribe.candidates.table` defines the table they are
stored in (Parquet); :mod:`~ethoscribe.candidates.predictions` turns an
existing pose model's predictions (SLEAP, DeepLabCut, Lightning Pose) into
candidates whose identities are not trusted.
"""

from ethoscribe.candidates.predictions import read_predictions
from ethoscribe.candidates.spots import SpotParams, detect_session_spots, detect_spots, detect_spots_in_frames
from ethoscribe.candidates.table import (
    COLUMNS,
    empty_candidates,
    load_candidates,
    save_candidates,
    validate_candidates,
)

__all__ = [
    "COLUMNS",
    "SpotParams",
    "detect_session_spots",
    "detect_spots",
    "detect_spots_in_frames",
    "empty_candidates",
    "load_candidates",
    "read_predictions",
    "save_candidates",
    "validate_candidates",
]
