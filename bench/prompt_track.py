"""What does one prompt's video show, span by span? The world probe's reading of a long generation.

    PYTHONPATH=. python bench/prompt_track.py MODEL [--prompt "..."] [--seconds 60] [--seeds 0,1] [--span 10]
        [--switch-to "..." --switch-at 5] [--window N] [--sink N]
    PYTHONPATH=. python bench/prompt_track.py renderer --seeds 0,1,2,3   # the world's own videos of the prompt

For each seed it generates the prompt and prints, per span of `--span` seconds: the share of frames that
show the object, the probe's majority colour and shape over those frames (with their share), and the mean
velocity in px/s (x right, y down) over the span's 1 s windows that show the object (`motion_words.py`).
The issue's example, "a red circle moving right on a gray background" for 60 s, is the default. With
`--switch-to` the prompt changes at `--switch-at` seconds (the app's timeline, KV re-cache), and `--span 1`
shows second by second how the object answers. Each seed ends with the share of the video that shows the
object and how many spans show it, and several seeds end with their mean. MODEL `renderer` reads the world's
own video of the prompt (the `plain` scenario of that seed): what a generator's share should come near.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.motion_words import window_velocities
from videossm.eval.world.probe import load_probe
from videossm.pipeline import VideoSSMPipeline
from videossm.world import COLORS, SHAPES, render_clip
from videossm.world.renderer import DEFAULT_FPS


def track(frames: np.ndarray, probe, fps: int, span_frames: int) -> list[dict]:
    """frames uint8 [T, H, W, 3]. Per span of `span_frames`: start/stop (s), the share of frames showing the
    object, the probe's majority colour and shape with their shares (None when not shown), and the mean
    velocity in px/s over the span's 1 s windows that show it with their count (None when there are none)."""
    reading, (height, width) = probe.read(frames), frames.shape[1:3]
    rows = []
    for start in range(0, len(frames), span_frames):
        part = slice(start, start + span_frames)
        shown = reading.present[part] > 0.5
        row = {"start": start / fps, "stop": min(start + span_frames, len(frames)) / fps,
               "present": float(shown.mean()), "colour": None, "shape": None, "velocity": None, "windows": 0}
        if shown.any():
            colours = np.bincount(reading.color[part][shown].argmax(1), minlength=len(COLORS))
            shapes = np.bincount(reading.shape[part][shown].argmax(1), minlength=len(SHAPES))
            row["colour"] = (COLORS[colours.argmax()], colours.max() / shown.sum())
            row["shape"] = (SHAPES[shapes.argmax()], shapes.max() / shown.sum())
        v = window_velocities(reading.x[part] * width, reading.y[part] * height, reading.present[part], fps,
                              skip_seconds=0)
        if v:
            row["velocity"], row["windows"] = tuple(float(c) for c in np.mean(v, axis=0)), len(v)
        rows.append(row)
    return rows


def row_text(row: dict) -> str:
    cells = [f"  {row['start']:5.1f}-{row['stop']:5.1f} s", f"present {row['present']:.2f}"]
    if row["colour"]:
        cells += [f"colour {row['colour'][0]} {row['colour'][1]:.2f}", f"shape {row['shape'][0]} {row['shape'][1]:.2f}"]
    if row["velocity"]:
        cells.append(f"velocity {row['velocity'][0]:+5.1f},{row['velocity'][1]:+5.1f} px/s ({row['windows']} windows)")
    return " | ".join(cells)


def in_view(rows: list[dict]) -> float:
    """The share of the whole video that shows the object (spans weighted by their length)."""
    return sum(r["present"] * (r["stop"] - r["start"]) for r in rows) / sum(r["stop"] - r["start"] for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="checkpoint folder or preset")
    p.add_argument("--prompt", default="a red circle moving right on a gray background")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--span", type=float, default=10.0, help="seconds per printed row")
    p.add_argument("--switch-to", default=None, help="a second prompt, from --switch-at on")
    p.add_argument("--switch-at", type=float, default=5.0, help="seconds into the video of the switch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--window", type=int, default=None, help="local window in latent frames (default: the model's)")
    p.add_argument("--sink", type=int, default=None, help="sink frames (default: the model's)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    probe, world = load_probe(None), args.model == "renderer"
    if world and (args.switch_to or args.window or args.sink):
        p.error("renderer reads the world's own video of one prompt: no --switch-to, --window or --sink")
    if world:
        fps = DEFAULT_FPS
    else:
        overrides = {k: v for k, v in (("window_frames", args.window), ("sink_frames", args.sink)) if v is not None}
        pipe = VideoSSMPipeline.from_pretrained(args.model, **overrides)
        fps = pipe.model_config.fps
    what = args.prompt
    if args.switch_to:
        what = {"fps": fps, "segments": [{"start": 0.0, "prompt": args.prompt},
                                         {"start": args.switch_at, "prompt": args.switch_to}]}
    shares = []
    for seed in seeds:
        if world:
            frames = render_clip(args.prompt, args.seconds, seed, fps=fps).frames
        else:
            frames, _ = pipe.generate(what, seconds=args.seconds, seed=seed)
        switch = f" -> {args.switch_to!r} at {args.switch_at:g} s" if args.switch_to else ""
        print(f"{args.model}, seed {seed}: {args.prompt!r}{switch}")
        rows = track(frames, probe, fps, max(1, round(args.span * fps)))
        for row in rows:
            print(row_text(row), flush=True)
        shares.append(in_view(rows))
        print(f"  in view {shares[-1]:.0%} of the video; {sum(r['present'] > 0 for r in rows)} of {len(rows)} "
              f"spans show it")
    if len(seeds) > 1:
        print(f"{args.model}: in view {np.mean(shares):.0%} of the video over seeds {args.seeds} "
              f"({' / '.join(f'{x:.2f}' for x in shares)})")


if __name__ == "__main__":
    main()
