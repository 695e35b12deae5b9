"""Run the sdfp-hf benchmark harness (`sdfp_hf.benchmark`); results go to benchmarks/results/.

    python benchmarks/run.py --model smollm2-135m --dtype bf16 --per-category 3 --max-new-tokens 128
    python benchmarks/run.py --help
"""

import sys
from pathlib import Path

from sdfp_hf.benchmark import main

if __name__ == "__main__":
    sys.exit(main(prog="benchmarks/run.py", default_out_dir=str(Path(__file__).resolve().parent / "results")))
