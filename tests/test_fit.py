"""Layer scores and calibration on tiny random models: shapes, an identity layer, restoration, determinism."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, NUM_LAYERS, VOCAB, tiny_model, tiny_tokenizer

from sdfp_hf.architectures import get_architecture
from sdfp_hf.calibration import CalibrationData, build_calibration
from sdfp_hf.fit import SCORING_METHODS, LayerScores, score_layers

DATA_METHODS = [m for m in SCORING_METHODS if m not in ("random", "last", "evenly_spaced")]
# The trace form multiplies a branch's total gradient energy by its mean squared weight, so a zeroed output
# projection (whose own gradient is not zero) does not make it vanish: it cannot see an identity layer.
IDENTITY_BLIND = {"fit_trace"}


def small_calibration(model, seed: int = 0) -> CalibrationData:
    return build_calibration(model, num_sequences=3, sequence_length=20, seed=seed)


def make_identity(model, layer_idx: int) -> None:
    """Zero the output projections of one layer: both branches then add exactly nothing."""
    spec = get_architecture(model)
    layer = spec.decoder_layers(model)[layer_idx]
    with torch.no_grad():
        for kind in ("attention", "mlp"):
            proj = spec.branch_output_projection(layer, kind)
            proj.weight.zero_()
            if getattr(proj, "bias", None) is not None:
                proj.bias.zero_()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_scores_shape_finite_non_negative(arch):
    model = tiny_model(arch)
    data = small_calibration(model)
    for method in SCORING_METHODS:
        scores = score_layers(model, data, method, progress=False)
        assert isinstance(scores, LayerScores) and scores.method == method
        for kind in ("attention", "mlp", "layer"):
            values = scores.of(kind)
            assert len(values) == NUM_LAYERS, (method, kind)
            assert all(isinstance(v, float) and v == v and abs(v) != float("inf") for v in values), (method, values)
            assert min(values) >= 0.0, (method, kind, values)
        if method in DATA_METHODS:
            assert scores.num_tokens == data.num_tokens and scores.seconds > 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_identity_layer_scores_lowest(arch):
    model = tiny_model(arch)
    make_identity(model, 2)
    data = small_calibration(model)
    for method in DATA_METHODS:
        if method in IDENTITY_BLIND:
            continue
        scores = score_layers(model, data, method, progress=False)
        for kind in ("attention", "mlp", "layer"):
            values = scores.of(kind)
            assert values[2] == min(values), (method, kind, values)
            assert values[2] <= max(1e-4 * max(values), 1e-6), (method, kind, values)


def test_gate_fisher_variants_see_the_identity_layer():
    model = tiny_model("llama")
    make_identity(model, 4)
    data = small_calibration(model)
    for kwargs in ({"local": False}, {"labels": "argmax"}, {"labels": "data"}, {"num_label_samples": 2}):
        scores = score_layers(model, data, "fisher_gate", progress=False, **kwargs)
        assert scores.layer[4] == min(scores.layer) == pytest.approx(0.0, abs=1e-12), kwargs


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_weights_grads_flags_and_mode_restored(arch):
    model = tiny_model(arch)
    params = dict(model.named_parameters())
    # an unusual starting state: some parameters frozen, one with a gradient, training mode
    frozen = [name for i, name in enumerate(params) if i % 3 == 0]
    for name in frozen:
        params[name].requires_grad_(False)
    some = next(name for name in params if name not in frozen)
    params[some].grad = torch.full_like(params[some], 0.5)
    grad_before = params[some].grad
    model.train()
    before = {name: p.detach().clone() for name, p in params.items()}
    flags = {name: p.requires_grad for name, p in params.items()}
    data = small_calibration(model)
    for method in DATA_METHODS:
        score_layers(model, data, method, progress=False)
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), before[name]), (method, name)
            assert p.requires_grad == flags[name], (method, name)
            assert p.grad is (grad_before if name == some else None), (method, name)
        assert model.training


def test_bfloat16_scores_are_finite_and_close_to_float32():
    data = small_calibration(tiny_model("qwen2"))
    f32 = score_layers(tiny_model("qwen2"), data, "fisher_gate", progress=False, labels="argmax")
    b16 = score_layers(tiny_model("qwen2", dtype=torch.bfloat16), data, "fisher_gate", progress=False, labels="argmax")
    assert all(v >= 0 and v == v for v in b16.layer)
    # same ranking of the most and least sensitive layers, up to bf16 noise
    assert max(range(NUM_LAYERS), key=f32.layer.__getitem__) == max(range(NUM_LAYERS), key=b16.layer.__getitem__)
    for method in ("fit", "block_influence"):
        scores = score_layers(tiny_model("qwen2", dtype=torch.bfloat16), data, method, progress=False)
        assert all(v >= 0 and v == v for v in scores.layer), method


def test_data_free_baselines():
    model = tiny_model("llama")
    last = score_layers(model, method="last")
    assert sorted(range(NUM_LAYERS), key=last.layer.__getitem__)[:2] == [5, 4]
    even = score_layers(model, method="evenly_spaced")
    order = sorted(range(NUM_LAYERS), key=even.layer.__getitem__)
    assert sorted(order[:2]) in ([1, 4], [1, 3], [2, 4]) and sorted(order) == list(range(NUM_LAYERS))
    r0, r0b, r1 = (score_layers(model, method="random", seed=s) for s in (0, 0, 1))
    assert r0.layer == r0b.layer != r1.layer


def test_unknown_method_and_missing_calibration():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="unknown scoring method 'fitt'"):
        score_layers(model, method="fitt")
    with pytest.raises(ValueError, match="needs calibration tokens"):
        score_layers(model, None, "fit")
    with pytest.raises(ValueError, match="labels must be one of"):
        score_layers(model, small_calibration(model), "fit", labels="soft")


# ---------------------------------------------------------------------------------------------- calibration


def test_data_free_calibration_is_deterministic_and_leaves_the_global_rng_alone():
    model = tiny_model("llama")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_calibration(model, num_sequences=3, sequence_length=16, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = build_calibration(model, num_sequences=3, sequence_length=16, seed=7)
    c = build_calibration(model, num_sequences=3, sequence_length=16, seed=8)
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)
    assert a.input_ids.shape[0] == 3 and a.input_ids.shape[1] <= 1 + 16  # the start token, 16 written
    assert a.provenance == {
        "source": "data-free:bos", "num_sequences": 3, "num_tokens": a.num_tokens, "sequence_length": 16,
        "seed": 7, "temperature": 1.0,
    }
    # the start token is not scored, the model's own tokens are
    assert (a.input_ids[:, 0] == model.config.bos_token_id).all()
    assert a.num_tokens == int((a.attention_mask.sum(1) - 1).sum())


def test_data_free_calibration_with_a_chat_template_starts_at_the_assistant_header():
    model = tiny_model("llama")
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    data = build_calibration(model, tokenizer=tokenizer, num_sequences=2, sequence_length=24)
    header = tokenizer("<user><assistant>", add_special_tokens=False)["input_ids"]
    assert data.provenance["source"] == "data-free:chat_template"
    assert data.input_ids[0, : len(header)].tolist() == header
    assert data.prompt_lengths == [len(header)] * 2
    assert not data.loss_mask[:, : len(header) - 1].any()


def test_calibration_from_texts_token_ids_and_datasets():
    model = tiny_model("llama")
    tokenizer = tiny_tokenizer()
    texts = ["the quick brown fox jumps over the lazy dog. " * 3, "pack my box with five dozen liquor jugs."]
    packed = build_calibration(model, texts, tokenizer=tokenizer, num_sequences=2, sequence_length=32)
    assert packed.input_ids.shape == (2, 32) and packed.provenance["source"] == "texts"
    assert packed.num_tokens == 2 * 31

    ids = torch.randint(3, VOCAB, (5, 40))
    tokens = build_calibration(model, ids, num_sequences=3, sequence_length=16)
    assert torch.equal(tokens.input_ids, ids[:3, :16]) and tokens.provenance["source"] == "token_ids"
    ragged = build_calibration(model, [[5, 6, 7], [8, 9, 10, 11, 12]], sequence_length=16)
    assert ragged.lengths() == [3, 5] and ragged.num_tokens == 2 + 4

    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"content": texts})
    from_ds = build_calibration(model, ds, tokenizer=tokenizer, text_column="content", num_sequences=2,
                                sequence_length=32)
    assert torch.equal(from_ds.input_ids, packed.input_ids)
    with pytest.raises(ValueError, match="no column 'text'"):
        build_calibration(model, ds, tokenizer=tokenizer)


def test_calibration_on_chat_prompts_scores_only_the_model_response():
    model = tiny_model("qwen2")
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}>"
    data = build_calibration(model, ["hello", "what is two plus two"], tokenizer=tokenizer, chat_template=True,
                             num_sequences=2, sequence_length=30, seed=1)
    assert data.provenance["source"] == "texts+chat_template+model_responses"
    for row, mask, p in zip(data.input_ids, data.loss_mask, data.prompt_lengths):
        assert not mask[: p - 1].any() and mask[p - 1]
    again = build_calibration(model, ["hello", "what is two plus two"], tokenizer=tokenizer, chat_template=True,
                              num_sequences=2, sequence_length=30, seed=1)
    assert torch.equal(data.input_ids, again.input_ids)


def test_calibration_errors_say_what_to_do():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="need the tokenizer"):
        build_calibration(model, ["some text"])
    with pytest.raises(ValueError, match="single string"):
        build_calibration(model, "some text", tokenizer=tiny_tokenizer())
    with pytest.raises(ValueError, match="has no chat template"):
        build_calibration(model, ["x"], tokenizer=tiny_tokenizer(), chat_template=True)
    with pytest.raises(ValueError, match="num_sequences must be a positive integer"):
        build_calibration(model, num_sequences=0)
    with pytest.raises(ValueError, match="unsupported calibration source"):
        build_calibration(model, {"text": "x"})
