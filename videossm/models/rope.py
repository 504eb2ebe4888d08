"""3-axis rotary position embedding with explicit frame positions (Wan2.1's layout).

Wan splits a head of size D into t/h/w parts of D - 4*(D//6), 2*(D//6), 2*(D//6) channels and rotates
interleaved channel pairs (x[2i], x[2i+1]). Here the frame positions are arguments rather than a
table index, so a stream can place its cached frames at window-relative positions (sink first, then
the window in order) and run for any length.
"""

from __future__ import annotations

import torch


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)  # [dim/2]
    return positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [P, dim/2]


def rope_cos_sin(
    frame_positions: torch.Tensor, height: int, width: int, head_dim: int, theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation for tokens laid out frame-major, then row, then column.

    frame_positions: [F] position of each frame. Returns cos, sin of shape [1, F*height*width, 1, D/2].
    """
    t_dim, h_dim, w_dim = axis_dims(head_dim)
    num_frames = frame_positions.shape[0]
    t_ang = _axis_angles(frame_positions.cpu(), t_dim, theta)  # [F, t_dim/2]
    h_ang = _axis_angles(torch.arange(height), h_dim, theta)  # [H, h_dim/2]
    w_ang = _axis_angles(torch.arange(width), w_dim, theta)  # [W, w_dim/2]
    angles = torch.cat(
        [
            t_ang[:, None, None, :].expand(num_frames, height, width, -1),
            h_ang[None, :, None, :].expand(num_frames, height, width, -1),
            w_ang[None, None, :, :].expand(num_frames, height, width, -1),
        ],
        dim=-1,
    ).reshape(1, num_frames * height * width, 1, head_dim // 2)  # [1, N, 1, D/2]
    return angles.cos().float().to(device), angles.sin().float().to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x [B, N, H, D] by the angles behind cos/sin [1, N, 1, D/2]."""
    x_pairs = x.float().unflatten(-1, (-1, 2))  # [B, N, H, D/2, 2]
    x1, x2 = x_pairs[..., 0], x_pairs[..., 1]
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)
