"""BlockDialect (or a baseline format) on any PyTorch model: `quantize_model`.

    from golden import quantize_model
    with quantize_model(model, weights="bd_mse", activations="bd_two_stage", block=32):
        logits = model(ids).logits

What is quantized where:
- every selected nn.Linear (all of them but the output head by default): its weight, once, when the
  model is quantized, and its input, on every call; both in blocks along in_features (the reduction
  dimension), zero-padded to a whole block. Fake quantization (the default): the layer multiplies the
  dequantized operands in the model's own floating-point type, the format computed by
  golden.baselines.fake_quantize (BlockDialect weights by golden.bd.quantize + dequantize, the same
  values). exact=True: a BlockDialect layer's output is golden.bd.linear of the quantized operands,
  the exact block sums rounded once to FP32 that the hardware returns (SPEC 6).
- scope="full" adds both products of attention, for models that call transformers' attention
  interface: Q and K in blocks along head_dim for Q K^T ("attn_scores" in a block map), the softmax
  probabilities (blocks along the key dimension) and V (blocks along its sequence dimension) for the
  product with V ("attn_values"). The attention function (`make_attention`) is the report's too:
  on float64 CPU tensors one fused pass (golden.report.attention), bits independent of threads,
  batch and CPU.
BlockDialect rounds every input once to FP16 first (SPEC 1), then follows SPEC 3-5; the baselines
follow SPEC 8. Layers that read the same tensor (q/k/v, gate/up) quantize it once per call.

Removing the quantization (`handle.remove()`, or leaving the `with` block, also by an exception)
puts back the very weight Parameters, forwards, hooks and attention setting the model had.
"""
from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Callable, Mapping

import torch

from golden import baselines, bd
from golden.report.attention import attention_native
from golden.spec import BLOCK_SIZES, DEFAULT_ACCUMULATE, DEFAULT_BLOCK, check_accumulate, check_block_size

FORMATS = baselines.FORMATS
SCOPES = ("linear", "full")
# Block-map names of the attention products' operands (scope="full"): Q and K of the scores, the
# probabilities and V of the product with V. "*" is the default of every other operand.
ATTENTION_OPERANDS = ("attn_scores", "attn_values")
DEFAULT_PATTERN = "*"
# activation_amax names of the attention products' operands, after the attention module's name
# (e.g. "model.layers.0.self_attn.query"): Q, K, V and the softmax probabilities.
ATTENTION_AMAX_OPERANDS = ("query", "key", "value", "probs")


def parse_block_map(block_map, name: str = "block_map") -> dict[str, int]:
    """A block map as an ordered {pattern: block}: from a dict, or from a string such as
    "down_proj=16,attn_scores=16,*=32". A pattern is a regular expression searched in a linear
    layer's name, "attn_scores" / "attn_values" name the attention products' operands and "*" is the
    default. The first pattern that matches a layer gives its block. A bad entry is a ValueError
    naming it (one line, fit for a command line)."""
    if block_map is None:
        return {}
    if isinstance(block_map, str):
        entries = []
        for text in block_map.split(","):
            pattern, sep, block = (part.strip() for part in text.partition("="))
            if not sep or not pattern or not block:
                raise ValueError(f"{name} entry {text.strip()!r}: expected PATTERN=BLOCK")
            try:
                block = int(block)
            except ValueError:
                pass                        # reported as a bad block below
            entries.append((pattern, block, text.strip()))
    elif isinstance(block_map, Mapping):
        entries = [(pattern, block, f"{pattern}={block}") for pattern, block in block_map.items()]
    else:
        raise ValueError(f"{name} must be a dict {{pattern: block}} or a string 'pattern=block,...', "
                         f"got {block_map!r}")
    parsed: dict[str, int] = {}
    for pattern, block, entry in entries:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{name} entry {entry!r}: the pattern must be a non-empty string")
        if pattern in parsed:
            raise ValueError(f"{name} entry {entry!r}: pattern {pattern!r} is given twice")
        try:
            parsed[pattern] = check_block_size(block, "block")
        except ValueError as err:
            raise ValueError(f"{name} entry {entry!r}: {err}") from None
        if pattern != DEFAULT_PATTERN and pattern not in ATTENTION_OPERANDS:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{name} entry {entry!r}: not a regular expression ({err})") from None
    return parsed


def check_block_map_matches(entries: dict[str, int], layer_names, name: str = "block_map") -> None:
    """Every layer pattern of a parsed block map matches one of `layer_names`, else a ValueError
    naming the entry."""
    for pattern, block in entries.items():
        if pattern != DEFAULT_PATTERN and pattern not in ATTENTION_OPERANDS and not any(
                re.search(pattern, layer) for layer in layer_names):
            raise ValueError(f"{name} entry '{pattern}={block}': {pattern!r} matches no quantized layer")


def block_of(layer: str, block_map: dict[str, int], default: int) -> tuple[int, str | None]:
    """The block of a linear layer (or of an ATTENTION_OPERANDS name) under a parsed block map, and
    the pattern that gave it (None: `default`)."""
    if layer in ATTENTION_OPERANDS:
        if layer in block_map:
            return block_map[layer], layer
    else:
        for pattern, block in block_map.items():
            if pattern != DEFAULT_PATTERN and pattern not in ATTENTION_OPERANDS and re.search(pattern, layer):
                return block, pattern
    if DEFAULT_PATTERN in block_map:
        return block_map[DEFAULT_PATTERN], DEFAULT_PATTERN
    return default, None


def _check_format(fmt, name: str):
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"{name}: unknown format {fmt!r}; expected None or one of {FORMATS}")


def _check_block_for(fmt: str | None, block: int, source: str) -> None:
    """A block size the format takes (golden.baselines' accounting is the one list); FP16 has none."""
    if fmt is None or fmt == "fp16":
        return
    try:
        baselines.bits_per_element(fmt, block)
    except ValueError as err:
        raise ValueError(f"{source}: {fmt} does not take block {block} ({err})") from None


def fake_quantize(x: torch.Tensor, fmt: str, block: int | None, dtype: torch.dtype | None = None,
                  tensor_amax: float | None = None) -> torch.Tensor:
    """golden.baselines.fake_quantize along the last dimension, the last dimension padded with zeros
    to a whole number of blocks (zeros change no other block, nor NVFP4's tensor scale). The result
    has `dtype` (float32 or float64), or x's floating-point type when None. float32 and float64 take
    one fused pass on the CPU; a float64 input reaches BlockDialect's FP16 conversion with a single
    rounding. `tensor_amax`: NVFP4's static amax (golden.baselines.nvfp4)."""
    out_dtype = x.dtype if dtype is None else dtype
    dtype = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    length = x.shape[-1]
    if fmt == "fp16" or block is None:
        out = baselines.fake_quantize(x, fmt, dtype=dtype, tensor_amax=tensor_amax)
    else:
        pad = -length % block
        padded = torch.nn.functional.pad(x, (0, pad)) if pad else x
        out = baselines.fake_quantize(padded, fmt, None if fmt == "nvfp4" else block, dtype=dtype,
                                      tensor_amax=tensor_amax)
        out = out[..., :length] if pad else out
    return out if out.dtype == out_dtype else out.to(out_dtype)


def _bd_blocks(x: torch.Tensor, fmt: str, block: int) -> bd.Blocks:
    return bd.quantize(x, block=block, method=baselines.BD_METHODS[fmt], pad=True)


def quantize_weight(weight: torch.Tensor, fmt: str, block: int | None) -> tuple[torch.Tensor, bd.Blocks | None]:
    """A weight (N, K) quantized in blocks along K: dequantized in its own type and, for
    BlockDialect, the blocks themselves (what bd.linear multiplies)."""
    weight = weight.detach()
    if fmt not in baselines.BD_METHODS:
        return fake_quantize(weight, fmt, block), None
    q = _bd_blocks(weight, fmt, block)
    return bd.dequantize(q)[..., :weight.shape[-1]].to(weight.dtype), q


# Causal attention is computed in chunks of this many queries, each against the keys up to its
# last query: the keys after it are masked for every query of the chunk, their probabilities are 0
# and, as whole blocks of zeros (a multiple of every block size), quantize to 0. Skipping them
# changes no value and saves about 3/8 of the products and of the probabilities to quantize. Not
# for a format with a tensor-wide scale (NVFP4): its scale must see every probability at once.
CAUSAL_CHUNK = 2 * max(BLOCK_SIZES)


def _probabilities(scores: torch.Tensor, dtype: torch.dtype, act_fmt: str, block: int | None,
                   tensor_amax: float | None = None) -> torch.Tensor:
    """Softmax in the operands' own type (float64 when the model runs in float64), fake-quantized
    in blocks along the key dimension."""
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(dtype, torch.float32)).to(dtype)
    return fake_quantize(probs, act_fmt, block, tensor_amax=tensor_amax)


def make_attention(act_fmt: str | None, block: int | None, scores_block: int | None = None,
                   amax: Mapping[torch.nn.Module, Mapping[str, float]] | None = None) -> Callable:
    """Causal attention for quantize_model's full scope and the report's forward passes, signature of transformers' attention
    interface. With `act_fmt`, both matrix products' operands are fake-quantized (blocks along each
    product's reduction dimension): Q and K in blocks of `scores_block` (`block` when None), the
    probabilities and V in blocks of `block`; with None, nothing is.

    Float64 CPU tensors go to golden.report.attention.attention_native, one fused pass whose bits do not
    depend on the thread count, the batch or the CPU. Elsewhere (float32, CUDA, no AVX2, NVFP4's
    tensor-wide scale) torch computes it: scaled_dot_product_attention unquantized, eager matrix
    products and softmax quantized. `amax` ({attention module: {operand: amax}}, operands
    ATTENTION_AMAX_OPERANDS): NVFP4's static tensor scales, per attention module."""

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        groups = getattr(module, "num_key_value_groups", 1)
        static = {} if amax is None else amax[module]
        if act_fmt is not None:
            # Quantizing before the grouped heads are repeated gives the same blocks, with less work.
            query = fake_quantize(query, act_fmt, scores_block or block, tensor_amax=static.get("query"))
            key = fake_quantize(key, act_fmt, scores_block or block, tensor_amax=static.get("key"))
            value = fake_quantize(value.transpose(2, 3), act_fmt, block,
                                  tensor_amax=static.get("value")).transpose(2, 3)
        q_len, k_len = query.shape[-2], key.shape[-2]
        causal = attention_mask is None and q_len == k_len
        if causal:
            fused = attention_native(query, key, value, scaling, act_fmt, block)
            if fused is not None:
                return fused.output, None
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        if act_fmt is None:
            mask = None if attention_mask is None else attention_mask[..., :k_len]
            out = torch.nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, is_causal=mask is None and q_len > 1, scale=scaling)
            return out.transpose(1, 2).contiguous(), None
        if causal and act_fmt not in baselines.TENSOR_SCALED_FORMATS:
            # No mask (transformers' mask function gives none without padding): causality, chunk by chunk.
            outputs = []
            for start in range(0, q_len, CAUSAL_CHUNK):
                stop = min(start + CAUSAL_CHUNK, q_len)
                scores = torch.matmul(query[:, :, start:stop], key[:, :, :stop].transpose(2, 3)) * scaling
                future = torch.ones(stop - start, stop, dtype=torch.bool, device=scores.device).triu(start + 1)
                probs = _probabilities(scores.masked_fill(future, float("-inf")), query.dtype, act_fmt, block)
                outputs.append(torch.matmul(probs, value[:, :, :stop]))
            return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            else:
                scores = scores + attention_mask[..., :k_len]
        else:
            future = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).triu(k_len - q_len + 1)
            scores = scores.masked_fill(future, float("-inf"))
        probs = _probabilities(scores, query.dtype, act_fmt, block, static.get("probs"))
        out = torch.matmul(probs, value)
        return out.transpose(1, 2).contiguous(), probs

    return attention


def select_linears(model: torch.nn.Module, layers=None) -> dict[str, torch.nn.Linear]:
    """The nn.Linear modules to quantize by name: with layers=None all but the output head
    (transformers' get_output_embeddings, usually left unquantized); else those whose name matches
    `layers` (a regular expression or a list of them, re.search), the head too if it matches."""
    from golden.models import linear_layers

    chosen = linear_layers(model, layers)
    if layers is None:
        head_of = getattr(model, "get_output_embeddings", None)
        head = head_of() if callable(head_of) else None
        chosen = {name: m for name, m in chosen.items() if m is not head}
        if not chosen:
            raise ValueError("model: no nn.Linear layer to quantize")
    return chosen


def has_attention_interface(model: torch.nn.Module) -> bool:
    """Whether the model's attention goes through transformers' attention interface (the function
    named by config._attn_implementation), which scope="full" replaces."""
    config = getattr(model, "config", None)
    return bool(getattr(model, "_supports_attention_backend", False)) and hasattr(config, "_attn_implementation")


def _mask_for_registered_attention(*args, **kwargs):
    """transformers' causal/padding mask for a registered attention: None where none is needed (no
    padding: the attention is causal by itself), else the additive float mask of eager attention
    (finite, so a row that masks every key still has a softmax)."""
    from transformers.masking_utils import sdpa_mask

    dtype = kwargs.pop("dtype", torch.float32)
    mask = sdpa_mask(*args, **kwargs)
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.where(mask, torch.tensor(0.0, device=mask.device, dtype=dtype), torch.finfo(dtype).min)


@contextlib.contextmanager
def attention_function(model: torch.nn.Module, function: Callable, name: str):
    """Makes `function` (signature of transformers' attention interface) the model's attention for
    the duration of the block, under `name`, then puts back the setting the model had and removes
    the name from both of transformers' registries."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name in ALL_ATTENTION_FUNCTIONS or name in ALL_MASK_ATTENTION_FUNCTIONS:
        raise ValueError(f"attention name {name!r} is registered already")
    previous = model.config._attn_implementation
    try:
        # Item assignment on the registry instance adds a local entry; the mask registry is read
        # through its class-wide mapping, where the entry is removed again below.
        ALL_ATTENTION_FUNCTIONS[name] = function
        AttentionMaskInterface.register(name, _mask_for_registered_attention)
        model.config._attn_implementation = name
        yield
    finally:
        model.config._attn_implementation = previous
        ALL_ATTENTION_FUNCTIONS._local_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)


def _replace_forward(module: torch.nn.Module, forward: Callable) -> Callable[[], None]:
    """Makes `forward` the module's computation and returns the function that undoes it. Under
    accelerate (a device map) the module's `forward` is accelerate's wrapper, which moves tensors
    between devices and then calls `_old_forward`: that one is replaced instead, so the wrapper stays."""
    attribute = "_old_forward" if "_old_forward" in module.__dict__ else "forward"
    previous = module.__dict__.get(attribute)
    object.__setattr__(module, attribute, forward)

    def restore():
        if previous is None:
            del module.__dict__[attribute]     # back to the class's forward
        else:
            object.__setattr__(module, attribute, previous)

    return restore


class _SharedInput:
    """q/k/v (and gate/up) read the same tensor: it is quantized once per call and block size, not
    once per layer. The last source is held, so its identity cannot be reused by another tensor."""

    def __init__(self):
        self.source, self.results = None, {}

    def __call__(self, x: torch.Tensor, key, quantize: Callable) -> torch.Tensor:
        if self.source is not x:
            self.source, self.results = x, {}
        if key not in self.results:
            self.results[key] = quantize(x)
        return self.results[key]

    def clear(self):
        self.source, self.results = None, {}


# Models quantized now: a second quantize_model on one of them would quantize quantized weights and
# could be removed out of order.
_ACTIVE: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


class QuantizedModel:
    """What quantize_model returns: `remove()` undoes it (once; later calls do nothing), and it is a
    context manager that removes it on leaving the block.

    layers: {name: block} of the quantized linear layers; attention: {operand: block} of the
    attention products' operands (empty unless scope="full" with activations)."""

    def __init__(self, model, layers: dict[str, int], attention: dict[str, int], undo: contextlib.ExitStack):
        self.model, self.layers, self.attention = model, layers, attention
        self._undo = undo

    def remove(self) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            try:
                undo.close()
            finally:
                _ACTIVE.discard(self.model)

    def __enter__(self) -> QuantizedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self._undo is None else "installed"
        return f"<QuantizedModel {state}: {len(self.layers)} linear layers, attention {self.attention or 'unchanged'}>"


def quantize_model(model: torch.nn.Module, weights: str | None = "bd_mse", activations: str | None = "bd_two_stage",
                   block: int = DEFAULT_BLOCK, scope: str = "linear", exact: bool = False, layers=None,
                   block_map=None, accumulate: str = DEFAULT_ACCUMULATE, activation_amax=None,
                   activation_gain: float = 1.0) -> QuantizedModel:
    """Quantizes the model's linear layers (and with scope="full" its attention products) in place,
    until the returned handle's `remove()` or the end of its `with` block.

    weights, activations: a golden.baselines format ("bd_mse", "bd_two_stage", "bd_two_stage_trunc",
        "mxfp4", "nvfp4", "int4", "fp16") or None to leave that operand alone.
    block: block size of every operand (16, 32 or 64, as the formats take: MXFP4 16 or 32, NVFP4 16;
        ignored by FP16).
    scope: "linear" or "full" (attention's products too; transformers models only).
    exact: BlockDialect linear layers computed by golden.bd.linear (both formats BlockDialect).
    layers: None (every nn.Linear but the output head) or a regular expression or a list of them.
    block_map: per-layer blocks, see parse_block_map; overrides `block`.
    accumulate: how bd.linear adds the block values with exact=True (SPEC 6.1: "exact", "fp32",
        "fp16"); only "exact" without it.
    activation_amax: None, or NVFP4 activations' static per-layer tensor scales (golden.calibration):
        {name: amax} for every quantized linear layer (its input) and, with scope="full", for
        "<attention module>.<operand>", operands ATTENTION_AMAX_OPERANDS. None: each activation
        tensor's scale comes from its own amax (dynamic: it sees the whole batch).
    activation_gain: every linear layer's input is multiplied by it before its quantizer (1.0: not
        at all); a gain such as 1 + 2**-20 measures how far a figure moves under a change of no
        meaning (the report's noise band).
    Bad arguments raise ValueError naming the argument.
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_format(weights, "weights")
    _check_format(activations, "activations")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not isinstance(exact, bool):
        raise ValueError(f"exact must be True or False, got {exact!r}")
    if exact and (weights not in baselines.BD_METHODS or activations not in baselines.BD_METHODS):
        raise ValueError(f"exact: bd.linear multiplies BlockDialect operands; weights={weights!r} and "
                         f"activations={activations!r} must both be BlockDialect formats")
    accumulate = check_accumulate(accumulate)
    if accumulate != DEFAULT_ACCUMULATE and not exact:
        raise ValueError(f"accumulate={accumulate!r} is bd.linear's: it needs exact=True")
    block = check_block_size(block, "block")
    entries = parse_block_map(block_map)
    if model in _ACTIVE:
        raise ValueError("model is quantized already: remove that quantization first")
    full = scope == "full" and activations is not None
    if scope == "full" and not has_attention_interface(model):
        raise ValueError("scope='full' needs a model whose attention goes through transformers' attention "
                         f"interface; {type(model).__name__} has none (use scope='linear')")
    for operand in ATTENTION_OPERANDS:
        if operand in entries and scope != "full":
            raise ValueError(f"block_map entry {operand!r}: attention operands are quantized with scope='full' only")

    def checked_block(name: str) -> int:
        size, pattern = block_of(name, entries, block)
        source = "block" if pattern is None else f"block_map entry '{pattern}={size}'"
        for fmt in (weights, activations) if name not in ATTENTION_OPERANDS else (activations,):
            _check_block_for(fmt, size, source)
        return size

    activation_gain = _check_gain(activation_gain)
    modules = select_linears(model, layers)
    blocks = {name: checked_block(name) for name in modules}
    attention = {operand: checked_block(operand) for operand in ATTENTION_OPERANDS} if full else {}
    static = _static_amax(model, activation_amax, activations, modules, full)
    check_block_map_matches(entries, modules)

    undo = contextlib.ExitStack()
    _ACTIVE.add(model)
    handle = QuantizedModel(model, blocks, attention, undo)
    try:
        _install(model, modules, blocks, attention, weights, activations, exact, accumulate, undo,
                 static, activation_gain)
    except BaseException:
        handle.remove()
        raise
    return handle


def _check_gain(gain) -> float:
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0.5 <= float(gain) <= 2.0:
        raise ValueError(f"activation_gain must be a number in [0.5, 2], got {gain!r}")
    return float(gain)


def _static_amax(model, activation_amax, activations, modules, full: bool):
    """activation_amax validated: ({linear name: amax}, {attention module: {operand: amax}} or
    None), or None when there is none."""
    if activation_amax is None:
        return None
    if activations != "nvfp4":
        raise ValueError(f"activation_amax: static tensor scales are NVFP4's, got activations={activations!r}")
    if not isinstance(activation_amax, Mapping):
        raise ValueError(f"activation_amax must be a dict {{name: amax}}, got {type(activation_amax).__name__}")
    checked = {name: baselines.check_tensor_amax(value, f"activation_amax[{name!r}]")
               for name, value in activation_amax.items()}
    missing = [name for name in modules if checked.get(name) is None]
    if missing:
        raise ValueError(f"activation_amax has no amax for {len(missing)} quantized layer(s), first {missing[0]!r}")
    attention = None
    if full:
        attention = {}
        for name, value in checked.items():
            owner, _, operand = name.rpartition(".")
            if operand in ATTENTION_AMAX_OPERANDS and name not in modules:
                try:
                    module = model.get_submodule(owner)
                except AttributeError:
                    raise ValueError(f"activation_amax[{name!r}]: the model has no module {owner!r}") from None
                attention.setdefault(module, {})[operand] = value
        incomplete = next((n for n, m in model.named_modules() if m in attention
                           and set(attention[m]) != set(ATTENTION_AMAX_OPERANDS)), None)
        if not attention or incomplete is not None:
            raise ValueError("activation_amax: scope='full' needs the amax of every attention operand "
                             f"{ATTENTION_AMAX_OPERANDS}" + (f", {incomplete!r} lacks some" if incomplete else ""))
        attention = _AttentionAmax(attention)
    return checked, attention


class _AttentionAmax(dict):
    """{attention module: {operand: amax}}; an attention module without calibration is an error."""

    def __missing__(self, module):
        raise ValueError(f"activation_amax has no amax for the attention module {type(module).__name__} "
                         f"(layer {getattr(module, 'layer_idx', '?')})")


def _install(model, modules, blocks, attention, weights, activations, exact, accumulate,
             undo: contextlib.ExitStack, static=None, gain: float = 1.0) -> None:
    shared = _SharedInput()
    undo.callback(shared.clear)
    linear_amax, attention_amax = static if static is not None else ({}, None)
    names = {module: name for name, module in modules.items()}

    def quantized_input(x: torch.Tensor, size: int, module) -> torch.Tensor:
        amax = linear_amax.get(names[module])
        return shared(x, (size, amax), lambda t: fake_quantize(t * gain if gain != 1.0 else t, activations, size,
                                                              tensor_amax=amax))

    def exact_forward(module: torch.nn.Linear, q_weight: bd.Blocks, size: int) -> Callable:
        def forward(x):
            q_act = shared(x, ("blocks", size), lambda t: _bd_blocks(t * gain if gain != 1.0 else t,
                                                                     activations, size))
            y = bd.linear(q_act, q_weight, accumulate=accumulate).to(x.dtype)
            return y if module.bias is None else y + module.bias
        return forward

    def pre_hook(size: int) -> Callable:
        def hook(module, args):
            return (quantized_input(args[0], size, module),) + tuple(args[1:])
        return hook

    for name, module in modules.items():
        size = blocks[name]
        if weights is None:
            fake, q_weight = None, None
        else:
            fake, q_weight = quantize_weight(module.weight, weights, size)
        if exact:
            undo.callback(_replace_forward(module, exact_forward(module, q_weight, size)))
            continue
        if fake is not None:
            original = module.weight
            module.weight = torch.nn.Parameter(fake, requires_grad=False)
            undo.callback(setattr, module, "weight", original)
        if activations is not None:
            undo.callback(module.register_forward_pre_hook(pre_hook(size)).remove)
    if attention:
        function = make_attention(activations, attention["attn_values"], scores_block=attention["attn_scores"],
                                  amax=attention_amax)
        undo.enter_context(attention_function(model, function, f"golden_quantized_{id(undo):x}"))
