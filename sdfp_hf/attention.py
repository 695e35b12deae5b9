"""The draft's attention: transformers' `sdpa`, without torch's slow case of one query row on a CPU.

A draft step feeds one token. transformers' `sdpa` then calls torch's fused CPU attention kernel with one
query row per head (with `enable_gqa` when there is no mask), and in bf16 / fp16 that kernel is slow for a
single row and grows fast with the context. Measured on a 2-core AMD EPYC (Zen 4, avx512_bf16; torch 2.13, 2
threads, bf16), one token over 300 / 1,000 cached positions: SmolLM2-135M's shape (9 heads, 3 K/V heads, dim
64) 206 / 606 us, Qwen2.5-Coder-1.5B's (12 heads, 2 K/V heads, dim 128) 517 / 1,379 us, a draft step's
largest cost after its matmuls. The same attention laid out as several rows runs 5-15x faster: the query
heads that share a K/V head read as rows of that head (40 / 101 us, 37 / 94 us); with no grouping, the query
twice, as two rows (1.8-2.1x faster). It is the same softmax over the same keys: only rounding differs. In
fp32 the kernel has no such case (and the rows layout is slower for some shapes), so fp32 is left as it is.
A draft step of SmolLM2-135M at 300 / 1,000 tokens of context: 1.19x / 1.55x faster; Qwen2.5-Coder-1.5B
1.17x / 1.73x; tree rounds end to end on SmolLM2-135M, 30 Spec-Bench prompts: 1.13x
(`benchmarks/results/epyc-zen4/readings_2026-12-03_attention.txt`: the scripts and their output).

Only the draft's attention modules run it (`draft_attention_config`): the target's, and so every token
the user gets, are untouched. Anything else (a GPU, fp32, several new tokens, a per-head mask, a
softcap, a position bias) goes to transformers' own `sdpa` unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface

from ._compat import attn_implementation, with_attn_implementation

__all__ = ["DRAFT_ATTENTION", "draft_attention", "draft_attention_config"]

DRAFT_ATTENTION = "sdfp_sdpa"
"""The name the draft's attention is registered under in transformers' `AttentionInterface`."""

_REDUCED = (torch.bfloat16, torch.float16)
_UNSUPPORTED = ("softcap", "position_bias", "s_aux", "sinks")  # keywords only transformers' `sdpa` handles


def _one_row(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, dropout: float, kwargs: dict) -> bool:
    """Whether this call is the slow case: one new token, reduced precision, on a CPU, nothing special."""
    return (
        query.device.type == "cpu"
        and query.dtype in _REDUCED
        and query.shape[2] == 1
        and query.shape[1] % key.shape[1] == 0
        and not dropout
        and not kwargs.get("output_attentions")
        and all(kwargs.get(name) is None for name in _UNSUPPORTED)
        and (mask is None or (mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1))
    )


def draft_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An attention function of transformers' `AttentionInterface`: `sdpa`, with one query laid out as rows.

    Args:
        module: the attention module calling it.
        query (`torch.Tensor` of shape `(batch, heads, new, dim)`), key, value (`(batch, kv_heads, length, dim)`).
        attention_mask (`torch.Tensor`, *optional*): as `sdpa` takes it.

    Returns:
        `(torch.Tensor of shape (batch, new, heads, dim), None)`, as every attention function returns.
    """
    if not _one_row(query, key, attention_mask, dropout, kwargs):
        return AttentionInterface()["sdpa"](
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    batch, heads, _, dim = query.shape
    groups = heads // key.shape[1]
    # (batch, kv_heads, groups, dim): each K/V head's query heads as its rows; or the one query twice
    rows = query.reshape(batch, key.shape[1], groups, dim) if groups > 1 else query.expand(batch, heads, 2, dim)
    out = torch.nn.functional.scaled_dot_product_attention(rows, key, value, attn_mask=attention_mask, scale=scaling)
    out = out.reshape(batch, heads, 1, out.shape[-1]) if groups > 1 else out[:, :, :1]
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(DRAFT_ATTENTION, draft_attention)


def draft_attention_config(config: Any) -> Any:
    """The config a draft's attention module reads: `config` itself, or for `sdpa` a copy that runs
    `draft_attention` (eager and flash attention have no such case and are kept)."""
    if attn_implementation(config) != "sdpa":
        return config
    return with_attn_implementation(config, DRAFT_ATTENTION)
