"""Clip geometry and scenario plans: where the camera looks and where the object starts, per frame.

The world is a torus `WORLD_SCALE` times the frame in each axis; the camera sees a frame-sized window
of it at an integer offset (x, y), the window's top-left corner in world pixels. A plan fixes, for one
clip, the camera offset of every frame, the object's start, its first diagonal direction (for
"bouncing around") and the prompt segments. The renderer (`renderer.py`) turns a plan into frames.

Scenarios (`SCENARIOS`), each stressing one kind of memory:

- ``plain``: a static camera; the object starts fully inside the view.
- ``pan_and_return``: hold 15%, pan a whole frame away (one of 8 directions) over 25%, hold 20%, pan
  back over the same offsets in reverse (25%), hold the rest at exactly the first offset. The view
  fully leaves the start region and revisits it (the clip's `revisits` says which frames).
- ``wraparound``: a static camera; a left/right/up/down object starts touching the frame edge it moves
  towards, leaves the frame, travels around the world and re-enters from the opposite edge. Needs
  `min_frames("wraparound", ...)` frames (78 at 128 px, 16 fps: 4.9 s).
- ``long_static``: ``plain`` meant for long clips (e.g. 60 s): the background must not drift at all.
- ``prompt_switch``: a static camera; at the middle frame the prompt changes one field (colour, shape
  or motion, chosen by the seed) while the background stays. The object is fully in view at the switch
  (and at frame 0 when its motion allows both). The new prompt stays in the clip's
  split (train or held-out), so training clips never show a held-out combination.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .grammar import COLORS, MOTIONS, SHAPES, PromptSpec, parse_prompt
from .splits import split_of

SCENARIOS = ("plain", "pan_and_return", "wraparound", "long_static", "prompt_switch")
WORLD_SCALE = 2
SIZE_RANGE = (16, 2048)
FPS_RANGE = (1, 120)
MAX_SECONDS = 600.0
# Unit velocity of each motion, (x, y) with y pointing down; "bouncing around" is diagonal (see renderer).
DIRECTIONS = {"moving left": (-1, 0), "moving right": (1, 0), "moving up": (0, -1), "moving down": (0, 1),
              "standing still": (0, 0)}
WRAPPING_MOTIONS = ("moving left", "moving right", "moving up", "moving down")
PAN_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))
_PAN_PHASES = (0.15, 0.25, 0.20)  # hold, pan out (pan back is as long), hold away; the rest holds at the start
SWITCH_FIELDS = ("color", "shape", "motion")

SpecLike = PromptSpec | str


@dataclass(frozen=True)
class Geometry:
    """Frame and world sizes in pixels, and the object's size and speed, for one (size, fps)."""

    height: int
    width: int
    fps: int

    @property
    def world_height(self) -> int:
        return WORLD_SCALE * self.height

    @property
    def world_width(self) -> int:
        return WORLD_SCALE * self.width

    @property
    def radius(self) -> int:
        """Half the object's side, in pixels: its mask is (2r+1) x (2r+1) around the centre pixel."""
        return max(2, min(self.height, self.width) // 10)

    @property
    def speed(self) -> int:
        """Pixels per frame of a moving object (and per axis of a bouncing one): 32 px/s at 128 px."""
        return max(1, round(min(self.height, self.width) / 64 * 16 / self.fps))


def make_geometry(size: int | tuple[int, int], fps: int) -> Geometry:
    """Geometry for `size` (an int for square frames, or (height, width)) and `fps`, checked."""
    height, width = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
            raise ValueError(f"frame {name} must be an int in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}], got {value!r}")
    if not isinstance(fps, (int, np.integer)) or not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise ValueError(f"fps must be an int in [{FPS_RANGE[0]}, {FPS_RANGE[1]}], got {fps!r}")
    return Geometry(int(height), int(width), int(fps))


def frame_count(seconds: float, fps: int) -> int:
    """round(seconds * fps) frames, at least 1; seconds must be in (0, MAX_SECONDS]."""
    if not isinstance(seconds, (int, float, np.number)) or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be a number in (0, {MAX_SECONDS:g}], got {seconds!r}")
    return max(1, round(seconds * fps))


@dataclass(frozen=True)
class Segment:
    start: float  # seconds, as given
    frame: int  # first frame showing this prompt: ceil(start * fps)
    spec: PromptSpec


def as_spec(prompt: SpecLike) -> PromptSpec:
    return prompt if isinstance(prompt, PromptSpec) else parse_prompt(prompt)


def _pairs(value: Any) -> list[tuple[float, SpecLike]]:
    if isinstance(value, (PromptSpec, str)):
        return [(0.0, value)]
    pairs = []
    for item in value:
        if hasattr(item, "start") and hasattr(item, "prompt"):  # e.g. videossm.timeline.Segment
            item = (item.start, item.prompt)
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"a segment must be (start_seconds, prompt), got {item!r}")
        pairs.append((item[0], item[1]))
    return pairs


def make_segments(prompts: Any, n_frames: int, fps: int) -> tuple[Segment, ...]:
    """Segments from a prompt, a PromptSpec, or a sequence of (start_seconds, prompt) starting at 0."""
    pairs = _pairs(prompts)
    if not pairs:
        raise ValueError("the timeline must have at least one segment")
    segments: list[Segment] = []
    for start, prompt in pairs:
        if not isinstance(start, (int, float, np.number)) or not 0 <= start < n_frames / fps:
            raise ValueError(f"segment start must be seconds in [0, {n_frames / fps:g}), got {start!r}")
        frame = math.ceil(start * fps - 1e-9)
        if not segments and frame != 0:
            raise ValueError(f"the first segment must start at 0 s, got {start!r}")
        if segments and frame <= segments[-1].frame:
            raise ValueError(f"segment starts must fall on increasing frames; {start!r} s does not "
                             f"(previous start {segments[-1].start!r} s, {fps} fps)")
        segments.append(Segment(float(start), frame, as_spec(prompt)))
    return tuple(segments)


@dataclass(frozen=True)
class Plan:
    scenario: str
    camera: np.ndarray  # int64 [T, 2]: (x, y) of the view's top-left corner, world pixels in [0, world)
    start: tuple[int, int]  # object centre at frame 0, world pixels
    bounce: tuple[int, int]  # first diagonal direction (sx, sy) in {-1, 1}^2 of a bouncing object
    segments: tuple[Segment, ...]

    @property
    def n_frames(self) -> int:
        return len(self.camera)


def check_scenario(scenario: str | None) -> str:
    scenario = "plain" if scenario is None else scenario
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; accepted: {', '.join(SCENARIOS)}")
    return scenario


def min_frames(scenario: str, geom: Geometry, motion: str = "moving right") -> int:
    """The fewest frames a clip of `scenario` needs (wraparound: until the object is fully back)."""
    scenario = check_scenario(scenario)
    if scenario == "pan_and_return":
        return 8
    if scenario == "prompt_switch":
        return 2
    if scenario != "wraparound":
        return 1
    horizontal = DIRECTIONS.get(motion, (1, 0))[0] != 0
    world, frame = (geom.world_width, geom.width) if horizontal else (geom.world_height, geom.height)
    return math.ceil((world - frame + 1 + 2 * geom.radius) / geom.speed) + 1


def _start_inside(camera: np.ndarray, geom: Geometry, rng: np.random.Generator) -> tuple[int, int]:
    """A centre that shows the whole object in the view at `camera` (x, y)."""
    r = geom.radius
    x = (camera[0] + rng.integers(r, geom.width - r)) % geom.world_width
    y = (camera[1] + rng.integers(r, geom.height - r)) % geom.world_height
    return int(x), int(y)


def _start_at_exit(camera: np.ndarray, motion: str, geom: Geometry, rng: np.random.Generator) -> tuple[int, int]:
    """A centre that shows the whole object touching the frame edge `motion` heads to."""
    r = geom.radius
    rel_x, rel_y = int(rng.integers(r, geom.width - r)), int(rng.integers(r, geom.height - r))
    dx, dy = DIRECTIONS[motion]
    rel_x = {1: geom.width - 1 - r, -1: r}.get(dx, rel_x)
    rel_y = {1: geom.height - 1 - r, -1: r}.get(dy, rel_y)
    return int((camera[0] + rel_x) % geom.world_width), int((camera[1] + rel_y) % geom.world_height)


def _start_seen_at(camera: np.ndarray, motion: str, frame: int, geom: Geometry,
                   rng: np.random.Generator) -> tuple[int, int]:
    """A start whose object is fully in view at `frame` (and at frame 0 too, when both fit)."""
    r = geom.radius
    start = []
    for axis, (size, world) in enumerate(((geom.width, geom.world_width), (geom.height, geom.world_height))):
        shift = DIRECTIONS.get(motion, (0, 0))[axis] * geom.speed * frame
        lo, hi = max(r, r + shift), min(size - 1 - r, size - 1 - r + shift)  # both in view
        if lo > hi:
            lo, hi = r, size - 1 - r  # in view at `frame` only
        start.append(int((camera[axis] + rng.integers(lo, hi + 1) - shift) % world))
    return start[0], start[1]


def _pan_path(n: int, geom: Geometry, rng: np.random.Generator) -> np.ndarray:
    """int64 [n, 2] offsets from the start view: hold, pan out, hold, pan back (same offsets), hold."""
    hold, pan, away = (max(1, round(f * n)) for f in _PAN_PHASES)
    rest = n - hold - 2 * pan - away
    if rest < 1:
        raise ValueError(f"pan_and_return needs at least {min_frames('pan_and_return', geom)} frames, got {n}")
    dx, dy = PAN_DIRECTIONS[int(rng.integers(len(PAN_DIRECTIONS)))]
    target = np.array([dx * geom.width, dy * geom.height], dtype=np.float64)
    ramp = np.rint(np.arange(1, pan + 1)[:, None] / pan * target).astype(np.int64)  # [pan, 2], ends at target
    zeros = np.zeros((1, 2), np.int64)
    back = np.concatenate([ramp[-2::-1], zeros])  # [pan, 2]: retraces ramp, ends at the start view
    return np.concatenate([np.repeat(zeros, hold, 0), ramp, np.repeat(ramp[-1:], away, 0), back,
                           np.repeat(zeros, rest, 0)])


def switch_candidates(spec: PromptSpec) -> dict[str, list[PromptSpec]]:
    """Per field, the prompts that change only that field of `spec` and stay in its split."""
    split = split_of(spec)
    options = {"color": COLORS, "shape": SHAPES, "motion": MOTIONS}
    out: dict[str, list[PromptSpec]] = {}
    for field in SWITCH_FIELDS:
        changed = [replace(spec, **{field: v}) for v in options[field] if v != getattr(spec, field)]
        out[field] = [s for s in changed if split_of(s) == split]
    return out


def _switch_segments(segments: tuple[Segment, ...], n: int, fps: int,
                     rng: np.random.Generator) -> tuple[Segment, ...]:
    if len(segments) != 1:
        raise ValueError(f"prompt_switch makes its own switch; give one prompt, not {len(segments)} segments")
    if n < 2:
        raise ValueError(f"prompt_switch needs at least 2 frames, got {n}")
    candidates = {k: v for k, v in switch_candidates(segments[0].spec).items() if v}
    field = sorted(candidates)[int(rng.integers(len(candidates)))]
    new = candidates[field][int(rng.integers(len(candidates[field])))]
    frame = n // 2
    return segments + (Segment(frame / fps, frame, new),)


def make_plan(scenario: str | None, segments: tuple[Segment, ...], n_frames: int, geom: Geometry,
              rng: np.random.Generator) -> Plan:
    """The camera path, object start and segments of one clip of `scenario`."""
    scenario = check_scenario(scenario)
    world = np.array([geom.world_width, geom.world_height], np.int64)
    camera0 = np.array([rng.integers(geom.world_width), rng.integers(geom.world_height)], np.int64)
    bounce = (int(rng.choice((-1, 1))), int(rng.choice((-1, 1))))
    path = np.zeros((n_frames, 2), np.int64)
    motion = segments[0].spec.motion
    if scenario == "pan_and_return":
        path = _pan_path(n_frames, geom, rng)
    if scenario == "wraparound":
        if motion not in WRAPPING_MOTIONS:
            raise ValueError(f"wraparound needs a motion in {', '.join(WRAPPING_MOTIONS)}; got {motion!r}")
        need = min_frames(scenario, geom, motion)
        if n_frames < need:
            raise ValueError(f"wraparound with {motion!r} needs at least {need} frames "
                             f"({need / geom.fps:g} s at {geom.fps} fps), got {n_frames}")
        start = _start_at_exit(camera0, motion, geom, rng)
    elif scenario == "prompt_switch":
        segments = _switch_segments(segments, n_frames, geom.fps, rng)
        start = _start_seen_at(camera0, motion, segments[1].frame, geom, rng)
    else:
        start = _start_inside(camera0, geom, rng)
    return Plan(scenario, (camera0 + path) % world, start, bounce, segments)
