"""The rollout stage's adversarial term (videossm/train/adversarial.py): the discriminator learns to tell the
world's crisp objects from smears, its losses send gradients where they should, and nowhere else."""

import torch
import torch.nn.functional as F

from videossm.train.adversarial import (BlockDiscriminator, discriminator_loss, generator_loss, pooled_text,
                                        update_discriminator)

torch.set_num_threads(1)


def _clips(n: int, gen: torch.Generator, smear: bool) -> torch.Tensor:
    """[n, 3, 8, 32, 32] gray clips with a red 7x7 square moving right; smeared: blurred and faded."""
    clips = torch.full((n, 3, 8, 32, 32), -0.2)
    rows = torch.randint(4, 21, (n,), generator=gen)
    cols = torch.randint(0, 10, (n,), generator=gen)
    red = torch.tensor([0.7, -0.8, -0.8]).view(3, 1, 1)
    for i in range(n):
        for t in range(8):
            r, c = int(rows[i]), int(cols[i]) + 2 * t
            clips[i, :, t, r:r + 7, c:c + 7] = red
    if smear:
        flat = clips.transpose(1, 2).reshape(-1, 3, 32, 32)
        flat = F.avg_pool2d(flat, 9, stride=1, padding=4, count_include_pad=False)
        clips = flat.reshape(n, 8, 3, 32, 32).transpose(1, 2)
    return clips


def test_discriminator_learns_crisp_objects_from_smears():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    disc = BlockDiscriminator(text_dim=8, width=8)
    opt = torch.optim.Adam(disc.parameters(), lr=5e-4, betas=(0.0, 0.99))
    text = torch.zeros(16, 8)
    losses = []
    for _ in range(100):
        loss, stats = discriminator_loss(disc, _clips(16, gen, False), _clips(16, gen, True), text, r1=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.3  # ~2 log 2 at the start: it cannot tell them apart
    _, stats = discriminator_loss(disc, _clips(32, gen, False), _clips(32, gen, True), torch.zeros(32, 8), r1=0.1)
    assert stats["disc_real_acc"] > 0.9 and stats["disc_fake_acc"] > 0.9, stats
    assert stats["disc_r1"] > 0


def test_the_losses_train_only_their_own_side():
    torch.manual_seed(0)
    disc = BlockDiscriminator(text_dim=8, width=8)
    fake = torch.randn(3, 3, 8, 32, 32, requires_grad=True)
    text = torch.randn(3, 8)
    generator_loss(disc, fake, text).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters()), "the student's term leaves D alone"
    assert all(p.requires_grad for p in disc.parameters()), "and gives D its gradients back afterwards"
    fake.grad = None
    loss, _ = discriminator_loss(disc, torch.randn(3, 3, 8, 32, 32), fake, text, r1=1.0)
    loss.backward()
    assert fake.grad is None, "D's step does not reach the student"
    assert all(p.grad is not None for p in disc.parameters())
    # the projection: the same clip scores differently under another prompt
    clip = torch.randn(1, 3, 8, 32, 32)
    assert not torch.allclose(disc(clip, torch.randn(1, 8)), disc(clip, torch.randn(1, 8)))


def test_pooled_text_takes_the_blocks_prompt():
    text = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)  # [B, NB, L, D]
    torch.testing.assert_close(pooled_text(text, 1), text[:, 1].mean(1))
    torch.testing.assert_close(pooled_text(text[:, 0], 2), text[:, 0].mean(1))


def test_a_balanced_discriminator_stops_updating_once_it_wins():
    """`update_discriminator` with `max_acc` skips its updates on a batch it already tells apart that well;
    without it, or below the bar, it takes every update."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    disc = BlockDiscriminator(text_dim=8, width=8)
    opt = torch.optim.Adam(disc.parameters(), lr=5e-4, betas=(0.0, 0.99))
    losses = []

    def step(loss):
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()

    text = torch.zeros(16, 8)
    real, fake = _clips(16, gen, False), _clips(16, gen, True)
    _, stats = update_discriminator(disc, real, fake, text, 0.1, steps=3, step_fn=step, max_acc=0.9)
    assert stats["disc_updates"] == 3 and len(losses) == 3  # at chance it is below the bar: every update
    for _ in range(60):  # train it until it wins
        update_discriminator(disc, _clips(16, gen, False), _clips(16, gen, True), text, 0.1, steps=1, step_fn=step)
    real, fake = _clips(16, gen, False), _clips(16, gen, True)
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    loss, stats = update_discriminator(disc, real, fake, text, 0.1, steps=4, step_fn=step, max_acc=0.9)
    assert (stats["disc_real_acc"] + stats["disc_fake_acc"]) / 2 >= 0.9, stats
    assert stats["disc_updates"] == 0 and loss < losses[0]
    assert all(torch.equal(before[k], v) for k, v in disc.state_dict().items()), "a winning D is left alone"
    _, stats = update_discriminator(disc, real, fake, text, 0.1, steps=4, step_fn=step)
    assert stats["disc_updates"] == 4  # unbalanced: it always takes its steps
    assert not all(torch.equal(before[k], v) for k, v in disc.state_dict().items())
