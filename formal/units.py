"""The proof jobs: which harness, around which unit, at which block size, how deep.

The units come from :mod:`bd_hw` through their public constructors; the quantizer is proved once
per stage-1 rule (SPEC 4.2) the generator offers. A generator without a rule parameter implements
the truncating rule ``p = 15 - (qmax >> 1)`` and is proved as ``trunc``.
"""
from __future__ import annotations

import inspect
from functools import partial

from amaranth.hdl import Cat

from bd_hw.decoder import BDDecoder
from bd_hw.dot import BDDot
from bd_hw.quantizer import BDQuantizer
from golden.formatbook import CODE_BITS, DIALECT_BITS
from golden.spec import EXP_MAX

from .harness import CombinationalHarness, FirstBeatHarness, StreamProtocolHarness
from .models import decode_model, dot_block_model, quantizer_model
from .runner import Job

__all__ = ["quantizer_rules", "make_quantizer", "jobs", "QUICK_B"]

QUICK_B = 16
_RULE_PARAMS = ("rule", "stage1", "stage1_rule", "pair_rule")


def _rule_param() -> str | None:
    params = inspect.signature(BDQuantizer.__init__).parameters
    return next((p for p in _RULE_PARAMS if p in params), None)


def quantizer_rules() -> tuple[str, ...]:
    """Stage-1 rules the quantizer generator builds (SPEC 4.2)."""
    return ("round", "trunc") if _rule_param() else ("trunc",)


def make_quantizer(B: int, rule: str):
    param = _rule_param()
    if param is None:
        if rule != "trunc":
            raise ValueError(f"this quantizer generator has no stage-1 rule {rule!r}")
        return BDQuantizer(B)
    return BDQuantizer(B, **{param: rule})


def quantizer_unit_name(rule: str) -> str:
    return "bd_quantizer" if rule == "round" else f"bd_quantizer_{rule}"


# --- induction lemmas: the unit's pending results, from its own valid registers -------------------

def quantizer_pending(find, stages: int):
    return sum(find(f"s{n}_valid") for n in range(stages))


def dot_pending(find):
    """Results owed inside ``bd_dot``: ``last`` beats in the front stages and the accumulator's
    term stage, the finished total, and the normaliser's two stages."""
    return ((find("s0_valid") & find("s1_last")) + (find("s1_valid") & find("s2_last"))
            + (find("t_valid", "accumulator") & find("t_last", "accumulator"))
            + find("o_valid", "accumulator")
            + find("s0_valid", "norm") + find("s1_valid", "norm"))


# --- harness builders ---------------------------------------------------------------------------

def quantizer_protocol(B, rule):
    dut = make_quantizer(B, rule)
    return StreamProtocolHarness(dut, capacity=dut.latency,
                                 lemma=partial(quantizer_pending, stages=dut.latency))


def dot_protocol(B, max_blocks=256):
    dut = BDDot(B, max_blocks)
    return StreamProtocolHarness(dut, capacity=dut.latency, lemma=dot_pending,
                                 produces=lambda p: p.last)


def _quantizer_model(rule):
    def build(m, captured):
        B = len(captured.data)
        return quantizer_model(m, [captured.data[k] for k in range(B)], rule)
    return build


def quantizer_checks(B, lanes=None):
    checks = {
        "exp": lambda o, q: (o.exp, q.exp),
        "invalid": lambda o, q: (o.invalid, q.invalid),
        "dialect": lambda o, q: (o.dialect, q.dialect),
    }
    for k in (range(B) if lanes is None else lanes):
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


def quantizer_equivalence(B, rule, lanes=None, covers=False):
    dut = make_quantizer(B, rule)
    return FirstBeatHarness(dut, model=_quantizer_model(rule),
                            checks={} if covers else quantizer_checks(B, lanes),
                            covers=quantizer_covers(B) if covers else None)


def _dot_model(m, c):
    B = len(c.a_codes)
    return dot_block_model(m, [c.a_codes[k] for k in range(B)], c.a_dialect, c.a_exp,
                           [c.w_codes[k] for k in range(B)], c.w_dialect, c.w_exp)


def dot_equivalence(B, covers=False):
    dut = BDDot(B)

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


def decoder_equivalence(B):
    dut = BDDecoder(B)

    def model(m, h):
        return [decode_model(m, h.dialect, h.codes[k], f"m_dec{k}") for k in range(B)]

    checks = {f"lane{k}": (lambda d, mod, k=k: (d.values[k], Cat(mod[k][1], mod[k][0])))
              for k in range(B)}
    return CombinationalHarness(dut, {"dialect": DIALECT_BITS,
                                      "codes": dut.codes.shape()},
                                model=model, checks=checks)


# --- the job list -------------------------------------------------------------------------------

def jobs(block_sizes=(16, 32)) -> list[Job]:
    out: list[Job] = []
    for B in block_sizes:
        quick = B == QUICK_B
        for rule in quantizer_rules():
            unit = quantizer_unit_name(rule)
            lat = BDQuantizer.LATENCY
            out.append(Job(f"{unit}_b{B}_protocol", unit, B, "protocol",
                           partial(quantizer_protocol, B, rule), "prove", depth=lat + 3,
                           timeout=600, quick=quick and rule == quantizer_rules()[0]))
            out.append(Job(f"{unit}_b{B}_structural", unit, B, "structural",
                           partial(make_quantizer, B, rule), "structural", timeout=300,
                           quick=quick))
            out.append(Job(f"{unit}_b{B}_equivalence", unit, B, "equivalence",
                           partial(quantizer_equivalence, B, rule), "bmc", depth=lat + 2,
                           timeout=1500, quick=False))
            out.append(Job(f"{unit}_b{B}_cover", unit, B, "cover",
                           partial(quantizer_equivalence, B, rule, covers=True), "cover",
                           depth=lat + 2, timeout=900, quick=False))
        dlat = 6
        out.append(Job(f"bd_dot_b{B}_protocol", "bd_dot", B, "protocol",
                       partial(dot_protocol, B), "prove", depth=dlat + 3, timeout=900,
                       quick=False))
        out.append(Job(f"bd_dot_b{B}_structural", "bd_dot", B, "structural",
                       partial(BDDot, B), "structural", timeout=300, quick=quick))
        out.append(Job(f"bd_dot_b{B}_equivalence", "bd_dot", B, "equivalence",
                       partial(dot_equivalence, B), "bmc", depth=dlat + 2, timeout=1500))
        out.append(Job(f"bd_dot_b{B}_cover", "bd_dot", B, "cover",
                       partial(dot_equivalence, B, covers=True), "cover", depth=dlat + 2,
                       timeout=900))
        out.append(Job(f"bd_decoder_b{B}_equivalence", "bd_decoder", B, "equivalence",
                       partial(decoder_equivalence, B), "bmc", depth=1, timeout=300,
                       quick=quick, complete=True))
    return out
