"""The Triton kernels under TRITON_INTERPRET=1 on CPU tensors, against the PyTorch references.

Triton decides at decoration time whether a function is interpreted, its own library (tl.cumsum, tl.sum, ...)
included, so TRITON_INTERPRET=1 must be set before `triton` is first imported. Alone, this module sets it at
import time and runs the kernels in-process. In a full run, something earlier (torch._dynamo, via diffusers)
has already imported triton, so the kernel tests skip here and `test_kernels_in_a_fresh_interpreter` runs
this module again in a fresh process. Shapes are tiny: the interpreter runs every program in numpy.
"""

import os
import subprocess
import sys

import pytest
import torch

IN_PROCESS = "triton" not in sys.modules or os.environ.get("TRITON_INTERPRET") == "1"
os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined (see the module docstring)

pytest.importorskip("triton", reason="triton is not installed (pip install -r requirements-dev.txt on Linux)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(IN_PROCESS, reason="the kernel tests run in this process")
def test_kernels_in_a_fresh_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.abspath(__file__),
                           "-k", "not test_kernels_in_a_fresh_interpreter"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-3000:]


# Kernel tests: in this process only if its triton is interpreted, else through the fresh-process test above.
needs_interpreter = pytest.mark.skipif(
    not IN_PROCESS, reason="triton was imported before TRITON_INTERPRET=1; test_kernels_in_a_fresh_interpreter runs these")

from tests.test_ops_gated_delta_rule import make_inputs  # noqa: E402
from videossm.ops.gated_delta_rule import naive_recurrent_gated_delta_rule  # noqa: E402
from videossm.ops.memory_readout import memory_readout as reference_memory_readout  # noqa: E402

if IN_PROCESS:
    triton_ops = pytest.importorskip("videossm.ops.triton", reason="the Triton kernels failed to import")
    assert triton_ops.INTERPRET

    # An inf or nan anywhere in a kernel (even in masked padding) makes numpy warn: fail on it.
    pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def close(a, b, atol, rtol):
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


FP32 = dict(atol=1e-4, rtol=1e-4)

# (B, T, H, K, V, g_range, beta_range, initial state, dtype): T not a multiple of the 64-token chunk in most,
# several heads in all, K and V over {16, 32, 64, 128}, decays exp(g) near 0 and near 1, beta near 0 and 1.
GDR_CASES = {
    "T37 H3 K16 V16 no state": (1, 37, 3, 16, 16, (-1.0, 0.0), (0.0, 1.0), False, torch.float32),
    "T70 H2 K32 V32 state": (1, 70, 2, 32, 32, (-1.0, 0.0), (0.0, 1.0), True, torch.float32),
    "T64 H2 K64 V64 state": (1, 64, 2, 64, 64, (-1.0, 0.0), (0.0, 1.0), True, torch.float32),
    "T129 H2 K128 V128 state": (1, 129, 2, 128, 128, (-1.0, 0.0), (0.0, 1.0), True, torch.float32),
    "B2 T20 K16 V128 no state": (2, 20, 2, 16, 128, (-1.0, 0.0), (0.0, 1.0), False, torch.float32),
    "B2 T5 K128 V32 state": (2, 5, 2, 128, 32, (-1.0, 0.0), (0.0, 1.0), True, torch.float32),
    "decay near 0": (1, 90, 2, 32, 16, (-12.0, -8.0), (0.0, 1.0), True, torch.float32),
    "decay near 1": (1, 90, 2, 32, 16, (-1e-4, 0.0), (0.0, 1.0), True, torch.float32),
    "mixed strong decay": (1, 90, 2, 16, 32, (-50.0, 0.0), (0.0, 1.0), True, torch.float32),
    "beta near 0": (1, 90, 2, 32, 16, (-1.0, 0.0), (0.0, 1e-3), True, torch.float32),
    "beta near 1, decay near 1": (1, 90, 2, 32, 16, (-1e-4, 0.0), (0.999, 1.0), True, torch.float32),
    "bf16 T70 K64 V64 state": (1, 70, 2, 64, 64, (-1.0, 0.0), (0.0, 1.0), True, torch.bfloat16),
    "bf16 T37 K128 V128 no state": (1, 37, 2, 128, 128, (-1.0, 0.0), (0.0, 1.0), False, torch.bfloat16),
}


@needs_interpreter
@pytest.mark.parametrize("case", list(GDR_CASES))
def test_gated_delta_rule_matches_naive(case):
    B, T, H, K, V, g_range, beta_range, state, dtype = GDR_CASES[case]
    q, k, v, g, beta, h0 = make_inputs(B=B, T=T, H=H, K=K, V=V, g_range=g_range, beta_range=beta_range,
                                       state=state, dtype=dtype, seed=T + K + V)
    # The ground truth in fp32 math from the same (possibly bf16-rounded) inputs.
    o_ref, s_ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    o, s = triton_ops.gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    assert o.shape == (B, T, H, V) and o.dtype == dtype
    assert s.shape == (B, H, K, V) and s.dtype == torch.float32
    assert torch.isfinite(o.float()).all() and torch.isfinite(s).all()
    if dtype == torch.float32:
        close(o, o_ref, **FP32)
    else:  # both outputs are rounded to bf16 once from fp32 math
        close(o.float(), o_ref.float(), atol=2e-2, rtol=2e-2)
    close(s, s_ref, **FP32)

    # The eviction path: the same state without queries or outputs.
    s_update = triton_ops.gated_delta_rule_update(k, v, g, beta, initial_state=h0)
    _, s_ref_kk = naive_recurrent_gated_delta_rule(k, k, v, g, beta, initial_state=h0, output_final_state=True)
    close(s_update, s_ref_kk, **FP32)
    close(s_update, s, **FP32)  # the state does not depend on q


@needs_interpreter
def test_scale_output_final_state_and_state_not_modified():
    q, k, v, g, beta, h0 = make_inputs(B=1, T=40, H=2, K=16, V=16, state=True, seed=1)
    before = h0.clone()
    o, s = triton_ops.gated_delta_rule(q, k, v, g, beta, scale=0.3, initial_state=h0)
    assert s is None and torch.equal(h0, before)
    o_ref, _ = naive_recurrent_gated_delta_rule(q, k, v, g, beta, scale=0.3, initial_state=h0)
    close(o, o_ref, **FP32)


@needs_interpreter
def test_state_passing_across_calls_equals_one_call():
    # Evicting 3 frames in 3 calls must give the state of one call over all of them.
    q, k, v, g, beta, h0 = make_inputs(B=1, T=90, H=2, K=32, V=16, state=True, seed=2)
    s = h0
    for part in (slice(0, 30), slice(30, 61), slice(61, 90)):
        s = triton_ops.gated_delta_rule_update(k[:, part], v[:, part], g[:, part], beta[:, part], initial_state=s)
    _, s_ref = naive_recurrent_gated_delta_rule(k, k, v, g, beta, initial_state=h0, output_final_state=True)
    close(s, s_ref, **FP32)


@needs_interpreter
def test_non_contiguous_inputs():
    q, k, v, g, beta, h0 = make_inputs(B=1, T=30, H=2, K=16, V=32, state=True, seed=3)
    # [B, H, T, *] storage viewed as [B, T, H, *], as a head-major cache would hand it over.
    qn, kn, vn = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    gn, bn = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (g, beta))
    assert not kn.is_contiguous() and not gn.is_contiguous()
    o, s = triton_ops.gated_delta_rule(qn, kn, vn, gn, bn, initial_state=h0, output_final_state=True)
    o_ref, s_ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    close(o, o_ref, **FP32)
    close(s, s_ref, **FP32)


@needs_interpreter
def test_fp64_and_empty_use_the_reference():
    q, k, v, g, beta, h0 = make_inputs(B=1, T=9, H=1, K=4, V=3, state=True, dtype=torch.float64)
    o, s = triton_ops.gated_delta_rule(q, k, v, g, beta, initial_state=h0.double(), output_final_state=True)
    assert o.dtype == torch.float64 and s.dtype == torch.float64
    o0, s0 = triton_ops.gated_delta_rule(q[:, :0], k[:, :0], v[:, :0], g[:, :0], beta[:, :0],
                                         initial_state=h0.double(), output_final_state=True)
    assert o0.shape == (1, 0, 1, 3) and torch.equal(s0, h0.double())


@needs_interpreter
def test_input_errors_are_the_shared_ones():
    q, k, v, g, beta, _ = make_inputs(B=1, T=5, H=2, K=16, V=16)
    with pytest.raises(ValueError, match=r"g must be \[B,T,H\]"):
        triton_ops.gated_delta_rule(q, k, v, g[..., :1], beta)
    with pytest.raises(ValueError, match=r"initial_state must be \[B,H,K,V\]"):
        triton_ops.gated_delta_rule_update(k, v, g, beta, initial_state=torch.zeros(1, 2, 16, 15))


# ------------------------------------------------------------------------------------------------- read-out


def readout_inputs(B, N, H, K, V, dtype, router_shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, N, H, K, generator=gen), dim=-1).to(dtype)  # [B, N, H, K]
    state = torch.randn(B, H, K, V, generator=gen)  # [B, H, K, V] fp32
    gate = (2 * torch.randn(B, N, H, V, generator=gen)).to(dtype)  # [B, N, H, V]
    norm_weight = (1 + 0.5 * torch.randn(V, generator=gen)).to(dtype)  # [V]
    router = torch.rand(router_shape, generator=gen)  # fp32, as the router gives it
    return q, state, gate, norm_weight, router


READOUT_CASES = {
    "N50 H3 K16 V16 router [1,N,1,1]": (1, 50, 3, 16, 16, torch.float32, (1, 50, 1, 1)),
    "B2 N33 K32 V64 router [B,N,H,V]": (2, 33, 2, 32, 64, torch.float32, (2, 33, 2, 64)),
    "N70 K64 V32 router scalar": (1, 70, 2, 64, 32, torch.float32, ()),
    "N40 K128 V128": (1, 40, 2, 128, 128, torch.float32, (1, 40, 1, 1)),
    "bf16 N45 K128 V128": (1, 45, 2, 128, 128, torch.bfloat16, (1, 45, 1, 1)),
    "bf16 N20 K16 V32": (2, 20, 2, 16, 32, torch.bfloat16, (2, 20, 1, 1)),
}


@needs_interpreter
@pytest.mark.parametrize("case", list(READOUT_CASES))
def test_memory_readout_matches_reference(case):
    B, N, H, K, V, dtype, router_shape = READOUT_CASES[case]
    args = readout_inputs(B, N, H, K, V, dtype, router_shape, seed=N)
    out = triton_ops.memory_readout(*args)
    ref = reference_memory_readout(*args)
    assert out.shape == (B, N, H, V) and out.dtype == dtype
    if dtype == torch.float32:
        close(out, ref, atol=1e-5, rtol=1e-5)
    else:
        close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)


@needs_interpreter
def test_memory_readout_scale_eps_and_strided_gate():
    q, state, _, norm_weight, router = readout_inputs(1, 24, 2, 16, 16, torch.float32, (1, 24, 1, 1), seed=5)
    gate_head_major = torch.randn(1, 2, 24, 16).transpose(1, 2)  # [B, N, H, V] view of [B, H, N, V]
    gate_wide = torch.randn(1, 24, 2, 32)[..., ::2]  # last-dim stride 2
    for g in (gate_head_major, gate_wide):
        assert not g.is_contiguous()
        out = triton_ops.memory_readout(q, state, g, norm_weight, router, scale=0.5, eps=1e-2)
        close(out, reference_memory_readout(q, state, g, norm_weight, router, scale=0.5, eps=1e-2), atol=1e-5, rtol=1e-5)


@needs_interpreter
def test_memory_readout_zero_gate_is_exactly_zero():
    q, state, gate, norm_weight, router = readout_inputs(1, 20, 2, 16, 16, torch.float32, (1, 20, 1, 1))
    assert torch.equal(triton_ops.memory_readout(q, state, torch.zeros_like(gate), norm_weight, router),
                       torch.zeros(1, 20, 2, 16))


# -------------------------------------------------------------------------------------------------- warm-up


@needs_interpreter
def test_warmup_runs_once_per_process():
    shapes = dict(num_heads=2, key_dim=16, value_dim=16, evicted_tokens=20, query_tokens=20, dtype=torch.float32)
    assert triton_ops.warmup("cpu", **shapes) is True
    assert triton_ops.warmup("cpu", **shapes) is False  # already compiled and tuned in this process
    assert triton_ops.warmup("cpu", **dict(shapes, evicted_tokens=40)) is False  # tuning does not key on T
    assert triton_ops.warmup("cpu", **dict(shapes, key_dim=32)) is True
