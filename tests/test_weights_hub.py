"""Real-weight loading, offline: tiny random checkpoints in each public format and layout, written into a
temporary hub cache (models--org--name/refs/main + snapshots/<sha>/...), loaded with HF_HUB_OFFLINE=1
through the same code path as the real downloads.

The original-layout names below are written out by hand from the public Wan code (they are what the real
files hold); diffusers' own converters serve as an independent oracle for the full-size name maps."""

import argparse
import copy
import hashlib
import json
import logging
import os

import pytest
import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file
from transformers import UMT5Config, UMT5EncoderModel

from videossm.config import ConfigError, ModelConfig, get_model_config
from videossm.models.text_encoder import TextEncoder, word_level_tokenizer
from videossm.models.transformer import VideoSSMTransformer
from videossm.models.vae import StreamingDecoder
from videossm.pipeline import VideoSSMPipeline
from videossm.weights.checkpoint import CheckpointError
from videossm.weights.convert import merge_lora, wan_key_to_diffusers, wan_transformer_to_diffusers, wan_vae_to_diffusers
from videossm.weights.hub import GPUMemoryError, HUB_MODELS, plan_memory

GIB = 2**30
WORDS = "a red ball rolls on the grass blue cube".split()
TINY = ModelConfig(name="tiny-wan", num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
                   text_dim=16, freq_dim=16, ffn_dim=64, num_layers=2, height=32, width=32, text_len=512)
TINY_VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True, True])
SIZE = dict(height=32, width=32)


# ------------------------------------------------------------------- original-layout names (by hand)
def wan_original_name(key: str) -> str:
    """diffusers Wan transformer name -> the original Wan name (as in Wan's model.py)."""
    top = {"condition_embedder.time_embedder.linear_1": "time_embedding.0",
           "condition_embedder.time_embedder.linear_2": "time_embedding.2",
           "condition_embedder.time_proj": "time_projection.1",
           "condition_embedder.text_embedder.linear_1": "text_embedding.0",
           "condition_embedder.text_embedder.linear_2": "text_embedding.2",
           "proj_out": "head.head", "scale_shift_table": "head.modulation", "patch_embedding": "patch_embedding"}
    if not key.startswith("blocks."):
        module, _, param = key.rpartition(".")
        return top[key] if key in top else f"{top[module]}.{param}"
    _, index, rest = key.split(".", 2)
    block = {"scale_shift_table": "modulation", "norm2.weight": "norm3.weight", "norm2.bias": "norm3.bias",
             "ffn.net.0.proj.weight": "ffn.0.weight", "ffn.net.0.proj.bias": "ffn.0.bias",
             "ffn.net.2.weight": "ffn.2.weight", "ffn.net.2.bias": "ffn.2.bias"}
    if rest in block:
        return f"blocks.{index}.{block[rest]}"
    attn, sub = rest.split(".", 1)  # attn1, to_q.weight | norm_q.weight | to_out.0.bias
    module, param = sub.rsplit(".", 1)
    module = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}.get(module, module)
    return f"blocks.{index}.{ {'attn1': 'self_attn', 'attn2': 'cross_attn'}[attn] }.{module}.{param}"


def vae_original_name(key: str, num_res_blocks: int) -> str:
    """diffusers AutoencoderKLWan name -> the original Wan VAE name (as in Wan's vae.py)."""
    res = {"norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight", "conv1.bias": "residual.2.bias",
           "norm2.gamma": "residual.3.gamma", "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
           "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias"}
    p = key.split(".")
    if p[0] in ("quant_conv", "post_quant_conv"):
        return {"quant_conv": "conv1", "post_quant_conv": "conv2"}[p[0]] + "." + p[1]
    side = p[0]
    if p[1] == "conv_in":
        return f"{side}.conv1.{p[2]}"
    if p[1] in ("norm_out", "conv_out"):
        return f"{side}.head.{ {'norm_out': 0, 'conv_out': 2}[p[1]] }.{p[2]}"
    if p[1] == "mid_block":
        index = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[".".join(p[2:4])]
        rest = ".".join(p[4:])
        return f"{side}.middle.{index}.{res.get(rest, rest)}"
    if p[1] == "down_blocks":
        rest = ".".join(p[3:])
        return f"encoder.downsamples.{p[2]}.{res.get(rest, rest)}"
    stage, per_stage = int(p[2]), num_res_blocks + 2  # decoder.up_blocks
    if p[3] == "resnets":
        rest = ".".join(p[5:])
        return f"decoder.upsamples.{stage * per_stage + int(p[4])}.{res.get(rest, rest)}"
    return f"decoder.upsamples.{stage * per_stage + num_res_blocks + 1}." + ".".join(p[5:])


def umt5_original(state_dict: dict) -> dict:
    """transformers UMT5EncoderModel state dict -> the original Wan T5 encoder names (Wan's t5.py)."""
    block = {"layer.0.layer_norm.weight": "norm1.weight", "layer.0.SelfAttention.q.weight": "attn.q.weight",
             "layer.0.SelfAttention.k.weight": "attn.k.weight", "layer.0.SelfAttention.v.weight": "attn.v.weight",
             "layer.0.SelfAttention.o.weight": "attn.o.weight",
             "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
             "layer.1.layer_norm.weight": "norm2.weight", "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
             "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight", "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight"}
    out = {"token_embedding.weight": state_dict["shared.weight"], "norm.weight": state_dict["encoder.final_layer_norm.weight"]}
    for key, value in state_dict.items():
        if key.startswith("encoder.block."):
            _, _, index, rest = key.split(".", 3)
            out[f"blocks.{index}.{block[rest]}"] = value
    return out


# ----------------------------------------------------------------------------------- fixtures
def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".memory." not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module.eval()


@pytest.fixture(scope="module")
def parts():
    """The reference tiny components: transformer, VAE, UMT5 encoder and tokenizer."""
    transformer = randomize(VideoSSMTransformer(TINY), 1)
    vae = randomize(AutoencoderKLWan(**TINY_VAE), 2)
    assert vae.config.latents_std[0] == 2.8184  # diffusers' defaults are Wan2.1's per-channel latent statistics
    tokenizer = word_level_tokenizer(WORDS)
    umt5 = randomize(UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1)), 3)
    diffusers_sd = {k: v for k, v in transformer.state_dict().items() if ".memory." not in k}
    return dict(transformer=transformer, vae=vae, tokenizer=tokenizer, umt5=umt5, diffusers_sd=diffusers_sd,
                original_sd={wan_original_name(k): v for k, v in diffusers_sd.items()})


def snapshot(cache, repo: str):
    """The hub cache layout huggingface_hub reads offline: refs/main -> snapshots/<sha>/."""
    root = cache / f"models--{repo.replace('/', '--')}"
    sha = hashlib.sha1(repo.encode()).hexdigest()
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(sha)
    folder = root / "snapshots" / sha
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_wan_original(folder, parts, with_weights=True):
    (folder / "config.json").write_text(json.dumps(dict(
        _class_name="WanModel", model_type="t2v", dim=32, num_heads=2, num_layers=2, ffn_dim=64, freq_dim=16,
        in_dim=16, out_dim=16, text_len=512, eps=1e-6)))
    if with_weights:
        save_file({k: v.contiguous() for k, v in parts["original_sd"].items()},
                  str(folder / "diffusion_pytorch_model.safetensors"))
    vae_sd = parts["vae"].state_dict()
    torch.save({vae_original_name(k, 1): v for k, v in vae_sd.items()}, folder / "Wan2.1_VAE.pth")
    torch.save({k: v.to(torch.bfloat16) for k, v in umt5_original(parts["umt5"].state_dict()).items()},
               folder / "models_t5_umt5-xxl-enc-bf16.pth")
    parts["tokenizer"].save_pretrained(str(folder / "google" / "umt5-xxl"))


def write_wan_diffusers(folder, parts):
    transformer_dir = folder / "transformer"
    transformer_dir.mkdir(parents=True)
    (transformer_dir / "config.json").write_text(json.dumps(dict(
        _class_name="WanTransformer3DModel", num_attention_heads=2, attention_head_dim=16, num_layers=2,
        ffn_dim=64, freq_dim=16, in_channels=16, out_channels=16, text_dim=16, eps=1e-6)))
    save_file({k: v.contiguous() for k, v in parts["diffusers_sd"].items()},
              str(transformer_dir / "diffusion_pytorch_model.safetensors"))
    parts["vae"].save_pretrained(str(folder / "vae"))
    copy.deepcopy(parts["umt5"]).to(torch.bfloat16).save_pretrained(str(folder / "text_encoder"))  # bf16 like Wan's
    parts["tokenizer"].save_pretrained(str(folder / "tokenizer"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIDEOSSM_EMBEDDING_CACHE", str(tmp_path / "embeddings"))
    return tmp_path / "hub"


def load(name, cache, **kw):
    return VideoSSMPipeline.from_pretrained(name, device="cpu", cache_dir=str(cache), **SIZE, **kw)


def forward(transformer, seed=0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 16, 2, 4, 4, generator=gen)
    text = torch.randn(1, 512, 16, generator=gen)
    with torch.no_grad():
        return transformer(latents, torch.tensor([[500.0, 250.0]]), text)


def assert_same_transformer(loaded, reference):
    ref = reference.state_dict()
    for key, value in loaded.transformer.state_dict().items():
        if ".memory." not in key:  # not in base checkpoints: zero-gated init, checked through the output
            assert torch.equal(value, ref[key]), key
    assert torch.equal(forward(loaded.transformer), forward(reference))


# ------------------------------------------------------------------------------- name maps
def test_transformer_name_map_matches_diffusers_converter_at_full_size():
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    with torch.device("meta"):
        model = VideoSSMTransformer(get_model_config("wan2.1-t2v-1.3b"))
    names = [k for k in model.state_dict() if ".memory." not in k]
    original = {wan_original_name(k): torch.empty(0) for k in names}
    assert {"blocks.29.self_attn.q.weight", "blocks.0.norm3.weight", "blocks.0.modulation", "head.modulation",
            "text_embedding.2.bias", "blocks.3.cross_attn.norm_k.weight", "blocks.0.ffn.2.bias"} <= set(original)
    theirs = convert_wan_transformer_to_diffusers(dict(original))
    ours = wan_transformer_to_diffusers({"model." + k: v for k, v in original.items()})
    assert sorted(theirs) == sorted(ours) == sorted(names)


def test_vae_name_map_matches_diffusers_converter_for_wan21():
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    with torch.device("meta"):
        vae = AutoencoderKLWan()  # the Wan2.1 VAE
    original = {vae_original_name(k, 2): k for k in vae.state_dict()}
    theirs = convert_wan_vae_to_diffusers({k: torch.empty(0) for k in original})
    ours = wan_vae_to_diffusers({k: torch.empty(0) for k in original}, num_res_blocks=2)
    assert sorted(theirs) == sorted(ours) == sorted(vae.state_dict())
    assert all(ours_key == original[orig] for orig, ours_key in
               zip(original, wan_vae_to_diffusers({k: None for k in original}, 2)))


# -------------------------------------------------------------------------- each format loads
def test_original_wan_layout_loads_identically(hub, parts):
    write_wan_original(snapshot(hub, "Wan-AI/Wan2.1-T2V-1.3B"), parts)
    pipe = load("wan2.1-t2v-1.3b", hub)
    assert_same_transformer(pipe, parts["transformer"])
    assert pipe.model_config.num_attention_heads == 2 and pipe.model_config.text_len == 512
    # VAE: same weights and latent statistics, read from the original key layout
    for key, value in pipe.decoder.vae.state_dict().items():
        assert torch.equal(value, parts["vae"].state_dict()[key]), key
    # UMT5 from the original .pth: same embeddings as the transformers model it came from (bf16 file)
    rounded = UMT5EncoderModel(parts["umt5"].config)
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in parts["umt5"].state_dict().items()})
    reference = TextEncoder(rounded, parts["tokenizer"], 512)
    assert torch.equal(pipe.text_encoder.encode("a red ball"), reference.encode("a red ball"))
    assert "text_encoder" in pipe.describe() and "Wan2.1_VAE.pth" in pipe.describe()


def test_diffusers_and_original_layouts_generate_the_same_video(hub, parts, tmp_path):
    write_wan_original(snapshot(hub, "Wan-AI/Wan2.1-T2V-1.3B"), parts)
    write_wan_diffusers(snapshot(hub, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"), parts)
    original = load("wan2.1-t2v-1.3b", hub, memory="sink")
    diffusers_pipe = load("wan2.1-t2v-1.3b-diffusers", hub, memory="sink")
    assert_same_transformer(diffusers_pipe, parts["transformer"])
    frames_a, _ = original.generate("a red ball rolls", seconds=1.0, seed=3)
    frames_b, _ = diffusers_pipe.generate("a red ball rolls", seconds=1.0, seed=3)
    assert frames_a.shape == (16, 32, 32, 3) and frames_a.std() > 0
    assert (frames_a == frames_b).all()
    # a local folder in either layout goes through the same path
    folder = load(str(snapshot(hub, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")), hub, memory="sink")
    assert (folder.generate("a red ball rolls", seconds=1.0, seed=3)[0] == frames_a).all()


def test_self_forcing_pt_picks_generator_ema(hub, parts, caplog):
    write_wan_original(snapshot(hub, "Wan-AI/Wan2.1-T2V-1.3B"), parts, with_weights=False)
    folder = snapshot(hub, "gdhe17/Self-Forcing") / "checkpoints"
    folder.mkdir()
    other = {"model." + k: torch.zeros_like(v) for k, v in parts["original_sd"].items()}
    torch.save({"generator": other, "critic": {"model.x": torch.zeros(1)},
                "generator_ema": {"model." + k: v for k, v in parts["original_sd"].items()}},
               folder / "self_forcing_dmd.pt")
    pipe = load("self-forcing", hub)
    assert_same_transformer(pipe, parts["transformer"])
    assert pipe.trained and pipe.trained_frames == 21 and pipe.stream_config.rope == "absolute"
    with caplog.at_level(logging.WARNING, logger="videossm.pipeline"):
        pipe.stream("a red ball", seconds=1.0, memory="sink")  # 6 latent frames: no warning
        assert "21 latent frames" not in caplog.text
        pipe.stream("a red ball", seconds=6.0, memory="sink")  # 24 latent frames > 21
    assert "trained with global attention over 21 latent frames" in caplog.text


def test_longlive_merges_peft_lora(hub, parts):
    write_wan_original(snapshot(hub, "Wan-AI/Wan2.1-T2V-1.3B"), parts, with_weights=False)
    folder = snapshot(hub, "Efficient-Large-Model/LongLive") / "models"
    folder.mkdir()
    torch.save({"generator_ema": {"model._fsdp_wrapped_module." + k: v for k, v in parts["original_sd"].items()}},
               folder / "longlive_base.pt")
    gen = torch.Generator().manual_seed(7)
    lora, rank = {}, 256
    targets = [k[: -len(".weight")] for k in parts["original_sd"] if k.startswith("blocks.") and k.endswith(".weight")
               and parts["original_sd"][k].ndim == 2]  # every Linear of every block, as LongLive's LoRA
    for module in targets:
        out_dim, in_dim = parts["original_sd"][module + ".weight"].shape
        lora[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, in_dim, generator=gen) * 0.01
        lora[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out_dim, rank, generator=gen) * 0.01
    torch.save({"generator_lora": lora, "critic_lora": {}}, folder / "lora.pt")
    pipe = load("longlive", hub)
    sc = pipe.stream_config
    assert (sc.memory, sc.window_frames, sc.sink_frames) == ("sink", 12, 3)
    ref = parts["transformer"].state_dict()
    got = pipe.transformer.state_dict()
    assert len(targets) == 2 * 10  # q k v o (self, cross) + ffn.0 ffn.2 per block
    for module in targets:
        name = wan_key_to_diffusers(module + ".weight")  # the name map is checked against diffusers' above
        expected = ref[name] + (256 / 256) * lora[f"base_model.model.{module}.lora_B.weight"] @ \
            lora[f"base_model.model.{module}.lora_A.weight"]
        assert torch.allclose(got[name], expected, atol=1e-6), name
    assert torch.equal(got["proj_out.weight"], ref["proj_out.weight"])  # not a LoRA target
    assert any(part["component"] == "lora" and part["merged"] == 20 for part in pipe.loaded)


def test_lora_scale_is_alpha_over_rank():
    weight = torch.randn(6, 5)
    down, up = torch.randn(4, 5), torch.randn(6, 4)
    state = {"blocks.0.attn1.to_q.weight": weight.clone()}
    merge_lora(state, {"blocks.0.self_attn.q.lora_A.default.weight": down,
                       "blocks.0.self_attn.q.lora_B.default.weight": up}, alpha=8, rank=4, source="lora.pt")
    assert torch.allclose(state["blocks.0.attn1.to_q.weight"], weight + 2.0 * up @ down)
    with pytest.raises(CheckpointError, match="rank 4, expected 256"):
        merge_lora({"blocks.0.attn1.to_q.weight": weight}, {"blocks.0.self_attn.q.lora_A.weight": down,
                   "blocks.0.self_attn.q.lora_B.weight": up}, alpha=256, rank=256, source="lora.pt")
    with pytest.raises(CheckpointError, match="lora.pt: LoRA does not fit.*only lora_A"):
        merge_lora({"blocks.0.attn1.to_q.weight": weight}, {"blocks.0.self_attn.q.lora_A.weight": down},
                   alpha=4, rank=4, source="lora.pt")


def test_our_format_from_a_hub_repo(hub):
    pipe = VideoSSMPipeline.from_pretrained("test", device="cpu")
    pipe.save_pretrained(str(snapshot(hub, "someone/videossm-test")))
    loaded = VideoSSMPipeline.from_pretrained("someone/videossm-test", device="cpu", cache_dir=str(hub))
    assert_equal_models(loaded.transformer, pipe.transformer)
    frames_a, _ = pipe.generate("red circle", seconds=0.5, seed=1)
    frames_b, _ = loaded.generate("red circle", seconds=0.5, seed=1)
    assert (frames_a == frames_b).all()


def assert_equal_models(a, b):
    sb = b.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


# -------------------------------------------------------------------------------------- errors
def test_absent_model_offline_names_repo_and_offline_flag(hub):
    with pytest.raises(CheckpointError, match=r"Wan-AI/Wan2.1-T2V-1.3B.*HF_HUB_OFFLINE=1"):
        load("self-forcing", hub)


def test_unknown_name_lists_what_is_accepted():
    with pytest.raises(ConfigError, match="not a folder.*self-forcing.*longlive.*tiny"):
        VideoSSMPipeline.from_pretrained("no-such-model", device="cpu")


def test_missing_and_truncated_files_name_the_file(hub, parts):
    folder = snapshot(hub, "Wan-AI/Wan2.1-T2V-1.3B")
    write_wan_original(folder, parts)
    (folder / "Wan2.1_VAE.pth").unlink()
    with pytest.raises(CheckpointError, match=r"Wan2.1_VAE.pth: not found \(the Wan VAE\)"):
        load("wan2.1-t2v-1.3b", hub)
    write_wan_original(folder, parts)
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model.safetensors: cannot be read.*truncated"):
        load("wan2.1-t2v-1.3b", hub)
    write_wan_original(folder, parts)
    t5 = folder / "models_t5_umt5-xxl-enc-bf16.pth"
    t5.write_bytes(t5.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"models_t5_umt5-xxl-enc-bf16.pth: cannot be read"):
        load("wan2.1-t2v-1.3b", hub)


def test_wrong_shape_missing_and_unexpected_keys_are_named(hub, parts):
    folder = snapshot(hub, "Wan-AI/Wan2.1-T2V-1.3B")
    write_wan_original(folder, parts)
    bad = dict(parts["original_sd"])
    bad["blocks.1.self_attn.k.weight"] = torch.zeros(32, 8)
    del bad["blocks.1.ffn.2.bias"]
    bad["blocks.1.extra.weight"] = torch.zeros(2)
    save_file({k: v.contiguous() for k, v in bad.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load("wan2.1-t2v-1.3b", hub)
    message = str(err.value)
    assert "diffusion_pytorch_model.safetensors" in message
    assert "blocks.1.attn1.to_k.weight: checkpoint (32, 8) vs model (32, 32)" in message
    assert "missing keys (1): blocks.1.ffn.net.2.bias" in message
    assert "unexpected keys (1): blocks.1.extra.weight" in message
    assert ".memory." not in message  # memory modules may be missing from a base checkpoint


def test_pt_with_arbitrary_objects_is_refused(tmp_path, hub, parts):
    write_wan_original(snapshot(hub, "Wan-AI/Wan2.1-T2V-1.3B"), parts, with_weights=False)
    folder = snapshot(hub, "gdhe17/Self-Forcing") / "checkpoints"
    folder.mkdir()
    torch.save({"generator_ema": {}, "evil": argparse.Namespace(x=1)}, folder / "self_forcing_dmd.pt")
    with pytest.raises(CheckpointError, match="self_forcing_dmd.pt: holds objects other than tensors"):
        load("self-forcing", hub)


# ------------------------------------------------------------------------ VAE, text encoder
def test_streaming_decode_of_wan21_layout_vae_is_bit_identical(parts):
    decoder = StreamingDecoder(parts["vae"])
    latents = torch.randn(1, 16, 7, 4, 4, generator=torch.Generator().manual_seed(0))
    state = decoder.new_state()
    streamed = torch.cat([decoder.decode(state, latents[:, :, s:e]) for s, e in ((0, 3), (3, 6), (6, 7))], dim=2)
    full = decoder.decode_full(latents).clamp(-1, 1)
    assert streamed.shape == full.shape == (1, 3, 25, 32, 32)
    assert torch.equal(streamed, full)


def test_prompt_embeddings_cached_on_disk(tmp_path, parts):
    cache = str(tmp_path / "emb")
    first = TextEncoder(parts["umt5"], parts["tokenizer"], 32, cache_dir=cache, cache_id="repo@abc:t5.pth")
    embedding = first.encode("a red ball")
    assert embedding.shape == (1, 32, 16) and embedding[0, 4:].abs().sum() == 0  # 3 words + </s>, then zeros
    files = [f for _, _, fs in os.walk(cache) for f in fs]
    assert len(files) == 1 and files[0].endswith(".safetensors")  # no temp file left behind
    broken = UMT5EncoderModel(parts["umt5"].config)  # different weights: a cache hit must not run it
    second = TextEncoder(broken, parts["tokenizer"], 32, cache_dir=cache, cache_id="repo@abc:t5.pth")
    assert torch.equal(second.encode("a red ball"), embedding)
    other_model = TextEncoder(broken, parts["tokenizer"], 32, cache_dir=cache, cache_id="repo@def:t5.pth")
    assert not torch.equal(other_model.encode("a red ball"), embedding)  # keyed by model id
    path = first.disk_path("a blue cube")
    first.encode("a blue cube")
    with open(path, "wb") as f:
        f.write(b"torn")  # a damaged file is recomputed, not trusted
    assert torch.equal(TextEncoder(parts["umt5"], parts["tokenizer"], 32, cache_dir=cache,
                                   cache_id="repo@abc:t5.pth").encode("a blue cube"), first.encode("a blue cube"))


# ----------------------------------------------------------------------------- memory planning
def test_memory_plan_places_text_encoder_and_reports_numbers():
    sizes = dict(transformer=int(2.64 * GIB), vae=int(0.25 * GIB), text_encoder=int(10.6 * GIB),
                 kv_cache=int(3.4 * GIB), activations=int(0.8 * GIB))
    assert plan_memory(80 * GIB, **sizes).text_encoder == "gpu"
    assert plan_memory(18 * GIB, **sizes).text_encoder == "offload"
    assert plan_memory(10 * GIB, **sizes).text_encoder == "cpu"
    assert plan_memory(80 * GIB, **sizes, text_encoder_placement="cpu").text_encoder == "cpu"
    with pytest.raises(GPUMemoryError, match=r"7.0 GiB free, but 8.1 GiB are needed \(transformer 2.64"):
        plan_memory(7 * GIB, **sizes)
    with pytest.raises(ConfigError, match="'tpu'"):
        plan_memory(80 * GIB, **sizes, text_encoder_placement="tpu")


def test_named_models_are_documented():
    assert set(HUB_MODELS) >= {"wan2.1-t2v-1.3b", "self-forcing", "longlive"}
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    for name in HUB_MODELS:
        assert f"`{name}`" in readme
