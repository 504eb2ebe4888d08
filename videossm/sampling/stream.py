"""The block loop: denoise a block in a few steps, write it into the cache, evict into the memory.

For block b (frames f0 .. f0+B-1):
  1. x = noise; for each sigma: v = model(x, sigma, cache); x0 = x - sigma v; re-noise x0 to the next sigma.
  2. Clean pass at t = context_timestep (0): the block's K/V and gates are staged in every layer.
  3. commit: the block joins the sink / window; frames leaving the window update the memory state M.
On a prompt change, `recache` rebuilds the window's K/V and gates from its clean latents with the new
prompt (LongLive's KV re-cache), keeping the sink and M.

All state of one stream lives in `StreamState`; the generator object itself is stateless and shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import StreamConfig
from ..models.cache import KVCache
from ..models.transformer import VideoSSMTransformer
from ..models.vae import DecoderState
from .scheduler import denoising_sigmas, sigma_to_timestep


@dataclass
class StreamState:
    """Everything one stream carries across blocks."""

    cache: KVCache
    generator: torch.Generator
    decoder: DecoderState | None = None
    frame_index: int = 0  # next latent frame to generate
    prompt: str | None = None
    prompt_embeds: torch.Tensor | None = None  # [B, L, text_dim]
    window_latents: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> [B, C, h, w], cached window
    trace: list | None = None  # when a list, every model call is recorded (tests, debugging)


class StreamingGenerator:
    def __init__(self, transformer: VideoSSMTransformer, stream_config: StreamConfig):
        self.transformer = transformer
        self.stream_config = stream_config.validate()
        self.sigmas = denoising_sigmas(stream_config.num_steps, stream_config.shift)

    @property
    def model_config(self):
        return self.transformer.config

    def new_state(self, seed: int, batch_size: int = 1, decoder: DecoderState | None = None) -> StreamState:
        device = self.transformer.device
        generator = torch.Generator("cpu").manual_seed(seed)  # CPU noise: same video on every device
        cache = KVCache(self.model_config, self.stream_config, batch_size, device)
        return StreamState(cache=cache, generator=generator, decoder=decoder)

    def _noise(self, state: StreamState, shape: tuple) -> torch.Tensor:
        return torch.randn(shape, generator=state.generator).to(self.transformer.device)

    def _call(self, state: StreamState, x: torch.Tensor, timestep: float, frame_start: int, write: bool):
        batch, _, frames = x.shape[:3]
        t = torch.full((batch, frames), timestep, device=x.device)
        v = self.transformer(x, t, state.prompt_embeds, cache=state.cache, frame_start=frame_start,
                             write_cache=write)
        if state.trace is not None:
            state.trace.append(dict(block=frame_start // self.stream_config.block_frames, frame_start=frame_start, timestep=timestep,
                                    write=write, x=x.detach().cpu(), v=v.detach().float().cpu()))
        return v

    def set_prompt(self, state: StreamState, prompt: str, prompt_embeds: torch.Tensor) -> bool:
        """Switch the conditioning; re-cache the window if a block was already generated. True if re-cached."""
        changed = state.prompt is not None and prompt != state.prompt
        state.prompt, state.prompt_embeds = prompt, prompt_embeds
        if changed and state.cache.recent_frames:
            self.recache(state)
            return True
        return False

    @torch.no_grad()
    def recache(self, state: StreamState) -> None:
        """Re-encode the window's clean latents with the current prompt, block by block (block-causal)."""
        frames = state.cache.drop_recent()
        block = self.stream_config.block_frames
        groups: list[list[int]] = []
        for f in frames:
            if groups and f // block == groups[-1][-1] // block:
                groups[-1].append(f)
            else:
                groups.append([f])
        for group in groups:
            latents = torch.stack([state.window_latents[f] for f in group], dim=2)  # [B, C, F, h, w]
            self._call(state, latents, self.stream_config.context_timestep, group[0], write=True)
            state.cache.commit(group, evict=False)

    @torch.no_grad()
    def generate_block(self, state: StreamState) -> torch.Tensor:
        """Generate the next block; returns its clean latents [B, C, F, h, w] (float32)."""
        x0 = self.denoise_block(state)
        self.commit_block(state, x0)
        return x0

    def denoise_block(self, state: StreamState, exit_step: int | None = None, grad: bool = False) -> torch.Tensor:
        """Denoise the next block from fresh noise through sigmas[0 .. exit_step] (default: all) and return
        its predicted clean latents [B, C, F, h, w]. Training (Self-Forcing) stops at a random exit step
        and keeps the graph of that last model call only (`grad=True`); inference runs every step."""
        if state.prompt_embeds is None:
            raise RuntimeError("set_prompt() before generating a block")
        cfg, sc = self.model_config, self.stream_config
        exit_step = len(self.sigmas) - 1 if exit_step is None else exit_step
        if not 0 <= exit_step < len(self.sigmas):
            raise ValueError(f"exit_step must be in [0, {len(self.sigmas) - 1}], got {exit_step}")
        shape = (state.cache.batch_size, cfg.in_channels, sc.block_frames, cfg.latent_height, cfg.latent_width)
        f0 = state.frame_index
        x = self._noise(state, shape)  # [B, C, F, h, w]
        for i, sigma in enumerate(self.sigmas[: exit_step + 1]):
            with torch.set_grad_enabled(grad and i == exit_step):
                v = self._call(state, x, sigma_to_timestep(sigma), f0, write=False)
                x0 = x.float() - sigma * v.float()
            if i < exit_step:
                next_sigma = self.sigmas[i + 1]
                x = (1 - next_sigma) * x0.detach() + next_sigma * self._noise(state, shape)
        return x0

    def commit_block(self, state: StreamState, x0: torch.Tensor, grad_gates: bool = False) -> None:
        """Clean pass at the context timestep on the block's latents x0, then commit it to the cache (frames
        leaving the window update M). With `grad_gates` the gates, and through them M, keep their graph
        (training the memory's write path; K/V are always detached)."""
        sc = self.stream_config
        f0 = state.frame_index
        x0 = x0.detach()
        with torch.set_grad_enabled(grad_gates):
            self._call(state, x0, sc.context_timestep, f0, write=True)
            frame_ids = list(range(f0, f0 + sc.block_frames))
            state.cache.commit(frame_ids)
        for j, f in enumerate(frame_ids):
            state.window_latents[f] = x0[:, :, j]
        kept = set(state.cache.recent_frames)
        state.window_latents = {f: lat for f, lat in state.window_latents.items() if f in kept}
        state.frame_index += sc.block_frames
