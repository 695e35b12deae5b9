"""The draft: the target model with some decoder layers (or sub-layers) skipped, sharing its weights.

The draft is a real model of the target's own class, built by shallow-copying the module path from
the causal-LM root down to each kept decoder layer. Every parameter tensor is the target's (same
storage); only the copied containers differ: a shorter `ModuleList`, attention modules renumbered to
compact cache indices (attention reads and writes the cache by `layer_idx`), skipped branches replaced
by modules that add nothing, the draft's own `config` and `generation_config`, and for its attention
modules a config that runs the draft's attention function (`sdfp_hf.attention`: `sdpa` without torch's
slow one-row case). The target's modules, config and generation config are untouched.

`DraftModel` is a mixin: a draft of a `LlamaForCausalLM` is an instance of a class deriving from both
the mixin and `LlamaForCausalLM`, so `isinstance` holds for either. `build_draft(model, skip)` makes one;
the public entry point, `SDFPAssistant.from_target` (`sdfp_hf.assistant`), decides what to skip and
calls it. This module knows nothing of how a skip set was chosen.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ._compat import cache_kwargs, check_transformers, placement_problem, quantization_problem
from .architectures import ArchitectureSpec, UnsupportedModelError, get_architecture
from .attention import draft_attention_config
from .config import SDFPConfig
from .drafting.options import DraftingOptions
from .plan import QUANTIZED, DraftPlan
from .quantize import QuantizedLinear, quantize_linears, quantize_weight
from .skipset import SkipSet
from .stats import DraftStats

__all__ = ["DRAFT_SETTINGS", "DraftHead", "DraftModel", "build_draft", "target_architecture"]

DRAFT_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
"""The drafting settings a draft's `generation_config` (and its mask) carry."""


class _SkippedAttention(nn.Module):
    """Stands in for a skipped attention branch: adds nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        return torch.zeros_like(hidden_states), None


class _SkippedMLP(nn.Module):
    """Stands in for a skipped MLP branch: adds nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def _copy_module(module: nn.Module) -> nn.Module:
    """A new module object sharing `module`'s parameters, buffers and children, with its own containers."""
    new = copy.copy(module)
    for key, value in module.__dict__.items():
        if key.startswith("_") and isinstance(value, dict):
            new.__dict__[key] = copy.copy(value)
    return new


@functools.cache
def _draft_class(mixin: type, target_class: type[PreTrainedModel]) -> type:
    return type(f"SDFP{target_class.__name__}", (mixin, target_class), {"__module__": mixin.__module__})


class DraftModel:
    """What every sdfp-hf draft is: a view of its target with some branches skipped.

    Built by [`build_draft`] (or the public [`SDFPAssistant.from_target`]). After a `generate` call,
    `draft.stats` holds the acceptance statistics of that call; `draft.sdfp_config` is the mask that
    describes the draft, and `draft.drafting` how candidates are proposed.
    """

    skip: SkipSet
    stats: DraftStats
    sdfp_config: SDFPConfig
    drafting: DraftingOptions

    # The draft's modules are shallow copies that share the target's tensors: a module-level `.to()`,
    # `.half()` or the like would move or convert the TARGET's weights too.

    @property
    def target(self) -> PreTrainedModel:
        """The model this draft was built from (and whose weights it shares)."""
        return self.__dict__["_sdfp_target"]

    @property
    def cache_layer_map(self) -> list[int | None]:
        """For each draft layer, the target layer whose KV cache it reads (`None`: attention skipped)."""
        skipped = set(self.skip.attention)
        return [None if i in skipped else i for i in self.skip.kept_layers]

    def draft_logits(
        self,
        input_ids: torch.LongTensor,
        position_ids: torch.LongTensor,
        cache: Any,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One drafting step: the draft's next-token logits over the full vocabulary, in float32.

        Args:
            input_ids (`torch.LongTensor` of shape `(1, n)`): tokens to feed (usually one).
            position_ids (`torch.LongTensor` of shape `(1, n)`): their positions.
            cache (`Cache`): the draft's cache, extended in place.
            attention_mask (`torch.Tensor` of shape `(1, past + n)`, *optional*): padding mask, if any.

        Returns:
            `torch.FloatTensor` of shape `(1, vocab_size)`: the logits after the last token. With a
            reduced draft vocabulary only its tokens are scored; the others are `-inf` (probability 0).
        """
        hidden = self.base_model(
            input_ids=input_ids, position_ids=position_ids, use_cache=True, attention_mask=attention_mask,
            **cache_kwargs(self.base_model, cache),
        )
        logits = self.get_output_embeddings()(hidden.last_hidden_state[:, -1]).float()
        softcap = getattr(self.config.get_text_config(), "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
            head = self.get_output_embeddings()
            if head.ids is not None:  # the cap turned the tokens the draft does not score into -cap
                logits = logits.masked_fill(~head.scored, float("-inf"))
        return logits

    @property
    def plan(self) -> DraftPlan:
        """What the draft skips, shares and quantizes."""
        return self.__dict__["_sdfp_plan"]

    @property
    def extra_bytes(self) -> int:
        """Bytes the draft holds of its own: quantized copies and a reduced output head (0 for a pure view)."""
        held = sum(m.nbytes for m in self.modules() if isinstance(m, QuantizedLinear))
        head = self.get_output_embeddings()
        return held + (head.nbytes - (head.quantized.nbytes if head.quantized is not None else 0))

    @property
    def round_state(self) -> dict[str, Any]:
        """What the drafting loops keep on this draft between `generate` calls: by loop, `(settings, state)`.

        One `generate` call at a time holds each state; a call running beside it (another thread) learns
        on a state of its own (`sdfp_hf.drafting.calls`).
        """
        return self.__dict__.setdefault("_sdfp_round_state", {})

    def clear_memory(self) -> None:
        """Forget what earlier outputs taught the draft: the suffix memory and the recycled-token table.

        Measured step costs and acceptance rates are kept. Call it between users or conversations whose
        outputs must not shape each other's candidates (they never change the output, only its speed).
        """
        for _, state in self.round_state.values():
            forget = getattr(state, "forget", None)
            if forget is not None:
                forget()

    def set_draft_settings(
        self,
        *,
        num_assistant_tokens: int | None = None,
        num_assistant_tokens_schedule: str | None = None,
        assistant_confidence_threshold: float | None = None,
    ) -> None:
        """Change the drafting settings; `None` keeps the current value.

        They are written to the draft's `generation_config` (where `generate` reads them) and to
        `draft.sdfp_config` (the recommendation a saved mask carries).
        """
        given = {
            "num_assistant_tokens": num_assistant_tokens,
            "num_assistant_tokens_schedule": num_assistant_tokens_schedule,
            "assistant_confidence_threshold": assistant_confidence_threshold,
        }
        # Validated by the mask's own checks; a bad value leaves the draft as it was.
        self.sdfp_config = dataclasses.replace(
            self.sdfp_config, **{k: v for k, v in given.items() if v is not None}
        )
        for name in DRAFT_SETTINGS:
            setattr(self.generation_config, name, getattr(self.sdfp_config, name))

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "a draft holds no weights of its own: save its mask with `draft.sdfp_config.save_pretrained(dir)` "
            "(or `push_to_hub`), and load it with `SDFPAssistant.from_pretrained(model, dir)`; for a "
            "standalone checkpoint (serving engines) use `draft.save_standalone(dir)`"
        )

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        generation_config = kwargs.get("generation_config")
        if generation_config is not None and getattr(generation_config, "is_assistant", False):
            # Only transformers' stock assisted generation calls a draft's `generate`: our target hook
            # never does, so this draft was passed to a model other than its target.
            raise ValueError(
                f"this draft was built from another model ({type(self.target).__name__} at {id(self.target):#x}); "
                "build one for this model with `SDFPAssistant.from_target(model)`"
            )
        return super().generate(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"sdfp_skip_attention={list(self.skip.attention)}, sdfp_skip_mlp={list(self.skip.mlp)}"


class DraftHead(nn.Module):
    """The draft's output head, in place of the target's in the draft's module tree.

    The target's head itself (shared), a quantized copy of it, or either restricted to some rows
    (`draft_vocab`: a smaller head; the other tokens get -inf, probability 0). Every forward of the draft
    (generation, the replay, the step-cost measurement) goes through it, so what is measured is what runs.
    """

    def __init__(self, head: nn.Module, precision: str, group_size: int, draft_vocab: list[int] | None):
        super().__init__()
        weight = head.weight.detach()
        bias = None if getattr(head, "bias", None) is None else head.bias.detach()
        self.vocab_size = weight.shape[0]
        self.register_buffer("ids", None if draft_vocab is None else torch.tensor(draft_vocab, device=weight.device))
        self.register_buffer("scored", None)
        if self.ids is not None:
            self.scored = torch.zeros(self.vocab_size, dtype=torch.bool, device=weight.device).index_fill_(0, self.ids, True)
        if self.ids is not None:
            # A copy of the kept rows (not a view): a contiguous matrix is what makes the step cheaper.
            weight = weight[self.ids].contiguous()
            bias = None if bias is None else bias[self.ids]
        self.quantized = quantize_weight(weight, bias, precision, group_size) if precision != "shared" else None
        # the target's tensors when shared, the kept rows when reduced; nothing when quantized
        self.weight, self.bias = (None, None) if self.quantized is not None else (weight, bias)
        self.nbytes = self.quantized.nbytes if self.quantized is not None else 0
        if self.quantized is None and self.ids is not None:
            self.nbytes = sum(t.numel() * t.element_size() for t in (weight, bias) if t is not None)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.quantized is not None:
            logits = self.quantized(hidden)
        else:
            logits = nn.functional.linear(hidden, self.weight, self.bias)
        if self.ids is None:
            return logits
        full = logits.new_full((*logits.shape[:-1], self.vocab_size), float("-inf"))
        return full.index_copy_(-1, self.ids, logits)


def _head_name(model: PreTrainedModel) -> str:
    head = model.get_output_embeddings()
    for name, child in model.named_children():
        if child is head:
            return name
    raise UnsupportedModelError(f"{type(model).__name__}'s output head is not one of its direct submodules")


def _view(model: PreTrainedModel, spec: ArchitectureSpec, plan: DraftPlan, mixin: type, copies: dict | None) -> DraftModel:
    """The draft's modules: a shallow copy of the path root -> layers, the kept layers renumbered, the
    skipped branches replaced, the quantized branches copied with quantized linears."""
    if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
        raise UnsupportedModelError(
            f"{type(model).__name__} scales attention by its layer index (`scale_attn_by_inverse_layer_idx`), "
            "which a renumbered draft layer cannot reproduce"
        )
    skip = plan.skip
    kept = skip.kept_layers
    skipped_attention, skipped_mlp = set(skip.attention), set(skip.mlp)

    config = copy.deepcopy(model.config)
    text_config = config.get_text_config(decoder=True)
    text_config.num_hidden_layers = len(kept)
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types is not None:
        text_config.layer_types = [layer_types[i] for i in kept]
    if skipped_attention - set(skip.layers):
        # transformers gives "reuse" layers a cache slot that holds nothing (a DummyLayer)
        text_config.kv_sharing_modes = ["reuse" if i in skipped_attention else None for i in kept]

    draft = _copy_module(model)
    draft.__dict__.pop("_get_candidate_generator", None)  # the target's generate hook is not the draft's
    draft.__class__ = _draft_class(mixin, type(model))
    draft.config = config
    draft.generation_config = copy.deepcopy(model.generation_config)
    draft.__dict__["_sdfp_target"] = model
    draft.__dict__["_sdfp_plan"] = plan
    draft.skip = skip
    draft.stats = DraftStats()

    # Copy the module path root -> ... -> ModuleList, pointing each copy at the draft's config.
    *parents, list_name = spec.layers.split(".")
    src, dst = model, draft
    for name in parents:
        src = getattr(src, name)
        child = _copy_module(src)
        if hasattr(child, "config"):
            child.config = config if child.config is model.config else text_config
        dst._modules[name] = child
        dst = child

    layers = spec.decoder_layers(model)
    new_layers = []
    attention_configs: dict[int, Any] = {}  # one copy per config the target's attention modules read
    for new_idx, old_idx in enumerate(kept):
        layer = _copy_module(layers[old_idx])
        if spec.layer_idx_on_layer:
            layer.layer_idx = new_idx
        if old_idx in skipped_attention:
            layer._modules[spec.attention] = _SkippedAttention()
        else:
            attention = _copy_module(spec.branch(layer, "attention"))
            attention.layer_idx = new_idx
            if hasattr(attention, "config"):
                if id(attention.config) not in attention_configs:
                    attention_configs[id(attention.config)] = draft_attention_config(attention.config)
                attention.config = attention_configs[id(attention.config)]
            _quantize(attention, plan.precision(old_idx, "attention"), plan.group_size, copies)
            layer._modules[spec.attention] = attention
        if old_idx in skipped_mlp:
            layer._modules[spec.mlp] = _SkippedMLP()
        elif plan.precision(old_idx, "mlp") in QUANTIZED:
            mlp = _copy_module(spec.branch(layer, "mlp"))
            _quantize(mlp, plan.precision(old_idx, "mlp"), plan.group_size, copies)
            layer._modules[spec.mlp] = mlp
        new_layers.append(layer)
    dst._modules[list_name] = nn.ModuleList(new_layers)
    return draft


def _quantize(branch: nn.Module, precision: str, group_size: int, copies: dict | None) -> None:
    if precision in QUANTIZED:
        quantize_linears(branch, precision, group_size, _copy_module, copies)


def target_architecture(model: Any) -> ArchitectureSpec:
    """The layout of a model a draft can be built from, or a clear error.

    Refused, each with one line: a draft, not a model, an unsupported architecture, a transformers
    version without what the draft needs, quantized weights (bitsandbytes, GPTQ, torchao, ...), modules
    dispatched or offloaded by accelerate.
    """
    if isinstance(model, DraftModel):
        raise ValueError("`model` is already an sdfp-hf draft: pass the target model it was built from")
    if not isinstance(model, PreTrainedModel):
        raise UnsupportedModelError(
            f"expected a transformers PreTrainedModel (a *ForCausalLM), got {type(model).__name__}"
        )
    spec = get_architecture(model)
    check_transformers(model)
    quantized = quantization_problem(model)
    if quantized:
        raise UnsupportedModelError(
            f"sdfp-hf cannot build a draft of this model: {quantized}, and a draft shares or requantizes the "
            "target's plain weights. Load the model unquantized (bf16 / fp16 / fp32, or a GGUF file, which "
            "loads dequantized); the draft itself can hold int8 / int4 copies (`quantize=`)"
        )
    placed = placement_problem(model)
    if placed:
        raise UnsupportedModelError(
            f"sdfp-hf cannot build a draft of this model: {placed}. Load it on one device (no `device_map`, or "
            "`device_map={'': 'cuda:0'}`), without offloading"
        )
    return spec


def build_draft(
    model: PreTrainedModel,
    plan: DraftPlan | SkipSet,
    *,
    mask: SDFPConfig | None = None,
    drafting: DraftingOptions | None = None,
    mixin: type[DraftModel] = DraftModel,
    copies: dict | None = None,
) -> DraftModel:
    """Build the draft of `model` that follows `plan`.

    Args:
        model (`PreTrainedModel`): the target, a decoder-only causal LM of a supported architecture.
        plan (`DraftPlan` or `SkipSet`): what to skip, share and quantize (a `SkipSet`: skip, share the
            rest); its number of layers must be the model's.
        mask (`SDFPConfig`, *optional*): the mask the draft carries (its provenance and recommended
            settings); defaults to a bare mask of `plan` for `model`.
        drafting (`DraftingOptions`, *optional*): how candidates are proposed; defaults to the defaults.
        mixin (`type`, *optional*): the draft's mixin class, `DraftModel` or a subclass of it.
        copies (`dict`, *optional*): kept by a caller that builds several drafts of one target (the
            profiler): quantized copies of the same matrix are made once and shared between them.

    Returns:
        The draft: an instance of `mixin` and of `type(model)`.
    """
    if isinstance(plan, SkipSet):
        plan = DraftPlan(plan)
    spec = target_architecture(model)
    num_layers = len(spec.decoder_layers(model))
    if plan.num_layers != num_layers:
        raise ValueError(f"the plan is for {plan.num_layers} decoder layers, the model has {num_layers}")
    if mask is None:
        mask = SDFPConfig.from_model_config(model.config, **plan.skip.as_mask_fields(), precision=plan.to_dict())
    draft = _view(model, spec, plan, mixin, copies)
    draft._modules[_head_name(model)] = DraftHead(model.get_output_embeddings(), plan.head, plan.group_size, mask.draft_vocab)
    draft.sdfp_config = mask
    draft.drafting = drafting if drafting is not None else DraftingOptions()
    draft.set_draft_settings()
    return draft
