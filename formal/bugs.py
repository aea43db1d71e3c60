"""Planted bugs: copies of the generators with one deliberate mistake, to show the proofs catch it.

Each bug is generated at run time, never committed: either a constant table of the generator is
swapped for a corrupted copy, or a function or method is recompiled from its own source with one
expression replaced (the replacement must match exactly once, so a refactored generator makes the
bug fail to plant instead of silently planting nothing). :func:`planted` applies a bug for the
duration of a ``with`` block, during which the harness is elaborated.
"""
from __future__ import annotations

import contextlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import Callable

import bd_hw.dot
import bd_hw.float_add
import bd_hw.linear
import bd_hw.linear_parts
import bd_hw.pipeline
import bd_hw.quantizer

__all__ = ["Bug", "BUGS", "SKID", "planted", "recompiled"]

#: :attr:`Bug.stage` of a bug in a skid buffer: the unit's skid-buffer stage, found in its pipeline.
SKID = "skid"


def recompiled(func, old: str, new: str):
    """``func`` compiled again from its source with ``old`` replaced by ``new`` (exactly once)."""
    src = textwrap.dedent(inspect.getsource(func))
    if src.count(old) != 1:
        raise LookupError(f"cannot plant the bug: {old!r} occurs {src.count(old)} times in "
                          f"{func.__qualname__}")
    namespace = dict(func.__globals__)
    exec(compile(src.replace(old, new), f"<planted bug in {func.__qualname__}>", "exec"),
         namespace)
    return namespace[func.__name__]


@contextlib.contextmanager
def _patch(obj, attr, value):
    # the raw attribute, so that a staticmethod goes back as a staticmethod
    old = vars(obj)[attr] if attr in vars(obj) else getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def _replace_in(owner, attr: str, old: str, new: str):
    """Plant a bug by recompiling ``owner.attr`` with ``old`` replaced by ``new`` (see
    :func:`recompiled`), restored on exit."""
    return _patch(owner, attr, recompiled(getattr(owner, attr), old, new))


def _range_off_by_one():
    # SPEC 4.3: pair P3, dialect A's range [18, 22) becomes [18, 23).
    ranges = bd_hw.quantizer.STAGE2_RANGES.clone()
    ranges[6, 1] += 1
    return _patch(bd_hw.quantizer, "STAGE2_RANGES", ranges)


def _index_ties_down():
    # SPEC 4.4: idx counts midpoints <= q (ties up); shifting every midpoint up by one quarter-unit
    # counts midpoints < q, so an exact tie goes to the smaller magnitude.
    return _patch(bd_hw.quantizer, "MIDPOINTS", bd_hw.quantizer.MIDPOINTS + 1)


def _stage1_ties_down():
    # SPEC 4.2 [revised]: r = (qmax + 1) >> 1 rounds the maximum to a half-unit, ties up; the bug
    # drops the "+ 1" (a tie goes down).
    sel = bd_hw.quantizer.PairSelector
    return _patch(sel, "pair_of", staticmethod(
        recompiled(sel.pair_of, "r = (qmax + 1)[1:1 + Q_BITS]", "r = (qmax + 0)[1:1 + Q_BITS]")))


def _dropped_ready_term():
    # SPEC 9: a stage may load when it is empty *or its content moves on*; the bug drops the
    # downstream-ready term, so a full stage never hands its beat on.
    return _replace_in(bd_hw.pipeline, "pipeline_control",
                       "load[n].eq(~valid[n] | nxt)", "load[n].eq(~valid[n])")


def _ready_from_valid():
    # SPEC 9: i.ready must not depend on i.valid; the bug gates it with i.valid.
    return _replace_in(bd_hw.pipeline, "pipeline_control",
                       "in_ready.eq(load[0] & ~ResetSignal())",
                       "in_ready.eq(load[0] & ~ResetSignal() & in_valid)")


def _engine_credit_one_too_many():
    # bd_hw.linear: the weight input takes a beat only while fewer row groups are owed than the
    # collector has slots; the bug allows one more, so a result arriving with every slot full is
    # lost (the collector's queue refuses it).
    return _replace_in(bd_hw.linear_parts.LaneCollector, "elaborate",
                       "room.eq(owed_next < self.capacity)", "room.eq(owed_next <= self.capacity)")


def _accumulator_one_bit_short():
    # SPEC 6: the accumulator needs ceil(log2(225 B)) + 1 + 60 + ceil(log2(max_blocks)) bits; the
    # bug drops one, so a group of large block values wraps.
    narrow = bd_hw.dot.accumulator_bits
    return _patch(bd_hw.dot, "accumulator_bits", lambda B, max_blocks: narrow(B, max_blocks) - 1)


def _normaliser_ties_away():
    # SPEC 6: the total is rounded to nearest, ties to even; the bug rounds every tie up (away
    # from zero).
    return _replace_in(bd_hw.dot.FP32Normaliser, "elaborate",
                       "round_up = guard & (sticky | mant[0])", "round_up = guard")


def _skid_spare_not_loaded():
    # bd_hw.pipeline: a skid buffer's spare bank takes the incoming beat while it is empty; the bug
    # never loads it, so a beat that arrives while the main bank is held is lost (replaced by the
    # spare's stale contents).
    return _replace_in(bd_hw.pipeline.Stages, "register", "self.m.d.sync += spare.eq(value)",
                       "self.m.d.sync += spare.eq(spare)")


def _skid_drains_wrong_bank():
    # bd_hw.pipeline: when the main bank loads while the spare is full, it must take the spare's
    # beat; the bug takes the incoming value instead (the register before the skid stage).
    return _replace_in(bd_hw.pipeline.Stages, "register",
                       "value = Mux(self.spare_valid, spare, value)",
                       "value = Mux(self.spare_valid, value, value)")


def _skid_ready_combinational():
    # bd_hw.pipeline: the stage before a skid buffer sees the spare bank being empty as its ready;
    # the bug gives it the skid stage's own load (the chain the buffer is there to cut), so a beat
    # that waits before a held skid stage also fills the spare bank and goes through twice. The
    # stage before the skid stage (the quantizer's "pair_rule") then holds a beat the shadow's
    # has passed on.
    return _replace_in(bd_hw.pipeline, "pipeline_control",
                       "nxt = ~spare_valid if n == at else load[n]", "nxt = load[n]")


def _skid_valid_ignores_spare():
    # bd_hw.pipeline: the skid stage's main bank is valid after a load that takes the spare's
    # beat; the bug keeps only the stage before's valid, so that beat is dropped.
    return _replace_in(bd_hw.pipeline, "pipeline_control",
                       "valid[n].eq(prev | spare_valid if n == at else prev)", "valid[n].eq(prev)")


def _conversion_ones_complement():
    # SPEC 6.1 "fp32": every block value is exact in FP32; the bug takes a negative sum's
    # magnitude as its ones' complement (the dot unit's lanes are held that way, their +1s counted
    # apart), one unit short.
    return _replace_in(bd_hw.float_add, "_convert", "Mux(negative, -x, x)", "Mux(negative, ~x, x)")


def _conversion_ties_away():
    # SPEC 6.1 "fp16": fl16(V) rounds to nearest, ties to even; the bug rounds every tie up.
    return _replace_in(bd_hw.float_add, "_round_pack", "guard & (sticky | man[0])", "guard")


def _adder_drops_sticky():
    # SPEC 6.1: one correct rounding per addition; the bug aligns the smaller operand with a plain
    # right shift, losing the sticky bit, so a sum just above or below a tie rounds as a tie.
    return _replace_in(bd_hw.float_add, "_add",
                       'aligned = _shift_right_sticky(m, "align", small_ext, distance[:k])',
                       'aligned = _named(m, "align", small_ext >> distance[:k], W + G)')


def _adder_ties_away():
    # SPEC 6.1: ties to even; the bug keeps the injected half-unit's carry on a tie (ties away
    # from zero).
    return _replace_in(bd_hw.float_add, "_add", "Cat(total[low + 1] & ~tie,", "Cat(total[low + 1],")


@dataclass(frozen=True)
class Bug:
    name: str
    description: str
    plant: Callable          # returns a context manager
    unit: str                # registry unit it is planted in
    caught_by: str           # job kind expected to fail
    checks: tuple | None     # equivalence checks to keep (None: all) for the cheapest run
    stage: str | None = None  # end_to_end / stage: the unit's stage whose proof job must fail
    #                           (a float loop adder's: "loop_adder:<distance case>"; SKID: the
    #                           unit's skid-buffer stage, wherever its pipeline has it)
    also: tuple = ()          # more units the same run is repeated on by `make formal` (not `make test`)


BUGS = {b.name: b for b in (
    Bug("range_off_by_one", "stage-2 range of dialect 6 ends one quarter-unit late",
        _range_off_by_one, "bd_quantizer", "stage", None, "ranges"),
    Bug("index_ties_down", "element index rounds a midpoint tie down",
        _index_ties_down, "bd_quantizer", "end_to_end", None, "s3", also=("bd_quantizer_fast",)),
    Bug("stage1_ties_down", "stage-1 pair rounding drops the +1 (tie goes down)",
        _stage1_ties_down, "bd_quantizer", "end_to_end", None, "s1", also=("bd_quantizer_fast",)),
    Bug("dropped_ready_term", "pipeline load ignores the downstream ready",
        _dropped_ready_term, "bd_quantizer", "protocol", None, also=("bd_quantizer_fast",)),
    Bug("ready_from_valid", "i.ready gated by i.valid",
        _ready_from_valid, "bd_quantizer", "structural", None, also=("bd_quantizer_fast",)),
    Bug("accumulator_one_bit_short", "the exact accumulator is one bit narrower than SPEC 6 asks",
        _accumulator_one_bit_short, "bd_dot", "width", None),
    Bug("normaliser_ties_away", "the FP32 normaliser rounds a tie away from zero, not to even",
        _normaliser_ties_away, "bd_dot", "end_to_end", None, "norm_s2"),
    Bug("skid_spare_not_loaded", "the skid buffer never loads its spare bank",
        _skid_spare_not_loaded, "bd_dot_fast", "end_to_end", None, SKID,
        also=("bd_quantizer_fast",)),
    Bug("skid_drains_wrong_bank", "the skid buffer refills its main bank from the stage "
        "before, not from the spare bank", _skid_drains_wrong_bank, "bd_dot_fast", "end_to_end",
        None, SKID, also=("bd_quantizer_fast",)),
    Bug("skid_ready_combinational", "the stage before the skid buffer sees the skid stage's "
        "load as its ready, not the spare bank being empty", _skid_ready_combinational,
        "bd_quantizer_fast", "end_to_end", None, "pair_rule"),
    Bug("skid_valid_ignores_spare", "the skid stage's valid ignores the spare bank it drains",
        _skid_valid_ignores_spare, "bd_quantizer_fast", "end_to_end", None, SKID,
        also=("bd_dot_fast",)),
    Bug("engine_credit_one_too_many", "bd_linear takes a row group with every collector slot owed",
        _engine_credit_one_too_many, "bd_linear_n2", "protocol", None, also=("bd_linear_n4",)),
    Bug("conversion_ones_complement", "the FP32 block-value conversion negates by ones' complement",
        _conversion_ones_complement, "bd_dot_fp32", "stage", None, "conversion"),
    Bug("conversion_ties_away", "the FP16 block-value conversion rounds a tie away from zero",
        _conversion_ties_away, "bd_dot_fp16", "stage", None, "conversion"),
    Bug("adder_drops_sticky", "the loop adder aligns without its sticky bit",
        _adder_drops_sticky, "bd_dot_fp16", "stage", None, "loop_adder:far4_7"),
    Bug("adder_ties_away", "the loop adder rounds a tie away from zero, not to even",
        _adder_ties_away, "bd_dot_fp16", "stage", None, "loop_adder:far2_3"),
)}


def planted(name: str):
    """Context manager planting bug ``name`` in the generators while it is active."""
    try:
        bug = BUGS[name]
    except KeyError:
        raise ValueError(f"bug must be one of {', '.join(BUGS)}, not {name!r}") from None
    return bug.plant()
