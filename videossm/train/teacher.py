"""Stage 1: the bidirectional teacher and the small text encoder, trained together with flow matching.

    python -m videossm train teacher --vae runs/vae/vae --out runs/teacher

Data: 5 s single-prompt world clips (21 latent frames) encoded by the frozen VAE of stage 0. The model
is the `tiny` VideoSSMTransformer run without a cache, i.e. plain bidirectional Wan2.1 over all frames
(its memory modules are unused and stay zero-gated). The text encoder is a tiny UMT5EncoderModel over
the grammar's word-level tokenizer, learned from scratch through the same loss.

Short clips: with `--short-frames 9 --short-share 0.75` three steps in four train on 9-latent-frame clips
(2.25 s) and the rest on the full 5 s. On a CPU a 9-frame step costs ~1/5 of a 21-frame one (attention is
quadratic in the clip), so the teacher sees several times more steps for the same hours, and still learns
the 5 s length that the causal stages distil. RoPE positions are absolute frame indices, so one model
serves both lengths.

Loss (rectified flow, as Wan): sigma = shift(u), u ~ U(0, 1); x_t = (1 - sigma) x0 + sigma eps;
MSE(model(x_t, 1000 sigma, text), eps - x0). With probability `--text-dropout` a clip's text is the
empty (all-zero) embedding, so the teacher also learns the unconditional branch of classifier-free
guidance, which the DMD stage's real score uses.

Object weight: with `--object-weight W` the squared error of every latent cell the object covers (the
world's ground-truth mask on the latent grid, grown by one cell) counts W times, and the loss is the
weighted mean. The object is ~25 px in a 128 px frame, ~2% of the cells, so under the plain loss its
shape and motion are a rounding error next to the background texture. The price: the weight depends on
the clean clip, so the loss's minimiser is no longer the flow's velocity. At a cell it is the posterior
mean tilted W-fold towards clips whose object covers that cell, which matters where the posterior over
the object's place is broad (high noise) and pushes samples towards more object. Weights that depend only
on sigma (`--train-shift`) are the unbiased way to reweight; this one trades bias for signal.

At the end `out/teacher/` holds the teacher in the project's checkpoint format (transformer, text
encoder, tokenizer, VAE), which the causal stages load, plus sample videos in `out/samples/`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from transformers import UMT5EncoderModel

from ..config import ConfigError, StreamConfig, get_model_config
from ..models.text_encoder import TextEncoder, encode_token_ids, tiny_umt5_config, word_level_tokenizer
from ..models.transformer import VideoSSMTransformer
from ..models.vae import StreamingDecoder, to_uint8_frames
from ..sampling.ode import sample_video_latents, shift_sigma
from ..world import sample_prompt, vocabulary
from .common import (EMA, Checkpointer, CSVLogger, RunningMeans, check_counts, final_mean, log_and_checkpoint, lr_at,
                     optimizer_step, progress, read_csv, set_lr, step_seed, write_stage_metrics)
from .data import (ReplayLatents, WorldLatents, batch_rng, check_geometry, load_frozen_vae, parse_mixture,
                   step_batch)

SAMPLE_SEED = 20251207


class TeacherLoss(nn.Module):
    """Transformer + text encoder behind one forward (one DDP module): the flow-matching loss."""

    def __init__(self, transformer: VideoSSMTransformer, text_model: UMT5EncoderModel):
        super().__init__()
        self.transformer, self.text_model = transformer, text_model

    def forward(self, x0, input_ids, mask, sigma, noise, keep_text, cell_weight=None) -> torch.Tensor:
        """x0, noise [B, C, F, h, w]; input_ids, mask [B, L]; sigma, keep_text [B]; cell_weight
        [B, 1, F, h, w] or None (plain MSE)."""
        text = encode_token_ids(self.text_model, input_ids, mask) * keep_text[:, None, None]  # [B, L, D]
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        v = self.transformer(x_t, sigma * 1000.0, text)
        if cell_weight is None:
            return F.mse_loss(v.float(), noise - x0)
        return weighted_mse(v.float(), noise - x0, cell_weight)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, cell_weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error where each latent cell counts cell_weight [B, 1, F, h, w] times (all channels alike);
    equals F.mse_loss when the weights are all equal."""
    weight = cell_weight.expand_as(pred)
    return (weight * (pred - target) ** 2).sum() / weight.sum()


def build_teacher(preset: str, seed: int, init_from: str | None = None) -> tuple[TeacherLoss, TextEncoder]:
    """Fresh weights of `preset`, or with `init_from` (a checkpoint folder) that folder's transformer and text
    encoder, the text encoder frozen."""
    if init_from is not None:
        from .causal import load_checkpoint

        if not os.path.isdir(init_from):
            raise ConfigError(f"--init-from {init_from!r} is not a folder (a student or teacher checkpoint)")
        pipe = load_checkpoint(init_from, "cpu")
        text = pipe.text_encoder
        text.model.requires_grad_(False)
        return TeacherLoss(pipe.transformer.requires_grad_(True).train(), text.model), text
    config = get_model_config(preset)
    torch.manual_seed(seed)
    tokenizer = word_level_tokenizer(vocabulary())
    text_model = UMT5EncoderModel(tiny_umt5_config(len(tokenizer), config.text_dim))
    model = TeacherLoss(VideoSSMTransformer(config), text_model)
    return model, TextEncoder(text_model, tokenizer, config.text_len, word_level=True)


def check_args(args) -> None:
    check_counts(args, "steps", "batch", "latent_frames", "save_every", "log_every", "sample_steps", "reuse",
                 "replay_window")
    if not 0 <= args.text_dropout < 1:
        raise ConfigError(f"--text-dropout must be in [0, 1), got {args.text_dropout}")
    if not args.object_weight > 0:
        raise ConfigError(f"--object-weight must be > 0, got {args.object_weight}")
    if not 0 <= args.short_share <= 1:
        raise ConfigError(f"--short-share must be in [0, 1], got {args.short_share}")
    if args.short_share > 0 and not 1 <= args.short_frames < args.latent_frames:
        raise ConfigError(f"--short-frames must be in [1, --latent-frames={args.latent_frames}) when --short-share > 0, "
                          f"got {args.short_frames}")


def export_teacher(transformer: VideoSSMTransformer, text: TextEncoder, vae, path: str, description: str) -> None:
    """The teacher in the project's checkpoint format (loadable with VideoSSMPipeline.from_pretrained)."""
    from ..pipeline import VideoSSMPipeline

    pipe = VideoSSMPipeline(transformer, text, StreamingDecoder(vae), StreamConfig(), name="teacher", trained=True,
                            description=description)
    pipe.save_pretrained(path)


@torch.no_grad()
def write_samples(transformer, text: TextEncoder, vae, out_dir: str, latent_frames: int, steps: int, guidance: float,
                  shift: float) -> list[str]:
    """One video per split (train prompt, held-out prompt) from fixed noise: out_dir/{split}.mp4."""
    from ..video.mp4 import write_mp4

    os.makedirs(out_dir, exist_ok=True)
    decoder = StreamingDecoder(vae)
    paths = []
    for i, split in enumerate(("train", "heldout")):
        prompt = sample_prompt(np.random.default_rng([SAMPLE_SEED, i]), split)
        x0 = sample_video_latents(transformer, text.encode(prompt), latent_frames, steps, guidance, shift,
                                  SAMPLE_SEED + i)
        frames = to_uint8_frames(decoder.decode(decoder.new_state(), x0))
        path = os.path.join(out_dir, f"{split}.mp4")
        write_mp4(path, frames, fps=transformer.config.fps)
        with open(os.path.join(out_dir, f"{split}.txt"), "w") as f:
            f.write(prompt + "\n")
        paths.append(path)
    return paths


def train_teacher(args) -> dict:
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    acc = Accelerator(cpu=args.cpu)
    model, text = build_teacher(args.preset, args.seed, args.init_from)
    vae = load_frozen_vae(args.vae, acc.device)
    check_geometry(vae, model.transformer.config)
    mixture = parse_mixture(args.mixture) if args.mixture else None
    data = WorldLatents(vae, model.transformer.config, args.latent_frames, mixture)
    short_data = (WorldLatents(vae, model.transformer.config, args.short_frames, mixture)
                  if args.short_share > 0 else None)

    def is_short(step: int) -> bool:  # the first draw of the step's RNG picks the clip length
        return short_data is not None and batch_rng(args.seed, acc.process_index, step).random() < args.short_share

    if args.reuse > 1:  # pools of recent clips per length, refreshed every `reuse` steps of that length
        data = ReplayLatents(data, args.reuse, args.replay_window, args.seed, acc.process_index,
                             lambda s: not is_short(s))
        if short_data is not None:
            short_data = ReplayLatents(short_data, args.reuse, args.replay_window, args.seed, acc.process_index,
                                       is_short)
    ckpt = Checkpointer(args.out, keep=2, config={
        "stage": "teacher", "model": model.transformer.config.to_dict(), "text": model.text_model.config.to_dict(),
        "vae": dict(vae.config), "latent_frames": args.latent_frames, "seed": args.seed,
        **({"init_from": args.init_from} if args.init_from else {})})  # runs from before the option keep their config
    trained = [p for p in model.parameters() if p.requires_grad]  # all but a frozen --init-from text encoder
    opt = torch.optim.AdamW(trained, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    model, opt = acc.prepare(model, opt)
    ema = EMA(acc.unwrap_model(model), decay=args.ema)
    state = ckpt.resume(acc, model, opt, ema, require=args.resume)
    main = acc.is_main_process
    log = CSVLogger(os.path.join(args.out, "log.csv"), resume_step=state.step, main=main)
    acc.print(f"teacher {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params "
              f"(text encoder {sum(p.numel() for p in acc.unwrap_model(model).text_model.parameters()) / 1e3:.0f}k)")

    def ema_parts():
        shadow = ema.averaged_copy(acc.unwrap_model(model))
        return shadow.transformer, TextEncoder(shadow.text_model, text.tokenizer, text.max_length, acc.device, True)

    means = RunningMeans()
    bar = progress(acc, range(state.step, args.steps), initial=state.step, total=args.steps, desc="teacher")
    for step in bar:
        lr = lr_at(step, args.lr, args.warmup, args.steps)
        set_lr(opt, lr)
        rng = batch_rng(args.seed, acc.process_index, step)
        short = short_data is not None and rng.random() < args.short_share  # == is_short(step)
        x0, prompts, object_mask = step_batch(short_data if short else data, step, rng, args.batch)  # [B, C, F, h, w]
        input_ids, mask = text.tokenize(prompts)
        gen = torch.Generator().manual_seed(step_seed(args.seed, acc.process_index, step))
        u = torch.rand(args.batch, generator=gen)
        sigma = shift_sigma(u, args.train_shift).to(acc.device)  # [B]
        noise = torch.randn(x0.shape, generator=gen).to(acc.device)
        keep_text = (torch.rand(args.batch, generator=gen) >= args.text_dropout).float().to(acc.device)
        cell_weight = None if args.object_weight == 1 else 1 + (args.object_weight - 1) * object_mask.float()
        loss = model(x0, input_ids, mask, sigma, noise, keep_text, cell_weight)
        acc.backward(loss)
        grad_norm = optimizer_step(acc, model.parameters(), opt)
        ema.update(acc.unwrap_model(model))
        state.step = step + 1
        means.add(loss=loss.item(), grad_norm=grad_norm, latent_frames=x0.shape[2])
        log_and_checkpoint(args, acc, state, means, log, bar, lambda: ckpt.save(acc, state, model, opt, ema),
                           "teacher (flow matching)", lr)
        if main and args.sample_every and state.step % args.sample_every == 0 and state.step < args.steps:
            write_samples(*ema_parts(), vae, os.path.join(args.out, "samples", f"step-{state.step:07d}"),
                          args.latent_frames, args.sample_steps, args.guidance, StreamConfig().shift)
    bar.close()
    log.close()
    result = {}
    if main:
        transformer, ema_text = ema_parts()
        teacher_dir = os.path.join(args.out, "teacher")
        export_teacher(transformer, ema_text, vae, teacher_dir,
                       f"bidirectional flow-matching teacher, {state.step} steps (stage 1 of the recipe)")
        samples = write_samples(transformer, ema_text, vae, os.path.join(args.out, "samples", "final"),
                                args.latent_frames, args.sample_steps, args.guidance, StreamConfig().shift)
        result = write_stage_metrics(args, acc, state, "teacher", batch=args.batch * acc.num_processes,
                                     final_loss=final_mean(read_csv(log.path), "loss"),
                                     teacher_dir=teacher_dir,
                                     samples=samples)
        acc.print(f"saved {teacher_dir}; final loss {result['final_loss']}")
    acc.wait_for_everyone()
    return result
