"""`SelfDraft`: the little the decoding round needs of a draft, so it never depends on the concrete class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel

    from ..stats import DraftStats
    from .options import DraftingOptions

__all__ = ["SelfDraft"]


@runtime_checkable
class SelfDraft(Protocol):
    """A draft of a target that reads the target's own KV cache (an `SDFPAssistant` is one).

    Attributes:
        target: the model the draft was built from.
        stats: where each round's proposed and accepted tokens are recorded.
        drafting: how candidates are proposed.
        cache_layer_map: for each draft layer, the target layer whose cache it reads (`None`: none).
        generation_config: the draft's own, with the drafting settings.
    """

    target: PreTrainedModel
    stats: DraftStats
    drafting: DraftingOptions
    cache_layer_map: list[int | None]
    generation_config: GenerationConfig

    def draft_logits(
        self, input_ids: torch.LongTensor, position_ids: torch.LongTensor, cache: Any, attention_mask: Any = None
    ) -> torch.Tensor:
        """The draft's next-token logits after `input_ids`, shape `(1, vocab_size)`, in float32."""
