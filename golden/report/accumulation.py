"""The error the accumulation itself adds (SPEC 6.1), on real layers.

For each sampled layer the operands of golden.report.float64_check (activations two-stage, weights
MSE, B = 32) are multiplied by `bd.linear` in every accumulation mode and compared with the float64
product of the same dequantized operands, which is the exact sum whenever a row's terms span fewer
than 53 bits (the float64 cross-check measures that). The quantization is the same in every mode,
so the difference between the modes is the accumulation's alone. For scale, the quantization's own
error: the float64 product of the dequantized operands against the float64 product of the FP16
operands they were quantized from.

By construction "exact" rounds each output once, to the nearest FP32 value of the exact sum, so no
FP32 result is nearer: its SQNR is at least that of "fp32" (and of "fp16", whose results are FP32
values too), and at least 20 log10(2^24) dB.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from golden import bd
from golden.report import float64_check, metrics
from golden.report.metrics import to_fp16_reference
from golden.spec import ACCUMULATE_MODES

QUANTIZATION = "quantization"    # the column of the quantization's own error


class ModeError(NamedTuple):
    stats: metrics.ErrorStats    # against the reference
    differing: int               # outputs not equal to the reference


def _error(reference: torch.Tensor, approx: torch.Tensor) -> ModeError:
    return ModeError(metrics.error_stats(reference, approx), int((approx.to(torch.float64) != reference).sum()))


def layer_errors(activation: torch.Tensor, weight: torch.Tensor, name: str = "layer") -> dict[str, ModeError]:
    """The error of bd.linear in every mode of SPEC 6.1 against the float64 product of the
    dequantized operands, and (QUANTIZATION) of that product against the FP16 operands' product."""
    q_act, q_weight, reference = float64_check.operands(activation, weight, name=name)
    errors = {mode: _error(reference, bd.linear(q_act, q_weight, accumulate=mode)) for mode in ACCUMULATE_MODES}
    unquantized = (to_fp16_reference(activation, name).to(torch.float64)
                   @ to_fp16_reference(weight, name).to(torch.float64).T)
    errors[QUANTIZATION] = _error(unquantized, reference)
    return errors


def section(captures, names: list[str], rows: int, progress) -> dict:
    """Per layer of `names` (the float64 cross-check's layers, its first `rows` activation and weight
    rows): each mode's and the quantization's output SQNR and the fraction of outputs they change;
    the SQNR pooled over the layers too."""
    per_layer, pooled = {}, {}
    for name in names:
        progress.set_description(f"accumulation {name}")
        c = captures[name]
        errors = layer_errors(c.activation[:rows], c.weight[:rows], name)
        per_layer[name] = {key: {"sqnr_db": metrics.sqnr_db(e.stats.signal, e.stats.noise),
                                 "differing_fraction": e.differing / e.stats.count, "outputs": e.stats.count}
                           for key, e in errors.items()}
        for key, e in errors.items():
            signal, noise = pooled.get(key, (0.0, 0.0))
            pooled[key] = (signal + e.stats.signal, noise + e.stats.noise)
        progress.update()
    return {"modes": list(ACCUMULATE_MODES), "layers": per_layer, "activation_rows": rows, "weight_rows": rows,
            "pooled_sqnr_db": {key: metrics.sqnr_db(*pooled[key]) for key in pooled}}
