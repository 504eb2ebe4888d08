"""Few-step flow matching (Self-Forcing's schedule).

x_t = (1 - sigma) x0 + sigma eps; the model predicts v = eps - x0, so x0 = x_t - sigma v. The base
list [1000, 750, 500, 250] warped by shift 5 gives timesteps [1000, 937.5, 833.33, 625]. Between steps
the predicted x0 is re-noised to the next sigma with fresh noise.
"""

from __future__ import annotations

from ..config import ConfigError


def denoising_sigmas(num_steps: int, shift: float) -> list[float]:
    """Sigmas in (0, 1], highest first: the linear list 1, 1-1/n, ..., 1/n warped by `shift`."""
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    if not shift > 0:
        raise ConfigError(f"shift must be > 0, got {shift}")
    base = [1.0 - i / num_steps for i in range(num_steps)]
    return [shift * s / (1.0 + (shift - 1.0) * s) for s in base]


def sigma_to_timestep(sigma: float) -> float:
    return sigma * 1000.0
