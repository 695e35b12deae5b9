"""The candidate generator's parts: prompt lookup, the adaptive draft length, the transformers hook.

Everything here runs the chain round (transformers' loop with the package's candidate generator); the tree
rounds that `generate` runs by default are tested in `test_tree_rounds.py`."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, prompt, tiny_model

from sdfp_hf import DraftingOptions, SDFPAssistant
from sdfp_hf.drafting.chain import SDFPCandidateGenerator
from sdfp_hf.drafting.lookup import prompt_lookup
from sdfp_hf.drafting.planner import RoundPlanner, planner_of

pytestmark = pytest.mark.lossless


@pytest.fixture(autouse=True)
def chain_rounds(monkeypatch):
    from sdfp_hf.drafting import hook

    monkeypatch.setattr(hook, "_tree_refusal", lambda *args: "")  # "": the chain round, as if asked for


def ids(*tokens):
    return torch.tensor([tokens])


def lookup(sequence, max_ngram, min_ngram, num_tokens):
    match = prompt_lookup(sequence, max_ngram, min_ngram, num_tokens)
    return None if match is None else (match[0].tolist(), match[1])


def test_prompt_lookup_proposes_what_followed_the_last_ngram():
    # "5 6" occurred twice before; the most recent occurrence is followed by 9 9 4.
    sequence = ids(5, 6, 7, 8, 1, 5, 6, 9, 9, 4, 2, 5, 6)
    assert lookup(sequence, 3, 2, 10) == ([[9, 9, 4, 2, 5, 6]], 2)
    assert lookup(sequence, 3, 2, 2) == ([[9, 9]], 2)
    # A longer n-gram wins over a more recent shorter one.
    sequence = ids(1, 2, 3, 7, 9, 2, 3, 8, 1, 2, 3)
    assert lookup(sequence, 3, 2, 1) == ([[7]], 3)
    assert lookup(ids(1, 2, 3, 4, 5), 3, 1, 4) is None
    assert lookup(ids(1, 2, 3, 1), 3, 2, 4) is None  # one-token matches are below min_ngram
    assert lookup(ids(1, 2, 3, 1), 3, 1, 4) == ([[2, 3, 1]], 1)


def measured_planner(max_draft=8, max_lookup=10, probe_every=32, per_token=0.0):
    """A planner that has measured T0 = 1 s and beta = `per_token` seconds (rounds of widths 0 and 10)."""
    planner = RoundPlanner(max_draft=max_draft, max_lookup=max_lookup, probe_every=probe_every)
    planner.record("none", 0, 0, verify_seconds=1.0, draft_seconds=0.0)
    planner.record("lookup", 10, 0, verify_seconds=1.0 + 10 * per_token, draft_seconds=0.0, order=99)
    assert planner.base_seconds == pytest.approx(1.0) and planner.per_token_seconds == pytest.approx(per_token)
    return planner


def test_verification_time_is_fitted_without_bias():
    planner = RoundPlanner(max_draft=8, max_lookup=10, probe_every=32)
    # T0 = 2 s, beta = 0.25 s; the first wide rounds alone cannot tell the two apart
    for width in (6, 6, 10, 0, 3, 10, 1, 8):
        planner.record("lookup", width, 0, verify_seconds=2.0 + 0.25 * width, draft_seconds=0.0, order=1)
    assert planner.base_seconds == pytest.approx(2.0) and planner.per_token_seconds == pytest.approx(0.25)


def test_planner_follows_draft_acceptance_and_cost():
    planner = RoundPlanner(max_draft=8, max_lookup=10, probe_every=4)
    assert planner.plan(None) == planner.plan(2) == ("none", 0)  # the first round measures a plain step
    planner.record("none", 0, 0, verify_seconds=1.0, draft_seconds=0.0)
    assert planner.plan(None) == ("draft", 8)  # the draft is tried before it is judged
    for _ in range(30):  # a cheap draft whose tokens are all accepted
        planner.record("draft", 4, 4, verify_seconds=1.0, draft_seconds=4 * 0.1)
    assert planner.plan(None) == ("draft", 8)
    for _ in range(30):  # an expensive draft that is always rejected
        planner.record("draft", 2, 0, verify_seconds=1.0, draft_seconds=2 * 0.8)
    assert planner.plan(None) == ("none", 0)
    planner.rounds_since_draft = 4
    assert planner.plan(None) == ("draft", 1)  # a probe, to notice when drafting pays again
    for _ in range(30):  # middling: a = 0.6 with a cost ratio of 0.3
        planner.record("draft", 5, 3, verify_seconds=1.0, draft_seconds=5 * 0.3)
    source, length = planner.plan(None)
    assert source == "draft" and 1 <= length <= 4


def test_planner_weighs_lookup_against_the_draft_by_match_order():
    planner = measured_planner()
    for _ in range(30):
        planner.record("draft", 4, 2, verify_seconds=1.0, draft_seconds=4 * 0.2)  # a = 0.67, cost 0.2
        planner.record("lookup", 10, 6, verify_seconds=1.0, draft_seconds=0.0, order=3)  # long matches pay
        planner.record("lookup", 10, 0, verify_seconds=1.0, draft_seconds=0.0, order=1)  # one-token ones do not
    assert planner.plan(3) == ("lookup", 10)
    assert planner.plan(1)[0] == "draft"
    assert planner.plan(None)[0] == "draft"


def test_planner_shortens_lookups_when_verification_width_costs():
    free, costly = measured_planner(), measured_planner(per_token=0.15)
    for planner in (free, costly):
        for _ in range(30):  # lookups of 10 tokens of which 1 is accepted
            planner.record("lookup", 10, 1, verify_seconds=1.0 + 10 * planner.per_token_seconds,
                           draft_seconds=0.0, order=2)
        for _ in range(30):  # a draft that never pays
            planner.record("draft", 1, 0, verify_seconds=1.0 + planner.per_token_seconds, draft_seconds=0.9)
    assert free.plan(2) == ("lookup", 10) and free.extension_length(2) == 10
    source, length = costly.plan(2)
    assert source == "lookup" and 1 <= length <= 3


def test_extension_length_is_zero_when_lookup_does_not_pay():
    planner = measured_planner(per_token=0.3)
    for _ in range(30):
        planner.record("lookup", 4, 0, verify_seconds=2.2, draft_seconds=0.0, order=1)
    assert planner.extension_length(1) == 0


def test_a_useless_draft_stops_being_used():
    model = tiny_model("qwen2")
    draft = SDFPAssistant.from_target(model, skip_layers=[1, 2, 3, 4], assistant_confidence_threshold=0.0,
                                      drafting=DraftingOptions(prompt_lookup=0, probe_every=16))
    out = model.generate(prompt(8), max_new_tokens=96, min_new_tokens=96, do_sample=False, assistant_model=draft)
    assert torch.equal(out, model.generate(prompt(8), max_new_tokens=96, min_new_tokens=96, do_sample=False))
    stats = draft.stats
    assert stats.acceptance_rate < 0.3, stats
    # After a few rounds it drafts only the periodic one-token probes.
    assert stats.rounds <= 10 + 96 // 16, stats


def test_the_planner_keeps_its_measurements_between_calls():
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[1])
    max_draft = int(draft.generation_config.num_assistant_tokens)
    fresh = planner_of(draft, max_draft)
    assert fresh.base_seconds is None
    first = model.generate(prompt(8), max_new_tokens=16, do_sample=False, assistant_model=draft)
    assert planner_of(draft, max_draft) is fresh and fresh.base_seconds is not None
    weight = fresh.verify.weight
    assert torch.equal(model.generate(prompt(8), max_new_tokens=16, do_sample=False, assistant_model=draft), first)
    assert fresh.verify.weight > weight  # the second call went on from the first one's measurements
    # Other settings: other costs and acceptance, so the planner starts over.
    draft.drafting = DraftingOptions(prompt_lookup=0)
    assert planner_of(draft, max_draft).base_seconds is None
    assert planner_of(draft, max_draft + 1) is not planner_of(draft, max_draft)


def test_lookup_rounds_are_counted_apart():
    model = tiny_model("gemma2")  # the tiny gemma2 falls into a loop: prompt lookup finds it
    draft = SDFPAssistant.from_target(model, skip_layers=[2])
    model.generate(prompt(8), max_new_tokens=48, min_new_tokens=48, do_sample=False, assistant_model=draft)
    assert draft.stats.rounds_from("lookup") > 0
    assert draft.stats.rounds == draft.stats.rounds_from("lookup") + draft.stats.rounds_from("draft")


def test_changed_transformers_fails_loudly(monkeypatch):
    from sdfp_hf import _compat

    monkeypatch.setattr(_compat, "_HOOK_PARAMETERS", ("input_ids", "something_else"))
    with pytest.raises(RuntimeError, match=r"does not fit transformers .*no `something_else` parameter.*Install a supported"):
        SDFPAssistant.from_target(tiny_model("llama"), skip_layers=[1])


def test_other_assistants_and_plain_generate_are_unaffected():
    model = tiny_model("llama")
    SDFPAssistant.from_target(model, skip_layers=[1])
    plain = model.generate(prompt(8), max_new_tokens=16, do_sample=False)
    lookup = model.generate(prompt(8), max_new_tokens=16, do_sample=False, prompt_lookup_num_tokens=3)
    other = tiny_model("llama", seed=5)
    assisted = model.generate(prompt(8), max_new_tokens=16, do_sample=False, assistant_model=other)
    assert torch.equal(plain, lookup) and torch.equal(plain, assisted)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_a_reduced_draft_vocabulary_is_lossless_and_respected(arch, monkeypatch):
    model = tiny_model(arch)
    vocab = list(range(3, 60))
    draft = SDFPAssistant.from_target(model, skip_layers=[2], draft_vocab=vocab, assistant_confidence_threshold=0.0,
                                      drafting=DraftingOptions(prompt_lookup=0, adaptive=False))
    proposed = []
    real_draft = SDFPCandidateGenerator._draft

    def spy(self, input_ids, *args):
        tokens, logits = real_draft(self, input_ids, *args)
        proposed.extend(tokens[0, input_ids.shape[1]:].tolist())
        return tokens, logits

    monkeypatch.setattr(SDFPCandidateGenerator, "_draft", spy)
    ids = prompt(10)
    out = model.generate(ids, max_new_tokens=32, do_sample=False, assistant_model=draft)
    assert torch.equal(out, model.generate(ids, max_new_tokens=32, do_sample=False))
    assert proposed and set(proposed) <= set(vocab)
    assert draft.sdfp_config.draft_vocab == vocab
    full = SDFPAssistant.from_target(model, skip_layers=[2])
    from transformers import DynamicCache

    position = torch.arange(10)[None]
    reduced_logits = draft.draft_logits(ids, position, DynamicCache(config=draft.config))
    full_logits = full.draft_logits(ids, position, DynamicCache(config=full.config))
    assert torch.allclose(reduced_logits[0, vocab], full_logits[0, vocab], atol=1e-5)
    assert torch.isinf(reduced_logits[0, 60:]).all()


def test_padded_prompt_is_lossless():
    model = tiny_model("qwen2")
    draft = SDFPAssistant.from_target(model, skip_layers=[3], drafting=DraftingOptions(prompt_lookup=0, adaptive=False))
    ids = torch.cat([torch.full((1, 3), 2), prompt(9)], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    plain = model.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False)
    assisted = model.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False, assistant_model=draft)
    assert torch.equal(plain, assisted)
    assert draft.stats.drafted > 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_draft_chains_extended_by_lookup_are_lossless(arch, forced_extended_drafts):
    """Every round drafts two tokens and appends up to three looked-up ones: greedy output is unchanged."""
    extended = forced_extended_drafts(draft=2, extension=3)
    model = tiny_model(arch)
    draft = SDFPAssistant.from_target(model, skip_layers=[1], assistant_confidence_threshold=0.0,
                                      drafting=DraftingOptions(extend_drafts=True))
    ids = prompt(12)
    out = model.generate(ids, max_new_tokens=40, min_new_tokens=40, do_sample=False, assistant_model=draft)
    assert torch.equal(out, model.generate(ids, max_new_tokens=40, min_new_tokens=40, do_sample=False))
    assert any(extended), "no round appended a lookup"


# ---------------------------------------------------------------------------------- options and faults


IGNORED_OPTIONS = [
    ({"prompt_lookup_num_tokens": 3}, "does its own prompt lookup"),
    ({"max_matching_ngram_size": 2}, "does its own prompt lookup"),
    ({"assistant_early_exit": 2}, "already is a draft of the model's own layers"),
    ({"assistant_ensemble_weight": 0.5}, "keeps assisted decoding lossless"),
    ({"use_mtp": True}, "multi-token prediction is another drafter"),
    ({"speculation_type": "dflash"}, "selects another drafter"),
    ({"num_assistant_tokens": 3}, r"reads it from the draft, which has 6.*set_draft_settings\(num_assistant_tokens"),
    ({"assistant_confidence_threshold": 0.1}, "reads it from the draft, which has 0.4"),
]


@pytest.mark.parametrize("option, hint", IGNORED_OPTIONS, ids=[next(iter(option)) for option, _ in IGNORED_OPTIONS])
def test_generate_options_an_sdfp_draft_would_drop_are_refused_by_name(option, hint):
    from sdfp_hf.drafting.hook import REFUSED_OPTIONS

    assert set(REFUSED_OPTIONS) >= {"prompt_lookup_num_tokens", "assistant_early_exit"}
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[1])
    [(name, value)] = option.items()
    with pytest.raises(ValueError, match=rf"`{name}={value!r}` .*{hint}"):
        model.generate(prompt(8), max_new_tokens=4, do_sample=False, assistant_model=draft, **option)


def test_draft_settings_equal_to_the_drafts_are_not_refused():
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[1], num_assistant_tokens=4)
    out = model.generate(prompt(8), max_new_tokens=8, do_sample=False, assistant_model=draft, num_assistant_tokens=4)
    assert torch.equal(out, model.generate(prompt(8), max_new_tokens=8, do_sample=False))


def test_an_assistant_tokenizer_is_refused():
    from tiny_models import tiny_tokenizer

    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[1])
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="assistant_tokenizer"):  # transformers' own check comes first
        model.generate(prompt(8), max_new_tokens=4, assistant_model=draft, tokenizer=tokenizer,
                       assistant_tokenizer=tokenizer)
    # the hook's own refusal, for a transformers whose check would let it through
    with pytest.raises(ValueError, match="shares the target's tokenizer: do not pass `assistant_tokenizer`"):
        model._get_candidate_generator(
            generation_config=model.generation_config, input_ids=prompt(8), inputs_tensor=prompt(8),
            logits_processor=[], model_kwargs={}, assistant_model=draft, target_tokenizer=tokenizer,
            assistant_tokenizer=tokenizer,
        )


@pytest.mark.parametrize("kwargs", [None, {}], ids=["no model_kwargs", "no cache in them"])
def test_a_round_without_the_targets_cache_is_an_error(kwargs, monkeypatch):
    real = SDFPCandidateGenerator.get_candidates

    def without_cache(self, input_ids, model_kwargs=None, is_first_iteration=False, **rest):
        return real(self, input_ids, kwargs, is_first_iteration, **rest)  # what a changed transformers would do

    monkeypatch.setattr(SDFPCandidateGenerator, "get_candidates", without_cache)
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[1])
    with pytest.raises(RuntimeError, match=r"did not pass the target's cache to the candidate generator"):
        model.generate(prompt(8), max_new_tokens=8, do_sample=False, assistant_model=draft)


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3, 5, 7])
def test_max_length_reached_inside_a_round(max_new_tokens, forced_extended_drafts, monkeypatch):
    forced_extended_drafts(draft=6, extension=0)  # every round asks for 6 tokens, more than are left
    asked = []
    real = SDFPCandidateGenerator._draft

    def spy(self, input_ids, cache, mask, length):
        asked.append((input_ids.shape[1], length))
        return real(self, input_ids, cache, mask, length)

    monkeypatch.setattr(SDFPCandidateGenerator, "_draft", spy)
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[1], assistant_confidence_threshold=0.0)
    ids = prompt(8)
    out = model.generate(ids, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                         assistant_model=draft)
    assert out.shape[1] == 8 + max_new_tokens
    assert torch.equal(out, model.generate(ids, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                           do_sample=False))
    final = 8 + max_new_tokens
    assert all(length + 1 <= final - start for start, length in asked)  # never past the end, bonus token included
    if max_new_tokens > 2:
        assert any(length < 6 for _, length in asked)  # a round was really cut by the length


def test_eos_inside_a_round_ends_the_round_and_the_generation(monkeypatch):
    from test_assistant import _zero_skipped_branches

    model = tiny_model("llama", seed=1)
    draft = SDFPAssistant.from_target(
        model, skip_layers=[2, 3], num_assistant_tokens=8, num_assistant_tokens_schedule="constant",
        assistant_confidence_threshold=0.0, drafting=DraftingOptions(prompt_lookup=0, adaptive=False),
    )
    _zero_skipped_branches(model, draft)  # an oracle draft: it proposes what the target will say, EOS included
    ids = prompt(12, seed=1)
    free = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)[0, 12:].tolist()
    # a token the target says for the first time mid-way: as EOS, the draft meets it inside a round
    first = next(i for i in range(3, len(free)) if free[i] not in free[:i])
    eos = free[first]
    proposed = []
    real = SDFPCandidateGenerator._draft

    def spy(self, input_ids, *args):
        tokens, logits = real(self, input_ids, *args)
        proposed.append(tokens[0, input_ids.shape[1]:].tolist())
        return tokens, logits

    monkeypatch.setattr(SDFPCandidateGenerator, "_draft", spy)
    out = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=2,
                         assistant_model=draft)
    plain = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=2)
    assert torch.equal(out, plain)
    assert out[0, 12:].tolist() == free[: first + 1]  # stopped right after the EOS
    chains_with_eos = [chain for chain in proposed if eos in chain]
    assert chains_with_eos and all(chain[-1] == eos for chain in chains_with_eos)  # the round ended at it
