"""The benchmark harness computes its figures correctly (tiny random models; no timing assertions)."""

import json
import math
import re

import pytest
import torch
from tiny_models import NUM_LAYERS, prompt, tiny_model, tiny_tokenizer
from transformers import DynamicCache

from benchmarks.harness import (
    BenchmarkConfig,
    RoundRecorder,
    build_parser,
    cache_nbytes,
    config_from_args,
    main,
    run_benchmark,
)
from benchmarks.methods import (
    MethodSpec,
    build_method,
    default_methods,
    extra_weight_bytes,
    select_skip_layers,
)
from benchmarks.prompts import MAIN_CATEGORIES, Prompt, load_prompts
from benchmarks.report import default_stem, markdown_report, summarize, write_outputs
from sdfp_hf import DraftingOptions, SDFPAssistant

# ------------------------------------------------------------------------------------ figures from known runs


def _run(method, qid, category, time_s, tokens, drafted=(), accepted=(), repeat=0):
    return {
        "method": method,
        "question_id": qid,
        "category": category,
        "repeat": repeat,
        "time_s": time_s,
        "new_tokens": len(tokens),
        "tokens": list(tokens),
        "drafted_per_round": list(drafted),
        "accepted_per_round": list(accepted),
        "spec_cache_peak_bytes": 0,
        "peak_rss_bytes": 1000,
    }


def _result(runs, methods=("plain", "spec")):
    return {"methods": [{"name": m} for m in methods], "runs": runs}


def test_speedup_is_the_ratio_of_total_throughputs():
    runs = [
        _run("plain", 1, "qa", 4.0, [1, 2, 3, 4]),
        _run("spec", 1, "qa", 1.0, [1, 2, 3, 4], drafted=[3], accepted=[3]),
        _run("plain", 2, "qa", 2.0, [5, 6]),
        _run("spec", 2, "qa", 3.0, [5, 6], drafted=[1], accepted=[1]),
        _run("plain", 3, "rag", 6.0, [7]),
        _run("spec", 3, "rag", 2.0, [7], drafted=[], accepted=[]),
    ]
    summary = summarize(_result(runs))
    assert summary["spec"]["qa"]["speedup"] == pytest.approx(6.0 / 4.0)  # not the mean of 4.0 and 0.67
    assert summary["spec"]["rag"]["speedup"] == pytest.approx(3.0)
    assert summary["spec"]["all"]["speedup"] == pytest.approx(12.0 / 6.0)
    assert summary["spec"]["qa"]["tokens_per_s"] == pytest.approx(6 / 4.0)
    assert summary["plain"]["all"]["speedup"] == 1.0
    assert summary["plain"]["all"]["tokens_per_s"] == pytest.approx(7 / 12.0)
    assert list(summary["spec"]) == ["qa", "rag", "all"]


def test_speedup_stays_fair_when_an_output_stops_at_another_length():
    runs = [
        _run("plain", 1, "qa", 2.0, [1, 2]),  # plain stopped early (end of sequence)
        _run("spec", 1, "qa", 4.0, [1, 3, 4, 5, 6, 7, 8, 9], drafted=[3], accepted=[1]),  # drifted, ran on
    ]
    summary = summarize(_result(runs))
    assert summary["spec"]["qa"]["speedup"] == pytest.approx((8 / 4.0) / (2 / 2.0))  # 2x the throughput


def test_acceptance_from_known_round_counts():
    runs = [
        _run("plain", 1, "qa", 1.0, list(range(10))),
        # 4 rounds, one of which drafted nothing: 10 new tokens = 4 rounds + 6 accepted
        _run("spec", 1, "qa", 1.0, list(range(10)), drafted=[4, 0, 3, 5], accepted=[4, 0, 1, 1]),
        _run("plain", 2, "mt_bench", 1.0, [1, 2, 3, 4, 5]),
        _run("spec", 2, "mt_bench", 1.0, [1, 2, 3, 9, 9], drafted=[6, 2], accepted=[2, 1]),
    ]
    f = summarize(_result(runs))["spec"]
    assert f["qa"]["drafted"] == 12 and f["qa"]["accepted"] == 6
    assert f["qa"]["acceptance_rate"] == pytest.approx(0.5)
    assert f["qa"]["mean_accepted"] == pytest.approx(6 / 3)  # per round that drafted
    assert f["qa"]["tokens_per_round"] == pytest.approx(10 / 4)  # per verification (target) pass
    assert f["qa"]["mean_draft_length"] == pytest.approx(12 / 3)
    assert f["all"]["acceptance_rate"] == pytest.approx(9 / 20)
    assert f["all"]["identical"] == 1
    assert f["mt_bench"]["identical"] == 0
    assert f["qa"]["identical"] == 1


def test_repeats_pair_with_the_same_repeat_of_plain():
    runs = [
        _run("plain", 1, "qa", 1.0, [1], repeat=0),
        _run("plain", 1, "qa", 3.0, [1], repeat=1),
        _run("spec", 1, "qa", 1.0, [1], repeat=0),
        _run("spec", 1, "qa", 1.0, [1], repeat=1),
    ]
    assert summarize(_result(runs))["spec"]["all"]["speedup"] == pytest.approx(2.0)


# ----------------------------------------------------------------------------------------------- method specs


def test_method_spec_parsing():
    spec = MethodSpec.parse("sdfp", "evenly:0.25:num_assistant_tokens=8,num_assistant_tokens_schedule=constant")
    assert spec.arg == "evenly:0.25"
    assert dict(spec.options) == {"num_assistant_tokens": 8, "num_assistant_tokens_schedule": "constant"}
    assert spec.name == "sdfp:evenly:0.25[num_assistant_tokens=8,num_assistant_tokens_schedule=constant]"
    assert dict(MethodSpec.parse("sdfp", "gate_flips:auto:prompt_lookup=0:tree=false").options) == {
        "prompt_lookup": 0, "tree": False
    }
    assert MethodSpec.parse("prompt_lookup", "10").name == "prompt_lookup:10"
    assert dict(MethodSpec.parse("early_exit", "0.5:assistant_confidence_threshold=0.0").options) == {
        "assistant_confidence_threshold": 0.0
    }
    assert MethodSpec.parse("draft_model", "qwen2.5-coder-0.5b").arg == "qwen2.5-coder-0.5b"


@pytest.mark.parametrize(
    "kind, text, message",
    [
        ("sdfp", "evenly", "SELECTOR:RATIO"),
        ("sdfp", "evenly:1.5", "skip ratio must be in [0, 1)"),
        ("sdfp", "evenly:lots", "is not a number"),
        ("sdfp", "evenly:0.25:tokens", "is not key=value"),
        ("prompt_lookup", "ten", "positive number of tokens"),
        ("early_exit", "-2", "must be positive"),
        ("speculate", "x", "unknown method kind"),
    ],
)
def test_bad_method_specs_say_how_to_fix(kind, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MethodSpec.parse(kind, text)


def test_default_methods_add_the_separate_draft_for_qwen_1_5b():
    kinds = [m.kind for m in default_methods("qwen2.5-coder-1.5b")]
    assert kinds == ["plain", "sdfp", "prompt_lookup", "early_exit", "draft_model"]
    assert "draft_model" not in [m.kind for m in default_methods("smollm2-135m")]


def test_command_line_to_config():
    parser = build_parser()
    args = parser.parse_args(
        ["--model", "smollm2-135m", "--dtype", "fp32", "--per-category", "5", "--sdfp", "evenly:0.25",
         "--sdfp", "last:0.4", "--prompt-lookup", "10", "--categories", "qa,rag"]
    )
    config = config_from_args(args, "python benchmarks/run.py ...")
    assert config.dtype == "float32"
    assert config.per_category == 5 and config.max_new_tokens == 128
    assert [m.name for m in config.methods] == ["plain", "sdfp:evenly:0.25", "sdfp:last:0.4", "prompt_lookup:10"]
    assert config.categories == ("qa", "rag")
    defaults = config_from_args(parser.parse_args(["--model", "qwen2.5-coder-1.5b"]))
    assert [m.kind for m in defaults.methods][-1] == "draft_model"


# ------------------------------------------------------------------------------------------------ selectors


def test_simple_selectors():
    model = tiny_model("llama")
    evenly = select_skip_layers(model, "evenly", 0.34)
    assert len(evenly) == 2 and 0 not in evenly and NUM_LAYERS - 1 not in evenly
    assert select_skip_layers(model, "last", 0.34) == [NUM_LAYERS - 3, NUM_LAYERS - 2]
    with pytest.raises(ValueError, match="unknown layer selector 'magic'"):
        select_skip_layers(model, "magic", 0.25)
    with pytest.raises(ValueError, match="skips 0"):
        select_skip_layers(model, "evenly", 0.01)
    with pytest.raises(ValueError, match="unknown layer selector 'magic'"):
        MethodSpec.parse("sdfp", "magic:0.25")
    with pytest.raises(ValueError, match="not a number"):
        MethodSpec.parse("sdfp", "evenly:auto")  # only the profiler chooses a ratio


def test_profiler_selectors_profile_the_model_as_from_target_does():
    model = tiny_model("llama")
    spec = MethodSpec.parse("sdfp", "gate_flips:0.34:num_sequences=2,sequence_length=8,progress=false")
    method = build_method(spec, model, dtype="fp32")
    expected = SDFPAssistant.from_target(model, method="gate_flips", skip_ratio=0.34, num_sequences=2,
                                         sequence_length=8, progress=False)
    assert method.info["skip_layers"] == list(expected.sdfp_config.skip_layers) and len(method.info["skip_layers"]) == 2
    assert method.info["selector"] == "gate_flips" and method.build_time_s > 0


def test_draft_vocab_option_scores_the_lowest_token_ids():
    model = tiny_model("llama")
    method = build_method(MethodSpec.parse("sdfp", "evenly:0.34:draft_vocab=16"), model, dtype="fp32")
    assert method.draft.sdfp_config.draft_vocab == list(range(16))
    assert build_method(MethodSpec.parse("sdfp", "evenly:0.34"), model, dtype="fp32").draft.sdfp_config.draft_vocab is None


# ------------------------------------------------------------------------------------------------- prompts


def test_load_prompts_interleaves_categories_and_spreads_mt_bench(tmp_path):
    lines = []
    qid = 0
    for sub in ["writing", "roleplay", "reasoning"]:
        for _ in range(3):
            qid += 1
            lines.append({"question_id": qid, "category": sub, "turns": [f"{sub} {qid}", "second turn"]})
    for cat in MAIN_CATEGORIES[1:]:
        for _ in range(4):
            qid += 1
            lines.append({"question_id": qid, "category": cat, "turns": [f"{cat} {qid}"]})
    path = tmp_path / "question.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")

    prompts = load_prompts(path, per_category=2)
    assert [p.category for p in prompts] == list(MAIN_CATEGORIES) * 2
    mt = [p for p in prompts if p.category == "mt_bench"]
    assert [p.subcategory for p in mt] == ["writing", "roleplay"]
    assert mt[0].text == "writing 1"  # the first turn only
    with pytest.raises(ValueError, match="only 4 questions in category 'qa'"):
        load_prompts(path, per_category=5, categories=["qa"])
    with pytest.raises(ValueError, match="unknown categories"):
        load_prompts(path, categories=["poetry"])


def test_spec_bench_has_the_six_main_categories():
    try:
        prompts = load_prompts(per_category=5)
    except FileNotFoundError:
        pytest.skip("Spec-Bench question.jsonl not available")
    assert len(prompts) == 30
    assert {p.category for p in prompts} == set(MAIN_CATEGORIES)
    assert len({p.subcategory for p in prompts if p.category == "mt_bench"}) == 5


# ---------------------------------------------------------------------------------------------- measurement


def test_extra_weights_of_an_sdfp_draft_are_zero_and_of_a_separate_model_all():
    model = tiny_model("llama")
    draft = SDFPAssistant.from_target(model, skip_layers=[2, 4])
    assert extra_weight_bytes(model, draft) == 0
    other = tiny_model("llama", seed=1)
    expected = sum(t.numel() * t.element_size() for t in [*other.parameters(), *other.buffers()])
    assert extra_weight_bytes(model, other) == pytest.approx(expected, rel=0.01)


def test_cache_nbytes_counts_every_entry_of_an_ordinary_cache():
    model = tiny_model("qwen2")
    out = model(prompt(10), use_cache=True)
    cache = out.past_key_values if hasattr(out, "past_key_values") else out.cache
    assert isinstance(cache, DynamicCache)
    cfg = model.config
    per_token = 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    assert cache_nbytes(cache) == NUM_LAYERS * 10 * per_token


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_round_recorder_matches_the_draft_statistics(arch):
    model = tiny_model(arch)
    draft = SDFPAssistant.from_target(model, skip_layers=[3], drafting=DraftingOptions(tree=False))  # the chain
    x = prompt(12)
    with RoundRecorder() as recorder:
        out = model.generate(x, max_new_tokens=30, do_sample=False, assistant_model=draft)
    new_tokens = out.shape[1] - x.shape[1]
    drafting = [(d, a) for d, a in zip(recorder.drafted_per_round, recorder.accepted_per_round) if d]
    assert [d for d, _ in drafting] == draft.stats.drafted_per_round
    assert [a for _, a in drafting] == draft.stats.accepted_per_round
    # every verification round adds its accepted tokens plus one of the target's own
    assert new_tokens == len(recorder.drafted_per_round) + sum(recorder.accepted_per_round)


@pytest.mark.parametrize(
    "kwargs",
    [dict(prompt_lookup_num_tokens=4), dict(assistant_early_exit=3), "draft_model"],
    ids=["prompt_lookup", "early_exit", "draft_model"],
)
def test_round_recorder_counts_transformers_generators(kwargs):
    model = tiny_model("llama")
    if kwargs == "draft_model":
        kwargs = dict(assistant_model=tiny_model("llama", seed=3))
    x = torch.cat([prompt(8), prompt(8)], dim=1)  # a repeated prompt gives prompt lookup something to find
    plain = model.generate(x, max_new_tokens=24, do_sample=False)
    with RoundRecorder() as recorder:
        out = model.generate(x, max_new_tokens=24, do_sample=False, **kwargs)
    assert torch.equal(out, plain)
    assert recorder.drafted_per_round, "no round was recorded"
    assert out.shape[1] - x.shape[1] == len(recorder.drafted_per_round) + sum(recorder.accepted_per_round)
    assert all(0 <= a <= d for d, a in zip(recorder.drafted_per_round, recorder.accepted_per_round))


def test_round_recorder_restores_the_classes():
    from transformers.generation.candidate_generator import AssistedCandidateGenerator

    before = AssistedCandidateGenerator.__dict__["update_candidate_strategy"]
    with RoundRecorder():
        assert AssistedCandidateGenerator.__dict__["update_candidate_strategy"] is not before
    assert AssistedCandidateGenerator.__dict__["update_candidate_strategy"] is before


# ------------------------------------------------------------------------------------------- a whole run


@pytest.fixture(scope="module")
def tiny_result():
    model = tiny_model("llama")
    tokenizer = tiny_tokenizer()
    texts = ["the cat sat on the mat and the cat sat", "abc abc abc abc", "hello world, hello", "one two three"]
    prompts = [Prompt(i, cat, cat, t) for i, (t, cat) in enumerate(zip(texts, ["qa", "rag", "qa", "rag"]))]
    config = BenchmarkConfig(
        model="tiny-llama",
        dtype="float32",
        methods=[
            MethodSpec("plain"),
            MethodSpec.parse("sdfp", "evenly:0.34"),
            MethodSpec.parse("sdfp", "last:0.34:num_assistant_tokens=3,num_assistant_tokens_schedule=constant"),
            MethodSpec.parse("prompt_lookup", "4"),
            MethodSpec.parse("early_exit", "3"),
            MethodSpec.parse("draft_model", "tiny-draft"),
            MethodSpec.parse("early_exit", "0.5:num_assistant_tokens=2"),
        ],
        per_category=2,
        categories=("qa", "rag"),
        max_new_tokens=20,
        threads=1,
        warmup_tokens=4,
        command="pytest",
    )
    partials = []
    result = run_benchmark(
        config, model=model, tokenizer=tokenizer, prompts=prompts,
        draft_models={"tiny-draft": tiny_model("llama", seed=5)}, log=lambda _: None, checkpoint=partials.append,
    )
    result["_partials"] = partials
    return result


def test_checkpoints_after_every_prompt(tiny_result):
    partials = tiny_result["_partials"]
    n_methods = len(tiny_result["methods"])
    assert [len(p["runs"]) for p in partials] == [n_methods * i for i in range(1, 5)]
    assert all(p["complete"] is False for p in partials) and tiny_result["complete"] is True
    assert partials[0]["summary"]["plain"]["all"]["prompts"] == 1
    assert partials[-1]["runs"] == tiny_result["runs"]


def test_default_stem():
    assert default_stem(BenchmarkConfig(model="qwen2.5-coder-1.5b", dtype="bfloat16", per_category=5)) == (
        "qwen2.5-coder-1.5b_bf16_5x128"
    )
    assert default_stem({"model": "/models/My Model", "dtype": "float32", "per_category": 3, "max_new_tokens": 64}) == (
        "My-Model_fp32_3x64"
    )


def test_run_records_every_method_on_every_prompt(tiny_result):
    names = [m["name"] for m in tiny_result["methods"]]
    assert all(m["error"] is None for m in tiny_result["methods"]), tiny_result["methods"]
    assert len(tiny_result["runs"]) == len(names) * 4
    for name in names:
        assert sorted(r["question_id"] for r in tiny_result["runs"] if r["method"] == name) == [0, 1, 2, 3]
    # interleaved: the method that goes first changes from prompt to prompt
    firsts = [tiny_result["runs"][i * len(names)]["method"] for i in range(4)]
    assert len(set(firsts)) == 4


def test_run_is_lossless_in_fp32_and_counts_are_consistent(tiny_result):
    for run in tiny_result["runs"]:
        assert run["identical"], run["method"]
        if run["method"] != "plain":
            assert run["new_tokens"] == len(run["drafted_per_round"]) + sum(run["accepted_per_round"])


def test_run_measures_memory_and_settings(tiny_result):
    methods = {m["name"]: m for m in tiny_result["methods"]}
    assert methods["sdfp:evenly:0.34"]["extra_weight_bytes"] == 0
    assert methods["draft_model:tiny-draft"]["extra_weight_bytes"] > 0
    assert methods["prompt_lookup:4"]["extra_weight_bytes"] == 0
    assert methods["early_exit:3"]["info"]["exit_layer"] == 3
    assert methods["early_exit:0.5[num_assistant_tokens=2]"]["info"]["exit_layer"] == NUM_LAYERS // 2
    assert methods["sdfp:last:0.34[num_assistant_tokens=3,num_assistant_tokens_schedule=constant]"]["info"][
        "num_assistant_tokens"] == 3
    summary = tiny_result["summary"]
    assert summary["prompt_lookup:4"]["all"]["spec_cache_peak_bytes"] == 0
    assert summary["sdfp:evenly:0.34"]["all"]["spec_cache_peak_bytes"] > 0
    assert summary["draft_model:tiny-draft"]["all"]["spec_cache_peak_bytes"] > 0
    # a draft length of 2 is respected, whatever the target's generation config said before
    runs = [r for r in tiny_result["runs"] if r["method"] == "early_exit:0.5[num_assistant_tokens=2]"]
    assert max(d for r in runs for d in r["drafted_per_round"]) <= 2
    assert all(r["peak_rss_bytes"] > 0 for r in tiny_result["runs"])


def test_result_shape_and_files(tiny_result, tmp_path):
    tiny_result = {k: v for k, v in tiny_result.items() if k != "_partials"}
    for key in ("command", "config", "threads", "machine", "versions", "model", "methods", "prompts", "runs", "summary"):
        assert key in tiny_result
    assert tiny_result["threads"] == 1
    assert {"cpu", "logical_cores", "usable_cores"} <= set(tiny_result["machine"])
    assert {"torch", "transformers", "sdfp_hf"} <= set(tiny_result["versions"])
    assert set(tiny_result["summary"]["plain"]) == {"qa", "rag", "all"}
    for figures in tiny_result["summary"]["sdfp:evenly:0.34"].values():
        for key in ("speedup", "tokens_per_s", "tokens_per_round", "mean_accepted", "acceptance_rate",
                    "mean_draft_length", "identical", "spec_cache_peak_bytes", "peak_rss_bytes"):
            assert key in figures and figures[key] is not None
            assert not (isinstance(figures[key], float) and math.isnan(figures[key]))

    paths = write_outputs(tiny_result, tmp_path, stem="tiny")
    assert {p.name for p in paths.values()} == {"tiny.json", "tiny.md", "tiny.png"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads(paths["json"].read_text())
    assert stored["command"] == "pytest"
    # identical runs are stored without their tokens; the figures come out the same from the file
    assert all("tokens" not in r for r in stored["runs"] if r["method"] != "plain")
    again = summarize(stored)
    for method, per_cat in tiny_result["summary"].items():
        for category, figures in per_cat.items():
            assert again[method][category] == figures
    md = paths["md"].read_text()
    assert "| sdfp:evenly:0.34 |" in md and "pytest" in md
    assert markdown_report(tiny_result) == md

    # --report-from recomputes the figures from the file's measurements and rewrites the reports
    stale = dict(stored, summary={})
    paths["json"].write_text(json.dumps(stale))
    paths["md"].unlink()
    assert main(["--report-from", str(paths["json"]), "--no-plot"]) == 0
    rewritten = json.loads(paths["json"].read_text())
    assert rewritten["summary"] == json.loads(json.dumps(tiny_result["summary"]))
    assert rewritten["command"] == "pytest" and "--report-from" in rewritten["report_command"]
    assert paths["md"].read_text().startswith(md.split("\n")[0])


def test_a_method_that_fails_is_recorded_not_fatal():
    model = tiny_model("llama")

    config = BenchmarkConfig(
        model="tiny", dtype="float32", per_category=1, categories=("qa",), max_new_tokens=4, threads=1,
        warmup_tokens=2, methods=[MethodSpec("plain"), MethodSpec.parse("sdfp", "evenly:0.9")],
    )
    result = run_benchmark(
        config, model=model, tokenizer=tiny_tokenizer(), prompts=[Prompt(0, "qa", "qa", "hello")], log=lambda _: None
    )
    failed = {m["name"]: m["error"] for m in result["methods"]}["sdfp:evenly:0.9"]
    assert "it must skip 1..4" in failed
    assert [r["method"] for r in result["runs"]] == ["plain"]
    assert "**build failed" in markdown_report(result)


# ------------------------------------------------------------------------- replay against real harness runs

DRAFT_ONLY = "prompt_lookup=0,adaptive=false"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize(
    "tokens, schedule, threshold",
    [(3, "constant", 0.0), (4, "heuristic", 0.0), (2, "heuristic", 0.4), (5, "constant", 0.4)],
)
def test_replay_agrees_exactly_with_a_real_run_in_fp32(arch, tokens, schedule, threshold):
    from benchmarks.harness import _generate_once
    from sdfp_hf.replay import replay_acceptance

    model = tiny_model(arch)
    spec = MethodSpec.parse(
        "sdfp",
        f"evenly:0.34:num_assistant_tokens={tokens},num_assistant_tokens_schedule={schedule},"
        f"assistant_confidence_threshold={threshold},{DRAFT_ONLY}",
    )
    method = build_method(spec, model, dtype="float32")
    for seed in (0, 1):  # the second call must start from the same settings as the first
        ids = prompt(14, seed=seed)
        with RoundRecorder() as recorder:
            run = _generate_once(model, method, ids, 32, 0, recorder)
        (estimate,) = replay_acceptance(
            model, method.draft, ids, max_new_tokens=32,
            num_assistant_tokens=(tokens,), thresholds=(threshold,), schedules=(schedule,),
        )
        real = [(d, a) for d, a in zip(run["drafted_per_round"], run["accepted_per_round"]) if d]
        assert [d for d, _ in real] == estimate.drafted_per_round
        assert [a for _, a in real] == estimate.accepted_per_round
        assert len(run["drafted_per_round"]) == estimate.target_forwards
        assert run["new_tokens"] == estimate.new_tokens


def test_harness_replay_matches_the_measured_draft_only_run():
    model = tiny_model("qwen2")
    config = BenchmarkConfig(
        model="tiny", dtype="float32", per_category=1, categories=("qa", "rag"), max_new_tokens=24, threads=1,
        warmup_tokens=2, replay=True, replay_tokens=(2, 3), replay_thresholds=(0.0, 0.4),
        methods=[
            MethodSpec("plain"),
            MethodSpec.parse(
                "sdfp",
                f"evenly:0.34:num_assistant_tokens=3,num_assistant_tokens_schedule=constant,"
                f"assistant_confidence_threshold=0.4,{DRAFT_ONLY}",
            ),
        ],
    )
    prompts = [Prompt(0, "qa", "qa", "the cat sat on the mat"), Prompt(1, "rag", "rag", "one two three four")]
    result = run_benchmark(config, model=model, tokenizer=tiny_tokenizer(), prompts=prompts, log=lambda _: None)
    name = result["methods"][1]["name"]
    settings = {(s["num_assistant_tokens"], s["threshold"]): s for s in result["replay"][name]["settings"]}
    assert set(settings) == {(2, 0.0), (2, 0.4), (3, 0.0), (3, 0.4)}
    measured = result["summary"][name]["all"]
    assert settings[(3, 0.4)]["drafted"] == measured["drafted"]
    assert settings[(3, 0.4)]["accepted"] == measured["accepted"]
    assert settings[(3, 0.4)]["acceptance_rate"] == measured["acceptance_rate"]
    assert "Replayed acceptance" in markdown_report(result)


def test_headline_over_several_runs(tiny_result):
    from benchmarks.report import headline_markdown

    result = {k: v for k, v in tiny_result.items() if k != "_partials"}
    partial = dict(result, complete=False)
    table = headline_markdown([result, partial])
    assert table.count("| tiny-llama | float32 | 4 x 20 | draft model tiny-draft |") == 1
    assert "4 x 20 (partial)" in table
    assert "- `pytest`" in table


def test_partial_result_says_so(tiny_result):
    partial = tiny_result["_partials"][1]
    assert "**Partial run**: it stopped after 2 of 4 prompts" in markdown_report(partial)
    assert "Partial run" not in markdown_report(tiny_result)


def test_the_report_names_the_cpu_features_that_decide_what_pays(tiny_result):
    features = tiny_result["machine"]["cpu_features"]
    assert features is None or set(features) <= {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16"}
    with_amx = dict(tiny_result, machine=dict(tiny_result["machine"], cpu="Xeon", cpu_features=["avx2", "amx_bf16"]))
    assert "; Xeon (avx2, amx_bf16), " in markdown_report(with_amx)
    older = dict(tiny_result, machine={k: v for k, v in tiny_result["machine"].items() if k != "cpu_features"})
    assert f"; {tiny_result['machine']['cpu']}, " in markdown_report(older)  # results from before: no features


def test_a_note_written_into_a_result_is_reported(tiny_result):
    assert "Note:" not in markdown_report(tiny_result)
    noted = dict(tiny_result, note="one prompt ran beside another job")
    assert "\nNote: one prompt ran beside another job\n" in markdown_report(noted)
