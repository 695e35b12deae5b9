"""One draft shared by several threads at once: each call its own round state, statistics merged.

Real threads on tiny models: the outputs equal those of the same calls run one after another (and plain
greedy decoding); the kept round state is held by one call at a time; `draft.stats` gathers the rounds
of overlapping calls and, after sequential calls, holds the last one's.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from tiny_models import prompt, tiny_model

from sdfp_hf import DraftingOptions, SDFPAssistant
from sdfp_hf.drafting.calls import current_call, draft_call

pytestmark = pytest.mark.lossless

THREADS = 4
NEW_TOKENS = 24


def greedy(model, ids, **kwargs):
    return model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)


@pytest.mark.parametrize("tree", [True, False], ids=["tree", "chain"])
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_concurrent_calls_give_what_sequential_calls_give(arch, tree):
    model = tiny_model(arch)
    draft = SDFPAssistant.from_target(
        model, skip_layers=[2], assistant_confidence_threshold=0.0, drafting=DraftingOptions(tree=tree)
    )
    prompts = [prompt(10 + i, seed=i) for i in range(2 * THREADS)]
    sequential = [greedy(model, ids, assistant_model=draft) for ids in prompts]
    plain = [greedy(model, ids) for ids in prompts]
    assert all(torch.equal(a, b) for a, b in zip(sequential, plain))

    start = threading.Barrier(THREADS)

    def run(i):
        start.wait()  # all threads enter generate together
        return [greedy(model, prompts[j], assistant_model=draft) for j in range(i, len(prompts), THREADS)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(run, range(THREADS)))
    concurrent = {j: out for i, outs in enumerate(results) for j, out in zip(range(i, len(prompts), THREADS), outs)}
    for j, expected in enumerate(sequential):
        assert torch.equal(concurrent[j], expected), f"prompt {j}"
    assert draft.stats.rounds > 0
    assert draft.__dict__.get("_sdfp_active_calls") == 0
    assert not draft.__dict__.get("_sdfp_busy")  # every call gave back what it held


def test_the_kept_round_state_is_held_by_one_call_at_a_time():
    draft = SDFPAssistant.from_target(tiny_model("llama"), skip_layers=[2])
    made = []

    def make():
        made.append(object())
        return made[-1]

    holding, release = threading.Event(), threading.Event()
    seen = {}

    def first():
        with draft_call(draft) as call:
            seen["first"] = call.state("tree", "settings", make)
            assert call.state("tree", "settings", make) is seen["first"]  # asked again: the same
            call.stats.record(3, 2, "draft")
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(10)
    with draft_call(draft) as call:
        seen["second"] = call.state("tree", "settings", make)
        call.stats.record(4, 1, "lookup")
    release.set()
    thread.join(10)
    assert seen["first"] is not seen["second"]
    assert draft.round_state["tree"][1] is seen["first"]  # the kept one stays the first call's
    # both calls overlapped: their rounds are merged
    assert draft.stats.rounds == 2 and draft.stats.drafted == 7 and draft.stats.accepted == 3
    # a later call, alone: the kept state is free again, and the statistics are that call's only
    with draft_call(draft) as call:
        assert call.state("tree", "settings", make) is seen["first"]
        call.stats.record(1, 1, "draft")
    assert draft.stats.rounds == 1


def test_outside_generate_a_call_uses_the_kept_state_directly():
    draft = SDFPAssistant.from_target(tiny_model("llama"), skip_layers=[2])
    draft.stats.record(2, 1)
    call = current_call(draft)
    assert call.stats is draft.stats and draft.stats.rounds == 0  # a new call: reset
    state = call.state("chain", 1, object)
    assert current_call(draft).state("chain", 1, object) is state
