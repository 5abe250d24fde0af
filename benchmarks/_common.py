"""Small helpers shared by the benchmark scripts: logging, timing, data paths, the JSON line."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def log(msg: str) -> None:
    """Progress message on stderr (stdout is reserved for the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """Call ``fn`` once; return (result, seconds)."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float):
        return None if not math.isfinite(x) else float(f"{x:.6g}")
    return x


def emit(result: dict[str, Any]) -> None:
    """Print ``result`` as one JSON object on the last line of stdout (NaN becomes null)."""
    print(json.dumps(_clean(result)), flush=True)
