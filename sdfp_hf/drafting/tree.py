"""A tree of candidate tokens, verified in one forward of the target.

A round's candidates form a tree rooted at the last verified token (which the target has not seen yet):
node 0 is the root, every other node a candidate token whose parent is the token before it. Nodes are kept
in an order where a parent always comes before its children. `CandidateTree.add` merges proposals from
any number of sources (a path of tokens with an estimated acceptance per token), `best` keeps the nodes
most likely to be accepted, and `attention_masks` gives the 4-D masks under which one forward of the
target computes, for every node, exactly the logits of its own path: it sees the verified prefix (within
its sliding window, on sliding-window layers) and its own ancestors, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["CandidateTree", "attention_masks"]


@dataclass
class CandidateTree:
    """Candidate tokens as a tree; node 0 is the root (the last verified token).

    Attributes:
        tokens (`list[int]`): each node's token.
        parents (`list[int]`): each node's parent (-1 for the root); a parent comes before its children.
        depths (`list[int]`): each node's depth (0 for the root).
        chance (`list[float]`): each node's estimated probability of being accepted given its parent was.
        estimates (`list[float]`): the highest estimate any of its sources gave (`chance` unless a caller
            re-estimates nodes that several sources proposed).
        sources (`list[set[str]]`): which sources proposed each node.
    """

    tokens: list[int]
    parents: list[int] = field(default_factory=lambda: [-1])
    depths: list[int] = field(default_factory=lambda: [0])
    chance: list[float] = field(default_factory=lambda: [1.0])
    estimates: list[float] = field(default_factory=lambda: [1.0])
    sources: list[set[str]] = field(default_factory=lambda: [set()])
    children: list[dict[int, int]] = field(default_factory=lambda: [{}])

    @classmethod
    def rooted_at(cls, token: int) -> CandidateTree:
        return cls(tokens=[int(token)])

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, path: Sequence[int], chances: Sequence[float], source: str, parent: int = 0) -> list[int]:
        """Merge a path of candidate tokens below `parent`; each token's chance is the higher of the estimates.

        Returns:
            `list[int]`: the node of each token of the path.
        """
        nodes = []
        for token, chance in zip(path, chances):
            token = int(token)
            node = self.children[parent].get(token)
            if node is None:
                node = len(self.tokens)
                self.tokens.append(token)
                self.parents.append(parent)
                self.depths.append(self.depths[parent] + 1)
                self.chance.append(float(chance))
                self.estimates.append(float(chance))
                self.sources.append({source})
                self.children.append({})
                self.children[parent][token] = node
            else:
                self.estimates[node] = max(self.estimates[node], float(chance))
                self.chance[node] = max(self.chance[node], float(chance))
                self.sources[node].add(source)
            nodes.append(node)
            parent = node
        return nodes

    def reach(self) -> list[float]:
        """Each node's estimated probability of being reached and accepted (the product along its path).

        Siblings are exclusive events (the target takes one token): where the chances of a node's children
        add up to more than one, the likeliest keep theirs and the others share what is left. A confident
        draft's token stays as likely as the draft is; the recycled table's or a lookup's other tokens beside
        it are right only where it is wrong (scaling all of them alike shortened the draft's chains).
        """
        share = list(self.chance)
        for children in self.children:
            left = 1.0
            for child in sorted(children.values(), key=lambda c: -self.chance[c]):
                share[child] = min(self.chance[child], left)
                left -= share[child]
        reach = [1.0] * len(self)
        for node in range(1, len(self)):
            reach[node] = reach[self.parents[node]] * share[node]
        return reach

    def best(self, size: int, max_depth: int | None = None, keep: Sequence[int] = ()) -> tuple[CandidateTree, list[float]]:
        """The `size` nodes (the root aside) most likely to be accepted, as a tree, and their reach.

        A node's reach never exceeds its parent's, so taking nodes best first keeps every kept node's
        ancestors: any prefix of that order is a tree. Nodes in `keep` (a path) are kept in any case.
        """
        reach = self.reach()
        order = sorted(
            (n for n in range(1, len(self)) if max_depth is None or self.depths[n] <= max_depth),
            key=lambda n: (-reach[n], self.depths[n], n),
        )
        chosen = set(order[:size]) | {n for n in keep if max_depth is None or self.depths[n] <= max_depth}
        kept, out = {0: 0}, CandidateTree.rooted_at(self.tokens[0])
        reaches = [1.0]
        for node in sorted(chosen, key=lambda n: (self.depths[n], n)):
            parent = kept.get(self.parents[node])
            if parent is None:  # an ancestor fell outside the cut (ties): leave the node out too
                continue
            (new,) = out.add([self.tokens[node]], [self.chance[node]], "", parent)
            out.sources[new] = set(self.sources[node])
            kept[node] = new
            reaches.append(reach[node])
        return out, reaches

    def sorted_reach(self) -> list[float]:
        """The reach of every node but the root, best first: `1 + sum(first k)` is what the best k yield."""
        return sorted(self.reach()[1:], reverse=True)

    def ancestors(self) -> torch.BoolTensor:
        """`(n, n)`: entry `[i, j]` is True when node `j` is node `i` or one of its ancestors."""
        n = len(self)
        matrix = torch.zeros(n, n, dtype=torch.bool)
        for node in range(n):
            matrix[node, node] = True
            parent = self.parents[node]
            if parent >= 0:
                matrix[node] |= matrix[parent]
        return matrix

    def path(self, node: int) -> list[int]:
        """The tokens from the root's first child down to `node` (empty for the root)."""
        tokens = []
        while node > 0:
            tokens.append(self.tokens[node])
            node = self.parents[node]
        return tokens[::-1]


def attention_masks(
    tree: CandidateTree, cache: Any, layer_types: Sequence[str] | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The 4-D additive masks under which one forward over the tree's nodes computes each node's own path.

    Built from the cache's layers before the forward (their `get_mask_sizes` say which prefix entries a
    layer will show): every node sees the verified prefix (on a sliding-window layer only the part within
    the window of its own position) and its ancestors (there too, only those within the window). Additive
    float (0 or the dtype's minimum), which both SDPA and eager attention read as intended; a boolean mask
    would be wrong under eager attention.

    Returns:
        One mask of shape `(1, 1, nodes, keys)` when every layer is of one kind, else a dict by layer type
        (`"full_attention"`, `"sliding_attention"`) as the models with mixed layers take it.
    """
    n = len(tree)
    depths = torch.tensor(tree.depths, device=device)
    tree_part = tree.ancestors().to(device)
    masks: dict[Any, torch.Tensor] = {}
    by_kind: dict[Any, torch.Tensor] = {}
    for index, layer in enumerate(cache.layers):
        window = getattr(layer, "sliding_window", None) if getattr(layer, "is_sliding", False) else None
        if window not in by_kind:
            length, offset = layer.get_mask_sizes(n)
            seen = layer.get_seq_length()  # tokens before this round: the first node sits at this position
            prefix = torch.arange(offset, offset + length - n, device=device)
            visible = torch.ones(n, length - n, dtype=torch.bool, device=device)
            own = tree_part
            if window is not None:  # the prefix and the ancestors within the window of the node's position
                visible = (seen + depths[:, None]) - prefix[None, :] < window
                own = tree_part & (depths[:, None] - depths[None, :] < window)
            allowed = torch.cat([visible, own], dim=-1)
            mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
            by_kind[window] = mask[None, None]
        kind = layer_types[index] if layer_types is not None else None
        masks.setdefault(kind, by_kind[window])
    if len(by_kind) == 1:
        return next(iter(by_kind.values()))
    if None in masks:
        raise ValueError("the model mixes sliding-window and full layers without `config.layer_types`")
    return masks
