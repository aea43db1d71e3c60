"""Perplexity of the model with its operands quantized in a given format.

Windows: the token sequence is cut into consecutive, non-overlapping windows of `window` tokens;
each window is evaluated from scratch (no context carried over) and perplexity is
exp(total negative log-likelihood / number of predicted tokens) over all windows. Chunked windows
are cheaper than a sliding window and the same for every format, which is what the comparison needs.
Windows of equal length are evaluated as one batch.

Scopes of quantization (installed by golden.quantize_model, the public entry point; the report
keeps no mechanism of its own):
- "linear": every selected nn.Linear's weight (quantized once, when the scheme is installed) and its
  input (on every call). Fake-quantized: the layer multiplies the dequantized operands in the
  model's floating-point type. Hardware-exact (`Scheme.exact`, BlockDialect only): the layer's output
  is `golden.bd.linear` of the quantized operands, the exact block sums rounded once to FP32 that a
  chain of `bd_dot` units returns (SPEC 6).
- "full": "linear" plus both matrix products of attention: Q and K in blocks along head_dim for
  Q K^T, and the probabilities (blocks along the key dimension) and V (blocks along its sequence
  dimension) for scores x V.
Attention, in every scope and the unquantized baseline alike, is golden.model_quantization's
`make_attention`, registered under its own name in transformers' attention and mask registries while
the scheme is installed and removed afterwards. On float64 CPU tensors it is golden.report.attention's
attention_native: each query's scores, softmax, probability quantization and product with V in one
pass, only against the keys up to the query (the later ones have probability 0, whole blocks of
zeros that quantize to zeros), with bits that depend on neither the thread count nor the batch nor the
CPU. Elsewhere torch computes it: scaled_dot_product_attention unquantized; quantized, eager products
in chunks of queries against the keys up to each chunk's end (the same values as without chunks),
and whole for NVFP4, whose tensor scale needs every probability at once.
The output head (tied to the token embedding in SmolLM2) stays unquantized, as is usual, and is
computed in float32: nothing downstream of it is quantized, so its rounding cannot change a code.
Fake quantization runs in the model's own type: golden.baselines.fake_quantize writes float64 for a
float64 model, in one pass per block on the CPU (golden.kernels).

Machine independence: run the model in float64 (`golden.models.load_model(dtype=torch.float64)`).
The quantized operands are then products of 4-bit magnitudes and powers of two whose float64 sums are
exact (or nearly so), and every other operation rounds 2^29 times finer than FP32 (but transformers'
LlamaRMSNorm, which normalises in float32 whatever the model's type: elementwise roundings and one
float32 mean per row), so the FP16 rounding in front of every quantizer, and with it every code,
comes out the same whatever the BLAS kernels, the thread count or the CPU. In float32 the same
figures move by up to a few percent between machines (see the reproducibility section of the
report).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, NamedTuple

import torch

from golden import model_quantization
from golden.accumulate import ROUNDED_MODES
from golden.methods import BY_FORMAT
from golden.report import block_maps, metrics
from golden.report.block_maps import DEFAULT_BLOCK_MAP
from golden.spec import DEFAULT_ACCUMULATE, DEFAULT_BLOCK, check_accumulate


class Scheme(NamedTuple):
    """A quantization configuration of the model. Formats are golden.baselines names."""

    key: str
    label: str
    scope: str              # "baseline", "linear" or "full"
    weight_fmt: str | None
    act_fmt: str | None
    block: int | None       # None with a block map
    exact: bool = False     # linear layers by golden.bd.linear (BlockDialect formats only)
    static: bool = False    # NVFP4 activations with static, calibrated tensor scales (golden.calibration)
    gain: float = 1.0       # every linear input times this before its quantizer (noise runs)
    accumulate: str = DEFAULT_ACCUMULATE   # bd.linear's accumulation mode (SPEC 6.1), exact runs only
    block_map: str | None = None           # per-operand blocks (golden.report.block_maps)


def scheme(scope: str, weight_fmt: str, act_fmt: str, block: int | None, label: str,
           exact: bool = False, static: bool = False, accumulate: str = DEFAULT_ACCUMULATE,
           block_map: str | None = None) -> Scheme:
    if exact and (scope != "linear" or weight_fmt not in metrics.BD_METHOD or act_fmt not in metrics.BD_METHOD):
        raise ValueError("exact: the hardware-exact mode computes BlockDialect linear layers only")
    if static and act_fmt != "nvfp4":
        raise ValueError("static: calibrated tensor scales are NVFP4's")
    if check_accumulate(accumulate) != DEFAULT_ACCUMULATE and not exact:
        raise ValueError(f"accumulate={accumulate!r} is bd.linear's: it needs exact=True")
    if (block is None) == (block_map is None) and weight_fmt != "fp16":
        raise ValueError("block, block_map: give exactly one of them")
    size = "_map" if block_map is not None else ("" if block is None else f"_b{block}")
    key = (("exact_" if exact else "") + f"{scope}_{weight_fmt}_{act_fmt}" + size + ("_static" if static else "")
           + ("" if accumulate == DEFAULT_ACCUMULATE else f"_acc_{accumulate}"))
    return Scheme(key, label, scope, weight_fmt, act_fmt, block, exact, static, accumulate=accumulate,
                  block_map=block_map)


# Noise runs: the same scheme with every quantized linear input scaled by 1 +- 2^-NOISE_EXPONENT before
# its quantizer. The change means nothing, but it flips a few FP16 roundings and with them codes: how
# far the perplexity moves is the noise floor of the figure.
NOISE_EXPONENT = 20
NOISE_GAINS = {"up": 1 + 2.0 ** -NOISE_EXPONENT, "down": 1 - 2.0 ** -NOISE_EXPONENT}
NOISE_SUFFIXES = {direction: f"_noise_{direction}" for direction in NOISE_GAINS}   # run key = base key + suffix


def noise_scheme(base: Scheme, direction: str) -> Scheme:
    """`base` with its linear inputs scaled by NOISE_GAINS[direction]."""
    sign = "+" if direction == "up" else "-"
    return base._replace(key=base.key + NOISE_SUFFIXES[direction], gain=NOISE_GAINS[direction],
                         label=f"{base.label}, inputs x (1 {sign} 2^-{NOISE_EXPONENT})")


NVFP4_DYNAMIC_LABEL = "NVFP4 (B=16), per-tensor dynamic scale, sees the whole batch"
NVFP4_STATIC_LABEL = "NVFP4 (B=16), static calibrated scale"


def nvfp4_schemes(scope: str) -> list[Scheme]:
    """NVFP4 with today's dynamic activation scale and with the static calibrated one."""
    return [scheme(scope, "nvfp4", "nvfp4", 16, NVFP4_DYNAMIC_LABEL),
            scheme(scope, "nvfp4", "nvfp4", 16, NVFP4_STATIC_LABEL, static=True)]


BASELINE = Scheme("baseline", "unquantized", "baseline", None, None, None)
BD_BLOCKS = (32, 16, 64)


def bd_label(act_fmt: str, block: int | str, exact: bool = False, accumulate: str = DEFAULT_ACCUMULATE) -> str:
    """`block`: a block size, or a block map's text."""
    act = BY_FORMAT[act_fmt].label
    size = f"B={block}" if isinstance(block, int) else f"map {block}"
    return (f"BD {size} (w MSE, a {act})" + (", hardware-exact" if exact else "")
            + ("" if accumulate == DEFAULT_ACCUMULATE else f", {accumulate.upper()} accumulation"))


def bd_scheme(scope: str, act_fmt: str, block: int, exact: bool = False,
              accumulate: str = DEFAULT_ACCUMULATE) -> Scheme:
    """BlockDialect with MSE weights (the paper's choice) and activations by `act_fmt`."""
    return scheme(scope, "bd_mse", act_fmt, block, bd_label(act_fmt, block, exact, accumulate), exact,
                  accumulate=accumulate)


def bd_map_scheme(scope: str, act_fmt: str, block_map: str) -> Scheme:
    """BlockDialect as bd_scheme, with the blocks of a block map (its text, as the scope takes it:
    see golden.report.block_maps.for_scope)."""
    return scheme(scope, "bd_mse", act_fmt, None, bd_label(act_fmt, block_map), block_map=block_map)


def perplexity_schemes(quick: bool, block_map: str = DEFAULT_BLOCK_MAP) -> list[Scheme]:
    """The runs of the report. BlockDialect stores weights chosen by MSE; activations are selected
    by the two-stage quantizer with the rounding stage 1 (SPEC 4.2 [revised], the hardware's), by
    its truncating variant, and by MSE (the upper reference of the paper's Table 2). The hardware-exact
    run at B=32 in every accumulation mode of SPEC 6.1, and `block_map`'s per-operand block sizes
    (the paper's dynamic block sizes by default) in both scopes."""
    added = [bd_scheme("linear", "bd_two_stage", 32, exact=True, accumulate=mode) for mode in ROUNDED_MODES]
    added += [bd_map_scheme(scope, "bd_two_stage", block_maps.for_scope(block_map, scope)) for scope in model_quantization.SCOPES]
    if quick:
        return [
            BASELINE,
            *(bd_scheme("linear", fmt, 32) for fmt in metrics.SELECTORS),
            scheme("linear", "mxfp4", "mxfp4", 32, "MXFP4 B=32"),
            *nvfp4_schemes("linear"),
            bd_scheme("full", "bd_two_stage", 32),
            bd_scheme("linear", "bd_two_stage", 32, exact=True),
            *added,
        ]
    runs = [BASELINE, scheme("linear", "fp16", "fp16", None, "FP16")]
    for scope in ("linear", "full"):
        runs += [bd_scheme(scope, fmt, block) for block in BD_BLOCKS for fmt in metrics.SELECTORS]
        runs += [
            scheme(scope, "mxfp4", "mxfp4", 32, "MXFP4 B=32"),
            scheme(scope, "mxfp4", "mxfp4", 16, "MXFP4 B=16"),
            *nvfp4_schemes(scope),
        ]
    runs += [scheme("linear", "int4", "int4", 32, "INT4 B=32")]
    # The hardware-exact run costs about twice a fake-quantized one: the headline configuration only.
    runs += [bd_scheme("linear", "bd_two_stage", 32, exact=True)]
    return runs + added


def scheme_bits(s: Scheme, convention: str = "ocp") -> float:
    """Bits per element of a uniform scheme; a block map's depend on the model's operands
    (golden.report.block_maps.operand_bits)."""
    if s.scope == "baseline":
        return 32.0
    if s.block_map is not None:
        raise ValueError(f"{s.key}: the bits of a block map are averaged over the model's operands "
                         "(golden.report.block_maps.operand_bits)")
    return metrics.bits(s.act_fmt, s.block, convention)


def quantized_linears(model, layers=None) -> dict[str, torch.nn.Linear]:
    """The nn.Linear modules a scheme quantizes: all (or those matching `layers`) but the output
    head."""
    head = model.get_output_embeddings()
    return {name: m for name, m in model_quantization.select_linears(model, layers).items() if m is not head}


@contextlib.contextmanager
def installed(model, s: Scheme, layers=None, calibration: dict[str, float] | None = None):
    """Installs scheme `s` on the model for the duration of the block, by golden.quantize_model, and
    the unquantized attention (golden.model_quantization.make_attention; quantize_model's quantized
    one in the full scope) for every scope, the baseline too. Yields quantize_model's handle (None for the baseline).
    `calibration`: the static activation amax (golden.calibration) a static scheme takes."""
    with model_quantization.attention_function(model, model_quantization.make_attention(None, None),
                                                f"report_{s.key}"):
        if s.scope == "baseline":
            yield None
            return
        if s.static and calibration is None:
            raise ValueError(f"calibration: scheme {s.key} needs the static activation amax (golden.calibration)")
        with model_quantization.quantize_model(model, s.weight_fmt, s.act_fmt, s.block or DEFAULT_BLOCK, s.scope,
                                               s.exact, layers, s.block_map, activation_amax=calibration if s.static else None,
                                               activation_gain=s.gain, accumulate=s.accumulate) as handle:
            yield handle


class Perplexity(NamedTuple):
    perplexity: float
    nll_sum: float
    predicted_tokens: int
    windows: int
    window_nll: tuple[float, ...] = ()       # per window: its NLL sum and predicted tokens
    window_tokens: tuple[int, ...] = ()


def windows(ids: torch.Tensor, window: int) -> list[torch.Tensor]:
    """Consecutive non-overlapping windows of (1, T) ids; a last window shorter than 2 is dropped."""
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    chunks = [ids[:, start:start + window] for start in range(0, ids.shape[1], window)]
    return [c for c in chunks if c.shape[1] >= 2]


def _batches(chunks: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """Windows of equal length stacked into batches of at most `batch` rows, in order."""
    out, group = [], []
    for chunk in chunks:
        if group and (len(group) == batch or group[0].shape[1] != chunk.shape[1]):
            out.append(torch.cat(group))
            group = []
        group.append(chunk)
    if group:
        out.append(torch.cat(group))
    return out


def evaluate(model, ids: torch.Tensor, window: int, on_window: Callable[[], None] | None = None,
             batch: int = 4) -> Perplexity:
    """Perplexity of `ids` (1, T) in windows of `window` tokens, `batch` windows per forward pass.

    The decoder runs in the model's dtype; the output head in float32 (see the module docstring).
    """
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    from golden.models import model_device

    chunks = windows(ids, window)
    head = model.get_output_embeddings()
    head_weight = head.weight.detach().to(torch.float32)
    head_bias = None if getattr(head, "bias", None) is None else head.bias.detach().to(torch.float32)
    nll, count, window_nll, window_tokens = 0.0, 0, [], []
    with torch.no_grad():
        for rows in _batches(chunks, batch):
            rows = rows.to(model_device(model))
            hidden = model.base_model(input_ids=rows, use_cache=False).last_hidden_state
            for hidden_row, row in zip(hidden, rows):
                logits = torch.nn.functional.linear(hidden_row[:-1].to(head_weight.device, torch.float32),
                                                    head_weight, head_bias)
                targets = row[1:].to(logits.device)
                window_nll.append(float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum")))
                window_tokens.append(targets.numel())
                nll += window_nll[-1]
                count += targets.numel()
                if on_window is not None:
                    on_window()
    return Perplexity(math.exp(nll / count), nll, count, len(chunks), tuple(window_nll), tuple(window_tokens))
