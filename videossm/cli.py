"""`python -m videossm ...`: generate a video, benchmark the stream, or train a stage."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .config import MEMORY_MODES, ROPE_MODES, ConfigError, default_model

logger = logging.getLogger("videossm")

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .models.text_encoder import PromptError
    from .ops import BackendUnavailableError
    from .timeline import TimelineError
    from .weights.checkpoint import CheckpointError

    from .study.service import AdminError, VoteRejected
    from .study.store import StoreError

    return USER_ERRORS + (PromptError, TimelineError, CheckpointError, BackendUnavailableError, AdminError,
                          VoteRejected, StoreError)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=os.environ.get("VIDEOSSM_MODEL"),
                   help="self-forcing, longlive, wan2.1-t2v-1.3b (hub downloads), a hub repo id or folder (ours or "
                        "Wan2.1), or a preset name for fresh untrained weights (default: $VIDEOSSM_MODEL, else the "
                        f"shipped checkpoint of --memory, else {default_model()})")
    p.add_argument("--device", default=os.environ.get("VIDEOSSM_DEVICE", "auto"), help="cpu, cuda, cuda:N or auto")
    p.add_argument("--memory", choices=MEMORY_MODES, default=None,
                   help="hybrid (VideoSSM), sink (LongLive), window (rolling window), full (global causal)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps per block (default 4)")
    p.add_argument("--block", type=int, default=None, help="latent frames per block (default 3)")
    p.add_argument("--window", type=int, default=None, help="local window in latent frames, incl. sink and block")
    p.add_argument("--sink", type=int, default=None, help="sink frames (default 3)")
    p.add_argument("--rope", choices=ROPE_MODES, default=None, help="window-relative (default) or absolute RoPE")
    p.add_argument("--max-seconds", type=float, default=None, help="cap on the video length (default 600)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--text-encoder", choices=("auto", "gpu", "cpu", "offload"), default="auto",
                   help="where a real model's UMT5 encoder lives (auto: by the GPU memory plan)")


def stream_overrides(args) -> dict:
    return dict(memory=args.memory, num_steps=args.steps, block_frames=args.block, window_frames=args.window,
                sink_frames=args.sink, rope=args.rope, max_seconds=args.max_seconds)


def load_pipe(args):
    import torch

    from .pipeline import VideoSSMPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    from .weights.hub import HUB_MODELS

    args.model = args.model or default_model(args.memory)
    real = {"text_encoder": args.text_encoder} if args.model in HUB_MODELS or "/" in args.model else {}
    return VideoSSMPipeline.from_pretrained(args.model, device=args.device, **real, **stream_overrides(args))


def add_train_vae_args(p: argparse.ArgumentParser) -> None:
    """`train vae` options; the defaults are the shipped VAE config (see videossm/train/vae.py)."""
    p.add_argument("--out", default="runs/vae", help="run folder: checkpoints, logs, plots, vae/, metrics.json")
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--batch", type=int, default=2, help="clips per step per process")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each rendered training clip")
    p.add_argument("--frames", type=int, default=65,
                   help="training window in frames, 1 + 4k; long, so the causal convs reach their steady state")
    p.add_argument("--size", type=int, default=128, help="frame size of the rendered clips (and of evaluation)")
    p.add_argument("--crop", type=int, default=48, help="train on random square crops of this size (0: whole frames)")
    p.add_argument("--z-dim", type=int, default=16, help="latent channels (the transformer's in_channels)")
    p.add_argument("--base-dim", type=int, default=8, help="encoder (and decoder) base channels")
    p.add_argument("--decoder-dim", type=int, default=None, help="decoder base channels (default: --base-dim)")
    p.add_argument("--dim-mult", type=lambda s: [int(v) for v in s.split(",")], default=[1, 1, 1],
                   help="channel multipliers per stage, comma-separated (default 1,1,1)")
    p.add_argument("--patch", type=int, default=2, choices=(1, 2), help="pixel patchify (2: Wan2.2-style)")
    p.add_argument("--res-blocks", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--object-weight", type=float, default=0.0,
                   help="extra L1 weight on the object's pixels (the world's ground-truth mask); 0: plain L1")
    p.add_argument("--edge-weight", type=float, default=0.0,
                   help="extra L1 weight on the image gradients (horizontal and vertical differences): sharper "
                        "outlines; 0: off")
    p.add_argument("--train-latents", choices=("sample", "mode"), default="sample",
                   help="decode a posterior sample while training (the decoder learns to tolerate latent errors) "
                        "or its mode (exact latents, sharper)")
    p.add_argument("--logvar-init", type=float, default=-6.0, help="initial posterior log-variance (bias)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=600)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--eval-clips", type=int, default=8, help="fixed clips per split (train, held-out)")
    p.add_argument("--eval-frames", type=int, default=81, help="frames per eval clip (81: 5 s, 21 latent frames)")
    p.add_argument("--stats-clips", type=int, default=16, help="training clips for latents_mean/std")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--resume", action="store_true",
                   help="require a checkpoint in --out (a run always resumes from its latest one when present)")
    p.add_argument("--encoder-from", default=None, metavar="VAE_DIR",
                   help="train only a decoder on the frozen encoder of this saved VAE (its vae/ folder): the "
                        "latent space, and so every transformer trained on it, stays the same; the decoder "
                        "starts from VAE_DIR's when --decoder-dim matches, else fresh")
    p.add_argument("--decoder-from", default=None, metavar="VAE_DIR",
                   help="train only an encoder for the frozen decoder of this saved VAE, full or decoder-only (e.g. "
                        "assets/videossm-hybrid/vae): recovers an encoder for a shipped checkpoint; its latent "
                        "statistics are kept; pass the decoder's flags (--dim-mult, --res-blocks, --decoder-dim)")
    p.add_argument("--anchor-student", default=None, metavar="DIR",
                   help="with --decoder-from: also fit the encoder to this student's own latents (a pool of clips it "
                        "generates, decoded by the frozen decoder), so the recovered encoder gives back the latent "
                        "space the student was trained in, not just any latents that decode to the same frames")
    p.add_argument("--anchor-weight", type=float, default=1.0, help="weight of the --anchor-student latent MSE")
    p.add_argument("--anchor-clips", type=int, default=32, help="--anchor-student clips in the pool")
    p.add_argument("--anchor-blocks", type=int, default=2, help="blocks per --anchor-student clip")


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from .timeline import Timeline
    from .video.mp4 import Mp4Writer

    timeline = Timeline.load(args.timeline) if args.timeline else Timeline.single(args.prompt)
    pipe = load_pipe(args)
    print(pipe.describe(), file=sys.stderr)
    if not pipe.trained:
        print("warning: this model is UNTRAINED; the video will be noise. Train one with the training recipe "
              "or pass --model <checkpoint folder>.", file=sys.stderr)
    if not args.no_warmup:  # as a server does once per worker: the stream's first frame is then timed warm
        print(f"warmed up in {pipe.warmup():.2f} s", file=sys.stderr)
    handle = pipe.stream(timeline, seconds=args.seconds, seed=args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    writer = Mp4Writer(args.out, fps=timeline.fps)
    interrupted = False
    bar = tqdm(total=handle.total_frames, unit="frame", disable=args.no_progress, desc="generating")
    try:
        for chunk in handle:
            writer.write(chunk.frames)
            bar.update(chunk.num_frames)
            bar.set_postfix_str(f"block {chunk.block_index + 1}/{handle.num_blocks}")
    except KeyboardInterrupt:  # keep what was generated: finish the file properly
        interrupted = True
        handle.cancel()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    if writer.frames_written:
        writer.close()
    else:
        writer.abort()
    stats = handle.stats
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=2)
    print(f"{'interrupted: ' if interrupted else ''}wrote {args.out}: {stats['frames']} frames, "
          f"first frame {stats['first_frame_s']:.2f}s, {stats['fps']:.1f} fps, peak RSS {stats['peak_rss_mb']:.0f} MB",
          file=sys.stderr)
    return 130 if interrupted else 0


def cmd_train(args) -> int:
    import shlex

    import importlib

    args.command_line = "python -m videossm " + shlex.join(sys.argv[1:])
    if args.stage == "vae":
        from .train.vae import train_vae

        train_vae(args)
    else:
        module_name, func_name = TRAIN_STAGES[args.stage][:2]
        getattr(importlib.import_module(module_name), func_name)(args)
    return 0


# stage -> (module, train function, options function in videossm.train.options (imports no torch), help)
TRAIN_STAGES = {
    "teacher": ("videossm.train.teacher", "train_teacher", "add_teacher_args",
                "stage 1: the bidirectional flow-matching teacher and the small text encoder"),
    "causal": ("videossm.train.causal", "train_causal", "add_causal_args",
               "stage 2: the causal student, ODE regression on teacher trajectories"),
    "dmd": ("videossm.train.dmd", "train_dmd", "add_dmd_args",
            "stage 3: Self-Forcing DMD on the student's own 5 s rollouts, with a critic"),
    "long": ("videossm.train.dmd", "train_long", "add_long_args",
             "stage 4: long self-rollout (60 s streams, memory, prompt switches), DMD on each 5 s chunk"),
    "rollout": ("videossm.train.rollout", "train_rollout", "add_rollout_args",
                "continue a student by rolling it out from world clips' first blocks, judged in pixels against "
                "the world's frames (no teacher)"),
    "ship": ("videossm.train.ship", "ship", "add_ship_args",
             "copy a trained student into assets/ with fp16 weights (the shipped checkpoints)"),
    "card": ("videossm.train.card", "card", "add_card_args",
             "write the model card of the shipped checkpoints from the runs' metrics and an eval-world table"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m videossm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="stream a video to an mp4 file")
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt for the whole video")
    src.add_argument("--timeline", help="Timeline JSON file (prompt segments over time)")
    gen.add_argument("--seconds", type=float, default=10.0, help="video length (default %(default)s)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", default="out.mp4", help="H.264 mp4 output (default %(default)s)")
    gen.add_argument("--stats", help="write timing and memory stats as JSON here")
    gen.add_argument("--no-progress", action="store_true")
    gen.add_argument("--no-warmup", action="store_true",
                     help="skip the one throwaway block streamed after loading, so the first frame's time "
                          "includes the process's lazy initialisation (a cold start)")
    add_model_args(gen)
    gen.set_defaults(func=cmd_generate)

    from .bench import add_parser as add_bench_parser
    add_bench_parser(sub)
    from .eval.cli import add_parser as add_eval_parser
    add_eval_parser(sub)
    from .eval.report import add_parser as add_report_parser
    add_report_parser(sub)

    train = sub.add_parser("train", help="train a stage of the recipe: vae, teacher, causal, dmd, long, rollout")
    stages = train.add_subparsers(dest="stage", required=True)
    vae = stages.add_parser("vae", help="stage 0: the tiny AutoencoderKLWan on the procedural world")
    add_train_vae_args(vae)
    vae.set_defaults(func=cmd_train)
    from .train import options as train_options

    for stage, (_, _, args_func, help_text) in TRAIN_STAGES.items():
        stage_parser = stages.add_parser(stage, help=help_text)
        getattr(train_options, args_func)(stage_parser)
        stage_parser.set_defaults(func=cmd_train)

    from .study.cli import add_parser as add_study_parser
    add_study_parser(sub)

    from .eval.world import add_probe_parser, add_world_parser  # light: no torch until a command runs

    add_probe_parser(stages)
    add_world_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
