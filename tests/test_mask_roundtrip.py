"""A draft's mask: saved, pushed to the loopback Hub, loaded elsewhere, and applied only where it fits."""

from __future__ import annotations

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from test_hub import WRITE, run_python, unique
from tiny_models import prompt, tiny_model, tiny_tokenizer

from sdfp_hf import DraftingOptions, SDFPAssistant, load_model
from sdfp_hf.config import SDFPConfigError

# Statistics are compared between runs: draft alone, so no timing-adaptive choice enters.
DRAFT_ONLY = DraftingOptions(prompt_lookup=0, adaptive=False)

NEW_TOKENS = 24


def generate(model, draft=None):
    return model.generate(prompt(10), max_new_tokens=NEW_TOKENS, do_sample=False, assistant_model=draft)


def test_mask_describes_the_draft():
    model = tiny_model("qwen2")
    draft = SDFPAssistant.from_target(model, skip_layers=[1], skip_attention=[3], skip_mlp=[4],
                                      num_assistant_tokens=3)
    mask = draft.sdfp_config
    assert (mask.granularity, mask.skip_layers, mask.skip_attention, mask.skip_mlp) == ("sublayer", [1], [3], [4])
    assert (mask.model_type, mask.num_hidden_layers, mask.vocab_size) == ("qwen2", 6, model.config.vocab_size)
    assert mask.num_assistant_tokens == 3
    draft.set_draft_settings(assistant_confidence_threshold=0.2)
    assert draft.sdfp_config.assistant_confidence_threshold == 0.2 == draft.generation_config.assistant_confidence_threshold
    with pytest.raises(SDFPConfigError, match="num_assistant_tokens"):
        draft.set_draft_settings(num_assistant_tokens=0)
    assert draft.generation_config.num_assistant_tokens == 3  # a refused change leaves the draft as it was
    whole = SDFPAssistant.from_target(model, skip_layers=[0, 2]).sdfp_config
    assert (whole.granularity, whole.skip_layers, whole.skip_attention) == ("layer", [0, 2], [])


def test_folder_round_trip(tmp_path):
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[2], skip_mlp=[4], num_assistant_tokens=2,
                                      num_assistant_tokens_schedule="constant", drafting=DRAFT_ONLY)
    expected = generate(model, draft)
    draft.sdfp_config.save_pretrained(tmp_path)
    loaded = SDFPAssistant.from_pretrained(model, tmp_path, drafting=DRAFT_ONLY)
    assert loaded.skip == draft.skip and loaded is not draft
    assert loaded.generation_config.num_assistant_tokens == 2
    assert torch.equal(generate(model, loaded), expected)
    assert loaded.stats.as_dict() == draft.stats.as_dict()
    overridden = SDFPAssistant.from_pretrained(model, tmp_path, num_assistant_tokens=5)
    assert overridden.generation_config.num_assistant_tokens == 5
    assert SDFPAssistant.from_target(model, mask=str(tmp_path)).skip == draft.skip
    assert SDFPAssistant.from_target(model, mask=draft.sdfp_config).skip == draft.skip


def test_push_then_load_in_a_fresh_process(hub_server, tmp_path):
    """Profile a tiny model, push its mask, load it in a new process: same skips, generation and card."""
    model = tiny_model("gemma3")
    draft = SDFPAssistant.from_target(model, num_sequences=2, sequence_length=16, skip_ratio=0.34, progress=False,
                                      assistant_confidence_threshold=0.0, drafting=DRAFT_ONLY)
    expected = generate(model, draft)[0].tolist()
    repo = unique("tiny-gemma3-mask")
    url = draft.sdfp_config.push_to_hub(repo, token=WRITE)
    assert repo in url

    out = run_python(f"""
        import json, sys
        sys.path.insert(0, "tests")
        from tiny_models import prompt, tiny_model
        from sdfp_hf import SDFPAssistant
        from sdfp_hf import DraftingOptions
        model = tiny_model("gemma3")
        draft = SDFPAssistant.from_pretrained(model, "{repo}", drafting=DraftingOptions(prompt_lookup=0, adaptive=False))
        out = model.generate(prompt(10), max_new_tokens={NEW_TOKENS}, do_sample=False, assistant_model=draft)
        print(json.dumps({{"skip": [list(draft.skip.attention), list(draft.skip.mlp)], "tokens": out[0].tolist(),
                          "rounds": draft.stats.rounds}}))
    """)
    assert out["skip"] == [list(draft.skip.attention), list(draft.skip.mlp)] and len(draft.skip.layers) == 2
    assert out["tokens"] == expected
    assert out["rounds"] == draft.stats.rounds

    card = ModelCard.load(repo)
    assert card.data.library_name == "sdfp-hf" and "speculative-decoding" in card.data.tags
    draft.sdfp_config.save_pretrained(tmp_path)  # the same card, rendered locally
    assert ModelCard.load(tmp_path / "README.md").data.to_dict() == card.data.to_dict()
    assert yaml.safe_load(card.content.split("---")[1])["library_name"] == "sdfp-hf"


def test_mask_in_a_subfolder_of_the_model_repo(hub_server):
    model = tiny_model("phi3")
    draft = SDFPAssistant.from_target(model, skip_attention=[0, 5])
    repo = unique("tiny-phi3")
    draft.sdfp_config.push_to_hub(repo, token=WRITE, subfolder="sdfp")
    loaded = SDFPAssistant.from_pretrained(model, repo, subfolder="sdfp")
    assert loaded.skip == draft.skip
    assert torch.equal(generate(model, loaded), generate(model))


def test_a_mask_for_another_model_is_refused(tmp_path):
    small = tiny_model("llama")
    SDFPAssistant.from_target(small, skip_layers=[1]).sdfp_config.save_pretrained(tmp_path / "mask")
    other = tiny_model("qwen2")
    with pytest.raises(SDFPConfigError, match=r"model type `llama`.*model type `qwen2`.*sdfp profile"):
        SDFPAssistant.from_pretrained(other, tmp_path / "mask")
    with pytest.raises(ValueError, match=r"either an explicit plan \(skip lists, `quantize`\) or a `mask`"):
        SDFPAssistant.from_target(small, skip_layers=[1], mask=tmp_path / "mask")


def test_same_architecture_other_checkpoint_warns(tmp_path):
    model = tiny_model("llama")
    mask = SDFPAssistant.from_target(model, skip_layers=[1]).sdfp_config
    mask.base_model_name_or_path = "someone/else"
    mask.save_pretrained(tmp_path)
    model.config.name_or_path = "me/mine"
    with pytest.warns(UserWarning, match="made for `someone/else`, not `me/mine`"):
        SDFPAssistant.from_pretrained(model, tmp_path)


def test_a_draft_is_not_saved_as_a_model(tmp_path):
    draft = SDFPAssistant.from_target(tiny_model("llama"), skip_layers=[1])
    with pytest.raises(TypeError, match="sdfp_config.save_pretrained"):
        draft.save_pretrained(tmp_path)


def test_profiled_draft_carries_its_scores_and_round_trips(tmp_path):
    model = tiny_model("qwen3")
    draft = SDFPAssistant.from_target(model, num_sequences=2, sequence_length=16, skip_ratio=0.34, progress=False)
    mask = draft.sdfp_config
    assert len(draft.skip.layers) == 2 and mask.scoring_method and mask.calibration["num_sequences"] == 2
    assert len(mask.scores["attention"]) == len(mask.scores["mlp"]) == 6
    assert torch.equal(generate(model, draft), generate(model))
    mask.save_pretrained(tmp_path)
    assert SDFPAssistant.from_pretrained(model, tmp_path).skip == draft.skip
    with pytest.raises(TypeError, match="profiling arguments"):
        SDFPAssistant.from_target(model, skip_layers=[1], seed=3)


def test_masks_and_models_by_home_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SDFP_TEST_NAME", "tiny")
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    SDFPAssistant.from_target(model, skip_layers=[1]).sdfp_config.save_pretrained("~/masks/$SDFP_TEST_NAME")
    loaded, _ = load_model("~/$SDFP_TEST_NAME")
    assert SDFPAssistant.from_pretrained(loaded, "~/masks/tiny").skip.layers == (1,)
    assert SDFPAssistant.from_target(loaded, mask="$HOME/masks/${SDFP_TEST_NAME}").skip.layers == (1,)
