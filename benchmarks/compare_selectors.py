"""Which layer selector makes the best draft? Every scoring method, acceptance at equal draft cost.

For one target model, this program

1. takes Spec-Bench first-turn questions in the model's chat template as evaluation prompts and lets the
   target answer them greedily (its own output: what a draft must predict);
2. builds calibration data for each calibration source asked for (data-free, other Spec-Bench
   questions answered by the model, or the raw text of other questions);
3. scores the layers with every method asked for (`sdfp_hf.fit.SCORING_METHODS`, plus variants given as
   ``method/labels`` or ``fisher_gate/global``);
4. for each budget (a fraction of the decoder layers' bytes skipped: equal draft cost), selects the skip
   set at each granularity and replays greedy speculative decoding exactly (`sdfp_hf.selection.replay_rounds`)
   to get the accepted tokens per round at a constant draft length.

It prints a table and writes ``<out>.json`` (every number, the command, the machine) and ``<out>.md``.

    python -m benchmarks.compare_selectors --model smollm2-135m --out benchmarks/results/selectors_smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from sdfp_hf import DraftingOptions, SDFPAssistant
from sdfp_hf.calibration import DEFAULT_NUM_SEQUENCES, DEFAULT_SEQUENCE_LENGTH, build_calibration
from sdfp_hf.fit import SCORING_METHODS, score_layers
from sdfp_hf.models import load_model
from sdfp_hf.replay import one_step_agreement, replay_rounds, target_trajectories
from sdfp_hf.selection import branch_costs, select_skips

ROOT = Path(__file__).resolve().parents[1]

DRAFT_ONLY = DraftingOptions(prompt_lookup=0, adaptive=False)
DEFAULT_QUESTIONS = ROOT.parent / "shared" / "data" / "spec_bench" / "question.jsonl"
CALIBRATIONS = ("data-free", "bos", "chat", "raw")


def _with_suffix(path: Path, suffix: str) -> Path:
    """`path` with `suffix` appended (model names hold dots: `Path.with_suffix` would cut them)."""
    return path.with_name(path.name + suffix)


def load_questions(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split_questions(questions: list[dict], num_eval: int, num_cal: int) -> tuple[list[dict], list[dict]]:
    """Evaluation and calibration questions, disjoint, each spread evenly over the whole file."""
    stride = max(len(questions) // max(num_eval, 1), 1)
    eval_idx = [i * stride for i in range(num_eval)]
    rest = [i for i in range(len(questions)) if i not in set(eval_idx)]
    cal_stride = max(len(rest) // max(num_cal, 1), 1)
    cal_idx = [rest[(i * cal_stride + cal_stride // 2) % len(rest)] for i in range(num_cal)]
    return [questions[i] for i in eval_idx], [questions[i] for i in cal_idx]


def chat_ids(tokenizer, text: str, max_tokens: int) -> torch.Tensor:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    )
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return torch.tensor(list(ids)[-max_tokens:])


def parse_method(spec: str) -> tuple[str, dict]:
    """``method`` or ``method/option+option``: labels (``fit/sampled``), ``global`` (not local),
    ``samplesN`` (label draws), ``seedN`` (e.g. ``random/seed1``), ``bsN`` (batch size), ``quad`` (select with
    the gate Fisher matrix's interactions), ``diag`` (by single-branch scores, the default)."""
    name, _, options = spec.partition("/")
    if name not in SCORING_METHODS:
        raise SystemExit(f"unknown method {name!r}: choose from {', '.join(SCORING_METHODS)}")
    kwargs: dict = {}
    select: dict = {}
    for option in filter(None, options.split("+")):
        if option in ("data", "sampled", "argmax"):
            kwargs["labels"] = option
        elif option == "global":
            kwargs["local"] = False
        elif option.startswith("samples"):
            kwargs["num_label_samples"] = int(option[7:])
        elif option.startswith("seed"):
            kwargs["seed"] = int(option[4:])
        elif option.startswith("bs"):
            kwargs["batch_size"] = int(option[2:])
        elif option == "diag":
            select["interactions"] = False
        elif option == "quad":
            select["interactions"] = True
        else:
            raise SystemExit(f"unknown option {option!r} in {spec!r}")
    return name, kwargs, select


def calibration_data(name: str, model, tokenizer, questions: list[dict], args):
    """Calibration of one kind: data-free[-greedy] (from the chat template's assistant header), bos (data-free
    from the start token, no tokenizer), chat[-greedy] (other Spec-Bench questions answered by
    the model), raw (their text, packed); ``@N`` picks the seed, ``#N`` the number of sequences and ``~N``
    their length (``bos@1#16~64``)."""
    name, _, length = name.partition("~")
    name, _, count = name.partition("#")
    name, _, seed = name.partition("@")
    common = dict(tokenizer=tokenizer, num_sequences=int(count) if count else args.num_sequences,
                  sequence_length=int(length) if length else args.sequence_length,
                  seed=int(seed) if seed else args.seed)
    greedy = dict(temperature=0.0, sampled_tokens=8) if name.endswith("-greedy") else {}
    base = name.removesuffix("-greedy")
    texts = [q["turns"][0] for q in questions]
    if base == "data-free":
        return build_calibration(model, None, **common, **greedy)
    if base == "bos":  # data-free without a tokenizer, as `SDFPAssistant.from_target(model)` profiles
        return build_calibration(model, None, **{**common, "tokenizer": None}, **greedy)
    if base == "chat":
        return build_calibration(model, texts, chat_template=True, **common, **greedy)
    if base == "raw":
        return build_calibration(model, texts, **common)
    raise SystemExit(f"unknown calibration {name!r}: choose from {CALIBRATIONS} (and -greedy variants)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--eval-prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--calibrations", default="data-free,chat", help=f"comma list of {CALIBRATIONS}")
    parser.add_argument("--num-sequences", type=int, default=DEFAULT_NUM_SEQUENCES)
    parser.add_argument("--sequence-length", type=int, default=DEFAULT_SEQUENCE_LENGTH)
    parser.add_argument(
        "--methods",
        default="fit,fit/sampled,fit/argmax,fit_trace,fisher_gate,fisher_gate/global,fisher_gate/argmax,"
        "block_influence,random/seed0,random/seed1,random/seed2,last,evenly_spaced",
    )
    parser.add_argument("--budgets", default="0.1,0.2,0.3", help="fractions of the decoder layers' bytes skipped")
    parser.add_argument("--granularities", default="layer,sublayer")
    parser.add_argument("--protect-first", type=int, default=1)
    parser.add_argument("--protect-last", type=int, default=0)
    parser.add_argument("--draft-length", type=int, default=6, help="constant draft length of the replay")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--screen", action="store_true",
        help="measure only the draft's one-step agreement (one forward per draft) instead of replaying rounds",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--time-profile", action="store_true",
        help="instead of the comparison, time `profile(model)` with its defaults (auto included) and report its "
        "peak memory",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.compare_selectors " + shlex.join(argv if argv is not None else sys.argv[1:])

    dtype = getattr(torch, args.dtype)
    model, tokenizer = load_model(args.model, dtype=dtype)
    if args.time_profile:
        return time_profile(model, args, command)
    num_layers = model.config.num_hidden_layers
    costs = branch_costs(model)
    questions = load_questions(args.questions)
    eval_q, cal_q = split_questions(questions, args.eval_prompts, args.num_sequences * 4)
    prompts = [chat_ids(tokenizer, q["turns"][0], 256) for q in eval_q]
    t = time.perf_counter()
    trajectories = target_trajectories(model, prompts, args.new_tokens)
    print(f"target greedy output: {len(prompts)} prompts, {trajectories.num_new_tokens} tokens, "
          f"{time.perf_counter() - t:.1f}s", flush=True)

    budgets = [float(b) for b in args.budgets.split(",")]
    granularities = args.granularities.split(",")
    rows: list[dict] = []
    replayed: dict[tuple, dict] = {}

    def evaluate(skip) -> dict:
        key = (skip.attention, skip.mlp)
        if key not in replayed and args.screen:
            draft = SDFPAssistant.from_target(model, **skip.to_lists(), drafting=DRAFT_ONLY)
            agreement = one_step_agreement(draft, trajectories)
            replayed[key] = {"mean_accepted": agreement, "acceptance_rate": agreement, "one_step_agreement": agreement}
        if key not in replayed:
            draft = SDFPAssistant.from_target(model, **skip.to_lists(), drafting=DRAFT_ONLY)
            samples = replay_rounds(draft, trajectories, max_draft=max(args.draft_length, 8))
            stats = samples.stats(args.draft_length)
            replayed[key] = {
                "mean_accepted": stats["mean_accepted"],
                "acceptance_rate": stats["acceptance_rate"],
                "alpha": samples.per_token_acceptance(),
                "mean_accepted_k4": samples.stats(4)["mean_accepted"],
                "mean_accepted_k8": samples.stats(8)["mean_accepted"],
            }
        return replayed[key]

    for cal_name in args.calibrations.split(","):
        t = time.perf_counter()
        data = calibration_data(cal_name, model, tokenizer, cal_q, args)
        cal_seconds = time.perf_counter() - t
        print(f"calibration {cal_name}: {data.provenance} ({cal_seconds:.1f}s)", flush=True)
        for spec in args.methods.split(","):
            name, kwargs, select = parse_method(spec)
            if name in ("random", "last", "evenly_spaced") and cal_name != args.calibrations.split(",")[0]:
                continue  # data-free baselines do not depend on the calibration
            scores = score_layers(model, data, name, progress=False, **{"seed": args.seed, **kwargs})
            for granularity in granularities:
                for budget in budgets:
                    if granularity == "layer":
                        skip = select_skips(scores, num_skip=int(round(budget * num_layers)), granularity="layer",
                                            protect_first=args.protect_first, protect_last=args.protect_last,
                                            **select)
                    else:
                        skip = select_skips(scores, skip_ratio=budget, granularity="sublayer", costs=costs,
                                            protect_first=args.protect_first, protect_last=args.protect_last,
                                            **select)
                    result = evaluate(skip)
                    row = {
                        "calibration": cal_name if name not in ("random", "last", "evenly_spaced") else "none",
                        "method": spec,
                        "granularity": granularity,
                        "budget": budget,
                        "bytes_skipped": skip.saved_fraction(*costs),
                        **skip.to_lists(),
                        **result,
                        "scoring_seconds": scores.seconds,
                    }
                    rows.append(row)
                    if args.out:  # keep what is done so far
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        _with_suffix(args.out, ".partial.json").write_text(json.dumps(rows, indent=1) + "\n")
                    print(f"{row['calibration']:>9} {spec:<22} {granularity:<8} budget {budget:.2f} "
                          f"(bytes {row['bytes_skipped']:.3f}): accepted/round {result['mean_accepted']:.2f} "
                          f"rate {result['acceptance_rate']:.2f}  [{scores.seconds:.1f}s]", flush=True)

    report = {
        "command": command,
        "model": args.model,
        "dtype": args.dtype,
        "num_layers": num_layers,
        "eval_question_ids": [q["question_id"] for q in eval_q],
        "new_tokens": trajectories.num_new_tokens,
        "draft_length": args.draft_length,
        "screen": args.screen,
        "machine": f"{platform.machine()} {platform.processor() or ''}, {args.threads} torch threads".strip(),
        "torch": torch.__version__,
        "rows": rows,
    }
    table = markdown(report, budgets, granularities)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _with_suffix(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
        _with_suffix(args.out, ".md").write_text(table)
        _with_suffix(args.out, ".partial.json").unlink(missing_ok=True)


def time_profile(model, args, command: str) -> None:
    """`profile(model)` with every default: wall time by stage and peak resident memory."""
    import resource
    import warnings

    from sdfp_hf.profiler import profile

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def hwm_mib() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    loaded = rss_mib()
    try:  # reset the peak (VmHWM) so that it measures profiling, not loading the model
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = profile(model)
    elapsed = time.perf_counter() - start
    peak_profiling = hwm_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "command": command,
        "model": args.model,
        "dtype": args.dtype,
        "machine": f"{platform.machine()}, {args.threads} torch threads",
        "seconds": elapsed,
        "timings": result.timings,
        "rss_after_loading_mib": loaded,
        "peak_rss_while_profiling_mib": peak_profiling,
        "peak_rss_of_process_mib": peak,
        "summary": result.summary(),
        "warnings": [str(w.message) for w in caught],
        "calibration": result.calibration,
        "skip": result.skip.to_lists(),
        "predicted": {k: v for k, v in (result.predicted or {}).items() if k != "table"},
        "candidates": result.candidates,
    }
    print(json.dumps(report, indent=2, default=str))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _with_suffix(args.out, ".json").write_text(json.dumps(report, indent=2, default=str) + "\n")


def markdown(report: dict, budgets: list[float], granularities: list[str]) -> str:
    """Accepted tokens per round (constant draft length) by method, at each budget and granularity."""
    metric = (
        "One-step agreement (the share of the target's greedy tokens the draft predicts at exact context)"
        if report.get("screen")
        else f"Accepted draft tokens per round (constant draft length {report['draft_length']}, greedy, exact replay)"
    )
    lines = [
        f"# Selector comparison: {report['model']} ({report['dtype']})",
        "",
        f"{metric} on "
        f"{len(report['eval_question_ids'])} Spec-Bench prompts in the chat template ({report['new_tokens']} target "
        "tokens). Budget = fraction of the decoder layers' parameter bytes skipped (equal draft cost); "
        "'layer' skips whole layers, 'sublayer' attention and MLP branches by score per byte.",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    header = "| calibration | method | " + " | ".join(
        f"{g} {b:.2f}" for g in granularities for b in budgets
    ) + " | mean |"
    lines += [header, "|" + "---|" * (3 + len(budgets) * len(granularities))]
    groups: dict[tuple[str, str], dict] = {}
    for row in report["rows"]:
        groups.setdefault((row["calibration"], row["method"]), {})[(row["granularity"], row["budget"])] = row
    for (cal, method), cells in groups.items():
        values = [cells.get((g, b), {}).get("mean_accepted") for g in granularities for b in budgets]
        shown = ["" if v is None else f"{v:.2f}" for v in values]
        known = [v for v in values if v is not None]
        mean = sum(known) / len(known) if known else float("nan")
        lines.append(f"| {cal} | {method} | " + " | ".join(shown) + f" | {mean:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
