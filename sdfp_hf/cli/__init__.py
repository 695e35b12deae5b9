"""The `sdfp` command: profile a model, generate with its draft, inspect, publish and export masks.

    sdfp profile smollm2-135m --out smollm2-mask
    sdfp generate smollm2-135m --mask smollm2-mask --chat "Write a haiku about the sea."
    sdfp inspect smollm2-mask
    sdfp push smollm2-mask my-user/smollm2-135m-sdfp
    sdfp export smollm2-135m --mask smollm2-mask smollm2-draft

MODEL is a Hub id, a local folder, a local `.gguf` file or the name of a local model (`sdfp_hf.models`).
MASK is a folder holding `sdfp_config.json` or a Hub repository id. Each subcommand is one module of this
package (its parser arguments and its `run`).

Errors are one line on stderr, `sdfp: error: ...`, with exit status 1 (2 for a wrong command line, as
argparse does); `--verbose` prints the traceback too. Heavy imports happen inside the commands, so
`--help` stays quick.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from . import export, generate, inspect, profile, push
from ._common import PROG, Formatter, one_line, wrap

__all__ = ["build_parser", "main"]

COMMANDS = {"profile": profile, "generate": generate, "inspect": inspect, "push": push, "export": export}


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
        epilog="MODEL: a Hub id, a local folder, a local .gguf file or a local model name (smollm2-135m, ...). "
        f"MASK: a folder holding sdfp_config.json or a Hub repository id. Run `{PROG} COMMAND --help` for each "
        "command's options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traceback of an error")
    parser.add_argument("--version", action="version", version=f"sdfp-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        p = commands.add_parser(
            name,
            help=module.HELP,
            description=wrap(module.DESCRIPTION),
            epilog=module.EPILOG,
            parents=[common],
            formatter_class=Formatter,
        )
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"{PROG}: warning: {one_line(Warning(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `sdfp` command; returns the exit status (0 on success, 1 on error, 2 on a wrong command line)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return _run(lambda: args.run(args), getattr(args, "verbose", False))


def _run(job: Any, verbose: bool) -> int:
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    # The profiler's summary is logged at INFO. Library chatter (Hub retries, deprecation notes) would bury
    # the one-line error, so below ERROR it shows only with --verbose. Levels are restored afterwards, for
    # callers of `main` in a live process.
    levels = {"sdfp_hf": logging.INFO}
    if not verbose:
        levels.update(transformers=logging.ERROR, huggingface_hub=logging.ERROR)
        for module, variable in (("transformers", "TRANSFORMERS_VERBOSITY"), ("huggingface_hub", "HF_HUB_VERBOSITY")):
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
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = show
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
