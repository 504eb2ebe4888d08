"""Input checks shared by every backend of `videossm.ops`.

Shape and dtype checks only: they never read tensor values, so they cost no device synchronisation.
"""

from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
STATE_DTYPES = (torch.float32, torch.float64)


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _require_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    return x


def _require_float(name: str, x: torch.Tensor, accepted: tuple[torch.dtype, ...] = FLOAT_DTYPES) -> None:
    if x.dtype not in accepted:
        names = ", ".join(str(d) for d in accepted)
        raise TypeError(f"{name} must have one of the dtypes ({names}); got {x.dtype}")


def _require_same_device(ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, x in others.items():
        if x is not None and x.device != ref.device:
            raise ValueError(
                f"{name} is on {x.device} but {ref_name} is on {ref.device}; all inputs must share a device"
            )


def resolve_scale(scale: float | None, head_dim: int) -> float:
    """`scale` if given (checked finite and > 0), else `head_dim ** -0.5`."""
    if scale is None:
        return head_dim**-0.5
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float in (0, inf) or None; got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a float in (0, inf) or None; got {scale}")
    return float(scale)


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """Internal math dtype: fp64 when any input is fp64 (gradient checks), else fp32."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def check_gated_delta_rule_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
) -> None:
    """Raise a TypeError/ValueError naming the first input whose shape, dtype or device is wrong."""
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta)):
        _require_tensor(name, x)
        _require_float(name, x)
    if q.dim() != 4:
        raise ValueError(f"q must be [B,T,H,K] (4 dims); got shape {_shape(q)}")
    B, T, H, K = q.shape
    if K < 1:
        raise ValueError(f"q must be [B,T,H,K] with K >= 1; got shape {_shape(q)}")
    if k.shape != q.shape:
        raise ValueError(f"k must be [B,T,H,K] with the same B,T,H,K as q {_shape(q)}; got {_shape(k)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3] or v.shape[3] < 1:
        raise ValueError(f"v must be [B,T,H,V] with the same B,T,H as q {_shape(q)} and V >= 1; got {_shape(v)}")
    if g.shape != q.shape[:3]:
        raise ValueError(f"g must be [B,T,H] = {(B, T, H)} (log decay per token and head); got {_shape(g)}")
    if beta.shape != q.shape[:3]:
        raise ValueError(f"beta must be [B,T,H] = {(B, T, H)} (sigmoided write strength); got {_shape(beta)}")
    V = v.shape[3]
    if initial_state is not None:
        _require_tensor("initial_state", initial_state)
        _require_float("initial_state", initial_state, STATE_DTYPES)
        if initial_state.shape != (B, H, K, V):
            raise ValueError(f"initial_state must be [B,H,K,V] = {(B, H, K, V)}; got {_shape(initial_state)}")
    _require_same_device("q", q, k=k, v=v, g=g, beta=beta, initial_state=initial_state)
    resolve_scale(scale, K)


def check_memory_readout_inputs(
    q: torch.Tensor,
    state: torch.Tensor,
    gate: torch.Tensor,
    norm_weight: torch.Tensor,
    router_scale: torch.Tensor,
    scale: float | None,
    eps: float,
) -> None:
    """Raise a TypeError/ValueError naming the first input whose shape, dtype or device is wrong."""
    for name, x in (("q", q), ("state", state), ("gate", gate), ("norm_weight", norm_weight)):
        _require_tensor(name, x)
        _require_float(name, x)
    _require_tensor("router_scale", router_scale)
    _require_float("router_scale", router_scale)
    _require_float("state", state, STATE_DTYPES)
    if q.dim() != 4:
        raise ValueError(f"q must be [B,N,H,K] (4 dims); got shape {_shape(q)}")
    B, N, H, K = q.shape
    if K < 1:
        raise ValueError(f"q must be [B,N,H,K] with K >= 1; got shape {_shape(q)}")
    if state.dim() != 4 or state.shape[:3] != (B, H, K) or state.shape[3] < 1:
        raise ValueError(f"state must be [B,H,K,V] with B,H,K = {(B, H, K)} from q and V >= 1; got {_shape(state)}")
    V = state.shape[3]
    if gate.shape != (B, N, H, V):
        raise ValueError(f"gate must be [B,N,H,V] = {(B, N, H, V)}; got {_shape(gate)}")
    if norm_weight.shape != (V,):
        raise ValueError(f"norm_weight must be [V] = {(V,)}; got {_shape(norm_weight)}")
    try:
        broadcast = torch.broadcast_shapes(router_scale.shape, gate.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != gate.shape:
        raise ValueError(
            f"router_scale must broadcast to [B,N,H,V] = {(B, N, H, V)} (e.g. [B,N,1,1]); got {_shape(router_scale)}"
        )
    _require_same_device("q", q, state=state, gate=gate, norm_weight=norm_weight, router_scale=router_scale)
    resolve_scale(scale, K)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a float in (0, inf); got {eps!r}")
