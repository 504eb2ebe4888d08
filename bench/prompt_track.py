"""What does one prompt's video show, span by span? The world probe's reading of a long generation.

    PYTHONPATH=. python bench/prompt_track.py MODEL [--prompt "..."] [--seconds 60] [--seeds 0,1] [--span 10]
        [--switch-to "..." --switch-at 5] [--window N] [--sink N]

For each seed it generates the prompt and prints, per span of `--span` seconds: the share of frames that
show the object, the probe's majority colour and shape over those frames (with their share), and the mean
velocity in px/s (x right, y down) over the span's 1 s windows that show the object (`motion_words.py`).
The issue's example, "a red circle moving right on a gray background" for 60 s, is the default. With
`--switch-to` the prompt changes at `--switch-at` seconds (the app's timeline, KV re-cache), and `--span 1`
shows second by second how the object answers.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.motion_words import window_velocities
from videossm.eval.world.probe import load_probe
from videossm.pipeline import VideoSSMPipeline
from videossm.world import COLORS, SHAPES


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
    overrides = {k: v for k, v in (("window_frames", args.window), ("sink_frames", args.sink)) if v is not None}
    pipe = VideoSSMPipeline.from_pretrained(args.model, **overrides)
    cfg, probe = pipe.model_config, load_probe(None)
    span = max(1, round(args.span * cfg.fps))
    what = args.prompt
    if args.switch_to:
        what = {"fps": cfg.fps, "segments": [{"start": 0.0, "prompt": args.prompt},
                                             {"start": args.switch_at, "prompt": args.switch_to}]}
    for seed in seeds:
        frames, _ = pipe.generate(what, seconds=args.seconds, seed=seed)
        reading = probe.read(frames)
        switch = f" -> {args.switch_to!r} at {args.switch_at:g} s" if args.switch_to else ""
        print(f"{args.model}, seed {seed}: {args.prompt!r}{switch}")
        for start in range(0, len(frames), span):
            rows = slice(start, start + span)
            shown = reading.present[rows] > 0.5
            cells = [f"  {start / cfg.fps:5.1f}-{min(start + span, len(frames)) / cfg.fps:5.1f} s",
                     f"present {shown.mean():.2f}"]
            if shown.any():
                colours = np.bincount(reading.color[rows][shown].argmax(1), minlength=len(COLORS))
                shapes = np.bincount(reading.shape[rows][shown].argmax(1), minlength=len(SHAPES))
                cells += [f"colour {COLORS[colours.argmax()]} {colours.max() / shown.sum():.2f}",
                          f"shape {SHAPES[shapes.argmax()]} {shapes.max() / shown.sum():.2f}"]
            v = window_velocities(reading.x[rows] * cfg.width, reading.y[rows] * cfg.height,
                                  reading.present[rows], cfg.fps, skip_seconds=0)
            if v:
                vx, vy = np.mean(v, axis=0)
                cells.append(f"velocity {vx:+5.1f},{vy:+5.1f} px/s ({len(v)} windows)")
            print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
