"""Prompt lookup: candidates copied from what followed an earlier occurrence of the last tokens. Free: no forward."""

from __future__ import annotations

import torch

__all__ = ["prompt_lookup"]


def prompt_lookup(
    input_ids: torch.LongTensor, max_ngram: int, min_ngram: int, num_tokens: int
) -> tuple[torch.LongTensor, int] | None:
    """The tokens that followed the most recent earlier occurrence of the sequence's last n-gram.

    Tries n from `max_ngram` down to `min_ngram`; returns up to `num_tokens` tokens of shape `(1, k)` with
    the order n of the match, or None without a match.
    """
    sequence = input_ids[0]
    length = sequence.shape[0]
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        windows = sequence[: length - 1].unfold(0, n, 1)  # every earlier n-gram, the last one excluded
        hits = (windows == sequence[length - n :]).all(dim=1).nonzero()
        if hits.numel():
            start = int(hits[-1]) + n
            return sequence[start : start + num_tokens].unsqueeze(0), n
    return None
