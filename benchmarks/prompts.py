"""Spec-Bench prompts for the benchmark: the first turn of each question, by main category."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


#: The six main Spec-Bench categories; "mt_bench" gathers the eight MT-bench categories.
MAIN_CATEGORIES = ("mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag")
#: MT-bench's categories, in the order prompts are drawn from them (one of each in turn).
MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
#: A prompt used to warm every method up; not one of the measured prompts.
WARMUP_PROMPT = "Explain in two sentences why the sky is blue."


# ----------------------------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt: the first turn of a Spec-Bench question.

    Args:
        question_id (`int`): Spec-Bench's id.
        category (`str`): main category (one of `MAIN_CATEGORIES`, MT-bench categories grouped as "mt_bench").
        subcategory (`str`): the question's own category field.
        text (`str`): the first user turn.
    """

    question_id: int
    category: str
    subcategory: str
    text: str


def default_questions_path() -> Path:
    """Spec-Bench's `question.jsonl`: `$SDFP_SPEC_BENCH`, else `shared/data/spec_bench/` beside the repository."""
    env = os.environ.get("SDFP_SPEC_BENCH")
    if env:
        return Path(env)
    relative = Path("shared", "data", "spec_bench", "question.jsonl")
    candidates = [Path.cwd().parent / relative, Path(__file__).resolve().parents[2] / relative]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "Spec-Bench's question.jsonl was not found at "
        + " or ".join(str(c) for c in candidates)
        + ": pass its path with --questions (or set SDFP_SPEC_BENCH)"
    )


def load_prompts(
    path: str | os.PathLike | None = None,
    *,
    per_category: int = 3,
    categories: Sequence[str] = MAIN_CATEGORIES,
) -> list[Prompt]:
    """The first `per_category` questions of each category, interleaved across categories.

    MT-bench questions are drawn from its eight categories in turn (writing, roleplay, ...), so a few
    prompts cover several of them. The list is ordered category by category within each rank
    (first prompt of every category, then the second, ...), so that a slow spell of the machine does not
    fall on one category only.
    """
    if per_category < 1:
        raise ValueError(f"`per_category` must be at least 1, got {per_category}")
    unknown = [c for c in categories if c not in MAIN_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown categories {unknown}: choose from {', '.join(MAIN_CATEGORIES)}")
    path = Path(path) if path is not None else default_questions_path()
    by_subcategory: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                by_subcategory.setdefault(q["category"], []).append(q)

    chosen: dict[str, list[Prompt]] = {}
    for category in categories:
        if category == "mt_bench":
            queues = [list(by_subcategory.get(c, [])) for c in MT_BENCH_CATEGORIES]
            picked = []
            while len(picked) < per_category and any(queues):
                for queue in queues:
                    if queue and len(picked) < per_category:
                        picked.append(queue.pop(0))
        else:
            picked = by_subcategory.get(category, [])[:per_category]
        if len(picked) < per_category:
            raise ValueError(f"{path} has only {len(picked)} questions in category {category!r}, asked for {per_category}")
        chosen[category] = [Prompt(q["question_id"], category, q["category"], q["turns"][0]) for q in picked]
    return [chosen[c][i] for i in range(per_category) for c in categories]


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.LongTensor:
    """Token ids of `text` as a user turn in the model's chat template (plain text if it has none)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    return tokenizer(text, return_tensors="pt").input_ids
