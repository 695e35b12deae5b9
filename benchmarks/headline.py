"""Print one Markdown table over several benchmark result files (e.g. two models x two dtypes).

    python benchmarks/headline.py benchmarks/results/*.json
"""

import sys
import json

from sdfp_hf.benchmark import headline_markdown

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/headline.py RESULT.json [RESULT.json ...]")
    results = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            results.append(json.load(f))
    print(headline_markdown(results), end="")
