"""The draft's view of the target's KV cache.

During assisted generation the target's `DynamicCache` holds, for every layer, the keys and values of
the verified prefix, computed by the full model. A layer-skipping draft keeps a subset of the target's
layers, so for each kept attention layer it can attend to exactly those entries instead of keeping a
second, approximate cache of its own: no second prefill, and the draft sees the true context.

`DraftCache` presents, for the draft's layer `j`, the target's layer `layer_map[j]` plus the draft's own
speculative entries of the current round. It never writes to the target's cache: it is built at the
start of a round and dropped at its end, so the target cache is exactly what plain decoding would have.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DummyLayer, DynamicLayer

__all__ = ["DraftCache", "SpeculativeLayer"]


class SpeculativeLayer(CacheLayerMixin):
    """One draft layer: the target layer's verified entries, read-only, followed by speculative ones.

    Args:
        base (`DynamicLayer`):
            The target's cache layer (a `DynamicLayer` or `DynamicSlidingWindowLayer`). It is only read.
    """

    is_croppable = True

    def __init__(self, base: DynamicLayer):
        super().__init__()
        if not isinstance(base, DynamicLayer):
            raise TypeError(
                f"sdfp-hf drafts read the target's dynamic KV cache, got a {type(base).__name__} layer: "
                "generate with the default cache (no `cache_implementation`)"
            )
        self.base = base
        self.is_sliding = base.is_sliding
        self.sliding_window = getattr(base, "sliding_window", None)
        self.is_initialized = True
        self._spec_keys: torch.Tensor | None = None
        self._spec_values: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass

    @property
    def num_speculative(self) -> int:
        return 0 if self._spec_keys is None else self._spec_keys.shape[-2]

    def get_seq_length(self) -> int:
        return self.base.get_seq_length() + self.num_speculative

    def get_max_length(self) -> int:
        return self.base.get_max_length()

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        # Same arithmetic as the base layer's, over the verified plus speculative length.
        seen = self.get_seq_length()
        if not self.is_sliding:
            return seen + query_length, 0
        window = self.sliding_window
        if seen >= window:
            return window - 1 + query_length, seen - window + 1
        return seen + query_length, 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append speculative entries; return the verified entries followed by all speculative ones."""
        if self._spec_keys is None:
            self._spec_keys, self._spec_values = key_states, value_states
        else:
            self._spec_keys = torch.cat([self._spec_keys, key_states], dim=-2)
            self._spec_values = torch.cat([self._spec_values, value_states], dim=-2)
        keys, values = self._spec_keys, self._spec_values
        if self.base.is_initialized and self.base.keys.numel():
            keys = torch.cat([self.base.keys, keys], dim=-2)
            values = torch.cat([self.base.values, values], dim=-2)
        if self.is_sliding:
            # What `get_mask_sizes` announced before this update: at most window - 1 + query entries.
            visible = self.sliding_window - 1 + key_states.shape[-2]
            keys, values = keys[..., -visible:, :], values[..., -visible:, :]
        return keys, values

    def crop(self, tokens_to_remove: int) -> None:
        raise RuntimeError("a DraftCache is discarded after each round, never cropped")


class DraftCache(Cache):
    """A cache for the draft whose layer `j` reads the target's layer `layer_map[j]`.

    Args:
        target_cache (`Cache`): the target's cache, holding the verified prefix.
        layer_map (`Sequence[int | None]`):
            For each draft layer, the index of the target layer whose entries it reads, or `None` for a
            draft layer whose attention is skipped (it holds no cache).
    """

    def __init__(self, target_cache: Cache, layer_map: Sequence[int | None]):
        layers = [DummyLayer() if t is None else SpeculativeLayer(target_cache.layers[t]) for t in layer_map]
        super().__init__(layers=layers)
