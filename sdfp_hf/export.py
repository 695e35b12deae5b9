"""Export a draft as an ordinary transformers checkpoint, for serving engines that take a draft by path.

An `SDFPAssistant` is a view of its target: it holds no weights of its own and only exists inside the
process that built it. Serving engines (vLLM, SGLang, TGI) take a speculative draft as a separate model
folder. `save_standalone` writes one: a checkpoint of the target's own class with only the kept decoder
layers, renumbered, that `AutoModelForCausalLM.from_pretrained(folder)` loads with no sdfp-hf installed
and whose logits equal the draft's (run on its own, with its own cache).

What is written:

- the weights as safetensors: the target's embeddings, final norm and head, and its kept layers;
- `config.json`: the target's config with `num_hidden_layers` and `layer_types` of the kept layers, and
  nothing sdfp-specific (the draft's in-memory config carries cache-sharing hints no engine knows);
- `generation_config.json` (the draft's, with its recommended draft length) and the tokenizer if given;
- a short `README.md` naming the target the draft belongs to (only if the folder has none).

Nothing the folder holds is lost by accident: a folder that already holds a checkpoint or a config
(`CHECKPOINT_PATTERNS`: weights of any format, `config.json`, ...) is refused unless `overwrite=True`, and
so is any file the export would replace. The checkpoint is written to a temporary folder next to the
destination first and then moved in file by file with atomic renames (a new folder appears whole), so
an export that fails half-way leaves the destination as it was.

A standard decoder layer cannot leave out one of its two branches, so a layer of which the draft skips
only the attention or only the MLP keeps that branch with its output projection set to zero: the branch
then adds exactly nothing to the residual stream (see `ArchitectureSpec.branch_output_projection`), but
it is still computed. Such a checkpoint is exact, and as slow per kept layer as the target.

A draft whose branches are quantized copies (`DraftPlan`) is exported with those branches at the target's
precision, and a warning says so: there is no standard checkpoint format for them that engines load as is.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._files import OverwriteError, expand_path, move_into, staging_folder
from .architectures import get_architecture
from .draft import DraftModel
from .hub import render_model_card

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CHECKPOINT_PATTERNS",
    "SDFP_ONLY_CONFIG_ATTRIBUTES",
    "checkpoint_files",
    "save_standalone",
    "standalone_config",
]

#: Attributes the draft's in-memory config may carry that belong to no published architecture.
SDFP_ONLY_CONFIG_ATTRIBUTES = ("kv_sharing_modes",)

#: Files that make a folder a checkpoint: an export refuses such a folder unless `overwrite=True`.
CHECKPOINT_PATTERNS = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.h5",
    "*.msgpack",
    "*.gguf",
    "*.onnx",
    "*.index.json",
    "config.json",
    "generation_config.json",
    "adapter_config.json",
)

# Weights of an earlier checkpoint that an overwrite removes when the new export does not rewrite them:
# left behind, a stale shard or index would be loaded with the new config (engines load every shard).
_STALE_WEIGHTS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")


def checkpoint_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The files of `directory` that belong to a checkpoint (`CHECKPOINT_PATTERNS`), sorted; none if it is absent.

    Args:
        directory (`str` or `os.PathLike`): the folder (`~` and environment variables are expanded).
    """
    folder = expand_path(directory)
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if (path.is_file() or path.is_symlink()) and any(path.match(pattern) for pattern in CHECKPOINT_PATTERNS)
    )

def standalone_config(draft: DraftModel) -> Any:
    """The transformers config of the standalone checkpoint of `draft`.

    The target's config (not the draft's, which may carry sdfp-only cache hints), with
    `num_hidden_layers` and `layer_types` of the kept layers, no quantization flag (a model loaded from
    GGUF is already dequantized) and tied embeddings only where the target's weights really are tied.

    Args:
        draft ([`SDFPAssistant`]): the draft.

    Returns:
        `PretrainedConfig`: a new config; the target's is not changed.
    """
    target = draft.target
    kept = draft.skip.kept_layers
    config = copy.deepcopy(target.config)
    text_config = config.get_text_config(decoder=True)
    layer_types = getattr(text_config, "layer_types", None)
    text_config.num_hidden_layers = len(kept)
    if layer_types is not None:
        text_config.layer_types = [layer_types[i] for i in kept]
    for cfg in {id(config): config, id(text_config): text_config}.values():
        for name in SDFP_ONLY_CONFIG_ATTRIBUTES:
            cfg.__dict__.pop(name, None)
        # GGUF loading flags the model as quantized; its weights are plain dequantized tensors.
        cfg.__dict__.pop("quantization_config", None)
    if getattr(text_config, "tie_word_embeddings", False) and not _embeddings_tied(target):
        # The config promises a tie the weights do not keep: an export relying on it would be wrong.
        text_config.tie_word_embeddings = False
        config.tie_word_embeddings = False
    config.architectures = [type(target).__name__]
    config.dtype = target.dtype
    return config


def save_standalone(
    draft: DraftModel,
    save_directory: str | os.PathLike[str],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_shard_size: int | str = "5GB",
    readme: bool = True,
    overwrite: bool = False,
) -> str:
    """Write `draft` as an ordinary transformers checkpoint that loads without sdfp-hf.

    `AutoModelForCausalLM.from_pretrained(save_directory)` then gives a model of the target's class with
    only the draft's kept layers, whose logits equal `draft(input_ids).logits`. Serving engines take it
    as a separate draft model (see the README, "Serving with vLLM").

    A layer whose attention or MLP alone is skipped keeps that branch with its output projection set to
    zero: exactly a no-op, but still computed (a standard layer cannot drop one branch). A reduced draft
    vocabulary (`draft_vocab`) is not exported: the checkpoint keeps the full output head (with a warning).

    Args:
        draft ([`SDFPAssistant`]):
            The draft, e.g. from `SDFPAssistant.from_pretrained(model, mask)`.
        save_directory (`str` or `os.PathLike`):
            The folder to write, created if needed (`~` and environment variables are expanded).
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            The target's tokenizer, saved next to the weights (engines load it from the draft folder).
        max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`):
            As in `PreTrainedModel.save_pretrained`.
        readme (`bool`, *optional*, defaults to `True`):
            Write a short `README.md` naming the target (never over an existing one).
        overwrite (`bool`, *optional*, defaults to `False`):
            Write into a folder that already holds a checkpoint or config, replacing its files; the weight
            files and indices of the old checkpoint that the new one does not rewrite are removed, so the
            folder holds one checkpoint. Other files (notes, a README) are kept.

    Returns:
        `str`: the folder written.

    Raises:
        [`OverwriteError`]: the folder holds a checkpoint or config (`CHECKPOINT_PATTERNS`), or a file the
            export writes, and `overwrite` is `False`; nothing is written.
        [`UnsafePathError`]: a file the export writes is a symbolic link.
    """
    if not isinstance(draft, DraftModel):
        raise TypeError(
            f"save_standalone expects an sdfp-hf draft (`SDFPAssistant.from_target(model, ...)`), got "
            f"{type(draft).__name__}: a plain model is saved with `model.save_pretrained`"
        )
    directory = expand_path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"cannot export the draft to `{directory}`: it is a file, not a folder")
    existing = checkpoint_files(directory)
    if existing and not overwrite:
        names = ", ".join(path.name for path in existing[:4]) + (", ..." if len(existing) > 4 else "")
        raise OverwriteError(
            f"`{directory}` already holds a checkpoint or config ({names}) and is kept: pass `overwrite=True` to "
            "replace it, or choose an empty folder",
            directory,
        )
    if draft.sdfp_config.draft_vocab is not None:
        warnings.warn(
            f"the draft scores a reduced vocabulary ({len(draft.sdfp_config.draft_vocab)} token ids, `draft_vocab`), "
            "which a standard checkpoint cannot express: the export keeps the full output head (engines also "
            "require the target's vocabulary), so it proposes from every token",
            UserWarning,
            stacklevel=2,
        )
    if draft.plan.is_quantized:
        warnings.warn(
            f"the draft's quantized copies ({draft.plan.describe()}) are exported at the target's precision: no "
            "standard checkpoint format holds these round-to-nearest int8/int4 weights in a form serving engines "
            "load without extra packages; quantize the exported draft with the engine's own weight-only "
            "quantization if it offers one",
            UserWarning,
            stacklevel=2,
        )
    standalone = _standalone_model(draft)
    with staging_folder(directory) as staged:
        standalone.save_pretrained(staged, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(staged)
        if readme:
            (staged / "README.md").write_text(_readme(draft), encoding="utf-8")
        written = move_into(staged, directory, overwrite=overwrite, keep=["README.md"])
    if overwrite:
        new = {path.name for path in written}
        for path in existing:
            if path.name not in new and not path.is_symlink() and any(path.match(p) for p in _STALE_WEIGHTS):
                path.unlink()
    return str(directory)


def _embeddings_tied(model: PreTrainedModel) -> bool:
    output, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    if output is None or inputs is None:
        return False
    return output.weight is inputs.weight or output.weight.data_ptr() == inputs.weight.data_ptr()


def _standalone_model(draft: DraftModel) -> PreTrainedModel:
    """A model of the target's class holding the draft's layers, sharing the target's tensors.

    It is built on the meta device (no memory, no random init) and each of its parameters and buffers
    is then set to the target's tensor of the same role: `layers.j` of the standalone model is
    `layers.kept[j]` of the target. Only the zeroed output projections are new tensors.
    """
    target = draft.target
    spec = get_architecture(target)
    kept = draft.skip.kept_layers
    config = standalone_config(draft)
    with torch.device("meta"):
        standalone = type(target)(config)
    prefix = f"{spec.layers}."

    def source_name(name: str) -> str:
        if name == spec.layers or not name.startswith(prefix):
            return name
        index, _, rest = name[len(prefix) :].partition(".")
        return f"{prefix}{kept[int(index)]}" + (f".{rest}" if rest else "")

    for name, module in standalone.named_modules(remove_duplicate=False):
        source = target.get_submodule(source_name(name))
        for key in module._parameters:
            module._parameters[key] = source._parameters[key]
        for key in module._buffers:
            module._buffers[key] = source._buffers[key]
    if getattr(config.get_text_config(decoder=True), "tie_word_embeddings", False):
        standalone.tie_weights()

    whole = set(draft.skip.layers)
    layers = spec.decoder_layers(standalone)
    for new_index, old_index in enumerate(kept):
        for kind, skipped in (("attention", draft.skip.attention), ("mlp", draft.skip.mlp)):
            if old_index in skipped and old_index not in whole:
                projection = spec.branch_output_projection(layers[new_index], kind)
                for key, value in projection._parameters.items():
                    if value is not None:
                        projection._parameters[key] = nn.Parameter(
                            torch.zeros_like(value), requires_grad=False
                        )
    standalone.generation_config = copy.deepcopy(draft.generation_config)
    standalone.eval()
    return standalone


def _readme(draft: DraftModel) -> str:
    mask = draft.sdfp_config
    target = mask.base_model_name_or_path or getattr(draft.target, "name_or_path", None) or "<target model>"
    return render_model_card(
        "sdfp_draft_card.md",
        base_model=target,
        tags=["draft-model", mask.model_type],
        target=target,
        num_kept=len(draft.skip.kept_layers),
        num_layers=draft.skip.num_layers,
        model_class=type(draft.target).__name__,
        skip_layers=mask.skip_layers,
        skip_attention=mask.skip_attention,
        skip_mlp=mask.skip_mlp,
    )
