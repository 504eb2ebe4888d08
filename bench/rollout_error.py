"""How far does a student's own continuation of a world clip stray from what the world did? The held-out
check of `train rollout`.

    PYTHONPATH=. python bench/rollout_error.py VAE_DIR MODEL [MODEL ...] [--clips 8] [--latent-frames 42]

Fixed clips (seeded apart from training's; `--split` train or heldout) are rendered; each model gets the
clip's first block encoded by VAE_DIR as its past and streams the rest as at inference (all 4 denoising
steps). Every generated block is decoded and compared with the clip's frames. Printed per model, averaged
over the clips: the pixel MSE in [-1, 1] over whole frames and over the object's exact pixels, per 2.5 s of
the clip and overall. The object term is the one that says whether the object is where the world put it
(its return after a wraparound included); a frame without the object scores its background there.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from videossm.config import first_pixel_frame
from videossm.pipeline import VideoSSMPipeline
from videossm.sampling.stream import StreamingGenerator
from videossm.train.data import load_frozen_vae, parse_mixture
from videossm.train.rollout import WorldRollouts, start_from_context


@torch.no_grad()
def rollout_errors(pipe, clips, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel frame after the context: (whole-frame MSE [T'], object MSE [T'] (NaN where no object))."""
    gen = StreamingGenerator(pipe.transformer, pipe.stream_config)
    text = torch.cat([pipe.text_encoder.encode(p) for p in clips.prompts])
    state = start_from_context(gen, pipe.decoder, clips.context, text, seed)
    temporal = pipe.model_config.vae_scale_temporal
    start = first_pixel_frame(state.frame_index, temporal)
    preds = []
    while first_pixel_frame(state.frame_index, temporal) < clips.pixels.shape[2]:
        preds.append(pipe.decoder.decode(state.decoder, gen.generate_block(state)))  # [B, 3, Tb, H, W]
    pred = torch.cat(preds, dim=2)  # [B, 3, T', H, W]
    target = clips.pixels[:, :, start:]
    mask = clips.object_mask[:, :, start:].float()  # [B, 1, T', H, W]
    err = (pred - target).pow(2).mean(1, keepdim=True)  # [B, 1, T', H, W]
    whole = err.mean(dim=(0, 1, 3, 4)).numpy()
    obj_n = mask.sum(dim=(0, 1, 3, 4))
    obj = ((err * mask).sum(dim=(0, 1, 3, 4)) / obj_n.clamp(min=1)).numpy()
    obj[obj_n.numpy() == 0] = np.nan
    return whole, obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vae", help="a full VAE folder whose decoder is the models' (e.g. runs/vae-enc-anchor/vae)")
    parser.add_argument("models", nargs="+", help="student checkpoint folders")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--latent-frames", type=int, default=42)
    parser.add_argument("--mixture", default="plain=0.25,wraparound=0.75")
    parser.add_argument("--split", choices=("train", "heldout"), default="heldout")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    first = VideoSSMPipeline.from_pretrained(args.models[0], device="cpu")
    vae = load_frozen_vae(args.vae, "cpu")
    data = WorldRollouts(vae, first.model_config, args.latent_frames, first.stream_config.block_frames,
                         parse_mixture(args.mixture), split=args.split)
    clips = data.batch(np.random.default_rng([args.seed, 99]), args.clips)
    fps = first.model_config.fps
    for path in args.models:
        pipe = VideoSSMPipeline.from_pretrained(path, device="cpu")
        whole, obj = rollout_errors(pipe, clips, args.seed)
        span = int(2.5 * fps)
        parts = [f"{i * 2.5:.1f}-{(i + 1) * 2.5:.1f}s {np.nanmean(obj[i * span:(i + 1) * span]):.3f}"
                 for i in range(-(-len(obj) // span))]
        print(f"{path}: whole-frame MSE {whole.mean():.4f}, object MSE {np.nanmean(obj):.3f} "
              f"(after the first block, by time: {', '.join(parts)})")


if __name__ == "__main__":
    main()
