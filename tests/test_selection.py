"""Choosing the skip set: ratios, counts, protection, granularity, the batched replay, auto, profile, plot."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_models import ARCHITECTURES, NUM_LAYERS, prompt, tiny_model

from sdfp_hf import SDFPAssistant
from sdfp_hf import selection as sel
from sdfp_hf.config import SDFPConfig
from sdfp_hf.fit import DEFAULT_SCORING_METHOD, LayerScores
from sdfp_hf.generation import DraftingOptions
from sdfp_hf.replay import replay_acceptance
from sdfp_hf.selection import (
    NoSpeedupWarning,
    branch_costs,
    profile,
    replay_rounds,
    select_skips,
    skip_fraction,
    skip_lists,
    target_trajectories,
)

DRAFT_ONLY = DraftingOptions(prompt_lookup=0, adaptive=False)


def scores_of(layer, attention=None, mlp=None) -> LayerScores:
    attention = attention if attention is not None else list(layer)
    mlp = mlp if mlp is not None else list(layer)
    return LayerScores("test", list(map(float, attention)), list(map(float, mlp)), list(map(float, layer)))


# ---------------------------------------------------------------------------------------------- select_skips


def test_layer_selection_by_ratio_and_count_lowest_first():
    scores = scores_of([5, 1, 4, 0.5, 3, 2, 9, 8, 7, 6])
    assert select_skips(scores, num_skip=3).layers == (1, 3, 5)
    assert select_skips(scores, skip_ratio=0.3).layers == (1, 3, 5)
    assert select_skips(scores, skip_ratio=0.0).layers == ()
    skip = select_skips(scores, skip_ratio=0.5)
    assert skip.is_layer_granular and len(skip.layers) == 5


def test_protection_of_first_and_last_layers():
    scores = scores_of([0, 1, 5, 6, 7, 8, 9, 10, 2, 0.1])
    assert select_skips(scores, num_skip=2).layers == (0, 9)
    assert select_skips(scores, num_skip=2, protect_first=1).layers == (1, 9)
    assert select_skips(scores, num_skip=2, protect_first=2, protect_last=1).layers == (2, 8)
    with pytest.raises(ValueError, match="at most 3"):
        select_skips(scores, num_skip=4, protect_first=4, protect_last=3)
    with pytest.raises(ValueError, match="protect all 10 layers"):
        select_skips(scores, num_skip=1, protect_first=5, protect_last=5)


def test_sublayer_selection_weighs_scores_against_bytes_saved():
    # attention is cheap (1 unit), the MLP dear (3 units); all MLP scores are 2x the attention scores
    layer = [1.0] * 8
    attention = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    mlp = [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.1, 2.0]
    scores = scores_of(layer, attention, mlp)
    costs = ([1.0] * 8, [3.0] * 8)
    skip = select_skips(scores, skip_ratio=0.25, granularity="sublayer", costs=costs)
    # 8 units of 32: per unit saved, MLP 6 (0.1/3) first, then MLP 0 (2/3 < 1/1); a third MLP would overrun the
    # budget, so two cheap attention blocks fill it
    assert skip.mlp == (0, 6) and skip.attention == (0, 1)
    assert skip_fraction(skip, costs) == 0.25
    unweighted = select_skips(scores, skip_ratio=0.25, granularity="sublayer", costs=costs, cost_weighted=False)
    assert 6 in unweighted.mlp and set(unweighted.attention) and skip != unweighted
    # by count: branches, lowest first
    by_count = select_skips(scores, num_skip=3, granularity="sublayer", cost_weighted=False)
    assert by_count.mlp == (6,) and len(by_count.attention) == 2
    with pytest.raises(ValueError, match="costs=branch_costs"):
        select_skips(scores, skip_ratio=0.2, granularity="sublayer")


def test_sublayer_selection_keeps_one_attention_block():
    scores = scores_of([1.0] * 4, attention=[0.0] * 4, mlp=[5.0] * 4)
    skip = select_skips(scores, num_skip=4, granularity="sublayer", cost_weighted=False)
    assert len(skip.attention) == 3 and len(skip.mlp) == 1


def test_selection_errors():
    scores = scores_of([1, 2, 3])
    with pytest.raises(ValueError, match="exactly one of skip_ratio and num_skip"):
        select_skips(scores)
    with pytest.raises(ValueError, match="exactly one of"):
        select_skips(scores, skip_ratio=0.2, num_skip=1)
    with pytest.raises(ValueError, match="skip_ratio must be a number in \\[0, 1\\)"):
        select_skips(scores, skip_ratio=1.0)
    with pytest.raises(ValueError, match="granularity must be one of"):
        select_skips(scores, num_skip=1, granularity="head")
    with pytest.raises(ValueError, match="cannot skip 3 of 3"):
        select_skips(scores, num_skip=3)


def test_branch_costs_are_parameter_bytes():
    model = tiny_model("llama")
    attention, mlp = branch_costs(model)
    layer = model.model.layers[0]
    expected_attention = sum(p.numel() * 4 for p in layer.self_attn.parameters()) + layer.input_layernorm.weight.numel() * 4
    assert attention[0] == expected_attention
    assert mlp[0] > attention[0] and len(attention) == len(mlp) == NUM_LAYERS


def test_skip_lists_split_whole_layers_from_branches():
    scores = scores_of([1.0] * 6, attention=[0, 9, 0, 9, 9, 9], mlp=[0, 0, 9, 9, 9, 9])
    skip = select_skips(scores, num_skip=4, granularity="sublayer", cost_weighted=False)
    assert skip_lists(skip) == {"skip_layers": [0], "skip_attention": [2], "skip_mlp": [1]}


# ---------------------------------------------------------------------------------------------- replay


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


def test_replay_of_an_exact_draft_accepts_everything():
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


def test_predicted_speedup_follows_the_formula():
    samples = sel.RoundSamples(
        matches=torch.tensor([[True, True, False, False]] * 4),
        confidence=torch.ones(4, 4),
        eos=torch.zeros(4, 4, dtype=torch.bool),
        room=torch.full((4,), 10),
    )
    target = sel.StepCosts(draft=1.0, verify={1: 1.0, 5: 1.4}, target_seconds=0.01)
    best = sel.predict_speedup(samples, 0.5, target)
    # k=2: 3 tokens / (2 * 0.5 + v(3) = 1.2) = 1.36; k=3,4 accept no more and cost more
    assert best["num_assistant_tokens"] == 2
    assert best["speedup"] == pytest.approx(3 / (1.0 + 1.2))


# ---------------------------------------------------------------------------------------------- profile


def test_profile_with_a_ratio_gives_a_valid_mask_and_draft():
    model = tiny_model("qwen2")
    result = profile(model, skip_ratio=0.34, num_sequences=3, sequence_length=24, progress=False)
    assert len(result.skip.layers) == 2 and 0 not in result.skip.layers  # first layer protected by default
    assert result.scores.method == DEFAULT_SCORING_METHOD
    config = result.to_config(model)
    assert isinstance(config, SDFPConfig)
    assert config.skip_layers == list(result.skip.layers) and config.scoring_method == DEFAULT_SCORING_METHOD
    assert config.calibration["num_sequences"] == 3 and config.calibration["dtype"] == "float32"
    assert set(result.timings) == {"calibration", "scoring", "total"}
    draft = result.draft(model)
    assert draft.skip == result.skip
    sub = profile(model, skip_ratio=0.3, granularity="sublayer", num_sequences=2, sequence_length=16, progress=False)
    fields = sub.config_fields()
    assert fields["granularity"] in ("layer", "sublayer")
    SDFPConfig.from_model_config(model.config, **fields)


def _fake_costs(cost):
    def measure(model, drafts, **kwargs):
        return [cost] * len(drafts), sel.StepCosts(draft=1.0, verify={1: 1.0, 9: 1.2}, target_seconds=1e-3)

    return measure


def test_auto_picks_the_best_predicted_speedup(monkeypatch):
    model = tiny_model("llama", seed=1)
    monkeypatch.setattr(sel, "measure_step_costs", _fake_costs(0.05))
    result = profile(model, num_sequences=3, sequence_length=24, auto_ratios=(0.17, 0.34, 0.5),
                     auto_new_tokens=16, progress=False)
    assert result.predicted["speedup"] == max(c["speedup"] for c in result.candidates)
    assert result.predicted["speedup"] > 1.0
    assert result.skip_ratio in (0.17, 0.34, 0.5)
    assert 1 <= result.num_assistant_tokens <= sel.MAX_DRAFT
    assert set(result.timings) == {"calibration", "scoring", "selection", "total"}
    config = result.to_config(model)
    assert config.num_assistant_tokens == result.num_assistant_tokens
    assert config.measurements["predicted_speedup"] == pytest.approx(result.predicted["speedup"])


def test_auto_never_returns_a_draft_predicted_slower_silently(monkeypatch):
    model = tiny_model("llama", seed=1)
    monkeypatch.setattr(sel, "measure_step_costs", _fake_costs(1.5))  # a draft step dearer than a target step
    with pytest.warns(NoSpeedupWarning, match="smallest draft tried"):
        result = profile(model, num_sequences=2, sequence_length=16, auto_ratios=(0.34, 0.17),
                         auto_new_tokens=12, progress=False)
    assert result.skip_ratio == 0.17
    with pytest.raises(ValueError, match="no candidate draft is predicted faster"):
        profile(model, num_sequences=2, sequence_length=16, auto_ratios=(0.17,), auto_new_tokens=12,
                on_no_speedup="raise", progress=False)


def test_measured_step_costs_are_plausible():
    model = tiny_model("llama")
    drafts = [SDFPAssistant.from_target(model, skip_layers=[1, 2, 3, 4])]
    (cost,), target = sel.measure_step_costs(model, drafts, context_length=16, repeats=3)
    assert 0 < cost < 3 and target.target_seconds > 0 and target.verify[1] == 1.0


# ---------------------------------------------------------------------------------------------- plot


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from sdfp_hf.plot import plot_scores

    scores = scores_of([3, 1, 2, 4], attention=[1, 0.1, 2, 3], mlp=[2, 3, 0.01, 5])
    skip = select_skips(scores, num_skip=2, granularity="sublayer", cost_weighted=False)
    path = plot_scores(scores, skip, tmp_path / "scores.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert plot_scores(scores)[:4] == b"\x89PNG"


def test_plot_without_matplotlib_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    from sdfp_hf.plot import plot_scores

    with pytest.raises(ImportError, match=r"pip install 'sdfp-hf\[plot\]'"):
        plot_scores(scores_of([1, 2]))
    warnings.simplefilter("default")


def test_one_step_agreement_screens_the_first_draft_token():
    model = tiny_model("qwen2", seed=2)
    with torch.no_grad():
        model.model.layers[3].self_attn.o_proj.weight.zero_()
        model.model.layers[3].mlp.down_proj.weight.zero_()
    trajectories = target_trajectories(model, [prompt(10, seed=s)[0] for s in range(2)], 16)
    exact = SDFPAssistant.from_target(model, skip_layers=[3])
    assert sel.one_step_agreement(exact, trajectories) == 1.0
    other = SDFPAssistant.from_target(model, skip_layers=[0, 1, 2])
    top1 = sel.one_step_agreement(other, trajectories)
    assert 0.0 <= top1 < 1.0
    top3 = sel.one_step_agreement(other, trajectories, top_k=3)
    assert top1 <= top3 <= 1.0
    assert sel.one_step_agreement(other, trajectories, top_k=model.config.vocab_size) == 1.0


def test_interaction_aware_selection_uses_the_gate_fisher_matrix():
    # layers 0 and 1 are each cheap to lose, but their effects add up (large positive cross term);
    # layer 2 alone costs a little more; the matrix is over branches (attention 2l, MLP 2l + 1)
    n = 4
    F = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    single = [1.0, 1.0, 1.5, 9.0]
    for layer, value in enumerate(single):
        F[2 * layer, 2 * layer] = value / 2  # attention and MLP halves, no cross term within a layer
        F[2 * layer + 1, 2 * layer + 1] = value / 2
    for a in (0, 1):
        for b in (2, 3):
            F[a, b] = F[b, a] = 2.0  # layer 0's branches with layer 1's branches
    scores = LayerScores("fisher_gate", [v / 2 for v in single], [v / 2 for v in single], single,
                         details={"gate_fisher_matrix": F.tolist()})
    assert select_skips(scores, num_skip=2).layers == (0, 1)
    assert select_skips(scores, num_skip=2, interactions=True).layers == (0, 2)
    with pytest.raises(ValueError, match="needs scores that carry the Fisher matrix"):
        select_skips(scores_of([1, 2, 3]), num_skip=1, interactions=True)
