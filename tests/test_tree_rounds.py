"""Tree rounds through `generate`: lossless greedy and sampling, EOS and length inside the tree, streamers,
stopping criteria, statistics per source, the suffix memory, and what runs the chain round instead."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_assistant import LlamaForCausalLM_tiny, _sampled_continuations_p_value
from tiny_models import ARCHITECTURES, prompt, tiny_model, tiny_tokenizer
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

from sdfp_hf import DraftingOptions, SDFPAssistant
from sdfp_hf.costs import CostCurve
from sdfp_hf.drafting import loop
from sdfp_hf.drafting.sources import estimate_agreements

pytestmark = pytest.mark.lossless

NEW_TOKENS = 40  # past the tiny models' sliding window (8) with the prompt


@pytest.fixture
def forced_trees(monkeypatch):
    """Every round verifies the widest tree the sources give (up to `tree_nodes`), and drafts."""

    def size(self, reach, draft_steps):
        return min(len(reach), self.options.tree_nodes), 1.0

    monkeypatch.setattr(loop.TreePlanner, "size", size)
    monkeypatch.setattr(loop.TreePlanner, "draft_depth", lambda self: self.max_draft)
    monkeypatch.setattr(loop, "_draft_pays", lambda *args: True)


def greedy(model, ids, **kwargs):
    return model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tree_rounds_are_token_identical_to_plain_greedy(arch, forced_trees):
    model = tiny_model(arch)
    ids = prompt(12)
    reference = greedy(model, ids)
    draft = SDFPAssistant.from_target(model, skip_layers=[2], quantize="int8", num_assistant_tokens=5)
    out = greedy(model, ids, assistant_model=draft)
    assert torch.equal(out, reference)
    stats = draft.stats
    assert stats.rounds > 0 and stats.mean_tree_size > 5  # wide trees really ran
    assert {"lookup", "table", "draft"} <= set(stats.by_source())
    assert max(stats.accepted_per_round) >= 2  # several tokens in one round
    # the same call again: the suffix memory of the first output proposes, and output is still the same
    assert torch.equal(greedy(model, ids, assistant_model=draft), reference)
    assert "memory" in draft.stats.by_source()
    # cleared: the suffix memory and the table start empty; the output is still the same
    draft.clear_memory()
    planner = draft.round_state["tree"][1]
    assert len(planner.memory) == 0 and not bool(planner.table.filled.any())
    assert torch.equal(greedy(model, ids, assistant_model=draft), reference)
    assert "memory" not in draft.stats.by_source()


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_eos_and_the_length_limit_inside_a_tree(arch, forced_trees):
    model = tiny_model(arch)
    ids = prompt(12)
    plain = model.generate(ids, max_new_tokens=30, do_sample=False)
    frequent = int(torch.mode(plain[0, 12:]).values)  # a token the model writes: as EOS, it ends mid-tree
    model.generation_config.eos_token_id = frequent
    draft = SDFPAssistant.from_target(model, quantize="int8")
    for max_new_tokens in (1, 2, 7, 30):
        expected = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
        assert torch.equal(model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, assistant_model=draft), expected)


def test_sampling_with_trees_keeps_the_target_distribution(forced_trees, monkeypatch):
    vocab, steps, draws = 5, 3, 1200
    torch.manual_seed(3)
    model = LlamaForCausalLM_tiny(vocab)
    draft = SDFPAssistant.from_target(model, skip_layers=[1], quantize="int8", num_assistant_tokens=3,
                                      drafting=DraftingOptions(recycled_tokens=2))
    ids = torch.tensor([[3, 1, 4]])
    assert _sampled_continuations_p_value(model, draft, ids, steps, draws) > 1e-3
    assert draft.stats.mean_tree_size > 1
    # power check: a walk that takes the most likely token instead of a draw is caught
    monkeypatch.setattr(loop, "_choose", lambda scores, do_sample: int(scores.argmax(-1)))
    assert _sampled_continuations_p_value(model, draft, ids, steps, draws) < 1e-3


def test_streamers_and_stopping_criteria_see_what_plain_decoding_gives(forced_trees, capsys):
    model = tiny_model("llama")
    tokenizer = tiny_tokenizer()
    ids = prompt(12)
    draft = SDFPAssistant.from_target(model, quantize="int8")

    class StopAt(StoppingCriteria):
        def __init__(self, length):
            self.length = length

        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool)

    stop = StoppingCriteriaList([StopAt(12 + 17)])
    expected = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, stopping_criteria=stop)
    assert expected.shape[1] == 12 + 17
    out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, stopping_criteria=stop, assistant_model=draft)
    assert torch.equal(out, expected)
    capsys.readouterr()
    model.generate(ids, max_new_tokens=20, do_sample=False, streamer=TextStreamer(tokenizer, skip_prompt=True))
    plain_text = capsys.readouterr().out
    model.generate(ids, max_new_tokens=20, do_sample=False, assistant_model=draft,
                   streamer=TextStreamer(tokenizer, skip_prompt=True))
    assert capsys.readouterr().out == plain_text


def test_calls_the_tree_loop_cannot_honour_run_the_chain_round():
    model = tiny_model("llama")
    ids = prompt(12)
    draft = SDFPAssistant.from_target(model, quantize="int8")
    plain = model.generate(ids, max_new_tokens=12, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with pytest.warns(UserWarning, match="`output_scores` is produced by the chain round only"):
        out = model.generate(ids, max_new_tokens=12, do_sample=False, output_scores=True, return_dict_in_generate=True,
                             assistant_model=draft)
    assert torch.equal(out.sequences, plain.sequences) and len(out.scores) == 12
    # said once per draft and reason
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.generate(ids, max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True,
                       assistant_model=draft)
    assert not [w for w in record if "chain rounds instead of tree rounds" in str(w.message)]
    # an attention implementation that ignores custom masks: the chain round, said once
    from sdfp_hf.drafting.hook import _tree_refusal

    model.config._attn_implementation = "flash_attention_2"
    try:
        assert "SDPA or eager" in _tree_refusal(model, draft, (ids,), {})
    finally:
        model.config._attn_implementation = "sdpa"
    assert _tree_refusal(model, draft, (ids,), {}) is None
    assert _tree_refusal(model, draft, (torch.cat([ids, ids]),), {}) == ""  # a batch: the chain round refuses it
    padded = torch.ones_like(ids)
    padded[0, 0] = 0
    assert "padded" in _tree_refusal(model, draft, (ids,), {"attention_mask": padded})
    assert _tree_refusal(model, draft, (ids,), {"assistant_tokenizer": tiny_tokenizer()}) == ""  # the chain refuses it
    with pytest.raises(ValueError, match="assistant_tokenizer"):
        model.generate(ids, max_new_tokens=4, assistant_model=draft, tokenizer=tiny_tokenizer(),
                       assistant_tokenizer=tiny_tokenizer())
    # a batch is still a clear error, and a 4-D mask from the user is refused by generate itself
    with pytest.raises(ValueError, match="batch size 1"):
        model.generate(torch.cat([ids, ids]), max_new_tokens=4, do_sample=False, assistant_model=draft)
    with pytest.raises(ValueError, match="must be 2D"):
        model.generate(ids, attention_mask=torch.ones(1, 1, 12, 12), max_new_tokens=4, assistant_model=draft)


def test_trees_off_is_the_chain_round():
    model = tiny_model("llama")
    ids = prompt(12)
    draft = SDFPAssistant.from_target(model, quantize="int8", drafting=DraftingOptions(tree=False))
    assert torch.equal(greedy(model, ids, assistant_model=draft), greedy(model, ids))
    assert draft.stats.mean_tree_size <= draft.generation_config.num_assistant_tokens + DraftingOptions().lookup_tokens
    assert "table" not in draft.stats.by_source()


def _measured_planner(max_draft, curve, draft_seconds, acceptance):
    """A tree planner that has measured verification `curve` (width, seconds), a draft step and its acceptance."""
    planner = loop.TreePlanner(vocab_size=96, options=DraftingOptions(), max_draft=max_draft)
    for width, seconds in curve:
        planner.curve.record(width, seconds)
    planner.draft_seconds, planner.overhead = draft_seconds, 0.0
    for _ in range(20):
        planner.calibration.record(loop.CHAIN, acceptance)
    return planner


def test_the_draft_runs_where_the_free_candidates_leave_room():
    # verification nearly free up to 8 nodes; the draft nearly always right
    planner = _measured_planner(4, [(1, 1.0), (8, 1.1)], draft_seconds=0.2, acceptance=1.0)
    empty = loop.CandidateTree.rooted_at(5)
    free_rate = planner.size(empty.sorted_reach(), 0)[1]
    assert loop._draft_pays(planner, empty, 4, free_rate)
    # a lookup chain the target nearly surely takes: the draft would propose the same tokens
    sure = loop.CandidateTree.rooted_at(5)
    sure.add([6, 7, 8, 9], [0.99] * 4, "lookup:3:3")
    free_rate = planner.size(sure.sorted_reach(), 0)[1]
    assert not loop._draft_pays(planner, sure, 4, free_rate)


def test_without_a_context_match_the_draft_runs_where_it_beats_plain_decoding():
    planner = _measured_planner(4, [(1, 1.0), (8, 1.1)], draft_seconds=0.2, acceptance=0.8)
    guesses = loop.CandidateTree.rooted_at(5)
    guesses.add([6, 7, 8, 9], [0.99] * 4, "table:0")  # the recycled table, however sure it claims to be
    assert loop._draft_pays(planner, guesses, 4, free_rate=100.0)
    planner.draft_seconds = 2.0  # a draft step dearer than a target step: plain decoding beats the draft
    assert not loop._draft_pays(planner, guesses, 4, free_rate=0.0)
    matched = loop.CandidateTree.rooted_at(5)
    matched.add([6, 7, 8, 9], [0.99] * 4, "memory:3:3")  # a match in the suffix memory: compared as before
    planner.draft_seconds = 0.2
    assert not loop._draft_pays(planner, matched, 4, free_rate=100.0)


def test_the_draft_chain_stops_where_its_next_step_no_longer_pays():
    # verification width free (the chain's stop reads each node's own chance, not the draft's mean acceptance)
    planner = _measured_planner(8, [(1, 1.0), (16, 1.0)], draft_seconds=0.2, acceptance=0.5)
    tree = loop.CandidateTree.rooted_at(5)
    keep_going = loop._next_step_pays(planner, tree, free_size=0, rate=2.0, depth=8)  # a step must yield 0.4 tokens
    (first,) = tree.add([6], [0.9], "draft:9")
    assert keep_going(first, 0.9)  # a confident first token: the next is likely too
    (second,) = tree.add([7], [0.3], "draft:3", first)
    assert not keep_going(second, 0.9 * 0.3)  # an unsure second one: the third is not worth its step
    # the chain's first token is a lookup's, which goes on nearly surely as deep as the chain may: nothing to add
    sure = loop.CandidateTree.rooted_at(5)
    sure.add(list(range(6, 14)), [0.99] * 8, "lookup:3:3")
    (merged,) = sure.add([6], [0.9], "draft:9")
    assert not loop._next_step_pays(planner, sure, free_size=8, rate=2.0, depth=8)(merged, 0.9)
    # ... but a lookup that ends after two tokens leaves the depths below it to the draft
    short = loop.CandidateTree.rooted_at(5)
    short.add([6, 7], [0.99, 0.99], "lookup:3:3")
    (merged,) = short.add([6], [0.9], "draft:9")
    assert loop._next_step_pays(planner, short, free_size=2, rate=2.0, depth=8)(merged, 0.9)
    # width that costs: one more verified node costs as much as a target step
    planner.curve = CostCurve()
    for width, seconds in [(1, 1.0), (2, 2.0)]:
        planner.curve.record(width, seconds)
    alone = loop.CandidateTree.rooted_at(5)
    (only,) = alone.add([6], [0.9], "draft:9")
    assert not loop._next_step_pays(planner, alone, free_size=0, rate=2.0, depth=8)(only, 0.9)
    # width whose cost is a step (fp32 on a CPU): a second verified token as dear as the first, the next ones
    # nearly free; one step ahead the chain would stop here, looking further it goes on
    planner.curve = CostCurve()
    for width, seconds in [(1, 1.0), (2, 2.0), (16, 2.1)]:
        planner.curve.record(width, seconds)
    step = loop.CandidateTree.rooted_at(5)
    (first,) = step.add([6], [0.9], "draft:9")
    assert loop._next_step_pays(planner, step, free_size=0, rate=2.0, depth=8)(first, 0.9)


def test_sources_are_calibrated_only_below_accepted_nodes():
    planner = loop.TreePlanner(vocab_size=32, options=DraftingOptions(), max_draft=4)
    tree = loop.CandidateTree.rooted_at(5)
    tree.add([10, 11], [0.5, 0.5], "lookup:2:3")  # node 1 (token 10), below it node 2 (token 11)
    tree.add([12], [0.5], "table:0")  # node 3, the root's other child
    logits = torch.zeros(len(tree), 32)
    logits[0, 12] = logits[1, 11] = 1.0  # the target takes 12 at the root; after 10 it would take 11
    loop._learn(planner, tree, logits, path=[3], do_sample=False)
    calibration = planner.calibration
    assert calibration.weight == {"lookup:2:3": 1.0, "table:0": 1.0}  # node 2 (below the rejected 10) is not
    assert calibration.hits == {"lookup:2:3": 0.0, "table:0": 1.0}


def test_tree_rounds_draft_up_to_their_own_cap_not_the_chain_length():
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, quantize="int8", num_assistant_tokens=2)
    assert loop.tree_planner_of(draft, model.config.vocab_size).max_draft == DraftingOptions().tree_draft_tokens
    draft.drafting = DraftingOptions(tree_draft_tokens=5)
    assert loop.tree_planner_of(draft, model.config.vocab_size).max_draft == 5
    draft.drafting = DraftingOptions(tree_draft=False)
    assert loop.tree_planner_of(draft, model.config.vocab_size).max_draft == 0
    # measured: a cheap draft that is always right is run to the cap, past the chain length
    planner = _measured_planner(8, [(1, 1.0), (9, 1.2)], draft_seconds=0.05, acceptance=1.0)
    assert planner.draft_depth() == 8
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="tree_draft_tokens"):
            DraftingOptions(tree_draft_tokens=bad)


def test_nodes_several_sources_propose_are_learned_under_their_agreement():
    planner = loop.TreePlanner(vocab_size=32, options=DraftingOptions(), max_draft=4)
    tree = loop.CandidateTree.rooted_at(5)
    tree.add([10], [0.4], "lookup:2:3")
    tree.add([10], [0.3], "table:0")  # the same token: one node, two sources
    tree.add([12], [0.2], "table:1")
    assert tree.sources[1] == {"lookup:2:3", "table:0"} and tree.estimates[1] == 0.4
    logits = torch.zeros(len(tree), 32)
    logits[0, 10] = 1.0  # the target takes the agreed token
    loop._learn(planner, tree, logits, path=[1], do_sample=False)
    calibration = planner.calibration
    # the agreement's hit is not credited to the table or the lookup alone
    assert calibration.weight == {"agree:lookup+table": 1.0, "table:1": 1.0}
    assert calibration.hits["agree:lookup+table"] == 1.0 and calibration.hits["table:1"] == 0.0
    for _ in range(30):
        calibration.record("agree:lookup+table", 1.0)
    again = loop.CandidateTree.rooted_at(5)
    again.add([10], [0.4], "lookup:2:3")
    again.add([10], [0.3], "table:0")
    again.add([11], [0.4], "lookup:2:3")  # one source: its own estimate stands
    estimate_agreements(again, calibration)
    assert again.chance[1] == pytest.approx(calibration.chance("agree:lookup+table", prior=0.4)) and again.chance[1] > 0.9
    assert again.chance[2] == 0.4
