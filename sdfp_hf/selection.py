"""From scores to what the draft skips: by ratio, by count, or weighed against the bytes each branch holds.

- `branch_costs(model)`: the parameter bytes of each layer's attention and MLP branch, what skipping it
  saves on memory-bound hardware.
- `select_skips(scores, skip_ratio=0.4)`: the lowest-scoring layers (granularity ``"layer"``) or branches
  (``"sublayer"``) first, optionally protecting the first and last layers. At sub-layer granularity a
  branch is weighed against what skipping it saves: `skip_ratio` is the fraction of the decoder layers'
  parameter bytes the draft does not read (an MLP holds most of a layer's bytes, an attention block few of
  them), and branches are taken in order of score per byte saved while they fit in that budget.

- `plan_nbytes(model, plan)`: the bytes a draft's quantized copies hold (what `draft.extra_bytes` says).
- `quantized_plans(model, scores, budget)`: candidate plans that quantize every kept branch, int8 or int4,
  or int4 with the branches that FIT says lose most to int4 (``"fit_quant"`` scores) kept int8, each
  within a memory budget.

Choosing among candidate plans by predicted speedup is the profiler's job (`sdfp_hf.profiler`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ._deprecated import moved
from .architectures import get_architecture
from .plan import QUANTIZED, DraftPlan
from .quantize import nbytes_of, quantized_nbytes
from .skipset import GRANULARITIES, SkipSet

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .fit import LayerScores

__all__ = [
    "DEFAULT_GRANULARITY",
    "GRANULARITIES",
    "MIXED_SHARES",
    "branch_costs",
    "plan_nbytes",
    "quantized_plans",
    "select_skips",
]

DEFAULT_GRANULARITY = "layer"
MIXED_SHARES = (0.2,)
"""Shares of the decoder's bytes kept int8 in the mixed int4 / int8 candidates, most FIT-sensitive first.

One mix beside uniform int4 (bf16): on SmolLM2-135M a mix wins (int4 alone keeps 0.81 of the tokens), on
Qwen2.5-Coder-1.5B uniform int4 does (0.97 kept at a step of 0.35 of the target's,
`benchmarks/results/draft-plans/`, where the mixes measured 0.42-0.44). The profiler chose the 0.2 mix
over a 0.5 one on both (`benchmarks/results/tree-rounds/profiler_lines.txt`), and each candidate costs it
a build, a timing and a replay."""


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
        [`SkipSet`]: what the draft skips (`skip.to_lists()` gives `SDFPAssistant.from_target`'s arguments).
    """
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


def plan_nbytes(model: PreTrainedModel, plan: DraftPlan, draft_vocab: list[int] | None = None) -> int:
    """The bytes a draft of `model` with `plan` holds of its own (what `draft.extra_bytes` will say)."""
    spec = get_architecture(model)
    total = 0
    for i, layer in enumerate(spec.decoder_layers(model)):
        for kind in ("attention", "mlp"):
            precision = plan.precision(i, kind)
            if precision in QUANTIZED:
                total += quantized_nbytes(spec.branch(layer, kind), precision, plan.group_size)
    head = model.get_output_embeddings()
    rows, columns = head.weight.shape
    rows = rows if draft_vocab is None else len(draft_vocab)
    has_bias = getattr(head, "bias", None) is not None
    quantized = nbytes_of(rows, columns, has_bias, plan.head, plan.group_size, head.weight.device.type) if plan.head in QUANTIZED else 0
    if quantized:
        total += quantized
    elif draft_vocab is not None:
        total += (rows * columns + (rows if has_bias else 0)) * head.weight.element_size()
    return total


def quantized_plans(
    model: PreTrainedModel,
    scores: LayerScores | None,
    budget: int,
    *,
    skip: SkipSet | None = None,
    shares: Sequence[float] = MIXED_SHARES,
    group_size: int = 64,
) -> list[tuple[str, DraftPlan]]:
    """Candidate plans that quantize every kept branch and the head, within `budget` bytes.

    With ``"fit_quant"`` `scores`: int4 with the branches that lose most to int4 per byte kept int8, covering
    each of `shares` of the decoder's bytes (the FIT of mixed-precision quantization), and uniform int4;
    without them, uniform int8 and int4. Their heads are int8; uniform int4 comes a second time with an int4
    head (`"int4:head-int4"`), the cheapest draft of all: on Qwen2.5-Coder-1.5B bf16 it made a draft step
    15% cheaper for 1% less agreement, on SmolLM2-135M (a far smaller head) no cheaper for 5% less
    (`benchmarks/results/epyc-zen4/readings_2026-12-07_head.txt`), so the replay and the measured costs
    choose (a tie goes to the cheaper step: `sdfp_hf.profiler.best_candidate`). Plans over the budget and
    duplicates are left out; the list runs from the most memory to the least.

    Args:
        model (`PreTrainedModel`): the target.
        scores (`LayerScores`, *optional*): int4 sensitivities per branch (``"fit_quant"``).
        budget (`int`): the most bytes a draft may hold of its own.
        skip (`SkipSet`, *optional*): branches skipped in every candidate.

    Returns:
        `list[tuple[str, DraftPlan]]`: a short name and the plan.
    """
    spec = get_architecture(model)
    layers = spec.decoder_layers(model)
    n = len(layers)
    skip = skip or SkipSet(n)
    lists = skip.to_lists()
    uniform = {
        fmt: DraftPlan.from_lists(n, **lists, quantize=fmt, head="int8", group_size=group_size) for fmt in QUANTIZED
    }
    candidates = []
    if scores is not None and scores.method == "fit_quant":
        branches = [(i, kind) for i in range(n) for kind in ("attention", "mlp")]
        size = {b: float(sum(p.numel() for p in spec.branch(layers[b[0]], b[1]).parameters())) for b in branches}
        score = {(i, "attention"): scores.attention[i] for i in range(n)} | {(i, "mlp"): scores.mlp[i] for i in range(n)}
        ranked = sorted(branches, key=lambda b: score[b] / max(size[b], 1.0), reverse=True)
        total = sum(size.values())
        for share in shares:
            kept, covered = set(), 0.0
            for b in ranked:
                if covered >= share * total:
                    break
                kept.add(b)
                covered += size[b]
            precisions = {kind: ["int8" if (i, kind) in kept else "int4" for i in range(n)] for kind in ("attention", "mlp")}
            plan = DraftPlan.from_lists(n, **lists, **precisions, head="int8", group_size=group_size)
            candidates.append((f"int4+int8:{share:g}", plan))
    # without sensitivities, the two ends; with them, the mixes and uniform int4
    candidates += [(fmt, uniform[fmt]) for fmt in (QUANTIZED if not candidates else ("int4",))]
    candidates.append(("int4:head-int4", dataclasses.replace(uniform["int4"], head="int4")))
    out, seen = [], set()
    for name, plan in sorted(candidates, key=lambda c: -plan_nbytes(model, c[1])):
        if plan in seen or plan_nbytes(model, plan) > budget:
            continue
        seen.add(plan)
        out.append((name, plan))
    return out


# Names that lived here before 0.2, importable from here for one more release.
__getattr__ = moved(
    __name__,
    {
        "AUTO_RATIOS": "sdfp_hf.profiler",
        "NoSpeedupWarning": "sdfp_hf.profiler",
        "ProfileResult": "sdfp_hf.profiler",
        "profile": "sdfp_hf.profiler",
        "MAX_DRAFT": "sdfp_hf.costs",
        "StepCosts": "sdfp_hf.costs",
        "measure_step_costs": "sdfp_hf.costs",
        "predict_speedup": "sdfp_hf.costs",
        "RoundSamples": "sdfp_hf.replay",
        "Trajectories": "sdfp_hf.replay",
        "one_step_agreement": "sdfp_hf.replay",
        "replay_rounds": "sdfp_hf.replay",
        "target_trajectories": "sdfp_hf.replay",
        "trajectories_from_calibration": "sdfp_hf.replay",
    },
)
