"""The `sdfp` command: profile a model, generate with its draft, inspect, publish and export masks.

    sdfp profile smollm2-135m --out smollm2-mask
    sdfp generate smollm2-135m --mask smollm2-mask --chat "Write a haiku about the sea."
    sdfp inspect smollm2-mask
    sdfp push smollm2-mask my-user/smollm2-135m-sdfp
    sdfp export smollm2-135m --mask smollm2-mask smollm2-draft
    sdfp bench --model smollm2-135m

MODEL is a Hub id, a local folder, a local `.gguf` file or a catalogue alias (`smollm2-135m`,
`qwen2.5-coder-0.5b`, `qwen2.5-coder-1.5b`; see `python -m sdfp_hf.models list`). MASK is a folder holding
`sdfp_config.json` or a Hub repository id.

Errors are one line on stderr, `sdfp: error: ...`, with exit status 1 (2 for a wrong command line, as
argparse does); `--verbose` prints the traceback too. Heavy imports happen inside the commands, so
`--help` stays quick.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

PROG = "sdfp"
_DTYPES = ("float32", "bfloat16", "float16", "auto", "fp32", "bf16", "fp16")


class CommandError(Exception):
    """A failure the user can fix, reported as one line without a traceback."""


# ---------------------------------------------------------------------------------------------- parser


def _skip_ratio(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1) or 'auto', got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1) or 'auto', got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples of an epilog as written; descriptions are wrapped by `_wrap`."""


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=min(100, shutil.get_terminal_size().columns - 2))


def build_parser() -> argparse.ArgumentParser:
    """The `sdfp` argument parser, one subcommand per job."""
    # `--verbose` is accepted before and after the subcommand; SUPPRESS keeps the subcommand's default
    # from overwriting a `--verbose` given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the traceback of an error, and library warnings and logs",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Training-free self-speculative decoding for Hugging Face causal LMs: profile a model, "
        "generate with its layer-skipping draft, inspect, publish and export masks.",
        epilog="MODEL: a Hub id, a local folder, a local .gguf file or a catalogue alias (smollm2-135m, "
        "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b). MASK: a folder holding sdfp_config.json or a Hub repository id. "
        f"Run `{PROG} COMMAND --help` for each command's options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traceback of an error")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"sdfp-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=_wrap(description),
            epilog=epilog,
            parents=[common],
            formatter_class=_Formatter,
        )

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "model", metavar="MODEL", help="Hub id, local folder, local .gguf file or catalogue alias"
        )
        p.add_argument(
            "--dtype",
            default="float32",
            choices=_DTYPES,
            metavar="DTYPE",
            help="float32, bfloat16, float16 or auto (the checkpoint's) (default: %(default)s)",
        )
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ... (default: %(default)s)")
        p.add_argument("--revision", default=None, help="revision of MODEL when it is a Hub id")

    def mask_options(p: argparse.ArgumentParser, *, required: bool) -> None:
        p.add_argument(
            "--mask",
            required=required,
            default=None,
            metavar="MASK",
            help="mask folder or Hub repo id" + ("" if required else " (default: profile the model now)"),
        )
        p.add_argument("--mask-revision", default=None, help="branch, tag or commit of a Hub mask")
        p.add_argument(
            "--mask-subfolder", default=None, help="folder of the repository or folder holding the mask"
        )
        p.add_argument("--token", default=None, help="Hub token (default: the saved one, `hf auth login`)")

    # -------------------------------------------------------------------------------- profile
    p = command(
        "profile",
        "profile a model and write a mask folder",
        "Score every decoder layer (and its attention and MLP branches) of MODEL by Fisher information on "
        "calibration data, choose what the draft skips, and write a mask folder: sdfp_config.json, a model "
        "card (README.md) and a plot of the scores (sdfp_scores.png).",
        "examples:\n"
        f"  {PROG} profile smollm2-135m --out smollm2-mask                 # data-free, skip ratio chosen automatically\n"
        f"  {PROG} profile smollm2-135m --calibration prompts.jsonl --skip-ratio 0.3 --out mask\n"
        f"  {PROG} profile Qwen/Qwen2.5-0.5B --dataset wikitext --dataset-config wikitext-2-raw-v1 --out mask\n"
        f"  {PROG} profile smollm2-135m --out mask --push-to-hub my-user/smollm2-135m-sdfp",
    )
    model_options(p)
    data = p.add_argument_group("calibration data (default: data-free, the model's own samples)")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--calibration",
        metavar="FILE",
        default=None,
        help="a text file (paragraphs separated by blank lines) or a JSONL file (one string, or one object "
        "with a --text-column field, per line)",
    )
    source.add_argument("--dataset", metavar="NAME", default=None, help="a `datasets` dataset name or path")
    data.add_argument("--dataset-config", default=None, help="configuration name of --dataset")
    data.add_argument("--split", default="train", help="split of --dataset (default: %(default)s)")
    data.add_argument(
        "--text-column",
        default="text",
        help="field holding the text in JSONL files and datasets (default: %(default)s)",
    )
    data.add_argument(
        "--num-sequences",
        type=_positive_int,
        default=None,
        help="calibration sequences (default: the profiler's)",
    )
    data.add_argument(
        "--sequence-length",
        type=_positive_int,
        default=None,
        help="tokens per sequence (default: the profiler's)",
    )
    choice = p.add_argument_group("what to skip")
    choice.add_argument(
        "--skip-ratio",
        type=_skip_ratio,
        default="auto",
        help="fraction of the layers to skip (of the decoder's bytes at sublayer granularity), or 'auto' for the "
        "best predicted speedup (default: %(default)s)",
    )
    choice.add_argument(
        "--granularity",
        choices=("layer", "sublayer"),
        default=None,
        help="skip whole layers, or attention and MLP branches apart (default: the profiler's, layer)",
    )
    choice.add_argument(
        "--method",
        default=None,
        help="scoring method (default: the profiler's; see sdfp_hf.fit.SCORING_METHODS)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of calibration sampling and scoring (default: %(default)s)"
    )
    p.add_argument(
        "--out", metavar="DIR", default=None, help="mask folder to write (default: ./<model name>-sdfp-mask)"
    )
    hub = p.add_argument_group("publishing")
    hub.add_argument(
        "--push-to-hub", metavar="REPO", default=None, help="also publish the mask to this Hub repository"
    )
    hub.add_argument("--private", action="store_true", help="create the repository as private")
    hub.add_argument("--token", default=None, help="Hub token with write access (default: the saved one)")
    p.set_defaults(run=_profile)

    # -------------------------------------------------------------------------------- generate
    p = command(
        "generate",
        "generate with a draft, then print acceptance and speedup",
        "Generate from PROMPT with MODEL, its draft proposing tokens (speculative decoding), streaming the "
        "text; then generate again without the draft, on the same prompt, and print the draft's acceptance "
        "figures and the speedup over plain generation.",
        "examples:\n"
        f'  {PROG} generate smollm2-135m --mask smollm2-mask --chat "Write a haiku about the sea."\n'
        f'  {PROG} generate ./my-model --mask my-user/my-model-sdfp --max-new-tokens 64 "def fibonacci(n):"\n'
        f'  echo "Once upon a time" | {PROG} generate smollm2-135m --mask smollm2-mask -',
    )
    model_options(p)
    p.add_argument("prompt", metavar="PROMPT", help="the prompt; '-' reads it from standard input")
    mask_options(p, required=False)
    p.add_argument(
        "--max-new-tokens", type=_positive_int, default=128, help="tokens to generate (default: %(default)s)"
    )
    p.add_argument(
        "--chat", action="store_true", help="wrap PROMPT as a user turn of the model's chat template"
    )
    p.add_argument(
        "--temperature",
        type=_non_negative_float,
        default=0.0,
        help="sampling temperature; 0 is greedy (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of sampling (default: %(default)s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain generation (no speedup figure)")
    p.set_defaults(run=_generate)

    # -------------------------------------------------------------------------------- inspect
    p = command(
        "inspect",
        "print what a mask holds",
        "Print a mask's model, skipped layers and branches, per-layer scores, calibration provenance, draft "
        "settings, measurements and the path of its score plot.",
        f"examples:\n  {PROG} inspect smollm2-mask\n  {PROG} inspect my-user/smollm2-135m-sdfp --json",
    )
    p.add_argument("mask", metavar="MASK", help="mask folder, sdfp_config.json file or Hub repo id")
    p.add_argument("--revision", default=None, help="branch, tag or commit of a Hub mask")
    p.add_argument("--subfolder", default=None, help="folder of the repository or folder holding the mask")
    p.add_argument("--token", default=None, help="Hub token (default: the saved one)")
    p.add_argument("--json", action="store_true", help="print the mask's JSON as it is")
    p.set_defaults(run=_inspect)

    # -------------------------------------------------------------------------------- push
    p = command(
        "push",
        "publish a mask folder to the Hub",
        "Publish the mask in MASK_DIR (sdfp_config.json, and sdfp_scores.png if present) to the Hub "
        "repository REPO in one commit, creating the repository if needed; a model card is added only if "
        "the repository has no README yet.",
        f"examples:\n  {PROG} push smollm2-mask my-user/smollm2-135m-sdfp\n"
        f"  {PROG} push mask my-user/my-model --subfolder sdfp --create-pr",
    )
    p.add_argument("mask_dir", metavar="MASK_DIR", help="local mask folder")
    p.add_argument("repo", metavar="REPO", help="Hub repository id, user/name")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="branch to commit to (created if needed)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--subfolder", default=None, help="repository folder to put the mask in")
    p.add_argument("--commit-message", default=None, help="commit message")
    p.add_argument("--token", default=None, help="Hub token with write access (default: the saved one)")
    p.set_defaults(run=_push)

    # -------------------------------------------------------------------------------- export
    p = command(
        "export",
        "write the draft as a standalone checkpoint for serving engines",
        "Write the draft of MODEL described by MASK to OUT as an ordinary transformers checkpoint "
        "(safetensors, config with the kept layers renumbered, tokenizer): it loads with "
        "AutoModelForCausalLM.from_pretrained(OUT) without sdfp-hf, and serving engines such as vLLM take it "
        "as a separate draft model. A layer whose attention or MLP alone is skipped keeps that branch with "
        "its output projection set to zero: exact, but still computed.",
        f"examples:\n  {PROG} export smollm2-135m --mask smollm2-mask smollm2-draft\n"
        f"  {PROG} export Qwen/Qwen2.5-1.5B --mask my-user/qwen-sdfp --dtype bfloat16 qwen-draft\n\n"
        "then, on a GPU machine with vLLM (untested here):\n"
        '  vllm serve TARGET --speculative-config \'{"model": "OUT", "num_speculative_tokens": 5, "method": "draft_model"}\'',
    )
    model_options(p)
    mask_options(p, required=True)
    p.add_argument("out", metavar="OUT", help="folder to write")
    p.set_defaults(run=_export)

    # -------------------------------------------------------------------------------- bench
    p = commands.add_parser(
        "bench",
        help="run the benchmark harness (`sdfp bench --help` for its options)",
        add_help=False,
        description="Run the sdfp-hf benchmark harness; every argument is passed to it.",
    )
    p.set_defaults(run=None)
    return parser


# ---------------------------------------------------------------------------------------------- helpers


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _one_line(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _looks_like_path(name: str) -> bool:
    # A Hub id is `name` or `user/name`; anything else with a separator, or a .gguf name, is a path.
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.lower().endswith(".gguf")
    )


def _load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    from .models import load_model

    name = args.model
    if not Path(name).expanduser().exists() and _looks_like_path(name):
        raise CommandError(
            f"MODEL `{name}` does not exist: pass a local folder or .gguf file, a Hub id (user/name) or a "
            "catalogue alias (smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)"
        )
    _status(f"Loading {name} ({args.dtype}) ...")
    start = time.perf_counter()
    model, tokenizer = load_model(name, dtype=args.dtype, device=args.device, revision=args.revision)
    _status(f"Loaded {model.config.name_or_path or name} in {time.perf_counter() - start:.1f} s")
    return model, tokenizer


def _check_mask_name(name: str) -> None:
    # A published mask is always `user/name`: anything else that is not on disk is a missing folder, and
    # saying so beats a round of Hub requests for a repository that cannot exist.
    if not Path(name).expanduser().exists() and (_looks_like_path(name) or "/" not in name):
        raise CommandError(
            f"MASK `{name}` is neither an existing folder nor a Hub repository id (user/name): check the path, "
            f"or write a mask with `{PROG} profile MODEL --out DIR`"
        )


def _load_mask(args: argparse.Namespace) -> Any:
    from .config import SDFPConfig

    _check_mask_name(args.mask)
    return SDFPConfig.from_pretrained(
        args.mask, revision=args.mask_revision, subfolder=args.mask_subfolder, token=args.token
    )


def _default_out(model: str) -> str:
    stem = Path(model.rstrip("/\\")).name
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', stem) or 'model'}-sdfp-mask"


def _read_texts(path: str, text_column: str) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CommandError(f"calibration file `{path}` does not exist")
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        texts = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
    else:
        texts = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise CommandError(f"{path}, line {number}: not valid JSON ({e})") from None
            if isinstance(row, dict):
                if not isinstance(row.get(text_column), str):
                    raise CommandError(
                        f"{path}, line {number}: no string field {text_column!r} (fields: {', '.join(row) or 'none'}); "
                        "name the field with --text-column"
                    )
                row = row[text_column]
            if not isinstance(row, str):
                raise CommandError(
                    f"{path}, line {number}: expected a string or an object, got {type(row).__name__}"
                )
            if row.strip():
                texts.append(row)
    if not texts:
        raise CommandError(f"calibration file `{path}` holds no text")
    return texts


def _calibration_source(args: argparse.Namespace) -> Any:
    if args.calibration is not None:
        return _read_texts(args.calibration, args.text_column)
    if args.dataset is None:
        if args.dataset_config is not None:
            raise CommandError("--dataset-config needs --dataset")
        return None
    try:
        import datasets
    except ImportError:
        raise CommandError(
            "--dataset needs the `datasets` package: pip install 'sdfp-hf[datasets]'"
        ) from None
    _status(f"Loading dataset {args.dataset} ({args.split}) ...")
    dataset = datasets.load_dataset(args.dataset, args.dataset_config, split=args.split)
    if args.text_column not in dataset.column_names:
        raise CommandError(
            f"dataset {args.dataset} has no column {args.text_column!r} (columns: {', '.join(dataset.column_names)}): "
            "name the text column with --text-column"
        )
    if args.text_column != "text":
        dataset = dataset.select_columns([args.text_column]).rename_column(args.text_column, "text")
    return dataset


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths)).rstrip())


def _indices(values: Sequence[int], of: int | None = None) -> str:
    if not values:
        return "none"
    text = ", ".join(map(str, values))
    return f"{len(values)} of {of}: {text}" if of is not None else text


# ---------------------------------------------------------------------------------------------- commands


def _profile(args: argparse.Namespace) -> int:
    from .hub import PLOT_NAME

    source = _calibration_source(args)
    try:
        from .selection import profile
    except ImportError as e:
        raise CommandError(f"the profiler is not available in this installation of sdfp-hf ({e})") from None
    model, tokenizer = _load_model(args)
    out = Path(args.out if args.out is not None else _default_out(args.model))
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out `{out}` is a file, not a folder")
    kwargs: dict[str, Any] = {
        "tokenizer": tokenizer,
        "skip_ratio": args.skip_ratio,
        "seed": args.seed,
        "num_sequences": args.num_sequences,
        "sequence_length": args.sequence_length,
    }
    for name in ("granularity", "method"):  # unset: the profiler's defaults
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    what = (
        "data-free (the model's own samples)"
        if source is None
        else (
            f"{len(source)} text(s) from {args.calibration}"
            if isinstance(source, list)
            else f"dataset {args.dataset}"
        )
    )
    _status(f"Profiling on {what}, skip ratio {args.skip_ratio} ...")
    result = profile(model, source, **kwargs)
    mask = result.to_config(model)

    out.mkdir(parents=True, exist_ok=True)
    plot_path: Path | None = out / PLOT_NAME
    try:
        result.plot(str(plot_path))
    except ImportError as e:
        hint = ": install it with pip install 'sdfp-hf[plot]'" if e.name == "matplotlib" else ""
        warnings.warn(f"no score plot written ({e}){hint}", stacklevel=1)
        plot_path = None
    mask.save_pretrained(out, plot=plot_path)
    n = mask.num_hidden_layers
    print(f"skipped layers: {_indices(mask.skip_layers, n)}")
    if mask.granularity == "sublayer":
        print(
            f"skipped attention only: {_indices(mask.skip_attention)}; skipped MLP only: {_indices(mask.skip_mlp)}"
        )
    if mask.measurements.get("predicted_speedup") is not None:
        print(
            f"predicted speedup: {mask.measurements['predicted_speedup']:.2f}x at {mask.num_assistant_tokens} tokens "
            f"per round ({mask.measurements.get('acceptance', 0):.0%} of drafted tokens accepted)"
        )
    print(f"wrote the mask to {out}/ (sdfp_config.json, README.md{', ' + PLOT_NAME if plot_path else ''})")
    if args.push_to_hub:
        url = mask.push_to_hub(
            args.push_to_hub, private=args.private or None, token=args.token, plot_path=plot_path
        )
        print(f"published to {args.push_to_hub}: {url}")
    print(f'next: {PROG} generate {args.model} --mask {out} "your prompt"')
    return 0


def _generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import TextStreamer

    from .assistant import SDFPAssistant

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise CommandError("the prompt is empty")
    mask = _load_mask(args) if args.mask is not None else None
    model, tokenizer = _load_model(args)
    if mask is None:
        _status("No --mask given: profiling the model (pass --mask to reuse a saved one) ...")
    draft = (
        SDFPAssistant.from_target(model, mask=mask)
        if mask is not None
        else SDFPAssistant.from_target(model, tokenizer=tokenizer)
    )

    if args.chat:
        if not getattr(tokenizer, "chat_template", None):
            raise CommandError(
                f"--chat: the tokenizer of {args.model} has no chat template; leave --chat out"
            )
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
    else:
        inputs = tokenizer(prompt, return_tensors="pt")
    inputs = {k: v.to(model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    prompt_length = inputs["input_ids"].shape[1]
    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    if args.temperature > 0:
        options.update(do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0)
    else:
        options.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    if model.generation_config.pad_token_id is None and tokenizer.eos_token_id is not None:
        options["pad_token_id"] = tokenizer.eos_token_id

    def run(stream: bool, assistant: Any, max_new_tokens: int | None = None) -> tuple[torch.Tensor, float]:
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
    run(False, draft, warmup)
    if not args.no_baseline:
        run(False, None, warmup)
    drafted, draft_seconds = run(True, draft)
    stats = draft.stats
    print(f"\n--- {_rate(len(drafted), draft_seconds)} with the draft")
    print(f"draft: {len(draft.skip.kept_layers)} of {draft.skip.num_layers} layers kept; {stats}")
    if stats.rounds_from("lookup"):
        print(
            f"rounds by source: {stats.rounds_from('draft')} from the draft, "
            f"{stats.rounds_from('lookup')} from prompt lookup"
        )
    if args.no_baseline:
        return 0
    plain, plain_seconds = run(False, None)
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
    return 0


def _rate(tokens: int, seconds: float) -> str:
    return f"{tokens} tokens in {seconds:.2f} s ({tokens / seconds:.1f} tokens/s)"


def _inspect(args: argparse.Namespace) -> int:
    from .config import SDFPConfig
    from .hub import PLOT_NAME

    _check_mask_name(args.mask)
    mask = SDFPConfig.from_pretrained(
        args.mask, revision=args.revision, subfolder=args.subfolder, token=args.token
    )
    if args.json:
        print(mask.to_json_string(), end="")
        return 0
    n = mask.num_hidden_layers
    whole = mask.skip_layers
    kept = n - len(whole)
    print(f"mask: {args.mask}" + (f" ({args.subfolder})" if args.subfolder else ""))
    base = mask.base_model_name_or_path or "unknown"
    print(f"model: {base}" + (f" at revision {mask.revision}" if mask.revision else ""))
    print(
        f"architecture: {mask.model_type}, {n} layers, hidden size {mask.hidden_size}, vocabulary {mask.vocab_size}"
        + (f", layer types {', '.join(sorted(set(mask.layer_types)))}" if mask.layer_types else "")
    )
    print(f"granularity: {mask.granularity}")
    print(f"skipped layers: {_indices(whole, n)}")
    if mask.granularity == "sublayer" or mask.skip_attention or mask.skip_mlp:
        print(f"skipped attention only: {_indices(mask.skip_attention)}")
        print(f"skipped MLP only: {_indices(mask.skip_mlp)}")
    print(f"draft: {kept} of {n} layers kept")
    print(
        f"draft settings: {mask.num_assistant_tokens} tokens per round ({mask.num_assistant_tokens_schedule}), "
        f"confidence threshold {mask.assistant_confidence_threshold}"
    )
    if mask.draft_vocab is not None:
        print(f"draft vocabulary: {len(mask.draft_vocab)} of {mask.vocab_size} tokens")
    if mask.scores:
        kinds = [k for k in ("layer", "attention", "mlp") if k in mask.scores] + sorted(
            set(mask.scores) - {"layer", "attention", "mlp"}
        )
        attention, mlp = set(mask.attention_skipped), set(mask.mlp_skipped)
        print(f"scores ({mask.scoring_method or 'method not recorded'}; lower is safer to skip):")
        rows = [["#", *kinds, "skipped"]]
        for i in range(n):
            skipped = (
                "layer"
                if i in attention and i in mlp
                else "attention"
                if i in attention
                else "mlp"
                if i in mlp
                else ""
            )
            rows.append([str(i), *(f"{mask.scores[k][i]:.4g}" for k in kinds), skipped])
        _print_table(rows)
    else:
        print("scores: none recorded")
    if mask.calibration:
        print("calibration: " + ", ".join(f"{k}={v}" for k, v in mask.calibration.items()))
    else:
        print("calibration: not recorded")
    if mask.measurements:
        print("measurements: " + ", ".join(f"{k}={v}" for k, v in mask.measurements.items()))
    print(f"created with sdfp-hf {mask.sdfp_version} (format version {mask.format_version})")
    print(f"plot: {_plot_path(args, PLOT_NAME) or 'none'}")
    return 0


def _plot_path(args: argparse.Namespace, name: str) -> str | None:
    local = Path(args.mask).expanduser()
    if local.is_file():
        local = local.parent
    if local.is_dir():
        path = local / args.subfolder / name if args.subfolder else local / name
        return str(path) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return hf_hub_download(
            args.mask, name, subfolder=args.subfolder, revision=args.revision, token=args.token
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError):
        return None


def _push(args: argparse.Namespace) -> int:
    from .config import CONFIG_NAME, SDFPConfig
    from .hub import PLOT_NAME

    folder = Path(args.mask_dir).expanduser()
    if not (folder / CONFIG_NAME).is_file():
        raise CommandError(
            f"`{args.mask_dir}` is not a mask folder (no {CONFIG_NAME} in it): write one with `{PROG} profile "
            "--out DIR`"
        )
    mask = SDFPConfig.from_pretrained(folder)
    plot = folder / PLOT_NAME
    _status(f"Pushing {folder} to {args.repo} ...")
    url = mask.push_to_hub(
        args.repo,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        subfolder=args.subfolder,
        plot_path=plot if plot.is_file() else None,
    )
    print(url)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .assistant import SDFPAssistant
    from .export import save_standalone

    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise CommandError(f"OUT `{args.out}` is a file, not a folder")
    if out.is_dir() and any(out.glob("*.safetensors")):
        raise CommandError(
            f"OUT `{args.out}` already holds a checkpoint: choose an empty folder or remove it"
        )
    mask = _load_mask(args)
    model, tokenizer = _load_model(args)
    draft = SDFPAssistant.from_target(model, mask=mask)
    _status(f"Exporting the draft to {out} ...")
    save_standalone(draft, out, tokenizer=tokenizer)
    skip = draft.skip
    partial = sorted((set(skip.attention) | set(skip.mlp)) - set(skip.layers))
    print(
        f"wrote {out}: {len(skip.kept_layers)} of {skip.num_layers} layers of {model.config.name_or_path or args.model}"
    )
    if partial:
        print(
            f"note: layers {partial} keep a skipped branch with its output projection set to zero: exact, but "
            "still computed in this checkpoint"
        )
    target = model.config.name_or_path or args.model
    speculative = json.dumps({"model": str(out), "num_speculative_tokens": 5, "method": "draft_model"})
    print("load it with:  AutoModelForCausalLM.from_pretrained(" + repr(str(out)) + ")")
    print(f"serve it with vLLM (GPU):  vllm serve {target} --speculative-config '{speculative}'")
    return 0


def _bench(argv: list[str]) -> int:
    try:
        from .benchmark import main as bench_main
    except ImportError as e:
        raise CommandError(
            f"the benchmark harness is not available in this installation of sdfp-hf ({e})"
        ) from None
    return bench_main(argv, prog=f"{PROG} bench")


# ---------------------------------------------------------------------------------------------- main


def _show_warning(
    message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    print(f"{PROG}: warning: {_one_line(Warning(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `sdfp` command; returns the exit status (0 on success, 1 on error, 2 on a wrong command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `bench` hands every argument after it to the harness's own parser (its --help included).
    leading = 0
    while leading < len(argv) and argv[leading] in ("-v", "--verbose"):
        leading += 1
    if leading < len(argv) and argv[leading] == "bench":
        verbose = leading > 0
        return _run(lambda: _bench(argv[leading + 1 :]), verbose)
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    return _run(lambda: args.run(args), verbose)


def _run(job: Any, verbose: bool) -> int:
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    # The profiler's summary is logged at INFO. Library chatter (Hub retries, deprecation notes) would bury
    # the one-line error, so below ERROR it shows only with --verbose. Levels are restored afterwards, for
    # callers of `main` in a live process.
    levels = {"sdfp_hf": logging.INFO}
    if not verbose:
        levels.update(transformers=logging.ERROR, huggingface_hub=logging.ERROR)
        for module, variable in (
            ("transformers", "TRANSFORMERS_VERBOSITY"),
            ("huggingface_hub", "HF_HUB_VERBOSITY"),
        ):
            if module not in sys.modules:  # it would set its level from the environment when imported
                os.environ.setdefault(variable, "error")
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return int(job() or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure becomes one line; the traceback on request
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = show
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
