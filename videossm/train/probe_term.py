"""A probe term for the rollout stage: a frozen world probe reads every generated frame and is asked for the
world's answer about it: is the object in view, what colour, what shape.

Why. The pixel loss asks the object to be at one exact place; where the student cannot place a wrapped
object's return it draws the mean, a faint smear that the decoder renders as background (docs/TRAINING.md,
"Self-rollout against the world's frames"). The discriminator rejects smears but knows nothing of the
clip's own truth. The world's records say, frame by frame, whether the object is in view and what it is,
and a probe (`videossm/eval/world/probe.py`) reads exactly that from pixels. Its verdict on a smear is
"no object", so the term makes the student commit to an object of the prompted colour and shape, wherever
it draws it; the pixel loss keeps pulling it to the right place.

The terms, per frame, from the probe's softmax over "centre in cell c" and "no object in view":
- presence: -log P(some cell) where the record says the object is in view (`present_min_visible` of it),
  -log P(no object) where it does not;
- colour and shape: cross-entropy of the probe's heads at the cell it reads the object in (chosen without
  gradient), where enough of the object is in view to name them (`attribute_min_visible`).

Goodhart. The eval-world metrics read the shipped probe (assets/probe). A student trained against that same
probe may learn its blind spots, and the table would flatter it. Train with a probe of its own
(`train probe --seed 1 --out runs/probe-judge`) and check the videos by eye.

Measured (docs/TRAINING.md, "Judging the object wherever it is drawn"): with such a probe, 100 steps taught
the student the judge's blind spot, a lattice of faint dots that raises every cell's score (held-out colour
0.99 -> 0.26). "Some cell" is a logsumexp over cells; many weak detections raise it most cheaply.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
import torch.nn.functional as F

from ..eval.world.probe import PROBE_DIR, ProbeConfig, WorldProbe, load_probe, record_truth


@dataclasses.dataclass
class FrameTruth:
    """The world's answers for every frame of a batch of clips."""

    present: torch.Tensor  # [B, T] bool: enough of the object in view to count as present
    named: torch.Tensor  # [B, T] bool: enough in view to name its colour and shape
    color: torch.Tensor  # [B, T] long, index into COLORS
    shape: torch.Tensor  # [B, T] long, index into SHAPES

    def span(self, start: int, stop: int) -> "FrameTruth":
        return FrameTruth(*(t[:, start:stop] for t in dataclasses.astuple(self)))

    def to(self, device) -> "FrameTruth":
        return FrameTruth(*(t.to(device) for t in dataclasses.astuple(self)))


def clip_truth(clips, frames: int, config: ProbeConfig) -> FrameTruth:
    """FrameTruth [B, frames] of world clips, with the probe's thresholds for present and nameable."""
    rows = np.array([[record_truth(rec, clip.frames.shape[2], clip.frames.shape[1], config)[2:]
                      for rec in clip.records[:frames]] for clip in clips], dtype=np.int64)  # [B, T, 4]
    truth = torch.from_numpy(rows)
    return FrameTruth(truth[..., 0].bool(), truth[..., 1].bool(), truth[..., 2], truth[..., 3])


def load_judge(path: str, device) -> WorldProbe:
    """A frozen probe for the term; warns when it is the one the eval-world metrics read."""
    probe = load_probe(path).to(device).requires_grad_(False)
    if os.path.realpath(path) == os.path.realpath(PROBE_DIR):
        print(f"warning: --probe {path} is the probe eval-world measures with; its table will flatter a student "
              f"trained against it (train a probe of its own: train probe --seed 1 --out runs/probe-judge)")
    return probe


def probe_term(probe: WorldProbe, pixels: torch.Tensor, truth: FrameTruth) -> tuple[torch.Tensor, dict[str, float]]:
    """pixels [B, 3, T, H, W] in [-1, 1], truth [B, T]. Returns presence + colour + shape losses (means over the
    frames each applies to) and, for the log, the share of frames whose presence the probe reads right."""
    batch, channels, frames = pixels.shape[:3]
    flat = pixels.clamp(-1, 1).permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, *pixels.shape[-2:])
    out = probe(probe.resize(flat))
    logits = out["location_logits"]  # [N, G*G + 1], the last: no object in view
    total = logits.logsumexp(1)
    log_present = logits[:, :-1].logsumexp(1) - total  # [N]
    log_absent = logits[:, -1] - total
    present = truth.present.reshape(-1)
    presence = -torch.where(present, log_present, log_absent).mean()
    cell = logits[:, :-1].argmax(1)  # [N] where the probe reads the object; a choice, without gradient
    color_logits, shape_logits = probe.attributes(out, cell)
    named = truth.named.reshape(-1).float()
    count = named.sum().clamp(min=1)
    color = (F.cross_entropy(color_logits, truth.color.reshape(-1), reduction="none") * named).sum() / count
    shape = (F.cross_entropy(shape_logits, truth.shape.reshape(-1), reduction="none") * named).sum() / count
    with torch.no_grad():
        read_right = ((log_present > log_absent) == present).float().mean().item()
    return presence + color + shape, {"probe_presence": presence.item(), "probe_color": color.item(),
                                      "probe_shape": shape.item(), "probe_read_right": read_right}
