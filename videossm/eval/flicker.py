"""VBench's temporal flickering, the one VBench dimension that needs no weights.

score = (255 - mean |frame[t+1] - frame[t]|) / 255, averaged over consecutive frame pairs of uint8 RGB frames.
1.0 means no change at all between frames; VBench computes it on the encoded video, so pass decoded mp4 frames.
"""

from __future__ import annotations

import numpy as np
import torch


def frame_pair_mae(frames) -> np.ndarray:
    """Mean absolute difference (0..255) of each consecutive pair of uint8 frames [T, H, W, C] -> [T-1]."""
    frames = torch.as_tensor(np.asarray(frames))
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"temporal flickering needs uint8 frames [T>=2, H, W, C], got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"temporal flickering needs uint8 frames, got {frames.dtype}")
    pixels = frames.to(torch.int16)  # [T, H, W, C], signed so differences don't wrap
    return (pixels[1:] - pixels[:-1]).abs().float().mean(dim=(1, 2, 3)).numpy()


def temporal_flickering(frames) -> float:
    """VBench temporal flickering of one video's uint8 frames [T, H, W, C]: higher is steadier, 1.0 is static."""
    return float((255.0 - frame_pair_mae(frames).mean()) / 255.0)
