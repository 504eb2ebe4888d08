"""The streaming player's engine: generation on its own thread, encoding on the caller's, and a pre-roll.

    run = StreamRun(handle, run_dir, config)
    for event in run:            # one event per generated block, then a final one with the mp4
        event.segments           # .ts paths to send to the player now (empty while pre-rolling)

Threads: a generation thread iterates the StreamHandle (the model) and hands decoded frames over a
bounded queue; the caller's thread encodes each block to an H.264 .ts segment and into the mp4. So
encoding never stalls generation, and `encode_seconds` records what it costs.

Pre-roll, re-evaluated at every block: playback that starts at once stalls at every segment when
generation is slower than real time. With the measured speed r (video seconds per compute second over
the last few blocks) and R seconds of video still to generate, the viewer never catches up with
generation if R * (1/r - 1) seconds are buffered ahead of them (`preroll_needed`). `ViewerClock`
estimates where the viewer is: playback starts at the first release, runs at real time while sent video
lasts, and waits at its end. `should_release` sends held segments while the viewer still has video to
play (more can only help) or once the buffer covers the rest; it holds back when the viewer has caught
up and the buffer does not. So a stream slower than real time from the start gets one pre-roll, and one
that becomes slower mid-stream (contention) gets one re-buffering pause instead of a stall per segment.

Lead: when generation is faster than real time, it pauses once it is `max_lead_seconds` ahead of the
viewer (by the same clock), so timeline edits land near what the viewer is watching instead of minutes
ahead of it, and compute is not spent on video nobody may watch.
"""

from __future__ import annotations

import logging
import math
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


def measured_speed(per_block: list[dict], fps: float, window_blocks: int) -> float:
    """Video seconds per compute second over the last `window_blocks` blocks (0.0 before any block)."""
    recent = per_block[-window_blocks:]
    compute_s = sum(b["seconds"] for b in recent)
    return sum(b["frames"] for b in recent) / fps / compute_s if compute_s > 0 else 0.0


def preroll_needed(remaining_s: float, speed: float, margin: float) -> float:
    """Seconds of video to hold ahead of the viewer so that, playing at real time, they do not catch up
    with generation (at `speed` x real time) before the remaining `remaining_s` seconds are generated."""
    if remaining_s <= 0 or speed >= 1:
        return 0.0
    if speed <= 0:
        return math.inf  # nothing measured yet
    return remaining_s * (1 / speed - 1) * margin


def should_release(buffered_s: float, unplayed_s: float, needed_s: float, finished: bool) -> bool:
    """Send the held segments now? `buffered_s`: generated video ahead of the viewer; `unplayed_s`: sent
    video ahead of the viewer (0: nothing sent yet, or the viewer waits at the end of what was sent)."""
    return finished or unplayed_s > 0 or buffered_s >= needed_s


class ViewerClock:
    """Estimated viewer position: starts at the first send, advances at real time, never past what was sent.
    Read from the generation thread, written from the encoder's: the state is one tuple, swapped whole."""

    def __init__(self):
        self._state: tuple[float, float, float] | None = None  # (sent_s, position_s at t, t)

    @property
    def started(self) -> bool:
        return self._state is not None

    @property
    def sent_s(self) -> float:
        return self._state[0] if self._state else 0.0

    def position(self, now: float) -> float:
        if self._state is None:
            return 0.0
        sent_s, position_s, t = self._state
        return min(sent_s, position_s + max(0.0, now - t))

    def send(self, upto_s: float, now: float) -> None:
        """The viewer now has video up to `upto_s`."""
        self._state = (max(upto_s, self.sent_s), self.position(now), now)


@dataclass
class StreamEvent:
    segments: list[str]  # .ts paths to hand to the player now
    generated_s: float  # video seconds generated so far
    locked_s: float  # the timeline is locked (already generated) before this time
    prompt: str  # prompt of the newest block
    speed: float  # video seconds per compute second, recent blocks (>= 1: faster than real time)
    preroll_s: float  # seconds that must be buffered ahead of the viewer now (0 when faster than real time)
    released: bool  # everything generated has been sent (False: pre-rolling or re-buffering)
    block_index: int
    mp4: str | None = None  # set on the final event
    done: bool = False


@dataclass
class RunStats:
    encode_seconds: list[float] = field(default_factory=list)  # per segment (.ts + mp4), on the encoder thread
    lead_wait_s: float = 0.0  # time the generation thread paused for the viewer
    release_wall_s: float | None = None  # from start to the first segment sent
    preroll_s: float = 0.0  # video held back before the first release
    rebuffers: int = 0  # times segments were held back after playback had started

    def as_dict(self) -> dict:
        enc = self.encode_seconds
        return {"encode_ms_mean": 1000 * sum(enc) / len(enc) if enc else None,
                "encode_ms_max": 1000 * max(enc) if enc else None, "lead_wait_s": self.lead_wait_s,
                "release_wall_s": self.release_wall_s, "preroll_s": self.preroll_s, "rebuffers": self.rebuffers}


class StreamRun:
    def __init__(self, handle: StreamHandle, run_dir: str, config: AppConfig):
        self.handle = handle
        self.run_dir = run_dir
        self.config = config
        self.fps = handle.fps
        self.stats = RunStats()
        self._chunks: queue.Queue = queue.Queue(maxsize=config.chunk_queue_blocks)
        self.clock = ViewerClock()  # where the viewer is (perf_counter time)
        self._holding = False  # segments are held back (pre-roll / re-buffering): generation must not pause
        self._generated_s = 0.0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._generate, name="videossm-generate", daemon=True)

    # ---- generation thread
    def _wait_for_viewer(self) -> None:
        lead = self.config.max_lead_seconds
        while lead is not None and self.clock.started and not self._holding and not self.handle.cancelled:
            ahead = self._generated_s - self.clock.position(time.perf_counter())
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
        return measured_speed(self.handle._stats.per_block, self.fps, self.config.speed_window_blocks)

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
        rebuffering = False
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
                speed, now = self._speed(), time.perf_counter()
                viewer_s = self.clock.position(now)
                needed = preroll_needed(handle.seconds - generated_s, speed, self.config.preroll_margin)
                finished = generated_s >= handle.seconds - 0.5 / self.fps
                out: list[str] = []
                if should_release(generated_s - viewer_s, self.clock.sent_s - viewer_s, needed, finished):
                    if not self.clock.started:
                        self.stats.release_wall_s = now - t_start
                        self.stats.preroll_s = generated_s if len(held) > 1 else 0.0
                    elif rebuffering:
                        self.stats.rebuffers += 1
                    rebuffering = False
                    self.clock.send(generated_s, now)
                    out, held = held, []
                elif self.clock.started:
                    rebuffering = True
                self._holding = bool(held)
                yield StreamEvent(out, generated_s, handle.timeline.locked_seconds, chunk.prompt, speed, needed,
                                  not held, chunk.block_index)
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
