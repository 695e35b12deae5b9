"""`SDFPAssistant`: the target model with some decoder layers (or sub-layers) skipped, as a draft.

The draft is a real model of the target's own class, built by shallow-copying the module path from
the causal-LM root down to each kept decoder layer. Every parameter tensor is the target's (same
storage); only the copied containers differ: a shorter `ModuleList`, attention modules renumbered to
compact cache indices, skipped branches replaced by modules that add nothing, and the draft's own
`config` and `generation_config`. The target's modules, config and generation config are untouched.

`SDFPAssistant` is a mixin: a draft of a `LlamaForCausalLM` is an instance of a class deriving from
both `SDFPAssistant` and `LlamaForCausalLM`, so `isinstance` holds for either.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .architectures import ArchitectureSpec, UnsupportedModelError, get_architecture
from .config import SDFPConfig
from .generation import DraftingOptions, install_candidate_generator

__all__ = ["DraftStats", "SDFPAssistant", "SkipSet"]

_DRAFT_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


@dataclass(frozen=True)
class SkipSet:
    """Which branches of which decoder layers the draft skips.

    Args:
        num_layers (`int`): number of decoder layers of the target.
        attention (`tuple[int, ...]`): layers whose attention branch is skipped.
        mlp (`tuple[int, ...]`): layers whose MLP branch is skipped.

    A whole skipped layer is one whose attention and MLP are both skipped.
    """

    num_layers: int
    attention: tuple[int, ...] = ()
    mlp: tuple[int, ...] = ()

    @classmethod
    def from_lists(
        cls,
        num_layers: int,
        *,
        skip_layers: Iterable[int] | None = None,
        skip_attention: Iterable[int] | None = None,
        skip_mlp: Iterable[int] | None = None,
    ) -> SkipSet:
        """Validate user-given indices and build a `SkipSet`; every mistake is a `ValueError` that says the fix."""
        layers = _check_indices("skip_layers", skip_layers, num_layers)
        attention = _check_indices("skip_attention", skip_attention, num_layers)
        mlp = _check_indices("skip_mlp", skip_mlp, num_layers)
        for name, sub in (("skip_attention", attention), ("skip_mlp", mlp)):
            both = sorted(set(layers) & set(sub))
            if both:
                raise ValueError(
                    f"layers {both} are in both `skip_layers` and `{name}`: a layer is skipped whole or by "
                    "sub-layer, not both"
                )
        skip = cls(num_layers, tuple(sorted({*layers, *attention})), tuple(sorted({*layers, *mlp})))
        if len(skip.attention) == num_layers and len(skip.mlp) == num_layers:
            raise ValueError(
                f"this skips all {num_layers} decoder layers, leaving no draft: keep at least one layer "
                "(a typical draft skips 25-50% of them)"
            )
        if len(skip.attention) == num_layers:
            raise ValueError(
                f"this skips the attention of all {num_layers} layers: a draft needs at least one attention "
                "sub-layer to read the context; keep one"
            )
        return skip

    @property
    def layers(self) -> tuple[int, ...]:
        """Layers skipped whole (both branches)."""
        return tuple(sorted(set(self.attention) & set(self.mlp)))

    @property
    def kept_layers(self) -> tuple[int, ...]:
        """Target layers present in the draft (at least one branch kept), in order."""
        whole = set(self.layers)
        return tuple(i for i in range(self.num_layers) if i not in whole)

    @property
    def is_layer_granular(self) -> bool:
        """True when every skipped branch belongs to a layer skipped whole."""
        return set(self.attention) == set(self.mlp)

    def as_mask_fields(self) -> dict[str, Any]:
        """The skip fields of an `SDFPConfig` describing this skip set."""
        whole = set(self.layers)
        return {
            "granularity": "layer" if self.is_layer_granular else "sublayer",
            "skip_layers": sorted(whole),
            "skip_attention": [i for i in self.attention if i not in whole],
            "skip_mlp": [i for i in self.mlp if i not in whole],
        }


def _check_indices(name: str, values: Iterable[int] | None, num_layers: int) -> tuple[int, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"`{name}` must be a list of layer indices, got {values!r}")
    values = list(values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"`{name}` must hold integer layer indices, got {v!r} in {values}")
        if v < 0:
            raise ValueError(
                f"`{name}` holds the negative index {v}: use layer indices 0..{num_layers - 1} "
                f"(e.g. {num_layers + v} for the {-v}-th layer from the end)"
            )
        if v >= num_layers:
            raise ValueError(
                f"`{name}` holds index {v}, but the model has {num_layers} decoder layers (0..{num_layers - 1})"
            )
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"`{name}` lists layers {dupes} more than once: list each layer once")
    return tuple(sorted(values))


@dataclass
class DraftStats:
    """Acceptance statistics of the last `generate` call that used this draft.

    `drafted_per_round[i]` tokens were proposed in verification round `i` and the target accepted
    `accepted_per_round[i]` of them; `source_per_round[i]` says where they came from (`"draft"`: the
    layer-skipping draft, `"lookup"`: prompt lookup). Rounds in which nothing was proposed are not counted.
    """

    drafted_per_round: list[int] = field(default_factory=list)
    accepted_per_round: list[int] = field(default_factory=list)

    source_per_round: list[str] = field(default_factory=list)

    def record(self, drafted: int, accepted: int, source: str = "draft") -> None:
        self.drafted_per_round.append(drafted)
        self.accepted_per_round.append(accepted)
        self.source_per_round.append(source)

    def reset(self) -> None:
        self.drafted_per_round.clear()
        self.accepted_per_round.clear()
        self.source_per_round.clear()

    def rounds_from(self, source: str) -> int:
        """Rounds whose candidates came from `source`: `"draft"` (the layer-skip draft) or `"lookup"`."""
        return self.source_per_round.count(source)

    @property
    def rounds(self) -> int:
        return len(self.drafted_per_round)

    @property
    def drafted(self) -> int:
        return sum(self.drafted_per_round)

    @property
    def accepted(self) -> int:
        return sum(self.accepted_per_round)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens (0.0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted(self) -> float:
        """Mean number of draft tokens accepted per verification round."""
        return self.accepted / self.rounds if self.rounds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "rounds": self.rounds,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "acceptance_rate": self.acceptance_rate,
            "mean_accepted": self.mean_accepted,
            "draft_rounds": self.rounds_from("draft"),
            "lookup_rounds": self.rounds_from("lookup"),
        }

    def __str__(self) -> str:
        return (
            f"{self.rounds} rounds, {self.accepted}/{self.drafted} drafted tokens accepted "
            f"({self.acceptance_rate:.1%}), {self.mean_accepted:.2f} accepted per round"
        )


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
def _draft_class(target_class: type[PreTrainedModel]) -> type:
    return type(f"SDFP{target_class.__name__}", (SDFPAssistant, target_class), {"__module__": __name__})


class SDFPAssistant:
    """A layer-skipping draft of a target model, for `model.generate(..., assistant_model=draft)`.

    Do not instantiate directly: use [`SDFPAssistant.from_target`] (or `from_pretrained`, to load a
    published mask). Drafts share every weight with their target; several drafts of one target can
    coexist. After a `generate` call, `draft.stats` holds the acceptance statistics of that call.
    """

    skip: SkipSet
    stats: DraftStats

    @classmethod
    def from_target(
        cls,
        model: PreTrainedModel,
        *,
        skip_layers: Iterable[int] | None = None,
        skip_attention: Iterable[int] | None = None,
        skip_mlp: Iterable[int] | None = None,
        mask: SDFPConfig | str | os.PathLike[str] | None = None,
        num_assistant_tokens: int | None = None,
        num_assistant_tokens_schedule: str | None = None,
        assistant_confidence_threshold: float | None = None,
        drafting: DraftingOptions | None = None,
        draft_vocab: Iterable[int] | None = None,
        **profile_kwargs: Any,
    ) -> SDFPAssistant:
        """Build a draft of `model` that skips some decoder layers or sub-layers.

        The layers to skip come from exactly one of: explicit lists (`skip_layers`, `skip_attention`,
        `skip_mlp`), a published mask (`mask`), or, with neither, profiling the model (Fisher
        information scores on calibration data, then the skip ratio with the best predicted speedup;
        see [`sdfp_hf.selection.profile`]).

        Args:
            model (`PreTrainedModel`):
                The target: a decoder-only causal LM of a supported architecture
                (`sdfp_hf.supported_model_types()`).
            skip_layers (`list[int]`, *optional*):
                Decoder layers skipped whole.
            skip_attention (`list[int]`, *optional*):
                Layers whose attention sub-layer is skipped (its residual branch adds nothing).
            skip_mlp (`list[int]`, *optional*):
                Layers whose MLP sub-layer is skipped.
            mask (`SDFPConfig`, `str` or `os.PathLike`, *optional*):
                A mask: an `SDFPConfig`, a local folder holding `sdfp_config.json`, or a Hub repo id
                (see [`SDFPAssistant.from_pretrained`] for revisions, subfolders and tokens). It must
                have been made for this architecture.
            num_assistant_tokens (`int`, *optional*):
                Tokens drafted per round (the starting value when the schedule adapts it). Defaults to
                the mask's recommendation, else 6.
            num_assistant_tokens_schedule (`str`, *optional*):
                `"constant"`, `"heuristic"` (grow by 2 after a fully accepted round, shrink by 1
                otherwise) or `"heuristic_transient"` (the same, reset at each `generate` call).
                Defaults to the mask's recommendation, else `"heuristic"`.
            assistant_confidence_threshold (`float`, *optional*):
                Stop drafting a round once the draft's probability of its token falls below this
                (0 disables it). Defaults to the mask's recommendation, else 0.4.
            drafting (`DraftingOptions`, *optional*):
                How candidates are proposed: each round, prompt lookup or the layer-skipping draft, whichever
                measured acceptance and cost predict to yield more tokens per second, or nothing when
                neither pays (on by default). `DraftingOptions(prompt_lookup=0, adaptive=False)`
                drafts with the layer-skipping draft alone, with the length schedule above.
            draft_vocab (`list[int]`, *optional*):
                Token ids the draft may propose: it scores only these (a smaller output head, cheaper per
                step); the target still verifies over the full vocabulary, so output does not change.
                Defaults to the mask's `draft_vocab`, else the full vocabulary.
            **profile_kwargs:
                When profiling: arguments of [`sdfp_hf.selection.profile`] (`calibration`, `tokenizer`,
                `method`, `skip_ratio`, `granularity`, `seed`, ...).

        Returns:
            The draft: an instance of `SDFPAssistant` and of `type(model)`, with the mask that
            describes it in `draft.sdfp_config`.
        """
        if isinstance(model, SDFPAssistant):
            raise ValueError("`model` is already an sdfp-hf draft: pass the target model it was built from")
        if not isinstance(model, PreTrainedModel):
            raise UnsupportedModelError(
                f"expected a transformers PreTrainedModel (a *ForCausalLM), got {type(model).__name__}"
            )
        spec = get_architecture(model)
        num_layers = len(spec.decoder_layers(model))
        explicit = skip_layers is not None or skip_attention is not None or skip_mlp is not None
        if explicit and mask is not None:
            raise ValueError("pass either skip lists or a `mask`, not both")
        if profile_kwargs and (explicit or mask is not None):
            raise TypeError(
                f"profiling arguments {sorted(profile_kwargs)} apply only when neither skip lists nor a mask are given"
            )
        if mask is not None:
            if not isinstance(mask, SDFPConfig):
                mask = SDFPConfig.from_pretrained(mask)
            mask.check_compatible(model.config, name_or_path=getattr(model, "name_or_path", None))
            skip = SkipSet.from_lists(
                num_layers, skip_layers=mask.skip_layers, skip_attention=mask.skip_attention, skip_mlp=mask.skip_mlp
            )
            mask = copy.deepcopy(mask)
        elif explicit:
            skip = SkipSet.from_lists(
                num_layers, skip_layers=skip_layers, skip_attention=skip_attention, skip_mlp=skip_mlp
            )
            mask = SDFPConfig.from_model_config(model.config, **skip.as_mask_fields())
        else:
            from .selection import profile

            result = profile(model, **profile_kwargs)
            skip, mask = result.skip, result.to_config(model)
        if draft_vocab is not None:
            mask = dataclasses.replace(mask, draft_vocab=list(draft_vocab))
        draft = _build_draft(model, spec, skip)
        draft.sdfp_config = mask
        draft.drafting = drafting if drafting is not None else DraftingOptions()
        draft.set_draft_settings(
            num_assistant_tokens=num_assistant_tokens,
            num_assistant_tokens_schedule=num_assistant_tokens_schedule,
            assistant_confidence_threshold=assistant_confidence_threshold,
        )
        install_candidate_generator(model)
        return draft

    @classmethod
    def from_pretrained(
        cls,
        model: PreTrainedModel,
        mask_name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        subfolder: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        **draft_settings: Any,
    ) -> SDFPAssistant:
        """Build the draft of `model` described by a published mask, without profiling.

        Args:
            model (`PreTrainedModel`): the target the mask was made for.
            mask_name_or_path (`str` or `os.PathLike`):
                A local folder holding `sdfp_config.json` (looked at first) or a Hub repo id.
            revision, subfolder, token, cache_dir, local_files_only:
                As in `huggingface_hub.hf_hub_download`; `subfolder` for a mask kept inside another
                repository (e.g. the model's own).
            **draft_settings:
                `num_assistant_tokens`, `num_assistant_tokens_schedule`, `assistant_confidence_threshold`,
                overriding the mask's recommendations.
        """
        mask = SDFPConfig.from_pretrained(
            mask_name_or_path,
            revision=revision,
            subfolder=subfolder,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        return cls.from_target(model, mask=mask, **draft_settings)

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
            input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=True, attention_mask=attention_mask
        )
        weight, bias, ids = self._output_head()
        logits = torch.nn.functional.linear(hidden.last_hidden_state[:, -1], weight, bias).float()
        softcap = getattr(self.config.get_text_config(), "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        if ids is None:
            return logits
        full = logits.new_full((1, self.get_output_embeddings().weight.shape[0]), float("-inf"))
        return full.index_copy_(1, ids, logits)

    def _output_head(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.LongTensor | None]:
        head = self.get_output_embeddings()
        if self.sdfp_config.draft_vocab is None:
            return head.weight, head.bias, None
        cached = self.__dict__.get("_sdfp_head")
        if cached is None or cached[0].dtype != head.weight.dtype or cached[0].device != head.weight.device:
            # A copy of the kept rows (not a view): a contiguous matrix is what makes the step cheaper.
            ids = torch.tensor(self.sdfp_config.draft_vocab, device=head.weight.device)
            bias = None if head.bias is None else head.bias.detach()[ids]
            cached = (head.weight.detach()[ids].contiguous(), bias, ids)
            self.__dict__["_sdfp_head"] = cached
        return cached

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
        for name in _DRAFT_SETTINGS:
            setattr(self.generation_config, name, getattr(self.sdfp_config, name))

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "a draft holds no weights of its own: save its mask with `draft.sdfp_config.save_pretrained(dir)` "
            "(or `push_to_hub`), and load it with `SDFPAssistant.from_pretrained(model, dir)`; for a "
            "standalone checkpoint (serving engines) use `draft.save_standalone(dir)`"
        )

    def save_standalone(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> str:
        """Write this draft as an ordinary transformers checkpoint (see [`sdfp_hf.export.save_standalone`])."""
        from .export import save_standalone

        return save_standalone(self, save_directory, **kwargs)

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


def _build_draft(model: PreTrainedModel, spec: ArchitectureSpec, skip: SkipSet) -> SDFPAssistant:
    if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
        raise UnsupportedModelError(
            f"{type(model).__name__} scales attention by its layer index (`scale_attn_by_inverse_layer_idx`), "
            "which a renumbered draft layer cannot reproduce"
        )
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
    draft.__class__ = _draft_class(type(model))
    draft.config = config
    draft.generation_config = copy.deepcopy(model.generation_config)
    draft.__dict__["_sdfp_target"] = model
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
    for new_idx, old_idx in enumerate(kept):
        layer = _copy_module(layers[old_idx])
        if spec.layer_idx_on_layer:
            layer.layer_idx = new_idx
        if old_idx in skipped_attention:
            layer._modules[spec.attention] = _SkippedAttention()
        else:
            attention = _copy_module(spec.branch(layer, "attention"))
            attention.layer_idx = new_idx
            layer._modules[spec.attention] = attention
        if old_idx in skipped_mlp:
            layer._modules[spec.mlp] = _SkippedMLP()
        new_layers.append(layer)
    dst._modules[list_name] = nn.ModuleList(new_layers)
    return draft
