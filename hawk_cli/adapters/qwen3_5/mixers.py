"""Query and key vectors of Qwen3.5's two token mixers, from their public submodules (what HAWK scores with).

* Gated attention (`Qwen3_5Attention`, every `full_attention_interval`-th layer): `q_proj` yields a query and an
  output gate per head (`q, gate = chunk(q_proj(x).view(..., H, 2d), 2)`); the query then passes the zero-centred
  per-head RMSNorm `q_norm`, the key `k_norm`, and only then partial RoPE (a quarter of the head). HAWK's
  "pre-RoPE q/k" for this family is therefore q after `q_norm` and k after `k_norm`, before rotary; the gate is
  applied to the attention output and is no part of the scores.
* Gated DeltaNet (`Qwen3_5GatedDeltaNet`, the other layers): one projection `in_proj_qkv`, a causal depthwise
  convolution over the sequence (kernel `linear_conv_kernel_dim`) with its activation, a split into q, k, v, and
  an L2 norm of q and k per head inside the delta rule (`use_qk_l2norm_in_kernel`). Its "q/k" are those
  normalised vectors: what the recurrence multiplies (q·k is the read-out weight of a key written earlier, before
  the decay and the delta correction). There is no softmax and no rotary position.

Both take the decoder layer's INPUT (before `input_layernorm`), as `ModelAdapter.query_key` does.
"""

from __future__ import annotations

import torch
from torch import Tensor

L2_EPSILON = 1e-6  # transformers' l2norm (aligned with flash-linear-attention)


def attention_query_key(block: torch.nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor]:
    """q [B, H, L, d] after `q_norm` and k [B, H_kv, L, d] after `k_norm`, both before RoPE."""
    attention = block.self_attn
    normed = block.input_layernorm(hidden)
    batch, length, _ = normed.shape
    head_dim = attention.head_dim
    query, _gate = torch.chunk(attention.q_proj(normed).view(batch, length, -1, 2 * head_dim), 2, dim=-1)
    q = attention.q_norm(query).transpose(1, 2)
    k = attention.k_norm(attention.k_proj(normed).view(batch, length, -1, head_dim)).transpose(1, 2)
    return q, k


def l2_normalised(x: Tensor) -> Tensor:
    """x / sqrt(sum x² + eps) over the last axis, in float32 (the delta rule's own normalisation)."""
    x = x.float()
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + L2_EPSILON)


def deltanet_qkv(block: torch.nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The Gated DeltaNet's q, k [B, H_k, L, d_k] (after the causal convolution and the L2 norm, float32) and
    v [B, H_v, L, d_v] (after the convolution) for the layer input `hidden`, over the whole sequence at once.

    Padding must already be zeroed in `hidden` (the stock layer zeroes padded rows before the projection), so a
    left-padded row sees the same causal window as the row alone.
    """
    from transformers.activations import ACT2FN

    mixer = block.linear_attn
    normed = block.input_layernorm(hidden)
    batch, length, _ = normed.shape
    mixed = mixer.in_proj_qkv(normed).transpose(1, 2)  # [B, C, L]
    # The module's own convolution is padded by kernel - 1 on both sides: its first L outputs are causal.
    mixed = ACT2FN[mixer.activation](mixer.conv1d(mixed)[..., :length]).transpose(1, 2)
    query, key, value = torch.split(mixed, [mixer.key_dim, mixer.key_dim, mixer.value_dim], dim=-1)
    q = l2_normalised(query.reshape(batch, length, -1, mixer.head_k_dim)).transpose(1, 2)
    k = l2_normalised(key.reshape(batch, length, -1, mixer.head_k_dim)).transpose(1, 2)
    v = value.reshape(batch, length, -1, mixer.head_v_dim).transpose(1, 2)
    return q, k, v
