"""From scores to a draft: which layers or sub-layers to skip, by ratio, by count, or ``"auto"``.

- `select_skips(scores, skip_ratio=0.4)`: the lowest-scoring layers (granularity ``"layer"``) or branches
  (``"sublayer"``) first, optionally protecting the first and last layers. At sub-layer granularity a
  branch is weighed against what skipping it saves: `skip_ratio` is the fraction of the decoder layers'
  parameter bytes the draft does not read (an MLP holds most of a layer's bytes, an attention block few of
  them), and branches are taken in order of score per byte saved while they fit in that budget.
- `replay_rounds`: the draft's exact greedy acceptance on the target's own greedy output, without
  running the target again: every round is replayed in one batched forward of the draft that reads the
  target's keys and values for the verified prefix, as `SDFPCandidateGenerator` does.
- `measure_step_costs`: the measured cost of a draft step and of verification, relative to a target step.
- `profile(model)`: calibration, scores and selection in one call; ``skip_ratio="auto"`` tries a handful of
  ratios and keeps the one with the highest predicted speedup.
"""

from __future__ import annotations

import copy
import logging
import math
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .architectures import get_architecture
from .calibration import CalibrationData, build_calibration, generate_continuations
from .fit import DEFAULT_SCORING_METHOD, LayerScores, _prefix_cache, _prefix_masks, _PrefixLayer, score_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .assistant import SDFPAssistant, SkipSet

__all__ = [
    "AUTO_RATIOS",
    "GRANULARITIES",
    "NoSpeedupWarning",
    "ProfileResult",
    "RoundSamples",
    "StepCosts",
    "Trajectories",
    "branch_costs",
    "measure_step_costs",
    "one_step_agreement",
    "predict_speedup",
    "profile",
    "replay_rounds",
    "select_skips",
    "target_trajectories",
]

logger = logging.getLogger(__name__)

GRANULARITIES = ("layer", "sublayer")
AUTO_RATIOS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
"""Skip ratios ``skip_ratio="auto"`` tries."""
DEFAULT_GRANULARITY = "layer"
MAX_DRAFT = 8
"""Longest draft the replay measures (and `auto` may recommend)."""


class NoSpeedupWarning(UserWarning):
    """Warned by ``skip_ratio="auto"`` when no candidate draft is predicted faster than plain decoding."""


# ---------------------------------------------------------------------------------------------- selection


def branch_costs(model: PreTrainedModel) -> tuple[list[float], list[float]]:
    """Parameter bytes of each layer's attention and MLP branch (with their norms): what skipping it saves.

    Decoding one token reads every weight once, so on memory-bound hardware a branch's bytes are its cost.
    """
    spec = get_architecture(model)
    attention, mlp = [], []
    for layer in spec.decoder_layers(model):
        for kind, out in (("attention", attention), ("mlp", mlp)):
            seen: set[int] = set()
            total = 0
            for module in spec.branch_modules(layer, kind):
                for p in module.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        total += p.numel() * p.element_size()
            out.append(float(total))
    return attention, mlp


def select_skips(
    scores: LayerScores,
    *,
    skip_ratio: float | None = None,
    num_skip: int | None = None,
    granularity: str = DEFAULT_GRANULARITY,
    protect_first: int = 0,
    protect_last: int = 0,
    costs: tuple[Sequence[float], Sequence[float]] | None = None,
    cost_weighted: bool = True,
    interactions: bool = False,
) -> SkipSet:
    """Choose what the draft skips: the lowest scores first.

    Args:
        scores (`LayerScores`): from [`sdfp_hf.fit.score_layers`].
        skip_ratio (`float`, *optional*): fraction to skip, in [0, 1): of the layers at ``"layer"``
            granularity; of the decoder layers' parameter bytes (`costs`) at ``"sublayer"`` granularity.
        num_skip (`int`, *optional*): number of layers (``"layer"``) or branches (``"sublayer"``) to skip.
            Give exactly one of `skip_ratio` and `num_skip`.
        granularity (`str`, *optional*, defaults to ``"layer"``): skip whole layers (ranked by
            `scores.layer`), or attention and MLP branches separately (`scores.attention`, `scores.mlp`).
        protect_first (`int`, *optional*, defaults to 0): never skip the first this many layers.
        protect_last (`int`, *optional*, defaults to 0): never skip the last this many layers.
        costs (`tuple[list[float], list[float]]`, *optional*): what skipping each attention and MLP branch
            saves (see `branch_costs`); needed for `skip_ratio` at ``"sublayer"`` granularity.
        cost_weighted (`bool`, *optional*, defaults to `True`): at ``"sublayer"`` granularity, take branches
            in order of score per unit of cost saved (the cheapest loss of accuracy per byte saved), not of
            raw score.
        interactions (`bool`, *optional*, defaults to `False`): with scores that carry the Fisher matrix of
            the branch gates (``"fisher_gate"``), choose greedily the set whose combined removal the matrix
            predicts costs least (``1_S' F 1_S``, the second-order change of the output distribution when
            all of the set goes at once) instead of summing single-branch scores. Off by default: measured
            on SmolLM2-135M, the off-diagonal terms are too noisy on a small calibration set and the
            selection accepted less than with the diagonal alone.

    Returns:
        [`SkipSet`]: what to pass to `SDFPAssistant.from_target` (via `skip_lists`).
    """
    from .assistant import SkipSet

    n = scores.num_layers
    if (skip_ratio is None) == (num_skip is None):
        raise ValueError(
            f"give exactly one of skip_ratio and num_skip (got skip_ratio={skip_ratio!r}, num_skip={num_skip!r})"
        )
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    for name, value in (("protect_first", protect_first), ("protect_last", protect_last)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if protect_first + protect_last >= n:
        raise ValueError(
            f"protect_first={protect_first} and protect_last={protect_last} protect all {n} layers: nothing is left "
            "to skip"
        )
    if skip_ratio is not None and (
        isinstance(skip_ratio, bool) or not isinstance(skip_ratio, (int, float)) or not 0 <= skip_ratio < 1
    ):
        raise ValueError(f"skip_ratio must be a number in [0, 1), got {skip_ratio!r}")
    if num_skip is not None and (isinstance(num_skip, bool) or not isinstance(num_skip, int) or num_skip < 0):
        raise ValueError(f"num_skip must be a non-negative integer, got {num_skip!r}")
    candidates = [i for i in range(protect_first, n - protect_last)]
    matrix = scores.details.get("gate_fisher_matrix") if interactions else None
    if interactions and matrix is None:
        raise ValueError(
            f"interactions=True needs scores that carry the Fisher matrix of the branch gates (method "
            f"'fisher_gate'), not {scores.method!r}"
        )
    F = torch.tensor(matrix, dtype=torch.float64) if matrix is not None else None

    if granularity == "layer":
        k = num_skip if num_skip is not None else int(round(skip_ratio * n))
        if k > len(candidates) or k >= n:
            raise ValueError(
                f"cannot skip {k} of {n} layers with {n - len(candidates)} protected: at most "
                f"{min(len(candidates), n - 1)}"
            )
        if F is None:
            chosen = sorted(sorted(candidates, key=lambda i: (scores.layer[i], i))[:k])
        else:
            # the layer gate moves both branch gates: its Fisher matrix sums 2x2 blocks
            M = F[0::2, 0::2] + F[0::2, 1::2] + F[1::2, 0::2] + F[1::2, 1::2]
            chosen = _greedy_quadratic(M, candidates, [1.0] * n, k, math.inf, cost_weighted=False)
        return SkipSet(n, tuple(chosen), tuple(chosen))

    if num_skip is None and costs is None:
        raise ValueError(
            "skip_ratio at 'sublayer' granularity is a fraction of the layers' bytes: pass "
            "costs=branch_costs(model) (or num_skip, a number of branches)"
        )
    if num_skip is not None and num_skip > 2 * len(candidates):
        raise ValueError(f"cannot skip {num_skip} branches: only {2 * len(candidates)} are not protected")
    # branch b = 2 * layer + (0 for attention, 1 for MLP)
    cost = [1.0] * (2 * n)
    if costs is not None:
        cost[0::2], cost[1::2] = [float(c) for c in costs[0]], [float(c) for c in costs[1]]
    items = [2 * i + j for i in candidates for j in (0, 1)]
    budget = skip_ratio * sum(cost) if skip_ratio is not None else math.inf
    count = num_skip if num_skip is not None else len(items)
    if F is None:
        values = [v for pair in zip(scores.attention, scores.mlp) for v in pair]
        F = torch.diag(torch.tensor(values, dtype=torch.float64))
    chosen = _greedy_quadratic(F, items, cost, count, budget, cost_weighted=cost_weighted, max_attention=n - 1)
    attention = tuple(sorted(b // 2 for b in chosen if b % 2 == 0))
    mlp = tuple(sorted(b // 2 for b in chosen if b % 2 == 1))
    return SkipSet(n, attention, mlp)


def _greedy_quadratic(
    M: torch.Tensor,
    items: Sequence[int],
    cost: Sequence[float],
    count: int,
    budget: float,
    *,
    cost_weighted: bool,
    max_attention: int | None = None,
) -> list[int]:
    """Greedily build a set `S` of at most `count` items within `budget` that keeps ``1_S' M 1_S`` small.

    Each step adds the item with the smallest marginal increase ``M_bb + 2 * sum_{c in S} M_bc`` (per unit
    of cost when `cost_weighted`) among those that still fit. With a diagonal `M` this is simply "lowest
    score first", skipping items too big for what is left of the budget. Ties go to the lower index.
    `max_attention` caps the even items (attention branches) taken.
    """
    chosen: list[int] = []
    spent = 0.0
    cross = torch.zeros(M.shape[0], dtype=torch.float64)  # sum over chosen c of M[b, c]
    remaining = list(items)
    while remaining and len(chosen) < count:
        best, best_key = None, None
        for b in remaining:
            if spent + cost[b] > budget * (1 + 1e-9):
                continue
            if max_attention is not None and b % 2 == 0 and sum(1 for c in chosen if c % 2 == 0) >= max_attention:
                continue
            marginal = float(M[b, b] + 2 * cross[b])
            key = (marginal / cost[b] if cost_weighted and cost[b] > 0 else marginal, b)
            if best_key is None or key < best_key:
                best, best_key = b, key
        if best is None:
            break
        chosen.append(best)
        remaining.remove(best)
        spent += cost[best]
        cross += M[:, best]
    return sorted(chosen)


def skip_lists(skip: SkipSet) -> dict[str, list[int]]:
    """`skip_layers` / `skip_attention` / `skip_mlp` keyword arguments of `SDFPAssistant.from_target`."""
    whole = set(skip.layers)
    return {
        "skip_layers": sorted(whole),
        "skip_attention": sorted(set(skip.attention) - whole),
        "skip_mlp": sorted(set(skip.mlp) - whole),
    }


def skip_fraction(skip: SkipSet, costs: tuple[Sequence[float], Sequence[float]]) -> float:
    """Fraction of the decoder layers' bytes that a skip set does not read."""
    total = sum(costs[0]) + sum(costs[1])
    saved = sum(costs[0][i] for i in skip.attention) + sum(costs[1][i] for i in skip.mlp)
    return saved / total if total else 0.0


# ---------------------------------------------------------------------------------------------- replay


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
    def num_new_tokens(self) -> int:
        return sum(n - p for n, p in zip(self.lengths, self.prompt_lengths))


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
    from .fit import _forward

    start = time.perf_counter()
    rows = generate_continuations(model, prompts, max_new_tokens, temperature=0.0, stop_at_eos=True)
    device = model.get_input_embeddings().weight.device
    width = max(len(r) for r in rows)
    pad = int(rows[0][0])
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    batch = CalibrationData(ids.to(device), mask.to(device), mask.bool().to(device), [len(p) for p in prompts])
    recorded: list[_PrefixLayer] = []
    _forward(model, batch, local=True, record=recorded)
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    return Trajectories(
        input_ids=ids.to(device),
        lengths=[len(r) for r in rows],
        prompt_lengths=[len(p) for p in prompts],
        max_lengths=[len(p) + max_new_tokens for p in prompts],
        keys=[layer.keys for layer in recorded],
        values=[layer.values for layer in recorded],
        eos_token_ids=eos,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def trajectories_from_calibration(model: PreTrainedModel, data: CalibrationData, num_sequences: int) -> Trajectories:
    """Use calibration text the target wrote greedily as its trajectories (no generation needed).

    Only valid for calibration written at temperature 0 (after an optional sampled opening, which counts
    as prompt).
    """
    from .fit import _forward

    start = time.perf_counter()
    opening = int(data.provenance.get("sampled_tokens") or 0)
    rows = list(range(min(num_sequences, data.num_sequences)))
    lengths = [data.lengths()[i] for i in rows]
    prompt_lengths = [min(data.prompt_lengths[i] + opening, lengths[j] - 1) for j, i in enumerate(rows)]
    # the target wrote `sequence_length` tokens after each row's start or prompt
    new_tokens = int(data.provenance.get("sequence_length") or max(lengths))
    max_lengths = [data.prompt_lengths[i] + new_tokens for i in rows]
    device = model.get_input_embeddings().weight.device
    batch = data.batches(len(rows))[0].to(device)
    recorded: list[_PrefixLayer] = []
    _forward(model, batch, local=True, record=recorded)
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    return Trajectories(
        input_ids=batch.input_ids,
        lengths=lengths,
        prompt_lengths=prompt_lengths,
        max_lengths=max_lengths,
        keys=[layer.keys for layer in recorded],
        values=[layer.values for layer in recorded],
        eos_token_ids=eos,
        seconds=time.perf_counter() - start,
    )


@dataclass
class RoundSamples:
    """Draft rounds replayed on the target's greedy output, with the longest draft (`max_draft` tokens).

    Each row is one round: whether the draft's token at each step equals the target's (`matches`), the
    draft's probability of its own token (`confidence`), whether it proposed an end-of-sequence token
    (`eos`), and how many tokens it may draft before the generation's length limit (`room`). From these,
    `stats` derives the rounds of any shorter draft length and any confidence threshold.

    Acceptance is exact for greedy decoding. What a draft would propose after its first wrong token is
    read with the target's tokens as inputs, so the count of drafted tokens past a rejection (which only
    the confidence stop depends on) is approximate. (`sdfp_hf.replay` is the exact, sequential replay the
    benchmark checks real runs against; this batched one is about ten times faster, which the profiler's
    many candidate drafts need.)
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


@torch.no_grad()
def replay_rounds(
    draft: SDFPAssistant, trajectories: Trajectories, max_draft: int = MAX_DRAFT
) -> RoundSamples:
    """Replay the draft's rounds on the target's greedy output, drafting up to `max_draft` tokens a round.

    Rounds follow each other as in `generate(..., assistant_model=draft)` with a constant draft length of
    `max_draft` and no confidence stop: a round starts at the last verified token, the draft reads the
    target's keys and values for everything before it, and the next round starts after the accepted tokens
    and the target's own token. All sequences' current rounds run in one batched forward of the draft.

    Args:
        draft (`SDFPAssistant`): a draft of the model the trajectories were made with.
        trajectories (`Trajectories`): from `target_trajectories`.
        max_draft (`int`, *optional*, defaults to 8): tokens drafted per round.

    Returns:
        [`RoundSamples`]
    """
    start_time = time.perf_counter()
    ids = trajectories.input_ids
    device = ids.device
    layer_map = draft.cache_layer_map
    dtype = draft.get_input_embeddings().weight.dtype
    eos = torch.tensor(trajectories.eos_token_ids or [-1], device=device)
    num = ids.shape[0]
    # the first round starts at the target's first generated token (the prefill makes it; nothing is drafted)
    position = list(trajectories.prompt_lengths)
    matches, confidence, eos_flags, room = [], [], [], []
    steps = torch.arange(max_draft, device=device)
    while True:
        active = [
            b for b in range(num)
            if position[b] + 1 < trajectories.lengths[b] and trajectories.max_lengths[b] - position[b] - 2 >= 1
        ]
        if not active:
            break
        rows = torch.tensor(active, device=device)
        starts = torch.tensor([position[b] for b in active], device=device)
        q_pos = starts[:, None] + steps[None, :]
        lengths = torch.tensor([trajectories.lengths[b] for b in active], device=device)
        inside = q_pos < lengths[:, None]
        q_ids = torch.where(inside, ids[rows].gather(1, q_pos.clamp(max=ids.shape[1] - 1)), ids[rows, :1])
        prefix_valid = torch.arange(ids.shape[1], device=device)[None, :] < lengths[:, None]
        masks = _prefix_masks(draft.config, q_pos, starts[:, None].expand_as(q_pos), prefix_valid, dtype)
        layers = [
            None if t is None else _PrefixLayer(trajectories.keys[t][rows], trajectories.values[t][rows])
            for t in layer_map
        ]
        logits = draft(
            input_ids=q_ids, position_ids=q_pos, attention_mask=masks, cache=_prefix_cache(layers), use_cache=True
        ).logits.float()
        probs = logits.softmax(dim=-1)
        conf, token = probs.max(dim=-1)
        nxt = ids[rows].gather(1, (q_pos + 1).clamp(max=ids.shape[1] - 1))
        match = (token == nxt) & (q_pos + 1 < lengths[:, None])
        # tokens the generator may still draft: it stops one short of max_length
        max_len = torch.tensor([trajectories.max_lengths[b] for b in active], device=device)
        can = torch.minimum(max_len - starts - 2, lengths - starts - 1).clamp(min=1)
        lead = torch.cumprod(match.long(), dim=1).sum(dim=1)
        accepted = torch.minimum(lead, can.clamp(max=max_draft))
        matches.append(match.cpu())
        confidence.append(conf.cpu())
        eos_flags.append(torch.isin(token, eos).cpu())
        room.append(can.cpu())
        for j, b in enumerate(active):
            position[b] += int(accepted[j]) + 1
    if not matches:
        raise ValueError("the trajectories leave no room for a draft round: generate more new tokens")
    return RoundSamples(
        matches=torch.cat(matches),
        confidence=torch.cat(confidence),
        eos=torch.cat(eos_flags),
        room=torch.cat(room),
        seconds=time.perf_counter() - start_time,
    )


@torch.no_grad()
def one_step_agreement(draft: SDFPAssistant, trajectories: Trajectories, top_k: int = 1) -> float:
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
    masks = _prefix_masks(draft.config, q_pos, q_pos, prefix_valid, draft.get_input_embeddings().weight.dtype)
    layers = [
        None if t is None else _PrefixLayer(trajectories.keys[t], trajectories.values[t])
        for t in draft.cache_layer_map
    ]
    logits = draft(
        input_ids=q_ids, position_ids=q_pos, attention_mask=masks, cache=_prefix_cache(layers), use_cache=True
    ).logits
    nxt = ids.gather(1, (q_pos + 1).clamp(max=ids.shape[1] - 1))
    agree = (logits.topk(top_k, dim=-1).indices == nxt[..., None]).any(dim=-1) & valid
    return float(agree.sum()) / max(int(valid.sum()), 1)


# ---------------------------------------------------------------------------------------------- costs


@dataclass
class StepCosts:
    """Measured costs relative to one target decoding step (one token, with a KV cache).

    Args:
        draft (`float`): one draft step (one token through the kept layers and the output head).
        verify (`dict[int, float]`): a target forward of `n` tokens, for the measured `n`.
        target_seconds (`float`): the time of one target step (fastest of the repeats), in seconds.
    """

    draft: float
    verify: dict[int, float]
    target_seconds: float

    def verify_cost(self, n: int) -> float:
        """Cost of verifying `n` tokens (a target forward of `n` tokens), interpolated linearly."""
        known = sorted(self.verify.items())
        if n <= known[0][0]:
            return known[0][1]
        for (n0, c0), (n1, c1) in zip(known, known[1:]):
            if n <= n1:
                return c0 + (c1 - c0) * (n - n0) / (n1 - n0)
        (n0, c0), (n1, c1) = known[-2], known[-1]
        return c1 + (c1 - c0) * (n - n1) / (n1 - n0)


@torch.no_grad()
def measure_step_costs(
    model: PreTrainedModel,
    drafts: Sequence[SDFPAssistant],
    *,
    context_length: int = 128,
    repeats: int = 9,
    verify_tokens: int = MAX_DRAFT + 1,
) -> tuple[list[float], StepCosts]:
    """Time one decoding step of the target and of each draft, interleaved, on this machine.

    Each draft step reads the target's cache through a `DraftCache`, as in generation.

    Returns:
        `(draft_costs, target_costs)`: each draft's step cost relative to a target step, and the target's
        own `StepCosts` (with `draft` = 1.0 and the verification costs).
    """
    from .cache import DraftCache

    device = model.get_input_embeddings().weight.device
    g = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().weight.shape[0]
    context = torch.randint(0, vocab, (1, context_length), generator=g).to(device)
    out = model(input_ids=context, use_cache=True)
    cache = out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values
    token = context[:, -1:]
    position = torch.tensor([[context_length]], device=device)
    verify_ids = torch.randint(0, vocab, (1, verify_tokens), generator=g).to(device)
    verify_pos = torch.arange(context_length, context_length + verify_tokens, device=device)[None]

    def target_step(n: int) -> float:
        ids, pos = (token, position) if n == 1 else (verify_ids[:, :n], verify_pos[:, :n])
        scratch = copy.deepcopy(cache)  # sliding-window layers cannot always be cropped back
        t = time.perf_counter()
        model(input_ids=ids, position_ids=pos, cache=scratch, use_cache=True, logits_to_keep=n)
        return time.perf_counter() - t

    def draft_step(draft: SDFPAssistant) -> float:
        draft_cache = DraftCache(cache, draft.cache_layer_map)
        t = time.perf_counter()
        draft(input_ids=token, position_ids=position, cache=draft_cache, use_cache=True, logits_to_keep=1)
        return time.perf_counter() - t

    for _ in range(2):  # warm up
        target_step(1)
        for d in drafts:
            draft_step(d)
    target_times: list[float] = []
    verify_times: list[float] = []
    draft_times: list[list[float]] = [[] for _ in drafts]
    for _ in range(repeats):
        target_times.append(target_step(1))
        for j, d in enumerate(drafts):
            draft_times[j].append(draft_step(d))
        verify_times.append(target_step(verify_tokens))
    # The fastest of the interleaved repeats: on a shared machine, slower runs measure the neighbours' load,
    # not the model, and the ratio of minima is the steadiest estimate of the ratio of costs.
    base = min(target_times)
    costs = [min(t) / base for t in draft_times]
    target = StepCosts(draft=1.0, verify={1: 1.0, verify_tokens: min(verify_times) / base}, target_seconds=base)
    return costs, target


def predict_speedup(
    samples: RoundSamples,
    draft_cost: float,
    target: StepCosts,
    *,
    draft_lengths: Sequence[int] | None = None,
    thresholds: Sequence[float] = (0.0,),
) -> dict[str, Any]:
    """Expected speedup over plain decoding, for each draft length and confidence threshold; the best one.

    Speculative decoding's expected speedup is expected tokens per round over expected cost per round:
    ``(accepted + 1) / (drafted * c + v(drafted + 1))`` with `c` the cost of a draft step and `v(n)` that
    of verifying `n` tokens, both relative to a target step. The expectations are the replayed rounds'
    (not the closed form of i.i.d. acceptance, which real text, with its easy and hard stretches, breaks).

    Returns:
        `dict` with `speedup`, `num_assistant_tokens`, `threshold`, the stats of that setting, and `table`
        (every setting's speedup).
    """
    draft_lengths = draft_lengths or range(1, samples.max_draft + 1)
    best: dict[str, Any] | None = None
    table = {}
    for k in draft_lengths:
        for th in thresholds:
            s = samples.stats(k, th)
            if not s["rounds"]:
                continue
            per_round_draft = s["drafted"] / s["rounds"]
            cost = per_round_draft * draft_cost + target.verify_cost(per_round_draft + 1)
            speedup = s["tokens_per_round"] / cost
            table[(k, th)] = speedup
            if best is None or speedup > best["speedup"] + 1e-12:
                best = {"speedup": speedup, "num_assistant_tokens": k, "threshold": th, **s}
    if best is None:
        raise ValueError("no replayed round to predict a speedup from")
    best["table"] = {f"k={k},threshold={th}": v for (k, th), v in table.items()}
    best["alpha"] = samples.per_token_acceptance()
    return best


# ---------------------------------------------------------------------------------------------- profile


@dataclass
class ProfileResult:
    """What `profile` found: the skip set, the scores behind it, and the recommended draft settings.

    Args:
        skip (`SkipSet`): what the draft skips.
        scores (`LayerScores`): the per-layer scores.
        granularity (`str`): ``"layer"`` or ``"sublayer"``.
        skip_ratio (`float`): the chosen ratio (of layers, or of decoder bytes at sub-layer granularity).
        calibration (`dict`): calibration provenance (source, sizes, seed, dtype, seconds).
        timings (`dict[str, float]`): seconds spent calibrating, scoring and selecting.
        num_assistant_tokens (`int`), assistant_confidence_threshold (`float`),
        num_assistant_tokens_schedule (`str`): recommended draft settings.
        predicted (`dict`, *optional*): for ``"auto"``: the chosen candidate's replayed acceptance, measured
            step cost and predicted speedup.
        candidates (`list[dict]`): for ``"auto"``: every ratio tried, with the same figures.
    """

    skip: SkipSet
    scores: LayerScores
    granularity: str
    skip_ratio: float
    calibration: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    num_assistant_tokens: int | None = None
    assistant_confidence_threshold: float | None = None
    num_assistant_tokens_schedule: str | None = None
    predicted: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def skip_layers(self) -> list[int]:
        return skip_lists(self.skip)["skip_layers"]

    @property
    def skip_attention(self) -> list[int]:
        return skip_lists(self.skip)["skip_attention"]

    @property
    def skip_mlp(self) -> list[int]:
        return skip_lists(self.skip)["skip_mlp"]

    def draft_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `SDFPAssistant.from_target`: the skip lists and the recommended settings."""
        kwargs: dict[str, Any] = dict(skip_lists(self.skip))
        for name in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs

    def config_fields(self) -> dict[str, Any]:
        """Fields of `SDFPConfig` (pass to `SDFPConfig.from_model_config(model.config, **fields)`)."""
        granular = "layer" if self.skip.is_layer_granular else "sublayer"
        fields_: dict[str, Any] = {
            "granularity": granular,
            **skip_lists(self.skip),
            "scores": self.scores.as_dict(),
            "scoring_method": self.scores.method,
            "calibration": {k: v for k, v in self.calibration.items() if v is not None},
        }
        for name in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"):
            if getattr(self, name) is not None:
                fields_[name] = getattr(self, name)
        if self.predicted:
            fields_["measurements"] = {
                "acceptance": float(self.predicted["acceptance_rate"]),
                "predicted_speedup": float(self.predicted["speedup"]),
                "draft_step_cost": float(self.predicted["draft_cost"]),
                "hardware": _hardware(),
            }
        return fields_

    def to_config(self, model: PreTrainedModel):
        """The mask as an `SDFPConfig` for `model`."""
        from .config import SDFPConfig

        return SDFPConfig.from_model_config(model.config, **self.config_fields())

    def draft(self, model: PreTrainedModel) -> SDFPAssistant:
        """Build the draft of `model` this profile recommends."""
        from .assistant import SDFPAssistant

        return SDFPAssistant.from_target(model, **self.draft_kwargs())

    def plot(self, path: str | None = None, **kwargs: Any):
        """Plot the scores with the skipped branches marked (see [`sdfp_hf.plot.plot_scores`])."""
        from .plot import plot_scores

        return plot_scores(self.scores, self.skip, path, **kwargs)

    def summary(self) -> str:
        lists = skip_lists(self.skip)
        parts = [f"{k}={v}" for k, v in lists.items() if v]
        text = f"{self.scores.method} scores, {self.granularity} granularity, skip ratio {self.skip_ratio:.2f}: " + (
            ", ".join(parts) or "nothing skipped"
        )
        if self.predicted:
            text += (
                f"; predicted {self.predicted['speedup']:.2f}x drafting {self.num_assistant_tokens} token(s) a round "
                f"({self.predicted['acceptance_rate']:.0%} accepted, a draft step costs "
                f"{self.predicted['draft_cost']:.2f} of a target step)"
            )
        times = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        return f"{text} [{times}]"


def _hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def profile(
    model: PreTrainedModel,
    calibration: Any = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    method: str = DEFAULT_SCORING_METHOD,
    skip_ratio: float | str = "auto",
    num_skip: int | None = None,
    granularity: str = DEFAULT_GRANULARITY,
    protect_first: int = 1,
    protect_last: int = 0,
    num_sequences: int | None = None,
    sequence_length: int | None = None,
    seed: int = 0,
    auto_ratios: Sequence[float] = AUTO_RATIOS,
    auto_prompts: int = 6,
    auto_new_tokens: int = 48,
    on_no_speedup: str = "warn",
    progress: bool = True,
    **score_kwargs: Any,
) -> ProfileResult:
    """Profile `model` and choose what its draft skips: calibration, scores, selection.

    Args:
        model (`PreTrainedModel`): the target.
        calibration (*optional*): calibration source (see [`sdfp_hf.calibration.build_calibration`]): texts,
            token ids, a `datasets.Dataset`, or `None` for data-free calibration on the model's own samples.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): needed for texts; gives the chat template.
        method (`str`, *optional*): scoring method (`sdfp_hf.fit.SCORING_METHODS`).
        skip_ratio (`float` or ``"auto"``, *optional*, defaults to ``"auto"``): fraction to skip (see
            `select_skips`), or ``"auto"``: try `auto_ratios` and keep the one with the best predicted speedup.
        num_skip (`int`, *optional*): number of layers / branches to skip instead of a ratio.
        granularity (`str`, *optional*, defaults to ``"layer"``): ``"layer"`` or ``"sublayer"``.
        protect_first (`int`, *optional*, defaults to 1), protect_last (`int`, *optional*, defaults to 0):
            layers never skipped at the start and the end.
        num_sequences (`int`, *optional*), sequence_length (`int`, *optional*): calibration size
            (defaults of `build_calibration`).
        seed (`int`, *optional*, defaults to 0): seed of calibration sampling and scoring.
        auto_ratios (`list[float]`, *optional*): candidate ratios for ``"auto"``.
        auto_prompts (`int`, *optional*, defaults to 6): prompts on which ``"auto"`` replays acceptance.
        auto_new_tokens (`int`, *optional*, defaults to 48): greedy tokens generated per prompt for it.
        on_no_speedup (`str`, *optional*, defaults to ``"warn"``): what ``"auto"`` does when no candidate is
            predicted faster than plain decoding: ``"warn"`` issues a `NoSpeedupWarning` and returns the
            smallest draft tried (the fewest skips: the most accurate, the least at risk); ``"raise"``
            raises a `ValueError` with the measured figures.
        progress (`bool`, *optional*, defaults to `True`): progress bars and a summary in the log.
        **score_kwargs: passed to [`sdfp_hf.fit.score_layers`] (`labels`, `batch_size`, ...).

    Returns:
        [`ProfileResult`]
    """
    if on_no_speedup not in ("warn", "raise"):
        raise ValueError(f"on_no_speedup must be 'warn' or 'raise', got {on_no_speedup!r}")
    if isinstance(skip_ratio, str) and skip_ratio != "auto":
        raise ValueError(f"skip_ratio must be a number in [0, 1) or 'auto', got {skip_ratio!r}")
    if num_skip is not None:
        skip_ratio = None  # type: ignore[assignment]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cal_kwargs: dict[str, Any] = {"tokenizer": tokenizer, "seed": seed}
    if num_sequences is not None:
        cal_kwargs["num_sequences"] = num_sequences
    if sequence_length is not None:
        cal_kwargs["sequence_length"] = sequence_length
    with torch.no_grad():
        data = build_calibration(model, calibration, **cal_kwargs)
    timings["calibration"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = score_layers(model, data, method, seed=seed, progress=progress, **score_kwargs)
    timings["scoring"] = time.perf_counter() - t1
    provenance = dict(data.provenance)
    provenance["dtype"] = str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")
    provenance["seconds"] = round(timings["calibration"] + timings["scoring"], 3)

    costs = branch_costs(model)
    common = dict(granularity=granularity, protect_first=protect_first, protect_last=protect_last, costs=costs)
    if skip_ratio != "auto":
        skip = select_skips(scores, skip_ratio=skip_ratio, num_skip=num_skip, **common)
        result = ProfileResult(
            skip, scores, granularity, skip_fraction(skip, costs) if granularity == "sublayer" else
            len(skip.layers) / scores.num_layers, provenance, timings,
        )
    else:
        t2 = time.perf_counter()
        result = _auto(model, data, scores, provenance, timings, common, auto_ratios, auto_prompts,
                       auto_new_tokens, on_no_speedup, progress)
        timings["selection"] = time.perf_counter() - t2
    result.timings["total"] = time.perf_counter() - t0
    if progress:
        _report(result.summary() + f"; {result.scores.num_tokens} calibration tokens, peak memory "
                f"{(result.scores.peak_memory_bytes or 0) / 2**20:.0f} MiB")
    return result


def _report(text: str) -> None:
    """The summary a finished profile prints (beside its progress bars), and logs."""
    import sys

    from tqdm.auto import tqdm

    logger.info(text)
    tqdm.write(f"sdfp-hf profile: {text}", file=sys.stderr)


def _auto(
    model, data: CalibrationData, scores: LayerScores, provenance, timings, common, ratios, num_prompts,
    new_tokens, on_no_speedup, progress,
) -> ProfileResult:
    from tqdm.auto import tqdm

    from .assistant import SDFPAssistant

    ratios = sorted({float(r) for r in ratios})
    if not ratios:
        raise ValueError("auto_ratios is empty: give at least one candidate skip ratio")
    if data.provenance.get("temperature") == 0.0 and any(data.prompt_lengths):
        # the calibration text is the target's own greedy output: replay on it, no generation needed
        trajectories = trajectories_from_calibration(model, data, num_prompts)
    else:
        trajectories = target_trajectories(model, _acceptance_prompts(data, num_prompts), new_tokens)
    skips, seen = [], set()
    for r in ratios:
        skip = select_skips(scores, skip_ratio=r, **common)
        if (skip.attention, skip.mlp) in seen or not skip.attention and not skip.mlp:
            continue
        seen.add((skip.attention, skip.mlp))
        skips.append((r, skip))
    if not skips:
        raise ValueError(f"none of the auto ratios {ratios} skips anything on a {scores.num_layers}-layer model")
    drafts = [SDFPAssistant.from_target(model, **skip_lists(s)) for _, s in skips]
    draft_costs, target = measure_step_costs(model, drafts)
    candidates: list[dict[str, Any]] = []
    with tqdm(total=len(skips), desc="auto: replaying drafts", disable=not progress, leave=False) as bar:
        for (r, skip), draft, cost in zip(skips, drafts, draft_costs):
            samples = replay_rounds(draft, trajectories)
            best = predict_speedup(samples, cost, target, thresholds=(0.0, 0.4))
            best.pop("table")
            candidates.append({"skip_ratio": r, "skip": skip, "draft_cost": cost, **best})
            bar.update(1)
            # Predicted speedup rises with the ratio while the cheaper draft still agrees, then falls: stop
            # once it has fallen twice in a row (larger drafts are also the slowest to replay).
            if len(candidates) >= 3 and candidates[-1]["speedup"] < candidates[-2]["speedup"] < candidates[-3]["speedup"]:
                break
    chosen = max(candidates, key=lambda c: c["speedup"])
    if chosen["speedup"] <= 1.0:
        table = "; ".join(
            f"ratio {c['skip_ratio']:.2f}: {c['speedup']:.2f}x ({c['acceptance_rate']:.0%} accepted, step cost "
            f"{c['draft_cost']:.2f})" for c in candidates
        )
        message = (
            f"no candidate draft is predicted faster than plain decoding on this machine ({table}): a draft step "
            "costs too much of a target step here, or acceptance is too low"
        )
        if on_no_speedup == "raise":
            raise ValueError(message + "; pass skip_ratio=<float> to build a draft anyway")
        chosen = candidates[0]
        warnings.warn(
            message + f"; returning the smallest draft tried (skip ratio {chosen['skip_ratio']:.2f}). Pass "
            "on_no_speedup='raise' to make this an error.",
            NoSpeedupWarning,
            stacklevel=3,
        )
    predicted = {k: v for k, v in chosen.items() if k != "skip"}
    predicted["target_step_seconds"] = target.target_seconds
    predicted["verify_cost"] = {str(k): v for k, v in target.verify.items()}
    predicted["replayed_tokens"] = trajectories.num_new_tokens
    return ProfileResult(
        chosen["skip"],
        scores,
        common["granularity"],
        chosen["skip_ratio"],
        provenance,
        timings,
        num_assistant_tokens=int(chosen["num_assistant_tokens"]),
        assistant_confidence_threshold=float(chosen["threshold"]),
        num_assistant_tokens_schedule="constant",
        predicted=predicted,
        candidates=[{k: v for k, v in c.items() if k != "skip"} | {"skip": skip_lists(c["skip"])} for c in candidates],
    )


def _acceptance_prompts(data: CalibrationData, num_prompts: int, min_prompt: int = 8) -> list[torch.Tensor]:
    """Prompts for the acceptance replay: each calibration sequence's given part, or its first tokens."""
    prompts = []
    for seq, p in zip(data.sequences(), data.prompt_lengths):
        # a bare start (BOS, a chat header) is followed by a few of the model's own tokens, so the
        # prompts differ from each other
        cut = max(p, 1) + min_prompt if p < 2 * min_prompt else p
        cut = min(cut, len(seq) - 1)
        if cut >= 1:
            prompts.append(seq[:cut].cpu())
        if len(prompts) == num_prompts:
            break
    if not prompts:
        raise ValueError("the calibration data has no sequence to take an acceptance prompt from")
    return prompts
