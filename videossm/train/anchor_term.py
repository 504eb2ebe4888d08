"""A first-block anchor for the rollout stage: the block a stream starts with, from noise and an empty cache,
stays what the starting student made of the same noise.

Why. The rollout stage starts every rollout from a clip's context blocks, encoded by the VAE, so it never
asks the student for the first block of a stream, the one inference makes from noise with only the prompt.
That path still moves with every update (it is the same network), unjudged. Measured on the rollout runs'
eval videos (docs/TRAINING.md, "Keeping the first block"), held-out colour in the first 10 s fell because
the first block had changed: half the held-out videos never drew the object, the rest drew orange as red,
and a stream continues its own past. With this term held-out colour came back (0.30 -> 0.97).

The term: each step, a fresh stream of the clips' prompts and the same seed for the student and for a frozen
anchor (the starting student), its first block denoised to the same random exit step (Self-Forcing's,
the student's call keeping its graph), and the mean squared difference of the two x0 latents [B, C, F, h, w].
No clip and no decoder are needed; the rollout's other terms judge every later block.
"""

from __future__ import annotations

import torch

from ..config import ConfigError
from ..sampling.stream import StreamingGenerator


def check_anchor(anchor_pipe, student_pipe, anchor_dir: str, student_dir: str) -> None:
    """The anchor must be a model of the student's shape that reads the student's prompt embeddings."""
    if anchor_pipe.transformer.config.to_dict() != student_pipe.transformer.config.to_dict():
        raise ConfigError(f"--anchor {anchor_dir}: its transformer config differs from --student {student_dir}'s")
    anchor_text = anchor_pipe.text_encoder.model.state_dict()
    student_text = student_pipe.text_encoder.model.state_dict()
    if anchor_text.keys() != student_text.keys() or any(not torch.equal(anchor_text[k], student_text[k])
                                                         for k in student_text):
        raise ConfigError(f"--anchor {anchor_dir}: its text encoder differs from --student {student_dir}'s, so "
                          f"it would read the student's prompt embeddings as other prompts")


def first_block(generator: StreamingGenerator, text: torch.Tensor, exit_step: int, seed: int,
                grad: bool) -> torch.Tensor:
    """The first block's x0 [B, C, F, h, w] of a fresh stream of the prompts `text` [B, L, D] from the noise
    of `seed`, denoised to `exit_step`."""
    state = generator.new_state(seed, batch_size=text.shape[0])
    generator.set_prompt(state, "the clips' prompts", text)
    return generator.denoise_block(state, exit_step, grad=grad)


def anchor_term(student: StreamingGenerator, anchor: StreamingGenerator, text: torch.Tensor, exit_step: int,
                seed: int) -> torch.Tensor:
    """Mean squared difference between the student's first block and the frozen anchor's, same noise."""
    with torch.no_grad():
        target = first_block(anchor, text, exit_step, seed, grad=False)
    return (first_block(student, text, exit_step, seed, grad=True) - target).pow(2).mean()
