"""The offline acceptance replay agrees exactly with real assisted runs (greedy, fp32)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, prompt, tiny_model

from sdfp_hf import SDFPAssistant
from sdfp_hf.generation import DraftingOptions
from sdfp_hf.replay import replay_acceptance

DRAFT_ONLY = DraftingOptions(prompt_lookup=0, adaptive=False)

NEW_TOKENS = 32


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_replay_matches_real_runs(arch):
    model = tiny_model(arch, seed=2)
    ids = prompt(10, seed=2)
    output = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    draft = SDFPAssistant.from_target(model, skip_layers=[1], skip_attention=[3], skip_mlp=[4], drafting=DRAFT_ONLY)
    results = replay_acceptance(
        model, draft, ids, max_new_tokens=NEW_TOKENS, output_ids=output,
        num_assistant_tokens=(1, 4), thresholds=(0.0, 0.5), schedules=("constant", "heuristic"),
    )
    assert len(results) == 8
    for result in results:
        draft.set_draft_settings(
            num_assistant_tokens=result.num_assistant_tokens,
            num_assistant_tokens_schedule=result.schedule,
            assistant_confidence_threshold=result.threshold,
        )
        real = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, assistant_model=draft)
        assert torch.equal(real, output)
        assert result.drafted_per_round == draft.stats.drafted_per_round, result
        assert result.accepted_per_round == draft.stats.accepted_per_round, result
        assert result.new_tokens == output.shape[1] - ids.shape[1]
        assert result.draft_forwards == result.drafted
        assert result.target_forwards >= len(result.drafted_per_round) + 1


def test_replay_of_an_exact_draft_accepts_everything():
    model = tiny_model("llama", seed=3)
    draft = SDFPAssistant.from_target(model, skip_layers=[2])
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    (result,) = replay_acceptance(model, draft, prompt(10), max_new_tokens=NEW_TOKENS, num_assistant_tokens=(4,))
    assert result.acceptance_rate == 1.0
    # 1 prefill round, then rounds of 4 drafted + 1 bonus token until the budget runs short.
    assert result.target_forwards <= 2 + NEW_TOKENS // 5
    assert result.predicted_speedup(draft_cost=0.0) == pytest.approx(result.new_tokens / result.target_forwards)


def test_replay_rejects_batches():
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[2])
    with pytest.raises(ValueError, match="one prompt"):
        replay_acceptance(model, draft, torch.cat([prompt(5), prompt(5)]), max_new_tokens=4)
