"""Without CUDA, nothing imports the GPU kernels by accident, and a GPU-only request is one clear line.

Each check runs in a fresh interpreter, so sys.modules shows what that user's process imported.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a red circle moving right on a gray background"

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a machine without CUDA")


def run_python(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "VIDEOSSM_OPS")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **env_overrides)
    return subprocess.run([sys.executable, *code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


OPS_ON_CPU = """
import json, sys, torch
import videossm.ops as ops
from videossm.models.memory import HybridMemory
torch.set_num_threads(1)
B, T, H, K = 1, 70, 2, 16
k = torch.nn.functional.normalize(torch.randn(B, T, H, K), dim=-1)
v, g, beta = torch.randn(B, T, H, K), -torch.rand(B, T, H), torch.rand(B, T, H)
o, s = ops.gated_delta_rule(k, k, v, g, beta, output_final_state=True)
s = ops.gated_delta_rule_update(k, v, g, beta, initial_state=s)
memory = HybridMemory(dim=32, num_heads=H, head_dim=K)
s = memory.update(s, k, v, g, beta)
out = memory.read(torch.randn(B, 10, 32), k[:, :10], s, torch.rand(1, 10, 1, 1))
warm = ops.warmup("cpu", num_heads=H, key_dim=K, value_dim=K, evicted_tokens=T, query_tokens=T)
print(json.dumps({"triton": "triton" in sys.modules, "kernels": "videossm.ops.triton" in sys.modules,
                  "backend": ops.selected_backend("cpu", needs_grad=False), "warmup": warm,
                  "finite": bool(torch.isfinite(out).all())}))
"""


def test_ops_on_cpu_never_import_triton():
    proc = run_python(["-c", OPS_ON_CPU], VIDEOSSM_OPS="auto")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"triton": False, "kernels": False, "backend": "reference", "warmup": None, "finite": True}
    assert "Traceback" not in proc.stderr and "triton" not in proc.stderr.lower(), proc.stderr


PIPELINE_ON_CPU = """
import json, sys
from videossm.pipeline import VideoSSMPipeline
pipe = VideoSSMPipeline.from_pretrained("test", device="cpu", memory="hybrid")
frames, stats = pipe.generate("a red circle", seconds=2.0, seed=0, decode=False)
# `triton` itself may be in sys.modules here: torch._dynamo (imported by diffusers) probes for the package.
# Our GPU kernels must not be.
print(json.dumps({"kernels": "videossm.ops.triton" in sys.modules, "warmup": pipe.warmup_ops(),
                  "blocks": len(stats["per_block"])}))
"""


def test_pipeline_on_cpu_loads_and_streams_without_the_kernels():
    proc = run_python(["-c", PIPELINE_ON_CPU], VIDEOSSM_OPS="auto")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kernels"] is False and result["warmup"] is None and result["blocks"] >= 2
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("value,message", [
    ("triton", "error: VIDEOSSM_OPS='triton' selects a CUDA-only ops backend, but the inputs are on cpu"),
    ("cuda-magic", "error: VIDEOSSM_OPS='cuda-magic' is not a known ops backend"),
])
def test_cli_gpu_backend_without_cuda_is_one_clear_line(tmp_path, value, message):
    out = tmp_path / "v.mp4"
    proc = run_python(["-m", "videossm", "generate", "--model", "test", "--prompt", PROMPT, "--seconds", "1",
                       "--device", "cpu", "--out", str(out)], VIDEOSSM_OPS=value)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


# ------------------------------------------------------------------- in-process: update dispatch, cache dir


@pytest.fixture
def isolated_ops(monkeypatch):
    import videossm.ops as ops

    monkeypatch.setattr(ops, "_REGISTRY", dict(ops._REGISTRY))
    monkeypatch.setattr(ops, "_LOGGED", set())
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    return ops


def update_inputs(T=40, H=2, K=16, V=8):
    gen = torch.Generator().manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(1, T, H, K, generator=gen), dim=-1)
    v = torch.randn(1, T, H, V, generator=gen)
    g, beta = -torch.rand(1, T, H, generator=gen), torch.rand(1, T, H, generator=gen)
    return k, v, g, beta, torch.randn(1, H, K, V, generator=gen)


def test_update_is_the_final_state_of_the_full_rule(isolated_ops):
    k, v, g, beta, h0 = update_inputs()
    state = isolated_ops.gated_delta_rule_update(k, v, g, beta, initial_state=h0)
    _, expected = isolated_ops.gated_delta_rule(k, k, v, g, beta, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(state, expected, atol=0, rtol=0)
    empty = isolated_ops.gated_delta_rule_update(k[:, :0], v[:, :0], g[:, :0], beta[:, :0], initial_state=h0)
    assert torch.equal(empty, h0)


def test_update_uses_a_backends_state_only_kernel_when_it_has_one(isolated_ops, monkeypatch):
    ops = isolated_ops
    ref = ops._REGISTRY["reference"]
    calls = []

    def state_only(k, v, g, beta, initial_state=None):
        calls.append("state_update")
        return ref.gated_delta_rule(k, k, v, g, beta, initial_state=initial_state, output_final_state=True)[1]

    def full(q, k, v, g, beta, **kw):
        calls.append("gated_delta_rule" + (" q=k" if q is k else ""))
        return ref.gated_delta_rule(q, k, v, g, beta, **kw)

    ops.register_backend("with_update", full, ref.memory_readout, state_update=state_only)
    ops.register_backend("without_update", full, ref.memory_readout)
    k, v, g, beta, h0 = update_inputs()
    for name in ("with_update", "without_update"):
        monkeypatch.setenv(ops.ENV_VAR, name)
        ops.gated_delta_rule_update(k, v, g, beta, initial_state=h0)
    assert calls == ["state_update", "gated_delta_rule q=k"]
    with pytest.raises(TypeError, match="state_update"):
        ops.register_backend("bad", full, ref.memory_readout, state_update="not callable")


def test_warmup_off_cuda_does_nothing(isolated_ops):
    assert isolated_ops.warmup("cpu", num_heads=2, key_dim=16, value_dim=16, evicted_tokens=8, query_tokens=8) is None


def test_triton_cache_dir_is_ours_unless_the_user_set_one(isolated_ops, monkeypatch, tmp_path):
    ops = isolated_ops
    monkeypatch.setenv("TRITON_CACHE_DIR", "")  # recorded, so the value set below is undone after the test
    monkeypatch.delenv("TRITON_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ops.triton_cache_dir() == str(tmp_path / "videossm" / "triton")
    ops._configure_triton_cache()
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "videossm" / "triton")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "mine"))
    ops._configure_triton_cache()
    assert ops.triton_cache_dir() == os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "mine")
