"""The procedural training world: prompts (grammar), the held-out split (splits), scenarios and the renderer.

    clip = render_clip("a red circle moving right on a gray background", seconds=5, seed=0)
    clip.frames        # uint8 [80, 128, 128, 3] at clip.fps = 16
    clip.records[i]    # FrameRecord: object centre (frame and world pixels), visibility, camera, prompt, ...
    clip.segments      # [(0.0, prompt), ...]
    clip = sample_training_clip(np.random.default_rng(0), seconds=5)   # train prompts, mixed scenarios
"""

from .grammar import (BACKGROUNDS, COLORS, FIELDS, MOTIONS, SHAPES, TEMPLATE, PromptSpec, all_prompts,
                      make_prompt, parse_prompt, vocabulary)
from .renderer import (BACKGROUND_RGB, COLOR_RGB, TEXTURES, TRAINING_MIXTURE, Clip, FrameRecord, background_frames,
                       render_clip, sample_training_clip, shape_mask)
from .scenarios import SCENARIOS, WORLD_SCALE, Geometry, make_geometry, min_frames, switch_candidates
from .splits import (ALL_COMBOS, HELD_OUT_COMBOS, SPLITS, TRAIN_COMBOS, is_held_out, sample_prompt, sample_spec,
                     split_of)

__all__ = [
    "ALL_COMBOS", "BACKGROUNDS", "BACKGROUND_RGB", "COLORS", "COLOR_RGB", "Clip", "FIELDS", "FrameRecord",
    "Geometry", "HELD_OUT_COMBOS", "MOTIONS", "PromptSpec", "SCENARIOS", "SHAPES", "SPLITS", "TEMPLATE",
    "TEXTURES", "TRAINING_MIXTURE", "TRAIN_COMBOS", "WORLD_SCALE", "all_prompts", "background_frames", "is_held_out",
    "make_geometry", "make_prompt", "min_frames", "parse_prompt", "render_clip", "sample_prompt", "sample_spec",
    "sample_training_clip", "shape_mask", "split_of", "switch_candidates", "vocabulary",
]
