"""`python -m videossm bench`: stream N seconds in each memory mode and report per-block latency over
time, first-frame latency, fps and memory. Each mode runs in its own process, so peak RSS is its own."""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import sys

from .cli import load_pipe


def bench_one(args, memory: str, seconds: float) -> dict:
    """Runs in a fresh process."""
    import torch

    args.memory = memory
    pipe = load_pipe(args)
    handle = pipe.stream("a red circle moving right on a gray background", seconds=seconds, seed=args.seed,
                         decode=not args.no_decode)
    cache_mb = []
    for _ in handle:
        cache_mb.append(handle.state.cache.nbytes() / 2**20)
    stats = handle.stats
    for block, mb in zip(stats["per_block"], cache_mb):
        block["cache_mb"] = mb
    stats["threads"] = torch.get_num_threads()
    stats["decode"] = not args.no_decode
    return stats


def _worker(args, memory, seconds, queue):
    try:
        queue.put(bench_one(args, memory, seconds))
    except BaseException as e:  # report, don't hang the parent
        queue.put({"error": repr(e)})


def summarize(stats: dict) -> dict:
    times = [b["seconds"] for b in stats["per_block"]]
    head, tail = times[1:11], times[-10:]  # block 0 has no context: leave it out of the baseline
    first, last = statistics.median(head), statistics.median(tail)
    return {
        "blocks": len(times), "first_frame_s": stats["first_frame_s"], "fps": stats["fps"],
        "block_ms_first10": 1000 * first, "block_ms_last10": 1000 * last, "latency_ratio": last / first,
        "cache_mb_block10": stats["per_block"][min(10, len(times) - 1)]["cache_mb"],
        "cache_mb_end": stats["per_block"][-1]["cache_mb"], "peak_rss_mb": stats["peak_rss_mb"],
        "peak_gpu_mb": stats.get("peak_gpu_mb"),
    }


def run_bench(args) -> dict:
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "seconds": args.seconds, "results": results}, f, indent=2)
    return results


def print_table(results: dict, args) -> None:
    print(f"\nmodel {args.model}, decode {'off' if args.no_decode else 'on'}, {results and next(iter(results.values()))['stats']['threads']} "
          f"thread(s); block latency medians over blocks 1-10 and the last 10; ratio = last/first; "
          f"fps = video frames per wall second{' (latents only)' if args.no_decode else ''}")
    header = f"{'mode':8} {'blocks':>6} {'first frame s':>13} {'fps':>7} {'ms first10':>10} {'ms last10':>9} " \
             f"{'ratio':>6} {'cache MB blk10->end':>20} {'peak RSS MB':>11}"
    print(header)
    for memory, r in results.items():
        s = r["summary"]
        cache = f"{s['cache_mb_block10']:.1f} -> {s['cache_mb_end']:.1f}"
        first = f"{s['first_frame_s']:.3f}" if s["first_frame_s"] is not None else "-"
        print(f"{memory:8} {s['blocks']:>6} {first:>13} {s['fps']:>7.1f} {s['block_ms_first10']:>10.1f} "
              f"{s['block_ms_last10']:>9.1f} {s['latency_ratio']:>6.3f} {cache:>20} {s['peak_rss_mb']:>11.0f}")
    print("\nper-block latency over time (ms, median of 5 blocks around each point; t = generated video seconds)")
    for memory, r in results.items():
        print(f"{memory:8} " + "  ".join(f"t={t:.0f}s:{ms:.0f}" for t, ms in latency_over_time(r["stats"])))


def latency_over_time(stats: dict, points: int = 8) -> list[tuple[float, float]]:
    blocks = stats["per_block"]
    out = []
    for i in range(points):
        centre = min(len(blocks) - 1, 1 + round(i * (len(blocks) - 2) / max(points - 1, 1)))
        window = blocks[max(1, centre - 2): centre + 3] or blocks[-1:]
        out.append((centre / len(blocks) * stats["seconds"], 1000 * statistics.median(b["seconds"] for b in window)))
    return out
