"""VideoSSM's global memory for one layer: synchronized gates, the state read-out and the router.

Paper section 4.2.2-4.2.3 (formulas in ../shared/REFERENCE.md section 1):
  gates, computed from the same hidden state h as a token's K/V and cached beside them:
      beta  = sigmoid(W_beta h)                                 [B, N, H]
      alpha = -exp(A) * softplus(W_alpha h + B)                 [B, N, H]  (log-space decay)
  update, when tokens leave the local window (gated delta rule, see videossm.ops):
      M_t = exp(alpha_t) M_{t-1} + k_t (beta_t (v_t - M_{t-1}^T k_t))^T
  read, for the current block's queries:
      H_global = Swish(g_out(h) * RMSNorm(q M))
  router, position-aware:
      rho = min(1, (frame + 1) / T_ref);  gamma = sigmoid(w log(rho) + b);  H = H_local + gamma H_global

`g_out` starts at zero, so an untrained memory adds exactly zero: the model computes what the base
(sink + window) model computes until the memory is trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.float().pow(2).sum(-1, keepdim=True) + eps).type_as(x)


class HybridMemory(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int, eps: float = 1e-6,
                 router_weight_init: float = 1.0, router_bias_init: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.eps = eps
        self.beta_proj = nn.Linear(dim, num_heads)  # W_beta
        self.alpha_proj = nn.Linear(dim, num_heads, bias=False)  # W_alpha
        self.A_log = nn.Parameter(torch.empty(num_heads))  # A
        self.dt_bias = nn.Parameter(torch.empty(num_heads))  # B
        self.out_gate = nn.Linear(dim, num_heads * head_dim)  # g_out, zero-initialised
        self.out_norm = nn.RMSNorm(head_dim, eps=eps)
        self.router_weight = nn.Parameter(torch.tensor(float(router_weight_init)))
        self.router_bias = nn.Parameter(torch.tensor(float(router_bias_init)))
        self.reset_memory_parameters()

    @torch.no_grad()
    def reset_memory_parameters(self, generator: torch.Generator | None = None) -> None:
        """GatedDeltaNet's initialisation for the decay (A in [1, 16], dt in [1e-3, 0.1]) and a zero g_out."""
        self.A_log.copy_(torch.empty(self.num_heads).uniform_(1, 16, generator=generator).log())
        dt = torch.exp(torch.empty(self.num_heads).uniform_(math.log(1e-3), math.log(0.1), generator=generator))
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        nn.init.zeros_(self.out_gate.weight)
        nn.init.zeros_(self.out_gate.bias)

    def gates(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """beta [B, N, H] (post-sigmoid) and the log decay alpha [B, N, H] (<= 0), both fp32."""
        h = hidden_states.float()
        beta = torch.sigmoid(F.linear(h, self.beta_proj.weight.float(), self.beta_proj.bias.float()))
        alpha = -self.A_log.float().exp() * F.softplus(F.linear(h, self.alpha_proj.weight.float()) + self.dt_bias.float())
        return beta, alpha

    def router_gamma(self, frame_index: torch.Tensor, horizon_frames: int) -> torch.Tensor:
        """gamma [F] for absolute latent frame indices [F]; rho saturates at 1 past the training horizon."""
        rho = ((frame_index.float() + 1) / horizon_frames).clamp(max=1.0)
        return torch.sigmoid(self.router_weight.float() * rho.log() + self.router_bias.float())

    def read(self, hidden_states: torch.Tensor, query: torch.Tensor, state: torch.Tensor,
             gamma: torch.Tensor) -> torch.Tensor:
        """Global read-out for a block: hidden_states [B, N, D], query [B, N, H, K] (pre-RoPE),
        state [B, H, K, V] fp32, gamma broadcastable to [B, N, H, V]. Returns [B, N, H, V]."""
        gate = self.out_gate(hidden_states).unflatten(-1, (self.num_heads, self.head_dim))  # [B, N, H, V]
        return ops.memory_readout(l2_normalize(query), state, gate, self.out_norm.weight, gamma, eps=self.eps)

    @staticmethod
    def update(state: torch.Tensor, key: torch.Tensor, value: torch.Tensor, alpha: torch.Tensor,
               beta: torch.Tensor) -> torch.Tensor:
        """Absorb evicted tokens (in time order) into the state: key, value [B, T, H, K|V], alpha, beta [B, T, H]."""
        # State only: the Triton backend skips the queries and outputs that eviction does not need.
        return ops.gated_delta_rule_update(l2_normalize(key), value, alpha, beta, initial_state=state)
