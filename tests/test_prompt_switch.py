"""Prompt switching: the conditioning changes from the next block, the KV re-cache rebuilds the
window's K/V and gates with the new prompt, and the sink and the memory state M are kept."""

import pytest
import torch

from videossm import VideoSSMPipeline
from videossm.config import StreamConfig
from videossm.timeline import Timeline, TimelineError

from .helpers import tiny_model
from .reference_model import reference_forward
from videossm.sampling.stream import StreamingGenerator

PROMPT_A = "a red circle moving right on a gray background"
PROMPT_B = "a blue square moving left on a black background"


def _texts(cfg):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(1, cfg.text_len, cfg.text_dim, generator=g), torch.randn(1, cfg.text_len, cfg.text_dim, generator=g))


def test_recache_rebuilds_window_keeps_sink_and_memory():
    model = tiny_model()
    sc = StreamConfig(memory="hybrid", block_frames=2, window_frames=6, sink_frames=2)
    text_a, text_b = _texts(model.config)
    gen = StreamingGenerator(model, sc)
    state = gen.new_state(seed=0)
    state.trace = []
    gen.set_prompt(state, "A", text_a)
    for _ in range(4):  # frames 0..7: sink 0-1, evicted 2-5, window 6-7
        gen.generate_block(state)
    cache = state.cache
    assert cache.sink_frames == [0, 1] and cache.recent_frames == [6, 7] and cache.evicted_frames == 4
    before = [(l.sink.key.clone(), l.recent.key.clone(), l.recent.value.clone(), l.recent.beta.clone(),
               l.recent.alpha.clone(), l.memory_state.clone()) for l in cache.layers]
    clean = {e["frame_start"] + j: e["x"][:, :, j : j + 1] for e in state.trace if e["write"] for j in range(2)}

    assert gen.set_prompt(state, "B", text_b) is True  # switch -> re-cache
    for i, (layer, (sink_k, rec_k, rec_v, rec_beta, rec_alpha, memory)) in enumerate(zip(cache.layers, before)):
        assert torch.equal(layer.sink.key, sink_k), "the sink must be kept"
        assert torch.equal(layer.memory_state, memory), "M must be unchanged by a switch"
        if i == 0:  # text enters after layer 0's self-attention: its K/V cannot depend on the prompt
            continue
        assert not torch.allclose(layer.recent.key, rec_k), "window K must be rebuilt"
        assert not torch.allclose(layer.recent.value, rec_v), "window V must be rebuilt"
        assert not torch.allclose(layer.recent.beta, rec_beta), "cached beta must be rebuilt"
        assert not torch.allclose(layer.recent.alpha, rec_alpha), "cached alpha must be rebuilt"
    assert cache.recent_frames == [6, 7]

    # The next block, under the new prompt, equals the reference in which the window was encoded with the
    # new prompt (seeing only the sink, block-causally) and the memory is the kept M.
    state.trace = []
    gen.generate_block(state)
    heads_mem = [b[5][0].double().transpose(-1, -2) for b in before]  # M at the switch, [H, V, K]
    zero = torch.zeros_like(heads_mem[0])
    for entry in state.trace:
        latents = torch.cat([clean[0], clean[1], clean[6], clean[7], entry["x"]], dim=2)
        timesteps = torch.tensor([0.0] * 4 + [entry["timestep"]] * 2)
        v_ref, _ = reference_forward(
            model, latents, timesteps, [text_a, text_a, text_b, text_b, text_b, text_b], [[0, 1], [2, 3], [4, 5]],
            sink=2, recent=2, rope_mode="relative", use_memory=True, frame_ids=[0, 1, 6, 7, 8, 9],
            memory_for_group=lambda g, layer: zero if g == 0 else heads_mem[layer])
        err = (v_ref[:, :, 4:] - entry["v"]).abs().max().item()
        assert err < 2e-4, f"t={entry['timestep']}: {err}"


@pytest.fixture(scope="module")
def pipe():
    return VideoSSMPipeline.from_pretrained("test", device="cpu")


def test_switch_changes_conditioning_from_next_block(pipe):
    switch_at = 1.3  # block 2 starts at pixel frame 21 = 1.3125 s; block 1 at 0.5625 s
    timeline = Timeline([(0.0, PROMPT_A), (switch_at, PROMPT_B)])
    h_switch = pipe.stream(timeline, seconds=2.5, seed=1, decode=False)
    h_single = pipe.stream(PROMPT_A, seconds=2.5, seed=1, decode=False)
    switched, single = list(h_switch), list(h_single)
    assert [c.prompt for c in switched] == [PROMPT_A, PROMPT_A, PROMPT_B, PROMPT_B]
    for b in range(2):
        assert torch.equal(switched[b].latents, single[b].latents)
    assert not torch.allclose(switched[2].latents, single[2].latents)
    assert switched[2].recached and not switched[1].recached
    assert h_switch.stats["prompt_switches"] == [{"block": 2, "seconds": 1.3125, "prompt": PROMPT_B, "recached": True}]


def test_live_edit_takes_effect_at_next_block(pipe):
    handle = pipe.stream(PROMPT_A, seconds=3.5, seed=0, decode=False)
    it = iter(handle)
    assert [next(it).prompt for _ in range(2)] == [PROMPT_A] * 2
    # block 2 starts at 1.3125 s; the lock covers only what is generated, so this edit is still allowed
    assert handle.timeline.locked_seconds == pytest.approx(1.3125)
    with pytest.raises(TimelineError, match="already generated"):
        handle.timeline.add(1.0, PROMPT_B)  # the past cannot be edited
    handle.timeline.add(1.3125, PROMPT_B)
    rest = list(it)
    assert [c.prompt for c in rest] == [PROMPT_B] * 3
    assert rest[0].recached and not rest[1].recached


def test_cancel_stops_the_stream(pipe):
    handle = pipe.stream(PROMPT_A, seconds=10, seed=0, decode=False)
    chunks = []
    for chunk in handle:
        chunks.append(chunk)
        if len(chunks) == 2:
            handle.cancel()
    assert len(chunks) == 2 and handle.num_blocks > 2
