"""`profile(model)`: calibration, scores, selection and the "auto" choice, in one call.

What `SDFPAssistant.from_target(model)` runs when it is given neither skip lists nor a mask:

1. calibration tokens (`sdfp_hf.calibration`, data-free by default: the model's own samples);
2. per-layer and per-branch scores (`sdfp_hf.fit`);
3. for each candidate skip ratio, the skip set (`sdfp_hf.selection`) and a draft of it (`sdfp_hf.draft`);
4. ``skip_ratio="auto"``: each candidate's replayed acceptance on the target's own greedy output
   (`sdfp_hf.replay`) and measured step cost (`sdfp_hf.costs`), and the one with the highest predicted
   speedup (`sdfp_hf.costs.predict_speedup`).

The result, a [`ProfileResult`], turns into a mask with `to_config(model)`.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from .calibration import CalibrationData, build_calibration
from .config import SDFPConfig
from .costs import measure_step_costs, predict_speedup
from .draft import build_draft
from .drafting import install_candidate_generator
from .fit import DEFAULT_SCORING_METHOD, LayerScores, score_layers
from .replay import replay_rounds, target_trajectories, trajectories_from_calibration
from .selection import DEFAULT_GRANULARITY, branch_costs, select_skips
from .skipset import SkipSet

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["AUTO_RATIOS", "NoSpeedupWarning", "ProfileResult", "profile"]

logger = logging.getLogger(__name__)

AUTO_RATIOS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
"""Skip ratios ``skip_ratio="auto"`` tries."""

_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


class NoSpeedupWarning(UserWarning):
    """Warned by ``skip_ratio="auto"`` when no candidate draft is predicted faster than plain decoding."""


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
    drafts = [build_draft(model, s) for _, s in skips]
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
        candidates=[{k: v for k, v in c.items() if k != "skip"} | {"skip": c["skip"].to_lists()} for c in candidates],
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
