"""What the benchmark programs here share: printing a Markdown report and writing it beside its JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(out: Path | None, result: dict[str, Any], lines: list[str]) -> None:
    """Print the report made of `lines`; with `out`, also write `OUT.md` and `OUT.json` (`result`)."""
    report = "\n".join(lines) + "\n"
    print(report)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        # with_name, not with_suffix: model names hold dots ("qwen2.5-coder-1.5b")
        out.with_name(out.name + ".json").write_text(json.dumps(result, indent=1) + "\n")
        out.with_name(out.name + ".md").write_text(report)
