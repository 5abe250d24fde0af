"""Labels and 3D poses as `movement` datasets (netCDF), plus DeepLabCut-style prediction tables.

Written into ``OUT/``:

- ``poses2d_<view>.nc``: one movement poses dataset per view (``position``
  time x space[x, y] x keypoints x individuals in pixels, ``confidence``,
  and ethoscribe's ``flag``), built with
  :func:`movement.io.load_poses.from_numpy` so it carries movement's
  ``ds_type="poses"``, ``fps``, ``time_unit`` and ``source_software`` attributes;
- ``poses2d.nc``: the same, stacked along movement's multi-view dimension ``view``;
- ``poses3d.nc``: the 3D poses (mm), when given;
- ``dlc/<video_stem>_ethoscribe.h5`` (with ``dlc=True``): each view as a
  DeepLabCut predictions table (x, y, likelihood), laid out by
  :func:`movement.io.save_poses.to_dlc_style_df`, for tools that read
  DeepLabCut output (single-animal layout for one animal, multi-animal
  otherwise).

Load them with ``xarray.open_dataset`` / ``xarray.load_dataset`` (movement
datasets are xarray datasets) or ``movement.io.load_poses.from_dlc_file``.

Examples
--------
>>> paths = export_movement(labels, ExportInfo.from_session(session), "out/movement", poses3d=poses3d)  # doctest: +SKIP
>>> import xarray as xr
>>> xr.load_dataset(paths["cam0"]).attrs["ds_type"]  # doctest: +SKIP
'poses'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ethoscribe.errors import InputError
from ethoscribe.io.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

    from ethoscribe.io.exports import ExportInfo
    from ethoscribe.session import Session

SOURCE = "ethoscribe"


def labels_to_movement(labels: pd.DataFrame, info: ExportInfo | Session, view: str) -> xr.Dataset:
    """One view's labels as a movement poses dataset (every frame of the recording).

    Adds a ``flag`` variable (time, keypoints, individuals) and the ``view``
    and ``space_unit`` attributes.

    Examples
    --------
    >>> ds = labels_to_movement(labels, info, "cam0")  # doctest: +SKIP
    >>> ds.position.dims  # doctest: +SKIP
    ('time', 'space', 'keypoints', 'individuals')
    """
    from movement.io import load_poses

    from ethoscribe.io.exports import as_info, dense_view, individuals_of, validate_labels

    info = as_info(info)
    if view not in info.views:
        raise InputError(f"view {view!r} is not among the views {list(info.views)}")
    df = validate_labels(labels, info)
    individuals = individuals_of(df, info)
    keypoints = list(info.skeleton.keypoints)
    n = info.frame_count(df)
    xy, conf, flag = dense_view(df, view, np.arange(n), keypoints, individuals)
    ds = load_poses.from_numpy(
        np.transpose(xy, (0, 3, 1, 2)), confidence_array=conf.astype(np.float64),
        individual_names=individuals, keypoint_names=keypoints, fps=float(info.fps), source_software=SOURCE,
    )
    ds["flag"] = (("time", "keypoints", "individuals"), flag)
    ds["flag"].attrs["description"] = "ethoscribe QC flag: the label is worth a person's look"
    ds.attrs.update({"view": view, "space_unit": "pixels"})
    return ds


def _write_nc(ds: xr.Dataset, path: Path) -> Path:
    from ethoscribe.io.exports import _clean_attrs

    try:
        with atomic_path(path) as tmp:
            _clean_attrs(ds).to_netcdf(tmp)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the netCDF file ({exc})") from None
    return path


def export_movement(
    labels: pd.DataFrame,
    info: ExportInfo | Session,
    out_dir: str | os.PathLike[str],
    *,
    poses3d: xr.Dataset | None = None,
    dlc: bool = True,
) -> dict[str, Path]:
    """Write the movement datasets (and DeepLabCut-style tables) into ``out_dir``.

    Returns
    -------
    dict
        ``{view: poses2d_<view>.nc, "poses2d": poses2d.nc, "poses3d": poses3d.nc,
        "dlc:<view>": h5 file}`` for what was written.

    Raises
    ------
    InputError, SkeletonError
        Bad labels or 3D poses, an unwritable folder.
    """
    import xarray as xr
    from movement.io import save_poses

    from ethoscribe.io.exports import as_info, check_writable, individuals_of, validate_labels

    info = as_info(info)
    out = check_writable(Path(out_dir), "movement export", directory=True)
    df = validate_labels(labels, info)
    individuals = individuals_of(df, info)
    written: dict[str, Path] = {}
    per_view = []
    for view in info.views:
        ds = labels_to_movement(df, info, view)
        per_view.append(ds)
        written[view] = _write_nc(ds, out / f"poses2d_{view}.nc")
        if dlc:
            video = info.video(view)
            stem = video.stem if video is not None else view
            split = len(individuals) == 1
            table = save_poses.to_dlc_style_df(ds.drop_vars("flag"), split_individuals=split)
            if isinstance(table, dict):
                table = next(iter(table.values()))
            target = out / "dlc" / f"{stem}_{SOURCE}.h5"
            check_writable(target, "DeepLabCut-style table")
            with atomic_path(target) as tmp:
                table.to_hdf(tmp, key="df_with_missing", mode="w")
            written[f"dlc:{view}"] = target
    combined = xr.concat(per_view, dim=xr.DataArray(list(info.views), dims="view"), combine_attrs="drop")
    combined.attrs = {k: v for k, v in per_view[0].attrs.items() if k != "view"}
    written["poses2d"] = _write_nc(combined, out / "poses2d.nc")
    if poses3d is not None:
        if "position" not in poses3d or "space" not in poses3d.dims or poses3d.sizes["space"] != 3:
            raise InputError("poses3d: expected a movement poses dataset with 'position' over space x, y, z")
        ds3 = poses3d.copy()
        ds3.attrs.setdefault("ds_type", "poses")
        ds3.attrs.setdefault("fps", float(info.fps))
        ds3.attrs.setdefault("source_software", SOURCE)
        ds3.attrs.setdefault("space_unit", "mm")
        written["poses3d"] = _write_nc(ds3, out / "poses3d.nc")
    return written
