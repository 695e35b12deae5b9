"""How `generate` comes to use sdfp-hf's drafting: a hook on the TARGET instance only.

transformers picks the candidate generator of assisted decoding inside the private method
`GenerationMixin._get_candidate_generator`, with no registration hook. Building a draft binds, on the
target instance only, a method that returns `SDFPCandidateGenerator` when the assistant is a draft of this
target (anything satisfying `SelfDraft`) and defers to transformers otherwise. So the user's call does
not change:

    model.generate(**inputs, assistant_model=draft)   # also through pipeline(...)

The hook relies on private transformers API; `install_candidate_generator` checks it by capability
(`sdfp_hf._compat`) and fails with a clear message if transformers changed underneath, rather than
silently drafting another way.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

from .._compat import CandidateGenerator, check_transformers
from .chain import SDFPCandidateGenerator
from .protocol import SelfDraft

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["install_candidate_generator"]


def install_candidate_generator(model: PreTrainedModel) -> None:
    """Make `model.generate(..., assistant_model=draft)` draft with `SDFPCandidateGenerator`.

    Binds a method on this model instance only; other models and other assistants are unaffected.
    Idempotent.
    """
    if "_get_candidate_generator" in model.__dict__:
        return
    check_transformers()
    model._get_candidate_generator = types.MethodType(_get_candidate_generator, model)


def _get_candidate_generator(self: PreTrainedModel, **kwargs: Any) -> CandidateGenerator:
    assistant = kwargs.get("assistant_model")
    if not isinstance(assistant, SelfDraft):
        return type(self)._get_candidate_generator(self, **kwargs)
    if assistant.target is not self:
        raise ValueError(
            f"this draft was built from another model ({type(assistant.target).__name__} at "
            f"{id(assistant.target):#x}); build one for this model with `SDFPAssistant.from_target(model)`"
        )
    if kwargs["input_ids"].shape[0] > 1:
        raise ValueError(
            "speculative decoding with an sdfp-hf draft needs batch size 1 (transformers' assisted "
            f"generation supports no other), got a batch of {kwargs['input_ids'].shape[0]}: "
            "generate one prompt at a time"
        )
    if kwargs.get("target_tokenizer") is not None and kwargs.get("assistant_tokenizer") is not None:
        raise ValueError("an sdfp-hf draft shares the target's tokenizer: do not pass `assistant_tokenizer`")
    return SDFPCandidateGenerator(
        input_ids=kwargs["input_ids"],
        assistant_model=assistant,
        generation_config=kwargs["generation_config"],
        model_kwargs=kwargs["model_kwargs"],
        inputs_tensor=kwargs.get("inputs_tensor"),
        logits_processor=kwargs["logits_processor"],
    )
