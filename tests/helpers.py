"""Small builders shared by tests."""

from __future__ import annotations

import json
import socket

import torch

from videossm.config import StreamConfig, get_model_config
from videossm.models.transformer import VideoSSMTransformer
from videossm.sampling.stream import StreamingGenerator


def tiny_model(seed: int = 0, live_memory: bool = True, preset: str = "test") -> VideoSSMTransformer:
    """The `test` preset; with live_memory the zero-initialised memory read-out gets random weights so
    the memory path changes the output (an untrained memory would add exactly zero)."""
    torch.manual_seed(seed)
    model = VideoSSMTransformer(get_model_config(preset)).eval()
    if live_memory:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for block in model.blocks:
                m = block.memory
                m.out_gate.weight.copy_(torch.randn(m.out_gate.weight.shape, generator=g) * 0.5)
                m.out_gate.bias.copy_(torch.randn(m.out_gate.bias.shape, generator=g) * 0.5)
                m.router_bias.fill_(0.5)
                m.A_log.copy_(torch.empty(m.A_log.shape).uniform_(-3, 0, generator=g))  # slow decays
    return model


def run_stream(model, stream_config: StreamConfig, blocks: int, seed: int = 0, text=None, trace=True):
    gen = StreamingGenerator(model, stream_config)
    state = gen.new_state(seed)
    if trace:
        state.trace = []
    if text is None:
        text = torch.randn(1, model.config.text_len, model.config.text_dim, generator=torch.Generator().manual_seed(7))
    gen.set_prompt(state, "p", text)
    latents = [gen.generate_block(state) for _ in range(blocks)]
    return gen, state, torch.cat(latents, dim=2), text


def free_port() -> int:
    """A free TCP port on loopback, for a test server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timeline_json(*segments) -> str:
    """Timeline JSON from (start, prompt) pairs."""
    return json.dumps({"fps": 16, "segments": [{"start": s, "prompt": p} for s, p in segments]})
