"""What would tree-shaped verification gain over chain drafts? An estimate from measured agreement and costs.

A chain draft proposes the draft's top-1 token at each depth; a round ends at the first disagreement. A
tree adds, at each depth of the chain, the draft's next `k - 1` most likely tokens as siblings: they come
from the same draft forward (no extra draft cost) and the target verifies all `n * k` nodes in one pass
with a tree attention mask. A sibling that matches is accepted and ends the round (its own continuation
was not drafted). With p_k the share of the target's tokens among the draft's top k at exact context
(measured: `sdfp_hf.selection.one_step_agreement(top_k=k)` on the target's greedy output), a geometric
model gives accepted tokens per round  A(n, k) = p_k * (1 - p_1**n) / (1 - p_1)  and a round costs
n * c + v(n * k + 1) target steps (c: a draft step, v: a verification of that many tokens; both measured
here, interleaved). Speedup = (1 + A) / cost, best depth n for each width k.

transformers' assisted decoding verifies chains only; a tree needs a decoding loop of our own. This
estimate is what such a loop would have to beat.

    python -m benchmarks.tree_estimate --model qwen2.5-coder-1.5b --out benchmarks/results/tree-estimate/qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from benchmarks._report import write_report
from benchmarks.methods import select_skip_layers
from benchmarks.prompts import encode_prompt, load_prompts
from sdfp_hf.assistant import SDFPAssistant
from sdfp_hf.costs import measure_step_costs
from sdfp_hf.models import load_model
from sdfp_hf.replay import one_step_agreement, target_trajectories


def _draft(model, spec: str) -> SDFPAssistant:
    selector, ratio = spec.split(":")
    if selector in ("evenly", "last"):
        return SDFPAssistant.from_target(model, skip_layers=select_skip_layers(model, selector, float(ratio)))
    return SDFPAssistant.from_target(model, method=selector, skip_ratio=float(ratio), progress=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--drafts", default="evenly:0.25,gate_flips:0.25", help="comma list of SELECTOR:RATIO")
    parser.add_argument("--widths", default="1,2,4")
    parser.add_argument("--max-depth", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.tree_estimate " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    widths = [int(w) for w in args.widths.split(",")]
    prompts = [encode_prompt(tokenizer, p.text)[0] for p in load_prompts(per_category=args.per_category)]
    trajectories = target_trajectories(model, prompts, args.max_new_tokens)
    specs = args.drafts.split(",")
    drafts = [_draft(model, spec) for spec in specs]
    costs, target = measure_step_costs(model, drafts, verify_tokens=args.max_depth * max(widths) + 1)

    rows = []
    for spec, draft, c in zip(specs, drafts, costs):
        p = {k: one_step_agreement(draft, trajectories, top_k=k) for k in widths}
        p1 = min(p[1], 0.999)
        for k in widths:
            best = None
            for n in range(1, args.max_depth + 1):
                accepted = p[k] * (1 - p1**n) / (1 - p1)
                cost = n * c + target.verify_cost(n * k + 1)
                speedup = (1 + accepted) / cost
                if best is None or speedup > best["speedup"]:
                    best = {"depth": n, "accepted_per_round": accepted, "round_cost": cost, "speedup": speedup}
            rows.append({"draft": spec, "width": k, "p_k": p[k], "draft_step_cost": c, **best})
    result = {
        "command": command,
        "model": args.model,
        "dtype": args.dtype,
        "threads": args.threads,
        "prompts": len(prompts),
        "target_tokens": trajectories.num_new_tokens,
        "verify_cost": {str(n): v for n, v in target.verify.items()},
        "target_step_seconds": target.target_seconds,
        "rows": rows,
    }
    verify_n, verify_c = max(target.verify.items())
    lines = [
        f"# Tree verification estimate: {args.model} ({args.dtype})",
        "",
        f"Command: `{command}`",
        "",
        f"{len(prompts)} Spec-Bench prompts, {trajectories.num_new_tokens} greedy target tokens. Verifying "
        f"{verify_n} tokens costs {verify_c:.2f} target steps (target step {target.target_seconds * 1e3:.1f} ms, "
        f"{args.threads} thread). Width 1 is today's chain; speedups are the geometric model's, for the "
        "draft alone (no prompt lookup).",
        "",
        "| draft | width | p_k (target token in draft's top k) | draft step cost | best depth | accepted/round | predicted speedup |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['draft']} | {r['width']} | {r['p_k']:.2f} | {r['draft_step_cost']:.2f} | {r['depth']} | "
            f"{r['accepted_per_round']:.2f} | {r['speedup']:.2f}x |"
        )
    write_report(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
