"""Every private transformers touchpoint of sdfp-hf, in one place, checked by capability.

sdfp-hf plugs into parts of transformers that are not public API: the method of `generate` that picks
the candidate generator of assisted decoding, the arguments assisted decoding passes each round, a few
private attributes, and the cache layer classes. Each is named here once, with a check that it does what
the package needs (a parameter exists, a method exists): never a search of transformers' source text.
`check_transformers()` runs the checks and fails with one line naming the supported range; the rest of
the package imports these names from here, not from transformers' private modules.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
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
    "generation_defaults",
    "int4_pack",
    "int4_weight_only_mm",
    "int8_weight_only_mm",
    "max_length_of",
    "supports_custom_generate",
    "weight_only_formats",
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


@functools.cache
def supports_custom_generate() -> bool:
    """Whether `generate` takes a callable `custom_generate` (the route of sdfp-hf's own decoding loop)."""
    return "custom_generate" in inspect.signature(GenerationMixin.generate).parameters


def eos_token_ids(generation_config: Any) -> Any:
    """The end-of-sequence token ids of a prepared generation config, as a tensor (or None)."""
    return getattr(generation_config, "_eos_token_tensor", None)


def generation_defaults() -> dict[str, Any]:
    """The values `generate` gives the options neither the model nor the caller set (empty if unknown)."""
    from transformers import GenerationConfig

    defaults = getattr(GenerationConfig, "_get_default_generation_params", None)
    return dict(defaults()) if callable(defaults) else {}


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


# ---------------------------------------------------------------------------------------------- kernels
# torch's own weight-only quantized matmuls (no extra dependency; torchao calls the same ops on CPU).
# Measured on this project's CPU at batch 1 (benchmarks/results/quantized-kernels/): int8 0.4-0.6 and
# int4 0.2-0.3 of a bf16 matmul's time. Their CPU kernels are vectorised for bf16 activations only.

_aten = torch.ops.aten


def int8_weight_only_mm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``x @ (qweight * scales[:, None]).T`` for `x` (M, K) in the dtype of `scales` (N,), `qweight` int8 (N, K)."""
    return _aten._weight_int8pack_mm(x, qweight, scales)


def int4_pack(q: torch.Tensor) -> torch.Tensor:
    """Pack int4 values `q` (N, K) in 0..15 (int32) into the kernel's layout, on `q`'s device."""
    if q.device.type == "cpu":
        return _aten._convert_weight_to_int4pack_for_cpu(q, 1)
    return _aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)


def int4_weight_only_mm(x: torch.Tensor, packed: torch.Tensor, group_size: int, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    """``x @ W.T`` with ``W = (q - 8) * scale + zero`` per group of `group_size` columns; `x` (M, K) bf16."""
    if x.device.type == "cpu":
        return _aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)
    return _aten._weight_int4pack_mm(x, packed, group_size, scales_and_zeros)


@functools.cache
def weight_only_formats(device_type: str) -> frozenset[str]:
    """The weight-only formats whose kernels run, and give the right answer, on this device type.

    Probed once per device type on small matrices against a dequantized reference: a kernel that is
    missing, refuses, or computes something else (an old torch, a GPU without bf16) is left out, and the
    plans built on this machine keep those branches shared.
    """
    device = torch.device(device_type)
    found = set()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, generator=gen).to(device, torch.bfloat16)
    try:
        q8 = torch.randint(-127, 128, (32, 64), generator=gen, dtype=torch.int8).to(device)
        s8 = (torch.rand(32, generator=gen) / 64 + 1e-3).to(device, torch.bfloat16)
        reference = x.float() @ (q8.float() * s8.float()[:, None]).T
        if torch.allclose(int8_weight_only_mm(x, q8, s8).float(), reference, rtol=0.05, atol=0.05):
            found.add("int8")
    except (RuntimeError, NotImplementedError, AttributeError):
        pass
    try:
        q4 = torch.randint(0, 16, (32, 64), generator=gen, dtype=torch.int32).to(device)
        scale = (torch.rand(2, 32, generator=gen) / 16 + 1e-3).to(torch.bfloat16)
        zero = (torch.randn(2, 32, generator=gen) / 16).to(torch.bfloat16)
        weight = (q4.cpu().float() - 8).reshape(32, 2, 32) * scale.T.float()[..., None] + zero.T.float()[..., None]
        reference = x.float() @ weight.reshape(32, 64).to(device).T
        packed = int4_pack(q4)
        out = int4_weight_only_mm(x, packed, 32, torch.stack([scale, zero], -1).contiguous().to(device))
        if torch.allclose(out.float(), reference, rtol=0.05, atol=0.05):
            found.add("int4")
    except (RuntimeError, NotImplementedError, AttributeError):
        pass
    return frozenset(found)
