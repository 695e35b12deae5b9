"""Every private transformers touchpoint of sdfp-hf, in one place, checked by capability.

sdfp-hf plugs into parts of transformers that are not public API: the method of `generate` that picks
the candidate generator of assisted decoding, the arguments assisted decoding passes each round, a few
private attributes, and the cache layer classes. Each is named here once, with a check that it does what
the package needs (a parameter exists, a method exists): never a search of transformers' source text.
`check_transformers()` runs the checks and fails with one line naming the supported range; the rest of
the package imports these names from here, not from transformers' private modules.
"""

from __future__ import annotations

import inspect
from typing import Any

import transformers
from transformers.cache_utils import Cache, CacheLayerMixin, DummyLayer, DynamicCache, DynamicLayer
from transformers.generation.candidate_generator import AssistedCandidateGenerator, CandidateGenerator
from transformers.generation.utils import GenerationMixin

try:
    from transformers.cache_utils import DynamicSlidingWindowLayer
except ImportError:  # pragma: no cover - every supported version has it
    DynamicSlidingWindowLayer = None  # type: ignore[assignment,misc]

__all__ = [
    "SUPPORTED_TRANSFORMERS",
    "AssistedCandidateGenerator",
    "Cache",
    "CacheLayerMixin",
    "CandidateGenerator",
    "DummyLayer",
    "DynamicCache",
    "DynamicLayer",
    "DynamicSlidingWindowLayer",
    "attn_implementation",
    "cache_of",
    "check_transformers",
    "commit_hash",
    "eos_token_ids",
    "max_length_of",
]

SUPPORTED_TRANSFORMERS = ("5.24", "5.24")
"""The oldest and newest transformers minor versions sdfp-hf is tested with (pyproject.toml agrees)."""

# `_get_candidate_generator` is called with keyword arguments only; these are the ones sdfp-hf reads.
_HOOK_PARAMETERS = ("generation_config", "input_ids", "inputs_tensor", "logits_processor", "model_kwargs", "assistant_model")


def _problems() -> list[str]:
    problems = []
    hook = getattr(GenerationMixin, "_get_candidate_generator", None)
    if hook is None:
        problems.append("GenerationMixin._get_candidate_generator is gone")
    else:
        parameters = inspect.signature(hook).parameters
        problems += [f"_get_candidate_generator has no `{p}` parameter" for p in _HOOK_PARAMETERS if p not in parameters]
    if not hasattr(CandidateGenerator, "requires_model_outputs"):
        problems.append("CandidateGenerator.requires_model_outputs is gone (the round would not see the target's cache)")
    get_candidates = inspect.signature(AssistedCandidateGenerator.get_candidates).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in get_candidates.values()) and "model_kwargs" not in get_candidates:
        problems.append("AssistedCandidateGenerator.get_candidates takes no `model_kwargs`")
    return problems


def check_transformers() -> None:
    """Fail with one clear line if the installed transformers lacks what sdfp-hf's hook needs."""
    problems = _problems()
    if problems:
        oldest, newest = SUPPORTED_TRANSFORMERS
        raise RuntimeError(
            f"sdfp-hf does not fit transformers {transformers.__version__} (supported: {oldest} to {newest}): "
            f"{'; '.join(problems)}. Install a supported version: pip install 'transformers>={oldest},<{_next(newest)}'"
        )


def _next(version: str) -> str:
    major, minor = version.split(".")[:2]
    return f"{major}.{int(minor) + 1}"


def eos_token_ids(generation_config: Any) -> Any:
    """The end-of-sequence token ids of a prepared generation config, as a tensor (or None)."""
    return getattr(generation_config, "_eos_token_tensor", None)


def max_length_of(candidate_generator: Any) -> int:
    """The length a generation may reach (prompt included), as the stock candidate generator records it."""
    return int(candidate_generator.main_model_max_length)


def attn_implementation(config: Any) -> str:
    """The attention implementation a model runs with (``"sdpa"``, ``"eager"``, ``"flash_attention_2"`` ...)."""
    return getattr(config, "_attn_implementation", None) or "eager"


def commit_hash(config: Any) -> str | None:
    """The Hub commit a model was loaded from, when known."""
    return getattr(config, "_commit_hash", None)


def cache_of(model_kwargs: Any) -> Any:
    """The cache in a model output or in the keyword arguments assisted decoding passes a round (None if absent)."""
    cache = model_kwargs.get("cache")
    return cache if cache is not None else model_kwargs.get("past_key_values")
