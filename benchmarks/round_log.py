"""What tree rounds did on one Spec-Bench prompt: each draft call, and the planner's measurements at the end.

    python -m benchmarks.round_log MODEL_FOLDER CATEGORY INDEX [threads=N] [dtype=bf16|fp32] [OPTION=VALUE ...]

Loads the model, builds `SDFPAssistant.from_target(model)` (the profile cache applies), sets any
`DraftingOptions` field given (e.g. `tree_draft_tokens=3`, the most tokens a round drafts), then times
plain `generate` and tree rounds on the prompt (128 new tokens, greedy, after a 16-token warm-up) and
prints every draft call (tokens drafted, seconds), `draft.stats`, and the planner's round overhead, draft
step, draft acceptance and verification cost curve T(n) in seconds. A diagnostic: one prompt, one run.
"""

from __future__ import annotations

import gc
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import sdfp_hf.drafting.loop as loop
from sdfp_hf import SDFPAssistant

from .catalogue import DTYPES
from .prompts import encode_prompt, load_prompts


def main() -> None:
    folder, category, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = dict(arg.split("=", 1) for arg in sys.argv[4:])
    torch.set_num_threads(int(options.pop("threads", 1)))
    dtype = DTYPES[options.pop("dtype", "bf16")]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    draft = SDFPAssistant.from_target(model, hub_lookup=False)
    for name, value in options.items():
        kind = type(getattr(draft.drafting, name))
        setattr(draft.drafting, name, value == "true" if kind is bool else kind(value))
    prompt = [p for p in load_prompts(per_category=index + 1) if p.category == category][index]
    ids = encode_prompt(tokenizer, prompt.text)

    log: list[tuple] = []
    propose = loop.draft_proposals

    def timed_proposals(*args, **kwargs):
        start = time.perf_counter()
        chain = propose(*args, **kwargs)
        log.append(("draft", len(chain), round(time.perf_counter() - start, 3)))
        return chain

    loop.draft_proposals = timed_proposals
    with torch.inference_mode():
        model.generate(input_ids=ids, max_new_tokens=16, do_sample=False, assistant_model=draft)
        start = time.perf_counter()
        plain = model.generate(input_ids=ids, max_new_tokens=128, do_sample=False)
        plain_seconds = time.perf_counter() - start
        log.clear()
        start = time.perf_counter()
        out = model.generate(input_ids=ids, max_new_tokens=128, do_sample=False, assistant_model=draft)
        seconds = time.perf_counter() - start
    print(f"{prompt.category} q{prompt.question_id}, {ids.shape[1]} prompt tokens, {dtype}, {torch.get_num_threads()} "
          f"threads; plain {plain_seconds:.1f} s, tree rounds {seconds:.1f} s: {plain_seconds / seconds:.2f}x; "
          f"identical: {out[0].tolist() == plain[0].tolist()}")
    drafted = [entry for entry in log if entry[0] == "draft"]
    print(f"draft calls {len(drafted)}, {sum(e[1] for e in drafted)} steps, {sum(e[2] for e in drafted):.1f} s")
    for entry in log:
        print(*entry)
    print(draft.stats)
    for planner in (o for o in gc.get_objects() if isinstance(o, loop.TreePlanner)):
        curve = ", ".join(f"T({n}) {planner.curve(n):.3f}" for n in (1, 2, 4, 8, 16) if planner.curve(n) is not None)
        print(f"planner: max draft {planner.max_draft}, round overhead {planner.overhead:.4f} s, draft step "
              f"{planner.draft_seconds or 0:.3f} s, draft acceptance {planner.draft_rate:.2f}; {curve}")


if __name__ == "__main__":
    main()
