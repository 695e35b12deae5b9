"""The draft's attention (`sdfp_hf.attention`): transformers' `sdpa` with one query laid out as rows."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface

from sdfp_hf import SDFPAssistant
from sdfp_hf.attention import DRAFT_ATTENTION, draft_attention
from sdfp_hf.cache import DraftCache
from tiny_models import BUILDERS

SDPA = AttentionInterface()["sdpa"]


class _Attention(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _inputs(heads, kv_heads, new, length, dtype, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, new, dim, generator=g).to(dtype)
    k = torch.randn(1, kv_heads, length, dim, generator=g).to(dtype)
    v = torch.randn(1, kv_heads, length, dim, generator=g).to(dtype)
    return _Attention(heads // kv_heads), q, k, v


def _masks(length):
    visible = torch.ones(1, 1, 1, length, dtype=torch.bool)
    visible[..., :3] = False  # padding on the left
    additive = torch.zeros(1, 1, 1, length).masked_fill(~visible, torch.finfo(torch.float32).min)
    return [None, visible, additive]


@pytest.mark.parametrize("heads, kv_heads", [(6, 2), (4, 4)])  # grouped query heads as rows; the query twice
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_one_query_in_bf16_is_attention_up_to_rounding_without_transformers_sdpa(heads, kv_heads, mask_kind, monkeypatch):
    module, q, k, v = _inputs(heads, kv_heads, 1, 40, torch.bfloat16)
    mask = _masks(40)[["none", "bool", "additive"].index(mask_kind)]
    reference, _ = SDPA(module, q.float(), k.float(), v.float(), mask, scaling=0.25)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(torch.bfloat16)

    def refuse(*args, **kwargs):
        raise AssertionError("the one-query case must not go to transformers' sdpa")

    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", refuse)
    out, weights = draft_attention(module, q, k, v, mask, scaling=0.25)
    assert weights is None and out.shape == reference.shape == (1, 1, heads, 16) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    "case",
    ["fp32", "several new tokens", "per-head mask", "softcap"],
)
def test_every_other_call_is_transformers_sdpa_itself(case, monkeypatch):
    dtype = torch.float32 if case == "fp32" else torch.bfloat16
    new = 3 if case == "several new tokens" else 1
    module, q, k, v = _inputs(4, 2, new, 20, dtype)
    mask = torch.ones(1, 4, new, 20, dtype=torch.bool) if case == "per-head mask" else None
    kwargs = {"softcap": 30.0} if case == "softcap" else {}
    calls = []
    sentinel = (torch.zeros(1), None)
    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", lambda *a, **kw: calls.append(kw) or sentinel)
    assert draft_attention(module, q, k, v, mask, scaling=0.5, **kwargs) is sentinel
    assert calls and calls[0]["scaling"] == 0.5 and all(calls[0][key] == value for key, value in kwargs.items())


def test_the_draft_runs_it_and_the_target_keeps_sdpa():
    torch.manual_seed(0)
    target = BUILDERS["llama"]().eval().to(torch.bfloat16)
    assert target.config._attn_implementation == "sdpa"
    draft = SDFPAssistant.from_target(target, skip_layers=[1])
    draft_attentions = [layer.self_attn for layer in draft.model.layers]
    assert {a.config._attn_implementation for a in draft_attentions} == {DRAFT_ATTENTION}
    assert len({id(a.config) for a in draft_attentions}) == 1  # one copy, not one per layer
    assert target.config._attn_implementation == "sdpa" and draft.config._attn_implementation == "sdpa"
    assert {layer.self_attn.config._attn_implementation for layer in target.model.layers} == {"sdpa"}

    # a draft step: the same logits as the draft on transformers' sdpa, up to bf16 rounding
    ids = torch.randint(3, 96, (1, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cache = target(input_ids=ids, use_cache=True).past_key_values
        token, position = torch.tensor([[7]]), torch.tensor([[30]])
        ours = draft.draft_logits(token, position, DraftCache(cache, draft.cache_layer_map))
        for attention in draft_attentions:
            attention.config = target.config
        stock = draft.draft_logits(token, position, DraftCache(cache, draft.cache_layer_map))
    assert ours.argmax(-1).item() == stock.argmax(-1).item()
    torch.testing.assert_close(ours, stock, atol=0.1, rtol=0.05)


def test_an_eager_target_gives_an_eager_draft():
    target = BUILDERS["gemma2"]().eval()  # built with attn_implementation="eager"
    draft = SDFPAssistant.from_target(target, skip_layers=[1])
    assert {layer.self_attn.config._attn_implementation for layer in draft.model.layers} == {"eager"}
