"""ethoscribe: from video of freely moving animals to checked pose labels,
3D kinematics and a named, timed account of behaviour.

The public Python API mirrors the command line::

    >>> import ethoscribe as es
    >>> session = es.synthesize("out/session", cameras=4, frames=60, seed=0)  # doctest: +SKIP
    >>> rig = es.CameraRig.load(session.calibration_path)                    # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Lazy attribute table keeps `import ethoscribe` cheap (torch, cv2 and
# matplotlib load only when the piece that needs them is used).
_API = {
    "EthoscribeError": "ethoscribe.errors",
    "InputError": "ethoscribe.errors",
    "Skeleton": "ethoscribe.skeleton",
    "mouse12": "ethoscribe.skeleton",
    "CameraRig": "ethoscribe.geometry.camera",
    "triangulate_dlt": "ethoscribe.geometry.triangulate",
    "triangulate_ransac": "ethoscribe.geometry.triangulate",
    "reprojection_error": "ethoscribe.geometry.triangulate",
    "VideoReader": "ethoscribe.io.video",
    "detect_spots": "ethoscribe.candidates.spots",
    "synthesize": "ethoscribe.synth.rig",
    "SynthConfig": "ethoscribe.synth.rig",
    "SynthSession": "ethoscribe.synth.rig",
    "run_demo": "ethoscribe.demo",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'ethoscribe' has no attribute {name!r}")
