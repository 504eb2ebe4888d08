"""The recipe's kept checkpoints (`recipe/`): the VAE encoder and the teacher recovered for the shipped students.

Every further stage on a shipped student encodes the world's clips with that VAE and scores with that teacher,
and `runs/` does not survive a fresh checkout, so both are committed. These tests check that they still fit
the shipped students: the same latent space and the same text embeddings."""

import os

import pytest
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipe")
SHIPPED = os.path.join(ROOT, "assets", "videossm-hybrid")


def test_recovered_vae_encodes_into_the_shipped_decoders_latent_space():
    from videossm.models.vae import NoEncoder, latent_space_difference, load_vae
    from videossm.train.vae import psnr, reconstruct
    from videossm.world.renderer import render_clip

    vae = load_vae(os.path.join(RECIPE, "vae"))
    assert not isinstance(vae.encoder, NoEncoder), "the kept VAE must hold its encoder"
    shipped = load_vae(os.path.join(SHIPPED, "vae"))
    # the shipped decoder is stored in fp16; the recovered VAE trained against it, frozen
    assert latent_space_difference(shipped, vae, "decoder", half=True) is None
    clip = render_clip("a red circle moving right on a gray background", 1.0, seed=3)
    frames = clip.frames[:9]  # uint8 [9, H, W, 3]: 1 + 4k frames, three latent frames
    rebuilt = reconstruct(vae, frames)
    assert rebuilt.shape == frames.shape
    assert psnr(rebuilt, frames) > 22.0  # 27.2 / 27.3 dB on the run's own clips (docs/TRAINING.md)


def test_recovered_teacher_shares_the_students_text_encoder_and_vae():
    from videossm.models.vae import latent_space_difference, load_vae
    from videossm.weights.checkpoint import read_config

    teacher = os.path.join(RECIPE, "teacher")
    config, student = read_config(teacher), read_config(SHIPPED)
    assert config["trained"] and config["name"] == "teacher"
    assert {k: v for k, v in config["model"].items() if k != "memory"} == \
        {k: v for k, v in student["model"].items() if k != "memory"}
    ours = load_file(os.path.join(teacher, "text_encoder", "model.safetensors"))
    theirs = load_file(os.path.join(SHIPPED, "text_encoder", "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for name in ours:  # frozen by `train teacher --init-from`: the students read these very embeddings
        torch.testing.assert_close(ours[name].float(), theirs[name].float(), rtol=0, atol=0, msg=name)
    vae_ours, vae_kept = load_vae(os.path.join(teacher, "vae")), load_vae(os.path.join(RECIPE, "vae"))
    for part in ("encoder", "decoder"):  # exact tensors and latent statistics: the latents it was trained on
        assert latent_space_difference(vae_kept, vae_ours, part) is None


@pytest.mark.parametrize("part", ["vae", "teacher"])
def test_kept_checkpoints_hold_no_training_state(part):
    """Only the exported folders are kept: no optimizer checkpoints, which would triple the repository."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(RECIPE, part)) for f in fs]
    assert files, f"recipe/{part} is missing"
    assert not [f for f in files if f.endswith(".pt")]
    assert sum(os.path.getsize(f) for f in files) < 48 * 2 ** 20
