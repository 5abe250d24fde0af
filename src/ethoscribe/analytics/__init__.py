"""Behaviour analytics over saved outputs: pure functions over tables and poses.

- :mod:`~ethoscribe.analytics.timeline`: time budgets, bouts and bout
  statistics, transition matrices, from per-frame labels or segments;
- :mod:`~ethoscribe.analytics.social`: social events between animals from
  their poses (approach, follow, chase, contact; thresholds in
  :class:`~ethoscribe.analytics.social.SocialParams`), nearest-neighbour
  distance over time and time in contact per pair;
- :mod:`~ethoscribe.analytics.reference`: behaviour results from given
  labels, and reference outputs written from a synthetic session's truth.

Examples
--------
>>> import pandas as pd
>>> from ethoscribe.analytics import time_budgets
>>> labels = pd.DataFrame({"frame": [0, 1, 2, 3], "individual": "m0", "label": ["rest", "rest", "walk", "rest"]})
>>> time_budgets(labels, fps=30.0)["fraction"].tolist()
[0.75, 0.25]
"""

from __future__ import annotations

from ethoscribe.analytics.social import (
    EVENT_KINDS,
    SocialParams,
    SocialResult,
    contact_time,
    nearest_neighbour_distance,
    social_analysis,
    social_events,
)
from ethoscribe.analytics.timeline import (
    POOLED,
    TransitionMatrix,
    bout_statistics,
    bouts,
    labels_from_segments,
    time_budgets,
    transition_matrices,
    transitions_table,
)

__all__ = [
    "EVENT_KINDS",
    "POOLED",
    "SocialParams",
    "SocialResult",
    "TransitionMatrix",
    "bout_statistics",
    "bouts",
    "contact_time",
    "labels_from_segments",
    "nearest_neighbour_distance",
    "social_analysis",
    "social_events",
    "time_budgets",
    "transition_matrices",
    "transitions_table",
]
