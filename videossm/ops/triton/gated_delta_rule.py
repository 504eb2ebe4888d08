"""Chunked gated delta rule forward in Triton (inference: no backward).

Same math as the PyTorch reference `videossm.ops.gated_delta_rule.chunk` (read its docstring first), in two
kernels:

1. `_chunk_wy_kernel`, one program per (chunk, batch*head), all in parallel. For a chunk of BT tokens with
   cumulative log decay G (within the chunk):
       A    = strict_lower(beta_i exp(G_i - G_j) k_i . k_j)                     [BT, BT]
       Ainv = (I + A)^-1, by forward substitution (row i = e_i - A_i Ainv)      [BT, BT]
       w    = Ainv (beta exp(G) k)                                              [BT, K]
       u0   = Ainv (beta v)                                                     [BT, V]
   Stores w, u0 and G in fp32 scratch buffers.
2. `_chunk_state_kernel`, one program per (V tile, batch*head), walking the chunks in order with the state
   tile h [K, BV] in registers (fp32):
       u = u0 - w h                           pseudo-values given the incoming state
       o = scale * ((q exp(G)) h + lower_incl(q k^T exp(G_i - G_j)) u)   (only when outputs are wanted)
       h = exp(G_last) h + (k exp(G_last - G))^T u

The memory update on eviction needs only the final state (`gated_delta_rule_update`): the second kernel then
skips q, the intra-chunk attention and the output store. Exponents are <= 0 for valid input (g <= 0) and the
upper triangle is masked to -inf before exp, as in the reference.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
import triton
import triton.language as tl

from .._checks import check_gated_delta_rule_inputs, resolve_scale
from ..gated_delta_rule import chunk_gated_delta_rule
from ._common import autotune_configs, block_dim, check_launch_device, dot_precision, fits

logger = logging.getLogger(__name__)

CHUNK = 64  # tokens per chunk (BT); the forward substitution is sequential over its rows


_WY_CONFIGS = [triton.Config({}, num_warps=nw, num_stages=ns) for nw in (4, 8, 2) for ns in (1, 2)]


@triton.autotune(configs=autotune_configs(_WY_CONFIGS), key=["K", "V", "PRECISION"], cache_results=True)
@triton.jit
def _chunk_wy_kernel(
    k_ptr, v_ptr, g_ptr, beta_ptr,  # [B, T, H, K], [B, T, H, V], [B, T, H], [B, T, H]
    w_ptr, u_ptr, gcum_ptr,  # fp32 scratch: [B, H, T, K], [B, H, T, V], [B, H, T]
    T, H, K, V,
    s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_gb, s_gt, s_gh, s_bb, s_bt, s_bh,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    idx = tl.arange(0, BT)
    rows = i_t * BT + idx
    row_ok = rows < T
    offs_k = tl.arange(0, BK)

    k = tl.load(k_ptr + i_b * s_kb + rows[:, None] * s_kt + i_h * s_kh + offs_k[None, :],
                mask=row_ok[:, None] & (offs_k[None, :] < K), other=0.0).to(tl.float32)  # [BT, BK]
    g = tl.load(g_ptr + i_b * s_gb + rows * s_gt + i_h * s_gh, mask=row_ok, other=0.0).to(tl.float32)  # [BT]
    beta = tl.load(beta_ptr + i_b * s_bb + rows * s_bt + i_h * s_bh, mask=row_ok, other=0.0).to(tl.float32)
    G = tl.cumsum(g, axis=0)  # [BT]; flat over padding (g = 0 there)

    strict = idx[:, None] > idx[None, :]
    decay = tl.exp(tl.where(strict, G[:, None] - G[None, :], float("-inf")))  # [BT, BT], 0 on/above diagonal
    A = tl.dot(k, tl.trans(k), input_precision=PRECISION) * decay * beta[:, None]  # [BT, BT] strictly lower

    # (I + A)^-1 row by row: rows above i are final, row i is still e_i, A_i is zero from column i on.
    Ainv = (idx[:, None] == idx[None, :]).to(tl.float32)  # [BT, BT]
    num_rows = tl.minimum(T - i_t * BT, BT)
    for i in range(1, num_rows):
        is_row = idx[:, None] == i
        a_i = tl.sum(tl.where(is_row, A, 0.0), axis=0)  # [BT] row i of A
        Ainv = tl.where(is_row, Ainv - tl.sum(a_i[:, None] * Ainv, axis=0)[None, :], Ainv)

    base = i_bh * T + rows  # row index into the [B*H, T, *] scratch
    w = tl.dot(Ainv, k * (beta * tl.exp(G))[:, None], input_precision=PRECISION)  # [BT, BK]
    tl.store(w_ptr + base[:, None] * K + offs_k[None, :], w, mask=row_ok[:, None] & (offs_k[None, :] < K))
    for i_v in range(0, tl.cdiv(V, BV)):
        offs_v = i_v * BV + tl.arange(0, BV)
        mask_v = row_ok[:, None] & (offs_v[None, :] < V)
        v = tl.load(v_ptr + i_b * s_vb + rows[:, None] * s_vt + i_h * s_vh + offs_v[None, :],
                    mask=mask_v, other=0.0).to(tl.float32)  # [BT, BV]
        u0 = tl.dot(Ainv, v * beta[:, None], input_precision=PRECISION)  # [BT, BV]
        tl.store(u_ptr + base[:, None] * V + offs_v[None, :], u0, mask=mask_v)
    tl.store(gcum_ptr + base, G, mask=row_ok)


_STATE_CONFIGS = [
    triton.Config({"BV": bv}, num_warps=nw, num_stages=ns)
    for bv in (32, 16, 64) for nw in (4, 2, 8) for ns in (2, 1, 3)
]


@triton.autotune(configs=autotune_configs(_STATE_CONFIGS), key=["K", "V", "OUTPUT", "PRECISION"], cache_results=True)
@triton.jit
def _chunk_state_kernel(
    q_ptr, k_ptr, w_ptr, u_ptr, gcum_ptr, h0_ptr, o_ptr, ht_ptr,
    T, H, K, V, scale,
    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_ob, s_ot, s_oh,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
    HAS_INITIAL: tl.constexpr, OUTPUT: tl.constexpr, STORE_FINAL: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    idx = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mask_kv = (offs_k[:, None] < K) & (offs_v[None, :] < V)
    state_offs = i_bh * K * V + offs_k[:, None] * V + offs_v[None, :]  # into [B, H, K, V]

    if HAS_INITIAL:
        h = tl.load(h0_ptr + state_offs, mask=mask_kv, other=0.0).to(tl.float32)  # [BK, BV]
    else:
        h = tl.zeros([BK, BV], dtype=tl.float32)
    incl = idx[:, None] >= idx[None, :]

    for i_t in range(0, tl.cdiv(T, BT)):
        rows = i_t * BT + idx
        row_ok = rows < T
        base = i_bh * T + rows
        mask_k = row_ok[:, None] & (offs_k[None, :] < K)
        mask_v = row_ok[:, None] & (offs_v[None, :] < V)
        w = tl.load(w_ptr + base[:, None] * K + offs_k[None, :], mask=mask_k, other=0.0)  # [BT, BK]
        u = tl.load(u_ptr + base[:, None] * V + offs_v[None, :], mask=mask_v, other=0.0)  # [BT, BV]
        k = tl.load(k_ptr + i_b * s_kb + rows[:, None] * s_kt + i_h * s_kh + offs_k[None, :],
                    mask=mask_k, other=0.0).to(tl.float32)  # [BT, BK]
        G_last = tl.load(gcum_ptr + i_bh * T + tl.minimum(T, i_t * BT + BT) - 1)
        G = tl.load(gcum_ptr + base, mask=row_ok, other=0.0)  # [BT]
        G = tl.where(row_ok, G, G_last)  # flat over padding, as in the first kernel: every exponent stays <= 0

        u = u - tl.dot(w, h, input_precision=PRECISION)  # [BT, BV] given the incoming state
        if OUTPUT:
            q = tl.load(q_ptr + i_b * s_qb + rows[:, None] * s_qt + i_h * s_qh + offs_k[None, :],
                        mask=mask_k, other=0.0).to(tl.float32) * scale  # [BT, BK]
            decay = tl.exp(tl.where(incl, G[:, None] - G[None, :], float("-inf")))  # [BT, BT]
            qk = tl.dot(q, tl.trans(k), input_precision=PRECISION) * decay  # [BT, BT] lower incl.
            o = tl.dot(q * tl.exp(G)[:, None], h, input_precision=PRECISION)
            o += tl.dot(qk, u, input_precision=PRECISION)  # [BT, BV]
            tl.store(o_ptr + i_b * s_ob + rows[:, None] * s_ot + i_h * s_oh + offs_v[None, :],
                     o.to(o_ptr.dtype.element_ty), mask=mask_v)
        k_decay = k * tl.exp(G_last - G)[:, None]  # [BT, BK]; padded rows have k = 0
        h = h * tl.exp(G_last) + tl.dot(tl.trans(k_decay), u, input_precision=PRECISION)  # [BK, BV]

    if STORE_FINAL:
        tl.store(ht_ptr + state_offs, h, mask=mask_kv)


def _fallback_reason(q: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor, *others: torch.Tensor | None) -> str | None:
    K, V = k.shape[-1], v.shape[-1]
    if any(t is not None and t.dtype == torch.float64 for t in (q, k, v, *others)):
        return "fp64 inputs (the kernels compute in fp32)"
    if not fits(K, V):
        return f"K={K}, V={V} (the kernels take K, V <= 256)"
    return None


def _forward(
    q: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, scale: float,
    initial_state: torch.Tensor | None, output_final_state: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Launch both kernels; q None means state only (no outputs)."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    k, v = k.contiguous(), v.contiguous()  # last dim must be unit-stride; other strides are passed
    q = None if q is None else q.contiguous()
    dev = k.device
    w = torch.empty(B, H, T, K, dtype=torch.float32, device=dev)  # [B, H, T, K]
    u0 = torch.empty(B, H, T, V, dtype=torch.float32, device=dev)  # [B, H, T, V]
    gcum = torch.empty(B, H, T, dtype=torch.float32, device=dev)  # [B, H, T]
    precision = dot_precision(k, v) if q is None else dot_precision(q, k, v)
    NT = triton.cdiv(T, CHUNK)
    BK = block_dim(K)
    _chunk_wy_kernel[(NT, B * H)](
        k, v, g, beta, w, u0, gcum, T, H, K, V,
        *k.stride()[:3], *v.stride()[:3], *g.stride(), *beta.stride(),
        BT=CHUNK, BK=BK, BV=min(block_dim(V), 64), PRECISION=precision,
    )
    o = None if q is None else torch.empty(B, T, H, V, dtype=v.dtype, device=dev)  # [B, T, H, V]
    final = torch.empty(B, H, K, V, dtype=torch.float32, device=dev) if output_final_state else None  # [B, H, K, V]
    h0 = None if initial_state is None else initial_state.contiguous()
    q_arg = k if q is None else q
    o_arg = v if o is None else o

    def grid(meta):
        return (triton.cdiv(V, meta["BV"]), B * H)

    _chunk_state_kernel[grid](
        q_arg, k, w, u0, gcum, k if h0 is None else h0, o_arg, w if final is None else final,
        T, H, K, V, float(scale), *q_arg.stride()[:3], *k.stride()[:3], *o_arg.stride()[:3],
        BT=CHUNK, BK=BK, PRECISION=precision,
        HAS_INITIAL=h0 is not None, OUTPUT=q is not None, STORE_FINAL=final is not None,
    )
    return o, final


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triton chunked gated delta rule; the contract of `videossm.ops.gated_delta_rule` (no autograd).

    q, k [B, T, H, K]; v [B, T, H, V]; g, beta [B, T, H]; initial_state [B, H, K, V] fp32 or None.
    Returns o [B, T, H, V] in v's dtype and the final fp32 state (None unless output_final_state).
    fp64 inputs and K or V above 256 run the PyTorch reference instead.
    """
    check_gated_delta_rule_inputs(q, k, v, g, beta, scale, initial_state)
    check_launch_device("gated_delta_rule", q)
    reason = _fallback_reason(q, k, v, g, beta, initial_state)
    if reason is not None or q.shape[1] == 0:
        if reason is not None:
            logger.debug("triton gated_delta_rule: reference for %s", reason)
        return chunk_gated_delta_rule(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                                      output_final_state=output_final_state)
    with torch.no_grad(), (torch.cuda.device(q.device) if q.is_cuda else nullcontext()):
        o, final = _forward(q, k, v, g, beta, resolve_scale(scale, q.shape[-1]), initial_state, output_final_state)
    return o, final


def gated_delta_rule_update(
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """The final state only (what eviction needs): no queries, no outputs. Returns [B, H, K, V] fp32."""
    check_gated_delta_rule_inputs(k, k, v, g, beta, None, initial_state)
    check_launch_device("gated_delta_rule_update", k)
    reason = _fallback_reason(None, k, v, g, beta, initial_state)
    if reason is not None or k.shape[1] == 0:
        return chunk_gated_delta_rule(k, k, v, g, beta, initial_state=initial_state, output_final_state=True)[1]
    with torch.no_grad(), (torch.cuda.device(k.device) if k.is_cuda else nullcontext()):
        _, final = _forward(None, k, v, g, beta, 1.0, initial_state, True)
    return final

