"""An independent reference for the streaming generator, written without the library's cache, RoPE,
eviction or memory code, so that it cannot share their bugs.

It runs one full-sequence forward, layer by layer, over [clean frames before a block, the block]:
  * every generated block is a query group; a group attends to the frames visible to it (sink frames,
    the recent frames of its window, its own frames) through an explicit masked softmax;
  * RoPE is applied with complex multiplication, at window-relative positions (the group's visible
    frames in order) or absolute ones;
  * each group's memory state comes from the matrix form of the gated delta rule,
    S <- a S (I - b k k^T) + b v k^T, run token by token over the frames evicted before the group.
Only parameter tensors and stock diffusers sub-modules (linear layers, norms, cross-attention, FFN,
timestep embedding) are taken from the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def frame_sets(group_start: int, sink: int, recent: int | None) -> tuple[list[int], list[int]]:
    """Visible earlier frames (sink first, then recent, in order) and evicted frames, for a group."""
    earlier = list(range(group_start))
    sink_frames = [f for f in earlier if f < sink]
    if recent is None:
        return earlier, []
    keep_from = group_start - recent
    recent_frames = [f for f in earlier if f >= sink and f >= keep_from]
    evicted = [f for f in earlier if f >= sink and f < keep_from]
    return sink_frames + recent_frames, evicted


def rope_complex(x: torch.Tensor, frame_pos: torch.Tensor, hp: int, wp: int, theta: float) -> torch.Tensor:
    """x [F, n, H, D] with n = hp*wp; frame_pos [F]. Wan's split: t gets D - 4*(D//6), h and w 2*(D//6)."""
    d = x.shape[-1]
    dh = 2 * (d // 6)
    dt = d - 2 * dh

    def freqs(dim):
        return theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)

    frames, n = x.shape[0], x.shape[1]
    rows = torch.arange(hp, dtype=torch.float64).repeat_interleave(wp)  # [n]
    cols = torch.arange(wp, dtype=torch.float64).repeat(hp)  # [n]
    ang_t = frame_pos.double()[:, None, None] * freqs(dt)[None, None, :]  # [F, 1, dt/2]
    ang_h = rows[None, :, None] * freqs(dh)[None, None, :]  # [1, n, dh/2]
    ang_w = cols[None, :, None] * freqs(dh)[None, None, :]
    angles = torch.cat([ang_t.expand(frames, n, -1), ang_h.expand(frames, n, -1), ang_w.expand(frames, n, -1)], -1)
    rot = torch.polar(torch.ones_like(angles), angles)[:, :, None, :]  # [F, n, 1, D/2]
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(xc * rot).reshape(x.shape).to(x.dtype)


def gamma_of(frame: int, weight: torch.Tensor, bias: torch.Tensor, horizon: int) -> torch.Tensor:
    rho = min(1.0, (frame + 1) / horizon)
    return torch.sigmoid(weight * math.log(rho) + bias)


def memory_state_matrix_form(k, v, beta, alpha, frames, heads) -> torch.Tensor:
    """S [H, V, K] after absorbing the tokens of `frames` in order. k,v [F, n, H, *]; beta, alpha [F, n, H]."""
    dk, dv = k.shape[-1], v.shape[-1]
    state = torch.zeros(heads, dv, dk, dtype=torch.float64)
    eye = torch.eye(dk, dtype=torch.float64)
    for f in frames:
        for i in range(k.shape[1]):
            for h in range(heads):
                kk = k[f, i, h].double()
                kk = kk / kk.norm().clamp_min(1e-6)
                a, b = alpha[f, i, h].double().exp(), beta[f, i, h].double()
                state[h] = a * state[h] @ (eye - b * torch.outer(kk, kk)) + b * torch.outer(v[f, i, h].double(), kk)
    return state


@torch.no_grad()
def reference_forward(model, latents, timesteps, text_per_frame, groups, sink, recent, rope_mode, use_memory,
                      frame_ids=None, memory_for_group=None):
    """latents [1, C, F, h, w]; timesteps [F]; text_per_frame: list of [1, L, text_dim] per frame;
    groups: lists of sequence positions (query groups, in time order). Returns velocity [1, C, F, h, w]
    and, per layer, the memory state [H, V, K] of the last group.

    frame_ids: the absolute frame index of each sequence position (default: 0..F-1); frames missing
    from the sequence are simply not visible. memory_for_group(group_index, layer) may return a state
    [H, V, K] to use instead of the recurrence (a memory built from frames outside the sequence)."""
    frame_ids = list(range(latents.shape[2])) if frame_ids is None else list(frame_ids)
    seq_of = {f: i for i, f in enumerate(frame_ids)}
    cfg = model.config
    heads, dhead = cfg.num_attention_heads, cfg.attention_head_dim
    _, _, nf, lh, lw = latents.shape
    ph, pw = cfg.patch_size[1], cfg.patch_size[2]
    hp, wp = lh // ph, lw // pw
    pe = model.patch_embedding
    tokens = F.conv3d(latents, pe.weight, pe.bias, stride=tuple(cfg.patch_size))  # [1, D, F, hp, wp]
    h = tokens[0].permute(1, 2, 3, 0).reshape(nf, hp * wp, -1)  # [F, n, D]

    ce = model.condition_embedder
    temb = ce.time_embedder(ce.timesteps_proj(timesteps.float()))  # [F, D]
    tproj = ce.time_proj(F.silu(temb)).reshape(nf, 6, -1)  # [F, 6, D]
    texts = [ce.text_embedder(t) for t in text_per_frame]  # per frame [1, L, D]

    final_states = []
    for layer_index, blk in enumerate(model.blocks):
        mod = blk.scale_shift_table[0][None] + tproj  # [F, 6, D]
        shift, scale, gate = mod[:, 0:1], mod[:, 1:2], mod[:, 2:3]
        c_shift, c_scale, c_gate = mod[:, 3:4], mod[:, 4:5], mod[:, 5:6]
        hn = F.layer_norm(h, h.shape[-1:], eps=cfg.eps) * (1 + scale) + shift  # [F, n, D]
        at = blk.attn1
        q = at.norm_q(at.to_q(hn)).reshape(nf, -1, heads, dhead)
        k = at.norm_k(at.to_k(hn)).reshape(nf, -1, heads, dhead)
        v = at.to_v(hn).reshape(nf, -1, heads, dhead)
        mem = blk.memory
        beta = torch.sigmoid(hn @ mem.beta_proj.weight.T + mem.beta_proj.bias)  # [F, n, H]
        alpha = -mem.A_log.exp() * F.softplus(hn @ mem.alpha_proj.weight.T + mem.dt_bias)
        out = torch.zeros_like(q)
        state = None
        for group_index, group in enumerate(groups):
            visible, evicted = frame_sets(frame_ids[group[0]], sink, recent)
            visible = [seq_of[f] for f in visible if f in seq_of]
            evicted = [seq_of[f] for f in evicted if f in seq_of]
            frames = visible + list(group)
            pos = torch.tensor(list(range(len(frames))) if rope_mode == "relative" else [frame_ids[i] for i in frames])
            qg = rope_complex(q[group], pos[len(visible):], hp, wp, cfg.rope_theta).reshape(-1, heads, dhead)
            kg = rope_complex(k[frames], pos, hp, wp, cfg.rope_theta).reshape(-1, heads, dhead)
            vg = v[frames].reshape(-1, heads, dhead)
            logits = torch.einsum("qhd,khd->hqk", qg, kg) / math.sqrt(dhead)
            local = torch.einsum("hqk,khd->qhd", logits.softmax(-1), vg)  # [Nq, H, D]
            if use_memory:
                state = memory_for_group(group_index, layer_index) if memory_for_group else None
                if state is None:
                    state = memory_state_matrix_form(k, v, beta, alpha, evicted, heads)  # [H, V, K]
                qn = q[group].reshape(-1, heads, dhead).double()
                qn = qn / qn.norm(dim=-1, keepdim=True).clamp_min(1e-6)
                read = torch.einsum("hvk,qhk->qhv", state, qn * dhead**-0.5)
                read = read * torch.rsqrt(read.pow(2).mean(-1, keepdim=True) + cfg.eps) * mem.out_norm.weight.double()
                g_out = (hn[group] @ mem.out_gate.weight.T + mem.out_gate.bias).reshape(-1, heads, dhead).double()
                gam = torch.cat([gamma_of(frame_ids[i], mem.router_weight, mem.router_bias, cfg.router_horizon_frames)
                                 .repeat(hp * wp) for i in group]).double()[:, None, None]
                local = local + (F.silu(g_out * read) * gam).float()
            out[group] = local.reshape(len(group), -1, heads, dhead)
        final_states.append(state)
        attn = at.to_out[0](out.reshape(nf, -1, heads * dhead))
        h = h + attn * gate
        hn2 = blk.norm2(h)
        cross = torch.stack([blk.attn2(hn2[f][None], texts[f])[0] for f in range(nf)])
        h = h + cross
        hn3 = F.layer_norm(h, h.shape[-1:], eps=cfg.eps) * (1 + c_scale) + c_shift
        h = h + blk.ffn(hn3) * c_gate

    shift, scale = (model.scale_shift_table[0][None] + temb[:, None, :]).unbind(1)  # [F, D] each
    h = F.layer_norm(h, h.shape[-1:], eps=cfg.eps) * (1 + scale[:, None]) + shift[:, None]
    h = model.proj_out(h)  # [F, n, C*ph*pw]
    c = cfg.out_channels
    h = h.reshape(nf, hp, wp, ph, pw, c)
    video = torch.einsum("fyxpqc->cfypxq", h).reshape(1, c, nf, lh, lw)
    return video, final_states
