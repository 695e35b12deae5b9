"""The draft's view of the target's KV cache, and the prefix cache the scorers and the replay use.

During assisted generation the target's `DynamicCache` holds, for every layer, the keys and values of
the verified prefix, computed by the full model. A layer-skipping draft keeps a subset of the target's
layers, so for each kept attention layer it can attend to exactly those entries instead of keeping a
second, approximate cache of its own: no second prefill, and the draft sees the true context.

- `DraftCache` presents, for the draft's layer `j`, the target's layer `layer_map[j]` plus the draft's own
  speculative entries of the current round. It never writes to the target's cache: it is built at the
  start of a round and dropped at its end, so the target cache is exactly what plain decoding would have.
- `PrefixLayer` / `PrefixCache` / `prefix_masks` let one batched forward see, per row, a given prefix of
  keys and values (the target's) followed by its own queries' entries, with a 4-D mask saying which
  columns each query sees. `local_forward` runs a model so that every position sees the DETACHED keys and
  values of its prefix: the scorers measure a branch the way the draft runs it, and the replay records
  the target's keys and values from it.
- `commit_tree` keeps, after a tree round, exactly the verified prefix and the accepted path in the target's
  cache, in order, as plain decoding over the same tokens would have left it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._compat import (
    Cache,
    CacheLayerMixin,
    DynamicLayer,
    DynamicSlidingWindowLayer,
    attn_implementation,
    cache_kwargs,
    no_cache_layer,
)

__all__ = [
    "DraftCache",
    "PrefixCache",
    "PrefixLayer",
    "SpeculativeLayer",
    "commit_tree",
    "local_forward",
    "prefix_masks",
    "tree_cache_problem",
]


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
        layers = [None if t is None else SpeculativeLayer(target_cache.layers[t]) for t in layer_map]
        peer = next((layer for layer in layers if layer is not None), None)
        super().__init__(layers=[no_cache_layer(peer) if layer is None else layer for layer in layers])


class PrefixLayer:
    """A cache layer that makes attention see ``cat([prefix, own])`` keys and values.

    With `prefix` given (the target's keys and values of a whole sequence), a draft's queries can attend
    to the target's exact prefix and to their own entries; with `prefix=None`, the prefix is the layer's
    own keys and values, detached, so that gradients reach a position's output only through the
    position itself. The 4-D attention mask built by `prefix_masks` says which columns each query sees.
    """

    is_compileable = False
    is_croppable = False
    is_sliding = False

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None, record: bool = False):
        self.prefix_keys, self.prefix_values = keys, values
        self.record = record
        self.keys = self.values = None
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:
        pass

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        pk = key_states.detach() if self.prefix_keys is None else self.prefix_keys
        pv = value_states.detach() if self.prefix_values is None else self.prefix_values
        if self.record:  # keep this layer's keys and values of the whole sequence (no sliding-window trim)
            self.keys, self.values = key_states.detach(), value_states.detach()
        return torch.cat([pk, key_states], dim=-2), torch.cat([pv, value_states], dim=-2)

    def get_seq_length(self) -> int:
        return 0

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return query_length, 0

    def get_max_length(self) -> int:
        return -1

    def offload(self) -> None: ...

    def prefetch(self) -> None: ...

    def reset(self) -> None: ...


class PrefixCache(Cache):
    """A cache of `PrefixLayer`s (`None` for a layer that holds no cache, e.g. a skipped attention)."""

    def __init__(self, layers: Sequence[PrefixLayer | None]):
        peer = next((layer for layer in layers if layer is not None), None)
        super().__init__(layers=[no_cache_layer(peer) if layer is None else layer for layer in layers])


def prefix_masks(
    config: Any,
    query_positions: torch.Tensor,
    window_starts: torch.Tensor,
    prefix_valid: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """4-D attention masks over ``cat([prefix, own])`` keys (see `PrefixLayer`).

    Query `i` of row `b` (at position ``query_positions[b, i]``) sees the prefix keys at positions below
    ``window_starts[b, i]`` and its own row's keys from ``window_starts[b, i]`` up to its own position,
    within the sliding window of sliding layers.

    Args:
        query_positions (`torch.LongTensor` of shape `(batch, queries)`): each row strictly increasing.
        window_starts (`torch.LongTensor` of shape `(batch, queries)`): at most the query position.
        prefix_valid (`torch.BoolTensor` of shape `(batch, prefix)`): which prefix positions hold real tokens.

    Returns:
        One mask of shape `(batch, 1, queries, prefix + queries)`, or a dict by layer type for models
        with `config.layer_types`; boolean for SDPA, additive float of `dtype` for eager attention.
    """
    impl = attn_implementation(config)
    if impl not in ("sdpa", "eager"):
        raise NotImplementedError(
            f"scoring with exact draft context needs SDPA or eager attention, this model uses {impl!r}: load it "
            "with `attn_implementation='sdpa'`"
        )
    prefix_len = prefix_valid.shape[1]
    key_pos = torch.arange(prefix_len, device=query_positions.device)
    q = query_positions[:, :, None]
    start = window_starts[:, :, None]
    prefix_ok = (key_pos[None, None, :] < start) & prefix_valid[:, None, :]
    own = query_positions[:, None, :]
    own_ok = (own >= start) & (own <= q)

    def build(window: int | None) -> torch.Tensor:
        p, o = prefix_ok, own_ok
        if window is not None:
            p = p & (key_pos[None, None, :] > q - window)
            o = o & (own > q - window)
        ok = torch.cat([p, o], dim=-1)[:, None]
        if impl == "sdpa":
            return ok
        return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill_(~ok, torch.finfo(dtype).min)

    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return {t: build(window if t == "sliding_attention" else None) for t in set(layer_types)}
    return build(window)


def local_forward(
    model: torch.nn.Module,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    record: list[PrefixLayer] | None = None,
) -> torch.Tensor:
    """Logits of a right-padded batch in which every position sees the detached keys and values of its prefix.

    Gradients then reach a position's output only through the position itself (as in a draft that reads
    the target's cache). With `record` (a list), the `PrefixLayer`s holding each layer's keys and values of
    the whole batch are appended to it.

    Args:
        model (`PreTrainedModel`): a causal LM with SDPA or eager attention.
        input_ids (`torch.LongTensor` of shape `(batch, length)`).
        attention_mask (`torch.Tensor` of shape `(batch, length)`): 1 for real tokens, 0 for padding.
        record (`list`, *optional*): receives the layers' recorded keys and values.
    """
    rows, length = input_ids.shape
    positions = torch.arange(length, device=input_ids.device).expand(rows, length)
    masks = prefix_masks(
        model.config, positions, positions, attention_mask.bool(), model.get_input_embeddings().weight.dtype
    )
    num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
    layers = [PrefixLayer(record=record is not None) for _ in range(num_layers)]
    if record is not None:
        record.extend(layers)
    return model(
        input_ids=input_ids, attention_mask=masks, position_ids=positions, use_cache=True,
        **cache_kwargs(model, PrefixCache(layers)),
    ).logits


def tree_cache_problem(cache: Any) -> str | None:
    """Why tree rounds cannot run on `cache` (None when they can): only dynamic layers can be gathered."""
    kinds = (DynamicLayer,) if DynamicSlidingWindowLayer is None else (DynamicLayer, DynamicSlidingWindowLayer)
    for layer in getattr(cache, "layers", None) or ():
        if type(layer) not in kinds:
            return f"the cache has {type(layer).__name__} layers"
    return None if hasattr(cache, "layers") else f"the cache is a {type(cache).__name__}"


def prepare_tree_cache(cache: Any) -> None:
    """Let sliding-window layers keep the whole round until `commit_tree` trims them (rejected nodes must not
    push out prefix entries the accepted path still sees)."""
    for layer in cache.layers:
        if hasattr(layer, "activate_past_recording"):
            layer.activate_past_recording()


def commit_tree(cache: Any, nodes: int, keep: Sequence[int]) -> None:
    """After a forward over `nodes` tree nodes, keep only the nodes `keep` (in order) of them in `cache`.

    Each layer's keys and values then hold the entries from before the round followed by the kept nodes',
    which carry the positions of their depths, the positions they now have: the cache equals what plain
    decoding over the same tokens would hold. Only the kept nodes' entries are moved (in place, into the
    round's own slots); the prefix is not copied.
    """
    keep = list(keep)
    in_place = keep == list(range(len(keep)))  # the kept nodes lead the round's order already
    offsets: dict[torch.device, torch.Tensor] = {}
    for layer in cache.layers:
        if not getattr(layer, "is_initialized", False) or layer.keys is None:
            continue
        before = layer.keys.shape[-2] - nodes
        end = before + len(keep)
        if not in_place:
            device = layer.keys.device
            if device not in offsets:
                offsets[device] = torch.as_tensor(keep, dtype=torch.long, device=device)
            index = offsets[device] + before
            layer.keys[..., before:end, :] = layer.keys.index_select(-2, index)
            layer.values[..., before:end, :] = layer.values.index_select(-2, index)
        layer.keys, layer.values = layer.keys[..., :end, :], layer.values[..., :end, :]
        if getattr(layer, "is_sliding", False) and hasattr(layer, "cumulative_length"):
            layer.cumulative_length += len(keep) - nodes
            window = layer.sliding_window
            layer.keys, layer.values = layer.keys[..., -(window - 1) :, :], layer.values[..., -(window - 1) :, :]
