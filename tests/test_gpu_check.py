"""`benchmarks/gpu_check.py` runs end to end on the CPU with a tiny model (so the GPU owners' script cannot rot)."""

from __future__ import annotations

import json

from benchmarks import gpu_check


def test_gpu_check_runs_on_the_cpu_with_tiny_shapes(tmp_path, capsys):
    out = tmp_path / "check"
    result = gpu_check.main(["--device", "cpu", "--tiny", "--dtype", "float32", "--context", "32",
                             "--max-width", "6", "--repeats", "1", "--out", str(out)])
    assert "cuda_tests" not in result  # no CUDA here: the tests are for the GPU machine
    written = json.loads(out.with_name("check.json").read_text())
    assert set(written["draft_step_cost"]) == {"25%", "50%"}
    assert [v["skipped_layers"] for v in written["draft_step_cost"].values()] == [2, 4]
    assert all(v["relative_to_target_step"] > 0 for v in written["draft_step_cost"].values())
    assert sorted(map(int, written["verification_curve"])) == [1, 2, 3, 4, 5, 6]
    assert written["verification_curve"]["1"] == 1.0
    assert "T(n) / T(1)" in capsys.readouterr().out


def test_layers_skipped_are_evenly_spaced_inside():
    from tiny_models import NUM_LAYERS, tiny_model

    model = tiny_model("llama")
    half = gpu_check.evenly_spaced(model, 0.5)
    assert len(half) == NUM_LAYERS // 2 and 0 not in half and NUM_LAYERS - 1 not in half
    assert set(gpu_check.evenly_spaced(model, 0.25)) < set(half)
