"""Fused global-memory read-out in Triton (inference: no backward).

Same math as the reference `videossm.ops.memory_readout` in one pass over a tile of BN query tokens of one
(batch, head), with the head's state [K, V] loaded once per program:

    o   = (q * scale) M                             [BN, V]  fp32 accumulate
    o   = o * rsqrt(mean_V(o^2) + eps) * norm_weight
    out = silu(gate * o) * router_scale             stored in q's dtype

The whole V row stays in registers (the RMSNorm needs it), so V is one tile.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
import triton
import triton.language as tl

from .._checks import check_memory_readout_inputs, resolve_scale
from ..memory_readout import memory_readout as reference_memory_readout
from ._common import autotune_configs, block_dim, check_launch_device, dot_precision, fits

logger = logging.getLogger(__name__)

_READOUT_CONFIGS = [
    triton.Config({"BN": bn}, num_warps=nw, num_stages=ns)
    for bn in (32, 64, 16, 128) for nw in (4, 8, 2) for ns in (2, 1, 3)
]


@triton.autotune(configs=autotune_configs(_READOUT_CONFIGS), key=["K", "V", "PRECISION"], cache_results=True)
@triton.jit
def _memory_readout_kernel(
    q_ptr, state_ptr, gate_ptr, norm_ptr, router_ptr, out_ptr,  # [B,N,H,K], [B,H,K,V], [B,N,H,V], [V], [B,N,H,V]
    N, H, K, V, scale, eps,
    s_qb, s_qn, s_qh, s_gb, s_gn, s_gh, s_gv, s_rb, s_rn, s_rh, s_rv,
    BN: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    rows = i_n * BN + tl.arange(0, BN)
    row_ok = rows < N
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    mask_v = row_ok[:, None] & (offs_v[None, :] < V)

    q = tl.load(q_ptr + i_b * s_qb + rows[:, None] * s_qn + i_h * s_qh + offs_k[None, :],
                mask=row_ok[:, None] & (offs_k[None, :] < K), other=0.0).to(tl.float32) * scale  # [BN, BK]
    state = tl.load(state_ptr + i_bh * K * V + offs_k[:, None] * V + offs_v[None, :],
                    mask=(offs_k[:, None] < K) & (offs_v[None, :] < V), other=0.0).to(tl.float32)  # [BK, BV]
    o = tl.dot(q, state, input_precision=PRECISION)  # [BN, BV]; padded columns are 0

    norm_weight = tl.load(norm_ptr + offs_v, mask=offs_v < V, other=0.0).to(tl.float32)  # [BV]
    o = o * tl.rsqrt(tl.sum(o * o, axis=1) / V + eps)[:, None] * norm_weight[None, :]
    gate = tl.load(gate_ptr + i_b * s_gb + rows[:, None] * s_gn + i_h * s_gh + offs_v[None, :] * s_gv,
                   mask=mask_v, other=0.0).to(tl.float32)  # [BN, BV]
    router = tl.load(router_ptr + i_b * s_rb + rows[:, None] * s_rn + i_h * s_rh + offs_v[None, :] * s_rv,
                     mask=mask_v, other=0.0).to(tl.float32)  # [BN, BV]
    x = gate * o
    out = x * tl.sigmoid(x) * router
    out_offs = ((i_b * N + rows[:, None]) * H + i_h) * V + offs_v[None, :]  # contiguous [B, N, H, V]
    tl.store(out_ptr + out_offs, out.to(out_ptr.dtype.element_ty), mask=mask_v)


def memory_readout(
    q: torch.Tensor,
    state: torch.Tensor,
    gate: torch.Tensor,
    norm_weight: torch.Tensor,
    router_scale: torch.Tensor,
    scale: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Triton fused read-out; the contract of `videossm.ops.memory_readout` (no autograd).

    q [B, N, H, K]; state [B, H, K, V] fp32; gate [B, N, H, V]; norm_weight [V]; router_scale broadcastable to
    [B, N, H, V]. Returns [B, N, H, V] in q's dtype. fp64 inputs and K or V above 256 run the reference instead.
    """
    check_memory_readout_inputs(q, state, gate, norm_weight, router_scale, scale, eps)
    check_launch_device("memory_readout", q)
    B, N, H, K = q.shape
    V = state.shape[-1]
    fp64 = any(t.dtype == torch.float64 for t in (q, state, gate, norm_weight, router_scale))
    if fp64 or not fits(K, V) or N == 0:
        if fp64 or not fits(K, V):
            logger.debug("triton memory_readout: reference for fp64 or K=%d, V=%d", K, V)
        return reference_memory_readout(q, state, gate, norm_weight, router_scale, scale=scale, eps=eps)
    q, state, norm_weight = q.contiguous(), state.contiguous(), norm_weight.contiguous()
    router = router_scale.expand(B, N, H, V)  # stride 0 where it broadcasts: nothing is copied
    out = torch.empty(B, N, H, V, dtype=q.dtype, device=q.device)  # [B, N, H, V]

    def grid(meta):
        return (triton.cdiv(N, meta["BN"]), B * H)

    with torch.no_grad(), (torch.cuda.device(q.device) if q.is_cuda else nullcontext()):
        _memory_readout_kernel[grid](
            q, state, gate, norm_weight, router, out, N, H, K, V, resolve_scale(scale, K), float(eps),
            *q.stride()[:3], *gate.stride(), *router.stride(),
            BK=block_dim(K), BV=block_dim(V), PRECISION=dot_precision(q, gate),
        )
    return out
