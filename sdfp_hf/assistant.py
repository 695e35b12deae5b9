"""`SDFPAssistant`: the public draft, built from a target with explicit skips, a published mask, or a profile.

`SDFPAssistant.from_target(model)` decides what the draft skips (the lists given, a mask's, or with neither
the cached, published or freshly profiled mask of `sdfp_hf.auto_mask`), builds the draft (`sdfp_hf.draft`) and installs the hook that makes
`model.generate(..., assistant_model=draft)` draft with sdfp-hf (`sdfp_hf.drafting`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterable
from typing import Any

from transformers import PreTrainedModel

from ._deprecated import moved
from .auto_mask import auto_mask
from .config import SDFPConfig
from .draft import DraftModel, build_draft, target_architecture
from .drafting import DraftingOptions, install_candidate_generator
from .export import save_standalone
from .plan import DraftPlan

__all__ = ["SDFPAssistant"]


class SDFPAssistant(DraftModel):
    """A layer-skipping draft of a target model, for `model.generate(..., assistant_model=draft)`.

    Do not instantiate directly: use [`SDFPAssistant.from_target`] (or `from_pretrained`, to load a
    published mask). Drafts share every weight with their target; several drafts of one target can
    coexist. After a `generate` call, `draft.stats` holds the acceptance statistics of that call.
    `draft.origin` says where its mask came from: ``"explicit"`` (skip lists), ``"mask"``, ``"cache"``,
    ``"hub:<repo id>"`` or ``"profiled"``.
    """

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
        quantize: str | None = None,
        refresh: bool = False,
        hub_lookup: bool = True,
        **profile_kwargs: Any,
    ) -> SDFPAssistant:
        """Build a draft of `model`: the model itself with some branches skipped and others quantized.

        What the draft does with each branch comes from exactly one of: an explicit plan (`skip_layers`,
        `skip_attention`, `skip_mlp`, `quantize`), a published mask (`mask`), or, with neither, the first of:

        1. the local cache of profiles: this model (name, revision, architecture fingerprint, weights), dtype,
           device and profiling options, profiled before (`sdfp_hf.profile_cache`; in
           ``$HF_HOME/assets/sdfp_hf/profiles``, or ``$SDFP_HF_PROFILE_CACHE``). A corrupt entry is profiled
           again, with a warning;
        2. with the default profiling options, a mask published on the Hub whose card names this model
           (its Hub id) as `base_model`, loaded after the fingerprint check; of several, the most downloaded
           (then the most recently modified) that fits (`sdfp_hf.published`). Offline (``HF_HUB_OFFLINE=1``),
           unreachable (a 3 s timeout) or refused (401, 404), this step is skipped;
        3. profiling the model (the plan with the best predicted speedup on this machine within a memory
           budget, `draft_memory`; see [`sdfp_hf.profiler.profile`]).

        What 2 and 3 find is kept in the cache, and one line (INFO log, and stderr unless `progress=False`)
        says where the draft came from; `draft.origin` says it too.

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
            quantize (`str`, *optional*):
                With an explicit plan: ``"int8"`` or ``"int4"`` to make every kept branch and the output head
                a weight-only quantized copy of the target's (extra memory: about a half or a quarter of the
                bf16 weights), instead of sharing them. Without skip lists it skips nothing.
            **profile_kwargs:
                When profiling: arguments of [`sdfp_hf.profiler.profile`] (`draft_memory`, `calibration`,
                `tokenizer`, `method`, `skip_ratio`, `granularity`, `seed`, ...). They are part of the cache
                key; any but `tokenizer`, `progress` and `on_no_speedup` skips the Hub look-up, and
                `calibration` data the cache too.
            refresh (`bool`, *optional*, defaults to `False`):
                Without a plan or mask: profile again, reading neither the cache nor the Hub (the new profile
                replaces the cached one).
            hub_lookup (`bool`, *optional*, defaults to `True`):
                Without a plan or mask: look for a published mask on the Hub when the cache has none.

        Returns:
            The draft: an instance of `SDFPAssistant` and of `type(model)`, with the mask that
            describes it in `draft.sdfp_config`.
        """
        spec = target_architecture(model)
        num_layers = len(spec.decoder_layers(model))
        explicit = skip_layers is not None or skip_attention is not None or skip_mlp is not None or quantize is not None
        if explicit and mask is not None:
            raise ValueError("pass either an explicit plan (skip lists, `quantize`) or a `mask`, not both")
        given = [*profile_kwargs, *(["refresh"] if refresh else []), *([] if hub_lookup else ["hub_lookup"])]
        if given and (explicit or mask is not None):
            raise TypeError(
                f"profiling arguments {sorted(given)} apply only when neither an explicit plan nor a mask is given"
            )
        copies = None  # the quantized matrices profiling made, reused by the draft it chose
        origin = "mask" if mask is not None else "explicit"
        if mask is not None:
            if not isinstance(mask, SDFPConfig):
                mask = SDFPConfig.from_pretrained(mask)
            mask.check_compatible(model.config, name_or_path=getattr(model, "name_or_path", None))
            mask = copy.deepcopy(mask)
        elif explicit:
            plan = DraftPlan.from_lists(
                num_layers, skip_layers=skip_layers, skip_attention=skip_attention, skip_mlp=skip_mlp, quantize=quantize
            )
            mask = SDFPConfig.from_model_config(model.config, **plan.skip.as_mask_fields(), precision=plan.to_dict())
        else:
            found = auto_mask(model, refresh=refresh, hub_lookup=hub_lookup, **profile_kwargs)
            mask, copies, origin = found.mask, found.copies, found.origin
        if draft_vocab is not None:
            mask = dataclasses.replace(mask, draft_vocab=list(draft_vocab))
        draft = build_draft(model, mask.plan, mask=mask, drafting=drafting, mixin=cls, copies=copies)
        draft.set_draft_settings(
            num_assistant_tokens=num_assistant_tokens,
            num_assistant_tokens_schedule=num_assistant_tokens_schedule,
            assistant_confidence_threshold=assistant_confidence_threshold,
        )
        install_candidate_generator(model)
        draft.origin = origin
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

    def save_standalone(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> str:
        """Write this draft as an ordinary transformers checkpoint (see [`sdfp_hf.export.save_standalone`])."""
        return save_standalone(self, save_directory, **kwargs)


# Names that lived here before 0.2, importable from here for one more release.
__getattr__ = moved(__name__, {"DraftStats": "sdfp_hf.stats"})
