"""sdfp-hf: training-free self-speculative decoding for Hugging Face causal LMs.

Build a draft from the target itself by skipping the decoder layers that matter least, and pass it
to `generate` as `assistant_model`:

    draft = SDFPAssistant.from_target(model)
    out = model.generate(**inputs, assistant_model=draft)
"""

__version__ = "0.1.0"

from .architectures import UnsupportedModelError, supported_model_types
from .assistant import DraftStats, SDFPAssistant, SkipSet
from .config import CONFIG_NAME, SDFPConfig, SDFPConfigError
from .hub import SDFPHubError

__all__ = sorted(
    [
        "CONFIG_NAME",
        "DraftStats",
        "SDFPAssistant",
        "SDFPConfig",
        "SDFPConfigError",
        "SDFPHubError",
        "SkipSet",
        "UnsupportedModelError",
        "supported_model_types",
    ]
)
