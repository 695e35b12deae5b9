"""Where the target's weights live: one device works; accelerate dispatch / offload and quantized weights are
refused by `from_target` with one clear line (tiny models, accelerate's real CPU offload)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import BUILDERS, prompt, tiny_model
from transformers import AutoModelForCausalLM

from sdfp_hf import SDFPAssistant
from sdfp_hf.architectures import UnsupportedModelError

pytestmark = pytest.mark.lossless


def greedy(model, ids, **kwargs):
    return model.generate(ids, max_new_tokens=24, min_new_tokens=24, do_sample=False, **kwargs)


def test_a_model_loaded_with_a_single_device_map_drafts_losslessly(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, device_map={"": "cpu"}).eval()
    model.generation_config.pad_token_id = 2
    ids = prompt(12)
    draft = SDFPAssistant.from_target(model, skip_layers=[2], assistant_confidence_threshold=0.0)
    assert torch.equal(greedy(model, ids, assistant_model=draft), greedy(model, ids))


def test_a_model_with_accelerate_cpu_offload_is_refused_clearly():
    from accelerate import cpu_offload

    model = cpu_offload(tiny_model("llama"), execution_device=torch.device("cpu"))
    with pytest.raises(UnsupportedModelError, match=r"accelerate hooks.*Load it on one device"):
        SDFPAssistant.from_target(model, skip_layers=[2])
    ids = prompt(12)
    greedy(model, ids)  # the offloaded model itself still generates


def test_a_model_dispatched_over_a_device_map_with_offload_is_refused_clearly(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "model")
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    device_map.update({f"model.layers.{i}": ("cpu" if i < 3 else "disk") for i in range(6)})
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "model", device_map=device_map, offload_folder=str(tmp_path / "offload")
    )
    with pytest.raises(UnsupportedModelError, match=r"accelerate hooks \(device_map over cpu, disk\)"):
        SDFPAssistant.from_target(model, skip_layers=[2])


def test_weights_left_on_the_meta_device_are_refused():
    with torch.device("meta"):
        model = BUILDERS["llama"]()
    with pytest.raises(UnsupportedModelError, match=r"meta device"):
        SDFPAssistant.from_target(model, skip_layers=[2])
