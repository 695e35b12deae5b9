"""The draft in a transformers pipeline: pass it as `assistant_model`, nothing else changes.

python examples/pipeline.py
python examples/pipeline.py --model ./my-model --max-new-tokens 32
"""

import argparse

from transformers import pipeline

from sdfp_hf import SDFPAssistant
from sdfp_hf import load_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--max-new-tokens", type=int, default=64)
parser.add_argument("--mask", default=None, help="a saved mask (folder or Hub id) instead of profiling now")
args = parser.parse_args()

model, tokenizer = load_model(args.model)
if args.mask:
    draft = SDFPAssistant.from_pretrained(model, args.mask)
else:
    draft = SDFPAssistant.from_target(model, tokenizer=tokenizer)  # profiles the model

generator = pipeline("text-generation", model=model, tokenizer=tokenizer, assistant_model=draft)
for prompt in ["The three primary colours are", "def is_prime(n):"]:
    result = generator(prompt, max_new_tokens=args.max_new_tokens, do_sample=False)
    print(result[0]["generated_text"])
    print(f"-- {draft.stats}\n")
