"""Print one Markdown table over several benchmark result files (e.g. two models x two dtypes).

    python -m benchmarks.headline benchmarks/results/*.json
"""

import json
import sys

from benchmarks.report import headline_markdown

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m benchmarks.headline RESULT.json [RESULT.json ...]")
    results = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            results.append(json.load(f))
    print(headline_markdown(results), end="")
