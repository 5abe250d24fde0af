"""The VLM captioner: the image requests it builds, recorded answers, checks and fallbacks (no vision model runs here)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from ethoscribe.behavior.captions import Caption, Captioner, KinematicCaptioner, Snippet
from ethoscribe.reasoning.captioner_vlm import CaptionAnswer, VLMCaptioner, sample_frames, tracks_from_pose
from ethoscribe.reasoning.client import ChatClient, parse_answer
from ethoscribe.reasoning.config import ReasonerConfig
from ethoscribe.reasoning.messages import iter_images, message_text
from ethoscribe.reasoning.schemas import request_schema
from ethoscribe.reasoning.trace import ListTrace
from reasoning_fixtures import FakeChatServer, Reply, closed_port, completion

WALK = Snippet("mouse0", 0, 30, 30.0, measures={"speed": 1.5, "forward_speed": 1.4, "angular_speed": 0.1, "pitch": 0.05},
               cluster=2)
STILL = Snippet("mouse0", 30, 40, 30.0, measures={"speed": 0.02, "pitch": 0.0}, cluster=1)

# answers as vision models write them (recorded shapes: chatter, fences, plain JSON)
RECORDED_WALK = (
    "Sure. Here is the structured description:\n```json\n"
    '{"posture": "stretched", "motion": "moving forward", "direction": "straight", "speed": "moderate",'
    ' "height": "on all fours", "proximity": "alone", "contact": "none", "social": "none",'
    ' "text": "The mouse walks forward along the wall with its body stretched."}\n```'
)
RECORDED_FAST = ('{"posture": "normal", "motion": "running", "direction": "straight", "speed": "fast", "height": "on all fours",'
                 ' "proximity": "alone", "contact": "none", "social": "none", "text": "The mouse runs."}')


def client_for(base_url: str, trace: Any = None, **kw: Any) -> ChatClient:
    values = dict(base_url=base_url, model="fake-vlm", cache=False, max_retries=0, timeout_s=5.0, backoff_s=0.01)
    values.update(kw)
    return ChatClient(ReasonerConfig(**values), trace=trace)


def test_sampling_and_schema() -> None:
    assert sample_frames(0, 30, 30.0).tolist() == list(range(0, 30, 3))  # about 10 fps
    assert len(sample_frames(0, 150, 30.0, max_frames=16)) == 16
    assert sample_frames(5, 7, 30.0).tolist() == [5, 6]
    sch, strict = request_schema(CaptionAnswer)
    caption_fields = set(Caption.model_fields) - {"numbers", "source"}
    assert strict and set(sch["required"]) == caption_fields and sch["additionalProperties"] is False
    assert sch["properties"]["speed"]["enum"] == ["stationary", "slow", "moderate", "fast"]


def test_montage_request_and_recorded_answer(small_session: Any) -> None:
    tr = ListTrace()
    sess = small_session.load_session()
    tracks, crop = tracks_from_pose(small_session.points3d_path, sess.rig, "cam0")
    assert crop is not None and 64 <= crop <= 400 and np.isfinite(tracks["mouse0"]).all()
    with FakeChatServer([Reply(completion(RECORDED_WALK, 900, 80))]) as srv:
        cap = VLMCaptioner(client_for(srv.base_url, tr), session=sess, tracks=tracks, crop_px=crop)
        assert isinstance(cap, Captioner)
        out = cap.caption([WALK])
    body = srv.requests[0].body
    imgs = list(iter_images(body["messages"]))
    assert len(imgs) == 1 and imgs[0].mime == "image/jpeg"
    # 10 frames at 10 fps in a 4 x 3 grid of 192-px tiles with 4-px gaps
    assert (imgs[0].width, imgs[0].height) == (4 * 192 + 3 * 4, 3 * 192 + 2 * 4)
    text = message_text(body["messages"][-1])
    assert "10 frames of one snippet (1.0 s, sampled at about 10 frames per second" in text
    assert "camera cam0, cropped around mouse0" in text and "speed 1.5" in text
    assert KinematicCaptioner().caption([WALK])[0].text in text
    assert body["response_format"]["json_schema"]["schema"] == request_schema(CaptionAnswer)[0]
    assert body["messages"][0]["role"] == "system" and "posture" in body["messages"][0]["content"]
    c = out[0]
    assert c.source == "vlm" and c.posture == "stretched" and c.text.startswith("The mouse walks forward")
    assert c.numbers == KinematicCaptioner().caption([WALK])[0].numbers  # the measured numbers are kept
    rec = tr.records[-1]
    assert rec["step"] == "caption" and rec["source"] == "model" and rec["input"]["frames"] == list(range(0, 30, 3))
    assert rec["verification"] == {"measured_speed": "moderate", "model_speed": "moderate", "speed_steps_apart": 0}
    assert rec["messages"][-1]["content"][1]["image"]["mime"] == "image/jpeg"  # the trace holds hashes, not bytes


def test_frames_layout_sends_one_image_per_frame(small_session: Any) -> None:
    with FakeChatServer([Reply(completion(RECORDED_WALK))]) as srv:
        cap = VLMCaptioner(client_for(srv.base_url), session=small_session.root, layout="frames", image_format="png",
                           tile_px=128, max_frames=5)
        cap.caption([WALK])
    imgs = list(iter_images(srv.requests[0].body["messages"]))
    # whole frames (no track given), long side 128, aspect of the 640 x 512 video
    assert len(imgs) == 5 and all(i.mime == "image/png" and (i.width, i.height) == (128, 102) for i in imgs)
    assert "The 5 images are 5 frames" in message_text(srv.requests[0].body["messages"][-1])


def test_contradicting_garbage_and_missing_video_fall_back_traced(small_session: Any) -> None:
    tr = ListTrace()

    def script(body: dict, i: int) -> Reply:
        t = message_text(body["messages"][-1])
        if "stays still" in t:  # the still snippet: a valid answer that says "fast"
            return Reply(completion(RECORDED_FAST))
        return Reply(completion("I cannot see the animal clearly in these frames."))

    kin = KinematicCaptioner().caption([WALK, STILL])
    with FakeChatServer(script) as srv:
        cap = VLMCaptioner(client_for(srv.base_url, tr, max_concurrency=1), session=small_session.root)
        out = cap.caption([WALK, STILL])
        assert out == kin  # both fell back: exactly the kinematic captions
        nov = VLMCaptioner(client_for(srv.base_url, tr), session=None)
        assert nov.caption([WALK]) == kin[:1]
    reasons = [(r["start_frame"], r["fallback_reason"]) for r in tr.records if r["step"] == "caption" and r.get("source") == "fallback"]
    assert len(reasons) == 3
    assert any(f == 30 and x.startswith("rejected: the model says the animal is 'fast' but the measured speed is 'stationary'")
               for f, x in reasons)
    assert any(f == 0 and x.startswith("invalid: still invalid after one repair request") for f, x in reasons)
    assert any(f == 0 and x.startswith("no frames: no video for the snippet") for f, x in reasons)
    assert len(srv.requests) == 3  # walk, its repair, still
    assert cap.summary()["fallbacks_by_kind"] == {"invalid": 1, "rejected": 1}


def test_dead_server_stops_being_asked(small_session: Any) -> None:
    tr = ListTrace()
    snippets = [Snippet("mouse0", s, s + 5, 30.0, measures={"speed": 0.5}) for s in range(0, 35, 5)]
    cap = VLMCaptioner(client_for(f"http://127.0.0.1:{closed_port()}/v1", tr, max_concurrency=1), session=small_session.root)
    out = cap.caption(snippets)
    assert out == KinematicCaptioner().caption(snippets)
    s = cap.summary()
    # asked in chunks of 2 x max_concurrency: the breaker opens after 2 failures; the rest are skipped
    assert s["gave_up_on_server"] and s["answers"] == {"fallback": 2} and s["skipped"] == {"breaker": 5}
    assert [r["skipped"] for r in tr.records if r["step"] == "caption_skip"] == ["breaker"]


@pytest.mark.parametrize("raw,ok", [(RECORDED_WALK, True), (RECORDED_FAST, True),
                                    ('{"posture": "normal", "speed": "quick"}', False),
                                    (json.dumps({**json.loads(RECORDED_FAST), "numbers": {"speed": 9}}), False)])
def test_parse_recorded_caption_answers(raw: str, ok: bool) -> None:
    value, err = parse_answer(raw, CaptionAnswer)
    assert (value is not None) == ok, err
