"""Build a draft from a published mask, without profiling: from a folder or a Hub repository.

    python examples/load_published_mask.py                                    # the folder profile_and_publish.py writes
    python examples/load_published_mask.py my-user/smollm2-135m-sdfp
    python examples/load_published_mask.py ./my-mask --model ./my-model

The mask is checked against the model: a mask made for another architecture is refused with a clear error.
"""

import argparse

from sdfp_hf import SDFPAssistant
from sdfp_hf import load_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("mask", nargs="?", default="smollm2-135m-sdfp-mask", help="mask folder or Hub repo id")
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--max-new-tokens", type=int, default=48)
args = parser.parse_args()

model, tokenizer = load_model(args.model)
draft = SDFPAssistant.from_pretrained(model, args.mask)  # also: revision=, subfolder=, token=
mask = draft.sdfp_config
print(f"mask for {mask.base_model_name_or_path}: skips layers {mask.skip_layers}", end="")
print(
    f", attention of {mask.skip_attention}, MLP of {mask.skip_mlp}" if mask.granularity == "sublayer" else ""
)

inputs = tokenizer("Here is a list of five fruits:", return_tensors="pt")
output = model.generate(**inputs, assistant_model=draft, max_new_tokens=args.max_new_tokens, do_sample=False)
print(tokenizer.decode(output[0], skip_special_tokens=True))
print(f"-- {draft.stats}")
