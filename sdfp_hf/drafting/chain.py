"""The chain round: `SDFPCandidateGenerator`, proposing a chain of candidates inside transformers' assisted loop.

Each round it proposes tokens from prompt lookup or from the draft, whichever the round planner predicts
to pay (or nothing). The draft drafts with direct forward calls (no nested `generate`), reading the
target's own KV cache for the verified prefix through a `DraftCache` (no second prefill, exact context)
and keeping its speculative entries apart. The target verifies as in plain assisted decoding, so greedy
output is the target's, token for token, and sampling keeps the target's distribution (transformers'
speculative sampling, with the draft's processed logits as q).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers

from .._compat import AssistedCandidateGenerator, cache_of, eos_token_ids, max_length_of
from ..cache import DraftCache
from ..costs import clock
from .calls import current_call
from .lookup import prompt_lookup
from .options import DraftingOptions
from .planner import planner_of

__all__ = ["SDFPCandidateGenerator"]

RANGE_HINT = "install a supported version (`pip install -U sdfp-hf` lists them)"


def _draw(probs: torch.Tensor) -> torch.LongTensor:
    """Sample one token per row from `probs` (the draft's q, which speculative sampling corrects)."""
    return torch.multinomial(probs, num_samples=1)


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
        self.eos_token_ids = eos_token_ids(self.generation_config)
        self.layer_map = self.assistant_model.cache_layer_map
        self.options: DraftingOptions = self.assistant_model.drafting
        self.stats = current_call(self.assistant_model).stats
        self.device = self.assistant_model.get_input_embeddings().weight.device
        self.planner = None
        if self.options.adaptive:
            self.planner = planner_of(self.assistant_model, int(self.num_assistant_tokens))
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
        start = clock(self.device)
        candidates, logits, source = self._propose(input_ids, model_kwargs, is_first_iteration)
        now = clock(self.device)
        self._round = (source, now - start, now)
        return candidates, logits

    def _propose(self, input_ids, model_kwargs, is_first_iteration):
        """This round's candidates: ``(candidate_ids, candidate_logits, source)``; sets `self._extension`."""
        self._extension = (0, 0)
        if is_first_iteration:
            return input_ids, None, "prefill"
        target_cache = None if model_kwargs is None else cache_of(model_kwargs)
        if target_cache is None:
            # `requires_model_outputs` asks assisted decoding for the target's kwargs every round: without
            # them every round would silently draft nothing.
            raise RuntimeError(
                f"transformers {transformers.__version__} did not pass the target's cache to the candidate "
                f"generator (`model_kwargs`): {RANGE_HINT}"
            )
        budget = max_length_of(self) - input_ids.shape[1] - 1
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
        positions = torch.arange(length - 1, length - 1 + max_new_tokens, device=tokens.device).view(-1, 1, 1)
        for step in range(max_new_tokens):
            mask = None
            if attention_mask is not None:
                mask = torch.cat([attention_mask, attention_mask.new_ones((1, step))], dim=-1)
            scores = self.assistant_model.draft_logits(tokens[:, -1:], positions[step], cache, mask)
            for processor in self.logits_processor:
                scores = processor(tokens, scores)
            probs = scores.softmax(dim=-1)
            token = _draw(probs) if self.do_sample else scores.argmax(dim=-1, keepdim=True)
            tokens = torch.cat([tokens, token], dim=-1)
            logits.append(scores)
            # one host sync per step: whether the chain stops here (end of sequence, low confidence)
            stop = None
            if self.eos_token_ids is not None:
                stop = torch.isin(token, self.eos_token_ids.to(token.device)).any()
            if threshold:
                unsure = probs[0, token[0, 0]] < threshold
                stop = unsure if stop is None else stop | unsure
            if stop is not None and bool(stop):
                break
        return tokens, torch.stack(logits, dim=1)

    def update_candidate_strategy(self, input_ids: torch.LongTensor, scores: torch.Tensor, num_matches: int):
        """Record the round's statistics and adapt the draft length."""
        source, draft_seconds, left = self._round or ("none", 0.0, clock(self.device))
        verify_seconds = clock(self.device) - left
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
