"""Gated delta rule: chunk (WY) form vs the token-by-token reference, state passing, autograd, dispatch."""

import logging

import pytest
import torch
import torch.nn.functional as F

import videossm.ops as ops
from videossm.ops import BackendUnavailableError, gated_delta_rule
from videossm.ops.gated_delta_rule import chunk_gated_delta_rule, naive_recurrent_gated_delta_rule


def make_inputs(
    B=2, T=20, H=3, K=16, V=32, g_range=(-1.0, 0.0), beta_range=(0.0, 1.0), state=False, dtype=torch.float32, seed=0
):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    lo, hi = g_range
    g = lo + (hi - lo) * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    lo, hi = beta_range
    beta = lo + (hi - lo) * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64) if state else None
    cast = [x.to(dtype) for x in (q, k, v, g, beta)]
    return (*cast, None if h0 is None else h0.float())


def close(a, b, atol=1e-5, rtol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


@pytest.mark.parametrize(
    "T,chunk,K,V",
    [(1, 16, 16, 32), (7, 16, 32, 8), (64, 64, 16, 32), (100, 32, 32, 8), (130, 64, 16, 32), (130, 16, 32, 8)],
)
@pytest.mark.parametrize("state", [False, True])
def test_chunk_matches_naive(T, chunk, K, V, state):
    q, k, v, g, beta, h0 = make_inputs(T=T, K=K, V=V, state=state, seed=T + chunk)
    o_ref, s_ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    o, s = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=chunk)
    assert o.shape == (2, T, 3, V) and o.dtype == torch.float32
    assert s.shape == (2, 3, K, V) and s.dtype == torch.float32
    close(o, o_ref)
    close(s, s_ref)


@pytest.mark.parametrize(
    "name,g_range,beta_range",
    [
        ("strong decay", (-20.0, -19.0), (0.0, 1.0)),
        ("mixed strong decay", (-50.0, 0.0), (0.0, 1.0)),  # G_i - G_j above the diagonal reaches ~+3000
        ("no decay", (-1e-4, 0.0), (0.0, 1.0)),
        ("beta near 0", (-1.0, 0.0), (0.0, 1e-3)),
        ("beta near 1", (-1e-4, 0.0), (0.999, 1.0)),
    ],
)
def test_chunk_matches_naive_extremes(name, g_range, beta_range):
    q, k, v, g, beta, h0 = make_inputs(T=100, g_range=g_range, beta_range=beta_range, state=True, seed=3)
    o_ref, s_ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    o, s = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=64)
    assert torch.isfinite(o).all() and torch.isfinite(s).all(), name
    close(o, o_ref)
    close(s, s_ref)


def test_naive_matches_closed_form_single_token():
    # T = 1 from a known state: h = e^g h0 + k beta (v - e^g h0^T k)^T, o = h^T q * scale.
    q, k, v, g, beta, h0 = make_inputs(B=1, T=1, H=1, K=4, V=3, state=True, seed=5)
    h = g[0, 0, 0].exp() * h0[0, 0]
    v_new = beta[0, 0, 0] * (v[0, 0, 0] - h.T @ k[0, 0, 0])
    h = h + torch.outer(k[0, 0, 0], v_new)
    o_expected = h.T @ q[0, 0, 0] * 0.7
    o, s = naive_recurrent_gated_delta_rule(q, k, v, g, beta, scale=0.7, initial_state=h0, output_final_state=True)
    close(o[0, 0, 0], o_expected)
    close(s[0, 0], h)


def test_default_scale_is_inverse_sqrt_k():
    q, k, v, g, beta, _ = make_inputs(T=9, K=16)
    o_default, _ = chunk_gated_delta_rule(q, k, v, g, beta)
    o_explicit, _ = chunk_gated_delta_rule(q, k, v, g, beta, scale=16**-0.5)
    o_other, _ = chunk_gated_delta_rule(q, k, v, g, beta, scale=1.0)
    close(o_default, o_explicit, atol=0, rtol=0)
    assert not torch.allclose(o_default, o_other)


def test_output_final_state_false_returns_none():
    q, k, v, g, beta, h0 = make_inputs(T=10, state=True)
    for fn in (naive_recurrent_gated_delta_rule, chunk_gated_delta_rule):
        o, s = fn(q, k, v, g, beta, initial_state=h0)
        assert s is None and o.shape == v.shape


def test_initial_state_not_modified():
    q, k, v, g, beta, h0 = make_inputs(T=10, state=True)
    before = h0.clone()
    for fn in (naive_recurrent_gated_delta_rule, chunk_gated_delta_rule):
        fn(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    assert torch.equal(h0, before)


def test_bf16_inputs():
    q, k, v, g, beta, h0 = make_inputs(T=100, state=True, dtype=torch.bfloat16, seed=11)
    o_ref, s_ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    o, s = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=32)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32 and s_ref.dtype == torch.float32
    close(o.float(), o_ref.float(), atol=2e-2, rtol=2e-2)
    close(s, s_ref, atol=1e-4, rtol=1e-4)  # state math is fp32 from the same bf16 inputs


@pytest.mark.parametrize("split", [1, 37, 64])
def test_state_passing_equals_one_call(split):
    q, k, v, g, beta, h0 = make_inputs(T=100, state=True, seed=split)
    o_full, s_full = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=32)
    first = [x[:, :split] for x in (q, k, v, g, beta)]
    second = [x[:, split:] for x in (q, k, v, g, beta)]
    o1, s1 = chunk_gated_delta_rule(*first, initial_state=h0, output_final_state=True, chunk_size=32)
    o2, s2 = chunk_gated_delta_rule(*second, initial_state=s1, output_final_state=True, chunk_size=32)
    close(torch.cat([o1, o2], dim=1), o_full)
    close(s2, s_full)


def test_padding_does_not_touch_state():
    # T = 7 with chunk 16 pads 9 tokens; one more real token with g = 0, beta = 0 must also leave state alone.
    q, k, v, g, beta, h0 = make_inputs(T=7, state=True)
    _, s7 = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=16)
    _, s_naive = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    close(s7, s_naive)
    q8, k8, v8 = (torch.cat([x, torch.randn_like(x[:, :1])], dim=1) for x in (q, k, v))
    g8, b8 = (torch.cat([x, torch.zeros_like(x[:, :1])], dim=1) for x in (g, beta))
    _, s8 = chunk_gated_delta_rule(q8, k8, v8, g8, b8, initial_state=h0, output_final_state=True, chunk_size=16)
    close(s8, s7)


@pytest.mark.parametrize("fn", [naive_recurrent_gated_delta_rule, chunk_gated_delta_rule])
def test_empty_sequence(fn):
    q, k, v, g, beta, h0 = make_inputs(T=0, K=16, V=8, state=True)
    o, s = fn(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    assert o.shape == (2, 0, 3, 8) and o.dtype == v.dtype
    assert s.dtype == torch.float32 and torch.equal(s, h0) and s.data_ptr() != h0.data_ptr()
    o, s = fn(q, k, v, g, beta, output_final_state=True)
    assert torch.equal(s, torch.zeros(2, 3, 16, 8))
    assert fn(q, k, v, g, beta, initial_state=h0)[1] is None


def test_gradients_match_naive():
    q, k, v, g, beta, h0 = make_inputs(
        B=1, T=21, H=2, K=4, V=6, g_range=(-2.0, 0.0), state=True, dtype=torch.float64, seed=7
    )
    h0 = h0.double()
    gen = torch.Generator().manual_seed(1)
    w_o = torch.randn(1, 21, 2, 6, generator=gen, dtype=torch.float64)
    w_s = torch.randn(1, 2, 4, 6, generator=gen, dtype=torch.float64)

    def grads(fn, **kw):
        leaves = [x.clone().requires_grad_() for x in (q, k, v, g, beta, h0)]
        o, s = fn(*leaves[:5], initial_state=leaves[5], output_final_state=True, **kw)
        ((o * w_o).sum() + (s * w_s).sum()).backward()
        return [x.grad for x in leaves]

    ref = grads(naive_recurrent_gated_delta_rule)
    got = grads(chunk_gated_delta_rule, chunk_size=8)
    for name, a, b in zip(("q", "k", "v", "g", "beta", "h0"), got, ref, strict=True):
        assert a is not None and torch.isfinite(a).all(), name
        assert b.abs().max() > 0, name
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7, msg=lambda m, n=name: f"d/d{n}: {m}")


def test_gradients_finite_with_strong_decay():
    q, k, v, g, beta, _ = make_inputs(B=1, T=40, H=1, K=8, V=8, g_range=(-60.0, 0.0), seed=2)
    g = g.clone().requires_grad_()
    k = k.clone().requires_grad_()
    o, s = chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=True, chunk_size=32)
    (o.sum() + s.sum()).backward()
    assert torch.isfinite(g.grad).all() and torch.isfinite(k.grad).all()


def test_gradcheck_chunk():
    q, k, v, g, beta, h0 = make_inputs(B=1, T=5, H=1, K=3, V=2, state=True, dtype=torch.float64, seed=4)
    inputs = [x.clone().requires_grad_() for x in (q, k, v, g, beta, h0.double())]

    def f(q, k, v, g, beta, h0):
        return chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=2)

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(k=torch.zeros(2, 5, 3, 8)), r"k must be \[B,T,H,K\]"),
        (dict(v=torch.zeros(2, 4, 3, 8)), r"v must be \[B,T,H,V\]"),
        (dict(g=torch.zeros(2, 5, 2)), r"g must be \[B,T,H\]"),
        (dict(beta=torch.zeros(2, 5)), r"beta must be \[B,T,H\]"),
        (dict(initial_state=torch.zeros(2, 3, 16, 7)), r"initial_state must be \[B,H,K,V\]"),
        (dict(initial_state=torch.zeros(2, 3, 16, 8, dtype=torch.bfloat16)), r"initial_state .*bfloat16"),
        (dict(q=torch.zeros(2, 5, 3, 16, dtype=torch.int64)), r"q must have one of the dtypes"),
        (dict(scale=-1.0), r"scale must be .*\(0, inf\).*-1.0"),
    ],
)
def test_input_errors(bad, match):
    args = dict(
        q=torch.zeros(2, 5, 3, 16),
        k=torch.zeros(2, 5, 3, 16),
        v=torch.zeros(2, 5, 3, 8),
        g=torch.zeros(2, 5, 3),
        beta=torch.zeros(2, 5, 3),
    )
    args.update(bad)
    for fn in (gated_delta_rule, chunk_gated_delta_rule, naive_recurrent_gated_delta_rule):
        with pytest.raises((ValueError, TypeError), match=match):
            fn(**args)


@pytest.mark.parametrize("chunk", [0, -4, 2.5, True])
def test_bad_chunk_size(chunk):
    q, k, v, g, beta, _ = make_inputs(T=4)
    with pytest.raises(ValueError, match=rf"chunk_size must be an int >= 1; got {chunk!r}"):
        chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=chunk)


# ---------------------------------------------------------------------------------------------------- dispatch


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registry, load-error cache and lazy loaders that a test may change without leaking."""
    monkeypatch.setattr(ops, "_REGISTRY", dict(ops._REGISTRY))
    monkeypatch.setattr(ops, "_LOAD_ERRORS", {})
    monkeypatch.setattr(ops, "_LAZY_LOADERS", dict(ops._LAZY_LOADERS))
    monkeypatch.setattr(ops, "_LOGGED", set())
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    return ops


def spy_backend(reg, name, calls):
    real = reg._REGISTRY[name]

    def gdr(*args, **kwargs):
        calls.append(name)
        return real.gated_delta_rule(*args, **kwargs)

    reg.register_backend(name, gdr, real.memory_readout, device_types=real.device_types, replace=True)


def test_default_on_cpu_is_reference(isolated_registry):
    reg = isolated_registry
    assert reg.selected_backend(torch.device("cpu"), needs_grad=False) == "reference"
    assert reg.selected_backend("cpu", needs_grad=True) == "reference"
    calls = []
    spy_backend(reg, "reference", calls)
    spy_backend(reg, "naive", calls)
    q, k, v, g, beta, _ = make_inputs(T=6)
    o, _ = gated_delta_rule(q, k, v, g, beta)
    assert calls == ["reference"]
    close(o, chunk_gated_delta_rule(q, k, v, g, beta)[0], atol=0, rtol=0)


def test_env_naive_selects_naive(isolated_registry, monkeypatch):
    reg = isolated_registry
    monkeypatch.setenv(reg.ENV_VAR, "naive")
    assert reg.selected_backend("cpu", needs_grad=False) == "naive"
    calls = []
    spy_backend(reg, "reference", calls)
    spy_backend(reg, "naive", calls)
    q, k, v, g, beta, _ = make_inputs(T=6)
    gated_delta_rule(q, k, v, g, beta)
    assert calls == ["naive"]


def test_env_reference_and_case(isolated_registry, monkeypatch):
    monkeypatch.setenv(ops.ENV_VAR, " Reference ")
    assert ops.selected_backend("cpu", needs_grad=False) == "reference"


def test_env_unknown_value_errors(isolated_registry, monkeypatch):
    monkeypatch.setenv(ops.ENV_VAR, "cuda-magic")
    with pytest.raises(ValueError, match=r"VIDEOSSM_OPS='cuda-magic'.*accepted values: 'auto', 'reference'"):
        ops.selected_backend("cpu", needs_grad=False)
    q, k, v, g, beta, _ = make_inputs(T=3)
    with pytest.raises(ValueError, match="cuda-magic"):
        gated_delta_rule(q, k, v, g, beta)


@pytest.mark.parametrize("name", ["triton", "fla"])
def test_explicit_gpu_backend_on_cpu_errors(isolated_registry, monkeypatch, name):
    monkeypatch.setenv(ops.ENV_VAR, name)
    with pytest.raises(BackendUnavailableError, match=rf"VIDEOSSM_OPS='{name}' selects a CUDA-only .* on cpu"):
        ops.selected_backend("cpu", needs_grad=False)
    q, k, v, g, beta, _ = make_inputs(T=3)
    with pytest.raises(BackendUnavailableError, match="CUDA-only"):
        gated_delta_rule(q, k, v, g, beta)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("name", ["triton", "fla"])
def test_explicit_gpu_backend_without_cuda_says_why(isolated_registry, monkeypatch, name):
    # Asking for CUDA tensors on a machine without CUDA: the loader's reason surfaces.
    monkeypatch.setenv(ops.ENV_VAR, name)
    with pytest.raises(BackendUnavailableError, match=r"torch.cuda.is_available\(\) is False"):
        ops.selected_backend("cuda", needs_grad=False)


def test_auto_on_cpu_never_loads_gpu_backends(isolated_registry):
    loaded = []
    for name in ("triton", "fla"):
        isolated_registry._LAZY_LOADERS[name] = lambda n=name: loaded.append(n)
    assert ops.selected_backend("cpu", needs_grad=False) == "reference"
    q, k, v, g, beta, _ = make_inputs(T=3)
    gated_delta_rule(q, k, v, g, beta)
    assert ops.available_backends("cpu") == ["reference", "naive"]
    assert loaded == []


def test_auto_on_cuda_falls_back_silently_without_gpu_backends(isolated_registry):
    def unavailable():
        raise BackendUnavailableError("not here")

    for name in ("triton", "fla"):
        isolated_registry._LAZY_LOADERS[name] = unavailable
    assert ops.selected_backend("cuda", needs_grad=False) == "reference"


def test_auto_on_cuda_prefers_triton_then_fla_respecting_grad(isolated_registry):
    reg = isolated_registry
    noop = reg._REGISTRY["reference"]
    reg._LAZY_LOADERS["triton"] = lambda: reg.register_backend(
        "triton", noop.gated_delta_rule, noop.memory_readout, device_types=("cuda",), supports_grad=False
    )
    reg._LAZY_LOADERS["fla"] = lambda: reg.register_backend(
        "fla", noop.gated_delta_rule, noop.memory_readout, device_types=("cuda",), supports_grad=True
    )
    assert reg.selected_backend("cuda", needs_grad=False) == "triton"
    assert reg.selected_backend("cuda", needs_grad=True) == "fla"
    assert reg.available_backends("cuda") == ["reference", "naive", "triton", "fla"]
    assert reg.available_backends("cpu") == ["reference", "naive"]


def test_explicit_backend_without_grad_support_errors(isolated_registry, monkeypatch):
    reg = isolated_registry
    noop = reg._REGISTRY["reference"]
    reg.register_backend("nograd", noop.gated_delta_rule, noop.memory_readout, supports_grad=False)
    monkeypatch.setenv(reg.ENV_VAR, "nograd")
    assert reg.selected_backend("cpu", needs_grad=False) == "nograd"
    with pytest.raises(BackendUnavailableError, match="does not support autograd"):
        reg.selected_backend("cpu", needs_grad=True)
    q, k, v, g, beta, _ = make_inputs(T=3)
    with pytest.raises(BackendUnavailableError, match="autograd"):
        gated_delta_rule(q.requires_grad_(), k, v, g, beta)
    with torch.no_grad():
        gated_delta_rule(q, k, v, g, beta)


def test_register_backend_rejects_duplicates_and_bad_names(isolated_registry):
    ref = ops._REGISTRY["reference"]
    with pytest.raises(ValueError, match="'reference' is already registered"):
        ops.register_backend("reference", ref.gated_delta_rule, ref.memory_readout)
    for bad in ("auto", "has space", ""):
        with pytest.raises(ValueError, match=repr(bad)):
            ops.register_backend(bad, ref.gated_delta_rule, ref.memory_readout)


def test_get_backend_unknown_name(isolated_registry):
    with pytest.raises(ValueError, match=r"unknown ops backend 'nope'"):
        ops.get_backend("nope")


def test_dispatch_through_autograd_and_logs(isolated_registry, caplog):
    q, k, v, g, beta, h0 = make_inputs(T=12, state=True)
    v = v.requires_grad_()
    with caplog.at_level(logging.INFO, logger="videossm.ops"):
        o, s = gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    (o.sum() + s.sum()).backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()
    assert any("'reference'" in r.getMessage() for r in caplog.records)


def test_dispatch_empty_sequence():
    q, k, v, g, beta, h0 = make_inputs(T=0, state=True)
    o, s = gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    assert o.shape == (2, 0, 3, 32) and o.dtype == v.dtype and torch.equal(s, h0)
