"""`evaluate` metric modules shipped with sdfp-hf, loadable offline by file path.

    import evaluate
    from sdfp_hf.metrics import path

    metric = evaluate.load(path("speculative_decoding"))
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["METRICS", "path"]

#: Names of the metric modules in this folder.
METRICS = ("speculative_decoding",)


def path(name: str = "speculative_decoding") -> str:
    """The file path of a metric module, for `evaluate.load(path(name))`.

    Args:
        name (`str`, *optional*, defaults to `"speculative_decoding"`): one of `METRICS`.
    """
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}: sdfp-hf ships {', '.join(METRICS)}")
    return str(Path(__file__).with_name(f"{name}.py"))
