"""Stimulus sets for the quantizer and dot-product testbenches.

Every FP16 block comes from ``golden.vectors`` (corners and seeded random families) or from
``golden.models.real_blocks`` / ``cached_linear_inputs`` (real SmolLM2 operands). The few families
defined here complement them: raw random bit patterns (any FP16 value, Inf and NaN included) for the
quantizer, and hand-built block pairs for the dot product's extremes (zero, maximum magnitude,
cancelling sums, rounding ties), built from ``golden.formatbook``.
"""
from __future__ import annotations

import torch

from golden import bd, vectors
from golden.formatbook import FORMATBOOK_ROWS
from golden.spec import EXP_MAX, IDX_BITS, LEVELS, MAX_HALF_UNITS, NUM_DIALECTS

from .harness import Params

SIGN = 1 << IDX_BITS       # SPEC 2: code = sign << 3 | idx
MAX_IDX = LEVELS - 1


# --- quantizer ----------------------------------------------------------------------------------

def raw_bit_blocks(n: int, block: int, seed: int) -> torch.Tensor:
    """Uniformly random 16-bit patterns: subnormals, Inf, NaN and every exponent appear."""
    gen = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 1 << 16, (n, block), generator=gen, dtype=torch.int32)
    return bits.to(torch.int16).view(torch.float16)


def quantizer_sets(p: Params, random_per_family: int, real_per_kind: int) -> list[tuple[str, torch.Tensor]]:
    """(tag, FP16 (n, B)) sets: every corner family, every random family, raw bits, real blocks."""
    sets = [(f"corner/{name}", x) for name, x in vectors.corner_blocks(p.block).items()]
    for i, family in enumerate(vectors.RANDOM_FAMILIES):
        sets.append((f"random/{family}",
                     vectors.random_blocks(random_per_family, p.block, family, seed=p.seed * 100 + i)))
    sets.append(("random/raw_bits", raw_bit_blocks(random_per_family, p.block, p.seed * 100 + 99)))
    if p.real and real_per_kind:
        from golden import models
        for j, kind in enumerate(models.KINDS):
            sets.append((f"real/{kind}", models.real_blocks(real_per_kind, p.block, kind,
                                                            seed=p.seed * 100 + j)))
    return sets


# --- dot product ---------------------------------------------------------------------------------

def blocks_from_fields(codes, dialect, exp) -> bd.Blocks:
    """bd.Blocks from nested lists: codes (n, nb, B), dialect and exp (n, nb)."""
    codes = torch.as_tensor(codes, dtype=torch.uint8)
    return bd.Blocks(exp=torch.as_tensor(exp, dtype=torch.uint8),
                     dialect=torch.as_tensor(dialect, dtype=torch.uint8),
                     codes=codes, invalid=torch.zeros(codes.shape[:-1], dtype=torch.bool))


def quantized_pairs(x_act: torch.Tensor, x_weight: torch.Tensor, block: int) -> tuple[bd.Blocks, bd.Blocks]:
    """Activations by two-stage, weights by MSE (the paper's split), rows (n, K) -> (n, K/B, B)."""
    return (bd.quantize(x_act, block=block, method="two_stage"),
            bd.quantize(x_weight, block=block, method="mse"))


def random_field_blocks(n: int, nblocks: int, block: int, seed: int) -> tuple[bd.Blocks, bd.Blocks]:
    """Arbitrary codes, dialects and exponents 1..30: covers sums no quantized block produces."""
    gen = torch.Generator().manual_seed(seed)

    def one():
        return blocks_from_fields(
            torch.randint(0, 16, (n, nblocks, block), generator=gen),
            torch.randint(0, NUM_DIALECTS, (n, nblocks), generator=gen),
            torch.randint(1, EXP_MAX + 1, (n, nblocks), generator=gen))
    return one(), one()


def random_fp16_pairs(n: int, nblocks: int, block: int, seed: int) -> list[tuple[str, bd.Blocks, bd.Blocks]]:
    """Quantized random blocks of every golden.vectors family, n dot products of nblocks each."""
    out = []
    for i, family in enumerate(vectors.RANDOM_FAMILIES):
        xa = vectors.random_blocks(n * nblocks, block, family, seed=seed + 2 * i).reshape(n, -1)
        xw = vectors.random_blocks(n * nblocks, block, family, seed=seed + 2 * i + 1).reshape(n, -1)
        out.append((f"random/{family}", *quantized_pairs(xa, xw, block)))
    return out


def _uniform(n, nblocks, block, code, dialect, exp):
    return blocks_from_fields(torch.full((n, nblocks, block), code), torch.full((n, nblocks), dialect),
                              torch.full((n, nblocks), exp))


def extreme_pairs(block: int, max_blocks: int) -> list[tuple[str, bd.Blocks, bd.Blocks]]:
    """Zero, maximum magnitude and cancelling sums, one list entry per family."""
    top_dialect = next(d for d, row in enumerate(FORMATBOOK_ROWS) if row[MAX_IDX] == MAX_HALF_UNITS)
    out = []
    # Zero: all-zero blocks (E = 0), zero codes with large exponents, and -0 codes.
    zeros = [_uniform(1, nb, block, 0, 0, 0) for nb in (1, 2)]
    zeros.append(_uniform(1, 1, block, 0, 5, EXP_MAX))
    zeros.append(_uniform(1, 3, block, SIGN, 9, 17))
    out.append(("extreme/zero", _cat(zeros), _cat([_uniform(1, z.codes.shape[1], block, MAX_IDX, 0, 30)
                                                   for z in zeros])))
    # Maximum magnitude: 15 x 15 on every lane at E = 30 for 1, 2 and max_blocks blocks, both signs.
    for nb in (1, 2, max_blocks):
        big_a, big_w = [], []
        for sa, sw in ((0, 0), (SIGN, 0), (SIGN, SIGN)):
            big_a.append(_uniform(1, nb, block, sa | MAX_IDX, top_dialect, EXP_MAX))
            big_w.append(_uniform(1, nb, block, sw | MAX_IDX, top_dialect, EXP_MAX))
        out.append((f"extreme/max_magnitude/x{nb}", _cat(big_a), _cat(big_w)))
    # Smallest nonzero magnitude: h = 1 on one lane at E = 1 (value 2^-34).
    tiny_codes = torch.zeros(2, 1, block, dtype=torch.int64)
    tiny_codes[0, 0, 0] = 1
    tiny_codes[1, 0, block - 1] = SIGN | 1
    tiny = blocks_from_fields(tiny_codes, torch.zeros(2, 1), torch.ones(2, 1))
    ones = _uniform(2, 1, block, 1, 0, 1)            # h = 1 on every lane at E = 1
    out.append(("extreme/min_magnitude", tiny, ones))
    out.append(("extreme/cancel", *cancelling_pairs(block, seed=7)))
    out.append(("extreme/ties", *tie_pairs(block)))
    return out


def _cat(blocks: list[bd.Blocks]) -> bd.Blocks:
    """Stacks dot products; shorter ones get zero blocks (E = 0) in front, which add nothing."""
    width = max(b.codes.shape[1] for b in blocks)
    padded = []
    for b in blocks:
        extra = width - b.codes.shape[1]
        if extra:
            # A zero block (E = 0, codes +0) adds exactly nothing, so padding keeps the value.
            pad = _uniform(b.codes.shape[0], extra, b.codes.shape[2], 0, 0, 0)
            b = bd.Blocks(*(torch.cat([t, u], 1) for t, u in zip(pad, b)))
        padded.append(b)
    return bd.Blocks(*(torch.cat(ts, 0) for ts in zip(*padded)))


def cancelling_pairs(block: int, seed: int) -> tuple[bd.Blocks, bd.Blocks]:
    """Dot products whose blocks cancel: a block then its negation (exactly zero, result +0.0),
    and the same with a small block left over (a tiny result after huge partial sums)."""
    gen = torch.Generator().manual_seed(seed)
    n = 8
    a_codes = torch.randint(0, 16, (n, 1, block), generator=gen)
    w_codes = torch.randint(0, 16, (n, 1, block), generator=gen)
    a_dialect = torch.randint(0, NUM_DIALECTS, (n, 1), generator=gen)
    w_dialect = torch.randint(0, NUM_DIALECTS, (n, 1), generator=gen)
    a_exp = torch.randint(20, EXP_MAX + 1, (n, 1), generator=gen)
    w_exp = torch.randint(20, EXP_MAX + 1, (n, 1), generator=gen)
    # Block 2 negates the activation signs of block 1, so its block value is exactly -S1.
    a = blocks_from_fields(torch.cat([a_codes, a_codes ^ SIGN], 1), a_dialect.repeat(1, 2),
                           a_exp.repeat(1, 2))
    w = blocks_from_fields(w_codes.repeat(1, 2, 1), w_dialect.repeat(1, 2), w_exp.repeat(1, 2))
    small_a = _uniform(n, 1, block, 1, 0, 1)     # h = 1 on every lane at E = 1
    small_w = _uniform(n, 1, block, 1, 0, 1)
    a2 = bd.Blocks(*(torch.cat([t, u], 1) for t, u in zip(a, small_a)))
    w2 = bd.Blocks(*(torch.cat([t, u], 1) for t, u in zip(w, small_w)))
    pad_a = _uniform(n, 1, block, 0, 0, 0)
    a1 = bd.Blocks(*(torch.cat([t, u], 1) for t, u in zip(a, pad_a)))
    w1 = bd.Blocks(*(torch.cat([t, u], 1) for t, u in zip(w, pad_a)))
    return _cat([a1, a2]), _cat([w1, w2])


def _single_lane(h_a: int, h_w: int, exp_a: int, exp_w: int, block: int, negative: bool = False):
    """One block pair whose sum is h_a * h_w on lane 0 (an index of dialect 0 that holds h)."""
    idx_a = FORMATBOOK_ROWS[0].index(h_a)
    idx_w = FORMATBOOK_ROWS[0].index(h_w)
    a = torch.zeros(1, 1, block, dtype=torch.int64)
    w = torch.zeros(1, 1, block, dtype=torch.int64)
    a[0, 0, 0] = idx_a | (SIGN if negative else 0)
    w[0, 0, 0] = idx_w
    return (blocks_from_fields(a, [[0]], [[exp_a]]), blocks_from_fields(w, [[0]], [[exp_w]]))


def tie_pairs(block: int) -> tuple[bd.Blocks, bd.Blocks]:
    """Sums that sit exactly halfway between two FP32 values, or just off it.

    The first block is 225 * 2^(60 - 36) (15 x 15 at E_a + E_w = 60): eight significant bits with
    its top bit at 2^31, so one FP32 ulp there is 2^8 and half an ulp 2^7, the product 1 x 1 at
    E_a + E_w = 43. The other blocks add: half an ulp (tie, even neighbour below: rounds down);
    one ulp plus half (tie, odd below: rounds up); 3 x 1 at 42 (0.75 ulp: up); 1 x 1 at 42
    (0.25 ulp: down); minus half an ulp (tie below the big block: back to it, the even one);
    half an ulp plus 2^-34 (just above the tie: up).
    """
    big = _single_lane(15, 15, 30, 30, block)
    half = lambda negative=False: _single_lane(1, 1, 22, 21, block, negative)
    ulp = _single_lane(1, 1, 22, 22, block)
    tiny = _single_lane(1, 1, 1, 1, block)
    extras = [[half()], [ulp, half()], [_single_lane(3, 1, 21, 21, block)],
              [_single_lane(1, 1, 21, 21, block)], [half(negative=True)], [half(), tiny]]
    pairs_a, pairs_w = [], []
    for extra in extras:
        parts = [big] + extra
        pairs_a.append(bd.Blocks(*(torch.cat(ts, 1) for ts in zip(*(a for a, _ in parts)))))
        pairs_w.append(bd.Blocks(*(torch.cat(ts, 1) for ts in zip(*(w for _, w in parts)))))
    return _cat(pairs_a), _cat(pairs_w)


def real_dot_rows(p: Params, count: int, seed: int) -> list[tuple[str, bd.Blocks, bd.Blocks]]:
    """Real SmolLM2 dot products: activation row t of a linear layer against its weight row n.

    Uses the cached captures of golden.models (all layers on the default text), picking one
    attention projection (K = 576) and one MLP down projection (K = 1536) when B divides K.
    """
    from golden import models

    captures = models.cached_linear_inputs()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name in ("model.layers.3.self_attn.q_proj", "model.layers.7.mlp.down_proj"):
        cap = captures[name]
        k = cap.weight.shape[1]
        if k % p.block:
            continue
        t = torch.randint(0, cap.activation.shape[0], (count,), generator=gen)
        n = torch.randint(0, cap.weight.shape[0], (count,), generator=gen)
        xa = cap.activation[t].to(torch.float16)
        xw = cap.weight[n].to(torch.float16)
        keep = torch.isfinite(xa).all(1) & torch.isfinite(xw).all(1)
        qa, qw = quantized_pairs(xa[keep], xw[keep], p.block)
        out.append((f"real/{name.split('.', 2)[-1]}", qa, qw))
    return out
