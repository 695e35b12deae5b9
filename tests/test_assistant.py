"""The draft: lossless generation, shared weights, untouched target, clear errors (tiny random models)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, NUM_LAYERS, prompt, tiny_model, tiny_tokenizer
from transformers import LlamaConfig, LlamaModel, pipeline

from sdfp_hf import DraftingOptions, SDFPAssistant
from sdfp_hf.drafting import chain as sdfp_chain

DRAFT_ONLY = DraftingOptions(prompt_lookup=0, adaptive=False)
from sdfp_hf.architectures import UnsupportedModelError, get_architecture

SKIPS = {
    "first": dict(skip_layers=[0]),
    "middle": dict(skip_layers=[2, 3]),
    "last": dict(skip_layers=[NUM_LAYERS - 1]),
    "sublayers": dict(skip_attention=[0, 3], skip_mlp=[1, NUM_LAYERS - 1]),
    "mixed": dict(skip_layers=[2], skip_attention=[4], skip_mlp=[0]),
}
NEW_TOKENS = 40  # longer than the tiny models' sliding window (8) plus prompt


def greedy(model, ids, **kwargs):
    return model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch_model(request):
    return request.param, tiny_model(request.param)


@pytest.mark.lossless
@pytest.mark.parametrize("drafting", [DRAFT_ONLY, DraftingOptions()], ids=["draft-only", "default"])
@pytest.mark.parametrize("skip", sorted(SKIPS))
def test_greedy_equals_plain_greedy(arch_model, skip, drafting):
    arch, model = arch_model
    ids = prompt(12)
    reference = greedy(model, ids)
    draft = SDFPAssistant.from_target(model, **SKIPS[skip], assistant_confidence_threshold=0.0, drafting=drafting)
    assert torch.equal(greedy(model, ids, assistant_model=draft), reference)
    assert draft.stats.rounds > 0 and draft.stats.drafted > 0


def _zero_skipped_branches(model, draft):
    spec = get_architecture(model)
    layers = spec.decoder_layers(model)
    with torch.no_grad():
        for kind, indices in (("attention", draft.skip.attention), ("mlp", draft.skip.mlp)):
            for i in indices:
                for p in spec.branch_output_projection(layers[i], kind).parameters():
                    p.zero_()


@pytest.mark.lossless
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("skip", ["middle", "sublayers"])
def test_oracle_draft_is_always_accepted(arch, skip):
    """With the skipped branches made exact no-ops, the draft computes what the target computes."""
    model = tiny_model(arch, seed=1)
    draft = SDFPAssistant.from_target(
        model, **SKIPS[skip], num_assistant_tokens=4, num_assistant_tokens_schedule="constant",
        assistant_confidence_threshold=0.0, drafting=DRAFT_ONLY,
    )
    _zero_skipped_branches(model, draft)
    ids = prompt(12, seed=1)
    reference = greedy(model, ids)
    assert torch.equal(greedy(model, ids, assistant_model=draft), reference)
    stats = draft.stats
    assert stats.acceptance_rate == 1.0, stats
    assert stats.drafted >= NEW_TOKENS - 2 * stats.rounds  # rounds really drafted several tokens
    assert max(stats.drafted_per_round) == 4


def _snapshot(model):
    spec = get_architecture(model)
    layers = spec.decoder_layers(model)
    return {
        "params": [(n, p.data_ptr(), p.clone()) for n, p in model.named_parameters()],
        "modules": [(n, id(m)) for n, m in model.named_modules()],
        "layer_idx": [spec.branch(layer, "attention").layer_idx for layer in layers],
        "config": model.config.to_dict(),
        "generation_config": model.generation_config.to_dict(),
        "num_layers": len(layers),
    }


def _assert_same(before, after):
    assert [(n, ptr) for n, ptr, _ in before["params"]] == [(n, ptr) for n, ptr, _ in after["params"]]
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(before["params"], after["params"]))
    for key in ("modules", "layer_idx", "config", "generation_config", "num_layers"):
        assert before[key] == after[key], key


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_weights_shared_and_target_untouched(arch):
    model = tiny_model(arch)
    ids = prompt(10)
    reference = greedy(model, ids)
    before = _snapshot(model)

    first = SDFPAssistant.from_target(model, skip_layers=[1, 4])
    second = SDFPAssistant.from_target(model, skip_attention=[2], skip_mlp=[0, 5])
    target_storage = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for draft in (first, second):
        assert isinstance(draft, SDFPAssistant) and isinstance(draft, type(model))
        assert {p.untyped_storage().data_ptr() for p in draft.parameters()} <= target_storage
        assert draft.config is not model.config
        assert draft.generation_config is not model.generation_config
        assert draft.config.num_hidden_layers == len(draft.skip.kept_layers)

    out_first = greedy(model, ids, assistant_model=first)
    stats_first = first.stats.as_dict()
    out_second = greedy(model, ids, assistant_model=second)
    assert torch.equal(out_first, reference) and torch.equal(out_second, reference)
    assert first.stats.as_dict() == stats_first  # each draft keeps its own statistics
    assert torch.equal(greedy(model, ids), reference)  # plain decoding unchanged while drafts exist
    _assert_same(before, _snapshot(model))


def test_layer_types_follow_kept_layers():
    model = tiny_model("gemma3")
    draft = SDFPAssistant.from_target(model, skip_layers=[0, 2])
    types = model.config.layer_types
    assert draft.config.layer_types == [types[i] for i in (1, 3, 4, 5)]
    assert model.config.layer_types == types and model.config.num_hidden_layers == NUM_LAYERS


def test_draft_settings_are_on_the_drafts_generation_config():
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(
        model, skip_layers=[1], num_assistant_tokens=3, num_assistant_tokens_schedule="constant",
        assistant_confidence_threshold=0.0, drafting=DRAFT_ONLY,
    )
    ids = prompt(10)
    greedy(model, ids, assistant_model=draft)
    assert max(draft.stats.drafted_per_round) == 3
    assert draft.generation_config.num_assistant_tokens == 3
    assert model.generation_config.num_assistant_tokens != 3 or model.generation_config is not draft.generation_config


def _exact_distribution(model, ids, steps):
    """Exact probability of every `steps`-token continuation of `ids` under `model` (sampling, T=1)."""
    seqs, probs = ids, torch.ones(1, device=ids.device)
    with torch.no_grad():
        for _ in range(steps):
            p = model(seqs).logits[:, -1].float().softmax(-1)
            probs = (probs[:, None] * p).reshape(-1)
            tokens = torch.arange(p.shape[1], device=ids.device).repeat(len(seqs))[:, None]
            seqs = torch.cat([seqs.repeat_interleave(p.shape[1], 0), tokens], 1)
    return probs.cpu()


def _sampled_continuations_p_value(model, draft, ids, steps, draws, extra_steps=0):
    """Chi-square p-value of `draws` sampled continuations against the target's exact distribution.

    Generates `steps + extra_steps` tokens and tests the first `steps` (their marginal is the same).
    """
    vocab = model.config.vocab_size
    counts = torch.zeros(vocab**steps)
    torch.manual_seed(0)
    for _ in range(draws):
        out = model.generate(ids, max_new_tokens=steps + extra_steps, min_new_tokens=steps + extra_steps,
                             do_sample=True, top_k=0, assistant_model=draft)
        index = 0
        for t in out[0, ids.shape[1] : ids.shape[1] + steps].tolist():
            index = index * vocab + t
        counts[index] += 1
    expected = _exact_distribution(model, ids, steps) * draws
    # Pool the least likely cells until each pool expects >= 10 draws, so the chi-square law holds.
    observed_pooled, expected_pooled, acc_o, acc_e = [], [], 0.0, 0.0
    for i in torch.argsort(expected).tolist():
        acc_o, acc_e = acc_o + counts[i].item(), acc_e + expected[i].item()
        if acc_e >= 10:
            observed_pooled.append(acc_o)
            expected_pooled.append(acc_e)
            acc_o = acc_e = 0.0
    observed_pooled[-1] += acc_o
    expected_pooled[-1] += acc_e
    o = torch.tensor(observed_pooled, dtype=torch.float64)
    e = torch.tensor(expected_pooled, dtype=torch.float64)
    chi2 = ((o - e) ** 2 / e).sum()
    return torch.special.gammaincc(torch.tensor((len(o) - 1) / 2, dtype=torch.float64), chi2 / 2).item()


@pytest.mark.lossless
def test_sampling_keeps_the_target_distribution(monkeypatch):
    """Sampled continuations follow the target's exact distribution; a biased sampler is caught."""
    vocab, steps, draws = 5, 3, 1200
    torch.manual_seed(3)
    model = LlamaForCausalLM_tiny(vocab)
    draft = SDFPAssistant.from_target(model, skip_layers=[1, 2], num_assistant_tokens=3,
                                      num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0,
                                      drafting=DRAFT_ONLY)
    ids = torch.tensor([[3, 1, 4]])
    assert _sampled_continuations_p_value(model, draft, ids, steps, draws) > 1e-3
    assert draft.stats.drafted > 0
    # The default path mixes prompt-lookup rounds (no q: transformers samples the target and compares)
    # with draft rounds.
    default = SDFPAssistant.from_target(model, skip_layers=[1, 2], assistant_confidence_threshold=0.0)
    assert _sampled_continuations_p_value(model, default, ids, steps, draws) > 1e-3

    # Power check: a generator that drafts greedily while reporting its sampling distribution as q
    # breaks speculative sampling's correction; the same test must reject it.
    monkeypatch.setattr(sdfp_chain, "_draw", lambda probs: probs.argmax(-1, keepdim=True))
    assert _sampled_continuations_p_value(model, draft, ids, steps, draws) < 1e-3


@pytest.mark.lossless
def test_sampling_with_lookup_appended_to_draft_chains_keeps_the_target_distribution(forced_extended_drafts):
    """Draft chains extended by a lookup (point-mass q for the appended tokens) stay exact."""
    vocab, steps, draws = 5, 3, 1200
    torch.manual_seed(3)
    model = LlamaForCausalLM_tiny(vocab)
    extended = forced_extended_drafts(draft=1, extension=2)
    draft = SDFPAssistant.from_target(model, skip_layers=[1, 2], assistant_confidence_threshold=0.0,
                                      drafting=DraftingOptions(extend_drafts=True, tree=False))
    ids = torch.tensor([[3, 1, 4, 1]])
    assert _sampled_continuations_p_value(model, draft, ids, steps, draws, extra_steps=3) > 1e-3
    assert sum(n > 0 for n in extended) > draws // 2  # most rounds did append lookup tokens


def LlamaForCausalLM_tiny(vocab):
    from transformers import LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=0, eos_token_id=None,
                         pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


@pytest.mark.lossless
@pytest.mark.parametrize("per_call", [False, True])
def test_pipeline_gives_the_same_text(per_call):
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    draft = SDFPAssistant.from_target(model, skip_layers=[2, 3])
    kwargs = dict(max_new_tokens=24, do_sample=False, return_full_text=False)
    plain = pipeline("text-generation", model=model, tokenizer=tokenizer)("hello world", **kwargs)
    if per_call:
        out = pipeline("text-generation", model=model, tokenizer=tokenizer)("hello world", assistant_model=draft, **kwargs)
    else:
        assisted = pipeline("text-generation", model=model, tokenizer=tokenizer, assistant_model=draft)
        out = assisted("hello world", **kwargs)
    assert out == plain
    assert draft.stats.rounds > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(skip_layers=list(range(NUM_LAYERS))), "skips all 6 decoder layers"),
        (dict(skip_layers=[NUM_LAYERS]), "holds index 6, but the model has 6 decoder layers"),
        (dict(skip_layers=[1, 1]), "lists layers [1] more than once"),
        (dict(skip_layers=[-1]), "negative index -1"),
        (dict(skip_attention=list(range(NUM_LAYERS))), "attention of all 6 layers"),
        (dict(skip_layers=[1], skip_mlp=[1]), "both `skip_layers` and `skip_mlp`"),
        (dict(skip_layers=["1"]), "integer layer indices"),
        (dict(skip_layers=3), "list of layer indices"),
        (dict(skip_layers=[1], num_assistant_tokens=0), "num_assistant_tokens must be at least 1"),
        (dict(skip_layers=[1], assistant_confidence_threshold=1.5), "must be in [0.0, 1.0]"),
        (dict(skip_layers=[1], num_assistant_tokens_schedule="fast"), "must be one of"),
    ],
)
def test_bad_skip_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        SDFPAssistant.from_target(tiny_model("llama"), **kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompt_lookup="0:tree=false"), "prompt_lookup must be an integer >= 0, got '0:tree=false'"),
        (dict(prompt_lookup=-1), "prompt_lookup must be an integer >= 0"),
        (dict(lookup_tokens=0), "lookup_tokens must be an integer >= 1"),
        (dict(tree_nodes=2.5), "tree_nodes must be an integer >= 1"),
        (dict(tree_draft_tokens=True), "tree_draft_tokens must be an integer >= 1"),
        (dict(tree="false"), "tree must be True or False, got 'false'"),
    ],
)
def test_bad_drafting_options_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        DraftingOptions(**kwargs)
    assert message in str(err.value)


def test_not_a_causal_lm_is_a_clear_error():
    base = LlamaModel(LlamaConfig(**{k: v for k, v in tiny_model("llama").config.to_dict().items()
                                     if k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads")}))
    with pytest.raises(UnsupportedModelError, match="LlamaModel has no language-modelling head"):
        SDFPAssistant.from_target(base, skip_layers=[1])
    with pytest.raises(UnsupportedModelError, match="expected a transformers PreTrainedModel"):
        SDFPAssistant.from_target(torch.nn.Linear(2, 2), skip_layers=[1])


def test_encoder_decoder_and_state_space_models_are_unsupported():
    from transformers import MambaConfig, MambaForCausalLM, T5Config, T5ForConditionalGeneration

    t5 = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2))
    with pytest.raises(UnsupportedModelError, match="T5ForConditionalGeneration is an encoder-decoder model"):
        SDFPAssistant.from_target(t5, skip_layers=[0])
    mamba = MambaForCausalLM(MambaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, state_size=4))
    with pytest.raises(UnsupportedModelError, match=r"MambaForCausalLM \(model_type='mamba'\) is not supported.*llama"):
        SDFPAssistant.from_target(mamba, skip_layers=[0])


@pytest.mark.lossless
def test_batch_size_above_one_is_a_clear_error():
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[1])
    ids = torch.cat([prompt(8, seed=0), prompt(8, seed=1)])
    with pytest.raises(ValueError, match="batch size 1"):
        model.generate(ids, max_new_tokens=4, assistant_model=draft, attention_mask=torch.ones_like(ids))


def test_a_draft_of_another_model_is_refused():
    model, other = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    draft = SDFPAssistant.from_target(other, skip_layers=[1])
    with pytest.raises(ValueError, match="built from another model"):
        model.generate(prompt(8), max_new_tokens=4, assistant_model=draft)


def test_a_draft_is_not_a_target():
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[1])
    with pytest.raises(ValueError, match="already an sdfp-hf draft"):
        SDFPAssistant.from_target(draft, skip_layers=[0])
    assert "_get_candidate_generator" not in draft.__dict__
