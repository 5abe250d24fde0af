"""Answer schemas of the packaged prompts, and how a pydantic model becomes a request's schema.

- :class:`ClusterNames` (prompt ``name_clusters``; recommended for the LLM
  merger): one required ``cluster_<id>`` entry per given cluster with a
  name and a definition; clusters given the same name merge. Built per
  batch by :func:`cluster_names_model`, so constrained decoding cannot
  leave a cluster out, repeat one or invent one.
- :class:`MergeAnswer` (prompt ``merge_behaviours``): a list of groups of
  cluster ids, each named and defined; "every cluster exactly once" is
  checked by its validator (so it can fail and needs a repair), ids are
  limited to the given ones by :func:`merge_answer_model`.

:func:`request_schema` turns a model into the JSON schema sent to the
server: objects get ``additionalProperties: false`` (small models otherwise
invent keys and run on until ``max_tokens``), and it says whether the schema
is *strict* in OpenAI's sense (every property required), which hosted
structured-output modes demand.

Checks that need the request (e.g. "use only the cluster ids you were
given") live in the models' validators and read the validation context
(``ChatClient.ask(..., context=...)``): a violation then gets the one
repair request like any schema error.

Examples
--------
>>> schema, strict = request_schema(MergeAnswer)
>>> schema["additionalProperties"], strict
(False, True)
>>> MergeAnswer.model_validate({"behaviours": [{"name": "rest", "definition": "lies still", "clusters": [3]}]},
...                            context={"cluster_ids": [3]}).behaviours[0].name
'rest'
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, model_validator

from ethoscribe.errors import InputError


def request_schema(model: type[BaseModel]) -> tuple[dict[str, Any], bool]:
    """(JSON schema with ``additionalProperties: false`` on every object, whether every property is required)."""
    schema = copy.deepcopy(model.model_json_schema())
    strict = True

    def walk(node: Any) -> None:
        nonlocal strict
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
                if set(node.get("required", [])) != set(node["properties"]):
                    strict = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema, strict


class MergedBehaviour(BaseModel):
    """One behaviour of a merge answer."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=40, description="short lower-case behaviour name")
    definition: str = Field(min_length=1, max_length=200, description="one line saying what the animal does")
    clusters: list[int] = Field(min_length=1, max_length=64, description="cluster ids in this behaviour")


class MergeAnswer(BaseModel):
    """Answer of the ``merge_behaviours`` prompt: groups of clusters, each named and defined.

    With ``context={"cluster_ids": [...]}`` the validator also checks that
    every given cluster is in exactly one group and no other id is used.
    """

    model_config = ConfigDict(extra="forbid")

    #: cluster ids a model made by :func:`merge_answer_model` accepts (None: any)
    cluster_ids: ClassVar[tuple[int, ...] | None] = None

    behaviours: list[MergedBehaviour] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _clusters(self, info: ValidationInfo) -> MergeAnswer:
        ctx = info.context or {}
        given = ctx.get("cluster_ids", type(self).cluster_ids)
        if given is None:
            return self
        given_set = {int(c) for c in given}
        seen: dict[int, str] = {}
        problems = []
        for b in self.behaviours:
            for c in b.clusters:
                if c not in given_set:
                    problems.append(f"cluster {c} was not given")
                elif c in seen and seen[c] != b.name:
                    problems.append(f"cluster {c} is in both {seen[c]!r} and {b.name!r}")
                seen.setdefault(c, b.name)
        missing = sorted(given_set - set(seen))
        if missing:
            problems.append(f"clusters {missing} are in no group")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def merge_answer_model(cluster_ids: Sequence[int]) -> type[MergeAnswer]:
    """A :class:`MergeAnswer` whose schema only allows ``cluster_ids`` (an enum), for constrained decoding.

    A grammar made from it cannot produce an id that was not given, and
    the validator checks that every id is in exactly one group without a
    validation context.

    Examples
    --------
    >>> M = merge_answer_model([3, 7])
    >>> M.model_json_schema()["$defs"]["MergedBehaviour"]["properties"]["clusters"]["items"]["enum"]
    [3, 7]
    """
    ids = tuple(sorted({int(c) for c in cluster_ids}))
    if not ids:
        raise ValueError("merge_answer_model needs at least one cluster id")
    n = len(ids)
    ClusterId = Literal[ids]  # type: ignore[valid-type]
    behaviour = create_model(
        "MergedBehaviour", __base__=MergedBehaviour,
        clusters=(list[ClusterId], Field(min_length=1, max_length=n, description="cluster ids in this behaviour")),
    )
    model = create_model(
        "MergeAnswer", __base__=MergeAnswer,
        behaviours=(list[behaviour], Field(min_length=1, max_length=n)),  # type: ignore[valid-type]
    )
    model.cluster_ids = ids
    return model


class ClusterName(BaseModel):
    """Name and definition of one cluster's behaviour (answer part of the ``name_clusters`` prompt)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9 /-]*$", description="short lower-case behaviour name")
    definition: str = Field(min_length=1, max_length=160, description="one line saying what the animal does")


class ClusterNames(BaseModel):
    """Answer of the ``name_clusters`` prompt: ``cluster_<id>`` -> :class:`ClusterName` for every given cluster.

    Use :func:`cluster_names_model` to get the model for a batch: its schema
    requires exactly the given clusters, so constrained decoding cannot
    leave one out, repeat one or invent one. Clusters given the same name
    are the merged behaviour.
    """

    model_config = ConfigDict(extra="forbid")

    cluster_ids: ClassVar[tuple[int, ...]] = ()

    def names(self) -> dict[int, ClusterName]:
        """cluster id -> its name and definition."""
        return {int(k.split("_", 1)[1]): v for k, v in self if k.startswith("cluster_")}


def cluster_names_model(cluster_ids: Sequence[int]) -> type[ClusterNames]:
    """The :class:`ClusterNames` model of a batch: one required field ``cluster_<id>`` per id.

    Examples
    --------
    >>> M = cluster_names_model([2, 5])
    >>> sorted(M.model_json_schema()["required"])
    ['cluster_2', 'cluster_5']
    >>> M.model_validate({"cluster_2": {"name": "rest", "definition": "lies still"},
    ...                   "cluster_5": {"name": "rest", "definition": "sits still"}}).names()[5].name
    'rest'
    """
    ids = tuple(sorted({int(c) for c in cluster_ids}))
    if not ids:
        raise ValueError("cluster_names_model needs at least one cluster id")
    if any(i < 0 for i in ids):
        raise ValueError("cluster ids must be non-negative")
    model = create_model("ClusterNames", __base__=ClusterNames, **{f"cluster_{i}": (ClusterName, ...) for i in ids})  # type: ignore[call-overload]
    model.cluster_ids = ids
    return model


_SCHEMAS: dict[str, type[BaseModel]] = {
    "MergeAnswer": MergeAnswer, "MergedBehaviour": MergedBehaviour, "ClusterNames": ClusterNames, "ClusterName": ClusterName,
}


def register_schema(model: type[BaseModel], name: str | None = None) -> type[BaseModel]:
    """Make ``model`` findable by the ``schema:`` field of prompt files (usable as a decorator)."""
    _SCHEMAS[name or model.__name__] = model
    return model


#: answer models registered by the step modules when imported (imported here on first lookup)
_LAZY: dict[str, str] = {
    "KeypointDots": "ethoscribe.reasoning.pose_vlm",
    "RegionDots": "ethoscribe.reasoning.pose_vlm",
    "ConflictOwner": "ethoscribe.reasoning.pose_vlm",
    "CaptionAnswer": "ethoscribe.reasoning.captioner_vlm",
}


def get_schema(name: str) -> type[BaseModel]:
    """The registered answer model called ``name`` (step modules that define one are imported on demand)."""
    if name not in _SCHEMAS and name in _LAZY:
        import importlib

        importlib.import_module(_LAZY[name])
    try:
        return _SCHEMAS[name]
    except KeyError:
        raise InputError(f"unknown answer schema {name!r} (registered: {', '.join(sorted(_SCHEMAS))})") from None
