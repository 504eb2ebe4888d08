"""Stage 0 (VAE) training and the shared training utilities: one step, exact resume, logs, the saved VAE."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKLWan

from videossm.cli import main
from videossm.config import ConfigError
from videossm.models.vae import StreamingDecoder
from videossm.train.common import EMA, Checkpointer, CheckpointMismatch, CSVLogger, TrainState, plot_losses
from videossm.models.vae import vae_config
from videossm.train.vae import VAELoss, to_pixels, training_batch

SMALL = dict(z_dim=4, base_dim=4, patch=2, dim_mult=(1, 2, 4), res_blocks=1)


def small_setup(seed: int = 0):
    acc = Accelerator(cpu=True)
    torch.manual_seed(seed)
    model = VAELoss(AutoencoderKLWan(**vae_config(**SMALL)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, opt = acc.prepare(model, opt)
    return acc, model, opt, EMA(model, decay=0.9)


def train_step(model, opt, ema, step: int) -> float:
    frames, masks = training_batch(0, 0, step, batch=1, frames=9, seconds=1.0, size=32)
    _, l1, l1_object, kl, l1_edges = model(to_pixels(frames), torch.from_numpy(masks).float(),
                                           torch.Generator().manual_seed(step))
    assert 0 <= l1_object <= l1 and l1_edges > 0
    loss = l1 + 10 * l1_object + 1e-4 * kl + l1_edges
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    ema.update(model)
    return loss.item()


def test_one_step_finite_loss_and_parameters_change():
    _, model, opt, ema = small_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = train_step(model, opt, ema, 0)
    assert np.isfinite(loss) and loss > 0
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)  # every parameter got a gradient and moved
    assert any(not torch.equal(ema.shadow[k], before[k].float()) for k in before)


def test_checkpoint_resume_is_exact(tmp_path):
    acc, model, opt, ema = small_setup()
    ckpt = Checkpointer(str(tmp_path), config={"vae": vae_config(**SMALL)})
    state = TrainState()
    for step in range(2):
        train_step(model, opt, ema, step)
        state.step = step + 1
    state.extra["note"] = "kept"
    ckpt.save(acc, state, model, opt, ema)
    rng_after_save = torch.rand(3)

    acc2, model2, opt2, ema2 = small_setup(seed=1)  # different init: everything must come from the file
    resumed = ckpt.resume(acc2, model2, opt2, ema2, require=True)
    assert resumed.step == 2 and resumed.extra == {"note": "kept"}
    assert torch.equal(torch.rand(3), rng_after_save)  # global RNG states restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    assert ema2.updates == ema.updates and all(torch.equal(ema.shadow[k], ema2.shadow[k]) for k in ema.shadow)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i, st in s1["state"].items():
        for name, t in st.items():
            assert torch.equal(t, s2["state"][i][name]), (i, name)
    # The next step is identical too.
    train_step(model, opt, ema, 2)
    train_step(model2, opt2, ema2, 2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k

    bad = Checkpointer(str(tmp_path), config={"vae": vae_config(**{**SMALL, "base_dim": 8})})
    with pytest.raises(CheckpointMismatch, match="different configuration"):
        bad.resume(acc2, model2, opt2, ema2)


def test_checkpointer_keeps_newest_and_writes_atomically(tmp_path):
    acc, model, opt, ema = small_setup()
    ckpt = Checkpointer(str(tmp_path), config={}, keep=2)
    for step in (5, 10, 15):
        ckpt.save(acc, TrainState(step=step), model, opt, ema)
    assert [os.path.basename(p) for p in ckpt.checkpoints()] == ["ckpt-0000010.pt", "ckpt-0000015.pt"]
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    open(tmp_path / "ckpt-0000099.pt.tmp123", "w").close()  # a torn write is never picked up
    assert ckpt.latest().endswith("ckpt-0000015.pt")


def test_csv_logger_resume_drops_later_rows_and_plot(tmp_path):
    path = str(tmp_path / "log.csv")
    log = CSVLogger(path)
    for step in range(1, 6):
        log.log(step=step, loss=1.0 / step, lr=1e-3, seconds=0.1 * step)
    log.close()
    log = CSVLogger(path, resume_step=3)  # the session died after saving step 3
    log.log(step=4, loss=0.2, lr=1e-3, seconds=0.5)
    log.close()
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and float(rows[-1]["loss"]) == 0.2
    plot_losses(path, str(tmp_path / "loss.png"))
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vae_config_geometry_and_errors():
    for kw in (SMALL, dict(patch=1, dim_mult=(1, 1, 1, 1))):
        vae = AutoencoderKLWan(**vae_config(**kw))
        x = torch.zeros(1, 3, 9, 32, 32)
        with torch.no_grad():
            assert vae.encode(x).latent_dist.mode().shape[2:] == (3, 4, 4)  # 4x temporal, 8x spatial
    with pytest.raises(ConfigError, match="must be 8"):
        vae_config(patch=2, dim_mult=(1, 1, 1, 1))
    with pytest.raises(ConfigError, match="res_blocks"):
        vae_config(dim_mult=(1, 2, 4), res_blocks=0)


def test_cli_train_vae_resume_logs_and_saved_vae(tmp_path):
    out = str(tmp_path / "run")
    common = ["train", "vae", "--out", out, "--size", "32", "--seconds", "1", "--frames", "9", "--batch", "1",
              "--z-dim", "4", "--eval-every", "2", "--save-every", "2", "--log-every", "1", "--eval-clips", "1",
              "--eval-frames", "9", "--stats-clips", "2", "--cpu"]
    assert main(common + ["--steps", "2"]) == 0
    assert main(common + ["--steps", "3", "--resume"]) == 0  # continues from ckpt-2
    with open(os.path.join(out, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert set(rows[0]) == {"step", "loss", "l1", "l1_object", "kl", "psnr_batch", "lr", "seconds"}
    for png in ("loss.png", "eval.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000
    from PIL import Image
    preview = np.asarray(Image.open(os.path.join(out, "recon.png")))
    assert preview.shape == (2 * (14 + 2 * 32), 6 * 32, 3)  # --eval-clips 1: a train and a held-out clip, each label, original, recon
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["steps"] == 3 and np.isfinite(metrics["psnr_heldout"]) and metrics["decode_s_per_block"] > 0
    assert {"cpu_count", "torch"} <= set(metrics["hardware"])

    vae = AutoencoderKLWan.from_pretrained(os.path.join(out, "vae"))
    assert list(vae.config.latents_mean) == metrics["latents_mean"] and min(vae.config.latents_std) > 0
    assert list(vae.config.latents_std) != [1.0] * 4
    dec = StreamingDecoder(vae)
    state = dec.new_state()
    lat = torch.randn(1, 4, 3, 4, 4)
    first = dec.decode(state, lat[:, :, :1])
    rest = dec.decode(state, lat[:, :, 1:])
    assert first.shape == (1, 3, 1, 32, 32) and rest.shape == (1, 3, 8, 32, 32)
    assert torch.equal(torch.cat([first, rest], 2), dec.decode_full(lat))  # streaming == diffusers' decode
    assert main(["train", "vae", "--out", out, "--base-dim", "8", "--steps", "3", "--size", "32",
                 "--seconds", "1", "--frames", "9", "--cpu"]) == 2  # other config, same folder: refused


def test_cli_train_vae_decoder_only_keeps_the_latent_space(tmp_path, capsys):
    """--encoder-from: the encoder (and so every latent a transformer was trained on) is the source's, bit for
    bit; only the decoder trains; the latent statistics are the source's."""
    src, out = str(tmp_path / "src"), str(tmp_path / "dec")
    common = ["--size", "32", "--seconds", "1", "--frames", "9", "--batch", "1", "--z-dim", "4", "--eval-every", "2",
              "--eval-clips", "1", "--eval-frames", "9", "--stats-clips", "2", "--cpu", "--steps", "2"]
    assert main(["train", "vae", "--out", src] + common) == 0
    assert main(["train", "vae", "--out", out, "--encoder-from", os.path.join(src, "vae"), "--decoder-dim", "4",
                 "--lr", "1e-2"] + common) == 0
    source = AutoencoderKLWan.from_pretrained(os.path.join(src, "vae")).state_dict()
    trained = AutoencoderKLWan.from_pretrained(os.path.join(out, "vae"))
    assert trained.config.decoder_base_dim == 4
    enc = {k: v for k, v in trained.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    assert enc and all(torch.equal(v, source[k]) for k, v in enc.items())
    src_cfg = AutoencoderKLWan.from_pretrained(os.path.join(src, "vae")).config
    assert list(trained.config.latents_mean) == list(src_cfg.latents_mean)
    assert list(trained.config.latents_std) == list(src_cfg.latents_std)
    assert json.load(open(os.path.join(out, "metrics.json")))["encoder_from"] == os.path.join(src, "vae")

    # the same decoder size continues the source's decoder, which then changes
    cont = str(tmp_path / "cont")
    assert main(["train", "vae", "--out", cont, "--encoder-from", os.path.join(src, "vae"), "--lr", "1e-2",
                 "--edge-weight", "1", "--train-latents", "mode", "--log-every", "1"] + common) == 0
    with open(os.path.join(cont, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert all(np.isfinite(float(r["l1_edges"])) and float(r["l1_edges"]) > 0 for r in rows)
    assert "1 * L1(image gradients), decoding the posterior mode" in json.load(open(os.path.join(cont, "metrics.json")))["loss"]
    after = AutoencoderKLWan.from_pretrained(os.path.join(cont, "vae")).state_dict()
    assert any(not torch.equal(after[k], source[k]) for k in after if k.startswith("decoder."))
    assert all(torch.equal(after[k], source[k]) for k in after if k.startswith("encoder."))

    assert main(["train", "vae", "--out", str(tmp_path / "bad"), "--encoder-from", os.path.join(src, "vae"),
                 "--base-dim", "16"] + common) == 2  # another encoder: refused, naming base_dim
    assert "base_dim 8 != 16" in capsys.readouterr().err
    assert main(["train", "vae", "--out", str(tmp_path / "bad2"), "--encoder-from", str(tmp_path)] + common) == 2
    assert "not a saved VAE folder" in capsys.readouterr().err


def test_cli_train_vae_encoder_only_recovers_an_encoder_for_a_shipped_decoder(tmp_path, capsys):
    """--decoder-from a decoder-only folder (as `train ship` writes it): the decoder stays the source's, bit for
    bit (in the fp16 it was shipped in); a fresh encoder of another width trains; the statistics are kept."""
    import shutil

    from safetensors.torch import save_file

    from videossm.models.vae import VAE_WEIGHTS, decoder_only_state

    src, out = str(tmp_path / "src"), str(tmp_path / "enc")
    common = ["--size", "32", "--seconds", "1", "--frames", "9", "--batch", "1", "--z-dim", "4", "--eval-every", "2",
              "--eval-clips", "1", "--eval-frames", "9", "--stats-clips", "2", "--cpu", "--steps", "2",
              "--dim-mult", "1,2,4", "--res-blocks", "1"]
    assert main(["train", "vae", "--out", src, "--base-dim", "8", "--decoder-dim", "4"] + common) == 0
    shipped = str(tmp_path / "shipped_vae")
    shutil.copytree(os.path.join(src, "vae"), shipped)
    save_file(decoder_only_state(AutoencoderKLWan.from_pretrained(shipped)), os.path.join(shipped, VAE_WEIGHTS))
    assert main(["train", "vae", "--out", out, "--decoder-from", shipped, "--base-dim", "6", "--decoder-dim", "4",
                 "--lr", "1e-2", "--train-latents", "mode"] + common) == 0
    assert "encoder-only: decoder frozen" in capsys.readouterr().out
    from videossm.models.vae import load_vae

    source = load_vae(shipped).state_dict()
    trained = AutoencoderKLWan.from_pretrained(os.path.join(out, "vae"))
    assert trained.config.base_dim == 6 and trained.config.decoder_base_dim == 4
    dec = {k: v for k, v in trained.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}
    assert dec and all(torch.equal(v, source[k]) for k, v in dec.items())
    fresh = AutoencoderKLWan(**trained.config).state_dict()  # the encoder trained (a 2-step run moves it)
    assert any(not torch.equal(v, fresh[k]) for k, v in trained.state_dict().items() if k.startswith("encoder."))
    src_cfg = AutoencoderKLWan.from_pretrained(os.path.join(src, "vae")).config
    assert list(trained.config.latents_mean) == list(src_cfg.latents_mean)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["decoder_from"] == shipped and np.isfinite(metrics["psnr_heldout"])

    bad = ["train", "vae", "--base-dim", "6"]
    assert main(bad + ["--out", str(tmp_path / "b1"), "--decoder-from", shipped, "--decoder-dim", "8"] + common) == 2
    assert "decoder width 4 != 8 (--decoder-dim)" in capsys.readouterr().err
    assert main(bad + ["--out", str(tmp_path / "b2"), "--decoder-from", str(tmp_path)] + common) == 2
    assert "--decoder-from" in capsys.readouterr().err
    assert main(bad + ["--out", str(tmp_path / "b3"), "--decoder-from", shipped, "--encoder-from",
                       os.path.join(src, "vae"), "--decoder-dim", "4"] + common) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_edge_term_is_skipped_when_it_has_no_weight():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**vae_config(**SMALL))
    frames, masks = training_batch(0, 0, 0, batch=1, frames=9, seconds=1.0, size=32)
    x, mask = to_pixels(frames), torch.from_numpy(masks).float()
    with_edges = VAELoss(vae, sample=False)(x, mask)
    without = VAELoss(vae, sample=False, edges=False)(x, mask)
    assert with_edges[4] > 0 and without[4] == 0
    for a, b in zip(with_edges[:4], without[:4]):  # the other terms are the same
        torch.testing.assert_close(a, b)
