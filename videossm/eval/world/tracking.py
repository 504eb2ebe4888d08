"""The camera track of a video, estimated from its pixels, and pixel comparisons that follow it.

A generated video has no camera record, so revisits and drift must find the camera themselves. The
world's backgrounds are textured, so a translation between two frames is well defined: phase
correlation (the peak of the normalised cross-power spectrum) of the grey, Hann-windowed frames, with
the object's box filled with the frame mean so that its own motion does not vote. Each frame is
registered against a key frame (not its predecessor), and the key moves on only after a shift of
`rekey` of the frame: slow pans (under a pixel per frame) are then still seen, and integer rounding
does not accumulate frame after frame.

Convention: `track[t] = (x, y)`, the view's top-left corner in world pixels relative to frame 0, as the
renderer's `camera_x/camera_y` minus frame 0's. Content of frame t at pixel (u, v) is the world at
track[t] + (u, v).
"""

from __future__ import annotations

import numpy as np


def to_gray(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] -> float32 [..., H, W] luma."""
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


_NEAR = np.stack(np.meshgrid(np.arange(-2, 3), np.arange(-2, 3)), -1).reshape(-1, 2)  # [25, 2] small corrections


def _hann(height: int, width: int) -> np.ndarray:
    return (np.hanning(height)[:, None] * np.hanning(width)[None, :]).astype(np.float32)


def phase_candidates(a: np.ndarray, b: np.ndarray, window: np.ndarray, k: int = 8) -> np.ndarray:
    """int [k, 2]: the k strongest camera moves (dx, dy) from frame a to frame b by phase correlation
    (b(u, v) ~ a(u + dx, v + dy)). a, b float [H, W]."""
    fa = np.fft.rfft2((a - a.mean()) * window)
    fb = np.fft.rfft2((b - b.mean()) * window)
    cross = fa * np.conj(fb)
    corr = np.fft.irfft2(cross / np.maximum(np.abs(cross), 1e-6), s=a.shape)  # [H, W]
    top = np.argpartition(corr.ravel(), -k)[-k:]
    top = top[np.argsort(-corr.ravel()[top])]
    height, width = a.shape
    dy, dx = np.unravel_index(top, corr.shape)
    dy = np.where(dy >= height // 2, dy - height, dy)
    dx = np.where(dx >= width // 2, dx - width, dx)
    return np.stack([dx, dy], 1).astype(np.int64)


def masked_shift_error(a: np.ndarray, valid_a: np.ndarray, b: np.ndarray, valid_b: np.ndarray, shift) -> float:
    """Mean |a(u + dx, v + dy) - b(u, v)| over the pixels valid in both; inf when under a quarter overlaps."""
    height, width = a.shape
    dx, dy = int(shift[0]), int(shift[1])
    xa0, xa1, ya0, ya1 = max(0, dx), min(width, width + dx), max(0, dy), min(height, height + dy)
    if xa1 - xa0 < width // 2 or ya1 - ya0 < height // 2:
        return float("inf")
    h, w = ya1 - ya0, xa1 - xa0
    both = valid_a[ya0:ya1, xa0:xa1] & valid_b[ya0 - dy:ya0 - dy + h, xa0 - dx:xa0 - dx + w]
    if both.sum() < 0.25 * height * width:
        return float("inf")
    return float(np.abs(a[ya0:ya1, xa0:xa1] - b[ya0 - dy:ya0 - dy + h, xa0 - dx:xa0 - dx + w])[both].mean())


def box_mask(shape: tuple[int, int], boxes: np.ndarray | None) -> np.ndarray:
    """bool [H, W]: True outside every box (x0, y0, x1, y1)."""
    valid = np.ones(shape, bool)
    for x0, y0, x1, y1 in (boxes if boxes is not None else ()):
        valid[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = False
    return valid


def estimate_track(frames: np.ndarray, object_boxes: list[np.ndarray | None] | None = None,
                   rekey: float = 0.125, max_step: float = 0.1) -> np.ndarray:
    """int64 [T, 2]: the camera's (x, y) relative to frame 0, from uint8 frames [T, H, W, 3].

    object_boxes[t]: int [n, 4] boxes (x0, y0, x1, y1) to ignore in frame t (None: none). Candidate
    moves are the strongest phase-correlation peaks within `max_step` of the frame from the previous
    frame's move, plus that move itself; the one with the least masked pixel error wins (periodic
    textures and the object's own motion make the strongest peak alone unreliable).
    """
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"estimate_track needs frames [T>=1, H, W, 3], got shape {frames.shape}")
    height, width = frames.shape[1:3]
    window = _hann(height, width)
    boxes = object_boxes or [None] * len(frames)
    limit = np.array([max_step * width, max_step * height])
    track = np.zeros((len(frames), 2), np.int64)
    key, key_valid, key_offset = to_gray(frames[0]), box_mask((height, width), boxes[0]), np.zeros(2, np.int64)
    move = np.zeros(2, np.int64)  # camera move from the key to the previous frame
    for t in range(1, len(frames)):
        gray = to_gray(frames[t])  # [H, W], one frame at a time: long videos stay small in memory
        valid = box_mask((height, width), boxes[t])
        step = track[t - 1] - track[t - 2] if t >= 2 else np.zeros(2, np.int64)  # the last frame's move
        candidates = np.concatenate([move + _NEAR, move + step + _NEAR, phase_candidates(key, gray, window)])
        candidates = candidates[(np.abs(candidates - move) <= limit).all(1)]
        errors = [masked_shift_error(key, key_valid, gray, valid, c) for c in candidates]
        move = candidates[int(np.argmin(errors))]
        track[t] = key_offset + move
        if abs(move[0]) > rekey * width or abs(move[1]) > rekey * height:
            key, key_valid, key_offset, move = gray, valid, track[t].copy(), np.zeros(2, np.int64)
    return track


def box_blur(images: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 box (edges clamped) of float images [..., H, W, C], via cumulative sums."""
    if radius <= 0:
        return images
    out = images
    for axis in (-3, -2):
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius + 1, radius)
        padded = np.pad(out, pad, mode="edge")
        csum = np.cumsum(padded, axis=axis, dtype=np.float64)
        hi = np.take(csum, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
        lo = np.take(csum, np.arange(0, n), axis=axis)
        out = ((hi - lo) / (2 * radius + 1)).astype(np.float32)
    return out


def aligned_mae(a: np.ndarray, valid_a: np.ndarray, offset_a, b: np.ndarray, valid_b: np.ndarray, offset_b,
                min_overlap: float = 0.25) -> float:
    """Mean |a - b| / 255 over the world pixels both frames show and both mark valid; NaN when they share
    less than `min_overlap` of a frame. a, b float [H, W, 3]; valid_* bool [H, W]; offsets (x, y) world pixels."""
    height, width = a.shape[:2]
    sx, sy = int(offset_b[0]) - int(offset_a[0]), int(offset_b[1]) - int(offset_a[1])
    # b's pixel (u, v) shows a's pixel (u + sx, v + sy)
    xa0, xa1 = max(0, sx), min(width, width + sx)
    ya0, ya1 = max(0, sy), min(height, height + sy)
    if xa1 <= xa0 or ya1 <= ya0:
        return float("nan")
    xb0, yb0 = xa0 - sx, ya0 - sy
    h, w = ya1 - ya0, xa1 - xa0
    both = valid_a[ya0:ya1, xa0:xa1] & valid_b[yb0:yb0 + h, xb0:xb0 + w]
    if both.sum() < min_overlap * height * width:
        return float("nan")
    diff = np.abs(a[ya0:ya1, xa0:xa1] - b[yb0:yb0 + h, xb0:xb0 + w])[both]
    return float(diff.mean() / 255.0)


def revisit_pairs(track: np.ndarray, frame_size: tuple[int, int], leave: float = 0.5, tolerance: int = 1,
                  stride: int = 1) -> list[tuple[int, int]]:
    """(i, j): frame i shows the view of an earlier frame j (within `tolerance` px) after the view moved
    at least `leave` of the frame away from it in between; j is the earliest such frame. Every
    `stride`-th frame is considered (T x T / stride^2 work)."""
    height, width = frame_size
    idx = np.arange(0, len(track), stride)
    pos = track[idx]  # [N, 2]
    # dist[i, j]: how far the view of frame i is from frame j's, in units of the frame (Chebyshev)
    d_px = np.abs(pos[:, None, :] - pos[None, :, :])  # [N, N, 2]
    dist = np.maximum(d_px[..., 0] / width, d_px[..., 1] / height)
    close = (d_px <= tolerance).all(-1)
    left = np.maximum.accumulate(np.tril(dist), axis=0) >= leave  # left[i, j]: moved away from j by frame i
    pairs = []
    for i in range(len(idx)):
        ok = np.flatnonzero(close[i, :i] & left[i, :i])
        if len(ok):
            pairs.append((int(idx[i]), int(idx[ok[0]])))
    return pairs
