"""Layer sensitivity scores: Fisher information (FIT) and the other scorers, behind one interface.

`score_layers(model, calibration, method=...)` returns a [`LayerScores`]: one score per decoder layer for
its attention branch, its MLP branch and the whole layer. Lower means "safer to skip".

Methods (`SCORING_METHODS`):

- ``"fit"``: the paper's FIT, ``S = sum over the branch's parameters of E[g^2] * theta^2`` with `g` the
  gradient of the next-token cross-entropy on the calibration tokens (the empirical Fisher: labels are
  the data's next tokens). `E` is over backward passes (one per `batch_size` sequences).
- ``"fit_sampled"``: the same with labels drawn from the model's own next-token distribution (the true
  Fisher: the sensitivity of the output distribution, which is what the draft must preserve).
- ``"fit_argmax"``: the same with the model's argmax as the label.
- ``"fit_trace"``: the trace form ``Tr(F) * E[theta^2]`` (sum of squared gradients times the mean squared
  weight of the branch), data labels.
- ``"fit_quant"``: FIT as first proposed, for mixed-precision quantization: ``sum E[g^2] * dtheta^2`` over a
  branch's matrices, with `dtheta` what rounding them to int4 (`quantize_format`, `group_size`) changes,
  sampled labels. For a matrix ``y = W x`` the Fisher diagonal ``E[(dL/dW_ij)^2] = E[g_i^2 x_j^2]`` is taken
  in its Kronecker-factored form ``E[g_i^2] E[x_j^2]`` (as K-FAC does), from the squared gradients at each
  matrix's output and squared inputs: one forward and one backward through the activations, no weight
  gradient (on Qwen2.5-Coder-1.5B a third of the time of the exact form). Higher means the branch loses
  more to int4; the profiler keeps such branches int8.
- ``"fisher_gate"``: activation side. Put a gate `a` on each residual branch, ``h + a * f(h)``; removing
  the branch moves `a` from 1 to 0, and the Fisher information of `a` at 1,
  ``E_y[(d log p(y) / d a)^2]`` with ``d log p / d a = <dL/dh, f(h)>`` (the gradient of the loss with
  respect to the residual stream after the branch, dotted with what the branch adds), is the curvature of
  KL(target || target without the branch): the second-order estimate of how much skipping the branch
  moves the output distribution. Labels are sampled (true Fisher). It is computed per position
  (a per-position gate) and, with ``local=True`` (the default), only through the position itself: the
  draft reads the target's exact keys and values for the prefix, so skipping a branch changes the
  draft's own position only, and that is what is measured (earlier positions' keys and values are
  detached). One backward pass gives every branch's score; the layer score gates both branches together.
- ``"gate_flips"``: the same per-position branch gates, aimed at greedy acceptance itself: the gradient of
  each position's greedy margin (top-1 minus top-2 logit) divided by the margin is, to first order, the
  fraction of the margin that removing the branch takes away; clipped to [0, 1] and averaged over positions
  it estimates the share of positions whose argmax the removal flips.
- ``"block_influence"``: ShortGPT's block influence, ``1 - cos(input, output)`` of the layer or branch,
  averaged over tokens (forward only).
- ``"random"``, ``"last"``, ``"evenly_spaced"``: data-free baselines expressed as scores (seeded
  uniform scores; the last layers lowest, i.e. early exit; a low-discrepancy order so that any number of
  lowest scores is spread evenly over the depth).

Which is the default, and why (measured, `benchmarks/compare_selectors.py`, results in `benchmarks/results/`):
the draft's acceptance at equal draft cost (the same fraction of the decoder layers' bytes skipped), by exact
replay of greedy speculative decoding on Spec-Bench prompts in the chat template, data-free calibration.

- The paper's parameter-space FIT (``"fit"``) and all its variants (sampled or argmax labels, trace form)
  choose drafts no better than random layers: on SmolLM2-135M 1.41 / 1.23 / 0.93 accepted tokens per
  round at 10 / 13 / 20 % skipped, random 1.52 / 1.28 / 0.64 (mean of three seeds); on Qwen2.5-Coder-0.5B
  (whole layers) 2.23 / 1.01 / 0.29 at 10 / 20 / 30 %, random 2.78 / 1.71 / 1.30. The sum of
  ``E[g^2] theta^2`` measures how much small noise on the weights moves the loss, which large weights
  dominate; it does not measure what removing a branch's output does.
- Moving to the activation side (``"fisher_gate"``, the Fisher information of a gate on each branch's
  output) fixes that: 2.62 / 2.17 / 1.85 on SmolLM2. Measuring it the way the draft runs (``local``: the
  prefix's keys and values are the target's) matters: 1.67 / 1.42 / 1.14 without. Sampled and argmax labels
  do alike; using the off-diagonal Fisher terms (interactions) or sub-layer selection by bytes did not help.
- ``"gate_flips"`` (the default) asks the gates the question acceptance asks, whether the greedy token
  changes: 2.87 / 2.71 on SmolLM2 at 10 / 13 %, and on Qwen2.5-Coder-0.5B 4.52 / 2.79 / 2.26 (whole
  layers) against 3.71 / 2.68 / 1.23 for ``"fisher_gate"``; mean over budgets and granularities 3.17
  against 2.46, random 1.97-2.27, evenly spaced 1.83, last 1.07. Its weakness: a first-order estimate,
  it can pick a contiguous block whose joint removal is far worse than the sum of its parts (SmolLM2 at 20 %:
  1.01, where ``"fisher_gate"`` gives 1.85); ``skip_ratio="auto"`` measures acceptance and stops before that.
- Block influence (ShortGPT) is stable but behind: 2.62 / 1.86 / 1.33 on SmolLM2, below random on
  Qwen2.5-Coder-0.5B (mean 1.74).

Memory: parameter-space methods never hold a gradient copy: each parameter's squared gradient is folded
into its branch's running sum by a post-accumulate hook as soon as backward produces it, and the gradient
is freed there. Only the decoder layers' parameters require grad while profiling; every `requires_grad`
flag, every existing `.grad` and the train/eval mode are restored afterwards, and the weights are never
written. Works in any dtype; accumulation is in float32.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._compat import attn_implementation
from .architectures import get_architecture
from .cache import local_forward
from .quantize import is_transposed, linear_weights, rounding_error

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .calibration import CalibrationData

__all__ = [
    "DEFAULT_SCORING_METHOD",
    "LABELS",
    "LayerScores",
    "SCORING_METHODS",
    "score_layers",
]

logger = logging.getLogger(__name__)

_PARAM_METHODS = {
    "fit": "data",
    "fit_sampled": "sampled",
    "fit_argmax": "argmax",
    "fit_trace": "data",
}
_DATA_FREE_METHODS = ("random", "last", "evenly_spaced")
SCORING_METHODS = (*_PARAM_METHODS, "fit_quant", "fisher_gate", "gate_flips", "block_influence", *_DATA_FREE_METHODS)
"""Every scoring method `score_layers` knows."""

LABELS = ("data", "sampled", "argmax")
"""Label choices of the Fisher methods: the data's next token, a sample of the model, its argmax."""

DEFAULT_SCORING_METHOD = "gate_flips"
"""The method `profile` uses by default; chosen by measured draft acceptance (see the module docstring and
`benchmarks/results/selectors_*`)."""

KINDS = ("attention", "mlp")


@dataclass
class LayerScores:
    """Per-layer sensitivity scores of one model by one method; lower is safer to skip.

    Args:
        method (`str`): the scoring method (one of `SCORING_METHODS`).
        attention (`list[float]`): one score per decoder layer for its attention branch.
        mlp (`list[float]`): one score per decoder layer for its MLP branch.
        layer (`list[float]`): one score per decoder layer for the whole layer.
        seconds (`float`): time taken to score.
        num_tokens (`int`): calibration positions seen.
        peak_memory_bytes (`int`, *optional*): peak resident memory of the process (CPU) or peak
            allocated accelerator memory during scoring, when known.
        details (`dict`): method settings (labels, batch size, ...).
    """

    method: str
    attention: list[float]
    mlp: list[float]
    layer: list[float]
    seconds: float = 0.0
    num_tokens: int = 0
    peak_memory_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.layer)

    def of(self, kind: str) -> list[float]:
        """Scores of `kind`: ``"layer"``, ``"attention"`` or ``"mlp"``."""
        if kind not in ("layer", "attention", "mlp"):
            raise ValueError(f"score kind must be 'layer', 'attention' or 'mlp', got {kind!r}")
        return getattr(self, kind)

    def as_dict(self) -> dict[str, list[float]]:
        """The scores as `SDFPConfig.scores` holds them: ``{"layer": [...], "attention": [...], "mlp": [...]}``."""
        return {"layer": list(self.layer), "attention": list(self.attention), "mlp": list(self.mlp)}

    def summary(self) -> str:
        mem = f", peak memory {self.peak_memory_bytes / 2**20:.0f} MiB" if self.peak_memory_bytes else ""
        return (
            f"scored {self.num_layers} layers by {self.method!r} in {self.seconds:.1f}s "
            f"on {self.num_tokens} tokens{mem}"
        )


# ---------------------------------------------------------------------------------------------- helpers


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if peak > 1 << 32 else peak * 1024)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled, leave=False)


class _ResidualTaps:
    """Forward hooks that expose, per decoder layer, the residual stream before the layer (`h_in`),
    between its attention and MLP branches (`h_mid`) and after it (`h_out`).

    What a branch adds to the residual stream is then ``h_mid - h_in`` (attention) and
    ``h_out - h_mid`` (MLP), whatever norms the architecture puts around it. `h_mid` is the input of
    the MLP branch's first norm, which every supported layout feeds with the residual stream.
    """

    def __init__(self, model: nn.Module, on_layer: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]):
        spec = get_architecture(model)
        self.handles = []
        self.on_layer = on_layer
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        for idx, layer in enumerate(spec.decoder_layers(model)):
            mid_module = self._mid_module(spec, layer)
            self.handles.append(layer.register_forward_pre_hook(self._pre(idx), with_kwargs=True))
            self.handles.append(mid_module.register_forward_pre_hook(self._mid(idx)))
            self.handles.append(layer.register_forward_hook(self._post(idx)))

    @staticmethod
    def _mid_module(spec, layer: nn.Module) -> nn.Module:
        norms = spec.mlp_norms
        if not norms or not hasattr(layer, norms[0]):
            raise NotImplementedError(
                f"{type(layer).__name__} has no norm before its MLP branch; its residual stream cannot be tapped"
            )
        return getattr(layer, norms[0])

    def _pre(self, idx: int):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            self.state[idx] = {"in": h}

        return hook

    def _mid(self, idx: int):
        def hook(module, args):
            self.state[idx]["mid"] = args[0]

        return hook

    def _post(self, idx: int):
        def hook(module, args, output):
            h_out = output[0] if isinstance(output, (tuple, list)) else output
            s = self.state.pop(idx)
            self.on_layer(idx, s["in"], s["mid"], h_out)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _labels(
    logits: torch.Tensor, input_ids: torch.Tensor, how: str, generator: torch.Generator
) -> torch.Tensor:
    """Labels for the prediction at every position: shape `(batch, length)`."""
    if how == "data":
        return torch.cat([input_ids[:, 1:], input_ids[:, -1:]], dim=1)
    if how == "argmax":
        return logits.argmax(dim=-1)
    if how == "sampled":
        probs = logits.float().softmax(dim=-1).flatten(0, 1)
        # multinomial on a CPU generator: deterministic and independent of the global random state
        return torch.multinomial(probs.cpu(), 1, generator=generator).view(logits.shape[:2]).to(logits.device)
    raise ValueError(f"labels must be one of {LABELS}, got {how!r}")


def _relative_margin(logits: torch.Tensor, mask: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Sum over positions of (top-1 logit - top-2 logit) / its value: each position's gradient is the relative
    first-order change of its greedy margin."""
    with torch.no_grad():
        top = logits.topk(2, dim=-1)
        margin = (top.values[..., 0] - top.values[..., 1]).float().clamp_min(eps)
    z = logits.gather(-1, top.indices).float()
    return (((z[..., 0] - z[..., 1]) / margin)[mask]).sum()


def _sum_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits[mask].float(), labels[mask], reduction="sum")


# ---------------------------------------------------------------------------------------------- scorers


def score_layers(
    model: PreTrainedModel,
    calibration: CalibrationData | None = None,
    method: str = DEFAULT_SCORING_METHOD,
    *,
    labels: str | None = None,
    batch_size: int | None = None,
    num_label_samples: int = 1,
    local: bool = True,
    seed: int = 0,
    progress: bool = True,
    quantize_format: str = "int4",
    group_size: int = 64,
) -> LayerScores:
    """Score every decoder layer, and its attention and MLP branches, of `model`.

    Args:
        model (`PreTrainedModel`): the target (a supported causal LM).
        calibration (`CalibrationData`, *optional*): tokens to score on (see
            [`sdfp_hf.calibration.build_calibration`]); not needed by ``"random"``, ``"last"`` and
            ``"evenly_spaced"``.
        method (`str`, *optional*, defaults to `DEFAULT_SCORING_METHOD`): one of `SCORING_METHODS`.
        labels (`str`, *optional*): override the method's labels: ``"data"``, ``"sampled"`` or ``"argmax"``.
        batch_size (`int`, *optional*): sequences per forward/backward pass. Parameter-space FIT squares
            the gradient of each pass, so it defaults to 1 there (per-sequence gradients); 4 elsewhere.
        num_label_samples (`int`, *optional*, defaults to 1): sampled label draws per forward pass.
        local (`bool`, *optional*, defaults to `True`): for ``"fisher_gate"``, measure each position's
            sensitivity through itself only (as the draft, which reads the target's prefix, sees it).
        seed (`int`, *optional*, defaults to 0): seed of sampled labels and of ``"random"``.
        progress (`bool`, *optional*, defaults to `True`): show a progress bar and log a summary.
        quantize_format (`str`, *optional*, defaults to `"int4"`), group_size (`int`, *optional*, defaults to 64):
            for ``"fit_quant"``, the quantization whose rounding error is weighed.

    Returns:
        [`LayerScores`]
    """
    if method not in SCORING_METHODS:
        raise ValueError(f"unknown scoring method {method!r}: choose one of {', '.join(SCORING_METHODS)}")
    if labels is not None and labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
    spec = get_architecture(model)
    num_layers = len(spec.decoder_layers(model))
    start = time.perf_counter()
    if method in _DATA_FREE_METHODS:
        scores = _data_free_scores(method, num_layers, seed)
        scores.seconds = time.perf_counter() - start
        return scores
    if calibration is None:
        raise ValueError(
            f"method {method!r} needs calibration tokens: build them with "
            "`sdfp_hf.calibration.build_calibration(model, ...)`"
        )
    device = model.get_input_embeddings().weight.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    was_training = model.training
    model.eval()
    try:
        if method in _PARAM_METHODS:
            scores = _param_fisher(
                model, spec, calibration, method, labels or _PARAM_METHODS[method],
                batch_size or 1, num_label_samples, seed, progress,
            )
        elif method == "fit_quant":
            scores = _quantization_fisher(
                model, spec, calibration, labels or "sampled", batch_size or 4, seed, progress, quantize_format,
                group_size,
            )
        elif method in ("fisher_gate", "gate_flips"):
            impl = attn_implementation(model.config)
            if local and impl not in ("sdpa", "eager"):
                logger.warning(
                    "fisher_gate measures each position through itself only with SDPA or eager attention; this "
                    "model uses %r, so it falls back to local=False (load it with attn_implementation='sdpa')",
                    impl,
                )
                local = False
            scores = _gate_fisher(
                model, calibration, "margin" if method == "gate_flips" else labels or "sampled",
                batch_size or _logits_batch(model, calibration), num_label_samples, local, seed, progress,
            )
        else:
            scores = _block_influence(model, calibration, batch_size or 8, progress)
    finally:
        model.train(was_training)
    scores.seconds = time.perf_counter() - start
    scores.num_tokens = calibration.num_tokens
    scores.peak_memory_bytes = _peak_memory(device)
    for name, values in (("attention", scores.attention), ("mlp", scores.mlp), ("layer", scores.layer)):
        if len(values) != num_layers or not all(math.isfinite(v) for v in values):
            raise FloatingPointError(
                f"{method!r} produced non-finite {name} scores {values}: profile in float32 (or bfloat16) rather "
                "than float16, or check the calibration data"
            )
    if progress:
        import sys

        from tqdm.auto import tqdm

        logger.info(scores.summary())
        tqdm.write(f"sdfp-hf: {scores.summary()}", file=sys.stderr)
    return scores


def _logits_batch(model: nn.Module, calibration: CalibrationData, budget_bytes: int = 64 * 2**20) -> int:
    """Sequences per pass such that one batch of float32 logits stays within `budget_bytes`."""
    vocab = model.get_output_embeddings().weight.shape[0]
    length = calibration.input_ids.shape[1]
    return max(1, min(8, budget_bytes // max(vocab * length * 4, 1)))


def _data_free_scores(method: str, num_layers: int, seed: int) -> LayerScores:
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        attention, mlp = torch.rand(num_layers, generator=g).tolist(), torch.rand(num_layers, generator=g).tolist()
        layer = torch.rand(num_layers, generator=g).tolist()
    elif method == "last":
        # lowest last: skipping the k lowest is an early exit after layer L - k
        layer = [float(num_layers - i) for i in range(num_layers)]
        attention, mlp = [v - 0.5 for v in layer], list(layer)
    else:
        order = _low_discrepancy_order(num_layers)
        rank = {layer_idx: r for r, layer_idx in enumerate(order)}
        layer = [float(rank[i]) for i in range(num_layers)]
        attention, mlp = list(layer), [v + 0.5 for v in layer]
    return LayerScores(method, attention, mlp, layer, details={"seed": seed} if method == "random" else {})


def _low_discrepancy_order(n: int) -> list[int]:
    """Layer indices in an order whose every prefix is spread evenly over ``range(n)`` (van der Corput)."""

    def radical_inverse(i: int) -> float:
        x, f = 0.0, 0.5
        while i:
            x += f * (i & 1)
            i >>= 1
            f /= 2
        return x

    order: list[int] = []
    taken: set[int] = set()
    i = 0
    while len(order) < n:
        # centre of the interval (x, x + 1/2^k): away from both ends of the stack
        target = (radical_inverse(i) + 0.5 / (1 << max(i.bit_length(), 1))) * n
        i += 1
        best = min((j for j in range(n) if j not in taken), key=lambda j: (abs(j + 0.5 - target), j))
        order.append(best)
        taken.add(best)
    return order


def _branch_params(spec, model: nn.Module) -> dict[tuple[int, str], list[nn.Parameter]]:
    out: dict[tuple[int, str], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for idx, layer in enumerate(spec.decoder_layers(model)):
        for kind in KINDS:
            params = []
            for module in spec.branch_modules(layer, kind):
                for p in module.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
            out[(idx, kind)] = params
    return out


def _quantization_fisher(
    model: nn.Module,
    spec: Any,
    calibration: CalibrationData,
    labels: str,
    batch_size: int,
    seed: int,
    progress: bool,
    fmt: str,
    group_size: int,
) -> LayerScores:
    """FIT of int4 rounding per branch, with the Kronecker-factored Fisher diagonal (see the module docstring)."""
    layers = spec.decoder_layers(model)
    matrices = {
        (i, kind): list(linear_weights(spec.branch(layer, kind)).values()) for i, layer in enumerate(layers) for kind in KINDS
    }
    inputs: dict[int, torch.Tensor] = {}  # per matrix, the sum over real tokens of x^2 (input columns)
    outputs: dict[int, torch.Tensor] = {}  # per matrix, the sum over tokens of (dL/dy)^2 (output rows)
    real = {}
    handles = []

    def add(store: dict, key: int, value: torch.Tensor) -> None:
        store[key] = value if key not in store else store[key] + value

    def forward_hook(module, args, output):
        x = args[0].detach().float() * real["mask"][..., None]  # padding is no calibration token
        add(inputs, id(module), x.pow(2).reshape(-1, x.shape[-1]).sum(0))
        if output.requires_grad:
            output.register_hook(
                lambda grad, key=id(module): add(outputs, key, grad.float().pow(2).reshape(-1, grad.shape[-1]).sum(0))
            )

    embeddings = model.get_input_embeddings()
    handles.append(embeddings.register_forward_hook(lambda module, args, out: out.detach().requires_grad_(True)))
    for ms in matrices.values():
        handles += [m.register_forward_hook(forward_hook) for m in ms]
    all_params = list(model.parameters())
    flags = [p.requires_grad for p in all_params]
    generator = torch.Generator().manual_seed(seed)
    device = embeddings.weight.device
    batches = calibration.batches(batch_size)
    try:
        for p in all_params:
            p.requires_grad_(False)
        with _progress(len(batches), "FIT of int4 rounding", progress) as bar:
            for batch in batches:
                batch = batch.to(device)
                real["mask"] = batch.attention_mask.float()
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
                with torch.no_grad():
                    y = _labels(logits, batch.input_ids, labels, generator)
                _sum_loss(logits, y, batch.loss_mask).backward()
                del logits
                bar.update(1)
    finally:
        for h in handles:
            h.remove()
        for p, flag in zip(all_params, flags):
            p.requires_grad_(flag)
    scores = {kind: [0.0] * len(layers) for kind in KINDS}
    for (i, kind), ms in matrices.items():
        total = 0.0
        for m in ms:
            if id(m) not in outputs or id(m) not in inputs:
                continue
            u, v = outputs[id(m)], inputs[id(m)]
            weight = m.weight.detach()
            error = rounding_error(weight.t() if is_transposed(m) else weight, fmt, group_size)
            total += float(u @ error.pow(2) @ v)
        scores[kind][i] = total / max(calibration.num_tokens, 1)
    layer = [a + b for a, b in zip(scores["attention"], scores["mlp"])]
    details = {"labels": labels, "batch_size": batch_size, "quantize_format": fmt, "group_size": group_size}
    return LayerScores("fit_quant", scores["attention"], scores["mlp"], layer, details=details)


def _param_fisher(
    model: nn.Module,
    spec,
    calibration: CalibrationData,
    method: str,
    labels: str,
    batch_size: int,
    num_label_samples: int,
    seed: int,
    progress: bool,
) -> LayerScores:
    branches = _branch_params(spec, model)
    num_layers = len(spec.decoder_layers(model))
    trace = method == "fit_trace"
    weighted = {key: torch.zeros((), dtype=torch.float64) for key in branches}  # sum g^2 theta^2
    grad_sq = {key: torch.zeros((), dtype=torch.float64) for key in branches}  # sum g^2
    theta_sq = {key: sum(float(p.detach().float().pow(2).sum()) for p in ps) for key, ps in branches.items()}
    numel = {key: sum(p.numel() for p in ps) for key, ps in branches.items()}

    all_params = list(model.parameters())
    flags = [p.requires_grad for p in all_params]
    old_grads = [p.grad for p in all_params]
    handles = []

    def make_hook(key):
        def hook(p: torch.Tensor) -> None:
            g2 = p.grad.detach().float().pow(2)
            grad_sq[key] += float(g2.sum())
            weighted[key] += float((g2 * p.detach().float().pow(2)).sum())
            p.grad = None  # free it now: no second copy of the gradients ever exists

        return hook

    passes = 0
    generator = torch.Generator().manual_seed(seed)
    try:
        for p in all_params:
            p.requires_grad_(False)
            p.grad = None
        for key, ps in branches.items():
            for p in ps:
                p.requires_grad_(True)
                handles.append(p.register_post_accumulate_grad_hook(make_hook(key)))
        device = model.get_input_embeddings().weight.device
        batches = calibration.batches(batch_size)
        samples = num_label_samples if labels == "sampled" else 1
        with _progress(len(batches) * samples, f"FIT ({method})", progress) as bar:
            for batch in batches:
                batch = batch.to(device)
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
                for s in range(samples):
                    with torch.no_grad():
                        y = _labels(logits, batch.input_ids, labels, generator)
                    loss = _sum_loss(logits, y, batch.loss_mask)
                    loss.backward(retain_graph=s + 1 < samples)
                    passes += 1
                    bar.update(1)
                del logits, loss
    finally:
        for h in handles:
            h.remove()
        for p, flag, g in zip(all_params, flags, old_grads):
            p.requires_grad_(flag)
            p.grad = g
    attention, mlp = [], []
    for idx in range(num_layers):
        for kind, out in (("attention", attention), ("mlp", mlp)):
            key = (idx, kind)
            if trace:
                value = float(grad_sq[key]) / passes * (theta_sq[key] / max(numel[key], 1))
            else:
                value = float(weighted[key]) / passes
            out.append(value)
    layer = [a + m for a, m in zip(attention, mlp)]
    details = {"labels": labels, "batch_size": batch_size, "passes": passes}
    if labels == "sampled":
        details["num_label_samples"] = num_label_samples
    return LayerScores(method, attention, mlp, layer, details=details)


def _gate_fisher(
    model: nn.Module,
    calibration: CalibrationData,
    labels: str,
    batch_size: int,
    num_label_samples: int,
    local: bool,
    seed: int,
    progress: bool,
) -> LayerScores:
    spec = get_architecture(model)
    num_layers = len(spec.decoder_layers(model))
    # Fisher matrix of all 2L branch gates (attention of layer l at 2l, its MLP at 2l + 1): the diagonal
    # gives each branch's score, the off-diagonal terms how the effects of removing two branches add up
    gram = torch.zeros(2 * num_layers, 2 * num_layers, dtype=torch.float64)
    grads: dict[int, dict[str, torch.Tensor]] = {}
    columns: dict[int, torch.Tensor] = {}
    mask_holder: dict[str, torch.Tensor] = {}

    def finish_layer(idx: int) -> None:
        g = grads.pop(idx)
        m = mask_holder["loss"]
        columns[2 * idx] = g["attention"][m].double()
        columns[2 * idx + 1] = g["mlp"][m].double()

    flips = torch.zeros(3, num_layers, dtype=torch.float64)  # gate_flips: attention, mlp, layer

    def accumulate() -> None:
        if len(columns) != 2 * num_layers:
            raise RuntimeError(
                f"the backward pass reached {len(columns) // 2} of {num_layers} decoder layers: the model's "
                "forward does not go through its decoder layers as sdfp-hf expects"
            )
        G = torch.stack([columns[i] for i in range(2 * num_layers)], dim=1)  # (positions, 2L)
        gram.add_(G.T @ G)
        if labels == "margin":
            # G is the margin's relative first-order drop when the branch goes: >= 1 flips the argmax
            flips[0] += G[:, 0::2].clamp(0, 1).sum(0)
            flips[1] += G[:, 1::2].clamp(0, 1).sum(0)
            flips[2] += (G[:, 0::2] + G[:, 1::2]).clamp(0, 1).sum(0)
        columns.clear()

    def on_layer(idx: int, h_in: torch.Tensor, h_mid: torch.Tensor, h_out: torch.Tensor) -> None:
        if not torch.is_grad_enabled() or not h_out.requires_grad:
            return
        attn_add = (h_mid - h_in).detach().float()
        mlp_add = (h_out - h_mid).detach().float()

        def tap(kind: str, added: torch.Tensor):
            def hook(grad: torch.Tensor) -> None:
                # d loss / d gate at every position: <d loss / d residual, what the branch added>
                grads.setdefault(idx, {})[kind] = (grad.float() * added).sum(dim=-1)
                if len(grads[idx]) == 2:
                    finish_layer(idx)

            return hook

        h_mid.register_hook(tap("attention", attn_add))
        h_out.register_hook(tap("mlp", mlp_add))

    embeddings = model.get_input_embeddings()
    emb_handle = embeddings.register_forward_hook(lambda module, args, out: out.detach().requires_grad_(True))
    taps = _ResidualTaps(model, on_layer)
    all_params = list(model.parameters())
    flags = [p.requires_grad for p in all_params]
    generator = torch.Generator().manual_seed(seed)
    device = embeddings.weight.device
    batches = calibration.batches(batch_size)
    samples = num_label_samples if labels == "sampled" else 1
    passes = 0
    try:
        for p in all_params:
            p.requires_grad_(False)
        desc = "branch gates (greedy flips)" if labels == "margin" else "branch gates (Fisher)"
        with _progress(len(batches) * samples, desc, progress) as bar:
            for batch in batches:
                batch = batch.to(device)
                mask_holder["loss"] = batch.attention_mask.bool()
                logits = _forward(model, batch, local)
                for s in range(samples):
                    if labels == "margin":
                        loss = _relative_margin(logits, batch.loss_mask)
                    else:
                        with torch.no_grad():
                            y = _labels(logits, batch.input_ids, labels, generator)
                        loss = _sum_loss(logits, y, batch.loss_mask)
                    loss.backward(retain_graph=s + 1 < samples)
                    accumulate()
                    passes += 1
                    bar.update(1)
                del logits, loss
    finally:
        emb_handle.remove()
        taps.remove()
        for p, flag in zip(all_params, flags):
            p.requires_grad_(flag)
    gram /= max(calibration.num_tokens * samples, 1)
    if labels == "margin":
        flips /= max(calibration.num_tokens, 1)
        attention, mlp, layer = (flips[i].tolist() for i in range(3))
        details = {"batch_size": batch_size, "local": local, "passes": passes}
        return LayerScores("gate_flips", attention, mlp, layer, details=details)
    diag = gram.diagonal()
    attention, mlp = diag[0::2].tolist(), diag[1::2].tolist()
    # the layer gate moves both branch gates together: its Fisher is the sum of the 2x2 block
    layer = (diag[0::2] + diag[1::2] + 2 * gram.diagonal(offset=1)[0::2]).clamp_min(0).tolist()
    details = {
        "labels": labels,
        "batch_size": batch_size,
        "local": local,
        "passes": passes,
        "gate_fisher_matrix": gram.tolist(),
    }
    if labels == "sampled":
        details["num_label_samples"] = num_label_samples
    return LayerScores("fisher_gate", attention, mlp, layer, details=details)


def _forward(model: nn.Module, batch: CalibrationData, local: bool) -> torch.Tensor:
    """Logits of `batch`; with `local`, every position sees the detached keys and values of its prefix."""
    if local:
        return local_forward(model, batch.input_ids, batch.attention_mask)
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits


@torch.no_grad()
def _block_influence(model: nn.Module, calibration: CalibrationData, batch_size: int, progress: bool) -> LayerScores:
    spec = get_architecture(model)
    num_layers = len(spec.decoder_layers(model))
    totals = torch.zeros(3, num_layers, dtype=torch.float64)
    holder: dict[str, torch.Tensor] = {}

    def one_minus_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1.0 - nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)

    def on_layer(idx: int, h_in: torch.Tensor, h_mid: torch.Tensor, h_out: torch.Tensor) -> None:
        m = holder["mask"]
        totals[0, idx] += float(one_minus_cos(h_in, h_mid)[m].sum())
        totals[1, idx] += float(one_minus_cos(h_mid, h_out)[m].sum())
        totals[2, idx] += float(one_minus_cos(h_in, h_out)[m].sum())

    taps = _ResidualTaps(model, on_layer)
    device = model.get_input_embeddings().weight.device
    batches = calibration.batches(batch_size)
    count = 0
    try:
        with _progress(len(batches), "block influence", progress) as bar:
            for batch in batches:
                batch = batch.to(device)
                holder["mask"] = batch.attention_mask.bool()
                count += int(holder["mask"].sum())
                # the decoder stack only: the output head plays no part in block influence
                model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
                bar.update(1)
    finally:
        taps.remove()
    totals /= max(count, 1)
    attention, mlp, layer = (totals[i].clamp_min(0).tolist() for i in range(3))
    return LayerScores("block_influence", attention, mlp, layer, details={"batch_size": batch_size})
