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


def test_an_existing_plot_is_kept_unless_overwrite(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from sdfp_hf._files import OverwriteError, UnsafePathError
    from sdfp_hf.plot import plot_scores

    scores = scores_of([3, 1, 2, 4])
    (tmp_path / "scores.png").write_bytes(b"my own picture")
    with pytest.raises(OverwriteError, match=r"scores.png` already exists and is kept: pass `overwrite=True`"):
        plot_scores(scores, path=tmp_path / "scores.png")
    assert (tmp_path / "scores.png").read_bytes() == b"my own picture"
    plot_scores(scores, path=tmp_path / "scores.png", overwrite=True)
    assert (tmp_path / "scores.png").read_bytes()[:4] == b"\x89PNG"

    (tmp_path / "link.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        plot_scores(scores, path=tmp_path / "link.png", overwrite=True)
    assert not (tmp_path / "elsewhere.png").exists()

    monkeypatch.setenv("HOME", str(tmp_path))
    assert plot_scores(scores, path="~/home.png") == str(tmp_path / "home.png")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
