"""A tiny CNN probe that reads a frame of the procedural world: where the object is, whether it is in
view, and its colour and shape. Trained on renderer frames (train combinations), validated on frames of
the held-out combinations against the renderer's ground truth.

    probe = load_probe()                       # the shipped checkpoint in assets/probe/
    reading = probe.read(frames)               # frames uint8 [T, H, W, 3], any size
    reading.x, reading.y                       # object centre, fraction of the frame width / height [T]
    reading.present                            # P(object in view) [T]
    reading.color, reading.shape               # probabilities [T, 6], [T, 3] (order: COLORS, SHAPES)

    python -m videossm train probe --out assets/probe --vae runs/vae/vae   # ~20 min on one CPU core

Design (CenterNet-like, sized for a CPU): frames are resized to `input_size` (64) pixels; four 3x3
convs (strides 1, 2, 2, 1) give a `grid` x `grid` (16 x 16) feature map whose receptive field (~31 px at
64) covers the whole object (13 px at 64). One 1x1 head scores every cell as the object's centre, and a
global "no object" logit from the pooled features competes with the cells in one softmax over
grid^2 + 1 classes, so `present` = 1 - p(absent). A 2-channel head regresses the centre's offset
inside its cell. Colour and shape are read from the features of the centre cell (the ground-truth cell
in training, the best cell at inference).

Robustness to generated video: the training frames are degraded at random (Gaussian noise, blur,
soft outlines, brightness/contrast jitter, a down-and-up resample), because a generator's frames are
never the renderer's exact colours and edges. A generator decoded through a small VAE draws squares
with rounded corners and triangles as mounds, so `train_probe(..., vae_dir=...)` also mixes in frames of
train-split clips reconstructed through that VAE (`vae_share` of each batch), labelled with the
renderer's ground truth. Validation reports clean and degraded frames separately and, with a VAE,
reconstructions of the validation clips (`heldout_vae`: held-out combinations the probe never saw
through the VAE or otherwise). The shipped probe is the command above (`--vae-share` 0.25, the default).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ...config import ConfigError
from ...world import COLORS, SHAPES, Clip, sample_training_clip
from .cli import PROBE_DIR

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "probe.safetensors"
CONFIG_NAME = "probe.json"


@dataclass(frozen=True)
class ProbeConfig:
    input_size: int = 64  # frames are resized to input_size x input_size
    channels: tuple[int, int, int, int] = (16, 32, 48, 48)
    # training
    steps: int = 2000
    batch: int = 64  # frames per step
    frames_per_clip: int = 8  # frames drawn from each rendered clip
    clip_seconds: float = 5.0  # long enough for the wraparound scenario (frames without the object)
    render_size: int = 128  # the shipped default resolution
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    attribute_min_visible: float = 0.6  # colour/shape losses only where this share of the object is in view
    present_min_visible: float = 0.5  # the object counts as "present" from this share in view (and centre in frame)
    degrade_prob: float = 0.7  # chance of each degradation, per training frame
    soft_sigma_max: float = 1.5  # soft outlines: Gaussian blur, sigma ~ U(0.3, this) input pixels (0: off)
    vae_share: float = 0.0  # share of each batch's clips drawn from VAE reconstructions (train_probe's vae)
    vae_clips: int = 64  # train-split clips reconstructed once for that pool
    val_clips: int = 48  # per split
    val_frames_per_clip: int = 8

    @property
    def grid(self) -> int:
        return self.input_size // 4

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ProbeConfig keys {unknown}; accepted: {sorted(known)}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return cls(**d)


@dataclass
class ProbeReading:
    """What the probe reads from each of T frames."""

    x: np.ndarray  # [T] object centre, fraction of the frame width (0 = left edge)
    y: np.ndarray  # [T] fraction of the frame height (0 = top edge)
    present: np.ndarray  # [T] P(the object is in view)
    color: np.ndarray  # [T, len(COLORS)] probabilities
    shape: np.ndarray  # [T, len(SHAPES)] probabilities

    def __len__(self) -> int:
        return len(self.x)

    def color_names(self) -> list[str]:
        return [COLORS[i] for i in self.color.argmax(1)]

    def shape_names(self) -> list[str]:
        return [SHAPES[i] for i in self.shape.argmax(1)]

    def slice(self, start: int, stop: int) -> "ProbeReading":
        return ProbeReading(self.x[start:stop], self.y[start:stop], self.present[start:stop],
                            self.color[start:stop], self.shape[start:stop])


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.SiLU())


class WorldProbe(nn.Module):
    def __init__(self, config: ProbeConfig = ProbeConfig()):
        super().__init__()
        if config.input_size % 4 or config.input_size < 16:
            raise ValueError(f"input_size must be a multiple of 4 and >= 16, got {config.input_size}")
        self.config = config
        c1, c2, c3, c4 = config.channels
        self.trunk = nn.Sequential(_conv(3, c1, 1), _conv(c1, c2, 2), _conv(c2, c3, 2), _conv(c3, c4, 1))
        self.center = nn.Conv2d(c4, 1, 1)  # centre score per cell
        self.offset = nn.Conv2d(c4, 2, 1)  # (x, y) offset of the centre inside its cell, in cells
        self.absent = nn.Linear(c4, 1)  # "no object in view", competes with the cells
        self.color_head = nn.Linear(c4, len(COLORS))
        self.shape_head = nn.Linear(c4, len(SHAPES))

    def prepare(self, frames) -> torch.Tensor:
        """uint8 [T, H, W, 3] (numpy or torch) -> float [T, 3, S, S] in [-1, 1] at the probe's input size."""
        frames = torch.as_tensor(np.asarray(frames))
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(f"the probe reads uint8 frames [T, H, W, 3], got {tuple(frames.shape)} {frames.dtype}")
        pixels = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [T, 3, H, W]
        return self.resize(pixels.to(self.center.weight.device))

    def resize(self, pixels: torch.Tensor) -> torch.Tensor:
        """float frames [T, 3, H, W] in [-1, 1] -> [T, 3, S, S] at the probe's input size (differentiable)."""
        size = self.config.input_size
        if pixels.shape[-2:] != (size, size):
            mode = "area" if min(pixels.shape[-2:]) >= size else "bilinear"
            pixels = F.interpolate(pixels, size=(size, size), mode=mode)
        return pixels

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(pixels)  # [B, C, G, G]
        batch = features.shape[0]
        cells = self.center(features).flatten(1)  # [B, G*G]
        absent = self.absent(features.mean(dim=(2, 3)))  # [B, 1]
        return {"features": features, "location_logits": torch.cat([cells, absent], dim=1),  # [B, G*G + 1]
                "offset": self.offset(features).flatten(2).sigmoid(),  # [B, 2, G*G] in (0, 1) cells
                "batch": torch.arange(batch, device=features.device)}

    def attributes(self, out: dict[str, torch.Tensor], cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour and shape logits from the features of `cell` [B] (flat index into the grid)."""
        at_cell = out["features"].flatten(2)[out["batch"], :, cell]  # [B, C]
        return self.color_head(at_cell), self.shape_head(at_cell)

    @torch.no_grad()
    def read(self, frames, batch: int = 256) -> ProbeReading:
        """Read uint8 frames [T, H, W, 3] of any size (batched, no gradients)."""
        self.eval()
        parts: list[list[np.ndarray]] = [[], [], [], [], []]
        grid = self.config.grid
        for start in range(0, len(frames), batch):
            pixels = self.prepare(frames[start:start + batch])
            out = self(pixels)
            probs = out["location_logits"].softmax(1)  # [B, G*G + 1]
            cell = probs[:, :-1].argmax(1)  # [B]
            offset = out["offset"][out["batch"], :, cell]  # [B, 2]
            color, shape = self.attributes(out, cell)
            parts[0].append(((cell % grid).float() + offset[:, 0]).cpu().numpy() / grid)
            parts[1].append(((cell // grid).float() + offset[:, 1]).cpu().numpy() / grid)
            parts[2].append((1 - probs[:, -1]).cpu().numpy())
            parts[3].append(color.softmax(1).cpu().numpy())
            parts[4].append(shape.softmax(1).cpu().numpy())
        if not parts[0]:
            empty = np.zeros(0, np.float32)
            return ProbeReading(empty, empty, empty, np.zeros((0, len(COLORS)), np.float32),
                                np.zeros((0, len(SHAPES)), np.float32))
        return ProbeReading(*(np.concatenate(p) for p in parts))


# ---------------------------------------------------------------- data

@dataclass
class ProbeBatch:
    frames: np.ndarray  # uint8 [B, H, W, 3]
    x: np.ndarray  # [B] ground-truth centre, fraction of the frame width
    y: np.ndarray  # [B]
    present: np.ndarray  # bool [B]
    attribute: np.ndarray  # bool [B]: enough of the object in view to name its colour and shape
    color: np.ndarray  # int [B] index into COLORS
    shape: np.ndarray  # int [B] index into SHAPES


def frames_with_truth(clips: list[Clip], rng: np.random.Generator, per_clip: int, config: ProbeConfig) -> ProbeBatch:
    """`per_clip` random frames of every clip, with the probe's targets from the renderer's records."""
    frames, rows = [], []
    for clip in clips:
        height, width = clip.frames.shape[1:3]
        for i in rng.choice(len(clip.frames), size=min(per_clip, len(clip.frames)), replace=False):
            frames.append(clip.frames[i])
            rows.append(record_truth(clip.records[int(i)], width, height, config))
    x, y, present, attribute, color, shape = (np.array(c) for c in zip(*rows))
    return ProbeBatch(np.stack(frames), x, y, present, attribute, color, shape)


def record_truth(rec, width: int, height: int, config: ProbeConfig) -> tuple[float, float, bool, bool, int, int]:
    """The probe's targets for one frame's record: centre (fractions of the frame), present, nameable (enough
    in view to name its colour and shape), colour and shape indices."""
    return ((rec.x + 0.5) / width, (rec.y + 0.5) / height,
            rec.visible and rec.visible_fraction >= config.present_min_visible,
            rec.visible and rec.visible_fraction >= config.attribute_min_visible,
            COLORS.index(rec.color), SHAPES.index(rec.shape))


def gaussian_blur(pixels: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur frames [B, C, S, S] with a per-frame Gaussian of standard deviation sigma [B] pixels."""
    batch, channels, height, width = pixels.shape
    radius = max(1, int(np.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=pixels.dtype, device=pixels.device)  # [K]
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None].to(pixels) ** 2))  # [B, K]
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # [B*C, K]
    x = F.pad(pixels.reshape(1, batch * channels, height, width), (radius,) * 4, mode="replicate")
    x = F.conv2d(x, kernel[:, None, None, :], groups=batch * channels)  # along width
    x = F.conv2d(x, kernel[:, None, :, None], groups=batch * channels)  # along height
    return x.reshape(batch, channels, height, width)


def degrade(pixels: torch.Tensor, generator: torch.Generator, prob: float,
            soft_sigma_max: float = 0.0) -> torch.Tensor:
    """Random degradations of float frames [B, 3, S, S] in [-1, 1]: blur, soft outlines (a Gaussian blur
    of up to `soft_sigma_max` pixels), resample, contrast, noise; each with chance `prob` per frame."""
    batch, _, size, _ = pixels.shape

    def pick() -> torch.Tensor:  # [B, 1, 1, 1] bool: which frames get this degradation
        return (torch.rand(batch, 1, 1, 1, generator=generator) < prob)

    blurred = F.avg_pool2d(F.pad(pixels, (1, 1, 1, 1), mode="replicate"), 3, 1)
    pixels = torch.where(pick(), blurred, pixels)
    if soft_sigma_max > 0:
        sigma = 0.3 + (max(soft_sigma_max, 0.3) - 0.3) * torch.rand(batch, generator=generator)  # [B]
        pixels = torch.where(pick(), gaussian_blur(pixels, sigma), pixels)
    small = max(8, size // 2)
    resampled = F.interpolate(F.interpolate(pixels, size=small, mode="area"), size=size, mode="bilinear")
    pixels = torch.where(pick(), resampled, pixels)
    gain = 1 + 0.2 * (torch.rand(batch, 3, 1, 1, generator=generator) - 0.5)  # per-channel colour jitter
    bias = 0.15 * (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5)
    pixels = torch.where(pick(), pixels * gain + bias, pixels)
    sigma = 0.12 * torch.rand(batch, 1, 1, 1, generator=generator)
    noisy = pixels + sigma * torch.randn(pixels.shape, generator=generator)
    return torch.where(pick(), noisy, pixels).clamp(-1, 1)


def probe_loss(probe: WorldProbe, pixels: torch.Tensor, truth: ProbeBatch) -> tuple[torch.Tensor, dict]:
    grid = probe.config.grid
    out = probe(pixels)
    gx = np.clip((truth.x * grid).astype(np.int64), 0, grid - 1)
    gy = np.clip((truth.y * grid).astype(np.int64), 0, grid - 1)
    cell = torch.as_tensor(gy * grid + gx)  # [B]
    present = torch.as_tensor(truth.present)
    target = torch.where(present, cell, torch.full_like(cell, grid * grid))  # absent class = G*G
    location = F.cross_entropy(out["location_logits"], target)
    offset_truth = torch.stack([torch.as_tensor(truth.x * grid - gx), torch.as_tensor(truth.y * grid - gy)], 1)
    offset_pred = out["offset"][out["batch"], :, cell]  # [B, 2]
    offset = (F.l1_loss(offset_pred, offset_truth.float(), reduction="none").sum(1) * present).sum() / present.sum().clamp(min=1)
    named = torch.as_tensor(truth.attribute)
    color_logits, shape_logits = probe.attributes(out, cell)
    color = (F.cross_entropy(color_logits, torch.as_tensor(truth.color), reduction="none") * named).sum() / named.sum().clamp(min=1)
    shape = (F.cross_entropy(shape_logits, torch.as_tensor(truth.shape), reduction="none") * named).sum() / named.sum().clamp(min=1)
    loss = location + offset + color + shape
    return loss, {"loss": loss.item(), "location": location.item(), "offset": offset.item(),
                  "color": color.item(), "shape": shape.item()}


def evaluate_probe(probe: WorldProbe, truth: ProbeBatch, render_size: int) -> dict[str, float]:
    """Accuracies against ground truth; localisation error in pixels of a `render_size` frame."""
    reading = probe.read(truth.frames)
    named = truth.attribute
    found = truth.present & (reading.present > 0.5)
    error = np.hypot(reading.x - truth.x, reading.y - truth.y) * render_size
    return {
        "color_acc": float((reading.color.argmax(1) == truth.color)[named].mean()),
        "shape_acc": float((reading.shape.argmax(1) == truth.shape)[named].mean()),
        "present_acc": float(((reading.present > 0.5) == truth.present).mean()),
        "loc_err_px_median": float(np.median(error[found])) if found.any() else float("nan"),
        "loc_err_px_p95": float(np.percentile(error[found], 95)) if found.any() else float("nan"),
        "frames": int(len(truth.frames)),
    }


def vae_frames(clip: Clip) -> Clip:
    """The clip cut to 4k + 1 frames, the lengths a Wan VAE encodes whole."""
    keep = 1 + (len(clip.frames) - 1) // 4 * 4
    return dataclasses.replace(clip, frames=clip.frames[:keep], records=clip.records[:keep])


def through_vae(vae, clips: list[Clip], desc: str, progress: bool) -> list[Clip]:
    """Each clip with its frames replaced by their reconstruction through `vae` (ground truth unchanged)."""
    from ...train.vae import reconstruct

    return [dataclasses.replace(clip, frames=reconstruct(vae, clip.frames))
            for clip in tqdm(clips, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)]


def validation_sets(config: ProbeConfig, vae=None, progress: bool = False) -> dict[str, ProbeBatch]:
    """Fixed validation frames of both splits (seeds disjoint from training's); with a VAE also the same
    frames reconstructed through it (`heldout_vae`, `train_vae`)."""
    sets = {}
    for k, split in enumerate(("heldout", "train")):
        rng = np.random.default_rng([config.seed, 1_000_003, k])
        clips = [vae_frames(sample_training_clip(rng, config.clip_seconds, config.render_size, split=split))
                 for _ in range(config.val_clips)]
        state = rng.bit_generator.state
        sets[split] = frames_with_truth(clips, rng, config.val_frames_per_clip, config)
        if vae is not None:
            rng.bit_generator.state = state  # the same frames, reconstructed
            sets[f"{split}_vae"] = frames_with_truth(through_vae(vae, clips, f"validation {split} through the VAE",
                                                                 progress), rng, config.val_frames_per_clip, config)
    return sets


def validate(probe: WorldProbe, sets: dict[str, ProbeBatch], config: ProbeConfig) -> dict[str, dict[str, float]]:
    report = {}
    g = torch.Generator().manual_seed(config.seed + 7)
    for split, truth in sets.items():
        report[split] = evaluate_probe(probe, truth, config.render_size)
        if split.endswith("_vae"):
            report[f"{split}_shape_confusion"] = shape_confusion(probe, truth)
            continue
        pixels = degrade(probe.prepare(truth.frames), g, 1.0, config.soft_sigma_max)
        degraded = ((pixels.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        report[f"{split}_degraded"] = evaluate_probe(probe, dataclasses.replace(truth, frames=degraded),
                                                     config.render_size)
    return report


def shape_confusion(probe: WorldProbe, truth: ProbeBatch) -> dict[str, dict[str, int]]:
    """{true shape: {read shape: frames}} over the frames whose shape is nameable."""
    read = probe.read(truth.frames).shape.argmax(1)
    return {true: {seen: int(((truth.shape == i) & (read == j))[truth.attribute].sum()) for j, seen in enumerate(SHAPES)}
            for i, true in enumerate(SHAPES)}


def train_probe(config: ProbeConfig, out_dir: str, progress: bool = True, vae_dir: str | None = None) -> dict:
    """Train the probe, validate it on held-out combinations, save probe.safetensors + probe.json in out_dir.
    With `vae_dir` (a diffusers AutoencoderKLWan folder) `config.vae_share` of every batch's clips are drawn
    from `config.vae_clips` train-split clips reconstructed through that VAE."""
    from safetensors.torch import save_file

    from ...train.common import hardware

    begun = time.perf_counter()
    clips_per_step = config.batch // config.frames_per_clip
    vae_per_step = round(clips_per_step * config.vae_share) if vae_dir else 0
    if vae_dir is None and config.vae_share > 0:
        raise ConfigError(f"vae_share {config.vae_share} needs a VAE to reconstruct through (--vae)")
    if vae_dir is not None and not (0 < vae_per_step < clips_per_step):
        raise ConfigError(f"vae_share {config.vae_share} of {clips_per_step} clips per step gives {vae_per_step} "
                          f"reconstructed clips; choose a share that leaves some of each (e.g. 0.25)")
    vae = pool = None
    if vae_dir is not None:
        from ...train.data import load_frozen_vae

        vae = load_frozen_vae(vae_dir, "cpu")
        rng = np.random.default_rng([config.seed, 2_000_003])
        pool = through_vae(vae, [vae_frames(sample_training_clip(rng, config.clip_seconds, config.render_size))
                                 for _ in range(config.vae_clips)], "clips through the VAE", progress)
    torch.manual_seed(config.seed)
    probe = WorldProbe(config)
    opt = torch.optim.AdamW(probe.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    g = torch.Generator().manual_seed(config.seed + 1)
    sets = validation_sets(config, vae, progress)
    started = time.perf_counter()
    bar = tqdm(range(config.steps), desc="train probe", disable=not progress, dynamic_ncols=True)
    losses = []
    for step in bar:
        rng = np.random.default_rng([config.seed, step])
        clips = [sample_training_clip(rng, config.clip_seconds, config.render_size)
                 for _ in range(clips_per_step - vae_per_step)]
        if pool:
            clips += [pool[i] for i in rng.choice(len(pool), size=vae_per_step, replace=False)]
        truth = frames_with_truth(clips, rng, config.frames_per_clip, config)
        probe.train()
        pixels = degrade(probe.prepare(truth.frames), g, config.degrade_prob, config.soft_sigma_max)
        loss, parts = probe_loss(probe, pixels, truth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(parts)
        if step % 20 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()})
    report = validate(probe, sets, config)
    flags = f" --vae {vae_dir} --vae-share {config.vae_share} --vae-clips {config.vae_clips}" if vae_dir else ""
    defaults = ProbeConfig()
    flags += "".join(f" --{name} {getattr(config, name)}" for name in ("batch", "lr", "seed")
                     if getattr(config, name) != getattr(defaults, name))
    result = {"config": config.to_dict(), "validation": report, "train_seconds": time.perf_counter() - started,
              "wall_seconds": time.perf_counter() - begun, "hardware": hardware(),
              "final_loss": {k: float(np.mean([p[k] for p in losses[-50:]])) for k in losses[-1]},
              "parameters": sum(p.numel() for p in probe.parameters()), "vae": vae_dir,
              "command": f"python -m videossm train probe --out {out_dir} --steps {config.steps}{flags}"}
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f".{WEIGHTS_NAME}.tmp")
    save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, tmp)
    os.replace(tmp, os.path.join(out_dir, WEIGHTS_NAME))
    with open(os.path.join(out_dir, CONFIG_NAME), "w") as f:
        json.dump(result, f, indent=2)
    return result


def load_probe(path: str | None = None) -> WorldProbe:
    """The probe saved in folder `path` (default: the shipped assets/probe)."""
    from safetensors.torch import load_file

    path = path or PROBE_DIR
    config_path, weights_path = os.path.join(path, CONFIG_NAME), os.path.join(path, WEIGHTS_NAME)
    for p in (config_path, weights_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: not found; train a probe with `python -m videossm train probe --out {path}`")
    with open(config_path) as f:
        config = ProbeConfig.from_dict(json.load(f)["config"])
    probe = WorldProbe(config)
    probe.load_state_dict(load_file(weights_path))
    return probe.eval()


def cmd_train_probe(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("steps", "batch", "vae_clips"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.vae_share is not None and not args.vae:
        raise ConfigError(f"--vae-share {args.vae_share} needs --vae VAE_DIR")
    vae_share = (0.25 if args.vae_share is None else args.vae_share) if args.vae else 0.0
    if not 0 <= vae_share < 1:
        raise ConfigError(f"--vae-share must be in [0, 1), got {vae_share}")
    config = dataclasses.replace(ProbeConfig(), steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                                 vae_share=vae_share, vae_clips=args.vae_clips)
    result = train_probe(config, args.out, progress=not args.no_progress, vae_dir=args.vae)
    for split, metrics in result["validation"].items():
        if split.endswith("_confusion"):
            print(f"{split:>17}: " + "; ".join(f"{true} read as " + ", ".join(f"{k} {v}" for k, v in row.items())
                                               for true, row in metrics.items()))
        else:
            print(f"{split:>17}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))
    print(f"wrote {args.out}/{WEIGHTS_NAME} ({result['parameters']} parameters, {result['train_seconds']:.0f} s)")
    return 0
