"""How a draft proposes candidates each round, and how `generate` comes to use it.

- `options.py`: `DraftingOptions`, the runtime options of a draft;
- `protocol.py`: `SelfDraft`, what the round needs of a draft;
- `lookup.py`: prompt lookup, a free source of candidates;
- `planner.py`: the round planner (source and length from measured acceptance and costs);
- `chain.py`: `SDFPCandidateGenerator`, the chain round inside transformers' assisted loop;
- `hook.py`: `install_candidate_generator`, the hook on the target that makes `generate` use it.
"""

from .chain import SDFPCandidateGenerator
from .hook import install_candidate_generator
from .lookup import prompt_lookup
from .options import DraftingOptions
from .protocol import SelfDraft

__all__ = ["DraftingOptions", "SDFPCandidateGenerator", "SelfDraft", "install_candidate_generator", "prompt_lookup"]
