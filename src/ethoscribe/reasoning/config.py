"""Where the language-model reasoner lives and how to talk to it: :class:`ReasonerConfig`.

The configuration comes from an ``ethoscribe.toml`` file (a ``[reasoner]``
table) and/or environment variables ``ETHOSCRIBE_<FIELD>`` (upper case), the
environment overriding the file, and keyword overrides (e.g. from the CLI)
overriding both. The API key itself is never stored: ``api_key_env`` is the
*name* of the environment variable that holds it, read only when a request is
sent. Local servers (llama.cpp, vLLM, Ollama, LM Studio) need no key; then
leave ``api_key_env`` out and the placeholder ``"EMPTY"`` is sent.

Example ``ethoscribe.toml`` (an Ollama server with a vision model)::

    [reasoner]
    base_url = "http://127.0.0.1:11434/v1"
    model = "qwen2.5vl:7b"
    max_concurrency = 2
    timeout_s = 180
    response_format = "json_schema"   # json_schema | json_object | grammar | none

a hosted service::

    [reasoner]
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"    # the NAME of the variable, never the key
    max_concurrency = 8

and the local llama.cpp backend (``ethoscribe serve-llm`` prints this)::

    [reasoner]
    base_url = "http://127.0.0.1:8080/v1"
    model = "gemma-3-270m"
    response_format = "grammar"

Fields (environment variable in brackets):

- ``base_url`` (``ETHOSCRIBE_BASE_URL``): the OpenAI-compatible endpoint,
  ending in ``/v1`` for most servers;
- ``model`` (``ETHOSCRIBE_MODEL``): model name as the server knows it;
- ``api_key_env`` (``ETHOSCRIBE_API_KEY_ENV``): name of the variable holding
  the key (none: local server, key ``"EMPTY"``);
- ``max_concurrency`` (4): requests in flight at once;
- ``timeout_s`` (120): per request;
- ``max_retries`` (4): retries on 429, 5xx, timeouts and connection errors;
- ``backoff_s`` (1.0), ``backoff_max_s`` (30): exponential back-off
  ``backoff_s * 2**i`` capped at ``backoff_max_s``, with jitter from ``seed``
  (a server's ``Retry-After`` is honoured up to ``backoff_max_s``);
- ``temperature`` (0.0), ``seed`` (0), ``max_tokens`` (1024): sampling;
- ``cache`` (true) and ``cache_path`` (default
  ``$XDG_CACHE_HOME/ethoscribe/llm_cache.sqlite``; relative paths in a file
  are relative to the file's folder): the response cache;
- ``response_format`` (``json_schema``): how the answer schema is enforced:
  ``json_schema`` (OpenAI structured outputs; vLLM, Ollama, LM Studio and
  llama.cpp accept it), ``json_object`` (JSON mode, the schema in the
  prompt), ``grammar`` (llama.cpp: the schema as ``json_schema`` in the
  request body, compiled by the server with ``json_schema_to_grammar`` into
  a grammar that constrains every token; the grammar itself is sent when
  ``xllamacpp`` is loaded in the calling process), ``none`` (prompt only);
- ``schema_in_prompt`` (true): also state the schema in the prompt (small
  models follow it better);
- ``compact_json`` (true): with ``grammar``, ask llama.cpp's grammar engine
  (llguidance, as built into xllamacpp) for JSON without free whitespace
  (an ``x-guidance`` entry in the schema; about 40 % fewer answer tokens;
  servers without llguidance ignore it);
- ``repair`` (true): one repair request for an invalid answer;
- ``extra_body`` (table): passed through in every request body (e.g.
  ``{ options = { num_ctx = 8192 } }`` for Ollama).

Examples
--------
>>> cfg = ReasonerConfig(base_url="http://127.0.0.1:8080/v1", model="gemma-3-270m")
>>> cfg.api_key()
'EMPTY'
>>> cfg.max_concurrency
4
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ethoscribe.reasoning.errors import ReasonerConfigError

#: Name of the configuration file looked for in the working folder.
CONFIG_FILE = "ethoscribe.toml"
#: Table of the configuration file that holds the reasoner settings.
TABLE = "reasoner"
#: Prefix of the environment variables.
ENV_PREFIX = "ETHOSCRIBE_"
#: Environment variable naming a configuration file.
ENV_CONFIG_FILE = "ETHOSCRIBE_CONFIG"
#: Key sent to servers that need none (OpenAI's client refuses an empty key).
NO_KEY = "EMPTY"

ResponseFormat = Literal["json_schema", "json_object", "grammar", "none"]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/ethoscribe/llm_cache.sqlite`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ethoscribe" / "llm_cache.sqlite"


class ReasonerConfig(BaseModel):
    """Settings of an OpenAI-compatible reasoner (see the module docstring for every field)."""

    # hide_input_in_errors: a key pasted into the wrong field must not be echoed by an error message
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    model: str | None = Field(None, description="model name as the server knows it")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the API key")
    max_concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int | None = Field(0)
    max_tokens: int = Field(1024, ge=1)
    cache: bool = True
    cache_path: Path | None = Field(None, description="SQLite response cache (None: default_cache_path())")
    response_format: ResponseFormat = "json_schema"
    schema_in_prompt: bool = True
    compact_json: bool = True
    repair: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("base_url must be an http:// or https:// URL, e.g. http://127.0.0.1:8080/v1")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _key_name(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not _ENV_NAME.match(v):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key itself"
            )
        return v

    # ------------------------------------------------------------------ use
    def require(self) -> ReasonerConfig:
        """Return self if a server can be called (model and base URL set, key variable set); else raise."""
        missing = [f for f in ("base_url", "model") if getattr(self, f) in (None, "")]
        if missing:
            hint = "; ".join(f"[{TABLE}] {f} = ... in {CONFIG_FILE} or {ENV_PREFIX}{f.upper()}" for f in missing)
            raise ReasonerConfigError(
                f"no language-model reasoner configured: {', '.join(missing)} missing (set {hint}; "
                "or run `ethoscribe serve-llm` for a local one)"
            )
        self.api_key()
        return self

    def api_key(self, environ: Mapping[str, str] | None = None) -> str:
        """The API key, read now from the variable named by ``api_key_env`` (``"EMPTY"`` if none is named)."""
        if self.api_key_env is None:
            return NO_KEY
        env = os.environ if environ is None else environ
        value = env.get(self.api_key_env)
        if not value:
            raise ReasonerConfigError(
                f"the API key variable {self.api_key_env} is named in the reasoner config (api_key_env) but is not set "
                f"in the environment: export {self.api_key_env}=... (or remove api_key_env for a local server)"
            )
        return value

    def resolved_cache_path(self) -> Path | None:
        """The cache file to use, or None when caching is off."""
        if not self.cache:
            return None
        return Path(self.cache_path).expanduser() if self.cache_path is not None else default_cache_path()

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters that change an answer (part of the cache key)."""
        return {"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens}

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to write into outputs (no key; the key variable's name only)."""
        d = self.model_dump(mode="json")
        d["api_key_set"] = bool(self.api_key_env and os.environ.get(self.api_key_env))
        return d

    def to_toml(self) -> str:
        """A ``[reasoner]`` table with the non-default settings (for printing an example config)."""
        lines = [f"[{TABLE}]"]
        defaults = ReasonerConfig()
        for name, value in self.model_dump(mode="json").items():
            if value is None or value == getattr(defaults, name) or (name == "extra_body" and not value):
                continue
            lines.append(f"{name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_errors(exc: ValidationError, where: str) -> str:
    parts = []
    for e in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "(config)"
        parts.append(f"{loc}: {e['msg']}")
    return f"{where}: " + "; ".join(parts)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``[reasoner]`` table of a TOML file (empty dict if the file has none), paths made absolute."""
    path = Path(path)
    if not path.is_file():
        raise ReasonerConfigError(f"{path}: reasoner config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ReasonerConfigError(f"{path}: not valid TOML ({exc})") from None
    table = data.get(TABLE, {})
    if not isinstance(table, dict):
        raise ReasonerConfigError(f"{path}: [{TABLE}] must be a table")
    table = dict(table)
    for forbidden in ("api_key", "key", "token", "password"):
        if forbidden in table:
            raise ReasonerConfigError(
                f"{path}: [{TABLE}] {forbidden} is not allowed: keep the key in an environment variable "
                f"and give its NAME as api_key_env (e.g. api_key_env = \"OPENAI_API_KEY\")"
            )
    if table.get("cache_path"):
        p = Path(str(table["cache_path"])).expanduser()
        table["cache_path"] = p if p.is_absolute() else (path.parent / p).resolve()
    return table


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ReasonerConfig.model_fields:
        if name == "extra_body":
            continue
        key = ENV_PREFIX + name.upper()
        if key in environ and environ[key] != "":
            out[name] = environ[key]
    if environ.get(ENV_PREFIX + "EXTRA_BODY"):
        import json

        try:
            out["extra_body"] = json.loads(environ[ENV_PREFIX + "EXTRA_BODY"])
        except json.JSONDecodeError as exc:
            raise ReasonerConfigError(f"{ENV_PREFIX}EXTRA_BODY: not valid JSON ({exc})") from None
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    search: bool = True,
    **overrides: Any,
) -> ReasonerConfig:
    """Reasoner settings from a file, then the environment, then ``overrides`` (later wins).

    Parameters
    ----------
    path
        An ``ethoscribe.toml`` (or any TOML file with a ``[reasoner]``
        table). None: ``$ETHOSCRIBE_CONFIG`` if set, else ``./ethoscribe.toml``
        if it exists and ``search`` is true.
    environ
        Environment to read (default ``os.environ``).
    overrides
        Field values that win over file and environment (None values are ignored).

    Returns
    -------
    ReasonerConfig
        Not yet checked for a model and base URL: call :meth:`ReasonerConfig.require`
        before sending requests (the client does).
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    where = "reasoner config"
    if path is None and env.get(ENV_CONFIG_FILE):
        path = env[ENV_CONFIG_FILE]
    if path is None and search and Path(CONFIG_FILE).is_file():
        path = CONFIG_FILE
    if path is not None:
        values.update(read_config_file(path))
        where = str(path)
    env_vals = _env_values(env)
    if env_vals:
        where = f"{where} + environment ({', '.join(ENV_PREFIX + k.upper() for k in env_vals)})"
    values.update(env_vals)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ReasonerConfig(**values)
    except ValidationError as exc:
        raise ReasonerConfigError(_format_errors(exc, where)) from None
