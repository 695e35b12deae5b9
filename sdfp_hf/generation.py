"""How `generate` drafts with an `SDFPAssistant`: the package's own candidate generator.

transformers picks the candidate generator of assisted decoding inside the private method
`GenerationMixin._get_candidate_generator`, with no registration hook. Building a draft binds, on the
TARGET instance only, a method that returns `SDFPCandidateGenerator` when the assistant is one of this
target's sdfp-hf drafts and defers to transformers otherwise. So the user's call does not change:

    model.generate(**inputs, assistant_model=draft)   # also through pipeline(...)

Each round, `SDFPCandidateGenerator` drafts with direct forward calls of the draft (no nested
`generate`), reading the target's own KV cache for the verified prefix through a `DraftCache` (no
second prefill, exact context) and keeping its speculative entries apart. The target verifies as in
plain assisted decoding, so greedy output is the target's, token for token, and sampling keeps the
target's distribution (transformers' speculative sampling, with the draft's processed logits as q).

The hook relies on private transformers API; `install_candidate_generator` checks it and fails with
a clear message if transformers changed underneath, rather than silently drafting another way.
"""

from __future__ import annotations

import inspect
import types
from typing import TYPE_CHECKING, Any

import torch
import transformers
from transformers.generation.candidate_generator import AssistedCandidateGenerator, CandidateGenerator
from transformers.generation.utils import GenerationMixin

from .cache import DraftCache

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["SDFPCandidateGenerator", "install_candidate_generator"]

#: transformers versions the generator is tested with (pinned in pyproject.toml as well).
TESTED_TRANSFORMERS = ("5.24",)

_EXPECTED_HOOK_PARAMETERS = (
    "self",
    "generation_config",
    "input_ids",
    "inputs_tensor",
    "logits_processor",
    "model_kwargs",
    "assistant_model",
    "target_tokenizer",
    "assistant_tokenizer",
)
_EXPECTED_ROUND_ARGUMENTS = ("model_kwargs=model_kwargs", "is_first_iteration=", "requires_model_outputs")


def _check_transformers() -> None:
    problems = []
    hook = inspect.signature(GenerationMixin._get_candidate_generator)
    if tuple(hook.parameters) != _EXPECTED_HOOK_PARAMETERS:
        problems.append(f"GenerationMixin._get_candidate_generator{hook}")
    if not hasattr(CandidateGenerator, "requires_model_outputs"):
        problems.append("CandidateGenerator.requires_model_outputs is gone")
    source = inspect.getsource(GenerationMixin._assisted_decoding)
    problems += [f"_assisted_decoding no longer passes `{a}`" for a in _EXPECTED_ROUND_ARGUMENTS if a not in source]
    if problems:
        raise RuntimeError(
            f"sdfp-hf's candidate generator does not fit transformers {transformers.__version__} "
            f"(tested with {', '.join(TESTED_TRANSFORMERS)}.x): {'; '.join(problems)}. "
            f"Install a tested version: pip install 'transformers>={TESTED_TRANSFORMERS[0]},<5.25'"
        )


def install_candidate_generator(model: PreTrainedModel) -> None:
    """Make `model.generate(..., assistant_model=draft)` draft with `SDFPCandidateGenerator`.

    Binds a method on this model instance only; other models and other assistants are unaffected.
    Idempotent.
    """
    if "_get_candidate_generator" in model.__dict__:
        return
    _check_transformers()
    model._get_candidate_generator = types.MethodType(_get_candidate_generator, model)


def _get_candidate_generator(self: PreTrainedModel, **kwargs: Any) -> CandidateGenerator:
    from .assistant import SDFPAssistant

    assistant = kwargs.get("assistant_model")
    if not isinstance(assistant, SDFPAssistant):
        return type(self)._get_candidate_generator(self, **kwargs)
    if assistant.target is not self:
        raise ValueError(
            f"this draft was built from another model ({type(assistant.target).__name__} at "
            f"{id(assistant.target):#x}); build one for this model with `SDFPAssistant.from_target(model)`"
        )
    if kwargs["input_ids"].shape[0] > 1:
        raise ValueError(
            f"speculative decoding with an sdfp-hf draft needs batch size 1 (transformers' assisted generation "
            f"supports no other), got a batch of {kwargs['input_ids'].shape[0]}: generate one prompt at a time"
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


def _draw(probs: torch.Tensor) -> torch.LongTensor:
    """Sample one token per row from `probs` (the draft's q, which speculative sampling corrects)."""
    return torch.multinomial(probs, num_samples=1)


class SDFPCandidateGenerator(AssistedCandidateGenerator):
    """Drafts candidates with a layer-skipping `SDFPAssistant` that reads the target's KV cache.

    Same constructor as `AssistedCandidateGenerator`. `generate` passes it the target's
    `model_kwargs` every round (`requires_model_outputs`), which hold the target's cache.
    """

    requires_model_outputs = True
    model_kwargs_overrides: dict[str, Any] = {}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.do_sample = bool(self.generation_config.do_sample)
        self.eos_token_ids = self.generation_config._eos_token_tensor
        self.layer_map = self.assistant_model.cache_layer_map
        self.stats = self.assistant_model.stats
        self.stats.reset()

    def get_candidates(
        self,
        input_ids: torch.LongTensor,
        model_kwargs: dict[str, Any] | None = None,
        is_first_iteration: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.LongTensor, torch.FloatTensor | None]:
        """Draft up to `num_assistant_tokens` tokens after `input_ids`.

        Args:
            input_ids (`torch.LongTensor` of shape `(1, sequence_length)`): the verified sequence.
            model_kwargs (`dict`): the target's model kwargs; `model_kwargs["cache"]` holds the target's
                KV cache of the first `sequence_length - 1` tokens.
            is_first_iteration (`bool`): in the first round the target has not seen the prompt yet, so
                there is no cache to read and nothing is drafted (the target's prefill makes the token).

        Returns:
            `candidate_ids` of shape `(1, sequence_length + n)` and `candidate_logits` of shape
            `(1, n, vocab_size)` (the draft's processed logits, used by speculative sampling), or
            `(input_ids, None)` when nothing is drafted.
        """
        target_cache = None if model_kwargs is None else model_kwargs.get("cache")
        if is_first_iteration or target_cache is None:
            return input_ids, None
        _, max_new_tokens = self._calculate_new_tokens(input_ids)
        if max_new_tokens <= 0:
            return input_ids, None
        length = input_ids.shape[1]
        if target_cache.get_seq_length() != length - 1:
            raise RuntimeError(
                f"the target's cache holds {target_cache.get_seq_length()} tokens, expected {length - 1}: "
                "transformers' assisted decoding changed; use a tested version"
            )

        cache = DraftCache(target_cache, self.layer_map)
        attention_mask = model_kwargs.get("attention_mask")
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        threshold = self.assistant_confidence_threshold
        tokens, logits = input_ids, []
        for step in range(max_new_tokens):
            position = length - 1 + step
            step_kwargs = {}
            if attention_mask is not None:
                ones = attention_mask.new_ones((1, step))
                step_kwargs["attention_mask"] = torch.cat([attention_mask, ones], dim=-1)
            out = self.assistant_model(
                input_ids=tokens[:, -1:],
                position_ids=torch.tensor([[position]], device=tokens.device),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
                **step_kwargs,
            )
            scores = out.logits[:, -1, :].float()
            for processor in self.logits_processor:
                scores = processor(tokens, scores)
            probs = scores.softmax(dim=-1)
            token = _draw(probs) if self.do_sample else scores.argmax(dim=-1, keepdim=True)
            tokens = torch.cat([tokens, token], dim=-1)
            logits.append(scores)
            if self.eos_token_ids is not None and bool(torch.isin(token, self.eos_token_ids).any()):
                break
            if threshold and float(probs[0, token[0, 0]]) < threshold:
                break
        return tokens, torch.stack(logits, dim=1)

    def update_candidate_strategy(self, input_ids: torch.LongTensor, scores: torch.Tensor, num_matches: int):
        """Record the round's statistics and adapt the draft length (rounds with no draft are ignored)."""
        drafted = scores.shape[1] - 1
        if drafted == 0:
            return
        self.stats.record(drafted, int(num_matches))
        super().update_candidate_strategy(input_ids, scores, num_matches)
