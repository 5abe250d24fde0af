"""Build the reasoners of a run by name, sharing one client, accounting and trace: what the CLI calls.

- :func:`make_pose_reasoner`: ``"geometric"`` (default) or ``"vlm"``
  (:class:`~ethoscribe.reasoning.pose_vlm.VLMPoseReasoner`);
- :func:`make_captioner`: ``"kinematic"`` (default) or ``"vlm"``
  (:class:`~ethoscribe.reasoning.captioner_vlm.VLMCaptioner`);
- :func:`make_merger`: ``"embedding"`` (default) or ``"llm"``
  (:class:`~ethoscribe.reasoning.merger_llm.LLMMerger`).

The deterministic choices need no configuration and make no client. A
language-model choice takes a :class:`ReasonerRun` (or a
:class:`~ethoscribe.reasoning.config.ReasonerConfig`, or None: then
``ethoscribe.toml`` / ``ETHOSCRIBE_*`` via
:func:`~ethoscribe.reasoning.config.load_config`); a missing model or base
URL is a :class:`~ethoscribe.reasoning.errors.ReasonerConfigError` naming
what to set. One :class:`ReasonerRun` per command: its client is made on
first use, its trace goes to ``<out>/reasoner_trace.jsonl``, and
:meth:`ReasonerRun.finish` writes ``<out>/reasoner_usage.json`` (calls,
tokens, cache hits, fallbacks, per step; plus each reasoner's summary and
the config without secrets).

Examples
--------
>>> make_merger("embedding").name, make_captioner("kinematic").name, make_pose_reasoner("geometric").name
('embedding', 'kinematic', 'geometric')

With a server (not run here)::

    run = ReasonerRun(load_config(), out_dir="out/behavior")
    result = run_behavior(pose, out_dir="out/behavior", captioner=make_captioner("vlm", run, session),
                          merger=make_merger("llm", run))
    run.finish()
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ethoscribe.errors import InputError
from ethoscribe.reasoning.accounting import USAGE_FILE, Accounting
from ethoscribe.reasoning.config import ReasonerConfig, load_config
from ethoscribe.reasoning.trace import TRACE_FILE, ListTrace, TraceWriter

REASONERS = ("geometric", "vlm")
CAPTIONERS = ("kinematic", "vlm")
MERGERS = ("embedding", "llm")


class ReasonerRun:
    """The language-model side of one run: config, one client (made on first use), accounting, trace, usage file.

    Parameters
    ----------
    config
        Server settings (None: :func:`~ethoscribe.reasoning.config.load_config` when first needed).
    out_dir
        Where ``reasoner_trace.jsonl`` and ``reasoner_usage.json`` go (None: trace kept in memory, nothing written).
    cache
        Passed to :class:`~ethoscribe.reasoning.client.ChatClient` (``"config"``: the config's cache).
    """

    def __init__(self, config: ReasonerConfig | None = None, out_dir: str | os.PathLike[str] | None = None,
                 *, cache: Any = "config") -> None:
        self._config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.cache = cache
        self.accounting = Accounting()
        self.trace: Any = None
        self._client: Any = None
        self.steps: list[Any] = []

    @property
    def config(self) -> ReasonerConfig:
        if self._config is None:
            self._config = load_config()
        return self._config

    @property
    def client(self) -> Any:
        """The run's :class:`~ethoscribe.reasoning.client.ChatClient` (made now if needed; checks the config)."""
        if self._client is None:
            from ethoscribe.reasoning.client import ChatClient

            cfg = self.config.require()
            if self.out_dir is not None:
                self.trace = TraceWriter(self.out_dir / TRACE_FILE)
            else:
                self.trace = ListTrace()
            self._client = ChatClient(cfg, cache=self.cache, accounting=self.accounting, trace=self.trace)
        return self._client

    @property
    def used(self) -> bool:
        """Whether a language-model step was set up in this run."""
        return self._client is not None

    def add(self, step: Any) -> Any:
        """Remember a reasoner (its ``summary()`` goes into the usage file); returns it."""
        self.steps.append(step)
        return step

    def usage(self) -> dict[str, Any]:
        """What ``reasoner_usage.json`` holds: the accounting, each reasoner's summary, the public config."""
        out = self.accounting.to_dict()
        out["reasoners"] = [s.summary() for s in self.steps if hasattr(s, "summary")]
        if self._config is not None:
            out["config"] = self._config.public_dict()
        return out

    def finish(self, out_dir: str | os.PathLike[str] | None = None) -> Path | None:
        """Write ``reasoner_usage.json`` (if a model was set up and there is a folder), close the client, trace and readers."""
        from ethoscribe.io.atomic import write_json

        target = Path(out_dir) if out_dir is not None else self.out_dir
        path = None
        if self.used and target is not None:
            target.mkdir(parents=True, exist_ok=True)
            path = write_json(target / USAGE_FILE, self.usage())
        for s in self.steps:
            if hasattr(s, "close"):
                s.close()
        if self._client is not None:
            self._client.close()
        if isinstance(self.trace, TraceWriter):
            self.trace.close()
        return path

    def __enter__(self) -> ReasonerRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()


def _run(config: ReasonerRun | ReasonerConfig | None) -> ReasonerRun:
    if isinstance(config, ReasonerRun):
        return config
    if config is None or isinstance(config, ReasonerConfig):
        return ReasonerRun(config)
    raise TypeError("config must be a ReasonerRun, a ReasonerConfig or None")


def _unknown(kind: str, name: str, options: tuple[str, ...]) -> InputError:
    return InputError(f"unknown {kind} {name!r} (available: {', '.join(options)})")


def make_pose_reasoner(name: str = "geometric", config: ReasonerRun | ReasonerConfig | None = None, *,
                       session: Any = None, candidates: Any = None, seeds: Any = None, **options: Any) -> Any:
    """The pose pipeline's reasoner called ``name``.

    ``"vlm"``: options are :class:`~ethoscribe.reasoning.pose_vlm.PoseConsultPolicy`
    fields (``consult``, ``stages``, ``margin``, ``max_questions``,
    ``max_per_frame``, ...) and :class:`~ethoscribe.reasoning.pose_vlm.VLMPoseReasoner`
    arguments (``images``, ``image_px``, ``max_tokens``). After
    :func:`~ethoscribe.pose.run_pose`, call its ``verify(result)``.
    """
    if name == "geometric":
        from ethoscribe.pose.reasoner import GeometricReasoner

        return GeometricReasoner()
    if name != "vlm":
        raise _unknown("reasoner", name, REASONERS)
    from ethoscribe.reasoning.pose_vlm import PoseConsultPolicy, VLMPoseReasoner

    run = _run(config)
    fields = {f.name for f in dataclasses.fields(PoseConsultPolicy)}
    policy = PoseConsultPolicy(**{k: options.pop(k) for k in list(options) if k in fields})
    r = VLMPoseReasoner(run.client, session=session, seeds=seeds, candidates=candidates, policy=policy, **options)
    r.run = run  # type: ignore[attr-defined]
    return run.add(r)


def make_captioner(name: str = "kinematic", config: ReasonerRun | ReasonerConfig | None = None, session: Any = None, *,
                   pose: Any = None, videos: Any = None, view: str | None = None, **options: Any) -> Any:
    """The behaviour pipeline's captioner called ``name``.

    ``"vlm"``: frames from ``videos`` (first), else the session's body video
    of ``view`` (default the first view with one); with ``pose`` (a movement
    dataset or file; 3D poses are projected with the session's calibration)
    each frame is cropped around the animal. Other options go to
    :class:`~ethoscribe.reasoning.captioner_vlm.VLMCaptioner`.
    """
    if name == "kinematic":
        from ethoscribe.behavior.captions import KinematicCaptioner

        return KinematicCaptioner()
    if name != "vlm":
        raise _unknown("captioner", name, CAPTIONERS)
    from ethoscribe.reasoning.captioner_vlm import VLMCaptioner, tracks_from_pose

    run = _run(config)
    if isinstance(session, (str, os.PathLike)):
        from ethoscribe.session import load_session

        session = load_session(session)
    cap = VLMCaptioner(run.client, session=session, view=view, videos=videos, **options)
    if pose is not None and "tracks" not in options:
        try:
            vv = cap.video_view()
            rig = session.rig if session is not None else None
            tracks, crop = tracks_from_pose(pose, rig, vv)
            cap.tracks = tracks
            if crop and "crop_px" not in options:
                cap.crop_px = float(crop)
        except (ValueError, KeyError, InputError) as exc:  # crops are optional: whole frames then
            cap.video_errors["tracks"] = f"no crops around the animal: {exc}"
    cap.run = run  # type: ignore[attr-defined]
    return run.add(cap)


def make_merger(name: str = "embedding", config: ReasonerRun | ReasonerConfig | None = None, **options: Any) -> Any:
    """The behaviour pipeline's merger called ``name`` (``"llm"``: options go to :class:`~ethoscribe.reasoning.merger_llm.LLMMerger`)."""
    if name == "embedding":
        from ethoscribe.behavior.merge import EmbeddingMerger

        return EmbeddingMerger(**options)
    if name != "llm":
        raise _unknown("merger", name, MERGERS)
    from ethoscribe.reasoning.merger_llm import LLMMerger

    run = _run(config)
    m = LLMMerger(run.client, **options)
    m.run = run  # type: ignore[attr-defined]
    return run.add(m)
