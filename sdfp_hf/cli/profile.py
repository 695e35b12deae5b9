"""`sdfp profile`: profile a model and write a mask folder (sdfp_config.json, model card, score plot)."""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path
from typing import Any

from ._common import (
    PROG,
    CommandError,
    expanded,
    indices,
    load_target,
    model_options,
    positive_int,
    skip_ratio,
    status,
)

HELP = "profile a model and write a mask folder"
DESCRIPTION = (
    "Score every decoder layer (and its attention and MLP branches) of MODEL by Fisher information on "
    "calibration data, choose what the draft skips, and write a mask folder: sdfp_config.json, a model "
    "card (README.md) and a plot of the scores (sdfp_scores.png)."
)
EPILOG = (
    "examples:\n"
    f"  {PROG} profile smollm2-135m --out smollm2-mask                 # data-free, skip ratio chosen automatically\n"
    f"  {PROG} profile smollm2-135m --calibration prompts.jsonl --skip-ratio 0.3 --out mask\n"
    f"  {PROG} profile Qwen/Qwen2.5-0.5B --dataset wikitext --dataset-config wikitext-2-raw-v1 --out mask\n"
    f"  {PROG} profile smollm2-135m --out mask --push-to-hub my-user/smollm2-135m-sdfp\n"
    f"  {PROG} profile smollm2-135m --out smollm2-mask --overwrite     # replace an earlier mask"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_options(p)
    data = p.add_argument_group("calibration data (default: data-free, the model's own samples)")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--calibration",
        metavar="FILE",
        default=None,
        type=expanded,
        help="a text file (paragraphs separated by blank lines) or a JSONL file (one string, or one object "
        "with a --text-column field, per line)",
    )
    source.add_argument("--dataset", metavar="NAME", default=None, help="a `datasets` dataset name or path")
    data.add_argument("--dataset-config", default=None, help="configuration name of --dataset")
    data.add_argument("--split", default="train", help="split of --dataset (default: %(default)s)")
    data.add_argument(
        "--text-column", default="text", help="field holding the text in JSONL files and datasets (default: %(default)s)"
    )
    data.add_argument(
        "--num-sequences", type=positive_int, default=None, help="calibration sequences (default: the profiler's)"
    )
    data.add_argument(
        "--sequence-length", type=positive_int, default=None, help="tokens per sequence (default: the profiler's)"
    )
    choice = p.add_argument_group("what to skip")
    choice.add_argument(
        "--skip-ratio",
        type=skip_ratio,
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
        "--method", default=None, help="scoring method (default: the profiler's; see sdfp_hf.fit.SCORING_METHODS)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of calibration sampling and scoring (default: %(default)s)")
    p.add_argument(
        "--out", metavar="DIR", default=None, type=expanded,
        help="mask folder to write (default: ./<model name>-sdfp-mask)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a mask and score plot the folder already holds (default: refuse, before profiling)",
    )
    hub = p.add_argument_group("publishing")
    hub.add_argument("--push-to-hub", metavar="REPO", default=None, help="also publish the mask to this Hub repository")
    hub.add_argument("--private", action="store_true", help="create the repository as private")
    hub.add_argument("--token", default=None, help="Hub token with write access (default: the saved one)")


def default_out(model: str) -> str:
    stem = Path(model.rstrip("/\\")).name
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', stem) or 'model'}-sdfp-mask"


def _calibration_source(args: argparse.Namespace) -> Any:
    from ..calibration import dataset_texts, texts_from_file

    if args.calibration is not None:
        return texts_from_file(args.calibration, args.text_column)
    if args.dataset is None:
        if args.dataset_config is not None:
            raise CommandError("--dataset-config needs --dataset")
        return None
    status(f"Loading dataset {args.dataset} ({args.split}) ...")
    return dataset_texts(args.dataset, args.dataset_config, split=args.split, text_column=args.text_column)


def _describe(args: argparse.Namespace, source: Any) -> str:
    if source is None:
        return "data-free (the model's own samples)"
    if isinstance(source, list):
        return f"{len(source)} text(s) from {args.calibration}"
    return f"dataset {args.dataset}"


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse, before any profiling, a folder whose mask or plot would be replaced without --overwrite."""
    from ..config import CONFIG_NAME
    from ..hub import PLOT_NAME

    if out.exists() and not out.is_dir():
        raise CommandError(f"--out `{out}` is a file, not a folder")
    for name in (CONFIG_NAME, PLOT_NAME):
        path = out / name
        if path.is_symlink():
            raise CommandError(f"`{path}` is a symbolic link: sdfp never writes through a link; remove it or choose --out")
        if path.exists() and not overwrite:
            raise CommandError(
                f"`{out}` already holds a mask ({path}) and is kept: pass --overwrite to replace it, or choose "
                "another folder with --out"
            )


def run(args: argparse.Namespace) -> int:
    from .._files import OverwriteError
    from ..profiler import profile

    out = Path(args.out if args.out is not None else default_out(args.model))
    _check_out(out, args.overwrite)
    source = _calibration_source(args)
    model, tokenizer = load_target(args)
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
    status(f"Profiling on {_describe(args, source)}, skip ratio {args.skip_ratio} ...")
    result = profile(model, source, **kwargs)
    mask = result.to_config(model)

    png: bytes | None
    try:
        png = result.plot()
    except ImportError as e:
        hint = ": install it with pip install 'sdfp-hf[plot]'" if e.name == "matplotlib" else ""
        warnings.warn(f"no score plot written ({e}){hint}", stacklevel=1)
        png = None
    try:
        mask.save_pretrained(out, plot=png, overwrite=args.overwrite)
    except OverwriteError as e:  # written meanwhile, by someone else
        raise CommandError(f"`{e.path}` already exists and is kept: pass --overwrite to replace it") from None
    _print_result(mask, out, png is not None)
    if args.push_to_hub:
        url = mask.push_to_hub(args.push_to_hub, private=args.private or None, token=args.token, plot_path=png)
        print(f"published to {args.push_to_hub}: {url}")
    print(f'next: {PROG} generate {args.model} --mask {out} "your prompt"')
    return 0


def _print_result(mask: Any, out: Path, plotted: bool) -> None:
    from ..hub import PLOT_NAME

    print(f"skipped layers: {indices(mask.skip_layers, mask.num_hidden_layers)}")
    if mask.granularity == "sublayer":
        print(f"skipped attention only: {indices(mask.skip_attention)}; skipped MLP only: {indices(mask.skip_mlp)}")
    if mask.measurements.get("predicted_speedup") is not None:
        print(
            f"predicted speedup: {mask.measurements['predicted_speedup']:.2f}x at {mask.num_assistant_tokens} tokens "
            f"per round ({mask.measurements.get('acceptance', 0):.0%} of drafted tokens accepted)"
        )
    print(f"wrote the mask to {out}/ (sdfp_config.json, README.md{', ' + PLOT_NAME if plotted else ''})")
