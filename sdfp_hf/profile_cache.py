"""The local cache of profiles: the mask `from_target(model)` found or profiled, kept for the next call.

Profiling a model takes from seconds to minutes, and its answer depends only on the model, its dtype, the
machine and the profiling options. So `SDFPAssistant.from_target(model)` keeps each answer, keyed by
[`ProfileKey`]:

- the model's identity: its `name_or_path`, its revision (the Hub commit, when transformers knows it), the
  architecture fingerprint of the mask (`SDFPConfig.fingerprint_from_model_config`), a digest of the rest of
  its config and a digest of a few values of every weight tensor (a fine-tuned or re-initialised checkpoint
  of the same name is another model);
- its dtype, and the device it runs on (the device type; a GPU's name, or a CPU's architecture and threads);
- the profiling options given (`method`, `draft_memory`, ...) and the sdfp-hf version.

Each entry is one JSON file, ``<name>-<digest of the key>.json`` holding the key and the mask, in
``$HF_HOME/assets/sdfp_hf/profiles/`` (huggingface_hub's folder for libraries' assets) or the folder named by
``SDFP_HF_PROFILE_CACHE``. It is written atomically (`sdfp_hf._files`): a reader sees a whole entry or none.
An entry that cannot be read, or that does not match its key, is reported with one warning and profiled
again; a changed model computes another key, and misses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._files import expand_path, write_atomic
from ._version import __version__
from .config import SDFPConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["PROFILE_CACHE_ENV", "ProfileKey", "cache_dir", "load_profile", "profile_key", "store_profile"]

logger = logging.getLogger(__name__)

PROFILE_CACHE_ENV = "SDFP_HF_PROFILE_CACHE"
"""Environment variable naming the folder of the profile cache (instead of ``$HF_HOME/assets/sdfp_hf/profiles``)."""

ENTRY_VERSION = 1
"""Layout of a cache entry; an entry of another version is a miss (profiled again and replaced)."""

# Keys of a transformers config that say nothing about the model's computation, or that the key holds apart.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "name_or_path", "_commit_hash", "transformers_version", "dtype", "torch_dtype")
# Profiling options that change nothing in the profile's answer.
_NEUTRAL_OPTIONS = ("progress",)
_SAMPLES_PER_TENSOR = 8


@dataclass(frozen=True)
class ProfileKey:
    """What a cached profile is valid for: a model, its dtype, the device it runs on and the options given.

    Args:
        name_or_path (`str`): the model's Hub id or folder (`model.name_or_path`); empty when unknown.
        revision (`str`, *optional*): the model's revision (commit) on the Hub, when known.
        fingerprint (`dict`): the architecture fingerprint (`SDFPConfig.fingerprint_from_model_config`).
        config_digest (`str`): digest of the rest of the model's config.
        weights_digest (`str`): digest of a few values of every weight tensor.
        dtype (`str`): the weights' dtype, e.g. ``"bfloat16"``.
        device (`str`): the device type, with a GPU's name or a CPU's architecture and thread count.
        options (`dict`): the profiling options given, as JSON.
        sdfp_version (`str`): the sdfp-hf version (a newer profiler may choose otherwise).
    """

    name_or_path: str
    revision: str | None
    fingerprint: dict[str, Any]
    config_digest: str
    weights_digest: str
    dtype: str
    device: str
    options: dict[str, Any] = field(default_factory=dict)
    sdfp_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def digest(self) -> str:
        """A digest of the whole key: the entry's file name."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def file_name(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.name_or_path.rstrip("/\\")).name or "model").strip("-.")
        return f"{stem[:64] or 'model'}-{self.digest}.json"


def cache_dir() -> Path:
    """The folder of the profile cache: ``$SDFP_HF_PROFILE_CACHE``, else ``$HF_HOME/assets/sdfp_hf/profiles``."""
    given = os.environ.get(PROFILE_CACHE_ENV)
    if given:
        return expand_path(given)
    from huggingface_hub import constants

    return Path(constants.HF_ASSETS_CACHE) / "sdfp_hf" / "profiles"


def profile_key(model: PreTrainedModel, options: dict[str, Any] | None = None) -> ProfileKey | None:
    """The cache key of `model` profiled with `options` (arguments of `sdfp_hf.profiler.profile`).

    Returns:
        [`ProfileKey`], or `None` when the profile cannot be cached: calibration data was given (the
        profile depends on data the key cannot name), or an option is not plain JSON.
    """
    options = {k: v for k, v in (options or {}).items() if k not in _NEUTRAL_OPTIONS}
    if options.get("calibration") is not None:
        return None
    options.pop("calibration", None)
    tokenizer = options.pop("tokenizer", None)
    if tokenizer is not None:  # it gives the chat template of data-free calibration
        options["tokenizer"] = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    try:
        options = json.loads(json.dumps(options, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError):
        return None
    config = model.config
    weight = model.get_input_embeddings().weight
    return ProfileKey(
        name_or_path=str(getattr(config, "name_or_path", None) or getattr(model, "name_or_path", None) or ""),
        revision=getattr(config, "_commit_hash", None),
        fingerprint=SDFPConfig.fingerprint_from_model_config(config),
        config_digest=_config_digest(config),
        weights_digest=_weights_digest(model),
        dtype=str(weight.dtype).removeprefix("torch."),
        device=_device_description(weight.device),
        options=options,
    )


def load_profile(key: ProfileKey, model: PreTrainedModel, *, folder: str | os.PathLike[str] | None = None) -> tuple[SDFPConfig, Path, dict[str, Any]] | None:
    """The cached mask for `key`, checked against `model`'s architecture.

    Returns:
        `(mask, path, entry)` (the entry's other fields: `source`, `seconds`, `created`), or `None` on a miss.
        An entry that exists but cannot be used (unreadable, not JSON, another key, not a valid mask, another
        architecture) is a miss too, after one warning that says so: it is profiled again and replaced.
    """
    path = Path(folder) if folder is not None else cache_dir()
    path = path / key.file_name
    if not path.exists():
        return None
    try:
        with open(path, "rb") as handle:
            entry = json.loads(handle.read(), parse_constant=_reject)
        if not isinstance(entry, dict) or entry.get("entry_version") != ENTRY_VERSION:
            raise ValueError(f"not a profile cache entry of version {ENTRY_VERSION}")
        if entry.get("key") != json.loads(json.dumps(key.to_dict())):
            raise ValueError("it was written for another model or other options")
        with warnings.catch_warnings():
            # the mask was checked when it was first found; only an architecture mismatch matters now
            warnings.simplefilter("ignore")
            mask = SDFPConfig.from_dict(entry.get("mask"))
            mask.check_compatible(model.config)
    except (OSError, ValueError, TypeError, RecursionError) as e:  # SDFPConfigError is a ValueError too
        warnings.warn(
            f"the cached profile `{path}` cannot be used ({e}): profiling the model again (the entry will be "
            "replaced)",
            UserWarning,
            stacklevel=3,
        )
        return None
    return mask, path, {k: v for k, v in entry.items() if k not in ("key", "mask", "entry_version")}


def store_profile(
    key: ProfileKey,
    mask: SDFPConfig,
    *,
    source: str,
    seconds: float | None = None,
    folder: str | os.PathLike[str] | None = None,
) -> Path | None:
    """Keep `mask` for `key` (atomically, replacing an older entry).

    Args:
        key (`ProfileKey`): from [`profile_key`].
        mask (`SDFPConfig`): the mask to keep.
        source (`str`): where it came from (``"profiled"``, or the Hub repository it was found in).
        seconds (`float`, *optional*): how long profiling took.
        folder (`str` or `os.PathLike`, *optional*): the cache folder (defaults to [`cache_dir`]).

    Returns:
        `Path` of the entry, or `None` when it could not be written (a read-only folder, a full disk: one
        warning, and the draft is used all the same).
    """
    path = (Path(folder) if folder is not None else cache_dir()) / key.file_name
    entry = {
        "entry_version": ENTRY_VERSION,
        "key": key.to_dict(),
        "mask": mask.to_dict(),
        "source": source,
        "seconds": None if seconds is None else round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        text = json.dumps(entry, indent=2, sort_keys=True, allow_nan=False) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, text, overwrite=True)
    except (OSError, ValueError) as e:
        warnings.warn(f"could not keep the profile in the cache (`{path}`: {e}); the next call profiles again",
                      UserWarning, stacklevel=3)
        return None


def _config_digest(config: Any) -> str:
    data = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    data = {k: v for k, v in data.items() if k not in _VOLATILE_CONFIG_KEYS}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@torch.no_grad()
def _weights_digest(model: PreTrainedModel) -> str:
    """A digest of a few evenly spaced values of every parameter (microseconds, not a pass over the weights)."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        digest.update(f"{name}:{tuple(parameter.shape)}:{parameter.dtype}".encode())
        if parameter.device.type == "meta" or parameter.numel() == 0:
            continue
        flat = parameter.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
        digest.update(flat[::step][:_SAMPLES_PER_TENSOR].to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        # step costs, and so the choice, depend on the cores the process uses
        return f"cpu:{platform.machine()}:{torch.get_num_threads()} threads"
    return device.type


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")
