"""Labels to a DeepLabCut project folder: ``config.yaml``, ``labeled-data/`` tables and PNG frames.

Layout (as ``deeplabcut.create_new_project`` + ``extract_frames`` +
labelling in napari-deeplabcut leave it)::

    OUT/
      config.yaml
      videos/                       symlinks to the session videos (best effort)
      labeled-data/<video_stem>/
        img0042.png ...             the frames, RGB, at the video's size
        CollectedData_<scorer>.h5   pandas table, key "df_with_missing"
        CollectedData_<scorer>.csv  the same table as CSV
      training-datasets/  dlc-models/

Each view is one DeepLabCut video (DLC is per camera). The tables use
DLC's exact layout: columns ``scorer/bodyparts/coords`` (one animal) or
``scorer/individuals/bodyparts/coords`` (several; the config then has
``multianimalproject: true``, ``individuals`` and
``multianimalbodyparts``), coords ``x, y`` only, and the 3-level row index
``("labeled-data", <video_stem>, "img<frame>.png")`` that DeepLabCut >= 2.2
writes and reads (``guarantee_multiindex_rows``); the frame number is
zero-padded to ``ceil(log10(n_frames))`` digits, as ``extract_frames``
names its images. The HDF5 key is ``df_with_missing`` (DeepLabCut's own;
movement's ``from_dlc_file`` requires it, and DeepLabCut and
napari-deeplabcut read the single table of the file whatever its key).

``config.yaml`` follows DeepLabCut 3's ``create_config_template`` (same
keys, order and comments; PyTorch engine defaults).

Examples
--------
>>> cfg = export_dlc_project(labels, ExportInfo.from_session(session), "out/dlc")  # doctest: +SKIP
>>> import deeplabcut; deeplabcut.check_labels(str(cfg))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path, write_text

if TYPE_CHECKING:  # pragma: no cover
    from ethoscribe.io.exports import ExportInfo
    from ethoscribe.session import Session

# ---------------------------------------------------------------- config.yaml
_SECTIONS: list[tuple[str | None, list[str]]] = [
    ("# Project definitions (do not edit)", ["Task", "scorer", "date", "multianimalproject", "identity"]),
    ("# Project path (change when moving around)", ["project_path"]),
    ("# Default DeepLabCut engine to use for shuffle creation (either pytorch or tensorflow)", ["engine"]),
    ("# Annotation data set configuration (and individual video cropping parameters)",
     ["video_sets", "individuals", "uniquebodyparts", "multianimalbodyparts", "bodyparts"]),
    ("# Fraction of video to start/stop when extracting frames for labeling/refinement",
     ["start", "stop", "numframes2pick"]),
    ("# Plotting configuration", ["skeleton", "skeleton_color", "pcutoff", "dotsize", "alphavalue", "colormap"]),
    ("# Training,Evaluation and Analysis configuration",
     ["TrainingFraction", "iteration", "default_net_type", "default_augmenter", "default_track_method",
      "snapshotindex", "detector_snapshotindex", "batch_size", "detector_batch_size"]),
    ("# Cropping Parameters (for analysis and outlier frame detection)", ["cropping"]),
    ("#if cropping is true for analysis, then set the values here:", ["x1", "x2", "y1", "y2"]),
    ("# Refinement configuration (parameters from annotation dataset configuration also relevant in this stage)",
     ["corner2move2", "move2corner"]),
    ("# Conversion tables to fine-tune SuperAnimal weights", ["SuperAnimalConversionTables"]),
]
_PLAIN = re.compile(r"^[A-Za-z0-9_/.][A-Za-z0-9_ ,./!\-]*$")
_SPECIAL = re.compile(r"^(?:y|n|yes|no|true|false|on|off|null|~|[-+]?[0-9._]+(?:e[-+]?[0-9]+)?|\.inf|\.nan)$",
                      re.IGNORECASE)


def _scalar(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    s = str(v)
    digit_ok = not s[:1].isdigit() or ", " in s  # "0, 640, 0, 480" (a crop) stays plain; 2024-01-01 would be a date
    if (_PLAIN.match(s) and digit_ok and not s.endswith(" ") and not _SPECIAL.match(s) and ": " not in s
            and " #" not in s):
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def _yaml_lines(key: str, v: Any) -> list[str]:
    head = f"{_scalar(key)}:"
    if isinstance(v, dict):
        if not v:
            return [head + " {}"]
        lines = [head]
        for k, sub in v.items():
            if isinstance(sub, dict):
                lines.append(f"  {_scalar(k)}:")
                lines.extend(f"    {_scalar(k2)}: {_scalar(v2)}".rstrip() for k2, v2 in sub.items())
            else:
                lines.append(f"  {_scalar(k)}: {_scalar(sub)}".rstrip())
        return lines
    if isinstance(v, (list, tuple)):
        if not v:
            return [head + " []"]
        lines = [head]
        for item in v:
            if isinstance(item, (list, tuple)):
                inner = [_scalar(x) for x in item]
                lines.append("- - " + inner[0])
                lines.extend("  - " + x for x in inner[1:])
            else:
                lines.append("- " + _scalar(item))
        return lines
    return [f"{head} {_scalar(v)}".rstrip()]


def dlc_config_text(cfg: dict[str, Any]) -> str:
    """``config.yaml`` text in DeepLabCut's template order, with its comments.

    Keys the template does not know are appended at the end.

    Examples
    --------
    >>> print(dlc_config_text({"Task": "arena", "bodyparts": ["nose", "tail"]}).splitlines()[1])
    Task: arena
    """
    lines: list[str] = []
    done: set[str] = set()
    for comment, keys in _SECTIONS:
        present = [k for k in keys if k in cfg]
        if not present:
            continue
        if comment is not None:
            lines.append(comment)
        for k in present:
            lines.extend(_yaml_lines(k, cfg[k]))
            done.add(k)
        lines.append("")
    for k, v in cfg.items():
        if k not in done:
            lines.extend(_yaml_lines(k, v))
    return "\n".join(lines).rstrip("\n") + "\n"


def dlc_config(
    info: ExportInfo, project_path: Path, scorer: str, video_sets: dict[str, dict[str, str]], individuals: Sequence[str],
    task: str | None = None, date: str | None = None, numframes2pick: int = 20,
) -> dict[str, Any]:
    """The ``config.yaml`` contents of a project of this session (DeepLabCut 3 defaults, PyTorch engine)."""
    sk = info.skeleton
    multi = len(individuals) > 1
    cfg: dict[str, Any] = {
        "Task": task or info.name,
        "scorer": scorer,
        "date": date or _dt.date.today().strftime("%b") + str(_dt.date.today().day),
        "multianimalproject": multi,
        "identity": False if multi else None,
        "project_path": str(project_path),
        "engine": "pytorch",
        "video_sets": video_sets,
    }
    if multi:
        cfg.update({"individuals": list(individuals), "uniquebodyparts": [],
                    "multianimalbodyparts": list(sk.keypoints), "bodyparts": "MULTI!"})
    else:
        cfg["bodyparts"] = list(sk.keypoints)
    cfg.update({
        "start": 0, "stop": 1, "numframes2pick": int(numframes2pick),
        "skeleton": [[a, b] for a, b in sk.edges], "skeleton_color": "black", "pcutoff": 0.6, "dotsize": 12,
        "alphavalue": 0.7, "colormap": "rainbow",
        "TrainingFraction": [0.95], "iteration": 0, "default_net_type": "resnet_50",
        "default_augmenter": "albumentations",
    })
    if multi:
        cfg["default_track_method"] = "ellipse"
    cfg.update({
        "snapshotindex": -1, "detector_snapshotindex": -1, "batch_size": 8, "detector_batch_size": 1,
        "cropping": False, "x1": 0, "x2": 640, "y1": 277, "y2": 624,
        "corner2move2": [50, 50], "move2corner": True, "SuperAnimalConversionTables": None,
    })
    return cfg


# ---------------------------------------------------------------- tables
def image_name(frame: int, n_frames: int) -> str:
    """DeepLabCut's image name of a frame: ``img`` + frame zero-padded to ``ceil(log10(n_frames))`` digits.

    Examples
    --------
    >>> image_name(42, 500), image_name(7, 12000)
    ('img042.png', 'img00007.png')
    """
    width = int(math.ceil(math.log10(n_frames))) if n_frames > 1 else 1
    return f"img{str(int(frame)).zfill(width)}.png"


def collected_data(
    xy: np.ndarray, frames: Sequence[int], stem: str, n_frames: int, scorer: str, keypoints: Sequence[str],
    individuals: Sequence[str],
) -> pd.DataFrame:
    """A ``CollectedData`` table from labels ``xy`` (F, K, I, 2) of ``frames`` of one video."""
    multi = len(individuals) > 1
    if multi:
        columns = pd.MultiIndex.from_product([[scorer], list(individuals), list(keypoints), ["x", "y"]],
                                             names=["scorer", "individuals", "bodyparts", "coords"])
        values = np.transpose(xy, (0, 2, 1, 3)).reshape(len(frames), -1)  # F, I, K, 2
    else:
        columns = pd.MultiIndex.from_product([[scorer], list(keypoints), ["x", "y"]],
                                             names=["scorer", "bodyparts", "coords"])
        values = xy[:, :, 0, :].reshape(len(frames), -1)
    index = pd.MultiIndex.from_tuples([("labeled-data", stem, image_name(f, n_frames)) for f in frames])
    return pd.DataFrame(values.astype(np.float64), index=index, columns=columns)


# ---------------------------------------------------------------- export
def export_dlc_project(
    labels: pd.DataFrame,
    info: ExportInfo | Session,
    out_dir: str | os.PathLike[str],
    *,
    scorer: str = "ethoscribe",
    frames: Iterable[int] | None = None,
    n: int = 50,
    include: Iterable[int] | None = None,
    n_flagged: int | None = None,
    drop_flagged: bool = False,
    images: bool = True,
    link_videos: bool = True,
    task: str | None = None,
    date: str | None = None,
) -> Path:
    """Write a DeepLabCut project of the labels into ``out_dir``; return its ``config.yaml``.

    Parameters
    ----------
    labels
        Labels table (see :mod:`ethoscribe.io.exports`).
    info
        :class:`~ethoscribe.io.exports.ExportInfo` or a session (its body
        videos are used where a view has one, else its marker videos).
    out_dir
        The project folder (created; files ethoscribe writes are replaced).
    scorer
        DeepLabCut's scorer (the labeller's name) in the config and table names.
    frames
        Exactly these frames. Default: ``n`` frames spread over the
        labelled frames, the ``n_flagged`` (default ``n``) frames with the
        most flagged labels, and ``include`` (e.g. the review list). In each
        view only frames with at least one label are written.
    drop_flagged
        Leave flagged labels out (NaN) instead of writing them for a person to check.
    images
        Extract the PNG frames (needs each view's video). Without, only the
        tables and the config are written.
    link_videos
        Symlink the videos into ``videos/`` as ``create_new_project`` does
        (silently skipped where the file system refuses).
    task, date
        ``Task`` (default the session name) and ``date`` (default today, as ``Nov26``).

    Raises
    ------
    InputError
        Bad labels, views without a video when ``images`` is set (named),
        two views whose videos share a file stem, an unwritable folder.
    """
    import cv2

    from ethoscribe.io.exports import (
        as_info, check_writable, dense_view, individuals_of, labelled_frames, select_frames, validate_labels,
    )
    from ethoscribe.io.video import VideoReader

    info = as_info(info)
    out = Path(out_dir)
    if not scorer or not re.fullmatch(r"[A-Za-z0-9_.\-]+", scorer):
        raise InputError(f"scorer {scorer!r} must be a non-empty name of letters, digits, '_', '.' or '-'")
    df = validate_labels(labels, info)
    no_video = [v for v in info.views if info.video(v) is None]
    if images and no_video:
        raise InputError(f"cannot extract DeepLabCut frames: view(s) {no_video} have no video "
                         "(give ExportInfo.videos, or images=False for tables only)")
    missing_files = [str(info.video(v)) for v in info.views if info.video(v) is not None and not info.video(v).is_file()]
    if images and missing_files:
        raise InputError(f"cannot extract DeepLabCut frames: video file(s) not found: {missing_files}")
    stems = {v: (info.video(v).stem if info.video(v) is not None else v) for v in info.views}
    if len(set(stems.values())) != len(stems):
        raise InputError(f"views share a video file stem ({stems}); DeepLabCut names labeled-data folders by stem")
    check_writable(out, "DeepLabCut project", directory=True)
    individuals = individuals_of(df, info)
    keypoints = list(info.skeleton.keypoints)

    if frames is not None:
        chosen = np.unique(np.asarray(list(frames), dtype=np.int64))
    else:
        chosen = np.asarray(select_frames(df, n=n, include=include, flagged=n_flagged), dtype=np.int64)

    for sub in ("videos", "labeled-data", "training-datasets", "dlc-models"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    video_sets: dict[str, dict[str, str]] = {}
    for view in info.views:
        video = info.video(view)
        stem = stems[view]
        size = info.image_size(view)
        n_video = info.frame_count(df)
        if video is not None and video.is_file():
            with VideoReader(video) as r:
                size, n_video = (r.width, r.height), r.n_frames
            key = str(video.resolve())
            if link_videos:
                link = out / "videos" / video.name
                try:
                    if link.is_symlink() or link.exists():
                        link.unlink()
                    link.symlink_to(video.resolve())
                except OSError:
                    pass
        else:
            key = str((out / "videos" / f"{stem}.mp4").resolve())
        w, h = size if size is not None else (0, 0)
        video_sets[key] = {"crop": f"0, {int(w)}, 0, {int(h)}"}

        own = np.intersect1d(chosen, labelled_frames(df, view))
        if n_video and len(own) and int(own.max()) >= n_video:
            raise InputError(f"{video}: has {n_video} frames but view {view!r} has labels at frame {int(own.max())}")
        xy, _, flag = dense_view(df, view, own, keypoints, individuals)
        if drop_flagged:
            xy[flag] = np.nan
        keep = np.isfinite(xy).any(axis=(1, 2, 3))
        own, xy = own[keep], xy[keep]
        folder = out / "labeled-data" / stem
        folder.mkdir(parents=True, exist_ok=True)
        table = collected_data(xy, own, stem, n_video, scorer, keypoints, individuals)
        base = folder / f"CollectedData_{scorer}"
        try:
            with atomic_path(base.with_suffix(".h5")) as tmp:
                table.to_hdf(tmp, key="df_with_missing", mode="w")
            with atomic_path(base.with_suffix(".csv")) as tmp:
                table.to_csv(tmp)
        except OSError as exc:
            raise InputError(f"{base}: cannot write the DeepLabCut table ({exc})") from None
        if images and len(own):
            with VideoReader(video, color="rgb") as r:
                for f in own:
                    rgb = r[int(f)]
                    with atomic_path(folder / image_name(int(f), n_video)) as tmp:
                        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                            raise InputError(f"{folder}: cannot write PNG frames")

    cfg = dlc_config(info, out.resolve(), scorer, video_sets, individuals, task=task, date=date)
    return write_text(out / "config.yaml", dlc_config_text(cfg))
