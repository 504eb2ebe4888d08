"""Stage 2: the causal student, initialised by ODE regression on teacher trajectories (CausVid / Self-Forcing).

    python -m videossm train causal --teacher runs/teacher/teacher --out runs/causal-hybrid --memory hybrid

1. Trajectories. For random train prompts and noise, the teacher integrates its flow ODE with guidance
   on a grid that passes exactly through the student's 4 sigmas (1, 0.9375, 0.8333, 0.625). Each pair
   keeps the states at those sigmas and the end point x0, in shards `out/trajectories/shard-NNNNN.pt`
   (fp16), written atomically and skipped when present: an interrupted run resumes where it stopped.
   They do not depend on the student's memory mode: `--trajectories DIR` lets the hybrid, sink and
   window students share one folder, whose `meta.json` refuses shards made with other settings.
2. Regression. The student starts from the teacher's weights (memory zero-gated) and runs causally,
   block by block, through the same KV cache, sink, window and memory as at inference. For each block
   it sees the trajectory state at a random one of its 4 sigmas and must predict the teacher's x0 of
   that block; the block's clean x0 is then written into the cache (teacher forcing, as CausVid). In
   `hybrid` mode the clean passes keep the gates' graph, so frames evicted from the window train the
   memory's write path through M. Loss: MSE of x0, averaged over blocks.

`--source world` replaces step 1: the student regresses the world's own clips (encoded by the teacher's
VAE) from those clips noised to its sigmas, x_s = (1 - s) x0 + s eps, with the clean clip as its past:
teacher forcing on data (diffusion forcing's objective at the student's noise levels). It needs no
trajectories and no teacher ODE, so it does not inherit what the teacher gets wrong from pure noise; the
teacher still gives the starting weights and the text encoder. `--reuse N` reuses encoded clips as
`train teacher --reuse` does. `--motion-switch-share P` makes that share of the clips change their motion
at a block boundary (`data.motion_switch_clip`), conditioned per block with inference's re-cache at the
switch: on single-prompt clips the student learns to continue its past's velocity and ignore the motion
words. `--object-weight W` counts the object's latent cells W times in the loss, as `train teacher
--object-weight` does; with a clean past the block's posterior is nearly one clip, so the bias that weight
brings at high noise is small here.

`--init-student DIR` (with `--source world`) starts from a student instead of the teacher: its transformer,
memory included, its text encoder and its decoder. A shipped student's VAE is decoder-only, so `--vae`
then names a full VAE with the same decoder, such as the one `train vae --decoder-from DIR/vae` recovers.
The exported student carries that full VAE. This continues a shipped checkpoint on other clips (longer
ones, say) when the training runs behind it are gone.

The result, `out/student/`, is a streaming checkpoint (memory mode, window and sink in its config) for
the DMD stage, or to generate with directly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch import nn

from ..config import ConfigError, StreamConfig
from ..models.cache import KVCache
from ..models.transformer import VideoSSMTransformer
from ..sampling.ode import ode_sigmas, sample_ode
from ..sampling.scheduler import denoising_sigmas
from ..world import sample_prompt
from .common import (EMA, Checkpointer, CSVLogger, RunningMeans, check_counts, final_mean, log_and_checkpoint, lr_at,
                     optimizer_step, progress, read_csv, set_lr, step_seed, write_json, write_stage_metrics)
from .data import batch_rng, parse_mixture, step_batch
from .teacher import weighted_mse


def stream_config_from(args) -> StreamConfig:
    return StreamConfig(memory=args.memory, block_frames=args.block_frames, window_frames=args.window_frames,
                        sink_frames=args.sink_frames).validate()


def check_frames(latent_frames: int, stream_config: StreamConfig, flag: str = "--latent-frames") -> None:
    if latent_frames < 1 or latent_frames % stream_config.block_frames:
        raise ConfigError(f"{flag} must be a positive multiple of --block-frames "
                          f"({stream_config.block_frames}), got {latent_frames}")


def world_clip_kwargs(args) -> dict:
    """The world clips' flags (`options.add_world_clip_args`), checked, as `WorldBatches` keyword arguments;
    a bad value fails here, before any model loads."""
    if not args.object_weight > 0:
        raise ConfigError(f"--object-weight must be > 0, got {args.object_weight}")
    if not 0 <= args.motion_switch_share <= 1:
        raise ConfigError(f"--motion-switch-share must be in [0, 1], got {args.motion_switch_share}")
    return dict(motion_switch_share=args.motion_switch_share, object_weight=args.object_weight,
                mixture=parse_mixture(args.mixture) if args.mixture else None)


def check_start(args, stream_config: StreamConfig) -> str:
    """The checkpoint folder the causal stage starts from: --teacher, or the student --init-student names
    (whose block, window and sink must be this run's; its memory mode may change)."""
    from ..weights.checkpoint import read_config

    if bool(args.teacher) == bool(args.init_student):
        raise ConfigError("pass exactly one of --teacher (a fresh causal init from the teacher) and --init-student "
                          f"(continue a student); got --teacher {args.teacher} --init-student {args.init_student}")
    if args.init_student is None:
        return args.teacher
    if args.source != "world":
        raise ConfigError(f"--init-student {args.init_student} needs --source world (the teacher's trajectories "
                          f"need the teacher)")
    stream = read_config(args.init_student).get("stream", {})
    differ = [f"{k} {stream[k]} != {getattr(stream_config, k)}" for k in ("block_frames", "window_frames", "sink_frames")
              if k in stream and stream[k] != getattr(stream_config, k)]
    if differ:
        raise ConfigError(f"--init-student {args.init_student} streams with other settings ({'; '.join(differ)}); "
                          f"pass its --block-frames, --window-frames and --sink-frames")
    return args.init_student


def same_decoder_vae(start_vae: str, vae_dir: str):
    """--vae as a StreamingDecoder, once its decoder and latent statistics are the starting checkpoint's (to
    fp16, the precision a shipped decoder is stored in)."""
    from ..models.vae import StreamingDecoder, latent_space_difference, load_vae

    if not os.path.isfile(os.path.join(vae_dir, "config.json")):
        raise ConfigError(f"--vae {vae_dir!r} is not a VAE folder (no config.json)")
    theirs = load_vae(vae_dir)
    difference = latent_space_difference(load_vae(start_vae), theirs, "decoder", half=True)
    if difference is not None:
        what, differ = difference
        if not differ:
            raise ConfigError(f"--vae {vae_dir}: its {what} differs from {start_vae}'s; it encodes another latent space")
        raise ConfigError(f"--vae {vae_dir}: its decoder differs from {start_vae}'s in {len(differ)} tensors, e.g. "
                          f"{differ[0]}; recover an encoder for that decoder with `train vae --decoder-from {start_vae}`")
    return StreamingDecoder(theirs)


def load_checkpoint(path: str, device):
    """One of our checkpoint folders (the teacher or a student) as a float32 pipeline, for training."""
    from ..pipeline import VideoSSMPipeline

    return VideoSSMPipeline.from_pretrained(path, device=device, dtype=torch.float32)


# --- 1. teacher trajectories -------------------------------------------------------------------------------

def trajectory_folder(args) -> str:
    return args.trajectories or os.path.join(args.out, "trajectories")


def check_trajectory_meta(folder: str, meta: dict, main: bool) -> None:
    """The settings the shards were made with (meta.json), written by the first run and checked by the rest."""
    path = os.path.join(folder, "meta.json")
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        changed = {k: (stored.get(k), v) for k, v in meta.items() if stored.get(k) != v}
        if changed:
            raise ConfigError(f"{folder} holds trajectories made with other settings (stored, asked): {changed}; "
                              "use another --trajectories folder")
    elif main:
        write_json(path, meta)


def make_trajectories(acc, teacher, args, student_sigmas: list[float]) -> None:
    """Generate the missing shards (each process its share), atomically."""
    cfg = teacher.model_config
    folder = trajectory_folder(args)
    os.makedirs(folder, exist_ok=True)
    check_trajectory_meta(folder, {
        "teacher": os.path.abspath(args.teacher), "seed": args.seed, "latent_frames": args.latent_frames,
        "shard_size": args.shard_size, "ode_substeps": args.ode_substeps, "guidance": args.guidance,
        "sigmas": [round(s, 6) for s in student_sigmas]}, acc.is_main_process)
    acc.wait_for_everyone()
    num_shards = -(-args.pairs // args.shard_size)
    grid = ode_sigmas(student_sigmas, args.ode_substeps)
    todo = [i for i in range(num_shards) if i % acc.num_processes == acc.process_index
            and not os.path.exists(os.path.join(folder, f"shard-{i:05d}.pt"))]
    for shard in progress(acc, todo, desc="teacher trajectories", unit="shard"):
        rng = np.random.default_rng([args.seed, 7, shard])
        n = min(args.shard_size, args.pairs - shard * args.shard_size)
        prompts = [sample_prompt(rng, "train") for _ in range(n)]
        gen = torch.Generator().manual_seed(step_seed(args.seed, 7, shard))
        noise = torch.randn(n, cfg.in_channels, args.latent_frames, cfg.latent_height, cfg.latent_width, generator=gen)
        cond = torch.cat([teacher.text_encoder.encode(p) for p in prompts]).to(acc.device)  # [n, L, D]
        x0, kept = sample_ode(teacher.transformer, noise.to(acc.device), cond, grid, args.guidance, keep=student_sigmas)
        states = torch.stack([kept[s] for s in student_sigmas], dim=1)  # [n, S, C, F, h, w]
        path = os.path.join(folder, f"shard-{shard:05d}.pt")
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save({"prompts": prompts, "sigmas": student_sigmas, "states": states.half().cpu(),
                    "x0": x0.half().cpu()}, tmp)
        os.replace(tmp, path)
    acc.wait_for_everyone()


def load_trajectories(folder: str, pairs: int, shard_size: int) -> dict:
    """The first `pairs` trajectories (a shared folder may hold more, made for a larger --pairs)."""
    paths = [os.path.join(folder, f"shard-{i:05d}.pt") for i in range(-(-pairs // shard_size))]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise RuntimeError(f"{folder} lacks {len(missing)} trajectory shard(s), e.g. {missing[0]}; rerun to make them")
    shards = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    return {"prompts": [p for s in shards for p in s["prompts"]][:pairs],
            "states": torch.cat([s["states"] for s in shards])[:pairs],
            "x0": torch.cat([s["x0"] for s in shards])[:pairs]}


class TrajectoryBatches:
    """--source teacher: batches of the stored trajectories (states at the student's sigmas and their x0)."""

    def __init__(self, data: dict):
        self.data = data

    def batch(self, step: int, rng: np.random.Generator, batch: int, sigmas: list[float]):
        """states [B, S, C, F, h, w], x0 [B, C, F, h, w] (float32, CPU), prompts, cell weights (None: plain MSE)."""
        count = len(self.data["prompts"])
        idx = rng.choice(count, size=batch, replace=count < batch)
        return (self.data["states"][idx].float(), self.data["x0"][idx].float(),
                [self.data["prompts"][i] for i in idx], None)


class WorldBatches:
    """--source world: the world's clips (train prompts, single-prompt scenarios) encoded by the teacher's VAE,
    each noised once and taken at the student's sigmas: x_s = (1 - s) x0 + s eps. The student then learns
    to denoise a block given the clean past, the flow's own target, rather than the teacher's ODE map.
    motion_switch_share: the share of clips whose motion changes at a block boundary (`motion_switch_clip`);
    object_weight: how many times each of the object's cells counts in the loss (1: plain MSE);
    mixture: the single-prompt scenarios' weights (`data.parse_mixture`; None: the default mixture);
    latent_frames: the clip length (None: args.latent_frames);
    vae_dir: the full VAE that encodes them (None: the teacher's, args.teacher/vae)."""

    def __init__(self, teacher, args, device, rank: int, block_frames: int | None = None, *,
                 motion_switch_share: float = 0.0, object_weight: float = 1.0,
                 mixture: dict[str, float] | None = None, latent_frames: int | None = None,
                 vae_dir: str | None = None):
        from .data import ReplayLatents, WorldLatents, check_geometry, load_frozen_vae

        vae = load_frozen_vae(vae_dir or os.path.join(args.teacher, "vae"), device)
        check_geometry(vae, teacher.model_config)
        self.clips = WorldLatents(vae, teacher.model_config, latent_frames or args.latent_frames, mixture,
                                  motion_switch_share=motion_switch_share,
                                  block_frames=block_frames)
        if args.reuse > 1:
            self.clips = ReplayLatents(self.clips, args.reuse, args.replay_window, args.seed, rank, lambda s: True)
        self.seed, self.rank = args.seed, rank
        self.object_weight = object_weight

    def batch(self, step: int, rng: np.random.Generator, batch: int, sigmas: list[float]):
        """As TrajectoryBatches.batch; the cell weights are `1 + (W - 1) * object mask` with --object-weight W."""
        x0, prompts, object_mask = step_batch(self.clips, step, rng, batch)
        x0 = x0.float().cpu()  # [B, C, F, h, w]
        gen = torch.Generator().manual_seed(step_seed(self.seed, self.rank, step))
        noise = torch.randn(x0.shape, generator=gen)
        states = torch.stack([(1 - s) * x0 + s * noise for s in sigmas], dim=1)  # [B, S, C, F, h, w]
        cell_weight = None if self.object_weight == 1 else 1 + (self.object_weight - 1) * object_mask.float().cpu()
        return states, x0, prompts, cell_weight


# --- 2. regression -----------------------------------------------------------------------------------------

class CausalODELoss(nn.Module):
    """The student run block-causally through a KV cache, regressing the teacher's x0 (one DDP module)."""

    def __init__(self, student: VideoSSMTransformer, stream_config: StreamConfig, memory_grad: bool,
                 context_grad: bool = False):
        super().__init__()
        self.student, self.stream_config, self.memory_grad = student, stream_config, memory_grad
        self.context_grad = context_grad

    def forward(self, states, x0, text, sigma_index: list[int], sigmas: list[float],
                cell_weight: torch.Tensor | None = None) -> torch.Tensor:
        """states [B, S, C, F, h, w] (trajectory at the student's sigmas), x0 [B, C, F, h, w], text [B, L, D]
        or one per block [B, NB, L, D]; sigma_index: which sigma each block sees. Where a block's text differs
        from the previous block's (a prompt switch), the window is re-cached with it first, as inference's
        `StreamingGenerator.recache` does. cell_weight [B, 1, F, h, w]: a weighted MSE (`weighted_mse`)."""
        sc = self.stream_config
        batch, frames = x0.shape[0], x0.shape[2]
        cache = KVCache(self.student.config, sc, batch, x0.device)
        # the clean passes that write the cache: with gradients, the loss also teaches what the past's K/V carry
        grad_cache = self.context_grad or (self.memory_grad and sc.uses_memory)
        clean_t = torch.full((batch, sc.block_frames), sc.context_timestep, device=x0.device)
        losses = []
        for block, f0 in enumerate(range(0, frames, sc.block_frames)):
            frame_ids = list(range(f0, f0 + sc.block_frames))
            block_text = text[:, block] if text.dim() == 4 else text  # [B, L, D]
            if text.dim() == 4 and block > 0 and not torch.equal(block_text, text[:, block - 1]):
                with torch.set_grad_enabled(grad_cache and torch.is_grad_enabled()):
                    self._recache(cache, x0, block_text, clean_t)
            k = sigma_index[block]
            x_t = states[:, k, :, f0 : f0 + sc.block_frames]  # [B, C, Fb, h, w]
            timestep = torch.full((batch, sc.block_frames), sigmas[k] * 1000.0, device=x0.device)
            v = self.student(x_t, timestep, block_text, cache=cache, frame_start=f0)
            x0_pred = x_t - sigmas[k] * v.float()
            target = x0[:, :, f0 : f0 + sc.block_frames]
            losses.append(F.mse_loss(x0_pred, target) if cell_weight is None else
                          weighted_mse(x0_pred, target, cell_weight[:, :, f0 : f0 + sc.block_frames]))
            with torch.set_grad_enabled(grad_cache and torch.is_grad_enabled()):
                self.student(x0[:, :, f0 : f0 + sc.block_frames], clean_t, block_text, cache=cache, frame_start=f0,
                             write_cache=True, write_grad=self.context_grad)
                cache.commit(frame_ids)
        return torch.stack(losses).mean()

    def _recache(self, cache: KVCache, x0: torch.Tensor, text: torch.Tensor, clean_t: torch.Tensor) -> None:
        """Re-encode the window's clean frames under `text`, block by block, without evicting (inference's recache)."""
        frames = cache.drop_recent()
        block = self.stream_config.block_frames
        for f0 in sorted({f - f % block for f in frames}):
            group = [f for f in frames if f0 <= f < f0 + block]
            self.student(x0[:, :, group[0] : group[-1] + 1], clean_t[:, : len(group)], text, cache=cache,
                         frame_start=group[0], write_cache=True, write_grad=self.context_grad)
            cache.commit(group, evict=False)


def encode_prompts(text_encoder, bank: dict, prompts: list, num_blocks: int) -> torch.Tensor:
    """Text embeddings of a batch, cached in `bank`: [B, L, D] when every prompt is a string; [B, NB, L, D]
    when any is a tuple of per-block prompts (a motion-switch clip), strings then repeated per block."""
    for p in {q for item in prompts for q in ((item,) if isinstance(item, str) else item)}:
        if p not in bank:
            bank[p] = text_encoder.encode(p).cpu()  # [1, L, D]
    if all(isinstance(p, str) for p in prompts):
        return torch.cat([bank[p] for p in prompts])
    per_block = [(p,) * num_blocks if isinstance(p, str) else tuple(p) for p in prompts]
    if any(len(p) != num_blocks for p in per_block):
        raise ValueError(f"per-block prompts must have {num_blocks} entries, got {[len(p) for p in per_block]}")
    return torch.stack([torch.cat([bank[q] for q in p]) for p in per_block])  # [B, NB, L, D]


def export_student(transformer, teacher, stream_config: StreamConfig, path: str, description: str) -> None:
    from ..pipeline import VideoSSMPipeline

    pipe = VideoSSMPipeline(transformer, teacher.text_encoder, teacher.decoder, stream_config,
                            name=f"videossm-{stream_config.memory}", trained=True, description=description)
    pipe.save_pretrained(path)


def train_causal(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    check_counts(args, "steps", "batch", "pairs", "shard_size", "save_every", "log_every", "reuse", "replay_window")
    stream_config = stream_config_from(args)
    check_frames(args.latent_frames, stream_config)
    clip_kwargs = world_clip_kwargs(args)
    if args.object_weight != 1 and args.source != "world":
        raise ConfigError(f"--object-weight {args.object_weight} needs --source world (the object masks are the world's)")
    if args.mixture and args.source != "world":
        raise ConfigError(f"--mixture {args.mixture} needs --source world (the teacher's trajectories are already made)")
    if args.motion_switch_share and args.source != "world":
        raise ConfigError(f"--motion-switch-share {args.motion_switch_share} needs --source world (the switch "
                          f"clips are the world's)")
    start_dir = check_start(args, stream_config)
    acc = Accelerator(cpu=args.cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    teacher = load_checkpoint(start_dir, acc.device)  # the teacher, or the student that --init-student continues
    teacher.transformer.requires_grad_(False)
    vae_dir = args.vae or os.path.join(start_dir, "vae")
    if args.vae:  # the student is exported with this full VAE (its decoder is the starting checkpoint's)
        teacher.decoder = same_decoder_vae(os.path.join(start_dir, "vae"), args.vae)
    sigmas = denoising_sigmas(stream_config.num_steps, stream_config.shift)
    if args.source == "teacher":
        make_trajectories(acc, teacher, args, sigmas)
        data = TrajectoryBatches(load_trajectories(trajectory_folder(args), args.pairs, args.shard_size))
    else:
        data = WorldBatches(teacher, args, acc.device, acc.process_index, stream_config.block_frames,
                            vae_dir=vae_dir, **clip_kwargs)
    text_bank: dict[str, torch.Tensor] = {}

    def encode(prompts: list) -> torch.Tensor:  # [B, L, D]; [B, NB, L, D] when a prompt is one per block
        return encode_prompts(teacher.text_encoder, text_bank, prompts, num_blocks).to(acc.device)

    student = copy.deepcopy(teacher.transformer).requires_grad_(True).train()
    model = CausalODELoss(student, stream_config, args.memory_grad, args.context_grad)
    ckpt = Checkpointer(args.out, keep=2, config={
        "stage": "causal", "model": student.config.to_dict(), "stream": dataclasses.asdict(stream_config),
        "latent_frames": args.latent_frames, "seed": args.seed, "source": args.source,
        **({"init_student": os.path.abspath(args.init_student)} if args.init_student else {}),
        **({"pairs": args.pairs} if args.source == "teacher" else {})})
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    model, opt = acc.prepare(model, opt)
    ema = EMA(acc.unwrap_model(model), decay=args.ema)
    state = ckpt.resume(acc, model, opt, ema, require=args.resume)
    main = acc.is_main_process
    log = CSVLogger(os.path.join(args.out, "log.csv"), resume_step=state.step, main=main)
    num_blocks = args.latent_frames // stream_config.block_frames
    means = RunningMeans()
    bar = progress(acc, range(state.step, args.steps), initial=state.step, total=args.steps, desc="causal")
    for step in bar:
        lr = lr_at(step, args.lr, args.warmup, args.steps)
        set_lr(opt, lr)
        rng = batch_rng(args.seed, acc.process_index, step)
        states, x0, prompts, cell_weight = data.batch(step, rng, args.batch, sigmas)
        sigma_index = [int(k) for k in rng.integers(0, len(sigmas), size=num_blocks)]
        loss = model(states.to(acc.device), x0.to(acc.device), encode(prompts), sigma_index, sigmas,
                     None if cell_weight is None else cell_weight.to(acc.device))
        acc.backward(loss)
        grad_norm = optimizer_step(acc, model.parameters(), opt)
        ema.update(acc.unwrap_model(model))
        state.step = step + 1
        means.add(loss=loss.item(), grad_norm=grad_norm)
        log_and_checkpoint(args, acc, state, means, log, bar, lambda: ckpt.save(acc, state, model, opt, ema),
                           f"causal ODE init ({args.memory})", lr)
    bar.close()
    log.close()
    result = {}
    if main:
        shadow = ema.averaged_copy(acc.unwrap_model(model))
        student_dir = os.path.join(args.out, "student")
        init = "ODE-regression init" if args.source == "teacher" else "init by teacher forcing on world clips"
        if args.init_student:
            init = f"continued from {args.init_student} by teacher forcing on world clips"
        export_student(shadow.student, teacher, stream_config, student_dir,
                       f"causal student ({args.memory}), {init}, {state.step} steps (stage 2)")
        result = write_stage_metrics(args, acc, state, "causal", memory=args.memory, source=args.source,
                                     init_student=args.init_student, vae=vae_dir,
                                     **({"pairs": args.pairs} if args.source == "teacher" else {}),
                                     final_loss=final_mean(read_csv(log.path), "loss"), student_dir=student_dir)
        acc.print(f"saved {student_dir}; final loss {result['final_loss']}")
    acc.wait_for_everyone()
    return result
