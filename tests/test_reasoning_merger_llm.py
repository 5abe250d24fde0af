"""The LLM merger: batching, reconciliation, checks, fallbacks (loopback servers), and the real local model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ethoscribe.behavior.captions import KinematicCaptioner, Snippet
from ethoscribe.behavior.merge import ClusterSummary, EmbeddingMerger, Merger
from ethoscribe.reasoning.accounting import Accounting
from ethoscribe.reasoning.client import ChatClient
from ethoscribe.reasoning.config import ReasonerConfig
from ethoscribe.reasoning.merger_llm import LLMMerger, canonical_name, kinematic_contradiction, speed_profile
from ethoscribe.reasoning.messages import message_text
from ethoscribe.reasoning.trace import ListTrace, read_trace
from reasoning_fixtures import FakeChatServer, Reply, closed_port, completion, local_llm  # noqa: F401

KIN = KinematicCaptioner()
KINDS = {
    "still": {"speed": 0.05, "pitch": 0.0},
    "walk": {"speed": 1.5, "forward_speed": 1.4, "angular_speed": 0.2, "pitch": 0.0},
    "rear": {"speed": 0.1, "pitch": 0.8},
    "run": {"speed": 3.5, "forward_speed": 3.4, "pitch": 0.0},
}


def summaries(plan: list[tuple[str, int]], seed: int = 0) -> list[ClusterSummary]:
    """One cluster per (kind, n_snippets), ids 0.., captions written by the kinematic captioner from jittered numbers."""
    rng = np.random.default_rng(seed)
    out = []
    for cid, (kind, n) in enumerate(plan):
        snips = [Snippet("m0", 0, 30, 30.0, measures={k: v * (1 + 0.05 * rng.standard_normal()) for k, v in KINDS[kind].items()})
                 for _ in range(n)]
        caps = KIN.caption(snips)
        out.append(ClusterSummary(cid, caps, [1.0 + 0.1 * (i % 3) for i in range(n)], rng.normal(size=4) + 3 * cid, 30 * n))
    return out


def client_for(base_url: str, trace: Any = None, **kw: Any) -> ChatClient:
    values = dict(base_url=base_url, model="fake-llm", cache=False, max_retries=0, timeout_s=5.0, backoff_s=0.01)
    values.update(kw)
    return ChatClient(ReasonerConfig(**values), trace=trace)


def names_reply(names: dict[str, str]):  # noqa: ANN201
    """A server script naming every requested cluster by its kind (read from the schema's required keys)."""
    def script(body: dict, i: int) -> Reply:
        req = body["response_format"]["json_schema"]["schema"]["required"]
        ans = {k: {"name": names.get(k, "walk"), "definition": f"what {k} does"} for k in req}
        return Reply(completion(json.dumps(ans)))
    return script


SMALL = [("still", 7), ("walk", 8), ("rear", 6)]  # 21 snippets: one request


@pytest.fixture(scope="module")
def embedding_labels() -> dict[int, str]:
    return EmbeddingMerger().merge(summaries(SMALL)).cluster_to_label


def test_names_normalise_and_checks() -> None:
    assert [canonical_name(x) for x in ("Rearing", "grooms", "resting", "Back_Up", "zoomies")] == ["rear", "groom", "rest", "back up", "zoomies"]
    cl = summaries(SMALL)
    assert speed_profile(cl[0]) == {"stationary": 1.0} and speed_profile(cl[1])["moderate"] == 1.0
    assert kinematic_contradiction("walk", speed_profile(cl[0])) and kinematic_contradiction("rest", speed_profile(cl[1]))
    assert kinematic_contradiction("run", speed_profile(cl[1])) is None  # moderate is not "slow"
    assert kinematic_contradiction("zoomies", speed_profile(cl[0])) is None  # unknown names are not checked


def test_batches_never_exceed_one_request_per_20_snippets() -> None:
    m = LLMMerger.__new__(LLMMerger)
    m.batch_snippets, m.max_clusters_per_batch = 20, 4
    for plan in ([("walk", 2)] * 10, [("walk", 4)] * 10, [("walk", 9)] * 10, [("still", 3)] * 3):
        cl = summaries(plan)
        n_snip = sum(n for _, n in plan)
        b = m.batches(cl)
        assert len(b) <= max(1, n_snip // 20) and len(b) <= -(-len(cl) // 4)
        assert sorted(c.cluster for x in b for c in x) == list(range(len(cl)))  # every cluster exactly once
    assert [len(x) for x in m.batches(summaries([("walk", 9)] * 10))] == [4, 3, 3]


def test_batched_answers_reconcile_deterministically() -> None:
    # 10 clusters, 45 snippets: two requests; "walking" in one batch and "walk" in the other are one label
    plan = [("still", 5), ("walk", 5), ("rear", 4), ("walk", 5), ("still", 4), ("run", 5), ("walk", 4), ("rear", 5),
            ("still", 4), ("walk", 4)]
    names = {f"cluster_{i}": {"still": "resting", "walk": "walking" if i % 2 else "walk", "rear": "rear", "run": "running"}[k]
             for i, (k, _) in enumerate(plan)}
    cl = summaries(plan)
    tr = ListTrace()
    with FakeChatServer(names_reply(names)) as srv:
        m = LLMMerger(client_for(srv.base_url, tr))
        assert isinstance(m, Merger)
        res = m.merge(cl)
    assert len(srv.requests) == 2
    assert res.cluster_to_label == {i: {"still": "rest", "walk": "walk", "rear": "rear", "run": "run"}[k] for i, (k, _) in enumerate(plan)}
    assert [e.label for e in res.labels] == ["walk", "rest", "rear", "run"]  # by total frames
    walk = res.labels[0]
    assert walk.clusters == [1, 3, 6, 9] and walk.definition.startswith("what cluster_") and walk.caption
    assert {r["batch"] for r in res.trace} == {0, 1} and all(r["source"] == "model" for r in res.trace)
    text = message_text(srv.requests[0].body["messages"][-1])
    assert "snippets," in text and "s in total" in text and "- walk: The animal walks forward" in text
    assert [r for r in tr.records if r["step"] == "merge_result"][0]["source"] == "model"


@pytest.mark.parametrize("case", ["down", "slow", "garbage", "contradiction"])
def test_failures_fall_back_to_exactly_the_embedding_labels(case: str, embedding_labels: dict[int, str], tmp_path: Path) -> None:
    cl = summaries(SMALL)
    tr = ListTrace()
    acc = Accounting()
    if case == "down":
        m = LLMMerger(ChatClient(ReasonerConfig(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="x", cache=False,
                                                max_retries=1, backoff_s=0.01), trace=tr, accounting=acc))
        res = m.merge(cl)
    else:
        script = {
            "slow": [Reply(completion("{}"), delay_s=1.5)],
            "garbage": [Reply(completion("These mice look busy today!"))],
            "contradiction": None,
        }[case]
        with FakeChatServer(script or names_reply({k: "run" for k in ("cluster_0", "cluster_1", "cluster_2")})) as srv:
            m = LLMMerger(ChatClient(ReasonerConfig(base_url=srv.base_url, model="x", cache=False, max_retries=0,
                                                    timeout_s=0.5), trace=tr, accounting=acc))
            res = m.merge(cl)
    assert res.cluster_to_label == embedding_labels  # never a silently wrong label
    rec = [r for r in tr.records if r["step"] == "merge_result"][0]
    assert rec["source"] == "fallback" and rec["fallback_merger"] == "embedding"
    expect = {"down": "unavailable: language-model server", "slow": "no answer within 0.5 s",
              "garbage": "invalid: still invalid after one repair request",
              "contradiction": "rejected: cluster 0: 'run' means moving, but the cluster is stationary 100% of its time"}[case]
    assert expect in rec["fallback_reason"]
    assert all(r["source"] == "fallback" and expect in r["fallback_reason"] for r in res.trace)
    u = acc.to_dict()
    assert u["fallbacks"] == 1 and u["fallback_rate"] == 1.0
    if case == "garbage":
        assert u["calls"] == 2 and u["repairs"] == 1 and u["schema_valid_rate"] == 0.0
    if case == "down":
        assert u["calls"] == 0 and u["attempts"] == 2 and "cannot connect" in rec["fallback_reason"]


def test_real_local_model_merges_or_falls_back_traced_and_reruns_free(local_llm, embedding_labels, tmp_path: Path) -> None:  # noqa: F811
    """The packaged 270M model against the real client: valid names (checked) or a traced fallback; a rerun makes no call."""
    from ethoscribe.reasoning.factory import ReasonerRun, make_merger

    cl = summaries(SMALL)
    vocab = {k: v for k, v in EmbeddingMerger().vocabulary.items() if k in ("rest", "walk", "rear", "groom")}
    cfg = local_llm.config(cache_path=tmp_path / "cache.sqlite")
    results = []
    for run_name in ("first", "rerun"):
        with ReasonerRun(cfg, out_dir=tmp_path / run_name) as run:
            res = make_merger("llm", run, vocabulary=vocab).merge(cl)
        results.append((res, json.loads((tmp_path / run_name / "reasoner_usage.json").read_text())))
    (res, u1), (res2, u2) = results
    assert 1 <= u1["calls"] <= 2 and u1["steps"]["merge"]["asks"] == 1  # 21 snippets: one request (plus at most one repair)
    assert u1["prompt_tokens"] > 100 and u1["completion_tokens"] > 0 and u1["models"] == ["gemma-3-270m"]
    assert u2["calls"] == 0 and u2["attempts"] == 0 and u2["cache_hit_rate"] == 1.0  # the rerun is call-free
    assert res2.cluster_to_label == res.cluster_to_label
    rec = [r for r in read_trace(tmp_path / "first" / "reasoner_trace.jsonl") if r["step"] == "merge"][0]
    assert rec["prompt"]["name"] == "name_cluster_summaries" and rec["raw"]
    summ = u1["reasoners"][0]
    assert summ["merger"] == "llm" and summ["n_batches"] == 1
    if summ["source"] == "model":
        assert rec["ok"] and set(res.cluster_to_label) == {0, 1, 2}
        assert all(isinstance(v, str) and v and v != "untracked" for v in res.cluster_to_label.values())
        assert all(e.definition for e in res.labels)
    else:  # the 270M model may fail or contradict the measurements: then exactly the embedding labels, reason traced
        assert res.cluster_to_label == embedding_labels and summ["reason"] and rec["fallback_reason"] == summ["reason"][len("batch 0: "):]


def test_pipeline_accepts_the_llm_merger(tmp_path: Path) -> None:
    from ethoscribe.behavior.pipeline import run_behavior
    from ethoscribe.behavior.toy import toy_poses

    ds, _ = toy_poses(n_frames=600, seed=0)
    names = {f"cluster_{i}": n for i, n in enumerate(["walk", "rear", "groom", "walking"])}
    with FakeChatServer(names_reply(names)) as srv:
        m = LLMMerger(client_for(srv.base_url), check=False)
        res = run_behavior(ds, clusterer="kmeans", n_clusters=4, merger=m, out_dir=tmp_path / "b")
    assert len(srv.requests) == 1
    assert set(res.label_dictionary["label"]) <= {"walk", "rear", "groom", "untracked"}
    merge_recs = [r for r in res.trace if r["step"] == "merge"]
    assert merge_recs and all(r["merger"] == "llm" and r["source"] == "model" for r in merge_recs)
    assert res.meta["merger_source"] == "model" and res.meta["caption_sources"] == {"kinematic": len(res.segments[res.segments["cluster"] >= 0])}
