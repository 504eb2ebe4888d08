"""Per-stream KV cache with synchronized gate caching and the hybrid memory state.

Per layer the cache keeps, for the sink frames and the most recent frames of the local window:
  key    [B, N, H, K]  after qk-norm, BEFORE RoPE (rotated when a block is attended, so positions
                        can be window-relative and the stream can run for any length)
  value  [B, N, H, V]
  beta   [B, N, H]     the token's write strength, computed from the same hidden state as its K/V
  alpha  [B, N, H]     the token's log decay, likewise  (beta/alpha only in `hybrid` mode)
and the memory state M [B, H, K, V] (fp32), which absorbs every token that leaves the window.
N counts tokens frame-major. Sizes are fixed once the window is full: nothing grows with length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ConfigError, ModelConfig, StreamConfig
from .memory import HybridMemory
from .rope import rope_cos_sin


@dataclass
class CachedTokens:
    key: torch.Tensor  # [B, N, H, K]
    value: torch.Tensor  # [B, N, H, V]
    beta: torch.Tensor | None = None  # [B, N, H]
    alpha: torch.Tensor | None = None  # [B, N, H]

    @property
    def num_tokens(self) -> int:
        return self.key.shape[1]

    def split(self, n: int) -> tuple["CachedTokens", "CachedTokens"]:
        """First n tokens and the rest."""
        def cut(t, sl):
            return None if t is None else t[:, sl]
        head, tail = slice(None, n), slice(n, None)
        return (CachedTokens(*(cut(t, head) for t in self.tensors())),
                CachedTokens(*(cut(t, tail) for t in self.tensors())))

    def tensors(self) -> tuple:
        return self.key, self.value, self.beta, self.alpha

    @staticmethod
    def cat(a: "CachedTokens | None", b: "CachedTokens | None") -> "CachedTokens | None":
        if a is None or a.num_tokens == 0:
            return b
        if b is None or b.num_tokens == 0:
            return a
        joined = [None if x is None else torch.cat((x, y), dim=1) for x, y in zip(a.tensors(), b.tensors())]
        return CachedTokens(*joined)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors() if t is not None)


@dataclass
class BlockContext:
    """What every layer needs to attend one block: shared across layers and passes of the block."""

    frame_ids: torch.Tensor  # [F] absolute latent frame indices of the block
    query_rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin [1, F*n, 1, K/2]
    context_rope: tuple[torch.Tensor, torch.Tensor] | None  # for the cached tokens, or None when empty
    version: int
    write: bool = False  # this pass writes the block's K/V and gates (the clean pass)
    write_grad: bool = False  # the written K/V stay in the autograd graph (training through the cache)


class LayerCache:
    def __init__(self) -> None:
        self.sink: CachedTokens | None = None
        self.recent: CachedTokens | None = None
        self.memory_state: torch.Tensor | None = None  # [B, H, K, V] fp32
        self.staged: CachedTokens | None = None
        self._context: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def context(self, block: BlockContext, rotate) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Rotated keys and values of all cached tokens, computed once per block."""
        if self._context is None or self._context[0] != block.version:
            cached = CachedTokens.cat(self.sink, self.recent)
            if cached is None or block.context_rope is None:  # nothing cached (e.g. a window of one block)
                return None
            self._context = (block.version, rotate(cached.key, *block.context_rope), cached.value)
        return self._context[1], self._context[2]

    def nbytes(self) -> int:
        total = sum(c.nbytes() for c in (self.sink, self.recent) if c is not None)
        if self.memory_state is not None:
            total += self.memory_state.numel() * self.memory_state.element_size()
        return total


class KVCache:
    """Cache of one stream across all layers. Frames enter with `commit`, in time order."""

    def __init__(self, model_config: ModelConfig, stream_config: StreamConfig, batch_size: int = 1,
                 device: torch.device | str = "cpu") -> None:
        self.model_config = model_config
        self.stream_config = stream_config.validate()
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokens_per_frame = model_config.tokens_per_frame
        self.layers = [LayerCache() for _ in range(model_config.num_layers)]
        self.sink_frames: list[int] = []
        self.recent_frames: list[int] = []
        self.evicted_frames = 0
        self.version = 0
        if stream_config.uses_memory:
            h, k = model_config.num_attention_heads, model_config.attention_head_dim
            for layer in self.layers:
                layer.memory_state = torch.zeros(batch_size, h, k, k, device=self.device)  # [B, H, K, V]

    @property
    def uses_memory(self) -> bool:
        return self.stream_config.uses_memory

    @property
    def cached_frames(self) -> list[int]:
        return self.sink_frames + self.recent_frames

    def positions(self, frame_ids: list[int]) -> tuple[list[int], list[int]]:
        """RoPE positions of the cached frames and of a new block's frames."""
        cached = self.cached_frames
        if self.stream_config.rope == "absolute":
            ctx_pos, q_pos = cached, list(frame_ids)
            limit = self.model_config.rope_max_seq_len
            if q_pos and q_pos[-1] >= limit:
                raise ConfigError(
                    f"absolute RoPE reached latent frame {q_pos[-1]}, but positions must be < rope_max_seq_len="
                    f"{limit}; use rope='relative' for longer streams"
                )
        else:  # sink at fixed positions, then the window in order, then the block
            ctx_pos = list(range(len(cached)))
            q_pos = list(range(len(cached), len(cached) + len(frame_ids)))
        return ctx_pos, q_pos

    def block_context(self, frame_start: int, num_frames: int) -> BlockContext:
        frame_ids = list(range(frame_start, frame_start + num_frames))
        if self.cached_frames and frame_start <= self.cached_frames[-1]:
            raise ValueError(f"block starting at frame {frame_start} overlaps the cache (last cached frame "
                             f"{self.cached_frames[-1]}); frames must be generated in order")
        ctx_pos, q_pos = self.positions(frame_ids)
        cfg = self.model_config
        hp, wp = cfg.latent_height // cfg.patch_size[1], cfg.latent_width // cfg.patch_size[2]

        def rope(pos):
            return rope_cos_sin(torch.tensor(pos), hp, wp, cfg.attention_head_dim, cfg.rope_theta, self.device)

        return BlockContext(
            frame_ids=torch.tensor(frame_ids, device=self.device),
            query_rope=rope(q_pos),
            context_rope=rope(ctx_pos) if ctx_pos else None,
            version=self.version,
        )

    def commit(self, frame_ids: list[int], evict: bool = True) -> None:
        """Move every layer's staged block into the sink/window; evict what falls out of the window
        into the memory state (oldest first)."""
        sink_target = self.stream_config.effective_sink_frames
        to_sink = max(0, min(len(frame_ids), sink_target - len(self.sink_frames)))
        n = self.tokens_per_frame
        limit = self.stream_config.recent_frames
        num_recent = len(self.recent_frames) + len(frame_ids) - to_sink
        num_evict = max(0, num_recent - limit) if (evict and limit is not None) else 0
        for layer in self.layers:
            if layer.staged is None:
                raise RuntimeError("commit() without a staged block: run a pass with write=True first")
            sink_part, recent_part = layer.staged.split(to_sink * n)
            layer.sink = CachedTokens.cat(layer.sink, sink_part)
            layer.recent = CachedTokens.cat(layer.recent, recent_part)
            layer.staged = None
            if num_evict:
                evicted, layer.recent = layer.recent.split(num_evict * n)
                if layer.memory_state is not None:
                    layer.memory_state = HybridMemory.update(
                        layer.memory_state, evicted.key, evicted.value, evicted.alpha, evicted.beta)
        self.sink_frames += frame_ids[:to_sink]
        self.recent_frames += frame_ids[to_sink:]
        self.recent_frames = self.recent_frames[num_evict:]
        self.evicted_frames += num_evict
        self.version += 1

    def drop_recent(self) -> list[int]:
        """Forget the window (not the sink, not the memory) before it is re-encoded; returns its frames."""
        dropped = self.recent_frames
        for layer in self.layers:
            layer.recent = None
            layer.staged = None
        self.recent_frames = []
        self.version += 1
        return dropped

    def detach_(self) -> None:
        """Cut the autograd graph of every cached tensor (gates, memory state): truncated backprop between
        training chunks."""
        def cut(tokens):
            return None if tokens is None else CachedTokens(*(None if t is None else t.detach() for t in tokens.tensors()))
        for layer in self.layers:
            layer.sink, layer.recent = cut(layer.sink), cut(layer.recent)
            if layer.memory_state is not None:
                layer.memory_state = layer.memory_state.detach()

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)
