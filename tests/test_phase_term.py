"""The timing-tolerant pixel loss: the clip re-drawn with its object a few frames early or late. Phase 0 is the
clip itself; the object drawn k frames late scores zero at timing k; a timing beyond the tolerance and a smear
cost at every timing; the gradient flows through the chosen timing only."""

import numpy as np
import pytest
import torch

from videossm.train.phase_term import choose_timing, phase_targets, phase_tolerant_mse, timing_order
from videossm.world import background_frames, render_clip

torch.set_num_threads(1)


def as_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> [B, 3, T, H, W] in [-1, 1]"""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


@pytest.mark.parametrize("scenario,prompt", [
    ("plain", "a red circle moving right on a gray background"),
    ("wraparound", "a blue square moving up on a purple background"),
    ("pan_and_return", "a green triangle bouncing around on a brown background"),
])
def test_background_frames_are_the_clip_without_its_object(scenario, prompt):
    clip = render_clip(prompt, seconds=6.0, size=64, seed=5, scenario=scenario)
    background = background_frames(clip)
    masks = np.stack([clip.object_mask(t) for t in range(len(clip.frames))])  # [T, H, W]
    assert masks.any()
    np.testing.assert_array_equal(background[~masks], clip.frames[~masks])
    assert (background[masks] != clip.frames[masks]).any(-1).all(), "the object's colour is never the background's"


def test_background_frames_follow_a_background_switch():
    clip = render_clip([(0, "a red circle standing still on a gray background"),
                        (1, "a red circle standing still on a purple background")], seconds=2.0, size=64, seed=2)
    background = background_frames(clip)
    outside = ~np.stack([clip.object_mask(t) for t in range(len(clip.frames))])
    np.testing.assert_array_equal(background[outside], clip.frames[outside])


def test_object_mask_at_a_phase_is_the_mask_that_many_frames_later():
    clip = render_clip("a red square moving left on a black background", seconds=2.0, size=64, seed=1)
    for t, k in ((5, 3), (10, -4), (12, 0)):
        np.testing.assert_array_equal(clip.object_mask(t, k), clip.object_mask(t + k))
    still = render_clip("a red square standing still on a black background", seconds=1.0, size=64, seed=1)
    np.testing.assert_array_equal(still.object_mask(3, 5), still.object_mask(3))


def test_phase_tolerant_loss_forgives_timing_within_its_tolerance_and_nothing_else():
    clips = [render_clip("a red circle moving right on a gray background", seconds=3.0, size=64, seed=s)
             for s in (0, 1)]
    frames = 24
    targets = phase_targets(clips, frames, 3)
    assert targets.masks.shape == (2, 7, frames, 64, 64)
    world = as_pixels(np.stack([c.frames[:frames] for c in clips]))
    exact = torch.where(targets.masks[:, 3, None], targets.rgb[:, :, :, None, None], targets.background)
    torch.testing.assert_close(exact, world, atol=0, rtol=0)

    span = slice(8, 20)
    late = as_pixels(np.stack([c.frames[8 + 2:20 + 2] for c in clips]))  # both clips drawn 2 frames late
    loss, timing, exact_loss = phase_tolerant_mse(late, targets.span(span.start, span.stop), 10.0)
    assert loss.item() == 0 and timing.tolist() == [2, 2] and exact_loss.item() > 0.01
    mixed = torch.cat([late[:1], world[1:, :, span]])  # one late clip, one exact
    loss, timing, _ = phase_tolerant_mse(mixed, targets.span(span.start, span.stop), 10.0)
    assert loss.item() == 0 and timing.tolist() == [2, 0]
    too_late = as_pixels(np.stack([c.frames[8 + 6:20 + 6] for c in clips]))  # beyond 3 frames
    assert phase_tolerant_mse(too_late, targets.span(span.start, span.stop), 10.0)[0].item() > 0.01
    smear = (0.5 * world[:, :, span] + 0.5 * targets.background[:, :, span]).requires_grad_(True)
    smear_loss, _, _ = phase_tolerant_mse(smear, targets.span(span.start, span.stop), 10.0)
    assert smear_loss.item() > 0.001

    pred = late.clone().requires_grad_(True)  # gradient only through the chosen (late) timing: none here
    loss, _, _ = phase_tolerant_mse(pred + 0.1, targets.span(span.start, span.stop), 10.0)
    loss.backward()
    grad = pred.grad  # 0.1 everywhere off target at timing 2 only: the same on every pixel, object ones 10x
    late_mask = targets.masks[:, 3 + 2, None, span].expand_as(grad)
    ratio = grad[late_mask].mean() / grad[~late_mask].mean()
    assert abs(ratio.item() - 10.0) < 1e-3


def test_phase_targets_refuse_a_negative_phase():
    clip = render_clip("a red circle moving right on a gray background", seconds=1.0, size=64, seed=0)
    with pytest.raises(ValueError, match="phase must be >= 0 frames, got -1"):
        phase_targets([clip], 8, -1)


def test_choose_timing_takes_each_clips_least_and_the_nearest_among_equals():
    assert timing_order(2) == [0, -1, 1, -2, 2]
    losses = torch.tensor([[0.5, 0.2, 0.2, 0.1, 0.3],  # the least at -2
                           [0.4, 0.4, 0.4, 0.4, 0.4],  # all equal: the exact timing
                           [0.3, 0.3, 0.1, 0.3, 0.1]], requires_grad=True)  # +1 and +2 tie: +1
    chosen, timing = choose_timing(losses)
    assert timing.tolist() == [-2, 0, 1] and abs(chosen.item() - 0.2) < 1e-6
    chosen.backward()
    expected = torch.zeros(3, 5)
    expected[0, 3] = expected[1, 0] = expected[2, 2] = 1 / 3
    torch.testing.assert_close(losses.grad, expected)
