"""sdfp-hf: training-free self-speculative decoding for Hugging Face causal LMs.

Build a draft from the target itself by skipping the decoder layers that matter least, and pass it
to `generate` as `assistant_model`:

    draft = SDFPAssistant.from_target(model)
    out = model.generate(**inputs, assistant_model=draft)

The names below are imported on first use, so that `import sdfp_hf.cli` (and `sdfp --help`) does not
load torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CONFIG_NAME": "config",
    "DraftStats": "assistant",
    "SDFPAssistant": "assistant",
    "SDFPConfig": "config",
    "SDFPConfigError": "config",
    "SDFPHubError": "hub",
    "SkipSet": "assistant",
    "UnsupportedModelError": "architectures",
    "supported_model_types": "architectures",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .architectures import UnsupportedModelError, supported_model_types
    from .assistant import DraftStats, SDFPAssistant, SkipSet
    from .config import CONFIG_NAME, SDFPConfig, SDFPConfigError
    from .hub import SDFPHubError


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
