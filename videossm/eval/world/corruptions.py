"""Renderer clips spoiled on purpose, each in the way one world metric must notice.

A renderer clip is a perfect video of its timeline; these functions return copies of its frames (uint8
[T, H, W, 3]) that are wrong in one known way, from frame `start` on. The tests check that every metric
scores the clean clip well and its corruption badly (and that the other metrics are not fooled).
"""

from __future__ import annotations

import numpy as np

from ...world import COLOR_RGB, Clip


def frozen(clip: Clip, start: int) -> np.ndarray:
    """The picture stops at frame `start` (a generator that stalls)."""
    frames = clip.frames.copy()
    frames[start:] = frames[start]
    return frames


def object_masks(clip: Clip) -> np.ndarray:
    """bool [T, H, W]: the object's pixels per frame (ground truth)."""
    return np.stack([clip.object_mask(t) for t in range(len(clip.frames))])


def color_swapped(clip: Clip, color: str, start: int = 0) -> np.ndarray:
    """The object is painted `color` from `start` on (wrong colour adherence, or a switch never taken)."""
    frames = clip.frames.copy()
    masks = object_masks(clip)
    frames[start:][masks[start:]] = COLOR_RGB[color]
    return frames


def background_replaced(clip: Clip, other: Clip, start: int) -> np.ndarray:
    """From `start` on, every background pixel comes from `other` (another world), the object kept."""
    if other.frames.shape != clip.frames.shape:
        raise ValueError(f"clips differ in shape: {clip.frames.shape} vs {other.frames.shape}")
    frames = clip.frames.copy()
    keep = object_masks(clip)[start:]
    frames[start:][~keep] = other.frames[start:][~keep]
    return frames


def background_recoloured(clip: Clip, start: int) -> np.ndarray:
    """From `start` on, background pixels have their colour channels rotated: the same texture, other colours
    (a memory that kept the layout but forgot the look)."""
    frames = clip.frames.copy()
    keep = object_masks(clip)[start:]
    part = frames[start:]
    part[~keep] = part[~keep][:, [1, 2, 0]]
    return frames


def noisy(clip: Clip, sigma: float, seed: int = 0) -> np.ndarray:
    """Independent Gaussian pixel noise of `sigma` (0..255 scale) on every frame."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, sigma, clip.frames.shape)
    return np.clip(clip.frames + noise, 0, 255).astype(np.uint8)


def forgetful(clip: Clip, window_frames: int, other_seed: int) -> np.ndarray:
    """The clip as a memory of `window_frames` frames would make it: a world pixel that has been out of view
    for longer than the window is re-invented (taken from the world of `other_seed`) when it comes back
    into view, and kept from then on. Frame to frame the video stays consistent (so the camera can be
    tracked); only a revisit after a long absence differs from the first visit. A window longer than the
    clip gives back the clip's own frames."""
    from ...world.renderer import make_texture, paint_background

    world_h, world_w = clip.world_size
    height, width = clip.frames.shape[1:3]
    if len({r.background for r in clip.records}) != 1:
        raise ValueError("forgetful() needs a clip with one background")
    background = clip.records[0].background
    worlds = [paint_background(make_texture(np.random.default_rng([seed, 0]), world_h, world_w)[1], background)
              for seed in (clip.seed, other_seed)]  # [Hw, Ww, 3] each: the clip's world and the re-invented one
    canvas = worlds[0].copy()
    last_seen = np.full((world_h, world_w), -1, np.int64)
    frames = np.empty_like(clip.frames)
    for t, rec in enumerate(clip.records):
        view = np.ix_((rec.camera_y + np.arange(height)) % world_h, (rec.camera_x + np.arange(width)) % world_w)
        seen = last_seen[view]
        stale = (seen >= 0) & (t - seen > window_frames)
        patch = canvas[view]
        patch[stale] = worlds[1][view][stale]
        canvas[view] = patch
        last_seen[view] = t
        frames[t] = patch
        mask = clip.object_mask(t)
        frames[t][mask] = clip.frames[t][mask]
    return frames


def validation_report(probe, size: int = 64) -> str:
    """Markdown: the metrics of renderer clips and of their corruptions (the tests' cases, as a table).

        python -m videossm.eval.world.corruptions      # prints it
    """
    from ...world import render_clip
    from .metrics import video_metrics

    def row(name: str, frames, clip, keys) -> str:
        s = video_metrics(frames, clip.segments, clip.fps, probe)["scalars"]
        return f"| {name} | " + ", ".join(f"{k} {s[k]:.3f}" for k in keys) + " |"

    lines = ["| video | metrics |", "|---|---|"]
    bounce = render_clip("a blue square bouncing around on a brown background", 6, seed=1, size=size,
                         scenario="long_static")
    other = render_clip("a blue square bouncing around on a brown background", 6, seed=2, size=size,
                        scenario="long_static")
    keys = ("color_adherence_10s", "shape_adherence_10s", "direction_adherence_10s", "moving_fraction",
            "max_frozen_s", "drift_end", "flicker")
    lines.append(row("renderer, bouncing, 6 s", bounce.frames, bounce, keys))
    lines.append(row("... colour swapped to green", color_swapped(bounce, "green"), bounce, keys))
    lines.append(row("... frozen from 1 s", frozen(bounce, 16), bounce, keys))
    lines.append(row("... background replaced from 3 s", background_replaced(bounce, other, 48), bounce, keys))
    lines.append(row("... noise sigma 20", noisy(bounce, 20.0), bounce, keys))
    switch = render_clip("a red circle moving right on a gray background", 6, seed=4, size=size,
                         scenario="prompt_switch")
    keys = ("switch_within_limit", "switch_response_s", "switch_background_survived")
    lines.append(row("renderer, shape switch at 3 s", switch.frames, switch, keys))
    lines.append(row("... switch never taken", render_clip(switch.segments[0][1], 6, seed=4, size=size).frames,
                     switch, keys))
    lines.append(row("... background replaced at the switch",
                     background_replaced(switch, render_clip(switch.prompt, 6, seed=9, size=size),
                                         switch.switch_frames[0]), switch, keys))
    pan = render_clip("a green triangle standing still on a purple background", 6, seed=3, size=size,
                      scenario="pan_and_return")
    keys = ("revisits", "revisit_mae", "drift_end")
    lines.append(row("renderer, pan and return", pan.frames, pan, keys))
    lines.append(row("... forgetful (1 s memory)", forgetful(pan, 16, 99), pan, keys))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from .probe import load_probe

    print(validation_report(load_probe()))
