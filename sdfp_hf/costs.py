"""What a round costs, measured on this machine, and the ONE speedup model built on it.

Speculative decoding trades target steps for draft steps: a round that drafts `d` tokens (each a draft
step of cost `c`) and then verifies `n` candidates (a target forward of cost `v(n)`) yields, on average,
`tokens` tokens. Its throughput is ``tokens / (d * c + v(n))``: with costs relative to one target step
that is the speedup over plain decoding, with costs in seconds it is tokens per second. `throughput` is
that formula, and everything that predicts a speedup uses it: the profiler's choice of a draft
(`predict_speedup`), the round planner's choice of each round (`sdfp_hf.drafting.planner`), the replay's
predictions (`ReplayResult.predicted_speedup`).

- `expected_tokens(a, n)`: tokens a round yields when each of `n` proposed tokens is accepted with
  probability `a` (geometric model), the target's own token included.
- `StepCosts` / `measure_step_costs`: the measured cost of a draft step and of verification widths,
  relative to a target step.
- `CostCurve`: the measured time of a verification over `n` tokens, learnt while generating, per width
  bucket: flat up to some width where verification is memory-bound (GPUs, bf16 on CPUs), rising where it
  is not (fp32 on CPUs); interpolated between measured widths, never assumed linear.
- `clock(device)`: the timer every measurement here and in the decoding rounds reads: it first waits for
  the device's queued work (a CUDA forward returns before it has run).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ._compat import cache_kwargs, cache_of, synchronize
from .cache import DraftCache

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "MAX_DRAFT",
    "CostCurve",
    "StepCosts",
    "clock",
    "expected_tokens",
    "measure_step_costs",
    "perfect_draft_speedup",
    "predict_speedup",
    "throughput",
]

MAX_DRAFT = 8
"""Longest draft the profiler's replay measures (and may recommend)."""


def clock(device: torch.device | str | None = None) -> float:
    """`time.perf_counter()`, read once `device` has finished the work queued on it (no wait on CPU).

    On CUDA a forward returns when its kernels are queued; a timer around it must wait for the device or
    it measures the launch, not the work. Read it where the round waits for the device anyway (before a
    forward whose inputs are ready, after one whose outputs acceptance reads) and it adds no stall.
    """
    if device is not None:
        synchronize(device)
    return time.perf_counter()


def throughput(tokens: float, draft_steps: float, draft_step_cost: float, verify_cost: float) -> float:
    """Tokens per unit of cost of speculative rounds: ``tokens / (draft_steps * draft_step_cost + verify_cost)``.

    Args:
        tokens: tokens the rounds yield (accepted plus the target's own), per round or in total.
        draft_steps: draft forward passes, likewise.
        draft_step_cost: the cost of one draft step.
        verify_cost: the cost of the verification passes, likewise.

    With costs relative to one plain decoding step of the target, this is the speedup over plain
    decoding; with costs in seconds, tokens per second.
    """
    cost = draft_steps * draft_step_cost + verify_cost
    return tokens / cost if cost > 0 else 0.0


def expected_tokens(acceptance: float, proposed: int) -> float:
    """Tokens a round of `proposed` candidates yields when each is accepted with probability `acceptance`.

    Geometric model (a candidate is only reached if every earlier one was accepted): accepted tokens plus
    the target's own, ``(1 - a^(n+1)) / (1 - a)``.
    """
    a = min(acceptance, 0.999)
    return (1 - a ** (proposed + 1)) / (1 - a)


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
    drafts: Sequence[Any],
    *,
    context_length: int = 128,
    repeats: int = 9,
    warmup: int = 2,
    verify_tokens: int = MAX_DRAFT + 1,
) -> tuple[list[float], StepCosts]:
    """Time one decoding step of the target and of each draft, interleaved, on this machine.

    Each draft step reads the target's cache through a `DraftCache`, as in generation.

    Returns:
        `(draft_costs, target_costs)`: each draft's step cost relative to a target step, and the target's
        own `StepCosts` (with `draft` = 1.0 and the verification costs).
    """
    device = model.get_input_embeddings().weight.device
    g = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().weight.shape[0]
    context = torch.randint(0, vocab, (1, context_length), generator=g).to(device)
    out = model(input_ids=context, use_cache=True)
    cache = cache_of(out)
    token = context[:, -1:]
    position = torch.tensor([[context_length]], device=device)
    verify_ids = torch.randint(0, vocab, (1, verify_tokens), generator=g).to(device)
    verify_pos = torch.arange(context_length, context_length + verify_tokens, device=device)[None]

    def target_step(n: int) -> float:
        ids, pos = (token, position) if n == 1 else (verify_ids[:, :n], verify_pos[:, :n])
        scratch = copy.deepcopy(cache)  # sliding-window layers cannot always be cropped back
        t = clock(device)
        model(input_ids=ids, position_ids=pos, use_cache=True, logits_to_keep=n, **cache_kwargs(model, scratch))
        return clock(device) - t

    def draft_step(draft: Any) -> float:
        draft_cache = DraftCache(cache, draft.cache_layer_map)
        t = clock(device)
        draft(input_ids=token, position_ids=position, use_cache=True, logits_to_keep=1, **cache_kwargs(draft, draft_cache))
        return clock(device) - t

    for _ in range(warmup):
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
    samples: Any,
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

    Args:
        samples (`RoundSamples`): replayed rounds (`sdfp_hf.replay.replay_rounds`); anything with their
            `max_draft`, `stats(k, threshold)` and `per_token_acceptance()`.
        draft_cost (`float`): a draft step's cost relative to a target step.
        target (`StepCosts`): the target's measured verification costs.
        draft_lengths, thresholds: the settings to compare.

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
            speedup = throughput(s["tokens_per_round"], per_round_draft, draft_cost, target.verify_cost(per_round_draft + 1))
            table[(k, th)] = speedup
            if best is None or speedup > best["speedup"] + 1e-12:
                best = {"speedup": speedup, "num_assistant_tokens": k, "threshold": th, **s}
    if best is None:
        raise ValueError("no replayed round to predict a speedup from")
    best["table"] = {f"k={k},threshold={th}": v for (k, th), v in table.items()}
    best["alpha"] = samples.per_token_acceptance()
    return best


def perfect_draft_speedup(draft_cost: float, target: StepCosts, *, max_draft: int = MAX_DRAFT) -> tuple[float, int]:
    """The speedup over plain decoding of a draft of this step cost whose every drafted token is accepted.

    No draft of that cost can do better, whatever it skips: ``max_k (k + 1) / (k * c + v(k + 1))`` over draft
    lengths ``1 <= k <= max_draft``. When it is at most 1, drafting cannot beat a plain decoding step on this
    machine, and choosing what to skip is not worth measuring.

    Args:
        draft_cost (`float`): a draft step's cost relative to a target step.
        target (`StepCosts`): the target's measured verification costs.
        max_draft (`int`, *optional*, defaults to `MAX_DRAFT`): the longest draft considered.

    Returns:
        `tuple[float, int]`: the speedup and the draft length that reaches it.
    """
    best, length = 0.0, 1
    for k in range(1, max_draft + 1):
        speedup = throughput(k + 1, k, draft_cost, target.verify_cost(k + 1))
        if speedup > best:
            best, length = speedup, k
    return best, length


class CostCurve:
    """Seconds of a target forward over `n` tokens, measured while generating, by width bucket.

    Each measurement goes to the smallest bucket at least as wide (its exponentially weighted mean);
    between measured buckets the curve is interpolated linearly, past the widest one it is extended with
    the slope of the last two (flat from a single point: widths not yet tried look no dearer than the widest
    tried, so the planner tries them, and learns).
    """

    BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)

    def __init__(self, decay: float = 0.9):
        self.decay = decay
        self.seconds: dict[int, float] = {}

    @classmethod
    def bucket(cls, width: int) -> int:
        for b in cls.BUCKETS:
            if width <= b:
                return b
        return cls.BUCKETS[-1]

    def record(self, width: int, seconds: float) -> None:
        b = self.bucket(width)
        old = self.seconds.get(b)
        self.seconds[b] = seconds if old is None else self.decay * old + (1 - self.decay) * seconds

    def __call__(self, width: int) -> float | None:
        """The estimated seconds of a forward over `width` tokens (None before any measurement)."""
        if not self.seconds:
            return None
        points = sorted(self.seconds.items())
        b = self.bucket(width)
        if b <= points[0][0]:
            return points[0][1]
        for (w0, t0), (w1, t1) in zip(points, points[1:]):
            if b <= w1:
                return t0 + (t1 - t0) * (b - w0) / (w1 - w0)
        (w0, t0), (w1, t1) = points[-2] if len(points) > 1 else points[-1], points[-1]
        slope = max((t1 - t0) / (w1 - w0), 0.0) if w1 > w0 else 0.0
        return t1 + slope * (b - w1)
