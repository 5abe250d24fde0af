"""Labels to a SLEAP ``.slp`` file, through sleap-io.

One ``Video`` per view, one ``Track`` per individual, and per labelled
frame, view and individual one user-style ``Instance`` (or a
``PredictedInstance`` carrying the confidences, with ``predicted=True``);
unlabelled keypoints are missing points. Frames to review become SLEAP
labelling suggestions, and with a calibration the file holds a
``RecordingSession`` that ties each video to its calibrated camera (as
SLEAP's multi-view tools expect).

Video paths are stored absolute by default: sleap-io resolves a relative
video path against the working directory (and only then looks for the
same file name next to the ``.slp``), so an absolute path is what opens
reliably; ``relative_videos=True`` stores them relative to the ``.slp``
folder for projects that move as a whole.

Examples
--------
>>> export_slp(labels, ExportInfo.from_session(session), "out/labels.slp")  # doctest: +SKIP
>>> import sleap_io as sio
>>> sio.load_slp("out/labels.slp", open_videos=False)  # doctest: +SKIP
Labels(labeled_frames=..., videos=6, skeletons=1, tracks=1, suggestions=0, sessions=1)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from ethoscribe.io.exports import ExportInfo
    from ethoscribe.session import Session


def _video_entry(info: ExportInfo, view: str, n_frames: int, slp_path: Path, relative: bool) -> Any:
    import sleap_io as sio

    path = info.video(view)
    if path is None:
        filename = f"{view}.mp4"  # placeholder: SLEAP asks for the file when it opens the project
    else:
        path = Path(path).resolve()
        filename = os.path.relpath(path, slp_path.parent.resolve()) if relative else str(path)
        filename = Path(filename).as_posix()
    meta: dict[str, Any] = {"fps": float(info.fps)}
    size = info.image_size(view)
    if size is not None:
        meta["shape"] = [int(n_frames), int(size[1]), int(size[0]), 3]
    return sio.Video(filename=filename, open_backend=False, backend_metadata=meta)


def export_slp(
    labels: pd.DataFrame,
    info: ExportInfo | Session,
    path: str | os.PathLike[str],
    *,
    frames: Iterable[int] | None = None,
    every: int | None = None,
    suggestions: Iterable[int] | Literal["flagged"] | None = None,
    predicted: bool = False,
    drop_flagged: bool = False,
    calibration: bool = True,
    relative_videos: bool = False,
) -> Path:
    """Write labels as a SLEAP ``.slp`` project (atomically) and return its path.

    Parameters
    ----------
    labels
        Labels table (see :mod:`ethoscribe.io.exports`).
    info
        :class:`~ethoscribe.io.exports.ExportInfo` or a session.
    path
        The ``.slp`` file to write.
    frames
        Only these frames (e.g. the review list); default all labelled frames.
    every
        Only every ``every``-th labelled frame (after ``frames``).
    suggestions
        Frames to mark as labelling suggestions in every view, or
        ``"flagged"`` for each view's frames with a flagged label.
    predicted
        Write ``PredictedInstance`` objects with the label confidences as
        point scores instead of user ``Instance`` objects.
    drop_flagged
        Leave flagged labels out (missing points) instead of writing them.
    calibration
        Add a ``RecordingSession`` with the calibrated cameras (when ``info.rig`` is set).
    relative_videos
        Store video paths relative to the ``.slp`` folder (default absolute).

    Raises
    ------
    InputError, SkeletonError
        Bad labels (see :func:`~ethoscribe.io.exports.validate_labels`), a
        target that cannot be written, a bad ``every``.
    """
    import sleap_io as sio

    from ethoscribe.io.exports import as_info, check_writable, dense_view, individuals_of, labelled_frames, validate_labels

    info = as_info(info)
    path = Path(path)
    if path.suffix.lower() != ".slp":
        raise InputError(f"{path}: a SLEAP labels file must end in .slp")
    if every is not None and int(every) < 1:
        raise InputError(f"every must be a positive number of frames, not {every}")
    check_writable(path, "SLEAP file")
    df = validate_labels(labels, info)
    individuals = individuals_of(df, info)
    n_frames = info.frame_count(df)

    skeleton = info.skeleton.to_sleap()
    keypoints = list(info.skeleton.keypoints)
    tracks = [sio.Track(name) for name in individuals]
    videos = [_video_entry(info, v, n_frames, path, relative_videos) for v in info.views]

    wanted = labelled_frames(df)
    if frames is not None:
        wanted = np.intersect1d(wanted, np.asarray(list(frames), dtype=np.int64))
    if every is not None:
        wanted = wanted[:: int(every)]

    lfs = []
    sugg = []
    for view, video in zip(info.views, videos):
        own = np.intersect1d(wanted, labelled_frames(df, view))
        xy, conf, flag = dense_view(df, view, own, keypoints, individuals)
        if drop_flagged:
            xy[flag] = np.nan
        for fi, f in enumerate(own):
            insts = []
            for a, track in enumerate(tracks):
                pts = xy[fi, :, a]
                if not np.isfinite(pts).any():
                    continue
                if predicted:
                    c = np.where(np.isfinite(pts[:, 0]), conf[fi, :, a], 0.0).astype(np.float64)
                    score = float(c[np.isfinite(pts[:, 0])].mean())
                    insts.append(sio.PredictedInstance.from_numpy(pts, skeleton=skeleton, point_scores=c, score=score,
                                                                   track=track))
                else:
                    insts.append(sio.Instance.from_numpy(pts, skeleton=skeleton, track=track))
            if insts:
                lfs.append(sio.LabeledFrame(video=video, frame_idx=int(f), instances=insts))
        if suggestions is not None:
            if isinstance(suggestions, str):
                if suggestions != "flagged":
                    raise InputError(f"suggestions must be frames or 'flagged', not {suggestions!r}")
                sel = (df["view"] == view).to_numpy() & df["flag"].to_numpy(bool)
                sf = np.unique(df["frame"].to_numpy(np.int64)[sel])
            else:
                sf = np.unique(np.asarray(list(suggestions), dtype=np.int64))
            sugg.extend(sio.SuggestionFrame(video=video, frame_idx=int(f)) for f in sf if 0 <= f < max(n_frames, 1))

    sessions = []
    if calibration and info.rig is not None:
        rig = info.rig
        cams = {}
        for i, name in enumerate(rig.names):
            cams[name] = sio.Camera(matrix=rig.matrix[i], dist=rig.dist[i], size=tuple(int(s) for s in rig.size[i]),
                                    rvec=rig.rvec[i], tvec=rig.tvec[i], name=name)
        session = sio.RecordingSession(camera_group=sio.CameraGroup(cameras=list(cams.values())))
        for view, video in zip(info.views, videos):
            if view in cams:
                session.add_video(video, cams[view])
        sessions.append(session)

    out = sio.Labels(labeled_frames=lfs, videos=videos, skeletons=[skeleton], tracks=tracks, suggestions=sugg,
                     sessions=sessions, provenance={"software": "ethoscribe", "session": info.name})
    try:
        with atomic_path(path) as tmp:
            sio.save_slp(out, str(tmp), embed=False, verbose=False)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the SLEAP file ({exc})") from None
    return path
