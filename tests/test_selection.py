"""Choosing the skip set from scores: ratios, counts, protection, granularity, bytes, interactions."""

from __future__ import annotations

import pytest
import torch
from tiny_models import NUM_LAYERS, tiny_model

from sdfp_hf.fit import LayerScores
from sdfp_hf.selection import branch_costs, select_skips


def scores_of(layer, attention=None, mlp=None) -> LayerScores:
    attention = attention if attention is not None else list(layer)
    mlp = mlp if mlp is not None else list(layer)
    return LayerScores("test", list(map(float, attention)), list(map(float, mlp)), list(map(float, layer)))


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
    assert skip.saved_fraction(*costs) == 0.25
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
    assert skip.to_lists() == {"skip_layers": [0], "skip_attention": [2], "skip_mlp": [1]}


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
