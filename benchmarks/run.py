"""Run the sdfp-hf benchmark harness (`sdfp_hf.benchmark`); results go to benchmarks/results/.

    python benchmarks/run.py --model smollm2-135m --dtype bf16 --per-category 3 --max-new-tokens 128
    python benchmarks/run.py --help
"""

import os
import sys

# Python puts this script's folder first on sys.path, where a benchmark script's name can shadow a
# standard module (a `selectors.py` here breaks `subprocess`, hence torch): drop it.
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

from pathlib import Path  # noqa: E402

from sdfp_hf.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="benchmarks/run.py", default_out_dir=str(Path(__file__).resolve().parent / "results")))
