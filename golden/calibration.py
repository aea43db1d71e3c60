"""Static activation scales: NVFP4's FP32 tensor scale of each activation fixed from a calibration pass.

    amax = calibrate(model, calibration_ids, window=512)          # {name: amax}
    with quantize_model(model, "nvfp4", "nvfp4", 16, activation_amax=amax):
        ...

NVFP4's tensor scale (SPEC 8) is amax / (448 * 6). Taken from each activation tensor's own amax
(`golden.baselines.nvfp4` without `tensor_amax`), it sees the whole tensor: every token of every
sequence of the batch, future tokens included, which no online hardware can. Deployments fix it per
layer from a calibration pass instead: `calibrate` runs the unquantized model on calibration text and
records, per quantized linear layer, the largest |input| (in FP32, the type SPEC 8 takes it in) and,
with scope="full", the largest |Q|, |K|, |V| and softmax probability of every attention module,
under the names `golden.quantize_model(activation_amax=...)` takes. The calibration text must not be
the evaluation text: `check_disjoint` refuses token sequences that share a run of tokens.
"""
from __future__ import annotations

from typing import Callable

import torch

from golden import model_quantization

# Two token sequences share a passage when they have this many consecutive tokens in common; shorter
# common runs are common phrases (a licence repeats "of this License" often).
SHARED_PASSAGE_TOKENS = 32


def _fp32_amax(x: torch.Tensor) -> float:
    return float(x.detach().abs().amax().to(torch.float32)) if x.numel() else 0.0


def _check_ids(ids, name: str) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != 1 or ids.dtype not in (
            torch.int32, torch.int64):
        raise ValueError(f"{name} must be a (1, T) integer tensor of token ids, got "
                         f"{getattr(ids, 'shape', type(ids).__name__)}")
    return ids


def longest_common_run(a: torch.Tensor, b: torch.Tensor) -> int:
    """Length of the longest run of consecutive tokens that (1, T) id tensors a and b share."""
    a, b = a.reshape(-1).to(torch.int64), b.reshape(-1).to(torch.int64)
    if a.numel() == 0 or b.numel() == 0:
        return 0
    best, previous = 0, torch.zeros(b.numel() + 1, dtype=torch.int32)
    for token in a:                       # dynamic programming over a, vectorised over b
        current = torch.zeros_like(previous)
        current[1:] = torch.where(b == token, previous[:-1] + 1, 0)
        best = max(best, int(current.max()))
        previous = current
    return best


def check_disjoint(calibration_ids: torch.Tensor, evaluation_ids: torch.Tensor,
                   limit: int = SHARED_PASSAGE_TOKENS) -> int:
    """The longest run of tokens the calibration and evaluation texts share; a ValueError naming
    calibration_ids when it reaches `limit` tokens (the texts share a passage)."""
    _check_ids(calibration_ids, "calibration_ids")
    _check_ids(evaluation_ids, "evaluation_ids")
    common = longest_common_run(calibration_ids, evaluation_ids)
    if common >= limit:
        raise ValueError(f"calibration_ids share a passage of {common} consecutive tokens with the evaluation "
                         f"text (at most {limit - 1} allowed): calibrate on other text")
    return common


def calibrate(model: torch.nn.Module, ids: torch.Tensor, window: int, layers=None, scope: str = "linear",
              batch: int = 4, on_window: Callable[[], None] | None = None) -> dict[str, float]:
    """Static amax of every activation a quantize_model(activations="nvfp4") run quantizes: the
    largest |x| (FP32) over the unquantized model's forward passes on `ids` (1, T), cut into
    consecutive windows of `window` tokens (`batch` per pass). Keys: the linear layers' names (their
    input) and, with scope="full", "<attention module>.<operand>" for ATTENTION_AMAX_OPERANDS."""
    _check_ids(ids, "ids")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer of at least 2, got {window!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if scope not in model_quantization.SCOPES:
        raise ValueError(f"scope must be one of {model_quantization.SCOPES}, got {scope!r}")
    if ids.shape[1] < 2:
        raise ValueError(f"ids: at least 2 tokens are needed, got {ids.shape[1]}")
    modules = model_quantization.select_linears(model, layers)
    amax: dict[str, float] = {}

    def record(name: str, x: torch.Tensor) -> None:
        amax[name] = max(amax.get(name, 0.0), _fp32_amax(x))

    def hook_for(name):
        def hook(module, args):
            record(name, args[0])
        return hook

    names = {module: name for name, module in model.named_modules()}

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        owner = names[module]
        groups = getattr(module, "num_key_value_groups", 1)
        for operand, x in (("query", query), ("key", key), ("value", value)):
            record(f"{owner}.{operand}", x)
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        q_len, k_len = scores.shape[-2:]
        if attention_mask is not None:
            scores = (scores.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool
                      else scores + attention_mask[..., :k_len])
        else:
            future = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).triu(k_len - q_len + 1)
            scores = scores.masked_fill(future, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(query.dtype, torch.float32)).to(query.dtype)
        record(f"{owner}.probs", probs)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), None

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in modules.items()]
    chunks = [ids[:, s:s + window] for s in range(0, ids.shape[1], window)]
    chunks = [c for c in chunks if c.shape[1] >= 2]
    try:
        with torch.no_grad(), model_quantization.attention_function(
                model, attention if scope == "full" else model_quantization.make_attention(None, None),
                f"golden_calibration_{id(amax):x}"):
            for start in range(0, len(chunks), batch):
                group = chunks[start:start + batch]
                # Windows of one length go together (only the last one can be shorter).
                for rows in ([torch.cat(group)] if len({c.shape[1] for c in group}) == 1 else group):
                    model.base_model(input_ids=rows.to(next(model.parameters()).device), use_cache=False)
                    for _ in range(rows.shape[0]):
                        if on_window is not None:
                            on_window()
    finally:
        for handle in handles:
            handle.remove()
    return amax
