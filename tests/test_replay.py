"""The offline acceptance replay agrees exactly with real assisted runs (greedy, fp32)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, prompt, tiny_model

from sdfp_hf import DraftingOptions, SDFPAssistant
from sdfp_hf.replay import one_step_agreement, replay_acceptance, replay_rounds, target_trajectories

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


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_replay_equals_the_exact_replay(arch):
    model = tiny_model(arch, seed=2)
    prompts = [prompt(10, seed=s)[0] for s in range(3)]
    trajectories = target_trajectories(model, prompts, 24)
    draft = SDFPAssistant.from_target(model, skip_layers=[1], skip_attention=[3], skip_mlp=[4], drafting=DRAFT_ONLY)
    samples = replay_rounds(draft, trajectories, max_draft=4)
    ours = samples.stats(4)
    rounds = drafted = accepted = 0
    for i, p in enumerate(prompts):
        output = trajectories.input_ids[i : i + 1, : trajectories.lengths[i]]
        assert torch.equal(output, model.generate(p[None], max_new_tokens=24, do_sample=False))
        (exact,) = replay_acceptance(model, draft, p[None], max_new_tokens=24, output_ids=output,
                                     num_assistant_tokens=(4,))
        rounds += len(exact.drafted_per_round)
        drafted += exact.drafted
        accepted += exact.accepted
    assert (ours["rounds"], ours["drafted"], ours["accepted"]) == (rounds, drafted, accepted)


def test_batched_replay_of_an_exact_draft_accepts_everything():
    model = tiny_model("llama", seed=3)
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    trajectories = target_trajectories(model, [prompt(10)[0], prompt(7, seed=1)[0]], 20)
    draft = SDFPAssistant.from_target(model, skip_layers=[2])
    samples = replay_rounds(draft, trajectories, max_draft=5)
    for k in (1, 3, 5):
        assert samples.stats(k)["acceptance_rate"] == 1.0
    assert samples.per_token_acceptance() == 1.0


def test_one_step_agreement_screens_the_first_draft_token():
    model = tiny_model("qwen2", seed=2)
    with torch.no_grad():
        model.model.layers[3].self_attn.o_proj.weight.zero_()
        model.model.layers[3].mlp.down_proj.weight.zero_()
    trajectories = target_trajectories(model, [prompt(10, seed=s)[0] for s in range(2)], 16)
    exact = SDFPAssistant.from_target(model, skip_layers=[3])
    assert one_step_agreement(exact, trajectories) == 1.0
    other = SDFPAssistant.from_target(model, skip_layers=[0, 1, 2])
    top1 = one_step_agreement(other, trajectories)
    assert 0.0 <= top1 < 1.0
    top3 = one_step_agreement(other, trajectories, top_k=3)
    assert top1 <= top3 <= 1.0
    assert one_step_agreement(other, trajectories, top_k=model.config.vocab_size) == 1.0
