"""Chat messages in the OpenAI format, with images as base64 data URLs.

A message is a plain dict (``{"role": ..., "content": ...}``) so it goes to
any OpenAI-compatible server unchanged and hashes stably for the cache. The
trace never stores the image bytes: :func:`redact_messages` replaces each
image by its sha256, size in bytes, MIME type and pixel size.

Examples
--------
>>> import numpy as np
>>> msgs = [system("You label mouse keypoints."), user("Which dot is the nose?", np.zeros((8, 8), np.uint8))]
>>> msgs[1]["content"][1]["type"]
'image_url'
>>> redact_messages(msgs)[1]["content"][1]["image"]["mime"]
'image/png'
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

from ethoscribe.reasoning.images import EncodedImage, ImageFormat, ImageLike, decode_data_url, encode_image

Message = dict[str, Any]


def system(text: str) -> Message:
    """A system message."""
    return {"role": "system", "content": str(text)}


def assistant(text: str) -> Message:
    """An assistant message (a previous answer, or a few-shot example answer)."""
    return {"role": "assistant", "content": str(text)}


def user(text: str, *images: ImageLike | EncodedImage, fmt: ImageFormat = "png", detail: str | None = None) -> Message:
    """A user message: text, then zero or more images (arrays are encoded as ``fmt``).

    With no image the content is the plain string (what text-only servers expect).
    """
    if not images:
        return {"role": "user", "content": str(text)}
    parts: list[dict[str, Any]] = [{"type": "text", "text": str(text)}]
    for im in images:
        enc = encode_image(im, fmt=fmt)
        url: dict[str, Any] = {"url": enc.data_url()}
        if detail:
            url["detail"] = detail
        parts.append({"type": "image_url", "image_url": url})
    return {"role": "user", "content": parts}


def iter_images(messages: Iterable[Message]) -> Iterable[EncodedImage]:
    """Every image in the messages, in order."""
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    url = part.get("image_url", {}).get("url", "")
                    if url.startswith("data:"):
                        yield decode_data_url(url)


def message_text(message: Message) -> str:
    """The text of a message (text parts joined by newlines)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def redact_messages(messages: Sequence[Message]) -> list[Message]:
    """A copy of ``messages`` with every data-URL image replaced by ``{"image": {sha256, bytes, mime, width, height}}``."""
    out = []
    for m in messages:
        m2 = copy.copy(m)
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    url = part.get("image_url", {}).get("url", "")
                    if url.startswith("data:"):
                        try:
                            parts.append({"type": "image", "image": decode_data_url(url).summary()})
                        except ValueError:
                            parts.append({"type": "image", "image": {"bytes": len(url), "note": "undecodable data URL"}})
                    else:  # a remote URL carries no bytes: keep it
                        parts.append(part)
                else:
                    parts.append(part)
            m2["content"] = parts
        out.append(m2)
    return out


def append_to_last_user(messages: Sequence[Message], text: str) -> list[Message]:
    """A copy of ``messages`` with ``text`` appended to the last user message (or a new user message)."""
    out = [copy.deepcopy(m) for m in messages]
    for m in reversed(out):
        if m.get("role") == "user":
            if isinstance(m.get("content"), list):
                m["content"].append({"type": "text", "text": text})
            else:
                m["content"] = f"{m.get('content', '')}\n\n{text}"
            return out
    out.append({"role": "user", "content": text})
    return out
