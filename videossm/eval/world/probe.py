"""A tiny CNN probe that reads a frame of the procedural world: where the object is, whether it is in
view, and its colour and shape. Trained on renderer frames (train combinations), validated on frames of
the held-out combinations against the renderer's ground truth.

    probe = load_probe()                       # the shipped checkpoint in assets/probe/
    reading = probe.read(frames)               # frames uint8 [T, H, W, 3], any size
    reading.x, reading.y                       # object centre, fraction of the frame width / height [T]
    reading.present                            # P(object in view) [T]
    reading.color, reading.shape               # probabilities [T, 6], [T, 3] (order: COLORS, SHAPES)

    python -m videossm train probe --out assets/probe     # ~3 min on one CPU core

Design (CenterNet-like, sized for a CPU): frames are resized to `input_size` (64) pixels; four 3x3
convs (strides 1, 2, 2, 1) give a `grid` x `grid` (16 x 16) feature map whose receptive field (~31 px at
64) covers the whole object (13 px at 64). One 1x1 head scores every cell as the object's centre, and a
global "no object" logit from the pooled features competes with the cells in one softmax over
grid^2 + 1 classes, so `present` = 1 - p(absent). A 2-channel head regresses the centre's offset
inside its cell. Colour and shape are read from the features of the centre cell (the ground-truth cell
in training, the best cell at inference).

Robustness to generated video: the training frames are degraded at random (Gaussian noise, blur,
brightness/contrast jitter, a down-and-up resample), because a generator's frames are never the
renderer's exact colours and edges. Validation reports clean and degraded frames separately.
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
    degrade_prob: float = 0.7  # share of training frames that are degraded
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
        size = self.config.input_size
        if pixels.shape[-2:] != (size, size):
            mode = "area" if min(pixels.shape[-2:]) >= size else "bilinear"
            pixels = F.interpolate(pixels, size=(size, size), mode=mode)
        return pixels.to(self.center.weight.device)

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
            rec = clip.records[int(i)]
            frames.append(clip.frames[i])
            rows.append(((rec.x + 0.5) / width, (rec.y + 0.5) / height,
                         rec.visible and rec.visible_fraction >= config.present_min_visible,
                         rec.visible and rec.visible_fraction >= config.attribute_min_visible,
                         COLORS.index(rec.color), SHAPES.index(rec.shape)))
    x, y, present, attribute, color, shape = (np.array(c) for c in zip(*rows))
    return ProbeBatch(np.stack(frames), x, y, present, attribute, color, shape)


def degrade(pixels: torch.Tensor, generator: torch.Generator, prob: float) -> torch.Tensor:
    """Random degradations of float frames [B, 3, S, S] in [-1, 1]: blur, resample, contrast, noise."""
    batch, _, size, _ = pixels.shape

    def pick() -> torch.Tensor:  # [B, 1, 1, 1] bool: which frames get this degradation
        return (torch.rand(batch, 1, 1, 1, generator=generator) < prob)

    blurred = F.avg_pool2d(F.pad(pixels, (1, 1, 1, 1), mode="replicate"), 3, 1)
    pixels = torch.where(pick(), blurred, pixels)
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


def validation_sets(config: ProbeConfig) -> dict[str, ProbeBatch]:
    """Fixed validation frames of both splits (seeds disjoint from training's)."""
    sets = {}
    for k, split in enumerate(("heldout", "train")):
        rng = np.random.default_rng([config.seed, 1_000_003, k])
        clips = [sample_training_clip(rng, config.clip_seconds, config.render_size, split=split)
                 for _ in range(config.val_clips)]
        sets[split] = frames_with_truth(clips, rng, config.val_frames_per_clip, config)
    return sets


def validate(probe: WorldProbe, sets: dict[str, ProbeBatch], config: ProbeConfig) -> dict[str, dict[str, float]]:
    report = {}
    g = torch.Generator().manual_seed(config.seed + 7)
    for split, truth in sets.items():
        report[split] = evaluate_probe(probe, truth, config.render_size)
        pixels = degrade(probe.prepare(truth.frames), g, prob=1.0)
        degraded = ((pixels.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        report[f"{split}_degraded"] = evaluate_probe(probe, dataclasses.replace(truth, frames=degraded),
                                                     config.render_size)
    return report


def train_probe(config: ProbeConfig, out_dir: str, progress: bool = True) -> dict:
    """Train the probe, validate it on held-out combinations, save probe.safetensors + probe.json in out_dir."""
    from safetensors.torch import save_file

    torch.manual_seed(config.seed)
    probe = WorldProbe(config)
    opt = torch.optim.AdamW(probe.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    g = torch.Generator().manual_seed(config.seed + 1)
    sets = validation_sets(config)
    started = time.perf_counter()
    bar = tqdm(range(config.steps), desc="train probe", disable=not progress, dynamic_ncols=True)
    losses = []
    for step in bar:
        rng = np.random.default_rng([config.seed, step])
        clips = [sample_training_clip(rng, config.clip_seconds, config.render_size)
                 for _ in range(config.batch // config.frames_per_clip)]
        truth = frames_with_truth(clips, rng, config.frames_per_clip, config)
        probe.train()
        pixels = degrade(probe.prepare(truth.frames), g, config.degrade_prob)
        loss, parts = probe_loss(probe, pixels, truth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(parts)
        if step % 20 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()})
    report = validate(probe, sets, config)
    result = {"config": config.to_dict(), "validation": report, "train_seconds": time.perf_counter() - started,
              "final_loss": {k: float(np.mean([p[k] for p in losses[-50:]])) for k in losses[-1]},
              "parameters": sum(p.numel() for p in probe.parameters()),
              "command": f"python -m videossm train probe --out {out_dir} --steps {config.steps}"}
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
    for name in ("steps", "batch"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
    config = dataclasses.replace(ProbeConfig(), steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed)
    result = train_probe(config, args.out, progress=not args.no_progress)
    for split, metrics in result["validation"].items():
        print(f"{split:>17}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))
    print(f"wrote {args.out}/{WEIGHTS_NAME} ({result['parameters']} parameters, {result['train_seconds']:.0f} s)")
    return 0
