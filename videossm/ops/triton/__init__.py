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

from .._inputs import memory_path_inputs
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
    x = memory_path_inputs(device, num_heads=num_heads, key_dim=key_dim, value_dim=value_dim,
                           evicted_tokens=evicted_tokens, query_tokens=query_tokens, dtype=dtype, batch_size=batch_size)
    state = gated_delta_rule_update(x.k, x.v, x.g, x.beta, initial_state=x.initial_state)
    memory_readout(x.q, state, x.gate, x.norm_weight, x.router)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    _WARMED.add(key)
    logger.info("triton memory kernels ready for H=%d K=%d V=%d %s on %s in %.1f s", num_heads, key_dim, value_dim,
                dtype, device, time.perf_counter() - start)
    return True
