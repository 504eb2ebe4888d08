"""An adversarial term for the rollout stage: a small video discriminator, real world clips against the
student's own blocks, both seen through the same frozen decoder.

Why. A squared error against the world's frames makes the student answer doubt with the mean: a wrapped
object whose return it cannot place exactly becomes a faint smear, which the decoder draws as background
(docs/TRAINING.md, "Self-rollout against the world's frames"). DMD answers that with the teacher's score,
which this stage does not have. Self-Forcing reports a GAN objective beside DMD and SiD (its Table 1: the
rollout is trained to look like real data to a discriminator), and this world renders real data for free.
A discriminator rejects a smear, so the student has to commit: draw the object, or not.

What it sees. Each generated block's frames with the `history_frames` pixel frames before them (so a pop-up
or a fade across a block boundary shows), pooled 2x, and the prompt's pooled text embedding (a projection
discriminator, so colour, shape and motion must match the words). The real clips are the world's frames
encoded by the stage's VAE and decoded by the same frozen decoder as the student's blocks, so the
discriminator cannot win on the decoder's own blur, which the student cannot change.

Losses (non-saturating, as in StyleGAN2): D minimises softplus(D(fake)) + softplus(-D(real)) plus the R1
penalty r1 / 2 * |dD(real)/dreal|^2; the student minimises softplus(-D(fake)).

Balance. Left alone, a D with several updates per student step wins outright after ~70 steps of the
rollout stage, and the student then follows large gradients that say only "fake" (its colour fell from
0.81 to 0.51, docs/TRAINING.md). `update_discriminator(..., max_acc=)` skips D's updates on a batch it
already tells apart that well (`train rollout --disc-max-acc`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BlockDiscriminator(nn.Module):
    """Scores clips [B, 3, T, H, W] in [-1, 1] given pooled prompt embeddings [B, text_dim]: one logit each,
    > 0 for real. Four strided 3-D convolutions after a `pool`x spatial average pool, then a mean over
    what is left, a linear head and a projection on the text."""

    def __init__(self, text_dim: int, width: int = 32, pool: int = 2):
        super().__init__()
        self.pool = pool
        channels = (3, width, 2 * width, 4 * width, 4 * width)
        strides = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip(channels[:-1], channels[1:], strides):
            layers += [nn.Conv3d(c_in, c_out, (3, 4, 4), stride, (1, 1, 1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1], 1)
        self.text_proj = nn.Linear(text_dim, channels[-1])

    def forward(self, clips: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool3d(clips, (1, self.pool, self.pool)) if self.pool > 1 else clips
        h = self.features(x).mean(dim=(2, 3, 4))  # [B, 4 * width]
        return self.head(h).squeeze(-1) + (h * self.text_proj(text)).sum(-1)  # [B]


def pooled_text(text: torch.Tensor, block: int) -> torch.Tensor:
    """The prompt of `block` pooled over tokens: text [B, L, D] (one prompt) or [B, NB, L, D] (per block)."""
    return (text[:, block] if text.dim() == 4 else text).mean(dim=1).float()  # [B, D]


def generator_loss(disc: nn.Module, fake: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The student's term: softplus(-D(fake)), the discriminator's weights left out of the graph."""
    disc.requires_grad_(False)
    try:
        return F.softplus(-disc(fake, text)).mean()
    finally:
        disc.requires_grad_(True)


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, text: torch.Tensor,
                       r1: float) -> tuple[torch.Tensor, dict[str, float]]:
    """D's loss on detached clips [N, 3, T, H, W]; also how often it is right on each side."""
    real = real.detach().requires_grad_(r1 > 0)
    real_logits, fake_logits = disc(real, text), disc(fake.detach(), text)
    loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    penalty = torch.zeros(())
    if r1 > 0:
        (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        penalty = grad.pow(2).flatten(1).sum(1).mean()
        loss = loss + r1 / 2 * penalty
    real_logits, fake_logits = real_logits.detach(), fake_logits.detach()
    return loss, {"disc_real_acc": float((real_logits > 0).float().mean()),
                  "disc_fake_acc": float((fake_logits < 0).float().mean()), "disc_r1": float(penalty.detach())}


def update_discriminator(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, text: torch.Tensor, r1: float,
                         steps: int, step_fn, max_acc: float | None = None) -> tuple[float, dict[str, float]]:
    """Up to `steps` updates of D on one batch; `step_fn(loss)` backpropagates D's loss and steps its optimizer.

    With `max_acc`, D skips the rest of its updates once it tells this batch apart at least that well (the
    mean of its real and fake accuracies, measured before each update). A D that wins outright gives the
    student large, uninformative gradients; holding it at the edge keeps the game live. Returns D's last
    loss, its accuracies and R1 on the batch, and `disc_updates` (how many updates it took).
    """
    updates = 0
    for _ in range(steps):
        loss, stats = discriminator_loss(disc, real, fake, text, r1)
        if max_acc is not None and (stats["disc_real_acc"] + stats["disc_fake_acc"]) / 2 >= max_acc:
            break
        step_fn(loss)
        updates += 1
    return loss.item(), {**stats, "disc_updates": float(updates)}

