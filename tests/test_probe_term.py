"""The rollout stage's probe term: a frozen world probe reads generated frames and is asked the world's records.
On the world's own frames it agrees with them; a smear of the object, a wrong colour or a wrong presence costs
more; its gradient reaches the pixels and never the probe."""

import numpy as np
import pytest
import torch

from videossm.eval.world.probe import load_probe
from videossm.train.probe_term import FrameTruth, clip_truth, probe_term
from videossm.world import COLORS, render_clip, sample_training_clip

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def probe():
    return load_probe().requires_grad_(False)


def as_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [1, 3, T, H, W] in [-1, 1]"""
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def test_clip_truth_follows_the_records(probe):
    clip = sample_training_clip(3, 5.0, 64, mixture={"wraparound": 1.0})
    truth = clip_truth([clip, clip], 60, probe.config)
    assert truth.present.shape == (2, 60) and truth.present.dtype == torch.bool
    for t in (0, 20, 59):
        rec = clip.records[t]
        assert bool(truth.present[1, t]) == (rec.visible and rec.visible_fraction >= probe.config.present_min_visible)
        assert bool(truth.named[1, t]) == (rec.visible and rec.visible_fraction >= probe.config.attribute_min_visible)
        assert COLORS[int(truth.color[1, t])] == rec.color
    assert truth.present.any() and not truth.present.all(), "a wrapping object leaves the frame and comes back"
    span = truth.span(10, 14)
    assert span.present.shape == (2, 4) and torch.equal(span.color, truth.color[:, 10:14])


def test_probe_term_agrees_with_the_world_and_rejects_smears_and_wrong_answers(probe):
    clip = render_clip("a red circle moving right on a gray background", seconds=4.0, size=64, seed=0)
    frames = 40  # the circle crosses 40 px of the frame, in view throughout
    truth = clip_truth([clip], frames, probe.config)
    assert truth.present.all(), "the object stays in view for these frames"
    pixels = as_pixels(clip.frames[:frames]).requires_grad_(True)
    loss, stats = probe_term(probe, pixels, truth)
    assert stats["probe_read_right"] == 1.0 and loss.item() < 0.5, stats
    smear = pixels.detach().mean(2, keepdim=True).expand_as(pixels)  # the object's path averaged: a faint trail
    smear_loss, smear_stats = probe_term(probe, smear, truth)
    assert smear_stats["probe_read_right"] < 0.5 and smear_loss.item() > loss.item() + 3.0
    wrong_colour = FrameTruth(truth.present, truth.named, (truth.color + 1) % len(COLORS), truth.shape)
    assert probe_term(probe, pixels.detach(), wrong_colour)[0].item() > loss.item() + 1.0
    gone = FrameTruth(~truth.present, truth.named, truth.color, truth.shape)
    gone_loss, gone_stats = probe_term(probe, pixels.detach(), gone)
    assert gone_stats["probe_read_right"] == 0.0 and gone_loss.item() > loss.item() + 1.0
    loss.backward()
    assert pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in probe.parameters()), "the probe is frozen"
