"""Language-model reasoners: an OpenAI-compatible client with schema-checked answers, cache, trace and accounting.

Modules:

- :mod:`~ethoscribe.reasoning.config`: :class:`ReasonerConfig` from
  ``ethoscribe.toml`` and ``ETHOSCRIBE_*`` environment variables;
- :mod:`~ethoscribe.reasoning.client`: :class:`ChatClient` (``ask``,
  ``ask_or_fallback``, ``ask_many``), :class:`Answer`, :class:`Decision`;
- :mod:`~ethoscribe.reasoning.messages` and :mod:`~ethoscribe.reasoning.images`:
  chat messages with images as data URLs, numbered candidate dots, crops, montages;
- :mod:`~ethoscribe.reasoning.prompts`: versioned prompt files (package data);
- :mod:`~ethoscribe.reasoning.schemas`: answer schemas of the packaged prompts;
- :mod:`~ethoscribe.reasoning.cache`, :mod:`~ethoscribe.reasoning.accounting`,
  :mod:`~ethoscribe.reasoning.trace`: response cache, usage counts, JSONL trace;
- :mod:`~ethoscribe.reasoning.local`: the packaged Gemma 3 270M served by
  llama.cpp (``ethoscribe serve-llm``; optional extra ``[llm]``);
- the language-model steps, behind the pipelines' protocols:
  :mod:`~ethoscribe.reasoning.pose_vlm` (:class:`VLMPoseReasoner`, pose
  stages 1-3 where the geometry is unsure), :mod:`~ethoscribe.reasoning.captioner_vlm`
  (:class:`VLMCaptioner`), :mod:`~ethoscribe.reasoning.merger_llm`
  (:class:`LLMMerger`), with :mod:`~ethoscribe.reasoning.steps` and
  :mod:`~ethoscribe.reasoning.budget` (question budgets, giving up on a dead
  server) and :mod:`~ethoscribe.reasoning.factory` (:func:`make_pose_reasoner`,
  :func:`make_captioner`, :func:`make_merger`, :class:`ReasonerRun`: what the CLI calls).

Nothing here imports ``openai`` or ``xllamacpp`` at import time.
"""

from __future__ import annotations

from typing import Any

from ethoscribe.reasoning.accounting import USAGE_FILE, Accounting
from ethoscribe.reasoning.cache import ResponseCache, cache_key
from ethoscribe.reasoning.client import Answer, ChatClient, Decision, Request, extract_json, parse_answer
from ethoscribe.reasoning.config import ReasonerConfig, load_config
from ethoscribe.reasoning.errors import LocalBackendError, ReasonerConfigError, ReasonerUnavailable
from ethoscribe.reasoning.images import draw_numbered_points, encode_image
from ethoscribe.reasoning.local import LocalLLMServer, local_model_path, serve_llm
from ethoscribe.reasoning.messages import assistant, system, user
from ethoscribe.reasoning.prompts import Prompt, load_prompt
from ethoscribe.reasoning.trace import TRACE_FILE, TraceWriter

__all__ = [
    "TRACE_FILE", "USAGE_FILE", "Accounting", "Answer", "ChatClient", "Decision", "LocalBackendError", "Prompt",
    "LocalLLMServer", "ReasonerConfig", "ReasonerConfigError", "ReasonerUnavailable", "Request", "ResponseCache", "TraceWriter",
    "assistant", "cache_key", "draw_numbered_points", "encode_image", "extract_json", "load_config", "load_prompt",
    "local_model_path", "parse_answer", "serve_llm", "system", "user",
]

_LAZY = {
    "VLMPoseReasoner": "ethoscribe.reasoning.pose_vlm", "PoseConsultPolicy": "ethoscribe.reasoning.pose_vlm",
    "VLMCaptioner": "ethoscribe.reasoning.captioner_vlm", "LLMMerger": "ethoscribe.reasoning.merger_llm",
    "ReasonerRun": "ethoscribe.reasoning.factory", "make_pose_reasoner": "ethoscribe.reasoning.factory",
    "make_captioner": "ethoscribe.reasoning.factory", "make_merger": "ethoscribe.reasoning.factory",
}
__all__ += sorted(_LAZY)


def __getattr__(name: str) -> Any:  # the steps import the pose and behaviour packages: only when asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ethoscribe.reasoning' has no attribute {name!r}")
