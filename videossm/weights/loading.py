"""Build a VideoSSMPipeline from a preset name (fresh, untrained weights) or a checkpoint folder of ours."""

from __future__ import annotations

import logging
import os

import torch
from diffusers import AutoencoderKLWan
from transformers import UMT5EncoderModel

from ..config import MODEL_PRESETS, ConfigError, ModelConfig, StreamConfig, get_model_config
from ..models.text_encoder import RandomTextEncoder, TextEncoder, tiny_umt5_config, word_level_tokenizer
from ..models.transformer import VideoSSMTransformer
from ..models.vae import StreamingDecoder, layout_vae_config, load_vae
from ..world.grammar import vocabulary
from .checkpoint import (TRANSFORMER_NAME, CheckpointError, check_state_dict, load_safetensors, read_config,
                         save_transformer, write_config)

logger = logging.getLogger(__name__)


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def random_pipeline(pipe_cls, preset: str, device: torch.device, memory: str | None, dtype, seed: int,
                    random_text: bool = False, **overrides):
    """A freshly initialised model of a preset: it runs the whole code path but generates noise.
    random_text: random prompt embeddings of the preset's shape instead of a small UMT5 (benchmarks).
    On the meta device nothing is allocated: shapes only (`bench --dry-run`)."""
    config = get_model_config(preset)
    dtype = dtype or default_dtype(device)
    build_device = device if device.type == "meta" else torch.device("cpu")
    with torch.random.fork_rng(devices=[]), torch.device(build_device):
        torch.manual_seed(seed)
        transformer = VideoSSMTransformer(config)
        if not random_text:  # same construction order as ever: the same seed gives the same weights
            tokenizer = word_level_tokenizer(vocabulary())
            text_model = UMT5EncoderModel(tiny_umt5_config(len(tokenizer), config.text_dim))
        vae = AutoencoderKLWan(**layout_vae_config(config.vae_layout, z_dim=config.in_channels))
    transformer = transformer.to(device, dtype)
    if random_text:
        text_encoder = RandomTextEncoder(config.text_len, config.text_dim, device, seed)
    else:
        text_encoder = TextEncoder(text_model, tokenizer, config.text_len, device, word_level=True)
    # The Wan2.1-layout VAE decodes in the model's dtype on a GPU (its real deployment); the small one in float32.
    vae = vae.to(device)
    if config.vae_layout == "wan2.1" and device.type != "cpu" and dtype != torch.float32:
        vae = vae.to(dtype)
    stream_config = StreamConfig().with_overrides(memory=memory, **overrides)
    logger.warning("model %r is freshly initialised: it is UNTRAINED and generates noise", preset)
    return pipe_cls(transformer, text_encoder, StreamingDecoder(vae), stream_config, name=preset,
                    trained=False, description=f"untrained {preset} preset (seed {seed})")


def load_folder(pipe_cls, path: str, device: torch.device, memory: str | None, dtype, **overrides):
    config = read_config(path)
    try:
        model_config = ModelConfig.from_dict(config["model"])
        stream_defaults = StreamConfig(**config.get("stream", {}))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{os.path.join(path, 'videossm_config.json')}: bad config ({e})") from None
    transformer = VideoSSMTransformer(model_config)
    weights_path = os.path.join(path, TRANSFORMER_NAME)
    state_dict = load_safetensors(weights_path)
    check_state_dict(state_dict, transformer, weights_path)
    transformer.load_state_dict(state_dict)
    transformer = transformer.to(device, dtype or default_dtype(device))
    te = config.get("text_encoder", {})
    for sub in ("text_encoder", "tokenizer"):
        if not os.path.isdir(os.path.join(path, sub)):
            raise CheckpointError(f"{os.path.join(path, sub)}: not found (the checkpoint's text encoder)")
    text_encoder = TextEncoder.from_pretrained(path, te.get("max_length", model_config.text_len),
                                               te.get("word_level", False), device)
    vae_dir = os.path.join(path, "vae")
    if not os.path.isdir(vae_dir):
        raise CheckpointError(f"{vae_dir}: not found (the checkpoint's VAE)")
    decoder = StreamingDecoder(load_vae(vae_dir).to(device))
    stream_config = stream_defaults.with_overrides(memory=memory, **overrides)
    name = config.get("name", os.path.basename(os.path.normpath(path)))
    return pipe_cls(transformer, text_encoder, decoder, stream_config, name=name,
                    trained=bool(config.get("trained", False)), description=config.get("description", ""))


RANDOM_PREFIX = "random:"
REAL_WEIGHT_OPTIONS = ("cache_dir", "text_encoder", "height", "width", "embedding_cache_dir")


def load_pipeline(pipe_cls, name_or_path: str, device: torch.device, memory=None, dtype=None, seed=0,
                  random_text: bool = False, **overrides):
    """Resolution order: a local folder; a named real checkpoint (hub.HUB_MODELS); a preset for fresh
    weights (`random:NAME` forces one, e.g. `random:wan2.1-t2v-1.3b`); a hub repo id `org/name`.
    random_text (presets only): random prompt embeddings of the preset's shape instead of a text encoder."""
    from .hub import HUB_MODELS, detect_layout, load_wan_pipeline, resolve, spec_for_repo

    real = {k: overrides.pop(k) for k in REAL_WEIGHT_OPTIONS if k in overrides}
    preset = name_or_path[len(RANDOM_PREFIX):] if name_or_path.startswith(RANDOM_PREFIX) else None
    if random_text and preset is None and name_or_path not in MODEL_PRESETS:
        raise ConfigError(f"random_text is for presets (fresh weights), not the model {name_or_path!r}")
    if random_text and preset is None:
        preset = name_or_path  # fresh weights of the preset, even where the name is also a real checkpoint
    if preset is None and name_or_path in HUB_MODELS:
        return load_wan_pipeline(pipe_cls, HUB_MODELS[name_or_path], device, memory, dtype, **real, **overrides)
    if preset is None and name_or_path in MODEL_PRESETS and not os.path.isdir(name_or_path):
        preset = name_or_path
    if preset is not None:
        if preset not in MODEL_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; accepted: {', '.join(MODEL_PRESETS)}")
        return random_pipeline(pipe_cls, preset, device, memory, dtype, seed, random_text, **overrides)
    if not os.path.isdir(name_or_path) and name_or_path.count("/") != 1:
        raise ConfigError(f"unknown model {name_or_path!r}: not a folder, not a hub repo id (org/name), not one of "
                          f"the named checkpoints {', '.join(HUB_MODELS)}, and not one of the presets "
                          f"{', '.join(MODEL_PRESETS)}")
    folder = resolve(name_or_path, None if os.path.isdir(name_or_path) else
                     ["videossm_config.json", "model_index.json", "config.json", "vae/config.json"], real.get("cache_dir"))
    if detect_layout(folder) == "videossm":
        folder = resolve(name_or_path, None, real.get("cache_dir"))  # the whole checkpoint
        return load_folder(pipe_cls, folder, device, memory, dtype, **overrides)
    return load_wan_pipeline(pipe_cls, spec_for_repo(name_or_path), device, memory, dtype, **real, **overrides)


def save_pipeline(pipe, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    save_transformer(pipe.transformer, os.path.join(path, TRANSFORMER_NAME))
    pipe.text_encoder.save_pretrained(path)
    if pipe.decoder is not None:
        pipe.decoder.vae.save_pretrained(os.path.join(path, "vae"))
    write_config(path, pipe.model_config, pipe.stream_config, trained=pipe.trained, description=pipe.description,
                 text_encoder={"max_length": pipe.text_encoder.max_length, "word_level": pipe.text_encoder.word_level},
                 vae={}, extra={"name": pipe.name})
