"""The methods the benchmark compares: what each is, and how it is built on a target."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


#: The separate draft model used by default for a catalogue target (same tokenizer).
DEFAULT_DRAFT_MODELS = {"qwen2.5-coder-1.5b": "qwen2.5-coder-0.5b"}
#: Layer-skip selectors of the harness itself; any scoring method of the profiler (`sdfp_hf.fit.SCORING_METHODS`)
#: is a selector too, e.g. ``gate_flips:0.2``, or ``gate_flips:auto`` (what `SDFPAssistant.from_target(model)` does).
SIMPLE_SELECTORS = ("evenly", "last")
#: Method kinds, in the order they are listed in reports.
METHOD_KINDS = ("plain", "sdfp", "prompt_lookup", "early_exit", "draft_model")

_ASSISTANT_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


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
        """Parse ``ARG[:key=value,...]`` (for sdfp, ``SELECTOR:RATIO[:key=value,...]``).

        Options are separated by ``,`` or ``:`` (``gate_flips:auto:prompt_lookup=0:tree=false``).
        """
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
        for item in filter(None, re.split("[,:]", rest)):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"method option {item!r} in {text!r} is not key=value")
            options.append((key.strip(), _coerce(value.strip())))
        spec = cls(kind, arg, tuple(options))
        spec._check()
        return spec

    def _check(self) -> None:
        if self.kind == "sdfp":
            from sdfp_hf.fit import SCORING_METHODS

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
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"skip ratio must be in [0, 1), got {ratio} in {where!r}")
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
    from benchmarks.catalogue import resolve_alias

    return resolve_alias(name)


def num_decoder_layers(model: PreTrainedModel) -> int:
    from sdfp_hf.architectures import get_architecture

    return len(get_architecture(model).decoder_layers(model))


def select_skip_layers(model: PreTrainedModel, selector: str, ratio: float) -> list[int]:
    """The decoder layers an sdfp draft skips, chosen by `selector` for a skip `ratio`.

    The harness's own selectors: ``"evenly"`` (evenly spaced, never the first or the last layer) and
    ``"last"`` (the layers just before the last one). The profiler's scoring methods are run by
    `build_method` through `SDFPAssistant.from_target`, as a user would.
    """
    num_layers = num_decoder_layers(model)
    k = round(ratio * num_layers)
    if k == 0 and ratio == 0:  # nothing skipped: a plan that only quantizes (`evenly:0:quantize=int4`)
        return []
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
        from sdfp_hf import SDFPAssistant

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
            from sdfp_hf.models import load_model

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

    from sdfp_hf import SDFPAssistant
    from sdfp_hf.profiler import profile

    taken = {"cls", "model", "skip_layers", "skip_attention", "skip_mlp", "mask", "drafting", "profile_kwargs",
             "calibration", "method", "skip_ratio"}
    direct = [
        p
        for p in (*inspect.signature(SDFPAssistant.from_target).parameters, *inspect.signature(profile).parameters)
        if p not in taken and p != "score_kwargs"
    ]
    try:
        from sdfp_hf import DraftingOptions
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
