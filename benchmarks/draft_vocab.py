"""Would a reduced draft vocabulary pay? Coverage of the target's own tokens, and the draft step it saves.

A draft with `draft_vocab` scores only those token ids (a smaller output head); a token outside the set
can never be drafted, so the set's coverage of what the target writes caps acceptance. Without data, the
natural sets are the lowest ids (byte-level BPE numbers merges roughly by frequency) and the tokens the
target wrote in its data-free calibration. This program measures, on Spec-Bench prompts (first turn, chat
template, the target's greedy output):

- coverage: the share of the target's generated tokens inside each candidate set;
- cost: one draft step (a draft skipping 25% of the layers, evenly spaced, reading the target's cache as in
  generation) with the full head and with each reduced head, relative to one target step (fastest of
  interleaved repeats, after up to 256 tokens of context).

    python -m benchmarks.draft_vocab --model smollm2-135m --out benchmarks/results/draft-vocab/smollm2-135m
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from benchmarks._report import write_report
from benchmarks.methods import select_skip_layers
from benchmarks.prompts import encode_prompt, load_prompts
from sdfp_hf._compat import cache_kwargs
from sdfp_hf.assistant import SDFPAssistant
from sdfp_hf.cache import DraftCache
from sdfp_hf.calibration import build_calibration
from sdfp_hf.models import load_model

SIZES = (4096, 8192, 16384, 32768)


def _step_seconds(model, ids: torch.Tensor, cache, repeats: int) -> float:
    """Fastest of `repeats` one-token decoding steps after `ids`, each on a copy of the prefilled `cache`."""
    best = float("inf")
    position = torch.tensor([[ids.shape[1] - 1]])
    with torch.no_grad():
        for _ in range(repeats):
            scratch = copy.deepcopy(cache)
            start = time.perf_counter()
            if isinstance(model, SDFPAssistant):
                model.draft_logits(ids[:, -1:], position, DraftCache(scratch, model.cache_layer_map))
            else:
                model(input_ids=ids[:, -1:], position_ids=position, use_cache=True, **cache_kwargs(model, scratch))
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.draft_vocab " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32)

    generated, prompt_ids = [], []
    for prompt in load_prompts(per_category=args.per_category):
        ids = encode_prompt(tokenizer, prompt.text)
        out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False)
        generated += out[0, ids.shape[1] :].tolist()
        prompt_ids.append(ids)
    calibration = build_calibration(model, None, seed=0)
    calibration_ids = set(calibration.input_ids[calibration.attention_mask.bool()].tolist())
    tokens = torch.tensor(generated)

    def coverage(ids: set[int] | int) -> float:
        inside = tokens < ids if isinstance(ids, int) else torch.tensor([t in ids for t in generated])
        return float(inside.float().mean())

    skip = select_skip_layers(model, "evenly", 0.25)
    drafts = {"full": SDFPAssistant.from_target(model, skip_layers=skip)}
    for k in SIZES:
        if k < model.config.vocab_size:
            drafts[str(k)] = SDFPAssistant.from_target(model, skip_layers=skip, draft_vocab=range(k))
    ids = max(prompt_ids, key=lambda t: t.shape[1])[:, :256]
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :-1], use_cache=True, **cache_kwargs(model, cache))
    times: dict[str, list[float]] = {name: [] for name in ["target", *drafts]}
    for _ in range(3):  # interleaved, so that machine noise hits all alike
        times["target"].append(_step_seconds(model, ids, cache, args.repeats))
        for name, draft in drafts.items():
            times[name].append(_step_seconds(draft, ids, cache, args.repeats))
    target = min(times["target"])
    rows = [
        {
            "set": "lowest ids" if name != "full" else "full vocabulary",
            "size": int(name) if name != "full" else model.config.vocab_size,
            "coverage": coverage(int(name)) if name != "full" else 1.0,
            "coverage_with_calibration": coverage(calibration_ids | set(range(int(name)))) if name != "full" else 1.0,
            "draft_step_cost": min(times[name]) / target,
        }
        for name in drafts
    ]
    result = {
        "command": command,
        "model": args.model,
        "dtype": args.dtype,
        "threads": args.threads,
        "generated_tokens": len(generated),
        "vocab_size": model.config.vocab_size,
        "calibration_distinct_tokens": len(calibration_ids),
        "calibration_coverage": coverage(calibration_ids),
        "skip_layers": skip,
        "target_step_seconds": target,
        "rows": rows,
        "versions": {"torch": torch.__version__},
    }
    lines = [
        f"# Reduced draft vocabulary: {args.model} ({args.dtype})",
        "",
        f"Command: `{command}`",
        "",
        f"{len(generated)} greedy tokens of the target on Spec-Bench prompts; vocabulary {model.config.vocab_size}; "
        f"the data-free calibration holds {len(calibration_ids)} distinct tokens (coverage "
        f"{result['calibration_coverage']:.1%} alone). Draft: 25% of the layers skipped, evenly spaced; step cost "
        "relative to a target step (target step "
        f"{target * 1e3:.1f} ms, fastest of interleaved repeats, {args.threads} thread).",
        "",
        "| draft head | tokens | coverage | coverage with calibration tokens | draft step cost |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['set']} | {row['size']} | {row['coverage']:.1%} | {row['coverage_with_calibration']:.1%} | "
            f"{row['draft_step_cost']:.2f} |"
        )
    write_report(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
