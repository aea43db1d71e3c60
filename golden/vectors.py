"""Shared test vectors: the checked-in corner blocks and seeded random blocks.

The golden-model tests and the hardware testbenches both draw their stimuli from here, so a corner
that one of them exercises is exercised by the other too.

    corner_blocks(block=32)      -> {family: FP16 tensor (n, block)}
    corner_expectations(block=32) -> {family: {quantity: tensor (n,)}}  what each corner row is built to hit
    expected_invalid(x)          -> bool (n,): the row holds Inf or NaN (SPEC 1)
    random_blocks(n, block=32, family="gaussian", seed=0) -> FP16 tensor (n, block)

Every corner is built from golden.formatbook's tables: values are placed at a chosen number of
quarter-units of the block scale (SPEC 4.1), so q is known exactly by construction. All rows have
their elements shuffled by a fixed permutation so that no corner depends on element position.
"""
from __future__ import annotations

import struct

import torch

from golden import formatbook as fb
from golden.spec import (
    EXP_FIELD_NONFINITE,
    EXP_MAX,
    FP16_BITS,
    FP16_MAN_BITS,
    FP16_MAX,
    NUM_DIALECTS,
    NUM_PAIRS,
    Q_MAX,
    QUARTER_UNIT_EXP_OFFSET,
    check_block_size,
)

CORNER_FAMILIES = (
    "zero", "neg_zero", "pow2", "subnormal", "nonfinite", "saturate_q31", "odd_qmax", "stage2_count_ties",
    "midpoint_ties", "exp_spread", "all_codes",
)
RANDOM_FAMILIES = ("uniform", "gaussian", "heavy_tailed", "exponent_spread", "lognormal")

# FP16 bit patterns of the special values (SPEC 1).
SIGN_BIT = 1 << (FP16_BITS - 1)
POS_INF, NEG_INF = 0x7C00, 0xFC00
QUIET_NAN, NEG_QUIET_NAN, SIGNALING_NAN = 0x7E00, 0xFE00, 0x7C01
STEERING_COPIES = 4         # own-value elements that outvote the at most 3 probes in a midpoint row
# Shared exponents the corners cycle through: low, middle, top of the normal range. 6 is the
# lowest at which one quarter-unit minus one FP16 ulp is still a normal number.
CORNER_EXPONENTS = (6, 15, 30)
_SHUFFLE_SEED = 20250101


def _bits(value: float) -> int:
    """FP16 bit pattern of a float that must be exactly representable."""
    bits = struct.unpack("<H", struct.pack("<e", value))[0]
    if struct.unpack("<e", struct.pack("<H", bits))[0] != value:
        raise AssertionError(f"{value!r} is not exactly representable in FP16")
    return bits


def _fields(sign: int, ex: int, man: int) -> int:
    return sign << 15 | ex << FP16_MAN_BITS | man


def _quarter(t: float, shared_exp: int, sign: int = 0) -> int:
    """FP16 bits of t quarter-units of a block whose shared exponent is `shared_exp` (SPEC 4.1)."""
    return _bits(t * 2.0 ** (shared_exp - QUARTER_UNIT_EXP_OFFSET)) | sign << 15


def _rows_to_tensor(rows: list[list[int]], block: int, family: str) -> torch.Tensor:
    """Pads rows with +0, shuffles the element order of each row, returns FP16 (n, block)."""
    for row in rows:
        if len(row) > block:
            raise AssertionError(f"{family}: a corner row of {len(row)} elements does not fit block={block}")
    bits = torch.tensor([row + [0] * (block - len(row)) for row in rows], dtype=torch.int32)
    gen = torch.Generator().manual_seed(_SHUFFLE_SEED + CORNER_FAMILIES.index(family))
    order = torch.stack([torch.randperm(block, generator=gen) for _ in rows])
    return _fp16_from_bits(bits.gather(1, order))


def _fp16_from_bits(bits: torch.Tensor) -> torch.Tensor:
    """Reinterprets 16-bit patterns held in a wider integer tensor as FP16."""
    signed = torch.where(bits >= 0x8000, bits - 0x10000, bits)   # two's complement, no wrap-around cast
    return signed.to(torch.int16).view(torch.float16)


def _own_value(dialect: int) -> int:
    """SPEC 4.3: the one value (half-units) of a dialect that its pair partner lacks."""
    own = set(fb.FORMATBOOK_ROWS[dialect]) - set(fb.FORMATBOOK_ROWS[dialect ^ 1])
    return own.pop()


def _pair_max_q(pair: int) -> int:
    """q of an element exactly at the pair's largest value: it selects that pair under both stage-1
    rules (SPEC 4.2)."""
    return 2 * fb.pair_max(pair)


def _rounding_pair(qmax: int) -> int:
    """SPEC 4.2, rounding stage 1 (method "two_stage"): the pair whose largest value is nearest."""
    return max(0, fb.pair_max(0) - ((qmax + 1) >> 1))


def _truncating_pair(qmax: int) -> int:
    """SPEC 4.2, truncating stage 1 (method "two_stage_trunc")."""
    return fb.pair_max(0) - (qmax >> 1)


# Each builder returns (rows of FP16 bit patterns, {quantity: per-row intended value}).

def _zero() -> tuple[list[list[int]], dict]:
    return [[]], {"exp": [0]}


def _neg_zero() -> tuple[list[list[int]], dict]:
    rows = [[SIGN_BIT] * 64, [SIGN_BIT, 0] * 32, [SIGN_BIT]]
    return rows, {"exp": [0] * len(rows)}


def _pow2() -> tuple[list[list[int]], dict]:
    rows, exps = [], []
    for shared in (1, 2) + CORNER_EXPONENTS[1:]:
        top = _fields(0, shared, 0)                       # M = 1024: exactly 2^(E - 15), q = 16
        below = [_fields(k % 2, max(shared - 1 - k, 0), (97 * k) % 1024) for k in range(6)]
        just_below = _fields(0, shared - 1, 0x3FF)        # the largest FP16 value under 2^(E - 15)
        rows += [[top], [top | SIGN_BIT] + below, [top, top | SIGN_BIT, just_below]]
        exps += [shared] * 3
    # SPEC 4.2: q = 16 puts every one of these blocks in pair 7.
    return rows, {"exp": exps, "qmax": [16] * len(rows)}


def _subnormal() -> tuple[list[list[int]], dict]:
    subs = [_fields(k % 2, 0, man) for k, man in enumerate((1, 2, 0x155, 0x200, 0x3FF, 0x3FE))]
    rows = [subs, subs + [_fields(0, 1, 0)], subs + [_fields(1, 15, 0x123)],
            [_fields(0, 0, 0x3FF), _fields(0, 1, 0)], [_fields(1, 0, 0x3FF)] * 8]
    return rows, {"exp": [0, 1, 15, 1, 0]}


def _nonfinite() -> tuple[list[list[int]], dict]:
    normals = [_quarter(t, 15, t % 2) for t in (31, 17, 9, 3)]
    special = [POS_INF, NEG_INF, QUIET_NAN, NEG_QUIET_NAN, SIGNALING_NAN]
    rows = [[s] + normals for s in special]
    rows += [special + normals, special, [POS_INF, _fields(0, 0, 5)], normals, [NEG_INF, _fields(0, 30, 0x3FF)]]
    # Non-finite elements count as ex = 0 for the shared exponent (SPEC 3).
    exps = [15] * 6 + [0, 0, 15, 30]
    return rows, {"exp": exps}


def _saturate_q31() -> tuple[list[list[int]], dict]:
    rows, exps = [], []
    for shared in (1,) + CORNER_EXPONENTS:
        top = _fields(0, shared, 0x3FF)                   # M = 2047: q = 31 (65504 at E = 30)
        rows += [[top], [top | SIGN_BIT, top, _quarter(30, shared) if shared > 5 else top],
                 [top] + ([_quarter(t, shared, t % 2) for t in (30, 29, 25, 20, 19, 15)] if shared > 5 else [])]
        exps += [shared] * 3
    # SPEC 4.2: q = 31 is the one maximum the rounding rule clamps (15 - 16 -> pair 0); truncation
    # gives pair 0 without a clamp.
    return rows, {"exp": exps, "qmax": [Q_MAX] * len(rows), "pair": [0] * len(rows),
                  "pair_trunc": [0] * len(rows)}


def _odd_qmax() -> tuple[list[list[int]], dict]:
    """Every odd block maximum q = 2m + 1 (17..31), the cases where the two stage-1 rules split:
    the exact maximum lies in [m + 1/2, m + 1) half-units, so rounding picks the pair of largest
    value m + 1 and truncation the pair of m (SPEC 4.2); at q = 31 both give pair 0. The maximum
    sits at q + f quarter-units with f in {0, 1/4, 1/2, 3/4}: f = 0 is the exact tie m + 1/2, which
    rounds up. The maximum's q lies in neither stage-2 range of either pair, and the companions
    (q <= 8) lie below every range, so both counts are 0 and stage 2 picks dialect A."""
    rows: list[list[int]] = []
    intent = {"exp": [], "qmax": [], "pair": [], "pair_trunc": [], "dialect": [], "dialect_trunc": []}
    shared_exps = (1,) + CORNER_EXPONENTS
    for qmax in range(17, Q_MAX + 1, 2):
        for j, frac in enumerate((0.0, 0.25, 0.5, 0.75)):
            shared = shared_exps[(qmax // 2 + j) % len(shared_exps)]
            sign = (qmax // 2 + j) % 2
            row = [_quarter(qmax + frac, shared, sign)]
            if j % 2:                       # the maximum twice, both signs
                row.append(_quarter(qmax + frac, shared, 1 - sign))
            if shared > 5:                  # companions below every stage-2 range
                row += [_quarter(t, shared, t % 2) for t in (1, 4, 6, 8)]
            rows.append(row)
            pair, pair_trunc = _rounding_pair(qmax), _truncating_pair(qmax)
            intent["exp"].append(shared)
            intent["qmax"].append(qmax)
            intent["pair"].append(pair)
            intent["pair_trunc"].append(pair_trunc)
            intent["dialect"].append(2 * pair)
            intent["dialect_trunc"].append(2 * pair_trunc)
    return rows, intent


def _range_q_values(dialect: int) -> list[int]:
    lo, hi = (int(v) for v in fb.STAGE2_RANGES[dialect])
    return list(range(lo, hi))


def _stage2_count_ties() -> tuple[list[list[int]], dict]:
    rows: list[list[int]] = []
    intent = {"exp": [], "pair": [], "count_a": [], "count_b": [], "dialect": []}
    variants = [(0, 0), (1, 1), (2, 2), (4, 4), (1, 0), (3, 2), (0, 1), (2, 3)]
    fractions = (0.0, 0.5, 0.75)     # truncation to q drops these (SPEC 4.1)
    for pair in range(NUM_PAIRS):
        dialect_a, dialect_b = 2 * pair, 2 * pair + 1
        in_a, in_b = _range_q_values(dialect_a), _range_q_values(dialect_b)
        # Distractors: q just outside both ranges, below the block maximum.
        edges = {in_a[0] - 1, in_a[-1] + 1, in_b[0] - 1, in_b[-1] + 1}
        distract = sorted(t for t in edges if 0 < t < _pair_max_q(pair) and t not in in_a and t not in in_b)
        for k, (count_a, count_b) in enumerate(variants):
            shared = CORNER_EXPONENTS[(pair + k) % len(CORNER_EXPONENTS)]
            # q = 2(15 - p) selects pair p under both stage-1 rules; the odd q = 2(15 - p) - 1 selects
            # it under the rounding rule only (q >= 16, so not for pair 7).
            qmax = _pair_max_q(pair) - (k % 2 if pair < NUM_PAIRS - 1 else 0)
            row = [_quarter(qmax, shared)]
            # Alternate between the two ends of each range so both boundaries are exercised.
            row += [_quarter(in_a[-1 if i % 2 else 0] + fractions[i % 3], shared, i % 2)
                    for i in range(count_a)]
            row += [_quarter(in_b[-1 if i % 2 else 0] + fractions[(i + 1) % 3], shared, (i + 1) % 2)
                    for i in range(count_b)]
            row += [_quarter(t, shared) for t in distract if t <= qmax]
            rows.append(row)
            intent["exp"].append(shared)
            intent["pair"].append(pair)
            intent["count_a"].append(count_a)
            intent["count_b"].append(count_b)
            intent["dialect"].append(dialect_a if count_a >= count_b else dialect_b)  # SPEC 4.3: ties to A
    return rows, intent


def _midpoint_ties() -> tuple[list[list[int]], dict]:
    rows: list[list[int]] = []
    intent = {"exp": [], "dialect": [], "midpoint": []}
    for dialect in range(NUM_DIALECTS):
        pair = fb.pair_of(dialect)
        for i, mid in enumerate(fb.midpoints(dialect)):
            shared = CORNER_EXPONENTS[(dialect + i) % len(CORNER_EXPONENTS)]
            on_mid = _quarter(mid, shared)
            # One FP16 ulp below and above the midpoint (positive patterns are ordered like integers).
            probes = [on_mid - 1, on_mid, on_mid + 1]
            sign = (dialect + i) % 2
            row = [_quarter(_pair_max_q(pair), shared)]
            row += [_quarter(2 * _own_value(dialect), shared)] * STEERING_COPIES
            row += [p | sign << 15 for p in probes]
            rows.append(row)
            intent["exp"].append(shared)
            intent["dialect"].append(dialect)
            intent["midpoint"].append(mid)
    return rows, intent


def _exp_spread() -> tuple[list[list[int]], dict]:
    rows, exps = [], []
    spread = 12                                    # shift 6 + j reaches 18: q = 0 from j = 5 on
    for shared in (13, 20, EXP_MAX):
        for man in (0x3FF, 0, 0x2AB):
            rows.append([_fields(j % 2, shared - j, man) for j in range(spread + 1)])
            exps.append(shared)
    return rows, {"exp": exps}


def _all_codes() -> tuple[list[list[int]], dict]:
    rows: list[list[int]] = []
    intent = {"exp": [], "dialect": []}
    for dialect in range(NUM_DIALECTS):
        for sign in (0, 1):
            shared = CORNER_EXPONENTS[(dialect + sign) % len(CORNER_EXPONENTS)]
            # Each value v (half-units) sits at q = 2v, so it maps to its own index; the own value
            # repeated wins stage 2 for this dialect whether it is A or B.
            values = list(fb.FORMATBOOK_ROWS[dialect]) + [_own_value(dialect)] * 2
            rows.append([_quarter(2 * v, shared, sign) for v in values])
            intent["exp"].append(shared)
            intent["dialect"].append(dialect)
    return rows, intent


_BUILDERS = {
    "zero": _zero, "neg_zero": _neg_zero, "pow2": _pow2, "subnormal": _subnormal,
    "nonfinite": _nonfinite, "saturate_q31": _saturate_q31, "odd_qmax": _odd_qmax,
    "stage2_count_ties": _stage2_count_ties,
    "midpoint_ties": _midpoint_ties, "exp_spread": _exp_spread, "all_codes": _all_codes,
}


def corner_blocks(block: int = 32) -> dict[str, torch.Tensor]:
    """Named families of corner blocks, each an FP16 tensor (n, block), padded with +0."""
    block = check_block_size(block)
    out = {}
    for family in CORNER_FAMILIES:
        rows, _ = _BUILDERS[family]()
        if family == "neg_zero":
            rows = [row[:block] for row in rows]   # the all -0 rows fill whatever block is asked for
        out[family] = _rows_to_tensor(rows, block, family)
    return out


def corner_expectations(block: int = 32) -> dict[str, dict[str, torch.Tensor]]:
    """What each corner row is built to produce, row-aligned with corner_blocks(block).

    Quantities (int64 tensors (n,), present where the family fixes them): "exp" (shared exponent
    E), "qmax", "pair", "count_a", "count_b", "dialect" (under method="two_stage", the rounding
    stage 1), "pair_trunc" and "dialect_trunc" (under method="two_stage_trunc"), "midpoint"
    (quarter-units), and "invalid" (bool) for every family.
    """
    block = check_block_size(block)
    blocks = corner_blocks(block)
    out = {}
    for family in CORNER_FAMILIES:
        _, intent = _BUILDERS[family]()
        out[family] = {name: torch.tensor(values, dtype=torch.int64) for name, values in intent.items()}
        out[family]["invalid"] = expected_invalid(blocks[family])
    return out


def expected_invalid(x: torch.Tensor) -> torch.Tensor:
    """bool (n,): the row holds an element with exponent field 31 (Inf or NaN, SPEC 1)."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float16 or x.dim() != 2:
        raise ValueError(f"x must be an FP16 tensor of shape (n, block), got {getattr(x, 'dtype', type(x))}")
    ex = (x.view(torch.int16).to(torch.int32) >> FP16_MAN_BITS) & 0x1F
    return (ex == EXP_FIELD_NONFINITE).any(-1)


def random_blocks(n: int, block: int = 32, family: str = "gaussian", seed: int = 0) -> torch.Tensor:
    """n seeded random blocks, FP16 (n, block), all finite.

    Every family but "exponent_spread" multiplies each row by its own power of two in
    2^-12 .. 2^4, so the shared exponent varies from row to row; values beyond the FP16 range
    are clamped to +-65504.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    block = check_block_size(block)
    if family not in RANDOM_FAMILIES:
        raise ValueError(f"family must be one of {RANDOM_FAMILIES}, got {family!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    gen = torch.Generator().manual_seed(seed)
    shape = (n, block)
    if family == "exponent_spread":
        sign = torch.randint(0, 2, shape, generator=gen)
        ex = torch.randint(1, EXP_MAX + 1, shape, generator=gen)
        man = torch.randint(0, 1 << FP16_MAN_BITS, shape, generator=gen)
        return _fp16_from_bits((sign << 15) | (ex << FP16_MAN_BITS) | man)
    row_scale = torch.exp2(torch.randint(-12, 5, (n, 1), generator=gen).to(torch.float32))
    if family == "uniform":
        x = torch.rand(shape, generator=gen) * 2 - 1
    elif family == "gaussian":
        x = torch.randn(shape, generator=gen)
    elif family == "heavy_tailed":
        # Student-t with 3 degrees of freedom plus 1% outliers 16..1024 times larger.
        chi2 = torch.randn((3,) + shape, generator=gen).square().sum(0)
        x = torch.randn(shape, generator=gen) / (chi2 / 3).sqrt()
        outlier = torch.rand(shape, generator=gen) < 0.01
        boost = torch.exp2(torch.randint(4, 11, shape, generator=gen).to(torch.float32))
        x = torch.where(outlier, x * boost, x)
    else:  # lognormal, random signs
        sign = torch.randint(0, 2, shape, generator=gen) * 2 - 1
        x = sign * torch.exp(2 * torch.randn(shape, generator=gen))
    return (x * row_scale).clamp(-FP16_MAX, FP16_MAX).to(torch.float16)
