"""Images for vision-language prompts: encoding as data URLs, numbered candidate dots, crops, montages.

Arrays are RGB (H, W, 3) or grey (H, W), ``uint8`` or float in [0, 1];
already-encoded PNG or JPEG bytes are passed through unchanged (so their
hash, and the cache key, stays that of the file).

Examples
--------
>>> import numpy as np
>>> img = np.zeros((40, 60), np.uint8)
>>> enc = encode_image(img)
>>> enc.mime, enc.width, enc.height
('image/png', 60, 40)
>>> enc.data_url()[:22]
'data:image/png;base64,'
>>> dots = draw_numbered_points(img, [(10, 10), (30, 20)], labels=[1, 2])
>>> dots.shape
(40, 60, 3)
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

ImageLike = NDArray[Any] | bytes | bytearray | memoryview | str | os.PathLike[str]
ImageFormat = Literal["png", "jpeg"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class EncodedImage:
    """An encoded image: bytes, MIME type and size."""

    data: bytes
    mime: str
    width: int
    height: int

    @property
    def sha256(self) -> str:
        """Hex digest of the encoded bytes."""
        return hashlib.sha256(self.data).hexdigest()

    def data_url(self) -> str:
        """``data:<mime>;base64,<bytes>`` for an OpenAI ``image_url`` content part."""
        return f"data:{self.mime};base64," + base64.b64encode(self.data).decode("ascii")

    def summary(self) -> dict[str, Any]:
        """What a trace records instead of the bytes."""
        return {"sha256": self.sha256, "bytes": len(self.data), "mime": self.mime, "width": self.width, "height": self.height}


def to_rgb_uint8(image: NDArray[Any]) -> NDArray[np.uint8]:
    """An (H, W, 3) uint8 RGB copy of a grey, RGB or RGBA array (floats in [0, 1] are scaled by 255)."""
    a = np.asarray(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)) or a.size == 0:
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if np.nanmax(a) <= 1.0 + 1e-9:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def image_size(data: bytes) -> tuple[str, int, int]:
    """(mime, width, height) of PNG or JPEG bytes, read from the header; ValueError otherwise."""
    if data[:8] == _PNG_MAGIC and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return "image/png", int(w), int(h)
    if data[:3] == _JPEG_MAGIC:
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 2 if marker != 0xFF else 1
                continue
            seg = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return "image/jpeg", int(w), int(h)
            i += 2 + seg
        raise ValueError("JPEG without a frame header")
    raise ValueError("not a PNG or JPEG image (only these two are sent to vision models)")


def encode_image(image: ImageLike, fmt: ImageFormat = "png", quality: int = 90) -> EncodedImage:
    """Encode an array as PNG/JPEG, or take PNG/JPEG bytes (or a file of them) as they are.

    Parameters
    ----------
    image
        Array (RGB, RGBA or grey; uint8 or float in [0, 1]), PNG/JPEG bytes,
        or the path of a PNG/JPEG file.
    fmt
        Encoding of arrays: ``"png"`` (lossless; default) or ``"jpeg"``.
    quality
        JPEG quality.
    """
    import cv2

    if isinstance(image, EncodedImage):
        return image
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image file not found")
        image = path.read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        mime, w, h = image_size(data)
        return EncodedImage(data, mime, w, h)
    rgb = to_rgb_uint8(image)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        mime = "image/png"
    elif fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        mime = "image/jpeg"
    else:
        raise ValueError(f"unknown image format {fmt!r} (png or jpeg)")
    if not ok:  # pragma: no cover - OpenCV failure
        raise ValueError("image encoding failed")
    return EncodedImage(buf.tobytes(), mime, int(rgb.shape[1]), int(rgb.shape[0]))


def decode_data_url(url: str) -> EncodedImage:
    """The image inside a ``data:image/...;base64,`` URL."""
    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError("not a base64 data URL")
    data = base64.b64decode(url.split(",", 1)[1])
    mime, w, h = image_size(data)
    return EncodedImage(data, mime, w, h)


def image_part(image: ImageLike, fmt: ImageFormat = "png", detail: str | None = None) -> dict[str, Any]:
    """An OpenAI chat ``image_url`` content part holding the image as a data URL."""
    enc = encode_image(image, fmt=fmt)
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": enc.data_url()}}
    if detail:
        part["image_url"]["detail"] = detail
    return part


# ---------------------------------------------------------------------- drawing
def draw_numbered_points(
    image: NDArray[Any],
    points: NDArray[Any] | Sequence[Sequence[float]],
    labels: Sequence[int | str] | None = None,
    *,
    scale: float = 1.0,
    radius: int | None = None,
    color: tuple[int, int, int] = (255, 220, 0),
    text_color: tuple[int, int, int] = (255, 255, 255),
) -> NDArray[np.uint8]:
    """A copy of ``image`` (RGB uint8) with a ring and a number at each candidate point.

    The VLM pose prompts ask "which numbered dot is the left ear?": candidates
    are located already, the model only chooses among them.

    Parameters
    ----------
    image
        Grey or RGB array (a crop around a body region, typically).
    points
        (N, 2) x, y pixel positions in ``image`` (NaN rows are skipped).
    labels
        Number (or short text) drawn beside each point (default 1..N).
    scale
        Enlarge the image first (a 60-px crop is too small for a model to
        read digits); points are scaled with it.
    radius
        Ring radius in output pixels (default from the image size).
    color, text_color
        RGB of the ring and of the number (drawn with a dark outline, so it
        reads on bright and dark backgrounds).
    """
    import cv2

    rgb = to_rgb_uint8(image)
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if labels is None:
        labels = list(range(1, len(pts) + 1))
    if len(labels) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(labels)} labels")
    if scale != 1.0:
        if scale <= 0:
            raise ValueError("scale must be positive")
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        pts = pts * scale
    out = rgb.copy()
    H, W = out.shape[:2]
    r = int(radius) if radius is not None else max(3, int(round(min(H, W) / 40)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    fs = max(0.35, r / 8.0)
    thick = max(1, int(round(fs * 1.5)))
    for (x, y), lab in zip(pts, labels):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        c = (int(round(x)), int(round(y)))
        cv2.circle(out, c, r + 1, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.circle(out, c, r, color, max(1, r // 3), cv2.LINE_AA)
        text = str(lab)
        (tw, th), _ = cv2.getTextSize(text, font, fs, thick)
        tx = c[0] + r + 2
        ty = c[1] - r - 2
        if tx + tw >= W:
            tx = c[0] - r - 2 - tw
        if ty - th < 0:
            ty = c[1] + r + 2 + th
        cv2.putText(out, text, (tx, ty), font, fs, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, text, (tx, ty), font, fs, text_color, thick, cv2.LINE_AA)
    return out


def crop_box(
    image: NDArray[Any], box: Sequence[float], pad: float = 8.0, min_size: int = 32
) -> tuple[NDArray[Any], tuple[int, int]]:
    """The part of ``image`` inside ``box`` (x0, y0, x1, y1) plus ``pad`` px, and its offset (x0, y0).

    The crop is at least ``min_size`` px wide and high (centred on the box,
    shifted inwards at the image border rather than shrunk). Subtract the offset from points to draw them
    on the crop.
    """
    H, W = np.asarray(image).shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise ValueError("box has non-finite coordinates")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw = max((x1 - x0) / 2 + pad, min_size / 2)
    hh = max((y1 - y0) / 2 + pad, min_size / 2)
    a, c = _span(cx - hw, cx + hw, W)
    b, d = _span(cy - hh, cy + hh, H)
    return np.asarray(image)[b:d, a:c], (a, b)


def _span(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Integer [a, c) covering [lo, hi], shifted (not shrunk) to fit in [0, n) where possible."""
    a, c = int(np.floor(lo)), int(np.ceil(hi))
    if a < 0:
        c, a = c - a, 0
    if c > n:
        a, c = a - (c - n), n
    a = max(a, 0)
    if c <= a:
        a, c = min(max(a, 0), n - 1), min(max(a, 0), n - 1) + 1
    return a, c


def montage(
    images: Sequence[NDArray[Any]], cols: int | None = None, labels: Sequence[str] | None = None, gap: int = 4
) -> NDArray[np.uint8]:
    """Images side by side in a grid (RGB uint8; all resized to the first one's size), optionally labelled.

    For a captioner that sends one picture per snippet instead of many.
    """
    import cv2

    if not images:
        raise ValueError("montage of no images")
    tiles = [to_rgb_uint8(im) for im in images]
    h, w = tiles[0].shape[:2]
    tiles = [t if t.shape[:2] == (h, w) else cv2.resize(t, (w, h), interpolation=cv2.INTER_AREA) for t in tiles]
    n = len(tiles)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), np.uint8)
    fs = max(0.35, h / 300)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * (h + gap), c * (w + gap)
        out[y : y + h, x : x + w] = t
        if labels is not None and i < len(labels):
            org = (x + 4, y + int(20 * fs) + 2)
            cv2.putText(out, str(labels[i]), org, cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, str(labels[i]), org, cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
    return out
