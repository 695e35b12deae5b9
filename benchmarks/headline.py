"""Print one Markdown table over several benchmark result files (e.g. two models x two dtypes).

    python benchmarks/headline.py benchmarks/results/*.json
"""

import os
import sys

# Python puts this script's folder first on sys.path, where a benchmark script's name can shadow a
# standard module (a `selectors.py` here breaks `subprocess`, hence torch): drop it.
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

import json  # noqa: E402

from sdfp_hf.benchmark import headline_markdown  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/headline.py RESULT.json [RESULT.json ...]")
    results = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            results.append(json.load(f))
    print(headline_markdown(results), end="")
