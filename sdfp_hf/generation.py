"""Deprecated: the drafting code moved to `sdfp_hf.drafting` in sdfp-hf 0.2 (this module goes in 0.3)."""

from ._deprecated import moved

__getattr__ = moved(
    __name__,
    {
        "DraftingOptions": "sdfp_hf.drafting.options",
        "SDFPCandidateGenerator": "sdfp_hf.drafting.chain",
        "install_candidate_generator": "sdfp_hf.drafting.hook",
        "prompt_lookup": "sdfp_hf.drafting.lookup",
    },
)
