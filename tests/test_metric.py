"""The speculative decoding `evaluate` metric: loaded offline by path, known values on hand-made inputs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdfp_hf.metrics import METRICS, path

evaluate = pytest.importorskip("evaluate")


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(path("speculative_decoding"))


def test_path_points_at_the_module():
    assert Path(path()).is_file()
    assert Path(path("speculative_decoding")).name == "speculative_decoding.py"
    assert set(METRICS) == {"speculative_decoding"}


def test_unknown_metric_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown metric 'acceptance'.*speculative_decoding"):
        path("acceptance")


def test_one_import_per_line():
    # evaluate reads import lines to find dependencies: "import a, b" would be a missing package "a,".
    for line in Path(path()).read_text().splitlines():
        assert not re.match(r"^\s*import\s+[^#]*,", line), line


def test_loads_offline_in_a_fresh_process(tmp_path):
    code = (
        "import evaluate, json, sys\n"
        "m = evaluate.load(sys.argv[1])\n"
        "print(json.dumps(m.compute(predictions=[[1, 2]], references=[[1, 2]], drafted=[[4]], accepted=[[1]],"
        " time=[1.0], baseline_time=[3.0])))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code, path()], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["speedup"] == pytest.approx(3.0)
    assert figures["acceptance_rate"] == pytest.approx(0.25)


def test_known_values(metric):
    figures = metric.compute(
        predictions=[[5, 6, 7, 8, 9], [1, 2, 3], [4, 4]],
        references=[[5, 6, 7, 8, 9], [1, 2, 0], [4, 4]],
        # 3 generations; rounds that drafted nothing are ignored
        drafted=[[4, 4, 0], [2], [3, 1]],
        accepted=[[4, 1, 0], [0], [1, 1]],
        time=[1.0, 2.0, 1.0],
        baseline_time=[2.0, 2.0, 2.0],
    )
    assert figures["drafted"] == 14
    assert figures["accepted"] == 7
    assert figures["rounds"] == 5
    assert figures["acceptance_rate"] == pytest.approx(7 / 14)
    assert figures["mean_accepted_tokens"] == pytest.approx(7 / 5)
    assert figures["speedup"] == pytest.approx(6.0 / 4.0)
    assert figures["token_identical"] == 2
    assert figures["token_identical_rate"] == pytest.approx(2 / 3)
    assert figures["num_generations"] == 3


def test_nothing_drafted(metric):
    figures = metric.compute(
        predictions=[[1]], references=[[1]], drafted=[[]], accepted=[[]], time=[2.0], baseline_time=[1.0]
    )
    assert figures["acceptance_rate"] == 0.0
    assert figures["mean_accepted_tokens"] == 0.0
    assert figures["speedup"] == pytest.approx(0.5)


def test_batches_accumulate(metric):
    metric.add_batch(predictions=[[1]], references=[[1]], drafted=[[2]], accepted=[[2]], time=[1.0], baseline_time=[1.0])
    metric.add_batch(predictions=[[2]], references=[[3]], drafted=[[2]], accepted=[[0]], time=[1.0], baseline_time=[3.0])
    figures = metric.compute()
    assert figures["acceptance_rate"] == pytest.approx(0.5)
    assert figures["speedup"] == pytest.approx(2.0)
    assert figures["token_identical"] == 1


@pytest.mark.parametrize(
    "inputs, message",
    [
        (dict(drafted=[[2, 2]], accepted=[[1]]), "lists 2 rounds but `accepted` lists 1"),
        (dict(drafted=[[2]], accepted=[[3]]), "0 <= accepted <= drafted"),
        (dict(drafted=[[2]], accepted=[[-1]]), "0 <= accepted <= drafted"),
        (dict(time=[0.0]), "timings must be positive"),
        (dict(baseline_time=[-1.0]), "timings must be positive"),
    ],
)
def test_bad_inputs_say_what_is_wrong(metric, inputs, message):
    args = dict(predictions=[[1]], references=[[1]], drafted=[[1]], accepted=[[1]], time=[1.0], baseline_time=[1.0])
    args.update(inputs)
    with pytest.raises(ValueError, match=re.escape(message)):
        metric.compute(**args)


def test_missing_input_is_refused(metric):
    with pytest.raises(ValueError, match="baseline_time"):
        metric.compute(predictions=[[1]], references=[[1]], drafted=[[1]], accepted=[[1]], time=[1.0])
