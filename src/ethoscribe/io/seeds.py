"""Seed frames: a few frames labelled by a person in every view, read from a SLEAP ``.slp`` file.

The pose pipeline starts from seeds: at least 3 frames in which every view
of the session holds a *user* (hand-labelled) instance of every animal, with
one SLEAP track per individual. :func:`load_seeds` reads and checks them at
the boundary and returns a :class:`Seeds` array ``(S, C, I, K, 2)`` of
distorted pixel coordinates (NaN where a keypoint was not labelled).

How the file's parts are matched to the session:

- **views**: a video belongs to the view whose calibrated camera the file's
  ``RecordingSession`` links it to; otherwise the view whose name equals the
  video's file name without extension (and without a ``_markers``/``_body``
  suffix), or appears in it as a ``_``/``-``/``.``-separated word
  (``minimal_back.mp4`` -> ``back``);
- **individuals**: tracks named like the session's individuals map by name;
  otherwise, with as many tracks as individuals, in the file's track order;
  a single individual also accepts untracked instances;
- **keypoints**: by node name, in any order; another skeleton (a name missing
  or extra) is an error.

Examples
--------
>>> from ethoscribe.skeleton import mouse12
>>> seeds = load_seeds("session/seeds.slp", mouse12(), ["cam0", "cam1"], ["mouse0"])  # doctest: +SKIP
>>> seeds.points.shape  # doctest: +SKIP
(3, 2, 1, 12, 2)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ethoscribe.errors import InputError, SkeletonError
from ethoscribe.skeleton import Skeleton

#: The fewest seed frames the pose pipeline accepts.
MIN_SEED_FRAMES = 3


@dataclass(frozen=True, eq=False)
class Seeds:
    """Seed labels: ``points`` (S, C, I, K, 2) distorted pixels at ``frames`` (S,), NaN = not labelled.

    ``views``, ``individuals`` and ``keypoints`` name the axes C, I and K;
    ``source`` says where they came from; ``pseudo`` is True for seeds chosen
    automatically from predictions (:func:`ethoscribe.pose.pseudo_seeds`)
    rather than labelled by a person.
    """

    frames: NDArray[np.int64]
    points: NDArray[np.float64]
    views: tuple[str, ...]
    individuals: tuple[str, ...]
    keypoints: tuple[str, ...]
    source: str = ""
    pseudo: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames, dtype=np.int64).reshape(-1)
        pts = np.asarray(self.points, dtype=np.float64)
        shape = (len(frames), len(self.views), len(self.individuals), len(self.keypoints), 2)
        if pts.shape != shape:
            raise InputError(f"{self.source or 'seeds'}: seed points have shape {pts.shape}, expected {shape}")
        order = np.argsort(frames, kind="stable")
        object.__setattr__(self, "frames", frames[order])
        object.__setattr__(self, "points", pts[order])

    @property
    def n_frames(self) -> int:
        """Number of seed frames."""
        return len(self.frames)

    def subset_views(self, views: Sequence[str]) -> Seeds:
        """The same seeds restricted to (and ordered as) ``views``."""
        missing = [v for v in views if v not in self.views]
        if missing:
            raise InputError(f"{self.source or 'seeds'}: no seed labels for view(s) {missing} (seeds have {list(self.views)})")
        idx = [self.views.index(v) for v in views]
        return Seeds(self.frames, self.points[:, idx], tuple(views), self.individuals, self.keypoints, self.source,
                     self.pseudo, dict(self.notes))


# ------------------------------------------------------------------ matching
def _stem_words(filename: str) -> tuple[str, list[str]]:
    stem = Path(str(filename)).name.rsplit(".", 1)[0]
    for suffix in ("_markers", "_body"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem, [w for w in re.split(r"[_\-.\s]+", stem) if w]


def match_videos_to_views(labels: Any, views: Sequence[str], source: str) -> dict[int, str]:
    """Map each video index of a ``sleap_io.Labels`` to a view name (see the module docstring).

    Raises
    ------
    InputError
        Naming ``source``, if a view has no video or two videos claim one view.
    """
    out: dict[int, str] = {}
    view_set = set(views)
    for session in getattr(labels, "sessions", None) or []:
        for i, video in enumerate(labels.videos):
            try:
                cam = session.get_camera(video)
            except Exception:  # noqa: BLE001 - sleap-io versions differ
                cam = None
            name = getattr(cam, "name", None)
            if name in view_set and i not in out:
                out[i] = str(name)
    for i, video in enumerate(labels.videos):
        if i in out:
            continue
        stem, words = _stem_words(getattr(video, "filename", ""))
        if stem in view_set:
            out[i] = stem
            continue
        hits = [v for v in views if v in words]
        if len(hits) == 1:
            out[i] = hits[0]
    claimed: dict[str, list[int]] = {}
    for i, v in out.items():
        claimed.setdefault(v, []).append(i)
    twice = {v: [str(labels.videos[i].filename) for i in idx] for v, idx in claimed.items() if len(idx) > 1}
    if twice:
        raise InputError(f"{source}: several videos match one view: {twice}")
    missing = [v for v in views if v not in claimed]
    if missing:
        files = [str(getattr(v, "filename", "?")) for v in labels.videos]
        raise InputError(
            f"{source}: no video for view(s) {missing} (the file's videos are {files}; a video matches a view "
            f"through the file's camera session or by the view's name in its file name)"
        )
    return out


def _track_map(labels: Any, individuals: Sequence[str], source: str) -> dict[Any, int]:
    tracks = list(labels.tracks)
    names = [t.name for t in tracks]
    if tracks and all(n in individuals for n in names):
        return {t: individuals.index(t.name) for t in tracks}
    if len(tracks) == len(individuals) and tracks:
        return {t: i for i, t in enumerate(tracks)}
    if len(individuals) == 1 and len(tracks) <= 1:
        return {t: 0 for t in tracks}
    raise InputError(
        f"{source}: cannot tell which track is which individual: tracks {names}, individuals {list(individuals)} "
        "(name the tracks like the session's individuals, or give one track per individual)"
    )


# ------------------------------------------------------------------ loading
def load_seeds(
    path: str | os.PathLike[str],
    skeleton: Skeleton,
    views: Sequence[str],
    individuals: Sequence[str],
    min_frames: int = MIN_SEED_FRAMES,
) -> Seeds:
    """Read seed frames (user instances) from a SLEAP ``.slp`` file.

    Parameters
    ----------
    path
        The ``.slp`` file.
    skeleton
        The session's skeleton; the file's nodes must carry the same names.
    views
        The session's view names (every one needs a video in the file).
    individuals
        The session's individuals (see the module docstring for tracks).
    min_frames
        The fewest frames that must be labelled in *all* views.

    Returns
    -------
    Seeds
        The frames labelled in all views, ``points`` (S, C, I, K, 2).

    Raises
    ------
    InputError
        Naming the file: missing or unreadable, no user instances (only
        predictions), a view without a video, tracks that do not map to
        individuals, or fewer than ``min_frames`` frames labelled in every view.
    SkeletonError
        If the file's skeleton has other keypoints than ``skeleton``.
    """
    import sleap_io as sio

    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise InputError(f"{path}: seed file not found")
    views = [str(v) for v in views]
    individuals = [str(i) for i in individuals]
    if not views:
        raise InputError(f"{path}: no views to read seeds for")
    if not individuals:
        raise InputError(f"{path}: no individuals to read seeds for")
    try:
        labels = sio.load_slp(str(path), open_videos=False)
    except Exception as exc:  # noqa: BLE001 - h5py, json and sleap-io errors vary
        raise InputError(f"{path}: not a readable SLEAP .slp file ({type(exc).__name__}: {exc})") from None

    user = [(lf, inst) for lf in labels.labeled_frames for inst in lf.instances if type(inst) is sio.Instance]
    if not user:
        n_pred = sum(len(lf.instances) for lf in labels.labeled_frames)
        raise InputError(
            f"{path}: holds no user-labelled instances ({n_pred} predicted instances): seeds must be labelled by a "
            "person; to start from predictions instead, use pseudo-seeds (ethoscribe.pose.pseudo_seeds)"
        )
    skel_names = {tuple(n.name for n in inst.skeleton.nodes) for _, inst in user}
    for names in skel_names:
        if set(names) != set(skeleton.keypoints):
            extra = sorted(set(names) - set(skeleton.keypoints))
            missing = sorted(set(skeleton.keypoints) - set(names))
            detail = "; ".join(x for x in (f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "") if x)
            raise SkeletonError(f"{path}: the seeds' skeleton does not match skeleton {skeleton.name!r} ({detail})")
    video_view = match_videos_to_views(labels, views, source)
    tracks = _track_map(labels, individuals, source)

    by_frame: dict[int, dict[str, list[Any]]] = {}
    for lf, inst in user:
        vid = labels.videos.index(lf.video)
        view = video_view.get(vid)
        if view is None:
            continue
        by_frame.setdefault(int(lf.frame_idx), {}).setdefault(view, []).append(inst)
    complete = sorted(f for f, vs in by_frame.items() if all(v in vs for v in views))
    if len(complete) < min_frames:
        partial = {f: sorted(vs) for f, vs in sorted(by_frame.items()) if f not in complete}
        raise InputError(
            f"{path}: only {len(complete)} frame(s) {complete} are labelled in all {len(views)} views {views}; "
            f"at least {min_frames} are needed" + (f" (partly labelled frames: {partial})" if partial else "")
        )
    K, n_ind = skeleton.n_keypoints, len(individuals)
    pts = np.full((len(complete), len(views), n_ind, K, 2), np.nan)
    for s, f in enumerate(complete):
        for c, view in enumerate(views):
            insts = by_frame[f][view]
            for j, inst in enumerate(insts):
                if inst.track is not None and inst.track in tracks:
                    a = tracks[inst.track]
                elif n_ind == 1:
                    a = 0
                else:
                    raise InputError(f"{path}: frame {f}, view {view!r}: an instance has no track (needed with {n_ind} individuals)")
                if np.isfinite(pts[s, c, a]).any():
                    raise InputError(f"{path}: frame {f}, view {view!r}: two instances of individual {individuals[a]!r}")
                node_names = [n.name for n in inst.skeleton.nodes]
                xy = np.asarray(inst.numpy(), dtype=np.float64)[:, :2]
                order = [node_names.index(k) for k in skeleton.keypoints]
                pts[s, c, a] = xy[order]
    if not np.isfinite(pts).any():
        raise InputError(f"{path}: the seed instances hold no labelled points")
    return Seeds(np.asarray(complete, np.int64), pts, tuple(views), tuple(individuals), tuple(skeleton.keypoints),
                 source=source)
