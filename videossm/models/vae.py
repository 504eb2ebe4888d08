"""Streaming decode with Wan's causal VAE (`AutoencoderKLWan`).

diffusers' public `decode()` clears the causal-conv feature cache on every call. A stream instead keeps
its own feature cache (in `DecoderState`, one per stream, never on the module) and feeds the decoder one
latent frame at a time; `first_chunk` is set only for the very first frame of the stream. Decoding block
by block this way is bit-identical to decoding the whole latent video at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm, unpatchify

from ..config import ConfigError


def vae_config(z_dim: int = 16, base_dim: int = 8, patch: int = 2, dim_mult=(1, 1, 1), res_blocks: int = 0,
               decoder_dim: int | None = None) -> dict:
    """An AutoencoderKLWan config with 8x spatial and 4x temporal compression. The defaults are the small
    model's VAE: 2x2 pixel patchify, 3 stages of 8 channels, no extra res blocks (decodes a 12-frame
    128x128 block in about 50 ms on one CPU thread; see videossm/train/vae.py).

    patch * 2 ** (len(dim_mult) - 1) must be 8: patch 1 with 4 stages (Wan2.1's layout) or patch 2
    with 3 stages (Wan2.2's pixel patchify, 4x fewer full-resolution pixels for the convolutions).
    The two deepest down stages also halve time (4x). The decoder's last stage has base_dim *
    dim_mult[0] channels, so a growing dim_mult puts capacity at low resolution, where it is cheap.
    decoder_dim (diffusers' decoder_base_dim) sizes the decoder apart from the encoder: only the decoder
    runs while streaming.
    """
    dim_mult = [int(m) for m in dim_mult]
    if patch not in (1, 2, 4) or patch * 2 ** (len(dim_mult) - 1) != 8:
        raise ConfigError(f"patch * 2**(len(dim_mult) - 1) must be 8 (8x spatial); got patch {patch} and "
                          f"dim_mult {dim_mult}; e.g. patch 2 with 3 stages or patch 1 with 4 stages")
    if len(dim_mult) < 3:
        raise ConfigError(f"dim_mult needs at least 3 stages (two temporal downsamples), got {dim_mult}")
    if res_blocks < 0 or (res_blocks == 0 and len(set(dim_mult)) > 1):
        raise ConfigError(f"res_blocks must be >= 1 when dim_mult grows ({dim_mult}); got {res_blocks}")
    if base_dim < 1 or z_dim < 1 or (decoder_dim is not None and decoder_dim < 1):
        raise ConfigError(f"base_dim, decoder_dim and z_dim must be >= 1, got {base_dim}, {decoder_dim}, {z_dim}")
    cfg = dict(base_dim=base_dim, z_dim=z_dim, dim_mult=dim_mult, num_res_blocks=res_blocks, attn_scales=[],
               temperal_downsample=[False] * (len(dim_mult) - 3) + [True, True],
               patch_size=None if patch == 1 else patch, in_channels=3 * patch * patch, out_channels=3 * patch * patch,
               latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    if decoder_dim is not None and decoder_dim != base_dim:
        cfg["decoder_base_dim"] = decoder_dim
    return cfg


def layout_vae_config(layout: str, z_dim: int = 16) -> dict:
    """The AutoencoderKLWan config of a named layout (`ModelConfig.vae_layout`): "small" is `vae_config()`'s
    defaults; "wan2.1" is Wan2.1's VAE (base 96, dims 1,2,4,4, 2 res blocks, no pixel patchify)."""
    if layout == "small":
        return vae_config(z_dim=z_dim)
    if layout == "wan2.1":
        return vae_config(z_dim=z_dim, base_dim=96, patch=1, dim_mult=(1, 2, 4, 4), res_blocks=2)
    raise ConfigError(f"unknown VAE layout {layout!r}; accepted: small, wan2.1")


ENCODER_PREFIXES = ("encoder.", "quant_conv.")  # what only encoding uses; streaming decodes
VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"


class NoEncoder(torch.nn.Module):
    """Stands in for the encoder of a decoder-only VAE, so encoding says why it cannot."""

    def forward(self, *args, **kwargs):
        raise ConfigError("this VAE was shipped decoder-only (train ship drops the encoder to stay small); "
                          "encode with the training VAE instead (runs/vae/vae or the teacher's vae/)")


def load_vae(vae_dir: str) -> AutoencoderKLWan:
    """An AutoencoderKLWan folder, full or decoder-only (`decoder_only_state`, as `train ship` writes it).
    A decoder-only folder must hold every decoder tensor; its encoder becomes a NoEncoder."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = os.path.join(vae_dir, VAE_WEIGHTS)
    if not os.path.isfile(path):
        return AutoencoderKLWan.from_pretrained(vae_dir)  # another weights layout: diffusers' to read
    with safe_open(path, "pt") as f:  # the names only: a full VAE is read once, by diffusers
        if any(k.startswith(ENCODER_PREFIXES) for k in f.keys()):
            return AutoencoderKLWan.from_pretrained(vae_dir)
    vae = AutoencoderKLWan.from_config(AutoencoderKLWan.load_config(vae_dir))
    missing, unexpected = vae.load_state_dict(load_file(path), strict=False)
    missing = [k for k in missing if not k.startswith(ENCODER_PREFIXES)]
    if missing or unexpected:
        raise ConfigError(f"{vae_dir}: a decoder-only VAE must hold exactly the decoder's tensors; missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}")
    vae.encoder, vae.quant_conv = NoEncoder(), NoEncoder()
    return vae


def decoder_only_state(vae: AutoencoderKLWan) -> dict[str, torch.Tensor]:
    """The VAE's decoding tensors in fp16 (the tiny VAE's wide encoder is ~95% of its weights)."""
    return {k: v.half().contiguous() for k, v in vae.state_dict().items() if not k.startswith(ENCODER_PREFIXES)}


def latent_space_difference(ours: AutoencoderKLWan, theirs: AutoencoderKLWan, part: str,
                            half: bool = False) -> tuple[str, list[str]] | None:
    """Why `theirs` would not share `ours`' latent space on one side: (key, []) for a differing latent
    statistic, or (part, names) for the tensors of `part` ("encoder" or "decoder") that differ, compared
    exactly or, with `half`, in fp16 (the precision a shipped decoder is stored in); None when they agree."""
    for key in ("z_dim", "latents_mean", "latents_std"):
        if list(np.atleast_1d(ours.config[key])) != list(np.atleast_1d(theirs.config[key])):
            return key, []
    a, b = ours.state_dict(), theirs.state_dict()
    cast = (lambda t: t.half()) if half else (lambda t: t)
    names = [k for k in a if k.startswith(ENCODER_PREFIXES) == (part == "encoder")]
    differ = [k for k in names if k not in b or a[k].shape != b[k].shape or not torch.equal(cast(a[k]), cast(b[k]))]
    return (part, differ) if differ else None


# --- fast CPU decoding: the same weights and math, faster kernels (bench/decode_ops.py) ---------------------

# A float32 CPU conv3d whose input has at least this many elements goes to oneDNN. PyTorch sends a batch-1
# conv3d with under 20480 (N * C * T * H) to its im2col fallback, which is 3-5x slower than oneDNN on the
# small VAE's full-resolution 8-channel layers; below this size the fallback is as fast or faster.
ONEDNN_MIN_NUMEL = 50_000


class FastCausalConv3d(WanCausalConv3d):
    """WanCausalConv3d whose large float32 CPU convolutions (no autograd) run through oneDNN."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() >= ONEDNN_MIN_NUMEL
                and self.padding_mode == "zeros" and torch.backends.mkldnn.is_available()
                and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
            return torch.mkldnn_convolution(x, weight, bias, list(self.padding), list(self.stride),
                                            list(self.dilation), self.groups)
        return super()._conv_forward(x, weight, bias)


class FastRMSNorm(WanRMS_norm):
    """WanRMS_norm as x * rsqrt(sum x^2) over channels: F.normalize's vector norm over dim 1 of a
    [B, C, T, H, W] tensor is ~80x slower on a CPU (a strided reduction over few channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        sum_sq = xf.square().sum(1 if self.channel_first else -1, keepdim=True)  # [B, 1, ...] or [..., 1]
        normalized = (xf * sum_sq.clamp_min(1e-24).rsqrt()).to(x.dtype)  # F.normalize's eps 1e-12, squared
        return normalized * self.scale * self.gamma + self.bias


def use_fast_decoder_ops(vae: AutoencoderKLWan) -> AutoencoderKLWan:
    """Switch the decoder's causal convs and RMS norms to FastCausalConv3d / FastRMSNorm in place (their
    subclasses: same parameters, state-dict keys and feature-cache layout; outputs equal to float rounding)."""
    for module in [vae.post_quant_conv, *vae.decoder.modules()]:
        if type(module) is WanCausalConv3d:
            module.__class__ = FastCausalConv3d
        elif type(module) is WanRMS_norm:
            module.__class__ = FastRMSNorm
    return vae


@dataclass
class DecoderState:
    feat_cache: list = field(default_factory=list)
    frames_decoded: int = 0  # latent frames fed so far


class StreamingDecoder:
    """Turns normalised latent blocks [B, C, F, h, w] into pixel frames [B, 3, T, H, W] in [-1, 1]. It switches
    the VAE's decoder to the fast CPU ops above (`use_fast_decoder_ops`, in place)."""

    def __init__(self, vae: AutoencoderKLWan):
        self.vae = use_fast_decoder_ops(vae.eval())
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

    def _decode(self, state: DecoderState, latents: torch.Tensor) -> torch.Tensor:
        z = self.denormalize(latents).to(self.device, self.dtype)
        out = decode_frames(self.vae, z, state.feat_cache, state.frames_decoded)
        state.frames_decoded += z.shape[2]
        return out

    @torch.no_grad()
    def decode(self, state: DecoderState, latents: torch.Tensor) -> torch.Tensor:
        return self._decode(state, latents).clamp(-1.0, 1.0)

    def decode_graph(self, state: DecoderState, latents: torch.Tensor) -> torch.Tensor:
        """`decode` for a loss through the (frozen) decoder: unclamped, with autograd where it is enabled. The
        causal cache it leaves behind is detached, so the next block's graph stops at this one."""
        out = self._decode(state, latents)
        state.feat_cache[:] = [c.detach() if torch.is_tensor(c) else c for c in state.feat_cache]
        return out

    @torch.no_grad()
    def decode_full(self, latents: torch.Tensor) -> torch.Tensor:
        """The whole latent video at once, through diffusers' own decode (the reference)."""
        z = self.denormalize(latents).to(self.device, self.dtype)
        return self.vae.decode(z, return_dict=False)[0]


def decode_frames(vae: AutoencoderKLWan, z: torch.Tensor, feat_cache: list, frames_done: int) -> torch.Tensor:
    """Decode un-normalised latents z [B, C, F, h, w] one latent frame at a time through the causal
    feature cache `feat_cache` (after `frames_done` earlier frames). Returns [B, 3, T, H, W], unclamped."""
    x = vae.post_quant_conv(z)
    out = torch.cat([vae.decoder(x[:, :, i : i + 1], feat_cache=feat_cache, feat_idx=[0],
                                 first_chunk=frames_done + i == 0) for i in range(x.shape[2])], dim=2)
    return out if vae.config.patch_size is None else unpatchify(out, patch_size=vae.config.patch_size)


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """[1, 3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    frames = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()
