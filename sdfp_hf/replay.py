"""Exact acceptance of a draft without timing: replay greedy speculative decoding offline.

Greedy speculative decoding with a deterministic target is a deterministic process: the output is the
target's own greedy continuation, and what happens in each round depends only on the verified prefix.
So instead of running `generate` once per draft setting, run the target ONCE over the prompt plus its
greedy output, keep its KV cache, and replay the rounds of `SDFPCandidateGenerator`: in each round the
draft reads the target's cache of the verified prefix (exactly as in a real run), drafts its chain, and
the chain is compared with the known target tokens. No target forward is needed per round.

A draft chain from a given verified length is computed once, lazily extended as far as some setting
needs, and shared by every draft length, schedule and confidence threshold replayed. The replay
reproduces the generator's rules: no draft in the first round (the target's prefill), the draft length
capped by the remaining budget, a stop after an end-of-sequence token or below the confidence
threshold, the end-of-sequence trim of accepted tokens, and the heuristic draft-length schedules.

Scope: greedy decoding without logits processors (the benchmark's setting), batch size 1. In fp32 the
replay agrees exactly with real runs; in bf16 the target's batched verification rounds differently
from its single full-sequence pass here, so small differences are expected.

The profiler's `sdfp_hf.selection.replay_rounds` answers a narrower question many times over (accepted
tokens per round of many candidate drafts, constant length): it replays all prompts in one batched
forward per round, about ten times faster, at the price of approximating what a draft proposes past its
first rejected token. This module is the exact reference the benchmark checks real runs against.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from .assistant import DraftStats
from .cache import DraftCache

__all__ = ["ReplayResult", "replay_acceptance"]


@dataclass
class ReplayResult(DraftStats):
    """What greedy speculative decoding with one draft setting would do on one sequence.

    The per-round statistics are those of [`DraftStats`], plus:

    Attributes:
        num_assistant_tokens: starting draft length; schedule: its schedule; threshold: confidence stop.
        target_forwards: verification passes of the target (rounds, including those that drafted nothing).
        draft_forwards: single-token forward passes of the draft.
        new_tokens: tokens generated.
    """

    num_assistant_tokens: int = 1
    schedule: str = "constant"
    threshold: float = 0.0
    target_forwards: int = 0
    draft_forwards: int = 0
    new_tokens: int = 0

    def predicted_speedup(self, draft_cost: float, verify_cost: float = 1.0) -> float:
        """Speedup over plain decoding predicted from the replayed forward counts.

        Args:
            draft_cost: time of one draft forward relative to one plain decoding step of the target.
            verify_cost: time of one verification pass relative to one plain step (about 1 when
                verifying a few tokens is memory-bound, as on GPUs and in bf16 on CPUs).
        """
        cost = self.target_forwards * verify_cost + self.draft_forwards * draft_cost
        return self.new_tokens / cost if cost else 0.0


class _Chain:
    """The draft's greedy chain after a verified length: tokens and their probabilities, grown on demand."""

    def __init__(self, draft: PreTrainedModel, target_view: Cache, last_token: torch.Tensor, position: int):
        self.draft = draft
        self.cache = DraftCache(target_view, draft.cache_layer_map)
        self.next_input = last_token
        self.position = position
        self.tokens: list[int] = []
        self.probs: list[float] = []

    def extend_to(self, length: int) -> None:
        while len(self.tokens) < length:
            logits = self.draft.draft_logits(
                self.next_input, torch.tensor([[self.position]], device=self.next_input.device), self.cache
            )
            probs = logits.softmax(-1)
            token = logits.argmax(-1, keepdim=True)
            self.tokens.append(int(token))
            self.probs.append(float(probs[0, token[0, 0]]))
            self.next_input = token
            self.position += 1


class _TargetPrefix:
    """Views of the target's full-sequence KV cache, cut at a verified length, shaped as in a real run."""

    def __init__(self, model: PreTrainedModel, sequence: torch.Tensor):
        # A cache of plain full layers keeps every position, sliding-window layers included.
        full = DynamicCache()
        with torch.no_grad():
            model(input_ids=sequence, cache=full, use_cache=True)
        self.keys = [layer.keys for layer in full.layers]
        self.values = [layer.values for layer in full.layers]
        self.templates = DynamicCache(config=model.config).layers

    def view(self, length: int) -> Cache:
        layers = []
        for template, keys, values in zip(self.templates, self.keys, self.values):
            if isinstance(template, DynamicSlidingWindowLayer):
                layer = DynamicSlidingWindowLayer(sliding_window=template.sliding_window)
                start = max(0, length - template.sliding_window + 1)
                layer.cumulative_length = length
            elif isinstance(template, DynamicLayer):
                layer, start = DynamicLayer(), 0
            else:
                raise TypeError(f"cannot replay a target whose cache has {type(template).__name__} layers")
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys[..., start:length, :], values[..., start:length, :]
            layers.append(layer)
        return Cache(layers=layers)


def replay_acceptance(
    model: PreTrainedModel,
    draft: PreTrainedModel,
    prompt_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    output_ids: torch.Tensor | None = None,
    num_assistant_tokens: Iterable[int] = (1, 2, 3, 4, 6, 8),
    thresholds: Iterable[float] = (0.0,),
    schedules: Iterable[str] = ("constant",),
) -> list[ReplayResult]:
    """Replay greedy speculative decoding with `draft` for every combination of settings.

    Args:
        model (`PreTrainedModel`): the target.
        draft (`SDFPAssistant`): a draft of `model`.
        prompt_ids (`torch.LongTensor` of shape `(1, prompt_length)`): the prompt.
        max_new_tokens (`int`): as in `generate`.
        output_ids (`torch.LongTensor` of shape `(1, total_length)`, *optional*):
            The target's plain greedy output for this prompt (prompt included), if already known;
            computed with `model.generate` otherwise.
        num_assistant_tokens, thresholds, schedules: the settings to replay (all combinations).

    Returns:
        One `ReplayResult` per combination, in the order of `itertools.product(schedules,
        num_assistant_tokens, thresholds)`.
    """
    if prompt_ids.dim() != 2 or prompt_ids.shape[0] != 1:
        raise ValueError(f"replay needs one prompt of shape (1, length), got {tuple(prompt_ids.shape)}")
    if output_ids is None:
        with torch.no_grad():
            output_ids = model.generate(prompt_ids, max_new_tokens=max_new_tokens, do_sample=False)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    sequence = output_ids[0].tolist()
    prompt_length, max_length = prompt_ids.shape[1], prompt_ids.shape[1] + max_new_tokens
    prefix = _TargetPrefix(model, output_ids)
    chains: dict[int, _Chain] = {}

    def chain_at(length: int) -> _Chain:
        if length not in chains:
            chains[length] = _Chain(draft, prefix.view(length - 1), output_ids[:, length - 1 : length], length - 1)
        return chains[length]

    results = []
    with torch.no_grad():
        for schedule in schedules:
            for start in num_assistant_tokens:
                for threshold in thresholds:
                    result = ReplayResult(num_assistant_tokens=start, schedule=schedule, threshold=threshold)
                    _replay_one(result, chain_at, sequence, prompt_length, max_length, eos_ids)
                    results.append(result)
    return results


def _replay_one(
    result: ReplayResult,
    chain_at,
    sequence: Sequence[int],
    prompt_length: int,
    max_length: int,
    eos_ids: set[int],
) -> None:
    end = len(sequence)
    length = prompt_length + 1  # the first round is the target's prefill: one token, nothing drafted
    result.target_forwards = 1
    k = result.num_assistant_tokens
    while length < end:
        budget = min(k, max_length - length - 1)
        result.target_forwards += 1
        if budget <= 0:
            length += 1
            continue
        chain = chain_at(length)
        drafted = 0
        while drafted < budget:
            chain.extend_to(drafted + 1)
            token, prob = chain.tokens[drafted], chain.probs[drafted]
            drafted += 1
            if token in eos_ids or (result.threshold and prob < result.threshold):
                break
        result.draft_forwards += drafted
        accepted = 0
        while accepted < drafted and length + accepted < end and chain.tokens[accepted] == sequence[length + accepted]:
            accepted += 1
        # generate keeps the accepted tokens plus the target's own next one, cut after an end-of-sequence.
        valid = sequence[length : length + accepted + 1]
        for i, token in enumerate(valid):
            if token in eos_ids:
                accepted = i
                break
        result.record(drafted, accepted)
        if result.schedule != "constant":
            k = k + 2 if accepted == drafted else max(1, k - 1)
        length += accepted + 1
    result.new_tokens = end - prompt_length
