"""Profile a model, save its mask, and publish it on the Hugging Face Hub.

    python examples/profile_and_publish.py                                   # saves ./smollm2-135m-sdfp-mask
    HF_TOKEN=hf_... python examples/profile_and_publish.py --repo my-user/smollm2-135m-sdfp

Publishes only with `--repo` and a token (`HF_TOKEN` or `hf auth login`); otherwise it saves the mask
folder and says so. Others then load it with `SDFPAssistant.from_pretrained(model, "my-user/...")`.
"""

import argparse

from huggingface_hub import get_token

from sdfp_hf import load_model
from sdfp_hf import profile

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--skip-ratio", default="auto", help="a fraction of the layers, or 'auto'")
parser.add_argument("--out", default="smollm2-135m-sdfp-mask")
parser.add_argument("--overwrite", action="store_true", help="replace a mask already saved in --out")
parser.add_argument(
    "--repo", default=None, help="Hub repository to publish to, e.g. my-user/smollm2-135m-sdfp"
)
args = parser.parse_args()

model, tokenizer = load_model(args.model)
# Data-free: the model writes its own calibration text. Pass texts or a `datasets.Dataset` to use yours.
result = profile(
    model,
    tokenizer=tokenizer,
    skip_ratio=args.skip_ratio if args.skip_ratio == "auto" else float(args.skip_ratio),
)
mask = result.to_config(model)
print(result.summary())

try:
    plot = result.plot()  # the PNG's bytes
except ImportError:  # matplotlib is optional: pip install 'sdfp-hf[plot]'
    plot = None
# An earlier mask in --out is kept (an error says so) unless --overwrite.
mask.save_pretrained(args.out, plot=plot, overwrite=args.overwrite)
print(f"saved the mask to {args.out}/")

if args.repo and get_token():
    print(f"published: {mask.push_to_hub(args.repo, plot_path=plot)}")
else:
    print("not published: pass --repo and log in (`hf auth login`) or set HF_TOKEN to publish it")
