"""The demo `make demo` runs: sdfp-hf against plain `generate` on a few prompts of different kinds, measured honestly.

    python examples/demo.py                         # SmolLM2-135M-Instruct (installed by `make demo`)
    python examples/demo.py --model qwen2.5-coder-0.5b --max-new-tokens 128

It loads the model in the dtype where speculative decoding pays on this machine (bf16 on CUDA and on CPUs
that compute bf16 natively, avx512_bf16 or AMX; else fp32, and says why the gain is small there), builds the
draft with `SDFPAssistant.from_target(model)` (a second run finds it in the profile cache and says so), then
runs plain decoding and sdfp-hf on each prompt, interleaved, both warmed up first, with the benchmark
harness's own measurement (`benchmarks.harness.run_benchmark`: the same timer, round counting and token
identity check as `python -m benchmarks.run`). It prints, per prompt and overall: tokens per second,
the speedup, the tokens accepted per drafting round, where the accepted tokens came from, and whether the
output equals plain greedy decoding token for token.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's `benchmarks` package

from benchmarks.harness import BenchmarkConfig, run_benchmark  # noqa: E402
from benchmarks.methods import MethodSpec  # noqa: E402
from benchmarks.prompts import Prompt  # noqa: E402

PASSAGE = (
    "The lighthouse on Skerry Point was automated in 1987, and its last keeper, Ada Morrow, stayed on the "
    "island for another two years to train the engineers who would visit it twice a year. She kept a log of "
    "every ship she saw, 11,402 of them in twenty-six years, and of every storm that cut the island off from "
    "the mainland, the longest for nineteen days in the winter of 1979. When she left, she gave the log to the "
    "county museum, where it is still on display, open at the page for the night of the Aurora wreck, when "
    "she rowed out twice to bring back the ship's crew of seven."
)

PROMPTS = [
    Prompt(1, "code", "code", "Write a Python function `merge_intervals(intervals)` that merges overlapping "
           "intervals given as (start, end) tuples, with a docstring and two doctest examples."),
    Prompt(2, "summary", "summary", f"{PASSAGE}\n\nSummarise the passage above in three sentences."),
    Prompt(3, "chat", "chat", "What should I pack for a three-day hiking trip in autumn? Answer with a short list."),
    Prompt(4, "edit", "edit", "Rename the variable `x` to `total` in this function and return it unchanged "
           "otherwise:\n\ndef add_all(values):\n    x = 0\n    for v in values:\n        x = x + v\n    return x\n"),
]

METHOD = MethodSpec.parse("sdfp", "gate_flips:auto")  # what `SDFPAssistant.from_target(model)` does


def demo_dtype() -> tuple[str, str]:
    """The dtype to run in here, and one sentence saying why."""
    if torch.cuda.is_available():
        return "bfloat16", "bf16 on CUDA"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if native:
        return "bfloat16", f"bf16: this CPU computes it natively ({', '.join(native)})"
    return "float32", (
        "fp32: this CPU has no native bf16 (no avx512_bf16 or AMX), and in fp32 verifying several tokens costs "
        "nearly as much as decoding them one by one, so the gain is small here"
    )


def table(summary: dict, runs: list[dict], sdfp: str) -> str:
    rows = [
        "| prompt | plain tokens/s | sdfp-hf tokens/s | speedup | accepted per drafting round | accepted tokens from | "
        "same as plain |",
        "| --- | ---: | ---: | ---: | ---: | --- | :---: |",
    ]
    for category in [p.category for p in PROMPTS] + ["all"]:
        plain, ours = summary["plain"].get(category), summary[sdfp].get(category)
        if plain is None or ours is None:
            continue
        mine = [r for r in runs if r["method"] == sdfp and category in ("all", r["category"])]
        sources: Counter = Counter()
        for run in mine:
            for name, (_, _, accepted) in (run.get("nodes_by_source") or {}).items():
                sources[name] += accepted
        own = ours["new_tokens"] - sum(sources.values())
        origin = ", ".join(f"{name} {n}" for name, n in sources.most_common() if n) or "none"
        per_round = ours["accepted"] / ours["drafting_rounds"] if ours.get("drafting_rounds") else 0.0
        rows.append(
            f"| {'**overall**' if category == 'all' else category} | {plain['tokens_per_s']:.1f} | "
            f"{ours['tokens_per_s']:.1f} | {ours['speedup']:.2f}x | {per_round:.2f} | {origin} (and {own} from "
            f"the target's own steps) | {ours['identical']}/{ours['prompts']} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("DEMO_MODEL", "smollm2-135m"))
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where it pays, see above), bfloat16 or float32")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    args = parser.parse_args()

    dtype, why = demo_dtype() if args.dtype == "auto" else (args.dtype, f"{args.dtype}, as asked")
    print(f"model {args.model}, {why}", flush=True)
    config = BenchmarkConfig(
        model=args.model, dtype=dtype, methods=[MethodSpec("plain"), METHOD], max_new_tokens=args.max_new_tokens,
        threads=args.threads, categories=tuple(p.category for p in PROMPTS), command=" ".join(sys.argv),
    )
    result = run_benchmark(config, prompts=PROMPTS, log=lambda line: None)
    built = next(m for m in result["methods"] if m["name"] == METHOD.name)
    if built["error"]:
        print(f"sdfp-hf could not run: {built['error']}", file=sys.stderr)
        return 1
    summary = result["summary"]
    print(f"draft built in {built['build_time_s']:.1f} s; plain and sdfp-hf interleaved, both warmed up, "
          f"{args.max_new_tokens} new tokens per prompt, {result['threads']} threads\n")
    print(table(summary, result["runs"], METHOD.name))
    overall = summary[METHOD.name]["all"]
    print(f"\nspeedup over plain generation: {overall['speedup']:.2f}x ({overall['plain_time_s']:.2f} s -> "
          f"{overall['time_s']:.2f} s); output identical to plain greedy decoding on "
          f"{overall['identical']} of {overall['prompts']} prompts"
          + ("" if dtype == "float32" or overall["identical"] == overall["prompts"] else
             " (in bf16, batched verification and single-token steps round differently)"))
    return 0


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)
