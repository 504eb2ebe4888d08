"""A student between two students: the transformer's weights interpolated, (1 - a) * BASE + a * TUNED.

    PYTHONPATH=. python bench/interpolate_students.py BASE TUNED --alpha 0.5 --out runs/soup-a05

Weight interpolation between a model and its fine-tuned copy (WiSE-FT) often keeps some of what the
fine-tune gained and some of what it lost. The folder is TUNED's (config, text encoder, tokenizer, VAE)
with the interpolated transformer in float32; both must be the same model (same config and tensors) and
decode with the same VAE decoder. The result is written beside OUT and moved into place. It is a trial
tool: its config says what it was made from, and `eval-world` and `bench/rollout_error.py` measure it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from safetensors.torch import load_file, save_file

from videossm.models.vae import latent_space_difference, load_vae
from videossm.weights.checkpoint import CONFIG_NAME, TRANSFORMER_NAME, CheckpointError, read_config


def interpolate(base: str, tuned: str, alpha: float, out: str) -> str:
    if not 0 <= alpha <= 1:
        raise ValueError(f"--alpha must be in [0, 1], got {alpha}")
    base_config, tuned_config = read_config(base), read_config(tuned)
    if base_config["model"] != tuned_config["model"]:
        raise ValueError(f"{base} and {tuned} are different models (their configs' `model` differ)")
    base_w = load_file(os.path.join(base, TRANSFORMER_NAME))
    tuned_w = load_file(os.path.join(tuned, TRANSFORMER_NAME))
    if base_w.keys() != tuned_w.keys():
        raise ValueError(f"{base} and {tuned} have different transformer tensors, e.g. "
                         f"{sorted(base_w.keys() ^ tuned_w.keys())[0]}")
    for k, v in tuned_w.items():
        if v.shape != base_w[k].shape:
            raise ValueError(f"{k}: shape {tuple(base_w[k].shape)} in {base}, {tuple(v.shape)} in {tuned}")
    # compared as train rollout's --vae is: in fp16, the precision a shipped decoder is stored in
    difference = latent_space_difference(load_vae(os.path.join(base, "vae")), load_vae(os.path.join(tuned, "vae")),
                                          "decoder", half=True)
    if difference is not None:
        what, differ = difference
        raise ValueError(f"{base} and {tuned} decode with different VAE decoders "
                         f"({differ[0] if differ else what} differs)")
    mixed = {k: (base_w[k].float().lerp(v.float(), alpha) if v.is_floating_point() else v).contiguous()
             for k, v in tuned_w.items()}
    staging = f"{os.path.normpath(out)}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(tuned, staging, ignore=shutil.ignore_patterns(TRANSFORMER_NAME))
    save_file(mixed, os.path.join(staging, TRANSFORMER_NAME))
    tuned_config["description"] = f"(1 - {alpha}) x {base} + {alpha} x {tuned} (transformer weights)"
    with open(os.path.join(staging, CONFIG_NAME), "w") as f:
        json.dump(tuned_config, f, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("base", help="a student folder, e.g. assets/videossm-hybrid")
    p.add_argument("tuned", help="a student trained on from BASE, e.g. runs/rollout-adv-hybrid/student")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of TUNED (0: BASE, 1: TUNED)")
    p.add_argument("--out", required=True, help="the new student folder (replaced if present)")
    args = p.parse_args(argv)
    try:
        print("wrote", interpolate(args.base, args.tuned, args.alpha, args.out))
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
