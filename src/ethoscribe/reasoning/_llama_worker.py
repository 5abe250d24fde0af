"""Child process that runs llama.cpp (``xllamacpp.Server``); started by :class:`ethoscribe.reasoning.local.LocalLLMServer`.

Why a separate process: ``xllamacpp`` and ``cftime`` (loaded by xarray's
netCDF reading, hence by ``movement``) are compiled with Cython versions
whose shared function type differs in size; whichever is imported second
fails ("Shared Cython type cython_function_or_method has the wrong size").
So ethoscribe never imports ``xllamacpp`` in its own process. This script
imports nothing from ethoscribe (it is run by path, not as a module).

Protocol: arguments as below; prints one JSON line ``{"address": ...}`` (or
``{"error": ...}``) on stdout once serving, then serves until its stdin is
closed (the parent stopped it, or died), SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--alias", default="gemma-3-270m")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=4096, help="total context (all slots)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--chat-template", default="gemma")
    ap.add_argument("--verbosity", type=int, default=0)
    a = ap.parse_args()

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        import xllamacpp

        p = xllamacpp.CommonParams()
        p.model.path = a.model
        p.model_alias = {a.alias}
        p.hostnames = [a.host]
        p.port = a.port
        p.n_parallel = a.parallel
        p.n_ctx = a.ctx
        p.cpuparams.n_threads = a.threads
        p.cpuparams_batch.n_threads = a.threads
        p.use_jinja = False  # a built-in template by name, not a Jinja source (the GGUF has none)
        p.chat_template = a.chat_template
        p.verbosity = a.verbosity
        p.warmup = True
        server = xllamacpp.Server(p)
    except Exception as exc:  # report, do not hang the parent
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps({"address": str(server.listening_address)}), flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        del server  # ~Server waits for the main loop to exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
