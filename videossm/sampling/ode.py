"""Many-step sampling of the bidirectional teacher (the flow-matching ODE), with classifier-free guidance.

x_t = (1 - sigma) x0 + sigma eps and the model predicts v = eps - x0, so one Euler step from sigma to
sigma' is x += (sigma' - sigma) v. The unconditional branch is the empty text (all-zero embeddings),
which the teacher learns through text dropout. Used for the teacher's samples, the ODE-regression
trajectories of the causal init, and the DMD real score.
"""

from __future__ import annotations

import torch

from ..config import ConfigError


def shift_sigma(u: torch.Tensor | float, shift: float):
    """Warp a uniform noise level u in [0, 1] by `shift` (> 1 spends more steps at high noise)."""
    return shift * u / (1 + (shift - 1) * u)


def ode_sigmas(anchors: list[float], substeps: int) -> list[float]:
    """A decreasing sigma grid that passes exactly through `anchors` (e.g. the student's 4 sigmas) and
    ends at 0, with `substeps` equal Euler steps between consecutive anchors."""
    if substeps < 1:
        raise ConfigError(f"substeps must be >= 1, got {substeps}")
    points = [float(a) for a in anchors] + [0.0]
    if any(b >= a for a, b in zip(points, points[1:])):
        raise ConfigError(f"anchors must decrease strictly towards 0, got {anchors}")
    grid = []
    for hi, lo in zip(points, points[1:]):
        grid += [hi + (lo - hi) * i / substeps for i in range(substeps)]
    return grid + [0.0]


def shifted_sigmas(steps: int, shift: float) -> list[float]:
    """The teacher's sampling grid: `steps` Euler steps from sigma 1 to 0, spaced by shift_sigma."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    return [float(shift_sigma(1.0 - i / steps, shift)) for i in range(steps)] + [0.0]


def guided_velocity(model, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """v = v_uncond + guidance (v_cond - v_uncond); x [B, C, F, h, w], sigma [B], cond [B, L, D]."""
    timestep = sigma.to(x.device).float() * 1000.0
    if guidance == 1.0:
        return model(x, timestep, cond).float()
    both = model(torch.cat((x, x)), torch.cat((timestep, timestep)), torch.cat((cond, torch.zeros_like(cond))))
    v_cond, v_uncond = both.float().chunk(2)
    return v_uncond + guidance * (v_cond - v_uncond)


@torch.no_grad()
def sample_ode(model, noise: torch.Tensor, cond: torch.Tensor, sigmas: list[float], guidance: float,
               keep: list[float] | None = None) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """Euler-integrate from noise at sigmas[0] down to sigmas[-1] (0). Returns x0 [B, C, F, h, w] and the
    states at the sigmas listed in `keep` (which must lie on the grid)."""
    keep = [float(s) for s in (keep or [])]
    missing = [s for s in keep if not any(abs(s - g) < 1e-9 for g in sigmas)]
    if missing:
        raise ConfigError(f"sigmas {missing} to keep are not on the ODE grid")
    x = noise.float()
    kept: dict[float, torch.Tensor] = {}
    batch = x.shape[0]
    for sigma, next_sigma in zip(sigmas, sigmas[1:]):
        for s in keep:
            if abs(s - sigma) < 1e-9:
                kept[s] = x.clone()
        v = guided_velocity(model, x, torch.full((batch,), sigma), cond, guidance)
        x = x + (next_sigma - sigma) * v
    return x, kept


@torch.no_grad()
def sample_video_latents(model, text_embedding: torch.Tensor, latent_frames: int, steps: int, guidance: float,
                         shift: float, seed: int, clean: torch.Tensor | None = None,
                         start_sigma: float = 1.0) -> torch.Tensor:
    """One clip of the bidirectional teacher from the noise of `seed`: x0 [1, C, latent_frames, h, w].

    With `clean` latents [1, C, latent_frames, h, w] and start_sigma < 1 it starts instead from them noised
    to start_sigma and runs the part of the grid below it (SDEdit): how much of a real clip's object,
    shape and path the teacher keeps from each noise level shows where in the ODE it loses them."""
    cfg = model.config
    if not 0 < start_sigma <= 1:
        raise ConfigError(f"start_sigma must be in (0, 1], got {start_sigma}")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, cfg.in_channels, latent_frames, cfg.latent_height, cfg.latent_width, generator=gen)
    sigmas = shifted_sigmas(steps, shift)
    if start_sigma < 1:
        if clean is None:
            raise ConfigError(f"start_sigma {start_sigma} < 1 needs the clean latents to noise")
        if clean.shape != noise.shape:
            raise ConfigError(f"clean latents {tuple(clean.shape)} do not match the clip's {tuple(noise.shape)}")
        noise = (1 - start_sigma) * clean.float().cpu() + start_sigma * noise
        sigmas = [start_sigma] + [s for s in sigmas if s < start_sigma]
    x0, _ = sample_ode(model, noise.to(model.device), text_embedding.to(model.device), sigmas, guidance)
    return x0
