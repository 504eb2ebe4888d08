"""Self-rollout against the world's ground truth: a student continues a world clip on its own, judged in pixels.

    python -m videossm train rollout --student assets/videossm-hybrid --vae runs/vae-enc-anchor/vae \\
        --out runs/rollout-hybrid --mixture plain=0.25,wraparound=0.75

Why. The causal stage (teacher forcing) never shows the student its own past; the DMD and long stages do,
but they judge a rollout by the teacher, whose own videos lose the object (docs/TRAINING.md), and they need
the teacher. In this world a clip's future is fixed by its start and its prompt: the object keeps its
velocity on a torus (it leaves the frame and comes back), the background stays. So a student can roll out
from a clip's first `--context-blocks` blocks and every block it makes can be compared with what the world
did: exposure to its own past, with a target that knows when the object comes back.

One step, per clip of `--latent-frames` latent frames (42 = 10.5 s: a wrapping object leaves and returns):
1. The clip's first `--context-blocks` blocks are encoded by `--vae` and written to the KV cache as the
   past (the student's sink, when it has one). The decoder's causal cache is primed on them.
   With `--free-blocks N`, the student then makes 0..N blocks (drawn each step) on its own, as at inference,
   unjudged and without gradient, and the clip is rendered that much longer: the judged blocks come deep in
   the stream's own history, where at inference the object fades (60 s videos lose it after 20-40 s).
2. Every later block is generated as at inference (`StreamingGenerator`, the student's own cache, window,
   sink and memory), stopping at a random one of the 4 denoising steps whose call keeps its graph
   (Self-Forcing); that x0 is committed to the cache (in `hybrid`, with the gates' graph, so the memory's
   write path learns from the later blocks' losses).
3. Each block's x0 is decoded by the frozen decoder, through its causal cache (detached between blocks),
   and compared with the rendered frames: MSE over pixels in [-1, 1], the object's pixels (its exact mask)
   counting `--object-weight` times.

4. With `--adversarial-weight W` > 0, a discriminator (`adversarial.py`) also judges each block, with the
   frames before it, against the same span of the clip encoded and decoded by the VAE; the student adds W x
   its non-saturating term, and the discriminator takes `--disc-steps` steps on the detached blocks after
   the student's (they are cheap beside the rollout).
   A squared error alone answers doubt (where will the wrapped object come back?) with a faint smear; the
   discriminator rejects smears (Self-Forcing's GAN objective, here without a teacher).
5. With `--probe-weight W` > 0, a frozen world probe (`--probe`, `probe_term.py`) reads every generated
   frame and is asked the clip's records: the object in view or not, its colour and shape, wherever drawn.
6. With `--color-weight W` > 0, each generated frame should hold as much of the object's exact colour as the
   clip's frame through the VAE, wherever it is drawn (`color_term.py`).
7. With `--anchor-weight W` > 0, the first block of a fresh stream of the clips' prompts, from noise (the block
   inference starts with, which step 1 never asks for), stays what a frozen `--anchor` (default: the starting
   student) makes of the same noise (`anchor_term.py`).

The loss is in pixels, so it needs the decoder alone, which every student carries: an encoder recovered for
a shipped decoder (`train vae --decoder-from`) finds other latents than the student's own, and here those
touch only the context blocks, not the targets. The result, `out/student/`, is a streaming checkpoint with
`--vae` as its VAE (the starting student's decoder).
"""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from ..config import ConfigError, first_pixel_frame, pixel_frames_for
from ..models.vae import StreamingDecoder
from ..sampling.stream import StreamingGenerator, StreamState
from ..world import sample_training_clip
from ..eval.world.probe import ProbeConfig, WorldProbe
from .anchor_term import anchor_term, check_anchor
from .adversarial import BlockDiscriminator, generator_loss, pooled_text, update_discriminator
from .causal import check_frames, encode_prompts, export_student, load_checkpoint, same_decoder_vae
from .common import (EMA, Checkpointer, CSVLogger, RunningMeans, check_counts, final_mean, log_and_checkpoint, lr_at,
                     optimizer_step, progress, read_csv, seed_everything, set_lr, step_seed, write_stage_metrics)
from .data import SINGLE_PROMPT_MIXTURE, WorldLatents, batch_rng, check_geometry, load_frozen_vae, parse_mixture
from .color_term import color_area_term, object_rgb
from .phase_term import PhaseTargets, choose_timing, phase_targets, timing_losses
from .probe_term import FrameTruth, clip_truth, load_judge, probe_term


@dataclasses.dataclass
class RolloutClips:
    """One step's clips: the context's latents, the clips' frames and object masks, prompts."""

    context: torch.Tensor  # [B, C, Fc, h, w] normalised latents of the first context blocks
    pixels: torch.Tensor  # [B, 3, T, H, W] in [-1, 1], the clip from pixel frame `judged_from` on
    object_mask: torch.Tensor  # [B, 1, T, H, W] bool, the object's exact pixels, the same frames
    prompts: list[str]
    seen: torch.Tensor | None = None  # [B, 3, T, H, W] the whole clip through the VAE (encoded, decoded), with a decoder
    truth: FrameTruth | None = None  # [B, T] the world's answers per frame of the whole clip, with a probe config
    object_rgb: torch.Tensor | None = None  # [B, 3] the objects' exact colours in [-1, 1]
    phase: PhaseTargets | None = None  # the clips at other timings of the object, with phase_frames
    judged_from: int = 0  # the first pixel frame of `pixels`, `object_mask` and `phase`: 0 unless free frames


class WorldRollouts:
    """Renders single-prompt world clips of `latent_frames` and encodes their first `context_frames` latent
    frames with `vae` (the clip's later frames are only targets, in pixels); prompts of `split`. With a
    `decoder` (a StreamingDecoder) the whole clip is encoded and decoded as well (`RolloutClips.seen`: the
    real clips of the adversarial term), and the context is the first latent frames of that encoding. With a
    `probe_config` each frame's record is read into `RolloutClips.truth` (the probe term's targets). With
    `phase_frames` > 0 the clips are also drawn with the object up to that many frames early or late
    (`RolloutClips.phase`, the targets of the timing-tolerant pixel loss).

    `batch(..., free_frames=N)` renders clips N latent frames longer: the student makes those frames on its
    own after the context, unjudged (`--free-blocks`), so the pixel targets start at the first judged frame
    (`seen` and `truth` still cover the whole clip)."""

    def __init__(self, vae, model_config, latent_frames: int, context_frames: int,
                 mixture: dict[str, float] | None = None, split: str = "train",
                 decoder: StreamingDecoder | None = None, probe_config: ProbeConfig | None = None,
                 phase_frames: int = 0):
        self.latents = WorldLatents(vae, model_config, context_frames, mixture or SINGLE_PROMPT_MIXTURE)
        self.config, self.mixture, self.split = model_config, mixture or SINGLE_PROMPT_MIXTURE, split
        self.decoder, self.context_frames, self.probe_config = decoder, context_frames, probe_config
        self.phase_frames, self.latent_frames = phase_frames, latent_frames
        self.pixel_frames = pixel_frames_for(latent_frames, model_config.vae_scale_temporal)
        self.context_pixels = pixel_frames_for(context_frames, model_config.vae_scale_temporal)

    def batch(self, rng: np.random.Generator, batch: int, free_frames: int = 0) -> RolloutClips:
        cfg = self.config
        if free_frames < 0:
            raise ValueError(f"free_frames must be >= 0, got {free_frames!r}")
        n_frames = pixel_frames_for(self.latent_frames + free_frames, cfg.vae_scale_temporal)
        start = first_pixel_frame(self.context_frames + free_frames, cfg.vae_scale_temporal) if free_frames else 0
        clips = [sample_training_clip(rng, n_frames / cfg.fps, cfg.height, cfg.fps, self.mixture, self.split)
                 for _ in range(batch)]
        frames = np.stack([c.frames[:n_frames] for c in clips])  # [B, T, H, W, 3] uint8
        masks = np.stack([np.stack([c.object_mask(i) for i in range(start, n_frames)]) for c in clips])  # [B, T', H, W]
        pixels = torch.from_numpy(frames[:, start:]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # [B, 3, T', H, W]
        seen = None
        if self.decoder is None:
            context = self.latents.encode(frames[:, : self.context_pixels])
        else:  # the encoder is causal: the whole clip's first latent frames are the context's encoding
            latents = self.latents.encode(frames)  # [B, C, F, h, w]
            context = latents[:, :, : self.context_frames]
            seen = self.decoder.decode(self.decoder.new_state(), latents).float().cpu()  # [B, 3, T, H, W]
        truth = None if self.probe_config is None else clip_truth(clips, n_frames, self.probe_config)
        phase = phase_targets(clips, n_frames, self.phase_frames, start) if self.phase_frames else None
        return RolloutClips(context=context.cpu(), pixels=pixels, object_mask=torch.from_numpy(masks)[:, None],
                            prompts=[c.prompt for c in clips], seen=seen, truth=truth,
                            object_rgb=object_rgb([c.records[0].color for c in clips]), phase=phase,
                            judged_from=start)


@dataclasses.dataclass
class AdversarialBatch:
    """The discriminator's step: each generated block with the frames before it, real and the student's."""

    real: torch.Tensor  # [N, 3, T, H, W] the world's clips through the VAE
    fake: torch.Tensor  # [N, 3, T, H, W] the student's, detached
    text: torch.Tensor  # [N, D] pooled prompt embeddings


def pixel_weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """MSE over [B, 3, T, H, W] where each pixel counts weight [B, 1, T, H, W] times (all channels alike)."""
    weight = weight.expand_as(pred)
    return (weight * (pred - target) ** 2).sum() / weight.sum()


def start_from_context(generator: StreamingGenerator, decoder: StreamingDecoder, context: torch.Tensor,
                       text: torch.Tensor, seed: int) -> StreamState:
    """A stream of the clips' prompts (text [B, L, D]) whose past is `context` [B, C, Fc, h, w]: committed block
    by block to the KV cache, and decoded once so that the decoder's causal cache (`state.decoder`) follows it."""
    state = generator.new_state(seed, batch_size=context.shape[0], decoder=decoder.new_state())
    generator.set_prompt(state, "the clips' prompts", text)
    block = generator.stream_config.block_frames
    for f0 in range(0, context.shape[2], block):
        generator.commit_block(state, context[:, :, f0 : f0 + block])
    decoder.decode(state.decoder, context)
    return state


class RolloutLoss(nn.Module):
    """The student rolled out from a clip's context through inference's streaming code, each block's x0
    decoded and compared with the clip's frames (one module, for DDP)."""

    def __init__(self, student, stream_config, decoder, object_weight: float, memory_grad: bool,
                 pixel_weight: float = 1.0, adversarial_weight: float = 0.0, probe: WorldProbe | None = None,
                 probe_weight: float = 0.0, color_weight: float = 0.0, color_sigma: float = 0.25,
                 color_side: str = "both", phase_frames: int = 0, phase_per: str = "block",
                 anchor: StreamingGenerator | None = None, anchor_weight: float = 0.0):
        super().__init__()
        self.student, self.stream_config = student, stream_config
        self.generator = StreamingGenerator(student, stream_config)
        decoder.vae.requires_grad_(False)
        self.decoder = [decoder]  # a StreamingDecoder, frozen; in a list so that it is not a submodule
        self.object_weight, self.memory_grad = object_weight, memory_grad and stream_config.uses_memory
        self.pixel_weight, self.adversarial_weight = pixel_weight, adversarial_weight
        self.history_frames = student.config.vae_scale_temporal  # pixel frames before a block that D sees
        self.probe, self.probe_weight = [probe], probe_weight  # frozen; in a list, not a submodule
        self.color_weight, self.color_sigma, self.color_side = color_weight, color_sigma, color_side
        self.phase_frames, self.phase_per = phase_frames, phase_per
        self.anchor, self.anchor_weight = [anchor], anchor_weight  # frozen; in a list, not a submodule

    def forward(self, context: torch.Tensor, text: torch.Tensor, pixels: torch.Tensor, object_mask: torch.Tensor,
                exit_steps: list[int], seed: int, disc: nn.Module | None = None, seen: torch.Tensor | None = None,
                truth: FrameTruth | None = None, rgb: torch.Tensor | None = None, phase: PhaseTargets | None = None,
                anchor_exit: int = 0, free_blocks: int = 0, judged_from: int = 0
                ) -> tuple[torch.Tensor, dict[str, float], AdversarialBatch | None]:
        """context [B, C, Fc, h, w], text [B, L, D], pixels [B, 3, T, H, W], object_mask [B, 1, T, H, W];
        exit_steps: one per generated block. Returns the loss (pixel_weight x the mean block loss; plus, with a
        discriminator `disc` and the clips through the VAE `seen` [B, 3, T, H, W], adversarial_weight x its
        generator term; plus, with the frames' `truth` [B, T], probe_weight x the mean block probe term; plus,
        with `seen` and the objects' colours `rgb` [B, 3], color_weight x the mean block colour-area term), the
        logged parts, and the detached (real, fake) clips for the discriminator's step. With phase_frames > 0
        the pixel loss is the timing-tolerant one against `phase`, its timing chosen per block or (phase_per
        "clip") once per clip for the whole rollout (phase_term.py). With anchor_weight > 0, plus anchor_weight
        x the first-block anchor term at exit step `anchor_exit` (anchor_term.py).

        With free_blocks > 0 the student first makes that many blocks after the context as at inference (every
        denoising step, no graph, unjudged; in `hybrid` the frames they push out of the window go to the
        memory), and the judged blocks follow; then `pixels`, `object_mask` and `phase` start at pixel frame
        `judged_from`, the first judged block's (`WorldRollouts.batch(..., free_frames)`), while `seen` and
        `truth` cover the whole clip; the discriminator sees the last free block's frames before the first
        judged block."""
        judge = self.probe[0] if self.probe_weight > 0 else None
        decoder = self.decoder[0]
        temporal, history = self.student.config.vae_scale_temporal, self.history_frames
        state = start_from_context(self.generator, decoder, context, text, seed)
        free_pixels = None  # [B, 3, Tb, H, W] the last free block's frames: what D sees before the first judged block
        with torch.no_grad():
            for _ in range(free_blocks):
                free_pixels = decoder.decode(state.decoder, self.generator.generate_block(state)).float()
        offset = first_pixel_frame(state.frame_index, temporal) if free_blocks else 0
        if judged_from != offset:
            raise ValueError(f"the targets start at pixel frame {judged_from}, but the first judged block's is "
                             f"{offset} ({free_blocks} free blocks after {context.shape[2]} context frames)")
        weight = 1 + (self.object_weight - 1) * object_mask.float()  # [B, 1, T', H, W]
        losses, object_sq, object_n, judged, colored = [], 0.0, 0.0, [], []
        if self.color_weight > 0:
            object_share = object_mask[:, 0].flatten(2).float().mean(2).amax(1).clamp(min=1e-3)  # [B]
        fakes, reals, texts = [], [], []
        for block, exit_step in enumerate(exit_steps):
            f0 = state.frame_index
            x0 = self.generator.denoise_block(state, exit_step, grad=True)  # [B, C, Fb, h, w]
            self.generator.commit_block(state, x0, grad_gates=self.memory_grad)
            pred = decoder.decode_graph(state.decoder, x0).float()  # [B, 3, Tb, H, W]
            p0, p1 = first_pixel_frame(f0, temporal), first_pixel_frame(f0 + x0.shape[2], temporal)
            q0, q1 = p0 - offset, p1 - offset  # in the targets, which start at the first judged frame
            target, mask = pixels[:, :, q0:q1], object_mask[:, :, q0:q1]
            if self.phase_frames:  # [B, K] per timing; the choice waits for the end with phase_per "clip"
                losses.append(timing_losses(pred, phase.span(q0, q1), self.object_weight))
            else:
                losses.append(pixel_weighted_mse(pred, target, weight[:, :, q0:q1]))
            if judge is not None:
                judged.append(probe_term(judge, pred, truth.span(p0, p1)))
            if self.color_weight > 0:
                colored.append(color_area_term(pred, seen[:, :, p0:p1], rgb, object_share, self.color_sigma,
                                                self.color_side))
            with torch.no_grad():
                err = (pred - target).pow(2).mean(1, keepdim=True)  # [B, 1, Tb, H, W]
                object_sq += float((err * mask).sum())
                object_n += float(mask.sum())
            if disc is not None:  # the frames before the block: the context's through the VAE, then the student's
                if block == 0:
                    before = seen[:, :, p0 - history:p0] if free_pixels is None else free_pixels[:, :, -history:]
                else:
                    before = fakes[-1][:, :, -history:].detach()
                fakes.append(torch.cat([before, pred.clamp(-1, 1)], dim=2))  # [B, 3, history + Tb, H, W]
                reals.append(seen[:, :, p0 - history:p1])
                texts.append(pooled_text(text, block))
        extra = {"object_mse": object_sq / max(object_n, 1.0)}
        if self.phase_frames:
            per_timing = torch.stack(losses)  # [N blocks, B, K]
            if self.phase_per == "clip":  # one timing for the clip's whole rollout
                pixel_loss, timing = choose_timing(per_timing.mean(0))
            else:
                chosen = [choose_timing(block_losses) for block_losses in per_timing]
                pixel_loss, timing = torch.stack([c for c, _ in chosen]).mean(), torch.stack([t for _, t in chosen])
            # how far off the best timing was, in frames, and what the exact one would have cost
            extra.update(phase_shift=timing.abs().float().mean().item(), pixel_exact=per_timing[..., 0].mean().item())
        else:
            pixel_loss = torch.stack(losses).mean()
        loss = self.pixel_weight * pixel_loss
        if judged or colored or disc is not None or self.anchor_weight > 0:  # one part of several: log it apart
            extra["pixel_loss"] = pixel_loss.item()
        if self.anchor_weight > 0:
            anchored = anchor_term(self.generator, self.anchor[0], text, anchor_exit, seed)
            loss = loss + self.anchor_weight * anchored
            extra["anchor_loss"] = anchored.item()
        for name, weight, parts in (("probe_loss", self.probe_weight, judged), ("color_loss", self.color_weight, colored)):
            if parts:  # the mean over blocks of a per-block term, and of each of its logged parts
                term = torch.stack([t for t, _ in parts]).mean()
                loss = loss + weight * term
                extra[name] = term.item()
                extra.update({k: float(np.mean([s[k] for _, s in parts])) for k in parts[0][1]})
        if disc is None:
            return loss, extra, None
        fake, text_pooled = torch.cat(fakes), torch.cat(texts)  # [B * blocks, 3, T, H, W], [B * blocks, D]
        adversarial = generator_loss(disc, fake, text_pooled)
        extra["adv_loss"] = adversarial.item()
        batch = AdversarialBatch(real=torch.cat(reals), fake=fake.detach(), text=text_pooled.detach())
        return loss + self.adversarial_weight * adversarial, extra, batch


def _check(args) -> dict[str, float] | None:
    check_counts(args, "steps", "batch", "save_every", "log_every", "context_blocks", "disc_width", "disc_steps")
    if not args.free_blocks >= 0:
        raise ConfigError(f"--free-blocks must be >= 0, got {args.free_blocks}")
    if not args.pixel_phase >= 0:
        raise ConfigError(f"--pixel-phase must be >= 0 frames, got {args.pixel_phase}")
    if args.pixel_phase_per != "block" and not args.pixel_phase:
        raise ConfigError(f"--pixel-phase-per {args.pixel_phase_per} is unused without --pixel-phase > 0")
    if args.pixel_phase and args.pixel_weight == 0:
        raise ConfigError(f"--pixel-phase {args.pixel_phase} is unused with --pixel-weight 0")
    if not args.object_weight > 0:
        raise ConfigError(f"--object-weight must be > 0, got {args.object_weight}")
    for flag, value in (("--pixel-weight", args.pixel_weight), ("--adversarial-weight", args.adversarial_weight),
                        ("--probe-weight", args.probe_weight), ("--color-weight", args.color_weight), ("--r1", args.r1)):
        if not value >= 0:
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    if not args.color_sigma > 0:
        raise ConfigError(f"--color-sigma must be > 0, got {args.color_sigma}")
    if args.color_side != "both" and args.color_weight == 0:
        raise ConfigError(f"--color-side {args.color_side} is unused without --color-weight > 0")
    if args.pixel_weight == 0 and args.adversarial_weight == 0 and args.probe_weight == 0 and args.color_weight == 0:
        raise ConfigError("--pixel-weight 0, --adversarial-weight 0, --probe-weight 0 and --color-weight 0 leave the "
                          "stage no loss")
    if args.probe_weight > 0 and not args.probe:
        raise ConfigError(f"--probe-weight {args.probe_weight} needs --probe PROBE_DIR (a world probe: train probe "
                          f"--seed 1 --out runs/probe-judge)")
    if args.probe and args.probe_weight == 0:
        raise ConfigError(f"--probe {args.probe} is unused without --probe-weight > 0")
    if args.disc_max_acc is not None and not 0 < args.disc_max_acc <= 1:
        raise ConfigError(f"--disc-max-acc must be in (0, 1], got {args.disc_max_acc}")
    if not args.anchor_weight >= 0:
        raise ConfigError(f"--anchor-weight must be >= 0, got {args.anchor_weight}")
    if args.anchor and args.anchor_weight == 0:
        raise ConfigError(f"--anchor {args.anchor} is unused without --anchor-weight > 0")
    if not args.disc_lr > 0:
        raise ConfigError(f"--disc-lr must be > 0, got {args.disc_lr}")
    return parse_mixture(args.mixture) if args.mixture else None


def train_rollout(args) -> dict:
    mixture = _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    acc = Accelerator(cpu=args.cpu)
    pipe = load_checkpoint(args.student, acc.device)
    stream_config = pipe.stream_config.with_overrides(memory=args.memory, window_frames=args.window_frames,
                                                      sink_frames=args.sink_frames)
    check_frames(args.latent_frames, stream_config)
    context_frames = args.context_blocks * stream_config.block_frames
    if context_frames >= args.latent_frames:
        raise ConfigError(f"--context-blocks {args.context_blocks} leaves no block to generate in --latent-frames "
                          f"{args.latent_frames} (blocks of {stream_config.block_frames})")
    vae_dir = args.vae or os.path.join(args.student, "vae")
    if args.vae:  # exported with the student; its decoder must be the student's
        pipe.decoder = same_decoder_vae(os.path.join(args.student, "vae"), args.vae)
    vae = load_frozen_vae(vae_dir, acc.device)  # refuses a decoder-only VAE, naming `train vae --decoder-from`
    check_geometry(vae, pipe.model_config)
    adversarial = args.adversarial_weight > 0
    judge = load_judge(args.probe, acc.device) if args.probe_weight > 0 else None
    data = WorldRollouts(vae, pipe.model_config, args.latent_frames, context_frames, mixture,
                         decoder=pipe.decoder if adversarial or args.color_weight > 0 else None,
                         probe_config=judge.config if judge is not None else None, phase_frames=args.pixel_phase)
    text_bank: dict[str, torch.Tensor] = {}
    anchor_dir = args.anchor or args.student
    anchor = None
    if args.anchor_weight > 0:  # a frozen copy: of the student as loaded, or of another checkpoint
        if args.anchor:
            anchor_pipe = load_checkpoint(args.anchor, acc.device)
            check_anchor(anchor_pipe, pipe, args.anchor, args.student)
            frozen = anchor_pipe.transformer
        else:
            frozen = copy.deepcopy(pipe.transformer)
        anchor = StreamingGenerator(frozen.requires_grad_(False).eval(), stream_config)
    student = pipe.transformer.requires_grad_(True).train()
    model = RolloutLoss(student, stream_config, pipe.decoder, args.object_weight, args.memory_grad,
                        args.pixel_weight, args.adversarial_weight, judge, args.probe_weight, args.color_weight,
                        args.color_sigma, args.color_side, args.pixel_phase, args.pixel_phase_per,
                        anchor, args.anchor_weight)
    config = {
        "stage": "rollout", "model": student.config.to_dict(), "stream": dataclasses.asdict(stream_config),
        "latent_frames": args.latent_frames, "context_blocks": args.context_blocks, "seed": args.seed,
        "student": os.path.abspath(args.student), "object_weight": args.object_weight, "mixture": args.mixture}
    if adversarial or args.pixel_weight != 1:  # runs without the term keep their config (and resume)
        config.update(pixel_weight=args.pixel_weight, adversarial_weight=args.adversarial_weight,
                      disc_width=args.disc_width, r1=args.r1, disc_steps=args.disc_steps)
    if args.disc_max_acc is not None:
        config.update(disc_max_acc=args.disc_max_acc)
    if judge is not None:
        config.update(probe=os.path.abspath(args.probe), probe_weight=args.probe_weight)
    if args.color_weight > 0:
        config.update(color_weight=args.color_weight, color_sigma=args.color_sigma)
        if args.color_side != "both":  # runs from before the option keep their config (and resume)
            config.update(color_side=args.color_side)
    if args.pixel_phase:
        config.update(pixel_phase=args.pixel_phase)
        if args.pixel_phase_per != "block":  # runs from before the option keep their config (and resume)
            config.update(pixel_phase_per=args.pixel_phase_per)
    if anchor is not None:
        config.update(anchor=os.path.abspath(anchor_dir), anchor_weight=args.anchor_weight)
    if args.free_blocks:  # runs from before the option keep their config (and resume)
        config.update(free_blocks=args.free_blocks)
    ckpt = Checkpointer(args.out, keep=2, config=config)
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    model, opt = acc.prepare(model, opt)
    ema = EMA(acc.unwrap_model(model), decay=args.ema)
    disc, nets, opts = None, model, opt  # what the checkpoint holds
    if adversarial:  # the discriminator and its optimizer travel in the checkpoint beside the student
        seed_everything(args.seed)  # its initial weights, the same in a run and in its resumed twin
        disc = BlockDiscriminator(pipe.model_config.text_dim, args.disc_width).to(acc.device)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=args.disc_lr, betas=(0.0, 0.99), weight_decay=0.0)
        disc, disc_opt = acc.prepare(disc, disc_opt)
        nets = nn.ModuleDict({"rollout": acc.unwrap_model(model), "disc": acc.unwrap_model(disc)})
        opts = [opt, disc_opt]

        def disc_step(disc_loss):
            acc.backward(disc_loss)
            optimizer_step(acc, disc.parameters(), disc_opt)

    state = ckpt.resume(acc, nets, opts, ema, require=args.resume)
    main = acc.is_main_process
    log = CSVLogger(os.path.join(args.out, "log.csv"), resume_step=state.step, main=main)
    num_steps = stream_config.num_steps
    generated_blocks = (args.latent_frames - context_frames) // stream_config.block_frames
    means = RunningMeans()
    bar = progress(acc, range(state.step, args.steps), initial=state.step, total=args.steps, desc="rollout")
    for step in bar:
        lr = lr_at(step, args.lr, args.warmup, args.steps, final_frac=1.0)
        set_lr(opt, lr)
        rng = batch_rng(args.seed, acc.process_index, step)
        free = int(rng.integers(0, args.free_blocks + 1)) if args.free_blocks else 0  # drawn only when used
        clips = data.batch(rng, args.batch, free * stream_config.block_frames)
        exit_steps = [int(e) for e in rng.integers(0, num_steps, size=generated_blocks)]
        anchor_exit = int(rng.integers(0, num_steps)) if anchor is not None else 0  # drawn only when used
        text = encode_prompts(pipe.text_encoder, text_bank, clips.prompts, generated_blocks).to(acc.device)
        loss, extra, pairs = model(
            clips.context.to(acc.device), text, clips.pixels.to(acc.device), clips.object_mask.to(acc.device),
            exit_steps, step_seed(args.seed, acc.process_index, step),
            disc=acc.unwrap_model(disc) if adversarial else None,
            seen=clips.seen.to(acc.device) if clips.seen is not None else None,
            truth=clips.truth.to(acc.device) if judge is not None else None, rgb=clips.object_rgb.to(acc.device),
            phase=clips.phase.to(acc.device) if clips.phase is not None else None, anchor_exit=anchor_exit,
            free_blocks=free, judged_from=clips.judged_from)
        if args.free_blocks:  # runs without the option keep their log's columns (and resume)
            extra["free_blocks"] = free
        acc.backward(loss)
        grad_norm = optimizer_step(acc, model.parameters(), opt)
        ema.update(acc.unwrap_model(model))
        if adversarial:  # then the discriminator, on the blocks just made (detached) and the real clips
            set_lr(disc_opt, lr_at(step, args.disc_lr, args.warmup, args.steps, final_frac=1.0))
            disc_loss, disc_stats = update_discriminator(disc, pairs.real, pairs.fake, pairs.text, args.r1,
                                                         args.disc_steps, disc_step, args.disc_max_acc)
            if args.disc_max_acc is None:  # runs without the balance keep their log's columns (and resume)
                disc_stats.pop("disc_updates")
            extra.update(disc_loss=disc_loss, **disc_stats)
        state.step = step + 1
        means.add(loss=loss.item(), grad_norm=grad_norm, **extra)
        log_and_checkpoint(args, acc, state, means, log, bar, lambda: ckpt.save(acc, state, nets, opts, ema),
                           f"rollout ({stream_config.memory})", lr)
    bar.close()
    log.close()
    result = {}
    if main:
        shadow = ema.averaged_copy(acc.unwrap_model(model))
        student_dir = os.path.join(args.out, "student")
        export_student(shadow.student, pipe, stream_config, student_dir,
                       f"VideoSSM student ({stream_config.memory}), {args.student} rolled out against the world's "
                       f"clips, {state.step} steps")
        cols = read_csv(log.path)
        result = write_stage_metrics(args, acc, state, "rollout", memory=stream_config.memory, student=args.student,
                                     vae=vae_dir, latent_frames=args.latent_frames,
                                     final_loss=final_mean(cols, "loss"),
                                     final_object_mse=final_mean(cols, "object_mse"),
                                     student_dir=student_dir)
        acc.print(f"saved {student_dir}; final loss {result['final_loss']}")
    acc.wait_for_everyone()
    return result
