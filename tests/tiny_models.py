"""Tiny random models of every supported architecture, built from configs (no download)."""

from __future__ import annotations

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

VOCAB = 96
NUM_LAYERS = 6
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=NUM_LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=2,
)
# Sliding windows shorter than the test sequences, so windowed attention is really exercised.
_WINDOW = 8

BUILDERS = {
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**_COMMON)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**_COMMON, sliding_window=_WINDOW)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**_COMMON)),
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**_COMMON, head_dim=16)),
    "gemma2": lambda: Gemma2ForCausalLM(
        Gemma2Config(**_COMMON, head_dim=16, sliding_window=_WINDOW, attn_implementation="eager")
    ),
    "gemma3": lambda: Gemma3ForCausalLM(
        Gemma3TextConfig(
            **_COMMON,
            head_dim=16,
            sliding_window=_WINDOW,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
        )
    ),
    "phi3": lambda: Phi3ForCausalLM(Phi3Config(**_COMMON)),
    "gpt2": lambda: GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=NUM_LAYERS, n_head=4, n_positions=256,
                   bos_token_id=0, eos_token_id=1)
    ),
}
ARCHITECTURES = sorted(BUILDERS)


def tiny_model(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A tiny random causal LM of `arch`, in eval mode, with sharpened logits.

    The output head is scaled up so the random model is confident: greedy drafts then run several
    tokens per round and agreement between draft and target is not a coin toss.
    """
    torch.manual_seed(seed)
    model = BUILDERS[arch]().to(dtype).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    model.generation_config.pad_token_id = 2
    return model


def prompt(length: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (1, length), generator=g)


def tiny_tokenizer():
    """A character-level fast tokenizer over the tiny models' vocabulary (ids 3.. are characters)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-()[]{}<>/\\|@#$%^&*+=_~`"
    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2}
    for c in chars[: VOCAB - 3]:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
