"""The proof jobs: which harness, around which unit, at which block size, how deep.

The units come from the registry :data:`bd_hw.units.UNITS` (name, kind, builder and parameters):
every unit is built with its registered parameters, so the quantizer is proved once per stage-1
rule (SPEC 4.2 [revised]: ``bd_quantizer`` rounds, ``bd_quantizer_trunc`` truncates) and the plain
model is told the same rule.
"""
from __future__ import annotations

from functools import partial

from amaranth.hdl import Cat, Fragment, Module, Mux, Signal, signed

from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bd_hw.dot import ExactAccumulator
from bd_hw.float_add import FloatAccumulator
from bd_hw import quantizer as hwq
from bd_hw.units import UNITS, Unit
from golden.spec import (DIALECT_BITS, EXP_BITS, EXP_MAX, FP16_BITS, MAX_EXP_SUM, MAX_PRODUCT,
                         Q_BITS)

from .harness import (AccumulatorHarness, AccumulatorInvariantHarness, AxisProtocolHarness,
                      CombinationalHarness, DotShadowHarness, FirstBeatHarness,
                      ShadowPipelineHarness, SignalFinder, StreamProtocolHarness, pipeline_stages,
                      skid_bank)
from .models import (block_value_model, decode_model, dot_block_model, dot_fields, float_add_model,
                     fp32_model, max_chain, widen_model,
                     model_exponent, model_index, model_pair, model_q, model_stage2, quantizer_fields,
                     quantizer_model)
from .runner import Job

__all__ = ["jobs", "bug_jobs", "QUICK_B", "PROVED_BLOCK_SIZES", "stage1_rule"]

QUICK_B = 16
PROVED_BLOCK_SIZES = (16, 32)    # proved by default (golden.spec.BLOCK_SIZES holds every block size)
#: Seconds allowed to one end-to-end equivalence run (the stage proofs are the complete ones);
#: a run that times out is reported with the depth it reached.
EQUIVALENCE_TIMEOUT = {16: 300, 32: 150, 64: 150}


def stage1_rule(unit: Unit) -> str:
    """The SPEC 4.2 rule a quantizer unit is built with (the generator's default is ``round``)."""
    return unit.params.get("stage1", "round")


# --- induction lemmas: the unit's pending results, from its own valid registers -------------------

def quantizer_pending(find, params):
    """Blocks inside ``BDQuantizer``: one per valid stage, and the skid buffer's spare bank (the
    ``"ready"`` cut)."""
    pending = sum(find(f"s{n}_valid") for n in range(params.latency))
    if params.skid:
        pending = pending + find(f"s{params.skid_stage}_spare_valid")
    return pending


def dot_pending(find, dut):
    """Results owed inside ``bd_dot``: ``last`` beats in the front stages (named as
    :meth:`bd_hw.dot.BDDot.elaborate` registers them: ``s1`` and ``s3``, plus ``s0`` and ``s2`` when
    the ``decode`` and ``tree`` cuts are taken), the accumulator's term stage, the finished total,
    and the normaliser's stages."""
    names = [name for name, taken in (("s0", "decode" in dut.cuts), ("s1", True),
                                      ("s2", "tree" in dut.cuts), ("s3", True)) if taken]
    pending = sum(find(f"s{n}_valid") & find(f"{name}_last") for n, name in enumerate(names))
    if "ready" in dut.cuts:                 # the "ready" cut: the block-sum stage's spare bank
        pending = pending + (find(f"s{len(names) - 1}_spare_valid") & find(f"{names[-1]}_spare_last"))
    pending = (pending + (find("t_valid", "accumulator") & find("t_last", "accumulator"))
               + find("o_valid", "accumulator"))
    if dut.accumulate != "exact":
        # SPEC 6.1: the accumulator's conversion stage "c" too; "fp16" widens in one stage "w0" of
        # the top.
        pending = pending + (find("c_valid", "accumulator") & find("c_last", "accumulator"))
        back_stages = dut.latency - dut.front_stages - FloatAccumulator.LATENCY
        return pending + sum(find(f"w{n}_valid") for n in range(back_stages))
    back_stages = dut.latency - dut.front_stages - ExactAccumulator.LATENCY
    return pending + sum(find(f"s{n}_valid", "norm") for n in range(back_stages))


# --- harness builders ---------------------------------------------------------------------------

def quantizer_protocol(unit, B):
    dut = unit.build(B)
    return StreamProtocolHarness(dut, capacity=dut.capacity,
                                 lemma=partial(quantizer_pending, params=dut.params))


def dot_protocol(unit, B):
    dut = unit.build(B)
    return StreamProtocolHarness(dut, capacity=dut.capacity, lemma=partial(dot_pending, dut=dut),
                                 produces=lambda p: p.last)


def _quantizer_model(rule):
    def build(m, captured, out):
        B = len(captured.data)
        return quantizer_model(m, [captured.data[k] for k in range(B)], rule)
    return build


def quantizer_checks(B):
    checks = {
        "exp": lambda o, q: (o.exp, q.exp),
        "invalid": lambda o, q: (o.invalid, q.invalid),
        "dialect": lambda o, q: (o.dialect, q.dialect),
    }
    for k in range(B):
        checks[f"code{k}"] = lambda o, q, k=k: (o.codes[k], q.codes[k])
    return checks


def quantizer_covers(B):
    def any_flushed(c):
        return Cat(*[(c.data[k][10:15] == 0) & c.data[k][:10].any() for k in range(B)]).any()
    return {
        "count_tie": lambda o, q, c: (q.exp != 0) & (q.count_a == q.count_b) & (q.count_a > 0),
        "qmax_31": lambda o, q, c: q.qmax == 31,
        "flushed_subnormal": lambda o, q, c: (q.exp != 0) & any_flushed(c),
        "invalid_block": lambda o, q, c: o.invalid,
        "zero_block": lambda o, q, c: (o.exp == 0) & o.codes.as_value().any(),
    }


def quantizer_equivalence(unit, B, covers=False):
    """The first beat after reset against the plain model (``covers``: the cover traces only)."""
    dut = unit.build(B)
    return FirstBeatHarness(dut, model=_quantizer_model(stage1_rule(unit)),
                            checks={} if covers else quantizer_checks(B),
                            covers=quantizer_covers(B) if covers else None)


def quantizer_stage_names(params) -> list[str]:
    """The stage names of a quantizer with parameters ``params`` (``QuantizerParams.stages``:
    ``bd_hw.pipeline`` names a stage's registers ``<stage>_<key>``)."""
    names = list(params.stages)
    if len(names) != params.latency:
        raise AssertionError(f"{len(names)} stages named for a latency of {params.latency}")
    return names


#: The model field each kind of ``BDQuantizer`` register holds (``<stage>_<key>``); ``partial``
#: (the maxima of runs of lanes at the "exp8", "exp", "qmax8" and "qmax" cuts) is
#: checked through its maximum, the only use the unit makes of it; ``out`` is the output, checked
#: at the port.
QUANTIZER_REGISTER_FIELDS = {"data": "data", "sign": "sign", "q": "q", "exp": "E",
                             "invalid": "invalid", "select": "pair", "pair": "pair",
                             "count_a": "count_a", "count_b": "count_b", "dialect": "dialect",
                             "in_a": "in_a", "in_b": "in_b", "qmax": "qmax"}


def quantizer_stage_registers(find, stage: str, spare: bool = False) -> dict:
    """``{key: register}`` of the unit's stage ``stage`` (its pipeline control aside), or with
    ``spare`` of its skid buffer's spare bank (``<stage>_spare_<key>``)."""
    prefix = f"{stage}_spare_" if spare else f"{stage}_"
    regs = {name[len(prefix):]: sig for name, sig in find.registers().items()
            if name.startswith(prefix) and name[len(prefix):] not in ("valid", "load")
            and (spare or not name[len(prefix):].startswith("spare_"))}
    if not regs:
        raise KeyError(f"no registers of stage {stage!r} found in the quantizer")
    return regs


def _partial_field(stage: str) -> str:
    """The model field a cut inside a maximum tree holds partial maxima of: the shared exponent's
    cuts (``bd_hw.quantizer.EXP_CUTS``) E, the others (inside the q tree) qmax."""
    return "E" if stage in dict(hwq.EXP_CUTS) else "qmax"


def quantizer_stage_fields(stage: str, keys) -> set:
    fields = set()
    for key in keys:
        if key == "partial":
            fields.add(_partial_field(stage))
        elif key != "out":
            fields.add(QUANTIZER_REGISTER_FIELDS[key])
    return fields


def quantizer_end_to_end(unit, B, part=None):
    """The whole quantizer against the plain model :func:`formal.models.quantizer_fields`, for
    every input sequence, back-pressure and reset (:class:`ShadowPipelineHarness`)."""
    dut = unit.build(B)
    names = quantizer_stage_names(dut.params)
    # the unit's registers, by stage, from a throw-away elaboration (the keys only)
    probe = SignalFinder(Fragment.get(unit.build(B), None))
    keys = [sorted(quantizer_stage_registers(probe, stage)) for stage in names]

    def lemmas(find, f, n, spare=False):
        stage = f"{names[n]}_spare" if spare else names[n]
        out = {}
        for key, reg in sorted(quantizer_stage_registers(find, names[n], spare).items()):
            if key == "out":
                continue
            if key == "partial":
                want = f[_partial_field(names[n])]
                width = len(want)
                lanes = [reg[k * width:(k + 1) * width] for k in range(len(reg) // width)]
                out[f"{stage}_{key}"] = (Cat(*[lane <= want for lane in lanes]).all() &
                                         Cat(*[lane == want for lane in lanes]).any())
            else:
                out[f"{stage}_{key}"] = reg == f[QUANTIZER_REGISTER_FIELDS[key]]
        return out

    return ShadowPipelineHarness(
        dut, stages=dut.latency, fields=quantizer_fields(B, stage1_rule(unit)),
        start=lambda p: {"data": p.data.as_value()},
        needs=lambda n: quantizer_stage_fields(names[n], keys[n]),
        outputs=("E", "invalid", "dialect", "codes"), lemmas=lemmas,
        # the shifter and stage 1 rely on E being the block's maximum exponent (q_k < 32, and
        # qmax >= 16 for E >= 1), the popcounts after the "count" cut on the membership bits
        # and the comparison after the "select" cut on the counts being those of q: where a
        # stage carries what they come from, they agree with it
        consistent=("E", "invalid", "q", "qmax", "in_a", "in_b", "count_a", "count_b"), part=part,
        # the range counter as its stage job proves it, for every input
        proved={hwq.RangeCounter: ranges_as_proved},
        valid=lambda find, n: find(f"s{n}_valid"), skid=dut.params.skid_stage,
        checks={"exp": lambda o, f: (o.exp, f["E"]), "invalid": lambda o, f: (o.invalid, f["invalid"]),
                "dialect": lambda o, f: (o.dialect, f["dialect"]),
                "codes": lambda o, f: (o.codes.as_value(), f["codes"])})


def _dot_model(m, c, out):
    B = len(c.a_codes)
    return dot_block_model(m, [c.a_codes[k] for k in range(B)], c.a_dialect, c.a_exp,
                           [c.w_codes[k] for k in range(B)], c.w_dialect, c.w_exp)


def dot_equivalence(unit, B, covers=False):
    dut = unit.build(B)

    def contract(p):          # SPEC 3: shared exponents are at most 30
        return (p.a_exp <= EXP_MAX) & (p.w_exp <= EXP_MAX)

    def nonzero_term(c):
        return Cat(*[c.a_codes[k][:3].any() & c.w_codes[k][:3].any() for k in range(B)]).any()

    cov = {
        "zero_sum_to_plus_zero": lambda o, d, c: (d.sum == 0) & nonzero_term(c) & (o.result == 0),
        "negative_sum": lambda o, d, c: d.sum < 0,
        "largest_exponents": lambda o, d, c: (c.a_exp == EXP_MAX) & (c.w_exp == EXP_MAX) & (d.sum != 0),
    }
    return FirstBeatHarness(dut, model=_dot_model,
                            checks={} if covers else {"result": lambda o, d: (o.result, d.result)},
                            covers=cov if covers else None,
                            assume_first=lambda p: p.last, assume_always=contract)


def decoder_as_proved(m, dec):
    """What ``bd_decoder``'s equivalence job proves of a :class:`BDDecoder` for every input."""
    lanes = [decode_model(m, dec.dialect, dec.codes[k], f"m_dec{k}") for k in range(dec.B)]
    return dec.values.as_value() == Cat(*[Cat(h, s) for s, h in lanes])


def ranges_as_proved(m, rc):
    """What the ``stage_ranges`` job proves of a :class:`RangeCounter` for every input."""
    count_a, count_b, dialect = model_stage2(m, _lanes(rc.q, rc.B), rc.pair)
    return (rc.count_a == count_a) & (rc.count_b == count_b) & (rc.dialect == dialect)


def dot_end_to_end(unit, B, part=None):
    """The whole of ``bd_dot`` against the plain model :func:`formal.models.dot_fields`, for every
    input sequence, back-pressure and reset (:class:`DotShadowHarness`); its decoders as
    ``bd_decoder``'s equivalence proves them."""
    from bd_hw.decoder import BDDecoder
    from bd_hw.dot import block_sum_bits
    dut = unit.build(B)
    group = min(dut.TREE_GROUP, B) if "tree" in dut.cuts else B
    fields = dot_fields(B, group, block_sum_bits(group), block_sum_bits(B), dut.acc_bits)
    return DotShadowHarness(dut, fields=fields,
                            part=part, proved={BDDecoder: decoder_as_proved})


def dot_part_names(unit, B) -> list[str]:
    """The stages of ``bd_dot`` in the order of :class:`DotShadowHarness`'s parts: the front
    stages, ``t`` and ``o`` (the accumulator), ``norm_<stage>`` (the normaliser)."""
    find = SignalFinder(Fragment.get(unit.build(B), None))
    return ([name for name, _, _ in pipeline_stages(find)] + ["t", "o"] +
            [f"norm_{name}" for name, _, _ in pipeline_stages(find, "norm")])


def decoder_equivalence(unit, B):
    dut = unit.build(B)

    def model(m, h):
        return [decode_model(m, h.dialect, h.codes[k], f"m_dec{k}") for k in range(B)]

    checks = {f"lane{k}": (lambda d, mod, k=k: (d.values[k], Cat(mod[k][1], mod[k][0])))
              for k in range(B)}
    return CombinationalHarness(dut, {"dialect": DIALECT_BITS,
                                      "codes": dut.codes.shape()},
                                model=model, checks=checks)


# --- the quantizer stage by stage (combinational: one solver step covers every input) ----------

class QuantizerFront(wiring.Component):
    """The quantizer's first two stages without their registers: :class:`ExponentMax` feeding
    :class:`SignificandShifter`, as ``BDQuantizer`` wires them."""

    def __init__(self, B):
        self.B = B
        super().__init__({"data": In(data.ArrayLayout(FP16_BITS, B)), "exp": Out(EXP_BITS),
                          "invalid": Out(1), "q": Out(data.ArrayLayout(Q_BITS, B))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.exp_max = em = hwq.ExponentMax(self.B)
        m.submodules.shifter = sh = hwq.SignificandShifter(self.B)
        m.d.comb += [em.data.eq(self.data), sh.data.eq(self.data), sh.exp.eq(em.exp),
                     self.exp.eq(em.exp), self.invalid.eq(em.invalid), self.q.eq(sh.q)]
        return m


def _lanes(v, B):
    return [v[k] for k in range(B)]


def stage_front(unit, B):
    """SPEC 3, 4.1: E, invalid and every q_k; and the premise stage 1 relies on (a block with
    E >= 1 has qmax in [16, 31], a zero block has every q = 0), asserted on the model."""
    dut = QuantizerFront(B)

    def model(m, h):
        elements = _lanes(h.data, B)
        E, invalid = model_exponent(m, elements)
        q = model_q(m, elements, E)
        return E, invalid, q, max_chain(m, q, Q_BITS, "m_qmax")

    checks = {"exp": lambda d, md: (d.exp, md[0]), "invalid": lambda d, md: (d.invalid, md[1]),
              "premise_qmax_range": lambda d, md: ((md[3] >= 16) | (md[3] == 0), 1),
              "premise_zero_block": lambda d, md: (md[3] == 0, md[0] == 0)}
    checks.update({f"q{k}": (lambda d, md, k=k: (d.q[k], md[2][k])) for k in range(B)})
    return CombinationalHarness(dut, {"data": data.ArrayLayout(FP16_BITS, B)}, model=model,
                                checks=checks)


def stage_pair(unit, B):
    """SPEC 4.2 with the unit's stage-1 rule, for every q vector the front can produce."""
    rule = stage1_rule(unit)
    dut = hwq.PairSelector(B, rule)

    def model(m, h):
        qmax = max_chain(m, _lanes(h.q, B), Q_BITS, "m_qmax")
        return qmax, model_pair(m, qmax, rule)

    return CombinationalHarness(
        dut, {"q": data.ArrayLayout(Q_BITS, B)}, model=model,
        assumes={"front_premise": lambda d, md: (md[0] >= 16) | (md[0] == 0)},
        checks={"qmax": lambda d, md: (d.qmax, md[0]), "pair": lambda d, md: (d.pair, md[1])})


def stage_ranges(unit, B):
    """SPEC 4.3: both counts and the dialect of the pair, for every q vector and pair."""
    dut = hwq.RangeCounter(B)

    def model(m, h):
        return model_stage2(m, _lanes(h.q, B), h.pair)

    return CombinationalHarness(
        dut, {"q": data.ArrayLayout(Q_BITS, B), "pair": 3}, model=model,
        checks={"count_a": lambda d, md: (d.count_a, md[0]),
                "count_b": lambda d, md: (d.count_b, md[1]),
                "dialect": lambda d, md: (d.dialect, md[2])})


def stage_index(unit, B):
    """SPEC 4.4: every element index, for every q vector and dialect."""
    dut = hwq.IndexMapper(B)

    def model(m, h):
        return model_index(m, _lanes(h.q, B), h.dialect)

    checks = {f"idx{k}": (lambda d, md, k=k: (d.idx[k], md[k])) for k in range(B)}
    return CombinationalHarness(dut, {"q": data.ArrayLayout(Q_BITS, B), "dialect": DIALECT_BITS},
                                model=model, checks=checks)


QUANTIZER_STAGES = {"front": stage_front, "pair": stage_pair, "ranges": stage_ranges,
                    "index": stage_index}


# --- SPEC 6.1: the float parts of the rounded modes ------------------------------------------------

def stage_conversion(unit, B):
    """SPEC 6.1: the block value ``V = S * 2^(E_a + E_w - 36)`` converted to the accumulator's
    format (:class:`bd_hw.float_add.BlockToFloat`), for every block sum of the unit and every 6-bit
    exponent sum: "fp32" exactly, against :func:`formal.models.fp32_model` of the integer
    ``S << exp``; "fp16" rounded (``fl16(V)``: nearest even, subnormals, overflow to Inf), against
    :func:`formal.models.block_value_model`."""
    from bd_hw.dot import block_sum_bits
    from bd_hw.float_add import EXP_SUM_BITS, FORMATS, BlockToFloat
    fmt = FORMATS[unit.params["accumulate"]]
    bits = block_sum_bits(B)
    dut = BlockToFloat(bits, fmt)

    def model(m, c):
        if fmt.name == "fp16":
            return block_value_model(m, c.sum, c.exp, fmt.exp_bits, fmt.man_bits)
        wide = Signal(signed(bits + (1 << EXP_SUM_BITS)), name="m_value")
        m.d.comb += wide.eq(c.sum << c.exp)
        return fp32_model(m, wide)
    check = "fp32_exact" if fmt.name == "fp32" else f"{fmt.name}_rounded"
    return CombinationalHarness(dut, {"sum": signed(bits), "exp": EXP_SUM_BITS}, model=model,
                                checks={check: lambda d, md: (d.value, md)})


#: SPEC 6.1 / bd_hw.float_add.FloatAccumulator: the values the FP32 loop meets are zero or normal
#: multiples of 2^-36 of at most 2^63, exponent fields 114 ... 190 (127 - 13 ... 127 + 63).
FP32_LOOP_FIELDS = (127 - 13, 127 + 63)
#: What the summary says is not proved of the rounded modes, and why.
FLOAT_NOT_PROVED = (
    "that the parts compose into SPEC 6.1's fold for all time. No shadow harness runs beside the "
    "float accumulator yet; between the parts it holds only registers of their values (the "
    "conversion's first half, the unpacked term with its exponent differences, the running sum, "
    "the total), and the adder step proof shows the differences and the running sum keep the form "
    "each step assumes, so what is left is register bookkeeping, checked by simulation against "
    "golden (`reports/sim`). The front stages (decode, multiply, block sum) are `bd_dot`'s "
    "generator, proved end to end there. Nor FP32's loop adder: the same proof (`stage_loop_adder` "
    "on the FP32 loop's domain, operands zero or normal with exponent fields 114 ... 190, the "
    "adder built without special cases) is not in `make formal`, because it does not close in "
    "time: the whole adder against a plain model ran 30 minutes without an answer, and split "
    "by exponent distance the near case (distances 0 and 1) ran 13 minutes on the loaded machine "
    "without an answer and then closed in 451 s on the idle one (all four properties; a run "
    "outside `make formal`), and the four far cases were not run in time. It is the same generator "
    "(`_add`) at other widths as the FP16 adder proved here, and its tests simulate it on 4 "
    "million pairs of its domain.")
#: The loop adder's proof, one job per range of exponent distances |a.exp - b.exp| (the whole
#: adder at once did not close in 15 minutes (FP16) or 30 (FP32)); the last range reaches the
#: largest distance of the format.
ADDER_CASES = {"near": (0, 1), "far2_3": (2, 3), "far4_7": (4, 7), "far8_15": (8, 15),
               "far16_up": (16, 255)}
#: The formats whose loop adder `make formal` proves (FP32's: see FLOAT_NOT_PROVED).
LOOP_ADDER_FORMATS = ("fp16",)


class LoopAdderStep(wiring.Component):
    """One step of :class:`bd_hw.float_add.FloatAccumulator`'s loop without its registers: the
    running sum ``a`` and the term ``b``, each in the form the loop holds (:func:`_unpack` of IEEE
    bits), added by the loop's :func:`_add` starting from their exponent differences, with the
    differences the next step starts from (the next term's exponent ``follow + carry``, its carry
    known late, as the loop's conversion delivers it). Outputs: the
    packed ``sum``; the next ``ahead``/``behind`` and what they must be (``want_*``, the
    subtractions), which matter for a ``finite`` result only (a NaN or infinite running sum stays
    one whatever the differences say); ``canonical``: the result is the unpacked form of its own bits (so the running
    sum the next step meets is again an operand of this proof; an infinite or NaN result only
    needs its flags and sign, which are all the adder reads of such an operand)."""

    def __init__(self, fmt, ieee: bool):
        self.fmt, self.ieee = fmt, ieee
        E = fmt.exp_bits
        super().__init__({"a": In(fmt.width), "b": In(fmt.width), "follow": In(E), "carry": In(1),
                          "sum": Out(fmt.width), "ahead": Out(E + 1), "behind": Out(E + 1),
                          "want_ahead": Out(E + 1), "want_behind": Out(E + 1),
                          "finite": Out(1), "canonical": Out(1)})

    def elaborate(self, platform):
        from bd_hw.float_add import LateExponent, _add, _exp_differences, _pack, _unpack
        m = Module()
        fmt = self.fmt
        a, b = _unpack(m, "a", fmt, self.a), _unpack(m, "b", fmt, self.b)
        result = _add(m, fmt, a, b, self.ieee, differences=_exp_differences(m, "start", fmt, a["exp"], b["exp"]),
                      follow=LateExponent(self.follow, self.carry))
        packed = _pack(m, "packed", fmt, result)
        again = _unpack(m, "again", fmt, packed)
        same = {k: again[k] == result[k] for k in ("sign", "exp", "sig")}
        finite = ~again["inf"] & ~again["nan"] & same["sign"] & same["exp"] & same["sig"]
        m.d.comb += [
            self.sum.eq(packed),
            self.ahead.eq(result["differences"][0]), self.behind.eq(result["differences"][1]),
            self.want_ahead.eq(result["exp"] - (self.follow + self.carry)),
            self.want_behind.eq((self.follow + self.carry) - result["exp"]),
            self.finite.eq(~result["nan"] & ~result["inf"]),
            self.canonical.eq(Mux(result["nan"], again["nan"],
                                  Mux(result["inf"], again["inf"] & same["sign"], finite))),
        ]
        return m


def stage_loop_adder(unit, B, case=None):
    """SPEC 6.1's ``fl(acc + V)``: the accumulator loop's adder step (:class:`LoopAdderStep`)
    against :func:`formal.models.float_add_model`. FP16: every pair of FP16 values (a NaN result
    may be any NaN: SPEC 6.1 fixes only the FP32 NaN it widens to). FP32: the loop's domain
    (:data:`FP32_LOOP_FIELDS`, the adder built without special cases). ``case``: a key of
    :data:`ADDER_CASES` (the operands' exponent distances), or None for all at once."""
    from bd_hw.float_add import FORMATS
    fmt = FORMATS[unit.params["accumulate"]]
    ieee = fmt.name == "fp16"
    E, M = fmt.exp_bits, fmt.man_bits
    dut = LoopAdderStep(fmt, ieee)

    def model(m, h):
        return float_add_model(m, h.a, h.b, E, M, exp_range=None if ieee else FP32_LOOP_FIELDS)

    def field(x):
        return x[M:M + E]

    def is_nan(x):
        return field(x).all() & x[:M].any()

    assumes = {}
    if not ieee:
        lo, hi = FP32_LOOP_FIELDS
        for side in ("a", "b"):
            assumes[f"{side}_in_domain"] = lambda d, md, side=side: (
                (getattr(d, side)[:E + M] == 0) |
                ((field(getattr(d, side)) >= lo) & (field(getattr(d, side)) <= hi)))
    if case is not None:
        low, high = ADDER_CASES[case]

        def distance_in_case(d, md):
            ea = Mux(field(d.a) == 0, 1, field(d.a))           # the unpacked exponents
            eb = Mux(field(d.b) == 0, 1, field(d.b))
            dist = Mux(ea >= eb, ea - eb, eb - ea)
            return (dist >= low) & (dist <= high)
        assumes["distance"] = distance_in_case
    checks = {
        f"{fmt.name}_sum": lambda d, md: ((d.sum == md.bits) | (md.nan & is_nan(d.sum)), 1),
        "next_ahead": lambda d, md: (~d.finite | (d.ahead == d.want_ahead), 1),
        "next_behind": lambda d, md: (~d.finite | (d.behind == d.want_behind), 1),
        "canonical": lambda d, md: (d.canonical, 1),
    }
    return CombinationalHarness(dut, {"a": fmt.width, "b": fmt.width, "follow": E, "carry": 1}, model=model,
                                checks=checks, assumes=assumes)


def stage_widen(unit, B):
    """SPEC 6.1 "fp16": the FP16 total converted to FP32 exactly, every NaN 0x7FC00000
    (:class:`bd_hw.float_add.FloatWiden`), for every FP16 value, against
    :func:`formal.models.widen_model`."""
    from bd_hw.float_add import FP16, FP32, FloatWiden
    return CombinationalHarness(
        FloatWiden(), {"half": FP16.width},
        model=lambda m, h: widen_model(m, h.half, FP16.exp_bits, FP16.man_bits, FP32.exp_bits,
                                       FP32.man_bits),
        checks={"fp32_exact": lambda d, md: (d.single, md)})


# --- the exact accumulator's width (SPEC 6) ---------------------------------------------------

#: Induction depth of the accumulator's width proof (every register has its lemma).
ACC_PROVE_DEPTH = 1
#: max_blocks of the accumulator's planted-bug run (short groups reach an overflow soon).
ACC_BUG_MAX_BLOCKS = 2
#: max_blocks of the cover traces of a whole group (a bounded run, so its depth grows with it).
ACC_COVER_MAX_BLOCKS = 4


def accumulator_width(unit, B, max_blocks=None):
    """SPEC 6's width for all time, at the unit's own ``max_blocks`` (256 by default)."""
    from bd_hw.dot import ExactAccumulator
    max_blocks = max_blocks or unit.parameters_at(B).max_blocks
    return AccumulatorInvariantHarness(ExactAccumulator(B, max_blocks), max_sum=MAX_PRODUCT * B,
                                       max_exp=MAX_EXP_SUM, max_blocks=max_blocks)


def accumulator_covers(unit, B, max_blocks=ACC_COVER_MAX_BLOCKS):
    from bd_hw.dot import ExactAccumulator
    return AccumulatorHarness(ExactAccumulator(B, max_blocks), max_sum=MAX_PRODUCT * B,
                              max_exp=MAX_EXP_SUM, max_blocks=max_blocks)


# --- bd_linear (SPEC 11): AXI4-Stream protocol on a small instance ----------------------------

#: The engine is proved with vectors of at most two blocks (its registered lane count and block
#: size): the protocol logic does not depend on max_blocks beyond counter and buffer sizes.
LINEAR_PARAMS = {"max_blocks": 2}
#: Induction depth of the engine's protocol proof, and the least bounded depth of its covers (a
#: vector loaded, then the engine filled to capacity: linear_cover_depth) and of its planted bug's
#: counterexample search.
LINEAR_PROVE_DEPTH = 12
LINEAR_COVER_DEPTH = 24
#: The covers run on the engines of at most this many lanes: the wider ones are the same generator
#: (their lanes run in lockstep, proved by k-induction), and their covers took 12-15 min each.
LINEAR_COVER_MAX_N = 4


def linear_units() -> list[Unit]:
    """The registry's ``bd_linear`` units (kind ``linear``), if the engine is registered."""
    return [u for u in UNITS.values() if u.kind == "linear"]


def _linear(unit: Unit, B: int):
    return unit.builder(B, **{**unit.params, **LINEAR_PARAMS})


def linear_cover_depth(unit: Unit, B: int) -> int:
    """Bounded depth of an engine's covers: its vector of LINEAR_PARAMS' blocks taken and loaded
    (the vector turnaround), then filled to capacity (the collector's slots, one group a clock),
    a step to spare; LINEAR_COVER_DEPTH at least."""
    p = unit.parameters_at(B)
    return max(LINEAR_COVER_DEPTH, LINEAR_PARAMS["max_blocks"] + p.vector_latency + p.capacity + 1)


def _lane(find, n: int):
    """``find`` inside dot unit ``n`` of the engine (paths relative to it, as dot_pending uses)."""
    return lambda name, path="": find(name, f"dot{n}" + (f".{path}" if path else ""))


def _dot_of(engine):
    """The parameters of the engine's dot units (their cut points and latency)."""
    return engine.params.dot


def _before_collector(find, dut):
    """Row groups between the weight input and the collector: a ``tlast`` beat in the read stage
    and lane 0's dot unit's pending results."""
    return find("a_valid") & find("a_last"), dot_pending(_lane(find, 0), _dot_of(dut))


def _in_collector(find):
    """Results inside the collector: its output register and its queue."""
    return find("main_valid", "collector") + find("level", "collector.queue")


def linear_pending(find, dut):
    """Row groups owed inside ``bd_linear``: those before the collector (lane 0 stands for every
    lane, which run in lockstep, see :func:`linear_invariants`) and the results in the collector
    (its output register and its queue)."""
    read, lane0 = _before_collector(find, dut)
    return read + lane0 + _in_collector(find)


def linear_invariants(find, dut):
    """What induction needs besides the occupancy: every lane's dot unit holds the same pending
    results as lane 0's (they take the same beats, and none is ever held), the collector's flag
    FIFO holds one entry per group still before the collector, its owed count (the credit) counts
    every pending group, and its queue is non-empty only behind a full output register. (Its
    ``room`` register, the credit's comparison, needs no lemma: it is right one clock after any
    state, and the proof's window is longer.)"""
    read, lane0 = _before_collector(find, dut)
    dot = _dot_of(dut)
    owed = find("owed", "collector")
    out = {f"lane{n}_in_lockstep": dot_pending(_lane(find, n), dot) == lane0 for n in range(1, dut.N)}
    out["flags_match_groups"] = find("level", "collector.flags") == read + lane0
    out["credit_counts_owed"] = owed == read + lane0 + _in_collector(find)
    out["queue_behind_output"] = ~find("level", "collector.queue").any() | find("main_valid", "collector")
    return out


def linear_protocol(unit: Unit, B: int):
    dut = _linear(unit, B)
    # Owed results: at most the collector's slots (the credit of the weight input).
    return AxisProtocolHarness(dut, capacity=dut.capacity,
                               lemma=partial(linear_pending, dut=dut),
                               invariants=partial(linear_invariants, dut=dut))


_AXIS_IN = ("w:s_axis_x_tvalid w:s_axis_x_tdata %u w:s_axis_x_tlast %u w:s_axis_w_tvalid %u "
            "w:s_axis_w_tdata %u w:s_axis_w_tlast %u w:s_axis_w_tuser %u w:m_axis_y_tready %u")
LINEAR_STRUCTURAL = {
    # SPEC 11 / bd_hw.linear: no combinational path from any input to any output (the tready
    # outputs may follow aresetn only).
    "ready_not_from_inputs": (f"w:s_axis_x_tready w:s_axis_w_tready %u %cie* {_AXIS_IN} %i",
                              ("s_axis_x_tready", "s_axis_w_tready", "s_axis_x_tvalid",
                               "s_axis_w_tvalid", "m_axis_y_tready")),
    "outputs_registered": ("w:m_axis_y_tvalid w:m_axis_y_tdata %u w:m_axis_y_tlast %u "
                           f"w:m_axis_y_tuser %u %cie* {_AXIS_IN} %i",
                           ("m_axis_y_tvalid", "m_axis_y_tdata", "m_axis_y_tready")),
}


def linear_jobs(unit: Unit, B: int) -> list[Job]:
    name = f"{unit.module(B)}_mb{LINEAR_PARAMS['max_blocks']}"
    build = partial(_linear, unit, B)
    return [
        Job(f"{name}_structural", unit.name, B, "structural", build, "structural",
            timeout=300, structural=LINEAR_STRUCTURAL),
        Job(f"{name}_protocol", unit.name, B, "protocol", partial(linear_protocol, unit, B),
            "prove", depth=LINEAR_PROVE_DEPTH, timeout=900),
    ] + ([Job(f"{name}_cover", unit.name, B, "cover", partial(linear_protocol, unit, B), "cover",
              depth=linear_cover_depth(unit, B), timeout=900)]
       if unit.params["N"] <= LINEAR_COVER_MAX_N else [])


def float_stage_jobs(unit: Unit, B: int, first: bool) -> list[Job]:
    """The stage proofs of a rounded mode's float parts: the block value's conversion at every B,
    and (``first``: once, they do not depend on B) the loop's adder, split by exponent distance
    (:data:`ADDER_CASES`), and FP16's widening of the total to FP32."""
    fmt = unit.params["accumulate"]
    name = f"{unit.name}_b{B}_stage_{fmt}"
    out = [Job(f"{name}_conversion", unit.name, B, "stage", partial(stage_conversion, unit, B),
               "bmc", depth=1, timeout=900, complete=True)]
    if first and fmt in LOOP_ADDER_FORMATS:
        out += [Job(f"{name}_loop_adder_{case}", unit.name, B, "stage",
                    partial(stage_loop_adder, unit, B, case), "bmc", depth=1, timeout=900,
                    complete=True) for case in ADDER_CASES]
    if first and fmt == "fp16":
        out.append(Job(f"{name}_widen", unit.name, B, "stage", partial(stage_widen, unit, B),
                       "bmc", depth=1, timeout=900, complete=True))
    return out


# --- the job list -------------------------------------------------------------------------------

def _clocked_jobs(unit: Unit, B: int, protocol, equivalence, latency: int,
                  parts=(None,)) -> list[Job]:
    quick = B == QUICK_B
    name = f"{unit.name}_b{B}"
    eq = [Job(f"{name}_equivalence" + (f"_{p}" if p else ""), unit.name, B, "equivalence",
              partial(equivalence, unit, B, **({"part": p} if p else {})), "bmc",
              depth=latency + 1, timeout=EQUIVALENCE_TIMEOUT[B]) for p in parts]
    return eq + [
        Job(f"{name}_protocol", unit.name, B, "protocol", partial(protocol, unit, B), "prove",
            depth=latency + 3, timeout=900, quick=quick and unit.name == "bd_quantizer"),
        Job(f"{name}_structural", unit.name, B, "structural", partial(unit.build, B),
            "structural", timeout=300, quick=quick),
        Job(f"{name}_cover", unit.name, B, "cover", partial(equivalence, unit, B, covers=True),
            "cover", depth=latency + 2, timeout=900),
    ]


#: Induction depth of the end-to-end proofs: every register of the unit is tied to the model by
#: a lemma, so one step closes.
END_TO_END_DEPTH = 1
#: The slowest stage job, bd_quantizer_fast's at B = 32 (pipeline 10, stage 4), took 854 s on the
#: 2 cores under simulation and place-and-route load: the limit leaves it room.
END_TO_END_TIMEOUT = 1800


def end_to_end_jobs(unit: Unit, B: int, build, latency: int) -> list[Job]:
    """One k-induction job per pipeline stage of the unit (``ShadowPipelineHarness(part=n)``);
    together they prove the end-to-end equivalence for all time."""
    return [Job(f"{unit.name}_b{B}_end_to_end_stage{n}", unit.name, B, "end_to_end",
                partial(build, unit, B, part=n), "prove", depth=END_TO_END_DEPTH,
                timeout=END_TO_END_TIMEOUT,
                quick=B == QUICK_B and unit.name == "bd_quantizer" and n == 0)
            for n in range(latency)]


def jobs(block_sizes=PROVED_BLOCK_SIZES, units=None) -> list[Job]:
    """Every proof job of the registered units at ``block_sizes``, cheapest kinds first."""
    out: list[Job] = []
    for unit in UNITS.values():
        if units is not None and unit.name not in units:
            continue
        for B in block_sizes:
            if unit.kind == "decoder":
                out.append(Job(f"{unit.name}_b{B}_equivalence", unit.name, B, "equivalence",
                               partial(decoder_equivalence, unit, B), "bmc", depth=1,
                               timeout=600, quick=B == QUICK_B, complete=True))
            elif unit.kind == "quantizer":
                for stage, build in QUANTIZER_STAGES.items():
                    if stage != "pair" and stage1_rule(unit) != "round":
                        continue          # only stage 1 depends on the rule
                    out.append(Job(f"{unit.name}_b{B}_stage_{stage}", unit.name, B, "stage",
                                   partial(build, unit, B), "bmc", depth=1, timeout=900,
                                   complete=True))
                out += _clocked_jobs(unit, B, quantizer_protocol, quantizer_equivalence,
                                     unit.latency(B), parts=())
                out += end_to_end_jobs(unit, B, quantizer_end_to_end, unit.latency(B))
            elif unit.kind == "dot" and unit.params.get("accumulate", "exact") != "exact":
                # SPEC 6.1's rounded modes: the stream protocol and the structural checks (their
                # arithmetic is checked by simulation against golden), and the FP32 conversion.
                out += [j for j in _clocked_jobs(unit, B, dot_protocol, dot_equivalence, unit.latency(B))
                        if j.kind in ("protocol", "structural")]
                if unit.params.get("pipeline", 0) == 0:       # the _fast units: the same parts
                    out += float_stage_jobs(unit, B, first=B == block_sizes[0])
            elif unit.kind == "dot":
                # the bounded first-beat equivalence and the separate stage proofs (products,
                # adder tree, normaliser) are subsumed by the end-to-end stage jobs
                out += [j for j in _clocked_jobs(unit, B, dot_protocol, dot_equivalence,
                                                 unit.latency(B)) if j.kind != "equivalence"]
                out += end_to_end_jobs(unit, B, dot_end_to_end, unit.latency(B))
                mb = ACC_COVER_MAX_BLOCKS
                out.append(Job(f"{unit.name}_b{B}_accumulator", unit.name, B, "width",
                               partial(accumulator_width, unit, B), "prove",
                               depth=ACC_PROVE_DEPTH, timeout=900))
                out.append(Job(f"{unit.name}_b{B}_accumulator_mb{mb}_cover", unit.name, B,
                               "cover", partial(accumulator_covers, unit, B, mb), "cover",
                               depth=mb + 5, timeout=900))
            elif unit.kind == "linear":
                # Every registered engine once, at its own block size (the proofs take seconds).
                if B == block_sizes[0]:
                    out += linear_jobs(unit, min(unit.blocks))
            else:
                raise ValueError(f"no proofs for unit kind {unit.kind!r} ({unit.name})")
    order = {"structural": 0, "protocol": 1, "cover": 2, "width": 3, "stage": 4, "end_to_end": 5,
             "equivalence": 6}
    return sorted(out, key=lambda j: (order[j.kind], j.B or 0))


#: The float parts' stage proofs a planted bug can name (:attr:`formal.bugs.Bug.stage`).
FLOAT_STAGES = {"conversion": stage_conversion, "loop_adder": stage_loop_adder}


def bug_jobs(B: int = QUICK_B, cheap: bool = True, also: bool = True) -> list[Job]:
    """One job per planted bug (:mod:`formal.bugs`), of the kind that must catch it, and with
    ``also`` one more per unit of its ``also`` list (the same bug, the same proof, another unit
    of the same generator). ``cheap`` keeps only the equivalence checks the bug touches (a
    counterexample is found sooner)."""
    from .bugs import BUGS
    return [_bug_job(bug, UNITS[name], B, cheap) for bug in BUGS.values()
            for name in (bug.unit, *(bug.also if also else ()))]


def _bug_job(bug, unit: Unit, B: int, cheap: bool) -> Job:
    from .bugs import SKID
    at = min(unit.blocks) if unit.kind == "linear" else B    # an engine at its own block size
    name = f"bug_{bug.name}_{unit.name}_b{at}"
    if unit.kind == "linear":
        build, mode, depth = partial(linear_protocol, unit, at), "prove", LINEAR_COVER_DEPTH
    elif bug.caught_by == "protocol":
        build, mode, depth = partial(quantizer_protocol, unit, B), "prove", unit.latency(B) + 3
    elif bug.caught_by == "structural":
        build, mode, depth = partial(unit.build, B), "structural", 1
    elif bug.caught_by == "width":
        # two beats of the largest block value overflow a one-bit-short accumulator: a
        # counterexample from reset within a few steps
        build = partial(accumulator_width, unit, B, ACC_BUG_MAX_BLOCKS)
        mode, depth = "bmc", ACC_BUG_MAX_BLOCKS + 4
    elif bug.caught_by == "stage" and unit.kind == "quantizer":
        build, mode, depth = partial(QUANTIZER_STAGES[bug.stage], unit, B), "bmc", 1
    elif bug.caught_by == "stage":
        stage, _, case = bug.stage.partition(":")       # "loop_adder:<case>": one distance case
        build = partial(FLOAT_STAGES[stage], unit, B, **({"case": case} if case else {}))
        mode, depth = "bmc", 1
    elif bug.caught_by == "end_to_end":
        # the stage job that guards the bug, run from reset far enough for a beat to get there;
        # a skid buffer's spare bank fills only once every stage after it is full (the unit's
        # capacity) and empties the cycle after
        params = unit.parameters_at(B)
        if bug.stage == SKID:
            part = skid_bank(SignalFinder(Fragment.get(unit.build(B), None)))[0]
        elif unit.kind == "dot":
            part = dot_part_names(unit, B).index(bug.stage)
        else:
            part = quantizer_stage_names(params).index(bug.stage)
        build = partial(dot_end_to_end if unit.kind == "dot" else quantizer_end_to_end, unit, B,
                        part=part)
        mode, depth = "bmc", params.capacity + 3 if params.skid else params.latency + 2
    else:
        build = partial(quantizer_equivalence, unit, B, only=bug.checks if cheap else None)
        mode, depth = "bmc", unit.latency(B) + 1
    return Job(name, unit.name, at, bug.caught_by, build, mode, depth=depth,
               timeout=900, patch=bug.plant, note=bug.description)
