"""Does a VAE's encoder give back a student's own latents? The check for an encoder recovered with
`train vae --decoder-from` (or any full VAE meant to train a student further).

    PYTHONPATH=. python bench/latent_roundtrip.py MODEL VAE_DIR [--videos 4] [--seconds 4] [--seed 0]

The student MODEL streams `--videos` videos of random training prompts. Their decoded frames (uint8, as
written to a file) are encoded by VAE_DIR's encoder (posterior mode), normalised with its latent statistics,
and compared with the latents the student made. It prints, over all latent frames and for the first one apart
(the causal VAE codes the first frame alone):
- the relative error, mean (z_enc - z)^2 / mean z^2 (0: the encoder inverts the decoder on the student's
  latents; 1: no better than zeros);
- the mean cosine similarity per latent cell (over channels);
- the PSNR of the frames decoded again from z_enc against the student's frames.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from videossm.models.vae import StreamingDecoder, load_vae, to_uint8_frames
from videossm.pipeline import VideoSSMPipeline
from videossm.world import sample_prompt


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a student checkpoint folder, e.g. assets/videossm-hybrid")
    parser.add_argument("vae", help="a full VAE folder (with an encoder), e.g. runs/vae-enc/vae")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = VideoSSMPipeline.from_pretrained(args.model, device="cpu")
    vae = load_vae(args.vae).eval()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    redecoder = StreamingDecoder(vae)  # the same VAE's decoder (switched to the fast ops; encoding is unchanged)
    rng = np.random.default_rng(args.seed)
    sq_err, sq_ref, first_err, first_ref, cosines, psnrs = 0.0, 0.0, 0.0, 0.0, [], []
    for v in range(args.videos):
        prompt = sample_prompt(rng)
        chunks = list(pipe.stream(prompt, seconds=args.seconds, seed=args.seed + v))
        latents = torch.cat([c.latents for c in chunks], dim=2).float()  # [1, C, F, h, w], normalised
        frames = np.concatenate([c.frames for c in chunks])  # [T, H, W, 3] uint8 (the stream stops at --seconds)
        used = 1 + (len(frames) - 1) // 4  # the latent frames whose pixel frames were all streamed
        latents, frames = latents[:, :, :used], frames[: 1 + 4 * (used - 1)]
        pixels = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0  # [1, 3, T, H, W]
        with torch.no_grad():
            encoded = (vae.encode(pixels).latent_dist.mode() - mean) / std  # [1, C, F, h, w]
        diff = (encoded - latents).pow(2)
        sq_err, sq_ref = sq_err + float(diff.sum()), sq_ref + float(latents.pow(2).sum())
        first_err, first_ref = first_err + float(diff[:, :, 0].sum()), first_ref + float(latents[:, :, 0].pow(2).sum())
        cosines.append(float(torch.nn.functional.cosine_similarity(encoded, latents, dim=1).mean()))
        again = to_uint8_frames(redecoder.decode(redecoder.new_state(), encoded))
        psnrs.append(psnr(again[: len(frames)], frames))
        print(f"video {v}: {prompt!r}: relative error {float(diff.mean() / latents.pow(2).mean()):.3f}, "
              f"cosine {cosines[-1]:.3f}, re-decoded PSNR {psnrs[-1]:.1f} dB")
    print(f"all {args.videos} videos: relative error {sq_err / sq_ref:.3f} (first latent frame {first_err / first_ref:.3f}), "
          f"cosine {np.mean(cosines):.3f}, re-decoded PSNR {np.mean(psnrs):.1f} dB")


if __name__ == "__main__":
    main()
