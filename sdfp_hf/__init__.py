"""sdfp-hf: training-free self-speculative decoding for Hugging Face causal LMs.

Build a draft from the target itself by skipping the decoder layers that matter least, and pass it
to `generate` as `assistant_model`:

    draft = SDFPAssistant.from_target(model)
    out = model.generate(**inputs, assistant_model=draft)
"""

from .architectures import UnsupportedModelError, supported_model_types
from .assistant import DraftStats, SDFPAssistant, SkipSet

__version__ = "0.1.0"

__all__ = sorted(["DraftStats", "SDFPAssistant", "SkipSet", "UnsupportedModelError", "supported_model_types"])
