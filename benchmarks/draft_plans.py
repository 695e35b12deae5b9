"""Which draft plan pays? Skipped, shared and quantized branches compared on cost, acceptance and memory.

For each plan, on Spec-Bench prompts in the chat template: the draft step's cost relative to a target step
(measured here, interleaved with the target, `sdfp_hf.costs.measure_step_costs`), its exact greedy
acceptance replayed on the target's own output (`sdfp_hf.replay.replay_rounds`), the speedup the one
speedup model predicts for the draft alone at its best constant length (`sdfp_hf.costs.predict_speedup`),
and the bytes it holds of its own (`draft.extra_bytes`).

A plan is ``PRECISION[+head=P][+evenly:RATIO]``: the precision of every kept branch (``shared``, ``int8``,
``int4``), the head's if it differs, and evenly spaced skipped layers; or ``int4+int8first:K`` (the first and
last K layers int8, the rest int4).

    python -m benchmarks.draft_plans --model qwen2.5-coder-1.5b --dtype bf16 --out benchmarks/results/draft-plans/qwen2.5-coder-1.5b_bf16
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from benchmarks._report import write_report
from benchmarks.methods import select_skip_layers
from benchmarks.prompts import encode_prompt, load_prompts
from sdfp_hf.costs import measure_step_costs, predict_speedup
from sdfp_hf.draft import build_draft
from sdfp_hf.models import load_model
from sdfp_hf.plan import DraftPlan
from sdfp_hf.replay import one_step_agreement, replay_rounds, target_trajectories


def parse_plan(model, text: str) -> DraftPlan:
    """A plan from its spec (see the module docstring)."""
    num_layers = model.config.get_text_config().num_hidden_layers
    base, *parts = text.split("+")
    head, skip, first = None, [], 0
    for part in parts:
        key, _, value = part.partition("=") if "=" in part else part.partition(":")
        if key == "head":
            head = value
        elif key == "evenly":
            skip = select_skip_layers(model, "evenly", float(value))
        elif key == "int8first":
            first = int(value)
        else:
            raise ValueError(f"unknown plan part {part!r} in {text!r}")
    precisions = [base] * num_layers
    for i in (*range(first), *range(num_layers - first, num_layers)):
        precisions[i] = "int8"
    return DraftPlan.from_lists(
        num_layers, skip_layers=skip, attention=precisions, mlp=precisions, head=head or ("int8" if first else base)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--per-category", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--plans",
        default="shared+evenly:0.25,int8,int4,int8+head=int4,int4+int8first:2,int8+evenly:0.25,int4+evenly:0.25",
        help="comma list of plans",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.draft_plans " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    prompts = [encode_prompt(tokenizer, p.text)[0] for p in load_prompts(per_category=args.per_category)]
    start = time.perf_counter()
    trajectories = target_trajectories(model, prompts, args.max_new_tokens)
    specs = args.plans.split(",")
    drafts = [build_draft(model, parse_plan(model, spec)) for spec in specs]
    costs, target = measure_step_costs(model, drafts)
    rows = []
    for spec, draft, cost in zip(specs, drafts, costs):
        samples = replay_rounds(draft, trajectories)
        best = predict_speedup(samples, cost, target)
        rows.append({
            "plan": spec,
            "describe": draft.plan.describe(),
            "draft_step_cost": cost,
            "agreement": one_step_agreement(draft, trajectories),
            "alpha": best["alpha"],
            "num_assistant_tokens": best["num_assistant_tokens"],
            "tokens_per_round": best["tokens_per_round"],
            "predicted_speedup": best["speedup"],
            "extra_bytes": draft.extra_bytes,
        })
        print(rows[-1], flush=True)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    lines = [
        f"## Draft plans: {args.model} {args.dtype}, {len(prompts)} Spec-Bench prompts x {args.max_new_tokens} tokens",
        "",
        f"Target step {target.target_seconds * 1e3:.1f} ms; verifying {max(target.verify)} tokens costs "
        f"{target.verify[max(target.verify)]:.2f} steps; target weights {weights / 2**20:.0f} MiB; "
        f"{torch.get_num_threads()} thread(s).",
        "",
        "| plan | draft step / target step | top-1 agreement | per-token acceptance | best length | tokens per round | predicted speedup (draft alone) | extra memory |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| `{r['plan']}` | {r['draft_step_cost']:.2f} | {r['agreement']:.2f} | {r['alpha']:.2f} | "
            f"{r['num_assistant_tokens']} | {r['tokens_per_round']:.2f} | {r['predicted_speedup']:.2f}x | "
            f"{r['extra_bytes'] / 2**20:.0f} MiB ({r['extra_bytes'] / weights:.0%}) |"
        )
    lines += ["", f"{time.perf_counter() - start:.0f} s. Command: `{command}`"]
    result = {"command": command, "model": args.model, "dtype": args.dtype, "threads": torch.get_num_threads(),
              "target_step_seconds": target.target_seconds, "verify": {str(k): v for k, v in target.verify.items()},
              "target_weight_bytes": weights, "plans": rows}
    write_report(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
