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
`python -m benchmarks.run --help`.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.methods import (
    SIMPLE_SELECTORS,
    Method,
    MethodSpec,
    build_method,
    default_methods,
    num_decoder_layers,
)
from benchmarks.prompts import MAIN_CATEGORIES, WARMUP_PROMPT, Prompt, encode_prompt, load_prompts
from benchmarks.report import (
    _RESULT_SCHEMA,
    _compact_json,
    _stored,
    default_stem,
    markdown_report,
    summarize,
    write_outputs,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# ------------------------------------------------------------------------------------------ measurement


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
    from sdfp_hf import SDFPAssistant

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


# CPU features that decide what pays here: native bf16 arithmetic (avx512_bf16, AMX tiles) or not
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")


def machine_info() -> dict[str, Any]:
    cpu, features = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        pass
    else:
        match = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
        flags = re.search(r"^flags\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if flags:
            features = [f for f in CPU_FEATURES if f in flags.group(1).split()]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    memory = None
    with contextlib.suppress(OSError, AttributeError, ValueError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cpu_features": features,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_bytes": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    import transformers

    from sdfp_hf import __version__

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
    """Settings of one benchmark run (see `python -m benchmarks.run --help`)."""

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
    stats = getattr(method.draft, "stats", None)
    sources = getattr(stats, "source_per_round", None)
    drafted, accepted = list(recorder.drafted_per_round), list(recorder.accepted_per_round)
    if not drafted and stats is not None:
        # tree rounds run sdfp-hf's own loop, not a candidate generator: the draft's statistics say what ran
        # (its rounds with candidates; every other new token came from a plain step)
        drafted, accepted = list(stats.drafted_per_round), list(stats.accepted_per_round)
        plain_steps = max(len(new) - len(drafted) - sum(accepted), 0)
        drafted, accepted = drafted + [0] * plain_steps, accepted + [0] * plain_steps
    peak = _rss_bytes("VmHWM") if reset else process_peak_rss_bytes()
    return {
        "time_s": elapsed,
        "new_tokens": len(new),
        "tokens": new,
        "drafted_per_round": drafted,
        "accepted_per_round": accepted,
        "nodes_by_source": {k: list(v) for k, v in stats.nodes_by_source.items()} if stats is not None else None,
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
        from sdfp_hf.models import load_model

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
            for method in active:  # a pass must not find its own prompts' outputs in a draft's suffix memory
                clear = getattr(method.draft, "clear_memory", None)
                if repeat and clear is not None:
                    clear()
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
    from sdfp_hf.replay import replay_acceptance

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
