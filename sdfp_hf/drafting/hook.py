"""How `generate` comes to use sdfp-hf's drafting: a hook on the TARGET instance only.

transformers picks the candidate generator of assisted decoding inside the private method
`GenerationMixin._get_candidate_generator`, with no registration hook. Building a draft binds, on the
target instance only, a method that returns `SDFPCandidateGenerator` when the assistant is a draft of this
target (anything satisfying `SelfDraft`) and defers to transformers otherwise. So the user's call does
not change:

    model.generate(**inputs, assistant_model=draft)   # also through pipeline(...)

With `DraftingOptions(tree=True)` (the default) the target's `generate` is wrapped too, on the instance
only: a call with one of its drafts runs sdfp-hf's own decoding loop of tree rounds
(`sdfp_hf.drafting.loop.tree_generate`), through `generate`'s public `custom_generate` argument, so
`generate` still prepares everything (generation config, logits processors, stopping criteria, cache).
Where the tree loop cannot honour a call (flash attention, `output_scores` and the other output options,
several sequences, a cache of the caller's, padding), the call runs the chain round instead, and a
warning says so once per draft and reason. Either way the call is bracketed by `draft_call`: its own
round state and statistics, so several threads can share one draft (`sdfp_hf.drafting.calls`).

The hook relies on private transformers API; `install_candidate_generator` checks it by capability
(`sdfp_hf._compat`) and fails with a clear message if transformers changed underneath, rather than
silently drafting another way.

With an sdfp-hf draft, `generate` options that would pick or shape another candidate generator
(`REFUSED_OPTIONS`: prompt lookup, early exit, multi-token prediction, ensemble verification, ...) or
that assisted decoding reads from the draft rather than from `generate` (`DRAFT_SETTINGS`) would be
dropped without a word: each is refused with a `ValueError` that names it and says what to do instead.
"""

from __future__ import annotations

import copy
import functools
import types
import warnings
from typing import TYPE_CHECKING, Any

from .._compat import (
    CandidateGenerator,
    attn_implementation,
    check_transformers,
    generation_defaults,
    supports_custom_generate,
)
from .calls import draft_call
from .chain import SDFPCandidateGenerator
from .loop import tree_generate
from .protocol import SelfDraft

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel

__all__ = ["DRAFT_SETTINGS", "REFUSED_OPTIONS", "install_candidate_generator"]

_LOOKUP = (
    "sdfp-hf's drafting does its own prompt lookup, planned round by round: drop it (tune the draft's with "
    "`DraftingOptions(prompt_lookup=..., lookup_tokens=...)`), or drop `assistant_model` for transformers' "
    "prompt lookup alone"
)

REFUSED_OPTIONS: dict[str, str] = {
    "prompt_lookup_num_tokens": _LOOKUP,
    "max_matching_ngram_size": _LOOKUP,
    "assistant_early_exit": (
        "the sdfp-hf draft already is a draft of the model's own layers: drop it, or drop `assistant_model` for "
        "transformers' early exit"
    ),
    "use_mtp": "multi-token prediction is another drafter: use it or the sdfp-hf draft, not both",
    "speculation_type": "that selects another drafter: drop it, or drop `assistant_model`",
    "assistant_ensemble_weight": (
        "sdfp-hf keeps assisted decoding lossless, and its prompt-lookup rounds carry no draft distribution to "
        "mix: drop it"
    ),
}
"""`generate` options (`GenerationConfig` fields) that choose or change the candidate generator, which an
sdfp-hf draft replaces: each is refused by name, with what to do instead."""

DRAFT_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
"""Read by assisted decoding from the draft's own generation config, never from `generate`'s options."""


def install_candidate_generator(model: PreTrainedModel) -> None:
    """Make `model.generate(..., assistant_model=draft)` draft with `SDFPCandidateGenerator`.

    Binds a method on this model instance only; other models and other assistants are unaffected.
    Idempotent.
    """
    if "_get_candidate_generator" in model.__dict__:
        return
    check_transformers()
    model._get_candidate_generator = types.MethodType(_get_candidate_generator, model)
    model.generate = types.MethodType(functools.wraps(type(model).generate)(_generate), model)


# Output options the tree loop does not produce: such calls run the chain round (transformers' loop).
_CHAIN_ONLY = ("output_scores", "output_logits", "output_attentions", "output_hidden_states", "return_dict_in_generate")


def _generate(self: PreTrainedModel, *args: Any, assistant_model: Any = None, **kwargs: Any) -> Any:
    """`generate`, with the tree loop for this model's sdfp-hf drafts where it applies (see the module docstring)."""
    if not (isinstance(assistant_model, SelfDraft) and assistant_model.target is self):
        return type(self).generate(self, *args, assistant_model=assistant_model, **kwargs)
    with draft_call(assistant_model):  # this call's own round state and statistics (threads)
        reason = _tree_refusal(self, assistant_model, args, kwargs) if supports_custom_generate() else ""
        if reason is None:
            streamer = kwargs.pop("streamer", None)
            return type(self).generate(
                self, *args, custom_generate=tree_generate, sdfp_draft=assistant_model, sdfp_streamer=streamer, **kwargs
            )
        if reason:  # "" : the chain round is simply what the options ask for
            _note_once(assistant_model, reason)
        return type(self).generate(self, *args, assistant_model=assistant_model, **kwargs)


def _tree_refusal(model: PreTrainedModel, draft: SelfDraft, args: tuple, kwargs: dict[str, Any]) -> str | None:
    """Why this call cannot run tree rounds (None: it can; "": the chain round is what was asked for)."""
    options = draft.drafting
    if not (options.tree and options.adaptive):
        return ""
    config = copy.copy(kwargs.get("generation_config") or model.generation_config)
    config.update(**{k: v for k, v in kwargs.items() if hasattr(config, k)})
    if (
        any(getattr(config, name, None) not in (None, False) for name in REFUSED_OPTIONS)
        or any(name in kwargs for name in DRAFT_SETTINGS)
        or kwargs.get("assistant_tokenizer") is not None
    ):
        return ""  # the chain round's hook raises the clear error
    implementation = attn_implementation(model.config)
    if implementation not in ("sdpa", "eager"):
        return f"tree rounds need SDPA or eager attention (custom 4-D masks), this model uses {implementation!r}"
    for name in _CHAIN_ONLY:
        if getattr(config, name, False):
            return f"`{name}` is produced by the chain round only"
    if (config.num_return_sequences or 1) > 1 or (config.num_beams or 1) > 1:
        return "several sequences per prompt are generated by the chain round only"
    if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None or config.cache_implementation:
        return "a cache given to `generate` (or `cache_implementation`) runs the chain round"
    inputs = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs"))
    if inputs is None or getattr(inputs, "dim", lambda: 0)() != 2 or inputs.shape[0] != 1:
        return ""  # inputs_embeds, or a batch: the chain round (which refuses batches clearly)
    mask = kwargs.get("attention_mask")
    if mask is not None and not bool(mask.all()):
        return "a padded prompt runs the chain round"
    return None


def _note_once(draft: SelfDraft, reason: str) -> None:
    said = draft.__dict__.setdefault("_sdfp_said", set())
    if reason not in said:
        said.add(reason)
        warnings.warn(f"sdfp-hf: chain rounds instead of tree rounds for this call: {reason}", UserWarning, stacklevel=3)


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
    if kwargs.get("assistant_tokenizer") is not None:
        raise ValueError("an sdfp-hf draft shares the target's tokenizer: do not pass `assistant_tokenizer`")
    _refuse_ignored_options(self, assistant, kwargs["generation_config"])
    return SDFPCandidateGenerator(
        input_ids=kwargs["input_ids"],
        assistant_model=assistant,
        generation_config=kwargs["generation_config"],
        model_kwargs=kwargs["model_kwargs"],
        inputs_tensor=kwargs.get("inputs_tensor"),
        logits_processor=kwargs["logits_processor"],
    )


def _refuse_ignored_options(target: PreTrainedModel, draft: SelfDraft, generation_config: GenerationConfig) -> None:
    """Raise a `ValueError` naming the first `generate` option an sdfp-hf draft would silently drop."""
    for name, hint in REFUSED_OPTIONS.items():
        value = getattr(generation_config, name, None)
        if value is not None and value is not False:
            raise ValueError(f"`{name}={value!r}` cannot be combined with an sdfp-hf draft (`assistant_model`): {hint}")
    # A draft setting given to `generate` is the one value here that is neither transformers' default, nor the
    # target's own generation config's, nor the draft's (assisted decoding reads the draft's).
    defaults = generation_defaults()
    for name in DRAFT_SETTINGS:
        value = getattr(generation_config, name, None)
        known = (defaults.get(name), getattr(target.generation_config, name, None), getattr(draft.generation_config, name, None))
        if value is not None and value not in known:
            raise ValueError(
                f"`{name}={value!r}` given to `generate` is not used: assisted decoding reads it from the draft, "
                f"which has {getattr(draft.generation_config, name, None)!r}. Set it on the draft instead: "
                f"`SDFPAssistant.from_target(model, ..., {name}=...)` or `draft.set_draft_settings({name}=...)`"
            )
