"""Gated delta rule: naive token-by-token reference and chunk-wise (WY/UT) PyTorch form, same signature."""

from .chunk import chunk_gated_delta_rule
from .naive import naive_recurrent_gated_delta_rule

__all__ = ["chunk_gated_delta_rule", "naive_recurrent_gated_delta_rule"]
