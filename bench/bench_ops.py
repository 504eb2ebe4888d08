"""Memory-path kernels at the Wan2.1-T2V-1.3B shapes, and what the memory costs a block.

    python bench/bench_ops.py --json bench/ops_h200.json                     # a CUDA GPU (H200 peaks by default)
    TRITON_INTERPRET=1 python bench/bench_ops.py --smoke --device cpu       # CPU: tiny shapes, checks it runs

Three parts (see bench/README.md):
1. ops: the eviction update (state only, what the memory runs), the full gated delta rule (with outputs, what
   fla's chunk kernel computes) and the fused read-out, per backend (reference, triton, fla): time, achieved
   bandwidth and FLOP/s against the peaks, and the distance to the bandwidth bound of the essential bytes.
2. op-level share: 30 layers x (one update + one read-out per pass) per block, against the block time of 3.
3. block time: VideoSSMPipeline with random weights of the preset, `hybrid` vs `sink`, per block after the
   window is full (eviction running), timed with device synchronisation.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from videossm import ops  # noqa: E402
from videossm.config import StreamConfig, get_model_config  # noqa: E402

CHUNK = 64  # the chunk length both chunked kernels use (ours and fla's)


# ------------------------------------------------------------------------------------------------- cost models


def update_cost(T: int, H: int, K: int, V: int, itemsize: int, outputs: bool) -> tuple[float, float]:
    """Essential bytes (inputs once, state in and out; q and o when outputs) and chunked-algorithm FLOPs."""
    nbytes = T * H * (K + V) * itemsize + T * H * 2 * 4 + 2 * H * K * V * 4  # k, v; g, beta fp32; state r+w
    flops = T * H * (2 * CHUNK * (2 * K + V) + CHUNK * CHUNK + 4 * K * V)  # kk^T, W, U0, forward subst., wh, k^T u
    if outputs:
        nbytes += T * H * (K + V) * itemsize  # q in, o out
        flops += T * H * (2 * CHUNK * K + 2 * K * V + 2 * CHUNK * V)  # qk^T, q h, (qk^T) u
    return nbytes, flops


def readout_cost(N: int, H: int, K: int, V: int, itemsize: int) -> tuple[float, float]:
    nbytes = N * H * (K + 2 * V) * itemsize + N * 4 + H * K * V * 4 + V * itemsize  # q, gate, out; router; M
    flops = 2 * N * H * K * V + 8 * N * H * V  # q M, RMSNorm, gate, silu, router
    return nbytes, flops


# ------------------------------------------------------------------------------------------------------ timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn in ms, synchronised (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------------ backends


def backends(names: list[str], device: torch.device) -> dict[str, dict[str, Callable] | str]:
    """name -> {gdr, update, readout}, or the reason it cannot run here. On CPU the Triton kernels run only
    under TRITON_INTERPRET=1 (imported directly: the dispatch never sends CPU tensors to them)."""
    found: dict[str, dict[str, Callable] | str] = {}
    for name in names:
        try:
            if name == "triton" and device.type != "cuda":
                if os.environ.get("TRITON_INTERPRET") != "1":
                    raise ops.BackendUnavailableError("CPU needs TRITON_INTERPRET=1 for the Triton kernels")
                import videossm.ops.triton as kernels

                found[name] = dict(gdr=kernels.gated_delta_rule, update=kernels.gated_delta_rule_update,
                                   readout=kernels.memory_readout)
                continue
            backend = ops.get_backend(name)
            if backend.device_types is not None and device.type not in backend.device_types:
                raise ops.BackendUnavailableError(f"runs on {'/'.join(backend.device_types)} only")
        except (ops.BackendUnavailableError, ImportError) as e:
            found[name] = str(e)
            continue
        gdr = backend.gated_delta_rule

        def update(k, v, g, beta, initial_state=None, _b=backend):
            if _b.state_update is not None:
                return _b.state_update(k, v, g, beta, initial_state=initial_state)
            return _b.gated_delta_rule(k, k, v, g, beta, initial_state=initial_state, output_final_state=True)[1]

        found[name] = dict(gdr=gdr, update=update, readout=backend.memory_readout)
    return found


# ------------------------------------------------------------------------------------------------------- parts


def bench_ops(args, device: torch.device, dtype: torch.dtype) -> dict:
    B, H, K, V = 1, args.heads, args.head_dim, args.head_dim
    T = args.evicted_frames * args.tokens_per_frame  # evicted tokens per layer per block
    N = args.block_frames * args.tokens_per_frame  # query tokens per block
    gen = torch.Generator().manual_seed(0)

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dt)

    q = torch.nn.functional.normalize(randn(B, T, H, K, dt=torch.float32), dim=-1).to(dtype)  # [B, T, H, K]
    k = torch.nn.functional.normalize(randn(B, T, H, K, dt=torch.float32), dim=-1).to(dtype)  # [B, T, H, K]
    v = randn(B, T, H, V)  # [B, T, H, V]
    g = (-0.05 * torch.rand(B, T, H, generator=gen)).to(device)  # [B, T, H] fp32 log decay
    beta = torch.rand(B, T, H, generator=gen).to(device)  # [B, T, H] fp32
    h0 = 0.1 * randn(B, H, K, V, dt=torch.float32)  # [B, H, K, V] fp32
    qr = torch.nn.functional.normalize(randn(B, N, H, K, dt=torch.float32), dim=-1).to(dtype)  # [B, N, H, K]
    gate = randn(B, N, H, V)  # [B, N, H, V]
    norm_weight = torch.ones(V, device=device, dtype=dtype)  # [V]
    router = torch.rand(1, N, 1, 1, generator=gen).to(device)  # [1, N, 1, 1] fp32

    itemsize = torch.tensor([], dtype=dtype).element_size()
    costs = {"update": update_cost(T, H, K, V, itemsize, outputs=False),
             "gdr+outputs": update_cost(T, H, K, V, itemsize, outputs=True),
             "readout": readout_cost(N, H, K, V, itemsize)}
    found = backends(args.backends, device)
    with torch.no_grad():
        ref_state = ops.get_backend("reference").gated_delta_rule(k, k, v, g, beta, initial_state=h0,
                                                                   output_final_state=True)[1]
        ref_read = ops.get_backend("reference").memory_readout(qr, ref_state, gate, norm_weight, router)
    rows, skipped = [], {}
    for name, fns in found.items():
        if isinstance(fns, str):
            skipped[name] = fns
            print(f"  {name}: skipped ({fns})", file=sys.stderr)
            continue
        calls = {
            "update": lambda f=fns: f["update"](k, v, g, beta, initial_state=h0),
            "gdr+outputs": lambda f=fns: f["gdr"](q, k, v, g, beta, initial_state=h0, output_final_state=True),
            "readout": lambda f=fns: f["readout"](qr, ref_state, gate, norm_weight, router),
        }
        with torch.no_grad():
            err_state = (fns["update"](k, v, g, beta, initial_state=h0) - ref_state).abs().max().item()
            err_read = (fns["readout"](qr, ref_state, gate, norm_weight, router).float() - ref_read.float()).abs().max().item()
        for op, call in calls.items():
            print(f"  {name} {op} ...", file=sys.stderr, flush=True)
            with torch.no_grad():
                ms = time_ms(call, device, args.repeats)
            nbytes, flops = costs[op]
            bound_ms = 1000 * nbytes / args.peak_bandwidth
            rows.append(dict(backend=name, op=op, ms=ms, gbps=nbytes / ms / 1e6, tflops=flops / ms / 1e9,
                             bw_pct=100 * nbytes / (ms / 1000) / args.peak_bandwidth,
                             flops_pct=100 * flops / (ms / 1000) / args.peak_flops,
                             x_bw_bound=ms / bound_ms, bytes=nbytes, flops=flops,
                             max_abs_err=err_read if op == "readout" else err_state))
    return dict(shapes=dict(B=B, T=T, N=N, H=H, K=K, V=V, dtype=str(dtype)), rows=rows, skipped=skipped)


def memory_share(ops_result: dict, args, block_ms: float | None) -> dict:
    """Op-level memory time per block: layers x (one update + one read-out per pass), per backend."""
    passes = args.steps + 1  # denoising steps + the clean pass, each reads the memory
    by = {(r["backend"], r["op"]): r["ms"] for r in ops_result["rows"]}
    out = {}
    for name in dict.fromkeys(r["backend"] for r in ops_result["rows"]):
        per_block = args.layers * (by[(name, "update")] + passes * by[(name, "readout")])
        out[name] = dict(memory_ms_per_block=per_block,
                         share_pct=None if not block_ms else 100 * per_block / block_ms)
    return out


def bench_blocks(args, device: torch.device, dtype: torch.dtype) -> dict:
    """Per-block time of `hybrid` and `sink` with random weights, after eviction has started."""
    from videossm.pipeline import VideoSSMPipeline

    overrides = dict(block_frames=args.block_frames, num_steps=args.steps)
    pipe = VideoSSMPipeline.from_pretrained(args.model, device=device, dtype=dtype, memory="hybrid", **overrides)
    config = pipe.stream_config
    # Eviction begins once sink + window are full; time the blocks after that (plus one to settle).
    fill = -(-(config.window_frames - config.block_frames) // config.block_frames) + 1
    blocks = fill + args.blocks
    seconds = blocks * config.block_frames * pipe.model_config.vae_scale_temporal / pipe.model_config.fps
    result = {"model": args.model, "ops_backend_for_inference": ops.selected_backend(device, needs_grad=False)}
    for memory in ("hybrid", "sink"):
        print(f"  blocks: {memory}, {blocks} blocks ...", file=sys.stderr, flush=True)
        handle = pipe.stream("a red circle moving right", seconds=seconds, seed=0, memory=memory, decode=False)
        times, evicted = [], []
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in handle:
                sync(device)
                t1 = time.perf_counter()
                times.append(1000 * (t1 - t0))
                evicted.append(handle.state.cache.evicted_frames)
                t0 = t1
        steady = [t for t, e, prev in zip(times[1:], evicted[1:], evicted) if e > prev] or times[-args.blocks:]
        result[memory] = dict(block_ms_median=statistics.median(steady), blocks_timed=len(steady), block_ms=times)
    result["hybrid_over_sink_pct"] = 100 * (result["hybrid"]["block_ms_median"] / result["sink"]["block_ms_median"] - 1)
    return result


# ------------------------------------------------------------------------------------------------------ output


def print_report(res: dict, args) -> None:
    s = res["ops"]["shapes"]
    print(f"\nmemory-path ops on {res['device']} ({res['dtype']}): B={s['B']} H={s['H']} K={s['K']} V={s['V']}, "
          f"update over T={s['T']} evicted tokens, read-out over N={s['N']} queries; peaks "
          f"{args.peak_bandwidth / 1e12:.1f} TB/s, {args.peak_flops / 1e12:.0f} TFLOP/s")
    print(f"{'backend':10} {'op':12} {'ms':>9} {'GB/s':>8} {'%BW':>6} {'TFLOP/s':>8} {'%FLOP':>6} "
          f"{'x BW bound':>10} {'max|err|':>9}")
    for r in res["ops"]["rows"]:
        print(f"{r['backend']:10} {r['op']:12} {r['ms']:9.3f} {r['gbps']:8.1f} {r['bw_pct']:6.1f} "
              f"{r['tflops']:8.2f} {r['flops_pct']:6.2f} {r['x_bw_bound']:10.1f} {r['max_abs_err']:9.2e}")
    updates = {r["backend"]: r["ms"] for r in res["ops"]["rows"] if r["op"] == "update" and r["backend"] != "reference"}
    if updates:
        best = min(updates, key=updates.get)
        print(f"fastest inference update: {best} ({', '.join(f'{n} {ms:.3f} ms' for n, ms in updates.items())}); "
              f"`auto` tries {ops.GPU_BACKENDS} in that order (videossm/ops/__init__.py GPU_BACKENDS)")
    if "blocks" in res:
        b = res["blocks"]
        print(f"\nper block ({b['model']}, {args.steps} steps + clean pass, random weights, no decode; ops backend "
              f"{b['ops_backend_for_inference']!r}): hybrid {b['hybrid']['block_ms_median']:.1f} ms, sink "
              f"{b['sink']['block_ms_median']:.1f} ms, hybrid adds {b['hybrid_over_sink_pct']:+.1f}% "
              f"(target <= 5%)")
    for name, m in res["share"].items():
        share = "-" if m["share_pct"] is None else f"{m['share_pct']:.2f}% of a sink block"
        print(f"memory ops per block with {name}: {m['memory_ms_per_block']:.2f} ms ({share}; {args.layers} layers)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    wan = get_model_config("wan2.1-t2v-1.3b")
    stream = StreamConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.add_argument("--backends", nargs="+", default=["reference", "triton", "fla"])
    p.add_argument("--model", default=wan.name, help="preset for the block timing (random weights)")
    p.add_argument("--heads", type=int, default=wan.num_attention_heads)
    p.add_argument("--head-dim", type=int, default=wan.attention_head_dim)
    p.add_argument("--layers", type=int, default=wan.num_layers)
    p.add_argument("--tokens-per-frame", type=int, default=wan.tokens_per_frame)
    p.add_argument("--evicted-frames", type=int, default=stream.block_frames, help="latent frames evicted per block")
    p.add_argument("--block-frames", type=int, default=stream.block_frames)
    p.add_argument("--steps", type=int, default=stream.num_steps, help="denoising steps per block")
    p.add_argument("--blocks", type=int, default=6, help="blocks timed per memory mode once eviction runs")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--peak-bandwidth", type=float, default=4.8e12, help="bytes/s (H200 HBM3e: 4.8e12)")
    p.add_argument("--peak-flops", type=float, default=989e12, help="FLOP/s (H200 dense bf16: 989e12)")
    p.add_argument("--no-blocks", action="store_true", help="skip the end-to-end block timing")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes and the `test` preset: a CPU check that the script runs (TRITON_INTERPRET=1)")
    p.add_argument("--json", help="write all results here")
    args = p.parse_args(argv)
    if args.smoke:
        test = get_model_config("test")
        args.model, args.heads, args.head_dim, args.layers = test.name, 2, 16, test.num_layers
        args.tokens_per_frame, args.repeats, args.blocks = test.tokens_per_frame, 2, 2
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch.cuda.is_available() is False; use --smoke --device cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "dtype": args.dtype,
           "torch": torch.__version__, "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])])}
    print("ops ...", file=sys.stderr, flush=True)
    res["ops"] = bench_ops(args, device, dtype)
    if not args.no_blocks:
        res["blocks"] = bench_blocks(args, device, dtype)
    block_ms = res["blocks"]["sink"]["block_ms_median"] if "blocks" in res else None
    res["share"] = memory_share(res["ops"], args, block_ms)
    print_report(res, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
