"""Model and sampler presets. Every size and default in the project comes from here.

`ModelConfig` describes the transformer (and the latent geometry it expects); `StreamConfig` describes
how a stream is generated: block size, local window, sink, memory mode, sampler steps. The same
`VideoSSMTransformer` class serves every preset; presets differ only in these numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

MEMORY_MODES = ("hybrid", "sink", "window", "full")
COLOR_SIDES = ("both", "under")  # the rollout stage's colour-area term: two-sided, or too little colour only
ROPE_MODES = ("relative", "absolute")
VAE_LAYOUTS = ("small", "wan2.1")

# How the recipe's bidirectional teacher is sampled: its training samples, the ODE-init trajectories, the DMD
# real score and the eval's `teacher:DIR` system all default to these.
TEACHER_SAMPLE_STEPS = 32  # Euler steps of the teacher's flow ODE over a whole clip
TEACHER_GUIDANCE = 3.0  # classifier-free guidance of the teacher


class ConfigError(ValueError):
    """A configuration value is out of its accepted range."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the causal Wan DiT plus the VideoSSM memory modules.

    Field names follow diffusers' `WanTransformer3DModel` so that real Wan2.1 configs map 1:1.
    """

    name: str = "tiny"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 4
    attention_head_dim: int = 64
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 64
    freq_dim: int = 64
    ffn_dim: int = 768
    num_layers: int = 6
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_max_seq_len: int = 1024  # absolute RoPE positions must stay below this (Wan's table size)
    rope_theta: float = 10000.0
    # Video geometry: pixel size of one frame and the VAE's compression.
    height: int = 128
    width: int = 128
    vae_scale_spatial: int = 8
    vae_scale_temporal: int = 4
    # VAE built for fresh (untrained) presets: "small" (the small model's fast decoder) or "wan2.1"
    # (Wan2.1's layout: base 96, dims 1,2,4,4, 2 res blocks; the real decode cost at 832x480).
    vae_layout: str = "small"
    fps: int = 16
    # Text: prompts are padded to this many tokens.
    text_len: int = 32
    # Memory router: rho = min(1, (frame + 1) / router_horizon_frames), frame = latent frame index.
    # The horizon is the training length in latent frames (paper: T; we cap rho at 1 past it).
    router_horizon_frames: int = 240
    router_weight_init: float = 1.0
    router_bias_init: float = 0.0

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def latent_height(self) -> int:
        return self.height // self.vae_scale_spatial

    @property
    def latent_width(self) -> int:
        return self.width // self.vae_scale_spatial

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_height // self.patch_size[1]) * (self.latent_width // self.patch_size[2])

    def validate(self) -> "ModelConfig":
        if self.patch_size[0] != 1:
            raise ConfigError(f"patch_size[0] must be 1 (one latent frame per token frame), got {self.patch_size}")
        if self.attention_head_dim % 2 or self.attention_head_dim < 6:
            raise ConfigError(f"attention_head_dim must be even and >= 6, got {self.attention_head_dim}")
        step = self.vae_scale_spatial * self.patch_size[1]
        if self.height % step or self.width % (self.vae_scale_spatial * self.patch_size[2]):
            raise ConfigError(
                f"height x width must be multiples of {step} (VAE x patch), got {self.height}x{self.width}"
            )
        if self.vae_layout not in VAE_LAYOUTS:
            raise ConfigError(f"unknown vae_layout {self.vae_layout!r}; accepted: {', '.join(VAE_LAYOUTS)}")
        for name in ("num_attention_heads", "num_layers", "ffn_dim", "text_dim", "text_len", "fps",
                     "router_horizon_frames"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig keys {unknown}; accepted: {sorted(known)}")
        d = dict(d)
        if "patch_size" in d:
            d["patch_size"] = tuple(d["patch_size"])
        return cls(**d).validate()


@dataclass(frozen=True)
class StreamConfig:
    """How a stream is generated. Windows count latent frames and include the sink and current block
    (LongLive's semantics: with window 12, sink 3 and block 3 a block sees the 3 sink frames, the 6
    newest cached frames and itself)."""

    memory: str = "hybrid"
    block_frames: int = 3
    window_frames: int = 12
    sink_frames: int = 3
    rope: str = "relative"
    num_steps: int = 4
    shift: float = 5.0
    max_seconds: float = 600.0
    # Timestep of the pass that writes a finished block into the cache (Self-Forcing uses 0).
    context_timestep: float = 0.0

    def validate(self) -> "StreamConfig":
        if self.memory not in MEMORY_MODES:
            raise ConfigError(f"unknown memory mode {self.memory!r}; accepted: {', '.join(MEMORY_MODES)}")
        if self.rope not in ROPE_MODES:
            raise ConfigError(f"unknown rope mode {self.rope!r}; accepted: {', '.join(ROPE_MODES)}")
        if self.block_frames < 1:
            raise ConfigError(f"block_frames must be >= 1, got {self.block_frames}")
        if self.sink_frames < 0:
            raise ConfigError(f"sink_frames must be >= 0, got {self.sink_frames}")
        if self.memory != "full" and self.window_frames < self.effective_sink_frames + self.block_frames:
            raise ConfigError(
                f"window_frames={self.window_frames} is smaller than sink_frames + block_frames = "
                f"{self.effective_sink_frames} + {self.block_frames}; it must be >= "
                f"{self.effective_sink_frames + self.block_frames}"
            )
        if not 1 <= self.num_steps <= 1000:
            raise ConfigError(f"num_steps must be in [1, 1000], got {self.num_steps}")
        if not self.shift > 0 or math.isnan(self.shift):
            raise ConfigError(f"shift must be > 0, got {self.shift}")
        if not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be > 0, got {self.max_seconds}")
        return self

    @property
    def effective_sink_frames(self) -> int:
        """`window` mode has no sink; the other modes keep `sink_frames`."""
        return 0 if self.memory == "window" else self.sink_frames

    @property
    def recent_frames(self) -> int | None:
        """How many non-sink frames from earlier blocks stay in the cache (None: all, `full` mode)."""
        if self.memory == "full":
            return None
        return self.window_frames - self.effective_sink_frames - self.block_frames

    @property
    def uses_memory(self) -> bool:
        return self.memory == "hybrid"

    def replace(self, **changes) -> "StreamConfig":
        return dataclasses.replace(self, **changes).validate()

    def with_overrides(self, **overrides) -> "StreamConfig":
        """`replace` with the overrides that are not None (unset CLI flags and keyword arguments)."""
        return self.replace(**{k: v for k, v in overrides.items() if v is not None})


MODEL_PRESETS: dict[str, ModelConfig] = {
    # ~6M parameters: 128x128 video, 64 tokens per latent frame; streams faster than real time on 2 cores.
    "tiny": ModelConfig(),
    # For unit tests: a few tokens per frame, two layers.
    "test": ModelConfig(
        name="test", num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=64, num_layers=2, height=32, width=32, text_len=16,
        router_horizon_frames=24,
    ),
    # Wan2.1-T2V-1.3B (../shared/REFERENCE.md section 2): 832x480, 1560 tokens per latent frame.
    "wan2.1-t2v-1.3b": ModelConfig(
        name="wan2.1-t2v-1.3b", num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, height=480, width=832, text_len=512,
        router_horizon_frames=240, vae_layout="wan2.1",
    ),
}


# The shipped, trained checkpoints (docs/TRAINING.md) live beside the package in assets/.
ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


def shipped_model(memory: str = "hybrid") -> str | None:
    """The shipped checkpoint trained for `memory` (assets/videossm-MEMORY), or None when it is absent."""
    folder = os.path.join(ASSETS_DIR, f"videossm-{memory}")
    return folder if os.path.isfile(os.path.join(folder, "videossm_config.json")) else None


def default_model(memory: str | None = None) -> str:
    """The model used when none is named: the shipped checkpoint trained for `memory` (the sink and window
    baselines have their own), else the shipped hybrid one, else the UNTRAINED `tiny` preset (which says
    so wherever it is used)."""
    return (memory and shipped_model(memory)) or shipped_model("hybrid") or "tiny"


def get_model_config(name: str) -> ModelConfig:
    try:
        return MODEL_PRESETS[name].validate()
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; accepted: {', '.join(MODEL_PRESETS)}") from None


def latent_frames_for(pixel_frames: int, temporal_scale: int = 4) -> int:
    """Wan's causal VAE: the first latent frame is 1 pixel frame, each later one is `temporal_scale`."""
    if pixel_frames <= 0:
        return 0
    return 1 + math.ceil((pixel_frames - 1) / temporal_scale)


def pixel_frames_for(latent_frames: int, temporal_scale: int = 4) -> int:
    return 0 if latent_frames <= 0 else 1 + (latent_frames - 1) * temporal_scale


def first_pixel_frame(latent_frame: int, temporal_scale: int = 4) -> int:
    """Index of the first pixel frame decoded from `latent_frame`."""
    return 0 if latent_frame == 0 else 1 + (latent_frame - 1) * temporal_scale

