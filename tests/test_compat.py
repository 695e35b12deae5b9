"""The transformers touchpoints across the supported range (`sdfp_hf._compat`), checked on the installed one.

CI runs this file on the newest and on the oldest supported transformers (`make test-oldest`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
import transformers
from tiny_models import ARCHITECTURES, prompt, tiny_model
from transformers import DynamicCache

from sdfp_hf import DraftingOptions, SDFPAssistant, _compat
from sdfp_hf.architectures import UnsupportedModelError
from sdfp_hf.cache import DraftCache

pytestmark = pytest.mark.lossless

ROOT = Path(__file__).resolve().parents[1]


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_the_supported_range_is_pyprojects_and_holds_the_installed_version():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        pytest.skip("tomllib needs Python 3.11")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if d.startswith("transformers")]
    oldest, newest = _compat.SUPPORTED_TRANSFORMERS
    assert spec == f"transformers>={oldest},<{_compat._next(newest)}"
    assert _minor(oldest) <= _minor(transformers.__version__) <= _minor(newest)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_cache_keyword_reaches_the_cache(arch):
    """`cache_kwargs` passes the cache by the keyword the forward takes: the cache really fills up."""
    model = tiny_model(arch)
    for module in (model, model.base_model):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            module(input_ids=prompt(7), use_cache=True, **_compat.cache_kwargs(module, cache))
        assert cache.get_seq_length() == 7


def test_a_model_whose_forward_takes_no_cache_is_refused_naming_the_range():
    class NoCache(torch.nn.Module):
        def forward(self, input_ids):
            return input_ids

    with pytest.raises(RuntimeError, match=r"supported: 5\.20 to 5\.24.*NoCache\.forward takes neither"):
        _compat.check_transformers(NoCache())
    with pytest.raises(RuntimeError, match=r"supported: 5\.20 to 5\.24.*NoCache\.forward takes neither"):
        _compat.cache_kwargs(NoCache(), DynamicCache())


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3"])
def test_a_skipped_attention_layer_answers_for_the_cache(arch):
    """The placeholder of a skipped attention is `DummyLayer` (5.23 on) or, before, a stand-in that answers
    as a real layer of the draft's cache does: older caches ask any layer for the length and mask sizes."""
    model = tiny_model(arch)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=prompt(10), use_cache=True, **_compat.cache_kwargs(model, cache))
    view = DraftCache(cache, [None, 1, None, 3])
    assert view.get_seq_length() == 10
    real = view.layers[1]
    for i in (0, 2):
        layer = view.layers[i]
        if _compat.DummyLayer is not None:
            assert isinstance(layer, _compat.DummyLayer)
        else:
            assert layer.is_sliding == real.is_sliding
            assert layer.get_seq_length() == real.get_seq_length() == 10
            assert view.get_mask_sizes(3, i) == real.get_mask_sizes(3)
        with pytest.raises((RuntimeError, NotImplementedError)):
            layer.update(torch.zeros(1, 2, 1, 16), torch.zeros(1, 2, 1, 16), {})


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3", "gpt2"])
def test_skipping_the_first_layers_attention_is_lossless(arch):
    """Layer 0 (and gemma's first full layer) with no cache of its own: older caches ask layer 0 for sizes."""
    model = tiny_model(arch)
    ids = prompt(12)
    kwargs = dict(max_new_tokens=30, min_new_tokens=30, do_sample=False)
    reference = model.generate(ids, **kwargs)
    for tree in (True, False):
        draft = SDFPAssistant.from_target(
            model, skip_attention=[0, 1, 2], assistant_confidence_threshold=0.0, drafting=DraftingOptions(tree=tree)
        )
        assert torch.equal(model.generate(ids, assistant_model=draft, **kwargs), reference)


def test_synchronize_waits_for_cuda_and_not_for_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    _compat.synchronize("cpu")
    assert calls == []
    _compat.synchronize("cuda:1")
    assert calls == [torch.device("cuda", 1)]


def test_quantized_targets_are_refused_with_the_method():
    model = tiny_model("llama")  # what bitsandbytes' int8 layers hold: an int8 weight (a Parameter subclass)
    model.config.quantization_config = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    proj = model.model.layers[1].mlp.down_proj
    proj.weight = torch.nn.Parameter(proj.weight.detach().to(torch.int8), requires_grad=False)
    with pytest.raises(UnsupportedModelError, match=r"quantized \(bitsandbytes\).*layers\.1\.mlp\.down_proj\.weight.*int8.*unquantized"):
        SDFPAssistant.from_target(model, skip_layers=[1])

    model = tiny_model("llama")  # GPTQ / AWQ linears keep packed `qweight` buffers and no float weight
    model.config.quantization_config = {"quant_method": "gptq", "bits": 4}
    model.model.layers[0].self_attn.q_proj.register_buffer("qweight", torch.zeros(8, 8, dtype=torch.int32))
    with pytest.raises(UnsupportedModelError, match=r"quantized \(gptq\).*holds a `qweight`"):
        SDFPAssistant.from_target(model, skip_layers=[1])

    model = tiny_model("llama")  # a tensor subclass (torchao's quantized tensors are), no config at all
    subclass = type("AffineQuantizedTensor", (torch.Tensor,), {})
    model.model.layers[0].mlp.up_proj.weight = torch.nn.Parameter(
        model.model.layers[0].mlp.up_proj.weight.detach().as_subclass(subclass), requires_grad=False
    )
    with pytest.raises(UnsupportedModelError, match=r"weights of a quantized type.*AffineQuantizedTensor"):
        SDFPAssistant.from_target(model, skip_layers=[1])


def test_a_model_flagged_quantized_with_plain_weights_drafts_losslessly():
    """A GGUF load flags the model as quantized but holds dequantized tensors: it is not refused."""
    model = tiny_model("llama")
    model.config.quantization_config = {"quant_method": "gguf"}
    ids = prompt(12)
    draft = SDFPAssistant.from_target(model, skip_layers=[1], assistant_confidence_threshold=0.0)
    kwargs = dict(max_new_tokens=20, min_new_tokens=20, do_sample=False)
    assert torch.equal(model.generate(ids, assistant_model=draft, **kwargs), model.generate(ids, **kwargs))


def test_the_hook_checks_nothing_by_source_text():
    """Capability checks only: `inspect.getsource` raises where sources are not shipped."""
    source = (ROOT / "sdfp_hf" / "_compat.py").read_text()
    assert not re.search(r"getsource|getsourcelines", source)
