"""A picture of a profile: per-layer attention and MLP scores, the skipped branches marked.

The PNG goes into the model card of a published mask. matplotlib is an optional extra
(``pip install 'sdfp-hf[plot]'``); nothing else in sdfp-hf needs it.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

from ._files import check_destination, expand_path, write_atomic

if TYPE_CHECKING:
    from .fit import LayerScores
    from .skipset import SkipSet

__all__ = ["plot_scores"]

_ATTENTION_COLOR = "#4C72B0"
_MLP_COLOR = "#DD8452"
_SKIPPED_COLOR = "#C44E52"
# below the axes, so that it never hides a bar
_LEGEND = dict(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)


def _import_matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting scores needs matplotlib, an optional dependency of sdfp-hf: pip install 'sdfp-hf[plot]'"
        ) from None
    return matplotlib, Figure


def plot_scores(
    scores: LayerScores,
    skip: SkipSet | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    log_scale: bool | None = None,
    dpi: int = 120,
    overwrite: bool = False,
) -> str | bytes:
    """Bar chart of each layer's attention and MLP scores; skipped branches drawn hatched in red.

    Args:
        scores (`LayerScores`): the profile's scores.
        skip (`SkipSet`, *optional*): what the draft skips, to mark.
        path (`str` or `os.PathLike`, *optional*): where to write the PNG (atomically; `~` and environment
            variables are expanded); without it the PNG bytes are returned (what
            `SDFPConfig.save_pretrained(plot=...)` accepts).
        title (`str`, *optional*): defaults to the scoring method and what is skipped.
        log_scale (`bool`, *optional*): logarithmic y axis; by default when the positive scores span more
            than two orders of magnitude.
        dpi (`int`, *optional*, defaults to 120): resolution.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing file at `path`; without
            it an existing plot is kept and [`OverwriteError`] raised (before anything is drawn).

    Returns:
        The path written, or the PNG bytes.
    """
    if path is not None:
        path = expand_path(path)
        check_destination(path, overwrite=overwrite)
    _, Figure = _import_matplotlib()
    n = scores.num_layers
    attention, mlp = list(scores.attention), list(scores.mlp)
    skipped_attention = set(skip.attention) if skip is not None else set()
    skipped_mlp = set(skip.mlp) if skip is not None else set()
    positive = [v for v in attention + mlp if v > 0]
    if log_scale is None:
        log_scale = bool(positive) and max(positive) / min(positive) > 100
    floor = min(positive) / 2 if (log_scale and positive) else 0.0

    fig = Figure(figsize=(max(6.0, 0.32 * n + 2), 3.6), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    width = 0.4
    xs = list(range(n))
    for offset, values, skipped, color, label in (
        (-width / 2, attention, skipped_attention, _ATTENTION_COLOR, "attention"),
        (width / 2, mlp, skipped_mlp, _MLP_COLOR, "MLP"),
    ):
        heights = [max(v, floor) for v in values]
        bars = ax.bar([x + offset for x in xs], heights, width, color=color, label=label)
        for i, bar in enumerate(bars):
            if i in skipped:
                bar.set_hatch("///")
                bar.set_edgecolor(_SKIPPED_COLOR)
                bar.set_linewidth(1.2)
    if skip is not None and (skipped_attention or skipped_mlp):
        from matplotlib.patches import Patch

        handles, labels = ax.get_legend_handles_labels()
        handles.append(Patch(facecolor="white", edgecolor=_SKIPPED_COLOR, hatch="///", label="skipped"))
        ax.legend(handles=handles, **_LEGEND)
        for i in sorted(set(skip.layers)):
            ax.axvspan(i - 0.5, i + 0.5, color=_SKIPPED_COLOR, alpha=0.08, linewidth=0)
    else:
        ax.legend(**_LEGEND)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs], fontsize=7)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel(f"{scores.method} score" + (" (log)" if log_scale else ""))
    if title is None:
        title = f"Layer sensitivity ({scores.method})"
        if skip is not None:
            whole = len(skip.layers)
            parts = [f"{whole} layers"] if whole else []
            only_attention = len(skipped_attention - set(skip.layers))
            only_mlp = len(skipped_mlp - set(skip.layers))
            if only_attention:
                parts.append(f"{only_attention} attention")
            if only_mlp:
                parts.append(f"{only_mlp} MLP")
            if parts:
                title += ": skipped " + ", ".join(parts)
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(axis="y", alpha=0.3)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    if path is not None:
        return str(write_atomic(path, buffer.getvalue(), overwrite=overwrite))
    return buffer.getvalue()
