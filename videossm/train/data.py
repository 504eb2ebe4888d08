"""Training data for the transformer stages: world clips -> normalised VAE latents, plus their prompts and
the object's footprint on the latent grid (for a loss that weighs the object up).

Clips are rendered fresh every step from RNGs seeded by (seed, rank, step), so a resumed run sees the
batches it would have seen. A frozen, trained VAE (`train vae`'s `vae/` folder) encodes them through its
posterior mode; latents are normalised per channel with the VAE's latents_mean/std, the inverse of what
`StreamingDecoder.denormalize` undoes at generation time.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from ..config import ConfigError, ModelConfig, first_pixel_frame, pixel_frames_for
from ..world import SCENARIOS, render_clip, sample_spec, sample_training_clip, switch_candidates

SINGLE_PROMPT_SCENARIOS = tuple(s for s in SCENARIOS if s != "prompt_switch")

# The teacher is conditioned on one prompt per clip, so its clips have no prompt switch; switches are
# learned by the causal stages through the KV re-cache (LongLive).
SINGLE_PROMPT_MIXTURE = {"plain": 0.5, "pan_and_return": 0.25, "wraparound": 0.25}


def parse_mixture(text: str) -> dict[str, float]:
    """'plain=0.75,wraparound=0.25' -> {scenario: weight}; names are the world's single-prompt scenarios."""
    mixture = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, weight = item.partition("=")
        if not sep:
            raise ConfigError(f"mixture entry {item!r} is not NAME=WEIGHT (e.g. plain=0.75,wraparound=0.25)")
        if name not in SINGLE_PROMPT_SCENARIOS:
            raise ConfigError(f"mixture scenario {name!r} is not a single-prompt scenario; accepted: "
                              f"{', '.join(SINGLE_PROMPT_SCENARIOS)}")
        try:
            mixture[name] = float(weight)
        except ValueError:
            raise ConfigError(f"mixture weight of {name!r} must be a number, got {weight!r}") from None
        if mixture[name] < 0:
            raise ConfigError(f"mixture weight of {name!r} must be >= 0, got {weight!r}")
    if sum(mixture.values()) <= 0:
        raise ConfigError(f"mixture {text!r} has no positive weight")
    return mixture


def latent_object_mask(clip, pixel_frames: int, latent_frames: int, scale_spatial: int, scale_temporal: int,
                       dilate: int = 1) -> np.ndarray:
    """bool [F, h, w]: latent cells whose pixels show the object, grown by `dilate` cells (its outline and
    the cells it moves into). Latent frame 0 stands for pixel frame 0, frame k for pixel frames
    scale_temporal * (k - 1) + 1 ... scale_temporal * k, as the causal VAE groups them."""
    pixel = np.stack([clip.object_mask(min(i, len(clip.records) - 1)) for i in range(pixel_frames)])  # [T, H, W]
    T, H, W = pixel.shape
    cells = pixel.reshape(T, H // scale_spatial, scale_spatial, W // scale_spatial, scale_spatial).any(axis=(2, 4))
    groups = [cells[:1]] + [cells[1 + scale_temporal * (k - 1): 1 + scale_temporal * k] for k in range(1, latent_frames)]
    latent = np.stack([g.any(axis=0) for g in groups])  # [F, h, w]
    for _ in range(dilate):  # a 3x3 max filter in h and w
        rows = latent.copy()
        rows[:, 1:] |= latent[:, :-1]
        rows[:, :-1] |= latent[:, 1:]
        latent = rows.copy()
        latent[:, :, 1:] |= rows[:, :, :-1]
        latent[:, :, :-1] |= rows[:, :, 1:]
    return latent


def load_frozen_vae(vae_dir: str, device) -> AutoencoderKLWan:
    if not os.path.isfile(os.path.join(vae_dir, "config.json")):
        raise ConfigError(f"--vae {vae_dir!r} is not a VAE folder (no config.json); train one with "
                          f"`python -m videossm train vae` and pass its vae/ folder")
    from safetensors import safe_open

    from ..models.vae import ENCODER_PREFIXES, VAE_WEIGHTS

    weights = os.path.join(vae_dir, VAE_WEIGHTS)
    if os.path.isfile(weights):
        with safe_open(weights, "pt") as f:
            if not any(k.startswith(ENCODER_PREFIXES) for k in f.keys()):
                raise ConfigError(f"{vae_dir} is decoder-only (shipped checkpoints drop the encoder), so it cannot "
                                  f"encode the world's clips; pass --vae with a full VAE, e.g. one recovered by "
                                  f"`python -m videossm train vae --decoder-from {vae_dir}`")
    return AutoencoderKLWan.from_pretrained(vae_dir).to(device).eval().requires_grad_(False)


def check_geometry(vae: AutoencoderKLWan, config: ModelConfig) -> None:
    if vae.config.z_dim != config.in_channels:
        raise ConfigError(f"the VAE has z_dim {vae.config.z_dim} but the model preset {config.name!r} takes "
                          f"in_channels {config.in_channels}")


def motion_switch_clip(rng: np.random.Generator, pixel_frames: int, latent_frames: int, block_frames: int,
                       config: ModelConfig, split: str = "train"):
    """A static-camera clip whose motion changes at a random latent block boundary (the other fields stay),
    and its prompt per block: (clip, (prompt of block 0, prompt of block 1, ...)).

    A causal student trained only on single-prompt clips can continue the velocity its clean past shows and
    ignore the motion words; after such a switch the past contradicts the new prompt, so only the text
    tells where the object goes. The switch is at the first pixel frame of the block's first latent frame
    (`first_pixel_frame`, the causal VAE's grouping), so the block's latents show only the new motion."""
    blocks = latent_frames // block_frames
    if blocks < 2:
        raise ConfigError(f"a motion switch needs at least 2 blocks of {block_frames} latent frames, "
                          f"got {latent_frames} latent frames")
    spec = sample_spec(rng, split)
    others = switch_candidates(spec)["motion"]  # every other motion: the split is set by colour, shape, background
    new = others[int(rng.integers(len(others)))]
    block = int(rng.integers(1, blocks))
    frame = first_pixel_frame(block * block_frames, config.vae_scale_temporal)
    clip = render_clip([(0.0, spec), (frame / config.fps, new)], pixel_frames / config.fps, int(rng.integers(2 ** 31)),
                       config.height, config.fps, "plain")
    return clip, (spec.text,) * block + (new.text,) * (blocks - block)


class WorldLatents:
    """Renders world clips and encodes them into normalised latents [B, C, F, h, w], with the object's
    latent footprint [B, 1, F, h, w] (`latent_object_mask`).

    With `motion_switch_share` > 0 that share of the clips are `motion_switch_clip`s, and their prompt
    entry is a tuple with one prompt per `block_frames` latent block (the causal stage's; the teacher is
    conditioned on one prompt per clip and keeps the default 0)."""

    def __init__(self, vae: AutoencoderKLWan, config: ModelConfig, latent_frames: int,
                 mixture: dict[str, float] | None = None, motion_switch_share: float = 0.0,
                 block_frames: int | None = None):
        self.vae, self.config, self.latent_frames = vae, config, latent_frames
        self.pixel_frames = pixel_frames_for(latent_frames, config.vae_scale_temporal)
        self.mixture = mixture or SINGLE_PROMPT_MIXTURE
        if not 0 <= motion_switch_share <= 1:
            raise ConfigError(f"the motion-switch share must be in [0, 1], got {motion_switch_share}")
        if motion_switch_share > 0 and block_frames is None:
            raise ConfigError("motion-switch clips need the student's block_frames")
        self.motion_switch_share, self.block_frames = motion_switch_share, block_frames
        self.mean = torch.tensor(vae.config.latents_mean, device=vae.device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std, device=vae.device).view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames [B, T, H, W, 3] -> normalised latents [B, C, F, h, w] (posterior mode, float32)."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 4, 1, 2, 3)
        pixels = pixels.to(self.vae.device, self.vae.dtype) / 127.5 - 1.0  # [B, 3, T, H, W] in [-1, 1]
        z = self.vae.encode(pixels).latent_dist.mode().float()
        return (z - self.mean) / self.std

    def batch(self, rng: np.random.Generator, batch: int, split: str = "train"
              ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """A batch of fresh clips: latents [B, C, F, h, w], each clip's prompt, object masks [B, 1, F, h, w]."""
        cfg = self.config
        if cfg.height != cfg.width:
            raise ConfigError(f"the world renders square frames; preset {cfg.name!r} is {cfg.height}x{cfg.width}")
        clips, prompts = [], []
        for _ in range(batch):
            if self.motion_switch_share > 0 and rng.random() < self.motion_switch_share:
                clip, prompt = motion_switch_clip(rng, self.pixel_frames, self.latent_frames, self.block_frames,
                                                  cfg, split)
            else:
                clip = sample_training_clip(rng, self.pixel_frames / cfg.fps, cfg.height, cfg.fps, self.mixture, split)
                prompt = clip.prompt
            clips.append(clip)
            prompts.append(prompt)
        frames = np.stack([c.frames[: self.pixel_frames] for c in clips])
        masks = np.stack([latent_object_mask(c, self.pixel_frames, self.latent_frames, cfg.vae_scale_spatial,
                                             cfg.vae_scale_temporal) for c in clips])[:, None]  # [B, 1, F, h, w]
        return self.encode(frames), prompts, torch.from_numpy(masks).to(self.vae.device)


class ReplayLatents:
    """Latents reused across steps, to spend less of each step on rendering and encoding.

    On a CPU the VAE encoder costs about as much as the teacher's own forward and backward, and most of
    that is a fixed cost per call (it runs chunk by chunk over time): encoding 4 clips takes ~1.2x as long
    as encoding 1. So every `reuse`-th step of this kind encodes a whole batch of new clips, the pool keeps
    the last `window` such refreshes, and each step draws its batch from the pool (with replacement): a clip
    is seen about `reuse` times. A refresh's clips come from its step's own RNG stream, so after a resume
    the pool is rebuilt as the uninterrupted run held it and the batches are the same.
    """

    def __init__(self, source: WorldLatents, reuse: int, window: int, seed: int, rank: int, is_kind):
        """is_kind(step) -> bool: whether `step` draws from this pool (e.g. the steps of short clips). `batch`
        must be called for every step of this kind from the first one asked, in order."""
        if reuse < 1 or window < 1:
            raise ConfigError(f"a replay pool needs reuse >= 1 and window >= 1, got {reuse} and {window}")
        self.source, self.reuse, self.window, self.seed, self.rank, self.is_kind = \
            source, reuse, window, seed, rank, is_kind
        # refresh step -> (latents [B, C, F, h, w], prompts, object masks [B, 1, F, h, w])
        self.pool: dict[int, tuple[torch.Tensor, list[str], torch.Tensor]] = {}
        self.served: int | None = None  # steps of this kind before the next call (None: not counted yet)

    def _refresh(self, step: int, batch: int) -> None:
        self.pool[step] = self.source.batch(batch_rng(self.seed, self.rank, step, stream=1), batch)
        for s in sorted(self.pool)[: max(0, len(self.pool) - self.window)]:
            del self.pool[s]

    def batch(self, step: int, rng: np.random.Generator, batch: int
              ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        if self.served is None:  # the first call (a start or a resume): the refreshes the run held before `step`
            earlier = [s for s in range(step) if self.is_kind(s)]
            for s in earlier[:: self.reuse][-self.window:]:
                self._refresh(s, batch)
            self.served = len(earlier)
        if self.served % self.reuse == 0:
            self._refresh(step, batch)
        self.served += 1
        refreshes = sorted(self.pool)
        latents = torch.cat([self.pool[s][0] for s in refreshes])  # [B * refreshes, C, F, h, w]
        prompts = [p for s in refreshes for p in self.pool[s][1]]
        masks = torch.cat([self.pool[s][2] for s in refreshes])  # [B * refreshes, 1, F, h, w]
        pick = rng.integers(0, len(prompts), size=batch)
        index = torch.from_numpy(pick)
        return latents[index], [prompts[i] for i in pick], masks[index]


def step_batch(data: WorldLatents | ReplayLatents, step: int, rng: np.random.Generator,
               batch: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Step `step`'s batch: fresh clips from WorldLatents, or a draw from a ReplayLatents pool: latents,
    prompts and object masks."""
    return data.batch(step, rng, batch) if isinstance(data, ReplayLatents) else data.batch(rng, batch)


def batch_rng(seed: int, rank: int, step: int, stream: int = 0) -> np.random.Generator:
    """The data RNG of one step of one process (stream separates independent draws of the same step)."""
    return np.random.default_rng([seed, rank, step, stream])
