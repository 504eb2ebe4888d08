"""Streaming H.264 MP4 writing (and reading, for tests and eval) through PyAV.

Frames are encoded as they arrive, so memory stays constant however long the video.
The file is written to ``path + ".partial"`` and renamed on a clean ``close()``, so a
crash never leaves a truncated file under the final name.
"""

from __future__ import annotations

import functools
import logging
import os
from fractions import Fraction

import av
import numpy as np

log = logging.getLogger(__name__)

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
FPS_RANGE = (1, 240)
CRF_RANGE = (0, 51)


@functools.cache
def h264_encoder() -> str:
    """Name of the H.264 encoder to use: libx264 if PyAV's FFmpeg has it, else FFmpeg's default 'h264'."""
    for name in ("libx264", "h264"):
        try:
            codec = av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:  # also raised for decoder-only names
            log.debug("no %r encoder in PyAV's FFmpeg", name)
            continue
        if codec.name != "libx264":
            log.warning("libx264 is not available in PyAV's FFmpeg; encoding H.264 with %r", codec.name)
        return codec.name
    raise RuntimeError("no H.264 encoder (libx264 or h264) in PyAV's FFmpeg build; install a PyAV wheel with libx264")


def check_threads(threads: int) -> None:
    """Encoder threads: 1 (the default) encodes on the calling thread. A stream's encoder works beside the
    model, and on a small CPU its own thread pool takes cores the model is using (on 2 cores, x264's
    default threads cost the stream about a tenth of its fps); 0 lets FFmpeg choose."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ValueError(f"threads must be an int >= 0 (0: FFmpeg chooses), got {threads!r}")


def _as_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy uint8 array [n, H, W, 3] or [H, W, 3], got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise TypeError(
            f"frames must have dtype uint8 (values 0..255), got {frames.dtype}; "
            "convert e.g. with (x * 255).clip(0, 255).astype(np.uint8)"
        )
    shape = tuple(frames.shape)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames must have shape [n, H, W, 3] or [H, W, 3] with H, W >= 1, got {shape}")
    return frames


class Mp4Writer:
    """H.264/yuv420p MP4 writer: ``with Mp4Writer(path) as w: w.write(frames)``."""

    def __init__(self, path: str | os.PathLike, fps: int = 16, crf: int = 18, preset: str = "veryfast",
                 threads: int = 1) -> None:
        if not isinstance(fps, int) or isinstance(fps, bool) or not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
            raise ValueError(f"fps must be an int in [{FPS_RANGE[0]}, {FPS_RANGE[1]}], got {fps!r}")
        if not isinstance(crf, int) or isinstance(crf, bool) or not CRF_RANGE[0] <= crf <= CRF_RANGE[1]:
            raise ValueError(f"crf must be an int in [{CRF_RANGE[0]}, {CRF_RANGE[1]}], got {crf!r}")
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
        check_threads(threads)
        self.path, self.fps, self.crf, self.preset, self.threads = os.fspath(path), fps, crf, preset, threads
        self.partial_path = self.path + ".partial"
        self.frames_written = 0
        self.size: tuple[int, int] | None = None  # (H, W) of the input frames
        self._stream = None
        self._closed = False
        self._container = av.open(self.partial_path, "w", format="mp4")

    def _open_stream(self, h: int, w: int) -> None:
        codec = h264_encoder()
        options = {"crf": str(self.crf), "preset": self.preset} if codec == "libx264" else {}
        self._stream = self._container.add_stream(codec, rate=self.fps, options=options)
        self._stream.codec_context.time_base = Fraction(1, self.fps)
        self._stream.codec_context.thread_count = self.threads
        self._stream.width, self._stream.height = w + w % 2, h + h % 2
        self._stream.pix_fmt = "yuv420p"
        if h % 2 or w % 2:
            log.info(
                "yuv420p needs even sizes: padding %dx%d frames to %dx%d by repeating the edge",
                w,
                h,
                self._stream.width,
                self._stream.height,
            )
        self.size = (h, w)

    def write(self, frames: np.ndarray) -> None:
        """Encode frames now: uint8 [n, H, W, 3] or [H, W, 3], RGB. All frames must share one size."""
        if self._closed:
            raise RuntimeError(f"Mp4Writer for {self.path} is already closed")
        frames = _as_frames(frames)
        h, w = frames.shape[1:3]
        if self._stream is None:
            self._open_stream(h, w)
        elif (h, w) != self.size:
            raise ValueError(f"frame size {h}x{w} (HxW) differs from the first frames' {self.size[0]}x{self.size[1]}")
        for frame in frames:
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.frames_written
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished file to its final name."""
        if self._closed:
            return
        if self._stream is None:
            self.abort()
            raise ValueError(f"no frames were written; nothing saved to {self.path}")
        for packet in self._stream.encode():  # flush
            self._container.mux(packet)
        self._container.close()
        self._closed = True
        os.replace(self.partial_path, self.path)
        log.debug("wrote %d frames to %s", self.frames_written, self.path)

    def abort(self) -> None:
        """Stop without producing a file (the .partial is deleted)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        finally:
            if os.path.exists(self.partial_path):
                os.remove(self.partial_path)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            log.warning("error while writing %s; discarding %s", self.path, self.partial_path)
            self.abort()


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = 16) -> None:
    """Write uint8 [n, H, W, 3] RGB frames to an H.264 MP4 in one call."""
    with Mp4Writer(path, fps=fps) as w:
        w.write(frames)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a video's first video stream to (uint8 [n, H, W, 3] RGB frames, fps)."""
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{os.fspath(path)} has no video stream")
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if not frames:
            return np.zeros((0, stream.height, stream.width, 3), np.uint8), fps
        return np.stack(frames), fps
