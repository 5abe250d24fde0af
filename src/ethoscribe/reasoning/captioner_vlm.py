"""A vision-language-model captioner: frames of a snippet at about 10 fps, answering the kinematic captioner's schema.

:class:`VLMCaptioner` implements the behaviour pipeline's
:class:`~ethoscribe.behavior.captions.Captioner` protocol. Per snippet:

1. the :class:`~ethoscribe.behavior.captions.KinematicCaptioner` writes its
   caption first: it is the fallback, and its numbers and sentence go into
   the prompt as context;
2. frames are sampled from the snippet at ``sample_fps`` (10) (at most
   ``max_frames``, 16, evenly spread; at least 2) from one video: ``videos``
   if given, else the session's body video of ``view`` (default the first
   view that has one), else the snippet's own ``videos``;
3. where the animal's track in that video is known (``tracks``: per animal
   a (T, 2) pixel track, e.g. from :func:`tracks_from_pose`), each frame is
   cropped to a ``crop_px`` square around it; otherwise the whole frame is used;
4. the frames go out as one montage (``layout="montage"``, default: a grid
   with each tile labelled with its time) or as several images
   (``layout="frames"``), JPEG-encoded, with the prompt ``caption_snippet``;
5. the answer must match :data:`CaptionAnswer`: the fields of
   :class:`~ethoscribe.behavior.captions.Caption` except ``numbers`` and
   ``source`` (those are filled in: the measured numbers, ``source="vlm"``),
   with ``speed`` limited to stationary / slow / moderate / fast;
6. it is checked against the measurement: a speed two or more steps from
   the measured one (``fast`` for a stationary animal) is rejected and the
   kinematic caption used, with the reason in the trace.

One question per snippet (calls scale with snippets, never with frames),
at most ``max_questions`` per run (default: no limit), sent
``max_concurrency`` at a time; after two consecutive unavailable answers the
rest of the run is captioned kinematically. Every fallback is traced with
its reason (``step="caption"`` in ``reasoner_trace.jsonl``).

Nothing here was measured against a vision model: the tests check the
requests built and the parsing of recorded answers only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import ConfigDict, Field, create_model

from ethoscribe.behavior.captions import Caption, KinematicCaptioner, Snippet
from ethoscribe.reasoning.client import ChatClient, Request
from ethoscribe.reasoning.images import crop_box, montage, to_rgb_uint8
from ethoscribe.reasoning.messages import user
from ethoscribe.reasoning.prompts import load_prompt
from ethoscribe.reasoning.schemas import register_schema
from ethoscribe.reasoning.steps import Consultant

SPEED_WORDS: tuple[str, ...] = ("stationary", "slow", "moderate", "fast")
_ANSWER_EXCLUDE = ("numbers", "source")


def _answer_fields() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in Caption.model_fields.items():
        if name in _ANSWER_EXCLUDE:
            continue
        if name == "speed":
            out[name] = (Literal[SPEED_WORDS], Field(..., description=f.description))  # type: ignore[valid-type]
        else:
            out[name] = (str, Field(..., min_length=1, max_length=300 if name == "text" else 80, description=f.description))
    return out


#: What the model answers: :class:`Caption`'s fields without ``numbers`` and ``source`` (filled in here), all required.
CaptionAnswer = register_schema(create_model("CaptionAnswer", __config__=ConfigDict(extra="forbid"), **_answer_fields()))


def to_caption(answer: Any, numbers: Mapping[str, float] | None = None, source: str = "vlm") -> Caption:
    """A :class:`Caption` from a :data:`CaptionAnswer` (numbers: the measurements used; source: who wrote it)."""
    return Caption(**answer.model_dump(), numbers=dict(numbers or {}), source=source)


def sample_frames(start: int, end: int, fps: float, sample_fps: float = 10.0, max_frames: int = 16) -> NDArray[np.int64]:
    """Frame indices in [start, end) about ``1/sample_fps`` s apart, at most ``max_frames`` (evenly spread), at least 2.

    Examples
    --------
    >>> sample_frames(0, 30, 30.0).tolist()
    [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    >>> sample_frames(0, 300, 30.0, max_frames=4).tolist()
    [0, 99, 198, 297]
    """
    n_frames = max(0, int(end) - int(start))
    if n_frames == 0:
        return np.zeros(0, np.int64)
    step = max(1.0, float(fps) / float(sample_fps))
    idx = np.unique(np.floor(np.arange(0, n_frames, step)).astype(np.int64))
    if len(idx) < 2 and n_frames >= 2:
        idx = np.array([0, n_frames - 1])
    if len(idx) > max_frames:
        idx = idx[np.unique(np.round(np.linspace(0, len(idx) - 1, max_frames)).astype(np.int64))]
    return (idx + int(start)).astype(np.int64)


def tracks_from_pose(pose: Any, rig: Any = None, view: str | None = None) -> tuple[dict[str, NDArray[np.float64]], float | None]:
    """Per-animal centre tracks (T, 2) in a video's pixels, and a crop side (px) fitting the animal.

    Parameters
    ----------
    pose
        A movement dataset (or a pose file). 2D pose: taken as pixels of
        the video. 3D pose: projected into ``view`` of ``rig`` (the session's
        :class:`~ethoscribe.geometry.camera.CameraRig`).

    Returns
    -------
    tracks, crop_px
        individual -> (T, 2) median of the keypoints (NaN where unknown);
        2.2 x the median largest keypoint distance from the centre (None if unknown).
    """
    import xarray as xr

    if not isinstance(pose, xr.Dataset):
        from ethoscribe.behavior.features import load_pose

        pose = load_pose(pose)
    pos = pose["position"].transpose("time", "individuals", "keypoints", "space").values.astype(float)
    inds = [str(i) for i in pose["individuals"].values]
    if pos.shape[-1] >= 3:
        if rig is None or view is None:
            raise ValueError("a 3D pose needs the session's camera rig and a view to be projected into the video")
        px = rig.project(pos[..., :3])[rig.index(view)]
    else:
        px = pos[..., :2]
        px = np.where((px == 0).all(axis=-1, keepdims=True), np.nan, px)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = np.nanmedian(px, axis=2)  # T, I, 2
        dist = np.linalg.norm(px - centre[:, :, None, :], axis=-1)
        reach = np.nanmax(dist, axis=2)
        r = float(np.nanmedian(reach)) if np.isfinite(reach).any() else float("nan")
    crop = max(64.0, 2.2 * r) if np.isfinite(r) else None
    return {ind: centre[:, a] for a, ind in enumerate(inds)}, crop


class VLMCaptioner:
    """Structured captions by a vision-language model, with the kinematic captioner as context and fallback.

    Parameters
    ----------
    client
        Chat client of a server with a vision model.
    session
        A session (or folder) whose body video of ``view`` is used.
    view
        Which view's body video (default: the first that has one).
    videos
        Video files to use instead (the first one); default the session's, else each snippet's own.
    tracks
        individual -> (T, 2) pixel track in that video (crops around the
        animal); see :func:`tracks_from_pose`.
    crop_px
        Side of the square crop around the track (default 160 px).
    sample_fps, max_frames
        Frame sampling (:func:`sample_frames`).
    layout
        ``"montage"`` (one image) or ``"frames"`` (one image per frame).
    tile_px
        Long side of each frame (tile) sent.
    image_format
        ``"jpeg"`` (default) or ``"png"``.
    max_questions
        Snippets the model may caption in one run (None: all).
    check_speed
        Reject answers whose speed is two or more steps from the measured one.
    kinematic
        The fallback captioner (default :class:`KinematicCaptioner`).
    """

    name = "vlm"

    def __init__(
        self,
        client: ChatClient,
        *,
        session: Any = None,
        view: str | None = None,
        videos: Sequence[str | os.PathLike[str]] | None = None,
        tracks: Mapping[str, NDArray[np.float64]] | None = None,
        crop_px: float | None = None,
        sample_fps: float = 10.0,
        max_frames: int = 16,
        layout: Literal["montage", "frames"] = "montage",
        tile_px: int = 192,
        image_format: Literal["jpeg", "png"] = "jpeg",
        max_questions: int | None = None,
        max_failures: int = 2,
        check_speed: bool = True,
        kinematic: KinematicCaptioner | None = None,
        max_tokens: int = 256,
    ) -> None:
        if layout not in ("montage", "frames"):
            raise ValueError(f"layout must be 'montage' or 'frames', not {layout!r}")
        if isinstance(session, (str, os.PathLike)):
            from ethoscribe.session import load_session

            session = load_session(session)
        self.client = client
        self.session = session
        self.view = view
        self.videos = [str(v) for v in videos] if videos else []
        self.tracks = {str(k): np.asarray(v, float) for k, v in (tracks or {}).items()}
        self.crop_px = float(crop_px) if crop_px else 160.0
        self.sample_fps = float(sample_fps)
        self.max_frames = int(max_frames)
        self.layout = layout
        self.tile_px = int(tile_px)
        self.image_format = image_format
        self.check_speed = check_speed
        self.kinematic = kinematic or KinematicCaptioner()
        self.max_tokens = int(max_tokens)
        self.prompt = load_prompt("caption_snippet")
        self.consultant = Consultant(client, "caption", max_questions, max_failures)
        self._readers: dict[str, Any] = {}
        self.video_errors: dict[str, str] = {}

    # ------------------------------------------------------------ video
    def video_view(self) -> str | None:
        """The session view whose body video is used (None: no session body video)."""
        if self.session is None:
            return None
        views = {v.name: v for v in self.session.config.views}
        if self.view is not None:
            return self.view if self.view in views and views[self.view].body else None
        for v in self.session.config.views:
            if v.body and self.session.path(v.body).is_file():
                return v.name
        return None

    def video_for(self, snippet: Snippet) -> str | None:
        """The video file the snippet's frames are taken from (None: none)."""
        if self.videos:
            return self.videos[0]
        view = self.video_view()
        if view is not None:
            return str(self.session.video_path(view, "body"))
        return str(snippet.videos[0]) if snippet.videos else None

    def _read(self, path: str, frames: NDArray[np.int64]) -> NDArray[np.uint8]:
        from ethoscribe.io.video import VideoReader

        reader = self._readers.get(path)
        if reader is None:
            reader = self._readers[path] = VideoReader(path)
        lo, hi = int(frames.min()), int(frames.max()) + 1
        block = reader.read(lo, min(hi, reader.n_frames))
        return block[np.clip(frames - lo, 0, len(block) - 1)]

    def frames_for(self, snippet: Snippet) -> tuple[list[NDArray[np.uint8]], NDArray[np.int64], bool]:
        """(tiles as RGB arrays, frame indices, whether cropped around the animal) of a snippet."""
        import cv2

        path = self.video_for(snippet)
        if path is None:
            raise ValueError("no video for the snippet (give the session's body videos or --video)")
        idx = sample_frames(snippet.start_frame, snippet.end_frame, snippet.fps, self.sample_fps, self.max_frames)
        if idx.size == 0:
            raise ValueError("the snippet has no frames")
        imgs = self._read(path, idx)
        track = self.tracks.get(snippet.individual)
        centres = None
        if track is not None and len(track):
            tr = track[np.clip(idx, 0, len(track) - 1)]
            if np.isfinite(tr).all(axis=1).any():
                fill = np.nanmedian(tr[np.isfinite(tr).all(axis=1)], axis=0)
                centres = np.where(np.isfinite(tr).all(axis=1)[:, None], tr, fill[None])
        tiles = []
        for j, im in enumerate(imgs):
            if centres is not None:
                h = self.crop_px / 2
                cx, cy = centres[j]
                im, _ = crop_box(im, (cx - h, cy - h, cx + h, cy + h), pad=0.0, min_size=int(self.crop_px))
            rgb = to_rgb_uint8(im)
            s = self.tile_px / max(rgb.shape[:2])
            if abs(s - 1) > 1e-6:
                rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s))),
                                 interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
            tiles.append(rgb)
        return tiles, idx, centres is not None

    # ------------------------------------------------------------ questions
    def _request(self, sn: Snippet, kin: Caption) -> Request:
        tiles, idx, cropped = self.frames_for(sn)
        times = [f"{(f - sn.start_frame) / sn.fps:.1f} s" for f in idx]
        images = [montage(tiles, labels=times)] if self.layout == "montage" else tiles
        numbers = ", ".join(f"{k} {v:.3g}" for k, v in kin.numbers.items())
        view = self.video_view() or Path(self.video_for(sn) or "video").stem
        msgs = self.prompt.render(
            n_images=len(images), n_frames=len(idx), duration_s=sn.duration_s, sample_fps=self.sample_fps,
            layout=self.layout, view=view, cropped=cropped, animal=sn.individual, numbers=numbers,
            kinematic_text=kin.text,
        )
        msgs[-1] = user(msgs[-1]["content"], *images, fmt=self.image_format)
        verification: dict[str, Any] = {"measured_speed": kin.speed}
        check = self.check_speed

        def convert(ans: Any) -> Caption:
            verification["model_speed"] = ans.speed
            if check and kin.speed in SPEED_WORDS:
                gap = abs(SPEED_WORDS.index(ans.speed) - SPEED_WORDS.index(kin.speed))
                verification["speed_steps_apart"] = gap
                if gap >= 2:
                    raise ValueError(f"the model says the animal is {ans.speed!r} but the measured speed is {kin.speed!r}")
            return to_caption(ans, kin.numbers, source="vlm")

        where = {"individual": sn.individual, "start_frame": int(sn.start_frame), "end_frame": int(sn.end_frame),
                 "cluster": sn.cluster}
        inp = {"frames": [int(f) for f in idx], "images": len(images), "layout": self.layout, "cropped": cropped,
               "video": self.video_for(sn), "kinematic": kin.model_dump()}
        return Request(msgs, CaptionAnswer, step="caption", prompt=self.prompt, fallback=lambda: kin, convert=convert,
                       options={"input": inp, "verification": verification, "trace_fields": where,
                                "max_tokens": self.max_tokens})

    def caption(self, snippets: Sequence[Snippet]) -> list[Caption]:
        """One caption per snippet, in order: the model's where it answered validly, else the kinematic one."""
        from ethoscribe.reasoning.trace import emit

        kin = self.kinematic.caption(snippets)
        out: list[Caption] = list(kin)
        chunk = max(1, 2 * self.client.config.max_concurrency)
        pending: list[tuple[int, Request]] = []

        def flush() -> None:
            if not pending:
                return
            decisions = self.consultant.ask_many([r for _, r in pending])
            for (i, _), d in zip(pending, decisions):
                out[i] = d.value
            pending.clear()

        for i, (sn, k) in enumerate(zip(snippets, kin)):
            where = {"individual": sn.individual, "start_frame": int(sn.start_frame)}
            if not self.consultant.may_ask(where):
                continue
            try:
                req = self._request(sn, k)
            except Exception as exc:  # no video, unreadable video: this snippet is captioned kinematically
                reason = f"no frames: {exc}"
                self.video_errors[f"{sn.individual}@{sn.start_frame}"] = str(exc)
                emit(self.client.trace, {"step": "caption", "prompt": self.prompt.ref, "ok": False, "source": "fallback",
                                         "fallback_reason": reason, "fallback_value": k.model_dump(), **where,
                                         "model": self.client.config.model})
                continue
            pending.append((i, req))
            if len(pending) >= chunk:
                flush()
        flush()
        return out

    def summary(self) -> dict[str, Any]:
        """Questions, model answers, fallbacks by kind, skips (JSON-ready)."""
        return {**self.consultant.stats(), "captioner": self.name, "model": self.client.config.model,
                "video_errors": len(self.video_errors)}

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()
