"""Ship a trained student into `assets/`: the same checkpoint folder with the transformer stored in fp16.

    python -m videossm train ship --student runs/long-hybrid/student --to assets/videossm-hybrid

fp16 halves the size (the 6.5M-parameter `tiny` transformer: 13 MB instead of 26 MB), so the three
shipped variants (hybrid, sink, window) stay within the ~50 MB budget; loading casts the weights back to
the model's dtype (float32 on a CPU). The copy is written beside the target and moved into place, so an
interrupted ship never leaves a half-written model where the app looks for one.
"""

from __future__ import annotations

import os
import shutil


from ..weights.checkpoint import TRANSFORMER_NAME, CheckpointError, load_safetensors, read_config




def ship(args) -> dict:
    from safetensors.torch import save_file

    config = read_config(args.student)
    if not config.get("trained"):
        raise CheckpointError(f"{args.student}: its config says trained=false; only trained students are shipped")
    target = os.path.normpath(args.to)
    staging = f"{target}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(args.student, staging, ignore=shutil.ignore_patterns(TRANSFORMER_NAME))
    weights = load_safetensors(os.path.join(args.student, TRANSFORMER_NAME))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(half, os.path.join(staging, TRANSFORMER_NAME))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(target) for f in files)
    print(f"shipped {args.student} -> {target} ({size / 2**20:.1f} MiB, transformer in fp16)")
    return {"target": target, "bytes": size}
