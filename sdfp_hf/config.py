"""`SDFPConfig`: the mask artifact, what a layer-skipping draft skips, why, and for which model.

A mask is one small JSON file, `sdfp_config.json`, modelled on PEFT's adapter config: a dataclass whose
every field has a default and a help text, written with sorted keys, validated when built and when
read. It travels over the Hub (see `sdfp_hf.hub`) and comes from strangers on the Internet, so reading
one only ever parses JSON: it never unpickles, imports or executes anything, and any malformed file
raises `SDFPConfigError` with a message that says what is wrong and how to fix it.

Versioning. `format_version` is the MAJOR version of the file layout, an integer (currently 2):

- adding an optional key is backward compatible and does NOT change it: an older sdfp-hf reading a
  file that has keys it does not know drops them with one warning (like a newer minor version);
- removing or renaming a key, changing the meaning of a value or adding a required key increments it:
  an older sdfp-hf refuses such a file and asks to be upgraded.

This module knows nothing of torch: the model is seen only through its transformers `PretrainedConfig`
(duck-typed). Saving, loading and publishing come from `HubMixin` (`sdfp_hf.hub`), which knows nothing
of the mask's fields; the mask provides the file's text, its parser and its model card.
"""

from __future__ import annotations

import json
import math
import operator
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from ._files import expand_path, write_atomic
from ._version import __version__
from .hub import PLOT_NAME, HubMixin, render_model_card
from .plan import DraftPlan
from .skipset import GRANULARITIES, SkipSet

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "GRANULARITIES",
    "NUM_ASSISTANT_TOKENS_SCHEDULES",
    "REQUIRED_KEYS",
    "SDFPConfig",
    "SDFPConfigError",
]

CONFIG_NAME = "sdfp_config.json"
"""Name of the JSON file that holds a mask, in a folder or a Hub repository."""

FORMAT_VERSION = 2
"""Newest major version of the `sdfp_config.json` layout this sdfp-hf reads and writes.

Version 2 added `precision` (quantized branches): a mask with quantized branches is written as version 2,
so that an older sdfp-hf refuses it instead of building a different draft; a mask without them is still
written as version 1, which every sdfp-hf reads."""
PRECISION_VERSION = 2

NUM_ASSISTANT_TOKENS_SCHEDULES = ("constant", "heuristic", "heuristic_transient")
# Draft settings used when neither the caller nor a mask gives them; chosen from measurements on the
# real models (README, "Draft settings").
DEFAULT_NUM_ASSISTANT_TOKENS = 6
DEFAULT_NUM_ASSISTANT_TOKENS_SCHEDULE = "heuristic"
DEFAULT_ASSISTANT_CONFIDENCE_THRESHOLD = 0.4

REQUIRED_KEYS = frozenset(
    {
        "format_version",
        "model_type",
        "num_hidden_layers",
        "hidden_size",
        "vocab_size",
        "granularity",
        "skip_layers",
        "skip_attention",
        "skip_mlp",
    }
)
"""Keys every `sdfp_config.json` must hold, so that an arbitrary JSON object never loads as a mask."""

# Larger than any real mask (a full draft vocabulary of 256k token ids is about 2 MB): refusing bigger
# files keeps a hostile file from exhausting memory before validation even starts.
MAX_CONFIG_BYTES = 64 * 1024 * 1024

_FIX = "profile it again with `sdfp profile` or load the mask made for it"


class SDFPConfigError(ValueError):
    """Raised when a mask (an `SDFPConfig` or an `sdfp_config.json`) is malformed or does not fit a model."""


CARD_TEMPLATE = "sdfp_mask_card.md"
"""File name of the mask's model card template, in `hub_cards/`."""


@dataclass
class SDFPConfig(HubMixin):
    """A layer-skipping mask for one model: what the draft skips, why, and how it was measured.

    Build one with [`SDFPConfig.from_model_config`] (which fills the architecture fingerprint from the
    target's config), save it with [`~SDFPConfig.save_pretrained`], publish it with
    [`~SDFPConfig.push_to_hub`] and read it back with [`~SDFPConfig.from_pretrained`]. Every field is
    validated when the config is built and again before it is written; lists of skipped indices are
    stored sorted.

    Example:

    ```python
    >>> from transformers import LlamaConfig
    >>> from sdfp_hf.config import SDFPConfig
    >>> mask = SDFPConfig.from_model_config(LlamaConfig(num_hidden_layers=4), skip_layers=[2, 1])
    >>> mask.skip_layers
    [1, 2]
    ```
    """

    format_version: int = field(
        default=1,
        metadata={"help": "Major version of the file layout; a reader refuses a version newer than its own."},
    )
    sdfp_version: str | None = field(
        default=None,
        metadata={"help": "Version of sdfp-hf that created the mask (filled in automatically)."},
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or path of the model the mask was profiled on."}
    )
    revision: str | None = field(
        default=None, metadata={"help": "Exact revision (commit) of the base model, when known."}
    )
    model_type: str | None = field(
        default=None, metadata={"help": "Fingerprint: `model_type` of the base model's text config."}
    )
    num_hidden_layers: int | None = field(
        default=None, metadata={"help": "Fingerprint: number of decoder layers of the base model."}
    )
    hidden_size: int | None = field(
        default=None, metadata={"help": "Fingerprint: hidden size of the base model."}
    )
    vocab_size: int | None = field(
        default=None, metadata={"help": "Fingerprint: vocabulary size of the base model."}
    )
    layer_types: list[str] | None = field(
        default=None,
        metadata={
            "help": "Fingerprint: per-layer attention types (`config.layer_types`), if the model has them."
        },
    )
    granularity: str = field(
        default="layer",
        metadata={
            "help": "`'layer'`: whole decoder layers were scored and are skipped (`skip_layers` only); "
            "`'sublayer'`: attention and MLP branches were scored and are skipped separately (`skip_attention`, "
            "`skip_mlp`, and `skip_layers` for layers skipped whole)."
        },
    )
    skip_layers: list[int] = field(
        default_factory=list,
        metadata={"help": "Indices of the decoder layers skipped whole."},
    )
    skip_attention: list[int] = field(
        default_factory=list,
        metadata={
            "help": "Indices of the layers whose attention branch alone is skipped (granularity 'sublayer')."
        },
    )
    skip_mlp: list[int] = field(
        default_factory=list,
        metadata={
            "help": "Indices of the layers whose MLP branch alone is skipped (granularity 'sublayer')."
        },
    )
    scores: dict[str, list[float]] = field(
        default_factory=dict,
        metadata={
            "help": "Per-layer importance scores by kind (`'layer'`, `'attention'`, `'mlp'`), one float "
            "per decoder layer; may be empty."
        },
    )
    scoring_method: str | None = field(
        default=None, metadata={"help": "How the scores were computed (e.g. `'fit'` for Fisher information)."}
    )
    calibration: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Calibration provenance: `source`, `num_sequences`, `num_tokens`, `sequence_length`, "
            "`seed`, `dtype`, `seconds`."
        },
    )
    num_assistant_tokens: int = field(
        default=DEFAULT_NUM_ASSISTANT_TOKENS,
        metadata={
            "help": "Recommended draft length: tokens drafted per round (the start value of an adaptive "
            "schedule)."
        },
    )
    num_assistant_tokens_schedule: str = field(
        default=DEFAULT_NUM_ASSISTANT_TOKENS_SCHEDULE,
        metadata={
            "help": "How the draft length evolves: `'constant'`, `'heuristic'` or `'heuristic_transient'`."
        },
    )
    assistant_confidence_threshold: float = field(
        default=DEFAULT_ASSISTANT_CONFIDENCE_THRESHOLD,
        metadata={
            "help": "The draft stops proposing when its top probability falls below this value, in [0, 1]."
        },
    )
    draft_vocab: list[int] | None = field(
        default=None,
        metadata={
            "help": "Token ids the draft scores (a reduced output vocabulary), or None for all of them."
        },
    )
    precision: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Quantized branches (format version 2): `attention` and `mlp`, one precision per layer "
            "(`'shared'`, `'int8'`, `'int4'`), `head`, and the int4 `group_size`; null when nothing is quantized."
        },
    )
    measurements: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Measured figures, when known: `acceptance`, `speedup`, `hardware`."},
    )

    CONFIG_NAME: ClassVar[str] = CONFIG_NAME
    hub_file_name: ClassVar[str] = CONFIG_NAME
    hub_artifact: ClassVar[str] = "sdfp mask"
    hub_max_file_bytes: ClassVar[int | None] = MAX_CONFIG_BYTES

    def __post_init__(self) -> None:
        if self.sdfp_version is None:
            self.sdfp_version = __version__
        self.validate()

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Check every field and normalize the lists of indices (sorted, plain `int`).

        Called when the config is built and before it is written; call it again after changing a field
        by hand.

        Raises:
            [`SDFPConfigError`]: if a field has the wrong type, is out of range, or the mask skips
                everything.
        """
        version = _int(self.format_version, "format_version", minimum=1)
        if version > FORMAT_VERSION:
            raise SDFPConfigError(
                f"this mask has format_version {version}, but sdfp-hf {__version__} reads versions up to "
                f"{FORMAT_VERSION}: upgrade sdfp-hf (`pip install -U sdfp-hf`) to load it"
            )
        self.format_version = version
        for name in ("sdfp_version", "base_model_name_or_path", "revision", "scoring_method"):
            _optional_str(getattr(self, name), name)

        missing = [
            name
            for name in ("model_type", "num_hidden_layers", "hidden_size", "vocab_size")
            if getattr(self, name) is None
        ]
        if missing:
            raise SDFPConfigError(
                f"the mask has no architecture fingerprint ({', '.join(missing)} missing): build it with "
                "`SDFPConfig.from_model_config(model.config, ...)` so that it can be checked against a model"
            )
        if not isinstance(self.model_type, str) or not self.model_type:
            raise SDFPConfigError(f"model_type must be a non-empty string, got {self.model_type!r}")
        num_layers = self.num_hidden_layers = _int(self.num_hidden_layers, "num_hidden_layers", minimum=1)
        self.hidden_size = _int(self.hidden_size, "hidden_size", minimum=1)
        self.vocab_size = _int(self.vocab_size, "vocab_size", minimum=1)
        if self.layer_types is not None:
            types = _list(self.layer_types, "layer_types")
            if len(types) != num_layers or not all(isinstance(t, str) for t in types):
                raise SDFPConfigError(
                    f"layer_types must be a list of {num_layers} strings (one per layer) or null, got {types!r}"
                )
            self.layer_types = types

        if self.granularity not in GRANULARITIES:
            raise SDFPConfigError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "layer" and (self.skip_attention or self.skip_mlp):
            raise SDFPConfigError(
                "a mask with granularity 'layer' lists whole layers in skip_layers only, but skip_attention="
                f"{self.skip_attention} and skip_mlp={self.skip_mlp} are set: use granularity='sublayer' "
                "to skip attention and MLP branches separately"
            )
        for name in ("skip_layers", "skip_attention", "skip_mlp"):
            if getattr(self, name) is None:  # null reads as no skips
                setattr(self, name, [])
            elif not isinstance(getattr(self, name), (list, tuple)):
                raise SDFPConfigError(f"`{name}` must be a list of layer indices, got {getattr(self, name)!r}")
        self.precision = self.plan.to_dict()  # the one plan validator (sdfp_hf.plan), normalised
        if self.precision is not None:  # older readers must refuse a mask whose draft they cannot build
            self.format_version = max(self.format_version, PRECISION_VERSION)
        for name in ("skip_layers", "skip_attention", "skip_mlp"):
            setattr(self, name, sorted(getattr(self, name)))

        scores = _dict(self.scores, "scores")
        for kind, values in scores.items():
            values = _list(values, f"scores[{kind!r}]")
            if len(values) != num_layers:
                raise SDFPConfigError(
                    f"scores[{kind!r}] must hold one score per layer ({num_layers}), got {len(values)}"
                )
            scores[kind] = [_float(v, f"scores[{kind!r}]") for v in values]
        self.scores = scores

        calibration = self.calibration = _dict(self.calibration, "calibration")
        for key in ("source", "dtype"):
            _optional_str(calibration.get(key), f"calibration[{key!r}]")
        for key, minimum in (("num_sequences", 0), ("num_tokens", 0), ("sequence_length", 1), ("seed", None)):
            if calibration.get(key) is not None:
                calibration[key] = _int(calibration[key], f"calibration[{key!r}]", minimum=minimum)
        if calibration.get("seconds") is not None:
            calibration["seconds"] = _float(calibration["seconds"], "calibration['seconds']", minimum=0.0)

        self.num_assistant_tokens = _int(self.num_assistant_tokens, "num_assistant_tokens", minimum=1)
        if self.num_assistant_tokens_schedule not in NUM_ASSISTANT_TOKENS_SCHEDULES:
            raise SDFPConfigError(
                f"num_assistant_tokens_schedule must be one of {NUM_ASSISTANT_TOKENS_SCHEDULES}, "
                f"got {self.num_assistant_tokens_schedule!r}"
            )
        self.assistant_confidence_threshold = _float(
            self.assistant_confidence_threshold, "assistant_confidence_threshold", minimum=0.0, maximum=1.0
        )
        if self.draft_vocab is not None:
            self.draft_vocab = _indices(self.draft_vocab, "draft_vocab", self.vocab_size, sort=False)
            if not self.draft_vocab:
                raise SDFPConfigError(
                    "draft_vocab must list at least one token id, or be null for the full vocabulary"
                )

        measurements = self.measurements = _dict(self.measurements, "measurements")
        if measurements.get("acceptance") is not None:
            measurements["acceptance"] = _float(
                measurements["acceptance"], "measurements['acceptance']", minimum=0.0, maximum=1.0
            )
        if measurements.get("speedup") is not None:
            measurements["speedup"] = _float(measurements["speedup"], "measurements['speedup']", minimum=0.0)
        _optional_str(measurements.get("hardware"), "measurements['hardware']")
        for name in ("calibration", "measurements"):
            for key, value in getattr(self, name).items():
                _check_json(value, f"{name}[{key!r}]")

    # ------------------------------------------------------------------ building from a model

    @staticmethod
    def fingerprint_from_model_config(model_config: Any) -> dict[str, Any]:
        """The architecture fingerprint of a transformers config.

        Args:
            model_config (`transformers.PretrainedConfig`):
                The target's config. For a multimodal model, its text config is used.

        Returns:
            `dict[str, Any]`: `model_type`, `num_hidden_layers`, `hidden_size`, `vocab_size` and
            `layer_types` (None when the config has none).
        """
        text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
        layer_types = getattr(text, "layer_types", None)
        return {
            "model_type": getattr(text, "model_type", None),
            "num_hidden_layers": getattr(text, "num_hidden_layers", None),
            "hidden_size": getattr(text, "hidden_size", None),
            "vocab_size": getattr(text, "vocab_size", None),
            "layer_types": list(layer_types) if layer_types is not None else None,
        }

    @classmethod
    def from_model_config(cls, model_config: Any, **fields_: Any) -> SDFPConfig:
        """Build a mask for a model, filling the fingerprint and the base model from its config.

        Args:
            model_config (`transformers.PretrainedConfig`):
                The target's config (`model.config`). Its `name_or_path` and `_commit_hash` become
                `base_model_name_or_path` and `revision` unless given in `fields_`.
            **fields_:
                Any other field of [`SDFPConfig`] (`skip_layers`, `scores`, ...).
        """
        values: dict[str, Any] = {
            "base_model_name_or_path": getattr(model_config, "name_or_path", None) or None,
            "revision": getattr(model_config, "_commit_hash", None),
            **cls.fingerprint_from_model_config(model_config),
        }
        values.update(fields_)
        return cls(**values)

    def check_compatible(
        self, model_config: Any, name_or_path: str | None = None, revision: str | None = None
    ) -> None:
        """Check that this mask was made for a model.

        A different architecture (model type, number of layers, hidden size or vocabulary size) is an
        error; the same architecture under a different base model name or revision is a warning, since
        a mask transfers between checkpoints of one architecture but was only measured on one of them.

        Args:
            model_config (`transformers.PretrainedConfig`):
                The config of the model the mask is about to be applied to.
            name_or_path (`str`, *optional*):
                The model's Hub id or path; defaults to `model_config.name_or_path`.
            revision (`str`, *optional*):
                The model's revision; defaults to `model_config._commit_hash`.

        Raises:
            [`SDFPConfigError`]: if the architectures differ; the message names both sides and the fix.
        """
        theirs = self.fingerprint_from_model_config(model_config)
        name_or_path = name_or_path or getattr(model_config, "name_or_path", None) or None
        revision = revision or getattr(model_config, "_commit_hash", None)
        phrases = {
            "model_type": "model type `{}`".format,
            "num_hidden_layers": "{} layers".format,
            "hidden_size": "hidden size {}".format,
            "vocab_size": "vocabulary size {}".format,
        }
        differs = [key for key in phrases if theirs[key] != getattr(self, key)]
        if differs:
            ours_text = ", ".join(phrases[key](getattr(self, key)) for key in differs)
            theirs_text = ", ".join(phrases[key](theirs[key]) for key in differs)
            ours_name = f"`{self.base_model_name_or_path}`" if self.base_model_name_or_path else "a model"
            theirs_name = f" `{name_or_path}`" if name_or_path else ""
            raise SDFPConfigError(
                f"mask was profiled on {ours_name} ({ours_text}); this model{theirs_name} has {theirs_text}: {_FIX}"
            )
        notes = []
        if (
            self.layer_types is not None
            and theirs["layer_types"] is not None
            and self.layer_types != theirs["layer_types"]
        ):
            notes.append("its layer types (attention pattern) differ from this model's")
        if self.base_model_name_or_path and name_or_path and self.base_model_name_or_path != name_or_path:
            notes.append(f"it was made for `{self.base_model_name_or_path}`, not `{name_or_path}`")
        if self.revision and revision and self.revision != revision:
            notes.append(f"it was made for revision `{self.revision}`, this model is at `{revision}`")
        if notes:
            warnings.warn(
                "the mask fits this model's architecture, but "
                + "; ".join(notes)
                + ": the skipped layers were "
                "chosen for another checkpoint, so acceptance may be lower (profile this model with `sdfp profile` "
                "for a mask of its own)",
                UserWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ skip sets

    @property
    def skip_set(self) -> SkipSet:
        """What the draft skips, as a validated [`SkipSet`] (raises `SDFPConfigError` on a bad list)."""
        return SkipSet.from_lists(
            _int(self.num_hidden_layers, "num_hidden_layers", minimum=1),
            skip_layers=self.skip_layers,
            skip_attention=self.skip_attention,
            skip_mlp=self.skip_mlp,
            error=SDFPConfigError,
        )

    @property
    def plan(self) -> DraftPlan:
        """What the draft skips, shares and quantizes, as a validated [`DraftPlan`]."""
        return DraftPlan.from_dict(self.skip_set, self.precision, error=SDFPConfigError)

    @property
    def attention_skipped(self) -> list[int]:
        """Layers whose attention branch the draft skips (whole-layer and attention-only skips), sorted."""
        return list(self.skip_set.attention)

    @property
    def mlp_skipped(self) -> list[int]:
        """Layers whose MLP branch the draft skips (whole-layer and MLP-only skips), sorted."""
        return list(self.skip_set.mlp)

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain (deep-copied) dict of JSON types."""
        return asdict(self)

    def to_json_string(self) -> str:
        """The config as the JSON text of `sdfp_config.json` (indent 2, sorted keys, newline-terminated)."""
        self.validate()
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def to_json_file(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the config to a JSON file, atomically (a temporary file renamed into place).

        Args:
            path (`str` or `os.PathLike`): the file (`~` and environment variables are expanded).
            overwrite (`bool`, *optional*, defaults to `False`): replace an existing file.

        Raises:
            [`OverwriteError`]: the file exists and `overwrite` is `False`.
            [`UnsafePathError`]: the file is a symbolic link.
        """
        write_atomic(expand_path(path), self.to_json_string(), overwrite=overwrite)

    @classmethod
    def from_dict(cls, data: Any) -> SDFPConfig:
        """Build a config from a dict read from JSON, with the checks a file from a stranger needs.

        Keys this version does not know (written by a newer minor version) are dropped with one
        warning; a missing required key, a newer major `format_version` or any invalid value raises.

        Raises:
            [`SDFPConfigError`]: if `data` is not a valid mask.
        """
        if not isinstance(data, dict):
            raise SDFPConfigError(
                f"an sdfp config must be a JSON object, got {type(data).__name__}: is this an `{CONFIG_NAME}`?"
            )
        # The version comes first: a newer major version may have renamed the very keys checked below.
        version = data.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise SDFPConfigError(
                f"this mask has format_version {version}, but sdfp-hf {__version__} reads versions up to "
                f"{FORMAT_VERSION}: upgrade sdfp-hf (`pip install -U sdfp-hf`) to load it"
            )
        missing = sorted(REQUIRED_KEYS - data.keys())
        if missing:
            raise SDFPConfigError(
                f"not an sdfp mask: required key(s) {', '.join(repr(k) for k in missing)} missing. An "
                f"`{CONFIG_NAME}` is written by `SDFPConfig.save_pretrained` / `push_to_hub`"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data.keys() - known)
        if unknown:
            warnings.warn(
                f"ignoring unknown key(s) {', '.join(repr(k) for k in unknown)} in the sdfp config: it was probably "
                "written by a newer sdfp-hf (upgrade to use them)",
                UserWarning,
                stacklevel=2,
            )
        return cls(**{key: value for key, value in data.items() if key in known})

    @classmethod
    def from_json_string(cls, text: str | bytes) -> SDFPConfig:
        """Parse the text of an `sdfp_config.json`.

        Raises:
            [`SDFPConfigError`]: if the text is not JSON or not a valid mask.
        """
        if len(text) > MAX_CONFIG_BYTES:
            raise SDFPConfigError(
                f"the sdfp config is {len(text)} bytes, more than the {MAX_CONFIG_BYTES} any mask needs: "
                "this is not an sdfp mask"
            )
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            # ValueError covers JSONDecodeError, undecodable bytes and over-long integers.
            raise SDFPConfigError(f"the sdfp config is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str]) -> SDFPConfig:
        """Read an `sdfp_config.json` file.

        Raises:
            [`SDFPConfigError`]: if the file is not JSON or not a valid mask.
        """
        with open(expand_path(path), "rb") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
        try:
            return cls.from_json_string(text)
        except SDFPConfigError as e:
            raise SDFPConfigError(f"{os.fspath(path)}: {e}") from None

    # ------------------------------------------------------------------ Hub (HubMixin's hooks)

    def _to_hub_text(self) -> str:
        return self.to_json_string()

    @classmethod
    def _from_hub_file(cls, path: str | os.PathLike[str]) -> SDFPConfig:
        return cls.from_json_file(path)

    def _hub_card(self, *, repo_id: str | None, subfolder: str | None, plot: bool) -> str:
        return self.model_card(repo_id=repo_id, subfolder=subfolder, plot=plot)

    def model_card(self, *, repo_id: str | None = None, subfolder: str | None = None, plot: bool = False) -> str:
        """The model card (`README.md`) of this mask, from the `hub_cards/` template.

        Its YAML metadata links the mask to its base model (`base_model`, when that is a Hub id),
        declares `library_name: sdfp-hf` and the tags `sdfp`, `speculative-decoding`, ...

        Args:
            repo_id (`str`, *optional*): the repository the card is for, used in the usage snippet.
            subfolder (`str`, *optional*): the repository folder holding the mask (snippet, plot link).
            plot (`bool`, *optional*, defaults to `False`): whether `sdfp_scores.png` is next to the mask.
        """
        base_model = self.base_model_name_or_path
        return render_model_card(
            CARD_TEMPLATE,
            base_model=base_model,
            tags=[self.model_type],
            config=self,
            config_name=CONFIG_NAME,
            model_name=f"`{base_model}`" if base_model else f"a `{self.model_type}` model",
            model_id=base_model or "<base model>",
            repo_id=repo_id or "<this repo>",
            subfolder=subfolder,
            plot_path=(f"{subfolder}/{PLOT_NAME}" if subfolder else PLOT_NAME) if plot else None,
            measurements=_measurement_rows(self.measurements),
            hardware=self.measurements.get("hardware"),
            calibration=_calibration_rows(self.calibration),
            plan_description=self.plan.describe(),
        )


# ---------------------------------------------------------------------- model card rows


def _measurement_rows(measurements: dict[str, Any]) -> dict[str, str]:
    rows = {}
    for key, value in measurements.items():
        if key == "acceptance" and isinstance(value, float):
            rows[key] = f"{value:.1%}"
        elif key == "speedup" and isinstance(value, float):
            rows[key] = f"{value:.2f}×"
        elif value is not None:
            rows[key] = str(value)
    return rows


def _calibration_rows(calibration: dict[str, Any]) -> dict[str, str]:
    labels = {
        "source": "source",
        "num_sequences": "sequences",
        "num_tokens": "tokens",
        "sequence_length": "sequence length",
        "seed": "seed",
        "dtype": "dtype",
        "seconds": "time taken",
    }
    rows = {}
    for key, value in calibration.items():
        if value is None:
            continue
        rows[labels.get(key, key)] = f"{value:.1f} s" if key == "seconds" else str(value)
    return rows


# ---------------------------------------------------------------------- value checks


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise SDFPConfigError(f"{name} must be an integer, got the boolean {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise SDFPConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})") from None
    if minimum is not None and number < minimum:
        raise SDFPConfigError(f"{name} must be at least {minimum}, got {number}")
    return number


def _float(value: Any, name: str, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise SDFPConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SDFPConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SDFPConfigError(f"{name} must be a finite number, got {number}")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = f"in [{minimum}, {maximum}]" if maximum is not None else f"at least {minimum}"
        raise SDFPConfigError(f"{name} must be {bounds}, got {number}")
    return number


def _check_json(value: Any, name: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise SDFPConfigError(
            f"{name} must be plain JSON data (strings, finite numbers, lists, objects with string keys), "
            f"got {value!r} ({type(value).__name__}): convert it, e.g. with str()"
        ) from None


def _optional_str(value: Any, name: str) -> None:
    if value is not None and not isinstance(value, str):
        raise SDFPConfigError(f"{name} must be a string or null, got {value!r} ({type(value).__name__})")


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise SDFPConfigError(f"{name} must be a list, got {value!r} ({type(value).__name__})")
    return list(value)


def _dict(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SDFPConfigError(f"{name} must be an object with string keys, got {value!r}")
    return dict(value)


def _indices(value: Any, name: str, size: int, sort: bool) -> list[int]:
    items = [_int(v, name) for v in _list(value, name)]
    bad = [i for i in items if not 0 <= i < size]
    if bad:
        raise SDFPConfigError(f"{name} holds {bad}, outside the valid range 0..{size - 1}")
    if len(set(items)) != len(items):
        duplicates = sorted(i for i, n in Counter(items).items() if n > 1)
        raise SDFPConfigError(f"{name} lists {duplicates} more than once: list each index once")
    return sorted(items) if sort else items
