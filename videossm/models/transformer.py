"""VideoSSMTransformer: the causal Wan2.1 DiT with hybrid state-space memory.

Built from diffusers' Wan modules with their parameter names (`blocks.N.attn1.to_q`, `condition_embedder`,
`scale_shift_table`, ...), so Wan2.1 / Self-Forcing / LongLive weights load by key map; the memory adds
only `blocks.N.memory.*`. One class for every scale; presets live in videossm.config.

Two ways to run it:
  * `forward(latents, timestep, text)` without a cache: bidirectional attention over all given frames
    (Wan2.1 itself; the teacher). Equals diffusers' WanTransformer3DModel on the same weights.
  * `forward(..., cache=KVCache, frame_start=f)`: one causal block. Queries are the block's tokens;
    keys are the cached sink + window (rotated at window-relative positions) plus the block itself;
    in `hybrid` mode the memory state is read and fused by the router before the output projection.
    With `write_cache=True` (the clean pass) the block's K/V and gates are staged for `cache.commit`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanTimeTextImageEmbedding, WanTransformerBlock
from torch import nn

from ..config import ModelConfig
from .cache import BlockContext, CachedTokens, KVCache, LayerCache
from .memory import HybridMemory
from .rope import apply_rope, rope_cos_sin


class VideoSSMBlock(WanTransformerBlock):
    """A Wan block whose self-attention runs over [cache + block] and fuses the memory read-out."""

    def __init__(self, config: ModelConfig):
        super().__init__(config.inner_dim, config.ffn_dim, config.num_attention_heads, "rms_norm_across_heads",
                         config.cross_attn_norm, config.eps)
        self.memory = HybridMemory(config.inner_dim, config.num_attention_heads, config.attention_head_dim,
                                   config.eps, config.router_weight_init, config.router_bias_init)
        self.router_horizon_frames = config.router_horizon_frames

    def self_attention(self, hidden_states: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                       block: BlockContext | None, layer: LayerCache | None) -> torch.Tensor:
        attn = self.attn1
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(-1, (attn.heads, -1))  # [B, N, H, K]
        key = attn.norm_k(attn.to_k(hidden_states)).unflatten(-1, (attn.heads, -1))  # [B, N, H, K]
        value = attn.to_v(hidden_states).unflatten(-1, (attn.heads, -1))  # [B, N, H, V]
        query_rot, key_rot = apply_rope(query, *rope), apply_rope(key, *rope)
        context = layer.context(block, apply_rope) if layer is not None else None
        if context is not None:
            key_rot, value_all = torch.cat((context[0], key_rot), 1), torch.cat((context[1], value), 1)
        else:
            value_all = value
        out = F.scaled_dot_product_attention(
            query_rot.transpose(1, 2), key_rot.transpose(1, 2), value_all.transpose(1, 2)
        ).transpose(1, 2)  # [B, N, H, V]  H_local
        if layer is not None and layer.memory_state is not None:
            frames_gamma = self.memory.router_gamma(block.frame_ids, self.router_horizon_frames)  # [F]
            tokens_per_frame = hidden_states.shape[1] // frames_gamma.shape[0]
            gamma = frames_gamma.repeat_interleave(tokens_per_frame)[None, :, None, None]  # [1, N, 1, 1]
            out = out + self.memory.read(hidden_states, query, layer.memory_state, gamma).type_as(out)
        if layer is not None and block.write:
            beta, alpha = self.memory.gates(hidden_states) if layer.memory_state is not None else (None, None)
            if not block.write_grad:
                key, value = key.detach(), value.detach()
            layer.staged = CachedTokens(key, value, beta, alpha)
        return attn.to_out[1](attn.to_out[0](out.flatten(2)))

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                timestep_proj: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                block: BlockContext | None = None, layer: LayerCache | None = None) -> torch.Tensor:
        """hidden_states [B, F, n, D]; timestep_proj [B, F, 6, D] (one noise level per frame)."""
        batch, frames, tokens, dim = hidden_states.shape
        shift, scale, gate, c_shift, c_scale, c_gate = (
            self.scale_shift_table.unsqueeze(0) + timestep_proj.float()
        ).chunk(6, dim=2)  # each [B, F, 1, D]

        norm_hidden = (self.norm1(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        attn_out = self.self_attention(norm_hidden.flatten(1, 2), rope, block, layer).unflatten(1, (frames, tokens))
        hidden_states = (hidden_states.float() + attn_out * gate).type_as(hidden_states)

        norm_hidden = self.norm2(hidden_states.float()).type_as(hidden_states)
        cross_out = self.attn2(norm_hidden.flatten(1, 2), encoder_hidden_states, None, None)
        hidden_states = hidden_states + cross_out.unflatten(1, (frames, tokens))

        norm_hidden = (self.norm3(hidden_states.float()) * (1 + c_scale) + c_shift).type_as(hidden_states)
        ff_out = self.ffn(norm_hidden)
        return (hidden_states.float() + ff_out.float() * c_gate).type_as(hidden_states)


class VideoSSMTransformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        inner = config.inner_dim
        self.patch_embedding = nn.Conv3d(config.in_channels, inner, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=inner, time_freq_dim=config.freq_dim, time_proj_dim=inner * 6, text_embed_dim=config.text_dim)
        self.blocks = nn.ModuleList(VideoSSMBlock(config) for _ in range(config.num_layers))
        self.norm_out = FP32LayerNorm(inner, config.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(inner, config.out_channels * math.prod(config.patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, inner) / inner**0.5)

    @property
    def device(self) -> torch.device:
        return self.proj_out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.proj_out.weight.dtype

    def memory_parameters(self) -> list[nn.Parameter]:
        return [p for block in self.blocks for p in block.memory.parameters()]

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                cache: KVCache | None = None, frame_start: int = 0, write_cache: bool = False,
                write_grad: bool = False) -> torch.Tensor:
        """latents [B, C, F, H, W]; timestep [B, F] (or [B]) in [0, 1000]; encoder_hidden_states
        [B, L, text_dim]. Returns the flow-matching velocity (noise - x0) [B, C, F, H, W].
        write_cache: stage this block's K/V (and gates) for `cache.commit`; the K/V are detached unless
        write_grad, which keeps them in the graph so later blocks' losses train the pass that wrote them."""
        cfg = self.config
        batch, _, frames, height, width = latents.shape
        hp, wp = height // cfg.patch_size[1], width // cfg.patch_size[2]
        if timestep.ndim == 1:
            timestep = timestep[:, None].expand(batch, frames)

        hidden_states = self.patch_embedding(latents.to(self.dtype))  # [B, D, F, hp, wp]
        hidden_states = hidden_states.permute(0, 2, 3, 4, 1).reshape(batch, frames, hp * wp, -1)  # [B, F, n, D]
        temb, timestep_proj, text_states, _ = self.condition_embedder(
            timestep.flatten(), encoder_hidden_states.to(self.dtype), timestep_seq_len=frames)
        timestep_proj = timestep_proj.unflatten(2, (6, -1))  # [B, F, 6, D]

        if cache is None:  # bidirectional over the given frames, absolute positions
            block, layers = None, [None] * len(self.blocks)
            rope = rope_cos_sin(torch.arange(frames), hp, wp, cfg.attention_head_dim, cfg.rope_theta, latents.device)
        else:
            block = cache.block_context(frame_start, frames)
            block.write, block.write_grad = write_cache, write_grad
            layers, rope = cache.layers, block.query_rope
        for transformer_block, layer in zip(self.blocks, layers):
            hidden_states = transformer_block(hidden_states, text_states, timestep_proj, rope, block, layer)

        shift, scale = (self.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)  # [B, F, 1, D]
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = self.proj_out(hidden_states)  # [B, F, n, C*ph*pw]
        p_t, p_h, p_w = cfg.patch_size
        hidden_states = hidden_states.reshape(batch, frames, hp, wp, p_t, p_h, p_w, -1)
        return hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(batch, -1, frames, height, width)
