"""Building reasoners by name from config, and the run's usage file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ethoscribe.errors import InputError
from ethoscribe.reasoning.config import load_config
from ethoscribe.reasoning.errors import ReasonerConfigError
from ethoscribe.reasoning.factory import ReasonerRun, make_captioner, make_merger, make_pose_reasoner
from reasoning_fixtures import FakeChatServer, Reply, completion


def test_deterministic_choices_need_no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("ETHOSCRIBE_BASE_URL", "ETHOSCRIBE_MODEL", "ETHOSCRIBE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    assert make_pose_reasoner("geometric").name == "geometric"
    assert make_captioner("kinematic").name == "kinematic"
    assert make_merger("embedding").name == "embedding"
    with pytest.raises(InputError, match=r"unknown merger 'gpt' \(available: embedding, llm\)"):
        make_merger("gpt")
    with pytest.raises(InputError, match="unknown reasoner 'vllm'"):
        make_pose_reasoner("vllm")
    # a model choice without a configured server: a clear error naming what to set
    with pytest.raises(ReasonerConfigError, match="ETHOSCRIBE_BASE_URL"):
        make_merger("llm")


def test_config_file_run_and_usage_file(tmp_path: Path, small_session: Any) -> None:
    answer = '{"cluster_0": {"name": "rest", "definition": "lies still"}}'
    with FakeChatServer([Reply(completion(answer, 50, 12))]) as srv:
        toml = tmp_path / "ethoscribe.toml"
        toml.write_text(f'[reasoner]\nbase_url = "{srv.base_url}"\nmodel = "qwen2.5vl:7b"\ncache_path = "cache.sqlite"\n'
                        'max_concurrency = 2\n')
        out = tmp_path / "out"
        run = ReasonerRun(load_config(toml), out_dir=out)
        pose = make_pose_reasoner("vlm", run, session=small_session.root, max_questions=5, consult="ambiguous")
        cap = make_captioner("vlm", run, small_session.root, pose=small_session.points3d_path, max_questions=3)
        mer = make_merger("llm", run)
        assert pose.name == "vlm:qwen2.5vl:7b" and pose.policy.max_questions == 5 and cap.name == "vlm" and mer.name == "llm"
        assert pose.client is cap.client is mer.client is run.client  # one client, one accounting, one trace
        assert cap.video_view() == "cam0" and "mouse0" in cap.tracks and cap.crop_px > 64  # crops from the 3D pose
        from ethoscribe.behavior.captions import KinematicCaptioner
        from ethoscribe.behavior.merge import ClusterSummary
        import numpy as np

        caps = KinematicCaptioner().caption([])
        res = mer.merge([ClusterSummary(0, caps, [], np.zeros(2), 10)])
        path = run.finish()
    assert res.cluster_to_label == {0: "rest"}
    assert path == out / "reasoner_usage.json" and (out / "reasoner_trace.jsonl").is_file()
    assert (tmp_path / "cache.sqlite").is_file()  # relative to the config file
    u = json.loads(path.read_text())
    assert u["calls"] == 1 and u["prompt_tokens"] == 50 and u["steps"]["merge"]["calls"] == 1
    assert [r.get("reasoner") or r.get("captioner") or r.get("merger") for r in u["reasoners"]] == ["vlm:qwen2.5vl:7b", "vlm", "llm"]
    assert u["config"]["model"] == "qwen2.5vl:7b" and "api_key_set" in u["config"]
    # a run that used no model writes nothing
    assert ReasonerRun(out_dir=tmp_path / "none").finish() is None and not (tmp_path / "none").exists()
