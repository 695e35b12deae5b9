"""`SkipSet`: which residual branches of which decoder layers a draft skips, and its one validator.

Every skip list sdfp-hf accepts, from a user (`from_target(skip_layers=...)`), from a mask file
(`SDFPConfig`) or from the profiler, goes through `SkipSet.from_lists`, so a bad index reads the same
wherever it came from. A `SkipSet` knows nothing of models: only the number of decoder layers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GRANULARITIES", "SkipSet"]

GRANULARITIES = ("layer", "sublayer")
"""Whole decoder layers, or their attention and MLP branches separately."""


@dataclass(frozen=True)
class SkipSet:
    """Which branches of which decoder layers the draft skips.

    Args:
        num_layers (`int`): number of decoder layers of the target.
        attention (`tuple[int, ...]`): layers whose attention branch is skipped, sorted.
        mlp (`tuple[int, ...]`): layers whose MLP branch is skipped, sorted.

    A whole skipped layer is one whose attention and MLP are both skipped. Build one from user input
    with [`SkipSet.from_lists`], which validates every index.
    """

    num_layers: int
    attention: tuple[int, ...] = ()
    mlp: tuple[int, ...] = ()

    @classmethod
    def from_lists(
        cls,
        num_layers: int,
        *,
        skip_layers: Iterable[int] | None = None,
        skip_attention: Iterable[int] | None = None,
        skip_mlp: Iterable[int] | None = None,
        error: type[ValueError] = ValueError,
    ) -> SkipSet:
        """Validate skip lists and build a `SkipSet`.

        Args:
            num_layers (`int`): number of decoder layers.
            skip_layers (`list[int]`, *optional*): layers skipped whole.
            skip_attention (`list[int]`, *optional*): layers whose attention alone is skipped.
            skip_mlp (`list[int]`, *optional*): layers whose MLP alone is skipped.
            error (`type[ValueError]`, *optional*): the exception raised (a mask file raises its own
                `SDFPConfigError`).

        Raises:
            `error`: a list is not a list of integers, an index is out of range or repeated, a layer is
                skipped both whole and by branch, or nothing would be left to draft with. The message
                names the value and the fix.
        """
        layers = _indices("skip_layers", skip_layers, num_layers, error)
        attention = _indices("skip_attention", skip_attention, num_layers, error)
        mlp = _indices("skip_mlp", skip_mlp, num_layers, error)
        for name, sub in (("skip_attention", attention), ("skip_mlp", mlp)):
            both = sorted(set(layers) & set(sub))
            if both:
                raise error(
                    f"layers {both} are in both `skip_layers` and `{name}`: a layer is skipped whole or by "
                    "sub-layer, not both"
                )
        skip = cls(num_layers, tuple(sorted({*layers, *attention})), tuple(sorted({*layers, *mlp})))
        if len(skip.attention) == num_layers and len(skip.mlp) == num_layers:
            raise error(
                f"this skips all {num_layers} decoder layers (every attention and every MLP branch), leaving "
                "no draft: keep at least one layer (a typical draft skips 25-50% of them)"
            )
        if len(skip.attention) == num_layers:
            raise error(
                f"this skips the attention of all {num_layers} layers: a draft needs at least one attention "
                "sub-layer to read the context; keep one"
            )
        return skip

    @property
    def layers(self) -> tuple[int, ...]:
        """Layers skipped whole (both branches)."""
        return tuple(sorted(set(self.attention) & set(self.mlp)))

    @property
    def kept_layers(self) -> tuple[int, ...]:
        """Target layers present in the draft (at least one branch kept), in order."""
        whole = set(self.layers)
        return tuple(i for i in range(self.num_layers) if i not in whole)

    @property
    def is_layer_granular(self) -> bool:
        """True when every skipped branch belongs to a layer skipped whole."""
        return set(self.attention) == set(self.mlp)

    @property
    def is_empty(self) -> bool:
        """True when nothing is skipped."""
        return not self.attention and not self.mlp

    def to_lists(self) -> dict[str, list[int]]:
        """The skip lists: `skip_layers` (whole layers), `skip_attention` and `skip_mlp` (branches alone).

        These are the keyword arguments of `SDFPAssistant.from_target` and the skip fields of a mask.
        """
        whole = set(self.layers)
        return {
            "skip_layers": sorted(whole),
            "skip_attention": [i for i in self.attention if i not in whole],
            "skip_mlp": [i for i in self.mlp if i not in whole],
        }

    def as_mask_fields(self) -> dict[str, object]:
        """The skip fields of an `SDFPConfig` describing this skip set (the lists and the granularity)."""
        return {"granularity": "layer" if self.is_layer_granular else "sublayer", **self.to_lists()}

    def saved_fraction(self, attention_costs: Iterable[float], mlp_costs: Iterable[float]) -> float:
        """Fraction of the decoder layers' cost (e.g. their bytes) that this skip set does not read."""
        attention_costs, mlp_costs = list(attention_costs), list(mlp_costs)
        total = sum(attention_costs) + sum(mlp_costs)
        saved = sum(attention_costs[i] for i in self.attention) + sum(mlp_costs[i] for i in self.mlp)
        return saved / total if total else 0.0


def _indices(name: str, values: Iterable[int] | None, num_layers: int, error: type[ValueError]) -> tuple[int, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise error(f"`{name}` must be a list of layer indices, got {values!r}")
    values = list(values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise error(f"`{name}` must hold integer layer indices, got {v!r} in {values}")
        if v < 0:
            raise error(
                f"`{name}` holds the negative index {v}: use layer indices 0..{num_layers - 1} "
                f"(e.g. {num_layers + v} for the {-v}-th layer from the end)"
            )
        if v >= num_layers:
            raise error(
                f"`{name}` holds index {v}, but the model has {num_layers} decoder layers (0..{num_layers - 1})"
            )
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise error(f"`{name}` lists layers {dupes} more than once: list each layer once")
    return tuple(sorted(values))
