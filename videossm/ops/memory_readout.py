"""VideoSSM global-memory read for a block of queries (PyTorch reference).

Per query token and head, with the compressed memory M = state [K, V]:

    o   = (q * scale) M                          [V]
    o   = RMSNorm_V(o) * norm_weight             RMS over V, eps inside the sqrt, fp32
    out = silu(g_out * o) * router_scale         the paper's Swish(g_out * RMSNorm(q M)), gated by the router

Note the order: silu of the product, not RMSNorm(o) * silu(g_out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_memory_readout_inputs, compute_dtype, resolve_scale


def memory_readout(
    q: torch.Tensor,
    state: torch.Tensor,
    gate: torch.Tensor,
    norm_weight: torch.Tensor,
    router_scale: torch.Tensor,
    scale: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Read the global memory for a block of N query tokens.

    Args:
        q: [B, N, H, K] queries, already L2-normalised by the caller.
        state: [B, H, K, V] memory state (fp32, or fp64).
        gate: [B, N, H, V] pre-activation output gate g_out.
        norm_weight: [V] RMSNorm weight, shared by heads.
        router_scale: broadcastable to [B, N, H, V] (e.g. [B, N, 1, 1]): the router's gamma per token.
        scale: query scale, default K ** -0.5.
        eps: RMSNorm epsilon (> 0), added to the mean square inside the sqrt.

    Returns:
        [B, N, H, V] in q's dtype.
    """
    check_memory_readout_inputs(q, state, gate, norm_weight, router_scale, scale, eps)
    scale = resolve_scale(scale, q.shape[-1])
    dtype = compute_dtype(q, state, gate, norm_weight, router_scale)

    o = torch.einsum("bnhk,bhkv->bnhv", q.to(dtype) * scale, state.to(dtype))  # [B, N, H, V]
    o = o * torch.rsqrt(o.square().mean(dim=-1, keepdim=True) + eps) * norm_weight.to(dtype)  # [B, N, H, V]
    out = F.silu(gate.to(dtype) * o) * router_scale.to(dtype)  # [B, N, H, V]
    return out.to(q.dtype)
