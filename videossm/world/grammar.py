"""The prompt grammar of the procedural world: "a {color} {shape} {motion} on a {background} background"."""

from __future__ import annotations

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
