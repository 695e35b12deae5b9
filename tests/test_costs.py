"""Step costs and the one speedup model."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model

from sdfp_hf import SDFPAssistant
from sdfp_hf.costs import StepCosts, measure_step_costs, predict_speedup, throughput
from sdfp_hf.replay import RoundSamples


def test_predicted_speedup_follows_the_formula():
    samples = RoundSamples(
        matches=torch.tensor([[True, True, False, False]] * 4),
        confidence=torch.ones(4, 4),
        eos=torch.zeros(4, 4, dtype=torch.bool),
        room=torch.full((4,), 10),
    )
    target = StepCosts(draft=1.0, verify={1: 1.0, 5: 1.4}, target_seconds=0.01)
    best = predict_speedup(samples, 0.5, target)
    # k=2: 3 tokens / (2 * 0.5 + v(3) = 1.2) = 1.36; k=3,4 accept no more and cost more
    assert best["num_assistant_tokens"] == 2
    assert best["speedup"] == pytest.approx(3 / (1.0 + 1.2))


def test_measured_step_costs_are_plausible():
    model = tiny_model("llama")
    drafts = [SDFPAssistant.from_target(model, skip_layers=[1, 2, 3, 4])]
    (cost,), target = measure_step_costs(model, drafts, context_length=16, repeats=3)
    assert 0 < cost < 3 and target.target_seconds > 0 and target.verify[1] == 1.0


def test_throughput_is_tokens_over_cost():
    assert throughput(3.0, 2, 0.5, 1.2) == pytest.approx(3 / 2.2)
    assert throughput(1.0, 0, 0.7, 1.0) == 1.0  # plain decoding
    assert throughput(5.0, 0, 0.0, 0.0) == 0.0
