"""`profile(model)`: calibration, scores, selection and the "auto" choice, in one call.

What `SDFPAssistant.from_target(model)` runs when it is given neither skip lists nor a mask:

0. ``skip_ratio="auto"``: the step costs of the cheapest drafts it could choose (seconds); when even a draft
   whose every token is accepted would not beat plain decoding (`sdfp_hf.costs.perfect_draft_speedup`), it
   stops there with a minimal draft and says so in one info line: nothing below can pay on this machine;
1. calibration tokens (`sdfp_hf.calibration`, data-free by default: the model's own samples);
2. per-layer and per-branch scores (`sdfp_hf.fit`);
3. for each candidate skip ratio, the skip set (`sdfp_hf.selection`) and a draft of it (`sdfp_hf.draft`);
4. ``skip_ratio="auto"``: each candidate's replayed acceptance on the target's own greedy output
   (`sdfp_hf.replay`) and measured step cost (`sdfp_hf.costs`), and the one with the highest predicted
   speedup (`sdfp_hf.costs.predict_speedup`); of predictions within 3% of it (`TIE`), the cheapest step.

The result, a [`ProfileResult`], turns into a mask with `to_config(model)`.
"""

from __future__ import annotations

import logging
import platform
import re
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ._compat import weight_only_formats
from .calibration import CalibrationData, build_calibration
from .config import SDFPConfig
from .costs import measure_step_costs, perfect_draft_speedup, predict_speedup
from .draft import build_draft
from .drafting import install_candidate_generator
from .fit import DEFAULT_SCORING_METHOD, LayerScores, score_layers
from .plan import DraftPlan
from .replay import replay_rounds, target_trajectories, trajectories_from_calibration
from .selection import DEFAULT_GRANULARITY, branch_costs, quantized_plans, select_skips
from .skipset import SkipSet

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["AUTO_RATIOS", "DEFAULT_DRAFT_MEMORY", "NoSpeedupWarning", "ProfileResult", "memory_budget", "profile"]

logger = logging.getLogger(__name__)

AUTO_RATIOS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
"""Skip ratios ``skip_ratio="auto"`` tries."""

DEFAULT_DRAFT_MEMORY = 0.5
"""The most memory a profiled draft holds of its own, as a fraction of the target's weight bytes."""

TIE = 0.03
"""Predicted speedups within this share of the best are a tie, settled by the cheaper draft step.

Profiling the same model again moved the same plan's prediction by this much (Qwen2.5-Coder-1.5B bf16, uniform
int4: 1.71x, 1.735x, 1.76x), and the replay on the data-free calibration overstates what a cheaper, less exact
draft loses: an int4 output head cost that model 5.7 points of replayed acceptance but 1.6 points of agreement
on Spec-Bench's outputs, and made tree rounds 5% faster
(`benchmarks/results/amx-machine/readings_2026-12-07_head_tie.txt`).
"""

_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


class NoSpeedupWarning(UserWarning):
    """Warned by ``skip_ratio="auto"`` when no candidate draft is predicted faster than plain decoding."""


@dataclass
class ProfileResult:
    """What `profile` found: the skip set, the scores behind it, and the recommended draft settings.

    Args:
        skip (`SkipSet`): what the draft skips.
        scores (`LayerScores`): the per-layer scores (``"fit_quant"`` sensitivities when the plan quantizes).
        granularity (`str`): ``"layer"`` or ``"sublayer"``.
        skip_ratio (`float`): the chosen ratio (of layers, or of decoder bytes at sub-layer granularity).
        calibration (`dict`): calibration provenance (source, sizes, seed, dtype, seconds).
        timings (`dict[str, float]`): seconds spent measuring step costs (``"auto"``), calibrating, scoring and
            selecting, and their total.
        num_assistant_tokens (`int`), assistant_confidence_threshold (`float`),
        num_assistant_tokens_schedule (`str`): recommended draft settings.
        predicted (`dict`, *optional*): for ``"auto"``: the chosen candidate's replayed acceptance, measured
            step cost and predicted speedup.
        candidates (`list[dict]`): for ``"auto"``: every plan tried, with the same figures.
        plan (`DraftPlan`, *optional*): what the draft skips, shares and quantizes (defaults to `skip`).
        quantized_copies (`dict`): the quantized matrices made while profiling, for `build_draft(copies=)`.
        stopped_early (`dict`, *optional*): for ``"auto"`` stopped after the step costs (no draft could pay):
            `speedup_ceiling` (a perfect draft's predicted speedup), `draft_step_cost` (the cheapest draft's),
            `num_assistant_tokens` (the ceiling's draft length), `target_step_seconds`.
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
    plan: DraftPlan | None = None
    quantized_copies: dict = field(default_factory=dict, repr=False, compare=False)
    stopped_early: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.plan is None:
            self.plan = DraftPlan(self.skip)

    @property
    def skip_layers(self) -> list[int]:
        return self.skip.to_lists()["skip_layers"]

    @property
    def skip_attention(self) -> list[int]:
        return self.skip.to_lists()["skip_attention"]

    @property
    def skip_mlp(self) -> list[int]:
        return self.skip.to_lists()["skip_mlp"]

    def draft_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `SDFPAssistant.from_target`: the skip lists and the recommended settings."""
        kwargs: dict[str, Any] = dict(self.skip.to_lists())
        for name in _SETTINGS:
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs

    def config_fields(self) -> dict[str, Any]:
        """Fields of `SDFPConfig` (pass to `SDFPConfig.from_model_config(model.config, **fields)`)."""
        fields_: dict[str, Any] = {
            **self.skip.as_mask_fields(),
            "precision": self.plan.to_dict(),
            "scores": self.scores.as_dict(),
            "scoring_method": self.scores.method,
            "calibration": {k: v for k, v in self.calibration.items() if v is not None},
        }
        for name in _SETTINGS:
            if getattr(self, name) is not None:
                fields_[name] = getattr(self, name)
        if self.predicted:
            fields_["measurements"] = {
                "acceptance": float(self.predicted["acceptance_rate"]),
                "predicted_speedup": float(self.predicted["speedup"]),
                "draft_step_cost": float(self.predicted["draft_cost"]),
                "draft_memory_bytes": int(self.predicted.get("extra_bytes", 0)),
                "hardware": _hardware(),
            }
        elif self.stopped_early:
            fields_["measurements"] = {
                "speedup_ceiling": float(self.stopped_early["speedup_ceiling"]),
                "draft_step_cost": float(self.stopped_early["draft_step_cost"]),
                "hardware": _hardware(),
            }
        return fields_

    def to_config(self, model: PreTrainedModel) -> SDFPConfig:
        """The mask as an `SDFPConfig` for `model`."""
        return SDFPConfig.from_model_config(model.config, **self.config_fields())

    def draft(self, model: PreTrainedModel) -> Any:
        """Deprecated: build the draft with `SDFPAssistant.from_target(model, mask=result.to_config(model))`."""
        warnings.warn(
            "ProfileResult.draft(model) is deprecated (it goes in sdfp-hf 0.3): use "
            "SDFPAssistant.from_target(model, mask=result.to_config(model))",
            FutureWarning,
            stacklevel=2,
        )
        mask = self.to_config(model)
        draft = build_draft(model, mask.skip_set, mask=mask)
        install_candidate_generator(model)
        return draft

    def plot(self, path: str | None = None, **kwargs: Any):
        """Plot the scores with the skipped branches marked (see [`sdfp_hf.plot.plot_scores`])."""
        from .plot import plot_scores

        return plot_scores(self.scores, self.skip, path, **kwargs)

    def summary(self) -> str:
        lists = self.skip.to_lists()
        parts = [f"{k}={v}" for k, v in lists.items() if v]
        text = f"{self.scores.method} scores, {self.granularity} granularity, skip ratio {self.skip_ratio:.2f}: " + (
            ", ".join(parts) or "nothing skipped"
        )
        if self.plan.is_quantized:
            text += f"; {self.plan.describe()}"
        if self.predicted:
            text += (
                f"; predicted {self.predicted['speedup']:.2f}x drafting {self.num_assistant_tokens} token(s) a round "
                f"({self.predicted['acceptance_rate']:.0%} accepted, a draft step costs "
                f"{self.predicted['draft_cost']:.2f} of a target step)"
            )
        if self.stopped_early:
            text += (
                f"; stopped after the step costs (a draft whose every token is accepted: "
                f"{self.stopped_early['speedup_ceiling']:.2f}x)"
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
    draft_memory: float | int | str = DEFAULT_DRAFT_MEMORY,
    protect_first: int = 1,
    protect_last: int = 0,
    num_sequences: int | None = None,
    sequence_length: int | None = None,
    seed: int = 0,
    auto_ratios: Sequence[float] = AUTO_RATIOS,
    auto_prompts: int = 6,
    auto_new_tokens: int = 32,
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
            `select_skips`), or ``"auto"``: try `auto_ratios` and keep the one with the best predicted speedup
            (`best_candidate`).
        num_skip (`int`, *optional*): number of layers / branches to skip instead of a ratio.
        granularity (`str`, *optional*, defaults to ``"layer"``): ``"layer"`` or ``"sublayer"``.
        draft_memory (`float`, `int` or `str`, *optional*, defaults to 0.5): the most memory the draft may hold of
            its own, for ``"auto"``: a fraction of the target's weight bytes (0.5: half of them), a number of
            bytes, or a size such as ``"800MB"``. With room for quantized copies (and kernels for them on the
            model's device), ``"auto"`` compares plans that quantize every kept branch (uniform int4 with an int8 or
            an int4 head, and int4 with the branches FIT finds most sensitive kept int8; see
            `sdfp_hf.selection.quantized_plans`) and keeps the fastest predicted; with 0, it only skips
            layers and the draft holds nothing of its own. Why half: an int8 copy of a bf16 model takes 43-50%
            of its bytes (the head included), int4 24-35% (`benchmarks/results/draft-plans/`); a separate draft
            model a third the size of its target takes 33%.
        protect_first (`int`, *optional*, defaults to 1), protect_last (`int`, *optional*, defaults to 0):
            layers never skipped at the start and the end.
        num_sequences (`int`, *optional*), sequence_length (`int`, *optional*): calibration size
            (defaults of `build_calibration`).
        seed (`int`, *optional*, defaults to 0): seed of calibration sampling and scoring.
        auto_ratios (`list[float]`, *optional*): candidate ratios for ``"auto"``.
        auto_prompts (`int`, *optional*, defaults to 6): prompts on which ``"auto"`` replays acceptance.
        auto_new_tokens (`int`, *optional*, defaults to 32): greedy tokens generated per prompt for it.
        on_no_speedup (`str`, *optional*, defaults to ``"warn"``): what ``"auto"`` does when no candidate is
            predicted faster than plain decoding: ``"warn"`` issues a `NoSpeedupWarning` and returns the
            smallest draft tried (the fewest skips: the most accurate, the least at risk); ``"raise"``
            raises a `ValueError` with the measured figures. Before calibrating, ``"auto"`` measures the step costs of
            the cheapest drafts it could choose; when even a draft whose every token is accepted would not beat
            plain decoding, it stops there and returns a minimal draft (one layer skipped, `stopped_early` set),
            saying so in one info line (``"raise"`` raises instead): no choice of layers could pay on this machine.
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
    budget = memory_budget(model, draft_memory)
    quantized = budget > 0 and bool(weight_only_formats(model.get_input_embeddings().weight.device.type))
    copies: dict = {}  # quantized matrices of the step-cost probe, reused by the candidates
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if skip_ratio == "auto":
        limits = dict(granularity=granularity, protect_first=protect_first, protect_last=protect_last)
        stopped = _stop_early(model, quantized, budget, limits, auto_ratios, on_no_speedup, progress, copies)
        if stopped is not None:
            return stopped
        timings["step_costs"] = time.perf_counter() - t0
    if skip_ratio == "auto" and quantized:
        return _profile_quantized(
            model, calibration, tokenizer=tokenizer, budget=budget, num_sequences=num_sequences,
            sequence_length=sequence_length, seed=seed, auto_prompts=auto_prompts, auto_new_tokens=auto_new_tokens,
            on_no_speedup=on_no_speedup, progress=progress, copies=copies, timings=timings, started=t0,
            **score_kwargs,
        )
    t1 = time.perf_counter()
    cal_kwargs: dict[str, Any] = {"tokenizer": tokenizer, "seed": seed}
    if num_sequences is not None:
        cal_kwargs["num_sequences"] = num_sequences
    if sequence_length is not None:
        cal_kwargs["sequence_length"] = sequence_length
    with torch.no_grad():
        data = build_calibration(model, calibration, **cal_kwargs)
    timings["calibration"] = time.perf_counter() - t1
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
            skip, scores, granularity, skip.saved_fraction(*costs) if granularity == "sublayer" else
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


def _stop_early(
    model, quantized: bool, budget: int, limits: dict[str, Any], ratios, on_no_speedup: str, progress: bool,
    copies: dict,
) -> ProfileResult | None:
    """Measure the cheapest drafts "auto" could choose; a minimal draft when even a perfect one would not pay.

    The probes are the plans with the cheapest steps among the candidates: uniform int4 and int8 (the mixes
    lie between them), or the largest skip ratio, evenly spaced (what a step costs depends on how much is
    skipped, not on which layers). They are timed one at a time, the fewest bytes first, and the first that
    could pay ends the probe: int8 is quantized only where int4 could not pay (int4 kernels are the slower
    of the two on some machines); elsewhere it would cost seconds for nothing. None when profiling should go on.
    """
    t0 = time.perf_counter()
    ratios = sorted({float(r) for r in ratios})
    evenly = score_layers(model, None, "evenly_spaced", progress=False)
    if quantized:
        probes, formats = [], set()
        for _, plan in quantized_plans(model, None, budget)[::-1]:  # from the fewest bytes, one per layer format
            if frozenset(plan.attention + plan.mlp) not in formats:
                formats.add(frozenset(plan.attention + plan.mlp))
                probes.append(plan)
    elif ratios:
        skip = select_skips(evenly, skip_ratio=ratios[-1], costs=branch_costs(model), **limits)
        probes = [] if skip.is_empty else [DraftPlan(skip)]
    else:
        probes = []
    if not probes:  # nothing to probe: the steps below say why
        return None
    cost, target = float("inf"), None
    for plan in probes:
        # a yes-or-no question, asked of the fastest of a few repeats: the candidates are timed again, closely
        (probe_cost,), probe_target = measure_step_costs(model, [build_draft(model, plan, copies=copies)], repeats=3, warmup=1)
        if probe_cost < cost:
            cost, target = probe_cost, probe_target
        ceiling, length = perfect_draft_speedup(cost, target)
        if ceiling > 1.0:
            return None
    figures = (
        f"even a draft whose every token is accepted would run at {ceiling:.2f}x plain decoding on this machine "
        f"(the cheapest draft profiling could choose costs {cost:.2f} of a target step, verifying {length + 1} "
        f"tokens {target.verify_cost(length + 1):.2f})"
    )
    if on_no_speedup == "raise":
        raise ValueError(
            f"no candidate draft is predicted faster than plain decoding on this machine: {figures}; pass "
            "skip_ratio=<float> to build a draft anyway"
        )
    copies.clear()
    skip = select_skips(evenly, num_skip=1, granularity="layer", protect_first=limits["protect_first"],
                        protect_last=limits["protect_last"])
    seconds = time.perf_counter() - t0
    result = ProfileResult(
        skip, evenly, "layer", len(skip.layers) / evenly.num_layers,
        {"source": "none (profiling stopped after the step costs)",
         "dtype": str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")},
        {"step_costs": seconds, "total": seconds},
        stopped_early={"speedup_ceiling": ceiling, "draft_step_cost": cost, "num_assistant_tokens": length,
                       "target_step_seconds": target.target_seconds},
    )
    text = (
        f"profiling stopped after measuring step costs ({seconds:.1f} s): {figures}, so no draft can pay here and "
        f"the draft is a minimal one ({result.plan.describe()}); generation proposes from prompt lookup where it "
        "pays and decodes plainly otherwise"
    )
    if progress:
        _report(text)
    else:
        logger.info(text)
    return result


def _report(text: str) -> None:
    """The summary a finished profile prints (beside its progress bars), and logs."""
    logger.info(text)
    tqdm.write(f"sdfp-hf profile: {text}", file=sys.stderr)


def _auto(
    model, data: CalibrationData, scores: LayerScores, provenance, timings, common, ratios, num_prompts,
    new_tokens, on_no_speedup, progress,
) -> ProfileResult:
    ratios = sorted({float(r) for r in ratios})
    if not ratios:
        raise ValueError("auto_ratios is empty: give at least one candidate skip ratio")
    trajectories = _trajectories(model, data, num_prompts, new_tokens)
    skips, seen = [], set()
    for r in ratios:
        skip = select_skips(scores, skip_ratio=r, **common)
        if (skip.attention, skip.mlp) in seen or skip.is_empty:
            continue
        seen.add((skip.attention, skip.mlp))
        skips.append((f"skip ratio {r:.2f}", DraftPlan(skip), {"skip_ratio": r}))
    if not skips:
        raise ValueError(f"none of the auto ratios {ratios} skips anything on a {scores.num_layers}-layer model")
    # Predicted speedup rises with the ratio while the cheaper draft still agrees, then falls: stop once it
    # has fallen twice in a row (larger drafts are also the slowest to replay).
    chosen, candidates, target = _choose(model, skips, trajectories, on_no_speedup, progress, stop_after_falls=2)
    return _result(chosen, candidates, target, trajectories, scores, common["granularity"], provenance, timings)


def _profile_quantized(
    model, calibration, *, tokenizer, budget, num_sequences, sequence_length, seed, auto_prompts, auto_new_tokens,
    on_no_speedup, progress, copies, timings, started, **score_kwargs,
) -> ProfileResult:
    """"auto" with room for quantized copies: FIT int4 sensitivities, candidate plans, replay and costs (`timings`
    so far, from `started`: the step-cost probe's)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        if calibration is None:
            # the model's own greedy text after a short sampled opening: the calibration for FIT and, as it
            # is, the trajectories of the replay (written once, used twice)
            data = build_calibration(
                model, None, tokenizer=tokenizer, num_sequences=num_sequences or auto_prompts,
                sequence_length=sequence_length or auto_new_tokens, temperature=0.0, sampled_tokens=8, seed=seed,
            )
        else:
            data = build_calibration(
                model, calibration, tokenizer=tokenizer, seed=seed,
                **{k: v for k, v in (("num_sequences", num_sequences), ("sequence_length", sequence_length)) if v},
            )
    timings["calibration"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    # FIT's statistics settle on a few hundred tokens: the first 4 sequences (one pass) are enough
    scores = score_layers(model, data.batches(4)[0], "fit_quant", seed=seed, progress=progress, **score_kwargs)
    timings["scoring"] = time.perf_counter() - t1
    provenance = dict(data.provenance)
    provenance["dtype"] = str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")
    provenance["seconds"] = round(timings["calibration"] + timings["scoring"], 3)
    t2 = time.perf_counter()
    plans = quantized_plans(model, scores, budget)
    if not plans:
        raise ValueError(
            f"no quantized draft fits in draft_memory of {budget / 2**20:.0f} MiB (an int4 copy of this model's "
            f"layers needs more): raise draft_memory, or pass draft_memory=0 for a draft that only skips layers"
        )
    trajectories = _trajectories(model, data, auto_prompts, auto_new_tokens)
    chosen, candidates, target = _choose(
        model, [(name, plan, {"skip_ratio": 0.0}) for name, plan in plans], trajectories, on_no_speedup, progress,
        copies=copies,
    )
    timings["selection"] = time.perf_counter() - t2
    result = _result(chosen, candidates, target, trajectories, scores, "layer", provenance, timings)
    result.quantized_copies = copies
    result.timings["total"] = time.perf_counter() - started
    if progress:
        _report(result.summary())
    return result


def memory_budget(model: PreTrainedModel, draft_memory: float | int | str) -> int:
    """`draft_memory` in bytes: a fraction of the target's weight bytes, a number of bytes, or a size ("800MB")."""
    if isinstance(draft_memory, str):
        match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B|B)?\s*", draft_memory, flags=re.IGNORECASE)
        if match is None:
            raise ValueError(f"draft_memory must be a fraction, a number of bytes or a size like '800MB', got {draft_memory!r}")
        unit = (match.group(2) or "B").upper()
        base = 1024 if "I" in unit else 1000
        return int(float(match.group(1)) * base ** "BKMGT".index(unit[0]))
    if isinstance(draft_memory, bool) or not isinstance(draft_memory, (int, float)) or draft_memory < 0:
        raise ValueError(f"draft_memory must be 0 or more, got {draft_memory!r}")
    if isinstance(draft_memory, float) and draft_memory <= 1:
        return int(draft_memory * sum(p.numel() * p.element_size() for p in model.parameters()))
    return int(draft_memory)


def _trajectories(model, data: CalibrationData, num_prompts: int, new_tokens: int):
    if data.provenance.get("temperature") == 0.0 and any(data.prompt_lengths):
        # the calibration text is the target's own greedy output: replay on it, no generation needed
        return trajectories_from_calibration(model, data, num_prompts)
    return target_trajectories(model, _acceptance_prompts(data, num_prompts), new_tokens)


def _choose(model, plans, trajectories, on_no_speedup, progress, *, stop_after_falls=None, copies=None):
    """Measure every candidate plan's step cost (interleaved) and replayed acceptance; the best predicted one."""
    drafts = [build_draft(model, plan, copies=copies) for _, plan, _ in plans]
    draft_costs, target = measure_step_costs(model, drafts, repeats=5, warmup=1)
    candidates: list[dict[str, Any]] = []
    with tqdm(total=len(plans), desc="auto: replaying drafts", disable=not progress, leave=False) as bar:
        for (name, plan, info), draft, cost in zip(plans, drafts, draft_costs):
            best = predict_speedup(replay_rounds(draft, trajectories), cost, target, thresholds=(0.0, 0.4))
            best.pop("table")
            candidates.append({"name": name, "plan": plan, **info, "draft_cost": cost, "extra_bytes": draft.extra_bytes, **best})
            bar.update(1)
            falls = stop_after_falls
            if falls and len(candidates) > falls and all(
                candidates[-k]["speedup"] < candidates[-k - 1]["speedup"] for k in range(1, falls + 1)
            ):
                break
    chosen = best_candidate(candidates)
    if chosen["speedup"] <= 1.0:
        table = "; ".join(
            f"{c['name']}: {c['speedup']:.2f}x ({c['acceptance_rate']:.0%} accepted, step cost {c['draft_cost']:.2f})"
            for c in candidates
        )
        message = (
            f"no candidate draft is predicted faster than plain decoding on this machine ({table}): a draft step "
            "costs too much of a target step here, or acceptance is too low"
        )
        if on_no_speedup == "raise":
            raise ValueError(message + "; pass skip_ratio=<float> to build a draft anyway")
        chosen = candidates[0]
        warnings.warn(
            message + f"; returning the first candidate ({chosen['name']}). Pass on_no_speedup='raise' to make this "
            "an error.",
            NoSpeedupWarning,
            stacklevel=4,
        )
    return chosen, candidates, target


def best_candidate(candidates: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The candidate with the highest predicted `speedup`, or, of those within `TIE` of it, the one with the
    cheapest step (`draft_cost`): tree rounds draft short chains, where a step's cost weighs more than the
    acceptance of a long chain's last tokens. A tie never trades a draft predicted faster than plain decoding
    for one that is not."""
    top = max(c["speedup"] for c in candidates)
    tied = [c for c in candidates if c["speedup"] >= top * (1 - TIE) and (c["speedup"] > 1.0) == (top > 1.0)]
    return min(tied, key=lambda c: (c["draft_cost"], -c["speedup"]))


def _result(chosen, candidates, target, trajectories, scores, granularity, provenance, timings) -> ProfileResult:
    predicted = {k: v for k, v in chosen.items() if k != "plan"}
    predicted["target_step_seconds"] = target.target_seconds
    predicted["verify_cost"] = {str(k): v for k, v in target.verify.items()}
    predicted["replayed_tokens"] = trajectories.num_new_tokens
    plan = chosen["plan"]
    return ProfileResult(
        plan.skip,
        scores,
        granularity,
        chosen["skip_ratio"],
        provenance,
        timings,
        num_assistant_tokens=int(chosen["num_assistant_tokens"]),
        assistant_confidence_threshold=float(chosen["threshold"]),
        num_assistant_tokens_schedule="constant",
        predicted=predicted,
        candidates=[
            {k: v for k, v in c.items() if k != "plan"} | {"skip": c["plan"].skip.to_lists(), "precision": c["plan"].to_dict()}
            for c in candidates
        ],
        plan=plan,
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
