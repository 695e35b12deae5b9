"""`sdfp inspect`: print what a mask holds (model, skips, scores, provenance, settings, measurements)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import PROG, check_mask_name, expanded, indices, print_table

HELP = "print what a mask holds"
DESCRIPTION = (
    "Print a mask's model, skipped layers and branches, per-layer scores, calibration provenance, draft "
    "settings, measurements and the path of its score plot."
)
EPILOG = f"examples:\n  {PROG} inspect smollm2-mask\n  {PROG} inspect my-user/smollm2-135m-sdfp --json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mask", metavar="MASK", type=expanded, help="mask folder, sdfp_config.json file or Hub repo id")
    p.add_argument("--revision", default=None, help="branch, tag or commit of a Hub mask")
    p.add_argument("--subfolder", default=None, help="folder of the repository or folder holding the mask")
    p.add_argument("--token", default=None, help="Hub token (default: the saved one)")
    p.add_argument("--json", action="store_true", help="print the mask's JSON as it is")


def run(args: argparse.Namespace) -> int:
    from ..config import SDFPConfig

    check_mask_name(args.mask)
    mask = SDFPConfig.from_pretrained(args.mask, revision=args.revision, subfolder=args.subfolder, token=args.token)
    if args.json:
        print(mask.to_json_string(), end="")
        return 0
    _print_model(args, mask)
    _print_scores(mask)
    print("calibration: " + (", ".join(f"{k}={v}" for k, v in mask.calibration.items()) or "not recorded"))
    if mask.measurements:
        print("measurements: " + ", ".join(f"{k}={v}" for k, v in mask.measurements.items()))
    print(f"created with sdfp-hf {mask.sdfp_version} (format version {mask.format_version})")
    print(f"plot: {_plot_path(args) or 'none'}")
    return 0


def _print_model(args: argparse.Namespace, mask: Any) -> None:
    n = mask.num_hidden_layers
    print(f"mask: {args.mask}" + (f" ({args.subfolder})" if args.subfolder else ""))
    base = mask.base_model_name_or_path or "unknown"
    print(f"model: {base}" + (f" at revision {mask.revision}" if mask.revision else ""))
    print(
        f"architecture: {mask.model_type}, {n} layers, hidden size {mask.hidden_size}, vocabulary {mask.vocab_size}"
        + (f", layer types {', '.join(sorted(set(mask.layer_types)))}" if mask.layer_types else "")
    )
    print(f"granularity: {mask.granularity}")
    print(f"skipped layers: {indices(mask.skip_layers, n)}")
    if mask.granularity == "sublayer" or mask.skip_attention or mask.skip_mlp:
        print(f"skipped attention only: {indices(mask.skip_attention)}")
        print(f"skipped MLP only: {indices(mask.skip_mlp)}")
    print(f"draft: {n - len(mask.skip_layers)} of {n} layers kept")
    print(
        f"draft settings: {mask.num_assistant_tokens} tokens per round ({mask.num_assistant_tokens_schedule}), "
        f"confidence threshold {mask.assistant_confidence_threshold}"
    )
    if mask.draft_vocab is not None:
        print(f"draft vocabulary: {len(mask.draft_vocab)} of {mask.vocab_size} tokens")


def _print_scores(mask: Any) -> None:
    if not mask.scores:
        print("scores: none recorded")
        return
    kinds = [k for k in ("layer", "attention", "mlp") if k in mask.scores]
    kinds += sorted(set(mask.scores) - {"layer", "attention", "mlp"})
    attention, mlp = set(mask.attention_skipped), set(mask.mlp_skipped)
    print(f"scores ({mask.scoring_method or 'method not recorded'}; lower is safer to skip):")
    rows = [["#", *kinds, "skipped"]]
    for i in range(mask.num_hidden_layers):
        skipped = "layer" if i in attention and i in mlp else "attention" if i in attention else "mlp" if i in mlp else ""
        rows.append([str(i), *(f"{mask.scores[k][i]:.4g}" for k in kinds), skipped])
    print_table(rows)


def _plot_path(args: argparse.Namespace) -> str | None:
    from ..hub import PLOT_NAME

    local = Path(args.mask)
    if local.is_file():
        local = local.parent
    if local.is_dir():
        path = local / args.subfolder / PLOT_NAME if args.subfolder else local / PLOT_NAME
        return str(path) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return hf_hub_download(args.mask, PLOT_NAME, subfolder=args.subfolder, revision=args.revision, token=args.token)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError):
        return None
