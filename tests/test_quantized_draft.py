"""Drafts with quantized branches: lossless output, untouched target, exact memory accounting, plans and masks."""

from __future__ import annotations

import copy

import pytest
import torch
from test_assistant import (
    DRAFT_ONLY,
    LlamaForCausalLM_tiny,
    _sampled_continuations_p_value,
    _snapshot,
    greedy,
)
from tiny_models import ARCHITECTURES, NUM_LAYERS, prompt, tiny_model
from torch import nn

from sdfp_hf import DraftingOptions, SDFPAssistant, SDFPConfig
from sdfp_hf.config import SDFPConfigError
from sdfp_hf.draft import build_draft
from sdfp_hf.plan import DraftPlan
from sdfp_hf.quantize import Int4Linear, Int8Linear, QuantizedLinear, quantized_linear
from sdfp_hf.selection import plan_nbytes

MIXED = dict(
    skip_layers=[2],
    attention=["int8", "int4", "shared", "int8", "int4", "shared"],
    mlp=["int4", "int8", "int8", "shared", "int4", "int8"],
    head="int8",
)


def mixed_plan(num_layers: int = NUM_LAYERS) -> DraftPlan:
    return DraftPlan.from_lists(num_layers, **MIXED)


@pytest.mark.lossless
@pytest.mark.parametrize("drafting", [DRAFT_ONLY, DraftingOptions()], ids=["draft-only", "default"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_equals_plain_greedy_with_quantized_shared_and_skipped_branches(arch, drafting):
    model = tiny_model(arch)
    ids = prompt(12)
    reference = greedy(model, ids)
    before = _snapshot(model)
    mask = SDFPConfig.from_model_config(model.config, granularity="layer", skip_layers=[2], precision=mixed_plan().to_dict())
    draft = SDFPAssistant.from_target(model, mask=mask, assistant_confidence_threshold=0.0, drafting=drafting)
    assert any(isinstance(m, QuantizedLinear) for m in draft.modules())
    assert torch.equal(greedy(model, ids, assistant_model=draft), reference)
    assert draft.stats.drafted > 0
    plain = SDFPAssistant.from_target(model, skip_layers=[1], quantize="int4", drafting=drafting)
    assert torch.equal(greedy(model, ids, assistant_model=plain), reference)
    # the target's weights, modules, config and generation config are bit-identical afterwards
    from test_assistant import _assert_same

    _assert_same(before, _snapshot(model))


def test_a_quantized_draft_agrees_with_its_target_far_more_than_a_skipping_one():
    model = tiny_model("llama", seed=4)
    ids = prompt(12)
    agreement = {}
    for name, kwargs in {"int8": dict(quantize="int8"), "skip": dict(skip_layers=[1, 2, 3])}.items():
        draft = SDFPAssistant.from_target(model, **kwargs, assistant_confidence_threshold=0.0, drafting=DRAFT_ONLY)
        greedy(model, ids, assistant_model=draft)
        agreement[name] = draft.stats.acceptance_rate
    assert agreement["int8"] > 0.9 > agreement["skip"]


@pytest.mark.lossless
def test_sampling_with_a_quantized_draft_keeps_the_target_distribution():
    vocab, steps, draws = 5, 3, 1200
    torch.manual_seed(3)
    model = LlamaForCausalLM_tiny(vocab)
    draft = SDFPAssistant.from_target(model, skip_layers=[1], quantize="int8", num_assistant_tokens=3,
                                      num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0,
                                      drafting=DRAFT_ONLY)
    assert any(isinstance(m, Int8Linear) for m in draft.modules())
    ids = torch.tensor([[3, 1, 4]])
    assert _sampled_continuations_p_value(model, draft, ids, steps, draws) > 1e-3
    assert draft.stats.drafted > 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_extra_memory_is_what_the_plan_says(arch):
    model = tiny_model(arch)
    plan = mixed_plan()
    draft = build_draft(model, plan)
    head = draft.get_output_embeddings()
    held = sum(m.nbytes for m in draft.modules() if isinstance(m, QuantizedLinear)) + (0 if head.quantized else head.nbytes)
    assert draft.extra_bytes == held == plan_nbytes(model, plan) > 0
    # the target's parameters are never among the draft's new tensors
    target = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert not {b.untyped_storage().data_ptr() for m in draft.modules() if isinstance(m, QuantizedLinear) for b in m.buffers()} & target
    shared = build_draft(model, DraftPlan.from_lists(NUM_LAYERS, skip_layers=[1, 3]))
    assert shared.extra_bytes == plan_nbytes(model, shared.plan) == 0
    vocab = build_draft(model, DraftPlan.from_lists(NUM_LAYERS, skip_layers=[1], head="int8"),
                        mask=SDFPConfig.from_model_config(model.config, skip_layers=[1], draft_vocab=list(range(32)),
                                                          precision={"head": "int8"}))
    assert vocab.extra_bytes == plan_nbytes(model, vocab.plan, list(range(32))) > 0


def test_quantized_copies_are_close_and_read_only_their_source():
    torch.manual_seed(0)
    linear = nn.Linear(256, 64, bias=True)
    before = linear.weight.detach().clone()
    x = torch.randn(3, 256)
    reference = linear(x)
    for fmt, tolerance in (("int8", 0.02), ("int4", 0.15)):
        copy_ = quantized_linear(linear, fmt, 64)
        assert isinstance(copy_, Int8Linear if fmt == "int8" else Int4Linear)
        error = (copy_(x) - reference).norm() / reference.norm()
        assert error < tolerance, (fmt, error)
        assert copy_(x).dtype == x.dtype and copy_(x[None]).shape == (1, 3, 64)
    assert torch.equal(linear.weight, before)
    # a matrix the kernels cannot take stays shared
    assert quantized_linear(nn.Linear(100, 64), "int8", 64) is None
    assert quantized_linear(nn.Linear(64, 100), "int4", 64) is None
    # a transposed (GPT-2 Conv1D) weight
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(64, 256)
    assert (quantized_linear(conv, "int8", 64)(x) - conv(x)).norm() / conv(x).norm() < 0.02


def test_plan_round_trips_through_a_mask_and_raises_the_format_version(tmp_path):
    model = tiny_model("qwen2")
    draft = SDFPAssistant.from_target(model, mask=SDFPConfig.from_model_config(
        model.config, granularity="layer", skip_layers=[2], precision=mixed_plan().to_dict()))
    mask = draft.sdfp_config
    assert mask.format_version == 2 and mask.plan == mixed_plan()
    mask.save_pretrained(tmp_path)
    loaded = SDFPConfig.from_pretrained(tmp_path)
    assert loaded == mask and loaded.plan == draft.plan
    assert "int8" in (tmp_path / "README.md").read_text()  # the card shows the plan
    again = SDFPAssistant.from_pretrained(model, tmp_path)
    assert again.extra_bytes == draft.extra_bytes and again.plan == draft.plan
    # a mask without quantized branches stays version 1, readable by older sdfp-hf
    assert SDFPConfig.from_model_config(model.config, skip_layers=[1], precision={"head": "shared"}).format_version == 1


@pytest.mark.parametrize(
    "precision, message",
    [
        ({"attention": ["int8"] * 3}, r"`attention` precisions must list one per layer \(6\), got 3"),
        ({"mlp": ["int3"] * 6}, r"`mlp` precision must be one of \('shared', 'int8', 'int4'\), got 'int3'"),
        ({"head": "fp8"}, "`head` precision must be one of"),
        ({"group_size": 48}, r"`group_size` must be one of \(32, 64, 128, 256\)"),
        ({"layers": []}, "unknown keys \\['layers'\\]"),
        ("int8", "precision must be an object"),
    ],
)
def test_bad_plans_are_clear_errors(precision, message):
    model = tiny_model("llama")
    with pytest.raises(SDFPConfigError, match=message):
        SDFPConfig.from_model_config(model.config, skip_layers=[1], precision=precision)
    if isinstance(precision, dict) and set(precision) <= {"attention", "mlp", "head", "group_size"}:
        with pytest.raises(ValueError, match=message):
            DraftPlan.from_lists(NUM_LAYERS, **precision)


def test_a_plan_for_another_architecture_is_refused():
    small, other = tiny_model("llama"), tiny_model("qwen2")
    mask = SDFPConfig.from_model_config(small.config, skip_layers=[1], precision=mixed_plan().to_dict())
    with pytest.raises(SDFPConfigError, match="model type `llama`"):
        SDFPAssistant.from_target(other, mask=mask)
    bigger = copy.deepcopy(mask.to_dict())
    bigger["num_hidden_layers"] = 8  # the per-layer precisions no longer fit
    with pytest.raises(SDFPConfigError, match="one per layer"):
        SDFPConfig.from_dict(bigger)


def test_an_unknown_quantize_value_is_a_clear_error():
    with pytest.raises(ValueError, match="`quantize` precision must be one of"):
        SDFPAssistant.from_target(tiny_model("llama"), quantize="fp8")
