"""VBench's quality dimensions with VBench's formulas, over time (VBench-Long's 2 s clips, then curves).

    evaluator = VBenchEvaluator(metrics=("subject_consistency", "temporal_flickering"))
    result = evaluator.evaluate(frames, fps)   # frames: uint8 [T, H, W, 3]
    result["scores"]    # VBench-Long: each metric averaged over the video's 2 s clips
    result["clips"]     # per clip: start_s and each metric
    result["curves"]    # per window (default 5 s): window_start_s and each metric (mean of the clips centred in it)

Formulas (VBench, vbench/*.py):
- subject / background consistency: features f_t L2-normalised; per frame t >= 1,
  (max(0, cos(f_{t-1}, f_t)) + max(0, cos(f_0, f_t))) / 2, averaged over t.
- temporal flickering: `videossm.eval.flicker.temporal_flickering` (VBench uses it on static-camera videos).
- aesthetic quality: LAION head on L2-normalised CLIP ViT-L/14 embeddings, / 10, averaged over frames.
- dynamic degree: see `videossm.eval.dynamic` (DIS flow instead of RAFT: named `dynamic_degree_dis`).
- imaging quality (MUSIQ): not computed, see UNAVAILABLE.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from . import dynamic
from .features import (FeatureModels, clip_features, dino_features, load_aesthetic_head, load_clip_vision,
                       load_dino)
from .flicker import temporal_flickering

logger = logging.getLogger(__name__)

from .metric_names import DEFAULT_METRICS, METRICS, UNAVAILABLE  # noqa: E402  (re-exported)
WEIGHT_FREE = ("temporal_flickering", "dynamic_degree_dis")


def consistency(features: torch.Tensor) -> float:
    """VBench's subject/background consistency of L2-normalised per-frame features [T, D] (T >= 2)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"consistency needs features [T>=2, D], got shape {tuple(features.shape)}")
    to_prev = (features[1:] * features[:-1]).sum(-1).clamp(min=0)  # [T-1]
    to_first = (features[1:] * features[:1]).sum(-1).clamp(min=0)  # [T-1]
    return float(((to_prev + to_first) / 2).mean())


@dataclass(frozen=True)
class LongVideoConfig:
    clip_seconds: float = 2.0  # VBench-Long's clip length
    window_seconds: float = 5.0  # resolution of the curves over time

    def validate(self) -> "LongVideoConfig":
        if not self.clip_seconds > 0:
            raise ValueError(f"clip_seconds must be > 0, got {self.clip_seconds}")
        if self.window_seconds < self.clip_seconds:
            raise ValueError(f"window_seconds ({self.window_seconds:g}) must be >= clip_seconds "
                             f"({self.clip_seconds:g}), or some windows would hold no clip")
        return self


def clip_ranges(num_frames: int, fps: float, clip_seconds: float) -> list[tuple[int, int]]:
    """Consecutive [start, end) frame ranges of `clip_seconds`; a tail shorter than half a clip joins the last one."""
    length = max(2, round(clip_seconds * fps))
    ranges = [(s, min(s + length, num_frames)) for s in range(0, num_frames, length)]
    if len(ranges) > 1 and ranges[-1][1] - ranges[-1][0] < max(2, length / 2):
        ranges[-2:] = [(ranges[-2][0], num_frames)]
    return ranges


def window_curve(starts_s: list[float], ends_s: list[float], values: list[float], duration_s: float,
                 window_seconds: float) -> tuple[list[float], list[float]]:
    """Mean of the clip values whose centre lies in each window [k W, (k+1) W); ceil(duration / W) windows."""
    n = max(1, math.ceil(duration_s / window_seconds - 1e-9))
    sums, counts = np.zeros(n), np.zeros(n)
    for s, e, v in zip(starts_s, ends_s, values):
        k = min(n - 1, int(((s + e) / 2) // window_seconds))
        sums[k] += v
        counts[k] += 1
    curve = [float(sums[k] / counts[k]) if counts[k] else float("nan") for k in range(n)]
    return [k * window_seconds for k in range(n)], curve


@dataclass
class VBenchEvaluator:
    metrics: tuple[str, ...] = DEFAULT_METRICS
    models: FeatureModels = field(default_factory=FeatureModels)
    long: LongVideoConfig = field(default_factory=LongVideoConfig)
    dynamic_config: dynamic.DynamicConfig = field(default_factory=dynamic.DynamicConfig)
    device: str | torch.device = "cpu"
    batch_size: int = 32
    progress: bool = True

    def __post_init__(self):
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            hint = "; ".join(f"{m}: {UNAVAILABLE[m]}" for m in unknown if m in UNAVAILABLE)
            raise ValueError(f"unknown metric(s) {unknown}; accepted: {', '.join(METRICS)}" + (f". {hint}" if hint else ""))
        self.long.validate()
        self.device = torch.device(self.device)
        self._loaded: dict[str, object] = {}

    # Feature models are loaded once, on first use.
    def _model(self, key: str):
        if key not in self._loaded:
            m = self.models
            if key == "dino":
                self._loaded[key] = load_dino(m, self.device)
            elif key == "clip":
                self._loaded[key] = load_clip_vision(m.clip, m, self.device, "background consistency (CLIP ViT-B/32)")
            elif key == "aesthetic_clip":
                self._loaded[key] = load_clip_vision(m.aesthetic_clip, m, self.device,
                                                     "aesthetic quality (CLIP ViT-L/14)")
            elif key == "aesthetic_head":
                dim = self._model("aesthetic_clip").config.projection_dim
                self._loaded[key] = load_aesthetic_head(m, dim, self.device)
        return self._loaded[key]

    def load_models(self) -> None:
        """Load every feature model the chosen metrics need now (fail before the first video, not after)."""
        needs = {"subject_consistency": ["dino"], "background_consistency": ["clip"],
                 "aesthetic_quality": ["aesthetic_clip", "aesthetic_head"]}
        for metric in self.metrics:
            for key in needs.get(metric, []):
                self._model(key)

    def per_frame_features(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """Features of every frame, once per video: {'dino': [T, D], 'clip': [T, P], 'aesthetic': [T]}."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # uint8 [T, 3, H, W]
        size, bs = self.models.image_size, self.batch_size
        out = {}
        if "subject_consistency" in self.metrics:
            out["dino"] = dino_features(self._model("dino"), pixels, size, bs)
        if "background_consistency" in self.metrics:
            out["clip"] = clip_features(self._model("clip"), pixels, size, bs)
        if "aesthetic_quality" in self.metrics:
            feats = clip_features(self._model("aesthetic_clip"), pixels, size, bs)
            head = self._model("aesthetic_head")
            with torch.no_grad():
                out["aesthetic"] = head(feats.to(head.weight.device)).squeeze(-1).float().cpu() / 10.0  # [T]
        return out

    def clip_scores(self, frames: np.ndarray, fps: float, features: dict, start: int, end: int) -> dict[str, float]:
        scores = {}
        for metric in self.metrics:
            if metric == "subject_consistency":
                scores[metric] = consistency(features["dino"][start:end])
            elif metric == "background_consistency":
                scores[metric] = consistency(features["clip"][start:end])
            elif metric == "temporal_flickering":
                scores[metric] = temporal_flickering(frames[start:end])
            elif metric == "aesthetic_quality":
                scores[metric] = float(features["aesthetic"][start:end].mean())
            elif metric == "dynamic_degree_dis":
                scores[metric] = float(dynamic.is_dynamic(frames[start:end], fps, self.dynamic_config)[0])
        return scores

    def evaluate(self, frames: np.ndarray, fps: float) -> dict:
        """One video's uint8 frames [T, H, W, 3] at `fps` -> scores, per-clip values and curves over time."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) < 2:
            raise ValueError(f"evaluate needs uint8 RGB frames [T>=2, H, W, 3], got {frames.dtype} {frames.shape}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        features = self.per_frame_features(frames)
        ranges = clip_ranges(len(frames), fps, self.long.clip_seconds)
        clips: dict[str, list] = {"start_s": [], "end_s": []}
        for start, end in tqdm(ranges, desc="clips", unit="clip", disable=not self.progress or len(ranges) < 4):
            clips["start_s"].append(start / fps)
            clips["end_s"].append(end / fps)
            for metric, value in self.clip_scores(frames, fps, features, start, end).items():
                clips.setdefault(metric, []).append(value)
        duration = len(frames) / fps
        curves: dict[str, list] = {}
        for metric in self.metrics:
            starts, curve = window_curve(clips["start_s"], clips["end_s"], clips[metric], duration,
                                         self.long.window_seconds)
            curves["window_start_s"] = starts
            curves[metric] = curve
        scores = {metric: float(np.mean(clips[metric])) for metric in self.metrics}
        return {"frames": int(len(frames)), "fps": float(fps), "seconds": duration,
                "height": int(frames.shape[1]), "width": int(frames.shape[2]),
                "clip_seconds": self.long.clip_seconds, "window_seconds": self.long.window_seconds,
                "scores": scores, "clips": clips, "curves": curves}
