"""Perplexity of the model with its operands fake-quantized in a given format.

Windows: the token sequence is cut into consecutive, non-overlapping windows of `window` tokens;
each window is evaluated from scratch (no context carried over) and perplexity is
exp(total negative log-likelihood / number of predicted tokens) over all windows. Chunked windows
are cheaper than a sliding window and the same for every format, which is what the comparison needs.

Two scopes of fake quantization:
- "linear": every selected nn.Linear's weight (fake-quantized once, when the scheme is installed)
  and its input (on every call, by a forward pre-hook);
- "full": "linear" plus both matrix products of attention: Q and K in blocks along head_dim for
  Q K^T, and the probabilities (blocks along the key dimension) and V (blocks along its sequence
  dimension) for scores x V. This uses an eager attention function registered under its own name in
  transformers' attention registry while the scheme is installed, and removed afterwards.
The output head (tied to the token embedding in SmolLM2) stays in full precision, as is usual.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, NamedTuple

import torch

from golden.report import metrics


class Scheme(NamedTuple):
    """A fake-quantization configuration of the model. Formats are golden.baselines names."""

    key: str
    label: str
    scope: str              # "baseline", "linear" or "full"
    weight_fmt: str | None
    act_fmt: str | None
    block: int | None


def scheme(scope: str, weight_fmt: str, act_fmt: str, block: int | None, label: str) -> Scheme:
    key = f"{scope}_{weight_fmt}_{act_fmt}" + ("" if block is None else f"_b{block}")
    return Scheme(key, label, scope, weight_fmt, act_fmt, block)


BASELINE = Scheme("baseline_fp32", "FP32 (as loaded)", "baseline", None, None, None)


def perplexity_schemes(quick: bool) -> list[Scheme]:
    """The runs of the report. BlockDialect uses MSE for weights and two-stage for activations
    (the paper's choice); the MSE-activation runs reproduce the paper's Table 2 comparison."""
    if quick:
        return [
            BASELINE,
            scheme("linear", "bd_mse", "bd_two_stage", 32, "BD B=32 (w MSE, a two-stage)"),
            scheme("linear", "bd_mse", "bd_mse", 32, "BD B=32 (w MSE, a MSE)"),
            scheme("linear", "mxfp4", "mxfp4", 32, "MXFP4 B=32"),
            scheme("full", "bd_mse", "bd_two_stage", 32, "BD B=32 (w MSE, a two-stage)"),
        ]
    runs = [BASELINE, scheme("linear", "fp16", "fp16", None, "FP16")]
    for scope in ("linear", "full"):
        runs += [
            scheme(scope, "bd_mse", "bd_two_stage", 32, "BD B=32 (w MSE, a two-stage)"),
            scheme(scope, "mxfp4", "mxfp4", 32, "MXFP4 B=32"),
            scheme(scope, "bd_mse", "bd_two_stage", 16, "BD B=16 (w MSE, a two-stage)"),
            scheme(scope, "mxfp4", "mxfp4", 16, "MXFP4 B=16"),
            scheme(scope, "nvfp4", "nvfp4", 16, "NVFP4 (B=16)"),
        ]
    runs += [
        scheme("linear", "bd_mse", "bd_mse", 32, "BD B=32 (w MSE, a MSE)"),
        scheme("linear", "int4", "int4", 32, "INT4 B=32"),
    ]
    return runs


def scheme_bits(s: Scheme, convention: str = "ocp") -> float:
    if s.scope == "baseline":
        return 32.0
    return metrics.bits(s.act_fmt, s.block, convention)


def quantized_linears(model, layers=None) -> dict[str, torch.nn.Linear]:
    """The nn.Linear modules a scheme quantizes: all (or those matching `layers`) but the output
    head."""
    from golden.models import linear_layers

    head = model.get_output_embeddings()
    return {name: m for name, m in linear_layers(model, layers).items() if m is not head}


def _fq(x: torch.Tensor, fmt: str, block: int | None) -> torch.Tensor:
    """Fake-quantizes along the last dimension in float32, returning x's dtype."""
    out = metrics.fake_quantize(x.to(torch.float32), fmt, block)
    return out.to(x.dtype)


def quantized_weights(modules: dict[str, torch.nn.Linear], fmt: str, block: int | None) -> dict[str, torch.Tensor]:
    """Each module's weight fake-quantized once (blocks along in_features, the reduction dimension)."""
    return {name: _fq(m.weight.detach(), fmt, block) for name, m in modules.items()}


def make_attention(act_fmt: str, block: int | None) -> Callable:
    """Eager attention with both matrix products' operands fake-quantized (blocks along each
    product's reduction dimension). Signature of transformers' attention interface."""

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        groups = getattr(module, "num_key_value_groups", 1)
        # Quantizing before the grouped heads are repeated gives the same blocks, with less work.
        query = _fq(query, act_fmt, block)
        key = _fq(key, act_fmt, block).repeat_interleave(groups, dim=1)
        value = _fq(value.transpose(2, 3), act_fmt, block).transpose(2, 3).repeat_interleave(groups, dim=1)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            else:
                scores = scores + attention_mask[..., : key.shape[-2]]
        else:
            # A name unknown to transformers' mask registry gets no mask: apply causality here.
            q_len, k_len = scores.shape[-2:]
            future = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).triu(k_len - q_len + 1)
            scores = scores.masked_fill(future, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        probs = _fq(probs, act_fmt, block)
        out = torch.matmul(probs, value)
        return out.transpose(1, 2).contiguous(), probs

    return attention


@contextlib.contextmanager
def installed(model, s: Scheme, weights: dict[str, torch.Tensor] | None, layers=None):
    """Installs scheme `s` on the model for the duration of the block and restores it after.

    weights: the fake-quantized weights of `quantized_linears(model, layers)` in s.weight_fmt.
    """
    if s.scope == "baseline":
        yield
        return
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    modules = quantized_linears(model, layers)
    originals = {name: m.weight for name, m in modules.items()}
    handles = []
    # q/k/v (and gate/up) read the same tensor: quantize it once per call, not three times.
    last = {"source": None, "result": None}

    def pre_hook(module, args):
        x = args[0]
        if last["source"] is not x:
            last["source"], last["result"] = x, _fq(x, s.act_fmt, s.block)
        return (last["result"],) + tuple(args[1:])

    attention_name = f"fake_quant_{s.key}"
    previous_attention = model.config._attn_implementation
    try:
        for name, m in modules.items():
            m.weight = torch.nn.Parameter(weights[name], requires_grad=False)
            handles.append(m.register_forward_pre_hook(pre_hook))
        if s.scope == "full":
            # Item assignment on the registry instance adds a local entry, deleted below; the class-wide
            # mapping (AttentionInterface.register) is never touched.
            ALL_ATTENTION_FUNCTIONS[attention_name] = make_attention(s.act_fmt, s.block)
            model.config._attn_implementation = attention_name
        yield
    finally:
        for handle in handles:
            handle.remove()
        for name, m in modules.items():
            m.weight = originals[name]
        if s.scope == "full":
            model.config._attn_implementation = previous_attention
            if attention_name in ALL_ATTENTION_FUNCTIONS._local_mapping:
                del ALL_ATTENTION_FUNCTIONS[attention_name]
        last.clear()


class Perplexity(NamedTuple):
    perplexity: float
    nll_sum: float
    predicted_tokens: int
    windows: int


def windows(ids: torch.Tensor, window: int) -> list[torch.Tensor]:
    """Consecutive non-overlapping windows of (1, T) ids; a last window shorter than 2 is dropped."""
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    chunks = [ids[:, start:start + window] for start in range(0, ids.shape[1], window)]
    return [c for c in chunks if c.shape[1] >= 2]


def evaluate(model, ids: torch.Tensor, window: int, on_window: Callable[[], None] | None = None) -> Perplexity:
    nll, count = 0.0, 0
    chunks = windows(ids, window)
    with torch.no_grad():
        for chunk in chunks:
            logits = model(chunk, use_cache=False).logits[0, :-1].to(torch.float32)
            targets = chunk[0, 1:]
            nll += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            count += targets.numel()
            if on_window is not None:
                on_window()
    return Perplexity(math.exp(nll / count), nll, count, len(chunks))
