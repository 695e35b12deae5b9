"""SDFPConfig: fields, validation, JSON round trip, forward compatibility, fingerprint checks."""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, Qwen2Config

import sdfp_hf
from sdfp_hf.config import CONFIG_NAME, FORMAT_VERSION, REQUIRED_KEYS, SDFPConfig, SDFPConfigError


def llama_config(**overrides: Any) -> LlamaConfig:
    values = {
        "num_hidden_layers": 6,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "vocab_size": 128,
    }
    values.update(overrides)
    config = LlamaConfig(**values)
    config._name_or_path = "org/tiny-llama"
    config._commit_hash = "a" * 40
    return config


def make_mask(**fields_: Any) -> SDFPConfig:
    values: dict[str, Any] = {"skip_layers": [4, 1]}
    values.update(fields_)
    return SDFPConfig.from_model_config(llama_config(), **values)


def full_mask() -> SDFPConfig:
    """A mask with every field set, sub-layer granularity."""
    return make_mask(
        granularity="sublayer",
        skip_layers=[],
        skip_attention=[5, 2, 3],
        skip_mlp=[4],
        scores={"attention": [0.5, 0.1, 0.2, 0.3, 0.9, 0.05], "mlp": [1, 2, 3, 0.1, 5, 6]},
        scoring_method="fit",
        calibration={
            "source": "wikitext-2",
            "num_sequences": 8,
            "num_tokens": 4096,
            "sequence_length": 512,
            "seed": 0,
            "dtype": "float32",
            "seconds": 12.5,
        },
        num_assistant_tokens=8,
        num_assistant_tokens_schedule="heuristic",
        assistant_confidence_threshold=0.3,
        draft_vocab=[5, 3, 7],
        measurements={"acceptance": 0.71, "speedup": 1.4, "hardware": "1x H100"},
    )


# ---------------------------------------------------------------------------- fields and building


def test_every_field_has_a_default_and_help() -> None:
    for f in fields(SDFPConfig):
        assert f.metadata.get("help"), f"field {f.name} has no help text"
    assert REQUIRED_KEYS <= {f.name for f in fields(SDFPConfig)}


def test_from_model_config_fills_fingerprint_base_model_and_version() -> None:
    mask = make_mask()
    assert (mask.model_type, mask.num_hidden_layers, mask.hidden_size, mask.vocab_size) == (
        "llama",
        6,
        64,
        128,
    )
    assert mask.base_model_name_or_path == "org/tiny-llama"
    assert mask.revision == "a" * 40
    assert mask.sdfp_version == sdfp_hf.__version__
    assert mask.format_version == 1  # nothing quantized: readable by every sdfp-hf
    assert mask.skip_layers == [1, 4]  # sorted
    assert mask.attention_skipped == mask.mlp_skipped == [1, 4]


def test_layer_types_are_part_of_the_fingerprint() -> None:
    config = Qwen2Config(
        num_hidden_layers=4, hidden_size=64, intermediate_size=128, num_attention_heads=4, vocab_size=100
    )
    fingerprint = SDFPConfig.fingerprint_from_model_config(config)
    assert fingerprint["layer_types"] == list(config.layer_types)
    assert SDFPConfig.fingerprint_from_model_config(llama_config())["layer_types"] is None


def test_multimodal_config_uses_its_text_config() -> None:
    class Wrapper:
        model_type = "vision-language"

        def get_text_config(self) -> LlamaConfig:
            return llama_config(num_hidden_layers=3)

    fingerprint = SDFPConfig.fingerprint_from_model_config(Wrapper())
    assert (fingerprint["model_type"], fingerprint["num_hidden_layers"]) == ("llama", 3)


def test_sublayer_skip_sets() -> None:
    mask = full_mask()
    assert mask.skip_attention == [2, 3, 5]
    assert mask.attention_skipped == [2, 3, 5]
    assert mask.mlp_skipped == [4]
    mixed = make_mask(granularity="sublayer", skip_layers=[1], skip_attention=[4], skip_mlp=[0, 5])
    assert mixed.attention_skipped == [1, 4]
    assert mixed.mlp_skipped == [0, 1, 5]


# ---------------------------------------------------------------------------- JSON


def test_json_round_trip(tmp_path) -> None:
    mask = full_mask()
    path = tmp_path / CONFIG_NAME
    mask.to_json_file(path)
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    loaded = SDFPConfig.from_json_file(path)
    assert loaded == mask
    assert loaded.to_dict() == mask.to_dict()
    assert SDFPConfig.from_dict(mask.to_dict()) == mask
    assert loaded.draft_vocab == [5, 3, 7]  # token order is kept: it maps draft logits to ids


def test_unknown_keys_are_dropped_with_one_warning() -> None:
    data = make_mask().to_dict()
    data["from_the_future"] = {"x": 1}
    data["another_new_key"] = 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = SDFPConfig.from_dict(data)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "from_the_future" in messages[0] and "another_new_key" in messages[0]
    assert loaded == make_mask()


def test_newer_major_format_asks_to_upgrade() -> None:
    data = make_mask().to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    data["renamed_in_v2"] = True
    del data["skip_layers"]  # a newer major version may rename required keys: the version error comes first
    with pytest.raises(SDFPConfigError, match=rf"format_version {FORMAT_VERSION + 1}.*upgrade sdfp-hf"):
        SDFPConfig.from_dict(data)
    with pytest.raises(SDFPConfigError, match="upgrade"):
        make_mask(format_version=FORMAT_VERSION + 1)


def _without(key: str) -> dict[str, Any]:
    data = make_mask().to_dict()
    del data[key]
    return data


def _with(**changes: Any) -> dict[str, Any]:
    data = make_mask().to_dict()
    data.update(changes)
    return data


def _sublayer(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "granularity": "sublayer",
        "skip_layers": [],
        "skip_attention": [0],
        "skip_mlp": [1],
    }
    values.update(changes)
    return _with(**values)


BAD_DICTS = {
    **{f"missing {key}": (_without(key), f"'{key}'") for key in sorted(REQUIRED_KEYS)},
    "not an object": ([1, 2, 3], "JSON object"),
    "a random JSON object": ({"architectures": ["LlamaForCausalLM"], "hidden_size": 64}, "required key"),
    "format_version string": (_with(format_version="1"), "format_version must be an integer"),
    "format_version zero": (_with(format_version=0), "format_version must be at least 1"),
    "format_version bool": (_with(format_version=True), "format_version must be an integer"),
    "model_type empty": (_with(model_type=""), "model_type"),
    "model_type null": (_with(model_type=None), "fingerprint"),
    "num_hidden_layers float": (_with(num_hidden_layers=6.0), "num_hidden_layers must be an integer"),
    "num_hidden_layers zero": (_with(num_hidden_layers=0), "at least 1"),
    "hidden_size negative": (_with(hidden_size=-64), "hidden_size must be at least 1"),
    "vocab_size string": (_with(vocab_size="128"), "vocab_size must be an integer"),
    "layer_types wrong length": (_with(layer_types=["full_attention"]), "layer_types"),
    "layer_types not strings": (_with(layer_types=[1] * 6), "layer_types"),
    "granularity unknown": (_with(granularity="block"), "granularity must be one of"),
    "skip_layers not a list": (_with(skip_layers=3), "`skip_layers` must be a list of layer indices"),
    "skip_layers string items": (_with(skip_layers=["1"]), "`skip_layers` must hold integer layer indices"),
    "skip_layers float items": (_with(skip_layers=[1.0]), "`skip_layers` must hold integer layer indices"),
    "skip_layers bool items": (_with(skip_layers=[True]), "must hold integer layer indices, got True"),
    "skip_layers negative": (_with(skip_layers=[-1]), r"negative index -1: use layer indices 0\.\.5"),
    "skip_layers out of range": (_with(skip_layers=[6]), r"index 6, but the model has 6 decoder layers \(0\.\.5\)"),
    "skip_layers duplicate": (_with(skip_layers=[2, 2]), r"lists layers \[2\] more than once"),
    "skips all layers": (_with(skip_layers=list(range(6))), "skips all 6 decoder layers"),
    "layer granularity with attention": (_with(skip_attention=[1]), "granularity='sublayer'"),
    "layer both whole and by branch": (
        _sublayer(skip_layers=[0]),
        "layers \\[0\\] are in both `skip_layers` and `skip_a",
    ),
    "skips every branch": (
        _sublayer(skip_attention=list(range(6)), skip_mlp=list(range(6))),
        "every attention and every MLP",
    ),
    "skips every branch, mixed": (
        _sublayer(skip_layers=[0, 1], skip_attention=[2, 3, 4, 5], skip_mlp=[2, 3, 4, 5]),
        "skips all 6 decoder layers",
    ),
    "skips every attention": (
        _sublayer(skip_attention=list(range(6)), skip_mlp=[]),
        "attention of all 6 layers",
    ),
    "skip_mlp duplicate": (_sublayer(skip_mlp=[3, 1, 3]), "`skip_mlp` lists layers \\[3\\]"),
    "scores not an object": (_with(scores=[1.0] * 6), "scores must be an object"),
    "scores wrong length": (_with(scores={"layer": [1.0]}), "one score per layer"),
    "scores not numbers": (_with(scores={"layer": ["a"] * 6}), "must be a number"),
    "calibration not an object": (_with(calibration="wikitext"), "calibration must be an object"),
    "calibration negative tokens": (_with(calibration={"num_tokens": -1}), "num_tokens"),
    "calibration seconds string": (_with(calibration={"seconds": "fast"}), "seconds"),
    "num_assistant_tokens zero": (_with(num_assistant_tokens=0), "num_assistant_tokens must be at least 1"),
    "schedule unknown": (_with(num_assistant_tokens_schedule="fast"), "num_assistant_tokens_schedule"),
    "threshold above one": (_with(assistant_confidence_threshold=1.5), r"in \[0.0, 1.0\]"),
    "threshold string": (_with(assistant_confidence_threshold="0.4"), "must be a number"),
    "draft_vocab out of range": (_with(draft_vocab=[0, 128]), "draft_vocab holds \\[128\\]"),
    "draft_vocab duplicate": (_with(draft_vocab=[3, 3]), "draft_vocab lists"),
    "draft_vocab empty": (_with(draft_vocab=[]), "at least one token id"),
    "measurements acceptance": (_with(measurements={"acceptance": 2}), "acceptance"),
    "measurements hardware": (_with(measurements={"hardware": 1}), "hardware'\\] must be a string"),
    "sdfp_version number": (_with(sdfp_version=1), "sdfp_version must be a string"),
    "calibration not JSON": (
        _with(calibration={"device": object()}),
        r"calibration\['device'\] must be plain JSON",
    ),
    "measurements NaN": (_with(measurements={"latency": float("nan")}), "must be plain JSON"),
}


@pytest.mark.parametrize("data, message", BAD_DICTS.values(), ids=BAD_DICTS.keys())
def test_bad_input_raises_a_clear_error(data: Any, message: str) -> None:
    with pytest.raises(SDFPConfigError, match=message):
        SDFPConfig.from_dict(data)


def test_construction_validates_too() -> None:
    with pytest.raises(SDFPConfigError, match="skips all 6 decoder layers"):
        make_mask(skip_layers=list(range(6)))
    with pytest.raises(SDFPConfigError, match="from_model_config"):
        SDFPConfig(skip_layers=[1])
    mask = make_mask()
    mask.skip_layers = [1, 1]  # changed by hand: caught before it is written
    with pytest.raises(SDFPConfigError, match="more than once"):
        mask.to_json_string()


@pytest.mark.parametrize(
    "text",
    ["", "{", "not json", "[1, 2", '{"format_version": NaN}', "\ud800", "1" * 5000, "[" * 100_000],
    ids=["empty", "truncated", "text", "truncated list", "NaN", "lone surrogate", "huge int", "deep nesting"],
)
def test_malformed_json_raises_a_clear_error(text: str) -> None:
    with pytest.raises(SDFPConfigError):
        SDFPConfig.from_json_string(text)


def test_unreadable_bytes_raise_a_clear_error(tmp_path) -> None:
    path = tmp_path / CONFIG_NAME
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SDFPConfigError, match=f"{CONFIG_NAME}: the sdfp config is not valid JSON"):
        SDFPConfig.from_json_file(path)


# ---------------------------------------------------------------------------- property test

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json_value = st.recursive(
    _json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_field_names = st.sampled_from(sorted(f.name for f in fields(SDFPConfig)))


@st.composite
def _mutated_masks(draw: st.DrawFn) -> str:
    """A valid mask's JSON with random fields replaced, removed or added, then possibly cut or corrupted."""
    data = full_mask().to_dict() if draw(st.booleans()) else make_mask().to_dict()
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["replace", "delete", "add", "index"]))
        name = draw(_field_names)
        if action == "replace":
            data[name] = draw(_json_value)
        elif action == "delete":
            data.pop(name, None)
        elif action == "add":
            data[draw(st.text(max_size=10))] = draw(_json_value)
        else:
            data[draw(st.sampled_from(["skip_layers", "skip_attention", "skip_mlp", "draft_vocab"]))] = draw(
                st.lists(st.integers(-3, 200), max_size=8)
            )
    text = json.dumps(data, allow_nan=True)
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=4))
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=64) | _json_value.map(json.dumps) | _mutated_masks())
def test_loader_only_ever_raises_its_own_error(text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = SDFPConfig.from_json_string(text)
        except SDFPConfigError:
            return
    # Whatever loads is a valid mask that writes and reads back unchanged.
    assert SDFPConfig.from_json_string(config.to_json_string()) == config


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=64))
def test_loader_only_ever_raises_its_own_error_on_bytes(data: bytes) -> None:
    with pytest.raises(SDFPConfigError):
        SDFPConfig.from_json_string(data)


# ---------------------------------------------------------------------------- fitting a model


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_hidden_layers": 8}, r"\(6 layers\); this model `org/tiny-llama` has 8 layers"),
        ({"hidden_size": 32}, r"hidden size 64\); this model .* has hidden size 32"),
        ({"vocab_size": 256}, r"vocabulary size 128\); this model .* has vocabulary size 256"),
    ],
)
def test_a_different_architecture_is_an_error_naming_both_sides(overrides: dict, message: str) -> None:
    mask = make_mask()
    with pytest.raises(SDFPConfigError, match=message) as info:
        mask.check_compatible(llama_config(**overrides))
    assert "mask was profiled on `org/tiny-llama`" in str(info.value)
    assert "profile it again with `sdfp profile` or load the mask made for it" in str(info.value)


def test_a_different_model_type_is_an_error() -> None:
    qwen = Qwen2Config(
        num_hidden_layers=6, hidden_size=64, intermediate_size=128, num_attention_heads=4, vocab_size=128
    )
    with pytest.raises(SDFPConfigError, match="model type `llama`.*model type `qwen2`"):
        make_mask().check_compatible(qwen, name_or_path="org/tiny-qwen")


def test_same_model_is_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_mask().check_compatible(llama_config())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name_or_path": "org/other-llama"}, "made for `org/tiny-llama`, not `org/other-llama`"),
        ({"revision": "b" * 40}, f"made for revision `{'a' * 40}`, this model is at `{'b' * 40}`"),
    ],
)
def test_a_different_name_or_revision_is_one_warning(kwargs: dict, message: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_mask().check_compatible(llama_config(), **kwargs)
    assert len(caught) == 1
    assert message in str(caught[0].message)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_scores_given_as_a_dict_are_refused(bad: float) -> None:
    scores = {"layer": [0.5, 0.1, bad, 0.3, 0.2, 0.4], "attention": [0.1] * 6}
    with pytest.raises(SDFPConfigError, match=rf"scores\['layer'\] must be a finite number, got {bad}"):
        make_mask(scores=scores)
    with pytest.raises(SDFPConfigError, match="must be a finite number"):
        SDFPConfig.from_dict({**make_mask().to_dict(), "scores": scores})
    text = make_mask().to_json_string().replace('"scores": {}', '"scores": {"layer": [1, 2, NaN, 4, 5, 6]}')
    with pytest.raises(SDFPConfigError, match="NaN is not a number JSON allows"):
        SDFPConfig.from_json_string(text)
    mask = make_mask()
    mask.scores = {"mlp": [bad] * 6}  # changed by hand after building: refused before it is written
    with pytest.raises(SDFPConfigError, match="must be a finite number"):
        mask.to_json_string()


def test_a_file_over_the_size_cap_is_refused_without_parsing(tmp_path) -> None:
    from sdfp_hf.config import MAX_CONFIG_BYTES

    with pytest.raises(SDFPConfigError, match=f"is {MAX_CONFIG_BYTES + 1} bytes, more than the {MAX_CONFIG_BYTES}"):
        SDFPConfig.from_json_string(" " * (MAX_CONFIG_BYTES + 1))
    path = tmp_path / CONFIG_NAME
    with open(path, "wb") as f:  # sparse: a 64 MB file that takes no disk
        f.truncate(MAX_CONFIG_BYTES + 10)
    with pytest.raises(SDFPConfigError, match=f"{CONFIG_NAME}: the sdfp config is {MAX_CONFIG_BYTES + 1} bytes"):
        SDFPConfig.from_pretrained(tmp_path)  # reads one byte past the cap, never the whole file
    text = make_mask().to_json_string()
    path.write_text(text + " " * (MAX_CONFIG_BYTES - len(text)))  # exactly at the cap: a mask
    assert SDFPConfig.from_pretrained(tmp_path) == make_mask()
