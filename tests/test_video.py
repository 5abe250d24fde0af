"""Video reading and writing (ethoscribe.io.video)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ethoscribe.errors import InputError, VideoError
from ethoscribe.io.video import VideoReader, VideoWriter

H, W, N = 48, 64, 260  # x264's default GOP is 250 frames: frames 250+ sit after a second keyframe


def coded_frames(n: int = N, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Grey frames whose index can be read back through the codec: a bright bar at a per-frame height, plus texture."""
    rng = np.random.default_rng(seed)
    frames = np.clip(rng.normal(40, 6, (n, h, w)), 0, 255).astype(np.uint8)
    for i in range(n):
        frames[i, :, : w // 4] = 20 + (i * 7) % 200
    return frames


@pytest.fixture(scope="module")
def grey_video(tmp_path_factory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("video") / "grey.mp4"
    frames = coded_frames()
    with VideoWriter(path, fps=25, size=(W, H)) as writer:
        writer.write(frames[:100])
        for frame in frames[100:]:  # single frames too
            writer.write(frame)
    return path, frames


@pytest.fixture(scope="module")
def decoded(grey_video) -> np.ndarray:
    path, _ = grey_video
    with VideoReader(path) as video:
        return np.stack(list(video))


def test_metadata(grey_video) -> None:
    path, _ = grey_video
    with VideoReader(path) as video:
        assert video.n_frames == len(video) == N
        assert video.fps == pytest.approx(25)
        assert (video.width, video.height) == (W, H)
        assert video.shape == (N, H, W)
        assert str(path) in repr(video)
    with VideoReader(path, color="rgb") as video:
        assert video.shape == (N, H, W, 3)
    with VideoWriter(path.parent / "ntsc.mp4", fps=30000 / 1001, size=(W, H)) as writer:
        writer.write(coded_frames(5))
    with VideoReader(path.parent / "ntsc.mp4") as video:
        assert Fraction(video.fps).limit_denominator(1001) == Fraction(30000, 1001)
        assert video.n_frames == 5


def test_sequential_decode_is_close_to_written(grey_video, decoded) -> None:
    _, frames = grey_video
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    # crf 12: the luma plane comes back within a few grey levels; the bar encodes the index
    assert np.abs(decoded.astype(int) - frames).mean() < 2.0
    bars = decoded[:, :, : W // 4].mean(axis=(1, 2))
    assert np.allclose(bars, 20 + (np.arange(N) * 7) % 200, atol=1.5)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunks_equal_sequential_decode(grey_video, decoded, chunk_size: int) -> None:
    path, _ = grey_video
    with VideoReader(path) as video:
        starts, chunks = zip(*video.iter_chunks(chunk_size))
    assert list(starts) == list(range(0, N, chunk_size))
    assert np.array_equal(np.concatenate(chunks), decoded)


def test_partial_chunks_and_ranges(grey_video, decoded) -> None:
    path, _ = grey_video
    with VideoReader(path) as video:
        got = list(video.iter_chunks(10, start=245, stop=262))
        assert [s for s, _ in got] == [245, 255]
        assert np.array_equal(np.concatenate([c for _, c in got]), decoded[245:260])
        assert np.array_equal(video.read(120, 135), decoded[120:135])
        assert video.read(5, 5).shape == (0, H, W)
        with pytest.raises(IndexError, match=str(path)):
            video.read(10, 5)
        with pytest.raises(ValueError):
            list(video.iter_chunks(0))


def test_random_access_equals_sequential(grey_video, decoded) -> None:
    path, _ = grey_video
    order = [0, 1, 249, 250, 251, 130, 259, 3, 250, 129, 131]
    with VideoReader(path) as video:
        for i in order:
            assert np.array_equal(video[i], decoded[i]), f"frame {i}"
        assert np.array_equal(video[-1], decoded[-1])
        with pytest.raises(IndexError, match="out of range"):
            video[N]
        with pytest.raises(TypeError):
            video[1.5]  # type: ignore[index]


def test_rgb_round_trip(tmp_path) -> None:
    rgb = np.zeros((6, H, W, 3), np.uint8)
    rgb[:, :, : W // 2] = (200, 40, 40)
    rgb[:, :, W // 2 :] = (30, 160, 220)
    rgb[3:] = rgb[3:, :, ::-1]
    path = tmp_path / "colour.mp4"
    with VideoWriter(path, fps=30, size=(W, H)) as writer:
        writer.write(rgb)
    with VideoReader(path, color="rgb") as video:
        back = video.read()
        assert np.array_equal(video[4], back[4])
    assert back.shape == rgb.shape
    inner = (slice(None), slice(4, -4), np.r_[4 : W // 2 - 4, W // 2 + 4 : W - 4])
    assert np.abs(back[inner].astype(int) - rgb[inner]).max() <= 6
    with VideoReader(path) as video:  # grey of a colour video is its luma
        grey = video[0]
    luma = 0.299 * 200 + 0.587 * 40 + 0.114 * 40
    assert abs(float(grey[10, 5]) - luma) < 4
    with pytest.raises(ValueError, match="color"):
        VideoReader(path, color="bgr")  # type: ignore[arg-type]


def test_writer_is_deterministic(tmp_path) -> None:
    frames = coded_frames(30, seed=3)
    paths = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for path in paths:
        with VideoWriter(path, fps=30, size=(W, H)) as writer:
            writer.write(frames)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with VideoWriter(tmp_path / "c.mp4", fps=30, size=(W, H)) as writer:
        writer.write(frames[::-1])
    assert (tmp_path / "c.mp4").read_bytes() != paths[0].read_bytes()


def test_writer_is_atomic(tmp_path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, fps=30, size=(W, H)) as writer:
            writer.write(coded_frames(5))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == [], "no file and no temporary left"
    # an existing file survives a failed rewrite
    with VideoWriter(path, fps=30, size=(W, H)) as writer:
        writer.write(coded_frames(4))
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(path, fps=30, size=(W, H)) as writer:
            writer.write(coded_frames(9))
            raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_writer_rejects_bad_frames(tmp_path) -> None:
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", fps=30, size=(63, 48))
    with VideoWriter(tmp_path / "x.mp4", fps=30, size=(W, H)) as writer:
        with pytest.raises(TypeError, match="uint8"):
            writer.write(np.zeros((H, W), np.float32))
        with pytest.raises(ValueError, match="differs"):
            writer.write(np.zeros((H, W + 2), np.uint8))
        writer.write(np.zeros((H, W), np.uint8))


# ------------------------------------------------------------------ errors
def _raises_naming(path: Path, match: str | None = None):
    return pytest.raises(VideoError, match=(str(path).replace(".", r"\.") + (f".*{match}" if match else "")))


def test_missing_file_and_directory(tmp_path) -> None:
    with _raises_naming(tmp_path / "nope.mp4", "not found"):
        VideoReader(tmp_path / "nope.mp4")
    with _raises_naming(tmp_path, "not a file"):
        VideoReader(tmp_path)
    assert issubclass(VideoError, InputError)


def test_text_file_renamed_mp4(tmp_path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are my notes, not a video\n" * 20)
    with _raises_naming(path):
        VideoReader(path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with _raises_naming(empty):
        VideoReader(empty)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_mp4(grey_video, tmp_path, fraction: float) -> None:
    path, _ = grey_video
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * fraction)])
    try:
        video = VideoReader(cut)
    except VideoError as exc:  # the usual case: the index (moov) is at the end and is gone
        assert str(cut) in str(exc)
        return
    with video, _raises_naming(cut):  # opened: reading everything must fail with the file named
        video.read()


def test_truncated_faststart_mp4(tmp_path) -> None:
    """An MP4 with its index first, cut short: opens, then reading past the data fails naming the file."""
    import av

    frames = coded_frames(120, seed=1)
    full = tmp_path / "fast.mp4"
    with av.open(str(full), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "12"}
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(frame, format="gray").reformat(format="yuv420p")
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = full.read_bytes()
    cut = tmp_path / "fast_cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        video = VideoReader(cut)
    except VideoError as exc:
        assert str(cut) in str(exc)
        return
    with video:
        assert video.n_frames == 120  # the index still promises every frame
        with _raises_naming(cut, "truncated or corrupt|corrupt"):
            video.read()
        assert video[0].shape == (H, W)  # what is there stays readable


def test_audio_only_and_image_files(tmp_path) -> None:
    import av
    import cv2

    audio = tmp_path / "sound.m4a"
    with av.open(str(audio), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=44100)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 44100
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with _raises_naming(audio, "no video stream"):
        VideoReader(audio)
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.zeros((H, W), np.uint8))
    with _raises_naming(image, "image"):
        VideoReader(image)
