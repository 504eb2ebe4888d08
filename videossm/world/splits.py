"""Train / held-out split of the world's (color, shape, background) combinations.

Of the 6 x 3 x 4 = 72 combinations, these 8 (11.1%) never appear in training, with any motion:

    red triangle on purple      green circle on brown
    blue square on gray         yellow triangle on black
    white square on purple      orange circle on gray
    red square on brown         blue circle on black

They were picked by hand so that the split tests composition, not unseen words:

- every colour, shape and background still appears in training (each in >= 10 of the 64 train combos);
- no two held-out combos share a (color, shape), (color, background) or (shape, background) pair, so
  every pair inside a held-out combo is seen in training (in 2 to 5 train combos);
- each background is held out exactly twice.

Motion is free in both splits. A prompt switch inside a clip keeps the clip in its split
(see `scenarios.switch_candidates`).
"""

from __future__ import annotations

from itertools import product

import numpy as np

from .grammar import BACKGROUNDS, COLORS, MOTIONS, SHAPES, PromptSpec, check_value

Combo = tuple[str, str, str]  # (color, shape, background)

SPLITS = ("train", "heldout")
ALL_COMBOS: tuple[Combo, ...] = tuple(product(COLORS, SHAPES, BACKGROUNDS))
HELD_OUT_COMBOS: tuple[Combo, ...] = (
    ("red", "triangle", "purple"),
    ("green", "circle", "brown"),
    ("blue", "square", "gray"),
    ("yellow", "triangle", "black"),
    ("white", "square", "purple"),
    ("orange", "circle", "gray"),
    ("red", "square", "brown"),
    ("blue", "circle", "black"),
)
_HELD_OUT = frozenset(HELD_OUT_COMBOS)
TRAIN_COMBOS: tuple[Combo, ...] = tuple(c for c in ALL_COMBOS if c not in _HELD_OUT)


def is_held_out(color: str, shape: str, background: str) -> bool:
    """True when (color, shape, background) is kept out of training; unknown words raise ValueError."""
    check_value("color", color)
    check_value("shape", shape)
    check_value("background", background)
    return (color, shape, background) in _HELD_OUT


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    return split


def split_of(spec: PromptSpec) -> str:
    return "heldout" if is_held_out(*spec.combo) else "train"


def as_rng(rng: np.random.Generator | int) -> np.random.Generator:
    """A numpy Generator, from itself or from a non-negative int seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy Generator or an int seed >= 0, got {rng!r}")


def sample_spec(rng: np.random.Generator | int, split: str = "train",
                motions: tuple[str, ...] = MOTIONS) -> PromptSpec:
    """A uniformly random prompt of `split`: a combo of that split and a motion from `motions`."""
    rng = as_rng(rng)
    combos = TRAIN_COMBOS if check_split(split) == "train" else HELD_OUT_COMBOS
    for motion in motions:
        check_value("motion", motion)
    if not motions:
        raise ValueError(f"motions must not be empty; accepted: {', '.join(MOTIONS)}")
    color, shape, background = combos[int(rng.integers(len(combos)))]
    motion = motions[int(rng.integers(len(motions)))]
    return PromptSpec(color, shape, motion, background)


def sample_prompt(rng: np.random.Generator | int, split: str = "train") -> str:
    """The text of `sample_spec(rng, split)`."""
    return sample_spec(rng, split).text
