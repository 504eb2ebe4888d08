"""Prompt timeline: which prompt is active at which second of the video.

Pure Python (stdlib only, no torch) so the UI and tools can import it cheaply.

Accepted JSON formats
---------------------
Native (what ``to_dict``/``to_json``/``save`` write)::

    {"fps": 16, "segments": [{"start": 0.0, "prompt": "a cat"}, {"start": 10.0, "prompt": "a dog"}]}

``fps`` is optional (default 16, an int in [1, 120]). Starts are seconds, strictly
increasing, and the first is 0. The video duration is given to the generator separately.

LongLive interactive format (NVlabs/LongLive keeps ``{"prompts": [...]}`` lines in a JSONL
file and ``switch_frame_indices: "40, 80"`` in its YAML config; we accept both in one object)::

    {"prompts": ["a cat", "a dog", "a bird"], "switch_frame_indices": [40, 80], "fps": 16}

``switch_frames`` is accepted as a synonym of ``switch_frame_indices``; either may be a list
of ints or a comma-separated string. Switch frame i is the LATENT frame index at which
prompt i+1 starts, so there must be exactly ``len(prompts) - 1`` of them, strictly increasing
and >= 1. A latent frame f maps to seconds as ``pixel_frame / fps`` with
``pixel_frame = 0 if f == 0 else 1 + 4 * (f - 1)`` (Wan's causal VAE: the first latent frame
decodes to 1 pixel frame, every later one to 4). A bare ``{"prompts": ["one prompt"]}`` is fine.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_FPS = 16
FPS_RANGE = (1, 120)
MAX_PROMPT_CHARS = 2000
MAX_SEGMENTS = 64

_NATIVE_KEYS = ("fps", "segments")
_LONGLIVE_KEYS = ("fps", "prompts", "switch_frames", "switch_frame_indices")
_SEGMENT_KEYS = ("start", "prompt")


class TimelineError(ValueError):
    """A timeline (or an edit to one) is invalid; the message names the bad value."""


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    prompt: str


def latent_frame_to_seconds(frame: int, fps: int) -> float:
    """Start time in seconds of latent frame ``frame`` (Wan causal VAE: 1 + 4*(f-1) pixel frames)."""
    pixel_frame = 0 if frame == 0 else 1 + 4 * (frame - 1)
    return pixel_frame / fps


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_fps(fps: Any) -> int:
    lo, hi = FPS_RANGE
    if not isinstance(fps, int) or isinstance(fps, bool) or not lo <= fps <= hi:
        raise TimelineError(f"fps must be an int in [{lo}, {hi}], got {_describe(fps)}")
    return fps


def _check_segments(
    segments: Sequence[Segment], max_seconds: float | None, max_prompt_chars: int, max_segments: int
) -> None:
    if len(segments) == 0:
        raise TimelineError(f"timeline has no segments; need 1 to {max_segments} segments")
    if len(segments) > max_segments:
        raise TimelineError(f"timeline has {len(segments)} segments; at most {max_segments} allowed")
    limit = "" if max_seconds is None else f" and < max_seconds {max_seconds}"
    for i, seg in enumerate(segments):
        if not _is_number(seg.start):
            raise TimelineError(f"segment {i} start must be a number of seconds >= 0, got {_describe(seg.start)}")
        if not math.isfinite(seg.start) or seg.start < 0:
            raise TimelineError(f"segment {i} start {seg.start} is not a finite time >= 0 seconds{limit}")
        if max_seconds is not None and seg.start >= max_seconds:
            raise TimelineError(
                f"segment {i} start {seg.start} is beyond max_seconds {max_seconds}; "
                f"starts must be in [0, {max_seconds})"
            )
        if i == 0 and seg.start != 0:
            raise TimelineError(f"segment 0 start must be 0.0 (the first segment starts the video), got {seg.start}")
        if i > 0 and seg.start <= segments[i - 1].start:
            raise TimelineError(
                f"segment {i} start {seg.start} must be greater than segment {i - 1} start "
                f"{segments[i - 1].start} (starts must be strictly increasing, no duplicates)"
            )
        if not isinstance(seg.prompt, str):
            raise TimelineError(f"segment {i} prompt must be a str, got {_describe(seg.prompt)}")
        if not seg.prompt.strip():
            raise TimelineError(
                f"segment {i} prompt {seg.prompt!r} is empty or whitespace-only; need 1 to {max_prompt_chars} "
                "non-blank characters"
            )
        if len(seg.prompt) > max_prompt_chars:
            raise TimelineError(
                f"segment {i} prompt {_short(seg.prompt)} has {len(seg.prompt)} characters; "
                f"at most {max_prompt_chars} allowed"
            )


def _to_segment(i: int, item: Any) -> Segment:
    if isinstance(item, Segment):
        return item
    if isinstance(item, dict):
        unknown = sorted(set(item) - set(_SEGMENT_KEYS), key=str)
        missing = [k for k in _SEGMENT_KEYS if k not in item]
        if unknown or missing:
            raise TimelineError(
                f"segment {i} has unknown keys {unknown} / missing keys {missing}; accepted keys: {list(_SEGMENT_KEYS)}"
            )
        return Segment(item["start"], item["prompt"])
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return Segment(item[0], item[1])
    raise TimelineError(
        f"segment {i} must be a {{'start', 'prompt'}} object or (start, prompt) pair, got {_describe(item)}"
    )


def _parse_switch_frames(value: Any, key: str) -> list[int]:
    if isinstance(value, str):
        try:
            return [int(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise TimelineError(f"{key} {value!r} must be comma-separated ints >= 1, e.g. '40, 80'") from None
    if not isinstance(value, list):
        raise TimelineError(f"{key} must be a list of ints >= 1 or a comma-separated string, got {_describe(value)}")
    for f in value:
        if not isinstance(f, int) or isinstance(f, bool):
            raise TimelineError(f"{key} entry {_describe(f)} must be an int latent frame index >= 1")
    return list(value)


def _longlive_segments(d: dict[str, Any], fps: int) -> list[Segment]:
    prompts = d["prompts"]
    if not isinstance(prompts, list):
        raise TimelineError(f"'prompts' must be a list of str, got {_describe(prompts)}")
    if "switch_frames" in d and "switch_frame_indices" in d:
        raise TimelineError("give only one of 'switch_frames' and 'switch_frame_indices', got both")
    key = "switch_frames" if "switch_frames" in d else "switch_frame_indices"
    frames = _parse_switch_frames(d.get(key, []), key)
    if len(frames) != len(prompts) - 1:
        raise TimelineError(
            f"{key} has {len(frames)} entries for {len(prompts)} prompts; need exactly len(prompts) - 1 = "
            f"{max(len(prompts) - 1, 0)}"
        )
    for i, f in enumerate(frames):
        prev = frames[i - 1] if i else 0
        if f <= prev:
            raise TimelineError(
                f"{key}[{i}] = {f} must be a latent frame index > {prev} "
                "(switch frames are >= 1 and strictly increasing)"
            )
    starts = [0.0] + [latent_frame_to_seconds(f, fps) for f in frames]
    return [Segment(s, p) for s, p in zip(starts, prompts)]


class Timeline:
    """An immutable, validated list of prompt segments plus the video fps."""

    def __init__(
        self,
        segments: Iterable[Segment | dict | tuple],
        fps: int = DEFAULT_FPS,
        *,
        max_seconds: float | None = None,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        max_segments: int = MAX_SEGMENTS,
    ) -> None:
        if isinstance(segments, (str, bytes, dict)) or not isinstance(segments, Iterable):
            raise TimelineError(f"segments must be a list of {{'start', 'prompt'}} objects, got {_describe(segments)}")
        if max_seconds is not None and (not _is_number(max_seconds) or not 0 < max_seconds < math.inf):
            raise TimelineError(f"max_seconds must be a finite number > 0 or None, got {_describe(max_seconds)}")
        self.fps = _check_fps(fps)
        segs = [_to_segment(i, s) for i, s in enumerate(segments)]
        _check_segments(segs, max_seconds, max_prompt_chars, max_segments)
        self.segments: tuple[Segment, ...] = tuple(Segment(float(s.start), s.prompt) for s in segs)
        self._starts = [s.start for s in self.segments]

    # ---- constructors / serialisation
    @classmethod
    def single(cls, prompt: str, fps: int = DEFAULT_FPS) -> Timeline:
        return cls([Segment(0.0, prompt)], fps)

    @classmethod
    def from_dict(cls, d: Any, **limits: Any) -> Timeline:
        """Build from the native or the LongLive dict (see module docstring)."""
        if not isinstance(d, dict):
            raise TimelineError(f"timeline must be a JSON object, got {_describe(d)}")
        native = "segments" in d or "prompts" not in d
        accepted = _NATIVE_KEYS if native else _LONGLIVE_KEYS
        unknown = sorted(set(d) - set(accepted), key=str)
        if unknown:
            raise TimelineError(f"unknown top-level key(s) {unknown}; accepted keys: {list(accepted)}")
        fps = _check_fps(d.get("fps", DEFAULT_FPS))
        if not native:
            return cls(_longlive_segments(d, fps), fps, **limits)
        if "segments" not in d:
            raise TimelineError(
                "timeline is missing 'segments' (or LongLive's 'prompts'); accepted keys: "
                f"{list(_NATIVE_KEYS)} or {list(_LONGLIVE_KEYS)}"
            )
        if not isinstance(d["segments"], list):
            got = _describe(d["segments"])
            raise TimelineError(f"'segments' must be a list of {{'start', 'prompt'}} objects, got {got}")
        return cls(d["segments"], fps, **limits)

    @classmethod
    def from_json(cls, text: str, **limits: Any) -> Timeline:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise TimelineError(f"timeline is not valid JSON: {e}") from None
        return cls.from_dict(d, **limits)

    @classmethod
    def load(cls, path: str | os.PathLike, **limits: Any) -> Timeline:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            return cls.from_json(text, **limits)
        except TimelineError as e:
            raise TimelineError(f"{os.fspath(path)}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"fps": self.fps, "segments": [{"start": s.start, "prompt": s.prompt} for s in self.segments]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a temp file in the same folder, then os.replace."""
        path = os.fspath(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".timeline-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    # ---- queries
    def segment_index_at(self, seconds: float) -> int:
        """Index of the segment with the greatest start <= seconds."""
        if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
            raise TimelineError(f"time must be a finite number of seconds >= 0, got {_describe(seconds)}")
        return bisect.bisect_right(self._starts, seconds) - 1

    def prompt_at(self, seconds: float) -> str:
        return self.segments[self.segment_index_at(seconds)].prompt

    def prompts(self) -> list[str]:
        """Distinct prompts in order of first appearance."""
        return list(dict.fromkeys(s.prompt for s in self.segments))

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __getitem__(self, index: int) -> Segment:
        return self.segments[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timeline):
            return NotImplemented
        return self.fps == other.fps and self.segments == other.segments

    def __hash__(self) -> int:
        return hash((self.fps, self.segments))

    def __repr__(self) -> str:
        segs = ", ".join(f"{s.start:g}s: {_short(s.prompt, 30)}" for s in self.segments)
        return f"Timeline(fps={self.fps}, [{segs}])"


class LiveTimeline:
    """A Timeline edited from one thread (the UI) while another (the generator) reads it.

    ``lock_until(t)`` records that video before ``t`` seconds is already generated; from then
    on edits that would change the prompt active before ``t`` are refused. Every accepted
    edit validates the whole resulting timeline first and bumps ``version``.
    """

    def __init__(
        self,
        timeline: Timeline,
        *,
        max_seconds: float | None = None,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        max_segments: int = MAX_SEGMENTS,
    ) -> None:
        self._limits = {"max_seconds": max_seconds, "max_prompt_chars": max_prompt_chars, "max_segments": max_segments}
        self._lock = threading.Lock()
        self._timeline = self._build(timeline.segments, timeline.fps)
        self._locked = 0.0
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    @property
    def locked_seconds(self) -> float:
        return self._locked

    def snapshot(self) -> Timeline:
        with self._lock:
            return self._timeline

    def lock_until(self, seconds: float) -> None:
        """Mark [0, seconds) as generated. The lock only moves forward (see ``unlock``)."""
        if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
            raise TimelineError(f"lock time must be a finite number of seconds >= 0, got {_describe(seconds)}")
        with self._lock:
            if seconds < self._locked:
                raise TimelineError(
                    f"lock time {seconds} is before the current lock {self._locked}; it must be >= {self._locked}"
                )
            self._locked = float(seconds)

    def unlock(self) -> None:
        """Drop the lock, e.g. when generation restarts from the beginning."""
        with self._lock:
            self._locked = 0.0

    # ---- edits
    def replace(self, timeline: Timeline) -> None:
        with self._lock:
            if timeline.fps != self._timeline.fps and self._locked > 0:
                raise TimelineError(
                    f"cannot change fps from {self._timeline.fps} to {timeline.fps}: generation is locked "
                    f"until {self._locked}s; fps may only change while the lock is 0"
                )
            self._commit(list(timeline.segments), timeline.fps)

    def set_segments(self, segments: Iterable[Segment | dict | tuple]) -> None:
        with self._lock:
            self._commit(list(segments), self._timeline.fps)

    def add(self, start: float, prompt: str) -> int:
        """Insert a segment at its sorted position; returns its index."""
        with self._lock:
            if _is_number(start) and start < self._locked:
                raise TimelineError(
                    f"cannot add a segment at {start}s: video before {self._locked}s is already generated; "
                    f"new segments must start at >= {self._locked}s"
                )
            segs = list(self._timeline.segments)
            index = bisect.bisect_right([s.start for s in segs], start) if _is_number(start) else len(segs)
            segs.insert(index, Segment(start, prompt))
            self._commit(segs, self._timeline.fps)
            return index

    def edit(self, index: int, start: float | None = None, prompt: str | None = None) -> None:
        """Change a segment's start and/or prompt in place (it may not move past its neighbours)."""
        with self._lock:
            segs = list(self._timeline.segments)
            old = segs[self._check_index(index, len(segs))]
            self._check_unlocked(index, old, "edited or moved")
            if start is not None and _is_number(start) and start < self._locked:
                raise TimelineError(
                    f"cannot move segment {index} to {start}s: video before {self._locked}s is already generated; "
                    f"it must start at >= {self._locked}s"
                )
            segs[index] = Segment(old.start if start is None else start, old.prompt if prompt is None else prompt)
            self._commit(segs, self._timeline.fps)

    def remove(self, index: int) -> None:
        with self._lock:
            segs = list(self._timeline.segments)
            self._check_index(index, len(segs))
            if index == 0:
                raise TimelineError("segment 0 cannot be removed (the video must start with a prompt); edit it instead")
            self._check_unlocked(index, segs[index], "removed")
            del segs[index]
            self._commit(segs, self._timeline.fps)

    # ---- internals (call with self._lock held)
    def _build(self, segments: Iterable[Segment | dict | tuple], fps: int) -> Timeline:
        return Timeline(segments, fps, **self._limits)

    @staticmethod
    def _check_index(index: Any, n: int) -> int:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
            raise TimelineError(f"segment index {_describe(index)} is out of range; must be an int in [0, {n - 1}]")
        return index

    def _check_unlocked(self, index: int, seg: Segment, what: str) -> None:
        if seg.start < self._locked:
            raise TimelineError(
                f"segment {index} (start {seg.start}s, prompt {_short(seg.prompt)}) starts before the lock at "
                f"{self._locked}s (already generated) and cannot be {what}; only segments starting at >= "
                f"{self._locked}s can change"
            )

    def _commit(self, segments: list, fps: int) -> None:
        new = self._build(segments, fps)  # full validation; raises before anything changes
        old_prefix = [s for s in self._timeline.segments if s.start < self._locked]
        new_prefix = [s for s in new.segments if s.start < self._locked]
        if old_prefix != new_prefix:
            for i in range(max(len(old_prefix), len(new_prefix))):
                a = old_prefix[i] if i < len(old_prefix) else None
                b = new_prefix[i] if i < len(new_prefix) else None
                if a != b:
                    seg = a or b
                    raise TimelineError(
                        f"segment {i} (start {seg.start}s, prompt {_short(seg.prompt)}) would change before the "
                        f"lock at {self._locked}s (already generated); only segments starting at >= "
                        f"{self._locked}s can change"
                    )
        if new != self._timeline:
            self._timeline = new
            self._version += 1
