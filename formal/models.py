"""Plain, unpipelined models of SPEC 3, 4 and 6, written for the proofs.

Each model is a combinational Amaranth function of one block, written straight from the SPEC text
and on purpose *not* the way :mod:`bd_hw` builds the same thing:

- maxima are linear chains, not balanced trees;
- the 5-bit intermediate is a variable right shift of the whole 11-bit significand
  (``M >> (6 + E - ex)``), not the 5-bit window ``bd_hw`` shifts;
- stage 2 counts every one of the 16 dialects' beneficial ranges and then picks the pair, instead of
  selecting the pair's bounds first (sums, here and in the dot product, are added in halves: the
  order of an exact integer sum is free, and halves keep the solver's comparison with a hardware
  tree structural);
- the element index is the nearest formatbook value by distance (ties to the larger magnitude), not
  a count of midpoints;
- the decoder is one flat case over ``(dialect, idx)``;
- one block's dot product is turned into FP32 bits by a priority encoder on ``|S|`` (the value is
  exact in FP32, ``|S| < 2^24``), not by the wide normaliser.

Constants come from :mod:`golden.spec` and :mod:`golden.formatbook`.
"""
from __future__ import annotations

from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed

from golden.formatbook import FORMATBOOK_ROWS
from golden.formatbook import beneficial_range
from golden.spec import (EXP_FIELD_NONFINITE, FP16_MAN_BITS, LEVELS, MAX_HALF_UNITS, NUM_PAIRS,
                         PRODUCT_EXP_OFFSET, Q_BITS, Q_SHIFT_BASE, SIGNIFICAND_BITS)

__all__ = ["STAGE1_RULES", "QuantizerModel", "quantizer_model", "quantizer_fields",
           "evaluate_fields", "model_exponent", "model_q",
           "model_pair", "model_stage2", "model_index", "max_chain", "decode_model", "DotModel",
           "dot_block_model", "fp32_model", "FloatModel", "float_round_model", "block_value_model",
           "float_add_model", "widen_model"]

#: SPEC 4.2 [revised]: ``round`` (default) and ``trunc`` (variant ``two_stage_trunc``).
STAGE1_RULES = ("round", "trunc")
FP32_BIAS = 127
FP32_MAN_BITS = 23


def max_chain(m: Module, values, width: int, name: str) -> Signal:
    """max(values), a linear chain of compare-and-select."""
    cur = Const(0, width)
    for j, v in enumerate(values):
        nxt = Signal(width, name=f"{name}_{j}")
        m.d.comb += nxt.eq(Mux(v > cur, v, cur))
        cur = nxt
    return cur


class QuantizerModel(NamedTuple):
    exp: Signal          # SPEC 3: E
    invalid: Signal      # SPEC 1
    q: list              # SPEC 4.1: q_k
    qmax: Signal
    pair: Signal         # SPEC 4.2
    count_a: Signal      # SPEC 4.3: counts of the chosen pair
    count_b: Signal
    dialect: Signal
    codes: list          # SPEC 4.4: code_k = s_k << 3 | idx_k


def model_exponent(m: Module, elements):
    """SPEC 1, 3: ``E = max(ex_k)`` over normal elements (subnormal and non-finite count as 0),
    ``invalid`` = some ``ex_k == 31``."""
    ex = [x[FP16_MAN_BITS:15] for x in elements]
    normal = [(e != 0) & (e != EXP_FIELD_NONFINITE) for e in ex]
    E = max_chain(m, [Mux(n, e, 0) for n, e in zip(normal, ex)], 5, "m_E")
    invalid = Signal(name="m_invalid")
    m.d.comb += invalid.eq(Cat(*[e == EXP_FIELD_NONFINITE for e in ex]).any())
    return E, invalid


def model_q(m: Module, elements, E):
    """SPEC 4.1: ``q_k = M_k >> (6 + E - ex_k)``, 0 for a shift of 11 or more and for elements
    that are not normal."""
    q = []
    for k, x in enumerate(elements):
        ex, man = x[FP16_MAN_BITS:15], x[:FP16_MAN_BITS]
        normal = (ex != 0) & (ex != EXP_FIELD_NONFINITE)
        M = Signal(SIGNIFICAND_BITS, name=f"m_M{k}")
        shift = Signal(7, name=f"m_shift{k}")
        qk = Signal(Q_BITS, name=f"m_q{k}")
        m.d.comb += [
            M.eq(Cat(man, Const(1, 1))),
            shift.eq(Q_SHIFT_BASE + E - ex),
            qk.eq(Mux(normal & (shift < SIGNIFICAND_BITS), M >> shift, 0)),
        ]
        q.append(qk)
    return q


def model_pair(m: Module, qmax, rule: str):
    """SPEC 4.2 [revised]: ``p = max(0, 15 - ((qmax + 1) >> 1))`` (``round``) or
    ``15 - (qmax >> 1)`` (``trunc``)."""
    if rule not in STAGE1_RULES:
        raise ValueError(f"rule must be one of {STAGE1_RULES}, not {rule!r}")
    t = Signal(signed(8), name="m_pair_t")
    if rule == "round":
        m.d.comb += t.eq(MAX_HALF_UNITS - ((qmax + 1) >> 1))
    else:
        m.d.comb += t.eq(MAX_HALF_UNITS - (qmax >> 1))
    pair = Signal(3, name="m_pair")
    m.d.comb += pair.eq(Mux(t < 0, 0, t))
    return pair


def model_stage2(m: Module, q, pair):
    """SPEC 4.3: count every dialect's beneficial range, take the pair's two counts, ties to A.
    Returns ``(count_a, count_b, dialect)``. Each count is added in halves
    (:func:`pairwise_sum`), which keeps the comparison with a counter tree structural."""
    cbits = len(q).bit_length()
    counts = []
    for d in range(2 * NUM_PAIRS):
        lo, hi = beneficial_range(d)
        c = Signal(cbits, name=f"m_count{d}")
        m.d.comb += c.eq(pairwise_sum(m, [(qk >= lo) & (qk < hi) for qk in q], f"m_count{d}_",
                                      cbits + 1))
        counts.append(c)
    count_a = Signal(cbits, name="m_count_a")
    count_b = Signal(cbits, name="m_count_b")
    for p in range(NUM_PAIRS):
        with m.If(pair == p):
            m.d.comb += [count_a.eq(counts[2 * p]), count_b.eq(counts[2 * p + 1])]
    dialect = Signal(4, name="m_pair_dialect")
    m.d.comb += dialect.eq(Mux(count_a >= count_b, 2 * pair, 2 * pair + 1))
    return count_a, count_b, dialect


def model_index(m: Module, q, dialect):
    """SPEC 4.4: the nearest value of ``dialect`` to each ``q_k``, ties to the larger magnitude
    (value j is ``2 * FORMATBOOK[d][j]`` quarter-units)."""
    vals = [Signal(5, name=f"m_v{j}") for j in range(LEVELS)]
    for d, row in enumerate(FORMATBOOK_ROWS):
        with m.If(dialect == d):
            m.d.comb += [vals[j].eq(2 * row[j]) for j in range(LEVELS)]
    idx = []
    for k, qk in enumerate(q):
        best = Const(0, 3)
        best_dist = Const(31, 6)
        for j in range(LEVELS):
            dist = Signal(6, name=f"m_dist{k}_{j}")
            m.d.comb += dist.eq(Mux(qk >= vals[j], qk - vals[j], vals[j] - qk))
            take = dist <= best_dist          # "<=": a later (larger) value wins a tie
            nb = Signal(3, name=f"m_idx{k}_{j}")
            nd = Signal(6, name=f"m_bd{k}_{j}")
            m.d.comb += [nb.eq(Mux(take, j, best)), nd.eq(Mux(take, dist, best_dist))]
            best, best_dist = nb, nd
        idx.append(best)
    return idx


def quantizer_fields(B: int, rule: str = "round") -> dict:
    """SPEC 3 and 4 as a table of fields of one block, each a function of fields before it:
    ``{name: (dependencies, function(m, *dependencies))}``, starting from ``data`` (the block's B
    FP16 bit patterns as one value, element k at ``[16k +: 16]``). :func:`quantizer_model` evaluates
    the table in one go; the end-to-end proof evaluates the same table stage by stage, each field
    where the unit first holds it (:class:`formal.harness.ShadowPipelineHarness`)."""
    if rule not in STAGE1_RULES:
        raise ValueError(f"rule must be one of {STAGE1_RULES}, not {rule!r}")

    def elements(data):
        return [data[16 * k:16 * (k + 1)] for k in range(B)]

    def lanes(q):
        return [q[Q_BITS * k:Q_BITS * (k + 1)] for k in range(B)]

    def exponent(m, data):
        E, invalid = model_exponent(m, elements(data))
        return Cat(E, invalid)

    def stage2(m, q, pair):
        return Cat(*model_stage2(m, lanes(q), pair))

    def membership(side):
        """SPEC 4.3: which q_k lie in the beneficial range of dialect 2 pair + side."""
        def build(m, q, pair):
            bits = Signal(B, name=f"m_in_{'ab'[side]}")
            for p in range(NUM_PAIRS):
                lo, hi = beneficial_range(2 * p + side)
                with m.If(pair == p):
                    m.d.comb += bits.eq(Cat(*[(qk >= lo) & (qk < hi) for qk in lanes(q)]))
            return bits
        return build

    cbits = B.bit_length()

    def zero_block_dialect(m, E, pair_dialect):           # SPEC 3: the zero block is dialect 0
        dialect = Signal(4, name="m_dialect")
        m.d.comb += dialect.eq(Mux(E == 0, 0, pair_dialect))
        return dialect

    def codes(m, q, dialect, sign):
        idx = model_index(m, lanes(q), dialect)
        return Cat(*[Cat(idx[k], sign[k]) for k in range(B)])    # code_k = s_k << 3 | idx_k

    return {
        "exponent": (("data",), exponent),
        "E": (("exponent",), lambda m, x: x[:5]),
        "invalid": (("exponent",), lambda m, x: x[5]),
        "sign": (("data",), lambda m, data: Cat(*[x[15] for x in elements(data)])),
        "q": (("data", "E"), lambda m, data, E: Cat(*model_q(m, elements(data), E))),
        "qmax": (("q",), lambda m, q: max_chain(m, lanes(q), Q_BITS, "m_qmax")),
        "pair": (("qmax",), lambda m, qmax: model_pair(m, qmax, rule)),
        "in_a": (("q", "pair"), membership(0)),
        "in_b": (("q", "pair"), membership(1)),
        "stage2": (("q", "pair"), stage2),
        "count_a": (("stage2",), lambda m, x: x[:cbits]),
        "count_b": (("stage2",), lambda m, x: x[cbits:2 * cbits]),
        "pair_dialect": (("stage2",), lambda m, x: x[2 * cbits:]),
        "dialect": (("E", "pair_dialect"), zero_block_dialect),
        "codes": (("q", "dialect", "sign"), codes),
    }


def evaluate_fields(m: Module, table: dict, known: dict, wanted) -> dict:
    """``known`` extended with every field of ``table`` that ``wanted`` needs, each evaluated
    once, in table order, from the fields it depends on."""
    need, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name not in known and name not in need:
            need.add(name)
            todo += table[name][0]
    out = dict(known)
    for name, (deps, fn) in table.items():
        if name in need:
            out[name] = fn(m, *[out[d] for d in deps])
    return out


def quantizer_model(m: Module, elements, rule: str = "round") -> QuantizerModel:
    """SPEC 3 and 4 for one block of FP16 bit patterns ``elements`` (a list of 16-bit values):
    :func:`quantizer_fields` evaluated in one go."""
    B = len(elements)
    f = evaluate_fields(m, quantizer_fields(B, rule), {"data": Cat(*elements)},
                        ("E", "invalid", "q", "qmax", "pair", "count_a", "count_b", "dialect",
                         "codes"))
    q = [f["q"][Q_BITS * k:Q_BITS * (k + 1)] for k in range(B)]
    return QuantizerModel(f["E"], f["invalid"], q, f["qmax"], f["pair"], f["count_a"],
                          f["count_b"], f["dialect"], [f["codes"][4 * k:4 * (k + 1)] for k in range(B)])


def decode_model(m: Module, dialect, code, name: str = "m_dec"):
    """SPEC 6 decode of one code: ``(sign, h)`` with ``h = FORMATBOOK[dialect][idx]``."""
    h = Signal(4, name=f"{name}_h")
    with m.Switch(Cat(code[:3], dialect)):
        for d, row in enumerate(FORMATBOOK_ROWS):
            for j, v in enumerate(row):
                with m.Case(j | d << 3):
                    m.d.comb += h.eq(v)
    return code[3], h


class DotModel(NamedTuple):
    sum: Signal          # SPEC 6: S
    result: Signal       # FP32 bits of S * 2^(E_a + E_w - 36)
    products: list       # SPEC 6: P_k


def dot_block_model(m: Module, a_codes, a_dialect, a_exp, w_codes, w_dialect, w_exp) -> DotModel:
    """SPEC 6 for a dot product of one block: exact sum ``S``, then FP32 bits (exact, no rounding
    happens because ``|S| <= 225 B < 2^24``; a zero sum is +0.0)."""
    B = len(a_codes)
    terms = []
    for k in range(B):
        sa, ha = decode_model(m, a_dialect, a_codes[k], f"m_a{k}")
        sw, hw = decode_model(m, w_dialect, w_codes[k], f"m_w{k}")
        p = Signal(signed(10), name=f"m_p{k}")
        m.d.comb += p.eq(Mux(sa ^ sw, -(ha * hw), ha * hw))
        terms.append(p)
    S = Signal(signed(24), name="m_S")
    m.d.comb += S.eq(sum(terms))
    mag = Signal(24, name="m_mag")
    m.d.comb += mag.eq(Mux(S < 0, -S, S))
    msb = Const(0, 5)
    for b in range(24):                   # position of the leading one (last match wins)
        nxt = Signal(5, name=f"m_msb{b}")
        m.d.comb += nxt.eq(Mux(mag[b], b, msb))
        msb = nxt
    exp_field = Signal(9, name="m_fexp")
    m.d.comb += exp_field.eq(msb + a_exp + w_exp + FP32_BIAS - PRODUCT_EXP_OFFSET)
    lshift = Signal(5, name="m_lshift")
    frac = Signal(FP32_MAN_BITS, name="m_frac")
    m.d.comb += [lshift.eq(FP32_MAN_BITS - msb), frac.eq((mag << lshift)[:FP32_MAN_BITS])]
    result = Signal(32, name="m_result")
    m.d.comb += result.eq(Mux(mag == 0, 0, Cat(frac, exp_field[:8], S < 0)))
    return DotModel(S, result, terms)


def fp32_model(m: Module, value, frac_bits: int = PRODUCT_EXP_OFFSET):
    """FP32 bits of the signed integer ``value`` times ``2^-frac_bits``: round to nearest, ties to
    even (SPEC 6), zero gives +0.0; the exponent is assumed to stay in the normal range."""
    W = len(value)
    mag = Signal(W, name="m_fmag")
    m.d.comb += mag.eq(Mux(value[W - 1], -value, value))
    pbits = (W - 1).bit_length()
    msb = Const(0, pbits)
    for b in range(W):                        # leading one, last match wins
        nxt = Signal(pbits, name=f"m_fmsb{b}")
        m.d.comb += nxt.eq(Mux(mag[b], b, msb))
        msb = nxt
    # Significand with 24 bits kept: shift right by msb - 23 (or left by 23 - msb).
    right = Signal(pbits, name="m_fright")
    left = Signal(5, name="m_fleft")
    m.d.comb += [right.eq(Mux(msb > FP32_MAN_BITS, msb - FP32_MAN_BITS, 0)),
                 left.eq(Mux(msb > FP32_MAN_BITS, 0, FP32_MAN_BITS - msb))]
    kept = Signal(FP32_MAN_BITS + 1, name="m_fkept")
    rem = Signal(W, name="m_frem")
    half = Signal(W + 1, name="m_fhalf")
    right1 = Signal(pbits, name="m_fright1")
    m.d.comb += [
        right1.eq(right - 1),
        kept.eq(Mux(right != 0, mag >> right, mag << left)),
        rem.eq(mag & ((Const(1, W + 1) << right) - 1)),
        half.eq(Mux(right != 0, Const(1, W + 1) << right1, 0)),
    ]
    round_up = (right != 0) & ((rem > half) | ((rem == half) & kept[0]))
    exp_field = Signal(9, name="m_fexp")
    m.d.comb += exp_field.eq(msb + FP32_BIAS - frac_bits)
    body = Signal(31, name="m_fbody")
    m.d.comb += body.eq(Cat(kept[:FP32_MAN_BITS], exp_field[:8]) + round_up)
    result = Signal(32, name="m_fresult")
    m.d.comb += result.eq(Mux(mag == 0, 0, Cat(body, value[W - 1])))
    return result


def pairwise_sum(m: Module, values, name: str, width: int = 24):
    """The exact sum of signed ``values``, added in halves at ``width`` bits (wide enough that no
    node wraps). Integer addition is associative, so the order is the model's free choice; halves
    keep the solver's comparison with a hardware adder tree structural, and the sum of a run of
    lanes (a tree cut's partial sum) is a node of the whole sum."""
    values = list(values)
    if len(values) == 1:
        node = Signal(signed(width), name=name)
        m.d.comb += node.eq(values[0])
        return node
    half = 1 << ((len(values) - 1).bit_length() - 1)
    node = Signal(signed(width), name=name)
    m.d.comb += node.eq(pairwise_sum(m, values[:half], f"{name}l", width) +
                        pairwise_sum(m, values[half:], f"{name}r", width))
    return node


def dot_fields(B: int, group: int, sum_bits: int, block_bits: int, acc_bits: int) -> dict:
    """SPEC 6 for one beat of ``bd_dot`` and its group, as a table of fields
    (:func:`evaluate_fields`), starting from the input fields ``a_codes``, ``a_dialect``, ``a_exp``,
    ``w_codes``, ``w_dialect``, ``w_exp`` and ``last`` of one beat, and, for a group's total,
    from ``total``: decoded lanes ``{sign, h}`` (``a``, ``w``), ``exp = E_a + E_w``, the products
    ``P_k`` (9 bits signed each), the lanes' signs ``n_k = s_a xor s_w``, their count
    (``negatives``) and its runs of ``group`` lanes (``negative_counts``, ``bit_length(group)`` bits each), the sums of runs of ``group`` values ``P_k - n_k`` (``partial``, each
    ``sum_bits`` wide, enough for any 9-bit lanes), the block sum ``S`` as the sum of those plus
    the count (the same integer as the sum of the ``P_k``; the split is how the unit holds its
    lanes, a negative product as a ones' complement with its +1 counted apart), held in
    ``block_bits`` bits (SPEC 6: ``|S| <= 225 B`` fits, so for every input this is ``S`` itself;
    the width keeps the induction free of bounds on unreachable states), the
    term ``S * 2^exp`` in ``acc_bits``-bit two's complement (SPEC 6's width: the width proof
    shows that no group of ``max_blocks`` beats wraps), then from ``total``: ``sign``, ``mag``, ``zero`` and the FP32 ``result`` (:func:`fp32_model`),
    and the normalised significand the hardware rounds (``wide``, ``lz``, ``norm``) for a
    normaliser of ``P = max(32, 2^ceil(log2 acc_bits))`` bits."""
    from golden.spec import H_BITS
    P = max(32, 1 << (acc_bits - 1).bit_length())

    def lanes(v, width):
        return [v[width * k:width * (k + 1)] for k in range(B)]

    def decoded(side):
        def fn(m, codes, dialect):
            return Cat(*[Cat(h, s) for s, h in (decode_model(m, dialect, c, f"m_{side}{k}")
                                                for k, c in enumerate(lanes(codes, 4)))])
        return fn

    def products(m, a, w):
        out = []
        for k, (x, y) in enumerate(zip(lanes(a, 1 + H_BITS), lanes(w, 1 + H_BITS))):
            p = Signal(signed(9), name=f"m_p{k}")
            mag = x[:H_BITS] * y[:H_BITS]
            m.d.comb += p.eq(Mux(x[H_BITS] ^ y[H_BITS], -mag, mag))
            out.append(p)
        return Cat(*out)

    def signed_lanes(v):
        return [x.as_signed() for x in lanes(v, 9)]

    def negative(m, a, w):              # n_k: the lane's product is negated
        return Cat(*[x[H_BITS] ^ y[H_BITS] for x, y in zip(lanes(a, 1 + H_BITS),
                                                          lanes(w, 1 + H_BITS))])

    def lane_values(m, products, negative):      # P_k - n_k
        out = []
        for k, p in enumerate(signed_lanes(products)):
            v = Signal(signed(9), name=f"m_lane{k}")
            m.d.comb += v.eq(p - negative[k])
            out.append(v)
        return Cat(*out)

    def negative_counts(m, negative):     # the n_k counted in runs of `group` lanes
        bits = group.bit_length()
        return Cat(*[pairwise_sum(m, list(negative[g:g + group]), f"m_count{g}")[:bits]
                     for g in range(0, B, group)])

    def negatives(m, counts):             # their total
        bits = group.bit_length()
        return pairwise_sum(m, [counts[bits * g:bits * (g + 1)] for g in range(B // group)],
                            "m_negatives")

    def partial(m, lane_values):
        ps = signed_lanes(lane_values)
        return Cat(*[pairwise_sum(m, ps[g:g + group], f"m_sum{g}")[:sum_bits]
                     for g in range(0, B, group)])

    def block_sum(m, partial, negatives):     # S: the runs' sums, plus the n_k
        runs = [partial[sum_bits * g:sum_bits * (g + 1)].as_signed() for g in range(B // group)]
        S = Signal(signed(block_bits), name="m_S")
        m.d.comb += S.eq(pairwise_sum(m, runs + [negatives.as_signed()], "m_S_"))
        return S

    def term(m, S, exp):
        t = Signal(acc_bits, name="m_term")
        m.d.comb += t.eq(S.as_signed() << exp)
        return t

    def total_mag(m, total):
        mag = Signal(acc_bits, name="m_nmag")
        m.d.comb += mag.eq(Mux(total[-1], -total.as_signed(), total))
        return mag

    def leading(m, mag):                 # zeros above the leading one of mag in P bits
        pbits = P.bit_length()
        lz = Const(P - 1, pbits)
        for b in range(acc_bits):        # last match wins
            nxt = Signal(pbits, name=f"m_nlz{b}")
            m.d.comb += nxt.eq(Mux(mag[b], P - 1 - (P - acc_bits) - b, lz))
            lz = nxt
        return lz

    def norm(m, wide, lz):
        n = Signal(P, name="m_nnorm")
        m.d.comb += n.eq(wide << lz)
        return n

    return {
        "a": (("a_codes", "a_dialect"), decoded("a")),
        "w": (("w_codes", "w_dialect"), decoded("w")),
        "exp": (("a_exp", "w_exp"), lambda m, x, y: (x + y)[:6]),
        "products": (("a", "w"), products),
        "negative": (("a", "w"), negative),
        "lane_values": (("products", "negative"), lane_values),
        "negative_counts": (("negative",), negative_counts),
        # from the runs' counts, so that a shadow stage carrying those has nothing else to agree with
        "negatives": (("negative_counts",), negatives),
        "partial": (("lane_values",), partial),
        "sum": (("partial", "negatives"), block_sum),
        "term": (("sum", "exp"), term),
        "sign": (("total",), lambda m, t: t[-1]),
        "zero": (("total",), lambda m, t: t == 0),
        "mag": (("total",), total_mag),
        "wide": (("mag",), lambda m, mag: Cat(Const(0, P - acc_bits), mag)),
        "lz": (("mag",), leading),
        "norm": (("wide", "lz"), norm),
        "result": (("total",), lambda m, t: fp32_model(m, t.as_signed())),
    }


# --- SPEC 6.1: rounding to a binary format, and IEEE addition ------------------------------------

class FloatModel(NamedTuple):
    bits: Signal         # the IEEE bits (a NaN as the format's positive quiet NaN)
    nan: Signal          # the result is a NaN (SPEC 6.1 fixes no FP16 NaN payload)


def _msb_chain(m: Module, mag, name: str):
    """Position of the leading one of ``mag`` (0 for zero), a chain in which the last match wins."""
    bits = max(1, (len(mag) - 1).bit_length())
    msb = Const(0, bits)
    for b in range(len(mag)):
        nxt = Signal(bits, name=f"{name}{b}")
        m.d.comb += nxt.eq(Mux(mag[b], b, msb))
        msb = nxt
    return msb


def float_round_model(m: Module, sign, mag, scale, exp_bits: int, man_bits: int,
                      name: str = "m_rnd") -> Signal:
    """IEEE bits of ``(-1)^sign * mag * 2^scale`` (``mag`` unsigned, ``scale`` a signed value or an
    int) in the binary format of ``exp_bits`` and ``man_bits``: round to nearest, ties to even,
    subnormals kept, a magnitude that rounds past the largest finite value gives +-Inf, a value
    that rounds to nothing (or ``mag = 0``) a zero of sign ``sign`` (SPEC 6.1, IEEE 754).

    Written from the definition: the result's quantum (its last place) is ``2^q`` with
    ``q = max(top, e_min) - man_bits``, ``top`` the exponent of the leading one of the exact value;
    the exact value is divided by the quantum (``r = q - scale`` places dropped, or ``-r`` zeros
    appended), rounded on the remainder against half a quantum, and a carry to ``2^(man_bits + 1)``
    moves the quantum one place up; the significand's leading bit then says normal or subnormal."""
    E, M = exp_bits, man_bits
    bias = (1 << (E - 1)) - 1
    e_min = 1 - bias
    W = len(mag)
    msb = _msb_chain(m, mag, f"{name}_msb")
    wide = signed(max(W, 1 << E, 64).bit_length() + 3)
    top = Signal(wide, name=f"{name}_top")
    r = Signal(wide, name=f"{name}_r")
    m.d.comb += [top.eq(msb + scale),
                 r.eq(Mux(top > e_min, top, e_min) - M - scale)]
    right = Signal(range(W + 1), name=f"{name}_right")      # r > 0: places dropped
    left = Signal(range(M + 1), name=f"{name}_left")        # r < 0: at most man_bits zeros appended
    m.d.comb += [right.eq(Mux(r > W, W, Mux(r > 0, r, 0))),
                 left.eq(Mux(r < 0, -r, 0))]
    kept = Signal(M + 1, name=f"{name}_kept")
    rem = Signal(W, name=f"{name}_rem")
    half = Signal(W + 1, name=f"{name}_half")
    right1 = Signal(range(W + 1), name=f"{name}_right1")
    m.d.comb += [
        right1.eq(right - 1),
        kept.eq(Mux(r > 0, mag >> right, mag << left)),
        rem.eq(mag & ((Const(1, W + 1) << right) - 1)),
        half.eq(Mux(right != 0, Const(1, W + 1) << right1, 0)),
    ]
    # r > W: less than half a quantum (right stops at W, where mag >> W is 0 already)
    round_up = Signal(name=f"{name}_up")
    m.d.comb += round_up.eq((r <= W) & (right != 0) & ((rem > half) | ((rem == half) & kept[0])))
    rounded = Signal(M + 2, name=f"{name}_rounded")
    m.d.comb += rounded.eq(kept + round_up)
    carry = rounded[M + 1]                                   # rounded up to 2^(man_bits + 1)
    sig = Signal(M + 1, name=f"{name}_sig")
    q = Signal(wide, name=f"{name}_q")                       # exponent of the quantum
    m.d.comb += [sig.eq(Mux(carry, rounded >> 1, rounded)), q.eq(scale + r + carry)]
    biased = Signal(wide, name=f"{name}_biased")             # exponent field of a normal result
    m.d.comb += biased.eq(q + M + bias)
    normal = sig[M]
    inf = Signal(name=f"{name}_inf")
    m.d.comb += inf.eq(normal & (biased >= (1 << E) - 1))
    field = Signal(E, name=f"{name}_field")
    m.d.comb += field.eq(Mux(normal, biased[:E], 0))
    bits = Signal(1 + E + M, name=name)
    m.d.comb += bits.eq(Mux(inf, Cat(Const(0, M), Const((1 << E) - 1, E), sign),
                            Cat(sig[:M], field, sign)))
    return bits


def block_value_model(m: Module, S, exp, exp_bits: int, man_bits: int, name: str = "m_bv"):
    """SPEC 6.1 ``fl(V_j)``: the block value ``S * 2^(exp - 36)`` (``S`` signed, ``exp = E_a + E_w``)
    rounded to the format; ``S = 0`` gives +0.0."""
    W = len(S)
    mag = Signal(W, name=f"{name}_mag")
    m.d.comb += mag.eq(Mux(S[W - 1], -S, S))
    scale = Signal(signed(len(exp) + 2), name=f"{name}_scale")
    m.d.comb += scale.eq(exp - PRODUCT_EXP_OFFSET)
    return float_round_model(m, S[W - 1], mag, scale, exp_bits, man_bits, name)


def float_add_model(m: Module, a, b, exp_bits: int, man_bits: int, name: str = "m_add",
                    exp_range: tuple | None = None) -> FloatModel:
    """IEEE ``a + b`` of two values of the binary format (``exp_bits``, ``man_bits``), round to
    nearest even (SPEC 6.1's ``fl``): both operands as exact integers in units of the last place of
    the one with the smaller exponent (the other's significand shifted left by the distance),
    added exactly, and the sum rounded once (:func:`float_round_model`). An exact zero sum is +0.0
    unless both operands are -0.0; a NaN operand or ``Inf + (-Inf)`` gives NaN; an infinite
    operand gives that infinity. ``exp_range = (lo, hi)``: every nonzero operand's exponent field
    is in ``lo ... hi`` (the distance is at most ``hi - lo``, which keeps the exact sum narrow)."""
    E, M = exp_bits, man_bits
    bias = (1 << (E - 1)) - 1
    all_ones = (1 << E) - 1
    lo, hi = exp_range or (1, all_ones)
    width = M + 1 + (hi - lo) + 2                            # |a| + |b| < 2^(width - 1)

    def operand(x, tag):
        field, man, sign = x[M:M + E], x[:M], x[E + M]
        sig = Signal(M + 1, name=f"{name}_{tag}_sig")
        exp = Signal(E, name=f"{name}_{tag}_exp")            # subnormals and zero: exponent 1
        m.d.comb += [sig.eq(Cat(man, field != 0)), exp.eq(Mux(field == 0, 1, field))]
        return dict(sign=sign, sig=sig, exp=exp, inf=(field == all_ones) & (man == 0),
                    nan=(field == all_ones) & (man != 0))

    x, y = operand(a, "a"), operand(b, "b")
    low = Signal(E, name=f"{name}_low")                      # the smaller exponent
    m.d.comb += low.eq(Mux(x["exp"] < y["exp"], x["exp"], y["exp"]))
    for v, tag in ((x, "a"), (y, "b")):
        shift = Signal(E, name=f"{name}_{tag}_shift")
        value = Signal(signed(width), name=f"{name}_{tag}_value")
        m.d.comb += [shift.eq(v["exp"] - low),
                     value.eq(Mux(v["sign"], -(v["sig"] << shift), v["sig"] << shift))]
        v["value"] = value
    total = Signal(signed(width), name=f"{name}_sum")
    m.d.comb += total.eq(x["value"] + y["value"])
    mag = Signal(width, name=f"{name}_mag")
    m.d.comb += mag.eq(Mux(total < 0, -total, total))
    scale = Signal(signed(E + 2), name=f"{name}_scale")     # the unit: the last place at `low`
    m.d.comb += scale.eq(low - bias - M)
    rounded = float_round_model(m, total < 0, mag, scale, E, M, f"{name}_round")
    nan = Signal(name=f"{name}_nan")
    m.d.comb += nan.eq(x["nan"] | y["nan"] | (x["inf"] & y["inf"] & (x["sign"] != y["sign"])))
    infinity = Const(all_ones << M, E + M)
    bits = Signal(1 + E + M, name=f"{name}_bits")
    with m.If(nan):
        m.d.comb += bits.eq(Cat(Const(1 << (M - 1), M), Const(all_ones, E), 0))
    with m.Elif(x["inf"]):
        m.d.comb += bits.eq(Cat(infinity, x["sign"]))
    with m.Elif(y["inf"]):
        m.d.comb += bits.eq(Cat(infinity, y["sign"]))
    with m.Elif(total == 0):
        m.d.comb += bits.eq(Cat(Const(0, E + M), x["sign"] & y["sign"]))
    with m.Else():
        m.d.comb += bits.eq(rounded)
    return FloatModel(bits, nan)


def widen_model(m: Module, x, exp_bits: int, man_bits: int, to_exp_bits: int, to_man_bits: int,
                name: str = "m_widen") -> Signal:
    """The bits of a wider binary format equal to the value ``x`` of a narrower one (SPEC 6.1:
    the FP16 result converted to FP32, exact), every NaN the positive quiet NaN of the wider
    format, through :func:`float_round_model` (nothing is rounded)."""
    E, M = exp_bits, man_bits
    bias = (1 << (E - 1)) - 1
    field, man, sign = x[M:M + E], x[:M], x[E + M]
    sig = Signal(M + 1, name=f"{name}_sig")
    scale = Signal(signed(E + 2), name=f"{name}_scale")
    m.d.comb += [sig.eq(Cat(man, field != 0)), scale.eq(Mux(field == 0, 1, field) - bias - M)]
    finite = float_round_model(m, sign, sig, scale, to_exp_bits, to_man_bits, name)
    top = (1 << to_exp_bits) - 1
    out = Signal(1 + to_exp_bits + to_man_bits, name=f"{name}_bits")
    m.d.comb += out.eq(Mux(field == (1 << E) - 1,
                           Mux(man != 0, Cat(Const(1 << (to_man_bits - 1), to_man_bits), Const(top, to_exp_bits), 0),
                               Cat(Const(0, to_man_bits), Const(top, to_exp_bits), sign)),
                           finite))
    return out
