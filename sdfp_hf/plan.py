"""`DraftPlan`: what the draft does with every residual branch and with the output head.

Each branch of each decoder layer is one of: skipped (the `SkipSet`), shared with the target at the
target's precision (no extra memory), or a weight-only quantized copy (``"int8"``: per output channel;
``"int4"``: per group of `group_size` input columns). The output head is shared or quantized. A plan with
nothing quantized is a skip set and nothing more. A plan knows nothing of models: only the number of
layers. `from_lists` is its one validator, whatever the plan came from (a user, a mask, the profiler).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .skipset import SkipSet

__all__ = ["GROUP_SIZES", "PRECISIONS", "QUANTIZED", "DraftPlan"]

PRECISIONS = ("shared", "int8", "int4")
"""What a kept branch or the head can be: the target's own weights, or a quantized copy."""
QUANTIZED = ("int8", "int4")
GROUP_SIZES = (32, 64, 128, 256)
"""int4 group sizes (input columns sharing one scale and zero point)."""
DEFAULT_GROUP_SIZE = 64


@dataclass(frozen=True)
class DraftPlan:
    """What the draft does with each branch: skip it, share the target's weights, or quantize a copy.

    Args:
        skip (`SkipSet`): the skipped branches.
        attention (`tuple[str, ...]`): per decoder layer, the precision of its attention branch (one of
            `PRECISIONS`; ignored where the branch is skipped). Empty: every branch shared.
        mlp (`tuple[str, ...]`): likewise for the MLP branches.
        head (`str`): the output head's precision.
        group_size (`int`): the group size of int4 weights.
    """

    skip: SkipSet
    attention: tuple[str, ...] = field(default=())
    mlp: tuple[str, ...] = field(default=())
    head: str = "shared"
    group_size: int = DEFAULT_GROUP_SIZE

    def __post_init__(self) -> None:
        n = self.skip.num_layers
        # normalised: full length, skipped branches "shared" (they hold nothing)
        for kind, skipped in (("attention", self.skip.attention), ("mlp", self.skip.mlp)):
            values = getattr(self, kind) or ("shared",) * n
            values = tuple("shared" if i in skipped else v for i, v in enumerate(values))
            object.__setattr__(self, kind, values)

    @classmethod
    def from_lists(
        cls,
        num_layers: int,
        *,
        skip_layers: Sequence[int] | None = None,
        skip_attention: Sequence[int] | None = None,
        skip_mlp: Sequence[int] | None = None,
        quantize: str | None = None,
        attention: Sequence[str] | None = None,
        mlp: Sequence[str] | None = None,
        head: str | None = None,
        group_size: int = DEFAULT_GROUP_SIZE,
        error: type[ValueError] = ValueError,
    ) -> DraftPlan:
        """Validate a plan and build it.

        Args:
            num_layers (`int`): number of decoder layers.
            skip_layers, skip_attention, skip_mlp: what is skipped (see `SkipSet.from_lists`).
            quantize (`str`, *optional*): one precision for every kept branch and the head (``"int8"`` or
                ``"int4"``); `attention`, `mlp` and `head` override it per branch.
            attention, mlp (`list[str]`, *optional*): per layer precisions.
            head (`str`, *optional*): the output head's precision.
            group_size (`int`, *optional*, defaults to 64): int4 group size, one of `GROUP_SIZES`.
            error (`type[ValueError]`, *optional*): the exception raised.
        """
        skip = SkipSet.from_lists(
            num_layers, skip_layers=skip_layers, skip_attention=skip_attention, skip_mlp=skip_mlp, error=error
        )
        if quantize is not None:
            _check_precision("quantize", quantize, error)
        base = quantize or "shared"
        branches = {}
        for name, values in (("attention", attention), ("mlp", mlp)):
            if values is None:
                branches[name] = (base,) * num_layers
                continue
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise error(f"`{name}` precisions must be a list of {num_layers} of {PRECISIONS}, got {values!r}")
            if len(values) != num_layers:
                raise error(f"`{name}` precisions must list one per layer ({num_layers}), got {len(values)}")
            for v in values:
                _check_precision(name, v, error)
            branches[name] = tuple(values)
        head = base if head is None else head
        _check_precision("head", head, error)
        if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
            raise error(f"int4 `group_size` must be one of {GROUP_SIZES}, got {group_size!r}")
        return cls(skip, branches["attention"], branches["mlp"], head, group_size)

    @classmethod
    def from_dict(cls, skip: SkipSet, precision: dict[str, Any] | None, error: type[ValueError] = ValueError) -> DraftPlan:
        """A plan from a skip set and a mask's `precision` field (`None`: everything shared)."""
        if precision is None:
            return cls(skip)
        if not isinstance(precision, dict):
            raise error(f"precision must be an object with `attention`, `mlp`, `head`, got {precision!r}")
        unknown = sorted(set(precision) - {"attention", "mlp", "head", "group_size"})
        if unknown:
            raise error(f"precision has unknown keys {unknown}: it holds `attention`, `mlp`, `head` and `group_size`")
        return cls.from_lists(
            skip.num_layers,
            **skip.to_lists(),
            attention=precision.get("attention"),
            mlp=precision.get("mlp"),
            head=precision.get("head", "shared"),
            group_size=precision.get("group_size", DEFAULT_GROUP_SIZE),
            error=error,
        )

    def to_dict(self) -> dict[str, Any] | None:
        """The mask's `precision` field: `None` when nothing is quantized."""
        if not self.is_quantized:
            return None
        return {
            "attention": list(self.attention),
            "mlp": list(self.mlp),
            "head": self.head,
            "group_size": self.group_size,
        }

    @property
    def num_layers(self) -> int:
        return self.skip.num_layers

    @property
    def is_quantized(self) -> bool:
        """True when some branch or the head is a quantized copy (the draft then holds memory of its own)."""
        return self.head != "shared" or any(p != "shared" for p in (*self.attention, *self.mlp))

    def precision(self, layer: int, kind: str) -> str:
        """The precision of branch `kind` (``"attention"`` or ``"mlp"``) of `layer`; ``"skip"`` if skipped."""
        if layer in (self.skip.attention if kind == "attention" else self.skip.mlp):
            return "skip"
        return (self.attention if kind == "attention" else self.mlp)[layer]

    def describe(self) -> str:
        """One line: what is skipped and what is quantized, e.g. ``"28 layers: 2 skipped; int8 26 attention, 26 MLP; head int8"``."""
        parts = []
        if self.skip.layers:
            parts.append(f"{len(self.skip.layers)} skipped")
        partial = (len(self.skip.attention) - len(self.skip.layers), len(self.skip.mlp) - len(self.skip.layers))
        if any(partial):
            parts.append(f"{partial[0]} attention and {partial[1]} MLP branches skipped")
        for fmt in QUANTIZED:
            a = sum(1 for i in range(self.num_layers) if self.precision(i, "attention") == fmt)
            m = sum(1 for i in range(self.num_layers) if self.precision(i, "mlp") == fmt)
            if a or m:
                parts.append(f"{fmt} {a} attention, {m} MLP")
        parts.append(f"head {self.head}")
        return f"{self.num_layers} layers: " + "; ".join(parts)


def _check_precision(name: str, value: Any, error: type[ValueError]) -> None:
    if value not in PRECISIONS:
        raise error(f"`{name}` precision must be one of {PRECISIONS}, got {value!r}")
