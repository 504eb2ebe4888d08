"""The project's own checkpoint format: a folder (or hub repo) with

    videossm_config.json        {"format": "videossm", "format_version": 1, "model": ModelConfig,
                                 "stream": StreamConfig defaults, "trained": bool, "description": str,
                                 "text_encoder": {"max_length", "word_level"}, "vae": {}}
    transformer.safetensors     VideoSSMTransformer state dict (diffusers Wan names + blocks.N.memory.*)
    text_encoder/ tokenizer/    transformers UMT5EncoderModel and tokenizer (save_pretrained layout)
    vae/                        diffusers AutoencoderKLWan (save_pretrained layout)
"""

from __future__ import annotations

import json
import logging
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import ModelConfig, StreamConfig

logger = logging.getLogger(__name__)

CONFIG_NAME = "videossm_config.json"
TRANSFORMER_NAME = "transformer.safetensors"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the model it claims to be."""


def read_config(path: str) -> dict:
    config_path = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{config_path}: not found; a VideoSSM checkpoint folder holds {CONFIG_NAME} "
                              f"and {TRANSFORMER_NAME}")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from None
    if config.get("format") != "videossm":
        raise CheckpointError(f"{config_path}: format is {config.get('format')!r}, expected 'videossm'")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: format_version {config['format_version']} is newer than this "
                              f"code understands ({FORMAT_VERSION}); upgrade videossm")
    return config


def check_state_dict(state_dict: dict[str, torch.Tensor], model: torch.nn.Module, source: str,
                     allow_missing_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped key. Returns the keys
    allowed to be missing (e.g. memory modules of a base checkpoint) that were missing."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    allowed = [k for k in missing if any(p in k for p in allow_missing_prefixes)]
    missing = [k for k in missing if k not in allowed]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in state_dict if k in expected and state_dict[k].shape != expected[k].shape]
    problems = []
    for label, keys in (("shape mismatch", mismatched), ("missing keys", missing), ("unexpected keys", unexpected)):
        if keys:
            shown = keys[:12] + ([f"... and {len(keys) - 12} more"] if len(keys) > 12 else [])
            problems.append(f"{label} ({len(keys)}): " + "; ".join(shown))
    if problems:
        raise CheckpointError(f"{source} does not fit the model config: " + " | ".join(problems))
    return allowed


def load_safetensors(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not found")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot be read as safetensors ({e}); the file may be truncated") from None


def save_transformer(model: torch.nn.Module, path: str) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path + ".partial"
    save_file(state, tmp)
    os.replace(tmp, path)


def write_config(path: str, model_config: ModelConfig, stream_config: StreamConfig, *, trained: bool,
                 description: str, text_encoder: dict, vae: dict, extra: dict | None = None) -> None:
    import dataclasses

    config = {
        "format": "videossm", "format_version": FORMAT_VERSION, "trained": trained, "description": description,
        "model": model_config.to_dict(), "stream": dataclasses.asdict(stream_config),
        "text_encoder": text_encoder, "vae": vae, **(extra or {}),
    }
    tmp = os.path.join(path, CONFIG_NAME + ".partial")
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp, os.path.join(path, CONFIG_NAME))
