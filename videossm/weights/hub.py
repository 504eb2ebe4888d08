"""Real Wan2.1-based weights: model names, hub download, layout detection, memory planning.

    wan2.1-t2v-1.3b             Wan-AI/Wan2.1-T2V-1.3B (original layout), the bidirectional base model
    wan2.1-t2v-1.3b-diffusers   Wan-AI/Wan2.1-T2V-1.3B-Diffusers (transformer/ vae/ text_encoder/ tokenizer/)
    self-forcing                gdhe17/Self-Forcing checkpoints/self_forcing_dmd.pt (generator_ema) + Wan's VAE/UMT5
    longlive                    Efficient-Large-Model/LongLive models/longlive_base.pt + LoRA models/lora.pt

Files come through `huggingface_hub.snapshot_download` with allow_patterns (only what is needed), from the
standard cache, honouring HF_HUB_OFFLINE; a local folder in either Wan layout (or ours) works too. Every
format goes through the same path: read -> convert keys to diffusers names -> infer the ModelConfig from
the shapes -> check keys precisely (only `blocks.N.memory.*` may be missing: the zero-gated memory the base
checkpoints do not have) -> place components by the memory plan.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKLWan
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from ..config import ConfigError, ModelConfig, StreamConfig, get_model_config
from ..models.text_encoder import TextEncoder
from ..models.transformer import VideoSSMTransformer
from ..models.vae import StreamingDecoder
from .checkpoint import CheckpointError, check_state_dict, load_safetensors
from .convert import (is_original_umt5, is_original_wan_vae, merge_lora, pick_state_dict, read_state_dict,
                      umt5_config_kwargs, umt5_to_transformers, wan_transformer_to_diffusers, wan_vae_config,
                      wan_vae_to_diffusers)

logger = logging.getLogger(__name__)

WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
# The original Wan layout's file names.
WAN_CONFIG, WAN_WEIGHTS, WAN_VAE, WAN_T5, WAN_TOKENIZER = (
    "config.json", "diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth",
    "google/umt5-xxl")
WAN_PARTS = [WAN_CONFIG, WAN_VAE, WAN_T5, WAN_TOKENIZER + "/*"]
DIFFUSERS_PARTS = ["model_index.json", "vae/*", "text_encoder/*", "tokenizer/*"]
MEMORY_KEYS = ".memory."  # the only keys a base checkpoint may lack
TEXT_ENCODER_PLACEMENTS = ("auto", "gpu", "cpu", "offload")
GIB = 2**30


@dataclass(frozen=True)
class HubModel:
    """A named public checkpoint. The transformer comes from `repo` (`weights` file, or the Wan base layout
    when None); VAE, UMT5 encoder, tokenizer and architecture config come from `base_repo`."""

    name: str
    repo: str
    description: str
    weights: str | None = None
    state_keys: tuple[str, ...] = ("generator_ema", "generator")
    lora: str | None = None
    lora_key: str = "generator_lora"
    lora_rank: int = 256
    lora_alpha: float = 256.0
    base_repo: str = WAN_REPO
    stream: dict = field(default_factory=dict)  # StreamConfig defaults this checkpoint was trained with
    trained_frames: int | None = None  # global-attention horizon in latent frames (warned past it)
    download_gb: float = 0.0


HUB_MODELS: dict[str, HubModel] = {m.name: m for m in (
    HubModel("wan2.1-t2v-1.3b", WAN_REPO, "Wan2.1-T2V-1.3B, the bidirectional base model (the teacher; not "
             "distilled for few-step causal streaming, so streamed output is poor)",
             stream=dict(memory="full", rope="absolute"), trained_frames=21, download_gb=17.5),
    HubModel("wan2.1-t2v-1.3b-diffusers", WAN_REPO + "-Diffusers", "Wan2.1-T2V-1.3B in the diffusers layout",
             base_repo=WAN_REPO + "-Diffusers", stream=dict(memory="full", rope="absolute"), trained_frames=21,
             download_gb=28.0),
    HubModel("self-forcing", "gdhe17/Self-Forcing", "Self-Forcing DMD (causal, 4 steps; trained with global "
             "attention over 21 latent frames = 5 s)", weights="checkpoints/self_forcing_dmd.pt",
             stream=dict(memory="full", rope="absolute"), trained_frames=21, download_gb=16.0),
    HubModel("longlive", "Efficient-Large-Model/LongLive", "LongLive 1.0 (causal, 4 steps, window 12 + sink 3, "
             "LoRA merged; tuned on streams up to 240 latent frames)", weights="models/longlive_base.pt",
             lora="models/lora.pt", stream=dict(memory="sink", window_frames=12, sink_frames=3, rope="absolute"),
             download_gb=18.0),
)}


# ------------------------------------------------------------------------------------------- hub
def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return constants.HF_HUB_OFFLINE if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def resolve(repo_or_path: str, patterns: list[str] | None, cache_dir: str | None = None,
            revision: str | None = None) -> str:
    """A local folder as it is, or the snapshot folder of a hub repo holding (at least) `patterns`.
    Missing repos and offline misses become CheckpointError naming the repo and HF_HUB_OFFLINE."""
    if os.path.isdir(repo_or_path):
        return repo_or_path
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    offline = _offline()
    try:
        return snapshot_download(repo_or_path, revision=revision, allow_patterns=patterns, cache_dir=cache_dir,
                                 local_files_only=offline)
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE=1 forbids downloading; unset it (or set HF_HUB_OFFLINE=0) to download it"
               if offline else "the hub could not be reached; check the network, or download it elsewhere "
               "with `hf download` and copy the cache")
        raise CheckpointError(f"model repo {repo_or_path!r} is not in the local hub cache {cache_dir}, and {why}") \
            from None
    except GatedRepoError:
        raise CheckpointError(f"model repo {repo_or_path!r} is gated: accept its licence on huggingface.co and "
                              f"log in (`hf auth login`)") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as e:
        raise CheckpointError(f"model repo {repo_or_path!r} not found on the hub ({type(e).__name__})") from None
    except HfHubHTTPError as e:
        raise CheckpointError(f"downloading {repo_or_path!r} failed: {e}") from None


def _need(folder: str, relpath: str, what: str) -> str:
    path = os.path.join(folder, relpath)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: not found ({what})")
    return path


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def detect_layout(folder: str) -> str:
    """'videossm' (ours), 'diffusers' (transformer/ vae/ ...) or 'wan' (original); else CheckpointError."""
    if os.path.isfile(os.path.join(folder, "videossm_config.json")):
        return "videossm"
    if os.path.isdir(os.path.join(folder, "vae")) or os.path.isfile(os.path.join(folder, "model_index.json")):
        return "diffusers"
    if any(os.path.isfile(os.path.join(folder, f)) for f in (WAN_VAE, WAN_T5, WAN_CONFIG)):
        return "wan"
    raise CheckpointError(f"{folder}: not a model folder: expected videossm_config.json (VideoSSM), vae/ + "
                          f"text_encoder/ (diffusers Wan layout) or {WAN_VAE} + {WAN_T5} (original Wan layout)")


# ------------------------------------------------------------------------------- transformer
def read_diffusers_weights(folder: str) -> dict[str, torch.Tensor]:
    """diffusion_pytorch_model.safetensors, or the shards named by its .index.json."""
    single = os.path.join(folder, WAN_WEIGHTS)
    index = single + ".index.json"
    if os.path.isfile(single):
        return load_safetensors(single)
    if os.path.isfile(index):
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        state_dict = {}
        for shard in shards:
            state_dict.update(load_safetensors(_need(folder, shard, f"a shard named by {index}")))
        return state_dict
    raise CheckpointError(f"{single}: not found (nor a sharded {os.path.basename(index)}): the transformer weights")


def infer_model_config(state_dict: dict[str, torch.Tensor], num_heads: int | None, source: str,
                       base: ModelConfig | None = None, **overrides) -> ModelConfig:
    """ModelConfig of diffusers-named Wan weights, from their shapes; the head count (not visible in the
    shapes: q/k norms span all heads) comes from the checkpoint's config, else Wan's head size 128."""
    base = base or get_model_config("wan2.1-t2v-1.3b")
    try:
        patch = state_dict["patch_embedding.weight"]  # [D, C, pt, ph, pw]
        inner, in_channels = patch.shape[:2]
        fields = dict(
            patch_size=tuple(patch.shape[2:]), in_channels=in_channels,
            out_channels=state_dict["proj_out.weight"].shape[0] // math.prod(patch.shape[2:]),
            text_dim=state_dict["condition_embedder.text_embedder.linear_1.weight"].shape[1],
            freq_dim=state_dict["condition_embedder.time_embedder.linear_1.weight"].shape[1],
            ffn_dim=state_dict["blocks.0.ffn.net.0.proj.weight"].shape[0],
            num_layers=1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")),
            cross_attn_norm="blocks.0.norm2.weight" in state_dict)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{source}: not a Wan transformer state dict (missing {e})") from None
    num_heads = num_heads or max(1, inner // 128)
    if inner % num_heads:
        raise CheckpointError(f"{source}: width {inner} is not divisible by num_heads {num_heads}")
    fields.update(num_attention_heads=num_heads, attention_head_dim=inner // num_heads)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return dataclasses.replace(base, **fields).validate()
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{source}: unsupported architecture ({e})") from None


def build_transformer(state_dict: dict[str, torch.Tensor], config: ModelConfig, source: str,
                      dtype: torch.dtype) -> VideoSSMTransformer:
    """Check keys precisely (memory modules may be missing: they stay zero-gated) and load."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the memory modules' init (zero-gated) is the same on every load
        transformer = VideoSSMTransformer(config)
    missing_memory = check_state_dict(state_dict, transformer, source, allow_missing_prefixes=(MEMORY_KEYS,))
    transformer.load_state_dict(state_dict, strict=False)
    if missing_memory:
        logger.info("%s: %d memory-module tensors not in the checkpoint; they keep their zero-gated init "
                    "(untrained memory changes nothing)", source, len(missing_memory))
    return transformer.to(dtype)


# ----------------------------------------------------------------------------- VAE, text encoder
def load_vae(folder: str, layout: str) -> tuple[AutoencoderKLWan, str]:
    if layout == "diffusers":
        vae_dir = _need(folder, "vae", "the diffusers VAE folder")
        try:
            return AutoencoderKLWan.from_pretrained(vae_dir), vae_dir
        except (OSError, ValueError, EnvironmentError) as e:
            raise CheckpointError(f"{vae_dir}: cannot load AutoencoderKLWan ({e})") from None
    path = _need(folder, WAN_VAE, "the Wan VAE")
    state_dict = read_state_dict(path)
    if not is_original_wan_vae(state_dict):
        raise CheckpointError(f"{path}: not an original-layout Wan VAE (no encoder.downsamples.* keys)")
    config = wan_vae_config(state_dict, path)
    if config["z_dim"] != 16:  # Wan2.1's per-channel latent statistics (diffusers' defaults) are for 16
        raise CheckpointError(f"{path}: z_dim {config['z_dim']}; the Wan2.1 latent mean/std are known for 16 only")
    vae = AutoencoderKLWan(**config)
    converted = wan_vae_to_diffusers(state_dict, config["num_res_blocks"])
    check_state_dict(converted, vae, path)
    vae.load_state_dict(converted)
    return vae, path


def load_text_encoder(folder: str, layout: str, dtype: torch.dtype
                      ) -> tuple[UMT5EncoderModel, object, str]:
    tok_dir = _need(folder, "tokenizer" if layout == "diffusers" else WAN_TOKENIZER, "the UMT5 tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{tok_dir}: cannot load the tokenizer ({e})") from None
    if layout == "diffusers":
        te_dir = _need(folder, "text_encoder", "the diffusers UMT5 encoder folder")
        try:
            return UMT5EncoderModel.from_pretrained(te_dir, dtype=dtype), tokenizer, te_dir
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{te_dir}: cannot load UMT5EncoderModel ({e})") from None
    path = _need(folder, WAN_T5, "the Wan UMT5 encoder")
    state_dict = read_state_dict(path)
    if not is_original_umt5(state_dict):
        raise CheckpointError(f"{path}: not an original Wan T5 encoder (no token_embedding.weight)")
    config = UMT5Config(**umt5_config_kwargs(state_dict, path))
    converted = umt5_to_transformers(state_dict, path)
    with torch.device("meta"):  # 5.7B parameters: never materialise a float32 copy
        model = UMT5EncoderModel(config)
    check_state_dict(converted, model, path)
    model.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, assign=True)
    return model, tokenizer, path


# ------------------------------------------------------------------------------ memory planning
@dataclass(frozen=True)
class MemoryPlan:
    text_encoder: str  # "gpu", "offload" (CPU, moved to the GPU only to encode) or "cpu"
    needed_gb: float  # transformer + VAE + KV cache + activations + reserve
    text_encoder_gb: float
    available_gb: float

    def summary(self) -> str:
        return (f"GPU plan: {self.needed_gb:.1f} GiB for transformer + VAE + KV cache + activations, text encoder "
                f"{self.text_encoder_gb:.1f} GiB -> {self.text_encoder}; {self.available_gb:.1f} GiB free")


class GPUMemoryError(ConfigError):
    """The GPU cannot hold the model; the message carries the numbers."""


def plan_memory(available: int, transformer: int, vae: int, text_encoder: int, kv_cache: int, activations: int,
                reserve: int = GIB, text_encoder_placement: str = "auto") -> MemoryPlan:
    """Where the text encoder goes, given sizes in bytes. A pure function of sizes (testable on CPU).
    The transformer, VAE, KV cache and activations must fit, with `reserve` for the CUDA context and
    fragmentation; the text encoder goes on the GPU when it fits beside all that, is offloaded (moved in only
    while encoding, between blocks when activations are free) when it fits beside the weights and cache, and
    stays on the CPU otherwise. Raises GPUMemoryError with the numbers when even the core does not fit."""
    if text_encoder_placement not in TEXT_ENCODER_PLACEMENTS:
        raise ConfigError(f"text encoder placement must be one of {', '.join(TEXT_ENCODER_PLACEMENTS)}, got "
                          f"{text_encoder_placement!r}")
    core = transformer + vae + kv_cache + activations + reserve
    gb = lambda n: n / GIB  # noqa: E731
    if core > available:
        raise GPUMemoryError(
            f"the GPU is too small: {gb(available):.1f} GiB free, but {gb(core):.1f} GiB are needed (transformer "
            f"{gb(transformer):.2f} + VAE {gb(vae):.2f} + KV cache {gb(kv_cache):.2f} + activations "
            f"{gb(activations):.2f} + reserve {gb(reserve):.2f} GiB), before the text encoder "
            f"({gb(text_encoder):.1f} GiB, which can stay on the CPU); use a bigger GPU, a smaller window, or "
            f"--device cpu")
    if text_encoder_placement == "auto":
        if core + text_encoder <= available:
            text_encoder_placement = "gpu"
        elif core - activations + text_encoder <= available:
            text_encoder_placement = "offload"
        else:
            text_encoder_placement = "cpu"
    return MemoryPlan(text_encoder_placement, gb(core), gb(text_encoder), gb(available))


def _nbytes(module: torch.nn.Module, dtype: torch.dtype | None = None) -> int:
    size = torch.finfo(dtype).bits // 8 if dtype is not None else None
    return sum(p.numel() * (size or p.element_size()) for p in module.parameters())


def kv_cache_bytes(config: ModelConfig, stream: StreamConfig, dtype: torch.dtype, full_frames: int = 21) -> int:
    """K and V of every layer for the frames a block can see (window, or `full_frames` in full mode)."""
    frames = full_frames if stream.memory == "full" else stream.window_frames
    per_frame = 2 * config.tokens_per_frame * config.inner_dim * (torch.finfo(dtype).bits // 8) * config.num_layers
    return frames * per_frame


def activation_bytes(config: ModelConfig, stream: StreamConfig, dtype: torch.dtype) -> int:
    """Rough peak of one block's forward: a few [tokens, ffn_dim] buffers plus the decoder's frames."""
    tokens = config.tokens_per_frame * stream.block_frames
    return 4 * tokens * config.ffn_dim * (torch.finfo(dtype).bits // 8) + 512 * 2**20


# ---------------------------------------------------------------------------------------- loading
def hub_model_for(name: str) -> HubModel | None:
    return HUB_MODELS.get(name)


def load_wan_pipeline(pipe_cls, spec: HubModel, device: torch.device, memory: str | None, dtype: torch.dtype | None,
                      cache_dir: str | None = None, text_encoder: str = "auto", height: int | None = None,
                      width: int | None = None, embedding_cache_dir: str | None = None, **overrides):
    """Build a VideoSSMPipeline from a named checkpoint (or a Wan folder / repo wrapped in a HubModel)."""
    if text_encoder not in TEXT_ENCODER_PLACEMENTS:
        raise ConfigError(f"text_encoder must be one of {', '.join(TEXT_ENCODER_PLACEMENTS)}, got {text_encoder!r}")
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    layout = detect_layout(resolve(spec.base_repo, ["model_index.json", WAN_CONFIG, "vae/config.json"], cache_dir))
    if layout == "videossm":
        raise CheckpointError(f"{spec.base_repo}: a VideoSSM checkpoint cannot serve as a Wan base")
    base_parts = DIFFUSERS_PARTS if layout == "diffusers" else WAN_PARTS
    if spec.weights is None:  # the base model itself: its transformer weights too
        base_parts = base_parts + (["transformer/*"] if layout == "diffusers" else [WAN_WEIGHTS + "*"])
    base = resolve(spec.base_repo, base_parts, cache_dir)
    report = []

    # transformer
    if spec.weights is None:
        folder = os.path.join(base, "transformer") if layout == "diffusers" else base
        raw, source = read_diffusers_weights(folder), os.path.join(folder, WAN_WEIGHTS)
        config_json = _read_json(_need(folder, WAN_CONFIG, "the transformer config"))
    else:
        weights_dir = resolve(spec.repo, [spec.weights] + ([spec.lora] if spec.lora else []), cache_dir)
        source = _need(weights_dir, spec.weights, f"{spec.name} weights")
        raw = pick_state_dict(read_state_dict(source), spec.state_keys, source)
        config_json = _read_json(_need(base, "transformer/config.json" if layout == "diffusers" else WAN_CONFIG,
                                       "the Wan architecture config"))
    state_dict = wan_transformer_to_diffusers(raw)
    del raw
    if spec.lora:
        lora_path = _need(weights_dir, spec.lora, f"{spec.name} LoRA")
        lora = pick_state_dict(read_state_dict(lora_path), (spec.lora_key,), lora_path)
        merged = merge_lora(state_dict, lora, spec.lora_alpha, spec.lora_rank, lora_path)
        report.append(dict(component="lora", source=lora_path, merged=len(merged), rank=spec.lora_rank,
                           alpha=spec.lora_alpha))
    num_heads = config_json.get("num_heads") or config_json.get("num_attention_heads")
    model_config = infer_model_config(state_dict, num_heads, source, name=spec.name,
                                      text_len=config_json.get("text_len"), eps=config_json.get("eps"),
                                      height=height, width=width)
    transformer = build_transformer(state_dict, model_config, source, dtype)
    del state_dict

    vae, vae_source = load_vae(base, layout)
    te_model, tokenizer, te_source = load_text_encoder(base, layout,
                                                       torch.bfloat16 if device.type == "cuda" else torch.float32)
    if te_model.config.d_model != model_config.text_dim:
        raise CheckpointError(f"{te_source}: text encoder width {te_model.config.d_model} does not match the "
                              f"transformer's text_dim {model_config.text_dim} ({source})")
    stream_config = StreamConfig(**spec.stream).with_overrides(memory=memory, **overrides)

    te_device, vae_dtype = device, (torch.bfloat16 if device.type == "cuda" else torch.float32)
    offload = False
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        plan = plan_memory(free, _nbytes(transformer), _nbytes(vae, vae_dtype), _nbytes(te_model),
                           kv_cache_bytes(model_config, stream_config, dtype),
                           activation_bytes(model_config, stream_config, dtype), text_encoder_placement=text_encoder)
        logger.info(plan.summary())
        te_device = device if plan.text_encoder in ("gpu", "offload") else torch.device("cpu")
        offload = plan.text_encoder == "offload"
    elif text_encoder in ("gpu", "offload"):
        raise ConfigError(f"text_encoder={text_encoder!r} needs a CUDA device; the device is {device}")
    transformer = transformer.to(device)
    vae = vae.to(device) if vae_dtype == torch.float32 else vae.to(device, vae_dtype)
    decoder = StreamingDecoder(vae)
    cache_id = f"{spec.base_repo}@{os.path.basename(os.path.normpath(base))}:{os.path.basename(te_source)}"
    embed_cache = embedding_cache_dir if embedding_cache_dir is not None else default_embedding_cache_dir()
    text = TextEncoder(te_model, tokenizer, model_config.text_len, te_device, offload=offload,
                       cache_dir=embed_cache or None, cache_id=cache_id)
    report = [
        dict(component="transformer", source=source, device=str(device), dtype=str(dtype).replace("torch.", ""),
             params=sum(p.numel() for p in transformer.parameters())),
        *report,
        dict(component="vae", source=vae_source, device=str(device), dtype=str(vae_dtype).replace("torch.", ""),
             params=sum(p.numel() for p in vae.parameters())),
        dict(component="text_encoder", source=te_source, device=("offload:" if offload else "") + str(te_device),
             dtype=str(te_model.dtype).replace("torch.", ""), params=sum(p.numel() for p in te_model.parameters())),
    ]
    return pipe_cls(transformer, text, decoder, stream_config, name=spec.name, trained=True,
                    description=spec.description, trained_frames=spec.trained_frames, loaded=report)


def default_embedding_cache_dir() -> str:
    """Prompt-embedding disk cache: $VIDEOSSM_EMBEDDING_CACHE ('' disables), else ~/.cache/videossm/embeddings."""
    env = os.environ.get("VIDEOSSM_EMBEDDING_CACHE")
    if env is not None:
        return env
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "videossm", "embeddings")


def spec_for_repo(repo_or_path: str) -> HubModel:
    """A Wan base folder / repo that is not a named model: its own base."""
    return HubModel(name=os.path.basename(os.path.normpath(repo_or_path)), repo=repo_or_path,
                    description=f"Wan2.1 weights from {repo_or_path}", base_repo=repo_or_path,
                    stream=dict(memory="full", rope="absolute"), trained_frames=21)
