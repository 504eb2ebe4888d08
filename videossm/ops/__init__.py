"""Sequence ops behind VideoSSM's global memory, with one dispatch point per op.

Public entry points (validate inputs, then dispatch to a backend):

    gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False) -> (o, state)
    gated_delta_rule_update(k, v, g, beta, initial_state=None) -> state      (eviction: the state only)
    memory_readout(q, state, gate, norm_weight, router_scale, scale=None, eps=1e-6) -> out
    warmup(device, ...)     compile and autotune the GPU kernels once per process (CUDA only; a no-op elsewhere)

Backends (each provides both ops with these exact signatures):

    "reference"  chunk-wise PyTorch (`gated_delta_rule.chunk_gated_delta_rule`); any device, autograd.
    "naive"      token-by-token PyTorch loop (`gated_delta_rule.naive_recurrent_gated_delta_rule`); any device.
    "triton"     VideoSSM's own Triton kernels, module `videossm.ops.triton` (CUDA only; imported lazily).
    "fla"        flash-linear-attention's kernels, optional package `fla` (CUDA only; imported lazily).

A backend may also provide a state-only update (the Triton one does: no queries, no outputs); the others run
their `gated_delta_rule` with q = k and drop the outputs.

The environment variable VIDEOSSM_OPS picks one: "auto" (default), or a backend name. "auto" uses the first
loadable GPU backend ("triton", then "fla") for CUDA tensors, skipping those without autograd when a gradient is
needed (the Triton kernels are inference-only, so training on CUDA gets fla, or the reference without it), and the
reference otherwise, silently. An explicit GPU backend that cannot run raises
`BackendUnavailableError` saying why. GPU modules are imported only for CUDA tensors, never on a CPU-only path.

Note: `videossm.ops.gated_delta_rule` and `videossm.ops.memory_readout` name both a submodule and the dispatch
function of this package; the package attribute is the function. Import the reference implementations with
`from videossm.ops.gated_delta_rule import ...` / `from videossm.ops.memory_readout import memory_readout`.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._checks import check_gated_delta_rule_inputs, check_memory_readout_inputs
from ._inputs import memory_path_inputs
from .gated_delta_rule import chunk_gated_delta_rule, naive_recurrent_gated_delta_rule
from .memory_readout import memory_readout as _reference_memory_readout

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_VAR",
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "chunk_gated_delta_rule",
    "gated_delta_rule",
    "gated_delta_rule_update",
    "get_backend",
    "memory_readout",
    "naive_recurrent_gated_delta_rule",
    "register_backend",
    "selected_backend",
    "triton_cache_dir",
    "warmup",
]

ENV_VAR = "VIDEOSSM_OPS"
AUTO = "auto"
BUILTIN_BACKENDS = ("reference", "naive", "triton", "fla")
GPU_BACKENDS = ("triton", "fla")  # order in which "auto" tries them for CUDA tensors
TRITON_MODULE = "videossm.ops.triton"  # must define gated_delta_rule, memory_readout, optionally SUPPORTS_GRAD,
#                                         gated_delta_rule_update and warmup
TRITON_CACHE_ENV = "TRITON_CACHE_DIR"  # Triton's compiled-kernel and autotune cache; ours unless the user set it

GatedDeltaRuleFn = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]
MemoryReadoutFn = Callable[..., torch.Tensor]
StateUpdateFn = Callable[..., torch.Tensor]


class BackendUnavailableError(RuntimeError):
    """A requested backend cannot run here (no CUDA, package missing, no autograd support, ...)."""


@dataclass(frozen=True)
class Backend:
    """One implementation of both ops.

    `device_types` lists the torch device types it runs on (None: any). `supports_grad` says whether its
    outputs can be back-propagated through. `state_update(k, v, g, beta, initial_state)` is an optional
    state-only update; None means `gated_delta_rule` with q = k, outputs dropped.
    """

    name: str
    gated_delta_rule: GatedDeltaRuleFn
    memory_readout: MemoryReadoutFn
    device_types: tuple[str, ...] | None = None
    supports_grad: bool = True
    state_update: StateUpdateFn | None = None


_REGISTRY: dict[str, Backend] = {}
_LOAD_ERRORS: dict[str, str] = {}  # lazy loads that failed once: name -> reason (CUDA / packages don't appear later)
_LOGGED: set[tuple] = set()


def register_backend(
    name: str,
    gdr_fn: GatedDeltaRuleFn,
    readout_fn: MemoryReadoutFn,
    *,
    device_types: tuple[str, ...] | None = None,
    supports_grad: bool = True,
    state_update: StateUpdateFn | None = None,
    replace: bool = False,
) -> Backend:
    """Register `gdr_fn` / `readout_fn` (same signatures as `gated_delta_rule` / `memory_readout`) as `name`.

    A registered name becomes a valid value of VIDEOSSM_OPS. Re-registering a name needs `replace=True`.
    """
    if not isinstance(name, str) or not name.isidentifier() or name == AUTO:
        raise ValueError(f"backend name must be a Python identifier other than {AUTO!r}; got {name!r}")
    if not callable(gdr_fn) or not callable(readout_fn) or not (state_update is None or callable(state_update)):
        raise TypeError(f"backend {name!r}: gdr_fn, readout_fn (and state_update if given) must be callable")
    if name in _REGISTRY and not replace:
        raise ValueError(f"backend {name!r} is already registered; pass replace=True to override it")
    backend = Backend(name, gdr_fn, readout_fn, tuple(device_types) if device_types else None, bool(supports_grad),
                      state_update)
    _REGISTRY[name] = backend
    _LOAD_ERRORS.pop(name, None)
    logger.debug("registered ops backend %r (devices=%s, grad=%s)", name, backend.device_types or "any", supports_grad)
    return backend


# --------------------------------------------------------------------------------------------- lazy GPU backends


def _require_cuda(name: str) -> None:
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"the {name!r} ops backend is CUDA-only, but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda})"
        )


def triton_cache_dir() -> str:
    """Where Triton keeps compiled kernels and autotune results: $TRITON_CACHE_DIR if the user set it, else
    ~/.cache/videossm/triton (under $XDG_CACHE_HOME if set), so a restarted GPU worker skips both."""
    user = os.environ.get(TRITON_CACHE_ENV)
    if user:
        return user
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "videossm", "triton")


def _configure_triton_cache() -> None:
    # Triton reads the variable when it compiles or stores autotune results, so setting it before our kernels
    # first run is enough (even if something, e.g. torch._dynamo, imported triton earlier).
    if not os.environ.get(TRITON_CACHE_ENV):
        os.environ[TRITON_CACHE_ENV] = triton_cache_dir()
        logger.debug("%s=%s", TRITON_CACHE_ENV, os.environ[TRITON_CACHE_ENV])


def _load_triton() -> None:
    _require_cuda("triton")
    _configure_triton_cache()
    try:
        module = importlib.import_module(TRITON_MODULE)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the 'triton' ops backend needs the `triton` package and the kernels in {TRITON_MODULE}; "
            f"importing them failed: {exc}"
        ) from exc
    try:
        gdr_fn, readout_fn = module.gated_delta_rule, module.memory_readout
    except AttributeError as exc:
        raise BackendUnavailableError(
            f"{TRITON_MODULE} must define gated_delta_rule and memory_readout: {exc}"
        ) from exc
    supports_grad = bool(getattr(module, "SUPPORTS_GRAD", False))
    register_backend("triton", gdr_fn, readout_fn, device_types=("cuda",), supports_grad=supports_grad,
                     state_update=getattr(module, "gated_delta_rule_update", None))


def _load_fla() -> None:
    _require_cuda("fla")
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_chunk_gated_delta_rule
    except ImportError as exc:
        raise BackendUnavailableError(
            "the 'fla' ops backend needs flash-linear-attention (pip install flash-linear-attention); "
            f"importing fla.ops.gated_delta_rule failed: {exc}"
        ) from exc

    def fla_gated_delta_rule(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        g: torch.Tensor,
        beta: torch.Tensor,
        scale: float | None = None,
        initial_state: torch.Tensor | None = None,
        output_final_state: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Same [B, T, H, *] layout, log-space g and sigmoided beta as ours; q, k are not normalised inside.
        o, state = fla_chunk_gated_delta_rule(
            q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state
        )
        return o, (None if state is None else state.float())

    # fla has no fused memory readout; the reference is plain torch and runs on CUDA.
    register_backend("fla", fla_gated_delta_rule, _reference_memory_readout, device_types=("cuda",))


_LAZY_LOADERS: dict[str, Callable[[], None]] = {"triton": _load_triton, "fla": _load_fla}


def get_backend(name: str) -> Backend:
    """The backend registered as `name`, importing a lazy GPU backend on first use.

    Raises BackendUnavailableError when it cannot be loaded (the reason is cached), ValueError for unknown names.
    """
    backend = _REGISTRY.get(name)
    if backend is not None:
        return backend
    loader = _LAZY_LOADERS.get(name)
    if loader is None:
        raise ValueError(f"unknown ops backend {name!r}; known: {_known_names()}")
    if name in _LOAD_ERRORS:
        raise BackendUnavailableError(_LOAD_ERRORS[name])
    try:
        loader()
    except BackendUnavailableError as exc:
        _LOAD_ERRORS[name] = str(exc)
        raise
    if name not in _REGISTRY:
        raise BackendUnavailableError(f"the loader of ops backend {name!r} ran but registered nothing")
    return _REGISTRY[name]


# --------------------------------------------------------------------------------------------------- selection


def _known_names() -> list[str]:
    return list(dict.fromkeys([*BUILTIN_BACKENDS, *_REGISTRY, *_LAZY_LOADERS]))


def _mode() -> str:
    raw = os.environ.get(ENV_VAR, AUTO)
    mode = raw.strip().lower() or AUTO
    if mode != AUTO and mode not in _known_names():
        accepted = ", ".join(repr(m) for m in [AUTO, *_known_names()])
        raise ValueError(f"{ENV_VAR}={raw!r} is not a known ops backend; accepted values: {accepted}")
    return mode


def _usable(backend: Backend, device: torch.device, needs_grad: bool) -> str | None:
    """None if `backend` can run on `device` (with autograd if `needs_grad`), else the reason it cannot."""
    if backend.device_types is not None and device.type not in backend.device_types:
        return f"it runs on {'/'.join(backend.device_types)} tensors only, and the inputs are on {device}"
    if needs_grad and not backend.supports_grad:
        return "it does not support autograd, and a gradient is needed (disable grad, or use 'reference')"
    return None


def _log_choice(mode: str, device: torch.device, needs_grad: bool, name: str) -> None:
    key = (mode, device.type, needs_grad, name)
    if key not in _LOGGED:
        _LOGGED.add(key)
        logger.info("ops backend %r for %s tensors (grad=%s, %s=%s)", name, device.type, needs_grad, ENV_VAR, mode)


def selected_backend(device: torch.device | str, needs_grad: bool) -> str:
    """Name of the backend a call on `device` would use now, honouring VIDEOSSM_OPS.

    Raises ValueError for an unknown VIDEOSSM_OPS value and BackendUnavailableError when an explicitly requested
    backend cannot run on `device`. A CUDA-only backend is never imported for non-CUDA devices.
    """
    device = torch.device(device)
    mode = _mode()
    if mode != AUTO:
        if mode in _LAZY_LOADERS and mode not in _REGISTRY and device.type != "cuda":
            raise BackendUnavailableError(
                f"{ENV_VAR}={mode!r} selects a CUDA-only ops backend, but the inputs are on {device} "
                f"(torch.cuda.is_available()={torch.cuda.is_available()}); unset {ENV_VAR} or set it to "
                f"'auto' or 'reference' to use the PyTorch reference"
            )
        try:
            backend = get_backend(mode)
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(f"{ENV_VAR}={mode!r}: {exc}") from exc
        reason = _usable(backend, device, needs_grad)
        if reason is not None:
            raise BackendUnavailableError(f"{ENV_VAR}={mode!r} cannot be used: {reason}")
        _log_choice(mode, device, needs_grad, mode)
        return mode

    name = "reference"
    if device.type == "cuda":
        for candidate in GPU_BACKENDS:
            try:
                backend = get_backend(candidate)
            except BackendUnavailableError as exc:
                logger.debug("ops backend %r skipped: %s", candidate, exc)
                continue
            if _usable(backend, device, needs_grad) is None:
                name = candidate
                break
    _log_choice(mode, device, needs_grad, name)
    return name


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends that can run on `device` (default: on some device of this machine).

    Lazy GPU backends are tried (imported) only when `device` is CUDA, or `device` is None and CUDA is available.
    """
    dev = None if device is None else torch.device(device)
    try_gpu = dev.type == "cuda" if dev is not None else torch.cuda.is_available()
    names = []
    for name in _known_names():
        if name in _LAZY_LOADERS and name not in _REGISTRY:
            if not try_gpu:
                continue
            try:
                get_backend(name)
            except BackendUnavailableError:
                continue
        backend = _REGISTRY.get(name)
        if backend is None:
            continue
        if dev is None or _usable(backend, dev, needs_grad=False) is None:
            names.append(name)
    return names


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# ------------------------------------------------------------------------------------------------ entry points


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule over a sequence, on the selected backend.

    q, k [B, T, H, K] (L2-normalised by the caller); v [B, T, H, V]; g [B, T, H] log decay (<= 0);
    beta [B, T, H] in [0, 1]; initial_state [B, H, K, V] fp32 or None; scale defaults to K ** -0.5.
    Returns o [B, T, H, V] in v's dtype and the final state [B, H, K, V] fp32 (None unless output_final_state).
    """
    check_gated_delta_rule_inputs(q, k, v, g, beta, scale, initial_state)
    name = selected_backend(q.device, _needs_grad(q, k, v, g, beta, initial_state))
    fn = _REGISTRY[name].gated_delta_rule
    if q.shape[1] == 0:  # nothing to compute; kernels need not handle empty sequences
        fn = chunk_gated_delta_rule
    return fn(q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state)


def gated_delta_rule_update(
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """The state after absorbing tokens (k, v, g, beta) in time order: what the memory does on eviction.

    Same inputs as `gated_delta_rule` without q (k L2-normalised by the caller). Returns the final state
    [B, H, K, V] fp32. Backends with a state-only kernel skip the outputs; the others compute them with q = k.
    """
    check_gated_delta_rule_inputs(k, k, v, g, beta, None, initial_state)
    name = selected_backend(k.device, _needs_grad(k, v, g, beta, initial_state))
    backend = _REGISTRY[name]
    if backend.state_update is not None and k.shape[1] > 0:
        return backend.state_update(k, v, g, beta, initial_state=initial_state)
    fn = backend.gated_delta_rule if k.shape[1] > 0 else chunk_gated_delta_rule
    return fn(k, k, v, g, beta, initial_state=initial_state, output_final_state=True)[1]


def memory_readout(
    q: torch.Tensor,
    state: torch.Tensor,
    gate: torch.Tensor,
    norm_weight: torch.Tensor,
    router_scale: torch.Tensor,
    scale: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """VideoSSM global-memory read, silu(gate * RMSNorm((q * scale) @ state) * norm_weight) * router_scale.

    q [B, N, H, K] (L2-normalised by the caller); state [B, H, K, V] fp32; gate [B, N, H, V]; norm_weight [V];
    router_scale broadcastable to [B, N, H, V]. Returns [B, N, H, V] in q's dtype.
    """
    check_memory_readout_inputs(q, state, gate, norm_weight, router_scale, scale, eps)
    name = selected_backend(q.device, _needs_grad(q, state, gate, norm_weight, router_scale))
    return _REGISTRY[name].memory_readout(q, state, gate, norm_weight, router_scale, scale=scale, eps=eps)


register_backend("reference", chunk_gated_delta_rule, _reference_memory_readout)
register_backend("naive", naive_recurrent_gated_delta_rule, _reference_memory_readout)


# ---------------------------------------------------------------------------------------------------- warm-up

_WARMED: dict[tuple, str] = {}


def warmup(
    device: torch.device | str,
    *,
    num_heads: int,
    key_dim: int,
    value_dim: int,
    evicted_tokens: int,
    query_tokens: int,
    dtype: torch.dtype = torch.bfloat16,
    batch_size: int = 1,
) -> str | None:
    """Compile and autotune the memory-path kernels now, once per process, so no user request pays for it.

    On a non-CUDA device this does nothing and imports nothing (returns None). On CUDA it selects the inference
    backend for these tensors (VIDEOSSM_OPS is honoured) and, if that is the Triton one, runs its kernels once on
    random inputs of these shapes and dtypes (results land in Triton's on-disk cache, see `triton_cache_dir`).
    Returns the backend's name. A GPU backend that cannot load is logged and the reference is used, as in `auto`.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (device, num_heads, key_dim, value_dim, evicted_tokens, query_tokens, dtype, batch_size, _mode())
    if key in _WARMED:
        return _WARMED[key]
    name = selected_backend(device, needs_grad=False)
    shapes = dict(num_heads=num_heads, key_dim=key_dim, value_dim=value_dim, evicted_tokens=evicted_tokens,
                  query_tokens=query_tokens, dtype=dtype, batch_size=batch_size)
    if name == "triton":
        importlib.import_module(TRITON_MODULE).warmup(device, **shapes)
    elif name in GPU_BACKENDS:  # fla: its kernels autotune on their first call too
        with torch.no_grad():
            _run_once(device, **shapes)
        torch.cuda.synchronize(device)
    _WARMED[key] = name
    return name


def _run_once(device: torch.device, **shapes) -> None:
    """One eviction update and one read-out through the dispatch, on `memory_path_inputs` of these shapes."""
    x = memory_path_inputs(device, **shapes)
    state = gated_delta_rule_update(x.k, x.v, x.g, x.beta, initial_state=x.initial_state)
    memory_readout(x.q, state, x.gate, x.norm_weight, x.router)