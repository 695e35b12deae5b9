"""Export a draft as a standalone checkpoint for serving engines (vLLM, SGLang, TGI).

    python examples/export_for_serving.py                       # writes ./smollm2-135m-sdfp-draft
    python examples/export_for_serving.py --mask my-user/smollm2-135m-sdfp --out my-draft

The folder is an ordinary transformers checkpoint of the kept layers: it loads without sdfp-hf, and
its logits are the draft's. Serve it next to its target, on a GPU machine with vLLM:

    vllm serve HuggingFaceTB/SmolLM2-135M-Instruct \
        --speculative-config '{"model": "./smollm2-135m-sdfp-draft", "num_speculative_tokens": 5, "method": "draft_model"}'
"""

import argparse
import json

import torch
from transformers import AutoModelForCausalLM

from sdfp_hf import SDFPAssistant
from sdfp_hf import load_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument(
    "--mask", default=None, help="mask folder or Hub repo id (default: profile the model now)"
)
parser.add_argument("--out", default="smollm2-135m-sdfp-draft")
args = parser.parse_args()

model, tokenizer = load_model(args.model)
if args.mask:
    draft = SDFPAssistant.from_pretrained(model, args.mask)
else:
    draft = SDFPAssistant.from_target(model, tokenizer=tokenizer)  # profiles the model
draft.save_standalone(args.out, tokenizer=tokenizer)

# The exported checkpoint is a plain model: no sdfp-hf needed to load it, and it computes what the draft computes.
standalone = AutoModelForCausalLM.from_pretrained(args.out)
input_ids = tokenizer("Speculative decoding is", return_tensors="pt").input_ids
with torch.no_grad():
    difference = (standalone(input_ids).logits - draft(input_ids).logits).abs().max().item()
print(
    f"wrote {args.out}: {standalone.config.num_hidden_layers} of {model.config.num_hidden_layers} layers; "
    f"largest logit difference from the draft: {difference:.1e}"
)
config = json.dumps({"model": args.out, "num_speculative_tokens": 5, "method": "draft_model"})
print(
    f"serve it (GPU, untested here): vllm serve {model.config.name_or_path} --speculative-config '{config}'"
)
