"""`python -m videossm bench`: stream N seconds in each memory mode (all four by default, `full` as the
quadratic baseline) and report per-block latency over time, first-frame latency, sustained fps, peak RSS
and peak GPU memory, as a table, a JSON file and a PNG of latency and memory against generated seconds.

Each mode runs in its own process, so peak RSS and peak GPU memory are its own.

    python -m videossm bench --model tiny --seconds 600 --full-seconds 60 --json bench.json
    python -m videossm bench --preset wan2.1-t2v-1.3b --random-weights --seconds 600 --json gpu.json
    python -m videossm bench --preset wan2.1-t2v-1.3b --random-weights --dry-run   # shapes on `meta`, no compute
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time

from .config import MEMORY_MODES, MODEL_PRESETS, ConfigError, default_model

OPS_BACKENDS = ("auto", "reference", "naive", "triton", "fla")
PROMPT = "a red circle moving right on a gray background"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from .cli import add_model_args

    p = subparsers.add_parser("bench", help="per-block latency, first frame, fps and memory, for each memory mode",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="video length per mode (default %(default)s)")
    p.add_argument("--full-seconds", type=float, default=None,
                   help="length for the quadratic `full` mode (default: same as --seconds)")
    p.add_argument("--modes", nargs="+", choices=MEMORY_MODES, default=list(MEMORY_MODES))
    p.add_argument("--preset", choices=list(MODEL_PRESETS), default=None,
                   help="a model preset; needs --random-weights (no trained weights exist for presets)")
    p.add_argument("--random-weights", action="store_true",
                   help="fresh weights and random text embeddings of the preset's shape: no text encoder, no download")
    p.add_argument("--dtype", choices=("auto", "bfloat16", "float16", "float32"), default="auto",
                   help="transformer dtype (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--no-decode", action="store_true", help="time the transformer only")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer (timed after --warmup-seconds)")
    p.add_argument("--ops", choices=OPS_BACKENDS, default=None, help="gated-delta-rule backend (sets VIDEOSSM_OPS)")
    p.add_argument("--warmup-seconds", type=float, default=0.0,
                   help="stream this much first, untimed, in the same process (kernels, autotune, compile)")
    p.add_argument("--dry-run", action="store_true",
                   help="build on the `meta` device and print shapes and sizes; no weights, no compute")
    p.add_argument("--dry-run-blocks", type=int, default=4, help="blocks the dry run streams (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write all results as JSON here")
    p.add_argument("--plot", help="PNG of latency and memory vs generated seconds (default: next to --json)")
    add_model_args(p)
    p.set_defaults(func=cmd_bench)
    return p


def resolve_model(args) -> None:
    if args.preset:
        if not args.random_weights:
            raise ConfigError(f"--preset {args.preset} has no trained weights; add --random-weights to measure "
                              f"its speed and memory with fresh weights")
        args.model = args.preset
    args.model = args.model or default_model()  # speed is per mode, not per checkpoint: one model for all
    if args.random_weights and args.model not in MODEL_PRESETS:
        raise ConfigError(f"--random-weights needs a preset ({', '.join(MODEL_PRESETS)}), got --model {args.model!r}")


def _dtype(name: str):
    import torch

    return None if name in (None, "auto") else getattr(torch, name)


def build_pipe(args, memory: str, device: str | None = None):
    import torch

    from .cli import stream_overrides
    from .pipeline import VideoSSMPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(stream_overrides(args), memory=memory)
    return VideoSSMPipeline.from_pretrained(args.model, device=device or args.device, dtype=_dtype(args.dtype),
                                            seed=args.seed, random_text=args.random_weights, **overrides)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        from .pipeline import peak_rss_mb

        return peak_rss_mb()


def bench_one(args, memory: str, seconds: float) -> dict:
    """Runs in a fresh process."""
    import torch

    if args.ops:
        os.environ["VIDEOSSM_OPS"] = args.ops
    pipe = build_pipe(args, memory)
    if args.compile:
        pipe.transformer.compile()
    on_gpu = pipe.device.type == "cuda"
    if args.warmup_seconds > 0:
        for _ in pipe.stream(PROMPT, seconds=args.warmup_seconds, seed=args.seed + 1, decode=not args.no_decode):
            pass
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    handle = pipe.stream(PROMPT, seconds=seconds, seed=args.seed, decode=not args.no_decode)
    samples = []
    for _ in handle:
        samples.append({"cache_mb": handle.state.cache.nbytes() / 2**20, "rss_mb": _rss_mb(),
                        "gpu_mb": torch.cuda.memory_allocated() / 2**20 if on_gpu else None})
    stats = handle.stats
    video_frames = 0
    for block, sample in zip(stats["per_block"], samples):
        video_frames += block["frames"]
        block.update(sample, video_s=video_frames / handle.fps)  # generated video seconds at the block's end
    stats.update(threads=torch.get_num_threads(), decode=not args.no_decode, compile=args.compile,
                 ops=os.environ.get("VIDEOSSM_OPS", "auto"), dtype=str(pipe.transformer.dtype),
                 warmup_seconds=args.warmup_seconds, describe=pipe.describe(),
                 gpu=torch.cuda.get_device_name() if on_gpu else None)
    return stats


def _worker(args, memory, seconds, queue):
    try:
        queue.put(bench_one(args, memory, seconds))
    except BaseException as e:  # report, don't hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _median_around(blocks: list[dict], t: float) -> float | None:
    """Median latency (s) of the 5 blocks nearest video time t, or None if the stream is shorter."""
    if not blocks or blocks[-1].get("video_s", 0) < t:
        return None
    i = min(range(len(blocks)), key=lambda j: abs(blocks[j].get("video_s", j) - t))
    window = blocks[max(1, i - 2): i + 3] or blocks[-1:]
    return statistics.median(b["seconds"] for b in window)


def summarize(stats: dict) -> dict:
    blocks = stats["per_block"]
    times = [b["seconds"] for b in blocks]
    head, tail = times[1:11] or times, times[-10:]  # block 0 has no context: leave it out of the baseline
    first, last = statistics.median(head), statistics.median(tail)
    steady = blocks[1:] or blocks  # sustained: every block after the first
    steady_s = sum(b["seconds"] for b in steady)
    at_2min = _median_around(blocks, 120.0)
    gpu = [b["gpu_mb"] for b in blocks if b.get("gpu_mb") is not None]
    return {
        "blocks": len(times), "first_frame_s": stats["first_frame_s"], "fps": stats["fps"],
        "sustained_fps": sum(b["frames"] for b in steady) / steady_s if steady_s > 0 else 0.0,
        "block_ms_first10": 1000 * first, "block_ms_last10": 1000 * last, "latency_ratio": last / first,
        "latency_ratio_2min": at_2min / first if at_2min is not None else None,
        "cache_mb_block10": blocks[min(10, len(blocks) - 1)].get("cache_mb"),
        "cache_mb_end": blocks[-1].get("cache_mb"), "peak_rss_mb": stats["peak_rss_mb"],
        "peak_gpu_mb": stats.get("peak_gpu_mb"),
        "gpu_mb_block10": gpu[min(10, len(gpu) - 1)] if gpu else None, "gpu_mb_end": gpu[-1] if gpu else None,
    }


def run_bench(args) -> dict:
    resolve_model(args)
    if args.dry_run:
        return dry_run(args)
    ctx = mp.get_context("spawn")
    results = {}
    for memory in args.modes:
        seconds = args.full_seconds if (memory == "full" and args.full_seconds) else args.seconds
        print(f"bench: {memory}, {seconds:g} s of video ...", file=sys.stderr, flush=True)
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(args, memory, seconds, queue))
        proc.start()
        stats = queue.get()
        proc.join()
        if "error" in stats:
            raise RuntimeError(f"bench of mode {memory!r} failed: {stats['error']}")
        results[memory] = {"summary": summarize(stats), "stats": stats}
    print_table(results, args)
    report = {"kind": "bench", "model": args.model, "seconds": args.seconds, "full_seconds": args.full_seconds,
              "command": "python -m videossm " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None,
              "machine": machine(), "created": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    plot = args.plot or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
    if plot:
        from .eval.plots import plot_bench

        plot_bench(results, plot, title=f"{args.model}, decode {'off' if args.no_decode else 'on'}")
        print(f"wrote {plot}", file=sys.stderr)
    return report


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(results: dict, args) -> None:
    first = next(iter(results.values()))["stats"] if results else {}
    print(f"\nmodel {args.model}, decode {'off' if args.no_decode else 'on'}, {first.get('dtype')}, "
          f"{first.get('threads')} thread(s), ops {first.get('ops')}, compile {'on' if args.compile else 'off'}"
          f"{', GPU ' + first['gpu'] if first.get('gpu') else ''}; block latency medians over blocks 1-10 and "
          f"the last 10; ratio = last/first; fps = video frames per wall second"
          f"{' (latents only)' if args.no_decode else ''}; sustained = after block 0")
    header = (f"{'mode':8} {'blocks':>6} {'first frame s':>13} {'fps':>7} {'sustained':>9} {'ms first10':>10} "
              f"{'ms last10':>9} {'ratio':>6} {'ratio@2min':>10} {'cache MB blk10->end':>20} {'peak RSS MB':>11} "
              f"{'peak GPU MB':>11}")
    print(header)
    for memory, r in results.items():
        s = r["summary"]
        cache = f"{s['cache_mb_block10']:.1f} -> {s['cache_mb_end']:.1f}"
        first_frame = f"{s['first_frame_s']:.3f}" if s["first_frame_s"] is not None else "-"
        r2 = f"{s['latency_ratio_2min']:.3f}" if s["latency_ratio_2min"] is not None else "-"
        gpu = f"{s['peak_gpu_mb']:.0f}" if s.get("peak_gpu_mb") is not None else "-"
        print(f"{memory:8} {s['blocks']:>6} {first_frame:>13} {s['fps']:>7.1f} {s['sustained_fps']:>9.1f} "
              f"{s['block_ms_first10']:>10.1f} {s['block_ms_last10']:>9.1f} {s['latency_ratio']:>6.3f} {r2:>10} "
              f"{cache:>20} {s['peak_rss_mb']:>11.0f} {gpu:>11}")
    print("\nper-block latency over time (ms, median of 5 blocks around each point; t = generated video seconds)")
    for memory, r in results.items():
        print(f"{memory:8} " + "  ".join(f"t={t:.0f}s:{ms:.0f}" for t, ms in latency_over_time(r["stats"])))


def latency_over_time(stats: dict, points: int = 8) -> list[tuple[float, float]]:
    blocks = stats["per_block"]
    out = []
    for i in range(points):
        centre = min(len(blocks) - 1, 1 + round(i * (len(blocks) - 2) / max(points - 1, 1)))
        window = blocks[max(1, centre - 2): centre + 3] or blocks[-1:]
        t = blocks[centre].get("video_s", centre / len(blocks) * stats["seconds"])
        out.append((t, 1000 * statistics.median(b["seconds"] for b in window)))
    return out


def dry_run(args) -> dict:
    """Build the pipeline on `meta` (no memory, no weights) and stream a few blocks: shapes and sizes only."""
    import torch

    memory = args.modes[0]
    if args.dtype == "auto":
        args.dtype = "bfloat16"  # what `auto` picks on a GPU, the device a real-scale run is for
    pipe = build_pipe(args, memory, device="meta")
    cfg, sc = pipe.model_config, pipe.stream_config
    prompt_embeds = pipe.encode_prompt(PROMPT)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    vae_params = sum(p.numel() for p in pipe.decoder.vae.parameters()) if pipe.decoder else 0
    seconds = min(sc.max_seconds, 60.0)
    handle = pipe.stream(PROMPT, seconds=seconds, seed=args.seed, decode=False)
    decoder_state = pipe.decoder.new_state() if pipe.decoder and not args.no_decode else None
    blocks = []
    for chunk in handle:
        pixels = None  # decoded on meta: a tensor of the right shape that never holds frames
        if decoder_state is not None:
            pixels = list(pipe.decoder.decode(decoder_state, chunk.latents).shape)  # [B, 3, T, H, W]
        blocks.append({"latents": list(chunk.latents.shape), "pixels": pixels,
                       "cache_mb": handle.state.cache.nbytes() / 2**20})
        if len(blocks) >= args.dry_run_blocks:
            handle.cancel()
    info = {
        "kind": "bench-dry-run", "model": args.model, "memory": memory, "device": "meta",
        "dtype": str(pipe.transformer.dtype), "transformer_params": params, "vae_params": vae_params,
        "vae_layout": cfg.vae_layout, "size": [cfg.width, cfg.height], "fps": cfg.fps,
        "tokens_per_latent_frame": cfg.tokens_per_frame, "num_layers": cfg.num_layers,
        "text_embeddings": list(prompt_embeds.shape), "text_encoder": type(pipe.text_encoder).__name__,
        "num_steps": sc.num_steps, "block_frames": sc.block_frames, "window_frames": sc.window_frames,
        "sink_frames": sc.effective_sink_frames, "blocks": blocks,
        "transformer_mb": params * torch.finfo(pipe.transformer.dtype).bits / 8 / 2**20,
    }
    print(json.dumps({k: v for k, v in info.items() if k != "blocks"}, indent=1))
    for i, b in enumerate(blocks):
        print(f"block {i}: latents {b['latents']}, decoded pixels {b['pixels']}, KV+memory state {b['cache_mb']:.1f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
    return info


def cmd_bench(args) -> int:
    run_bench(args)
    return 0

