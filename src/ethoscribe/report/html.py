"""Render a self-contained HTML report: one file, images embedded, no network.

A report is a list of :class:`Section` objects, each with a title, optional
key figures (a small table of name/value pairs), notes (call-outs), HTML-safe
paragraphs, tables, images, galleries of small images and subsections.
Images are matplotlib figures or PNG/JPEG/GIF bytes, embedded as base64 data
URLs so the file opens from ``file://`` anywhere. The page carries a
Content-Security-Policy that allows nothing but inline styles, the one inline
script and ``data:`` images, so a report cannot load anything from the
network even by mistake; the script marks images that failed to decode
(``data-images-broken`` on ``<body>`` and a warning banner).
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ethoscribe.io.atomic import write_text


@dataclass
class Image:
    """An embedded image (PNG by default; ``mime`` may be ``image/jpeg`` or ``image/gif``) with a caption."""

    png: bytes
    caption: str = ""
    alt: str = ""
    mime: str = "image/png"
    css_class: str = ""

    @property
    def data_url(self) -> str:
        """The image as a ``data:`` URL."""
        return f"data:{self.mime};base64," + base64.b64encode(self.png).decode("ascii")

    @classmethod
    def from_figure(cls, fig: Any, caption: str = "", dpi: int = 110) -> Image:
        """Render a matplotlib figure to PNG (and close it)."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        return cls(buf.getvalue(), caption=caption, alt=caption)


@dataclass
class Table:
    """A table: column names and rows of cells.

    Cells are escaped unless they are :class:`markupsafe.Markup` (use that for
    links or inline images).
    """

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    collapsed: bool = False  # inside a <details> that starts closed


@dataclass
class Gallery:
    """Small images in a grid (thumbnails, frame strips, clips)."""

    title: str
    items: list[Image] = field(default_factory=list)
    caption: str = ""


@dataclass
class Section:
    """One section of a report (subsections are sections too, one level deep in the navigation)."""

    title: str
    anchor: str
    figures: dict[str, str] = field(default_factory=dict)
    paragraphs: list[str] = field(default_factory=list)  # escaped unless markupsafe.Markup
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # call-outs (warnings, what is missing)
    galleries: list[Gallery] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)


def render_report(
    path: str | os.PathLike[str],
    title: str,
    sections: list[Section],
    subtitle: str = "",
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``sections`` as one self-contained HTML file at ``path`` (atomically).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "report.html"
    >>> _ = render_report(out, "Demo", [Section("Summary", "summary", figures={"frames": "300"})])
    >>> "Summary" in out.read_text()
    True
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    from ethoscribe import __version__

    env = Environment(loader=PackageLoader("ethoscribe", "report/templates"), autoescape=select_autoescape(["html"]))
    env.filters["pretty"] = _pretty
    html = env.get_template("report.html").render(
        title=title,
        subtitle=subtitle,
        sections=sections,
        provenance=provenance or {},
        version=__version__,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return write_text(path, html)


def _pretty(value: Any) -> Any:
    """Provenance values: mappings and lists as indented JSON, the rest as text."""
    import json

    from markupsafe import Markup, escape

    if isinstance(value, (dict, list, tuple)):
        return Markup("<pre>") + escape(json.dumps(value, indent=2, sort_keys=True, default=str)) + Markup("</pre>")
    return value
