"""How many questions a step may put to a language model in one run, and when to stop asking a dead server.

:class:`QuestionBudget` counts *questions* (one per :meth:`ChatClient.ask
<ethoscribe.reasoning.client.ChatClient.ask>`, whether the cache or the
server answered it), not HTTP calls: a rerun then asks exactly the same
questions in the same order and gets every answer from the cache, so its
result is the same as the first run's. A repair request is part of its
question.

:class:`Breaker` stops a run from asking again and again after the server
has proved unavailable (down, timing out): after ``max_failures``
consecutive unavailable answers every further question is skipped and the
deterministic reasoner answers, with the reason in the trace.

Examples
--------
>>> b = QuestionBudget(2)
>>> b.take(), b.take(), b.take()
(True, True, False)
>>> b.to_dict()
{'limit': 2, 'asked': 2, 'refused': 1}
>>> br = Breaker(max_failures=2)
>>> br.record(False); br.record(False); br.open
True
"""

from __future__ import annotations

import threading
from typing import Any


class QuestionBudget:
    """A thread-safe count of questions against a limit (None: no limit)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError("a question budget cannot be negative")
        self.limit = limit
        self.asked = 0
        self.refused = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Use one question of the budget; False (and counted as refused) when none is left."""
        with self._lock:
            if self.limit is not None and self.asked >= self.limit:
                self.refused += 1
                return False
            self.asked += 1
            return True

    @property
    def left(self) -> int | None:
        """Questions left (None: unlimited)."""
        with self._lock:
            return None if self.limit is None else max(0, self.limit - self.asked)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"limit": self.limit, "asked": self.asked, "refused": self.refused}


class Breaker:
    """Opens after ``max_failures`` consecutive unavailable answers; stays open for the rest of the run."""

    def __init__(self, max_failures: int = 2) -> None:
        self.max_failures = max(1, int(max_failures))
        self.consecutive = 0
        self.open = False
        self.reason: str | None = None
        self._lock = threading.Lock()

    def record(self, available: bool, reason: str | None = None) -> None:
        """Record one answer: ``available`` False for a server that gave no answer at all."""
        with self._lock:
            if available:
                self.consecutive = 0
                return
            self.consecutive += 1
            if self.consecutive >= self.max_failures and not self.open:
                self.open = True
                self.reason = reason

    def skip_reason(self) -> str:
        return (f"skipped: the language-model server was unavailable {self.consecutive} times in a row in this run "
                f"({self.reason or 'no answer'}); the deterministic reasoner answers from here on")
