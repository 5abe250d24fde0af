"""Behaviour discovery: features, deep embedded clustering, snippets, captions, merged names.

DESIGN.md section 2. The steps, one module each:

- :mod:`~ethoscribe.behavior.features`: per-frame, per-animal pose features
  (egocentric speeds, angles, body shape, heights, social geometry) and their
  multi-scale windows, standardised;
- :mod:`~ethoscribe.behavior.video_features`: motion-energy SVD (Facemap style)
  and EfficientNet-Lite0 embeddings of frames or per-animal crops;
- :mod:`~ethoscribe.behavior.dec`: Deep Embedded Clustering (scikit-learn-style
  PyTorch estimator);
- :mod:`~ethoscribe.behavior.segments`: temporal smoothing and snippets;
- :mod:`~ethoscribe.behavior.captions`: the caption schema and the kinematic
  captioner;
- :mod:`~ethoscribe.behavior.merge`: the embedding merger and the vocabulary;
- :mod:`~ethoscribe.behavior.pipeline`: :func:`run_behavior` end to end;
- :mod:`~ethoscribe.behavior.evaluate`: scores against true labels.

Heavy modules (torch, sentence-transformers) are imported lazily, so importing
this package is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BehaviorResult",
    "DEC",
    "evaluate_behavior",
    "load_behavior_result",
    "run_behavior",
]


def __getattr__(name: str) -> Any:  # lazy re-exports
    if name in ("run_behavior", "BehaviorResult", "load_behavior_result"):
        from ethoscribe.behavior import pipeline

        return getattr(pipeline, name)
    if name == "DEC":
        from ethoscribe.behavior.dec import DEC

        return DEC
    if name == "evaluate_behavior":
        from ethoscribe.behavior.evaluate import evaluate_behavior

        return evaluate_behavior
    raise AttributeError(f"module 'ethoscribe.behavior' has no attribute {name!r}")
