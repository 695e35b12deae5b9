"""The score plot: a PNG, and a clear error without matplotlib."""

from __future__ import annotations

import warnings

import pytest
from test_selection import scores_of

from sdfp_hf.selection import select_skips


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from sdfp_hf.plot import plot_scores

    scores = scores_of([3, 1, 2, 4], attention=[1, 0.1, 2, 3], mlp=[2, 3, 0.01, 5])
    skip = select_skips(scores, num_skip=2, granularity="sublayer", cost_weighted=False)
    path = plot_scores(scores, skip, tmp_path / "scores.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert plot_scores(scores)[:4] == b"\x89PNG"


def test_plot_without_matplotlib_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    from sdfp_hf.plot import plot_scores

    with pytest.raises(ImportError, match=r"pip install 'sdfp-hf\[plot\]'"):
        plot_scores(scores_of([1, 2]))
    warnings.simplefilter("default")
