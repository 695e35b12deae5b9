"""Does the tree planner foresee what the target takes? Predicted against accepted tokens, per kind of round.

    python -m benchmarks.tree_calibration MODEL_FOLDER [PER_CATEGORY] [THREADS]

Builds `SDFPAssistant.from_target(model)` (the profile cache applies), runs tree rounds (greedy, 128 new
tokens, bf16) on the first PER_CATEGORY (default 1) Spec-Bench prompts of each category, and sums over the
rounds that drafted and over those that did not the tokens the planner expected of the verified tree (the
sum of its nodes' reach) against the tokens the target accepted. A planner that over-rates one kind of
candidate drafts too often or too seldom; this shows which. A diagnostic: one run, seconds per prompt.
"""

from __future__ import annotations

import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import sdfp_hf.drafting.loop as loop
from sdfp_hf import SDFPAssistant

from .prompts import encode_prompt, load_prompts


def main() -> None:
    folder = sys.argv[1]
    per_category = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    draft = SDFPAssistant.from_target(model, hub_lookup=False, progress=False)
    # per kind of round: rounds, expected and accepted tokens, predicted and measured seconds (rounds after
    # the first of a call: the time from one walk to the next)
    sums = {kind: [0, 0.0, 0, 0.0, 0.0] for kind in ("drafted", "free only")}
    planner = loop.tree_planner_of(draft, model.get_output_embeddings().weight.shape[0])
    walk, last = loop._walk, [None]

    def recorded_walk(tree, *args):
        now = time.perf_counter()
        path, tokens = walk(tree, *args)
        # the draft tokens the cut kept (a chain cut short drafted more: then it took longer than predicted)
        steps = sum(any(key.startswith("draft:") for key in keys) for keys in tree.sources)
        entry = sums["drafted" if steps else "free only"]
        entry[0] += 1
        entry[1] += sum(tree.reach()[1:])
        entry[2] += len(path)
        if last[0] is not None and planner.cost(len(tree), steps) is not None:
            entry[3] += planner.cost(len(tree), steps)
            entry[4] += now - last[0]
        last[0] = now
        return path, tokens

    loop._walk = recorded_walk
    with torch.inference_mode():
        prompts = load_prompts(per_category=per_category)
        model.generate(input_ids=encode_prompt(tokenizer, prompts[0].text), max_new_tokens=16, assistant_model=draft)
        for kind in sums.values():
            kind[:] = [0, 0.0, 0, 0.0, 0.0]
        for prompt in prompts:
            ids = encode_prompt(tokenizer, prompt.text)
            start, last[0] = time.perf_counter(), None
            out = model.generate(input_ids=ids, max_new_tokens=128, do_sample=False, assistant_model=draft)
            print(f"{prompt.category} q{prompt.question_id}: {out.shape[1] - ids.shape[1]} tokens in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
    for kind, (rounds, expected, accepted, predicted, seconds) in sums.items():
        print(f"{kind}: {rounds} rounds, expected {expected:.1f} accepted tokens, the target accepted {accepted}"
              + (f" ({expected / accepted:.2f}x expected)" if accepted else "")
              + f"; rounds after the first of a call predicted {predicted:.1f} s, took {seconds:.1f} s")


if __name__ == "__main__":
    main()
