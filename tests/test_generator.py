"""The model, cache and pipeline: diffusers parity, zero-gated memory, unbounded length, constant state,
streaming decode, checkpoints, and clean errors for bad input."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from videossm import VideoSSMPipeline
from videossm.config import ConfigError, StreamConfig, get_model_config
from videossm.models.cache import KVCache
from videossm.models.text_encoder import PromptError
from videossm.models.transformer import VideoSSMTransformer
from videossm.models.vae import StreamingDecoder, vae_config
from videossm.timeline import TimelineError
from videossm.weights.checkpoint import CheckpointError

from .helpers import run_stream, tiny_model

PROMPT = "a red circle moving right on a gray background"


def test_bidirectional_forward_equals_diffusers_wan():
    cfg = get_model_config("test")
    torch.manual_seed(0)
    ours = VideoSSMTransformer(cfg).eval()
    wan = WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers,
        cross_attn_norm=True, eps=cfg.eps).eval()
    state = {k: v for k, v in ours.state_dict().items() if ".memory." not in k}
    wan.load_state_dict(state, strict=True)  # same parameter names; the memory only adds keys
    assert all(".memory." in k for k in set(ours.state_dict()) - set(wan.state_dict()))
    x = torch.randn(1, cfg.in_channels, 5, cfg.latent_height, cfg.latent_width)
    t = torch.tensor([[999.0, 800.0, 600.0, 400.0, 0.0]])  # one noise level per frame
    text = torch.randn(1, cfg.text_len, cfg.text_dim)
    with torch.no_grad():
        ours_out = ours(x, t, text)
        wan_out = wan(x, t.repeat_interleave(cfg.tokens_per_frame, 1), text, return_dict=False)[0]
    torch.testing.assert_close(ours_out, wan_out, rtol=1e-5, atol=1e-5)


def test_untrained_memory_leaves_base_output_exactly_unchanged():
    model = tiny_model(live_memory=False)  # g_out is zero-initialised
    base = dict(block_frames=2, window_frames=6, sink_frames=2)
    _, hybrid_state, hybrid, _ = run_stream(model, StreamConfig(memory="hybrid", **base), blocks=6, trace=False)
    _, _, sink, _ = run_stream(model, StreamConfig(memory="sink", **base), blocks=6, trace=False)
    assert hybrid_state.cache.evicted_frames > 0
    assert any(layer.memory_state.abs().sum() > 0 for layer in hybrid_state.cache.layers)  # M did fill up
    assert torch.equal(hybrid, sink)


def test_relative_rope_runs_past_1024_latent_frames():
    model = tiny_model()
    sc = StreamConfig(memory="hybrid", num_steps=1)
    _, state, latents, _ = run_stream(model, sc, blocks=350, trace=False)  # 1050 latent frames
    assert state.frame_index == 1050 and torch.isfinite(latents).all()
    ctx_pos, q_pos = state.cache.positions([1050, 1051, 1052])
    assert max(ctx_pos + q_pos) == sc.window_frames - 1  # positions stay inside the window
    # the same stream with absolute positions stops with a clear error at Wan's 1024 limit
    cache = KVCache(model.config, sc.replace(rope="absolute"))
    with pytest.raises(ConfigError, match="rope_max_seq_len=1024"):
        cache.block_context(1023, 3)


@pytest.mark.parametrize("memory", ["hybrid", "sink", "window", "full"])
def test_state_size_is_constant_once_the_window_is_full(memory):
    model = tiny_model()
    sc = StreamConfig(memory=memory, block_frames=2, window_frames=6, sink_frames=2, num_steps=1)
    from videossm.sampling.stream import StreamingGenerator

    gen = StreamingGenerator(model, sc)
    state = gen.new_state(0)
    gen.set_prompt(state, "p", torch.randn(1, model.config.text_len, model.config.text_dim))
    sizes = []
    for _ in range(12):
        gen.generate_block(state)
        sizes.append(state.cache.nbytes())
    if memory == "full":
        assert sizes[-1] > sizes[5] > sizes[2]  # the quadratic baseline grows
    else:
        assert len(set(sizes[3:])) == 1, sizes
        assert len(state.window_latents) == sc.recent_frames


@pytest.mark.parametrize("memory", ["hybrid", "window"])
def test_a_window_of_one_block_attends_to_the_block_alone(memory):
    """window = block and no sink: nothing stays cached, so each block attends to itself (and, in hybrid,
    reads the memory that every past frame went into)."""
    model = tiny_model()
    sc = StreamConfig(memory=memory, block_frames=2, window_frames=2, sink_frames=0, num_steps=1)
    from videossm.sampling.stream import StreamingGenerator

    gen = StreamingGenerator(model, sc)
    state = gen.new_state(0)
    gen.set_prompt(state, "p", torch.randn(1, model.config.text_len, model.config.text_dim))
    blocks = [gen.generate_block(state) for _ in range(3)]
    assert all(torch.isfinite(b).all() for b in blocks) and len(state.window_latents) == 0


def test_streaming_decode_is_identical_to_full_decode():
    torch.manual_seed(0)
    decoder = StreamingDecoder(AutoencoderKLWan(**vae_config(z_dim=4)).eval())
    latents = torch.randn(1, 4, 7, 4, 4)
    state = decoder.new_state()
    streamed = torch.cat([decoder.decode(state, latents[:, :, i : i + 3]) for i in (0, 3)] +
                         [decoder.decode(state, latents[:, :, 6:7])], dim=2)
    full = decoder.decode_full(latents)
    assert streamed.shape == full.shape == (1, 3, 1 + 6 * 4, 32, 32)
    assert torch.equal(streamed, full)


def test_fast_decoder_ops_match_diffusers_decoder(monkeypatch):
    """StreamingDecoder's oneDNN convs and rsqrt RMS norms give diffusers' decode to float rounding, with every
    conv forced through oneDNN (the threshold is for speed only), and keep the state-dict keys."""
    import copy

    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm

    from videossm.models import vae as vae_module

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**vae_config(z_dim=4, dim_mult=(1, 2, 4), res_blocks=1)).eval()
    reference = copy.deepcopy(vae)
    decoder = StreamingDecoder(vae)  # switches vae's decoder in place
    assert decoder.vae.state_dict().keys() == reference.state_dict().keys()
    kinds = {type(m) for m in decoder.vae.decoder.modules()}
    assert vae_module.FastCausalConv3d in kinds and WanCausalConv3d not in kinds and WanRMS_norm not in kinds
    onednn_calls = []
    real = torch.mkldnn_convolution
    monkeypatch.setattr(vae_module, "ONEDNN_MIN_NUMEL", 0)
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *a: onednn_calls.append(a[0].shape) or real(*a))
    latents = torch.randn(1, 4, 4, 4, 4)
    state = decoder.new_state()
    fast = torch.cat([decoder.decode(state, latents[:, :, :1]), decoder.decode(state, latents[:, :, 1:])], dim=2)
    assert len(onednn_calls) >= 4 * vae.config.num_res_blocks  # every conv of the decoder, per latent frame
    with torch.no_grad():
        slow = reference.decode(decoder.denormalize(latents), return_dict=False)[0].clamp(-1, 1)
    assert fast.shape == slow.shape and not torch.equal(fast, torch.zeros_like(fast))
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)
    for dtype in (torch.float32, torch.bfloat16):  # the norm alone, also in half precision
        x = torch.randn(2, 8, 3, 5, 5, dtype=dtype)
        x[0, :, 0] = 0  # F.normalize's eps: all-zero channel vectors stay zero
        norm, fast_norm = WanRMS_norm(8, images=False), WanRMS_norm(8, images=False)
        fast_norm.__class__ = vae_module.FastRMSNorm
        torch.testing.assert_close(fast_norm(x), norm(x))


@pytest.fixture(scope="module")
def pipe():
    return VideoSSMPipeline.from_pretrained("test", device="cpu")


def test_stream_yields_uint8_frames_and_stats(pipe):
    handle = pipe.stream(PROMPT, seconds=2.0, seed=3)
    chunks = list(handle)
    frames = np.concatenate([c.frames for c in chunks])
    assert frames.dtype == np.uint8 and frames.shape == (32, 32, 32, 3)  # 2 s x 16 fps, 32x32
    assert [c.num_frames for c in chunks] == [9, 12, 11]  # the last block is trimmed to the length
    stats = handle.stats
    for key in ("first_frame_s", "fps", "frames", "peak_rss_mb", "per_block"):
        assert key in stats
    assert stats["frames"] == 32 and stats["trained"] is False
    assert [b["index"] for b in stats["per_block"]] == [0, 1, 2]
    assert sum(b["frames"] for b in stats["per_block"]) == 32
    again, _ = pipe.generate(PROMPT, seconds=2.0, seed=3)
    assert np.array_equal(frames, again)  # a seed reproduces the video


def test_warmup_streams_one_block_and_leaves_later_streams_unchanged():
    fresh = VideoSSMPipeline.from_pretrained("test", device="cpu")
    cold, _ = fresh.generate(PROMPT, seconds=1.0, seed=5)
    warmed = VideoSSMPipeline.from_pretrained("test", device="cpu")
    assert warmed.warmup() > 0
    warm, _ = warmed.generate(PROMPT, seconds=1.0, seed=5)
    assert np.array_equal(cold, warm)  # the throwaway block shares no state with a stream


def test_checkpoint_round_trip(pipe, tmp_path):
    pipe.save_pretrained(str(tmp_path / "ckpt"))
    loaded = VideoSSMPipeline.from_pretrained(str(tmp_path / "ckpt"), device="cpu")
    a, _ = pipe.generate(PROMPT, seconds=1.0, seed=5)
    b, _ = loaded.generate(PROMPT, seconds=1.0, seed=5)
    assert np.array_equal(a, b)
    assert loaded.trained is False and loaded.name == "test"


def test_checkpoint_shape_mismatch_names_file_and_key(pipe, tmp_path):
    path = tmp_path / "ckpt"
    pipe.save_pretrained(str(path))
    config = json.loads((path / "videossm_config.json").read_text())
    config["model"]["ffn_dim"] = 96
    (path / "videossm_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"transformer.safetensors.*ffn.net.0.proj.weight: checkpoint \(64, 32\) vs model \(96, 32\)"):
        VideoSSMPipeline.from_pretrained(str(path))


def test_truncated_checkpoint_is_a_clear_error(pipe, tmp_path):
    path = tmp_path / "ckpt"
    pipe.save_pretrained(str(path))
    weights = path / "transformer.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="transformer.safetensors: cannot be read"):
        VideoSSMPipeline.from_pretrained(str(path))


@pytest.mark.parametrize("prompt,error,match", [
    ("", TimelineError, "prompt '' is empty"),
    ("   ", TimelineError, "prompt '   ' is empty"),
    ("a red circle " * 10, PromptError, "prompt is 31 tokens long; the limit is 16 tokens"),
    ("a purple elephant", PromptError, r"does not know the word\(s\) \['elephant'\]; it knows: a, on, background"),
])
def test_bad_prompts(pipe, prompt, error, match):
    with pytest.raises(error, match=match):
        pipe.stream(prompt, seconds=1)


@pytest.mark.parametrize("timeline,match", [
    ({"segments": [{"start": 1.0, "prompt": PROMPT}]}, r"segment 0 start must be 0.0 \(the first segment starts the video\), got 1.0"),
    ({"segments": [{"start": 0.0, "prompt": PROMPT}, {"start": 2.0, "prompt": PROMPT}, {"start": 1.0, "prompt": PROMPT}]}, "segment 2 start 1.0 must be greater than segment 1 start 2.0"),
    ({"segments": [{"start": 0.0, "prompt": PROMPT}, {"start": -1.0, "prompt": PROMPT}]}, "-1"),
    ({"segments": [{"start": 0.0, "prompt": PROMPT}, {"start": float("nan"), "prompt": PROMPT}]}, "nan"),
    ({"segments": [{"start": 0.0, "prompt": PROMPT}, {"start": 9.0, "prompt": PROMPT}]}, "9"),  # after the end
])
def test_bad_timelines(pipe, timeline, match):
    with pytest.raises(TimelineError, match=match):
        pipe.stream(timeline, seconds=4)


@pytest.mark.parametrize("seconds,match", [
    (0, r"seconds must be in \(0, 600\], got 0"),
    (-2, r"got -2"),
    (601, r"got 601"),
    (float("nan"), "must be a number"),
])
def test_bad_seconds(pipe, seconds, match):
    with pytest.raises(ConfigError, match=match):
        pipe.stream(PROMPT, seconds=seconds)


def test_seconds_cap_is_configurable(pipe):
    with pytest.raises(ConfigError, match=r"\(0, 5\]"):
        pipe.stream(PROMPT, seconds=6, max_seconds=5)


def test_bad_configs(pipe):
    with pytest.raises(ConfigError, match="unknown memory mode 'ssm'; accepted: hybrid, sink, window, full"):
        pipe.stream(PROMPT, seconds=1, memory="ssm")
    with pytest.raises(ConfigError, match="unknown model 'huge'"):
        VideoSSMPipeline.from_pretrained("huge")
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        get_model_config("huge")
    with pytest.raises(ConfigError, match=r"window_frames=5 is smaller than sink_frames \+ block_frames = 3 \+ 3"):
        pipe.stream(PROMPT, seconds=1, window_frames=5)
    with pytest.raises(ConfigError, match="unknown rope mode"):
        StreamConfig(rope="alibi").validate()
    assert math.isfinite(StreamConfig().validate().shift)


def test_text_encoder_zeroes_padding_and_caches(pipe):
    encoder = pipe.text_encoder
    emb = encoder.encode(PROMPT)
    n_tokens = len(encoder.check(PROMPT))
    assert emb.shape == (1, pipe.model_config.text_len, pipe.model_config.text_dim)
    assert emb[0, :n_tokens].abs().sum(-1).gt(0).all()
    assert torch.equal(emb[0, n_tokens:], torch.zeros_like(emb[0, n_tokens:]))
    assert encoder.encode(PROMPT) is emb  # cached per prompt
    assert encoder.encode(PROMPT.upper()) is not emb and torch.equal(encoder.encode(PROMPT.upper()), emb)
