"""Stages 3 and 4: Self-Forcing DMD on the student's own rollouts, short (`dmd`) and long (`long`).

    python -m videossm train dmd  --student runs/causal-hybrid/student --teacher runs/teacher/teacher --out runs/dmd-hybrid
    python -m videossm train long --student runs/dmd-hybrid/student    --teacher runs/teacher/teacher --out runs/long-hybrid

Self-Forcing: the student generates a chunk of `--latent-frames` frames autoregressively from its OWN
outputs, through the same KV cache / sink / window / memory code as inference (StreamingGenerator).
Each block stops at a random one of the 4 denoising steps and only that last call keeps its graph; the
block's x0 is then written into the cache. The chunk is judged by distribution matching distillation:
  x_t = (1 - s) x0 + s eps,  real x0 from the frozen teacher (with guidance), fake x0 from a critic;
  generator loss 0.5 || x0 - sg(x0 - (fake - real) / mean|x0 - real|) ||^2;
  the critic (initialised from the teacher) learns flow matching on the generator's samples, every step;
  the generator is updated every `--gen-every` steps (Self-Forcing's update ratio 5).
With `--regression-weight W` each generator step also takes W times the causal stage's `--source world`
loss on a batch of the world's clips (teacher forcing on data, `causal.CausalODELoss`): DMD's own paired
regression term, with data in place of the teacher's ODE. DMD alone distils what the teacher does from
pure noise, and ours does not move the object as prompted (docs/TRAINING.md); the data term keeps the
student's text-conditioned continuation while DMD makes it commit to one object. `--motion-switch-share`,
`--object-weight` and `--context-grad` shape that term as they shape the causal stage's loss.

`long` (LongLive's streaming long tuning, VideoSSM's long self-rollout) keeps one rollout going across
steps for `--rollout-frames` latent frames (240 = 60 s): every step generates the next chunk after
everything before it, so the window slides, frames are evicted and the memory fills up exactly as in a
minute-long stream, while the teacher judges only the current 5 s chunk. Gradients stop at chunk
boundaries (the cache is detached). With `--switch-prob` the prompt changes at a chunk boundary to one
differing in one attribute, with the KV re-cache of inference. In `hybrid` mode the clean passes of a
generator step keep the gates' graph, so the memory's write path learns from the chunk's losses.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from ..config import ConfigError
from ..sampling.ode import guided_velocity, shift_sigma
from ..sampling.scheduler import denoising_sigmas
from ..sampling.stream import StreamingGenerator, StreamState
from ..world import parse_prompt, sample_prompt, switch_candidates
from .causal import (CausalODELoss, WorldBatches, check_frames, encode_prompts, export_student, load_checkpoint,
                     world_clip_kwargs)
from .common import (EMA, Checkpointer, CSVLogger, RunningMeans, check_counts, final_mean, lr_at, optimizer_step,
                     plot_losses, progress, read_csv, set_lr, step_seed, write_stage_metrics)
from .data import batch_rng


class Rollout:
    """One training stream: its StreamState plus the bookkeeping of prompts and switches."""

    def __init__(self, generator: StreamingGenerator, text_encoder, batch: int, seed: int, index: int):
        self.generator, self.text_encoder = generator, text_encoder
        rng = np.random.default_rng([seed, 11, index])
        self.rng = rng
        self.state: StreamState = generator.new_state(step_seed(seed, 11, index), batch_size=batch)
        self.prompt = sample_prompt(rng, "train")
        generator.set_prompt(self.state, self.prompt, self.embed(self.prompt, batch))
        self.switches = 0

    def embed(self, prompt: str, batch: int) -> torch.Tensor:
        return self.text_encoder.encode(prompt).expand(batch, -1, -1).to(self.generator.transformer.device)

    def maybe_switch(self, prob: float) -> None:
        if self.state.frame_index == 0 or prob <= 0 or self.rng.random() >= prob:
            return
        options = [s for specs in switch_candidates(parse_prompt(self.prompt)).values() for s in specs]
        if not options:
            return
        self.prompt = options[int(self.rng.integers(len(options)))].text
        batch = self.state.cache.batch_size
        with torch.no_grad():
            self.generator.set_prompt(self.state, self.prompt, self.embed(self.prompt, batch))
        self.switches += 1

    def chunk(self, num_frames: int, exit_steps: list[int], grad: bool, memory_grad: bool) -> torch.Tensor:
        """The next `num_frames` latent frames [B, C, F, h, w]; graph only through each block's exit step."""
        blocks = []
        for exit_step in exit_steps:
            x0 = self.generator.denoise_block(self.state, exit_step, grad=grad)
            self.generator.commit_block(self.state, x0, grad_gates=grad and memory_grad)
            blocks.append(x0)
        return torch.cat(blocks, dim=2)

    def end_chunk(self) -> None:
        self.state.cache.detach_()


def dmd_generator_loss(x0, teacher, critic, text, sigma, noise, guidance) -> tuple[torch.Tensor, float]:
    """Distribution matching: push x0 along (real - fake) x0 predictions at noise level sigma [B]."""
    s = sigma.view(-1, 1, 1, 1, 1)
    with torch.no_grad():
        x_t = (1 - s) * x0.detach() + s * noise
        real_x0 = x_t - s * guided_velocity(teacher, x_t, sigma, text, guidance)
        fake_x0 = x_t - s * critic(x_t, sigma * 1000.0, text).float()
        scale = (x0.detach() - real_x0).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1e-6)
        grad = (fake_x0 - real_x0) / scale
    loss = 0.5 * F.mse_loss(x0.float(), (x0.detach() - grad).float())
    return loss, float(grad.abs().mean())


def critic_loss(critic, x0, text, sigma, noise) -> torch.Tensor:
    """Flow matching of the critic on the generator's (detached) samples."""
    s = sigma.view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x0.detach() + s * noise
    return F.mse_loss(critic(x_t, sigma * 1000.0, text).float(), noise - x0.detach())


class Regression:
    """--regression-weight: the causal stage's loss on the world's clips (`WorldBatches`, encoded by the
    teacher's VAE, noised to the student's sigmas, the clean clip as the past), run through the generator."""

    def __init__(self, generator, text_encoder, teacher_pipe, stream_config, args, acc, clip_kwargs: dict):
        self.loss = CausalODELoss(generator, stream_config, args.memory_grad, args.context_grad)
        frames = args.regression_frames or args.latent_frames
        self.clips = WorldBatches(teacher_pipe, args, acc.device, acc.process_index, stream_config.block_frames,
                                  latent_frames=frames, **clip_kwargs)
        self.text_encoder, self.device, self.batch = text_encoder, acc.device, args.regression_batch
        self.sigmas = denoising_sigmas(stream_config.num_steps, stream_config.shift)
        self.blocks = frames // stream_config.block_frames
        self.text_bank: dict[str, torch.Tensor] = {}

    def __call__(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """The mean x0 MSE over the blocks of the index-th regression batch (one sigma per block, as drawn)."""
        states, x0, prompts, cell_weight = self.clips.batch(index, rng, self.batch, self.sigmas)
        sigma_index = [int(k) for k in rng.integers(0, len(self.sigmas), size=self.blocks)]
        return self.loss(states.to(self.device), x0.to(self.device),
                         encode_prompts(self.text_encoder, self.text_bank, prompts, self.blocks).to(self.device),
                         sigma_index, self.sigmas, None if cell_weight is None else cell_weight.to(self.device))


def train_dmd(args) -> dict:
    return _train(args, "dmd")


def train_long(args) -> dict:
    return _train(args, "long")


def _check(args) -> dict:
    """Checks the stage's flags; returns the regression term's world-clip arguments (`world_clip_kwargs`)."""
    check_counts(args, "steps", "batch", "gen_every", "save_every", "log_every", "regression_batch", "reuse",
                 "replay_window")
    if args.rollout_frames < args.latent_frames:
        raise ConfigError(f"--rollout-frames ({args.rollout_frames}) must be >= --latent-frames ({args.latent_frames})")
    if not 0 <= args.switch_prob <= 1:
        raise ConfigError(f"--switch-prob must be in [0, 1], got {args.switch_prob}")
    if not args.regression_weight >= 0:
        raise ConfigError(f"--regression-weight must be >= 0, got {args.regression_weight}")
    clip_kwargs = world_clip_kwargs(args)
    if args.regression_frames < 0:
        raise ConfigError(f"--regression-frames must be >= 0, got {args.regression_frames}")
    regression_only = {"--motion-switch-share": args.motion_switch_share != 0.0,
                       "--object-weight": args.object_weight != 1.0, "--context-grad": args.context_grad,
                       "--mixture": bool(args.mixture), "--regression-frames": args.regression_frames != 0}
    unused = [flag for flag, given in regression_only.items() if given]
    if unused and args.regression_weight == 0:
        raise ConfigError(f"{', '.join(unused)} only shape the regression term; add --regression-weight W > 0")
    return clip_kwargs


def _train(args, stage: str) -> dict:
    clip_kwargs = _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    acc = Accelerator(cpu=args.cpu)
    student_pipe = load_checkpoint(args.student, acc.device)
    stream_config = student_pipe.stream_config.with_overrides(
        memory=args.memory, block_frames=args.block_frames, window_frames=args.window_frames,
        sink_frames=args.sink_frames)
    check_frames(args.latent_frames, stream_config)
    if args.regression_frames:
        check_frames(args.regression_frames, stream_config, "--regression-frames")
    teacher_pipe = load_checkpoint(args.teacher, acc.device)
    teacher = teacher_pipe.transformer.requires_grad_(False).eval()
    generator = student_pipe.transformer.requires_grad_(True).train()
    critic = copy.deepcopy(teacher).requires_grad_(True).train()
    models = torch.nn.ModuleDict({"generator": generator, "critic": critic})
    gen_opt = torch.optim.AdamW(generator.parameters(), lr=args.lr, betas=(0.0, 0.999), weight_decay=0.01)
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=args.critic_lr, betas=(0.0, 0.999), weight_decay=0.01)
    gen_opt, critic_opt = acc.prepare(gen_opt, critic_opt)
    ckpt = Checkpointer(args.out, keep=2, config={
        "stage": stage, "model": generator.config.to_dict(), "stream": dataclasses.asdict(stream_config),
        "latent_frames": args.latent_frames, "rollout_frames": args.rollout_frames, "seed": args.seed,
        "regression_weight": args.regression_weight, "motion_switch_share": args.motion_switch_share,
        "object_weight": args.object_weight, "context_grad": args.context_grad, "mixture": args.mixture,
        "regression_frames": args.regression_frames})
    ema = EMA(generator, decay=args.ema)
    state = ckpt.resume(acc, models, [gen_opt, critic_opt], None, require=args.resume)
    if "ema" in state.extra:  # the generator's EMA travels in extra (the checkpointed model is both nets)
        ema.load_state_dict(state.extra.pop("ema"))
    main = acc.is_main_process
    log = CSVLogger(os.path.join(args.out, "log.csv"), resume_step=state.step, main=main)
    streamer = StreamingGenerator(generator, stream_config)
    num_steps = len(streamer.sigmas)
    blocks_per_chunk = args.latent_frames // stream_config.block_frames
    # A resumed run starts a fresh rollout: the cache of the interrupted one is not checkpointed.
    rollout_index = state.extra.get("rollouts", 0)
    rollout = Rollout(streamer, student_pipe.text_encoder, args.batch, args.seed, rollout_index)
    regression = Regression(generator, student_pipe.text_encoder, teacher_pipe, stream_config, args, acc,
                            clip_kwargs) \
        if args.regression_weight > 0 else None
    gen_columns = ("dmd_loss", "dmd_grad", "gen_grad_norm", *(("reg_loss",) if regression else ()))
    means = RunningMeans()
    bar = progress(acc, range(state.step, args.steps), initial=state.step, total=args.steps, desc=stage)
    for step in bar:
        gen_step = step % args.gen_every == 0
        for opt, base in ((gen_opt, args.lr), (critic_opt, args.critic_lr)):
            set_lr(opt, lr_at(step, base, args.warmup, args.steps, final_frac=1.0))
        if rollout.state.frame_index + args.latent_frames > args.rollout_frames:
            rollout_index += 1
            rollout = Rollout(streamer, student_pipe.text_encoder, args.batch, args.seed, rollout_index)
        rollout.maybe_switch(args.switch_prob)
        rng = batch_rng(args.seed, acc.process_index, step)
        exit_steps = [int(e) for e in rng.integers(0, num_steps, size=blocks_per_chunk)]
        x0 = rollout.chunk(args.latent_frames, exit_steps, grad=gen_step,
                           memory_grad=args.memory_grad and stream_config.uses_memory)  # [B, C, F, h, w]
        text = rollout.state.prompt_embeds
        gen = torch.Generator().manual_seed(step_seed(args.seed, acc.process_index, step))
        if gen_step:
            sigma = shift_sigma(0.02 + 0.96 * torch.rand(args.batch, generator=gen), args.score_shift).to(acc.device)
            noise = torch.randn(x0.shape, generator=gen).to(acc.device)
            loss, grad_mag = dmd_generator_loss(x0, teacher, critic, text, sigma, noise, args.guidance)
            logged = {"dmd_loss": loss.item(), "dmd_grad": grad_mag}
            if regression is not None:  # the world batch of the (step // gen_every)-th generator step
                reg_loss = regression(step // args.gen_every, batch_rng(args.seed, acc.process_index, step, stream=1))
                logged["reg_loss"] = reg_loss.item()
                loss = loss + args.regression_weight * reg_loss
            acc.backward(loss)  # the critic ran without a graph: only the generator has gradients
            gen_grad_norm = optimizer_step(acc, generator.parameters(), gen_opt)
            ema.update(generator)
            means.add(**logged, gen_grad_norm=gen_grad_norm)
        rollout.end_chunk()
        sigma = shift_sigma(torch.rand(args.batch, generator=gen), args.score_shift).to(acc.device)
        noise = torch.randn(x0.shape, generator=gen).to(acc.device)
        loss = critic_loss(critic, x0, text, sigma, noise)
        acc.backward(loss)  # on detached samples: only the critic has gradients
        optimizer_step(acc, critic.parameters(), critic_opt)
        means.add(critic_loss=loss.item())
        state.step = step + 1
        state.extra["rollouts"] = rollout_index
        if state.step % args.log_every == 0 or state.step == args.steps:
            row = means.take()  # steps without a generator update log NaN for its columns
            log.log(step=state.step, **{k: row.get(k, float("nan")) for k in gen_columns},
                    critic_loss=row["critic_loss"], frame=rollout.state.frame_index, switches=rollout.switches,
                    seconds=round(state.seconds(), 2))
            bar.set_postfix(critic=f"{row['critic_loss']:.4f}", frame=rollout.state.frame_index)
        if state.step % args.save_every == 0 or state.step == args.steps:
            _save(ckpt, acc, state, models, gen_opt, critic_opt, ema)
            if main:
                plot_losses(log.path, os.path.join(args.out, "loss.png"), title=f"{stage} ({stream_config.memory})",
                            skip=("step", "seconds", "frame", "switches"))
    bar.close()
    log.close()
    result = {}
    if main:
        shadow = ema.averaged_copy(generator)
        student_dir = os.path.join(args.out, "student")
        export_student(shadow, student_pipe, stream_config, student_dir,
                       f"VideoSSM student ({stream_config.memory}), {stage} stage, {state.step} steps")
        cols = read_csv(log.path)
        result = write_stage_metrics(
            args, acc, state, stage, memory=stream_config.memory, rollout_frames=args.rollout_frames,
            latent_frames=args.latent_frames, regression_weight=args.regression_weight,
            final_critic_loss=final_mean(cols, "critic_loss"), final_dmd_loss=final_mean(cols, "dmd_loss"),
            rollouts=rollout_index + 1,
            student_dir=student_dir)
        acc.print(f"saved {student_dir}")
    acc.wait_for_everyone()
    return result


def _save(ckpt, acc, state, models, gen_opt, critic_opt, ema) -> str:
    state.extra["ema"] = ema.state_dict()
    try:
        return ckpt.save(acc, state, models, [gen_opt, critic_opt], None)
    finally:
        state.extra.pop("ema")
