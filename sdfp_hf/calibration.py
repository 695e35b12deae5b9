"""Calibration sources: what the profiler feeds the target to score its layers.

`build_calibration` turns any of these into a bounded batch of token ids:

- nothing (``None``, the default): **data-free**. The target writes its own calibration text, sampling
  continuations of a short generic start: the chat template's assistant header when a tokenizer with a
  chat template is given, otherwise the beginning-of-sequence token. The draft has to imitate exactly
  this distribution, the target's own output, so no tokenizer or dataset is needed.
- a list of texts (needs the tokenizer): packed raw text, or, with ``chat_template=True``, each text as a
  user turn in the model's chat format, answered by the target itself (``respond=True``, the default
  with a chat template) so that the scored tokens are the model's own responses.
- token ids: a 2-D tensor or a list of lists, used as they are.
- a `datasets.Dataset`: its ``text_column``, as a list of texts.

Everything is bounded by ``num_sequences`` and ``sequence_length`` (for text the target writes, the tokens
it writes after its start or prompt; prompts are cut to their last 192 tokens), seeded and deterministic:
the same arguments give the same tokens, and the global random state is left as it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ._files import expand_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["CalibrationData", "build_calibration", "dataset_texts", "generate_continuations", "texts_from_file"]

logger = logging.getLogger(__name__)

# 16 short sequences: as many scored tokens as 8 of 128, cheaper to write (half the decoding steps) and more
# independent; measured on SmolLM2-135M, the selection then varies less from seed to seed.
DEFAULT_NUM_SEQUENCES = 16
DEFAULT_SEQUENCE_LENGTH = 64
MAX_PROMPT_TOKENS = 192
DEFAULT_TEMPERATURE = 1.0

_PLACEHOLDER = "\x00sdfp-calibration\x00"


@dataclass
class CalibrationData:
    """Token ids to profile a model on, right-padded, with what each position counts for.

    Args:
        input_ids (`torch.LongTensor` of shape `(num_sequences, length)`):
            The tokens, right-padded with `pad_token_id`.
        attention_mask (`torch.LongTensor` of shape `(num_sequences, length)`):
            1 for real tokens, 0 for padding.
        loss_mask (`torch.BoolTensor` of shape `(num_sequences, length)`):
            True at the positions whose next-token prediction is scored: the prediction made at position
            `t` is of token `t + 1`. For text the model wrote itself, only its own tokens are scored.
        prompt_lengths (`list[int]`):
            Per sequence, the number of leading tokens that were given (not written by the target).
        provenance (`dict`):
            Where the tokens came from: `source`, `num_sequences`, `num_tokens` (scored positions),
            `sequence_length`, `seed` and, when the target wrote the text, `temperature`.
    """

    input_ids: torch.LongTensor
    attention_mask: torch.LongTensor
    loss_mask: torch.BoolTensor
    prompt_lengths: list[int]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_sequences(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        """Number of scored positions (next-token predictions)."""
        return int(self.loss_mask.sum())

    def lengths(self) -> list[int]:
        """Real (unpadded) length of each sequence."""
        return [int(n) for n in self.attention_mask.sum(dim=1)]

    def sequences(self) -> list[torch.LongTensor]:
        """The unpadded sequences, as 1-D tensors."""
        return [row[:n] for row, n in zip(self.input_ids, self.lengths())]

    def batches(self, batch_size: int) -> list[CalibrationData]:
        """Consecutive slices of at most `batch_size` sequences, each trimmed of all-padding columns."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        out = []
        for start in range(0, self.num_sequences, batch_size):
            sl = slice(start, start + batch_size)
            width = int(self.attention_mask[sl].sum(dim=1).max())
            out.append(
                CalibrationData(
                    self.input_ids[sl, :width],
                    self.attention_mask[sl, :width],
                    self.loss_mask[sl, :width],
                    self.prompt_lengths[sl],
                    self.provenance,
                )
            )
        return out

    def to(self, device: torch.device | str) -> CalibrationData:
        return CalibrationData(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.loss_mask.to(device),
            list(self.prompt_lengths),
            self.provenance,
        )


def _first_token_id(candidates: Iterable[tuple[Any, str]]) -> int:
    """The first `(config, attribute)` that holds a token id (the first of a list), else 0."""
    for source, name in candidates:
        value = getattr(source, name, None)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def _pad_token_id(model: PreTrainedModel) -> int:
    sources = (model.generation_config, model.config)
    return _first_token_id((s, n) for s in sources for n in ("pad_token_id", "eos_token_id", "bos_token_id"))


def _start_token_id(model: PreTrainedModel) -> int:
    """The token a document starts with: BOS, else EOS (a document separator for GPT-style models), else 0."""
    sources = (model.generation_config, model.config)
    return _first_token_id((s, n) for n in ("bos_token_id", "eos_token_id") for s in sources)


def _collate(
    rows: Sequence[torch.Tensor], prompt_lengths: Sequence[int], pad_id: int, score_prompt: bool
) -> tuple[torch.LongTensor, torch.LongTensor, torch.BoolTensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, p) in enumerate(zip(rows, prompt_lengths)):
        n = len(row)
        input_ids[i, :n] = row
        attention_mask[i, :n] = 1
        # the prediction at t is of token t + 1: the last real position predicts nothing
        first = 0 if score_prompt else max(p - 1, 0)
        loss_mask[i, first : n - 1] = True
    return input_ids, attention_mask, loss_mask


@torch.no_grad()
def generate_continuations(
    model: PreTrainedModel,
    prompts: Sequence[torch.Tensor],
    max_new_tokens: int,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    sampled_tokens: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    stop_at_eos: bool = True,
) -> list[torch.LongTensor]:
    """Let the target continue each prompt: sampled at `temperature`, or greedy when it is 0.

    With `sampled_tokens`, the first that many new tokens are sampled at temperature 1 and the rest are
    written at `temperature`: a diverse opening, then the model's own (e.g. greedy) continuation of it.

    Prompts are batched with left padding; the global random state is restored afterwards, and the
    same `seed` gives the same continuations.

    Args:
        model (`PreTrainedModel`): the target.
        prompts (`list[torch.LongTensor]`): 1-D token id tensors.
        max_new_tokens (`int`): tokens to write after each prompt (fewer when it ends at EOS).
        temperature (`float`, *optional*, defaults to 1.0): sampling temperature; 0 for greedy.
        sampled_tokens (`int`, *optional*): sample this many opening tokens at temperature 1 first.
        seed (`int`, *optional*, defaults to 0): seed of the sampling.
        batch_size (`int`, *optional*, defaults to 8): prompts generated together.
        stop_at_eos (`bool`, *optional*, defaults to `True`): stop a sequence at its end-of-sequence token.

    Returns:
        `list[torch.LongTensor]`: each prompt followed by its continuation (1-D, unpadded).
    """
    if max_new_tokens < 1:
        return [p.clone() for p in prompts]
    if sampled_tokens and temperature != 1.0:
        opening = min(sampled_tokens, max_new_tokens)
        opened = generate_continuations(
            model, prompts, opening, temperature=1.0, seed=seed, batch_size=batch_size, stop_at_eos=stop_at_eos
        )
        eos = model.generation_config.eos_token_id
        eos_ids = set() if eos is None or not stop_at_eos else ({eos} if isinstance(eos, int) else set(eos))
        done = [len(o) < len(p) + opening or int(o[-1]) in eos_ids for o, p in zip(opened, prompts)]
        todo = [i for i, d in enumerate(done) if not d]
        rest = generate_continuations(
            model, [opened[i] for i in todo], max_new_tokens - opening, temperature=temperature, seed=seed + 1,
            batch_size=batch_size, stop_at_eos=stop_at_eos,
        ) if todo and max_new_tokens > opening else [opened[i] for i in todo]
        out = list(opened)
        for i, r in zip(todo, rest):
            out[i] = r
        return out
    pad_id = _pad_token_id(model)
    device = model.get_input_embeddings().weight.device
    eos = model.generation_config.eos_token_id if stop_at_eos else None
    sample = temperature > 0
    out: list[torch.LongTensor] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, p in enumerate(chunk):
                ids[i, width - len(p) :] = p
                mask[i, width - len(p) :] = 1
            kwargs: dict[str, Any] = dict(
                max_new_tokens=max_new_tokens,
                min_new_tokens=0 if stop_at_eos else max_new_tokens,
                do_sample=sample,
                pad_token_id=pad_id,
                eos_token_id=eos,
            )
            if sample:
                kwargs.update(temperature=float(temperature), top_k=0, top_p=1.0)
            else:
                kwargs.update(temperature=None, top_k=None, top_p=None)
            generated = model.generate(ids.to(device), attention_mask=mask.to(device), **kwargs).cpu()
            for i, p in enumerate(chunk):
                new = generated[i, width:]
                keep = len(new)
                if eos is not None:
                    eos_ids = torch.tensor([eos] if isinstance(eos, int) else list(eos))
                    hits = torch.isin(new, eos_ids).nonzero()
                    if len(hits):
                        keep = int(hits[0]) + 1
                out.append(torch.cat([p.cpu(), new[:keep]]))
    return out


def _chat_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding in recent transformers
        ids = ids["input_ids"]
    return list(ids)


def _has_chat_template(tokenizer: PreTrainedTokenizerBase | None) -> bool:
    return tokenizer is not None and getattr(tokenizer, "chat_template", None) is not None


def build_calibration(
    model: PreTrainedModel,
    source: Any = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    num_sequences: int = DEFAULT_NUM_SEQUENCES,
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    chat_template: bool | None = None,
    respond: bool | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    sampled_tokens: int | None = None,
    text_column: str = "text",
    seed: int = 0,
) -> CalibrationData:
    """Turn a calibration source into bounded batches of token ids for the profiler.

    Args:
        model (`PreTrainedModel`):
            The target. It writes the calibration text in data-free mode and the responses when
            `respond` is set.
        source (`None`, `list[str]`, `torch.LongTensor`, `list[list[int]]` or `datasets.Dataset`, *optional*):
            What to calibrate on; `None` for data-free calibration (see the module docstring).
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Needed for texts and datasets; in data-free mode, its chat template (if any) gives the start.
        num_sequences (`int`, *optional*, defaults to 8):
            Number of sequences.
        sequence_length (`int`, *optional*, defaults to 64):
            Tokens per sequence: for packed text and token ids, the length of each sequence; for text the
            target writes (data-free, or responses to prompts), how many tokens it writes after the start
            or the prompt (which is cut to its last 192 tokens).
        chat_template (`bool`, *optional*):
            Wrap each text as a user turn of the tokenizer's chat template. Defaults to `False` for texts
            and datasets (raw text is packed into full sequences), and in data-free mode to whether the
            tokenizer has a chat template (its assistant header is then the start).
        respond (`bool`, *optional*):
            Let the target write a response of up to `sequence_length` tokens after each prompt and score
            only its own tokens. Defaults to `True` with a chat template, `False` otherwise.
        temperature (`float`, *optional*, defaults to 1.0):
            Sampling temperature of the text the target writes (0 for greedy).
        sampled_tokens (`int`, *optional*):
            With a `temperature` other than 1, sample this many opening tokens of each text the target
            writes at temperature 1 first, so that greedy (temperature 0) continuations still differ.
        text_column (`str`, *optional*, defaults to `"text"`):
            Column of a `datasets.Dataset` that holds the text.
        seed (`int`, *optional*, defaults to 0):
            Seed of everything random here (which texts are used is not random: the first ones are).

    Returns:
        [`CalibrationData`]
    """
    if isinstance(num_sequences, bool) or not isinstance(num_sequences, int) or num_sequences < 1:
        raise ValueError(f"num_sequences must be a positive integer, got {num_sequences!r}")
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or sequence_length < 2:
        raise ValueError(f"sequence_length must be an integer of at least 2, got {sequence_length!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a non-negative number (0 for greedy), got {temperature!r}")
    pad_id = _pad_token_id(model)

    if source is None:
        return _data_free(
            model, tokenizer, num_sequences, sequence_length, chat_template, temperature, sampled_tokens, seed
        )

    kind = _source_kind(source)
    if kind == "tokens":
        rows = [torch.as_tensor(r, dtype=torch.long).flatten()[:sequence_length] for r in _token_rows(source)]
        rows = [r for r in rows if len(r) >= 2][:num_sequences]
        if not rows:
            raise ValueError("the calibration token ids hold no sequence of at least 2 tokens")
        provenance_source = "token_ids"
        use_chat = False
        texts = None
    else:
        if kind == "dataset":
            if text_column not in source.column_names:
                raise ValueError(
                    f"the calibration dataset has no column {text_column!r} (columns: {source.column_names}): "
                    "pass `text_column=` naming the column that holds the text"
                )
            name = getattr(source, "info", None)
            name = getattr(name, "dataset_name", None) or "dataset"
            texts = [t for t in source.select(range(min(len(source), 64 * num_sequences)))[text_column] if t]
            provenance_source = f"dataset:{name}[{text_column}]"
        else:
            texts = [t for t in source if t]
            provenance_source = "texts"
        if not texts:
            raise ValueError("the calibration texts are all empty: give at least one non-empty text")
        if tokenizer is None:
            raise ValueError(
                "calibration texts need the tokenizer: pass `tokenizer=` (or pass token ids, or nothing for "
                "data-free calibration)"
            )
        use_chat = bool(chat_template) if chat_template is not None else False
        if use_chat and not _has_chat_template(tokenizer):
            raise ValueError(
                f"chat_template=True, but the tokenizer {type(tokenizer).__name__} has no chat template: "
                "pass chat_template=False to calibrate on raw text"
            )
        if use_chat:
            rows = [torch.tensor(_chat_prompt(tokenizer, t)[-MAX_PROMPT_TOKENS:]) for t in texts[:num_sequences]]
            provenance_source = f"{provenance_source}+chat_template"
        else:
            rows = _pack(tokenizer, texts, num_sequences, sequence_length)
    do_respond = respond if respond is not None else use_chat
    provenance: dict[str, Any] = {"source": provenance_source, "sequence_length": sequence_length, "seed": seed}
    if do_respond:
        rows = [r[-MAX_PROMPT_TOKENS:] for r in rows]
        prompt_lengths = [len(r) for r in rows]
        rows = _respond(model, rows, sequence_length, temperature, sampled_tokens, seed)
        provenance["source"] += "+model_responses"
        provenance["temperature"] = float(temperature)
        if sampled_tokens and temperature != 1.0:
            provenance["sampled_tokens"] = int(sampled_tokens)
        score_prompt = False
    else:
        prompt_lengths = [0] * len(rows)
        score_prompt = True
    input_ids, attention_mask, loss_mask = _collate(rows, prompt_lengths, pad_id, score_prompt)
    data = CalibrationData(input_ids, attention_mask, loss_mask, prompt_lengths)
    provenance.update(num_sequences=data.num_sequences, num_tokens=data.num_tokens)
    data.provenance = provenance
    return data


def _respond(
    model: PreTrainedModel,
    rows: list[torch.Tensor],
    new_tokens: int,
    temperature: float,
    sampled_tokens: int | None,
    seed: int,
) -> list[torch.Tensor]:
    return generate_continuations(
        model, rows, new_tokens, temperature=temperature, sampled_tokens=sampled_tokens, seed=seed
    )


def _data_free(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    num_sequences: int,
    sequence_length: int,
    chat_template: bool | None,
    temperature: float,
    sampled_tokens: int | None,
    seed: int,
) -> CalibrationData:
    if temperature == 0 and not sampled_tokens:
        raise ValueError(
            "data-free calibration at temperature 0 would write the same text for every sequence: sample an "
            "opening first (sampled_tokens=8) or use a temperature above 0"
        )
    use_chat = _has_chat_template(tokenizer) if chat_template is None else bool(chat_template)
    if use_chat:
        if not _has_chat_template(tokenizer):
            raise ValueError(
                "chat_template=True needs a tokenizer with a chat template: pass `tokenizer=` or chat_template=False"
            )
        start = _chat_prompt(tokenizer, "")
        source = "data-free:chat_template"
    else:
        start = [_start_token_id(model)]
        source = "data-free:bos"
    start = start[-MAX_PROMPT_TOKENS:]
    prompts = [torch.tensor(start, dtype=torch.long)] * num_sequences
    rows = generate_continuations(
        model, prompts, sequence_length, temperature=temperature, sampled_tokens=sampled_tokens,
        seed=seed, stop_at_eos=True,
    )
    prompt_lengths = [len(start)] * num_sequences
    input_ids, attention_mask, loss_mask = _collate(rows, prompt_lengths, _pad_token_id(model), False)
    data = CalibrationData(input_ids, attention_mask, loss_mask, prompt_lengths)
    data.provenance = {
        "source": source,
        "num_sequences": data.num_sequences,
        "num_tokens": data.num_tokens,
        "sequence_length": sequence_length,
        "seed": seed,
        "temperature": float(temperature),
    }
    if sampled_tokens and temperature != 1.0:
        data.provenance["sampled_tokens"] = int(sampled_tokens)
    return data


def _source_kind(source: Any) -> str:
    if isinstance(source, torch.Tensor):
        return "tokens"
    try:
        import datasets  # noqa: F401  (optional dependency)

        if isinstance(source, (datasets.Dataset,)):
            return "dataset"
    except ImportError:
        pass
    if isinstance(source, str):
        raise ValueError(
            "calibration source is a single string: pass a list of texts (e.g. `[text]`), token ids, a "
            "`datasets.Dataset`, or None for data-free calibration"
        )
    if isinstance(source, Sequence) and source:
        first = source[0]
        if isinstance(first, str):
            return "texts"
        if isinstance(first, torch.Tensor) or (isinstance(first, Sequence) and not isinstance(first, str)):
            return "tokens"
    raise ValueError(
        f"unsupported calibration source {type(source).__name__}: pass a list of texts, token ids (a 2-D "
        "tensor or a list of lists), a `datasets.Dataset`, or None for data-free calibration"
    )


def _token_rows(source: Any) -> list[Any]:
    if isinstance(source, torch.Tensor):
        if source.dim() == 1:
            return [source]
        if source.dim() != 2:
            raise ValueError(f"calibration token ids must be 1-D or 2-D, got shape {tuple(source.shape)}")
        return list(source)
    return list(source)


def _pack(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], num_sequences: int, sequence_length: int
) -> list[torch.Tensor]:
    """Concatenate the texts (separated by EOS) and cut them into full-length sequences."""
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    need = num_sequences * sequence_length
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + sep
        if len(stream) >= need:
            break
    rows = [torch.tensor(stream[i : i + sequence_length]) for i in range(0, min(len(stream), need), sequence_length)]
    rows = [r for r in rows if len(r) >= 2]
    if not rows:
        raise ValueError("the calibration texts tokenize to fewer than 2 tokens: give longer texts")
    return rows


def texts_from_file(path: str | os.PathLike[str], text_column: str = "text") -> list[str]:
    """Calibration texts from a file: paragraphs (separated by blank lines) of a text file, or the strings
    of a JSONL file (one string, or one object with a `text_column` field, per line).

    Raises:
        `ValueError`: the file is missing, holds no text, or a JSONL line is malformed (the message names
            the line).
    """
    file = expand_path(path)
    if not file.is_file():
        raise ValueError(f"calibration file `{path}` does not exist")
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        texts = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
    else:
        texts = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}, line {number}: not valid JSON ({e})") from None
            if isinstance(row, dict):
                if not isinstance(row.get(text_column), str):
                    raise ValueError(
                        f"{path}, line {number}: no string field {text_column!r} (fields: {', '.join(row) or 'none'}); "
                        "name the field with --text-column"
                    )
                row = row[text_column]
            if not isinstance(row, str):
                raise ValueError(f"{path}, line {number}: expected a string or an object, got {type(row).__name__}")
            if row.strip():
                texts.append(row)
    if not texts:
        raise ValueError(f"calibration file `{path}` holds no text")
    return texts


def dataset_texts(name: str, config: str | None = None, *, split: str = "train", text_column: str = "text") -> Any:
    """A `datasets` dataset as a calibration source, its `text_column` renamed to ``"text"``.

    Raises:
        `ImportError`: the `datasets` package is missing (with what to install).
        `ValueError`: the dataset has no such column.
    """
    try:
        import datasets
    except ImportError:
        raise ImportError("calibration on a dataset needs the `datasets` package: pip install 'sdfp-hf[datasets]'") from None
    dataset = datasets.load_dataset(name, config, split=split)
    if text_column not in dataset.column_names:
        raise ValueError(
            f"dataset {name} has no column {text_column!r} (columns: {', '.join(dataset.column_names)}): "
            "name the text column with --text-column"
        )
    if text_column != "text":
        dataset = dataset.select_columns([text_column]).rename_column(text_column, "text")
    return dataset
