"""`sdfp push`: publish a mask folder to the Hub in one commit."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import PROG, CommandError, expanded, status

HELP = "publish a mask folder to the Hub"
DESCRIPTION = (
    "Publish the mask in MASK_DIR (sdfp_config.json, and sdfp_scores.png if present) to the Hub "
    "repository REPO in one commit, creating the repository if needed; a model card is added only if "
    "the repository has no README yet."
)
EPILOG = (
    f"examples:\n  {PROG} push smollm2-mask my-user/smollm2-135m-sdfp\n"
    f"  {PROG} push mask my-user/my-model --subfolder sdfp --create-pr"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mask_dir", metavar="MASK_DIR", type=expanded, help="local mask folder")
    p.add_argument("repo", metavar="REPO", help="Hub repository id, user/name")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="branch to commit to (created if needed)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--subfolder", default=None, help="repository folder to put the mask in")
    p.add_argument("--commit-message", default=None, help="commit message")
    p.add_argument("--token", default=None, help="Hub token with write access (default: the saved one)")


def run(args: argparse.Namespace) -> int:
    from ..config import CONFIG_NAME, SDFPConfig
    from ..hub import PLOT_NAME

    folder = Path(args.mask_dir)
    if not (folder / CONFIG_NAME).is_file():
        raise CommandError(
            f"`{args.mask_dir}` is not a mask folder (no {CONFIG_NAME} in it): write one with `{PROG} profile --out DIR`"
        )
    mask = SDFPConfig.from_pretrained(folder)
    plot = folder / PLOT_NAME
    status(f"Pushing {folder} to {args.repo} ...")
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
