"""Weight-only quantized copies of a draft's linear layers: int8 per output channel, int4 per group.

A draft that quantizes a branch holds a copy of that branch's matrices in 8 or 4 bits, built by
round-to-nearest from the target's weights (no calibration data), which are only read: the target's
tensors stay bit-identical. Decoding one token reads every weight once, so a branch's cost is its bytes:
an int8 copy reads half the bytes of bf16 weights, an int4 copy a quarter (plus one scale per row, or a
scale and a zero point per group).

The matmuls are torch's own weight-only kernels (`sdfp_hf._compat`), which compute in bfloat16: a float32
draft casts its activations to bfloat16 for these matmuls and back (the draft only proposes; the target
verifies in its own precision). Where a kernel is missing or a matrix has a shape it cannot take, the
linear stays shared, and `quantizable` says so beforehand, so that a plan's memory is known exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._compat import int4_pack, int4_weight_only_mm, int8_weight_only_mm, weight_only_formats

__all__ = [
    "Int4Linear",
    "Int8Linear",
    "QuantizedLinear",
    "group_for",
    "linear_weights",
    "nbytes_of",
    "quantizable",
    "quantize_linears",
    "quantize_weight",
    "quantized_linear",
    "quantized_nbytes",
    "rounding_error",
]

COMPUTE_DTYPE = torch.bfloat16


def _transposed(module: nn.Module) -> bool:
    # transformers' GPT-2 `Conv1D` keeps its weight as (in, out)
    return type(module).__name__ == "Conv1D"


def linear_weights(module: nn.Module) -> dict[str, nn.Module]:
    """Every linear submodule of `module` (`nn.Linear` or transformers' `Conv1D`), by dotted name."""
    return {
        name: child
        for name, child in module.named_modules()
        if name and (isinstance(child, nn.Linear) or (_transposed(child) and hasattr(child, "nf")))
    }


def is_transposed(module: nn.Module) -> bool:
    """Whether a linear module keeps its weight as (in, out) (transformers' `Conv1D`)."""
    return _transposed(module)


def _shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of a linear module."""
    weight = module.weight
    return (weight.shape[1], weight.shape[0]) if _transposed(module) else (weight.shape[0], weight.shape[1])


def group_for(out_features: int, in_features: int, fmt: str, group_size: int, device_type: str) -> int | None:
    """The group size a matrix of this shape is quantized with in `fmt` (int8: 0), or None: it stays shared.

    int8 needs a multiple of 16 input columns; int4 needs a multiple of 16 output rows and input columns
    divisible by the group size (the largest of `group_size`, 64, 32 that divides them is used). Either
    needs the format's kernel on `device_type`.
    """
    if fmt not in weight_only_formats(device_type):
        return None
    if fmt == "int8":
        return 0 if in_features % 16 == 0 else None
    if out_features % 16:
        return None
    for size in (group_size, 64, 32):
        if size <= group_size and in_features % size == 0:
            return size
    return None


def quantizable(module: nn.Module, fmt: str, group_size: int) -> int | None:
    """`group_for` of a linear module's matrix on its device."""
    return group_for(*_shape(module), fmt, group_size, module.weight.device.type)


def nbytes_of(out_features: int, in_features: int, has_bias: bool, fmt: str, group_size: int, device_type: str) -> int:
    """The bytes a quantized copy of a matrix of this shape holds (0 when it would stay shared)."""
    size = group_for(out_features, in_features, fmt, group_size, device_type)
    if size is None:
        return 0
    bias = out_features * 2 if has_bias else 0
    if fmt == "int8":
        return out_features * in_features + out_features * 2 + bias
    return out_features * in_features // 2 + (in_features // size) * out_features * 2 * 2 + bias


class QuantizedLinear(nn.Module):
    """A weight-only quantized copy of a linear layer; computes ``y = x @ W.T + b`` in bfloat16."""

    format: str

    def __init__(self, out_features: int, in_features: int, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", None if bias is None else bias.detach().to(COMPUTE_DTYPE).clone())

    @property
    def nbytes(self) -> int:
        """Bytes this copy holds (its quantized weight, scales and bias)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if flat.dtype != COMPUTE_DTYPE:
            flat = flat.to(COMPUTE_DTYPE)
        elif not flat.is_contiguous() or flat.data_ptr() % 64:
            flat = flat.clone(memory_format=torch.contiguous_format)  # the CPU kernels load aligned rows
        y = self._matmul(flat)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}"


_ROWS = 256  # rows rounded at a time: each step's float32 work stays in the processor's cache


def _int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Round to nearest, one symmetric scale per row: (q int8, scale); ``weight ~ q * scale[:, None]``."""
    q = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scale = torch.empty(weight.shape[0], dtype=COMPUTE_DTYPE, device=weight.device)
    for start in range(0, weight.shape[0], _ROWS):
        rows = slice(start, start + _ROWS)
        w = weight[rows].detach().to(torch.float32, copy=True)  # the target's weight is only read
        scale[rows] = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        q[rows] = w.div_(scale[rows].float()[:, None]).round_().clamp_(-127, 127)
    return q, scale


def _int4(weight: torch.Tensor, group_size: int, error: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round to nearest per group of columns: (q in 0..15, scale, zero); ``weight ~ (q - 8) * scale + zero``.

    q has shape (rows, groups, group_size) (int32), scale and zero (rows, groups). With `error`, the first
    item is instead what the rounding changes in `weight` (float32, its shape).
    """
    out_features, in_features = weight.shape
    groups = in_features // group_size
    q = torch.empty((out_features, groups, group_size), dtype=torch.float32 if error else torch.int32, device=weight.device)
    scale = torch.empty((out_features, groups), dtype=COMPUTE_DTYPE, device=weight.device)
    zero = torch.empty_like(scale)
    for start in range(0, out_features, _ROWS):
        rows = slice(start, start + _ROWS)
        w = weight[rows].detach().to(torch.float32, copy=True).reshape(-1, groups, group_size)
        low, high = w.amin(-1), w.amax(-1)
        # the scale and zero point are rounded to the kernel's dtype first, and q computed with them
        scale[rows] = ((high - low) / 15.0).clamp(min=1e-6)
        zero[rows] = low + 8.0 * scale[rows].float()
        s, z = scale[rows].float()[..., None], zero[rows].float()[..., None]
        r = (w - z).div_(s).add_(8.0).round_().clamp_(0, 15)
        q[rows] = r.sub_(8.0).mul_(s).add_(z).sub_(w) if error else r
    return (q.reshape(weight.shape) if error else q), scale, zero


def rounding_error(weight: torch.Tensor, fmt: str, group_size: int) -> torch.Tensor:
    """What quantizing `weight` (out, in) to `fmt` changes in it, as float32 (zeros if it would stay shared)."""
    size = group_for(*weight.shape, fmt, group_size, weight.device.type)
    if size is None:
        return torch.zeros_like(weight, dtype=torch.float32)
    if fmt == "int8":
        q, scale = _int8(weight)
        return q.float().mul_(scale.float()[:, None]).sub_(weight.detach().float())
    return _int4(weight, size, error=True)[0]


class Int8Linear(QuantizedLinear):
    """int8 weights, one symmetric scale per output row (round to nearest)."""

    format = "int8"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__(weight.shape[0], weight.shape[1], bias)
        q, scale = _int8(weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return int8_weight_only_mm(x, self.qweight, self.scale)


class Int4Linear(QuantizedLinear):
    """int4 weights, one scale and zero point per group of `group_size` input columns of a row."""

    format = "int4"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, group_size: int = 64):
        out_features, in_features = weight.shape
        super().__init__(out_features, in_features, bias)
        self.group_size = group_size
        q, scale, zero = _int4(weight, group_size)
        self.register_buffer("qweight", int4_pack(q.reshape(out_features, in_features)))
        # (in_features / group_size, out_features, 2): the kernel's layout of (scale, zero) pairs
        self.register_buffer("scales_and_zeros", torch.stack([scale, zero], -1).transpose(0, 1).contiguous())

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return int4_weight_only_mm(x, self.qweight, self.group_size, self.scales_and_zeros)


def quantize_weight(weight: torch.Tensor, bias: torch.Tensor | None, fmt: str, group_size: int) -> QuantizedLinear | None:
    """A quantized copy of the matrix `weight` (out, in) and its bias, or None if it must stay shared."""
    size = group_for(*weight.shape, fmt, group_size, weight.device.type)
    if size is None:
        return None
    if fmt == "int8":
        return Int8Linear(weight, bias)
    return Int4Linear(weight, bias, group_size=size)


def quantized_linear(module: nn.Module, fmt: str, group_size: int) -> QuantizedLinear | None:
    """A quantized copy of one linear module (`nn.Linear` or `Conv1D`), or None if it must stay shared."""
    weight = module.weight.detach()
    return quantize_weight(weight.t() if _transposed(module) else weight, getattr(module, "bias", None), fmt, group_size)


def quantize_linears(
    module: nn.Module, fmt: str, group_size: int, copy_module: Any, copies: dict | None = None
) -> int:
    """Replace, inside `module` (the draft's own copy of a branch), every linear layer by a quantized copy.

    Modules between `module` and each linear are replaced by copies first (`copy_module`, a function
    returning a new module object that shares parameters), so no module of the target is changed. With
    `copies` (a dict kept by the caller), a linear quantized once is reused by later drafts of the target.

    Returns:
        `int`: the bytes the quantized copies hold.
    """
    held = 0
    for name, linear in linear_weights(module).items():
        key = (id(linear.weight), fmt, group_size)
        if copies is not None and key in copies:
            quantized = copies[key]
        else:
            quantized = quantized_linear(linear, fmt, group_size)
            if copies is not None:
                copies[key] = quantized
        if quantized is None:
            continue
        *path, leaf = name.split(".")
        parent = module
        for part in path:
            child = copy_module(parent._modules[part])
            parent._modules[part] = child
            parent = child
        parent._modules[leaf] = quantized
        held += quantized.nbytes
    return held


def quantized_nbytes(module: nn.Module, fmt: str, group_size: int) -> int:
    """The bytes `quantize_linears(module, fmt, group_size)` would hold, without building anything."""
    return sum(
        nbytes_of(*_shape(linear), getattr(linear, "bias", None) is not None, fmt, group_size, linear.weight.device.type)
        for linear in linear_weights(module).values()
    )
