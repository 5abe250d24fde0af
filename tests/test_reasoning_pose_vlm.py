"""The VLM pose reasoner: when it asks, the requests it builds, recorded answers, and the pipeline end to end.

No vision model runs here. The end-to-end tests use a loopback HTTP server
that answers like a VLM would (an *oracle*: it reads the dots' coordinates
from the question and answers from the synthetic truth, in the forms real
models write), including one deliberately wrong answer that stage 4's
geometry must override. Nothing here says how often a real VLM is right.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_pose_support import animal_track, build_case

from ethoscribe.pose import PoseConfig, run_pose
from ethoscribe.pose.reasoner import FrameContext, GeometricReasoner
from ethoscribe.reasoning.client import ChatClient, parse_answer
from ethoscribe.reasoning.config import ReasonerConfig
from ethoscribe.reasoning.messages import iter_images, message_text
from ethoscribe.reasoning.pose_vlm import (
    PoseConsultPolicy,
    VLMPoseReasoner,
    assignment_margin,
    conflict_owner_model,
    keypoint_dots_model,
    region_dots_model,
)
from ethoscribe.reasoning.schemas import request_schema
from ethoscribe.reasoning.trace import ListTrace, read_trace
from ethoscribe.skeleton import mouse12
from reasoning_fixtures import FakeChatServer, Reply, closed_port, completion

CFG = PoseConfig(chunk_size=8)
SK = mouse12()


def client_for(base_url: str, trace: Any = None, **kw: Any) -> ChatClient:
    values = dict(base_url=base_url, model="fake-vlm", cache=False, max_retries=0, timeout_s=5.0, backoff_s=0.01)
    values.update(kw)
    return ChatClient(ReasonerConfig(**values), trace=trace)


# ---------------------------------------------------------------------- a hand-made frame
def make_ctx(pred: np.ndarray, cands: np.ndarray, sigma: float = 3.0, frame: int = 5,
             keypoints: tuple[str, ...] = ("ear_left", "ear_right")) -> FrameContext:
    """One view; pred (I, K, 2) predicted pixels; cands (M, 2); one region holding every keypoint."""
    I, K, _ = pred.shape
    M = len(cands)
    return FrameContext(
        frame=frame, views=("cam0",), individuals=tuple(f"mouse{i}" for i in range(I)), keypoints=keypoints,
        region_names=("ears",), regions=(tuple(range(K)),), region_of=np.zeros(K, np.int64),
        symmetry=((0, 1),) if K == 2 else (), cand_xy=np.asarray(cands, float)[None], cand_valid=np.ones((1, M), bool),
        cand_id=np.arange(M, dtype=np.int64)[None] + 10, intensity=np.full((1, M), 100.0), area=np.full((1, M), 9.0),
        hint_keypoint=np.full((1, M), -1), hint_individual=np.full((1, M), -1), score=np.full((1, M), np.nan),
        predicted_px=np.asarray(pred, float)[None], predicted_sigma_px=np.full((1, I, K), sigma),
        template_px=np.full((1, I, K, 2), np.nan), template_sigma_px=np.full((1, I, K), np.nan),
        appearance_mu=np.full((1, K, 2), np.nan), appearance_scale=np.full(2, np.nan),
        image_size=np.array([[200, 160]]), gate=4.0,
    )


def text_of(msg: dict) -> str:
    return message_text(msg)


# ---------------------------------------------------------------------- ambiguity
def test_assignment_margin_is_the_exact_second_best_gap() -> None:
    # clear: each keypoint sits on its own candidate
    assert assignment_margin(np.array([[0.1, 20.0], [20.0, 0.2]]), 16.0) >= 15.0
    # a swap costs almost nothing: ambiguous
    assert assignment_margin(np.array([[1.0, 1.3], [1.2, 1.0]]), 16.0) == pytest.approx(0.5)
    # brute force agrees on random small problems (none allowed at 16)
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(30):
        sub = rng.uniform(0, 20, (3, 3))
        sub[rng.uniform(size=sub.shape) < 0.2] = np.inf
        totals = []
        for choice in itertools.product([-1, 0, 1, 2], repeat=3):
            used = [c for c in choice if c >= 0]
            if len(used) != len(set(used)):
                continue
            c = sum(16.0 if j < 0 else sub[i, j] for i, j in enumerate(choice))
            if np.isfinite(c):
                totals.append(c)
        totals.sort()
        assert assignment_margin(sub, 16.0) == pytest.approx(totals[1] - totals[0], abs=1e-6)
        assert assignment_margin(sub, 16.0, threshold=2.0) >= min(2.0, totals[1] - totals[0]) - 1e-9


def _answer(reply: dict) -> Reply:
    return Reply(completion(json.dumps(reply)))


def test_asks_only_where_the_geometry_is_unsure_and_within_the_budget() -> None:
    clear = make_ctx(np.array([[[50.0, 50.0], [90.0, 50.0]]]), np.array([[50.5, 50.0], [89.5, 50.5]]), frame=3)
    # both ears predicted half-way between the two candidates: a left/right swap costs nothing
    unsure = make_ctx(np.array([[[70.0, 50.0], [70.0, 50.0]]]), np.array([[60.0, 50.0], [80.0, 50.0]]), sigma=8.0, frame=4)
    unsure2 = make_ctx(np.array([[[70.0, 50.0], [70.0, 50.0]]]), np.array([[60.0, 50.0], [80.0, 50.0]]), sigma=8.0, frame=6)
    tr = ListTrace()
    with FakeChatServer([_answer({"ear_left": 2, "ear_right": 1})]) as srv:
        r = VLMPoseReasoner(client_for(srv.base_url, tr), images="canvas", policy=PoseConsultPolicy(max_questions=1))
        for ctx in (clear, unsure, unsure2):
            boxes = r.locate_regions(ctx)
            a = r.agree(ctx, boxes, r.assign(ctx, boxes))
            if ctx is unsure:
                # the model's answer is used: ear_left is dot 2 (candidate index 1), ear_right dot 1
                assert a.cand[0, 0].tolist() == [1, 0]
            if ctx is unsure2:  # budget used up: the geometric answer
                g = GeometricReasoner()
                gb = g.locate_regions(ctx)
                assert a.cand.tolist() == g.agree(ctx, gb, g.assign(ctx, gb)).cand.tolist()
    assert len(srv.requests) == 1  # the clear frame and the over-budget frame asked nothing
    asked = [x for x in tr.records if x["step"] == "pose_assign"]
    assert len(asked) == 1 and asked[0]["frame"] == 4 and asked[0]["source"] == "model"
    assert asked[0]["input"]["margin"] < 2.0 and asked[0]["verification"]["geometric"] is not None
    skips = [x for x in tr.records if x["step"] == "pose_skip"]
    assert len(skips) == 1 and skips[0]["skipped"] == "budget" and skips[0]["first_at"]["frame"] == 6
    s = r.summary()
    assert s["budget"] == {"limit": 1, "asked": 1, "refused": 1} and s["model_decisions"] == {"assignment": 2}


def test_never_and_stage_selection_ask_nothing() -> None:
    unsure = make_ctx(np.array([[[70.0, 50.0], [70.0, 50.0]]]), np.array([[60.0, 50.0], [80.0, 50.0]]), sigma=8.0)
    with FakeChatServer([_answer({"ear_left": 2, "ear_right": 1})]) as srv:
        for pol in (PoseConsultPolicy(consult="never"), PoseConsultPolicy(stages=("region",))):
            r = VLMPoseReasoner(client_for(srv.base_url), images="canvas", policy=pol)
            b = r.locate_regions(unsure)
            r.agree(unsure, b, r.assign(unsure, b))
    assert srv.requests == []
    with pytest.raises(ValueError, match="unknown pose stage"):
        PoseConsultPolicy(stages=("nose",))


def test_contested_candidate_goes_to_the_owner_the_model_names() -> None:
    # two animals' left ears both predicted at candidate 0: stage 2 gives it to both, stage 3 asks
    pred = np.array([[[50.6, 50.0]], [[52.0, 50.0]]])
    ctx = make_ctx(pred, np.array([[51.0, 50.0], [150.0, 140.0]]), sigma=4.0, keypoints=("ear_left",))
    tr = ListTrace()
    with FakeChatServer([_answer({"owner": "mouse1 ear_left"})]) as srv:
        r = VLMPoseReasoner(client_for(srv.base_url, tr), images="canvas", policy=PoseConsultPolicy(stages=("agreement",)))
        b = r.locate_regions(ctx)
        s2 = r.assign(ctx, b)
        assert s2.cand[0, :, 0].tolist() == [0, 0]
        a = r.agree(ctx, b, s2)
    assert a.cand[0, :, 0].tolist() == [-1, 0] and a.conflict[0, :, 0].all()
    body = srv.requests[0].body
    t = text_of(body["messages"][-1])
    assert "Dot 1, at (51.0, 50.0)" in t and "mouse0 ear_left and mouse1 ear_right" not in t
    assert "mouse0 ear_left and mouse1 ear_left" in t
    enum = body["response_format"]["json_schema"]["schema"]["properties"]["owner"]["enum"]
    assert enum == ["mouse0 ear_left", "mouse1 ear_left", "neither"]
    rec = [x for x in tr.records if x["step"] == "pose_conflict"][0]
    assert rec["input"]["contested_candidate"] == 10 and rec["verification"]["owner"] == "mouse1 ear_left"
    # the geometric reasoner alone keeps the cheaper claim (mouse0, closer to the prediction)
    g = GeometricReasoner()
    assert g.agree(ctx, b, g.assign(ctx, b)).cand[0, :, 0].tolist() == [0, -1]


# ---------------------------------------------------------------------- recorded answers
RECORDED_ASSIGN = [
    # (raw answer as models write it, valid?)
    ('```json\n{"ear_left": 3, "ear_right": 1}\n```', True),
    ('Looking at the crop, dot 3 is the left ear. {"ear_left": 3, "ear_right": null}', True),
    ('{"ear_left": 2, "ear_right": 2}', False),   # one dot for two keypoints
    ('{"ear_left": 5, "ear_right": 1}', False),   # there is no dot 5
    ('{"ear_left": 1}', False),                   # a keypoint left out
    ('{"left ear": 1, "ear_right": 2}', False),   # an invented key
]


@pytest.mark.parametrize("raw,valid", RECORDED_ASSIGN)
def test_parse_recorded_assignment_answers(raw: str, valid: bool) -> None:
    M = keypoint_dots_model(["ear_left", "ear_right"], 3)
    value, err = parse_answer(raw, M)
    assert (value is not None) == valid, err
    if valid:
        assert value.choices()["ear_left"] == 3
    elif "2, \"ear_right\": 2" in raw:
        assert "given to more than one keypoint" in err


def test_parse_recorded_region_and_conflict_answers() -> None:
    R = region_dots_model(6, 3)
    assert parse_answer('Dots on the ears: {"dots": [4, 2]}', R)[0].dots == [4, 2]
    assert parse_answer('{"dots": []}', R)[0].dots == []
    assert parse_answer('{"dots": [1, 2, 3, 4]}', R)[0] is None  # more dots than the region has keypoints
    assert parse_answer('{"dots": [2, 2]}', R)[0] is None
    C = conflict_owner_model(["mouse0 ear_left", "mouse1 ear_left"])
    assert parse_answer('{"owner": "neither"}', C)[0].owner == "neither"
    assert parse_answer('{"owner": "mouse2 ear_left"}', C)[0] is None
    sch, strict = request_schema(keypoint_dots_model(["ear_left", "ear_right"], 3))
    assert strict and sch["required"] == ["ear_left", "ear_right"] and sch["additionalProperties"] is False


# ---------------------------------------------------------------------- end to end with an oracle VLM
class Oracle:
    """Answers pose questions from the synthetic truth (as a perfect VLM would), in the forms models write.

    ``wrong``: the first assignment question with two or more keypoints gets its first two answers swapped.
    """

    def __init__(self, case: Any, wrong: bool = True, tol: float = 1.5) -> None:
        self.case = case
        self.wrong = wrong
        self.tol = tol
        self.wrong_question: dict[str, Any] | None = None

    def truth_px(self, view: str, frame: int, animal: str, kp: str) -> np.ndarray:
        return self.case.truth2d[self.case.rig.names.index(view), frame, int(animal.removeprefix("mouse")), SK.index(kp)]

    def __call__(self, body: dict, i: int) -> Reply:
        t = text_of(body["messages"][-1])
        m = re.search(r'Frame (\d+), camera (\S+), animal (\S+), body region "(\w+)"', t)
        dots = [(int(n), float(x), float(y)) for n, x, y in re.findall(r"^(\d+): \(([-\d.]+), ([-\d.]+)\)", t, re.M)]
        frame, view, animal, region = int(m[1]), m[2], m[3].rstrip(","), m[4]
        ans: dict[str, Any] = {}
        for kp in SK.regions[region]:
            p = self.truth_px(view, frame, animal, kp)
            near = [n for n, x, y in dots if np.hypot(x - p[0], y - p[1]) < self.tol]
            ans[kp] = near[0] if near else None
        if "Which dots lie" in t:
            return Reply(completion(json.dumps({"dots": sorted(v for v in ans.values() if v)})))
        kps = list(ans)
        if self.wrong and self.wrong_question is None and len(kps) >= 2 and ans[kps[0]] and ans[kps[1]]:
            ans[kps[0]], ans[kps[1]] = ans[kps[1]], ans[kps[0]]
            self.wrong_question = {"frame": frame, "view": view, "keypoints": kps[:2]}
        return Reply(completion("Here is my answer:\n```json\n" + json.dumps(ans) + "\n```"))


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_case(tmp_path_factory.mktemp("vlm_case") / "s", [animal_track(16, (-60, 0), (3, 0))])


def _true_cid(case: Any, frame: int, view: str, kp: str) -> int:
    """Candidate id of the candidate at the keypoint's true projection."""
    cands = case.candidates
    sel = (cands["frame"] == frame) & (cands["view"].astype(str) == view)
    xy = cands.loc[sel, ["x", "y"]].to_numpy()
    p = case.truth2d[case.rig.names.index(view), frame, 0, SK.index(kp)]
    j = int(np.argmin(np.hypot(*(xy - p).T)))
    return int(cands.loc[sel, "candidate"].to_numpy()[j])


def test_pipeline_end_to_end_geometry_overrides_a_wrong_answer(case: Any, tmp_path: Path) -> None:
    oracle = Oracle(case)
    trace_path = tmp_path / "reasoner_trace.jsonl"
    from ethoscribe.reasoning.trace import TraceWriter

    with FakeChatServer(oracle) as srv, TraceWriter(trace_path) as tw:
        client = client_for(srv.base_url, tw)
        r = VLMPoseReasoner(client, session=case.root, candidates=case.candidates,
                            policy=PoseConsultPolicy(consult="always", stages=("assignment",), max_questions=8))
        res = run_pose(case.root, candidates=case.candidates, reasoner=r, out_dir=tmp_path / "out", config=CFG)
        table = r.verify(res)
    assert len(srv.requests) == 8 and r.summary()["budget"]["asked"] == 8  # never more than the budget
    assert "vlm:fake-vlm" in set(res.labels["reasoner"])

    # ---- the requests: few-shot turns from the seed frames, PNG crops, the question, a closed schema
    body = srv.requests[0].body
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    imgs = list(iter_images(body["messages"]))
    assert len(imgs) == 3 and all(im.mime == "image/png" and max(im.width, im.height) == 384 for im in imgs)
    shot_answer = json.loads(body["messages"][2]["content"])
    q = text_of(body["messages"][-1])
    assert q.startswith("Question. Frame ") and "Example (a seed frame labelled by a person)" in text_of(body["messages"][1])
    region = re.search(r'body region "(\w+)"', q)[1]
    assert set(shot_answer) == set(SK.regions[region]) and all(v is None or v >= 1 for v in shot_answer.values())
    n_dots = len(re.findall(r"^\d+: \(", q, re.M))
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == list(SK.regions[region]) and body["response_format"]["json_schema"]["strict"] is True
    assert schema["properties"][SK.regions[region][0]]["anyOf"][0]["enum"] == list(range(1, n_dots + 1))

    # ---- the wrong answer: the trace says the model disagreed with the geometric reasoner, geometry overrode it
    w = oracle.wrong_question
    assert w is not None
    recs = read_trace(trace_path)
    asked = [x for x in recs if x["step"] == "pose_assign" and x["frame"] == w["frame"] and x["view"] == w["view"]]
    assert asked and asked[0]["source"] == "model" and asked[0]["verification"]["agrees_with_geometric"] is False
    assert asked[0]["prompt"]["name"] == "pose_assign" and asked[0]["messages"][-1]["content"][1]["type"] == "image"
    over = table[(table["frame"] == w["frame"]) & (table["view"] == w["view"]) & table["keypoint"].isin(w["keypoints"])]
    assert set(over["status"]) == {"overridden"} and len(over) == 2
    for row in over.itertuples():
        assert row.final_candidate == _true_cid(case, row.frame, row.view, row.keypoint) != row.model_candidate
        assert row.kinds  # the refinement event that changed it (e.g. left_right)
    ver = [x for x in recs if x["step"] == "pose_verification"]
    assert {(x["frame"], x["view"], x["keypoint"]) for x in ver} >= {(w["frame"], w["view"], k) for k in w["keypoints"]}
    assert all(x["overridden_by_geometry"] for x in ver)
    summ = [x for x in recs if x["step"] == "pose_verification_summary"][0]
    assert summ["overridden_by_geometry"] >= 2 and summ["confirmed"] >= 1
    assert (tmp_path / "out" / "vlm_pose_verification.csv").is_file()
    # every other model answer was right, and stage 4 kept it
    assert set(table["status"]) <= {"confirmed", "overridden"}  # (nothing dropped or filled on this clean case)
    assert (table["status"] == "confirmed").sum() == len(table) - (table["status"] == "overridden").sum()


def test_pose_with_a_dead_server_gives_exactly_the_geometric_labels(case: Any, tmp_path: Path) -> None:
    tr = ListTrace()
    client = client_for(f"http://127.0.0.1:{closed_port()}/v1", tr)
    r = VLMPoseReasoner(client, session=case.root, candidates=case.candidates, policy=PoseConsultPolicy(consult="always"))
    res = run_pose(case.root, candidates=case.candidates, reasoner=r, out_dir=tmp_path / "vlm", config=CFG)
    geo = run_pose(case.root, candidates=case.candidates, reasoner="geometric", out_dir=tmp_path / "geo", config=CFG)
    cols = ["frame", "view", "individual", "keypoint", "x", "y", "candidate", "flag", "reason", "stage"]
    assert res.labels[cols].equals(geo.labels[cols])
    s = r.summary()
    assert s["gave_up_on_server"] and s["answers"] == {"fallback": 2} and s["budget"]["asked"] == 2
    fails = [x for x in tr.records if x.get("source") == "fallback"]
    assert len(fails) == 2 and all(x["fallback_reason"].startswith("unavailable: ") and "cannot connect" in x["fallback_reason"]
                                   for x in fails)
    assert [x["skipped"] for x in tr.records if x["step"] == "pose_skip"] == ["breaker"]
    assert r.verify(res).empty


def test_region_question_widens_a_box_that_lost_its_candidates() -> None:
    # predicted far from the two ear candidates (lost track): the box is empty, the search window is not
    ctx = make_ctx(np.array([[[40.0, 40.0], [48.0, 40.0]]]), np.array([[70.0, 60.0], [78.0, 60.0], [140.0, 120.0]]),
                   sigma=3.0)
    g = GeometricReasoner()
    assert not np.isin([0, 1], g.assign(ctx, g.locate_regions(ctx)).cand).any()
    tr = ListTrace()
    with FakeChatServer([_answer({"dots": [1, 2]})]) as srv:
        r = VLMPoseReasoner(client_for(srv.base_url, tr), images="canvas",
                            policy=PoseConsultPolicy(stages=("region",), search_scale=6.0))
        boxes = r.locate_regions(ctx)
    x0, y0, x1, y1 = boxes.boxes[0, 0, 0]
    assert x0 <= 70 and x1 >= 78 and y0 <= 60 <= y1 and x1 < 140  # widened to the chosen dots only
    t = text_of(srv.requests[0].body["messages"][-1])
    assert 'body region "ears" (keypoints: ear_left, ear_right)' in t and "1: (70.0, 60.0)" in t and "3: (140.0" not in t
    rec = [x for x in tr.records if x["step"] == "pose_region"][0]
    assert rec["input"]["candidates_in_geometric_box"] == 0 and rec["input"]["image_source"] == "canvas"


def test_rendered_session_sends_crops_of_the_body_video(small_session: Any, tmp_path: Path) -> None:
    """On a rendered session (marker spots detected from video) the pictures are crops of the body video."""
    from types import SimpleNamespace

    import cv2

    truth = small_session.load_truth()
    shim = SimpleNamespace(truth2d=np.transpose(truth.marker_xy, (0, 1, 3, 2, 4)), rig=SimpleNamespace(names=truth.views))
    tr = ListTrace()
    with FakeChatServer(Oracle(shim, wrong=False, tol=2.5)) as srv:
        r = VLMPoseReasoner(client_for(srv.base_url, tr), session=small_session.root,
                            policy=PoseConsultPolicy(consult="always", stages=("assignment",), max_questions=3))
        res = run_pose(small_session.root, reasoner=r, out_dir=tmp_path / "out", config=PoseConfig(chunk_size=20))
        table = r.verify(res)
    assert len(srv.requests) == 3 and len(table) > 0
    rec = [x for x in tr.records if x["step"] == "pose_assign"][0]
    assert rec["input"]["image_source"] == "body" and rec["input"]["shots"] == 2
    img = list(iter_images(srv.requests[0].body["messages"]))[-1]
    grey = cv2.imdecode(np.frombuffer(img.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert max(grey.shape) == 384 and grey.mean() > 60  # the grey arena and the mouse, not spots on black
