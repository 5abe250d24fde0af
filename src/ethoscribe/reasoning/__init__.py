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
  llama.cpp (``ethoscribe serve-llm``; optional extra ``[llm]``).

Nothing here imports ``openai`` or ``xllamacpp`` at import time.
"""

from __future__ import annotations

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
