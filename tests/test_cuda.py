"""The lossless tests on CUDA (marker `cuda`): skipped where no CUDA device is present.

Greedy output token for token equal to plain greedy decoding (the chain round and the tree loop, a few
tiny architectures, fp32 so that batched and single-token forwards agree) and the sampled distribution
equal to the target's, with every tensor of the draft and its rounds on the GPU.
`python -m benchmarks.gpu_check` runs these first on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch
from test_assistant import LlamaForCausalLM_tiny, _sampled_continuations_p_value
from tiny_models import prompt, tiny_model

from sdfp_hf import DraftingOptions, SDFPAssistant

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

NEW_TOKENS = 40
ARCHS = ["llama", "gemma2", "qwen3", "gpt2"]
DRAFTINGS = {
    "tree": DraftingOptions(),
    "chain": DraftingOptions(tree=False),
    "draft-only": DraftingOptions(prompt_lookup=0, adaptive=False),
}


def greedy(model, ids, **kwargs):
    return model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)


@pytest.mark.parametrize("drafting", sorted(DRAFTINGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_on_cuda_equals_plain_greedy(arch, drafting):
    model = tiny_model(arch).to("cuda")
    ids = prompt(12).to("cuda")
    reference = greedy(model, ids)
    draft = SDFPAssistant.from_target(
        model, skip_layers=[2], skip_attention=[0], assistant_confidence_threshold=0.0, drafting=DRAFTINGS[drafting]
    )
    assert draft.device.type == "cuda"
    for _ in range(2):  # the second call starts from what the first measured
        out = greedy(model, ids, assistant_model=draft)
        assert out.device.type == "cuda"
        assert torch.equal(out, reference)
    assert draft.stats.rounds > 0


def test_tree_rounds_on_cuda_with_wide_trees_equal_plain_greedy(monkeypatch):
    from sdfp_hf.drafting import loop

    monkeypatch.setattr(loop.TreePlanner, "size", lambda self, reach, steps: (min(len(reach), self.options.tree_nodes), 1.0))
    monkeypatch.setattr(loop.TreePlanner, "draft_depth", lambda self: self.max_draft)
    monkeypatch.setattr(loop, "_draft_pays", lambda *args: True)
    for arch in ("llama", "gemma2"):
        model = tiny_model(arch).to("cuda")
        ids = prompt(12).to("cuda")
        draft = SDFPAssistant.from_target(model, skip_layers=[2], quantize="int8", num_assistant_tokens=5)
        assert torch.equal(greedy(model, ids, assistant_model=draft), greedy(model, ids))
        assert draft.stats.mean_tree_size > 2


@pytest.mark.parametrize("drafting", ["tree", "chain"])
def test_sampling_on_cuda_keeps_the_target_distribution(drafting):
    vocab, steps, draws = 5, 3, 600
    torch.manual_seed(3)
    model = LlamaForCausalLM_tiny(vocab).to("cuda")
    draft = SDFPAssistant.from_target(
        model, skip_layers=[1, 2], num_assistant_tokens=3, assistant_confidence_threshold=0.0,
        drafting=DRAFTINGS[drafting],
    )
    ids = torch.tensor([[3, 1, 4]], device="cuda")
    assert _sampled_continuations_p_value(model, draft, ids, steps, draws) > 1e-3
    assert draft.stats.rounds > 0


def test_timers_wait_for_the_device(monkeypatch):
    """`costs.clock` synchronises the CUDA device it times."""
    from sdfp_hf import costs

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    costs.clock(torch.device("cuda", 0))
    assert calls
