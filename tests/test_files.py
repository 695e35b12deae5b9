"""The package's one file writer (`sdfp_hf._files`): atomic, never over a file unless asked, never through a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sdfp_hf import _files
from sdfp_hf._files import (
    OverwriteError,
    UnsafePathError,
    expand_path,
    move_into,
    staging_folder,
    write_atomic,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_new_file_is_written_with_the_usual_permissions(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "a.json", "{}\n")
    assert path.read_text() == "{}\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert leftovers(tmp_path) == []


def test_an_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"mine")
    with pytest.raises(OverwriteError, match=r"a\.json` already exists and is kept: pass `overwrite=True`"):
        write_atomic(path, b"theirs")
    assert path.read_bytes() == b"mine"
    with pytest.raises(OverwriteError, match="--overwrite"):
        write_atomic(path, b"theirs", hint="pass --overwrite")
    write_atomic(path, b"theirs", overwrite=True)
    assert path.read_bytes() == b"theirs"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["outside", "inside", "dangling"])
def test_a_symbolic_link_is_never_written_through(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    target = {"outside": tmp_path / "precious", "inside": folder / "other", "dangling": tmp_path / "nothing"}[where]
    if where != "dangling":
        target.write_bytes(b"precious")
    (folder / "a.json").symlink_to(target)
    for overwrite in (False, True):
        with pytest.raises(UnsafePathError, match="is a symbolic link to .* never writes through a link"):
            write_atomic(folder / "a.json", b"x", overwrite=overwrite)
    assert (folder / "a.json").is_symlink()
    if where == "dangling":
        assert not target.exists()
    else:
        assert target.read_bytes() == b"precious"
    assert leftovers(folder) == []


def test_a_write_killed_half_way_leaves_the_old_file(tmp_path: Path, writes_fail_half_way) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"old content")
    writes_fail_half_way(OSError(28, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new content, longer than the old", overwrite=True)
    assert path.read_bytes() == b"old content"
    assert leftovers(tmp_path) == []


def test_a_file_appearing_between_check_and_rename_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    real_check = _files.check_destination

    def check_then_race(target, **kwargs):
        real_check(target, **kwargs)
        Path(target).write_bytes(b"written meanwhile")

    monkeypatch.setattr(_files, "check_destination", check_then_race)
    with pytest.raises(OverwriteError):
        write_atomic(path, b"ours")
    assert path.read_bytes() == b"written meanwhile"
    assert leftovers(tmp_path) == []


def test_home_and_environment_variables_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SDFP_TEST_DIR", "masks")
    assert expand_path("~/m") == tmp_path / "m"
    assert expand_path("$HOME/$SDFP_TEST_DIR/m") == tmp_path / "masks" / "m"
    assert expand_path(Path("${SDFP_TEST_DIR}/m")) == Path("masks/m")
    assert expand_path("relative/m") == Path("relative/m")


def test_a_staged_set_of_files_becomes_a_new_folder_at_once(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    with staging_folder(destination) as staged:
        (staged / "config.json").write_text("{}")
        (staged / "sub").mkdir()
        (staged / "sub" / "x.txt").write_text("x")
        written = move_into(staged, destination)
    assert sorted(p.relative_to(destination).as_posix() for p in written) == ["config.json", "sub/x.txt"]
    assert (destination / "sub" / "x.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left


def test_moving_into_an_existing_folder_checks_every_file_first(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "notes.txt").write_text("mine")
    (destination / "b.json").write_text("old b")
    (destination / "README.md").write_text("# my card")
    with staging_folder(destination) as staged:
        for name in ("a.json", "b.json", "README.md"):
            (staged / name).write_text(f"new {name}")
        with pytest.raises(OverwriteError, match="b.json"):
            move_into(staged, destination, keep=["README.md"])
        assert sorted(p.name for p in destination.iterdir()) == ["README.md", "b.json", "notes.txt"]  # nothing moved
        move_into(staged, destination, overwrite=True, keep=["README.md"])
    assert (destination / "a.json").read_text() == "new a.json"
    assert (destination / "b.json").read_text() == "new b.json"
    assert (destination / "README.md").read_text() == "# my card"  # kept, even with overwrite
    assert (destination / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_expanding_keeps_the_text_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert _files.expand("./alice/mask") == "./alice/mask"  # a path, never the Hub id alice/mask
    assert _files.expand("~/alice/mask/") == "/home/someone/alice/mask/"
