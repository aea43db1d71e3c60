"""Per-operand block sizes in the report: a block map of golden.model_quantization (the paper's
dynamic block sizes by default: B = 16 for the MLP's down_proj input and for the operands of the
attention scores, 32 elsewhere), and the bits per element such a run stores, averaged over the
model's actual operands.

Bits: every quantized operand is counted as SPEC 3 counts a uniform block size: 4-bit codes for
its elements and 5 + 4 bits of metadata for each of its blocks (the last block along a vector
padded; golden.baselines.bits_per_element's accounting, so that a uniform block size that divides
every operand gives back the uniform figure). The operands of one forward pass over a window of
`tokens` tokens are counted:
- each quantized linear layer's weight (out x in elements, once) and its input (tokens x in);
- with attention quantized (scope "full"), in every decoder layer, Q (tokens x heads x head_dim)
  and K (tokens x kv_heads x head_dim, before the grouped heads are repeated) in the blocks of
  "attn_scores", the probabilities (heads x tokens x tokens, the product's whole operand, masked
  keys included) and V (kv_heads x head_dim vectors of tokens) in the blocks of "attn_values".
"""
from __future__ import annotations

from typing import NamedTuple

from golden import baselines, model_quantization
from golden.spec import CODE_BITS, DEFAULT_BLOCK

# The paper's dynamic block sizes: small blocks where the outliers are, 32 elsewhere.
DEFAULT_BLOCK_MAP = "down_proj=16,attn_scores=16,*=32"
NAME = "block_map"


class BlockMapError(ValueError):
    """A block map that does not fit the model (an entry that matches no quantized layer)."""


def text(parsed: dict[str, int]) -> str:
    return ",".join(f"{pattern}={block}" for pattern, block in parsed.items())


def normalize(block_map: str) -> str:
    """The map's canonical text; a bad entry is a ValueError naming it (golden.model_quantization.
    parse_block_map)."""
    if not isinstance(block_map, str):
        raise ValueError(f"{NAME} must be a string 'pattern=block,...', got {block_map!r}")
    return text(model_quantization.parse_block_map(block_map, NAME))


def for_scope(block_map: str, scope: str) -> str:
    """The map a scope takes: the linear scope has no attention operands, so their entries go (and
    with nothing left, every layer takes the default block)."""
    parsed = model_quantization.parse_block_map(block_map, NAME)
    if scope != "full":
        parsed = {p: b for p, b in parsed.items() if p not in model_quantization.ATTENTION_OPERANDS}
    return text(parsed or {model_quantization.DEFAULT_PATTERN: DEFAULT_BLOCK})


def check_matches(block_map: str, layer_names) -> None:
    """Every layer pattern of the map matches one of the quantized layers, else a BlockMapError
    naming the entry."""
    try:
        model_quantization.check_block_map_matches(model_quantization.parse_block_map(block_map, NAME),
                                                   layer_names, NAME)
    except ValueError as err:
        raise BlockMapError(str(err)) from None


class OperandBits(NamedTuple):
    weight: float                   # bits per element over the quantized weights
    activation: float               # over the activation operands of one window
    all: float                      # over both
    weight_elements: int
    activation_elements: int
    tokens: int


def operand_bits(model, handle, tokens: int, weight_fmt: str | None, act_fmt: str | None,
                 convention: str = "ocp") -> OperandBits:
    """Bits per element of the operands `handle` (what golden.quantize_model returned on `model`)
    quantizes in one forward pass over `tokens` tokens; see the module docstring."""
    modules = dict(model.named_modules())
    totals = {"weight": [0.0, 0], "activation": [0.0, 0]}

    def add(kind: str, fmt: str | None, block: int, rows: int, length: int) -> None:
        """`rows` vectors of `length` elements in blocks of `block` along them (the last one padded)."""
        if fmt is None:
            return
        # SPEC 3: CODE_BITS per element and the block's metadata (baselines' accounting) per block.
        metadata = (baselines.bits_per_element(fmt, block, convention) - CODE_BITS) * block
        totals[kind][0] += rows * (CODE_BITS * length + metadata * -(-length // block))
        totals[kind][1] += rows * length

    for name, block in handle.layers.items():
        out_features, in_features = modules[name].weight.shape
        add("weight", weight_fmt, block, out_features, in_features)
        add("activation", act_fmt, block, tokens, in_features)
    if handle.attention:
        config = model.config
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        scores, values = handle.attention["attn_scores"], handle.attention["attn_values"]
        for _ in range(config.num_hidden_layers):
            add("activation", act_fmt, scores, tokens * heads, head_dim)        # Q, along head_dim
            add("activation", act_fmt, scores, tokens * kv_heads, head_dim)     # K
            add("activation", act_fmt, values, heads * tokens, tokens)          # probabilities, along the keys
            add("activation", act_fmt, values, kv_heads * head_dim, tokens)     # V, along the sequence
    (w_bits, w_count), (a_bits, a_count) = totals["weight"], totals["activation"]
    return OperandBits(w_bits / w_count if w_count else float("nan"), a_bits / a_count if a_count else float("nan"),
                       (w_bits + a_bits) / (w_count + a_count), w_count, a_count, tokens)
