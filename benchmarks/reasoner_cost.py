"""Cost of the language-model steps on the synthetic rig, with the local llama.cpp backend (Gemma 3 270M).

What it does (progress on stderr, one JSON object on the last stdout line):

1. synthesises a one-mouse session (truth only, no video) and runs the
   behaviour pipeline on its 3D pose up to the captions, collecting every
   snippet caption with its cluster id, duration and kinematic numbers (the
   merge step is replaced by a capturing stand-in, so no sentence model is loaded);
2. starts the local LLM server (:class:`~ethoscribe.reasoning.local.LocalLLMServer`)
   and measures its generation speed;
3. **first run**: sends the merge-like requests (:func:`merge_requests`: the
   snippets in batches of ``--batch`` >= 20 captions, rendered with a
   packaged prompt, answers constrained to the prompt's schema, each with a
   fallback) through a :class:`~ethoscribe.reasoning.client.ChatClient` with
   a fresh response cache;
4. **rerun**: the same requests again with the same cache (must make no call).

Figures: ``llm_calls`` (first run), ``llm_calls_rerun`` (must be 0),
``cache_hit_rate_rerun``, ``schema_valid_rate`` (answers valid before any
repair), ``fallback_rate``, ``calls_per_snippet``, ``prompt_tokens``,
``completion_tokens`` (first run), plus sizes, timings and the server's
tokens/s. Calls scale with snippets (one per batch), never with frames.

The LLM merger does not exist yet. :func:`run_merge` is the one place to
swap in the real merger call, e.g.::

    def run_merge(client, summaries, args):
        return LLMMerger(client, batch=args.batch).merge(summaries)

everything else (session, server, cache, accounting, figures) stays.

Usage: ``python benchmarks/reasoner_cost.py [--frames 3000] [--batch 20] [--prompt name_clusters]
[--max-tokens 256] [--threads N] [--work DIR] [--keep]``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log  # noqa: E402

from ethoscribe.reasoning.accounting import Accounting  # noqa: E402
from ethoscribe.reasoning.client import ChatClient, Request  # noqa: E402
from ethoscribe.reasoning.prompts import load_prompt  # noqa: E402
from ethoscribe.reasoning.schemas import cluster_names_model, merge_answer_model  # noqa: E402
from ethoscribe.reasoning.trace import TRACE_FILE, TraceWriter  # noqa: E402

VOCABULARY = ["rest", "walk", "run", "turn", "rear", "groom"]


# ---------------------------------------------------------------------- the snippets of the synthetic rig
class CapturingMerger:
    """Stand-in merger: records the cluster summaries the pipeline hands over, names each cluster by its id."""

    name = "capture"

    def __init__(self) -> None:
        self.summaries: list[Any] = []

    def merge(self, clusters: Any) -> Any:
        from ethoscribe.behavior.merge import LabelEntry, MergeResult

        self.summaries = list(clusters)
        mapping = {int(c.cluster): f"cluster {c.cluster}" for c in self.summaries}
        return MergeResult(mapping, [LabelEntry(label=v, definition="", clusters=[k]) for k, v in mapping.items()], [])


def collect_summaries(work: Path, frames: int, seed: int) -> list[Any]:
    """Cluster summaries (captions per snippet) of a synthetic one-mouse session."""
    import xarray as xr

    from ethoscribe.behavior.pipeline import run_behavior
    from ethoscribe.synth.rig import SynthConfig, synthesize

    session = work / f"solo_{frames}_{seed}"
    points = session / "truth" / "points3d.nc"
    if not points.is_file():
        log(f"synthesising {frames} frames (truth only) -> {session}")
        synthesize(session, SynthConfig(cameras=2, animals=1, frames=frames, fps=30, seed=seed, render="none"))
    ds = xr.load_dataset(points)
    cap = CapturingMerger()
    t = time.perf_counter()
    run_behavior(ds, merger=cap, seed=seed)
    log(f"behaviour pipeline up to captions: {time.perf_counter() - t:.0f} s, {len(cap.summaries)} clusters")
    return cap.summaries


def snippet_rows(summaries: list[Any]) -> list[dict[str, Any]]:
    """One row per snippet (cluster, duration, caption text, kinematic numbers), clusters interleaved."""
    per_cluster = []
    for s in summaries:
        rows = []
        for c, d in zip(s.captions, s.durations):
            nums = ", ".join(f"{k} {v:.2g}" for k, v in sorted(c.numbers.items())[:4])
            rows.append({"cluster": int(s.cluster), "duration_s": float(d), "text": c.text, "summary": nums})
        per_cluster.append(rows)
    out = []
    for i in range(max((len(r) for r in per_cluster), default=0)):  # round-robin: every batch sees many clusters
        out.extend(r[i] for r in per_cluster if i < len(r))
    return out


# ---------------------------------------------------------------------- the merge-like requests (swap point)
def merge_requests(rows: list[dict[str, Any]], batch: int, prompt_name: str, max_tokens: int) -> list[Request]:
    """One request per batch of ``batch`` snippets (the last batch joins the previous one if smaller than 20)."""
    prompt = load_prompt(prompt_name)
    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    if len(chunks) > 1 and len(chunks[-1]) < 20:
        chunks[-2].extend(chunks.pop())
    reqs = []
    for chunk in chunks:
        ids = sorted({r["cluster"] for r in chunk})
        schema = cluster_names_model(ids) if prompt_name == "name_clusters" else merge_answer_model(ids)
        msgs = prompt.render(snippets=chunk, cluster_ids=ids, vocabulary=VOCABULARY)
        budget = max(max_tokens, 40 * len(ids) + 32)  # about 30 tokens per cluster's name and definition
        reqs.append(Request(msgs, schema, step="merge", prompt=prompt, fallback=lambda: None,
                            options={"max_tokens": budget, "input": {"n_snippets": len(chunk), "clusters": ids}}))
    return reqs


def run_merge(client: ChatClient, summaries: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """The merge step under test. Replace the body by the real LLM merger when it exists (see the module docstring)."""
    rows = snippet_rows(summaries)
    reqs = merge_requests(rows, args.batch, args.prompt, args.max_tokens)
    decisions = client.ask_many(reqs)
    names: dict[int, list[str]] = {}
    for d in decisions:
        if d.source == "model" and hasattr(d.value, "names"):
            for k, v in d.value.names().items():
                names.setdefault(k, []).append(v.name)
    return {"n_snippets": len(rows), "n_requests": len(reqs), "model_names": {k: sorted(set(v)) for k, v in sorted(names.items())}}


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3000, help="frames of the synthetic session (30 fps)")
    ap.add_argument("--batch", type=int, default=20, help="snippets per request (>= 20)")
    ap.add_argument("--prompt", default="name_clusters", choices=["name_clusters", "merge_behaviours"])
    ap.add_argument("--max-tokens", type=int, default=256, help="least answer budget (raised to 40 per cluster + 32)")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: half the cores)")
    ap.add_argument("--parallel", type=int, default=2, help="llama.cpp slots = client max_concurrency")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="folder for the session and cache (reused when present)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    if args.batch < 20:
        ap.error("--batch must be at least 20 (the merger batches at least 20 snippets per call)")
    from ethoscribe.reasoning.local import LocalLLMServer

    work = args.work or Path(tempfile.mkdtemp(prefix="ethoscribe-reasoner-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"frames": args.frames, "batch": args.batch, "prompt": args.prompt,
                           "merger": "infrastructure stand-in (merge-like requests; real LLM merger not yet written)"}
    t_all = time.perf_counter()
    try:
        summaries = collect_summaries(work, args.frames, args.seed)
        out["n_clusters"] = len(summaries)
        cache_path = work / f"llm_cache_{time.time_ns()}.sqlite"  # fresh: the first run really calls
        with LocalLLMServer(parallel=args.parallel, threads=args.threads, ctx_size=4096) as srv:
            out["server_start_s"] = srv.startup_s
            out["threads"] = srv.threads
            speed = srv.measure_tokens_per_second(64)
            out["tokens_per_s"] = speed["tokens_per_s"]
            out["prompt_tokens_per_s"] = speed["prompt_tokens_per_s"]
            log(f"local server at {srv.base_url}: {speed['tokens_per_s']:.1f} tokens/s generated, "
                f"{speed['prompt_tokens_per_s']:.0f} tokens/s prompt ({srv.threads} thread(s))")
            cfg = srv.config(cache_path=cache_path, max_tokens=args.max_tokens, seed=args.seed)

            runs = {}
            for name in ("first", "rerun"):
                acc = Accounting()
                t = time.perf_counter()
                run_dir = work / f"run_{name}"
                with TraceWriter(run_dir / TRACE_FILE, truncate=True) as tw, ChatClient(cfg, accounting=acc, trace=tw) as client:
                    res = run_merge(client, summaries, args)
                acc.write(run_dir)  # reasoner_usage.json, as a pipeline run writes it
                runs[name] = (acc.to_dict(), time.perf_counter() - t, res)
                u = runs[name][0]
                log(f"{name}: {u['calls']} calls, {u['cache_hits']} cache hits, {u['prompt_tokens']} prompt + "
                    f"{u['completion_tokens']} completion tokens, {u['fallbacks']} fallbacks, {runs[name][1]:.1f} s")
        first, first_s, res = runs["first"]
        rerun, rerun_s, _ = runs["rerun"]
        n_snip = res["n_snippets"]
        out.update({
            "llm_calls": first["calls"],
            "llm_calls_rerun": rerun["calls"],
            "cache_hit_rate_rerun": rerun["cache_hit_rate"],
            "schema_valid_rate": first["schema_valid_rate"],
            "fallback_rate": first["fallback_rate"],
            "calls_per_snippet": first["calls"] / n_snip if n_snip else math.nan,
            "prompt_tokens": first["prompt_tokens"],
            "completion_tokens": first["completion_tokens"],
            "n_snippets": n_snip,
            "n_requests": res["n_requests"],
            "repairs": first["repairs"],
            "first_run_s": first_s,
            "rerun_s": rerun_s,
            "model_names": {str(k): v for k, v in res["model_names"].items()},
            "total_s": time.perf_counter() - t_all,
        })
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work folder kept: {work}")
    emit(out)


if __name__ == "__main__":
    main()
