"""VideoSSM memory readout: Swish(g_out * RMSNorm(q M)) * gamma, reference and dispatch."""

import math

import pytest
import torch
import torch.nn.functional as F

import videossm.ops as ops
from videossm.ops import BackendUnavailableError
from videossm.ops import memory_readout as dispatch_readout
from videossm.ops.memory_readout import memory_readout as reference_readout


def make_inputs(B=2, N=5, H=3, K=8, V=6, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, N, H, K, generator=gen), dim=-1).to(dtype)
    state = torch.randn(B, H, K, V, generator=gen)
    gate = torch.randn(B, N, H, V, generator=gen).to(dtype)
    norm_weight = (1 + 0.5 * torch.randn(V, generator=gen)).to(dtype)
    router_scale = torch.rand(B, N, 1, 1, generator=gen).to(dtype)
    return q, state, gate, norm_weight, router_scale


def hand_written(q, state, gate, norm_weight, router_scale, scale, eps):
    """Scalar loops over (b, n, h), plain Python math on the V channels."""
    B, N, H, K = q.shape
    V = state.shape[-1]
    rs = router_scale.expand(B, N, H, V)
    out = torch.empty(B, N, H, V, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            for h in range(H):
                o = [sum(float(q[b, n, h, i]) * scale * float(state[b, h, i, j]) for i in range(K)) for j in range(V)]
                rms = math.sqrt(sum(x * x for x in o) / V + eps)
                for j in range(V):
                    y = float(gate[b, n, h, j]) * o[j] / rms * float(norm_weight[j])
                    out[b, n, h, j] = y / (1 + math.exp(-y)) * float(rs[b, n, h, j])
    return out


@pytest.mark.parametrize("fn", [reference_readout, dispatch_readout])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_matches_hand_written_formula(fn, scale):
    q, state, gate, w, gamma = make_inputs(N=4, H=2, K=5, V=7)
    expected = hand_written(q, state, gate, w, gamma, scale=5**-0.5 if scale is None else scale, eps=1e-6)
    out = fn(q, state, gate, w, gamma, scale=scale)
    assert out.shape == (2, 4, 2, 7) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_is_silu_of_product_not_rmsnorm_times_silu_gate():
    q, state, gate, w, gamma = make_inputs()
    out = reference_readout(q, state, gate, w, gamma)
    o = torch.einsum("bnhk,bhkv->bnhv", q * 8**-0.5, state)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * w
    wrong = o * F.silu(gate) * gamma
    assert not torch.allclose(out, wrong, atol=1e-3)
    torch.testing.assert_close(out, F.silu(gate * o) * gamma)


def test_eps_is_inside_the_sqrt():
    # A state of zeros makes o = 0; a tiny state makes RMS ~ 1e-4, where eps = 1e-2 dominates inside the sqrt.
    q, state, gate, w, gamma = make_inputs(K=4, V=3)
    state = state * 1e-4
    out = reference_readout(q, state, gate, w, gamma, eps=1e-2)
    expected = hand_written(q, state, gate, w, gamma, scale=0.5, eps=1e-2)
    torch.testing.assert_close(out.double(), expected, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("fn", [reference_readout, dispatch_readout])
def test_zero_gate_gives_exactly_zero(fn):
    q, state, gate, w, gamma = make_inputs()
    out = fn(q, state, torch.zeros_like(gate), w, gamma)
    assert torch.equal(out, torch.zeros_like(out))
    assert fn(q, state, gate, w, gamma).abs().max() > 0  # the same inputs with a gate are not zero


def test_router_scale_broadcast_and_zero_router():
    q, state, gate, w, gamma = make_inputs()
    full = reference_readout(q, state, gate, w, gamma.expand(2, 5, 3, 6).contiguous())
    torch.testing.assert_close(reference_readout(q, state, gate, w, gamma), full, atol=0, rtol=0)
    per_head = torch.tensor([0.0, 1.0, 2.0]).view(1, 1, 3, 1)
    out = reference_readout(q, state, gate, w, per_head)
    ones = reference_readout(q, state, gate, w, torch.ones(1, 1, 1, 1))
    assert torch.equal(out[:, :, 0], torch.zeros_like(out[:, :, 0]))
    torch.testing.assert_close(out[:, :, 1:], ones[:, :, 1:] * per_head[:, :, 1:])


def test_bf16_inputs_return_bf16():
    q, state, gate, w, gamma = make_inputs(dtype=torch.bfloat16)
    out = reference_readout(q, state, gate, w, gamma)
    assert out.dtype == torch.bfloat16
    expected = hand_written(q, state, gate, w, gamma, scale=8**-0.5, eps=1e-6)
    torch.testing.assert_close(out.double(), expected, atol=2e-2, rtol=2e-2)


def test_gradients_flow():
    q, state, gate, w, gamma = (x.double().requires_grad_() for x in make_inputs(B=1, N=2, H=2, K=3, V=4))

    def f(q, state, gate, w, gamma):
        return dispatch_readout(q, state, gate, w, gamma)

    assert torch.autograd.gradcheck(f, (q, state, gate, w, gamma))


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(q=torch.zeros(2, 5, 3)), r"q must be \[B,N,H,K\]"),
        (dict(state=torch.zeros(2, 3, 7, 6)), r"state must be \[B,H,K,V\].*\(2, 3, 8\)"),
        (dict(state=torch.zeros(2, 3, 8, 6, dtype=torch.bfloat16)), r"state must have one of the dtypes.*bfloat16"),
        (dict(gate=torch.zeros(2, 5, 3, 5)), r"gate must be \[B,N,H,V\] = \(2, 5, 3, 6\)"),
        (dict(norm_weight=torch.zeros(3, 6)), r"norm_weight must be \[V\]"),
        (dict(router_scale=torch.zeros(2, 4, 1, 1)), r"router_scale must broadcast to \[B,N,H,V\]"),
        (dict(router_scale=torch.zeros(1, 1, 1, 1, 1)), r"router_scale must broadcast"),
        (dict(router_scale=0.5), r"router_scale must be a torch.Tensor"),
        (dict(eps=0.0), r"eps must be a float in \(0, inf\); got 0.0"),
        (dict(scale=float("nan")), r"scale must be a float in \(0, inf\) or None; got nan"),
    ],
)
@pytest.mark.parametrize("fn", [reference_readout, dispatch_readout])
def test_input_errors(fn, bad, match):
    q, state, gate, w, gamma = make_inputs()
    args = dict(q=q, state=state, gate=gate, norm_weight=w, router_scale=gamma)
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        fn(**args)


def test_dispatch_routes_by_env(monkeypatch):
    monkeypatch.setattr(ops, "_REGISTRY", dict(ops._REGISTRY))
    calls = []
    for name in ("reference", "naive"):
        real = ops._REGISTRY[name]

        def readout(*args, _n=name, _real=real, **kwargs):
            calls.append(_n)
            return _real.memory_readout(*args, **kwargs)

        ops.register_backend(name, real.gated_delta_rule, readout, replace=True)
    inputs = make_inputs()
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    dispatch_readout(*inputs)
    monkeypatch.setenv(ops.ENV_VAR, "naive")
    dispatch_readout(*inputs)
    assert calls == ["reference", "naive"]
    monkeypatch.setenv(ops.ENV_VAR, "fla")
    with pytest.raises(BackendUnavailableError, match="CUDA-only"):
        dispatch_readout(*inputs)
    monkeypatch.setenv(ops.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="'bogus'"):
        dispatch_readout(*inputs)
