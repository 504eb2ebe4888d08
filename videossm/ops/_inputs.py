"""Random inputs of the memory path with the dtypes the memory uses (k, v, q, gate in `dtype`; log decay g,
beta, router and the state fp32): what the warm-ups run the kernels on. Torch only, so the dispatch can
build them on any machine without importing a GPU module."""

from __future__ import annotations

from types import SimpleNamespace

import torch


def memory_path_inputs(device: torch.device, *, num_heads: int, key_dim: int, value_dim: int, evicted_tokens: int,
                       query_tokens: int, dtype: torch.dtype, batch_size: int, seed: int = 0) -> SimpleNamespace:
    B, H, K, V, T, N = batch_size, num_heads, key_dim, value_dim, evicted_tokens, query_tokens
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dt)

    return SimpleNamespace(
        k=torch.nn.functional.normalize(randn(B, T, H, K, dt=torch.float32), dim=-1).to(dtype),  # [B, T, H, K]
        v=randn(B, T, H, V),  # [B, T, H, V]
        g=-torch.rand(B, T, H, generator=gen).to(device),  # [B, T, H] fp32 log decay
        beta=torch.rand(B, T, H, generator=gen).to(device),  # [B, T, H] fp32
        initial_state=torch.zeros(B, H, K, V, device=device),  # [B, H, K, V] fp32
        q=torch.nn.functional.normalize(randn(B, N, H, K, dt=torch.float32), dim=-1).to(dtype),  # [B, N, H, K]
        gate=randn(B, N, H, V),  # [B, N, H, V]
        norm_weight=torch.ones(V, device=device, dtype=dtype),  # [V]
        router=torch.rand(1, N, 1, 1, generator=gen).to(device),  # [1, N, 1, 1] fp32, as the router gives it
    )
