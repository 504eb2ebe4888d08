"""Does a model follow the motion words? One prompt, every motion, the same seeds.

    PYTHONPATH=. python bench/motion_words.py MODEL [--memory sink] [--seeds 2] [--seconds 8]

For each motion of the grammar it generates "a red circle {motion} on a gray background" from the same
seeds and reads the object's position per frame with the world probe. It prints the mean velocity in px/s
(x right, y down) over 1 s windows that show the object, after the first second, beside the world's
velocity for that motion (32 px/s at 128 px, 16 fps). A model that ignores the motion words draws the
same path for every motion from one seed: the "spread" line, the mean distance between the motions'
velocities per seed, is then near 0.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from videossm.eval.world.probe import load_probe
from videossm.pipeline import VideoSSMPipeline
from videossm.world import MOTIONS, make_geometry
from videossm.world.scenarios import DIRECTIONS


def window_velocities(x: np.ndarray, y: np.ndarray, present: np.ndarray, fps: int,
                      skip_seconds: int = 1) -> list[tuple[float, float]]:
    """(vx, vy) in px/s of each 1 s window, after the first `skip_seconds`, that shows the object in at least
    half its frames."""
    out = []
    for a in range(skip_seconds * fps, len(x) - fps + 1, fps):
        seen = np.where(present[a:a + fps] > 0.5)[0]
        if len(seen) >= fps // 2:
            i, j = a + seen[0], a + seen[-1]
            out.append(((x[j] - x[i]) * fps / (j - i), (y[j] - y[i]) * fps / (j - i)) if j > i else (0.0, 0.0))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="checkpoint folder or preset")
    p.add_argument("--memory", default=None, help="override the checkpoint's memory mode")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = VideoSSMPipeline.from_pretrained(args.model, **({"memory": args.memory} if args.memory else {}))
    cfg = pipe.model_config
    speed = make_geometry(cfg.height, cfg.fps).speed * cfg.fps
    probe = load_probe(None)
    mean_velocity: dict[tuple[str, int], np.ndarray] = {}
    print(f"{args.model}: mean velocity px/s (x right, y down), windows after the first second")
    for motion in MOTIONS:
        cells = []
        for seed in range(args.seeds):
            frames, _ = pipe.generate(f"a red circle {motion} on a gray background", seconds=args.seconds, seed=seed)
            r = probe.read(frames)
            v = window_velocities(r.x * cfg.width, r.y * cfg.height, r.present, cfg.fps)
            mean_velocity[motion, seed] = np.mean(v, axis=0) if v else np.full(2, np.nan)
            cells.append(f"seed {seed}: {mean_velocity[motion, seed][0]:+6.1f},{mean_velocity[motion, seed][1]:+6.1f}"
                         f" ({len(v)} windows)")
        want = np.array(DIRECTIONS.get(motion, (np.nan, np.nan))) * speed
        print(f"  {motion:16s} world {want[0]:+5.0f},{want[1]:+5.0f} | " + " | ".join(cells), flush=True)
    spreads = [np.nanmean([np.linalg.norm(mean_velocity[a, s] - mean_velocity[b, s])
                           for a, b in itertools.combinations(MOTIONS, 2)]) for s in range(args.seeds)]
    straight = [m for m in MOTIONS if m in DIRECTIONS]  # bouncing has no single velocity
    world_spread = np.mean([np.linalg.norm(np.subtract(DIRECTIONS[a], DIRECTIONS[b])) * speed
                            for a, b in itertools.combinations(straight, 2)])
    print(f"  spread between motions, per seed (px/s): {', '.join(f'{x:.1f}' for x in spreads)} "
          f"(the world's: {world_spread:.1f}, bouncing left out)")


if __name__ == "__main__":
    main()
