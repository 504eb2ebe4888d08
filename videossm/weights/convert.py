"""Key conversion for public Wan2.1-based checkpoints, and safe readers for their files.

Layouts handled (their names studied from the public Wan, diffusers, Self-Forcing and LongLive code; the
code here is our own):
  * original Wan transformer (`blocks.N.self_attn.q`, `ffn.0`, `modulation`, `head.head`, ...) -> diffusers
    names (`blocks.N.attn1.to_q`, `ffn.net.0.proj`, `scale_shift_table`, `proj_out`, ...); norm2 and norm3
    swap places between the two (original norm3 is the cross-attention norm).
  * Self-Forcing / LongLive `.pt` dicts {generator, generator_ema, critic, ...} whose keys are `model.` +
    the original key, sometimes with `_fsdp_wrapped_module.` inside.
  * PEFT LoRA state dicts (`base_model.model.blocks.N.self_attn.q.lora_A.weight`), merged into the weights.
  * the original Wan VAE (`Wan2.1_VAE.pth`: `encoder.downsamples.N.residual.2`, `decoder.upsamples.N`, ...)
    -> diffusers' AutoencoderKLWan, for any stage count and number of residual blocks.
  * the original Wan UMT5 encoder (`models_t5_umt5-xxl-enc-bf16.pth`: `blocks.N.attn.q`, `ffn.gate.0`,
    `pos_embedding.embedding`, ...) -> transformers' UMT5EncoderModel.

`.pt`/`.pth` files are read with `torch.load(weights_only=True)`: no arbitrary unpickling.
"""

from __future__ import annotations

import os
import re

import torch

from .checkpoint import CheckpointError, load_safetensors

StateDict = dict[str, torch.Tensor]

FSDP_WRAPPER = "_fsdp_wrapped_module."
WRAPPER_PREFIXES = ("base_model.model.", "model.diffusion_model.", "model.", "module.")


# ---------------------------------------------------------------------------------------------- files
def read_state_dict(path: str) -> dict:
    """A .safetensors file, or a .pt/.pth file read with weights_only=True."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not found")
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - zip/pickle/unsupported-global errors all mean "cannot read"
        kind = "holds objects other than tensors (refused: weights_only)" if "weights_only" in str(e) else \
            "cannot be read; the file may be truncated or not a torch checkpoint"
        raise CheckpointError(f"{path}: {kind} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def pick_state_dict(checkpoint: dict, keys: tuple[str, ...], source: str) -> StateDict:
    """The first of `keys` present in a training checkpoint dict (e.g. generator_ema, generator); a plain
    state dict (all values tensors) is returned as it is."""
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    for key in keys:
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    raise CheckpointError(f"{source}: none of the entries {list(keys)} found; the file holds "
                          f"{sorted(checkpoint)[:12]}")


def strip_prefixes(state_dict: StateDict) -> StateDict:
    """Remove `_fsdp_wrapped_module.` wherever it is, then one wrapper prefix (`model.`, PEFT's
    `base_model.model.`, `model.diffusion_model.`, `module.`) at the start of each key."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace(FSDP_WRAPPER, "")
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = value
    return out


# -------------------------------------------------------------------------------- Wan transformer
_WAN_ATTN = {"self_attn": "attn1", "cross_attn": "attn2"}
_WAN_ATTN_PROJ = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
_WAN_BLOCK_PARTS = {"norm2": "norm3", "norm3": "norm2", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}
_WAN_TOP_RENAMES = {
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
}


def is_original_wan(state_dict: StateDict) -> bool:
    return any(k.startswith(("head.head.", "time_embedding.")) or ".self_attn." in k for k in state_dict)


def wan_key_to_diffusers(key: str) -> str:
    """One original Wan transformer key (prefixes already stripped) -> its diffusers name."""
    match = re.match(r"blocks\.(\d+)\.(.*)$", key)
    if match is None:
        for old, new in _WAN_TOP_RENAMES.items():
            if key == old or key.startswith(old + "."):
                return new + key[len(old):]
        return key
    index, rest = match.groups()
    parts = rest.split(".")  # e.g. [self_attn, q, weight], [norm3, bias], [ffn, 0, weight], [modulation]
    if parts == ["modulation"]:
        return f"blocks.{index}.scale_shift_table"
    if parts[0] in _WAN_ATTN:
        name = _WAN_ATTN_PROJ.get(parts[1], parts[1])  # norm_q / norm_k keep their names
        return f"blocks.{index}.{_WAN_ATTN[parts[0]]}.{name}." + ".".join(parts[2:])
    for old, new in _WAN_BLOCK_PARTS.items():
        if rest.startswith(old + "."):
            return f"blocks.{index}.{new}{rest[len(old):]}"
    return key


def wan_transformer_to_diffusers(state_dict: StateDict) -> StateDict:
    """Strip wrapper prefixes and, when the keys are in the original Wan layout, rename them."""
    state_dict = strip_prefixes(state_dict)
    if not is_original_wan(state_dict):
        return state_dict
    return {wan_key_to_diffusers(k): v for k, v in state_dict.items()}


# ------------------------------------------------------------------------------------------- LoRA
_LORA_KEY = re.compile(r"^(.*)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")  # optional adapter name


def merge_lora(state_dict: StateDict, lora: StateDict, alpha: float, rank: int | None, source: str) -> list[str]:
    """Merge a PEFT LoRA into diffusers-named weights in place: W <- W + (alpha / r) * B @ A.
    Keys may be in original Wan or diffusers naming, under any wrapper prefix. Returns the merged
    weight names. Raises CheckpointError for unpaired A/B, an unknown target, a bias LoRA or a rank
    other than `rank`."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in strip_prefixes(lora).items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise CheckpointError(f"{source}: {key!r} is not a LoRA weight (expected *.lora_A.weight / "
                                  f"*.lora_B.weight)")
        module, half = match.groups()
        pairs.setdefault(module, {})[half] = tensor
    original = any(re.search(r"\.(self_attn|cross_attn)\.|\.ffn\.[02]$", module) for module in pairs)
    merged, problems = [], []
    for module, halves in sorted(pairs.items()):
        if set(halves) != {"A", "B"}:
            problems.append(f"{module}: only lora_{''.join(halves)}")
            continue
        target = wan_key_to_diffusers(module + ".weight") if original else module + ".weight"
        down, up = halves["A"], halves["B"]  # [r, in], [out, r]
        if target not in state_dict:
            problems.append(f"{module}: no weight {target} in the model")
            continue
        weight = state_dict[target]
        r = down.shape[0]
        if rank is not None and r != rank:
            problems.append(f"{module}: rank {r}, expected {rank}")
            continue
        if up.shape != (weight.shape[0], r) or down.shape != (r, weight.shape[1]):
            problems.append(f"{module}: lora_B {tuple(up.shape)} @ lora_A {tuple(down.shape)} does not fit "
                            f"{target} {tuple(weight.shape)}")
            continue
        delta = (alpha / r) * (up.float() @ down.float())  # [out, in]
        state_dict[target] = (weight.float() + delta).to(weight.dtype)
        merged.append(target)
    if problems:
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise CheckpointError(f"{source}: LoRA does not fit the model ({len(problems)}): " + "; ".join(shown))
    if not merged:
        raise CheckpointError(f"{source}: holds no LoRA weights")
    return merged


# -------------------------------------------------------------------------------------- Wan VAE
_RESIDUAL_PARTS = {"residual.0.gamma": "norm1.gamma", "residual.2.weight": "conv1.weight",
                   "residual.2.bias": "conv1.bias", "residual.3.gamma": "norm2.gamma",
                   "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
                   "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias"}
_MIDDLE = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}


def is_original_wan_vae(state_dict: StateDict) -> bool:
    return any(k.startswith(("decoder.upsamples.", "encoder.downsamples.")) for k in state_dict)


def wan_vae_config(state_dict: StateDict, source: str) -> dict:
    """AutoencoderKLWan config of an original-layout Wan2.1 VAE state dict, read from its shapes."""
    try:
        base_dim = state_dict["encoder.conv1.weight"].shape[0]
        z_dim = state_dict["conv2.weight"].shape[0]
        items = sorted({int(k.split(".")[2]) for k in state_dict if k.startswith("encoder.downsamples.")})
        kinds = []  # per encoder item: "res" or "down2d"/"down3d"
        for i in items:
            prefix = f"encoder.downsamples.{i}."
            if prefix + "residual.2.weight" in state_dict:
                kinds.append(("res", state_dict[prefix + "residual.2.weight"].shape[0]))
            elif prefix + "resample.1.weight" in state_dict:
                kinds.append(("down3d" if prefix + "time_conv.weight" in state_dict else "down2d", 0))
            else:
                raise CheckpointError(f"{source}: encoder.downsamples.{i} is neither a residual block nor a "
                                      f"resample (attention blocks inside stages are not supported)")
    except KeyError as e:
        raise CheckpointError(f"{source}: not a Wan VAE state dict (missing {e})") from None
    stages, current = [], []
    for kind, channels in kinds:
        if kind == "res":
            current.append(channels)
        else:
            stages.append((current, kind))
            current = []
    stages.append((current, None))
    num_res_blocks = len(stages[0][0])
    if num_res_blocks == 0 or any(len(res) != num_res_blocks for res, _ in stages):
        raise CheckpointError(f"{source}: uneven residual blocks per stage {[len(r) for r, _ in stages]}")
    return dict(base_dim=base_dim, z_dim=z_dim, dim_mult=[res[-1] // base_dim for res, _ in stages],
                num_res_blocks=num_res_blocks, attn_scales=[],
                temperal_downsample=[kind == "down3d" for _, kind in stages[:-1]])


def wan_vae_to_diffusers(state_dict: StateDict, num_res_blocks: int) -> StateDict:
    """Original Wan2.1 VAE keys -> AutoencoderKLWan keys. The decoder's flat `upsamples` list holds, per
    stage, num_res_blocks + 1 residual blocks and then one resample (none after the last stage)."""
    per_stage = num_res_blocks + 2
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        new = key
        if key.startswith(("conv1.", "conv2.")):
            new = {"conv1": "quant_conv", "conv2": "post_quant_conv"}[parts[0]] + "." + parts[1]
        elif parts[0] in ("encoder", "decoder") and parts[1] == "conv1":
            new = f"{parts[0]}.conv_in.{parts[2]}"
        elif parts[0] in ("encoder", "decoder") and parts[1] == "head":
            new = f"{parts[0]}.{ {'0': 'norm_out', '2': 'conv_out'}[parts[2]] }.{parts[3]}"
        elif parts[0] in ("encoder", "decoder") and parts[1] == "middle":
            rest = ".".join(parts[3:])
            new = f"{parts[0]}.mid_block.{_MIDDLE[parts[2]]}.{_RESIDUAL_PARTS.get(rest, rest)}"
        elif parts[1] == "downsamples":
            rest = ".".join(parts[3:])
            new = f"encoder.down_blocks.{parts[2]}.{_RESIDUAL_PARTS.get(rest, rest)}"
        elif parts[1] == "upsamples":
            stage, pos = divmod(int(parts[2]), per_stage)
            rest = ".".join(parts[3:])
            if pos <= num_res_blocks:
                new = f"decoder.up_blocks.{stage}.resnets.{pos}.{_RESIDUAL_PARTS.get(rest, rest)}"
            else:
                new = f"decoder.up_blocks.{stage}.upsamplers.0.{rest}"
        out[new] = value
    return out


# ------------------------------------------------------------------------------------------ UMT5
def is_original_umt5(state_dict: StateDict) -> bool:
    return "token_embedding.weight" in state_dict


def umt5_config_kwargs(state_dict: StateDict, source: str) -> dict:
    """UMT5Config fields of an original Wan T5 encoder state dict, read from its shapes (Wan's
    relative-position max distance is 128; its FFN is gated GELU with the tanh approximation)."""
    try:
        vocab, d_model = state_dict["token_embedding.weight"].shape
        num_buckets, num_heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
        inner = state_dict["blocks.0.attn.q.weight"].shape[0]
        d_ff = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"{source}: not a Wan UMT5 encoder state dict (missing {e})") from None
    num_layers = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    return dict(vocab_size=vocab, d_model=d_model, d_kv=inner // num_heads, d_ff=d_ff, num_layers=num_layers,
                num_heads=num_heads, relative_attention_num_buckets=num_buckets,
                relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                is_encoder_decoder=False, use_cache=False, pad_token_id=0, eos_token_id=1)


_UMT5_BLOCK = {"norm1.weight": "layer.0.layer_norm.weight", "attn.q.weight": "layer.0.SelfAttention.q.weight",
               "attn.k.weight": "layer.0.SelfAttention.k.weight", "attn.v.weight": "layer.0.SelfAttention.v.weight",
               "attn.o.weight": "layer.0.SelfAttention.o.weight",
               "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
               "norm2.weight": "layer.1.layer_norm.weight", "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
               "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight", "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight"}


def umt5_to_transformers(state_dict: StateDict, source: str) -> StateDict:
    """Original Wan T5 encoder keys -> UMT5EncoderModel keys (gate.0 is the GELU branch wi_0, fc1 the
    linear branch wi_1; the token embedding is shared with encoder.embed_tokens)."""
    out = {}
    for key, value in state_dict.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = out["encoder.embed_tokens.weight"] = value
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = value
        else:
            match = re.match(r"blocks\.(\d+)\.(.*)$", key)
            if match is None or match.group(2) not in _UMT5_BLOCK:
                raise CheckpointError(f"{source}: unexpected key {key!r} for a Wan UMT5 encoder")
            out[f"encoder.block.{match.group(1)}.{_UMT5_BLOCK[match.group(2)]}"] = value
    return out
