"""Image requests: encoding, numbered dots, and exactly what reaches the server (captured on loopback)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import BaseModel, Field

from ethoscribe.reasoning.client import ChatClient
from ethoscribe.reasoning.config import ReasonerConfig
from ethoscribe.reasoning.images import (
    crop_box,
    decode_data_url,
    draw_numbered_points,
    encode_image,
    image_size,
    montage,
)
from ethoscribe.reasoning.messages import iter_images, redact_messages, system, user
from ethoscribe.reasoning.prompts import Prompt
from ethoscribe.reasoning.schemas import request_schema
from ethoscribe.reasoning.trace import read_trace, TraceWriter
from reasoning_fixtures import FakeChatServer, Reply, completion


def test_encode_png_is_lossless_and_rgb() -> None:
    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[5, 7] = (1, 2, 3)
    enc = encode_image(rgb)
    assert (enc.mime, enc.width, enc.height) == ("image/png", 50, 30)
    back = cv2.cvtColor(cv2.imdecode(np.frombuffer(enc.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, rgb)
    assert enc.data_url() == "data:image/png;base64," + base64.b64encode(enc.data).decode()


def test_encode_jpeg_grey_float_and_bytes_passthrough(tmp_path: Path) -> None:
    grey = np.linspace(0, 1, 64 * 48).reshape(48, 64)  # float in [0, 1]
    enc = encode_image(grey, fmt="jpeg", quality=80)
    assert (enc.mime, enc.width, enc.height) == ("image/jpeg", 64, 48) and enc.data[:3] == b"\xff\xd8\xff"
    assert encode_image(enc.data).data == enc.data  # bytes are sent as they are
    f = tmp_path / "x.jpg"
    f.write_bytes(enc.data)
    assert encode_image(f).sha256 == hashlib.sha256(enc.data).hexdigest()
    assert image_size(enc.data) == ("image/jpeg", 64, 48)
    with pytest.raises(ValueError, match="not a PNG or JPEG"):
        encode_image(b"GIF89a....")
    with pytest.raises(ValueError, match="image, got shape"):
        encode_image(np.zeros((2, 3, 5)))


def test_draw_numbered_points_marks_each_candidate() -> None:
    img = np.full((60, 80), 40, np.uint8)
    pts = np.array([[20.0, 20.0], [60.0, 40.0], [np.nan, np.nan]])
    out = draw_numbered_points(img, pts, labels=[1, 2, 3], color=(255, 0, 0))
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8 and img.max() == 40  # input untouched
    ring = draw_numbered_points(img, pts[:1], labels=[1], color=(255, 0, 0))
    # a red ring around (20, 20) and the drawing changes pixels near each finite point only
    r = max(3, round(60 / 40))
    assert ring[20, 20 + r, 0] > 200 and ring[20, 20 + r, 1] < 100
    changed = np.any(out != np.repeat(img[..., None], 3, 2), axis=2)
    assert changed[10:30, 10:40].any() and changed[30:50, 50:80].any()
    big = draw_numbered_points(img, pts[:2], scale=3.0)
    assert big.shape == (180, 240, 3)
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        draw_numbered_points(img, pts[:2], labels=[1])


def test_crop_box_and_montage() -> None:
    img = np.arange(100 * 120).reshape(100, 120) % 251
    crop, (x0, y0) = crop_box(img, (50, 40, 60, 52), pad=5)
    assert (x0, y0) == (39, 30) and crop.shape == (32, 32)  # min_size 32 around the box centre (55, 46)
    assert np.array_equal(crop, img[30:62, 39:71])
    wide, off = crop_box(img, (10, 10, 70, 20), pad=4)
    assert off == (6, 0) and wide.shape == (32, 68)
    edge, off = crop_box(img, (0, 0, 5, 5), pad=2)
    assert off == (0, 0) and edge.shape[0] >= 1
    m = montage([img.astype(np.uint8)] * 5, cols=3, labels=list("abcde"), gap=2)
    assert m.shape == (2 * 100 + 2, 3 * 120 + 4, 3)


class DotAnswer(BaseModel):
    left_ear: int = Field(ge=0)
    right_ear: int = Field(ge=0)


def test_image_request_as_received_by_the_server(tmp_path: Path) -> None:
    """What a VLM pose prompt sends: a crop with numbered dots (PNG) and a seed example (JPEG), text and schema."""
    crop = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    dots = draw_numbered_points(crop, [[10, 10], [40, 30]], scale=2.0)
    seed_jpeg = encode_image(np.full((24, 32), 128, np.uint8), fmt="jpeg").data
    prompt = Prompt(name="assign_region", version="0", text="Which numbered dot is the left ear?\n")
    msgs = [system("You label mouse keypoints on numbered dots."),
            user("Example (seed frame): the left ear is dot 1.", seed_jpeg),
            user(prompt.render()[0]["content"], dots)]
    answer = '{"left_ear": 2, "right_ear": 1}'
    trace_path = tmp_path / "trace.jsonl"
    with FakeChatServer([Reply(completion(answer, 900, 12))]) as srv, TraceWriter(trace_path) as tw:
        client = ChatClient(ReasonerConfig(base_url=srv.base_url, model="vision-model", cache_path=tmp_path / "c.sqlite"),
                            trace=tw)
        ans = client.ask(msgs, DotAnswer, step="assignment", prompt=prompt, input={"view": "cam2", "region": "ears"},
                         trace_fields={"frame": 17, "views": ["cam2"]})
    assert ans.ok and ans.value == DotAnswer(left_ear=2, right_ear=1)
    body = srv.requests[0].body
    sent = body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "user"]
    imgs = list(iter_images(sent))
    assert len(imgs) == 2
    assert (imgs[0].mime, imgs[0].width, imgs[0].height) == ("image/jpeg", 32, 24) and imgs[0].data == seed_jpeg
    assert (imgs[1].mime, imgs[1].width, imgs[1].height) == ("image/png", 128, 96)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(imgs[1].data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decoded, dots)  # PNG: exactly the pixels drawn
    part_types = [p["type"] for p in sent[2]["content"]]
    assert part_types[:2] == ["text", "image_url"] and part_types[-1] == "text"  # the schema note appended last
    assert sent[2]["content"][0]["text"] == "Which numbered dot is the left ear?"
    assert sent[2]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["response_format"]["json_schema"]["schema"] == request_schema(DotAnswer)[0]
    # the trace holds hashes and sizes, never the bytes
    rec = read_trace(trace_path)[0]
    text = trace_path.read_text()
    assert "base64" not in text and base64.b64encode(imgs[1].data).decode()[:40] not in text
    img_parts = [p for m in rec["messages"] if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image"]
    assert [p["image"]["sha256"] for p in img_parts] == [imgs[0].sha256, imgs[1].sha256]
    assert img_parts[1]["image"] == {"sha256": imgs[1].sha256, "bytes": len(imgs[1].data), "mime": "image/png",
                                     "width": 128, "height": 96}
    assert rec["prompt"] == {"name": "assign_region", "version": "0"} and rec["frame"] == 17
    assert rec["input"] == {"view": "cam2", "region": "ears"} and rec["answer"] == {"left_ear": 2, "right_ear": 1}


def test_redaction_keeps_text_and_remote_urls() -> None:
    msgs = [user("look", np.zeros((4, 4), np.uint8)),
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}]}]
    red = redact_messages(msgs)
    assert red[0]["content"][0] == {"type": "text", "text": "look"}
    assert red[0]["content"][1]["image"]["width"] == 4
    assert red[1] == msgs[1]
    assert msgs[0]["content"][1]["type"] == "image_url"  # original untouched
    assert decode_data_url(msgs[0]["content"][1]["image_url"]["url"]).height == 4
