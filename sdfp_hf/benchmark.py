"""The benchmark harness: sdfp-hf drafts against plain decoding and every alternative, side by side.

One process loads a target model and runs, on the same Spec-Bench prompts, plain greedy `generate` and
each method asked for: sdfp-hf layer-skip drafts (a selector and a skip ratio each), transformers' prompt
lookup decoding, transformers' early exit, and a separate draft model (classic speculative decoding).
Methods are interleaved per prompt, in an order that rotates from prompt to prompt, so that the noise of
a shared machine hits all of them alike; each is warmed up first. Timings are only ever compared as
ratios measured in the same run.

Per method and per Spec-Bench category it reports the speedup over plain decoding (ratio of
throughputs, total tokens over total time, as Spec-Bench defines it), tokens per second, accepted tokens
per round, acceptance rate, the draft length used, how many outputs are token-identical to plain decoding,
the time to build the draft, the extra bytes the draft holds (weights, by storage; speculative cache
entries) and peak RSS. Rounds are counted the same way for
every method, by wrapping `update_candidate_strategy` of transformers' candidate generators while a run
is in flight; acceptance, speedup and identity are computed by the package's `evaluate` metric
(`sdfp_hf/metrics/speculative_decoding.py`).

Outputs: a JSON file with every measurement, the machine, versions, dtype and the command line; a
Markdown table; a PNG chart of speedup by category and method (`write_outputs`). The command line is
`python benchmarks/run.py --help` (the same parser, `build_parser`, can back an `sdfp bench` command).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import gc
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_DRAFT_MODELS",
    "MAIN_CATEGORIES",
    "MT_BENCH_CATEGORIES",
    "BenchmarkConfig",
    "MethodSpec",
    "Prompt",
    "RoundRecorder",
    "build_parser",
    "cache_nbytes",
    "config_from_args",
    "default_methods",
    "extra_weight_bytes",
    "headline_markdown",
    "load_prompts",
    "main",
    "markdown_report",
    "plot_speedup",
    "run_benchmark",
    "select_skip_layers",
    "summarize",
    "write_outputs",
]

#: The six main Spec-Bench categories; "mt_bench" gathers the eight MT-bench categories.
MAIN_CATEGORIES = ("mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag")
#: MT-bench's categories, in the order prompts are drawn from them (one of each in turn).
MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
#: The separate draft model used by default for a catalogue target (same tokenizer).
DEFAULT_DRAFT_MODELS = {"qwen2.5-coder-1.5b": "qwen2.5-coder-0.5b"}
#: Layer-skip selectors of the harness itself; any scoring method of the profiler (`sdfp_hf.fit.SCORING_METHODS`)
#: is a selector too, e.g. ``gate_flips:0.2``, or ``gate_flips:auto`` (what `SDFPAssistant.from_target(model)` does).
SIMPLE_SELECTORS = ("evenly", "last")
#: Method kinds, in the order they are listed in reports.
METHOD_KINDS = ("plain", "sdfp", "prompt_lookup", "early_exit", "draft_model")
#: A prompt used to warm every method up; not one of the measured prompts.
WARMUP_PROMPT = "Explain in two sentences why the sky is blue."

_ASSISTANT_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
_RESULT_SCHEMA = 1


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


# ----------------------------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class MethodSpec:
    """A method to benchmark, as given on the command line.

    Args:
        kind (`str`): one of `METHOD_KINDS`.
        arg (`str`): the method's main argument: ``"SELECTOR:RATIO"`` for sdfp, the number of tokens for
            prompt lookup, the exit layer (a count, or a fraction of the layers) for early exit, the model
            for a draft model; empty for plain.
        options (`tuple[tuple[str, Any], ...]`): ``key=value`` settings (for sdfp, keyword arguments of
            `SDFPAssistant.from_target`; for the others, the draft settings `num_assistant_tokens`,
            `num_assistant_tokens_schedule`, `assistant_confidence_threshold`, and for prompt lookup
            `max_matching_ngram_size`).
    """

    kind: str
    arg: str = ""
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """A short unique label, e.g. ``"sdfp:evenly:0.25"`` or ``"prompt_lookup:10"``."""
        name = self.kind if not self.arg else f"{self.kind}:{self.arg}"
        if self.options:
            name += "[" + ",".join(f"{k}={v}" for k, v in self.options) + "]"
        return name

    @classmethod
    def parse(cls, kind: str, text: str = "") -> MethodSpec:
        """Parse ``ARG[:key=value,...]`` (for sdfp, ``SELECTOR:RATIO[:key=value,...]``)."""
        if kind not in METHOD_KINDS:
            raise ValueError(f"unknown method kind {kind!r}: choose from {', '.join(METHOD_KINDS)}")
        parts = text.split(":") if text else []
        n_args = 2 if kind == "sdfp" else (0 if kind == "plain" else 1)
        if len(parts) < n_args:
            example = {"sdfp": "evenly:0.25", "prompt_lookup": "10", "early_exit": "0.5", "draft_model": "qwen2.5-coder-0.5b"}
            raise ValueError(f"{kind} needs {'SELECTOR:RATIO' if kind == 'sdfp' else 'a value'}, e.g. {example[kind]!r}; got {text!r}")
        arg = ":".join(parts[:n_args])
        rest = ":".join(parts[n_args:])
        options = []
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"method option {item!r} in {text!r} is not key=value")
            options.append((key.strip(), _coerce(value.strip())))
        spec = cls(kind, arg, tuple(options))
        spec._check()
        return spec

    def _check(self) -> None:
        if self.kind == "sdfp":
            from .fit import SCORING_METHODS

            selector, ratio = self.arg.split(":")
            selectors = dict.fromkeys(SIMPLE_SELECTORS + SCORING_METHODS)
            if selector not in selectors:
                raise ValueError(f"unknown layer selector {selector!r}: choose from {', '.join(selectors)}")
            if not (ratio == "auto" and selector in SCORING_METHODS):
                _ratio(ratio, self.arg)
        elif self.kind == "prompt_lookup":
            if not self.arg.isdigit() or int(self.arg) < 1:
                raise ValueError(f"prompt lookup needs a positive number of tokens, got {self.arg!r}")
        elif self.kind == "early_exit":
            _exit_layer(self.arg, None)


def _coerce(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def _ratio(text: str, where: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        raise ValueError(f"skip ratio {text!r} in {where!r} is not a number: use e.g. 0.25") from None
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"skip ratio must be in (0, 1), got {ratio} in {where!r}")
    return ratio


def _exit_layer(text: str, num_layers: int | None) -> int | None:
    """Early-exit layer from a count (``"15"``) or a fraction of the layers (``"0.5"``)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"early exit needs a layer count or a fraction of the layers, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"early exit layer must be positive, got {text!r}")
    if num_layers is None:
        return None
    layer = round(value * num_layers) if "." in text else int(value)
    if not 1 <= layer < num_layers:
        raise ValueError(f"early exit at {text!r} gives layer {layer}; the model has {num_layers} layers (use 1..{num_layers - 1})")
    return layer


def default_methods(model_name: str) -> list[MethodSpec]:
    """What runs when no method is asked for: plain, an sdfp draft, prompt lookup, early exit, and the
    separate draft model where the catalogue has one for `model_name`."""
    methods = [
        MethodSpec("plain"),
        MethodSpec.parse("sdfp", "evenly:0.25"),
        MethodSpec.parse("prompt_lookup", "10"),
        MethodSpec.parse("early_exit", "0.5"),
    ]
    draft = DEFAULT_DRAFT_MODELS.get(_catalogue_alias(model_name) or "")
    if draft:
        methods.append(MethodSpec.parse("draft_model", draft))
    return methods


def _catalogue_alias(name: str) -> str | None:
    from .models import resolve_alias

    return resolve_alias(name)


def num_decoder_layers(model: PreTrainedModel) -> int:
    from .architectures import get_architecture

    return len(get_architecture(model).decoder_layers(model))


def select_skip_layers(model: PreTrainedModel, selector: str, ratio: float) -> list[int]:
    """The decoder layers an sdfp draft skips, chosen by `selector` for a skip `ratio`.

    The harness's own selectors: ``"evenly"`` (evenly spaced, never the first or the last layer) and
    ``"last"`` (the layers just before the last one). The profiler's scoring methods are run by
    `build_method` through `SDFPAssistant.from_target`, as a user would.
    """
    num_layers = num_decoder_layers(model)
    k = round(ratio * num_layers)
    if not 1 <= k <= num_layers - 2:
        raise ValueError(
            f"skip ratio {ratio} of {num_layers} layers skips {k}; it must skip 1..{num_layers - 2} "
            "(the first and last layers are kept)"
        )
    if selector == "evenly":
        return sorted({1 + int((i + 0.5) * (num_layers - 2) / k) for i in range(k)})
    if selector == "last":
        return list(range(num_layers - 1 - k, num_layers - 1))
    raise ValueError(f"unknown layer selector {selector!r}: the harness's own are {', '.join(SIMPLE_SELECTORS)}")


@dataclass
class Method:
    """A method ready to run: its `generate` arguments, its draft and what building it cost."""

    spec: MethodSpec
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    draft: Any = None
    build_time_s: float = 0.0
    extra_weight_bytes: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # (generation config, settings) pairs set before every call and restored after it
    settings: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @contextlib.contextmanager
    def applied_settings(self) -> Iterator[None]:
        """Set the draft settings for one call, so that no call depends on the calls before it.

        transformers' "heuristic" schedule writes the adapted draft length back into the draft's
        generation config after each call; resetting it makes every prompt start alike.
        """
        saved = [(gc, {k: getattr(gc, k, None) for k in values}) for gc, values in self.settings]
        for gc, values in self.settings:
            for k, v in values.items():
                setattr(gc, k, v)
        try:
            yield
        finally:
            for gc, values in saved:
                for k, v in values.items():
                    setattr(gc, k, v)


def _split_options(spec: MethodSpec, allowed: Iterable[str]) -> dict[str, Any]:
    options = dict(spec.options)
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(f"{spec.name}: unknown option(s) {bad}; allowed: {', '.join(sorted(allowed))}")
    return options


def build_method(
    spec: MethodSpec,
    model: PreTrainedModel,
    *,
    dtype: str | torch.dtype,
    draft_models: dict[str, PreTrainedModel] | None = None,
) -> Method:
    """Build one method (its draft, if any), timing the build and measuring the draft's extra weights."""
    method = Method(spec)
    start = time.perf_counter()
    if spec.kind == "plain":
        pass
    elif spec.kind == "sdfp":
        from .assistant import SDFPAssistant

        selector, ratio = spec.arg.split(":")
        if selector in SIMPLE_SELECTORS:
            skip = select_skip_layers(model, selector, float(ratio))
            draft = SDFPAssistant.from_target(model, skip_layers=skip, **_sdfp_kwargs(spec))
        else:  # profile with this scoring method, data-free, as `from_target(model)` does
            skip_ratio = ratio if ratio == "auto" else float(ratio)
            draft = SDFPAssistant.from_target(model, method=selector, skip_ratio=skip_ratio, **_sdfp_kwargs(spec))
        method.draft = draft
        method.generate_kwargs = {"assistant_model": draft}
        method.settings = [(draft.generation_config, {k: getattr(draft.generation_config, k) for k in _ASSISTANT_SETTINGS})]
        mask = draft.sdfp_config
        method.info = {
            "skip_layers": list(mask.skip_layers),
            **({"skip_attention": list(mask.skip_attention)} if mask.skip_attention else {}),
            **({"skip_mlp": list(mask.skip_mlp)} if mask.skip_mlp else {}),
            "num_layers": num_decoder_layers(model),
            "selector": selector,
            "ratio": ratio if ratio == "auto" else float(ratio),
        }
        drafting = getattr(draft, "drafting", None)
        if drafting is not None:
            import dataclasses

            method.info["drafting"] = dataclasses.asdict(drafting)
    elif spec.kind == "prompt_lookup":
        options = _split_options(spec, ["max_matching_ngram_size"])
        method.generate_kwargs = {"prompt_lookup_num_tokens": int(spec.arg), **options}
        method.info = {"num_assistant_tokens": int(spec.arg), "max_matching_ngram_size": options.get("max_matching_ngram_size", 2)}
    elif spec.kind == "early_exit":
        options = _split_options(spec, _ASSISTANT_SETTINGS)
        layer = _exit_layer(spec.arg, num_decoder_layers(model))
        method.generate_kwargs = {"assistant_early_exit": layer}
        # The early-exit draft is the target itself: its draft settings are the target's generation config's.
        method.settings = [(model.generation_config, _stock_settings(model.generation_config, options))]
        method.info = {"exit_layer": layer, "num_layers": num_decoder_layers(model)}
    elif spec.kind == "draft_model":
        options = _split_options(spec, _ASSISTANT_SETTINGS)
        preloaded = (draft_models or {}).get(spec.arg)
        if preloaded is not None:
            draft = preloaded
        else:
            from .models import load_model

            draft, _ = load_model(spec.arg, dtype=dtype)
        method.draft = draft
        method.generate_kwargs = {"assistant_model": draft}
        method.settings = [(draft.generation_config, _stock_settings(draft.generation_config, options))]
        method.info = {"draft_model": spec.arg, "draft_parameters": sum(p.numel() for p in draft.parameters())}
    else:  # pragma: no cover - MethodSpec.parse rejects other kinds
        raise ValueError(f"unknown method kind {spec.kind!r}")
    method.build_time_s = time.perf_counter() - start
    if method.draft is not None:
        method.extra_weight_bytes = extra_weight_bytes(model, method.draft)
    for gc, values in method.settings:
        method.info.update({k: v for k, v in values.items()})
    return method


def _sdfp_kwargs(spec: MethodSpec) -> dict[str, Any]:
    """Keyword arguments of `SDFPAssistant.from_target` from an sdfp method's options.

    Options naming a field of `DraftingOptions` (e.g. ``prompt_lookup=0``, ``adaptive=false``) are gathered
    into its `drafting` argument; the others are passed as they are (e.g. ``num_assistant_tokens=8``), except
    ``draft_vocab=N``: a draft scoring the lowest N token ids only (a smaller output head).
    """
    import dataclasses
    import inspect

    from .assistant import SDFPAssistant
    from .selection import profile

    taken = {"cls", "model", "skip_layers", "skip_attention", "skip_mlp", "mask", "drafting", "profile_kwargs",
             "calibration", "method", "skip_ratio"}
    direct = [
        p
        for p in (*inspect.signature(SDFPAssistant.from_target).parameters, *inspect.signature(profile).parameters)
        if p not in taken and p != "score_kwargs"
    ]
    try:
        from .generation import DraftingOptions
    except ImportError:
        DraftingOptions, drafting_fields = None, []
    else:
        drafting_fields = [f.name for f in dataclasses.fields(DraftingOptions)]
    kwargs, drafting = {}, {}
    for key, value in spec.options:
        if key == "draft_vocab" and isinstance(value, int):
            kwargs[key] = range(value)  # the lowest ids: BPE merge order, a proxy for frequency (draft_vocab.py)
        elif key in direct:
            kwargs[key] = value
        elif key in drafting_fields:
            drafting[key] = value
        else:
            raise ValueError(
                f"{spec.name}: unknown option {key!r}; options are SDFPAssistant.from_target arguments "
                f"({', '.join(direct)}) or DraftingOptions fields ({', '.join(drafting_fields) or 'none'})"
            )
    if drafting:
        kwargs["drafting"] = DraftingOptions(**drafting)
    return kwargs


def _stock_settings(gc: Any, options: dict[str, Any]) -> dict[str, Any]:
    """transformers' draft settings (its defaults where the config leaves them unset), then the options."""
    from transformers import GenerationConfig

    defaults = GenerationConfig()._get_default_generation_params()
    values = {k: getattr(gc, k, None) if getattr(gc, k, None) is not None else defaults[k] for k in _ASSISTANT_SETTINGS}
    values.update(options)
    return values


# ------------------------------------------------------------------------------------------ measurement


def _storages(module: torch.nn.Module) -> dict[int, int]:
    """Storage pointer -> size in bytes of every parameter and buffer of `module`."""
    out = {}
    for t in [*module.parameters(), *module.buffers()]:
        storage = t.untyped_storage()
        out[storage.data_ptr()] = storage.nbytes()
    return out


def extra_weight_bytes(target: torch.nn.Module, draft: torch.nn.Module) -> int:
    """Bytes of the draft's parameters and buffers whose storage is not the target's (0 when all are shared)."""
    shared = _storages(target)
    return sum(n for ptr, n in _storages(draft).items() if ptr not in shared)


def cache_nbytes(cache: Any) -> int:
    """Bytes a draft's KV cache holds of its own.

    For an sdfp-hf `DraftCache` this is its speculative entries only (it reads the target's verified
    entries in place); for an ordinary cache (a separate draft model's, early exit's), every entry.
    """
    total = 0
    for layer in getattr(cache, "layers", ()):
        if hasattr(layer, "base"):  # sdfp_hf.cache.SpeculativeLayer: the target's entries are not the draft's
            tensors = (getattr(layer, "_spec_keys", None), getattr(layer, "_spec_values", None))
        else:
            tensors = (getattr(layer, "keys", None), getattr(layer, "values", None))
        total += sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))
    return total


class RoundRecorder:
    """Counts, for every candidate generator alike, the verification rounds of `generate` while active.

    transformers calls `update_candidate_strategy(input_ids, scores, num_matches)` once per round, after
    verification: drafted tokens are `scores.shape[1] - 1`, accepted ones `num_matches`. While the recorder
    is entered, that method (and `get_candidates`) of `CandidateGenerator` and all its subclasses is
    wrapped; only the outermost call of a round is recorded (a subclass calling `super()` is not counted
    twice). After each `get_candidates` the bytes of the draft's own cache are measured. Single-threaded.
    """

    def __init__(self) -> None:
        self.drafted_per_round: list[int] = []
        self.accepted_per_round: list[int] = []
        self.cache_peak_bytes = 0
        self._depth = {"update": 0, "get": 0}
        self._patched: list[tuple[type, str, Any]] = []

    def reset(self) -> None:
        self.drafted_per_round = []
        self.accepted_per_round = []
        self.cache_peak_bytes = 0

    def observe_cache(self, cache: Any) -> None:
        self.cache_peak_bytes = max(self.cache_peak_bytes, cache_nbytes(cache))

    def __enter__(self) -> RoundRecorder:
        from transformers.generation.candidate_generator import CandidateGenerator

        classes, todo = [], [CandidateGenerator]
        while todo:
            cls = todo.pop()
            if cls not in classes:
                classes.append(cls)
                todo.extend(cls.__subclasses__())
        for cls in classes:
            if "update_candidate_strategy" in cls.__dict__:
                self._patch(cls, "update_candidate_strategy", self._wrap_update)
            if "get_candidates" in cls.__dict__:
                self._patch(cls, "get_candidates", self._wrap_get)
        return self

    def __exit__(self, *exc: Any) -> None:
        for cls, name, original in reversed(self._patched):
            setattr(cls, name, original)
        self._patched.clear()

    def _patch(self, cls: type, name: str, wrapper: Callable) -> None:
        original = cls.__dict__[name]
        self._patched.append((cls, name, original))
        setattr(cls, name, wrapper(original))

    def _wrap_update(self, original: Callable) -> Callable:
        recorder = self

        def update_candidate_strategy(gen, input_ids, scores, num_matches, *args, **kwargs):
            if recorder._depth["update"] == 0:
                recorder.drafted_per_round.append(int(scores.shape[1]) - 1)
                recorder.accepted_per_round.append(int(num_matches))
            recorder._depth["update"] += 1
            try:
                return original(gen, input_ids, scores, num_matches, *args, **kwargs)
            finally:
                recorder._depth["update"] -= 1

        return update_candidate_strategy

    def _wrap_get(self, original: Callable) -> Callable:
        recorder = self

        def get_candidates(gen, *args, **kwargs):
            recorder._depth["get"] += 1
            try:
                return original(gen, *args, **kwargs)
            finally:
                recorder._depth["get"] -= 1
                if recorder._depth["get"] == 0:
                    own = getattr(gen, "assistant_kwargs", None)
                    if isinstance(own, dict) and own.get("cache") is not None:
                        recorder.observe_cache(own["cache"])

        return get_candidates


@contextlib.contextmanager
def _draft_cache_probe(draft: Any, recorder: RoundRecorder) -> Iterator[None]:
    """For an sdfp-hf draft (whose cache lives only inside a round), measure it after each forward."""
    from .assistant import SDFPAssistant

    if not isinstance(draft, SDFPAssistant):
        yield
        return

    def hook(module, args, kwargs, output):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            recorder.observe_cache(cache)

    # The draft steps through its base model (`draft_logits`) or its own forward: watch both.
    modules = {id(m): m for m in (draft, getattr(draft, "base_model", None)) if m is not None}
    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in modules.values()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_bytes(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field_name}:\s+(\d+) kB", f.read(), flags=re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _loadavg() -> float | None:
    """The 1-minute load average: how busy the (shared) machine was around a run."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def process_peak_rss_bytes() -> int:
    """Peak RSS of this process since it started (`getrusage`), in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), flags=re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    memory = None
    with contextlib.suppress(OSError, AttributeError, ValueError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_bytes": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    import transformers

    from . import __version__

    out: dict[str, str | None] = {"sdfp_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("evaluate", "datasets"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            out["sdfp_hf_git"] = commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


# ------------------------------------------------------------------------------------------------- runs


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark run (see `python benchmarks/run.py --help`)."""

    model: str = "smollm2-135m"
    dtype: str = "bfloat16"
    methods: list[MethodSpec] = field(default_factory=list)
    per_category: int = 3
    categories: tuple[str, ...] = MAIN_CATEGORIES
    max_new_tokens: int = 128
    threads: int | None = None
    seed: int = 0
    warmup_tokens: int = 16
    repeats: int = 1
    questions: str | None = None
    command: str | None = None
    replay: bool = False
    replay_tokens: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    replay_thresholds: tuple[float, ...] = (0.0, 0.4)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = [m.name for m in self.methods]
        d["categories"] = list(self.categories)
        d["replay_tokens"] = list(self.replay_tokens)
        d["replay_thresholds"] = list(self.replay_thresholds)
        return d


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _generate_once(
    model: PreTrainedModel,
    method: Method,
    input_ids: torch.LongTensor,
    max_new_tokens: int,
    seed: int,
    recorder: RoundRecorder,
) -> dict[str, Any]:
    """One timed `generate` call; returns the run's measurements (new tokens included)."""
    recorder.reset()
    gc.collect()
    torch.manual_seed(seed)
    reset = _reset_peak_rss()
    rss_start = _rss_bytes("VmRSS")
    attention_mask = torch.ones_like(input_ids)
    with method.applied_settings(), _draft_cache_probe(method.draft, recorder), torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **method.generate_kwargs,
        )
        elapsed = time.perf_counter() - start
    new = out[0, input_ids.shape[1] :].tolist()
    sources = getattr(getattr(method.draft, "stats", None), "source_per_round", None)
    peak = _rss_bytes("VmHWM") if reset else process_peak_rss_bytes()
    return {
        "time_s": elapsed,
        "new_tokens": len(new),
        "tokens": new,
        "drafted_per_round": list(recorder.drafted_per_round),
        "accepted_per_round": list(recorder.accepted_per_round),
        "spec_cache_peak_bytes": recorder.cache_peak_bytes,
        "peak_rss_bytes": peak,
        "rss_start_bytes": rss_start,
        "loadavg_1min": _loadavg(),
        # sdfp drafts: how many drafting rounds each source (layer-skip "draft", prompt "lookup") proposed
        "rounds_by_source": dict(sorted(Counter(sources).items())) if sources is not None else None,
    }


def run_benchmark(
    config: BenchmarkConfig,
    *,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    prompts: Sequence[Prompt] | None = None,
    draft_models: dict[str, PreTrainedModel] | None = None,
    log: Callable[[str], None] = _log,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every method of `config` on the prompts, interleaved, and return all measurements.

    Args:
        config (`BenchmarkConfig`): what to run.
        model, tokenizer (*optional*): an already loaded target (default: `load_model(config.model)`).
        prompts (`Sequence[Prompt]`, *optional*): default: `load_prompts` from Spec-Bench.
        draft_models (`dict[str, PreTrainedModel]`, *optional*): already loaded draft models by name, for
            `draft_model` methods (default: loaded with `load_model`).
        log (`Callable[[str], None]`): progress lines (default: stderr).
        checkpoint (`Callable[[dict], None]`, *optional*): called after every prompt with the result so far
            (`"complete": False`), so that an interrupted run still leaves its measurements.

    Returns:
        `dict`: the result, JSON-serializable: settings, machine, versions, methods, prompts, every run
        (with its generated tokens) and `summary` (`summarize`).
    """
    threads = config.threads or machine_info()["usable_cores"] or 1
    torch.set_num_threads(threads)
    started_with = versions()  # the code that runs is the code at the start, whatever is committed later
    methods_specs = list(config.methods) or default_methods(config.model)
    if not any(m.kind == "plain" for m in methods_specs):
        methods_specs.insert(0, MethodSpec("plain"))
    names = [m.name for m in methods_specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"methods {dupes} are asked for more than once")

    load_time = None
    if model is None:
        from .models import load_model

        log(f"loading {config.model} ({config.dtype})")
        start = time.perf_counter()
        model, tokenizer = load_model(config.model, dtype=config.dtype)
        load_time = time.perf_counter() - start
    if tokenizer is None:
        raise ValueError("pass the model's tokenizer with the model")
    model.eval()
    if prompts is None:
        prompts = load_prompts(config.questions, per_category=config.per_category, categories=config.categories)
    rss_after_load = _rss_bytes("VmRSS")

    methods: list[Method] = []
    for spec in methods_specs:
        try:
            method = build_method(spec, model, dtype=config.dtype, draft_models=draft_models)
        except Exception as e:  # a method that cannot be built is a result, not a crash
            method = Method(spec, error=f"build failed: {type(e).__name__}: {e}")
        log(f"built {method.name} in {method.build_time_s:.2f}s" + (f" ({method.error})" if method.error else ""))
        methods.append(method)

    encoded = [encode_prompt(tokenizer, p.text) for p in prompts]
    runs: list[dict[str, Any]] = []
    replayed: dict[str, Any] = {}

    def assemble(complete: bool) -> dict[str, Any]:
        done = [dict(r) for r in runs]
        _mark_identity(done)
        result = {
            "schema": _RESULT_SCHEMA,
            "complete": complete,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": config.command,
            "config": config.to_dict(),
            "threads": threads,
            "machine": machine_info(),
            "versions": started_with,
            "model": {
                "name": config.model,
                "name_or_path": getattr(model, "name_or_path", None),
                "model_type": model.config.model_type,
                "num_layers": num_decoder_layers(model),
                "parameters": sum(p.numel() for p in model.parameters()),
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "load_time_s": load_time,
            },
            "rss_after_load_bytes": rss_after_load,
            "methods": [
                {
                    "name": m.name,
                    "kind": m.spec.kind,
                    "arg": m.spec.arg,
                    "options": dict(m.spec.options),
                    "build_time_s": m.build_time_s,
                    "extra_weight_bytes": m.extra_weight_bytes,
                    "info": m.info,
                    "error": m.error,
                }
                for m in methods
            ],
            "prompts": [asdict(p) | {"prompt_tokens": int(ids.shape[1])} for p, ids in zip(prompts, encoded)],
            "runs": done,
            "process_peak_rss_bytes": process_peak_rss_bytes(),
        }
        if replayed:
            result["replay"] = replayed
        result["summary"] = summarize(result)
        return result

    recorder = RoundRecorder()
    with recorder:
        warm_ids = encode_prompt(tokenizer, WARMUP_PROMPT)
        for method in methods:
            if method.error:
                continue
            try:
                _generate_once(model, method, warm_ids, config.warmup_tokens, config.seed, recorder)
            except Exception as e:  # e.g. early exit refused on this architecture: record it
                method.error = f"warm-up failed: {type(e).__name__}: {e}"
                log(f"{method.name}: {method.error}")

        active = [m for m in methods if not m.error]
        step = 0
        for repeat in range(config.repeats):
            for index, (prompt, input_ids) in enumerate(zip(prompts, encoded)):
                shift = step % len(active)
                order = active[shift:] + active[:shift]
                step += 1
                line = []
                for method in order:
                    if method.error:
                        continue
                    try:
                        run = _generate_once(model, method, input_ids, config.max_new_tokens, config.seed, recorder)
                    except Exception as e:
                        method.error = f"failed on question {prompt.question_id}: {type(e).__name__}: {e}"
                        log(f"{method.name}: {method.error}")
                        continue
                    run.update(
                        method=method.name,
                        question_id=prompt.question_id,
                        category=prompt.category,
                        repeat=repeat,
                        prompt_tokens=int(input_ids.shape[1]),
                    )
                    runs.append(run)
                    line.append(f"{method.name} {run['time_s']:.2f}s")
                log(f"[{repeat + 1}/{config.repeats} {index + 1}/{len(prompts)}] q{prompt.question_id} "
                    f"{prompt.category}: " + ", ".join(line))
                if checkpoint is not None:
                    checkpoint(assemble(complete=False))

    if config.replay:
        for method in methods:
            if method.spec.kind == "sdfp" and not method.error:
                log(f"replaying {method.name}")
                replayed[method.name] = replay_method(model, method.draft, prompts, encoded, runs, config)
    return assemble(complete=True)


def replay_method(
    model: PreTrainedModel,
    draft: Any,
    prompts: Sequence[Prompt],
    encoded: Sequence[torch.LongTensor],
    runs: Sequence[dict[str, Any]],
    config: BenchmarkConfig,
) -> dict[str, Any]:
    """Exact acceptance of `draft` for every draft length and threshold, without timing (`sdfp_hf.replay`).

    Replays greedy speculative decoding of the draft alone (no prompt lookup, constant draft length) over
    each prompt and plain decoding's output for it, taken from `runs`. Exact in fp32; in bf16 the
    target's single pass over the whole sequence rounds differently from its verification passes.
    """
    from .replay import replay_acceptance

    plain = {r["question_id"]: r["tokens"] for r in runs if r["method"] == "plain" and r["repeat"] == 0}
    totals: dict[tuple[int, float], dict[str, int]] = {}
    start = time.perf_counter()
    for prompt, ids in zip(prompts, encoded):
        if prompt.question_id not in plain:
            continue
        output = torch.cat([ids, torch.tensor([plain[prompt.question_id]], dtype=ids.dtype)], dim=1)
        results = replay_acceptance(
            model, draft, ids, max_new_tokens=config.max_new_tokens, output_ids=output,
            num_assistant_tokens=config.replay_tokens, thresholds=config.replay_thresholds, schedules=("constant",),
        )
        for r in results:
            t = totals.setdefault((r.num_assistant_tokens, r.threshold), Counter())
            t.update(
                drafted=r.drafted, accepted=r.accepted, rounds=len(r.drafted_per_round),
                target_forwards=r.target_forwards, draft_forwards=r.draft_forwards, new_tokens=r.new_tokens,
            )
    settings = []
    for (tokens, threshold), t in totals.items():
        settings.append({
            "num_assistant_tokens": tokens,
            "threshold": threshold,
            **dict(t),
            "acceptance_rate": t["accepted"] / t["drafted"] if t["drafted"] else 0.0,
            "mean_accepted": t["accepted"] / t["rounds"] if t["rounds"] else 0.0,
            "tokens_per_round": t["new_tokens"] / t["target_forwards"] if t["target_forwards"] else 0.0,
        })
    return {"seconds": time.perf_counter() - start, "schedule": "constant", "settings": settings}


def _mark_identity(runs: list[dict[str, Any]]) -> None:
    """Compare each run's tokens with plain decoding's on the same prompt and repeat."""
    plain = {(r["question_id"], r["repeat"]): r for r in runs if r["method"] == "plain"}
    for run in runs:
        ref = plain.get((run["question_id"], run["repeat"]))
        if ref is None:
            run["identical"] = None
            run["first_mismatch"] = None
            continue
        a, b = run["tokens"], ref["tokens"]
        run["identical"] = a == b
        mismatch = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if mismatch is None and len(a) != len(b):
            mismatch = min(len(a), len(b))
        run["first_mismatch"] = mismatch


# --------------------------------------------------------------------------------------------- figures

_METRIC = None


def _metric():
    global _METRIC
    if _METRIC is None:
        import evaluate

        from .metrics import path

        _METRIC = evaluate.load(path("speculative_decoding"))
    return _METRIC


def _tokens(run: dict[str, Any], plain: dict[tuple[int, int], dict[str, Any]]) -> list[int]:
    """A run's generated tokens (written results omit them where they equal plain decoding's)."""
    if run.get("tokens") is not None:
        return run["tokens"]
    return plain[(run["question_id"], run["repeat"])]["tokens"]


def summarize(result: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Figures per method and per category (and "all"), from `result["runs"]`.

    Speedup, acceptance rate, accepted tokens per round and token identity come from the package's
    `evaluate` metric. Other figures:

    - ``tokens_per_s``: new tokens / total time;
    - ``tokens_per_round``: new tokens / verification rounds (Spec-Bench's mean accepted length: the
      accepted draft tokens plus the target's own token, per target forward; 1.0 for plain decoding);
    - ``mean_draft_length``: drafted tokens per round that drafted;
    - ``spec_cache_peak_bytes``, ``peak_rss_bytes``: the largest over the runs.
    """
    runs = result["runs"]
    plain = {(r["question_id"], r["repeat"]): r for r in runs if r["method"] == "plain"}
    categories = [c for c in MAIN_CATEGORIES if any(r["category"] == c for r in runs)]
    categories += sorted({r["category"] for r in runs} - set(categories))
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for method in [m["name"] for m in result["methods"]]:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        summary[method] = {}
        for category in [*categories, "all"]:
            rows = [r for r in mine if category in ("all", r["category"])]
            if rows:
                summary[method][category] = _figures(rows, plain, is_plain=method == "plain")
    return summary


def _figures(rows: list[dict[str, Any]], plain: dict[tuple[int, int], dict[str, Any]], *, is_plain: bool) -> dict[str, Any]:
    time_s = sum(r["time_s"] for r in rows)
    new_tokens = sum(r["new_tokens"] for r in rows)
    out: dict[str, Any] = {
        "prompts": len(rows),
        "time_s": time_s,
        "new_tokens": new_tokens,
        "tokens_per_s": new_tokens / time_s if time_s else 0.0,
        "spec_cache_peak_bytes": max(r["spec_cache_peak_bytes"] for r in rows),
        "peak_rss_bytes": max((r["peak_rss_bytes"] or 0) for r in rows),
    }
    if is_plain:
        out.update(speedup=1.0, tokens_per_round=1.0, rounds=new_tokens, identical=len(rows))
        return out
    paired = [r for r in rows if (r["question_id"], r["repeat"]) in plain]
    figures = (
        _metric().compute(
            predictions=[_tokens(r, plain) for r in paired],
            references=[plain[(r["question_id"], r["repeat"])]["tokens"] for r in paired],
            drafted=[r["drafted_per_round"] for r in paired],
            accepted=[r["accepted_per_round"] for r in paired],
            time=[r["time_s"] for r in paired],
            baseline_time=[plain[(r["question_id"], r["repeat"])]["time_s"] for r in paired],
        )
        if paired
        else {}
    )
    rounds = sum(len(r["drafted_per_round"]) for r in rows)
    by_source: Counter = Counter()
    for r in rows:
        by_source.update(r.get("rounds_by_source") or {})
    out.update(
        rounds_by_source=dict(sorted(by_source.items())) if by_source else None,
        plain_time_s=sum(plain[(r["question_id"], r["repeat"])]["time_s"] for r in paired),
        speedup=figures.get("speedup"),
        acceptance_rate=figures.get("acceptance_rate"),
        mean_accepted=figures.get("mean_accepted_tokens"),
        identical=figures.get("token_identical"),
        rounds=rounds,
        drafting_rounds=figures.get("rounds"),
        drafted=figures.get("drafted"),
        accepted=figures.get("accepted"),
        tokens_per_round=new_tokens / rounds if rounds else None,
        mean_draft_length=figures["drafted"] / figures["rounds"] if figures.get("rounds") else 0.0,
    )
    return out


# --------------------------------------------------------------------------------------------- reports


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:{spec}}{suffix}"


def _draft_setting(method: dict[str, Any]) -> str:
    info = method.get("info") or {}
    if method["kind"] == "plain":
        return "—"
    if method["kind"] == "prompt_lookup":
        return f"{info.get('num_assistant_tokens')} (ngram {info.get('max_matching_ngram_size')})"
    tokens = info.get("num_assistant_tokens")
    schedule = info.get("num_assistant_tokens_schedule")
    threshold = info.get("assistant_confidence_threshold")
    drafting = info.get("drafting") or {}
    if drafting.get("adaptive"):
        schedule = "adaptive"  # the sdfp generator's own length choice replaces the schedule
    setting = f"{tokens} {schedule}, conf {threshold}"
    if drafting.get("prompt_lookup"):
        setting += f", lookup {drafting.get('lookup_tokens')}"
    return setting


def _headline(result: dict[str, Any]) -> str:
    cfg = result["config"]
    machine = result["machine"]
    return (
        f"{result['model']['name']} ({result['model']['model_type']}, {result['model']['num_layers']} layers), "
        f"{result['model']['dtype']}, {cfg['per_category']} prompt(s) per category, {cfg['max_new_tokens']} new "
        f"tokens, greedy, batch 1, {cfg['repeats']} repeat(s); {machine['cpu']}, {machine['usable_cores']} cores, "
        f"{result['threads']} torch threads; torch {result['versions']['torch']}, transformers "
        f"{result['versions']['transformers']}, sdfp-hf {result['versions']['sdfp_hf']}"
    )


def _load_note(result: dict[str, Any]) -> str:
    loads = [r["loadavg_1min"] for r in result["runs"] if r.get("loadavg_1min") is not None]
    if not loads:
        return ""
    return f" Machine load (1-minute average) during the runs: mean {sum(loads) / len(loads):.1f}, max {max(loads):.1f}."


def markdown_report(result: dict[str, Any]) -> str:
    """The result as Markdown: a speedup table by category, a table of every figure, notes per method."""
    summary = result["summary"]
    methods = {m["name"]: m for m in result["methods"]}
    categories = [c for c in [*MAIN_CATEGORIES, "all"] if any(c in s for s in summary.values())]
    categories += sorted({c for s in summary.values() for c in s} - set(categories))
    lines = [f"## {result['model']['name']} · {result['model']['dtype']}", "", _headline(result) + "." + _load_note(result), ""]
    for key in ("note", "versions_note"):  # remarks written into a result file by hand
        if result.get(key):
            lines += [f"Note: {result[key]}", ""]
    if result.get("complete") is False:
        done = len({(r["question_id"], r["repeat"]) for r in result["runs"] if r["method"] == "plain"})
        total = len(result["prompts"]) * result["config"]["repeats"]
        lines += [f"**Partial run**: it stopped after {done} of {total} prompts; the figures cover those.", ""]
    if result.get("command"):
        lines += ["Command:", "", "```", result["command"], "```", ""]

    lines += [
        "Speedup over plain decoding (ratio of throughputs: total new tokens over total wall-clock time; "
        "same prompts, interleaved):",
        "",
    ]
    lines += ["| method | " + " | ".join(categories) + " |", "| --- |" + " ---: |" * len(categories)]
    for name, per_cat in summary.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(per_cat.get(c, {}).get("speedup"), ".2f", "x") for c in categories) + " |")
    lines.append("")

    header = (
        "| method | category | speedup | tokens/s | tokens/round | accepted/round | acceptance | draft length "
        "(mean; setting) | identical to plain | draft build | extra weights | spec. cache peak | peak RSS |"
    )
    lines += ["All figures:", "", header, "| --- | --- |" + " ---: |" * 11]
    for name, per_cat in summary.items():
        method = methods[name]
        for category in categories:
            f = per_cat.get(category)
            if f is None:
                continue
            draft_len = "—" if method["kind"] == "plain" else f"{_fmt(f.get('mean_draft_length'))}; {_draft_setting(method)}"
            if f.get("rounds_by_source"):
                draft_len += "; rounds " + ", ".join(f"{k} {v}" for k, v in f["rounds_by_source"].items())
            lines.append(
                f"| {name} | {category} | {_fmt(f['speedup'], '.2f', 'x')} | {_fmt(f['tokens_per_s'], '.1f')} | "
                f"{_fmt(f.get('tokens_per_round'))} | {_fmt(f.get('mean_accepted'))} | "
                f"{_fmt(f.get('acceptance_rate'), '.0%')} | {draft_len} | {f.get('identical')}/{f['prompts']} | "
                f"{method['build_time_s']:.2f} s | {_fmt_bytes(method['extra_weight_bytes'])} | "
                f"{_fmt_bytes(f['spec_cache_peak_bytes'])} | {_fmt_bytes(f['peak_rss_bytes'])} |"
            )
    lines.append("")
    if result.get("replay"):
        lines += [
            "Replayed acceptance (`sdfp_hf.replay`: the layer-skip draft alone, no prompt lookup, constant draft "
            "length, over plain decoding's outputs; exact in fp32, approximate in bf16):",
            "",
            "| method | draft length | confidence stop | acceptance | accepted/round | tokens/round | replay time |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, rep in result["replay"].items():
            for st in rep["settings"]:
                lines.append(
                    f"| {name} | {st['num_assistant_tokens']} | {st['threshold']} | {st['acceptance_rate']:.0%} | "
                    f"{st['mean_accepted']:.2f} | {st['tokens_per_round']:.2f} | {rep['seconds']:.1f} s |"
                )
        lines.append("")
    lines += ["Methods:", ""]
    for method in result["methods"]:
        info = ", ".join(f"{k}={v}" for k, v in (method.get("info") or {}).items())
        note = f"**{method['error']}**" if method.get("error") else info
        lines.append(f"- `{method['name']}`: {note}")
    lines += [
        "",
        f"Process peak RSS {_fmt_bytes(result['process_peak_rss_bytes'])} (models loaded: "
        f"{_fmt_bytes(result.get('rss_after_load_bytes'))} after loading the target).",
        "",
    ]
    return "\n".join(lines)


def _method_label(method: dict[str, Any]) -> str:
    """A method's name without its run-specific argument, so that tables of several runs line up."""
    return {"draft_model": f"draft model {method['arg']}"}.get(method["kind"], method["name"])


def headline_markdown(results: Sequence[dict[str, Any]]) -> str:
    """One table over several runs (e.g. two models x two dtypes): per run and method, over all prompts,
    speedup, tokens/round, acceptance and outputs identical to plain; then each run's command."""
    lines = [
        "| model | dtype | prompts x new tokens | method | speedup | tokens/s | tokens/round | acceptance | identical |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        cfg, model = result["config"], result["model"]
        size = f"{result['summary']['plain']['all']['prompts']} x {cfg['max_new_tokens']}"
        if result.get("complete") is False:
            size += " (partial)"
        for method in result["methods"]:
            f = result["summary"].get(method["name"], {}).get("all")
            if f is None:
                note = method.get("error") or "no run"
                lines.append(f"| {model['name']} | {model['dtype']} | {size} | {_method_label(method)} | {note} | | | | |")
                continue
            lines.append(
                f"| {model['name']} | {model['dtype']} | {size} | {_method_label(method)} | "
                f"{_fmt(f['speedup'], '.2f', 'x')} | {_fmt(f['tokens_per_s'], '.1f')} | "
                f"{_fmt(f.get('tokens_per_round'))} | {_fmt(f.get('acceptance_rate'), '.0%')} | "
                f"{f.get('identical')}/{f['prompts']} |"
            )
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in results if r.get("command")]
    return "\n".join(lines) + "\n"


def plot_speedup(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """A PNG bar chart of speedup over plain decoding, by category and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = {k: v for k, v in result["summary"].items() if k != "plain"}
    categories = [c for c in [*MAIN_CATEGORIES, "all"] if any(c in s for s in summary.values())]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(categories) + 2), 4.2))
    width = 0.8 / max(1, len(summary))
    for i, (name, per_cat) in enumerate(summary.items()):
        xs = [j + (i - (len(summary) - 1) / 2) * width for j in range(len(categories))]
        ys = [per_cat.get(c, {}).get("speedup") or 0.0 for c in categories]
        ax.bar(xs, ys, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(categories)), categories, rotation=20)
    ax.set_ylabel("speedup over plain decoding")
    ax.set_title(f"{result['model']['name']} {result['model']['dtype']}: speedup by category", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _compact_json(obj: Any) -> str:
    text = json.dumps(obj, indent=1)
    # one line per list of numbers (token ids, per-round counts)
    number_list = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")
    return number_list.sub(lambda m: "[" + re.sub(r"\s+", "", m.group(1)).replace(",", ", ") + "]", text)


def default_stem(config: BenchmarkConfig | dict[str, Any]) -> str:
    """``MODEL_DTYPE_NxTOKENS``, e.g. ``smollm2-135m_bf16_3x128``, from a config (or a result's `"config"`)."""
    cfg = config.to_dict() if isinstance(config, BenchmarkConfig) else config
    dtype = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}.get(cfg["dtype"], cfg["dtype"])
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(cfg["model"])).name)
    return f"{name}_{dtype}_{cfg['per_category']}x{cfg['max_new_tokens']}"


def _stored(result: dict[str, Any]) -> dict[str, Any]:
    """The result as written: runs identical to plain decoding without their (plain decoding's) tokens."""
    stored = dict(result)
    stored["runs"] = [
        {k: v for k, v in r.items() if not (k == "tokens" and r["method"] != "plain" and r.get("identical"))}
        for r in result["runs"]
    ]
    return stored


def write_outputs(
    result: dict[str, Any], out_dir: str | os.PathLike, *, stem: str | None = None, plot: bool = True
) -> dict[str, Path]:
    """Write `<stem>.json`, `<stem>.md` and (with `plot`) `<stem>.png` under `out_dir`; return their paths.

    The JSON keeps every measurement; generated tokens are kept for plain decoding and for runs whose
    output differs from it (the others are, by definition, plain decoding's).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or default_stem(result["config"])
    stored = _stored(result)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    paths["json"].write_text(_compact_json(stored) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown_report(result), encoding="utf-8")
    if plot:
        paths["png"] = plot_speedup(result, out_dir / f"{stem}.png")
    return paths


# ------------------------------------------------------------------------------------------ command line


def build_parser(prog: str | None = None, *, default_out_dir: str = "benchmark-results") -> argparse.ArgumentParser:
    """The benchmark's argument parser (also usable as an `sdfp bench` subcommand's)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark sdfp-hf drafts against plain decoding, prompt lookup, early exit and a separate "
        "draft model on Spec-Bench prompts, interleaved in one process. Writes JSON, Markdown and a PNG chart.",
        epilog="Method specs: --sdfp SELECTOR:RATIO[:key=value,...] (selectors: "
        + ", ".join(SIMPLE_SELECTORS)
        + ", or a profiler scoring method such as gate_flips, whose RATIO may be 'auto'; options are "
        "SDFPAssistant.from_target keyword arguments and DraftingOptions fields; draft_vocab=N scores the lowest N "
        "token ids only), --prompt-lookup N[:max_matching_ngram_size=K], "
        "--early-exit LAYER_OR_FRACTION[:num_assistant_tokens=N,...], --draft-model MODEL[:num_assistant_tokens=N,...]. "
        "Each may be repeated. With none of them, the defaults run: plain, sdfp evenly:0.25, prompt lookup 10, "
        "early exit at half the layers, and the catalogue's separate draft model where there is one "
        "(qwen2.5-coder-1.5b -> qwen2.5-coder-0.5b).",
    )
    p.add_argument("--model", default="smollm2-135m", help="catalogue alias, local folder, GGUF file or Hub id (default: %(default)s)")
    p.add_argument("--dtype", default="bf16", help="bf16, fp32, fp16 (default: %(default)s)")
    p.add_argument("--per-category", type=int, default=3, help="prompts per Spec-Bench category (default: %(default)s)")
    p.add_argument(
        "--categories", default=",".join(MAIN_CATEGORIES), help="comma-separated main categories (default: all six)"
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="(default: %(default)s)")
    p.add_argument("--sdfp", action="append", default=[], metavar="SELECTOR:RATIO[:OPTS]", help="an sdfp-hf draft")
    p.add_argument("--prompt-lookup", action="append", default=[], metavar="N[:OPTS]", help="prompt lookup decoding")
    p.add_argument("--early-exit", action="append", default=[], metavar="LAYER[:OPTS]", help="transformers' early exit")
    p.add_argument("--draft-model", action="append", default=[], metavar="MODEL[:OPTS]", help="a separate draft model")
    p.add_argument("--with-defaults", action="store_true", help="run the default methods as well as those given")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--warmup-tokens", type=int, default=16, help="tokens of each method's warm-up call (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=1, help="passes over the prompts (default: %(default)s)")
    p.add_argument("--questions", default=None, help="Spec-Bench question.jsonl (default: ../shared/data/spec_bench/)")
    p.add_argument("--out-dir", default=default_out_dir, help="where results go (default: %(default)s)")
    p.add_argument("--name", default=None, help="file name stem (default: MODEL_DTYPE_NxTOKENS)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    p.add_argument(
        "--report-from", metavar="RESULT.json", default=None,
        help="run nothing: recompute the figures of a written result from its measurements and rewrite its "
        "JSON, Markdown and chart",
    )
    p.add_argument(
        "--replay", action="store_true",
        help="also replay each sdfp draft's exact acceptance for every --replay-tokens x --replay-thresholds (no timing)",
    )
    p.add_argument("--replay-tokens", default="1,2,3,4,6,8", help="draft lengths to replay (default: %(default)s)")
    p.add_argument("--replay-thresholds", default="0,0.4", help="confidence stops to replay (default: %(default)s)")
    return p


def config_from_args(args: argparse.Namespace, command: str | None = None) -> BenchmarkConfig:
    methods = [MethodSpec("plain")]
    for kind, values in (
        ("sdfp", args.sdfp),
        ("prompt_lookup", args.prompt_lookup),
        ("early_exit", args.early_exit),
        ("draft_model", args.draft_model),
    ):
        methods += [MethodSpec.parse(kind, v) for v in values]
    if len(methods) == 1 or args.with_defaults:
        methods = default_methods(args.model) + [m for m in methods[1:] if m not in default_methods(args.model)]
    categories = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    for name, value, low in (("--per-category", args.per_category, 1), ("--max-new-tokens", args.max_new_tokens, 1),
                             ("--repeats", args.repeats, 1), ("--warmup-tokens", args.warmup_tokens, 1)):
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    return BenchmarkConfig(
        model=args.model,
        dtype={"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}.get(args.dtype, args.dtype),
        methods=methods,
        per_category=args.per_category,
        categories=categories,
        max_new_tokens=args.max_new_tokens,
        threads=args.threads,
        seed=args.seed,
        warmup_tokens=args.warmup_tokens,
        repeats=args.repeats,
        questions=args.questions,
        command=command,
        replay=args.replay,
        replay_tokens=tuple(int(x) for x in args.replay_tokens.split(",") if x.strip()),
        replay_thresholds=tuple(float(x) for x in args.replay_thresholds.split(",") if x.strip()),
    )


def _report_again(path: Path, command: str, *, plot: bool) -> int:
    """Recompute the figures of a written result from its measurements and rewrite its reports."""
    result = json.loads(path.read_text(encoding="utf-8"))
    result["summary"] = summarize(result)
    result["report_command"] = command
    stem = path.name.removesuffix(".json")
    write_outputs(result, path.parent, stem=stem, plot=plot)
    print(markdown_report(result))
    return 0


def main(argv: Sequence[str] | None = None, *, prog: str | None = None, default_out_dir: str = "benchmark-results") -> int:
    """Run the benchmark from the command line; print the Markdown report and where the files went."""
    parser = build_parser(prog, default_out_dir=default_out_dir)
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    program = shlex.split(prog) if prog else [Path(sys.argv[0]).as_posix()]
    command = shlex.join([*(["python"] if program[0].endswith(".py") else []), *program, *argv])
    if args.report_from:
        return _report_again(Path(args.report_from), command, plot=not args.no_plot)
    try:
        config = config_from_args(args, command)
        load_prompts(config.questions, per_category=config.per_category, categories=config.categories)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    stem = args.name or default_stem(config)
    partial = Path(args.out_dir) / f"{stem}.partial.json"

    def checkpoint(result: dict[str, Any]) -> None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(_compact_json(_stored(result)) + "\n", encoding="utf-8")

    result = run_benchmark(config, checkpoint=checkpoint)
    paths = write_outputs(result, args.out_dir, stem=stem, plot=not args.no_plot)
    partial.unlink(missing_ok=True)
    print(markdown_report(result))
    for kind, path in paths.items():
        print(f"wrote {path}", file=sys.stderr)
    return 0
