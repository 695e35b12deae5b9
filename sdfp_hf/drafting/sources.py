"""Where a tree round's candidates come from: all training-free, all built from what the target has seen.

- `NgramIndex`: every earlier occurrence of the context's last n tokens (the longest n that occurs), the
  continuations merged into branches (prompt lookup generalised: not only the most recent occurrence).
  The same index over this draft's earlier outputs is the suffix memory across `generate` calls.
- `RecycledTable`: for each token, the target's top-k next tokens from its own verification logits, the
  rejected nodes' included (Token Recycling's adjacency table); bounded by the vocabulary.
- `draft_proposals`: the draft's greedy chain and, at each depth, its next most likely tokens (siblings that
  cost no extra draft step).

Every node carries a calibration key (`source:bucket`); `Calibration` learns, per key, how often a node is
accepted given its parent was, from every verified node whose parent was accepted. A node that several
sources proposed is learned and estimated under its own key (`agree:` and the sources' names): where
sources agree they are right more often than either alone, and crediting each source with those hits made
it look better than it is where it stands alone (the free candidates were expected 1.3x as often accepted
as they were: `benchmarks/tree_calibration.py`).
Candidates are deterministic functions of the context and of earlier rounds, so one draw from the target
per visited node keeps sampling exact.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..cache import DraftCache
from .tree import CandidateTree

__all__ = ["Calibration", "NgramIndex", "RecycledTable", "calibration_keys", "draft_proposals", "estimate_agreements"]


class Calibration:
    """Per key, the exponentially weighted rate at which a node is accepted given its parent was."""

    def __init__(self, decay: float = 0.98, pseudo_count: float = 2.0):
        self.decay, self.pseudo_count = decay, pseudo_count
        self.hits: dict[str, float] = {}
        self.weight: dict[str, float] = {}

    def chance(self, key: str, prior: float) -> float:
        hits, weight = self.hits.get(key, 0.0), self.weight.get(key, 0.0)
        return min((hits + prior * self.pseudo_count) / (weight + self.pseudo_count), 0.99)

    def record(self, key: str, hit: float) -> None:
        self.hits[key] = self.decay * self.hits.get(key, 0.0) + hit
        self.weight[key] = self.decay * self.weight.get(key, 0.0) + 1.0


def _agreement_key(keys: set[str]) -> str | None:
    if len(keys) < 2:  # most nodes: one source, no agreement (every round, for every node)
        return None
    names = sorted({key.split(":")[0] for key in keys})
    return "agree:" + "+".join(names) if len(names) > 1 else None


def calibration_keys(keys: set[str]) -> list[str]:
    """The keys a verified node is learned under: its sources' own, or one for the agreement of several."""
    agreement = _agreement_key(keys)
    return [agreement] if agreement else sorted(keys)


def estimate_agreements(tree: CandidateTree, calibration: Calibration) -> None:
    """Give every node that several sources proposed the chance learned for their agreement (before any is
    learned: the highest of their estimates)."""
    for node in range(1, len(tree)):
        agreement = _agreement_key(tree.sources[node])
        if agreement:
            tree.chance[node] = calibration.chance(agreement, prior=tree.estimates[node])


def _share_bin(share: float) -> int:
    return min(int(share * 4), 3)


class NgramIndex:
    """An incremental index of a token sequence's n-grams, for continuations of earlier occurrences.

    Args:
        max_ngram, min_ngram (`int`): the orders tried, longest first.
        max_tokens (`int`, *optional*): keep only the last this many tokens (a bounded memory); None: all.
        name (`str`): the source's name in calibration keys and statistics.
    """

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1, max_tokens: int | None = None, name: str = "lookup"):
        self.max_ngram, self.min_ngram, self.max_tokens, self.name = max_ngram, min_ngram, max_tokens, name
        self.tokens: list[int] = []
        self.offset = 0  # tokens dropped from the front (bounded memory)
        self.index: dict[tuple[int, ...], deque[int]] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens and index the n-grams that end at each."""
        for token in tokens:
            self._append(int(token))
        if self.max_tokens is not None and len(self.tokens) > self.max_tokens:
            # keep the newer half, re-indexed at its positions (amortised: once per max_tokens / 2 tokens)
            keep = self.tokens[-(self.max_tokens // 2) :]
            self.offset += len(self.tokens) - len(keep)
            self.tokens, self.index = [], {}
            for token in keep:
                self._append(token)

    def _append(self, token: int) -> None:
        self.tokens.append(token)
        end = self.offset + len(self.tokens)
        for n in range(self.min_ngram, min(self.max_ngram, len(self.tokens)) + 1):
            self.index.setdefault(tuple(self.tokens[-n:]), deque(maxlen=32)).append(end)

    def clear(self) -> None:
        """Forget every token."""
        self.tokens, self.offset, self.index = [], 0, {}

    def propose(
        self,
        tree: CandidateTree,
        suffix: Sequence[int],
        calibration: Calibration,
        *,
        length: int = 8,
        occurrences: int = 8,
        exclude_end: bool = False,
        parent: int = 0,
    ) -> None:
        """Add below `parent` (the root by default) the continuations of the most recent occurrences of
        `suffix`'s last tokens.

        Args:
            suffix: the last tokens of the context up to `parent` (`parent`'s own token last).
            exclude_end: the occurrence that ends at the index's end is the suffix itself (the context's own
                index): leave it out.
        """
        end_now = self.offset + len(self.tokens)
        for n in range(min(self.max_ngram, len(suffix)), self.min_ngram - 1, -1):
            ends = [e for e in self.index.get(tuple(suffix[-n:]), ()) if not (exclude_end and e == end_now)]
            ends = [e for e in ends if e - self.offset < len(self.tokens)][-occurrences:]
            if ends:
                break
        else:
            return
        trie: dict[tuple[int, ...], int] = {}
        for e in ends:
            start = e - self.offset
            continuation = tuple(itertools.takewhile(lambda t: t >= 0, self.tokens[start : start + length]))
            for i in range(1, len(continuation) + 1):
                trie[continuation[:i]] = trie.get(continuation[:i], 0) + 1
        total = len(ends)
        for path, count in sorted(trie.items(), key=lambda kv: len(kv[0])):
            parent_count = trie[path[:-1]] if len(path) > 1 else total
            share = count / parent_count
            key = f"{self.name}:{n}:{_share_bin(share)}"
            chance = calibration.chance(key, prior=0.5 * share)
            node = parent
            for token in path[:-1]:
                node = tree.children[node][token]
            tree.add([path[-1]], [chance], key, node)


class RecycledTable:
    """For each token, the target's top-k next tokens, from the logits the target computed after it.

    Args:
        vocab_size (`int`): rows of the table (the logits' width).
        k (`int`): successors kept per token.
    """

    def __init__(self, vocab_size: int, k: int = 8):
        self.k = min(k, vocab_size)
        self.successors = torch.zeros((vocab_size, self.k), dtype=torch.int32)
        self.filled = torch.zeros(vocab_size, dtype=torch.bool)

    @property
    def nbytes(self) -> int:
        return self.successors.numel() * 4 + self.filled.numel()

    def update(self, tokens: Sequence[int], logits: torch.Tensor, last: Sequence[int] = ()) -> None:
        """Record each of `tokens`' top-k successors from its row of `logits`; the rows in `last` are written
        last (the accepted path: the real context wins over a rejected branch of the same token)."""
        top = logits.topk(self.k, dim=-1).indices.to("cpu", torch.int32)
        written_last = set(last)
        order = [i for i in range(len(tokens)) if i not in written_last] + list(last)
        index = torch.tensor([tokens[i] for i in order], dtype=torch.long)
        self.successors[index] = top[order]
        self.filled[index] = True

    def propose(self, tree: CandidateTree, calibration: Calibration, *, max_nodes: int = 32, max_depth: int = 6) -> None:
        """Grow the tree best first from its root along recorded successors (at most `max_nodes` nodes)."""
        frontier = [(1.0, 0)]  # (reach, node)
        added = 0
        while frontier and added < max_nodes:
            frontier.sort()
            reach, node = frontier.pop()
            token = tree.tokens[node]
            if tree.depths[node] >= max_depth or not self.filled[token]:
                continue
            for rank, successor in enumerate(self.successors[token].tolist()):
                key = f"table:{rank}"
                chance = calibration.chance(key, prior=0.35 / (rank + 1))
                (child,) = tree.add([successor], [chance], key, node)
                frontier.append((reach * chance, child))
                added += 1
                if added >= max_nodes:
                    break


def draft_proposals(
    draft: Any,
    tree: CandidateTree,
    target_cache: Any,
    length: int,
    depth: int,
    calibration: Calibration,
    *,
    siblings: int = 2,
    keep_going: Callable[[int, float], bool] | None = None,
) -> list[int]:
    """Add the draft's greedy chain of at most `depth` tokens below the root, with `siblings` runners-up at
    each depth; after each step `keep_going(node, reach)` (the chain's last node and its estimated reach, the
    product of the chain's calibrated chances) says whether one more step pays: the chain stops where it
    says no.

    The draft reads the target's cache for the verified prefix (`DraftCache`), as in chain rounds. Its
    candidates are its most likely tokens (no sampling), so they are a function of the context.

    Returns:
        `list[int]`: the chain's nodes.
    """
    cache = DraftCache(target_cache, draft.cache_layer_map)
    node, token, chain, reach = 0, tree.tokens[0], [], 1.0
    device = draft.get_input_embeddings().weight.device
    for step in range(depth):
        logits = draft.draft_logits(
            torch.tensor([[token]], device=device), torch.tensor([[length - 1 + step]], device=device), cache
        )
        probs = logits.softmax(-1)[0]
        top = probs.topk(1 + siblings)
        values, ids = top.values.tolist(), top.indices.tolist()  # one host read a step: the early stop needs it
        for rank in range(1, len(ids)):
            key = f"draft-sibling:{min(int(values[rank] * 10), 9)}"
            tree.add([ids[rank]], [calibration.chance(key, prior=values[rank])], key, node)
        key = f"draft:{min(int(values[0] * 10), 9)}"
        chance = calibration.chance(key, prior=values[0])
        (node,) = tree.add([ids[0]], [chance], key, node)
        chain.append(node)
        token = ids[0]
        reach *= chance
        if keep_going is not None and not keep_going(node, reach):
            break
    return chain
