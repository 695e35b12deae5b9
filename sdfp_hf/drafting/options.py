"""`DraftingOptions`: how a draft proposes candidates each round (runtime options, not part of its mask)."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["DraftingOptions"]

# The least value of each integer option (0 where 0 disables what it sizes).
_MINIMUM = {"prompt_lookup": 0, "recycled_tokens": 0, "suffix_memory": 0}


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
        tree_draft_tokens (`int`, defaults to 8): most draft tokens a tree round drafts. The planner picks
            each round's depth below it from the measured draft step, acceptance and verification cost curve,
            and stops a chain once its next token no longer pays; the generation config's
            `num_assistant_tokens` sets only the chain rounds' length. Why not the profiler's recommended
            length: on Qwen2.5-Coder-1.5B fp32 (an AVX2 CPU) a uniform-int4 draft ran at 1.02x capped at its
            3 tokens and 1.30x capped at 8 on the same prompt
            (benchmarks/results/avx2-machine/round_log_qwen2.5-coder-1.5b_fp32.txt): short chains do not pay
            for their verification where width is costly.
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
    tree_draft_tokens: int = 8
    recycled_tokens: int = 8
    suffix_memory: int = 65536

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"DraftingOptions.{field.name} must be True or False, got {value!r}")
                continue
            minimum = _MINIMUM.get(field.name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"DraftingOptions.{field.name} must be an integer >= {minimum}, got {value!r}")
