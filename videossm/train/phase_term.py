"""A pixel loss that forgives the object's timing: each generated block is compared with the clip drawn with the
object up to `phase` frames early or late along its own motion, and the best-matching timing counts.

Why. The rollout stage's pixel loss asks for the object at one exact place in every frame. Where the student
cannot know that place to the frame, above all when a wrapped object comes back after seconds out of view,
the cheapest answer under a squared error is the mean of the places it might be: a faint smear that the
decoder renders as background, and the object fades (docs/TRAINING.md). With a choice of timings, a sharp
object drawn a few frames early or late costs nothing, while a smear still costs at every timing, so
committing to one object pays. This is the winner-takes-all ("multiple hypothesis") remedy for regression to
the mean, restricted to the world's one real doubt: when, not what or where across the motion.

The candidates are exact: the background is the clip's own world re-rendered without the object
(`world.background_frames`), and the object is pasted at its centre plus phase x its velocity in that frame
(`Clip.object_mask(index, phase)`) in its exact colour, so phase 0 is the clip itself. The timing is chosen
per clip and block (each block may be late by its own amount), or with `per="clip"` once per clip for the
whole rollout from the blocks' mean losses (a lag cannot grow past the tolerance); never with gradient
through the choice.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..world import Clip, background_frames
from .color_term import object_rgb


@dataclasses.dataclass
class PhaseTargets:
    """The clips' frames without the object, and where the object would be at each timing."""

    background: torch.Tensor  # [B, 3, T, H, W] in [-1, 1]
    masks: torch.Tensor  # [B, K, T, H, W] bool, K = 2 x phase + 1 timings from -phase to +phase frames
    rgb: torch.Tensor  # [B, 3, T] the object's exact colour in each frame, in [-1, 1]

    def to(self, device) -> "PhaseTargets":
        return PhaseTargets(self.background.to(device), self.masks.to(device), self.rgb.to(device))

    def span(self, p0: int, p1: int) -> "PhaseTargets":
        return PhaseTargets(self.background[:, :, p0:p1], self.masks[:, :, p0:p1], self.rgb[:, :, p0:p1])


def phase_targets(clips: list[Clip], n_frames: int, phase: int, start: int = 0) -> PhaseTargets:
    """Frames start .. n_frames - 1 of each clip, with the object's masks at timings -phase..phase frames."""
    if phase < 0:
        raise ValueError(f"phase must be >= 0 frames, got {phase!r}")
    if not 0 <= start < n_frames:
        raise ValueError(f"start must be in [0, {n_frames}), got {start!r}")
    background = np.stack([background_frames(c)[start:n_frames] for c in clips])  # [B, T, H, W, 3] uint8
    masks = np.stack([np.stack([np.stack([c.object_mask(i, k) for i in range(start, n_frames)])
                                for k in range(-phase, phase + 1)]) for c in clips])  # [B, K, T, H, W]
    rgb = torch.stack([object_rgb([r.color for r in c.records[start:n_frames]]) for c in clips])  # [B, T, 3]
    return PhaseTargets(background=torch.from_numpy(background).permute(0, 4, 1, 2, 3).float() / 127.5 - 1,
                        masks=torch.from_numpy(masks), rgb=rgb.permute(0, 2, 1))


def timing_order(phase: int) -> list[int]:
    """0, -1, 1, -2, 2, ... phase: the order of the candidates, so that among equal losses the nearest wins."""
    return sorted(range(-phase, phase + 1), key=lambda k: (abs(k), k))


def timing_losses(pred: torch.Tensor, targets: PhaseTargets, object_weight: float) -> torch.Tensor:
    """pred [B, 3, T, H, W]; targets over the same frames. [B, K]: per clip, the object-weighted MSE (object
    pixels count `object_weight` times, as in the exact pixel loss) against the clip drawn at each timing of
    `timing_order`, so column 0 is the exact clip."""
    phase = targets.masks.shape[1] // 2
    per_timing = []
    for k in timing_order(phase):
        mask = targets.masks[:, phase + k, None]  # [B, 1, T, H, W]
        target = torch.where(mask, targets.rgb[:, :, :, None, None], targets.background)  # [B, 3, T, H, W]
        weight = 1 + (object_weight - 1) * mask.float()
        per_timing.append((weight * (pred - target) ** 2).sum((1, 2, 3, 4)) / (3 * weight.sum((1, 2, 3, 4))))
    return torch.stack(per_timing, 1)


def choose_timing(losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """losses [B, K] in `timing_order`. (Mean over clips of each clip's least loss [], its timing in frames [B]);
    the choice itself carries no gradient."""
    best = losses.detach().argmin(1)  # [B] the first least: the nearest timing among equals
    timings = torch.tensor(timing_order(losses.shape[1] // 2), device=losses.device)
    return losses.gather(1, best[:, None])[:, 0].mean(), timings[best]


def phase_tolerant_mse(pred: torch.Tensor, targets: PhaseTargets, object_weight: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One span's timing-tolerant loss: (the mean over clips of the least of `timing_losses` [], each clip's
    chosen timing in frames [B], the exact timing's loss [])."""
    losses = timing_losses(pred, targets, object_weight)  # [B, K]
    chosen, timing = choose_timing(losses)
    return chosen, timing, losses[:, 0].mean()
