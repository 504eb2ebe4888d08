"""How much the fast CPU decoder ops save: the streaming VAE decode with diffusers' own ops against
`use_fast_decoder_ops` (oneDNN for the large convs, x * rsqrt(sum x^2) for the RMS norms).

    PYTHONPATH=. python bench/decode_ops.py [MODEL] [--blocks 20] [--threads 2]

Both decoders hold the same weights and decode the same random latent blocks through their own feature
caches. It prints the mean milliseconds per block for each, the speed-up, and the largest pixel difference
(float rounding only; the frames are compared in [-1, 1]).
"""

from __future__ import annotations

import argparse
import time

import torch

from videossm.models.vae import DecoderState, decode_frames, load_vae
from videossm.pipeline import VideoSSMPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="assets/videossm-hybrid", help="a checkpoint folder with vae/")
    parser.add_argument("--blocks", type=int, default=20, help="latent blocks to decode (the first 3 warm up)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.blocks < 4:
        parser.error(f"--blocks must be at least 4 (3 warm up), got {args.blocks}")
    torch.set_num_threads(args.threads)
    pipe = VideoSSMPipeline.from_pretrained(args.model, device="cpu")
    fast_vae = pipe.decoder.vae  # the pipeline's decoder already uses the fast ops
    reference_vae = load_vae(f"{args.model}/vae").eval()  # a fresh copy with diffusers' ops
    assert type(reference_vae.decoder.conv_in) is not type(fast_vae.decoder.conv_in)  # load_vae does not switch
    cfg = pipe.model_config
    shape = (1, cfg.in_channels, pipe.stream_config.block_frames, cfg.latent_height, cfg.latent_width)
    gen = torch.Generator().manual_seed(0)
    blocks = [torch.randn(shape, generator=gen) for _ in range(args.blocks)]
    seconds, outputs = {}, {}
    for name, vae in (("diffusers ops", reference_vae), ("fast ops", fast_vae)):
        cache = DecoderState(feat_cache=[None] * vae._cached_conv_counts["decoder"])
        frames_done, spent, out = 0, 0.0, []
        for i, latents in enumerate(blocks):
            z = pipe.decoder.denormalize(latents)
            t0 = time.perf_counter()
            with torch.no_grad():
                pixels = decode_frames(vae, z, cache.feat_cache, frames_done).clamp(-1, 1)
            if i >= 3:
                spent += time.perf_counter() - t0
            frames_done += z.shape[2]
            out.append(pixels)
        seconds[name], outputs[name] = spent / (args.blocks - 3), torch.cat(out, dim=2)
    diff = (outputs["diffusers ops"] - outputs["fast ops"]).abs().max().item()
    frames = outputs["fast ops"].shape[2] / args.blocks
    for name, s in seconds.items():
        print(f"{name:14s} {1e3 * s:7.1f} ms per block ({frames:.0f} frames, {frames / s:6.1f} frames/s decode only)")
    print(f"speed-up {seconds['diffusers ops'] / seconds['fast ops']:.2f}x; largest pixel difference {diff:.1e} "
          f"(threads {args.threads})")


if __name__ == "__main__":
    main()
