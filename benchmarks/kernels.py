"""Which weight-only kernels a draft should use: one token through each of a model's matrix shapes.

    python -m benchmarks.kernels MODEL_FOLDER [THREADS] [--tokens N]

For every distinct linear shape of the model (from its `config.json`: attention, MLP, output head), the time
of one matmul of N rows (default 1, a draft step): the bf16 matmul, the fp32 one (an fp32 target's step),
torch's own weight-only kernels as sdfp-hf calls them (`sdfp_hf.quantize`: int8 per channel, int4 in groups
of 64, bf16 activations) and, where torchao is installed, torchao's CPU weight-only configs on an `nn.Linear`
of the same bf16 weight (`Int8WeightOnlyConfig`, and its CPU int4 path `PrototypeInt4WeightOnlyConfig`).
Median of 7 runs of 50 calls, after a warm-up. Each figure is the time relative to bf16 for that shape; the
last line weighs the shapes by how often a decoder step calls them (the head once, each layer's matrices
once per layer). torchao is not a dependency: install it beside sdfp-hf to include it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sdfp_hf.quantize import Int4Linear, Int8Linear


def shapes(config: dict) -> dict[str, tuple[int, int, int]]:
    """(out_features, in_features, calls per decoder step) of each kind of matrix."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    layers = config["num_hidden_layers"]
    return {
        "q": (heads * head_dim, hidden, layers),
        "k / v": (kv, hidden, 2 * layers),
        "o": (hidden, heads * head_dim, layers),
        "gate / up": (config["intermediate_size"], hidden, 2 * layers),
        "down": (hidden, config["intermediate_size"], layers),
        "head": (config["vocab_size"], hidden, 1),
    }


def median_seconds(fn: Callable[[], object], calls: int = 50) -> float:
    for _ in range(5):
        fn()
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls)
    return sorted(runs)[3]


def torchao_linears(weight: torch.Tensor) -> dict[str, nn.Module]:
    """torchao's CPU weight-only linears of `weight`, those this torchao offers (none without torchao)."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError:
        return {}
    found: dict[str, nn.Module] = {}
    configs: dict[str, object] = {"torchao int8": Int8WeightOnlyConfig()}
    try:
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

        configs["torchao int4 g64"] = PrototypeInt4WeightOnlyConfig(group_size=64, set_inductor_config=False)
    except ImportError:
        pass
    for name, config in configs.items():
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        linear.weight.data.copy_(weight)
        try:
            quantize_(linear, config)
        except (RuntimeError, NotImplementedError, AssertionError, ValueError) as error:
            print(f"  {name}: not available here ({type(error).__name__}: {str(error)[:80]})")
            continue
        found[name] = linear
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model folder holding config.json")
    parser.add_argument("threads", nargs="?", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=1, help="rows of the activation (1: a draft step)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = json.loads((Path(args.model).expanduser() / "config.json").read_text())
    config = config.get("text_config", config)
    try:
        import torchao

        ao = f"torchao {torchao.__version__}"
    except ImportError:
        ao = "torchao not installed"
    print(f"torch {torch.__version__}, {ao}, {args.threads} threads, {args.tokens} row(s), bf16 activations")
    weighted: dict[str, float] = {}
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for kind, (out_features, in_features, calls) in shapes(config).items():
            weight = (torch.randn(out_features, in_features, generator=gen) * 0.02).to(torch.bfloat16)
            x = torch.randn(args.tokens, in_features, generator=gen).to(torch.bfloat16)
            weight32, x32 = weight.float(), x.float()
            kernels: dict[str, Callable[[], object]] = {
                "bf16": lambda: torch.nn.functional.linear(x, weight),
                "fp32": lambda: torch.nn.functional.linear(x32, weight32),  # what an fp32 target's step reads
            }
            for name, module in (("aten int8", Int8Linear(weight)), ("aten int4 g64", Int4Linear(weight, group_size=64))):
                kernels[name] = lambda module=module: module(x)
            for name, module in torchao_linears(weight).items():
                kernels[name] = lambda module=module: module(x)
            times = {name: median_seconds(fn) for name, fn in kernels.items()}
            for name, seconds in times.items():
                weighted[name] = weighted.get(name, 0.0) + seconds * calls
            cells = "  ".join(f"{name} {seconds / times['bf16']:.2f}" for name, seconds in times.items() if name != "bf16")
            print(f"{kind:10s} {out_features:6d} x {in_features:5d}: bf16 {times['bf16'] * 1e6:8.1f} us  {cells}")
    base = weighted["bf16"]
    print("a decoder step's matmuls: bf16 {:.1f} ms  ".format(base * 1e3)
          + "  ".join(f"{name} {seconds / base:.2f}" for name, seconds in weighted.items() if name != "bf16"))


if __name__ == "__main__":
    main()
