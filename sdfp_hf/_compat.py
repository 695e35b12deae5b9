"""Every private transformers touchpoint of sdfp-hf, in one place, checked by capability.

sdfp-hf plugs into parts of transformers that are not public API: the method of `generate` that picks
the candidate generator of assisted decoding, the arguments assisted decoding passes each round, a few
private attributes, and the cache layer classes. Each is named here once, with a check that it does what
the package needs (a parameter exists, a method exists): never a search of transformers' source text.
`check_transformers()` runs the checks and fails with one line naming the supported range; the rest of
the package imports these names from here, not from transformers' private modules.

Supported: transformers 5.20 to 5.24 (`SUPPORTED_TRANSFORMERS`). What differs across that range, and how
it is bridged here:

- the keyword that passes a cache to a model's forward: `cache=` from 5.24, `past_key_values=` before
  (an older model takes an unknown `cache=` into `**kwargs` and silently runs WITHOUT the cache):
  `cache_kwargs(model, cache)` reads the keyword from the forward's signature;
- `DummyLayer` (a cache layer that holds nothing, for a layer whose attention is skipped) exists from
  5.23: `no_cache_layer(peer)` gives it, or before 5.23 a stand-in that answers for a real layer of
  the same cache, which is what older caches ask of every layer.

Device helpers live here too: `synchronize(device)` (a timer must wait for the device it times).
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import torch
import transformers
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache, DynamicLayer
from transformers.generation.candidate_generator import AssistedCandidateGenerator, CandidateGenerator
from transformers.generation.utils import GenerationMixin

try:
    from transformers.cache_utils import DynamicSlidingWindowLayer
except ImportError:  # pragma: no cover - every supported version has it
    DynamicSlidingWindowLayer = None  # type: ignore[assignment,misc]

try:
    from transformers.cache_utils import DummyLayer
except ImportError:  # transformers < 5.23
    DummyLayer = None  # type: ignore[assignment,misc]

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
    "cache_keyword",
    "cache_kwargs",
    "cache_of",
    "check_transformers",
    "commit_hash",
    "eos_token_ids",
    "generation_defaults",
    "int4_pack",
    "int4_weight_only_mm",
    "int8_weight_only_mm",
    "max_length_of",
    "no_cache_layer",
    "placement_problem",
    "quantization_problem",
    "supports_custom_generate",
    "synchronize",
    "weight_only_formats",
    "with_attn_implementation",
]

SUPPORTED_TRANSFORMERS = ("5.20", "5.24")
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
    layer_api = ("get_seq_length", "get_mask_sizes", "update", "lazy_initialization")
    problems += [f"cache layers have no `{name}`" for name in layer_api if not hasattr(DynamicLayer, name)]
    if "layers" not in inspect.signature(Cache.__init__).parameters:
        problems.append("`Cache` takes no `layers`")
    return problems


def check_transformers(model: Any = None) -> None:
    """Fail with one clear line if the installed transformers lacks what sdfp-hf needs.

    Args:
        model (*optional*): a target; its forward must take a cache by a keyword sdfp-hf knows.
    """
    problems = _problems()
    if model is not None:
        for module in (model, getattr(model, "base_model", None)):
            if module is not None and _keyword_of(type(module).forward) is None:
                problems.append(_no_keyword(module))
    if problems:
        raise RuntimeError(_unfit(problems))


def _unfit(problems: list[str]) -> str:
    oldest, newest = SUPPORTED_TRANSFORMERS
    return (
        f"sdfp-hf does not fit transformers {transformers.__version__} (supported: {oldest} to {newest}): "
        f"{'; '.join(problems)}. Install a supported version: pip install 'transformers>={oldest},<{_next(newest)}'"
    )


def _no_keyword(module: Any) -> str:
    return f"{type(module).__name__}.forward takes neither `cache` nor `past_key_values`"


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


def with_attn_implementation(config: Any, name: str) -> Any:
    """A shallow copy of `config` that runs the attention registered as `name`; `config` and its sub-configs
    are untouched (the property's setter would also set every sub-config, which the copy shares)."""
    new = copy.copy(config)
    new._attn_implementation_internal = name  # the property's storage, in every supported version
    return new


def commit_hash(config: Any) -> str | None:
    """The Hub commit a model was loaded from, when known."""
    return getattr(config, "_commit_hash", None)


@functools.cache
def _keyword_of(forward: Any) -> str | None:
    parameters = inspect.signature(forward).parameters  # follows `functools.wraps` (deprecate_kwarg)
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def cache_keyword(model: Any) -> str:
    """The keyword `model`'s forward takes its cache by: ``"cache"`` (transformers >= 5.24) or ``"past_key_values"``."""
    keyword = _keyword_of(type(model).forward)
    if keyword is None:
        raise RuntimeError(_unfit([_no_keyword(model)]))
    return keyword


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{keyword: cache}`` for a call of `model` (a causal LM or its base model): ``model(ids, **cache_kwargs(model, c))``.

    Before 5.24 a model's forward takes `past_key_values` and swallows an unknown `cache=` into its
    `**kwargs`, running without the cache (silently wrong), so every forward sdfp-hf makes goes through this.
    """
    return {cache_keyword(model): cache}


class _PeerLayer:
    """A cache layer that holds nothing and answers size questions as `peer` does (transformers < 5.23).

    Caches before 5.23 have no `DummyLayer`: they ask any layer for its length and mask sizes (the first
    full-attention layer for the causal mask, the first sliding one for the sliding mask), so a stand-in
    for a skipped attention must answer as a real layer of the same cache does. It is never written.
    """

    is_compileable = False
    is_croppable = True
    supports_early_init = False

    def __init__(self, peer: Any = None):
        self.peer = peer
        self.is_sliding = bool(getattr(peer, "is_sliding", False))
        self.is_initialized = True
        self.keys = self.values = None

    def update(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("sdfp-hf: a skipped attention layer's cache was written to")

    def lazy_initialization(self, *args: Any, **kwargs: Any) -> None: ...

    def get_seq_length(self) -> int:
        return 0 if self.peer is None else self.peer.get_seq_length()

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return (query_length, 0) if self.peer is None else self.peer.get_mask_sizes(query_length)

    def get_max_length(self) -> int:
        return -1

    def offload(self) -> None: ...

    def prefetch(self) -> None: ...

    def reset(self) -> None: ...

    def crop(self, tokens_to_remove: int) -> None: ...

    def reorder_cache(self, beam_idx: Any) -> None: ...

    def batch_repeat_interleave(self, repeats: int) -> None: ...

    def batch_select_indices(self, indices: Any) -> None: ...


if DummyLayer is None:
    # Older caches recognise attention layers by this base class (get_seq_length, get_mask_sizes).
    _PeerLayer = type("_PeerLayer", (_PeerLayer, CacheLayerMixin), {"__doc__": _PeerLayer.__doc__})


def no_cache_layer(peer: Any = None) -> Any:
    """A cache layer for a layer whose attention is skipped: `DummyLayer`, or before 5.23 a stand-in for `peer`.

    Args:
        peer (*optional*): a real layer of the same cache (any kind); the stand-in reports its length,
            mask sizes and sliding kind, which is what caches before 5.23 ask of every layer.
    """
    if DummyLayer is not None:
        return DummyLayer()
    return _PeerLayer(peer)


def cache_of(model_kwargs: Any) -> Any:
    """The cache in a model output or in the keyword arguments assisted decoding passes a round (None if absent)."""
    cache = model_kwargs.get("cache")
    return cache if cache is not None else model_kwargs.get("past_key_values")


_PLAIN_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Buffers that quantized linear modules keep instead of a plain weight (GPTQ / AWQ / EETQ, bitsandbytes' int8 state).
_QUANTIZED_BUFFERS = ("qweight", "qzeros", "SCB", "weight_scale", "W_q")


def quantization_problem(model: Any) -> str | None:
    """Why a draft cannot be built from `model` because its weights are quantized (None: it can).

    A quantized backend (bitsandbytes, GPTQ, AWQ, torchao, fp8, HQQ, ...) keeps its weights in its own
    modules and tensor types, which the draft's copies of the kept layers (and its weight-only
    requantization) cannot share or read. Checked on the weights themselves: a model loaded from GGUF
    carries a `quantization_config` but is dequantized on load into plain tensors, and is fine.
    """
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
    method = getattr(method, "value", method)
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        held = next((b for b in _QUANTIZED_BUFFERS if isinstance(getattr(module, b, None), torch.Tensor)), None)
        if held is not None:
            what = f"`{name}` holds a `{held}` ({type(module).__name__})"
        elif isinstance(weight, torch.Tensor) and (
            type(weight) not in (torch.Tensor, torch.nn.Parameter) or weight.dtype not in _PLAIN_DTYPES
        ):
            what = f"`{name}.weight` is a {type(weight).__name__} of {weight.dtype}"
        else:
            continue
        return f"the model is quantized ({method or 'weights of a quantized type'}): {what}"
    return None


def placement_problem(model: Any) -> str | None:
    """Why a draft cannot share `model`'s modules because of where accelerate put them (None: it can).

    `device_map` over several devices, `offload_folder` / CPU offload and `cpu_offload` attach accelerate
    hooks to the model's modules (`_hf_hook`): each hooked forward is bound to its own module, so the
    draft's copies of the kept layers would run the TARGET's layers (with the target's cache indices), and
    offloaded weights live on the meta device until the hook loads them. A model on one device (no
    `device_map`, or ``device_map={"": device}``, which attaches no hooks) is fine.
    """
    hooked = [name for name, module in model.named_modules() if getattr(module, "_hf_hook", None) is not None]
    if hooked:
        where = sorted(set(map(str, (getattr(model, "hf_device_map", None) or {}).values())))
        spread = f" (device_map over {', '.join(where)})" if where else ""
        return f"its modules carry accelerate hooks{spread}: {len(hooked)} hooked, e.g. `{hooked[0] or type(model).__name__}`"
    meta = next((n for n, p in model.named_parameters() if p.device.type == "meta"), None)
    if meta is not None:
        return f"parameter `{meta}` is on the meta device (offloaded or not loaded)"
    return None


def synchronize(device: Any) -> None:
    """Wait for the work queued on `device` (a no-op on CPU): a timer must not stop before the device does.

    Asynchronous devices (CUDA, XPU, MPS) return from a kernel launch at once; the time of a forward is
    only its time once the device has finished it.
    """
    device = torch.device(device)
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    sync = getattr(backend, "synchronize", None)
    if sync is not None and getattr(backend, "is_available", lambda: False)():
        sync(device) if device.type == "cuda" else sync()


# ---------------------------------------------------------------------------------------------- kernels
# torch's own weight-only quantized matmuls (no extra dependency). Measured at batch 1 on a 2-core EPYC
# (`python -m benchmarks.kernels`, benchmarks/results/quantized-kernels/): a decoder step's matmuls in int8
# 0.42 and int4 0.36 of bf16's time on Qwen2.5-Coder-1.5B (0.57 / 0.53 on SmolLM2-135M), the output head
# 0.5-0.6 in int8 and 0.24-0.29 in int4. torchao 0.18's CPU weight-only int4 calls this same int4 kernel
# (0.37 / 0.67 with its wrapper) and its int8 weight-only ran 2.5-3.8x slower than bf16. The CPU kernels
# are vectorised for bf16 activations only.

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
