"""Acceptance of a draft without timing: greedy speculative decoding replayed on the target's own output.

Greedy speculative decoding with a deterministic target is a deterministic process: the output is the
target's greedy continuation, and what happens in a round depends only on the verified prefix. So run
the target ONCE over each prompt plus its greedy output (`Trajectories`: tokens, keys and values), then
replay the rounds: in each round the draft reads the target's keys and values of the verified prefix (as
in a real run), drafts its chain, and the chain is compared with the known target tokens. No target
forward is needed per round.

One replay engine (`_replay`) applies the rounds' rules of `generate(..., assistant_model=draft)`: no
draft in the first round (the target's prefill), the draft length capped by the remaining budget, a stop
after an end-of-sequence token or below the confidence threshold, the end-of-sequence trim of accepted
tokens, the heuristic draft-length schedules. The draft's chains come from one of two sources:

- teacher-forced (`replay_rounds`, the profiler's): every sequence's current round in ONE batched
  forward of the draft, its inputs the target's tokens. Acceptance is exact; what the draft proposes past
  its first rejected token (which only a confidence stop depends on) is approximate. About ten times
  faster, which the profiler's many candidate drafts need. It also records each round's per-step matches
  (`RoundSamples`), from which the rounds of any shorter draft length and threshold are derived.
- token by token (`replay_acceptance`): the draft's own chain through a `DraftCache`, the code path of
  generation itself. Exact in fp32 (the benchmark checks real runs against it); in bf16 the target's
  batched verification rounds differently from the single pass here, so small differences are expected.

Scope: greedy decoding without logits processors, batch size 1 per sequence.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ._compat import Cache, DynamicCache, DynamicLayer, DynamicSlidingWindowLayer, cache_kwargs
from .cache import DraftCache, PrefixCache, PrefixLayer, local_forward, prefix_masks
from .calibration import CalibrationData, generate_continuations
from .costs import MAX_DRAFT, throughput
from .stats import DraftStats

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "ReplayResult",
    "RoundSamples",
    "Trajectories",
    "one_step_agreement",
    "replay_acceptance",
    "replay_rounds",
    "target_trajectories",
    "trajectories_from_calibration",
]

SCHEDULES = ("constant", "heuristic", "heuristic_transient")


# ---------------------------------------------------------------------------------------------- trajectories


@dataclass
class Trajectories:
    """The target's own greedy continuations of some prompts, with its keys and values over them.

    Args:
        input_ids (`torch.LongTensor` of shape `(num_sequences, length)`): prompt + greedy continuation,
            right-padded.
        lengths (`list[int]`): real length of each row.
        prompt_lengths (`list[int]`): prompt length of each row.
        max_lengths (`list[int]`): the length at which generation stops (prompt + `max_new_tokens`).
        keys / values (`list[torch.Tensor]`): per target layer, shape `(num_sequences, kv_heads, length, head_dim)`.
        eos_token_ids (`list[int]`): tokens that end generation.
    """

    input_ids: torch.LongTensor
    lengths: list[int]
    prompt_lengths: list[int]
    max_lengths: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    eos_token_ids: list[int]
    seconds: float = 0.0

    @property
    def num_sequences(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_new_tokens(self) -> int:
        return sum(n - p for n, p in zip(self.lengths, self.prompt_lengths))


def _eos_ids(model: PreTrainedModel) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))


def _recorded(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list, list]:
    """The target's keys and values over a right-padded batch (one local forward)."""
    recorded: list[PrefixLayer] = []
    local_forward(model, input_ids, attention_mask, record=recorded)
    return [layer.keys for layer in recorded], [layer.values for layer in recorded]


@torch.no_grad()
def target_trajectories(
    model: PreTrainedModel, prompts: Sequence[torch.Tensor], max_new_tokens: int = 64
) -> Trajectories:
    """Greedy-decode each prompt with the target and keep its keys and values over the result.

    Args:
        model (`PreTrainedModel`): the target.
        prompts (`list[torch.LongTensor]`): 1-D token ids.
        max_new_tokens (`int`, *optional*, defaults to 64): tokens generated per prompt (fewer at EOS).
    """
    start = time.perf_counter()
    rows = generate_continuations(model, prompts, max_new_tokens, temperature=0.0, stop_at_eos=True)
    device = model.get_input_embeddings().weight.device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(rows[0][0]), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    ids, mask = ids.to(device), mask.to(device)
    keys, values = _recorded(model, ids, mask)
    return Trajectories(
        input_ids=ids,
        lengths=[len(r) for r in rows],
        prompt_lengths=[len(p) for p in prompts],
        max_lengths=[len(p) + max_new_tokens for p in prompts],
        keys=keys,
        values=values,
        eos_token_ids=_eos_ids(model),
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def trajectories_from_calibration(model: PreTrainedModel, data: CalibrationData, num_sequences: int) -> Trajectories:
    """Use calibration text the target wrote greedily as its trajectories (no generation needed).

    Only valid for calibration written at temperature 0 (after an optional sampled opening, which counts
    as prompt).
    """
    start = time.perf_counter()
    opening = int(data.provenance.get("sampled_tokens") or 0)
    rows = list(range(min(num_sequences, data.num_sequences)))
    lengths = [data.lengths()[i] for i in rows]
    prompt_lengths = [min(data.prompt_lengths[i] + opening, lengths[j] - 1) for j, i in enumerate(rows)]
    # the target wrote `sequence_length` tokens after each row's start or prompt
    new_tokens = int(data.provenance.get("sequence_length") or max(lengths))
    device = model.get_input_embeddings().weight.device
    batch = data.batches(len(rows))[0].to(device)
    keys, values = _recorded(model, batch.input_ids, batch.attention_mask)
    return Trajectories(
        input_ids=batch.input_ids,
        lengths=lengths,
        prompt_lengths=prompt_lengths,
        max_lengths=[data.prompt_lengths[i] + new_tokens for i in rows],
        keys=keys,
        values=values,
        eos_token_ids=_eos_ids(model),
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def _trajectory_of_output(
    model: PreTrainedModel, prompt_length: int, output_ids: torch.Tensor, max_new_tokens: int
) -> Trajectories:
    """One sequence's trajectory from a known output, with the keys and values of a plain full forward."""
    full = DynamicCache()  # plain full layers keep every position, sliding-window layers included
    model(input_ids=output_ids, use_cache=True, **cache_kwargs(model, full))
    return Trajectories(
        input_ids=output_ids,
        lengths=[output_ids.shape[1]],
        prompt_lengths=[prompt_length],
        max_lengths=[prompt_length + max_new_tokens],
        keys=[layer.keys for layer in full.layers],
        values=[layer.values for layer in full.layers],
        eos_token_ids=_eos_ids(model),
    )


# ---------------------------------------------------------------------------------------------- chains


class _TeacherForcedChains:
    """Every active sequence's chain of a round from one batched forward of the draft, fed the target's tokens."""

    def __init__(self, draft: Any, trajectories: Trajectories):
        self.draft, self.trajectories = draft, trajectories
        self.dtype = draft.get_input_embeddings().weight.dtype

    def round(self, rows: list[int], starts: list[int], width: int) -> list[tuple[list[int], list[float]]]:
        t = self.trajectories
        ids, device = t.input_ids, t.input_ids.device
        index = torch.tensor(rows, device=device)
        first = torch.tensor(starts, device=device)
        q_pos = first[:, None] + torch.arange(width, device=device)[None, :]
        lengths = torch.tensor([t.lengths[b] for b in rows], device=device)
        inside = q_pos < lengths[:, None]
        q_ids = torch.where(inside, ids[index].gather(1, q_pos.clamp(max=ids.shape[1] - 1)), ids[index, :1])
        prefix_valid = torch.arange(ids.shape[1], device=device)[None, :] < lengths[:, None]
        masks = prefix_masks(self.draft.config, q_pos, first[:, None].expand_as(q_pos), prefix_valid, self.dtype)
        layers = [
            None if j is None else PrefixLayer(t.keys[j][index], t.values[j][index]) for j in self.draft.cache_layer_map
        ]
        logits = self.draft(
            input_ids=q_ids, position_ids=q_pos, attention_mask=masks, use_cache=True,
            **cache_kwargs(self.draft, PrefixCache(layers)),
        ).logits.float()
        confidence, tokens = logits.softmax(dim=-1).max(dim=-1)
        return [list(zip(t, c)) for t, c in zip(tokens.tolist(), confidence.tolist())]


class _DraftedChains:
    """Each sequence's chain drafted token by token through a `DraftCache`, as in generation; grown on demand.

    Chains are cached by (sequence, start), so replaying several settings drafts each chain once.
    """

    def __init__(self, model: PreTrainedModel, draft: Any, trajectories: Trajectories):
        self.draft, self.trajectories = draft, trajectories
        self.templates = DynamicCache(config=model.config).layers
        self.chains: dict[tuple[int, int], _Chain] = {}

    def round(self, rows: list[int], starts: list[int], width: int) -> list[_Chain]:
        return [self._chain(b, start) for b, start in zip(rows, starts)]

    def _chain(self, row: int, start: int) -> _Chain:
        if (row, start) not in self.chains:
            t = self.trajectories
            view = self._view(row, start)
            last = t.input_ids[row : row + 1, start : start + 1]
            self.chains[(row, start)] = _Chain(self.draft, DraftCache(view, self.draft.cache_layer_map), last, start)
        return self.chains[(row, start)]

    def _view(self, row: int, length: int) -> Cache:
        """The target's cache after `length` tokens, shaped as in a real run (sliding layers keep their window)."""
        layers = []
        for template, keys, values in zip(self.templates, self.trajectories.keys, self.trajectories.values):
            keys, values = keys[row : row + 1], values[row : row + 1]
            if DynamicSlidingWindowLayer is not None and isinstance(template, DynamicSlidingWindowLayer):
                layer = DynamicSlidingWindowLayer(sliding_window=template.sliding_window)
                first = max(0, length - template.sliding_window + 1)
                layer.cumulative_length = length
            elif isinstance(template, DynamicLayer):
                layer, first = DynamicLayer(), 0
            else:
                raise TypeError(f"cannot replay a target whose cache has {type(template).__name__} layers")
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys[..., first:length, :], values[..., first:length, :]
            layers.append(layer)
        return Cache(layers=layers)


class _Chain:
    """The draft's greedy chain after a verified prefix: tokens and their probabilities, grown on demand."""

    def __init__(self, draft: Any, cache: DraftCache, last_token: torch.Tensor, position: int):
        self.draft, self.cache = draft, cache
        self.next_input, self.position = last_token, position
        self.steps: list[tuple[int, float]] = []

    def __getitem__(self, i: int) -> tuple[int, float]:
        while len(self.steps) <= i:
            position = torch.tensor([[self.position]], device=self.next_input.device)
            probs = self.draft.draft_logits(self.next_input, position, self.cache).softmax(-1)
            token = probs.argmax(-1, keepdim=True)
            self.steps.append((int(token), float(probs[0, token[0, 0]])))
            self.next_input = token
            self.position += 1
        return self.steps[i]


# ---------------------------------------------------------------------------------------------- the engine


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
        """Speedup over plain decoding predicted from the replayed forward counts (`sdfp_hf.costs.throughput`).

        Args:
            draft_cost: time of one draft forward relative to one plain decoding step of the target.
            verify_cost: time of one verification pass relative to one plain step (about 1 when
                verifying a few tokens is memory-bound, as on GPUs and in bf16 on CPUs).
        """
        return throughput(self.new_tokens, self.draft_forwards, draft_cost, self.target_forwards * verify_cost)


@dataclass
class RoundSamples:
    """Draft rounds replayed on the target's greedy output, with the longest draft (`max_draft` tokens).

    Each row is one round: whether the draft's token at each step equals the target's (`matches`), the
    draft's probability of its own token (`confidence`), whether it proposed an end-of-sequence token
    (`eos`), and how many tokens it may draft before the generation's length limit (`room`). From these,
    `stats` derives the rounds of any shorter draft length and any confidence threshold (an approximation:
    a shorter draft would start its later rounds elsewhere).
    """

    matches: torch.BoolTensor
    confidence: torch.Tensor
    eos: torch.BoolTensor
    room: torch.LongTensor
    seconds: float = 0.0

    @property
    def max_draft(self) -> int:
        return self.matches.shape[1]

    def stats(self, num_assistant_tokens: int, threshold: float = 0.0) -> dict[str, float]:
        """Rounds, drafted and accepted tokens with draft length `num_assistant_tokens` and a confidence stop."""
        k = min(int(num_assistant_tokens), self.max_draft)
        steps = torch.arange(self.max_draft)
        limit = torch.minimum(self.room, torch.tensor(k))
        stop = (steps[None, :] + 1 >= limit[:, None]) | self.eos
        if threshold > 0:
            stop |= self.confidence < threshold
        # drafted = 1 + index of the first stop (every round drafts at least one token)
        first_stop = torch.where(stop.any(dim=1), stop.float().argmax(dim=1), torch.full_like(limit, k - 1))
        drafted = (first_stop + 1).clamp(max=limit)
        lead = torch.cumprod(self.matches.long(), dim=1).sum(dim=1)
        accepted = torch.minimum(lead, drafted)
        rounds = len(drafted)
        d, a = int(drafted.sum()), int(accepted.sum())
        return {
            "rounds": rounds,
            "drafted": d,
            "accepted": a,
            "acceptance_rate": a / d if d else 0.0,
            "mean_accepted": a / rounds if rounds else 0.0,
            "tokens_per_round": (a + rounds) / rounds if rounds else 1.0,
        }

    def per_token_acceptance(self) -> float:
        """Maximum-likelihood per-token acceptance `alpha` of a geometric model of the rounds."""
        lead = torch.cumprod(self.matches.long(), dim=1).sum(dim=1)
        lead = torch.minimum(lead, self.room.clamp(min=1))
        accepted = int(lead.sum())
        rejected = int((lead < torch.minimum(self.room, torch.tensor(self.max_draft))).sum())
        return accepted / (accepted + rejected) if accepted + rejected else 0.0


def _replay(
    trajectories: Trajectories,
    chains: _TeacherForcedChains | _DraftedChains,
    *,
    num_assistant_tokens: int,
    schedule: str = "constant",
    threshold: float = 0.0,
    samples: list[tuple[list[bool], list[float], list[bool], int]] | None = None,
) -> list[ReplayResult]:
    """Replay every sequence's rounds with one draft setting; the rounds of all sequences advance together.

    With `samples` (a list), each round's per-step matches, confidences and end-of-sequence flags over
    `num_assistant_tokens` steps, and its room, are appended to it (teacher-forced chains only).
    """
    t = trajectories
    eos = set(t.eos_token_ids)
    sequences = [t.input_ids[b, : t.lengths[b]].tolist() for b in range(t.num_sequences)]
    results = [
        ReplayResult(num_assistant_tokens=num_assistant_tokens, schedule=schedule, threshold=threshold, target_forwards=1)
        for _ in sequences
    ]
    length = [p + 1 for p in t.prompt_lengths]  # the first round is the target's prefill: one token, no draft
    k = [num_assistant_tokens] * len(sequences)
    while True:
        active = []
        for b, end in enumerate(t.lengths):
            if length[b] >= end:
                continue
            budget = min(k[b], t.max_lengths[b] - length[b] - 1)
            if budget <= 0:  # no room to draft: the remaining tokens come one per target step
                results[b].target_forwards += end - length[b]
                length[b] = end
                continue
            active.append((b, budget))
        if not active:
            break
        width = num_assistant_tokens if samples is not None else max(budget for _, budget in active)
        rounds = chains.round([b for b, _ in active], [length[b] - 1 for b, _ in active], width)
        for (b, budget), chain in zip(active, rounds):
            sequence, end, at = sequences[b], t.lengths[b], length[b]
            drafted = 0
            while drafted < budget:
                token, probability = chain[drafted]
                drafted += 1
                if token in eos or (threshold and probability < threshold):
                    break
            accepted = 0
            while accepted < drafted and at + accepted < end and chain[accepted][0] == sequence[at + accepted]:
                accepted += 1
            # generate keeps the accepted tokens plus the target's own next one, cut after an end-of-sequence
            for i, token in enumerate(sequence[at : at + accepted + 1]):
                if token in eos:
                    accepted = i
                    break
            if samples is not None:
                steps = [chain[i] for i in range(width)]
                matches = [at + i < end and steps[i][0] == sequence[at + i] for i in range(width)]
                room = max(1, min(t.max_lengths[b] - at - 1, end - at))
                samples.append((matches, [p for _, p in steps], [s in eos for s, _ in steps], room))
            result = results[b]
            result.record(drafted, accepted)
            result.target_forwards += 1
            result.draft_forwards += drafted
            if schedule != "constant":
                k[b] = k[b] + 2 if accepted == drafted else max(1, k[b] - 1)
            length[b] = at + accepted + 1
    for result, end, prompt in zip(results, t.lengths, t.prompt_lengths):
        result.new_tokens = end - prompt
    return results


@torch.no_grad()
def replay_rounds(draft: Any, trajectories: Trajectories, max_draft: int = MAX_DRAFT) -> RoundSamples:
    """Replay the draft's rounds on the target's greedy output, drafting up to `max_draft` tokens a round.

    Rounds follow each other as in `generate(..., assistant_model=draft)` with a constant draft length of
    `max_draft` and no confidence stop; each round's chains are teacher-forced (see the module docstring),
    all sequences' current rounds in one batched forward of the draft.

    Args:
        draft (`SDFPAssistant`): a draft of the model the trajectories were made with.
        trajectories (`Trajectories`): from `target_trajectories`.
        max_draft (`int`, *optional*, defaults to 8): tokens drafted per round.

    Returns:
        [`RoundSamples`]
    """
    start = time.perf_counter()
    samples: list[tuple[list[bool], list[float], list[bool], int]] = []
    _replay(trajectories, _TeacherForcedChains(draft, trajectories), num_assistant_tokens=max_draft, samples=samples)
    if not samples:
        raise ValueError("the trajectories leave no room for a draft round: generate more new tokens")
    matches, confidence, eos, room = zip(*samples)
    return RoundSamples(
        matches=torch.tensor(matches, dtype=torch.bool),
        confidence=torch.tensor(confidence),
        eos=torch.tensor(eos, dtype=torch.bool),
        room=torch.tensor(room),
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def replay_acceptance(
    model: PreTrainedModel,
    draft: Any,
    prompt_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    output_ids: torch.Tensor | None = None,
    num_assistant_tokens: Iterable[int] = (1, 2, 3, 4, 6, 8),
    thresholds: Iterable[float] = (0.0,),
    schedules: Iterable[str] = ("constant",),
) -> list[ReplayResult]:
    """Replay greedy speculative decoding with `draft` exactly, for every combination of settings.

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
        output_ids = model.generate(prompt_ids, max_new_tokens=max_new_tokens, do_sample=False)
    trajectory = _trajectory_of_output(model, prompt_ids.shape[1], output_ids, max_new_tokens)
    chains = _DraftedChains(model, draft, trajectory)
    results = []
    for schedule, start, threshold in itertools.product(schedules, num_assistant_tokens, thresholds):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        (result,) = _replay(trajectory, chains, num_assistant_tokens=start, schedule=schedule, threshold=threshold)
        results.append(result)
    return results


@torch.no_grad()
def one_step_agreement(draft: Any, trajectories: Trajectories, top_k: int = 1) -> float:
    """Fraction of the target's greedy tokens that the draft's first step of a round would predict.

    Every generated position is treated as a round start: the draft reads the target's keys and values of
    everything before it and predicts the next token. One batched forward of the draft: a cheap screen for
    acceptance (the first draft token of a round is accepted exactly when it agrees). With `top_k` > 1, the
    fraction of the target's tokens among the draft's `top_k` most likely ones (what a draft tree of that
    width would catch).
    """
    ids = trajectories.input_ids
    device = ids.device
    lengths = torch.tensor(trajectories.lengths, device=device)
    starts = torch.tensor(trajectories.prompt_lengths, device=device)
    width = int((lengths - starts).max()) - 1
    if width < 1:
        raise ValueError("the trajectories hold no generated token to predict")
    q_pos = starts[:, None] + torch.arange(width, device=device)[None, :]
    valid = q_pos + 1 < lengths[:, None]
    q_ids = ids.gather(1, q_pos.clamp(max=ids.shape[1] - 1))
    prefix_valid = torch.arange(ids.shape[1], device=device)[None, :] < lengths[:, None]
    masks = prefix_masks(draft.config, q_pos, q_pos, prefix_valid, draft.get_input_embeddings().weight.dtype)
    layers = [
        None if t is None else PrefixLayer(trajectories.keys[t], trajectories.values[t]) for t in draft.cache_layer_map
    ]
    logits = draft(
        input_ids=q_ids, position_ids=q_pos, attention_mask=masks, use_cache=True, **cache_kwargs(draft, PrefixCache(layers))
    ).logits
    nxt = ids.gather(1, (q_pos + 1).clamp(max=ids.shape[1] - 1))
    agree = (logits.topk(top_k, dim=-1).indices == nxt[..., None]).any(dim=-1) & valid
    return float(agree.sum()) / max(int(valid.sum()), 1)
