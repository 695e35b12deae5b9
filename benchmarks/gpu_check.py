"""The GPU check: does sdfp-hf stay lossless on CUDA, and what would its draft cost on an 8B model there?

For whoever has a GPU (nothing is downloaded: the models are random, built from configs). In under ten
minutes on one recent GPU:

1. the `cuda` tests (`tests/test_cuda.py`): greedy output token for token equal to plain decoding on tiny
   models of several architectures (chain rounds and the tree loop) and sampling that keeps the target's
   distribution, everything on the GPU;
2. a randomly initialised model shaped like Llama-3-8B (32 layers, hidden 4096, GQA 32/8, vocabulary
   128256) in bf16, a context of 512 tokens in its cache:
   - the draft step's cost relative to a target step, with 25% and 50% of the layers skipped (evenly
     spaced; the draft reads the target's cache as in generation, `sdfp_hf.costs.measure_step_costs`);
   - the verification width curve T(n) / T(1): one target forward over n new tokens, n = 1..128.

Random weights change no timing: the shapes do the work. Every timer waits for the device
(`sdfp_hf.costs.clock`). Run it from a checkout, with a CUDA build of torch:

    python -m benchmarks.gpu_check --out benchmarks/results/gpu-check/NAME

`--device cpu --tiny` runs the same steps on a tiny model on the CPU in seconds (the test suite does, so
this program cannot rot); the `cuda` tests are skipped there.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks._report import write_report
from benchmarks.harness import machine_info, versions
from sdfp_hf import SDFPAssistant
from sdfp_hf._compat import cache_kwargs, cache_of
from sdfp_hf.costs import clock, measure_step_costs
from sdfp_hf.fit import score_layers
from sdfp_hf.selection import select_skips

REPO = Path(__file__).resolve().parents[1]

LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    attn_implementation="sdpa",
)
TINY = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    attn_implementation="sdpa",
)


def evenly_spaced(model: Any, fraction: float) -> list[int]:
    """`fraction` of the layers, evenly spaced, never the first or the last: the package's `evenly_spaced`
    scores and its selection, as the benchmarks' `evenly` selector."""
    scores = score_layers(model, None, "evenly_spaced", progress=False)
    skip = select_skips(scores, skip_ratio=fraction, granularity="layer", protect_first=1, protect_last=1)
    return list(skip.layers)


def build_model(shape: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Any:
    """A randomly initialised Llama of `shape`, made directly on `device` in `dtype`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


@torch.no_grad()
def width_curve(model: Any, context: int, widths: list[int], repeats: int) -> dict[int, float]:
    """Seconds of one target forward over `n` new tokens after `context` cached ones (fastest of `repeats`)."""
    device = model.get_input_embeddings().weight.device
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, context + max(widths)), generator=g).to(device)
    cache = cache_of(model(input_ids=ids[:, :context], use_cache=True))
    seconds = {}
    for n in widths:
        best = float("inf")
        for _ in range(repeats + 1):  # the first is a warm-up
            scratch = copy.deepcopy(cache)
            positions = torch.arange(context, context + n, device=device)[None]
            t = clock(device)
            model(input_ids=ids[:, context : context + n], position_ids=positions, use_cache=True, logits_to_keep=n,
                  **cache_kwargs(model, scratch))
            best = min(best, clock(device) - t)
        seconds[n] = best
    return seconds


def run_cuda_tests() -> dict[str, Any]:
    """`pytest -m cuda tests/test_cuda.py` in a subprocess: its exit code and closing line."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return {"command": shlex.join(command[1:]), "returncode": done.returncode, "summary": lines[-1] if lines else ""}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu, ...")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of the 8B shape (smoke test)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--context", type=int, default=512, help="tokens in the cache before each timed step")
    parser.add_argument("--max-width", type=int, default=128, help="verification widths 1..N")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (the fastest counts)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run tests/test_cuda.py first")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here (torch.cuda.is_available() is False): use --device cpu --tiny")
    dtype = getattr(torch, args.dtype)
    result: dict[str, Any] = {
        "command": "python -m benchmarks.gpu_check " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": machine_info(),
        "versions": versions(),
        "dtype": args.dtype,
        "shape": "tiny" if args.tiny else "llama-3-8b",
        "context": args.context,
    }
    lines = [f"# GPU check: {result['device_name']}, {result['shape']} in {args.dtype}", "", f"`{result['command']}`", ""]

    if not args.skip_tests and device.type == "cuda":
        result["cuda_tests"] = run_cuda_tests()
        lines += ["## cuda tests", "", f"`{result['cuda_tests']['command']}`: {result['cuda_tests']['summary']}", ""]

    model = build_model(TINY if args.tiny else LLAMA3_8B, device, dtype)
    n = model.config.num_hidden_layers
    drafts = {f: SDFPAssistant.from_target(model, skip_layers=evenly_spaced(model, f)) for f in (0.25, 0.5)}
    costs, target = measure_step_costs(
        model, list(drafts.values()), context_length=args.context, repeats=args.repeats, warmup=2, verify_tokens=2
    )
    result["target_step_seconds"] = target.target_seconds
    result["draft_step_cost"] = {
        f"{f:.0%}": {"skipped_layers": len(d.skip.layers), "relative_to_target_step": c}
        for (f, d), c in zip(drafts.items(), costs)
    }
    lines += [
        "## Draft step relative to a target step",
        "",
        f"Target step: {target.target_seconds * 1e3:.2f} ms ({n} layers, {args.context} tokens of context).",
        "",
        "| layers skipped | draft step / target step |",
        "| --- | ---: |",
        *(f"| {f:.0%} ({len(d.skip.layers)} of {n}) | {c:.3f} |" for (f, d), c in zip(drafts.items(), costs)),
        "",
    ]
    del drafts

    widths = list(range(1, args.max_width + 1))
    seconds = width_curve(model, args.context, widths, args.repeats)
    curve = {w: seconds[w] / seconds[1] for w in widths}
    result["verification_seconds"] = seconds
    result["verification_curve"] = curve
    shown = [w for w in widths if w in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128) or w == widths[-1]]
    lines += [
        "## Verification width curve T(n) / T(1)",
        "",
        "| n | " + " | ".join(map(str, shown)) + " |",
        "| --- |" + " ---: |" * len(shown),
        "| T(n)/T(1) | " + " | ".join(f"{curve[w]:.2f}" for w in shown) + " |",
        "",
        f"T(1) = {seconds[1] * 1e3:.2f} ms; every width 1..{widths[-1]} is in the JSON.",
    ]
    write_report(args.out, result, lines)
    if result.get("cuda_tests", {}).get("returncode", 0) not in (0,):
        print("the cuda tests FAILED: see above", file=sys.stderr)
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if outcome.get("cuda_tests", {}).get("returncode", 0) else 0)
