"""`python -m videossm ...`: generate a video, or benchmark the stream."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .config import MEMORY_MODES, ROPE_MODES, ConfigError

logger = logging.getLogger("videossm")

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .models.text_encoder import PromptError
    from .timeline import TimelineError
    from .weights.checkpoint import CheckpointError

    return USER_ERRORS + (PromptError, TimelineError, CheckpointError)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=os.environ.get("VIDEOSSM_MODEL", "tiny"),
                   help="checkpoint folder, or a preset name for fresh untrained weights (default: %(default)s)")
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


def stream_overrides(args) -> dict:
    return dict(memory=args.memory, num_steps=args.steps, block_frames=args.block, window_frames=args.window,
                sink_frames=args.sink, rope=args.rope, max_seconds=args.max_seconds)


def load_pipe(args):
    import torch

    from .pipeline import VideoSSMPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    return VideoSSMPipeline.from_pretrained(args.model, device=args.device, **stream_overrides(args))


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


def cmd_bench(args) -> int:
    from .bench import run_bench

    run_bench(args)
    return 0


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
    add_model_args(gen)
    gen.set_defaults(func=cmd_generate)

    bench = sub.add_parser("bench", help="per-block latency, first frame, fps and memory, for each memory mode")
    bench.add_argument("--seconds", type=float, default=60.0, help="video length per mode (default %(default)s)")
    bench.add_argument("--full-seconds", type=float, default=None,
                       help="length for the quadratic `full` mode (default: same as --seconds)")
    bench.add_argument("--modes", nargs="+", choices=MEMORY_MODES, default=list(MEMORY_MODES))
    bench.add_argument("--no-decode", action="store_true", help="time the transformer only")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--json", help="write all results as JSON here")
    add_model_args(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
