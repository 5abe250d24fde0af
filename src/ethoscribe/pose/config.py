"""Settings of the pose pipeline, with their defaults and why they are what they are.

No default is fitted to a particular data set: thresholds in pixels are
multiples of the label noise that the pipeline measures on the seed frames
and then on its own labels (``inlier_sigmas``), gates are in standard
deviations of a prediction error that is learned online (``gate``), and
lengths are fractions of the animal's size measured on the seeds.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PoseConfig(BaseModel):
    """Settings of :func:`ethoscribe.pose.run_pose`.

    Examples
    --------
    >>> PoseConfig().chunk_size
    100
    >>> PoseConfig(gate=5).gate
    5.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_size: int = Field(100, ge=1, description="frames per chunk: state and partial labels are saved after each")
    gate: float = Field(4.0, gt=0, description=(
        "standard deviations of the motion prediction beyond which 'no candidate' beats a candidate (stage 2) "
        "and half-size of the region boxes (stage 1); 4 sigma: a true candidate is gated out less than once in 3000"))
    inlier_sigmas: float = Field(4.0, gt=0, description=(
        "cross-view inlier threshold in units of the measured label noise (per axis); a label farther from its "
        "3D point's reprojection disagrees"))
    min_threshold_px: float = Field(1.5, gt=0, description=(
        "floor of the inlier threshold (px): sub-pixel centroids and quantisation make a tighter test meaningless"))
    verified_views: int = Field(3, ge=2, description=(
        "a 3D point that this many views agree on overrules a disagreeing label (replaced by the reprojection); "
        "with fewer agreeing views a label is flagged few_views (capped at the number of usable cameras)"))
    suspect_fraction: float = Field(0.5, gt=0, le=1, description=(
        "a camera whose labels disagree with the other views' 3D points more often than this is suspect"))
    suspect_min_labels: int = Field(50, ge=1, description="labels a camera needs in a chunk before it can be found suspect there")
    jump_sigmas: float = Field(6.0, gt=0, description=(
        "a 3D point farther than this many residual sigmas of a tracked keypoint from its prediction is a large "
        "jump (only a keypoint found again after being lost can move that far: the association gate is 'gate' "
        "sigmas)"))
    jump_min_fraction: float = Field(0.25, ge=0, description="... and farther than this fraction of the animal's size")
    velocity_beta: float = Field(0.5, gt=0, le=1, description="alpha-beta filter gain of the velocity")
    velocity_damping: float = Field(0.8, ge=0, le=1, description="velocity kept per frame while a keypoint is lost")
    max_sigma_fraction: float = Field(0.25, gt=0, description=(
        "ceiling of the learned residual scales (motion prediction, neighbour offsets), as a fraction of the "
        "animal's size: a larger error is a lost keypoint, not a residual"))
    min_sigma_fraction: float = Field(0.05, ge=0, description=(
        "floor of the learned motion residual scale, as a fraction of the animal's size (the floor of the "
        "template spread): at rest the scale shrinks to the label noise, and a sudden start or turn would then "
        "move the markers beyond the gate"))
    sigma_rate: float = Field(0.1, gt=0, le=1, description="rate of the running estimate of the prediction residual scale")
    initial_sigma_fraction: float = Field(0.1, gt=0, description="prediction sigma at a seed frame, as a fraction of the animal's size")
    trace: bool = Field(True, description="write trace.jsonl")
