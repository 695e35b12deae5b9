"""The `sdfp` command, run as a real subprocess on a tiny model saved to a folder.

Every subprocess pays for importing torch and transformers (several seconds on these machines), so the
invocations that do real work are started together, once per test session, and the tests read their
results. Finer behaviour (each subcommand's --help, the one-line form of errors, --verbose) is checked
in-process through `sdfp_hf.cli.main`, which is what the `sdfp` script calls.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from tiny_models import prompt, tiny_model, tiny_tokenizer
from transformers import AutoModelForCausalLM

from sdfp_hf import SDFPAssistant, SDFPConfig
from sdfp_hf.cli import build_parser, main
from sdfp_hf.hub import PLOT_NAME

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
SUBCOMMANDS = ("profile", "generate", "inspect", "push", "export")


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("sdfp: error:")]


def sdfp(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",  # tiny models; the machine's cores are shared
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        **(env or {}),
    }
    if env:  # the push talks to the loopback Hub, whatever the session's offline setting
        environment.pop("HF_HUB_OFFLINE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "sdfp_hf.cli", *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama (`tiny/`), a tiny GPT-2 (`other/`), a mask for the Llama (`mask/`) and calibration text."""
    root = tmp_path_factory.mktemp("cli")
    tokenizer = tiny_tokenizer()
    for name, arch in (("tiny", "llama"), ("other", "gpt2")):
        model = tiny_model(arch)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    scores = {
        "layer": [0.9, 0.2, 0.1, 0.5, 0.3, 0.8],
        "attention": [0.5, 0.1, 0.05, 0.3, 0.2, 0.4],
        "mlp": [0.4, 0.1, 0.05, 0.2, 0.1, 0.4],
    }
    mask = SDFPConfig.from_model_config(
        tiny_model("llama").config,
        base_model_name_or_path="org/tiny-llama",
        skip_layers=[2, 4],
        scores=scores,
        scoring_method="fisher_gate",
        calibration={"source": "texts", "num_sequences": 2, "seed": 0},
    )
    mask.save_pretrained(root / "mask", plot=PNG)
    (root / "calibration.jsonl").write_text(
        "\n".join(
            json.dumps({"text": t})
            for t in [
                "the quick brown fox jumps over the lazy dog. " * 4,
                "pack my box with five dozen liquor jugs. " * 4,
            ]
        )
    )
    return root


@pytest.fixture(scope="module")
def runs(workspace: Path) -> dict[str, Run]:
    """Every subprocess invocation, started together, with its results by name."""
    from conftest import HUB_SERVER

    repo = f"alice/tiny-mask-{uuid.uuid4().hex[:8]}"
    hub = {"HF_TOKEN": "hf_alice_write"}
    invocations = {
        "generate": ["generate", "tiny", "--mask", "mask", "--max-new-tokens", "12", "hello world"],
        "inspect": ["inspect", "mask"],
        "push": ["push", "mask", repo],
        "export": ["export", "tiny", "--mask", "mask", "exported"],
        "other_model": ["export", "other", "--mask", "mask", "never-written"],
    }
    if has_module("sdfp_hf.profiler"):
        invocations["profile"] = [
            "profile",
            "tiny",
            "--calibration",
            "calibration.jsonl",
            "--num-sequences",
            "2",
            "--sequence-length",
            "24",
            "--skip-ratio",
            "0.34",
            "--out",
            "profiled",
        ]
    started = time.perf_counter()
    processes = {
        name: sdfp(*args, cwd=workspace, env=hub if name == "push" else None)
        for name, args in invocations.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        results[name] = Run(invocations[name], process.returncode, stdout, stderr)
    results["push"].repo = repo
    results["push"].hub = HUB_SERVER
    print(f"{len(processes)} sdfp subprocesses in {time.perf_counter() - started:.1f} s")
    return results


def ok(run: Run) -> Run:
    assert run.returncode == 0, f"sdfp {' '.join(run.args)} failed:\n{run.stderr}"
    return run


# ---------------------------------------------------------------------------------- subcommands


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"    {name} " in text


def test_profile_writes_a_mask_folder(runs: dict[str, Run], workspace: Path) -> None:
    if "profile" not in runs:
        pytest.skip("the profiler (sdfp_hf.profiler) is not in this tree")
    ok(runs["profile"])
    mask = SDFPConfig.from_pretrained(workspace / "profiled")
    assert mask.skip_layers and len(mask.skip_layers) == 2  # 0.34 of 6 layers
    assert set(mask.scores) >= {"attention", "mlp"}
    assert mask.calibration["source"].startswith("texts")
    assert (workspace / "profiled" / "README.md").is_file()
    if has_module("sdfp_hf.plot") and has_module("matplotlib"):
        assert (workspace / "profiled" / PLOT_NAME).read_bytes().startswith(PNG[:8])
    assert "skipped layers: 2 of 6" in runs["profile"].stdout


def test_generate_streams_then_prints_acceptance_and_speedup(runs: dict[str, Run]) -> None:
    out = ok(runs["generate"]).stdout
    assert re.search(r"\n--- \d+ tokens in [\d.]+ s \([\d.]+ tokens/s\) with the draft", out)
    assert "drafted tokens accepted" in out
    assert "speedup over plain generation:" in out
    assert "output identical to plain greedy generation: yes" in out  # fp32 greedy is lossless
    text = out.split("\n--- ")[0]
    assert text.strip()  # the streamed continuation comes first


def test_inspect_prints_the_mask(runs: dict[str, Run], workspace: Path) -> None:
    out = ok(runs["inspect"]).stdout
    assert "model: org/tiny-llama" in out
    assert "skipped layers: 2 of 6: 2, 4" in out
    assert "draft: 4 of 6 layers kept" in out
    assert "scores (fisher_gate" in out
    assert "calibration: num_sequences=2, seed=0, source=texts" in out
    assert f"plot: {Path('mask') / PLOT_NAME}" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("2 ", "4 "))]
    assert [row[-1] for row in rows] == ["layer", "layer"]


def test_push_publishes_the_mask_folder(runs: dict[str, Run]) -> None:
    run = ok(runs["push"])
    hub: HubServer = run.hub
    assert run.stdout.strip().startswith(f"{hub.url}/{run.repo}/commit/")
    files = hub.repos[run.repo].resolve("main").files
    assert {"sdfp_config.json", PLOT_NAME, "README.md"} <= set(files)
    assert files[PLOT_NAME] == PNG


def test_export_writes_a_checkpoint_equal_to_the_draft(runs: dict[str, Run], workspace: Path) -> None:
    out = ok(runs["export"]).stdout
    assert "4 of 6 layers" in out and "vllm serve" in out
    exported = AutoModelForCausalLM.from_pretrained(workspace / "exported").eval()
    target = AutoModelForCausalLM.from_pretrained(workspace / "tiny").eval()
    # The mask names another checkpoint of this architecture: a warning, not an error.
    with pytest.warns(UserWarning, match="it was made for `org/tiny-llama`"):
        draft = SDFPAssistant.from_pretrained(target, workspace / "mask")
    input_ids = prompt(16)
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids).logits, draft(input_ids).logits, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_the_benchmark_harness_runs_from_the_repository(workspace: Path) -> None:
    # The harness is repository tooling (`python -m benchmarks.run`), not an `sdfp` subcommand.
    process = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.run", "--model", str(workspace / "tiny"), "--dtype", "fp32",
            "--per-category", "1", "--categories", "qa", "--max-new-tokens", "4", "--warmup-tokens", "2",
            "--sdfp", "evenly:0.34", "--out-dir", str(workspace / "bench"), "--name", "tiny", "--no-plot",
        ],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr
    assert "sdfp:evenly:0.34" in process.stdout
    assert json.loads((workspace / "bench" / "tiny.json").read_text())  # the harness's own tests check its figures


# ---------------------------------------------------------------------------------- failures


def test_a_mask_for_another_model_is_one_clear_line(runs: dict[str, Run], workspace: Path) -> None:
    run = runs["other_model"]
    assert run.returncode == 1
    assert len(run.error_lines()) == 1, run.stderr
    assert "mask was profiled on `org/tiny-llama` (model type `llama`); this model" in run.error_lines()[0]
    assert "profile it again with `sdfp profile`" in run.error_lines()[0]
    assert "Traceback" not in run.stderr
    assert not (workspace / "never-written").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["generate", "tiny", "--mask", "./no-such-mask", "hi"],
            "MASK `./no-such-mask` is neither an existing folder",
        ),
        (
            ["generate", "tiny", "--mask", "no-such-mask", "hi"],
            "MASK `no-such-mask` is neither an existing folder",
        ),
        (["inspect", "./no/such/mask"], "MASK `./no/such/mask` is neither an existing folder"),
        (
            ["push", "no-such-folder", "alice/x"],
            "`no-such-folder` is not a mask folder (no sdfp_config.json in it)",
        ),
        (["export", "./no-such-model", "--mask", "mask", "out"], "MODEL `./no-such-model` does not exist"),
    ],
)
def test_missing_masks_and_models(
    argv: list[str], message: str, workspace: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(workspace)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sdfp: error: {message}")


# ---------------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sdfp {command}")
    assert "examples:" in out and "--verbose" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: COMMAND"),
        (["generate", "tiny"], "the following arguments are required: PROMPT"),
        (["export", "tiny", "out"], "the following arguments are required: --mask"),
        (["generate", "tiny", "hi", "--max-new-tokens", "0"], "must be a positive integer, got '0'"),
        (["generate", "tiny", "hi", "--temperature", "-1"], "must be 0 or more"),
        (["profile", "tiny", "--granularity", "block"], "invalid choice: 'block'"),
        (
            ["profile", "tiny", "--skip-ratio", "1.5"],
            "argument --skip-ratio: must be a number in [0, 1) or 'auto', got '1.5'",
        ),
        (["profile", "tiny", "--calibration", "a.txt", "--dataset", "wikitext"], "not allowed with argument"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_verbose_adds_the_traceback(workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.chdir(workspace)
    assert main(["inspect", "no-such-mask"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sdfp: error: MASK `no-such-mask`")
    assert main(["inspect", "no-such-mask", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("sdfp: error: MASK `no-such-mask`")
    assert main(["-v", "inspect", "no-such-mask"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_multi_line_library_errors_become_one_line(workspace: Path, monkeypatch, capsys) -> None:
    from sdfp_hf import models

    def not_installed(*args, **kwargs):
        raise FileNotFoundError("SmolLM2 is not installed. Install it with\n    pip install x\nor run y")

    monkeypatch.setattr(models, "load_model", not_installed)
    assert main(["export", "smollm2-135m", "--mask", str(workspace / "mask"), str(workspace / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "sdfp: error: SmolLM2 is not installed. Install it with pip install x or run y"


def test_inspect_json_and_a_mask_file(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(workspace / "mask"), "--json"]) == 0
    assert SDFPConfig.from_json_string(capsys.readouterr().out) == SDFPConfig.from_pretrained(
        workspace / "mask"
    )
    assert main(["inspect", str(workspace / "mask" / "sdfp_config.json")]) == 0
    assert "skipped layers: 2 of 6: 2, 4" in capsys.readouterr().out


def test_generate_with_chat_needs_a_chat_template(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", str(workspace / "tiny"), "--mask", str(workspace / "mask"), "--chat", "hi"]
    assert main(argv) == 1
    assert "has no chat template; leave --chat out" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "x"}\n', "no string field 'text' (fields: prompt); name the field with --text-column"),
        ("not json\n", "line 1: not valid JSON"),
        ("\n\n", "holds no text"),
    ],
)
def test_bad_calibration_files(tmp_path: Path, content: str, message: str, capsys) -> None:
    (tmp_path / "c.jsonl").write_text(content)
    assert main(["profile", str(tmp_path / "missing-model"), "--calibration", str(tmp_path / "c.jsonl")]) == 1
    assert message in capsys.readouterr().err


def test_calibration_text_file_is_split_in_paragraphs(tmp_path: Path) -> None:
    from sdfp_hf.calibration import texts_from_file

    (tmp_path / "c.txt").write_text("first paragraph\nstill first\n\n\nsecond\n")
    assert texts_from_file(tmp_path / "c.txt") == ["first paragraph\nstill first", "second"]
    (tmp_path / "c.jsonl").write_text('"a string"\n{"body": "an object"}\n')
    assert texts_from_file(tmp_path / "c.jsonl", "body") == ["a string", "an object"]


def test_parser_builds_without_heavy_work() -> None:
    parser = build_parser()
    args = parser.parse_args(["profile", "m", "--skip-ratio", "0.25", "--granularity", "sublayer"])
    assert args.skip_ratio == 0.25 and args.granularity == "sublayer" and args.out is None
    assert parser.parse_args(["profile", "m"]).granularity is None  # the profiler's default
    assert parser.parse_args(["profile", "m"]).skip_ratio == "auto"


def test_generate_without_a_mask_profiles_the_model(workspace: Path, capsys) -> None:
    argv = ["generate", str(workspace / "tiny"), "--max-new-tokens", "4", "--no-baseline", "hello"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "No --mask given: profiling the model" in captured.err
    assert "drafted tokens accepted" in captured.out and "speedup" not in captured.out


# ---------------------------------------------------------------------------------- nothing is lost


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _never_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdfp_hf import models

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(models, "load_model", refuse)


@pytest.mark.parametrize("out", [["--out", "earlier"], []], ids=["--out", "default folder"])
def test_profile_keeps_an_earlier_mask_and_says_so_before_profiling(
    workspace: Path, tmp_path: Path, monkeypatch, capsys, out: list[str]
) -> None:
    import shutil

    folder = tmp_path / ("earlier" if out else "tiny-sdfp-mask")  # the default: ./<model name>-sdfp-mask
    shutil.copytree(workspace / "mask", folder)
    before = snapshot(folder)
    monkeypatch.chdir(tmp_path)
    _never_load(monkeypatch)
    assert main(["profile", str(workspace / "tiny"), *out]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"sdfp: error: `{folder.name}` already holds a mask ({folder.name}/sdfp_config.json) and is kept: pass " \
        "--overwrite to replace it" in err
    assert snapshot(folder) == before


def test_profile_overwrite_replaces_the_mask(workspace: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import shutil

    shutil.copytree(workspace / "mask", tmp_path / "earlier")
    readme = (tmp_path / "earlier" / "README.md").read_bytes()
    argv = [
        "profile", str(workspace / "tiny"), "--calibration", str(workspace / "calibration.jsonl"),
        "--num-sequences", "2", "--sequence-length", "24", "--skip-ratio", "0.34",
        "--out", str(tmp_path / "earlier"), "--overwrite",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    mask = SDFPConfig.from_pretrained(tmp_path / "earlier")
    assert mask.base_model_name_or_path != "org/tiny-llama" and len(mask.skip_layers) == 2
    assert (tmp_path / "earlier" / "README.md").read_bytes() == readme  # a README is never replaced
    if has_module("matplotlib"):
        assert (tmp_path / "earlier" / PLOT_NAME).read_bytes() != PNG  # the new plot
    assert not [p for p in (tmp_path / "earlier").iterdir() if p.name.endswith(".tmp")]


def test_export_keeps_a_folder_holding_a_checkpoint(workspace: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "pytorch_model.bin").write_bytes(b"someone's checkpoint")  # no *.safetensors in it
    before = snapshot(out)
    with monkeypatch.context() as patch:
        _never_load(patch)
        assert main(["export", str(workspace / "tiny"), "--mask", str(workspace / "mask"), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "already holds a checkpoint or config (pytorch_model.bin) and is kept: pass --overwrite" in err
    assert snapshot(out) == before

    assert main(["export", str(workspace / "tiny"), "--mask", str(workspace / "mask"), str(out), "--overwrite"]) == 0
    assert not (out / "pytorch_model.bin").exists()  # an old checkpoint's weights go with --overwrite
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4


def test_paths_with_home_and_variables(workspace: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HOME", str(workspace))
    monkeypatch.setenv("SDFP_TEST_OUT", str(tmp_path))
    assert main(["inspect", "--json", "~/mask"]) == 0
    assert SDFPConfig.from_json_string(capsys.readouterr().out) == SDFPConfig.from_pretrained(workspace / "mask")
    assert main(["export", "~/tiny", "--mask=~/mask", "$SDFP_TEST_OUT/draft"]) == 0, capsys.readouterr().err
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "draft").config.num_hidden_layers == 4
    assert main(["generate", "~/tiny", "--mask=~/mask", "--max-new-tokens", "2", "--no-baseline", "hi"]) == 0
    assert "drafted tokens accepted" in capsys.readouterr().out
