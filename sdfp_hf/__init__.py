"""sdfp-hf: training-free self-speculative decoding for Hugging Face causal LMs.

Build a draft from the target itself by skipping the decoder layers that matter least, and pass it
to `generate` as `assistant_model`:

    draft = SDFPAssistant.from_target(model)
    out = model.generate(**inputs, assistant_model=draft)

Where each thing lives (imports run one way, from the top of this list down):

- `assistant`: `SDFPAssistant`, the public draft (explicit skips, a mask, or a profile);
- `profiler`: `profile`, `ProfileResult`, the "auto" choice of a draft;
- `export`, `plot`, `models`, `cli`: standalone checkpoints, score pictures, loading targets, the command;
- `draft`: the draft view of a target; `drafting`: how it proposes candidates and how `generate` uses it;
- `replay`, `costs`, `selection`, `fit`: acceptance replay, step costs and the speedup model, choosing the
  skips, the layer scorers;
- `config` (`SDFPConfig`, the mask), `hub` (its Hub I/O), `calibration`, `cache`, `skipset`, `stats`,
  `architectures`, `_compat` (every private transformers touchpoint).

The names below are imported on first use, so that `import sdfp_hf.cli` (and `sdfp --help`) does not
load torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "CONFIG_NAME": "config",
    "DraftStats": "stats",
    "DraftingOptions": "drafting.options",
    "NoSpeedupWarning": "profiler",
    "OverwriteError": "_files",
    "ProfileResult": "profiler",
    "SDFPAssistant": "assistant",
    "SDFPConfig": "config",
    "SDFPConfigError": "config",
    "SDFPHubError": "hub",
    "SkipSet": "skipset",
    "UnsafePathError": "_files",
    "UnsupportedModelError": "architectures",
    "load_model": "models",
    "profile": "profiler",
    "supported_model_types": "architectures",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from ._files import OverwriteError, UnsafePathError
    from .architectures import UnsupportedModelError, supported_model_types
    from .assistant import SDFPAssistant
    from .config import CONFIG_NAME, SDFPConfig, SDFPConfigError
    from .drafting.options import DraftingOptions
    from .hub import SDFPHubError
    from .models import load_model
    from .profiler import NoSpeedupWarning, ProfileResult, profile
    from .skipset import SkipSet
    from .stats import DraftStats


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
