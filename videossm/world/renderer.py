"""Render clips of the procedural 2-D world, with per-frame ground truth (pure numpy).

The world is a torus twice the frame in each axis (`scenarios.WORLD_SCALE`). Its background is the
prompt's base colour (`BACKGROUND_RGB`) shaded by a texture (stripes, checks or blobs, chosen and
parameterised by the clip seed, plus a world-sized low-frequency wave so no two far-apart views look
alike). The texture is fixed in world coordinates for the whole clip and tiles seamlessly across the
wrap. A camera shows a frame-sized window at an integer offset (see `scenarios.py` for the paths).

One object, an exact `COLOR_RGB` colour (no anti-aliasing), a circle, square or triangle in a
(2r+1)-pixel box (`Geometry.radius`, r = 12 at 128 px), moves per its motion at `Geometry.speed`
pixels per frame (2 at 128 px and 16 fps):

- moving left/right/up/down: a constant velocity; world coordinates wrap, so an object that leaves
  the world re-enters from the opposite side (and, with a still camera, leaves the frame and comes back);
- bouncing around: diagonally at `speed` per axis, reflecting off the walls of its arena, the
  frame-sized world box the camera sees when the bouncing starts (so it bounces around the view of a
  still camera instead of vanishing against the far world border); if the object is outside the view
  then, the arena is the frame-sized box centred on it;
- standing still: it stays put.

Position at frame i = position at frame i-1 moved by the motion active at frame i, so a prompt switch
at frame s already moves the object the new way from s-1 to s. A switch changes colour and shape at
exactly frame s; a switch of background keeps the texture and changes its base colour.

Speed: a 5 s (80 frame) 128 x 128 clip renders in a few milliseconds: the world texture is made once
per clip (separable numpy ops), each frame is one crop of a wrap-padded copy plus one masked paste.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .grammar import BACKGROUNDS, COLORS, check_value
from .scenarios import (DIRECTIONS, SCENARIOS, WRAPPING_MOTIONS, Geometry, Plan, check_scenario, frame_count,
                        make_geometry, make_plan, make_segments, min_frames)
from .splits import as_rng, check_split, sample_spec

DEFAULT_SIZE = 128
DEFAULT_FPS = 16
TEXTURES = ("stripes", "checks", "blobs")
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (40, 190, 60), "blue": (40, 90, 235),
    "yellow": (240, 220, 40), "white": (250, 250, 250), "orange": (250, 140, 20),
}
# (base, light): the texture shades every background pixel between the two.
BACKGROUND_RGB: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "black": ((10, 10, 10), (72, 72, 72)), "gray": ((100, 100, 100), (165, 165, 165)),
    "purple": ((80, 30, 105), (135, 80, 165)), "brown": ((90, 55, 25), (150, 105, 65)),
}
TRAINING_MIXTURE: dict[str, float] = {"plain": 0.4, "pan_and_return": 0.2, "wraparound": 0.2, "prompt_switch": 0.2}
assert tuple(COLOR_RGB) == COLORS and tuple(BACKGROUND_RGB) == BACKGROUNDS


@dataclass(frozen=True)
class FrameRecord:
    """Ground truth of one frame. Positions are the object's centre pixel (column x, row y)."""

    index: int
    time: float  # seconds: index / fps
    x: int  # frame pixels, of the copy nearest the view (may lie outside [0, width))
    y: int
    world_x: int  # world pixels, in [0, world width)
    world_y: int
    visible: bool  # the centre pixel is inside the frame (so it shows the object's colour)
    visible_fraction: float  # share of the object's pixels inside the frame, in [0, 1]
    vx: int  # pixels per frame the object moves with at this frame (after any bounce here)
    vy: int
    color: str
    shape: str
    motion: str
    background: str
    camera_x: int  # world pixels of the view's top-left corner
    camera_y: int
    prompt: str
    segment: int  # index into Clip.segments


@dataclass(frozen=True, eq=False)
class Clip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: int
    seed: int
    scenario: str
    segments: list[tuple[float, str]]  # timeline: (start seconds, prompt), first at 0
    records: list[FrameRecord]  # one per frame
    switch_frames: list[int]  # first frame of every segment after the first
    revisits: list[tuple[int, int]]  # (frame, earlier frame with the same camera offset, left in between)
    texture: str  # one of TEXTURES
    radius: int  # object half-size (mask is 2r+1 square)
    speed: int  # pixels per frame
    world_size: tuple[int, int]  # (height, width) in pixels

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps

    @property
    def prompt(self) -> str:
        """The first segment's prompt."""
        return self.segments[0][1]

    def column(self, name: str) -> np.ndarray:
        """One FrameRecord field for every frame, e.g. clip.column("x") -> int [T]."""
        if name not in FrameRecord.__dataclass_fields__:
            raise ValueError(f"unknown record field {name!r}; accepted: {', '.join(FrameRecord.__dataclass_fields__)}")
        return np.array([getattr(r, name) for r in self.records])

    def object_mask(self, index: int, phase: int = 0) -> np.ndarray:
        """bool [H, W]: the pixels the object covers in frame `index`; with `phase`, where it would be drawn
        `phase` frames later (earlier if negative) at that frame's velocity, clipped to the frame."""
        if not 0 <= index < len(self.records):
            raise ValueError(f"frame index must be in [0, {len(self.records) - 1}], got {index!r}")
        rec = self.records[index]
        mask = np.zeros(self.frames.shape[1:3], bool)
        _paste(mask, shape_mask(rec.shape, self.radius), rec.x + phase * rec.vx, rec.y + phase * rec.vy, True)
        return mask

    def timeline(self) -> dict[str, Any]:
        """The segments in videossm.timeline's native JSON form."""
        return {"fps": self.fps, "segments": [{"start": s, "prompt": p} for s, p in self.segments]}


@functools.lru_cache(maxsize=64)
def shape_mask(shape: str, radius: int) -> np.ndarray:
    """bool [2r+1, 2r+1], read-only: the shape centred on pixel (r, r); the triangle points up."""
    check_value("shape", shape)
    d = 2 * radius + 1
    rows, cols = np.mgrid[0:d, 0:d]
    if shape == "circle":
        mask = (rows - radius) ** 2 + (cols - radius) ** 2 <= (radius + 0.5) ** 2
    elif shape == "square":
        mask = np.ones((d, d), bool)
    else:
        mask = np.abs(cols - radius) <= (rows + 1) / 2
    mask.setflags(write=False)
    return mask


def _paste(image: np.ndarray, mask: np.ndarray, cx: int, cy: int, value: Any) -> int:
    """Set image[mask placed with its centre at (cx, cy)] = value, clipped to the image; pixels set."""
    r = mask.shape[0] // 2
    h, w = image.shape[:2]
    x0, y0 = cx - r, cy - r
    xa, xb, ya, yb = max(x0, 0), min(x0 + mask.shape[1], w), max(y0, 0), min(y0 + mask.shape[0], h)
    if xa >= xb or ya >= yb:
        return 0
    sub = mask[ya - y0:yb - y0, xa - x0:xb - x0]
    image[ya:yb, xa:xb][sub] = value
    return int(sub.sum())


# ---------------------------------------------------------------- textures (world pixels, wrap seamlessly)

def _stripes(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = int(rng.integers(4, 13))
    kx, ky = ((k, 0), (0, k), (k, k), (k, -k))[int(rng.integers(4))]
    duty, phase = rng.uniform(0.3, 0.7), rng.random()
    return (np.mod(kx * u[None, :] + ky * v[:, None] + phase, 1.0) < duty).astype(np.float32)


def _checks(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    kx, ky = (2 * int(k) for k in rng.integers(2, 6, size=2))  # even: the checks alternate across the wrap
    px, py = rng.random(2)
    cells = np.floor(kx * u + px)[None, :] + np.floor(ky * v + py)[:, None]
    return np.mod(cells, 2).astype(np.float32)


def _blobs(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    n = int(rng.integers(10, 25))
    cx, cy, amp = rng.random(n), rng.random(n), rng.uniform(0.6, 1.0, n)
    sigma = rng.uniform(0.03, 0.08, n) * min(len(u), len(v))  # world pixels: 8 to 20 at a 256 px world
    dx = (np.mod(u[None, :] - cx[:, None] + 0.5, 1.0) - 0.5) * len(u)  # [n, W] torus distance, pixels
    dy = (np.mod(v[None, :] - cy[:, None] + 0.5, 1.0) - 0.5) * len(v)  # [n, H]
    gx = np.exp(-0.5 * (dx / sigma[:, None]) ** 2).astype(np.float32)
    gy = (amp[:, None] * np.exp(-0.5 * (dy / sigma[:, None]) ** 2)).astype(np.float32)
    # einsum, not matmul: no BLAS threads (they stall on a busy machine), and separable, so cheap
    return np.clip(np.einsum("nh,nw->hw", gy, gx), 0.0, 1.0)  # [H, W]


def make_texture(rng: np.random.Generator, height: int, width: int) -> tuple[str, np.ndarray]:
    """(kind, shade float32 [height, width] in [0, 1]) of a world, periodic in both axes."""
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    u = (np.arange(width) + 0.5) / width  # [W] torus coordinate in [0, 1)
    v = (np.arange(height) + 0.5) / height  # [H]
    pattern = {"stripes": _stripes, "checks": _checks, "blobs": _blobs}[kind](rng, u, v)
    a, b = rng.random(2)
    wave = 0.5 + 0.25 * (np.cos(2 * np.pi * (u + a))[None, :] + np.cos(2 * np.pi * (v + b))[:, None])
    return kind, (0.7 * pattern + 0.3 * wave).astype(np.float32)


def paint_background(shade: np.ndarray, background: str) -> np.ndarray:
    """uint8 [H, W, 3]: `background`'s base colour, lightened by `shade` [H, W] in [0, 1]."""
    base, light = (np.array(c, np.float32) for c in BACKGROUND_RGB[check_value("background", background)])
    return np.rint(base + (light - base) * shade[..., None]).astype(np.uint8)


def _wrap_padded(world: np.ndarray, height: int, width: int) -> np.ndarray:
    """[Hw + height, Ww + width, 3]: any view [y:y+height, x:x+width] with x < Ww, y < Hw is a plain slice."""
    return np.pad(world, ((0, height), (0, width), (0, 0)), mode="wrap")


def _world_texture(seed: int, height: int, width: int) -> tuple[str, np.ndarray]:
    """The texture of seed's world, (kind, shade [height, width]): it depends only on the seed and size."""
    return make_texture(np.random.default_rng([seed, 0]), height, width)


def _paint_views(shade: np.ndarray, backgrounds: Sequence[str], cameras: np.ndarray, height: int,
                 width: int) -> np.ndarray:
    """uint8 [T, height, width, 3]: frame i is the world `shade` painted as backgrounds[i], seen by a view whose
    top-left corner is cameras[i] (x, y) in world pixels."""
    padded: dict[str, np.ndarray] = {}
    frames = np.empty((len(backgrounds), height, width, 3), np.uint8)
    for i, (background, (cam_x, cam_y)) in enumerate(zip(backgrounds, cameras.tolist())):
        if background not in padded:
            padded[background] = _wrap_padded(paint_background(shade, background), height, width)
        frames[i] = padded[background][cam_y:cam_y + height, cam_x:cam_x + width]
    return frames


# ---------------------------------------------------------------- object motion

def _arena(p: np.ndarray, camera: np.ndarray, geom: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) [2] in p's unwrapped coordinates: the view's inner box if p is in it, else a box around p."""
    frame = np.array([geom.width, geom.height], np.int64)
    world = np.array([geom.world_width, geom.world_height], np.int64)
    r = geom.radius
    rel = (p - camera) % world
    span = frame - 1 - 2 * r
    lo = np.where((rel >= r) & (rel <= frame - 1 - r), p - (rel - r), p - span // 2)
    return lo, lo + span


def simulate(plan: Plan, geom: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions int64 [T, 2] world pixels, velocities int64 [T, 2], segment index int64 [T])."""
    n = plan.n_frames
    pos, vel, seg_of = np.zeros((n, 2), np.int64), np.zeros((n, 2), np.int64), np.zeros(n, np.int64)
    p = np.array(plan.start, np.int64)
    signs = np.array(plan.bounce, np.int64)
    lo = hi = p
    seg = -1
    for i in range(n):
        if seg + 1 < len(plan.segments) and plan.segments[seg + 1].frame == i:
            seg += 1
            if plan.segments[seg].spec.motion == "bouncing around":
                lo, hi = _arena(p, plan.camera[i], geom)
        motion = plan.segments[seg].spec.motion
        if motion == "bouncing around":
            p, signs = _bounce_step(p, signs, lo, hi, geom.speed if i else 0)
            v = signs * geom.speed
        else:
            v = np.array(DIRECTIONS[motion], np.int64) * geom.speed
            p = p + (v if i else 0)
        pos[i], vel[i], seg_of[i] = p, v, seg
    world = np.array([geom.world_width, geom.world_height], np.int64)
    return pos % world, vel, seg_of


def _bounce_step(p: np.ndarray, signs: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 speed: int) -> tuple[np.ndarray, np.ndarray]:
    q = p + signs * speed
    over, under = q > hi, q < lo
    q = np.where(over, 2 * hi - q, np.where(under, 2 * lo - q, q))
    return q, np.where(over | under, -signs, signs)


def find_revisits(camera: np.ndarray) -> list[tuple[int, int]]:
    """(i, j): frame i shows camera offset first seen at frame j < i, and the view moved in between."""
    first: dict[tuple[int, int], int] = {}
    out: list[tuple[int, int]] = []
    run_start, previous = 0, None
    for i, key in enumerate(map(tuple, camera.tolist())):
        if key != previous:
            run_start, previous = i, key
        j = first.setdefault(key, i)
        if j < run_start:
            out.append((i, j))
    return out


def _nearest(rel: np.ndarray, frame: int, world: int) -> np.ndarray:
    """Frame coordinate of the wrapped copy nearest the view: rel in [0, world) -> [(frame-world)/2, ...)."""
    return np.where(rel < (frame + world) // 2, rel, rel - world)


# ---------------------------------------------------------------- clips

def render_plan(plan: Plan, geom: Geometry, shade: np.ndarray, texture: str, seed: int) -> Clip:
    """Frames and ground truth of `plan` over the world texture `shade` [Hw, Ww]."""
    pos, vel, seg_of = simulate(plan, geom)
    world = np.array([geom.world_width, geom.world_height], np.int64)
    rel = (pos - plan.camera) % world
    fx = _nearest(rel[:, 0], geom.width, geom.world_width)
    fy = _nearest(rel[:, 1], geom.height, geom.world_height)
    frames = _paint_views(shade, [plan.segments[s].spec.background for s in seg_of], plan.camera, geom.height,
                          geom.width)
    records: list[FrameRecord] = []
    for i in range(plan.n_frames):
        spec = plan.segments[seg_of[i]].spec
        cam_x, cam_y = (int(c) for c in plan.camera[i])
        mask = shape_mask(spec.shape, geom.radius)
        drawn = _paste(frames[i], mask, int(fx[i]), int(fy[i]), COLOR_RGB[spec.color])
        records.append(FrameRecord(
            index=i, time=i / geom.fps, x=int(fx[i]), y=int(fy[i]), world_x=int(pos[i, 0]), world_y=int(pos[i, 1]),
            visible=bool(0 <= fx[i] < geom.width and 0 <= fy[i] < geom.height),
            visible_fraction=drawn / int(mask.sum()), vx=int(vel[i, 0]), vy=int(vel[i, 1]),
            color=spec.color, shape=spec.shape, motion=spec.motion, background=spec.background,
            camera_x=cam_x, camera_y=cam_y, prompt=spec.text, segment=int(seg_of[i])))
    return Clip(frames=frames, fps=geom.fps, seed=seed, scenario=plan.scenario,
                segments=[(s.start, s.spec.text) for s in plan.segments],
                records=records, switch_frames=[s.frame for s in plan.segments[1:]],
                revisits=find_revisits(plan.camera), texture=texture, radius=geom.radius, speed=geom.speed,
                world_size=(geom.world_height, geom.world_width))


def background_frames(clip: Clip) -> np.ndarray:
    """uint8 [T, H, W, 3]: `clip`'s frames without the object (its world re-rendered from `clip.seed`)."""
    _, shade = _world_texture(clip.seed, *clip.world_size)
    cameras = np.stack([clip.column("camera_x"), clip.column("camera_y")], axis=1)  # [T, 2]
    return _paint_views(shade, clip.column("background"), cameras, *clip.frames.shape[1:3])


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    return int(seed)


def render_clip(spec_or_prompt: Any, seconds: float, seed: int, size: int | tuple[int, int] = DEFAULT_SIZE,
                fps: int = DEFAULT_FPS, scenario: str | None = None) -> Clip:
    """Render a clip; deterministic given its arguments.

    spec_or_prompt: a prompt, a PromptSpec, or a timeline: a sequence of (start_seconds, prompt) from 0.
    scenario: one of SCENARIOS (None = "plain"); see scenarios.py.
    The texture depends only on the seed and size, so two prompts with one seed share a world.
    """
    seed = _check_seed(seed)
    geom = make_geometry(size, fps)
    n_frames = frame_count(seconds, geom.fps)
    segments = make_segments(spec_or_prompt, n_frames, geom.fps)
    texture, shade = _world_texture(seed, geom.world_height, geom.world_width)
    plan = make_plan(scenario, segments, n_frames, geom, np.random.default_rng([seed, 1]))
    return render_plan(plan, geom, shade, texture, seed)


def _feasible(mixture: Mapping[str, float], n_frames: int, geom: Geometry) -> dict[str, float]:
    weights: dict[str, float] = {}
    for name, weight in mixture.items():
        check_scenario(name)
        if not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"mixture weight of {name!r} must be a number >= 0, got {weight!r}")
        if n_frames >= max(min_frames(name, geom, m) for m in WRAPPING_MOTIONS) and weight > 0:
            weights[name] = float(weight)
    if not weights:
        raise ValueError(f"no scenario of the mixture {dict(mixture)} fits {n_frames} frames; "
                         f"accepted scenarios: {', '.join(SCENARIOS)}")
    return weights


def sample_training_clip(rng: np.random.Generator | int, seconds: float = 5.0,
                         size: int | tuple[int, int] = DEFAULT_SIZE, fps: int = DEFAULT_FPS,
                         mixture: Mapping[str, float] = TRAINING_MIXTURE, split: str = "train") -> Clip:
    """A random clip of `split` (default: train prompts only) under a random scenario of `mixture`.

    Scenarios too long for `seconds` (wraparound needs ~4.9 s) drop out of the mixture. Wraparound
    clips get a left/right/up/down motion; prompt switches stay inside the split.
    """
    rng, geom = as_rng(rng), make_geometry(size, fps)
    weights = _feasible(mixture, frame_count(seconds, geom.fps), geom)
    names = sorted(weights)
    probs = np.array([weights[k] for k in names]) / sum(weights.values())
    scenario = names[int(rng.choice(len(names), p=probs))]
    motions = WRAPPING_MOTIONS if scenario == "wraparound" else None
    spec = sample_spec(rng, check_split(split), **({"motions": motions} if motions else {}))
    return render_clip(spec, seconds, int(rng.integers(2 ** 31)), size, fps, scenario)

