"""Token-by-token gated delta rule: the ground truth the chunk form and any kernel are tested against.

Per token t and head, with state h [K, V]:

    h   = exp(g_t) * h
    v'  = beta_t * (v_t - h^T k_t)
    h   = h + outer(k_t, v')
    o_t = h^T (q_t * scale)

q and k are used as given (callers L2-normalise them).
"""

from __future__ import annotations

import torch

from .._checks import check_gated_delta_rule_inputs, compute_dtype, resolve_scale


def naive_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule, one token at a time, fp32 math (fp64 if any input is fp64).

    Args:
        q, k: [B, T, H, K] queries and keys.
        v: [B, T, H, V] values.
        g: [B, T, H] log decay (<= 0).
        beta: [B, T, H] write strength in [0, 1] (already sigmoided).
        scale: query scale, default K ** -0.5.
        initial_state: [B, H, K, V] fp32/fp64, or None for zeros.
        output_final_state: return the state after the last token.

    Returns:
        o [B, T, H, V] in v's dtype, and the final state [B, H, K, V] in fp32 (fp64 for fp64 inputs) or None.
    """
    check_gated_delta_rule_inputs(q, k, v, g, beta, scale, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    dtype = compute_dtype(q, k, v, g, beta, initial_state)

    qf, kf, vf, gf, bf = (x.to(dtype) for x in (q, k, v, g, beta))
    if initial_state is None:
        h = torch.zeros(B, H, K, V, dtype=dtype, device=q.device)  # [B, H, K, V]
    else:
        h = initial_state.to(dtype).clone()  # [B, H, K, V]; never alias the caller's tensor

    outputs = []
    for t in range(T):
        q_t = qf[:, t] * scale  # [B, H, K]
        k_t = kf[:, t]  # [B, H, K]
        h = h * gf[:, t].exp()[:, :, None, None]
        v_pred = torch.einsum("bhk,bhkv->bhv", k_t, h)  # [B, H, V]
        v_new = bf[:, t, :, None] * (vf[:, t] - v_pred)  # [B, H, V]
        h = h + k_t[:, :, :, None] * v_new[:, :, None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_t, h))  # [B, H, V]

    if T == 0:
        o = torch.zeros(B, 0, H, V, dtype=dtype, device=q.device)  # [B, 0, H, V]
    else:
        o = torch.stack(outputs, dim=1)  # [B, T, H, V]
    return o.to(v.dtype), (h if output_final_state else None)
