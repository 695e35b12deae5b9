"""`sdfp generate`: generate with a draft (streaming), then print acceptance and the speedup over plain."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ._common import (
    PROG,
    CommandError,
    load_mask,
    load_target,
    mask_options,
    model_options,
    non_negative_float,
    positive_int,
    status,
)

HELP = "generate with a draft, then print acceptance and speedup"
DESCRIPTION = (
    "Generate from PROMPT with MODEL, its draft proposing tokens (speculative decoding), streaming the "
    "text; then generate again without the draft, on the same prompt, and print the draft's acceptance "
    "figures and the speedup over plain generation."
)
EPILOG = (
    "examples:\n"
    f'  {PROG} generate smollm2-135m --mask smollm2-mask --chat "Write a haiku about the sea."\n'
    f'  {PROG} generate ./my-model --mask my-user/my-model-sdfp --max-new-tokens 64 "def fibonacci(n):"\n'
    f'  echo "Once upon a time" | {PROG} generate smollm2-135m --mask smollm2-mask -'
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_options(p)
    p.add_argument("prompt", metavar="PROMPT", help="the prompt; '-' reads it from standard input")
    mask_options(p, required=False)
    p.add_argument("--max-new-tokens", type=positive_int, default=128, help="tokens to generate (default: %(default)s)")
    p.add_argument("--chat", action="store_true", help="wrap PROMPT as a user turn of the model's chat template")
    p.add_argument(
        "--temperature", type=non_negative_float, default=0.0, help="sampling temperature; 0 is greedy (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of sampling (default: %(default)s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain generation (no speedup figure)")


def _inputs(args: argparse.Namespace, model: Any, tokenizer: Any, prompt: str) -> dict[str, Any]:
    if args.chat:
        if not getattr(tokenizer, "chat_template", None):
            raise CommandError(f"--chat: the tokenizer of {args.model} has no chat template; leave --chat out")
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    else:
        inputs = tokenizer(prompt, return_tensors="pt")
    return {k: v.to(model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}


def _options(args: argparse.Namespace, model: Any, tokenizer: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    if args.temperature > 0:
        options.update(do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0)
    else:
        options.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    if model.generation_config.pad_token_id is None and tokenizer.eos_token_id is not None:
        options["pad_token_id"] = tokenizer.eos_token_id
    return options


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import TextStreamer

    from ..assistant import SDFPAssistant

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise CommandError("the prompt is empty")
    mask = load_mask(args) if args.mask is not None else None
    model, tokenizer = load_target(args)
    if mask is None:
        status("No --mask given: profiling the model (pass --mask to reuse a saved one) ...")
        draft = SDFPAssistant.from_target(model, tokenizer=tokenizer)
    else:
        draft = SDFPAssistant.from_target(model, mask=mask)
    inputs = _inputs(args, model, tokenizer, prompt)
    prompt_length = inputs["input_ids"].shape[1]
    options = _options(args, model, tokenizer)

    def generate(stream: bool, assistant: Any, max_new_tokens: int | None = None) -> tuple[Any, float]:
        torch.manual_seed(args.seed)
        kwargs = dict(options, max_new_tokens=max_new_tokens or args.max_new_tokens)
        if stream:
            kwargs["streamer"] = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        if assistant is not None:
            kwargs["assistant_model"] = assistant
        start = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, **kwargs)
        return output[0, prompt_length:], time.perf_counter() - start

    # One short call of each first, so that neither timed run pays for first-call set-up alone.
    warmup = min(4, args.max_new_tokens)
    generate(False, draft, warmup)
    if not args.no_baseline:
        generate(False, None, warmup)
    drafted, draft_seconds = generate(True, draft)
    _report_draft(draft, drafted, draft_seconds)
    if args.no_baseline:
        return 0
    plain, plain_seconds = generate(False, None)
    _report_baseline(args, model, drafted, draft_seconds, plain, plain_seconds)
    return 0


def _rate(tokens: int, seconds: float) -> str:
    return f"{tokens} tokens in {seconds:.2f} s ({tokens / seconds:.1f} tokens/s)"


def _report_draft(draft: Any, drafted: Any, seconds: float) -> None:
    stats = draft.stats
    print(f"\n--- {_rate(len(drafted), seconds)} with the draft")
    print(f"draft: {draft.plan.describe()}; {stats}")  # per source, as the demo shows it


def _report_baseline(args: argparse.Namespace, model: Any, drafted: Any, draft_seconds: float, plain: Any, plain_seconds: float) -> None:
    import torch

    print(f"plain generation: {_rate(len(plain), plain_seconds)}")
    if len(plain) and len(drafted):
        speedup = (len(drafted) / draft_seconds) / (len(plain) / plain_seconds)
        print(f"speedup over plain generation: {speedup:.2f}x (tokens per second, same prompt, this machine)")
    if args.temperature == 0:
        identical = torch.equal(plain, drafted)
        print(f"output identical to plain greedy generation: {'yes' if identical else 'no'}", end="")
        if not identical and model.dtype != torch.float32:
            # A reduced precision rounds a batched verification and a one-token forward differently.
            print(f" (expected in {str(model.dtype).removeprefix('torch.')}; float32 is exact)", end="")
        print()
