"""Where each supported architecture keeps its decoder layers and their residual branches.

This is the only module that knows model layouts. Everything else (the draft, the profiler, the
export) asks it for the decoder layers of a model and for the two residual branches of a layer, so
adding an architecture is adding one entry to `ARCHITECTURES`.

A decoder layer is seen as ``h = h + attention_branch(h); h = h + mlp_branch(h)``. Each branch is a
named submodule (``self_attn`` / ``mlp``), optionally preceded and followed by norms that belong to
it. Skipping a branch means replacing that submodule with one that returns zeros: for every layout
below, a zero output makes the whole branch add nothing to the residual stream (a post-branch RMSNorm
of zeros is zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = [
    "ARCHITECTURES",
    "ArchitectureSpec",
    "UnsupportedModelError",
    "get_architecture",
    "supported_model_types",
]


class UnsupportedModelError(ValueError):
    """Raised when sdfp-hf does not know how to build a layer-skipping draft of a model."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """Layout of one family of decoder-only transformers.

    Args:
        layers (`str`):
            Dotted path from the causal-LM root to the `nn.ModuleList` of decoder layers.
        attention (`str`):
            Name of the self-attention submodule inside a decoder layer. It carries the `layer_idx`
            under which it reads and writes the KV cache, and returns a tuple whose first element
            is the branch output.
        mlp (`str`):
            Name of the feed-forward submodule inside a decoder layer; returns a tensor.
        attention_out (`str`):
            Dotted path, inside the attention submodule, of its output projection.
        mlp_out (`str`):
            Dotted path, inside the MLP submodule, of its output projection.
        attention_norms (`tuple[str, ...]`):
            Norms of the decoder layer that belong to the attention branch (pre and post).
        mlp_norms (`tuple[str, ...]`):
            Norms of the decoder layer that belong to the MLP branch (pre and post).
        layer_idx_on_layer (`bool`):
            Whether the decoder layer itself also stores a `layer_idx` attribute (Gemma3).
    """

    layers: str
    attention: str
    mlp: str
    attention_out: str
    mlp_out: str
    attention_norms: tuple[str, ...]
    mlp_norms: tuple[str, ...]
    layer_idx_on_layer: bool = False

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The `nn.ModuleList` of decoder layers of `model` (a causal-LM root module)."""
        return model.get_submodule(self.layers)

    def branch(self, layer: nn.Module, kind: str) -> nn.Module:
        """The residual branch `kind` (``"attention"`` or ``"mlp"``) of a decoder layer."""
        return getattr(layer, self._branch_attr(kind))

    def branch_output_projection(self, layer: nn.Module, kind: str) -> nn.Module:
        """The output projection of the residual branch `kind`: zeroing it makes the branch add nothing."""
        path = self.attention_out if kind == "attention" else self.mlp_out
        return self.branch(layer, kind).get_submodule(path)

    def branch_modules(self, layer: nn.Module, kind: str) -> list[nn.Module]:
        """Every module whose parameters belong to the branch `kind`: the branch itself and its norms."""
        norms = self.attention_norms if kind == "attention" else self.mlp_norms
        return [self.branch(layer, kind)] + [getattr(layer, name) for name in norms if hasattr(layer, name)]

    def _branch_attr(self, kind: str) -> str:
        if kind == "attention":
            return self.attention
        if kind == "mlp":
            return self.mlp
        raise ValueError(f"branch kind must be 'attention' or 'mlp', got {kind!r}")


_LLAMA_LIKE = ArchitectureSpec(
    layers="model.layers",
    attention="self_attn",
    mlp="mlp",
    attention_out="o_proj",
    mlp_out="down_proj",
    attention_norms=("input_layernorm",),
    mlp_norms=("post_attention_layernorm",),
)

_GEMMA = ArchitectureSpec(
    layers="model.layers",
    attention="self_attn",
    mlp="mlp",
    attention_out="o_proj",
    mlp_out="down_proj",
    attention_norms=("input_layernorm", "post_attention_layernorm"),
    mlp_norms=("pre_feedforward_layernorm", "post_feedforward_layernorm"),
)

#: `config.model_type` -> layout. The one place to add an architecture.
ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    "gemma2": _GEMMA,
    "gemma3_text": ArchitectureSpec(**{**_GEMMA.__dict__, "layer_idx_on_layer": True}),
    "gpt2": ArchitectureSpec(
        layers="transformer.h",
        attention="attn",
        mlp="mlp",
        attention_out="c_proj",
        mlp_out="c_proj",
        attention_norms=("ln_1",),
        mlp_norms=("ln_2",),
    ),
}


def supported_model_types() -> list[str]:
    """The `config.model_type` values sdfp-hf can build drafts for."""
    return sorted(ARCHITECTURES)


def get_architecture(model: nn.Module) -> ArchitectureSpec:
    """Return the layout of `model`, or raise a clear `UnsupportedModelError`.

    Args:
        model (`PreTrainedModel`): a decoder-only causal language model (``*ForCausalLM``).
    """
    name = type(model).__name__
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedModelError(
            f"{name} is not a transformers model (it has no `config`): pass a model loaded with "
            "`AutoModelForCausalLM.from_pretrained(...)`"
        )
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{name} is an encoder-decoder model; sdfp-hf drafts decoder-only causal LMs "
            f"({', '.join(supported_model_types())})"
        )
    spec = ARCHITECTURES.get(getattr(config, "model_type", None))
    if spec is None:
        raise UnsupportedModelError(
            f"{name} (model_type={config.model_type!r}) is not supported: sdfp-hf knows the decoder layers of "
            f"model types {', '.join(supported_model_types())}. Add an entry to "
            "`sdfp_hf.architectures.ARCHITECTURES` to support it."
        )
    if model.get_output_embeddings() is None:
        raise UnsupportedModelError(
            f"{name} has no language-modelling head: load the causal LM "
            "(`AutoModelForCausalLM.from_pretrained(...)`), not the bare base model"
        )
    try:
        spec.decoder_layers(model)
    except AttributeError as err:
        raise UnsupportedModelError(
            f"{name} does not keep its decoder layers at `{spec.layers}` as sdfp-hf expects for "
            f"model_type={config.model_type!r}: {err}"
        ) from None
    return spec
