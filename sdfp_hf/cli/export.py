"""`sdfp export`: write a draft as a standalone transformers checkpoint for serving engines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import PROG, CommandError, expanded, load_mask, load_target, mask_options, model_options, status

HELP = "write the draft as a standalone checkpoint for serving engines"
DESCRIPTION = (
    "Write the draft of MODEL described by MASK to OUT as an ordinary transformers checkpoint "
    "(safetensors, config with the kept layers renumbered, tokenizer): it loads with "
    "AutoModelForCausalLM.from_pretrained(OUT) without sdfp-hf, and serving engines such as vLLM take it "
    "as a separate draft model. A layer whose attention or MLP alone is skipped keeps that branch with "
    "its output projection set to zero: exact, but still computed."
)
EPILOG = (
    f"examples:\n  {PROG} export smollm2-135m --mask smollm2-mask smollm2-draft\n"
    f"  {PROG} export smollm2-135m --mask smollm2-mask smollm2-draft --overwrite   # replace an earlier export\n"
    f"  {PROG} export Qwen/Qwen2.5-1.5B --mask my-user/qwen-sdfp --dtype bfloat16 qwen-draft\n\n"
    "then, on a GPU machine with vLLM (untested here):\n"
    '  vllm serve TARGET --speculative-config \'{"model": "OUT", "num_speculative_tokens": 5, "method": "draft_model"}\''
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_options(p)
    mask_options(p, required=True)
    p.add_argument("out", metavar="OUT", type=expanded, help="folder to write")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that already holds a checkpoint or config, replacing it (default: refuse)",
    )


def run(args: argparse.Namespace) -> int:
    from .._files import OverwriteError
    from ..assistant import SDFPAssistant
    from ..export import checkpoint_files, save_standalone

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"OUT `{args.out}` is a file, not a folder")
    existing = checkpoint_files(out)
    if existing and not args.overwrite:  # checked before the model is loaded
        names = ", ".join(path.name for path in existing[:4]) + (", ..." if len(existing) > 4 else "")
        raise CommandError(
            f"OUT `{args.out}` already holds a checkpoint or config ({names}) and is kept: pass --overwrite to "
            "replace it, or choose an empty folder"
        )
    mask = load_mask(args)
    model, tokenizer = load_target(args)
    draft = SDFPAssistant.from_target(model, mask=mask)
    status(f"Exporting the draft to {out} ...")
    try:
        save_standalone(draft, out, tokenizer=tokenizer, overwrite=args.overwrite)
    except OverwriteError as e:
        raise CommandError(
            f"`{e.path}` already exists and is kept: pass --overwrite to replace it, or choose an empty folder"
        ) from None
    skip = draft.skip
    partial = sorted((set(skip.attention) | set(skip.mlp)) - set(skip.layers))
    target = model.config.name_or_path or args.model
    print(f"wrote {out}: {len(skip.kept_layers)} of {skip.num_layers} layers of {target}")
    if partial:
        print(
            f"note: layers {partial} keep a skipped branch with its output projection set to zero: exact, but "
            "still computed in this checkpoint"
        )
    speculative = json.dumps({"model": str(out), "num_speculative_tokens": 5, "method": "draft_model"})
    print("load it with:  AutoModelForCausalLM.from_pretrained(" + repr(str(out)) + ")")
    print(f"serve it with vLLM (GPU):  vllm serve {target} --speculative-config '{speculative}'")
    return 0
