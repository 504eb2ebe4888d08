"""Dynamic degree, VBench's rule with OpenCV's DIS optical flow in place of RAFT: `dynamic_degree_dis`.

VBench (vbench/dynamic_degree.py), per video:
- take every round(fps / 8)-th frame (about 8 fps);
- for each consecutive pair, flow magnitude per pixel, and the mean of its top 5%;
- threshold = 6 * min(H, W) / 256 pixels (times max(1, 8 / fps) for videos under 8 fps);
- the video is dynamic when at least round(4 * frames / 16) pairs exceed it; the score of a set of
  videos (or of a long video's 2 s clips) is the fraction that is dynamic.

RAFT needs torchvision-era weights and code this project does not ship, so the flow here is DIS
(`cv2.DISOpticalFlow`, preset MEDIUM, on grayscale frames). DIS and RAFT disagree on small, fast or
textureless motion, so the metric is named `dynamic_degree_dis`, never `dynamic_degree`. The threshold
is VBench's, divided by a gain calibrated on clips with known motion (`calibrate()`; run
`python -m videossm.eval.dynamic` to reproduce): the gain is the median ratio of DIS's top-5% magnitude
to the true displacement over textured translations of 1-12 px at 128-480 px, so the threshold is
applied to flow in true pixels, the unit RAFT's threshold was set in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Median ratio DIS top-5% magnitude / true displacement, measured by `calibrate()` (18 pans, 1-12 px,
# 128x128 to 832x480; ratios 1.000-1.080): DIS slightly over-reads motion, so the threshold is raised by it.
DIS_GAIN = 1.024


@dataclass(frozen=True)
class DynamicConfig:
    target_fps: float = 8.0  # VBench samples about 8 frames per second
    top_fraction: float = 0.05  # mean of the largest 5% of flow magnitudes
    threshold_px_at_256: float = 6.0  # VBench: 6 px for a 256 px short side
    count_per_16_frames: float = 4.0  # VBench: round(4 * frames / 16) pairs must move
    dis_gain: float = DIS_GAIN


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise RuntimeError("dynamic_degree_dis needs OpenCV: pip install opencv-python-headless "
                           "(pinned in requirements.txt)") from e
    return cv2


def subsample(frames: np.ndarray, fps: float, config: DynamicConfig = DynamicConfig()) -> np.ndarray:
    return frames[:: max(1, round(fps / config.target_fps))]


def flow_top_magnitudes(frames: np.ndarray, config: DynamicConfig = DynamicConfig()) -> np.ndarray:
    """uint8 frames [T, H, W, 3] -> [T-1] mean of the top `top_fraction` DIS flow magnitudes (pixels)."""
    cv2 = _cv2()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    out = []
    for prev, cur in zip(gray[:-1], gray[1:]):
        flow = dis.calc(prev, cur, None)  # [H, W, 2] (dx, dy) in pixels
        magnitude = np.sqrt((flow.astype(np.float64) ** 2).sum(-1)).ravel()
        cut = max(1, int(magnitude.size * config.top_fraction))
        out.append(float(np.sort(magnitude)[::-1][:cut].mean()))
    return np.asarray(out)


def threshold_px(height: int, width: int, fps: float, config: DynamicConfig = DynamicConfig()) -> float:
    """VBench's threshold for a frame size and (sampled) fps, in DIS pixels."""
    factor = max(1.0, config.target_fps / fps)
    return factor * config.threshold_px_at_256 * min(height, width) / 256.0 * config.dis_gain


def is_dynamic(frames: np.ndarray, fps: float, config: DynamicConfig = DynamicConfig()) -> tuple[bool, np.ndarray]:
    """VBench's decision for one clip of uint8 frames [T, H, W, 3] at `fps`; also returns the per-pair magnitudes."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"dynamic degree needs uint8 RGB frames [T, H, W, 3], got shape {frames.shape}")
    if min(frames.shape[1:3]) < 16:
        raise ValueError(f"dynamic degree needs frames of at least 16x16 pixels (DIS flow), got "
                         f"{frames.shape[2]}x{frames.shape[1]}")
    sampled = subsample(frames, fps, config)
    if len(sampled) < 2:
        raise ValueError(f"dynamic degree needs at least 2 frames after sampling to ~{config.target_fps:g} fps; "
                         f"got {len(frames)} frames at {fps:g} fps")
    magnitudes = flow_top_magnitudes(sampled, config)
    # VBench passes the *original* fps to set_params (so the factor is 1 for >= 8 fps videos)
    thres = threshold_px(frames.shape[1], frames.shape[2], fps, config)
    needed = round(config.count_per_16_frames * len(sampled) / 16.0)
    return bool((magnitudes > thres).sum() >= needed), magnitudes


def _textured(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth random texture (uint8 [H, W, 3]) with detail at several scales, for calibration."""
    cv2 = _cv2()
    h, w = size
    img = np.zeros((h, w), np.float64)
    for cells in (4, 16, 64):
        noise = rng.random((max(2, h * cells // max(h, w)), cells))
        img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.repeat(img.astype(np.uint8)[..., None], 3, axis=-1)


def translation_clip(size: tuple[int, int], shift_px: float, frames: int, seed: int = 0) -> np.ndarray:
    """A textured scene panning by `shift_px` pixels per frame: uint8 [frames, H, W, 3] with exact motion."""
    cv2 = _cv2()
    h, w = size
    margin = int(np.ceil(abs(shift_px) * frames)) + 2
    big = _textured((h, w + margin), np.random.default_rng(seed))
    out = []
    for t in range(frames):
        m = np.float32([[1, 0, -shift_px * t], [0, 1, 0]])
        out.append(cv2.warpAffine(big, m, (w + margin, h), flags=cv2.INTER_LINEAR)[:, :w])
    return np.stack(out)


def calibrate(sizes=((128, 128), (256, 256), (480, 832)), shifts=(1, 2, 4, 6, 8, 12)) -> dict:
    """DIS top-5% magnitude against the true displacement on textured pans; returns the table and the gain."""
    rows = []
    for size in sizes:
        for shift in shifts:
            clip = translation_clip(size, float(shift), frames=4, seed=shift)
            measured = float(np.median(flow_top_magnitudes(clip, DynamicConfig(dis_gain=1.0))))
            rows.append({"size": f"{size[1]}x{size[0]}", "true_px": shift, "dis_px": measured,
                         "ratio": measured / shift})
    return {"rows": rows, "gain": float(np.median([r["ratio"] for r in rows]))}


if __name__ == "__main__":
    result = calibrate()
    print(f"{'size':>9} {'true px':>8} {'DIS top-5% px':>14} {'ratio':>6}")
    for r in result["rows"]:
        print(f"{r['size']:>9} {r['true_px']:>8} {r['dis_px']:>14.2f} {r['ratio']:>6.3f}")
    print(f"median gain {result['gain']:.3f} (DIS_GAIN in this module is {DIS_GAIN})")
