"""Stage 0: train the tiny `AutoencoderKLWan` on the procedural world.

    python -m videossm train vae --out runs/vae --threads 1      # the flag defaults: a small, fast VAE
    # the recipe's VAE (scripts/train_recipe.sh): wide encoder, decoder capacity at low resolution
    python -m videossm train vae --out runs/vae --base-dim 32 --dim-mult 1,2,4 --res-blocks 1 --decoder-dim 8 \
        --object-weight 20 --steps 10000 --eval-every 1000
    # later, a better decoder for the same latent space (the teacher and students stay valid)
    python -m videossm train vae --out runs/vae-dec --encoder-from runs/vae/vae --base-dim 32 --dim-mult 1,2,4 \
        --res-blocks 1 --decoder-dim 8 --object-weight 20 --steps 4000
    # the other way: an encoder for a shipped, decoder-only VAE, so its students can be trained on again
    python -m videossm train vae --out runs/vae-enc --decoder-from assets/videossm-hybrid/vae --base-dim 32 \
        --dim-mult 1,2,4 --res-blocks 1 --decoder-dim 8 --object-weight 20 --train-latents mode --steps 3000

Data: clips rendered on the fly from the train split (`sample_training_clip`, all scenarios); from each a
random window of `--frames` (1 + 4k) frames and a random `--crop` square. The batch of step s on process
r comes from numpy's default_rng([seed, r, s]), so a resumed run sees exactly the batches of an
uninterrupted one.

Long windows, small crops: Wan's causal VAE has a long temporal receptive field (a latent frame moves
the decoder's output ~15 latent frames = 60 pixel frames later; the encoder's likewise), and until it is
filled the causal convs see their zero padding. Trained on 9-frame windows, a VAE reconstructs the first
frames well and then drifts to wrong colours a second in (8-11 dB at frame 16-32); trained on 65-frame
windows (17 latent frames) it holds, and the metrics report the last second of 5 s clips separately
(`psnr_*_last1s`) to show it. Small crops (48 px) pay for the long windows; the convolutions carry over
to whole 128 px frames, on which everything is evaluated.

Loss: a KL-regularised autoencoder, as Wan's VAE. Training decodes a *sample* of diffusers' diagonal
Gaussian posterior, so the decoder learns to tolerate small latent errors (the generator's latents are
never exact); loss = L1(recon, x) + kl_weight * KL(posterior || N(0, 1)), both means over elements,
with a small kl_weight (default 1e-4) that only keeps the latent scale bounded. `--object-weight W`
adds W * L1 on the object's pixels (ground-truth masks from the renderer, averaged over all pixels):
the prompt's colour and shape live in ~4% of a frame, and without it the object's own pixels stay far
below the frame's PSNR (at 400 steps it made no difference; over 10000 steps weight 20 took a small
VAE's object pixels from ~15 to 21-24 dB, see docs/TRAINING.md). The posterior starts
narrow (log-variance bias -6), else the decoder would first see mostly noise. Evaluation, the latent
statistics and every later stage use the posterior mode (mean). The decoder output is not clamped
during training (a clamp would stop gradients of out-of-range pixels); evaluation clamps, as decode does.

Architecture: chosen so that the streaming decode keeps up with the stream. The `tiny` transformer
needs ~0.27 s per 12-frame block on one CPU thread; >= 32 fps end to end leaves the decoder well under
0.1 s per block. Plain Wan2.1 layouts (patch 1, 4 stages) decode a 12-frame 128x128 block in 0.14 s
(base_dim 4, no extra res block) to 0.4-0.6 s (base_dim 8): too slow. Wan2.2's 2x2 pixel patchify
(`patch_size=2`, 12 in/out channels) with one stage fewer keeps the 8x spatial / 4x temporal latent
geometry but runs the full-resolution stage at 64x64: the default (base_dim 8, dim_mult 1,1,1, no extra
res block) decodes a block in ~0.05 s, tied for the best PSNR of the fast configs after 400 steps (their
differences were within run-to-run noise, ~1.5 dB) and trains fastest.

Only the decoder runs while streaming, so the recipe puts capacity where it is free (a wide encoder,
--base-dim 32) or cheap (--dim-mult 1,2,4 over --decoder-dim 8: 8, 16, 32 channels at 64, 32, 16 px),
~80 ms per block. The small defaults keep colour and motion but turn squares into round blobs.

Decoder-only (`--encoder-from VAE_DIR`): the encoder and quant_conv are loaded from a saved VAE and
frozen, its latent statistics are kept, and only the decoder trains (from the source's when
--decoder-dim matches, else fresh). Every latent the transformer stages saw stays the same, so a better
decoder can be trained while (or after) they run, and `train ship --vae` ships it with a student.

Encoder-only (`--decoder-from VAE_DIR`): the mirror image. The decoder and post_quant_conv are loaded from
a saved VAE, full or decoder-only as `train ship` writes it, and frozen; its latent statistics are kept;
a fresh encoder (--base-dim wide) learns to invert it. Shipped checkpoints drop the encoder to stay small,
so this recovers one when the training VAE is gone. The transformer stages can then encode world clips
into the latent space the shipped students were trained in. Train it on the posterior mode
(`--train-latents mode`): the frozen decoder already tolerates latent noise, and the mode is what the
later stages encode. `bench/latent_roundtrip.py` checks the result on a student's own latents.
Reconstruction alone does not pin the latent space down: the small decoder maps many latents to one
image, and an encoder trained only to reconstruct found other latents than the student's (relative error
2.0, docs/TRAINING.md). `--anchor-student DIR` adds the missing term: a pool of `--anchor-clips` short
clips the student generates (its latents, and its frames through the frozen decoder), and
`--anchor-weight` times the MSE between the encoder's normalised latents of those frames and the
student's latents.

Every eval writes `recon.png`: frames of two train and two held-out clips over their reconstruction.
A larger `--steps` continues a finished run.

At the end: EMA weights, per-channel `latents_mean` / `latents_std` of the posterior mode over
training clips written into the VAE config (the generator's latents are then ~unit variance), the
VAE saved with `save_pretrained(out/vae)`, PSNR on train and held-out-combination clips, the
streaming decode time per block, and `metrics.json`.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKLWan

from ..config import ConfigError
from ..models.vae import StreamingDecoder, decode_frames, to_uint8_frames, vae_config
from ..world import Clip, sample_training_clip
from .common import (EMA, Checkpointer, CSVLogger, RunningMeans, check_counts, lr_at, optimizer_step,
                     plot_losses, progress, set_lr, step_seed, write_stage_metrics)

EVAL_SEED = 20251205  # fixed eval clips, independent of --seed
STATS_SEED = 20251206
FPS = 16


def decode(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """diffusers' frame-by-frame decode of posterior samples z [B, C, F, h, w], with gradients and no clamp."""
    return decode_frames(vae, z, [None] * vae._cached_conv_counts["decoder"], frames_done=0)


class VAELoss(nn.Module):
    """Wraps the VAE so that accelerate's DDP sees one forward: (recon, l1, l1 on object pixels, kl, l1 of
    the image gradients, or 0 without `edges`). `sample`: decode a posterior sample (default) or its mode."""

    def __init__(self, vae: AutoencoderKLWan, sample: bool = True, edges: bool = True):
        super().__init__()
        self.vae, self.sample, self.edges = vae, sample, edges

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None):
        post = self.vae.encode(x).latent_dist
        recon = decode(self.vae, post.sample(generator=generator) if self.sample else post.mode())
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        err = (recon - x).abs()
        l1_object = (err * mask[:, None]).mean() if mask is not None else err.new_zeros(())
        l1_edges = (sum((recon.diff(dim=d) - x.diff(dim=d)).abs().mean() for d in (-1, -2))  # sharp outlines
                    if self.edges else err.new_zeros(()))
        return recon, err.mean(), l1_object, kl, l1_edges


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def training_batch(seed: int, rank: int, step: int, batch: int, frames: int, seconds: float, size: int,
                   crop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A random window and a random square crop of fresh train clips: uint8 frames [B, frames, crop, crop, 3]
    and the object's pixels, bool [B, frames, crop, crop]."""
    rng = np.random.default_rng([seed, rank, step])
    crop = crop or size
    out, masks = [], []
    for _ in range(batch):
        clip = sample_training_clip(rng, seconds, size)
        t, y, x = (int(rng.integers(0, n + 1)) for n in (len(clip.frames) - frames, size - crop, size - crop))
        out.append(clip.frames[t : t + frames, y : y + crop, x : x + crop])
        masks.append(np.stack([clip.object_mask(i)[y : y + crop, x : x + crop] for i in range(t, t + frames)]))
    return np.stack(out), np.stack(masks)


def fixed_clips(split: str, n: int, frames: int, size: int, seed: int = EVAL_SEED) -> list[Clip]:
    return [sample_training_clip(np.random.default_rng([seed, i]), frames / FPS, size, split=split) for i in range(n)]


@torch.no_grad()
def reconstruct(vae: AutoencoderKLWan, frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] -> its reconstruction through the posterior mode, uint8."""
    x = to_pixels(frames[None]).to(vae.device, vae.dtype)
    return to_uint8_frames(decode(vae, vae.encode(x).latent_dist.mode()).clamp(-1, 1))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def clip_psnr(vae: AutoencoderKLWan, clips: list[Clip], split: str) -> dict[str, float]:
    """Mean PSNR over clips: all frames; the last second alone (drift far from the first frame); and the
    object's pixels alone (the prompt's colour and shape live in ~4% of the frame, so they weigh little
    in the whole-frame number)."""
    out = {"all": [], "last1s": [], "object": []}
    for clip in clips:
        x, r = clip.frames, reconstruct(vae, clip.frames)
        out["all"].append(psnr(r, x))
        out["last1s"].append(psnr(r[-FPS:], x[-FPS:]))
        mask = np.stack([clip.object_mask(i) for i in range(len(x))])
        if mask.any():
            out["object"].append(psnr(r[mask], x[mask]))
    return {f"psnr_{split}" + ("" if k == "all" else f"_{k}"): float(np.mean(v)) for k, v in out.items() if v}


def save_preview(vae: AutoencoderKLWan, clips: list[Clip], path: str, columns: int = 6) -> None:
    """A PNG to look at shapes with: per clip, a row of original frames over a row of their reconstruction
    (`columns` frames evenly spread over the clip), with the clip's prompt above."""
    from PIL import Image, ImageDraw

    rows = []
    for clip in clips:
        x, r = clip.frames, reconstruct(vae, clip.frames)
        idx = np.linspace(0, len(x) - 1, columns).round().astype(int)
        strip = np.concatenate([np.concatenate(list(x[idx]), axis=1), np.concatenate(list(r[idx]), axis=1)], axis=0)
        label = Image.new("RGB", (strip.shape[1], 14), "white")
        ImageDraw.Draw(label).text((2, 1), clip.prompt, fill="black")
        rows += [np.asarray(label), strip]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


@torch.no_grad()
def latent_stats(vae: AutoencoderKLWan, clips: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior mode; std floored at 1% of the largest (dead channels)."""
    z = torch.cat([vae.encode(to_pixels(c[None]).to(vae.device, vae.dtype)).latent_dist.mode().float()
                   .transpose(0, 1).flatten(1) for c in clips], dim=1)  # [C, N]
    mean, std = z.mean(1), z.std(1)
    std = std.clamp_min(0.01 * float(std.max()))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


@torch.no_grad()
def time_streaming_decode(vae: AutoencoderKLWan, size: int, block_frames: int = 3, blocks: int = 6,
                          threads: int = 1) -> float:
    """Median seconds per block of `block_frames` latent frames through StreamingDecoder (after the first)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dec = StreamingDecoder(vae)
        state = dec.new_state()
        lat = torch.randn(1, vae.config.z_dim, block_frames, size // 8, size // 8,
                          generator=torch.Generator().manual_seed(0)).to(vae.device)
        times = []
        for i in range(blocks + 1):
            t = time.perf_counter()
            dec.decode(state, lat)
            if vae.device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        torch.set_num_threads(old)


def check_args(args) -> None:
    if args.frames < 5 or (args.frames - 1) % 4:
        raise ConfigError(f"--frames must be 1 + 4k with k >= 1 (Wan's causal VAE), got {args.frames}")
    if args.frames > round(args.seconds * FPS):
        raise ConfigError(f"--frames {args.frames} is longer than a --seconds {args.seconds} clip "
                          f"({round(args.seconds * FPS)} frames at {FPS} fps)")
    if args.size % 8:
        raise ConfigError(f"--size must be a multiple of 8, got {args.size}")
    if args.crop and args.crop < args.size and (args.crop % 8 or args.crop < 8):
        raise ConfigError(f"--crop must be 0 (whole frames) or a multiple of 8, at least 8, got {args.crop}")
    check_counts(args, "steps", "batch", "eval_clips")


ENCODER_KEYS = ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales", "temperal_downsample", "patch_size",
                "in_channels", "is_residual")


def frozen_encoder_source(path: str, cfg: dict) -> AutoencoderKLWan:
    """The saved VAE whose encoder a decoder-only run keeps; its encoder config must equal `cfg`'s."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(f"--encoder-from {path!r} is not a saved VAE folder (no config.json); pass the vae/ "
                          f"folder of a `train vae` run")
    source = AutoencoderKLWan.from_pretrained(path)
    built = AutoencoderKLWan(**cfg).config
    diff = [f"{k} {source.config.get(k)!r} != {built.get(k)!r}" for k in ENCODER_KEYS
            if source.config.get(k) != built.get(k)]
    if diff:
        raise ConfigError(f"--encoder-from {path}: its encoder differs from this run's flags ({'; '.join(diff)}); "
                          f"pass the flags it was trained with (only --decoder-dim may change)")
    return source


DECODER_KEYS = ("z_dim", "dim_mult", "num_res_blocks", "attn_scales", "temperal_downsample", "patch_size",
                "out_channels", "is_residual")


def decoder_width(config) -> int:
    return config.get("decoder_base_dim") or config.get("base_dim")


def frozen_decoder_source(path: str, cfg: dict) -> AutoencoderKLWan:
    """The saved VAE (full or decoder-only) whose decoder an encoder-only run keeps; its decoder config must
    equal `cfg`'s."""
    from ..models.vae import load_vae

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(f"--decoder-from {path!r} is not a saved VAE folder (no config.json); pass a vae/ folder, "
                          f"e.g. assets/videossm-hybrid/vae")
    source = load_vae(path)
    built = AutoencoderKLWan(**cfg).config
    diff = [f"{k} {source.config.get(k)!r} != {built.get(k)!r}" for k in DECODER_KEYS
            if source.config.get(k) != built.get(k)]
    if decoder_width(source.config) != decoder_width(built):
        diff.append(f"decoder width {decoder_width(source.config)} != {decoder_width(built)} (--decoder-dim)")
    if diff:
        raise ConfigError(f"--decoder-from {path}: its decoder differs from this run's flags ({'; '.join(diff)}); "
                          f"pass the flags it was trained with (only --base-dim, the encoder's width, may change)")
    return source


def encoder_part(name: str) -> bool:
    return name.startswith(("encoder.", "quant_conv."))


class AnchorClips:
    """--anchor-student: a pool of the student's own clips, fixed by --seed: normalised latents [N, C, F, h, w]
    and their frames through the frozen decoder [N, 3, T, H, W] (clamped, fp16 to save memory)."""

    def __init__(self, student_dir: str, vae: AutoencoderKLWan, clips: int, blocks: int, seed: int):
        from tqdm import tqdm

        from ..pipeline import VideoSSMPipeline
        from ..sampling.stream import StreamingGenerator
        from ..world import sample_prompt

        pipe = VideoSSMPipeline.from_pretrained(student_dir, device="cpu", dtype=torch.float32)
        if pipe.model_config.in_channels != vae.config.z_dim:
            raise ConfigError(f"--anchor-student {student_dir} makes {pipe.model_config.in_channels}-channel latents; "
                              f"this VAE has z_dim {vae.config.z_dim}")
        generator = StreamingGenerator(pipe.transformer, pipe.stream_config)
        self.mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
        rng = np.random.default_rng([seed, 7])
        latents, pixels = [], []
        for i in tqdm(range(clips), desc="anchor clips", leave=False):
            prompt = sample_prompt(rng)
            state = generator.new_state(seed=int(rng.integers(2**31)))
            generator.set_prompt(state, prompt, pipe.encode_prompt(prompt))
            with torch.no_grad():
                z = torch.cat([generator.generate_block(state) for _ in range(blocks)], dim=2)  # [1, C, F, h, w]
                x = decode(vae, z * self.std + self.mean).clamp(-1, 1)  # [1, 3, 1 + 4 (F - 1), H, W]
            latents.append(z)
            pixels.append(x.half())
        self.latents, self.pixels = torch.cat(latents), torch.cat(pixels)

    def loss(self, vae: AutoencoderKLWan, rng: np.random.Generator, device) -> torch.Tensor:
        """MSE between the encoder's normalised posterior mode of one pool clip's frames and its latents."""
        i = int(rng.integers(len(self.latents)))
        mode = vae.encode(self.pixels[i : i + 1].to(device, torch.float32)).latent_dist.mode()
        return F.mse_loss((mode - self.mean.to(device)) / self.std.to(device), self.latents[i : i + 1].to(device))


def train_vae(args) -> dict:
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    acc = Accelerator(cpu=args.cpu)
    cfg = vae_config(args.z_dim, args.base_dim, args.patch, args.dim_mult, args.res_blocks, args.decoder_dim)
    if args.encoder_from and args.decoder_from:
        raise ConfigError(f"--encoder-from {args.encoder_from} and --decoder-from {args.decoder_from} exclude each "
                          f"other: one half of the VAE trains against the other, frozen")
    source = frozen_encoder_source(args.encoder_from, cfg) if args.encoder_from else None
    decoder_source = frozen_decoder_source(args.decoder_from, cfg) if args.decoder_from else None
    if args.anchor_student and not args.decoder_from:
        raise ConfigError(f"--anchor-student {args.anchor_student} needs --decoder-from (it anchors an encoder "
                          f"recovered for that student's decoder)")
    check_counts(args, "anchor_clips", "anchor_blocks")
    # What must match to resume; the rest (steps, lr, batch...) may change between sessions.
    ckpt = Checkpointer(args.out, config={"stage": "vae", "vae": cfg, "size": args.size, "seed": args.seed,
                                          **({"encoder_from": os.path.abspath(args.encoder_from)} if source else {}),
                                          **({"decoder_from": os.path.abspath(args.decoder_from)}
                                             if decoder_source else {})},
                        keep=2)
    torch.manual_seed(args.seed)
    model = VAELoss(AutoencoderKLWan(**cfg), sample=args.train_latents == "sample", edges=args.edge_weight > 0)
    if source is None:
        with torch.no_grad():  # start the posterior narrow: at log-variance 0 the decoder would see mostly noise
            model.vae.quant_conv.bias[cfg["z_dim"]:] = args.logvar_init
    if decoder_source is not None:  # encoder-only: the source's decoder, frozen; a fresh encoder learns to invert it
        missing, unexpected = model.vae.load_state_dict(
            {k: v for k, v in decoder_source.state_dict().items() if not encoder_part(k)}, strict=False)
        assert not unexpected and all(encoder_part(k) for k in missing), (missing, unexpected)
        for name, p in model.vae.named_parameters():
            p.requires_grad_(encoder_part(name))
        acc.print(f"encoder-only: decoder frozen from {args.decoder_from}; encoder trained from scratch")
    elif source is not None:  # decoder-only: the source's encoder (and its decoder too when the shapes match), encoder frozen
        same_decoder = source.config.get("decoder_base_dim") == model.vae.config.get("decoder_base_dim")
        model.vae.load_state_dict({k: v for k, v in source.state_dict().items() if same_decoder or encoder_part(k)},
                                  strict=same_decoder)
        for name, p in model.vae.named_parameters():
            p.requires_grad_(not encoder_part(name))
        acc.print(f"decoder-only: encoder frozen from {args.encoder_from}; decoder "
                  f"{'continued from it' if same_decoder else 'trained from scratch'}")
    anchor = (AnchorClips(args.anchor_student, model.vae, args.anchor_clips, args.anchor_blocks, args.seed)
              if args.anchor_student else None)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=(0.9, 0.99),
                            weight_decay=0.0)
    model, opt = acc.prepare(model, opt)
    ema = EMA(acc.unwrap_model(model), decay=args.ema)
    state = ckpt.resume(acc, model, opt, ema, require=args.resume)
    main = acc.is_main_process
    log = CSVLogger(os.path.join(args.out, "log.csv"), resume_step=state.step, main=main)
    eval_log = CSVLogger(os.path.join(args.out, "eval.csv"), resume_step=state.step, main=main)
    eval_sets = {split: fixed_clips(split, args.eval_clips, args.eval_frames, args.size)
                 for split in ("train", "heldout")} if main else {}
    preview_clips = eval_sets["train"][:2] + eval_sets["heldout"][:2] if main else []

    def evaluate(weights: str = "ema") -> tuple[dict, AutoencoderKLWan]:
        vae = copy.deepcopy(acc.unwrap_model(model).vae).eval()
        if weights == "ema":
            ema.copy_to(nn.ModuleDict({"vae": vae}))  # EMA keys carry the wrapper's "vae." prefix
        return {k: v for split, clips in eval_sets.items() for k, v in clip_psnr(vae, clips, split).items()}, vae

    crop = args.crop if args.crop and args.crop < args.size else None  # None: whole frames
    acc.print(f"VAE {sum(p.numel() for p in model.parameters()) / 1e3:.0f}k params, config {cfg}")
    means = RunningMeans()
    bar = progress(acc, range(state.step, args.steps), initial=state.step, total=args.steps, desc="vae")
    for step in bar:
        lr = lr_at(step, args.lr, args.warmup, args.steps)
        set_lr(opt, lr)
        frames, masks = training_batch(args.seed, acc.process_index, step, args.batch, args.frames, args.seconds,
                                       args.size, crop)
        x, mask = to_pixels(frames).to(acc.device), torch.from_numpy(masks).to(acc.device, torch.float32)
        gen = torch.Generator(device=acc.device).manual_seed(step_seed(args.seed, acc.process_index, step))
        recon, l1, l1_object, kl, l1_edges = model(x, mask, gen)
        loss = l1 + args.object_weight * l1_object + args.kl_weight * kl + args.edge_weight * l1_edges
        if anchor is not None:
            anchor_mse = anchor.loss(acc.unwrap_model(model).vae, np.random.default_rng([args.seed, 8, step]),
                                     acc.device)
            loss = loss + args.anchor_weight * anchor_mse
        acc.backward(loss)
        optimizer_step(acc, model.parameters(), opt)
        ema.update(acc.unwrap_model(model))
        state.step = step + 1

        with torch.no_grad():
            mse = F.mse_loss(recon.clamp(-1, 1), x)
        means.add(loss=loss.item(), l1=l1.item(), l1_object=l1_object.item(), kl=kl.item(),
                  **({"l1_edges": l1_edges.item()} if args.edge_weight else {}),
                  **({"anchor_mse": anchor_mse.item()} if anchor is not None else {}),
                  psnr_batch=(10 * torch.log10(4.0 / mse)).item())
        if state.step % args.log_every == 0 or state.step == args.steps:
            row = means.take()
            log.log(step=state.step, **row, lr=lr, seconds=round(state.seconds(), 2))
            bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr_batch']:.1f}")
        if main and (state.step % args.eval_every == 0 or state.step == args.steps):
            metrics, vae = evaluate()
            eval_log.log(step=state.step, **metrics, seconds=round(state.seconds(), 2))
            save_preview(vae, preview_clips, os.path.join(args.out, "recon.png"))
            acc.print(f"step {state.step}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in metrics.items()))
            plot_losses(eval_log.path, os.path.join(args.out, "eval.png"), title="EMA reconstruction PSNR (dB)")
        if state.step % args.save_every == 0 or state.step == args.steps:
            ckpt.save(acc, state, model, opt, ema)
            if main:
                plot_losses(log.path, os.path.join(args.out, "loss.png"), title="VAE training")
    bar.close()
    log.close()
    eval_log.close()
    result = {}
    if main:
        if os.path.exists(log.path):
            plot_losses(log.path, os.path.join(args.out, "loss.png"), title="VAE training")
        result = finalize(args, acc, state, model, ema, evaluate, cfg, preview_clips, source or decoder_source)
    acc.wait_for_everyone()
    return result


def finalize(args, acc, state, model, ema, evaluate, cfg, preview_clips: list[Clip],
             source: AutoencoderKLWan | None) -> dict:
    """EMA weights + latent statistics (a decoder-only or encoder-only run keeps its source's) -> out/vae, and
    metrics.json."""
    raw, _ = evaluate("raw")
    metrics, vae = evaluate("ema")
    if source is not None:
        mean, std = list(source.config.latents_mean), list(source.config.latents_std)
    else:
        stats_clips = [c.frames for c in fixed_clips("train", args.stats_clips, args.eval_frames, args.size, STATS_SEED)]
        mean, std = latent_stats(vae, stats_clips)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    vae_dir = os.path.join(args.out, "vae")
    vae.save_pretrained(vae_dir)
    save_preview(vae, preview_clips, os.path.join(args.out, "recon.png"))
    decode_s = time_streaming_decode(vae.cpu(), args.size)
    result = write_stage_metrics(args, acc, state, "vae", **{
        **{k: round(v, 3) for k, v in metrics.items()},
        "raw_weights": {k: round(v, 3) for k, v in raw.items()},
        "batch": args.batch * acc.num_processes, "frames": args.frames, "size": args.size,
        "crop": args.crop if args.crop and args.crop < args.size else None,
        "decode_s_per_block": round(decode_s, 4),
        "decode_note": "StreamingDecoder.decode, 3 latent frames -> 12 frames, torch 1 thread, CPU, median",
        "params": sum(p.numel() for p in vae.parameters()),
        "decoder_params": sum(p.numel() for p in vae.decoder.parameters()),
        "eval": {"clips_per_split": args.eval_clips, "frames": args.eval_frames, "weights": "EMA",
                 "psnr": "mean over clips of PSNR (uint8, all frames), posterior mode"},
        "loss": f"L1 + {args.object_weight:g} * L1(object pixels) + {args.kl_weight:g} * KL + {args.edge_weight:g} * "
                f"L1(image gradients), decoding the posterior {args.train_latents}"
                + (f" + {args.anchor_weight:g} * MSE(encoded latents, {args.anchor_student}'s latents)"
                   if args.anchor_student else ""),
        "encoder_from": args.encoder_from, "decoder_from": args.decoder_from,
        "anchor_student": args.anchor_student, "lr": args.lr, "ema": args.ema, "latents_mean": mean, "latents_std": std, "vae_config": cfg,
        "vae_dir": vae_dir})
    acc.print(f"saved {vae_dir}; PSNR train {metrics['psnr_train']:.2f} dB, held-out {metrics['psnr_heldout']:.2f} dB; "
              f"decode {decode_s * 1000:.0f} ms/block (1 thread)")
    return result

