"""Self-contained H.264 MPEG-TS segments, one per generated block, for streaming players.

Gradio's ``gr.Video(streaming=True)`` takes one ``.ts`` (or ``.mp4``) path per yield, probes it with
ffprobe and copies the H.264 into its HLS stream. Browsers decode only yuv420p with even sizes, and
every segment has to start on a keyframe, so each one is its own GOP starting at timestamp 0.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from .mp4 import FPS_RANGE, _as_frames, check_threads, h264_encoder


def write_ts_segment(path: str | os.PathLike, frames: np.ndarray, fps: int, crf: int = 20, threads: int = 1) -> str:
    """Encode uint8 RGB frames [n, H, W, 3] (or [H, W, 3]) to an H.264/yuv420p MPEG-TS file; return its path.

    Odd heights or widths are padded by one row/column (edge repeated). The file is written to
    ``path + ".partial"`` first and renamed when complete. ``threads``: encoder threads (`mp4.check_threads`).
    """
    if not isinstance(fps, int) or isinstance(fps, bool) or not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise ValueError(f"fps must be an int in [{FPS_RANGE[0]}, {FPS_RANGE[1]}], got {fps!r}")
    check_threads(threads)
    frames = _as_frames(frames)
    n, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = os.fspath(path)
    partial = path + ".partial"
    codec = h264_encoder()
    options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"} if codec == "libx264" else {}
    try:
        with av.open(partial, "w", format="mpegts") as container:
            stream = container.add_stream(codec, rate=fps, options=options)
            stream.codec_context.time_base = Fraction(1, fps)
            stream.codec_context.thread_count = threads
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = max(1, n)  # one keyframe, at the start of the segment
            for i, frame in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                vf.pts = i
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    os.replace(partial, path)
    return path
