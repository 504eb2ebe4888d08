"""The procedural training world: ground truth matches pixels, the background is fixed in world
coordinates, the memory scenarios do what they say, and the held-out split holds."""

from __future__ import annotations

import numpy as np
import pytest

from videossm.timeline import Timeline
from videossm.world import (ALL_COMBOS, BACKGROUNDS, COLOR_RGB, COLORS, HELD_OUT_COMBOS, MOTIONS, SCENARIOS, SHAPES,
                            TEMPLATE, TEXTURES, TRAIN_COMBOS, PromptSpec, all_prompts, is_held_out, make_geometry,
                            make_prompt, min_frames, parse_prompt, render_clip, sample_prompt, sample_spec,
                            sample_training_clip, shape_mask, split_of, vocabulary)
from videossm.world.renderer import make_texture

DIRS = {"moving left": (-1, 0), "moving right": (1, 0), "moving up": (0, -1), "moving down": (0, 1)}


def prompt(color="red", shape="circle", motion="moving right", background="gray") -> str:
    return make_prompt(color, shape, motion, background)


def background_equal(clip, i: int, j: int) -> bool:
    """Frames i and j agree wherever neither shows the object."""
    keep = ~(clip.object_mask(i) | clip.object_mask(j))
    return bool(np.array_equal(clip.frames[i][keep], clip.frames[j][keep]))


def wrapped_step(clip, axis: str) -> np.ndarray:
    """Per-frame world displacement along axis "x" or "y", unwrapped into (-world/2, world/2]."""
    world = clip.world_size[1] if axis == "x" else clip.world_size[0]
    d = np.diff(clip.column(f"world_{axis}"))
    return (d + world // 2) % world - world // 2


# ---------------------------------------------------------------- ground truth vs pixels

@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("shape", SHAPES)
def test_recorded_centre_shows_the_object_colour(scenario, shape):
    seconds = 10 if scenario == "long_static" else 5
    clip = render_clip(prompt("yellow", shape, "moving down", "purple"), seconds, seed=3, scenario=scenario)
    assert clip.frames.shape == (16 * seconds, 128, 128, 3) and clip.frames.dtype == np.uint8 and clip.fps == 16
    seen = 0
    for rec in clip.records:
        if rec.visible:
            seen += 1
            assert tuple(clip.frames[rec.index, rec.y, rec.x]) == COLOR_RGB[rec.color], rec
        mask = clip.object_mask(rec.index)
        assert mask.sum() == round(rec.visible_fraction * shape_mask(rec.shape, clip.radius).sum())
        if mask.any():  # a nearest-colour probe over the object's pixels recovers its colour
            mean = clip.frames[rec.index][mask].mean(0)
            assert min(COLOR_RGB, key=lambda c: np.abs(np.array(COLOR_RGB[c]) - mean).sum()) == rec.color
    assert seen > 0


def test_object_colour_never_occurs_in_the_background():
    for background in BACKGROUNDS:
        clip = render_clip(prompt("white", "square", "standing still", background), 0.5, seed=1)
        bare = clip.frames[0][~clip.object_mask(0)].reshape(-1, 3).astype(int)
        for rgb in COLOR_RGB.values():
            assert np.abs(bare - np.array(rgb)).sum(1).min() > 60, (background, rgb)


@pytest.mark.parametrize("motion", list(DIRS))
def test_straight_motion_moves_speed_pixels_per_frame(motion):
    clip = render_clip(prompt(motion=motion), 5, seed=7)
    dx, dy = DIRS[motion]
    assert clip.speed == 2
    assert np.all(wrapped_step(clip, "x") == dx * clip.speed)
    assert np.all(wrapped_step(clip, "y") == dy * clip.speed)
    x, y = clip.column("x"), clip.column("y")
    steps = np.diff(x if dx else y)
    assert np.all(steps[np.abs(steps) < 100] == (dx or dy) * clip.speed)  # frame coords too, between wraps
    assert np.all(clip.column("vx") == dx * 2) and np.all(clip.column("vy") == dy * 2)


def test_standing_still_stays_put():
    clip = render_clip(prompt(motion="standing still"), 3, seed=2)
    assert len(set(zip(clip.column("x"), clip.column("y")))) == 1
    assert all(np.array_equal(f, clip.frames[0]) for f in clip.frames)


def test_bouncing_reflects_on_both_axes_and_stays_in_view():
    clip = render_clip(prompt(motion="bouncing around"), 5, seed=4)
    x, y, vx, vy = (clip.column(k) for k in ("x", "y", "vx", "vy"))
    assert np.all(clip.column("visible_fraction") == 1.0)  # its arena is the still camera's view
    assert set(np.abs(vx)) == {2} and set(np.abs(vy)) == {2}
    r = clip.radius
    for pos, vel in ((x, vx), (y, vy)):
        flips = np.flatnonzero(np.sign(vel[1:]) != np.sign(vel[:-1])) + 1
        assert len(flips) >= 1
        assert np.all(np.abs(np.diff(pos)) <= 2)
        inside = (pos >= r) & (pos <= 127 - r)  # the arena: the whole object in view
        assert inside.all()
        for f in flips:  # a bounce: the old motion would have crossed the wall, the new one moves away
            assert not r <= pos[f - 1] + vel[f - 1] <= 127 - r
            assert pos[f] - pos[f - 1] != vel[f - 1]
            if f + 1 < len(pos):
                assert pos[f + 1] - pos[f] == vel[f]


# ---------------------------------------------------------------- the background is fixed in the world

def test_long_static_background_never_drifts():
    clip = render_clip(prompt("blue", "triangle", "moving left", "brown"), 60, seed=11, scenario="long_static")
    assert len(clip.frames) == 960 and clip.revisits == []
    assert len(set(zip(clip.column("camera_x"), clip.column("camera_y")))) == 1
    assert all(background_equal(clip, 0, i) for i in range(0, 960, 7)) and background_equal(clip, 0, 959)
    far = ~(clip.object_mask(0) | clip.object_mask(959))
    r, c = np.argwhere(far)[len(np.argwhere(far)) // 2]
    assert np.array_equal(clip.frames[0, r, c], clip.frames[-1, r, c])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pan_and_return_revisits_the_same_background(seed):
    clip = render_clip(prompt("green", "square", "bouncing around", "black"), 5, seed=seed,
                       scenario="pan_and_return")
    cams = np.stack([clip.column("camera_x"), clip.column("camera_y")], 1)
    world = np.array(clip.world_size[::-1])
    away = (cams - cams[0] + world // 2) % world - world // 2
    assert np.abs(away).max(0).max() == 128  # the view leaves its start region entirely
    assert not background_equal(clip, 0, int(np.abs(away).sum(1).argmax()))
    assert (79, 0) in clip.revisits and np.array_equal(cams[-1], cams[0])
    for i, j in clip.revisits:
        assert j < i and np.array_equal(cams[i], cams[j])
        assert background_equal(clip, i, j), (i, j)


# ---------------------------------------------------------------- wraparound

@pytest.mark.parametrize("motion", list(DIRS))
def test_wraparound_leaves_and_reenters_where_expected(motion):
    clip = render_clip(prompt("orange", "triangle", motion, "gray"), 5, seed=5, scenario="wraparound")
    visible = clip.column("visible")
    gone = np.flatnonzero(~visible)
    assert visible[0] and len(gone) > 10 and visible[-1] and gone[0] > 0 and gone[-1] < len(visible) - 1
    assert np.all(np.diff(gone) == 1)  # one continuous absence
    dx, dy = DIRS[motion]
    first = clip.records[0]
    back = clip.records[gone[-1] + 1]
    world_h, world_w = clip.world_size
    assert back.world_x == (first.world_x + dx * 2 * back.index) % world_w
    assert back.world_y == (first.world_y + dy * 2 * back.index) % world_h
    assert 0 <= back.x < 128 and 0 <= back.y < 128
    assert tuple(clip.frames[back.index, back.y, back.x]) == COLOR_RGB["orange"]
    edge = back.x if dx else back.y  # the centre just came in at the opposite edge
    assert edge < 2 if (dx or dy) > 0 else edge > 125


def test_wraparound_refuses_what_cannot_wrap():
    with pytest.raises(ValueError, match="standing still"):
        render_clip(prompt(motion="standing still"), 5, seed=0, scenario="wraparound")
    need = min_frames("wraparound", make_geometry(128, 16))
    with pytest.raises(ValueError, match=f"at least {need} frames"):
        render_clip(prompt(), 2, seed=0, scenario="wraparound")


# ---------------------------------------------------------------- prompt switch

def switch_clip(field: str, base: str):
    for seed in range(200):
        clip = render_clip(base, 5, seed=seed, scenario="prompt_switch")
        old, new = parse_prompt(clip.segments[0][1]), parse_prompt(clip.segments[1][1])
        if getattr(old, field) != getattr(new, field):
            return clip, old, new
    raise AssertionError(f"no seed switches {field}")


@pytest.mark.parametrize("field", ["color", "shape", "motion"])
def test_prompt_switch_changes_exactly_at_the_switch_frame(field):
    clip, old, new = switch_clip(field, prompt("red", "circle", "moving right", "gray"))
    s = clip.switch_frames[0]
    assert s == 40 and clip.segments[1][0] == s / 16
    assert sum(getattr(old, f) != getattr(new, f) for f in ("color", "shape", "motion", "background")) == 1
    assert all(r.prompt == old.text for r in clip.records[:s]) and all(r.prompt == new.text for r in clip.records[s:])
    before, at = clip.records[s - 1], clip.records[s]
    assert before.visible and at.visible  # the switch is on screen
    assert tuple(clip.frames[s - 1, before.y, before.x]) == COLOR_RGB[old.color]
    assert tuple(clip.frames[s, at.y, at.x]) == COLOR_RGB[new.color]
    assert background_equal(clip, s - 1, s) and background_equal(clip, 0, len(clip.frames) - 1)
    if field == "shape":
        assert clip.object_mask(s - 1).sum() != clip.object_mask(s).sum()  # fully visible: the area is the shape's
    if field == "motion":
        step = (at.world_x - before.world_x, at.world_y - before.world_y)
        assert (at.vx, at.vy) != (before.vx, before.vy)
        if new.motion in DIRS:
            assert step == tuple(2 * d for d in DIRS[new.motion])


def test_prompt_switch_stays_in_its_split():
    for combo in HELD_OUT_COMBOS[:3] + TRAIN_COMBOS[:3]:
        for seed in range(10):
            clip = render_clip(make_prompt(combo[0], combo[1], "moving up", combo[2]), 1, seed=seed,
                               scenario="prompt_switch")
            assert len({split_of(parse_prompt(p)) for _, p in clip.segments}) == 1


def test_timeline_of_segments_switches_background_but_keeps_texture():
    timeline = [(0.0, prompt(background="gray")), (1.0, prompt(background="purple"))]
    clip = render_clip(timeline, 2, seed=9)
    assert clip.switch_frames == [16] and clip.segments == timeline
    assert Timeline.from_dict(clip.timeline()).segments[1].prompt == timeline[1][1]
    plain = render_clip(prompt(background="purple"), 2, seed=9)
    assert np.array_equal(clip.frames[16:], plain.frames[16:])  # same world, same path, other base colour
    assert clip.records[15].background == "gray" and clip.records[16].background == "purple"


# ---------------------------------------------------------------- determinism and textures

def test_same_seed_same_clip_other_seed_other_texture():
    a = render_clip(prompt(motion="bouncing around"), 2, seed=21, scenario="pan_and_return")
    b = render_clip(prompt(motion="bouncing around"), 2, seed=21, scenario="pan_and_return")
    assert np.array_equal(a.frames, b.frames) and a.records == b.records and a.revisits == b.revisits
    shades = [make_texture(np.random.default_rng([seed, 0]), 64, 64) for seed in range(12)]
    assert {kind for kind, _ in shades} == set(TEXTURES)
    for i in range(len(shades)):
        for j in range(i):
            assert not np.array_equal(shades[i][1], shades[j][1])
    c = render_clip(prompt(motion="standing still"), 0.25, seed=1)
    d = render_clip(prompt(motion="standing still"), 0.25, seed=2)
    assert not np.array_equal(c.frames, d.frames)


def test_bad_arguments_name_the_bad_value():
    cases = [({"scenario": "spin"}, "unknown scenario 'spin'; accepted: plain"),
             ({"seconds": 0}, r"seconds must be a number in \(0, 600\]"),
             ({"size": 8}, r"frame height must be an int in \[16, 2048\], got 8"),
             ({"fps": 0}, r"fps must be an int in \[1, 120\]"),
             ({"seed": -1}, "seed must be an int")]
    for kwargs, message in cases:
        args = {"spec_or_prompt": prompt(), "seconds": 1, "seed": 0, **kwargs}
        with pytest.raises(ValueError, match=message):
            render_clip(**args)
    with pytest.raises(ValueError, match="first segment must start at 0"):
        render_clip([(0.5, prompt())], 1, seed=0)
    with pytest.raises(ValueError, match="unknown color 'pink'"):
        render_clip(prompt(color="pink"), 1, seed=0)


# ---------------------------------------------------------------- held-out split and sampling

def test_held_out_split_is_a_compositional_tenth():
    assert len(HELD_OUT_COMBOS) >= 0.1 * len(ALL_COMBOS) == 7.2 and len(ALL_COMBOS) == 72
    assert set(TRAIN_COMBOS) | set(HELD_OUT_COMBOS) == set(ALL_COMBOS)
    assert not set(TRAIN_COMBOS) & set(HELD_OUT_COMBOS)
    for axis, values in enumerate((COLORS, SHAPES, BACKGROUNDS)):
        assert {c[axis] for c in TRAIN_COMBOS} == set(values)
    for held in HELD_OUT_COMBOS:  # every pair inside a held-out combo is seen in training
        for a, b in ((0, 1), (0, 2), (1, 2)):
            assert any(t[a] == held[a] and t[b] == held[b] for t in TRAIN_COMBOS)
    assert is_held_out(*HELD_OUT_COMBOS[0]) and not is_held_out(*TRAIN_COMBOS[0])
    with pytest.raises(ValueError, match="unknown shape 'cube'; accepted: circle, square, triangle"):
        is_held_out("red", "cube", "gray")


def test_samplers_respect_the_split():
    rng = np.random.default_rng(0)
    train = [parse_prompt(sample_prompt(rng, "train")) for _ in range(400)]
    held = [parse_prompt(sample_prompt(rng, "heldout")) for _ in range(200)]
    assert not any(is_held_out(*s.combo) for s in train)
    assert all(is_held_out(*s.combo) for s in held) and {s.combo for s in held} == set(HELD_OUT_COMBOS)
    assert {s.motion for s in train} == set(MOTIONS)
    assert sample_spec(5) == sample_spec(5)
    with pytest.raises(ValueError, match="unknown split 'test'; accepted: train, heldout"):
        sample_prompt(rng, "test")


def test_training_clips_mix_scenarios_and_never_show_held_out():
    rng = np.random.default_rng(1)
    scenarios = set()
    for _ in range(16):
        clip = sample_training_clip(rng, seconds=5, size=64)
        assert clip.frames.shape == (80, 64, 64, 3)
        assert not any(is_held_out(*parse_prompt(p).combo) for _, p in clip.segments)
        scenarios.add(clip.scenario)
    assert scenarios == {"plain", "pan_and_return", "wraparound", "prompt_switch"}
    short = {sample_training_clip(rng, seconds=2, size=32).scenario for _ in range(20)}
    assert "wraparound" not in short
    held = sample_training_clip(np.random.default_rng(2), seconds=1, size=32, split="heldout")
    assert is_held_out(*parse_prompt(held.prompt).combo)


# ---------------------------------------------------------------- grammar

def test_parse_prompt_round_trips_every_prompt():
    prompts = all_prompts()
    assert len(prompts) == 6 * 3 * 6 * 4 and set(" ".join(prompts).split()) <= set(vocabulary())
    for text in prompts:
        assert parse_prompt(text).text == text
    assert parse_prompt("  A Red   circle MOVING right on a gray background ") == PromptSpec(
        "red", "circle", "moving right", "gray")


@pytest.mark.parametrize("text, message", [
    ("a pink circle moving right on a gray background",
     "unknown color 'pink'; accepted: red, green, blue, yellow, white, orange"),
    ("a red cube moving right on a gray background", "unknown shape 'cube'; accepted: circle, square, triangle"),
    ("a red circle jumping around on a gray background", "unknown motion 'jumping around'; accepted: moving left"),
    ("a red circle moving right on a green background", "unknown background 'green'; accepted: black, gray"),
    ("a red circle on a gray background", "does not follow the template"),
    ("", "does not follow the template"),
])
def test_parse_prompt_rejects_unknown_words(text, message):
    with pytest.raises(ValueError, match=message):
        parse_prompt(text)
    assert TEMPLATE.count("{") == 4
