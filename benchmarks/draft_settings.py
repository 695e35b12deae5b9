"""Which draft length and confidence threshold to default to: exact replayed acceptance on a real model.

    python -m benchmarks.draft_settings --model smollm2-135m --prompts 3 --max-new-tokens 48

For a draft skipping 25% of the layers (evenly spaced), replays greedy speculative decoding
(`sdfp_hf.replay`, exact in fp32) on Spec-Bench prompts for every draft length and threshold, and
predicts the speedup from the forward counts with a measured draft-step cost. Prints a Markdown table.
"""

import argparse
import json
import os
import time

import torch
from transformers import DynamicCache

from sdfp_hf import SDFPAssistant
from sdfp_hf._compat import cache_kwargs
from sdfp_hf.models import load_model
from sdfp_hf.replay import replay_acceptance

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--prompts", type=int, default=3)
parser.add_argument("--max-new-tokens", type=int, default=48)
args = parser.parse_args()
torch.set_num_threads(1)
model, tokenizer = load_model(args.model, dtype="float32")
n = model.config.num_hidden_layers
k = round(0.25 * n)
draft = SDFPAssistant.from_target(model, skip_layers=[int(1 + i * (n - 2) / k) for i in range(k)])


def step_seconds(m, ids, repeats=10):
    cache = DynamicCache(config=m.config)
    with torch.no_grad():
        m(ids, **cache_kwargs(m, cache))
        start = time.perf_counter()
        for i in range(repeats):
            m(ids[:, -1:], logits_to_keep=1, **cache_kwargs(m, cache))
    return (time.perf_counter() - start) / repeats


lengths, thresholds = (1, 2, 3, 4, 6, 8), (0.0, 0.2, 0.4, 0.6)
totals = {}
SPEC_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "spec_bench")
questions = [json.loads(line) for line in open(os.path.join(SPEC_BENCH, "question.jsonl"))]
chosen = [q for q in questions if q["category"] in ("writing", "coding", "math_reasoning", "summarization", "qa", "rag")]
cost = []
for q in chosen[:: max(1, len(chosen) // args.prompts)][: args.prompts]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": q["turns"][0]}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    cost.append(step_seconds(draft, ids) / step_seconds(model, ids))
    for r in replay_acceptance(model, draft, ids, max_new_tokens=args.max_new_tokens, num_assistant_tokens=lengths,
                               thresholds=thresholds, schedules=("constant", "heuristic")):
        key = (r.schedule, r.num_assistant_tokens, r.threshold)
        t = totals.setdefault(key, [0, 0, 0, 0, 0])
        t[0] += r.new_tokens; t[1] += r.target_forwards; t[2] += r.draft_forwards; t[3] += r.accepted; t[4] += r.drafted
c = sum(cost) / len(cost)
print(f"model {args.model} fp32, draft skips {k}/{n} layers evenly; draft step cost {c:.2f} of a target step "
      f"(measured); {args.prompts} prompts x {args.max_new_tokens} tokens\n")
print("| schedule | draft length | threshold | acceptance | tokens/round | predicted speedup (verify cost 1) |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for (schedule, length, threshold), (new, tf, df, acc, dr) in sorted(totals.items(), key=lambda kv: -kv[1][0] / (kv[1][1] + kv[1][2] * c)):
    print(f"| {schedule} | {length} | {threshold} | {acc / max(dr, 1):.0%} | {new / tf:.2f} | {new / (tf + df * c):.2f}x |")
