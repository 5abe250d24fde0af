"""Prompt templates: versioned package-data files, loaded by name.

Each prompt is a file ``<name>.v<version>.md`` in this folder::

    ---
    name: merge_behaviours
    version: 1
    schema: MergeAnswer
    description: one line saying what the prompt asks
    ---
    <!-- role: system -->
    You are an ethologist ...
    <!-- role: user -->
    Below are {{ n }} snippets ...

The front matter (``key: value`` lines) must give ``name`` and ``version``
(matching the file name); ``schema`` names the answer model in
:mod:`ethoscribe.reasoning.schemas` (optional). The body is split into
messages at ``<!-- role: ... -->`` lines (no marker: one user message) and
rendered with Jinja2 (undefined variables are errors). A changed prompt gets
a new file with the next version; the old one stays, so old traces can be
read against the text that produced them. The version goes into every trace
line and into the cache key.

Examples
--------
>>> p = load_prompt("json_repair")
>>> p.name, p.version
('json_repair', '1')
>>> "schema" in p.render(error="x: field required", schema="{}")[-1]["content"]
True
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from ethoscribe.errors import InputError

_FILE = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>[0-9][0-9A-Za-z.]*)\.md$")
_ROLE = re.compile(r"^<!--\s*role:\s*(system|user|assistant)\s*-->\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt template.

    Attributes
    ----------
    name, version
        From the front matter (and the file name).
    text
        The body (all roles, markers included).
    schema
        Name of the answer schema in :mod:`ethoscribe.reasoning.schemas`, or None.
    meta
        Every front-matter field.
    sha256
        Hash of the whole file (traces may record it beside the version).
    """

    name: str
    version: str
    text: str
    schema: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    sha256: str = ""

    @property
    def ref(self) -> dict[str, str]:
        """``{"name", "version"}`` for the trace."""
        return {"name": self.name, "version": self.version}

    @property
    def id(self) -> str:
        """``name@version`` (part of the cache key)."""
        return f"{self.name}@v{self.version}"

    def parts(self) -> list[tuple[str, str]]:
        """(role, template) pairs of the body."""
        pieces = _ROLE.split(self.text)
        out: list[tuple[str, str]] = []
        if pieces[0].strip():
            out.append(("user", pieces[0].strip("\n")))
        for i in range(1, len(pieces), 2):
            body = pieces[i + 1].strip("\n")
            if body.strip():
                out.append((pieces[i], body))
        return out

    def render(self, **variables: Any) -> list[dict[str, Any]]:
        """The prompt's messages with ``variables`` filled in (text only; add images with :meth:`messages`)."""
        import jinja2

        env = _jinja()
        out = []
        for role, tpl in self.parts():
            try:
                text = env.from_string(tpl).render(**variables)
            except jinja2.UndefinedError as exc:
                raise InputError(f"prompt {self.id}: {exc} (pass it to render())") from None
            out.append({"role": role, "content": text.strip()})
        return out

    def messages(self, images: tuple[Any, ...] | list[Any] = (), fmt: str = "png", **variables: Any) -> list[dict[str, Any]]:
        """Rendered messages with ``images`` attached to the last user message (as data URLs)."""
        from ethoscribe.reasoning.messages import user

        msgs = self.render(**variables)
        if images:
            for i in range(len(msgs) - 1, -1, -1):
                if msgs[i]["role"] == "user":
                    msgs[i] = user(msgs[i]["content"], *images, fmt=fmt)  # type: ignore[arg-type]
                    break
            else:
                msgs.append(user("", *images, fmt=fmt))  # type: ignore[arg-type]
        return msgs

    def schema_model(self) -> type | None:
        """The pydantic model the front matter's ``schema`` names (None if none)."""
        if not self.schema:
            return None
        from ethoscribe.reasoning.schemas import get_schema

        return get_schema(self.schema)


@lru_cache(maxsize=1)
def _jinja() -> Any:
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


def _parse(filename: str, content: str) -> Prompt:
    m = _FILE.match(filename)
    if not m:
        raise InputError(f"prompt file {filename}: name must be <name>.v<version>.md")
    if not content.startswith("---"):
        raise InputError(f"prompt file {filename}: missing front matter (--- name/version --- block)")
    try:
        _, front, body = content.split("---", 2)
    except ValueError:
        raise InputError(f"prompt file {filename}: front matter not closed by ---") from None
    meta: dict[str, str] = {}
    for line in front.strip().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ":" not in line:
            raise InputError(f"prompt file {filename}: front matter line {line!r} is not 'key: value'")
        k, v = line.split(":", 1)
        meta[k.strip()] = v.strip().strip('"').strip("'")
    for req in ("name", "version"):
        if req not in meta:
            raise InputError(f"prompt file {filename}: front matter has no {req!r}")
    if meta["name"] != m["name"] or meta["version"] != m["version"]:
        raise InputError(
            f"prompt file {filename}: front matter says {meta['name']} v{meta['version']}, the file name {m['name']} v{m['version']}"
        )
    return Prompt(name=meta["name"], version=meta["version"], text=body.strip("\n") + "\n", schema=meta.get("schema") or None,
                  meta=meta, sha256=hashlib.sha256(content.encode("utf-8")).hexdigest())


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.]", v))


@lru_cache(maxsize=None)
def _index() -> dict[str, dict[str, str]]:
    """name -> version -> file name, of the packaged prompts."""
    out: dict[str, dict[str, str]] = {}
    for entry in resources.files(__name__).iterdir():
        m = _FILE.match(entry.name)
        if m:
            out.setdefault(m["name"], {})[m["version"]] = entry.name
    return out


def list_prompts() -> dict[str, list[str]]:
    """Packaged prompt names and their versions (oldest first)."""
    return {n: sorted(vs, key=_version_key) for n, vs in sorted(_index().items())}


@lru_cache(maxsize=None)
def load_prompt(name: str, version: str | int | None = None) -> Prompt:
    """The packaged prompt ``name`` at ``version`` (default: the newest).

    Raises
    ------
    InputError
        Unknown name or version, or a malformed file.
    """
    versions = _index().get(name)
    if not versions:
        raise InputError(f"unknown prompt {name!r} (packaged: {', '.join(sorted(_index())) or 'none'})")
    v = str(version) if version is not None else max(versions, key=_version_key)
    if v not in versions:
        raise InputError(f"prompt {name!r} has no version {v} (versions: {', '.join(sorted(versions, key=_version_key))})")
    fname = versions[v]
    content = resources.files(__name__).joinpath(fname).read_text(encoding="utf-8")
    return _parse(fname, content)


def load_prompt_file(path: str) -> Prompt:
    """A prompt from any file (for trying a new prompt before packaging it)."""
    from pathlib import Path

    p = Path(path)
    return _parse(p.name, p.read_text(encoding="utf-8"))
