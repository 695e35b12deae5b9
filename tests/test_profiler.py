"""`profile`: calibration, scores, selection and the "auto" choice."""

from __future__ import annotations

import logging
import warnings

import pytest
from tiny_models import tiny_model

from sdfp_hf import SDFPAssistant
from sdfp_hf import profiler as prof
from sdfp_hf.config import SDFPConfig
from sdfp_hf.costs import MAX_DRAFT, StepCosts, perfect_draft_speedup
from sdfp_hf.fit import DEFAULT_SCORING_METHOD
from sdfp_hf.profiler import NoSpeedupWarning, profile


def test_profile_with_a_ratio_gives_a_valid_mask_and_draft():
    model = tiny_model("qwen2")
    result = profile(model, skip_ratio=0.34, num_sequences=3, sequence_length=24, progress=False)
    assert len(result.skip.layers) == 2 and 0 not in result.skip.layers  # first layer protected by default
    assert result.scores.method == DEFAULT_SCORING_METHOD
    config = result.to_config(model)
    assert isinstance(config, SDFPConfig)
    assert config.skip_layers == list(result.skip.layers) and config.scoring_method == DEFAULT_SCORING_METHOD
    assert config.calibration["num_sequences"] == 3 and config.calibration["dtype"] == "float32"
    assert set(result.timings) == {"calibration", "scoring", "total"}
    draft = SDFPAssistant.from_target(model, mask=config)
    assert draft.skip == result.skip
    with pytest.warns(FutureWarning, match="from_target"):
        assert result.draft(model).skip == result.skip
    sub = profile(model, skip_ratio=0.3, granularity="sublayer", num_sequences=2, sequence_length=16, progress=False)
    fields = sub.config_fields()
    assert fields["granularity"] in ("layer", "sublayer")
    SDFPConfig.from_model_config(model.config, **fields)


_FAKE_TARGET = StepCosts(draft=1.0, verify={1: 1.0, 9: 1.2}, target_seconds=1e-3)


def _fake_costs(cost):
    def measure(model, drafts, **kwargs):
        return [cost] * len(drafts), _FAKE_TARGET

    return measure


def test_auto_picks_the_best_predicted_speedup(monkeypatch):
    model = tiny_model("llama", seed=1)
    monkeypatch.setattr(prof, "measure_step_costs", _fake_costs(0.05))
    result = profile(model, num_sequences=3, sequence_length=24, auto_ratios=(0.17, 0.34, 0.5),
                     auto_new_tokens=16, draft_memory=0, progress=False)
    assert result.predicted["speedup"] == max(c["speedup"] for c in result.candidates)
    assert result.predicted["speedup"] > 1.0
    assert result.skip_ratio in (0.17, 0.34, 0.5)
    assert 1 <= result.num_assistant_tokens <= MAX_DRAFT
    assert set(result.timings) == {"step_costs", "calibration", "scoring", "selection", "total"}
    assert result.stopped_early is None
    assert result.timings["total"] >= sum(v for k, v in result.timings.items() if k != "total")  # the whole time
    config = result.to_config(model)
    assert config.num_assistant_tokens == result.num_assistant_tokens
    assert config.measurements["predicted_speedup"] == pytest.approx(result.predicted["speedup"])


def test_a_tie_in_predicted_speedup_goes_to_the_cheaper_draft_step():
    exact = {"name": "int4", "speedup": 1.735, "draft_cost": 0.45}
    cheap = {"name": "int4:head-int4", "speedup": 1.735 * (1 - prof.TIE) + 0.001, "draft_cost": 0.41}
    assert prof.best_candidate([exact, cheap]) is cheap  # within TIE of the best: the cheaper step
    slow_cheap = dict(cheap, speedup=1.735 * (1 - prof.TIE) - 0.001)
    assert prof.best_candidate([exact, slow_cheap]) is exact  # beyond it: the faster prediction
    same_cost = dict(exact, speedup=1.70)
    assert prof.best_candidate([same_cost, exact]) is exact  # a tie in cost too: the faster prediction
    barely = dict(exact, speedup=1.01)
    below = dict(cheap, speedup=0.995)
    assert prof.best_candidate([barely, below]) is barely  # a tie never picks one predicted slower than plain


def test_auto_never_returns_a_draft_predicted_slower_silently(monkeypatch):
    model = tiny_model("llama", seed=1)
    monkeypatch.setattr(prof, "measure_step_costs", _fake_costs(1.5))  # a draft step dearer than a target step
    monkeypatch.setattr(prof, "_stop_early", lambda *args: None)  # the candidates' own figures, not the early stop
    with pytest.warns(NoSpeedupWarning, match=r"returning the first candidate \(skip ratio 0.17\)"):
        result = profile(model, num_sequences=2, sequence_length=16, auto_ratios=(0.34, 0.17),
                         auto_new_tokens=12, draft_memory=0, progress=False)
    assert result.skip_ratio == 0.17
    with pytest.raises(ValueError, match="no candidate draft is predicted faster"):
        profile(model, num_sequences=2, sequence_length=16, auto_ratios=(0.17,), auto_new_tokens=12,
                on_no_speedup="raise", draft_memory=0, progress=False)
    with pytest.raises(ValueError, match="no candidate draft is predicted faster"):
        profile(model, num_sequences=2, sequence_length=16, auto_new_tokens=12, on_no_speedup="raise", progress=False)


def test_auto_with_room_for_quantized_copies_picks_a_plan_within_the_budget(monkeypatch):
    from sdfp_hf.selection import plan_nbytes

    model = tiny_model("llama", seed=1)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    monkeypatch.setattr(prof, "measure_step_costs", _fake_costs(0.05))
    result = profile(model, num_sequences=3, sequence_length=24, auto_new_tokens=16, progress=False)
    assert result.plan.is_quantized and result.scores.method == "fit_quant"
    assert list(result.timings) == ["step_costs", "calibration", "scoring", "selection", "total"]
    assert result.timings["total"] >= sum(v for k, v in result.timings.items() if k != "total")  # the whole time
    assert result.predicted["speedup"] == max(c["speedup"] for c in result.candidates) > 1.0
    assert plan_nbytes(model, result.plan) <= 0.5 * weights
    assert {c["name"] for c in result.candidates} == {"int4+int8:0.2", "int4", "int4:head-int4"}
    heads = {c["name"]: c["precision"]["head"] for c in result.candidates}
    assert heads == {"int4+int8:0.2": "int8", "int4": "int8", "int4:head-int4": "int4"}
    config = result.to_config(model)
    assert config.plan == result.plan and config.format_version == 2
    assert config.measurements["draft_memory_bytes"] == plan_nbytes(model, result.plan)
    draft = SDFPAssistant.from_target(model, num_sequences=3, sequence_length=24, auto_new_tokens=16, progress=False)
    assert draft.extra_bytes == plan_nbytes(model, draft.plan) <= 0.5 * weights
    # a budget of bytes, or a size with its unit
    smaller = profile(model, num_sequences=3, sequence_length=24, auto_new_tokens=16, draft_memory="120KiB", progress=False)
    assert plan_nbytes(model, smaller.plan) <= 120 * 1024
    with pytest.raises(ValueError, match="no quantized draft fits in draft_memory"):
        profile(model, num_sequences=3, sequence_length=24, draft_memory=1000, progress=False)
    with pytest.raises(ValueError, match="draft_memory must be"):
        profile(model, draft_memory="lots", progress=False)


def test_draft_memory_zero_gives_a_draft_that_holds_nothing_of_its_own(monkeypatch):
    model = tiny_model("llama", seed=1)
    monkeypatch.setattr(prof, "measure_step_costs", _fake_costs(0.05))
    draft = SDFPAssistant.from_target(model, draft_memory=0, num_sequences=3, sequence_length=24,
                                      auto_new_tokens=16, progress=False)
    assert not draft.plan.is_quantized and draft.extra_bytes == 0


def test_the_step_cost_probe_quantizes_int8_only_where_int4_could_not_pay(monkeypatch):
    model = tiny_model("llama", seed=1)
    probed = []

    def measure(model, drafts, **kwargs):
        formats = [{p for p in d.plan.attention + d.plan.mlp} for d in drafts]
        probed.extend(formats)
        return [0.05 if f == {"int4"} and int4_pays else 1.5 for f in formats], _FAKE_TARGET

    monkeypatch.setattr(prof, "measure_step_costs", measure)
    int4_pays = False
    assert profile(model, progress=False).stopped_early is not None
    assert probed == [{"int4"}, {"int8"}]  # the fewest bytes first, then the other end
    probed.clear()
    int4_pays = True
    monkeypatch.setattr(prof, "build_calibration", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("probed")))
    with pytest.raises(RuntimeError, match="probed"):  # went on to calibrate after one probe
        profile(model, progress=False)
    assert probed == [{"int4"}]


@pytest.mark.parametrize("draft_memory", [0, 0.5], ids=["skips", "quantized"])
def test_auto_stops_after_the_step_costs_when_no_draft_could_pay(monkeypatch, caplog, draft_memory):
    model = tiny_model("llama", seed=1)
    monkeypatch.setattr(prof, "measure_step_costs", _fake_costs(1.5))  # even a perfect draft: 0.79x

    def never(*args, **kwargs):
        raise AssertionError("calibrated although no draft could pay")

    monkeypatch.setattr(prof, "build_calibration", never)
    caplog.set_level(logging.INFO, logger="sdfp_hf.profiler")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an info line, not a warning
        result = profile(model, draft_memory=draft_memory, progress=False)
    stopped = result.stopped_early
    assert stopped["speedup_ceiling"] == pytest.approx(perfect_draft_speedup(1.5, _FAKE_TARGET)[0])
    assert stopped["speedup_ceiling"] < 1.0
    assert stopped["draft_step_cost"] == 1.5 and result.predicted is None
    assert set(result.timings) == {"step_costs", "total"}
    assert len(result.skip.layers) == 1 and not result.plan.is_quantized  # the minimal draft
    (line,) = [r for r in caplog.records if "profiling stopped after measuring step costs" in r.getMessage()]
    assert line.levelno == logging.INFO and "0.79x" in line.getMessage()
    config = result.to_config(model)
    assert config.measurements["speedup_ceiling"] == pytest.approx(stopped["speedup_ceiling"])
    assert "stopped after the step costs" in result.summary()
    with pytest.raises(ValueError, match="no candidate draft is predicted faster.*even a draft whose every token"):
        profile(model, draft_memory=draft_memory, on_no_speedup="raise", progress=False)
    draft = SDFPAssistant.from_target(model, draft_memory=draft_memory, progress=False)
    assert draft.skip == result.skip and draft.origin == "profiled"


def test_a_perfect_draft_bounds_every_draft_of_its_cost():
    flat = StepCosts(draft=1.0, verify={1: 1.0, 9: 1.0}, target_seconds=1e-3)
    assert perfect_draft_speedup(0.5, flat) == (pytest.approx(9 / 5), 8)  # the longest draft pays most
    steep = StepCosts(draft=1.0, verify={1: 1.0, 9: 9.0}, target_seconds=1e-3)
    speedup, length = perfect_draft_speedup(0.1, steep)
    assert speedup < 1.0 and length == 1  # verification as dear as plain steps: nothing pays
