"""The benchmark's figures and reports: per-category summaries, Markdown tables, charts, result files."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.prompts import MAIN_CATEGORIES

if TYPE_CHECKING:
    pass


_RESULT_SCHEMA = 1


# --------------------------------------------------------------------------------------------- figures

_METRIC = None


def _metric():
    global _METRIC
    if _METRIC is None:
        import evaluate

        from sdfp_hf.metrics import path

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
    - ``mean_draft_length``: drafted tokens per round that drafted (tree rounds: the mean tree size);
    - ``nodes_by_source``: per candidate source, [tokens proposed, tokens accepted] (tree rounds);
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
    nodes: dict[str, list[int]] = {}
    for r in rows:
        by_source.update(r.get("rounds_by_source") or {})
        for name, (_, proposed, taken) in (r.get("nodes_by_source") or {}).items():
            row = nodes.setdefault(name, [0, 0])
            row[0] += proposed
            row[1] += taken
    out.update(
        rounds_by_source=dict(sorted(by_source.items())) if by_source else None,
        nodes_by_source=dict(sorted(nodes.items())) if nodes else None,
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
    features = machine.get("cpu_features")  # absent from results written before it was recorded
    cpu = machine["cpu"] + (f" ({', '.join(features) or 'no AVX2'})" if features is not None else "")
    return (
        f"{result['model']['name']} ({result['model']['model_type']}, {result['model']['num_layers']} layers), "
        f"{result['model']['dtype']}, {cfg['per_category']} prompt(s) per category, {cfg['max_new_tokens']} new "
        f"tokens, greedy, batch 1, {cfg['repeats']} repeat(s); {cpu}, {machine['usable_cores']} cores, "
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
        "| method | category | speedup | tokens/s | tokens/round | accepted/round | acceptance | draft length or "
        "tree size (mean; setting; per source) | identical to plain | draft build | extra weights | spec. cache peak | peak RSS |"
    )
    lines += ["All figures:", "", header, "| --- | --- |" + " ---: |" * 11]
    for name, per_cat in summary.items():
        method = methods[name]
        for category in categories:
            f = per_cat.get(category)
            if f is None:
                continue
            draft_len = "—" if method["kind"] == "plain" else f"{_fmt(f.get('mean_draft_length'))}; {_draft_setting(method)}"
            if f.get("nodes_by_source"):
                draft_len += "; accepted/proposed " + ", ".join(
                    f"{k} {taken}/{proposed}" for k, (proposed, taken) in f["nodes_by_source"].items()
                )
            elif f.get("rounds_by_source"):
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


def default_stem(config: Any) -> str:
    """``MODEL_DTYPE_NxTOKENS``, e.g. ``smollm2-135m_bf16_3x128``, from a config (or a result's `"config"`)."""
    cfg = config if isinstance(config, dict) else config.to_dict()
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
