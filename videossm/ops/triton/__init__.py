"""VideoSSM's own Triton kernels for the memory path (inference only), beside the PyTorch references.

    gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False) -> (o, state)
    gated_delta_rule_update(k, v, g, beta, initial_state=None) -> state       (eviction: state only, no outputs)
    memory_readout(q, state, gate, norm_weight, router_scale, scale=None, eps=1e-6) -> out
    warmup(device, ...)                                                        compile + autotune once per process

Importing this package imports `triton`: only `videossm.ops` does it, lazily, for CUDA tensors (or a test
does it under TRITON_INTERPRET=1). Use `videossm.ops.*`, which dispatches, rather than these directly.
"""

from __future__ import annotations

import logging
import time

import torch

from ._common import INTERPRET
from .gated_delta_rule import gated_delta_rule, gated_delta_rule_update
from .memory_readout import memory_readout

logger = logging.getLogger(__name__)

__all__ = ["INTERPRET", "SUPPORTS_GRAD", "gated_delta_rule", "gated_delta_rule_update", "memory_readout", "warmup"]

SUPPORTS_GRAD = False  # inference kernels: training on CUDA dispatches to fla (or the reference)

_WARMED: set[tuple] = set()


def warmup(
    device: torch.device | str,
    *,
    num_heads: int,
    key_dim: int,
    value_dim: int,
    evicted_tokens: int,
    query_tokens: int,
    dtype: torch.dtype = torch.bfloat16,
    batch_size: int = 1,
) -> bool:
    """Compile and autotune the kernels for these shapes and dtypes once per process.

    Runs one eviction update (k, v in `dtype`; g, beta and state fp32, as the memory calls it) and one read-out.
    Autotuning keys on K, V and dtypes, not on the token counts, so later calls with other lengths reuse it.
    Returns True if it ran now, False if this process had already warmed up these shapes.
    """
    device = torch.device(device)
    key = (device, num_heads, key_dim, value_dim, dtype, batch_size)
    if key in _WARMED:
        return False
    start = time.perf_counter()
    B, H, K, V, T, N = batch_size, num_heads, key_dim, value_dim, evicted_tokens, query_tokens
    gen = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dt)

    k = torch.nn.functional.normalize(randn(B, T, H, K, dt=torch.float32), dim=-1).to(dtype)  # [B, T, H, K]
    v = randn(B, T, H, V)  # [B, T, H, V]
    g = -torch.rand(B, T, H, generator=gen).to(device)  # [B, T, H] fp32 log decay
    beta = torch.rand(B, T, H, generator=gen).to(device)  # [B, T, H] fp32
    state = gated_delta_rule_update(k, v, g, beta, initial_state=torch.zeros(B, H, K, V, device=device))
    q = torch.nn.functional.normalize(randn(B, N, H, K, dt=torch.float32), dim=-1).to(dtype)  # [B, N, H, K]
    gate = randn(B, N, H, V)  # [B, N, H, V]
    router = torch.rand(1, N, 1, 1, generator=gen).to(device)  # [1, N, 1, 1] fp32, as the router gives it
    memory_readout(q, state, gate, torch.ones(V, device=device, dtype=dtype), router)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    _WARMED.add(key)
    logger.info("triton memory kernels ready for H=%d K=%d V=%d %s on %s in %.1f s", H, K, V, dtype, device,
                time.perf_counter() - start)
    return True
