"""Shared machinery of the language-model steps: ask within a budget, stop asking a dead server, trace skips.

A :class:`Consultant` wraps a :class:`~ethoscribe.reasoning.client.ChatClient`
for one step family (``pose_*``, ``caption``, ``merge``):

- :meth:`Consultant.may_ask` says whether one more question may be asked
  (budget left, server not given up on); the first refusal of each kind is
  written to the trace once (``step``, ``skipped``, ``reason``), the rest
  only counted, so a long run does not flood its trace;
- :meth:`Consultant.ask` is :meth:`ChatClient.ask_or_fallback
  <ethoscribe.reasoning.client.ChatClient.ask_or_fallback>` that also tells
  the :class:`~ethoscribe.reasoning.budget.Breaker` whether the server answered;
- :meth:`Consultant.stats` counts questions, model answers, fallbacks by
  reason kind and skips.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ethoscribe.reasoning.budget import Breaker, QuestionBudget
from ethoscribe.reasoning.client import ChatClient, Decision, Request
from ethoscribe.reasoning.trace import emit


def reason_kind(reason: str | None) -> str:
    """``"unavailable"``, ``"invalid"``, ``"rejected"``, ``"skipped"``, ``"budget"`` ... (the text before the first colon)."""
    if not reason:
        return "none"
    return reason.split(":", 1)[0].strip() or "unspecified"


class Consultant:
    """Budgeted, breaker-protected questions of one step family.

    Parameters
    ----------
    client
        The chat client (its trace and accounting are used).
    family
        Name for the trace records of skips (``"pose"``, ``"caption"``, ``"merge"``).
    max_questions
        Questions this run may ask (None: no limit).
    max_failures
        Consecutive unavailable answers after which no more questions are asked.
    """

    def __init__(self, client: ChatClient, family: str, max_questions: int | None = None, max_failures: int = 2) -> None:
        self.client = client
        self.family = family
        self.budget = QuestionBudget(max_questions)
        self.breaker = Breaker(max_failures)
        self._lock = threading.Lock()
        self._announced: set[str] = set()
        self.skipped: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.fallback_kinds: Counter[str] = Counter()

    # ------------------------------------------------------------ gate
    def may_ask(self, where: dict[str, Any] | None = None) -> bool:
        """Whether one more question may be asked now (takes it from the budget if so)."""
        if self.breaker.open:
            self._skip("breaker", self.breaker.skip_reason(), where)
            return False
        if not self.budget.take():
            self._skip("budget", f"budget: the run's {self.budget.limit} questions to the model are used up; "
                                 "the deterministic reasoner answers the rest", where)
            return False
        return True

    def _skip(self, kind: str, reason: str, where: dict[str, Any] | None) -> None:
        with self._lock:
            self.skipped[kind] += 1
            first = kind not in self._announced
            self._announced.add(kind)
        if first:
            emit(self.client.trace, {"step": f"{self.family}_skip", "skipped": kind, "reason": reason,
                                     "first_at": where or {}, "model": self.client.config.model,
                                     "note": "written once; later skips of this kind are only counted (see the step's summary)"})

    # ------------------------------------------------------------ asking
    def _record(self, d: Decision[Any]) -> None:
        unavailable = reason_kind(d.reason) == "unavailable"
        self.breaker.record(not unavailable, d.reason)
        with self._lock:
            self.sources[d.source] += 1
            if d.source == "fallback":
                self.fallback_kinds[reason_kind(d.reason)] += 1

    def ask(self, messages: list[dict[str, Any]], schema: type, fallback: Callable[[], Any], **kwargs: Any) -> Decision[Any]:
        """:meth:`ChatClient.ask_or_fallback` with the breaker informed (call :meth:`may_ask` first)."""
        d = self.client.ask_or_fallback(messages, schema, fallback, **kwargs)
        self._record(d)
        return d

    def ask_many(self, requests: Sequence[Request]) -> list[Decision[Any]]:
        """Several questions at once (each must have a ``fallback``); results in order."""
        out = self.client.ask_many(list(requests))
        for d in out:
            self._record(d)
        return out

    def stats(self) -> dict[str, Any]:
        """Counts of this run (JSON-ready)."""
        with self._lock:
            return {"budget": self.budget.to_dict(), "answers": dict(self.sources),
                    "fallbacks_by_kind": dict(self.fallback_kinds), "skipped": dict(self.skipped),
                    "gave_up_on_server": self.breaker.open}
