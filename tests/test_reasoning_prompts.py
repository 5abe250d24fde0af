"""Prompt files (versioned package data) and the answer schemas they name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ethoscribe.errors import InputError
from ethoscribe.reasoning.prompts import list_prompts, load_prompt, load_prompt_file
from ethoscribe.reasoning.schemas import (
    ClusterNames,
    MergeAnswer,
    cluster_names_model,
    get_schema,
    merge_answer_model,
    request_schema,
)

SNIPPETS = [
    {"cluster": 3, "duration_s": 1.25, "text": "The animal stays still.", "summary": "speed 0.05 BL/s"},
    {"cluster": 7, "duration_s": 2.0, "text": "The animal walks forward.", "summary": "speed 1.4 BL/s"},
]


def test_packaged_prompts_are_listed_and_load_with_version() -> None:
    names = list_prompts()
    assert {"json_repair", "merge_behaviours", "name_clusters"} <= set(names)
    for name, versions in names.items():
        p = load_prompt(name)
        assert p.version == versions[-1] and p.ref == {"name": name, "version": p.version}
        assert p.id == f"{name}@v{p.version}" and len(p.sha256) == 64
        if p.schema:
            assert get_schema(p.schema) is p.schema_model()
    assert load_prompt("merge_behaviours", 1).schema == "MergeAnswer"
    assert resources.files("ethoscribe.reasoning").joinpath("prompts", "merge_behaviours.v1.md").is_file()


def test_unknown_prompt_or_version_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="unknown prompt 'nope'.*merge_behaviours"):
        load_prompt("nope")
    with pytest.raises(InputError, match="no version 9"):
        load_prompt("merge_behaviours", 9)


def test_render_merge_prompt() -> None:
    p = load_prompt("merge_behaviours")
    msgs = p.render(snippets=SNIPPETS, cluster_ids=[3, 7], vocabulary=["rest", "walk"])
    assert [m["role"] for m in msgs] == ["system", "user"]
    u = msgs[1]["content"]
    assert "1. cluster 3, 1.2 s: The animal stays still. [speed 0.05 BL/s]" in u
    assert "2. cluster 7, 2.0 s: The animal walks forward. [speed 1.4 BL/s]" in u
    assert "(3, 7)" in u and "preferably one of: rest, walk" in u and "{{" not in u
    with pytest.raises(InputError, match="cluster_ids"):
        p.render(snippets=SNIPPETS)  # undefined variables are errors, not blanks


def test_render_with_images_attaches_them_to_the_last_user_message() -> None:
    p = load_prompt("name_clusters")
    msgs = p.messages(images=[np.zeros((8, 8), np.uint8)], snippets=SNIPPETS, cluster_ids=[3, 7], vocabulary=[])
    assert msgs[-1]["content"][0]["type"] == "text" and msgs[-1]["content"][1]["type"] == "image_url"
    assert "preferably" not in msgs[-1]["content"][0]["text"]


def test_front_matter_must_match_file_name(tmp_path: Path) -> None:
    f = tmp_path / "my_step.v2.md"
    f.write_text("---\nname: my_step\nversion: 2\n---\nHello {{ who }}\n")
    p = load_prompt_file(str(f))
    assert p.version == "2" and p.render(who="mouse") == [{"role": "user", "content": "Hello mouse"}]
    bad = tmp_path / "my_step.v3.md"
    bad.write_text("---\nname: my_step\nversion: 2\n---\nx\n")
    with pytest.raises(InputError, match="front matter says my_step v2, the file name my_step v3"):
        load_prompt_file(str(bad))
    nofm = tmp_path / "x.v1.md"
    nofm.write_text("no front matter")
    with pytest.raises(InputError, match="missing front matter"):
        load_prompt_file(str(nofm))


def test_request_schema_closes_objects_and_reports_strictness() -> None:
    schema, strict = request_schema(MergeAnswer)
    assert schema["additionalProperties"] is False and strict
    assert schema["$defs"]["MergedBehaviour"]["additionalProperties"] is False
    from pydantic import BaseModel

    class Loose(BaseModel):
        a: int
        b: int = 0

    assert request_schema(Loose)[1] is False


def test_merge_answer_checks_clusters_against_context() -> None:
    ok = {"behaviours": [{"name": "rest", "definition": "still", "clusters": [3]},
                         {"name": "walk", "definition": "moves", "clusters": [7]}]}
    assert MergeAnswer.model_validate(ok, context={"cluster_ids": [3, 7]})
    bad = {"behaviours": [{"name": "rest", "definition": "still", "clusters": [3, 9]},
                          {"name": "walk", "definition": "moves", "clusters": [3]}]}
    with pytest.raises(ValidationError) as ei:
        MergeAnswer.model_validate(bad, context={"cluster_ids": [3, 7]})
    msg = str(ei.value)
    assert "cluster 9 was not given" in msg and "cluster 3 is in both 'rest' and 'walk'" in msg and "[7] are in no group" in msg
    M = merge_answer_model([3, 7])
    with pytest.raises(ValidationError, match="Input should be 3 or 7"):
        M.model_validate(bad)
    sch = request_schema(M)[0]
    assert sch["$defs"]["MergedBehaviour"]["properties"]["clusters"]["items"]["enum"] == [3, 7]


def test_cluster_names_model_requires_exactly_the_given_clusters() -> None:
    M = cluster_names_model([7, 3])
    assert issubclass(M, ClusterNames) and M.cluster_ids == (3, 7)
    good = {"cluster_3": {"name": "rest", "definition": "lies still"}, "cluster_7": {"name": "walk", "definition": "moves"}}
    assert {k: v.name for k, v in M.model_validate(good).names().items()} == {3: "rest", 7: "walk"}
    with pytest.raises(ValidationError, match="cluster_7"):
        M.model_validate({"cluster_3": good["cluster_3"]})
    with pytest.raises(ValidationError, match="cluster_9"):
        M.model_validate({**good, "cluster_9": good["cluster_3"]})
    with pytest.raises(ValidationError, match="name"):
        M.model_validate({**good, "cluster_3": {"name": "Rest!", "definition": "x"}})
    schema, strict = request_schema(M)
    assert strict and sorted(schema["required"]) == ["cluster_3", "cluster_7"] and schema["additionalProperties"] is False
