"""The mask `SDFPAssistant.from_target(model)` uses when it is given none: cached, published, or profiled.

In this order, the first that answers:

1. the local cache of profiles (`sdfp_hf.profile_cache`): this model, dtype, device and options, profiled
   or found before (seconds);
2. a published mask on the Hub whose card names this model as `base_model` (`sdfp_hf.published`), with
   the default profiling options only; offline or unreachable, this step costs nothing;
3. profiling (`sdfp_hf.profiler.profile`).

What 2 and 3 find goes into the cache. One line (logged at INFO, and printed to stderr unless
``progress=False``) says where the draft came from.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from .config import SDFPConfig
from .profile_cache import load_profile, profile_key, store_profile
from .profiler import profile
from .published import find_published_mask

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["AutoMask", "auto_mask"]

logger = logging.getLogger(__name__)

# Profiling options with which a published mask still answers the question asked (others, such as `method`,
# `draft_memory` or `skip_ratio`, ask for a profile of their own).
_HUB_NEUTRAL_OPTIONS = frozenset({"tokenizer", "progress", "on_no_speedup"})
_PROFILE_PARAMETERS = inspect.signature(profile).parameters


@dataclass
class AutoMask:
    """Where `from_target(model)`'s mask came from.

    Args:
        mask (`SDFPConfig`): the mask.
        origin (`str`): ``"cache"``, ``"hub:<repo id>"`` or ``"profiled"``.
        message (`str`): the one line that said so.
        copies (`dict`): quantized matrices profiling made, for `build_draft(copies=)` (empty otherwise).
    """

    mask: SDFPConfig
    origin: str
    message: str
    copies: dict = field(default_factory=dict, repr=False)


def auto_mask(
    model: PreTrainedModel, *, refresh: bool = False, hub_lookup: bool = True, **profile_kwargs: Any
) -> AutoMask:
    """The mask for `model`: from the profile cache, else the Hub, else a fresh profile (kept in the cache).

    Args:
        model (`PreTrainedModel`): the target.
        refresh (`bool`, *optional*, defaults to `False`): profile again, reading neither the cache nor the
            Hub (the new profile replaces the cached one).
        hub_lookup (`bool`, *optional*, defaults to `True`): look for a published mask on the Hub when the
            cache has none (only with the default profiling options).
        **profile_kwargs: arguments of [`sdfp_hf.profiler.profile`]; they are part of the cache key.
    """
    progress = bool(profile_kwargs.get("progress", True))
    options = _not_defaults(profile_kwargs)  # `method="gate_flips"` asks what no argument asks
    key = profile_key(model, options)
    if key is not None and not refresh:
        cached = load_profile(key, model)
        if cached is not None:
            mask, path, entry = cached
            how = f"profiled in {entry['seconds']:.0f} s" if entry.get("source") == "profiled" and entry.get(
                "seconds") is not None else f"from {entry.get('source', 'an earlier call')}"
            return _said(AutoMask(mask, "cache", f"draft from the profile cache ({how}, {entry.get('created', '?')}; "
                                  f"`{path}`; `refresh=True` profiles again)"), progress)
    note = "the cache was bypassed (refresh=True)" if refresh else "not in the profile cache"
    if hub_lookup and not refresh and set(options) <= _HUB_NEUTRAL_OPTIONS:
        found, reason = find_published_mask(model.config, key.name_or_path if key is not None else None)
        if found is not None:
            if key is not None:
                store_profile(key, found.mask, source=f"the Hub mask `{found.repo_id}`")
            chosen = f" (of {found.candidates} published: the most downloaded that fits)" if found.candidates > 1 else ""
            return _said(AutoMask(found.mask, f"hub:{found.repo_id}", f"draft from the Hub mask `{found.repo_id}`"
                                  f"{chosen}, revision {found.revision or 'main'}; {note}"), progress)
        note += f"; Hub: {reason}"
    elif not hub_lookup:
        note += "; Hub look-up off"
    start = time.perf_counter()
    result = profile(model, **profile_kwargs)
    seconds = time.perf_counter() - start
    mask = result.to_config(model)
    kept = store_profile(key, mask, source="profiled", seconds=seconds) if key is not None else None
    where = f"kept in `{kept}`" if kept is not None else "not cached"
    return _said(AutoMask(mask, "profiled", f"draft profiled in {seconds:.1f} s ({note}; {where})",
                          result.quantized_copies), progress)


def _not_defaults(options: dict[str, Any]) -> dict[str, Any]:
    defaults = {name: p.default for name, p in _PROFILE_PARAMETERS.items() if p.default is not p.empty}
    return {k: v for k, v in options.items() if k not in defaults or not _same(v, defaults[k])}


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # an object whose comparison fails or is not a truth value (a tensor)
        return False


def _said(found: AutoMask, progress: bool) -> AutoMask:
    logger.info(found.message)
    if progress:
        tqdm.write(f"sdfp-hf: {found.message}", file=sys.stderr)
    return found
