"""The key test: streaming with the cache equals an independent full-sequence reference, in every
memory mode, through eviction and memory updates."""

import pytest
import torch

from videossm.config import StreamConfig

from .helpers import run_stream, tiny_model
from .reference_model import reference_forward

CASES = [
    # memory, block, window, sink, rope, blocks
    ("hybrid", 2, 6, 2, "relative", 7),
    ("sink", 2, 6, 2, "relative", 6),
    ("window", 2, 6, 2, "relative", 6),
    ("full", 2, 6, 2, "relative", 5),
    ("hybrid", 2, 6, 2, "absolute", 6),
    ("hybrid", 3, 12, 3, "relative", 6),  # the default LongLive window semantics
    ("hybrid", 3, 7, 1, "relative", 5),  # a sink that is not a whole block
]


def check_against_reference(model, sc: StreamConfig, blocks: int):
    gen, state, _, text = run_stream(model, sc, blocks)
    clean = {}
    for entry in state.trace:
        if entry["write"]:
            for j in range(entry["x"].shape[2]):
                clean[entry["frame_start"] + j] = entry["x"][:, :, j : j + 1]
    sink, recent = sc.effective_sink_frames, sc.recent_frames
    worst = 0.0
    for entry in state.trace:
        f0, x = entry["frame_start"], entry["x"]
        nb = x.shape[2]
        latents = torch.cat([clean[f] for f in range(f0)] + [x], dim=2)
        timesteps = torch.tensor([sc.context_timestep] * f0 + [entry["timestep"]] * nb)
        groups = [list(range(s, min(s + sc.block_frames, f0))) for s in range(0, f0, sc.block_frames)]
        groups.append(list(range(f0, f0 + nb)))
        v_ref, _ = reference_forward(model, latents, timesteps, [text] * (f0 + nb), groups, sink, recent,
                                     sc.rope, sc.uses_memory)
        err = (v_ref[:, :, f0:] - entry["v"]).abs().max().item()
        worst = max(worst, err)
        assert err < 2e-4, f"block {entry['block']} t={entry['timestep']}: max error {err}"
    return state, worst


@pytest.mark.parametrize("memory,block,window,sink,rope,blocks", CASES)
def test_streaming_equals_reference(memory, block, window, sink, rope, blocks):
    model = tiny_model()
    sc = StreamConfig(memory=memory, block_frames=block, window_frames=window, sink_frames=sink, rope=rope)
    state, worst = check_against_reference(model, sc, blocks)
    if memory != "full":
        assert state.cache.evicted_frames > 0, "the case must exercise eviction"
    if memory == "hybrid":
        assert any(layer.memory_state.abs().max() > 0 for layer in state.cache.layers)


def test_memory_state_equals_matrix_recurrence():
    """The memory state kept by the stream equals the token-by-token recurrence over evicted tokens."""
    model = tiny_model()
    sc = StreamConfig(memory="hybrid", block_frames=2, window_frames=6, sink_frames=2)
    gen, state, latents, text = run_stream(model, sc, blocks=6)
    nf = latents.shape[2]
    # One more (unused) group makes the reference compute the state for everything evicted so far.
    groups = [list(range(s, s + 2)) for s in range(0, nf, 2)]
    probe = torch.zeros_like(latents[:, :, :2])
    seq = torch.cat([latents, probe], dim=2)
    _, states = reference_forward(model, seq, torch.zeros(nf + 2), [text] * (nf + 2), groups + [[nf, nf + 1]],
                                  sc.effective_sink_frames, sc.recent_frames, "relative", True)
    for layer, ref_state in zip(state.cache.layers, states):
        got = layer.memory_state[0].double().transpose(-1, -2)  # [H, K, V] -> [H, V, K]
        assert torch.allclose(got, ref_state, atol=1e-4), (got - ref_state).abs().max()
