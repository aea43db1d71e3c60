"""Formal harnesses: the stream-protocol properties (written once, applied to every clocked unit),
the first-beat equivalence harness of a pipelined unit against a plain model, and the
combinational equivalence harness.

Every harness is an Amaranth component whose ports are the free inputs of the proof: the solver
picks their values on every cycle (``i_valid``, ``i_payload``, ``o_ready`` and the domain's ``rst``).
The unit under proof is driven only through its public stream signature (``i``/``o`` with
``valid``/``ready``/``payload``). A property is an Amaranth ``Assert``/``Assume``/``Cover`` whose
source location is replaced by ``property:<name>``, so that the solver's log names a failing
property.
"""
from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import (Assert, Assume, Cat, Cover, Fragment, Module, Mux, ResetSignal, Signal,
                          Value)
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["Properties", "SignalFinder", "StreamProtocolHarness", "FirstBeatHarness",
           "ShadowPipelineHarness", "DotShadowHarness", "CombinationalHarness",
           "PROTOCOL_PROPERTIES", "pipeline_stages", "assume_as_proved"]

#: The stream properties proved for every clocked unit (SPEC 9), in report order.
PROTOCOL_PROPERTIES = {
    "output_stable": "an output beat, once valid, stays valid with the same payload until taken",
    "no_duplicate": "the unit offers an output only while an accepted beat is owed",
    "within_capacity": "accepted-minus-delivered stays in [0, capacity]",
    "drains": "an owed output is offered within capacity cycles, whatever o.ready does",
    "reset_clears": "after a cycle with rst high nothing is pending (o.valid low)",
    "no_take_in_reset": "i.ready is low while rst is high (no beat accepted and dropped)",
    "occupancy_lemma": "the owed count equals the unit's pending results (induction lemma)",
}


class Properties:
    """Collects named properties of one harness; the name goes into the statement's source
    location (``property:<name>``), where the solver's failure message shows it."""

    def __init__(self, m: Module):
        self.m = m
        self.asserts: list[str] = []
        self.covers: list[str] = []

    def _add(self, stmt, name):
        stmt.src_loc = (f"property:{name}", 0)
        self.m.d.comb += stmt
        return stmt

    def check(self, name: str, cond) -> None:
        if name not in self.asserts:
            self.asserts.append(name)
        self._add(Assert(cond, name), name)

    def assume(self, name: str, cond) -> None:
        self._add(Assume(cond, name), name)

    def cover(self, name: str, cond) -> None:
        self.covers.append(name)
        self._add(Cover(cond, name), name)


class SignalFinder:
    """Looks up the signals a fragment drives, by submodule path and name.

    Induction needs a lemma that ties the harness's owed count to the unit's own valid registers;
    this is the one place where a proof looks inside a unit, and a renamed register fails loudly
    (``KeyError``) instead of silently weakening the proof.
    """

    def __init__(self, fragment: Fragment):
        self._by_path: dict[tuple, dict[str, Signal]] = {}
        self._registers: dict[tuple, set[str]] = {}
        self._walk(fragment, ())

    def _walk(self, frag, path):
        found = self._by_path.setdefault(path, {})
        registers = self._registers.setdefault(path, set())
        for domain, stmts in frag.statements.items():
            for stmt in stmts:
                for sig in stmt._lhs_signals():
                    found.setdefault(sig.name, sig)
                    if domain != "comb":
                        registers.add(sig.name)
        for sub, name, _ in frag.subfragments:
            self._walk(sub, path + (name,))

    def registers(self, path: str = "") -> dict[str, Signal]:
        """Every register (a signal driven in a clocked domain) at ``path``, by name."""
        key = tuple(p for p in path.split(".") if p)
        return {name: sig for name, sig in self._by_path.get(key, {}).items()
                if name in self._registers.get(key, ())}

    def __call__(self, name: str, path: str = "") -> Signal:
        key = tuple(p for p in path.split(".") if p)
        try:
            return self._by_path[key][name]
        except KeyError:
            raise KeyError(f"no signal {name!r} driven in {'.'.join(key) or 'the top'} of the unit")


def _harness_signature(dut) -> dict:
    return {
        "i_valid": In(1),
        "i_payload": In(dut.i.payload.shape()),
        "o_ready": In(1),
    }


class _StreamHarnessBase(wiring.Component):
    def __init__(self, dut):
        self.dut = dut
        super().__init__(_harness_signature(dut))

    def _connect(self, m, platform):
        frag = Fragment.get(self.dut, platform)
        m.submodules.dut = frag
        dut = self.dut
        m.d.comb += [
            dut.i.valid.eq(self.i_valid),
            dut.i.payload.eq(self.i_payload),
            dut.o.ready.eq(self.o_ready),
        ]
        return frag

    def _start(self, m, platform):
        """Connects the unit and opens the property list: (fragment, properties, unit)."""
        frag = self._connect(m, platform)
        self.props = Properties(m)
        return frag, self.props, self.dut

    def _start_split(self, m, platform):
        """:meth:`_start` for a proof split by stage (``self.part``) that assumes the parts
        ``self.proved`` as proved: (fragment, properties, unit, finder, check)."""
        frag, props, dut = self._start(m, platform)
        assume_as_proved(m, frag, props, self.proved)
        return frag, props, dut, SignalFinder(frag), _part_checker(m, props, self.part)

    def _upstream_protocol(self, m, props):
        """Assume the upstream side keeps a beat valid and stable until it is taken (SPEC 9)."""
        dut = self.dut
        p_rst = Signal(reset_less=True, name="p_rst")
        p_wait = Signal(reset_less=True, name="p_in_wait")
        p_payload = Signal(dut.i.payload.shape(), reset_less=True, name="p_in_payload")
        m.d.sync += [
            p_rst.eq(ResetSignal()),
            p_wait.eq(dut.i.valid & ~dut.i.ready),
            p_payload.eq(dut.i.payload),
        ]
        props.assume("upstream_holds",
                     ~(p_wait & ~p_rst) | (dut.i.valid & (dut.i.payload.as_value() ==
                                                          p_payload.as_value())))
        return p_rst


class StreamProtocolHarness(_StreamHarnessBase):
    """The stream properties of SPEC 9 (:data:`PROTOCOL_PROPERTIES`) around one clocked unit.

    ``produces(payload)`` says whether an input beat owes an output beat (every beat for the
    quantizer, ``last`` beats for the dot unit); ``capacity`` bounds the owed count (the unit's
    latency: one result per stage); ``lemma(find)`` returns the unit's pending results from its own
    registers, found with a :class:`SignalFinder`.
    """

    def __init__(self, dut, *, capacity: int, lemma: Callable | None = None,
                 produces: Callable | None = None):
        self.capacity = capacity
        self.lemma = lemma
        self.produces = produces
        super().__init__(dut)

    def elaborate(self, platform):
        m = Module()
        frag, props, dut = self._start(m, platform)
        rst = ResetSignal()
        p_rst = self._upstream_protocol(m, props)

        i_fire = dut.i.valid & dut.i.ready
        o_fire = dut.o.valid & dut.o.ready
        produces = self.produces(dut.i.payload) if self.produces else Value.cast(1)

        # Previous-cycle view of the output side.
        p_o_wait = Signal(reset_less=True, name="p_o_wait")
        p_o_payload = Signal(dut.o.payload.shape(), reset_less=True, name="p_o_payload")
        m.d.sync += [p_o_wait.eq(dut.o.valid & ~dut.o.ready), p_o_payload.eq(dut.o.payload)]

        # Owed outputs: accepted (producing) beats minus delivered beats; cleared by reset.
        cap = self.capacity
        owed = Signal(range(-2, cap + 3), name="owed")
        m.d.sync += owed.eq(owed + (i_fire & produces) - o_fire)
        idle = Signal(range(cap + 2), name="idle")
        with m.If((owed > 0) & ~dut.o.valid):
            with m.If(idle <= cap):
                m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)

        props.check("output_stable", ~(p_o_wait & ~p_rst) |
                    (dut.o.valid & (dut.o.payload.as_value() == p_o_payload.as_value())))
        props.check("no_duplicate", ~dut.o.valid | (owed >= 1))
        props.check("within_capacity", (owed >= 0) & (owed <= cap))
        props.check("drains", idle < cap)
        props.check("reset_clears", ~p_rst | ~dut.o.valid)
        props.check("no_take_in_reset", ~rst | ~dut.i.ready)
        if self.lemma is not None:
            props.check("occupancy_lemma", owed == self.lemma(SignalFinder(frag)))

        props.cover("full", owed == cap)
        props.cover("held_under_backpressure", p_o_wait & ~p_rst & dut.o.valid)
        props.cover("in_and_out_same_cycle", i_fire & o_fire & (owed == cap - 1))
        return m


class FirstBeatHarness(_StreamHarnessBase):
    """Equivalence of a pipelined unit to a plain model, for every value of one beat.

    The first beat accepted after reset is captured; when the first output appears, every check
    compares a field of ``o.payload`` with the model's value computed from the captured beat. All
    other inputs (valid, ready, reset, later payloads) stay free. Callbacks:

    - ``model(m, captured, out)`` builds the plain model and returns any object (``out`` is the
      unit's output payload, for a model checked given one of the unit's own outputs);
    - ``checks``: ``{name: lambda out, model: (dut_value, model_value)}``;
    - ``covers``: ``{name: lambda out, model, captured: condition}``, evaluated at the first output;
    - ``assume_first(payload)``: a condition the first beat satisfies (for example ``last``);
    - ``assume_always(payload)``: a condition every beat satisfies (the unit's input contract).
    """

    def __init__(self, dut, *, model, checks, covers=None, assume_first=None, assume_always=None):
        self.model_fn, self.checks, self.covers = model, checks, covers or {}
        self.assume_first, self.assume_always = assume_first, assume_always
        super().__init__(dut)

    def elaborate(self, platform):
        m = Module()
        frag, props, dut = self._start(m, platform)
        self._upstream_protocol(m, props)
        i_fire = dut.i.valid & dut.i.ready

        captured = Signal(dut.i.payload.shape(), reset_less=True, name="captured")
        seen_in = Signal(name="seen_in")
        seen_out = Signal(name="seen_out")
        with m.If(i_fire & ~seen_in):
            m.d.sync += [captured.eq(dut.i.payload), seen_in.eq(1)]
        with m.If(dut.o.valid & dut.o.ready & seen_in):
            m.d.sync += seen_out.eq(1)
        if self.assume_always is not None:
            props.assume("input_contract", ~dut.i.valid | self.assume_always(dut.i.payload))
        if self.assume_first is not None:
            props.assume("first_beat", ~(dut.i.valid & ~seen_in) |
                         self.assume_first(dut.i.payload))

        model = self.model_fn(m, captured, dut.o.payload)
        first_out = dut.o.valid & seen_in & ~seen_out
        out = dut.o.payload
        for name, fn in self.checks.items():
            got, want = fn(out, model)
            props.check(name, ~first_out | (got == want))
        for name, fn in self.covers.items():
            props.cover(name, first_out & fn(out, model, captured))
        return m


class ShadowPipelineHarness(_StreamHarnessBase):
    """End-to-end equivalence of a pipelined unit to a plain model, for all time (k-induction).

    Beside the unit runs a *shadow pipeline* written here, independently of the unit: ``stages``
    registers under the textbook valid/ready rule (a stage loads when it is empty or its content
    moves on; the last one moves on when ``o.ready`` is high), fed by the unit's own input
    transfers. It is an in-order queue of capacity ``stages``: the content of its last stage
    belongs to the beat that entered ``stages`` transfers before the result now leaving, whatever
    the back-pressure, and reset empties it with the unit.

    What travels in the shadow is the plain model of each beat: ``fields`` is the model as a table
    of named fields, each a function of fields before it (:func:`formal.models.evaluate_fields`),
    ``start(payload)`` gives the fields of an input beat, and a field is evaluated once, on the way
    into the first stage ``n`` whose ``needs(n)`` asks for it (the last stage asks for ``outputs``),
    then carried along. So the last stage holds the plain model's answer for its beat, evaluated
    in exactly the order of its definitions. The properties:

    - ``checks`` at the output, the claim: while ``o.valid``, every field of ``o.payload`` equals
      the model's answer for the beat in the shadow's last stage;
    - ``stage<n>_valid``: the unit's stage-``n`` valid register (``valid(find, n)``) equals the
      shadow's, so the unit takes, holds and delivers beats exactly as the queue does;
    - the lemmas ``lemmas(find, record, n)``: while shadow stage ``n`` is valid, each register of
      the unit's stage ``n`` equals the model's field for the same beat.

    The lemmas are what k-induction needs: from a state where they hold, one clock cycle leads to
    one where they hold, and each stage's step is the stage's logic against the model's fields
    computed from the same values (the size of a combinational stage proof). ``consistent``
    names fields that the shadow re-derives from the other fields of a stage, wherever it carries
    what they are computed from, and asserts equal to the ones it carries (``shadow<n>_<field>``):
    a unit's stage may rely on relations between its inputs that hold for every real beat.

    ``part = n`` proves only stage ``n``'s properties (the output checks belong to the last
    stage); every other one is assumed to have held in the previous cycle. One job per stage is
    then a sound split of the induction (assume-guarantee over time: if every property held at
    every earlier cycle, each job shows its own hold now) and each job is a stage-sized problem.

    ``skid = n`` makes the shadow's stage ``n`` a skid buffer (:class:`_ShadowSkid`, written from
    the rule as for :class:`DotShadowHarness`): the stage before it sees its spare bank being
    empty as its ready, and a beat arriving while the stage is held waits in the spare bank. The
    unit's spare bank must be at that stage (:func:`skid_bank`); its valid bit equals the
    shadow's and, while that is set, ``lemmas(find, record, n, spare=True)`` tie its registers to
    the spare beat's fields (part of stage ``n``'s job). The queue's capacity is then
    ``stages + 1``.
    """

    def __init__(self, dut, *, stages: int, fields: dict, start, needs, outputs, checks, lemmas,
                 valid, consistent=(), part=None, assume_always=None, proved=None, skid=None):
        self.stages, self.fields, self.start, self.needs = stages, fields, start, needs
        self.proved, self.skid = proved or {}, skid
        self.consistent, self.part = consistent, part
        self.outputs, self.checks, self.lemmas, self.valid = outputs, checks, lemmas, valid
        self.assume_always = assume_always
        super().__init__(dut)

    def elaborate(self, platform):
        from .models import evaluate_fields
        m = Module()
        frag, props, dut, find, check = self._start_split(m, platform)
        if self.assume_always is not None:
            props.assume("input_contract", ~dut.i.valid | self.assume_always(dut.i.payload))
        n_st = self.stages
        load = [Signal(name=f"shadow{n}_load") for n in range(n_st)]
        wanted = [set(self.needs(n)) for n in range(n_st)]
        wanted[-1] |= set(self.outputs)
        spare = skid_bank(find)
        if (spare[0] if spare else None) != self.skid:
            raise AssertionError(f"the unit's skid buffer is at stage {spare[0] if spare else None}"
                                 f", the shadow's at {self.skid}")
        skid = _ShadowSkid(self.skid, "shadow") if self.skid is not None else None
        valid, records = _shadow_records(m, self.fields, self.start(dut.i.payload),
                                         dut.i.valid & dut.i.ready, load, wanted, "shadow",
                                         skid=skid)
        nxt = dut.o.ready
        for n in reversed(range(n_st)):
            m.d.comb += load[n].eq(~valid[n] | nxt)
            nxt = load[n]
            if skid is not None and n == skid.stage:      # the stage before sees a registered ready
                nxt = skid.control(m, valid[n - 1], load[n])

        def stage_properties(n, tag, shadow_valid, unit_valid, record, spare=False):
            check(f"stage{tag}_valid", shadow_valid == unit_valid, n)
            # the shadow's own invariant: a carried field agrees with the fields of the same
            # stage it is computed from (q with the data and E, the counts with q and the pair),
            # as it does for every real beat
            for name in self.consistent:
                if name in record:
                    others = {k: v for k, v in record.items() if k != name}
                    try:
                        again = evaluate_fields(m, self.fields, others, {name})[name]
                    except KeyError:          # not computable from this stage's fields
                        continue
                    check(f"shadow{tag}_{name}", record[name] == again, n)
            for name, cond in self.lemmas(find, record, n, **({"spare": True} if spare else {})).items():
                check(name, ~shadow_valid | cond, n)

        for n in range(n_st):
            stage_properties(n, n, valid[n], self.valid(find, n), records[n])
        if skid is not None:                # the spare bank: its valid and, if set, its beat
            stage_properties(skid.stage, f"{skid.stage}_spare", skid.valid, spare[1],
                             skid.record, spare=True)
        for name, fn in self.checks.items():
            got, want = fn(dut.o.payload, records[-1])
            check(name, ~dut.o.valid | (got == want), n_st - 1)
        return m


class CombinationalHarness(wiring.Component):
    """Equivalence of a combinational unit to a plain model: the unit's inputs are the harness's
    free inputs, every check compares an output with the model."""

    def __init__(self, dut, inputs: dict, *, model, checks, covers=None, assumes=None):
        self.dut = dut
        self.model_fn, self.checks, self.covers = model, checks, covers or {}
        self.assumes = assumes or {}
        self._inputs = list(inputs)
        super().__init__({name: In(shape) for name, shape in inputs.items()})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        props = self.props = Properties(m)
        for name in self._inputs:
            m.d.comb += getattr(self.dut, name).eq(getattr(self, name))
        model = self.model_fn(m, self)
        for name, fn in self.assumes.items():
            props.assume(name, fn(self.dut, model))
        for name, fn in self.checks.items():
            got, want = fn(self.dut, model)
            props.check(name, got == want)
        for name, fn in self.covers.items():
            props.cover(name, fn(self.dut, model))
        # A clocked domain gives the solver a step to run in.
        tick = Signal(name="tick")
        m.d.sync += tick.eq(~tick)
        return m


class AccumulatorHarness(_StreamHarnessBase):
    """SPEC 6 width argument as an assertion: the accumulator's total equals the exact sum.

    Inputs are free within the contract of a block sum (``|S| <= max_sum``, ``exp <= max_exp``) and
    at most ``max_blocks`` beats per result. The harness adds the beats of the first group after
    reset, exactly, in ``width + extra`` bits; when that group's total appears, it must equal the
    exact sum, so the ``width``-bit accumulator has not wrapped. After a ``last`` beat the running
    sum restarts from 0, the state reset gives, so the first group stands for every group.
    """

    def __init__(self, dut, *, max_sum: int, max_exp: int, max_blocks: int, extra: int = 8):
        self.max_sum, self.max_exp, self.max_blocks, self.extra = max_sum, max_exp, max_blocks, extra
        super().__init__(dut)

    def elaborate(self, platform):
        from amaranth.hdl import signed
        m = Module()
        self._connect(m, platform)
        props = self.props = Properties(m)
        dut = self.dut
        self._upstream_protocol(m, props)
        p = dut.i.payload
        width = dut.o.payload.total.shape().width
        i_fire = dut.i.valid & dut.i.ready
        props.assume("block_sum_contract", ~dut.i.valid | ((p.sum <= self.max_sum) &
                                                           (p.sum >= -self.max_sum) &
                                                           (p.exp <= self.max_exp)))
        beats = Signal(range(self.max_blocks + 1), name="beats")
        done_in = Signal(name="group_in")
        seen_out = Signal(name="seen_out")
        exact = Signal(signed(width + self.extra), name="exact")
        props.assume("at_most_max_blocks",
                     ~(dut.i.valid & ~done_in & (beats == self.max_blocks - 1)) | p.last)
        term = Signal(signed(width + self.extra), name="term")
        m.d.comb += term.eq(p.sum.as_signed() << p.exp)
        with m.If(i_fire & ~done_in):
            m.d.sync += [exact.eq(exact + term), beats.eq(beats + 1)]
            with m.If(p.last):
                m.d.sync += done_in.eq(1)
        with m.If(dut.o.valid & dut.o.ready & done_in):
            m.d.sync += seen_out.eq(1)
        first_out = dut.o.valid & done_in & ~seen_out
        props.check("no_overflow", ~first_out | (dut.o.payload.total == exact))
        props.cover("full_group_of_max_blocks", first_out & (beats == self.max_blocks))
        big = (1 << (width - 2))
        props.cover("total_beyond_quarter_range", first_out & ((exact >= big) | (exact < -big)))
        return m


class AccumulatorInvariantHarness(_StreamHarnessBase):
    """SPEC 6 width argument for all time (k-induction): every total the accumulator emits equals
    the exact sum of its group, for every input sequence within the contract (``|S| <= max_sum``,
    ``exp <= max_exp``, at most ``max_blocks`` beats per group), back-pressure and reset.

    The harness keeps exact copies (``width + extra`` bits) of the accumulator's three values: the
    term in its first stage, the running sum and the finished total, updated when the unit's own
    stage moves (``t_fire``, read from its registers ``t_valid``, ``t_last`` and ``o_valid``;
    the protocol proof covers that control). Lemmas: each ``width``-bit register equals its exact
    copy; the beats in the running sum plus the one in the first stage stay below ``max_blocks``,
    and the exact running sum is at most ``n * max_sum * 2^max_exp`` for ``n`` beats, so by SPEC 6's
    width it never wraps.
    """

    def __init__(self, dut, *, max_sum: int, max_exp: int, max_blocks: int, extra: int = 8):
        self.max_sum, self.max_exp, self.max_blocks, self.extra = max_sum, max_exp, max_blocks, extra
        super().__init__(dut)

    def elaborate(self, platform):
        from amaranth.hdl import Const, signed
        m = Module()
        frag = self._connect(m, platform)
        props = self.props = Properties(m)
        dut, find = self.dut, SignalFinder(frag)
        p = dut.i.payload
        width = dut.o.payload.total.shape().width
        wide = signed(width + self.extra)
        i_fire = dut.i.valid & dut.i.ready
        props.assume("block_sum_contract", ~dut.i.valid | ((p.sum <= self.max_sum) &
                                                           (p.sum >= -self.max_sum) &
                                                           (p.exp <= self.max_exp)))
        # beats accepted since the last `last` beat: a group has at most max_blocks
        in_group = Signal(range(self.max_blocks + 1), name="in_group")
        props.assume("at_most_max_blocks",
                     ~(dut.i.valid & (in_group == self.max_blocks - 1)) | p.last)
        with m.If(i_fire):
            m.d.sync += in_group.eq(Mux(p.last, 0, in_group + 1))

        t_valid, t_last = find("t_valid"), find("t_last")
        t_term, running = find("t_term"), find("running")
        o_valid, o_total = find("o_valid"), find("o_total")
        t_fire = t_valid & (~t_last | ~o_valid | dut.o.ready)
        ex_term = Signal(wide, reset_less=True, name="exact_term")
        ex_run = Signal(wide, name="exact_running")
        ex_total = Signal(wide, reset_less=True, name="exact_total")
        n_run = Signal(range(self.max_blocks + 1), name="beats_running")
        term = Signal(wide, name="term")
        m.d.comb += term.eq(p.sum.as_signed() << p.exp)
        with m.If(i_fire):
            m.d.sync += ex_term.eq(term)
        with m.If(t_fire):
            with m.If(t_last):
                m.d.sync += [ex_total.eq(ex_run + ex_term), ex_run.eq(0), n_run.eq(0)]
            with m.Else():
                m.d.sync += [ex_run.eq(ex_run + ex_term), n_run.eq(n_run + 1)]

        bound = self.max_sum << self.max_exp             # the largest |term|
        props.check("term_exact", ~t_valid | (t_term.as_signed() == ex_term))
        props.check("term_bound", ~t_valid | ((ex_term <= bound) & (ex_term >= -bound)))
        props.check("running_exact", running.as_signed() == ex_run)
        limit = Signal(wide, name="running_limit")
        m.d.comb += limit.eq(n_run * Const(bound, wide.width))
        props.check("running_bound", (ex_run <= limit) & (ex_run >= -limit))
        # a group's beats: those in the running sum and the one in the first stage (whose `last`
        # restarted the input count as it was taken)
        props.check("beats_counted", in_group == Mux(t_valid & t_last, 0, n_run + t_valid))
        props.check("group_within_max_blocks", (n_run + t_valid <= self.max_blocks) &
                    (in_group < self.max_blocks))
        props.check("no_overflow", ~o_valid | (o_total.as_signed() == ex_total))
        return m


#: AXI4-Stream rules proved for ``bd_linear`` (SPEC 11), in report order.
AXIS_PROPERTIES = {
    "output_stable": "m_axis_y, once valid, keeps tdata/tlast/tuser until taken",
    "no_duplicate": "a result beat is offered only while a row group's tlast beat is owed",
    "within_capacity": "owed result beats stay in [0, capacity]",
    "reset_clears": "after a cycle in reset, m_axis_y_tvalid is low",
    "no_take_in_reset": "both tready outputs are low in reset",
    "occupancy_lemma": "owed result beats equal the row groups pending in the engine (induction lemma)",
}


class AxisProtocolHarness(wiring.Component):
    """The stream rules of :class:`StreamProtocolHarness`, for a unit with AXI4-Stream ports
    (``aclk``/``aresetn``; ``s_axis_*`` in, ``m_axis_*`` out): the harness's clock and reset drive
    ``aclk`` and ``~aresetn``; both input streams are assumed to follow the protocol; one
    ``m_axis`` beat is owed per ``tlast`` beat of ``owed_by``."""

    def __init__(self, dut, *, inputs=("s_axis_x", "s_axis_w"), output="m_axis_y",
                 owed_by="s_axis_w", capacity: int, lemma: Callable | None = None,
                 invariants: Callable | None = None):
        self.dut, self.inputs, self.output = dut, inputs, output
        self.owed_by, self.capacity = owed_by, capacity
        self.lemma, self.invariants = lemma, invariants
        members = {}
        for path, member, value in dut.signature.flatten(dut):
            name = path[0]
            if member.flow == In and name not in ("aclk", "aresetn"):
                members[name] = In(member.shape)
        self._free = list(members)
        # The proof's clock and reset, as ports: the solver drives the reset freely.
        members["clk"], members["rst"] = In(1), In(1)
        super().__init__(members)

    def _port(self, stream, field):
        return getattr(self.dut, f"{stream}_{field}")

    def elaborate(self, platform):
        from amaranth.hdl import Cat as _Cat
        from amaranth.hdl import ClockDomain
        m = Module()
        dut = self.dut
        m.submodules.dut = frag = Fragment.get(dut, platform)
        props = self.props = Properties(m)
        # The unit defines its own local `sync` domain on aclk. The harness's `axis` domain takes its
        # clock and reset from the harness's own ports, and so does the unit: a domain whose clock
        # is not a port of the design is tied to 0 in the netlist (nothing would ever change and
        # every assertion would hold vacuously), and the top's implicit `sync` clashes with the
        # unit's local domain of that name when Amaranth propagates domains.
        axis = ClockDomain("axis", local=True)
        axis.clk = self.clk
        m.domains.axis = axis
        rst = self.rst
        m.d.comb += [axis.rst.eq(rst), dut.aclk.eq(self.clk), dut.aresetn.eq(~rst)]
        for name in self._free:
            m.d.comb += getattr(dut, name).eq(getattr(self, name))
        p_rst = Signal(reset_less=True, name="p_rst")
        m.d.axis += p_rst.eq(rst)

        def fields(stream):
            return [getattr(dut, n) for n in (f"{stream}_tdata", f"{stream}_tlast", f"{stream}_tuser")
                    if hasattr(dut, n)]

        for stream in self.inputs:
            valid, ready = self._port(stream, "tvalid"), self._port(stream, "tready")
            payload = _Cat(*fields(stream))
            p_wait = Signal(reset_less=True, name=f"p_{stream}_wait")
            p_payload = Signal(len(payload), reset_less=True, name=f"p_{stream}_payload")
            m.d.axis += [p_wait.eq(valid & ~ready), p_payload.eq(payload)]
            props.assume(f"{stream}_holds", ~(p_wait & ~p_rst) | (valid & (payload == p_payload)))

        out = self.output
        o_valid, o_ready = self._port(out, "tvalid"), self._port(out, "tready")
        o_payload = _Cat(*fields(out))
        p_o_wait = Signal(reset_less=True, name="p_o_wait")
        p_o_payload = Signal(len(o_payload), reset_less=True, name="p_o_payload")
        m.d.axis += [p_o_wait.eq(o_valid & ~o_ready), p_o_payload.eq(o_payload)]

        src = self.owed_by
        owed_in = (self._port(src, "tvalid") & self._port(src, "tready") & self._port(src, "tlast"))
        o_fire = o_valid & o_ready
        cap = self.capacity
        owed = Signal(range(-2, cap + 3), name="owed")
        m.d.axis += owed.eq(owed + owed_in - o_fire)

        props.check("output_stable", ~(p_o_wait & ~p_rst) | (o_valid & (o_payload == p_o_payload)))
        props.check("no_duplicate", ~o_valid | (owed >= 1))
        props.check("within_capacity", (owed >= 0) & (owed <= cap))
        props.check("reset_clears", ~p_rst | ~o_valid)
        props.check("no_take_in_reset",
                    ~rst | ~_Cat(*[self._port(s, "tready") for s in self.inputs]).any())
        # Induction lemmas, as for StreamProtocolHarness: the owed count equals the unit's pending
        # results, and the unit's own invariants (read from its registers) hold.
        if self.lemma is not None:
            find = SignalFinder(frag)
            props.check("occupancy_lemma", owed == self.lemma(find))
            for name, cond in (self.invariants(find) if self.invariants else {}).items():
                props.check(name, cond)
        for stream in self.inputs:
            props.cover(f"{stream}_beat_taken", self._port(stream, "tvalid") &
                        self._port(stream, "tready") & ~rst)
        props.cover("result_delivered", o_fire)
        props.cover("held_under_backpressure", p_o_wait & ~p_rst & o_valid)
        props.cover("full", owed == cap)
        return m


def assume_as_proved(m, frag, props, proved: dict) -> None:
    """Composition with proofs of the unit's parts: every submodule (at any depth) that is an
    instance of a class in ``proved`` is assumed to satisfy ``proved[cls](m, instance)``, a
    relation between its own ports that another job proves for every input of the same
    generator (a combinational equivalence); the unit's step then need not prove it again."""
    def walk(frag, path):
        for sub, name, _ in frag.subfragments:
            origins = getattr(sub, "origins", None) or (None,)
            for cls, relation in proved.items():
                if isinstance(origins[0], cls):
                    props.assume(f"{'.'.join(path + (name,))}_as_proved", relation(m, origins[0]))
            walk(sub, path + (name,))
    walk(frag, ())


def _part_checker(m, props, part):
    """``check(name, cond, stage)`` of a proof split by stage: stage ``part``'s properties are
    asserted, every other stage's is assumed to have held one cycle ago (``part=None``: all are
    asserted). An assumption on the past only, so the jobs together are an induction over time,
    not a circular argument."""
    def check(name, cond, stage):
        if part is None or part == stage:
            props.check(name, cond)
            return
        held = Signal(init=1, reset_less=True, name=f"held_{name}")
        m.d.sync += held.eq(cond)
        props.assume(f"past_{name}", held)
    return check


def _shadow_records(m, fields, start, in_valid, loads, wanted, prefix, carry_only=None,
                    skid=None):
    """Shadow stages under the loads ``loads`` (one per stage), fed by ``in_valid`` and the fields
    ``start``: ``(valids, records)``. Stage ``n`` evaluates the fields ``wanted[n]`` asks for from
    the previous record, on the way in, and carries those this stage or a later one asks for,
    the start fields a later one computes from, and a field a later one computes from whose own
    inputs are no longer at hand; any other intermediate field is computed again later rather
    than carried, since no lemma would tie it to the unit. With ``carry_only`` a stage carries
    just those fields, and the lemmas recompute the rest from them.

    ``skid``, a :class:`_ShadowSkid`, makes its stage a skid buffer: a spare record of the same
    fields fills when the skid says so, and the stage, when it loads, takes the spare's beat
    first."""
    from .models import evaluate_fields
    valids, records = [], []
    prev_valid, prev = in_valid, start
    for n, load in enumerate(loads):
        valid = Signal(name=f"{prefix}{n}_valid")
        later = set().union(*wanted[n:])
        if carry_only is not None:
            values, keep = prev, set(carry_only)
        else:
            values = evaluate_fields(m, fields, prev, wanted[n])
            keep, todo = set(), list(later)
            while todo:
                name = todo.pop()
                if name in keep:
                    continue
                if name in values and (name in later or name in start or
                                       any(d not in values for d in fields[name][0])):
                    keep.add(name)
                else:
                    todo += fields[name][0]
        record = {name: Signal(len(Value.cast(v)), reset_less=True, name=f"{prefix}{n}_{name}")
                  for name, v in values.items() if name in keep}
        incoming = {name: values[name] for name in record}
        if skid is not None and skid.stage == n:
            skid.record = {name: Signal(len(reg), reset_less=True, name=f"{prefix}{n}_spare_{name}")
                           for name, reg in record.items()}
            with m.If(skid.fill):
                m.d.sync += [skid.record[name].eq(incoming[name]) for name in record]
            incoming = {name: Mux(skid.valid, skid.record[name], v) for name, v in incoming.items()}
            prev_valid = prev_valid | skid.valid
        with m.If(load):
            m.d.sync += valid.eq(prev_valid)
            m.d.sync += [record[name].eq(incoming[name]) for name in record]
        valids.append(valid)
        records.append(record)
        prev_valid, prev = valid, record
    return valids, records


def _same_bits(m, reg, field, name):
    """``reg`` (sign-extended if signed) equals the bits of ``field``, at the wider width."""
    n = max(len(Value.cast(reg)), len(Value.cast(field)))
    a, b = Signal(n, name=f"{name}_hw"), Signal(n, name=f"{name}_model")
    m.d.comb += [a.eq(reg), b.eq(field)]
    return a == b


class _ShadowSkid:
    """The shadow of a skid-buffer stage (:func:`bd_hw.pipeline.pipeline_control` with ``skid``),
    written from the rule, not from the unit: the stage takes a beat whenever its spare bank is
    empty (its ready upstream is ``~valid``); a beat that arrives while the main bank is held
    goes to the spare bank, which empties into the main bank as soon as that loads. ``record``
    (the spare's fields) is filled in by :func:`_shadow_records`."""

    def __init__(self, stage: int, prefix: str):
        self.stage = stage
        self.valid = Signal(name=f"{prefix}{stage}_spare_valid")
        self.fill = Signal(name=f"{prefix}{stage}_spare_fill")
        self.record: dict = {}

    def control(self, m, incoming_valid, load):
        """Fills with ``incoming_valid`` while the stage is held (``~load``); returns the ready
        the stage before sees."""
        m.d.comb += self.fill.eq(~self.valid & incoming_valid & ~load)
        m.d.sync += self.valid.eq((self.valid | incoming_valid) & ~load)
        return ~self.valid


def skid_bank(find, path: str = ""):
    """The spare bank of the skid-buffer stage :class:`bd_hw.pipeline.Stages` built at ``path``:
    ``(stage index, spare valid, {key: register})``, the registers named
    ``<stage>_spare_<key>``; None if the pipeline has none."""
    import re
    regs = find.registers(path)
    found = [(int(mt[1]), sig) for name, sig in regs.items()
             if (mt := re.fullmatch(r"s(\d+)_spare_valid", name))]
    if not found:
        return None
    (stage, valid), = found
    keys = {mt[1]: sig for name, sig in regs.items()
            if (mt := re.fullmatch(r"s\d+_spare_(.+)", name)) and mt[1] != "valid"}
    return stage, valid, keys


def pipeline_stages(find, path: str = ""):
    """The stages a :class:`bd_hw.pipeline.Stages` built at ``path``: ``[(name, valid, {key:
    register})]`` in pipeline order (the order their registers are first assigned in), each
    register named ``<stage>_<key>``; the count is checked against the valid bits. A skid
    stage's spare bank (``<stage>_spare_<key>``) is left to :func:`skid_bank`."""
    import re
    regs = find.registers(path)
    valids = sorted((int(mt[1]), sig) for name, sig in regs.items()
                    if (mt := re.fullmatch(r"s(\d+)_valid", name)))
    stages: dict[str, dict] = {}
    for name, sig in regs.items():
        if re.fullmatch(r"s\d+_(valid|load)", name) or re.fullmatch(r"s\d+_spare_.+", name):
            continue
        stage, _, key = name.partition("_")
        stages.setdefault(stage, {})[key] = sig
    if len(stages) != len(valids) or [n for n, _ in valids] != list(range(len(valids))):
        raise KeyError(f"{len(stages)} register stages ({', '.join(stages)}) for "
                       f"{len(valids)} valid bits at {path or 'the top'}")
    return [(stage, valid, keys) for (stage, keys), (_, valid) in zip(stages.items(), valids)]


class DotShadowHarness(_StreamHarnessBase):
    """End-to-end equivalence of ``bd_dot`` (exact accumulation) to the plain model of SPEC 6, for
    all time (k-induction), as :class:`ShadowPipelineHarness` does for a pipeline, with a shadow
    of the accumulator between two shadow pipelines.

    The shadow is written here from the handshake rules, independently of the unit: the front
    stages (decode, multiply, block sum) are an in-order queue fed by the unit's input transfers;
    then a term stage ``T`` that moves on at once unless it holds a ``last`` beat and the total
    stage ``O`` is still full; a running sum that adds each term moving on and restarts at 0 after
    a ``last`` one; the total stage ``O``, loaded with running sum plus term when a ``last`` beat
    moves on; then the normaliser's stages, an in-order queue ending at ``o.ready``. What travels
    is the plain model (:func:`formal.models.dot_fields`): each front field evaluated where the
    unit first holds it, the term ``S * 2^exp``, the group's total, and at the normaliser every
    field recomputed from the carried total (the FP32 result by :func:`formal.models.fp32_model`).
    Claim: while ``o.valid``, ``o.result`` is the model's FP32 value of the total of the group
    whose ``last`` beat is in the shadow's last stage. With the ``"ready"`` cut the last front
    stage is a skid buffer, and so is the shadow's (:class:`_ShadowSkid`): its ready upstream is
    its spare bank being empty, a beat arriving while it is held waits in the spare bank.

    Lemmas tie each valid bit of the unit to the shadow's, each register ``<stage>_<key>`` of a
    valid stage to the model field ``key_fields[key]`` of the beat beside it (``lz`` only for a
    non-zero total), the skid buffer's spare valid bit and, while it is set, each spare register
    ``<stage>_spare_<key>`` to the shadow's spare beat (part of that stage's job), and the
    accumulator's term, running sum and total to the shadow's. ``part``
    splits the proof by stage as in :class:`ShadowPipelineHarness`: parts ``0 .. F-1`` the front
    stages, ``F`` the term stage, ``F + 1`` the running sum and total, then the normaliser's.
    """

    #: register key -> model field (``bd_hw.dot`` names; a new key fails loudly)
    KEY_FIELDS = {"a": "a", "w": "w", "exp": "exp", "last": "last", "products": "lane_values",
                  "negatives": "negatives", "counts": "negative_counts",
                  "partial": "partial", "sum": "sum", "sign": "sign", "mag": "mag",
                  "zero": "zero", "wide": "wide", "lz": "lz", "norm": "norm", "result": "result",
                  "term": "term"}
    INPUTS = ("a_codes", "a_dialect", "a_exp", "w_codes", "w_dialect", "w_exp", "last")

    def __init__(self, dut, *, fields: dict, part=None, proved=None):
        self.fields, self.part, self.proved = fields, part, proved or {}
        super().__init__(dut)

    def elaborate(self, platform):
        from .models import evaluate_fields
        m = Module()
        frag, props, dut, find, check = self._start_split(m, platform)
        front = pipeline_stages(find)
        back = pipeline_stages(find, "norm")
        nf, nn = len(front), len(back)
        if nf + 2 + nn != dut.latency:
            raise AssertionError(f"{nf} + 2 + {nn} stages found for a latency of {dut.latency}")
        acc = {n: find(n, "accumulator") for n in ("t_valid", "t_term", "t_last", "o_valid",
                                                  "o_total", "running")}

        def wanted(stages):
            return [{self.KEY_FIELDS[k] for k in keys} for _, _, keys in stages]

        # shadow control, from the output back (the textbook rule; T moves on unless it holds a
        # `last` beat and O stays full)
        n_loads = [Signal(name=f"shadow_n{n}_load") for n in range(nn)]
        f_loads = [Signal(name=f"shadow_f{n}_load") for n in range(nf)]
        t_load, o_load, t_fire = (Signal(name="shadow_t_load"), Signal(name="shadow_o_load"),
                                  Signal(name="shadow_t_fire"))
        f_wanted = wanted(front) + [{"term", "last"}]
        p = dut.i.payload
        start = {name: Value.cast(getattr(p, name)) for name in self.INPUTS}
        spare = skid_bank(find)
        if spare is not None and spare[0] != nf - 1:
            raise AssertionError(f"a skid buffer in front stage {spare[0]}, not the last ({nf - 1})")
        skid = _ShadowSkid(nf - 1, "shadow_f") if spare is not None else None
        fvalids, frecords = _shadow_records(m, self.fields, start, dut.i.valid & dut.i.ready,
                                            f_loads + [t_load], f_wanted, "shadow_f", skid=skid)
        tv, trec = fvalids.pop(), frecords.pop()
        ov = Signal(name="shadow_o_valid")
        running = Signal(len(acc["running"]), name="shadow_running")
        total = Signal(len(acc["o_total"]), reset_less=True, name="shadow_o_total")
        nvalids, nrecords = _shadow_records(m, self.fields, {"total": total}, ov, n_loads,
                                            wanted(back), "shadow_n", carry_only={"total"})
        nxt = dut.o.ready
        for n in reversed(range(nn)):
            m.d.comb += n_loads[n].eq(~nvalids[n] | nxt)
            nxt = n_loads[n]
        m.d.comb += [o_load.eq(~ov | nxt), t_fire.eq(tv & (~trec["last"] | o_load)),
                     t_load.eq(~tv | t_fire)]
        nxt = t_load
        for n in reversed(range(nf)):
            m.d.comb += f_loads[n].eq(~fvalids[n] | nxt)
            nxt = f_loads[n]
            if skid is not None and n == skid.stage:      # the stage before sees a registered ready
                nxt = skid.control(m, fvalids[n - 1], f_loads[n])
        with m.If(o_load):
            m.d.sync += ov.eq(t_fire & trec["last"])
        with m.If(t_fire):
            with m.If(trec["last"]):
                m.d.sync += [total.eq(running + trec["term"]), running.eq(0)]
            with m.Else():
                m.d.sync += running.eq(running + trec["term"])

        def stage_lemmas(part, label, valid, keys, shadow_valid, record, recompute):
            check(f"{label}_valid", valid == shadow_valid, part)
            asked = {self.KEY_FIELDS[k] for k in keys} | ({"zero"} if "lz" in keys else set())
            f = evaluate_fields(m, self.fields, record, asked) if recompute else record
            for key, reg in sorted(keys.items()):
                same = _same_bits(m, reg, f[self.KEY_FIELDS[key]], f"lemma_{label}_{key}")
                if key == "lz":          # the count of a zero total is not used
                    same = same | f["zero"]
                check(f"{label}_{key}", ~shadow_valid | same, part)

        for n, (name, valid, keys) in enumerate(front):
            stage_lemmas(n, name, valid, keys, fvalids[n], frecords[n], False)
        if skid is not None:                # the spare bank: its valid and, if set, its beat
            _, spare_valid, spare_keys = spare
            stage_lemmas(skid.stage, f"{front[-1][0]}_spare", spare_valid, spare_keys, skid.valid,
                         skid.record, False)
        stage_lemmas(nf, "t", acc["t_valid"], {"term": acc["t_term"], "last": acc["t_last"]},
                     tv, trec, False)
        check("o_valid", acc["o_valid"] == ov, nf + 1)
        check("o_total", ~ov | (acc["o_total"].as_unsigned() == total), nf + 1)
        check("running", acc["running"].as_unsigned() == running, nf + 1)
        for n, (name, valid, keys) in enumerate(back):
            stage_lemmas(nf + 2 + n, f"norm_{name}", valid, keys, nvalids[n], nrecords[n], True)
        result = evaluate_fields(m, self.fields, nrecords[-1], {"result"})["result"]
        check("result", ~dut.o.valid | (dut.o.payload.result == result), dut.latency - 1)
        return m
