"""The streaming player's engine: generation on its own thread, encoding on the caller's, and a pre-roll.

    run = StreamRun(handle, run_dir, config)
    for event in run:            # one event per generated block, then a final one with the mp4
        event.segments           # .ts paths to send to the player now (empty while pre-rolling)

Threads: a generation thread iterates the StreamHandle (the model) and hands decoded frames over a
bounded queue; the caller's thread encodes each block to an H.264 .ts segment and into the mp4. So
encoding never stalls generation, and `encode_seconds` records what it costs.

Pre-roll: playback that starts at once stalls at every segment when generation is slower than real
time. With measured speed r (video seconds per compute second, from the blocks so far) and video
length T, playback never stalls once r * (time since start) covers the rest, which needs
T * (1 - r) seconds buffered before release. We hold segments back until that much (times a margin) is
generated, and release everything at once; when r >= 1 the first block goes out immediately.

Lead: when generation is faster than real time, it pauses once it is `max_lead_seconds` ahead of the
viewer (estimated from the release time), so timeline edits land near what the viewer is watching
instead of minutes ahead of it, and compute is not spent on video nobody may watch.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from ..pipeline import StreamChunk, StreamHandle
from ..video.mp4 import Mp4Writer
from ..video.segments import write_ts_segment
from .config import AppConfig

logger = logging.getLogger(__name__)

_DONE = object()


@dataclass
class StreamEvent:
    segments: list[str]  # .ts paths to hand to the player now
    generated_s: float  # video seconds generated so far
    locked_s: float  # the timeline is locked (already generated) before this time
    prompt: str  # prompt of the newest block
    speed: float  # video seconds per compute second (>= 1: faster than real time)
    preroll_s: float  # seconds held back before release (0 when faster than real time)
    released: bool
    block_index: int
    mp4: str | None = None  # set on the final event
    done: bool = False


@dataclass
class RunStats:
    encode_seconds: list[float] = field(default_factory=list)  # per segment (.ts + mp4), on the encoder thread
    lead_wait_s: float = 0.0  # time the generation thread paused for the viewer
    release_wall_s: float | None = None  # from start to the first segment sent
    preroll_s: float = 0.0

    def as_dict(self) -> dict:
        enc = self.encode_seconds
        return {"encode_ms_mean": 1000 * sum(enc) / len(enc) if enc else None,
                "encode_ms_max": 1000 * max(enc) if enc else None, "lead_wait_s": self.lead_wait_s,
                "release_wall_s": self.release_wall_s, "preroll_s": self.preroll_s}


class StreamRun:
    def __init__(self, handle: StreamHandle, run_dir: str, config: AppConfig):
        self.handle = handle
        self.run_dir = run_dir
        self.config = config
        self.fps = handle.fps
        self.stats = RunStats()
        self._chunks: queue.Queue = queue.Queue(maxsize=config.chunk_queue_blocks)
        self._release_time: float | None = None  # perf_counter when playback could start
        self._generated_s = 0.0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._generate, name="videossm-generate", daemon=True)

    # ---- generation thread
    def _wait_for_viewer(self) -> None:
        lead = self.config.max_lead_seconds
        while lead is not None and self._release_time is not None and not self.handle.cancelled:
            ahead = self._generated_s - (time.perf_counter() - self._release_time)
            if ahead <= lead:
                return
            pause = min(ahead - lead, 0.1)
            time.sleep(pause)
            self.stats.lead_wait_s += pause

    def _put(self, item) -> None:
        while not self.handle.cancelled:
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _generate(self) -> None:
        try:
            chunks = iter(self.handle)
            while True:
                self._wait_for_viewer()
                chunk = next(chunks, None)
                if chunk is None:
                    break
                self._generated_s = (chunk.start_frame + chunk.num_frames) / self.fps
                self._put(chunk)
        except BaseException as e:  # handed to the consumer, which re-raises it in the request
            self._error = e
        finally:
            try:
                self._chunks.put_nowait(_DONE)
            except queue.Full:  # the consumer is gone (cancelled); it does not need the marker
                pass

    # ---- caller's thread
    def _speed(self) -> float:
        compute_s = sum(b["seconds"] for b in self.handle._stats.per_block)
        return self._generated_s / compute_s if compute_s > 0 else 0.0

    def _next_chunk(self) -> StreamChunk | object:
        while True:
            try:
                return self._chunks.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._chunks.empty():
                    return _DONE

    def __iter__(self) -> Iterator[StreamEvent]:
        handle, t_start = self.handle, time.perf_counter()
        writer = Mp4Writer(os.path.join(self.run_dir, "videossm.mp4"), fps=self.fps)
        held: list[str] = []
        self._thread.start()
        try:
            while True:
                chunk = self._next_chunk()
                if chunk is _DONE:
                    break
                if chunk.frames is None or not len(chunk.frames):
                    continue
                t0 = time.perf_counter()
                writer.write(chunk.frames)
                held.append(write_ts_segment(os.path.join(self.run_dir, f"segment-{chunk.block_index:05d}.ts"),
                                             chunk.frames, self.fps))
                self.stats.encode_seconds.append(time.perf_counter() - t0)
                generated_s = (chunk.start_frame + chunk.num_frames) / self.fps
                speed = self._speed()
                preroll = 0.0 if speed >= 1 else min(handle.seconds, handle.seconds * (1 - speed)
                                                     * self.config.preroll_margin)
                finished = generated_s >= handle.seconds - 0.5 / self.fps
                if self._release_time is None and (generated_s >= preroll or finished):
                    self._release_time = time.perf_counter()
                    self.stats.release_wall_s = self._release_time - t_start
                    self.stats.preroll_s = generated_s if preroll else 0.0
                out = held if self._release_time is not None else []
                if out:
                    held = []
                yield StreamEvent(out, generated_s, handle.timeline.locked_seconds, chunk.prompt, speed, preroll,
                                  self._release_time is not None, chunk.block_index)
            if self._error is not None:
                raise self._error
            if handle.cancelled:
                writer.abort()
                return
            writer.close()
            yield StreamEvent(held, self._generated_s, handle.timeline.locked_seconds,
                              handle.timeline.snapshot().prompt_at(0) if not handle._stats.per_block
                              else handle._stats.per_block[-1]["prompt"], self._speed(), 0.0, True, -1,
                              mp4=writer.path, done=True)
        finally:
            handle.cancel()  # stops the generation thread at its next block (no-op when it has finished)
            self._thread.join(timeout=60)
            writer.abort()  # no-op after a clean close
