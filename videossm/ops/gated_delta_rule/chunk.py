"""Chunk-wise gated delta rule in PyTorch (WY / UT representation).

Same function as `naive_recurrent_gated_delta_rule`, computed C tokens at a time. Within a chunk with incoming
state h0 [K, V] and cumulative log decay G_i = sum_{j<=i} g_j (G <= 0, non-increasing):

    A[i, j] = beta_i * exp(G_i - G_j) * (k_i . k_j)            for j < i (strictly lower, else 0)
    (I + A) u = beta * (v - exp(G) * (K h0))                    pseudo-values u [C, V]
    O   = scale * [ (Q * exp(G)) h0 + tril_incl(Q K^T * exp(G_i - G_j)) u ]
    h_C = exp(G_C) h0 + (K * exp(G_C - G))^T u

Because the right-hand side is linear in h0, the solve is done once for all chunks up front:
u = U0 - W h0 with U0 = (I + A)^-1 (beta v) and W = (I + A)^-1 (beta exp(G) K). The only Python loop is the
state hand-off from chunk to chunk (two small matmuls per chunk).

Every exponent is <= 0 for valid input (g <= 0): G_i - G_j is a segment sum of g (not a difference of two large
cumsums, which would cancel), and its upper triangle is masked to -inf *before* exp, so nothing overflows. Math is fp32 (fp64 if any input is fp64); the state never
leaves that precision. No in-place ops on tensors that may need grad, so autograd works (training on CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_gated_delta_rule_inputs, compute_dtype, resolve_scale


def _to_chunks(x: torch.Tensor, dtype: torch.dtype, num_chunks: int, chunk: int) -> torch.Tensor:
    """[B, T, H, *rest] -> [B, H, NT, C, *rest], zero-padded at the end of T."""
    x = x.to(dtype).movedim(1, 2)  # [B, H, T, *rest]
    pad = num_chunks * chunk - x.shape[2]
    if pad:
        x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))  # [B, H, NT*C, *rest]
    return x.reshape(x.shape[0], x.shape[1], num_chunks, chunk, *x.shape[3:])


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule, chunk-wise. Same contract as `naive_recurrent_gated_delta_rule`.

    Args:
        q, k: [B, T, H, K] queries and keys (not normalised here).
        v: [B, T, H, V] values.
        g: [B, T, H] log decay (<= 0).
        beta: [B, T, H] write strength in [0, 1] (already sigmoided).
        scale: query scale, default K ** -0.5.
        initial_state: [B, H, K, V] fp32/fp64, or None for zeros.
        output_final_state: return the state after the last token.
        chunk_size: tokens per chunk, >= 1 (capped at T). T need not be a multiple of it.

    Returns:
        o [B, T, H, V] in v's dtype, and the final state [B, H, K, V] in fp32 (fp64 for fp64 inputs) or None.
    """
    check_gated_delta_rule_inputs(q, k, v, g, beta, scale, initial_state)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    dtype = compute_dtype(q, k, v, g, beta, initial_state)
    device = q.device

    if initial_state is None:
        h = torch.zeros(B, H, K, V, dtype=dtype, device=device)  # [B, H, K, V]
    else:
        h = initial_state.to(dtype)  # [B, H, K, V]
    if T == 0:
        o = torch.zeros(B, 0, H, V, dtype=v.dtype, device=device)  # [B, 0, H, V]
        return o, (h.clone() if output_final_state else None)

    # Padding tokens have q = k = v = 0, g = 0, beta = 0: their row of A and their right-hand side are 0, so
    # u = 0 there; exp(G) stays flat past the last real token and k = 0 adds nothing to the state.
    C = min(chunk_size, T)
    NT = -(-T // C)
    qc = _to_chunks(q, dtype, NT, C) * scale  # [B, H, NT, C, K]
    kc = _to_chunks(k, dtype, NT, C)  # [B, H, NT, C, K]
    vc = _to_chunks(v, dtype, NT, C)  # [B, H, NT, C, V]
    gc = _to_chunks(g, dtype, NT, C)  # [B, H, NT, C]
    bc = _to_chunks(beta, dtype, NT, C)  # [B, H, NT, C]

    G = gc.cumsum(-1)  # [B, H, NT, C]
    idx = torch.arange(C, device=device)
    lower_incl = idx[:, None] >= idx[None, :]  # [C, C]
    lower_strict = idx[:, None] > idx[None, :]  # [C, C]
    # G_i - G_j as the segment sum of g over (j, i], summed directly rather than subtracted: two cumsums of
    # size |G| ~ C * |g| would cancel and lose ~|G| * 2^-24 absolute precision in the exponent.
    seg = gc[..., :, None].expand(*gc.shape, C).masked_fill(~lower_strict, 0.0).cumsum(dim=-2)  # [B, H, NT, C, C]
    # exp(G_i - G_j) for j <= i. Above the diagonal (where G_i - G_j > 0 could overflow) the exponent is masked
    # to -inf *before* exp, so the decay there is exactly 0: no overflow, no inf * 0 = nan, zero gradient.
    decay = seg.masked_fill(~lower_incl, float("-inf")).exp()  # [B, H, NT, C, C]

    kkt = kc @ kc.transpose(-1, -2)  # [B, H, NT, C, C]
    A = (bc[..., :, None] * kkt * decay).masked_fill(~lower_strict, 0.0)  # [B, H, NT, C, C]
    eye = torch.eye(C, dtype=dtype, device=device)  # [C, C]
    rhs = torch.cat([bc[..., None] * vc, (bc * G.exp())[..., None] * kc], dim=-1)  # [B, H, NT, C, V+K]
    sol = torch.linalg.solve_triangular(A + eye, rhs, upper=False, unitriangular=True)  # [B, H, NT, C, V+K]
    u0, w = sol.split([V, K], dim=-1)  # [B, H, NT, C, V], [B, H, NT, C, K]

    qk = (qc @ kc.transpose(-1, -2)) * decay  # [B, H, NT, C, C], lower incl.
    q_decay = qc * G.exp()[..., None]  # [B, H, NT, C, K]
    k_decay = (kc * decay[..., -1, :, None]).transpose(-1, -2)  # [B, H, NT, K, C]; exp(G_C - G_j) k_j
    h_decay = G[..., -1].exp()[..., None, None]  # [B, H, NT, 1, 1]

    outputs = []
    for n in range(NT):
        u = u0[:, :, n] - w[:, :, n] @ h  # [B, H, C, V]
        outputs.append(q_decay[:, :, n] @ h + qk[:, :, n] @ u)  # [B, H, C, V]
        h = h_decay[:, :, n] * h + k_decay[:, :, n] @ u  # [B, H, K, V]

    o = torch.stack(outputs, dim=2).reshape(B, H, NT * C, V)[:, :, :T]  # [B, H, T, V]
    o = o.transpose(1, 2).to(v.dtype)  # [B, T, H, V]
    return o, (h if output_final_state else None)
