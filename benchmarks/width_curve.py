"""The cost of verification width on this machine: one target forward over n new tokens against one token.

    python -m benchmarks.width_curve MODEL_FOLDER [THREADS] [DTYPE]

For n = 2..32 after a 300-token prefix, in bf16: a causal block of n tokens keeping the last logits, a tree
of n nodes (one chain, 4-D tree mask, every node's logits: what a tree round runs), and a causal block keeping
every logit. DTYPE is bf16 (the default) or fp32. Median of 5 after a warm-up; each figure is T(n) / T(1).
"""

from __future__ import annotations

import sys
import time

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from sdfp_hf._compat import cache_kwargs
from sdfp_hf.cache import prepare_tree_cache
from sdfp_hf.drafting.tree import CandidateTree, attention_masks

from .catalogue import DTYPES


def main() -> None:
    path = sys.argv[1]
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    dtype = DTYPES[sys.argv[3] if len(sys.argv) > 3 else "bf16"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    ids = torch.randint(100, 20000, (1, 300))

    def timed(n: int, tree_mask: bool, keep: int, repeats: int = 5) -> float:
        times = []
        for r in range(repeats + 1):
            cache = DynamicCache(config=model.config)
            with torch.no_grad():
                model(input_ids=ids, use_cache=True, logits_to_keep=1, **cache_kwargs(model, cache))
                prepare_tree_cache(cache)
                tree = CandidateTree.rooted_at(5)
                tree.add(list(range(10, 10 + n - 1)), [0.5] * (n - 1), "chain")
                extra = {}
                if tree_mask:
                    extra["attention_mask"] = attention_masks(tree, cache, None, dtype, torch.device("cpu"))
                    extra["position_ids"] = torch.tensor([[ids.shape[1] - 1 + d for d in tree.depths]])
                start = time.perf_counter()
                model(input_ids=torch.tensor([tree.tokens]), use_cache=True, logits_to_keep=keep,
                      **cache_kwargs(model, cache), **extra)
                if r:
                    times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    base = timed(1, False, 1)
    print(f"T(1) = {base * 1000:.1f} ms ({torch.get_num_threads()} threads, {dtype})")
    for n in (2, 4, 8, 16, 32):
        print(n, "causal keep1 %.2f" % (timed(n, False, 1) / base), "tree keep0 %.2f" % (timed(n, True, 0) / base),
              "causal keep0 %.2f" % (timed(n, False, 0) / base), flush=True)


if __name__ == "__main__":
    main()
