"""`DraftingOptions`: how a draft proposes candidates each round (runtime options, not part of its mask)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DraftingOptions"]


@dataclass
class DraftingOptions:
    """How `SDFPCandidateGenerator` proposes tokens (runtime options of a draft, not part of its mask).

    Args:
        prompt_lookup (`int`, defaults to 3):
            Look for the last `prompt_lookup` .. `lookup_min_ngram` tokens earlier in the context and, on a
            match, propose what followed them (prompt lookup: free, no draft forward). With `adaptive`,
            each round takes whichever of lookup and draft is predicted to yield more tokens per second.
            0 disables it.
        lookup_min_ngram (`int`, defaults to 1): shortest n-gram that counts as a match.
        lookup_tokens (`int`, defaults to 10): most tokens proposed from a lookup match.
        adaptive (`bool`, defaults to `True`):
            Choose each round's source and length from measured acceptance (of the draft and of lookup
            matches of each n-gram order) and measured times (a draft step, a verification step and what
            each extra verified token adds), proposing nothing when that does not pay (with a one-token
            draft probe every `probe_every` rounds to notice when drafting pays again). Replaces the
            draft length schedule. Without it: lookup when it matches, else a draft of the generation
            config's length.
        probe_every (`int`, defaults to 32).
        extend_drafts (`bool`, defaults to `False`): with `adaptive` and `prompt_lookup`, append to a draft
            chain what followed its last tokens earlier in the context, when the planner predicts it pays.
            Off by default: it did not win on the benchmark (SmolLM2-135M bf16, 5 Spec-Bench prompts per
            category, 128 tokens: 1.57x with it, 1.66x without; benchmarks/results/).
        tree (`bool`, defaults to `True`): with `adaptive`, verify a tree of candidates per round in one
            forward (sdfp-hf's own decoding loop; see `sdfp_hf.drafting.loop`); the chain round inside
            transformers' loop otherwise, and wherever the tree loop cannot run (flash attention, output
            options such as `output_scores`; said once).
        tree_nodes (`int`, defaults to 32): most candidates a tree holds (the planner keeps fewer when
            verification width is not free).
        tree_draft (`bool`, defaults to `True`): let the draft's chain and its runners-up into the tree,
            when the planner predicts the draft's steps pay.
        recycled_tokens (`int`, defaults to 8): successors per token in the recycled-token table (each
            token's top-k next tokens from the target's own verification logits); 0 disables it.
        suffix_memory (`int`, defaults to 65536): tokens of earlier outputs kept on the draft, across
            `generate` calls, as a source of candidates (agentic and chat loops repeat themselves); 0
            disables it. `draft.clear_memory()` forgets them.
    """

    prompt_lookup: int = 3
    lookup_min_ngram: int = 1
    lookup_tokens: int = 10
    adaptive: bool = True
    probe_every: int = 32
    extend_drafts: bool = False
    tree: bool = True
    tree_nodes: int = 32
    tree_draft: bool = True
    recycled_tokens: int = 8
    suffix_memory: int = 65536
