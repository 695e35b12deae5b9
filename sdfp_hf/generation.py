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
import time
import types
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any

import torch
import transformers
from transformers.generation.candidate_generator import AssistedCandidateGenerator, CandidateGenerator
from transformers.generation.utils import GenerationMixin

from .cache import DraftCache

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["DraftingOptions", "SDFPCandidateGenerator", "install_candidate_generator", "prompt_lookup"]

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
    problems += [
        f"_assisted_decoding no longer passes `{a}`" for a in _EXPECTED_ROUND_ARGUMENTS if a not in source
    ]
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


@dataclass
class DraftingOptions:
    """How `SDFPCandidateGenerator` proposes tokens (runtime options of a draft, not part of its mask).

    Args:
        prompt_lookup (`int`, defaults to 3):
            Look for the last `prompt_lookup` .. `lookup_min_ngram` tokens earlier in the context and, on a
            match, propose what followed them (prompt lookup: free, no draft forward). With `adaptive`,
            each round takes whichever of lookup and draft is predicted to yield more tokens per second.
            0 disables it.
        lookup_min_ngram (`int`, defaults to 1): shortest n-gram that counts as a match.
        lookup_tokens (`int`, defaults to 10): most tokens proposed from a lookup match.
        adaptive (`bool`, defaults to `True`):
            Choose each round's source and length from measured acceptance (of the draft and of lookup
            matches of each n-gram order) and measured times (a draft step, a verification step and what
            each extra verified token adds), proposing nothing when that does not pay (with a one-token
            draft probe every `probe_every` rounds to notice when drafting pays again). Replaces the
            draft length schedule. Without it: lookup when it matches, else a draft of the generation
            config's length.
        probe_every (`int`, defaults to 32).
        extend_drafts (`bool`, defaults to `False`): with `adaptive` and `prompt_lookup`, append to a draft
            chain what followed its last tokens earlier in the context, when the planner predicts it pays.
            Off by default: it did not win on the benchmark (SmolLM2-135M bf16, 5 Spec-Bench prompts per
            category, 128 tokens: 1.57x with it, 1.66x without; benchmarks/results/).
    """

    prompt_lookup: int = 3
    lookup_min_ngram: int = 1
    lookup_tokens: int = 10
    adaptive: bool = True
    probe_every: int = 32
    extend_drafts: bool = False


def _draw(probs: torch.Tensor) -> torch.LongTensor:
    """Sample one token per row from `probs` (the draft's q, which speculative sampling corrects)."""
    return torch.multinomial(probs, num_samples=1)


def prompt_lookup(
    input_ids: torch.LongTensor, max_ngram: int, min_ngram: int, num_tokens: int
) -> tuple[torch.LongTensor, int] | None:
    """The tokens that followed the most recent earlier occurrence of the sequence's last n-gram.

    Tries n from `max_ngram` down to `min_ngram`; returns up to `num_tokens` tokens of shape `(1, k)` with
    the order n of the match, or None without a match.
    """
    sequence = input_ids[0]
    length = sequence.shape[0]
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        windows = sequence[: length - 1].unfold(0, n, 1)  # every earlier n-gram, the last one excluded
        hits = (windows == sequence[length - n :]).all(dim=1).nonzero()
        if hits.numel():
            start = int(hits[-1]) + n
            return sequence[start : start + num_tokens].unsqueeze(0), n
    return None


class _Acceptance:
    """Per-token acceptance a of one proposal source, from recent rounds.

    Estimated as accepted / (accepted + rejections): the geometric model's estimate, which stays
    unbiased when rounds stop early (draft length, confidence, end of sequence).
    """

    def __init__(self, decay: float):
        self.decay = decay
        self.accepted, self.rejected = 1.0, 1.0  # a weak prior of a = 0.5

    def record(self, proposed: int, accepted: int) -> None:
        self.accepted = self.decay * self.accepted + accepted
        self.rejected = self.decay * self.rejected + (accepted < proposed)

    @property
    def rate(self) -> float:
        return min(self.accepted / (self.accepted + self.rejected), 0.999)

    def expected_tokens(self, proposed: int) -> float:
        """Tokens a round yields with `proposed` candidates: accepted ones plus the target's own."""
        a = self.rate
        return (1 - a ** (proposed + 1)) / (1 - a)


class _VerifyTime:
    """The time of a verification pass as T0 + beta * n (n: candidates verified).

    Fitted by exponentially weighted least squares over recent rounds of varied widths (lookups and
    drafts of different lengths, rounds proposing nothing), so neither figure is biased by the other.
    """

    def __init__(self, decay: float):
        self.decay = decay
        self.weight = self.sum_n = self.sum_nn = self.sum_t = self.sum_nt = 0.0
        self.base: float | None = None  # T0
        self.per_token = 0.0  # beta

    def record(self, verified: int, seconds: float) -> None:
        d = self.decay
        self.weight = d * self.weight + 1.0
        self.sum_n = d * self.sum_n + verified
        self.sum_nn = d * self.sum_nn + verified * verified
        self.sum_t = d * self.sum_t + seconds
        self.sum_nt = d * self.sum_nt + verified * seconds
        mean_n, mean_t = self.sum_n / self.weight, self.sum_t / self.weight
        variance = self.sum_nn / self.weight - mean_n**2
        if variance > 0.5:  # widths varied enough to tell T0 from beta; else keep the last beta
            self.per_token = max(0.0, (self.sum_nt / self.weight - mean_n * mean_t) / variance)
        self.base = max(mean_t - self.per_token * mean_n, 0.05 * mean_t)


class _RoundPlanner:
    """Chooses each round's proposal source and length, from measurements taken during generation.

    A round proposing n tokens takes T_verify(n) = T0 + n * beta (beta is near 0 where verification is
    memory-bound: GPUs, bf16 on CPUs; it is not in fp32 on CPUs) plus, for the draft, n * T_draft; a
    lookup costs nothing to propose. It yields `expected_tokens(n)` under the source's acceptance (the
    draft's, or that of lookup matches of the same n-gram order). Each round takes the source and n
    that maximise tokens per second; proposing nothing is plain decoding. The first round proposes
    nothing, to measure T0.
    """

    DECAY = 0.9

    def __init__(self, max_draft: int, max_lookup: int, probe_every: int):
        self.max_draft, self.max_lookup, self.probe_every = max_draft, max_lookup, probe_every
        self.draft = _Acceptance(self.DECAY)
        self.lookups: dict[int, _Acceptance] = {}  # by n-gram order of the match
        self.verify = _VerifyTime(0.95)
        self.draft_seconds: float | None = None  # T_draft
        self.rounds_since_draft = 0

    @property
    def base_seconds(self) -> float | None:
        return self.verify.base

    @property
    def per_token_seconds(self) -> float:
        return self.verify.per_token

    def lookup(self, order: int) -> _Acceptance:
        return self.lookups.setdefault(order, _Acceptance(self.DECAY))

    def record(
        self,
        source: str,
        proposed: int,
        accepted: int,
        verify_seconds: float,
        draft_seconds: float,
        order: int = 0,
        verified: int | None = None,
    ) -> None:
        """Record a finished round of `proposed` tokens from `source` (lookup: a match of n-gram `order`).

        `verified` is the number of candidates the target verified, when more than `proposed` (a draft
        chain extended by a lookup).
        """
        if source == "prefill":  # the target's pass over the prompt says nothing about a decoding step
            return
        self.verify.record(proposed if verified is None else verified, verify_seconds)
        if source == "lookup":
            self.lookup(order).record(proposed, accepted)
        if source != "draft" or not proposed:
            self.rounds_since_draft += 1
            return
        self.rounds_since_draft = 0
        step = draft_seconds / proposed
        old = step if self.draft_seconds is None else self.draft_seconds
        self.draft_seconds = self.DECAY * old + (1 - self.DECAY) * step
        self.draft.record(proposed, accepted)

    def _best(self, acceptance: _Acceptance, limit: int, step_seconds: float) -> tuple[int, float]:
        """The n in 1..limit with the most tokens per second, and that rate."""
        best, best_rate = 0, 0.0
        for n in range(1, limit + 1):
            seconds = self.base_seconds + n * (self.per_token_seconds + step_seconds)
            rate = acceptance.expected_tokens(n) / seconds
            if rate > best_rate:
                best, best_rate = n, rate
        return best, best_rate

    def plan(self, lookup_order: int | None) -> tuple[str, int]:
        """This round's source and length: ``("lookup" | "draft" | "none", n)``.

        Args:
            lookup_order (`int`, *optional*): n-gram order of this round's lookup match, if any.
        """
        if self.base_seconds is None:  # nothing measured yet: a plain round measures T0
            return "none", 0
        choices = [("none", 0, 1.0 / self.base_seconds)]
        if lookup_order:
            choices.append(("lookup", *self._best(self.lookup(lookup_order), self.max_lookup, 0.0)))
        if self.draft_seconds is None:  # never drafted: try it
            choices.append(("draft", self.max_draft, float("inf")))
        else:
            choices.append(("draft", *self._best(self.draft, self.max_draft, self.draft_seconds)))
        source, length, _ = max(choices, key=lambda choice: choice[2])
        if source != "draft" and self.rounds_since_draft >= self.probe_every:
            return "draft", 1  # a probe, to notice when drafting pays again
        return source, length

    def extension_length(self, order: int) -> int:
        """How many tokens of a lookup match to append to a draft chain (0 when they do not pay)."""
        if self.base_seconds is None:
            return self.max_lookup
        length, rate = self._best(self.lookup(order), self.max_lookup, 0.0)
        return length if rate > 1.0 / self.base_seconds else 0


def _planner_of(assistant: PreTrainedModel, max_draft: int) -> _RoundPlanner:
    """The draft's round planner, kept on the draft between `generate` calls.

    What it measured (the machine's step costs, the acceptance of the draft and of lookups) holds for
    the next call too, so a call does not start learning from nothing: short generations would otherwise
    spend a good part of their rounds on it. A new planner is made when the settings it plans for change
    (draft length, drafting options, the draft's dtype or device).
    """
    options = assistant.drafting
    settings = (max_draft, astuple(options), assistant.dtype, assistant.device)
    kept = assistant.__dict__.get("_sdfp_planner")
    if kept is not None and kept[0] == settings:
        return kept[1]
    planner = _RoundPlanner(max_draft, options.lookup_tokens, options.probe_every)
    assistant.__dict__["_sdfp_planner"] = (settings, planner)
    return planner


class SDFPCandidateGenerator(AssistedCandidateGenerator):
    """Proposes candidates by prompt lookup and by a layer-skipping `SDFPAssistant` on the target's cache.

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
        self.options: DraftingOptions = self.assistant_model.drafting
        self.stats = self.assistant_model.stats
        self.stats.reset()
        self.planner = None
        if self.options.adaptive:
            self.planner = _planner_of(self.assistant_model, int(self.num_assistant_tokens))
        self._round: tuple[str, float, float] | None = None  # (source, draft seconds, time candidates left)
        self._lookup_order = 0  # n-gram order of this round's lookup match
        self._extension = (0, 0)  # (tokens, n-gram order) of a lookup appended to this round's draft chain

    def get_candidates(
        self,
        input_ids: torch.LongTensor,
        model_kwargs: dict[str, Any] | None = None,
        is_first_iteration: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.LongTensor, torch.FloatTensor | None]:
        """Propose up to `num_assistant_tokens` tokens after `input_ids` (more from a prompt-lookup match).

        Args:
            input_ids (`torch.LongTensor` of shape `(1, sequence_length)`): the verified sequence.
            model_kwargs (`dict`): the target's model kwargs; `model_kwargs["cache"]` holds the target's
                KV cache of the first `sequence_length - 1` tokens.
            is_first_iteration (`bool`): in the first round the target has not seen the prompt yet, so
                there is no cache to read and nothing is drafted (the target's prefill makes the token).

        Returns:
            `candidate_ids` of shape `(1, sequence_length + n)` and `candidate_logits` of shape
            `(1, n, vocab_size)` (the draft's processed logits, used by speculative sampling) or None
            (nothing drafted, or a prompt-lookup proposal, which carries no distribution).
        """
        start = time.perf_counter()
        candidates, logits, source = self._propose(input_ids, model_kwargs, is_first_iteration)
        now = time.perf_counter()
        self._round = (source, now - start, now)
        return candidates, logits

    def _propose(self, input_ids, model_kwargs, is_first_iteration):
        """This round's candidates: ``(candidate_ids, candidate_logits, source)``; sets `self._extension`."""
        self._extension = (0, 0)
        target_cache = None if model_kwargs is None else model_kwargs.get("cache")
        if is_first_iteration or target_cache is None:
            return input_ids, None, "prefill"
        budget = self.main_model_max_length - input_ids.shape[1] - 1
        if budget <= 0:
            return input_ids, None, "none"
        match = self._lookup(input_ids, self.options.lookup_tokens)
        order = match[1] if match else None
        if self.planner is not None:
            source, length = self.planner.plan(order)
        elif match:
            source, length = "lookup", self.options.lookup_tokens
        else:
            source, length = "draft", int(self.num_assistant_tokens)
        length = min(length, budget)
        if source == "none" or length <= 0:
            return input_ids, None, "none"
        if source == "lookup":
            self._lookup_order = order
            return torch.cat([input_ids, match[0][:, :length]], dim=-1), None, "lookup"
        candidates, logits = self._draft(input_ids, target_cache, model_kwargs.get("attention_mask"), length)
        room = budget - (candidates.shape[1] - input_ids.shape[1])
        return (*self._extend(candidates, logits, room), "draft")

    def _lookup(self, input_ids, num_tokens):
        if not self.options.prompt_lookup:
            return None
        return prompt_lookup(input_ids, self.options.prompt_lookup, self.options.lookup_min_ngram, num_tokens)

    def _extend(self, candidates, logits, budget):
        """Append to a draft chain what followed its last tokens earlier in the context, when that pays.

        The appended tokens carry one-hot logits (a point-mass q), which speculative sampling handles
        exactly like any draft distribution.
        """
        if self.planner is None or not self.options.extend_drafts or budget <= 0:
            return candidates, logits
        match = self._lookup(candidates, self.options.lookup_tokens)
        if match is None:
            return candidates, logits
        tokens, order = match
        tokens = tokens[:, : min(self.planner.extension_length(order), budget)]
        if not tokens.shape[1]:
            return candidates, logits
        self._extension = (tokens.shape[1], order)
        point_mass = torch.full((1, tokens.shape[1], logits.shape[-1]), float("-inf"), dtype=logits.dtype)
        point_mass.scatter_(2, tokens.unsqueeze(-1).to(point_mass.device), 0.0)
        point_mass = point_mass.to(logits.device)
        return torch.cat([candidates, tokens], dim=-1), torch.cat([logits, point_mass], dim=1)

    def _draft(self, input_ids, target_cache, attention_mask, max_new_tokens):
        length = input_ids.shape[1]
        if target_cache.get_seq_length() != length - 1:
            raise RuntimeError(
                f"the target's cache holds {target_cache.get_seq_length()} tokens, expected {length - 1}: "
                "transformers' assisted decoding changed; use a tested version"
            )
        cache = DraftCache(target_cache, self.layer_map)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        threshold = self.assistant_confidence_threshold
        tokens, logits = input_ids, []
        for step in range(max_new_tokens):
            mask = None
            if attention_mask is not None:
                mask = torch.cat([attention_mask, attention_mask.new_ones((1, step))], dim=-1)
            scores = self.assistant_model.draft_logits(
                tokens[:, -1:], torch.tensor([[length - 1 + step]], device=tokens.device), cache, mask
            )
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
        """Record the round's statistics and adapt the draft length."""
        source, draft_seconds, left = self._round or ("none", 0.0, time.perf_counter())
        verify_seconds = time.perf_counter() - left
        proposed, accepted = scores.shape[1] - 1, int(num_matches)
        if self.planner is not None:
            if source == "lookup":
                self.planner.record(source, proposed, accepted, verify_seconds, 0.0, order=self._lookup_order)
            else:
                extended, order = self._extension
                drafted = proposed - extended
                self.planner.record(
                    source, drafted, min(accepted, drafted), verify_seconds, draft_seconds, verified=proposed
                )
                if extended and accepted >= drafted:  # the appended lookup tokens were reached
                    self.planner.lookup(order).record(extended, accepted - drafted)
        if proposed == 0:
            return
        self.stats.record(proposed, accepted, source)
        if source == "draft" and self.planner is None:
            super().update_candidate_strategy(input_ids, scores, num_matches)
