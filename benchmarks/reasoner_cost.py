"""Cost and label quality of the LLM merger on the synthetic rig, with the local llama.cpp backend (Gemma 3 270M).

What it does (progress on stderr, one JSON object on the last stdout line):

1. synthesises a one-mouse session (truth only, no video: the text steps
   need none) of ``--frames`` frames;
2. starts the local LLM server (:class:`~ethoscribe.reasoning.local.LocalLLMServer`)
   and measures its generation speed;
3. **first run**: :func:`~ethoscribe.behavior.pipeline.run_behavior` on the
   session's 3D pose with the :class:`~ethoscribe.reasoning.merger_llm.LLMMerger`
   (``make_merger("llm", run)``) and a fresh response cache; the run's
   ``reasoner_usage.json`` and ``reasoner_trace.jsonl`` are written as the CLI would;
4. **rerun**: the same again with the same cache (must make no call);
5. the same pipeline with the default :class:`~ethoscribe.behavior.merge.EmbeddingMerger`,
   and with the LLM merger's kinematic check switched off (``check=False``:
   the model's raw names; its requests are the same, so the cache answers
   them), all scored against ``truth/behaviour.parquet`` with
   :func:`~ethoscribe.behavior.evaluate.evaluate_behavior`.

Figures: ``llm_calls`` (first run), ``llm_calls_rerun`` (must be 0),
``cache_hit_rate_rerun``, ``schema_valid_rate`` (answers valid before any
repair), ``fallback_rate``, ``calls_per_snippet`` (at most 1/20 by design),
``prompt_tokens``, ``completion_tokens`` (first run); label quality
``nmi_llm`` / ``macro_f1_llm`` (the merger as shipped: a rejected answer
falls back to the embedding merger), ``nmi_llm_unchecked`` /
``macro_f1_llm_unchecked`` (the model's own names), ``nmi_embedding`` /
``macro_f1_embedding``; plus ``llm_source`` (model or fallback), the
fallback reason, the labels each merger gave, sizes and timings.

Usage: ``python benchmarks/reasoner_cost.py [--frames 3000] [--seed 0] [--threads N] [--parallel 2]
[--work DIR] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log  # noqa: E402


def _labels(res: Any) -> dict[str, str]:
    return {str(r.label): str(r.clusters) for r in res.label_dictionary.itertuples(index=False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3000, help="frames of the synthetic session (30 fps)")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: half the cores)")
    ap.add_argument("--parallel", type=int, default=2, help="llama.cpp slots = client max_concurrency")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="folder for the session and cache (reused when present)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    import pandas as pd
    import xarray as xr

    from ethoscribe.behavior.evaluate import evaluate_behavior
    from ethoscribe.behavior.pipeline import run_behavior
    from ethoscribe.reasoning.factory import ReasonerRun, make_merger
    from ethoscribe.reasoning.local import LocalLLMServer
    from ethoscribe.synth.rig import SynthConfig, synthesize

    work = args.work or Path(tempfile.mkdtemp(prefix="ethoscribe-reasoner-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"frames": args.frames, "seed": args.seed, "merger": "LLMMerger (name_cluster_summaries, batched)"}
    t_all = time.perf_counter()
    try:
        session = work / f"solo_{args.frames}_{args.seed}"
        if not (session / "truth" / "points3d.nc").is_file():
            log(f"synthesising {args.frames} frames (truth only) -> {session}")
            synthesize(session, SynthConfig(cameras=2, animals=1, frames=args.frames, fps=30, seed=args.seed, render="none"))
        ds = xr.load_dataset(session / "truth" / "points3d.nc")
        truth = pd.read_parquet(session / "truth" / "behaviour.parquet")

        def score(res: Any) -> dict[str, float]:
            r = evaluate_behavior(res.label_table(), truth)
            return {"nmi": r["nmi"], "macro_f1": r["macro_f1"]}

        t = time.perf_counter()
        emb = run_behavior(ds, merger="embedding", seed=args.seed)
        out["embedding_s"] = time.perf_counter() - t
        s_emb = score(emb)
        n_snip = int((emb.segments["cluster"] >= 0).sum())
        out["n_snippets"] = n_snip
        out["n_clusters"] = int(emb.segments.loc[emb.segments["cluster"] >= 0, "cluster"].nunique())
        log(f"embedding merger: NMI {s_emb['nmi']:.3f}, macro-F1 {s_emb['macro_f1']:.3f}; {n_snip} snippets")

        cache_path = work / f"llm_cache_{time.time_ns()}.sqlite"  # fresh: the first run really calls
        with LocalLLMServer(parallel=args.parallel, threads=args.threads, ctx_size=4096) as srv:
            out["server_start_s"] = srv.startup_s
            out["threads"] = srv.threads
            speed = srv.measure_tokens_per_second(64)
            out["tokens_per_s"] = speed["tokens_per_s"]
            out["prompt_tokens_per_s"] = speed["prompt_tokens_per_s"]
            log(f"local server at {srv.base_url}: {speed['tokens_per_s']:.1f} tokens/s generated, "
                f"{speed['prompt_tokens_per_s']:.0f} tokens/s prompt ({srv.threads} thread(s))")
            cfg = srv.config(cache_path=cache_path, seed=args.seed)

            runs: dict[str, Any] = {}
            for name, opts in (("first", {}), ("rerun", {}), ("unchecked", {"check": False})):
                run_dir = work / f"run_{name}"
                t = time.perf_counter()
                with ReasonerRun(cfg, out_dir=run_dir) as run:
                    merger = make_merger("llm", run, **opts)
                    res = run_behavior(ds, merger=merger, seed=args.seed, out_dir=run_dir)
                    summ = merger.summary()
                usage = json.loads((run_dir / "reasoner_usage.json").read_text())
                runs[name] = (usage, time.perf_counter() - t, res, summ)
                log(f"{name}: {usage['calls']} calls, {usage['cache_hits']} cache hits, {usage['prompt_tokens']} prompt + "
                    f"{usage['completion_tokens']} completion tokens, {usage['fallbacks']} fallbacks, "
                    f"source {summ.get('source')}, {runs[name][1]:.1f} s")
        first, first_s, res1, summ1 = runs["first"]
        rerun, rerun_s, res2, _ = runs["rerun"]
        _, _, res3, summ3 = runs["unchecked"]
        s1, s3 = score(res1), score(res3)
        out.update({
            "llm_calls": first["calls"],
            "llm_calls_rerun": rerun["calls"],
            "cache_hit_rate_rerun": rerun["cache_hit_rate"],
            "schema_valid_rate": first["schema_valid_rate"],
            "fallback_rate": first["fallback_rate"],
            "calls_per_snippet": first["calls"] / n_snip if n_snip else math.nan,
            "prompt_tokens": first["prompt_tokens"],
            "completion_tokens": first["completion_tokens"],
            "repairs": first["repairs"],
            "n_requests": summ1.get("n_batches"),
            # by design: one request per batch of at most 8 clusters, and at most one per 20 snippets
            "max_requests_by_design": max(1, min(math.ceil(out["n_clusters"] / 8), n_snip // 20)),
            "nmi_llm": s1["nmi"], "macro_f1_llm": s1["macro_f1"],
            "nmi_llm_unchecked": s3["nmi"], "macro_f1_llm_unchecked": s3["macro_f1"],
            "nmi_embedding": s_emb["nmi"], "macro_f1_embedding": s_emb["macro_f1"],
            "llm_source": summ1.get("source"), "llm_fallback_reason": (summ1.get("reason") or "")[:300] or None,
            "llm_unchecked_source": summ3.get("source"),
            "rerun_same_labels": bool((res1.labels["label"] == res2.labels["label"]).all()),
            "labels_llm": _labels(res1), "labels_llm_unchecked": _labels(res3), "labels_embedding": _labels(emb),
            "first_run_s": first_s, "rerun_s": rerun_s,
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
