"""Time `SDFPAssistant.from_target(model)` profiling afresh (cache bypassed, no Hub look-up) on a real model.

    python -m benchmarks.profile_time MODEL_FOLDER THREADS [DTYPE]

DTYPE is bf16 (the default) or fp32.
"""

from __future__ import annotations

import sys
import time

import torch
from transformers import AutoModelForCausalLM

from sdfp_hf import SDFPAssistant

from .catalogue import DTYPES


def main() -> None:
    torch.set_num_threads(int(sys.argv[2]))
    dtype = DTYPES[sys.argv[3] if len(sys.argv) > 3 else "bf16"]
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=dtype).eval()
    start = time.perf_counter()
    draft = SDFPAssistant.from_target(model, refresh=True, hub_lookup=False)
    seconds = time.perf_counter() - start
    print(f"from_target(model) in {seconds:.1f} s, {torch.get_num_threads()} threads, {dtype}: {draft.plan.describe()}")


if __name__ == "__main__":
    main()
