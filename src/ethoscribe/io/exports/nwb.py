"""Labels and 3D poses to NWB with ndx-pose, through pynwb.

One file per animal (NWB holds one subject per file; ndx-pose and
movement's ``to_nwb_file`` do the same). In each file:

- ``general/devices``: one ndx-pose ``CalibratedCamera`` per view (intrinsics,
  rotation, translation, distortion of the calibration; a plain ``Device``
  without one);
- ``acquisition``: one external-file ``ImageSeries`` ``video_<view>`` per
  view with a video (path relative to the NWB file);
- ``processing/behavior``:

  - ``Skeletons`` with the skeleton (nodes, edges, linked to the subject);
  - per view a ``PoseEstimation`` of 2D ``PoseEstimationSeries`` per keypoint
    (pixels; NaN where unlabelled; confidence in [0, 1], 0 where
    unlabelled), linked to its camera, video and the skeleton;
  - the 3D poses as ``PoseEstimationSeries`` per keypoint (data in mm,
    stored as unit ``meters`` with ``conversion=0.001``);
  - ``label_flags``: a table of the flagged 2D labels (frame, view,
    keypoint, reason).

Two layouts of the pose containers:

``layout="flat"`` (default)
    ``PoseEstimation_<view>`` and ``PoseEstimation3D`` side by side in the
    behavior module: what today's readers (movement's ``from_nwb_file``
    with ``pose_estimation_key``, sleap-io, keypoint-MoSeq) look for.
``layout="multicamera"``
    one ndx-pose >= 0.4 ``MultiCameraPoseEstimation`` holding the 3D series
    and one ``PoseEstimation`` per view (named after the view).

All series are regularly sampled (``rate`` = fps, ``starting_time`` 0),
one sample per frame of the recording.

Examples
--------
>>> paths = export_nwb(labels, poses3d, ExportInfo.from_session(session), "out/labels.nwb")  # doctest: +SKIP
>>> from movement.io import load_poses
>>> load_poses.from_nwb_file(paths[0], pose_estimation_key="PoseEstimation3D")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError, SkeletonError
from ethoscribe.io.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

    from ethoscribe.io.exports import ExportInfo
    from ethoscribe.session import Session

REFERENCE_2D = ("(0, 0) is the centre of the top-left pixel of the video frame; x to the right, y down "
                "(OpenCV convention), distorted image coordinates")
REFERENCE_3D = "world frame of the session calibration (calibration.toml); millimetres"
CONFIDENCE_2D = ("ethoscribe geometric confidence in [0, 1] (from the reprojection error of the label and the "
                 "number of agreeing views); 0 where there is no label")
CONFIDENCE_3D = "ethoscribe confidence of the triangulated point in [0, 1]"


def _name(s: str) -> str:
    """A valid NWB object name ('/' is not allowed)."""
    return str(s).replace("/", "_")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ethoscribe")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def _check_poses3d(poses3d: xr.Dataset, info: ExportInfo, individuals: list[str]) -> None:
    if "position" not in poses3d:
        raise InputError("poses3d: the 3D dataset has no 'position' variable")
    dims = set(poses3d["position"].dims)
    if not {"time", "space", "keypoints", "individuals"} <= dims:
        raise InputError(f"poses3d: 'position' must have dims time, space, keypoints, individuals (has {sorted(dims)})")
    if poses3d.sizes["space"] != 3:
        raise InputError(f"poses3d: 'space' must be x, y, z (has {poses3d.sizes['space']} entries)")
    kps = [str(k) for k in poses3d["keypoints"].values]
    unknown = sorted(set(kps) - set(info.skeleton.keypoints))
    if unknown:
        raise SkeletonError(f"poses3d: keypoint(s) {unknown} are not in skeleton {info.skeleton.name!r}")
    inds = [str(i) for i in poses3d["individuals"].values]
    missing = [i for i in individuals if i not in inds]
    if missing:
        raise InputError(f"poses3d: individual(s) {missing} are missing (it has {inds})")


def _dense_3d(poses3d: xr.Dataset, individual: str, keypoints: list[str], n_frames: int,
              fps: float) -> tuple[np.ndarray, np.ndarray]:
    from ethoscribe.io.exports import frames_of_poses

    frames = frames_of_poses(poses3d, fps)
    ok = (frames >= 0) & (frames < n_frames)
    pos = np.full((n_frames, len(keypoints), 3), np.nan)
    conf = np.zeros((n_frames, len(keypoints)), np.float32)
    sel = poses3d.sel(individuals=individual)
    p = sel["position"].transpose("time", "keypoints", "space")
    kp_have = [str(k) for k in sel["keypoints"].values]
    c = sel["confidence"].transpose("time", "keypoints").values if "confidence" in sel else None
    for k, name in enumerate(keypoints):
        if name not in kp_have:
            continue
        j = kp_have.index(name)
        pos[frames[ok], k] = p.values[ok, j]
        if c is not None:
            conf[frames[ok], k] = np.nan_to_num(c[ok, j], nan=0.0)
        else:
            conf[frames[ok], k] = np.isfinite(p.values[ok, j]).all(axis=-1)
    return pos, conf


def export_nwb(
    labels: pd.DataFrame,
    poses3d: xr.Dataset | None,
    info: ExportInfo | Session,
    path: str | os.PathLike[str],
    *,
    session_description: str = "Pose labels and 3D kinematics from ethoscribe",
    session_start_time: _dt.datetime | None = None,
    identifier: str | None = None,
    subject: dict[str, Any] | None = None,
    layout: Literal["flat", "multicamera"] = "flat",
    flags: bool = True,
    nwbfile_kwargs: dict[str, Any] | None = None,
) -> list[Path]:
    """Write NWB file(s) with the labels (2D per view) and 3D poses; return the paths.

    Parameters
    ----------
    labels
        Labels table (see :mod:`ethoscribe.io.exports`).
    poses3d
        movement-style 3D poses (``position`` time x space[x,y,z] x
        keypoints x individuals, mm; optional ``confidence``), or None.
    info
        :class:`~ethoscribe.io.exports.ExportInfo` or a session.
    path
        The ``.nwb`` file. With several animals one file per animal is
        written, ``<stem>_<individual>.nwb``.
    session_description, session_start_time, identifier
        NWB file metadata; the start time defaults to now (UTC), the
        identifier to the animal's name (as movement's ``to_nwb_file`` does,
        so movement names the individual after it when reading).
    subject
        Keyword arguments of :class:`pynwb.file.Subject` shared by all
        animals (``species``, ``sex``, ``age``, ...); ``subject_id`` is the
        animal's name.
    layout
        ``"flat"`` or ``"multicamera"`` (see the module docstring).
    flags
        Add the ``label_flags`` table of flagged labels.
    nwbfile_kwargs
        More :class:`pynwb.NWBFile` arguments (``experimenter``, ``lab``, ...).

    Raises
    ------
    InputError, SkeletonError
        Bad labels or 3D poses (naming what), unwritable target, bad layout.
    """
    import ndx_pose
    import pynwb
    from pynwb.file import Subject
    from pynwb.image import ImageSeries

    from ethoscribe.io.exports import as_info, check_writable, dense_view, individuals_of, validate_labels

    info = as_info(info)
    path = Path(path)
    if path.suffix.lower() != ".nwb":
        raise InputError(f"{path}: an NWB file must end in .nwb")
    if layout not in ("flat", "multicamera"):
        raise InputError(f"layout must be 'flat' or 'multicamera', not {layout!r}")
    check_writable(path, "NWB file")
    df = validate_labels(labels, info)
    individuals = individuals_of(df, info)
    keypoints = list(info.skeleton.keypoints)
    n_frames = info.frame_count(df)
    if poses3d is not None:
        _check_poses3d(poses3d, info, individuals)
        n_frames = max(n_frames, int(np.max(_frames_or_zero(poses3d, info.fps))) + 1)
    start = session_start_time or _dt.datetime.now(_dt.timezone.utc)
    if start.tzinfo is None:
        raise InputError("session_start_time must carry a time zone (e.g. datetime(..., tzinfo=timezone.utc))")
    edges = np.asarray(info.skeleton.edge_indices(), dtype=np.uint16).reshape(-1, 2)
    version = _version()
    dense = {v: dense_view(df, v, np.arange(n_frames), keypoints, individuals) for v in info.views}

    paths = []
    for a, ind in enumerate(individuals):
        target = path if len(individuals) == 1 else path.with_name(f"{path.stem}_{ind}{path.suffix}")
        ident = identifier if (identifier and len(individuals) == 1) else (f"{identifier}_{ind}" if identifier else ind)
        subj = Subject(**{"description": f"{ind} (ethoscribe individual)", **(subject or {}), "subject_id": ind})
        nwb = pynwb.NWBFile(session_description=session_description, identifier=ident, session_start_time=start,
                            subject=subj, **(nwbfile_kwargs or {}))
        devices = {}
        for view in info.views:
            rig = info.rig
            if rig is not None and view in rig.names:
                i = rig.names.index(view)
                dev = ndx_pose.CalibratedCamera(
                    name=_name(view), intrinsic_matrix=rig.matrix[i], rotation_matrix=rig.rotation[i],
                    translation_vector=rig.tvec[i], distortion_coefficients=rig.dist[i],
                    description=f"camera {view} (OpenCV model: x_cam = R X + t; distortion k1 k2 p1 p2 k3)")
            else:
                dev = pynwb.device.Device(name=_name(view), description=f"camera {view} (no calibration given)")
            nwb.add_device(dev)
            devices[view] = dev
        videos = {}
        for view in info.views:
            video = info.video(view)
            if video is None:
                continue
            rel = os.path.relpath(Path(video).resolve(), target.parent.resolve())
            size = info.image_size(view)
            kw: dict[str, Any] = {} if size is None else {"dimension": [int(size[0]), int(size[1])]}
            series = ImageSeries(name=f"video_{_name(view)}", external_file=[Path(rel).as_posix()], format="external",
                                 starting_frame=[0], rate=float(info.fps), num_samples=int(n_frames),
                                 description=f"video of view {view}", device=devices[view], **kw)
            nwb.add_acquisition(series)
            videos[view] = series
        module = nwb.create_processing_module(name="behavior", description="pose labels and 3D poses (ethoscribe)")
        skeleton = ndx_pose.Skeleton(name=_name(info.skeleton.name), nodes=keypoints, edges=edges, subject=subj)
        module.add(ndx_pose.Skeletons(skeletons=[skeleton]))

        per_view = []
        for view in info.views:
            xy, conf, _ = dense[view]
            series = [
                ndx_pose.PoseEstimationSeries(
                    name=_name(kp), description=f"2D position of {kp} of {ind} in view {view}",
                    data=xy[:, k, a, :], confidence=conf[:, k, a].astype(np.float64),
                    confidence_definition=CONFIDENCE_2D, reference_frame=REFERENCE_2D, unit="pixels",
                    rate=float(info.fps), starting_time=0.0)
                for k, kp in enumerate(keypoints)
            ]
            name = _name(view) if layout == "multicamera" else f"PoseEstimation_{_name(view)}"
            kw = {"source_video": videos[view]} if view in videos else {}
            per_view.append(ndx_pose.PoseEstimation(
                name=name, pose_estimation_series=series,
                description=f"2D labels of {ind} in view {view}, checked across views by ethoscribe",
                scorer="ethoscribe", source_software="ethoscribe", source_software_version=version,
                skeleton=skeleton, device=devices[view], **kw))

        series3d = []
        if poses3d is not None:
            pos, conf3 = _dense_3d(poses3d, ind, keypoints, n_frames, info.fps)
            series3d = [
                ndx_pose.PoseEstimationSeries(
                    name=_name(kp), description=f"3D position of {kp} of {ind} (mm)", data=pos[:, k],
                    confidence=conf3[:, k].astype(np.float64), confidence_definition=CONFIDENCE_3D,
                    reference_frame=REFERENCE_3D, unit="meters", conversion=0.001, rate=float(info.fps),
                    starting_time=0.0)
                for k, kp in enumerate(keypoints)
            ]
        if layout == "flat":
            for pe in per_view:
                module.add(pe)
            if series3d:
                module.add(ndx_pose.PoseEstimation(
                    name="PoseEstimation3D", pose_estimation_series=series3d,
                    description=f"3D poses of {ind} triangulated from {len(info.views)} views by ethoscribe",
                    scorer="ethoscribe", source_software="ethoscribe", source_software_version=version,
                    skeleton=skeleton))
        else:
            module.add(ndx_pose.MultiCameraPoseEstimation(
                name="MultiCameraPoseEstimation", pose_estimation_series=series3d or None, pose_estimations=per_view,
                description=f"2D labels per view and 3D poses of {ind} (ethoscribe)", scorer="ethoscribe",
                source_software="ethoscribe", source_software_version=version, skeleton=skeleton))

        if flags:
            _add_flags(module, df[(df["individual"] == ind).to_numpy() & df["flag"].to_numpy(bool)])

        try:
            with atomic_path(target) as tmp:
                with pynwb.NWBHDF5IO(str(tmp), mode="w") as io:
                    io.write(nwb)
        except OSError as exc:
            raise InputError(f"{target}: cannot write the NWB file ({exc})") from None
        paths.append(target)
    return paths


def _frames_or_zero(poses3d: xr.Dataset, fps: float) -> np.ndarray:
    from ethoscribe.io.exports import frames_of_poses

    f = frames_of_poses(poses3d, fps)
    return f if len(f) else np.zeros(1, np.int64)


def _add_flags(module: Any, flagged: pd.DataFrame) -> None:
    from hdmf.common import DynamicTable, VectorData

    flagged = flagged.sort_values(["frame", "view", "keypoint"], kind="stable")
    cols = [
        VectorData(name="frame", description="frame index (0-based)", data=flagged["frame"].to_numpy(np.int64)),
        VectorData(name="view", description="camera view", data=flagged["view"].astype(str).tolist()),
        VectorData(name="keypoint", description="keypoint", data=flagged["keypoint"].astype(str).tolist()),
        VectorData(name="reason", description="';'-joined ethoscribe reason codes",
                   data=flagged["reason"].astype(str).tolist()),
    ]
    module.add(DynamicTable(name="label_flags", description="2D labels that ethoscribe flagged for a person to check",
                            columns=cols))
