"""The prompt grammar of the procedural world: "a {color} {shape} {motion} on a {background} background".

`make_prompt` writes a prompt, `parse_prompt` reads one back into a `PromptSpec`. The word lists and
their order are fixed: the shipped word-level tokenizer is built from `vocabulary()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COLORS = ("red", "green", "blue", "yellow", "white", "orange")
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "bouncing around", "standing still")
BACKGROUNDS = ("black", "gray", "purple", "brown")
TEMPLATE = "a {color} {shape} {motion} on a {background} background"


def vocabulary() -> list[str]:
    """Every word a prompt of this world may use, in a fixed order."""
    words: list[str] = []
    for phrase in (TEMPLATE.format(color="", shape="", motion="", background=""),
                   *COLORS, *SHAPES, *MOTIONS, *BACKGROUNDS):
        for word in phrase.split():
            if word not in words:
                words.append(word)
    return words


def make_prompt(color: str, shape: str, motion: str, background: str) -> str:
    return TEMPLATE.format(color=color, shape=shape, motion=motion, background=background)


FIELDS = ("color", "shape", "motion", "background")
_ACCEPTED = {"color": COLORS, "shape": SHAPES, "motion": MOTIONS, "background": BACKGROUNDS}
# Motions are two words, every other field one word; matched after lower-casing and collapsing spaces,
# the same normalisation as the shipped word-level tokenizer.
_PATTERN = re.compile(r"a (?P<color>\S+) (?P<shape>\S+) (?P<motion>\S+ \S+) on a (?P<background>\S+) background")


def accepted_values(field: str) -> tuple[str, ...]:
    """The values a prompt field may take: `field` is one of FIELDS."""
    if field not in _ACCEPTED:
        raise ValueError(f"unknown prompt field {field!r}; accepted: {', '.join(FIELDS)}")
    return _ACCEPTED[field]


def check_value(field: str, value: str) -> str:
    """`value` if it is an accepted value of `field`; else a ValueError naming it and listing the accepted ones."""
    accepted = accepted_values(field)
    if value not in accepted:
        raise ValueError(f"unknown {field} {value!r}; accepted: {', '.join(accepted)}")
    return value


@dataclass(frozen=True)
class PromptSpec:
    """One prompt of the grammar, as its four fields (validated on construction)."""

    color: str
    shape: str
    motion: str
    background: str

    def __post_init__(self) -> None:
        for field in FIELDS:
            check_value(field, getattr(self, field))

    @property
    def text(self) -> str:
        return make_prompt(self.color, self.shape, self.motion, self.background)

    @property
    def combo(self) -> tuple[str, str, str]:
        """(color, shape, background): the key of the held-out split (motion is free)."""
        return (self.color, self.shape, self.background)

    def __str__(self) -> str:
        return self.text


def parse_prompt(text: str) -> PromptSpec:
    """Invert TEMPLATE (case and spacing are ignored); a ValueError names the bad word and the accepted values."""
    if not isinstance(text, str):
        raise ValueError(f"prompt must be a string, got {type(text).__name__}")
    normal = " ".join(text.lower().split())
    match = _PATTERN.fullmatch(normal)
    if match is None:
        raise ValueError(f"prompt {text!r} does not follow the template {TEMPLATE!r}")
    for field in FIELDS:
        try:
            check_value(field, match[field])
        except ValueError as err:
            raise ValueError(f"{err} (in prompt {text!r})") from None
    return PromptSpec(**match.groupdict())


def all_prompts() -> list[str]:
    """Every prompt of the grammar (6 colours x 3 shapes x 6 motions x 4 backgrounds = 432), in a fixed order."""
    return [make_prompt(c, s, m, b) for c in COLORS for s in SHAPES for m in MOTIONS for b in BACKGROUNDS]
