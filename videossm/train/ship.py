"""Ship a trained student into `assets/`: the same checkpoint folder with the transformer stored in fp16.

    python -m videossm train ship --student runs/long-hybrid/student --to assets/videossm-hybrid

fp16 halves the size (the 6.5M-parameter `tiny` transformer: 13 MB instead of 26 MB), and the VAE keeps
only its decoder, in fp16 (streaming never encodes; the small VAE's wide encoder is 12 of its 13 MB), so
the three shipped variants (hybrid, sink, window) stay within the ~50 MB budget. Loading casts the
weights back to the model's dtype (float32 on a CPU); encoding with a shipped VAE is refused with a
message. The copy is written beside the target and moved into place, so an interrupted ship never
leaves a half-written model where the app looks for one.

`--vae DIR` ships another VAE in place of the student's: a decoder trained later on the same frozen
encoder (`train vae --encoder-from`), which decodes the very latents the student was trained on. It is
refused unless its encoder weights and latent statistics equal the student's VAE's.

`--window-frames N` / `--sink-frames N` set the stream settings the checkpoint is loaded with (its config's
`stream` section), where inference streams better with other settings than training used (docs/TRAINING.md,
"The local window at inference"). A shipped checkpoint may be shipped again onto itself to change them: its
fp16 weights and decoder-only VAE pass through unchanged.
"""

from __future__ import annotations

import os
import shutil

from ..weights.checkpoint import CONFIG_NAME, TRANSFORMER_NAME, CheckpointError, load_safetensors, read_config


def check_same_latent_space(student_vae: str, vae: str) -> None:
    """Raises CheckpointError unless `vae` has the student VAE's encoder and latent statistics."""
    from diffusers import AutoencoderKLWan

    from ..models.vae import latent_space_difference

    if not os.path.isfile(os.path.join(vae, "config.json")):
        raise CheckpointError(f"--vae {vae!r} is not a saved VAE folder (no config.json)")
    difference = latent_space_difference(AutoencoderKLWan.from_pretrained(student_vae),
                                         AutoencoderKLWan.from_pretrained(vae), "encoder")
    if difference is None:
        return
    what, differ = difference
    if not differ:
        raise CheckpointError(f"--vae {vae}: its {what} differs from the student's VAE ({student_vae}); it "
                              f"would decode another latent space")
    raise CheckpointError(f"--vae {vae}: its encoder differs from the student's VAE ({student_vae}) in "
                          f"{len(differ)} tensors, e.g. {differ[0]}; train it with `train vae --encoder-from "
                          f"{student_vae}`")


def shipped_stream(config: dict, window_frames: int | None, sink_frames: int | None) -> dict:
    """The checkpoint config's `stream` section with the shipped window and sink (None: keep the student's);
    ConfigError names a setting the stream cannot run with."""
    import dataclasses

    from ..config import StreamConfig

    stream = StreamConfig(**config.get("stream", {})).with_overrides(window_frames=window_frames,
                                                                     sink_frames=sink_frames)
    return dataclasses.asdict(stream)


def ship(args) -> dict:
    import json

    from safetensors.torch import save_file

    from ..models.vae import VAE_WEIGHTS, decoder_only_state, load_vae

    config = read_config(args.student)
    if not config.get("trained"):
        raise CheckpointError(f"{args.student}: its config says trained=false; only trained students are shipped")
    config["stream"] = shipped_stream(config, args.window_frames, args.sink_frames)
    target = os.path.normpath(args.to)
    staging = f"{target}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    if args.vae:
        check_same_latent_space(os.path.join(args.student, "vae"), args.vae)
    shutil.copytree(args.student, staging, ignore=shutil.ignore_patterns(TRANSFORMER_NAME))
    if args.vae:
        shutil.rmtree(os.path.join(staging, "vae"))
        shutil.copytree(args.vae, os.path.join(staging, "vae"))
    weights = load_safetensors(os.path.join(args.student, TRANSFORMER_NAME))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(half, os.path.join(staging, TRANSFORMER_NAME))
    vae_dir = os.path.join(staging, "vae")
    save_file(decoder_only_state(load_vae(vae_dir)), os.path.join(vae_dir, VAE_WEIGHTS))  # full or shipped
    with open(os.path.join(staging, CONFIG_NAME), "w") as f:
        json.dump(config, f, indent=2)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(target) for f in files)
    vae_note = f", VAE from {args.vae}" if args.vae else ""
    stream = config["stream"]
    print(f"shipped {args.student} -> {target} ({size / 2**20:.1f} MiB, transformer in fp16{vae_note}; streams "
          f"with window {stream['window_frames']}, sink {stream['sink_frames']})")
    return {"target": target, "bytes": size, "vae": args.vae, "stream": stream}
