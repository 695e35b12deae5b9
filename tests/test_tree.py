"""Tree verification: one forward over a tree of candidates gives every node its own path's logits, and the
commit leaves the cache as plain decoding would (every architecture, sliding windows crossed)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, prompt, tiny_model
from transformers import DynamicCache

from sdfp_hf._compat import cache_kwargs
from sdfp_hf.cache import commit_tree, prepare_tree_cache
from sdfp_hf.drafting.tree import CandidateTree, attention_masks

pytestmark = pytest.mark.lossless


def random_tree(root: int, seed: int, size: int = 9, vocab: int = 96, deep: bool = False) -> CandidateTree:
    """A random tree; `deep`: mostly one long chain (deeper than the sliding window) with side branches."""
    g = torch.Generator().manual_seed(seed)
    tree = CandidateTree.rooted_at(root)
    while len(tree) < size:
        parent = int(torch.randint(0, len(tree), (1,), generator=g))
        if deep and float(torch.rand((), generator=g)) < 0.8:
            parent = max(range(len(tree)), key=lambda n: tree.depths[n])
        tree.add([int(torch.randint(3, vocab, (1,), generator=g))], [0.5], "test", parent)
    return tree


def verify(model, cache, tree, length):
    masks = attention_masks(tree, cache, getattr(model.config, "layer_types", None), model.dtype, torch.device("cpu"))
    positions = torch.tensor([[length - 1 + d for d in tree.depths]])
    return model(input_ids=torch.tensor([tree.tokens]), position_ids=positions, attention_mask=masks,
                 use_cache=True, **cache_kwargs(model, cache)).logits[0]


@pytest.mark.parametrize(
    "length, size, deep",
    [(5, 9, False), (20, 9, False), (5, 16, True)],  # before and past the tiny models' sliding window (8);
)  # a tree deeper than the window
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_node_gets_its_own_paths_logits_and_the_commit_is_plain_decoding(arch, length, size, deep):
    model = tiny_model(arch)
    ids = prompt(length, seed=1)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:, :-1], use_cache=True, **cache_kwargs(model, cache))
        prepare_tree_cache(cache)
        tree = random_tree(int(ids[0, -1]), seed=length, size=size, deep=deep)
        assert not deep or max(tree.depths) > 8
        logits = verify(model, cache, tree, length)
        for node in range(len(tree)):
            sequence = torch.cat([ids, torch.tensor([tree.path(node)], dtype=torch.long)], dim=1)
            expected = model(input_ids=sequence).logits[0, -1]
            torch.testing.assert_close(logits[node], expected, rtol=1e-4, atol=1e-4)
        # keep the deepest path; the next step must see exactly plain decoding's cache
        deepest = max(range(len(tree)), key=lambda n: tree.depths[n])
        keep = [0]
        node = deepest
        while node > 0:
            keep.insert(1, node)
            node = tree.parents[node]
        commit_tree(cache, len(tree), keep)
        sequence = torch.cat([ids, torch.tensor([tree.path(deepest)], dtype=torch.long)], dim=1)
        assert cache.get_seq_length() == sequence.shape[1]
        plain = DynamicCache(config=model.config)
        model(input_ids=sequence, use_cache=True, **cache_kwargs(model, plain))
        for ours, theirs in zip(cache.layers, plain.layers):
            torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ours.values, theirs.values, rtol=1e-4, atol=1e-5)
        nxt = torch.tensor([[7]])
        ours = model(input_ids=nxt, use_cache=True, **cache_kwargs(model, cache)).logits[0, -1]
        theirs = model(input_ids=nxt, use_cache=True, **cache_kwargs(model, plain)).logits[0, -1]
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_best_keeps_a_tree_of_the_likeliest_nodes():
    tree = CandidateTree.rooted_at(5)
    tree.add([10, 11, 12], [0.9, 0.9, 0.9], "a")
    tree.add([20, 21], [0.3, 0.9], "b")
    tree.add([10, 30], [0.5, 0.2], "c")  # merges with the first path's first node, keeps its higher chance
    assert tree.chance[1] == 0.9 and tree.sources[1] == {"a", "c"}
    # siblings whose chances add up to more than one: the likeliest keep theirs, the others share what is
    # left. The root's children (0.9 + 0.3): 10 reaches 0.9, 20 only 0.1; 10's children (0.9 + 0.2): 11
    # reaches 0.9 * 0.9, 30 0.9 * 0.1; 12 0.9 ** 3
    best, reach = tree.best(3)
    assert best.tokens == [5, 10, 11, 12] and best.parents == [-1, 0, 1, 2]
    assert reach == pytest.approx([1.0, 0.9, 0.81, 0.729])
    assert tree.reach()[4:] == pytest.approx([0.1, 0.09, 0.09])  # 20, 21, 30
    assert tree.best(4)[0].tokens == [5, 10, 20, 11, 12]  # parents before children, best first within a depth
    # the root's children add up to more than one: they sum to one
    assert abs(sum(tree.reach()[n] for n in tree.children[0].values()) - 1.0) < 1e-9
