"""Streaming decode with Wan's causal VAE (`AutoencoderKLWan`).

diffusers' public `decode()` clears the causal-conv feature cache on every call. A stream instead keeps
its own feature cache (in `DecoderState`, one per stream, never on the module) and feeds the decoder one
latent frame at a time; `first_chunk` is set only for the very first frame of the stream. Decoding block
by block this way is bit-identical to decoding the whole latent video at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify


def tiny_vae_config(z_dim: int = 16, base_dim: int = 8) -> dict:
    """A small AutoencoderKLWan (8x spatial, 4x temporal) that decodes in milliseconds on a CPU."""
    return dict(base_dim=base_dim, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True, True], latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)


@dataclass
class DecoderState:
    feat_cache: list = field(default_factory=list)
    frames_decoded: int = 0  # latent frames fed so far


class StreamingDecoder:
    """Turns normalised latent blocks [B, C, F, h, w] into pixel frames [B, 3, T, H, W] in [-1, 1]."""

    def __init__(self, vae: AutoencoderKLWan):
        self.vae = vae.eval()
        cfg = vae.config
        self.latents_mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
        self.latents_std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)

    @property
    def device(self) -> torch.device:
        return self.vae.post_quant_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.post_quant_conv.weight.dtype

    def new_state(self) -> DecoderState:
        return DecoderState(feat_cache=[None] * self.vae._cached_conv_counts["decoder"])

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self.latents_mean.to(latents.device), self.latents_std.to(latents.device)
        return latents.float() * std + mean

    @torch.no_grad()
    def decode(self, state: DecoderState, latents: torch.Tensor) -> torch.Tensor:
        z = self.vae.post_quant_conv(self.denormalize(latents).to(self.device, self.dtype))  # [B, C, F, h, w]
        pieces = []
        for i in range(z.shape[2]):
            pieces.append(self.vae.decoder(z[:, :, i : i + 1], feat_cache=state.feat_cache, feat_idx=[0],
                                           first_chunk=state.frames_decoded == 0))
            state.frames_decoded += 1
        out = torch.cat(pieces, dim=2)  # [B, 3, T, H, W]
        if self.vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=self.vae.config.patch_size)
        return out.clamp(-1.0, 1.0)

    @torch.no_grad()
    def decode_full(self, latents: torch.Tensor) -> torch.Tensor:
        """The whole latent video at once, through diffusers' own decode (the reference)."""
        z = self.denormalize(latents).to(self.device, self.dtype)
        return self.vae.decode(z, return_dict=False)[0]


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """[1, 3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    frames = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()
