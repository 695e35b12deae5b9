"""What the `sdfp` subcommands share: argument types, the model and mask options, loading, printing."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._files import expand

PROG = "sdfp"
DTYPES = ("float32", "bfloat16", "float16", "auto", "fp32", "bf16", "fp16")


class CommandError(Exception):
    """A failure the user can fix, reported as one line without a traceback."""


# ---------------------------------------------------------------------------------------------- arguments


def skip_ratio(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1) or 'auto', got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1) or 'auto', got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def expanded(text: str) -> str:
    """A path argument with `~` and environment variables expanded, as the Python API expands them."""
    return expand(text)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples of an epilog as written; descriptions are wrapped by `wrap`."""


def wrap(text: str) -> str:
    return textwrap.fill(text, width=min(100, shutil.get_terminal_size().columns - 2))


def model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="Hub id, local folder, local .gguf file or local model name")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
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
        type=expanded,
        help="mask folder or Hub repo id" + ("" if required else " (default: profile the model now)"),
    )
    p.add_argument("--mask-revision", default=None, help="branch, tag or commit of a Hub mask")
    p.add_argument("--mask-subfolder", default=None, help="folder of the repository or folder holding the mask")
    p.add_argument("--token", default=None, help="Hub token (default: the saved one, `hf auth login`)")


# ---------------------------------------------------------------------------------------------- loading


def status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def looks_like_path(name: str) -> bool:
    # A Hub id is `name` or `user/name`; anything else with a separator, or a .gguf name, is a path.
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.lower().endswith(".gguf")


def load_target(args: argparse.Namespace) -> tuple[Any, Any]:
    from ..models import load_model

    name = args.model
    if not Path(expanded(name)).exists() and looks_like_path(name):
        raise CommandError(
            f"MODEL `{name}` does not exist: pass a local folder or .gguf file, a Hub id (user/name) or the name "
            "of a local model (in a checkout of sdfp-hf: `python -m benchmarks.catalogue list`)"
        )
    status(f"Loading {name} ({args.dtype}) ...")
    start = time.perf_counter()
    model, tokenizer = load_model(name, dtype=args.dtype, device=args.device, revision=args.revision)
    status(f"Loaded {model.config.name_or_path or name} in {time.perf_counter() - start:.1f} s")
    return model, tokenizer


def check_mask_name(name: str) -> None:
    # A published mask is always `user/name`: anything else that is not on disk is a missing folder, and
    # saying so beats a round of Hub requests for a repository that cannot exist.
    if not Path(name).exists() and (looks_like_path(name) or "/" not in name):
        raise CommandError(
            f"MASK `{name}` is neither an existing folder nor a Hub repository id (user/name): check the path, "
            f"or write a mask with `{PROG} profile MODEL --out DIR`"
        )


def load_mask(args: argparse.Namespace) -> Any:
    from ..config import SDFPConfig

    check_mask_name(args.mask)
    return SDFPConfig.from_pretrained(args.mask, revision=args.mask_revision, subfolder=args.mask_subfolder, token=args.token)


# ---------------------------------------------------------------------------------------------- printing


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths)).rstrip())


def indices(values: Sequence[int], of: int | None = None) -> str:
    if not values:
        return "none"
    text = ", ".join(map(str, values))
    return f"{len(values)} of {of}: {text}" if of is not None else text


def one_line(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    return re.sub(r"\s*\n\s*", " ", text).strip()
