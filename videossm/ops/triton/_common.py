"""Shared pieces of the Triton backend: interpreter detection, dot precision, launch checks."""

from __future__ import annotations

import os

import torch
import triton

# TRITON_INTERPRET=1 runs the kernels in numpy on CPU tensors (tests). Triton reads it when a kernel is
# decorated, so it must be set before this package is imported; we read it once, at the same moment.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

MAX_HEAD_DIM = 256  # K and V above this would not fit one program's registers (the 1.3B model uses 128)


def block_dim(n: int) -> int:
    """Power-of-two tile covering n, at least 16 (tl.dot's minimum on GPUs)."""
    return max(16, triton.next_power_of_2(n))


def dot_precision(*tensors: torch.Tensor) -> str:
    """'ieee' fp32 dots for fp32 inputs (exact as the reference), 'tf32' for 16-bit inputs, whose 8-bit
    mantissas tf32's 10 bits already cover. Accumulation is fp32 either way."""
    return "ieee" if all(t.dtype == torch.float32 for t in tensors) else "tf32"


def check_launch_device(op: str, x: torch.Tensor) -> None:
    if x.device.type == "cuda" or (INTERPRET and x.device.type == "cpu"):
        return
    raise ValueError(
        f"videossm.ops.triton.{op} runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1); got "
        f"{x.device} with TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}. Use videossm.ops.{op}, "
        f"which dispatches to the PyTorch reference off CUDA."
    )


def fits(K: int, V: int) -> bool:
    return K <= MAX_HEAD_DIM and V <= MAX_HEAD_DIM


def autotune_configs(configs: list[triton.Config]) -> list[triton.Config]:
    """All configs on a GPU; only the first under the interpreter (timing numpy is meaningless and slow)."""
    return configs[:1] if INTERPRET else configs
