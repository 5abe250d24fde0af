"""Video reading and writing through PyAV.

:class:`VideoReader` iterates a file in chunks of frames, gives frame-accurate
random access, and returns grey (the stored luma plane, no conversion: the
fastest path and exact for the videos ethoscribe writes) or RGB frames.
:class:`VideoWriter` encodes H.264 ``yuv420p`` MP4 files that every tool of
the field opens (SLEAP, DeepLabCut, BORIS, browsers). Grey frames are written
into the luma plane unchanged and tagged full range, so a grey frame written
is the grey frame read back, up to the codec's loss.

Every failure (missing, unreadable, corrupt, not a video, truncated) is a
:class:`~ethoscribe.errors.VideoError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ethoscribe.errors import VideoError

ColorMode = Literal["grey", "rgb"]


def _open_error(path: Path, exc: BaseException) -> VideoError:
    return VideoError(f"{path}: cannot be read as a video ({type(exc).__name__}: {exc})")


class VideoReader:
    """Read frames of one video file.

    Parameters
    ----------
    path
        The video file.
    color
        ``"grey"`` gives (H, W) uint8 frames (the luma plane), ``"rgb"``
        gives (H, W, 3) uint8 frames.

    Examples
    --------
    >>> with VideoReader("session/videos/cam0_markers.mp4") as video:  # doctest: +SKIP
    ...     print(video.n_frames, video.fps, video.shape)
    ...     first = video[0]
    ...     for start, chunk in video.iter_chunks(64):
    ...         pass
    """

    def __init__(self, path: str | os.PathLike[str], color: ColorMode = "grey") -> None:
        import av

        self.path = Path(path)
        if color not in ("grey", "rgb"):
            raise ValueError(f"color must be 'grey' or 'rgb', not {color!r}")
        self.color: ColorMode = color
        if not self.path.exists():
            raise VideoError(f"{self.path}: video file not found")
        if not self.path.is_file():
            raise VideoError(f"{self.path}: not a file")
        try:
            self._container = av.open(str(self.path))
        except Exception as exc:  # av raises many subclasses of its own errors
            raise _open_error(self.path, exc) from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{self.path}: contains no video stream")
        fmt = self._container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):  # png_pipe, jpeg_pipe, tiff_pipe, ...: one still image
            self._container.close()
            raise VideoError(f"{self.path}: is an image ({fmt.removesuffix('_pipe')}), not a video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        ctx = self._stream.codec_context
        if ctx.width <= 0 or ctx.height <= 0:
            self._container.close()
            raise VideoError(f"{self.path}: video stream has no frame size (unsupported or corrupt)")
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        if not rate:
            self._container.close()
            raise VideoError(f"{self.path}: video stream has no frame rate")
        self.fps = float(rate)
        self._rate = Fraction(rate)
        self.width = int(ctx.width)
        self.height = int(ctx.height)
        self._time_base = Fraction(self._stream.time_base)
        self._start_pts = int(self._stream.start_time or 0)
        self.n_frames = int(self._stream.frames) or self._count_packets()
        if self.n_frames <= 0:
            self._container.close()
            raise VideoError(f"{self.path}: video stream holds no frames")
        self._decoder: Iterator[object] | None = None
        self._next_index = 0

    # ----------------------------------------------------------------- basics
    @property
    def shape(self) -> tuple[int, ...]:
        """(n_frames, height, width) for grey, (n_frames, height, width, 3) for RGB."""
        base = (self.n_frames, self.height, self.width)
        return base if self.color == "grey" else base + (3,)

    def __len__(self) -> int:
        return self.n_frames

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        self._container.close()

    def __repr__(self) -> str:
        return f"VideoReader({str(self.path)!r}, {self.n_frames} frames, {self.width}x{self.height}, {self.fps:g} fps)"

    def _count_packets(self) -> int:
        try:
            n = sum(1 for p in self._container.demux(self._stream) if p.size > 0)
        except Exception as exc:
            raise _open_error(self.path, exc) from None
        self._container.seek(0)
        return n

    # --------------------------------------------------------------- decoding
    def _to_array(self, frame: object) -> NDArray[np.uint8]:
        if self.color == "rgb":
            return frame.to_ndarray(format="rgb24")  # type: ignore[attr-defined]
        fmt = frame.format.name  # type: ignore[attr-defined]
        if fmt.startswith(("yuv", "yuvj", "gray", "nv")) and not fmt.endswith(("le", "be")):
            plane = frame.planes[0]  # type: ignore[attr-defined]
            arr = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            return arr[:, : plane.width].copy()
        return frame.to_ndarray(format="gray")  # type: ignore[attr-defined]

    def _index_of(self, frame: object) -> int:
        pts = frame.pts  # type: ignore[attr-defined]
        if pts is None:
            return self._next_index
        return int(round(float((pts - self._start_pts) * self._time_base * self._rate)))

    def _frames_from(self, start: int) -> Iterator[tuple[int, object]]:
        """Decode (index, frame) pairs from frame ``start`` on, seeking if needed."""
        if start != self._next_index or self._decoder is None:
            target_pts = self._start_pts + int(round(start / (self._rate * self._time_base)))
            try:
                self._container.seek(target_pts, stream=self._stream, backward=True, any_frame=False)
            except Exception as exc:
                raise VideoError(f"{self.path}: cannot seek to frame {start} ({exc})") from None
            self._decoder = iter(self._container.decode(self._stream))
            self._next_index = -1
        decoder = self._decoder
        while True:
            try:
                frame = next(decoder)
            except StopIteration:
                self._decoder = None
                return
            except Exception as exc:
                self._decoder = None
                raise VideoError(f"{self.path}: corrupt data near frame {max(self._next_index, start)} ({type(exc).__name__}: {exc})") from None
            idx = self._index_of(frame)
            self._next_index = idx + 1
            if idx < start:
                continue
            yield idx, frame

    def __getitem__(self, index: int) -> NDArray[np.uint8]:
        """Frame ``index`` (negative counts from the end), frame-accurate."""
        if not isinstance(index, (int, np.integer)):
            raise TypeError("index a VideoReader with an int; use read(start, stop) for ranges")
        i = int(index) + (self.n_frames if index < 0 else 0)
        if not 0 <= i < self.n_frames:
            raise IndexError(f"{self.path}: frame {index} out of range (video has {self.n_frames} frames)")
        return self.read(i, i + 1)[0]

    def read(self, start: int = 0, stop: int | None = None) -> NDArray[np.uint8]:
        """Frames ``start`` (inclusive) to ``stop`` (exclusive) as one array."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        if start < 0 or start > stop:
            raise IndexError(f"{self.path}: bad frame range {start}:{stop} (video has {self.n_frames} frames)")
        out = np.empty((stop - start,) + self.shape[1:], dtype=np.uint8)
        got = start
        for idx, frame in self._frames_from(start):
            if idx >= stop:
                break
            out[idx - start] = self._to_array(frame)
            got = idx + 1
            if got == stop:
                break
        if got < stop:
            raise VideoError(f"{self.path}: video ended after frame {got - 1} but {stop} frames were expected (truncated or corrupt)")
        return out

    def iter_chunks(self, chunk_size: int = 64, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, NDArray[np.uint8]]]:
        """Yield ``(first_index, frames)`` chunks of up to ``chunk_size`` frames, decoding each frame once."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        for first in range(start, stop, chunk_size):
            yield first, self.read(first, min(first + chunk_size, stop))

    def __iter__(self) -> Iterator[NDArray[np.uint8]]:
        for _, chunk in self.iter_chunks():
            yield from chunk


class VideoWriter:
    """Write grey or RGB uint8 frames to an H.264 MP4 (atomically: a temp file renamed on close).

    Output is deterministic: the same frames give the same bytes.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "clip.mp4"
    >>> with VideoWriter(path, fps=30, size=(64, 48)) as w:
    ...     w.write(np.zeros((10, 48, 64), np.uint8))
    >>> VideoReader(path).n_frames
    10
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        size: tuple[int, int],
        crf: int = 12,
        preset: str = "veryfast",
    ) -> None:
        import av

        self.path = Path(path)
        self.width, self.height = int(size[0]), int(size[1])
        if self.width % 2 or self.height % 2:
            raise ValueError(f"frame size must be even for H.264 yuv420p, got {self.width}x{self.height}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width = self.width
        self._stream.height = self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.color_range = 2  # full (JPEG) range: grey values kept as given
        self._stream.options = {"crf": str(crf), "preset": preset, "threads": "2"}
        self._chroma = np.full((self.height // 2, self.width), 128, np.uint8)
        self.n_written = 0
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self.abort()

    def write(self, frames: NDArray[np.uint8]) -> None:
        """Append one frame (H, W) / (H, W, 3) or a stack (T, H, W) / (T, H, W, 3) of uint8."""
        import av

        arr = np.asarray(frames)
        if arr.dtype != np.uint8:
            raise TypeError(f"frames must be uint8, got {arr.dtype}")
        single = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[:2] == (self.height, self.width))
        if single:
            arr = arr[None]
        if arr.shape[1:3] != (self.height, self.width):
            raise ValueError(f"frame size {arr.shape[2]}x{arr.shape[1]} differs from the video's {self.width}x{self.height}")
        for frame in arr:
            if frame.ndim == 2:
                vf = av.VideoFrame.from_ndarray(np.concatenate([frame, self._chroma]), format="yuv420p")
            else:
                # full range, as the stream is tagged: limited-range YUV read back as full shifts colours by ~10 levels
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p", dst_color_range="JPEG")
            vf.pts = self.n_written
            vf.time_base = Fraction(1, 1) / self._stream.codec_context.framerate
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
            self.n_written += 1

    def close(self) -> None:
        """Flush the encoder and move the file into place."""
        if self._closed:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._closed = True
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discard everything written (the target file is left untouched)."""
        if self._closed:
            return
        try:
            self._container.close()
        finally:
            self._closed = True
            self._tmp.unlink(missing_ok=True)
