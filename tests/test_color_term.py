"""The rollout stage's colour-area term: a frame holds as much of the object's exact colour as the world's
frame, wherever it is drawn. The world's own frames score zero against themselves, wherever the object is;
a smear, a missing object or a second copy cost more; the gradient pulls a smear's pixels to the colour and
leaves plain background alone."""

import numpy as np
import torch

from videossm.train.color_term import color_area_term, color_share, object_rgb
from videossm.world import BACKGROUND_RGB, COLOR_RGB, render_clip

torch.set_num_threads(1)


def as_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [1, 3, T, H, W] in [-1, 1]"""
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def second_copy(clip, world: torch.Tensor) -> torch.Tensor:
    """world [1, 3, T, H, W] with a second object: its frames' object pasted mirrored top to bottom."""
    masks = torch.from_numpy(np.stack([clip.object_mask(t) for t in range(world.shape[2])]))  # [T, H, W]
    return torch.where(masks.flip(-2), world.flip(-2), world)


def test_color_share_counts_the_objects_pixels_and_not_the_backgrounds():
    clip = render_clip("a red circle moving right on a brown background", seconds=1.0, size=64, seed=0)
    pixels, rgb = as_pixels(clip.frames), object_rgb(["red"])
    share = color_share(pixels, rgb, 0.25)[0]  # [T]
    mask_share = torch.tensor([clip.object_mask(t).mean() for t in range(len(clip.frames))], dtype=torch.float32)
    torch.testing.assert_close(share, mask_share, atol=2e-3, rtol=0)  # brown's light shade is the nearest to red
    background = torch.tensor(BACKGROUND_RGB["brown"][1], dtype=torch.float32) / 127.5 - 1
    assert color_share(background.view(1, 3, 1, 1, 1).expand(1, 3, 1, 8, 8), rgb, 0.25).item() < 0.01
    np.testing.assert_allclose(object_rgb(["white", "red"]).numpy(),
                               [[c / 127.5 - 1 for c in COLOR_RGB[name]] for name in ("white", "red")], rtol=1e-6)


def test_color_area_term_is_blind_to_place_and_rejects_smears_misses_and_copies():
    clip = render_clip("a red circle moving right on a gray background", seconds=2.0, size=64, seed=0)
    frames = 24
    world = as_pixels(clip.frames[:frames])
    rgb = object_rgb(["red"])
    object_share = torch.tensor([max(clip.object_mask(t).mean() for t in range(frames))], dtype=torch.float32)
    loss, stats = color_area_term(world, world, rgb, object_share, 0.25)
    assert loss.item() == 0 and stats["color_share_made"] == stats["color_share_world"] > 0
    elsewhere = world.flip(-1)  # the same frames mirrored: the object in another place
    assert color_area_term(elsewhere, world, rgb, object_share, 0.25)[0].item() < 1e-3
    smear = world.mean(2, keepdim=True).expand_as(world).clone().requires_grad_(True)  # a faint trail
    smear_loss, _ = color_area_term(smear, world, rgb, object_share, 0.25)
    assert smear_loss.item() > 0.5
    empty = as_pixels(np.stack([np.where(clip.object_mask(t)[..., None], 128, clip.frames[t])
                                for t in range(frames)]).astype(np.uint8))  # gray where the object was
    assert color_area_term(empty, world, rgb, object_share, 0.25)[0].item() > 0.9
    twice = second_copy(clip, world)
    assert color_area_term(twice, world, rgb, object_share, 0.25)[0].item() > 0.5
    smear_loss.backward()
    grad = smear.grad[0]  # [3, T, H, W]
    reddish = (smear.detach()[0, 0] - smear.detach()[0, 1]) > 0.2  # [T, H, W] the trail's pixels
    assert reddish.any() and (~reddish).any()
    assert (grad[0][reddish] < 0).float().mean() > 0.9, "a trail's red channel is pushed up (its loss falls)"
    assert grad[:, ~reddish].abs().max() < 1e-2 * grad[:, reddish].abs().max(), "plain background is left alone"


def test_one_sided_term_charges_too_little_colour_only():
    """side "under": a second copy or a recoloured background costs nothing; a missing object costs as before."""
    clip = render_clip("a red circle moving right on a gray background", seconds=1.0, size=64, seed=0)
    world = as_pixels(clip.frames[:8])
    rgb = object_rgb(["red"])
    object_share = torch.tensor([max(clip.object_mask(t).mean() for t in range(8))], dtype=torch.float32)
    twice = second_copy(clip, world)
    assert color_area_term(twice, world, rgb, object_share, 0.25, side="under")[0].item() == 0
    assert color_area_term(twice, world, rgb, object_share, 0.25, side="both")[0].item() > 0.5
    empty = as_pixels(np.stack([np.where(clip.object_mask(t)[..., None], 128, clip.frames[t])
                                for t in range(8)]).astype(np.uint8))
    under = color_area_term(empty, world, rgb, object_share, 0.25, side="under")[0].item()
    assert under > 0.9 and abs(under - color_area_term(empty, world, rgb, object_share, 0.25)[0].item()) < 1e-6
    try:
        color_area_term(world, world, rgb, object_share, 0.25, side="over")
    except ValueError as err:
        assert "side must be one of both, under, got 'over'" in str(err)
    else:
        raise AssertionError("an unknown side was accepted")
