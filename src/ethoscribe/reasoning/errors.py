"""Errors of the reasoning layer (all :class:`~ethoscribe.errors.EthoscribeError`)."""

from __future__ import annotations

from ethoscribe.errors import EthoscribeError, InputError


class ReasonerConfigError(InputError):
    """A reasoner configuration that cannot be used (missing model or base URL, unset key variable, bad value)."""


class ReasonerUnavailable(EthoscribeError):
    """The language-model server could not answer: down, too slow, refusing, or failing after every retry.

    Callers that have a deterministic reasoner catch it (or use
    :meth:`~ethoscribe.reasoning.client.ChatClient.ask_or_fallback`) and fall
    back, writing the message to the trace.
    """


class LocalBackendError(EthoscribeError):
    """The local llama.cpp backend cannot start: package missing, model file bad, server not healthy."""
