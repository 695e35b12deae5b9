"""The draft on the real SmolLM2-135M-Instruct (installed by the test set-up): lossless on real prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdfp_hf import DraftingOptions, SDFPAssistant

SPEC_BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "spec_bench" / "question.jsonl"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from benchmarks.catalogue import ensure
    from sdfp_hf.models import load_model

    ensure("smollm2-135m", install=True)
    return load_model("smollm2-135m", dtype="float32")


def spec_bench_prompts(tokenizer, categories=("writing", "coding", "math_reasoning")):
    if not SPEC_BENCH.exists():
        pytest.skip(f"Spec-Bench prompts not found at {SPEC_BENCH}")
    questions = [json.loads(line) for line in SPEC_BENCH.open()]
    for category in categories:
        question = next(q for q in questions if q["category"] == category)
        yield category, tokenizer.apply_chat_template(
            [{"role": "user", "content": question["turns"][0]}], add_generation_prompt=True, return_tensors="pt",
            return_dict=True,
        )["input_ids"]


@pytest.mark.parametrize("drafting", [DraftingOptions(prompt_lookup=0, adaptive=False), DraftingOptions()],
                         ids=["draft-only", "default"])
def test_a_third_of_the_layers_skipped_is_lossless(smollm2, drafting):
    model, tokenizer = smollm2
    n = model.config.num_hidden_layers
    skip = list(range(1, n - 1, 3))  # every third layer, first and last kept
    assert len(skip) == n // 3
    draft = SDFPAssistant.from_target(model, skip_layers=skip, drafting=drafting)
    for category, ids in spec_bench_prompts(tokenizer):
        plain = model.generate(ids, max_new_tokens=48, do_sample=False)
        assisted = model.generate(ids, max_new_tokens=48, do_sample=False, assistant_model=draft)
        assert torch.equal(assisted, plain), category
        print(f"{category}: {draft.stats}")
        assert draft.stats.rounds > 0 and 0.0 <= draft.stats.acceptance_rate <= 1.0
