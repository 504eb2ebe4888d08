"""How much does a causal student's loss depend on the motion words? Teacher forcing on motion-switch clips.

    PYTHONPATH=. python bench/motion_text_loss.py STUDENT [--teacher runs/teacher/teacher] [--batches 3]

World clips whose motion changes at a block boundary (`train.data.motion_switch_clip`), encoded by the
teacher's VAE, are noised to each of the student's sigmas (every block at that sigma) and the student
regresses them block by block with the clean past in its cache (`CausalODELoss`, the causal stage's loss).
Three texts per clip:
- right: the true prompt per block;
- wrong: after the switch, a motion that is neither the old nor the new one;
- first: the first prompt throughout (the text never switches).
A student that reads the motion words has a clearly lower loss with the right text, most at high noise.
Printed: the mean loss per sigma and text, over all 21 latent frames, and over the object's cells only;
then the loss of copying the last past frame into each block (all cells and object cells), a floor a student that
uses its past should beat, and of predicting zeros on the object's cells.
"""

from __future__ import annotations

import argparse
import types
from dataclasses import replace

import numpy as np
import torch

from videossm.pipeline import VideoSSMPipeline
from videossm.sampling.scheduler import denoising_sigmas
from videossm.train.causal import CausalODELoss, WorldBatches, encode_prompts
from videossm.train.teacher import weighted_mse
from videossm.world import MOTIONS, parse_prompt


def retext(prompts: list[tuple[str, ...]], how: str, salt: int) -> list[tuple[str, ...]]:
    out = []
    for blocks in prompts:
        first, new = parse_prompt(blocks[0]), parse_prompt(blocks[-1])
        if how == "wrong":
            others = [m for m in MOTIONS if m not in (first.motion, new.motion)]
            after = replace(new, motion=others[salt % len(others)]).text
        else:
            after = first.text
        out.append(tuple(p if p == blocks[0] else after for p in blocks))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("student", help="a causal student folder (train causal's OUT/student)")
    p.add_argument("--teacher", default="runs/teacher/teacher", help="its teacher (the VAE that encodes the clips)")
    p.add_argument("--batches", type=int, default=3, help="batches of 4 clips")
    p.add_argument("--latent-frames", type=int, default=21)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    student = VideoSSMPipeline.from_pretrained(args.student, dtype=torch.float32)
    teacher = VideoSSMPipeline.from_pretrained(args.teacher, dtype=torch.float32)
    sc = student.stream_config
    blocks = args.latent_frames // sc.block_frames
    options = types.SimpleNamespace(teacher=args.teacher, latent_frames=args.latent_frames, reuse=1, replay_window=1,
                                    seed=5)
    data = WorldBatches(teacher, options, "cpu", 0, sc.block_frames, motion_switch_share=1.0,
                        object_weight=1e6)  # ~object cells only
    sigmas = denoising_sigmas(sc.num_steps, sc.shift)
    loss = CausalODELoss(student.transformer.eval(), sc, memory_grad=False)
    bank: dict = {}
    batches = [data.batch(b, np.random.default_rng([b]), 4, sigmas) for b in range(args.batches)]
    print(f"{args.student}: x0 MSE per sigma (all cells | object cells), {4 * args.batches} motion-switch clips")
    for k, sigma in enumerate(sigmas):
        cells = []
        for how in ("right", "wrong", "first"):
            whole, obj = [], []
            for b, (states, x0, prompts, weight) in enumerate(batches):
                text = encode_prompts(student.text_encoder, bank, prompts if how == "right" else retext(prompts, how, b),
                                      blocks)
                with torch.no_grad():
                    whole.append(loss(states, x0, text, [k] * blocks, sigmas).item())
                    obj.append(loss(states, x0, text, [k] * blocks, sigmas, weight).item())
            cells.append(f"{how} {np.mean(whole):.4f} | {np.mean(obj):.4f}")
        print(f"  sigma {sigma:.3f}: " + "   ".join(cells), flush=True)
    # a reference for the sigma-1 row: each block predicted as the last clean frame before it (blocks 1 on)
    copy_all, copy_obj = [], []
    for _, x0, _, weight in batches:
        for f0 in range(sc.block_frames, args.latent_frames, sc.block_frames):
            block, last = x0[:, :, f0:f0 + sc.block_frames], x0[:, :, f0 - 1:f0].expand(-1, -1, sc.block_frames, -1, -1)
            copy_all.append(torch.nn.functional.mse_loss(last, block).item())
            copy_obj.append(weighted_mse(last, block, weight[:, :, f0:f0 + sc.block_frames]).item())
    print(f"  copying the last past frame, blocks 1 on: all cells {np.mean(copy_all):.4f} | object cells "
          f"{np.mean(copy_obj):.4f}")
    zeros = [weighted_mse(torch.zeros_like(x0), x0, weight).item() for _, x0, _, weight in batches]
    print(f"  predicting zeros (the latents' mean), object cells: {np.mean(zeros):.4f}")


if __name__ == "__main__":
    main()
