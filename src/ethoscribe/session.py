"""A session: synchronised views of one recording, with calibration, skeleton and seeds.

A session is a folder with a ``session.toml`` that references its inputs by
paths relative to the folder::

    name = "arena-2026-11-26"
    fps = 30.0
    n_frames = 500
    skeleton = "skeleton.json"
    calibration = "calibration.toml"
    seeds = "seeds.slp"
    individuals = ["mouse0"]

    [[views]]
    name = "cam0"              # must match a camera name in calibration.toml
    markers = "videos/cam0_markers.mp4"
    body = "videos/cam0_body.mp4"

:func:`load_session` checks it at the boundary: every referenced file exists,
every view is in the calibration, video frame sizes match the calibrated
image sizes, and all videos have the same number of frames.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import toml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ethoscribe.errors import CalibrationError, InputError
from ethoscribe.io.atomic import write_text

SESSION_FILE = "session.toml"


class ViewConfig(BaseModel):
    """One camera view: its calibration name and its videos (paths relative to the session)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    markers: str | None = None
    body: str | None = None


class SessionConfig(BaseModel):
    """The contents of ``session.toml``.

    Examples
    --------
    >>> cfg = SessionConfig(name="s", fps=30, n_frames=10, views=[ViewConfig(name="cam0")])
    >>> cfg.view_names
    ['cam0']
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    fps: float = Field(gt=0)
    n_frames: int = Field(ge=1)
    views: list[ViewConfig]
    skeleton: str = "skeleton.json"
    calibration: str = "calibration.toml"
    seeds: str | None = "seeds.slp"
    individuals: list[str] = Field(default_factory=lambda: ["mouse0"])
    arena_mm: float | None = None

    @field_validator("views")
    @classmethod
    def _unique_views(cls, views: list[ViewConfig]) -> list[ViewConfig]:
        if not views:
            raise ValueError("a session needs at least one view")
        names = [v.name for v in views]
        if len(set(names)) != len(names):
            raise ValueError(f"view names are not unique: {names}")
        return views

    @property
    def view_names(self) -> list[str]:
        """Names of the views, in order."""
        return [v.name for v in self.views]


class Session:
    """A loaded, checked session folder.

    Examples
    --------
    >>> s = load_session("demo/session")  # doctest: +SKIP
    >>> s.rig.names == s.config.view_names  # doctest: +SKIP
    True
    """

    def __init__(self, root: Path, config: SessionConfig) -> None:
        from ethoscribe.geometry.camera import CameraRig
        from ethoscribe.skeleton import Skeleton

        self.root = root
        self.config = config
        self.skeleton = Skeleton.load(self.path(config.skeleton))
        rig = CameraRig.load(self.path(config.calibration))
        try:
            self.rig = rig.subset(config.view_names)
        except CalibrationError as exc:
            raise CalibrationError(f"{self.path(config.calibration)}: {exc}") from None

    def path(self, relative: str) -> Path:
        """Absolute path of a file the session references."""
        return (self.root / relative).resolve()

    @property
    def calibration_path(self) -> Path:
        """Path of the session's ``calibration.toml``."""
        return self.path(self.config.calibration)

    @property
    def seeds_path(self) -> Path | None:
        """Path of the seed labels, if the session has them."""
        return None if self.config.seeds is None else self.path(self.config.seeds)

    def video_path(self, view: str, kind: str = "markers") -> Path:
        """Path of a view's ``markers`` or ``body`` video."""
        cfg = {v.name: v for v in self.config.views}.get(view)
        if cfg is None:
            raise InputError(f"{self.root}: session has no view {view!r} (views: {self.config.view_names})")
        rel = getattr(cfg, kind, None)
        if rel is None:
            raise InputError(f"{self.root}: view {view!r} has no {kind} video")
        return self.path(rel)

    def check_videos(self, kind: str = "markers") -> None:
        """Check that each view's video opens, has the calibrated size and the session's frame count."""
        from ethoscribe.io.video import VideoReader

        for i, view in enumerate(self.config.view_names):
            with VideoReader(self.video_path(view, kind)) as video:
                w, h = (int(x) for x in self.rig.size[i])
                if (video.width, video.height) != (w, h):
                    raise CalibrationError(
                        f"{video.path}: frames are {video.width}x{video.height} but camera {view!r} "
                        f"is calibrated for {w}x{h} (wrong calibration for this video?)"
                    )
                if video.n_frames != self.config.n_frames:
                    raise InputError(
                        f"{video.path}: has {video.n_frames} frames, the session expects {self.config.n_frames}"
                    )

    def __repr__(self) -> str:
        return f"Session({str(self.root)!r}, views={self.config.view_names}, frames={self.config.n_frames})"


def load_session(path: str | os.PathLike[str]) -> Session:
    """Load and check a session from its folder (or its ``session.toml``)."""
    path = Path(path)
    file = path if path.suffix == ".toml" else path / SESSION_FILE
    if not file.is_file():
        raise InputError(f"{file}: session file not found (a session folder holds a {SESSION_FILE})")
    try:
        config = SessionConfig.model_validate(tomllib.loads(file.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{file}: not valid TOML ({exc})") from None
    except ValidationError as exc:
        raise InputError(f"{file}: invalid session description:\n{exc}") from None
    root = file.parent.resolve()
    for rel, what in [(config.skeleton, "skeleton"), (config.calibration, "calibration")]:
        if not (root / rel).is_file():
            raise InputError(f"{file}: the {what} file {rel!r} does not exist in {root}")
    return Session(root, config)


def save_session_config(root: str | os.PathLike[str], config: SessionConfig) -> Path:
    """Write ``session.toml`` into ``root`` atomically."""
    return write_text(Path(root) / SESSION_FILE, toml.dumps(config.model_dump(exclude_none=True)))
