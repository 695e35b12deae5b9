"""The local cache of profiles behind `from_target(model)`: hit, miss, dtype, changed models, corrupt entries."""

from __future__ import annotations

import copy
import json
import logging
import warnings

import pytest
import torch
from tiny_models import tiny_model

from sdfp_hf import SDFPAssistant
from sdfp_hf.profile_cache import PROFILE_CACHE_ENV, cache_dir, load_profile, profile_key, store_profile

# a quick profile (a fixed ratio: no step costs, no replay); such options also keep the Hub out of it
FAST = dict(num_sequences=2, sequence_length=16, skip_ratio=0.34, progress=False)
NAME = "someone/tiny-llama"


@pytest.fixture
def profiles(count_profiles):
    """The profiles run so far (one entry per call)."""
    return count_profiles()


def named(model, name=NAME):
    model.config.name_or_path = name
    return model


def entries():
    return sorted(cache_dir().glob("*.json"))


def test_a_second_call_reads_the_cache(profiles, caplog, _profile_cache):
    model = named(tiny_model("llama"))
    with caplog.at_level(logging.INFO, logger="sdfp_hf.auto_mask"):
        first = SDFPAssistant.from_target(model, **FAST)
    assert first.origin == "profiled" and len(profiles) == 1
    assert cache_dir() == _profile_cache and [p.name.startswith("tiny-llama-") for p in entries()] == [True]
    assert "draft profiled in" in caplog.text and "kept in" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sdfp_hf.auto_mask"):
        second = SDFPAssistant.from_target(model, **FAST)
    assert second.origin == "cache" and len(profiles) == 1
    assert second.skip == first.skip and second.sdfp_config.scores == first.sdfp_config.scores
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("draft from the profile cache (profiled in")


def test_the_line_goes_to_stderr_with_progress(profiles, capsys):
    model = named(tiny_model("llama"))
    SDFPAssistant.from_target(model, **{**FAST, "progress": True})
    SDFPAssistant.from_target(model, **{**FAST, "progress": True})
    assert "sdfp-hf: draft from the profile cache" in capsys.readouterr().err


def test_other_options_dtype_or_refresh_profile_again(profiles):
    model = named(tiny_model("llama"))
    SDFPAssistant.from_target(model, **FAST)
    assert SDFPAssistant.from_target(model, **FAST, seed=1).origin == "profiled"  # other options: a miss
    half = copy.deepcopy(model).to(torch.bfloat16)
    assert profile_key(half, FAST) != profile_key(model, FAST)
    assert SDFPAssistant.from_target(half, **FAST).origin == "profiled"  # another dtype: a miss
    assert SDFPAssistant.from_target(half, **FAST).origin == "cache"
    assert SDFPAssistant.from_target(model, **FAST, refresh=True).origin == "profiled"  # asked for
    assert len(profiles) == 4 and len(entries()) == 3  # the refreshed profile replaced its entry
    assert SDFPAssistant.from_target(model, **FAST).origin == "cache"


def test_a_changed_model_misses(profiles):
    model = named(tiny_model("llama"))
    SDFPAssistant.from_target(model, **FAST)
    retrained = named(tiny_model("llama", seed=5))  # same name and architecture, other weights
    assert profile_key(retrained, FAST).fingerprint == profile_key(model, FAST).fingerprint
    assert SDFPAssistant.from_target(retrained, **FAST).origin == "profiled"
    deeper = named(tiny_model("llama"))
    deeper.config.num_hidden_layers = 7  # the fingerprint differs
    assert profile_key(deeper, FAST).digest != profile_key(model, FAST).digest
    renamed = named(tiny_model("llama"), "someone/other")
    assert SDFPAssistant.from_target(renamed, **FAST).origin == "profiled"
    assert len(profiles) == 3


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: "\x00\xff not json",
        lambda text: json.dumps({**json.loads(text), "entry_version": 99}),
        lambda text: json.dumps({**json.loads(text), "mask": {"format_version": 1}}),  # not a mask
        lambda text: json.dumps({**json.loads(text), "key": {"name_or_path": "someone/else"}}),
        lambda text: json.dumps({**json.loads(text), "mask": {**json.loads(text)["mask"], "num_hidden_layers": 3}}),
    ],
    ids=["truncated", "binary", "version", "not-a-mask", "other-key", "other-architecture"],
)
def test_a_corrupt_entry_is_profiled_again_with_a_warning(profiles, damage):
    model = named(tiny_model("llama"))
    SDFPAssistant.from_target(model, **FAST)
    (entry,) = entries()
    entry.write_text(damage(entry.read_text()))
    with pytest.warns(UserWarning, match=r"the cached profile `.*` cannot be used .*profiling the model again"):
        draft = SDFPAssistant.from_target(model, **FAST)
    assert draft.origin == "profiled" and len(profiles) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SDFPAssistant.from_target(model, **FAST).origin == "cache"  # replaced by a whole entry


def test_what_cannot_be_cached_is_profiled_each_time(profiles):
    model = named(tiny_model("llama"))
    texts = ["a b c d e f g h"] * 2
    assert profile_key(model, {"calibration": texts}) is None
    assert profile_key(model, {"seed": object()}) is None
    assert profile_key(model, {"progress": True}) == profile_key(model, {})


def test_an_unwritable_cache_warns_and_the_draft_still_works(profiles, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(PROFILE_CACHE_ENV, str(blocker / "profiles"))
    model = named(tiny_model("llama"))
    with pytest.warns(UserWarning, match="could not keep the profile in the cache"):
        draft = SDFPAssistant.from_target(model, **FAST)
    assert draft.origin == "profiled" and draft.skip.layers  # the draft is built all the same


def test_store_and_load_round_trip(tmp_path):
    model = named(tiny_model("qwen2"))
    key = profile_key(model, {"method": "gate_flips"})
    mask = SDFPAssistant.from_target(model, skip_layers=[1, 3]).sdfp_config
    path = store_profile(key, mask, source="profiled", seconds=1.25, folder=tmp_path)
    assert path.parent == tmp_path and key.digest in path.name
    loaded, where, entry = load_profile(key, model, folder=tmp_path)
    assert loaded == mask and where == path and entry["source"] == "profiled" and entry["seconds"] == 1.25
    assert load_profile(profile_key(model, {}), model, folder=tmp_path) is None  # other options: no entry
