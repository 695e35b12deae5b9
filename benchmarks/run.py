"""Run the sdfp-hf benchmark harness (`benchmarks.harness`); results go to benchmarks/results/.

    python -m benchmarks.run --model smollm2-135m --dtype bf16 --per-category 3 --max-new-tokens 128
    python -m benchmarks.run --help
"""

import sys
from pathlib import Path

from benchmarks.harness import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.run", default_out_dir=str(Path(__file__).resolve().parent / "results")))
