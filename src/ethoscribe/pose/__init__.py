"""Pose labelling: from keypoint candidates and a few seed frames to checked labels and 3D poses.

The pipeline follows BehaviorVLM's four stages (region localisation,
intra-region assignment, cross-region agreement, cross-view 3D refinement)
with a deterministic geometric reasoner by default (see
:mod:`ethoscribe.pose.pipeline`). Entry points:

- :func:`run_pose` runs it on a session and returns a :class:`PoseResult`;
- :func:`load_pose_result` reads a finished run back;
- :mod:`ethoscribe.pose.labels` defines the labels table;
- :class:`Reasoner` is the interface a VLM reasoner implements.
"""

from ethoscribe.pose.config import PoseConfig
from ethoscribe.pose.labels import empty_labels, load_labels, save_labels, validate_labels
from ethoscribe.pose.outputs import load_pose_result
from ethoscribe.pose.pipeline import ChunkInfo, PoseResult, run_pose
from ethoscribe.pose.pseudoseeds import pseudo_seeds
from ethoscribe.pose.reasoner import Assignment, FrameContext, GeometricReasoner, Reasoner, RegionBoxes

__all__ = [
    "Assignment",
    "ChunkInfo",
    "FrameContext",
    "GeometricReasoner",
    "PoseConfig",
    "PoseResult",
    "Reasoner",
    "RegionBoxes",
    "empty_labels",
    "load_labels",
    "load_pose_result",
    "pseudo_seeds",
    "run_pose",
    "save_labels",
    "validate_labels",
]
