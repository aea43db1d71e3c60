"""Valid/ready control for a linear pipeline of registered stages (shared by the clocked units).

Stage ``n`` holds a valid bit ``valid[n]`` and a bank of data registers. A stage may load when it
is empty or when its content moves on in the same cycle:

    load[n] = ~valid[n] | load[n + 1]        load[N] = downstream ready

so bubbles collapse, one beat moves per stage per clock when the output is accepted, and a full
pipeline holds every register (and therefore the output payload) while the output is not accepted.
``i.ready`` is ``load[0]`` gated by the domain's reset (no beat is taken, and lost, while ``rst`` is
high): it depends combinationally on ``o.ready`` and ``rst`` (allowed by the stream rules), never on
``i.valid``; ``o.valid`` is a register, so it never depends on ``o.ready``.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, ResetSignal, Signal
from amaranth.lib import data

__all__ = ["pipeline_control", "skid_stage_of", "take", "Stages"]


def skid_stage_of(stages: int, skid: bool, skid_stage: int | None = None) -> int | None:
    """The index of the skid-buffer stage of :func:`pipeline_control` (None without ``skid``):
    ``skid_stage``, by default the last; it needs a stage before it."""
    if not skid:
        return None
    at = stages - 1 if skid_stage is None else skid_stage
    if not 1 <= at < stages:
        raise ValueError(f"skid_stage must be from 1 to {stages - 1} of {stages} stages, not {at!r}")
    return at


def pipeline_control(m: Module, stages: int, in_valid, in_ready, out_ready, *, prefix="s",
                     skid: bool = False, skid_stage: int | None = None):
    """Build the control of ``stages`` registered stages.

    Returns ``(valid, load, spare_valid)``: lists of ``stages`` signals and, with ``skid``, the
    valid bit of the skid stage's spare register bank (else None). ``valid[n]`` is stage ``n``'s
    valid register (``valid[-1]`` drives the output's valid). Data registers of stage ``n`` must be
    written only when ``load[n]`` is high (callers usually also require the incoming valid, see
    :func:`take`). ``in_ready`` is driven here.

    With ``skid`` stage ``skid_stage`` (by default the last) is a skid buffer: it takes a beat
    whenever its spare bank is empty, into the spare bank if its main bank is held, so the stages
    before it see a registered ready (``~spare_valid``) instead of the combinational ready from
    downstream, and the enables of the two sides are separate nets. The pipeline then holds one
    beat more than it has stages.
    """
    if stages < 1:
        raise ValueError("stages must be at least 1")
    at = skid_stage_of(stages, skid, skid_stage)
    valid = [Signal(name=f"{prefix}{n}_valid") for n in range(stages)]
    load = [Signal(name=f"{prefix}{n}_load") for n in range(stages)]
    spare_valid = Signal(name=f"{prefix}{at}_spare_valid") if skid else None
    nxt = out_ready
    for n in reversed(range(stages)):
        m.d.comb += load[n].eq(~valid[n] | nxt)
        nxt = ~spare_valid if n == at else load[n]     # the skid stage's ready is a register
    m.d.comb += in_ready.eq(load[0] & ~ResetSignal())
    prev = in_valid
    for n in range(stages):
        with m.If(load[n]):
            m.d.sync += valid[n].eq(prev | spare_valid if n == at else prev)
        prev = valid[n]
    if skid:
        incoming = valid[at - 1]
        # The spare bank fills when a beat arrives while the main bank is held, and empties
        # into the main bank as soon as that loads; meanwhile the stage refuses new beats.
        with m.If(spare_valid):
            with m.If(load[at]):
                m.d.sync += spare_valid.eq(0)
        with m.Elif(incoming & ~load[at]):
            m.d.sync += spare_valid.eq(1)
    return valid, load, spare_valid


def take(valid, load, in_valid, n):
    """Condition under which stage ``n`` captures a new beat: it loads and its input is valid."""
    prev = in_valid if n == 0 else valid[n - 1]
    return load[n] & prev


class Stages:
    """Data registers of a linear pipeline built by :func:`pipeline_control`, stage by stage.

    ``Stages(m, count, i_valid, i_ready, o_ready)`` creates the control of ``count`` stages;
    ``register(name, **values)`` then closes the next stage: each value gets a reset-less register
    (named ``<name>_<key>``) loaded with it when the stage takes a beat, and a dict of the
    registers is returned. ``cut(name, enabled, **values)`` does the same only if ``enabled`` (an optional
    stage) and otherwise returns the values as they are, so that one description of the datapath
    serves every choice of cut points. After the last stage, :attr:`valid` drives the
    output's valid. With ``skid`` stage ``skid_stage`` (by default the last) is a skid buffer (see
    :func:`pipeline_control`): its registers get a spare bank, ``<name>_spare_<key>``.
    """

    def __init__(self, m: Module, count: int, in_valid, in_ready, out_ready, *, prefix="s",
                 skid: bool = False, skid_stage: int | None = None):
        self.m, self.count, self.in_valid = m, count, in_valid
        self.valids, self.loads, self.spare_valid = pipeline_control(
            m, count, in_valid, in_ready, out_ready, prefix=prefix, skid=skid,
            skid_stage=skid_stage)
        self.skid_stage = skid_stage_of(count, skid, skid_stage)
        self.closed = 0

    @property
    def valid(self):
        return self.valids[-1]

    def _bank(self, name: str, value):
        """A reset-less register for ``value`` and the view of it the datapath reads."""
        shape = value.shape()
        if isinstance(shape, data.Layout):
            # A plain register seen through the layout: the same bits, without a Verilog wire for
            # every field and array element of every stage.
            raw = Signal(shape.size, name=name, reset_less=True)
            return raw, shape(raw)
        reg = Signal(shape, name=name, reset_less=True)
        return reg, reg

    def register(self, name: str, **values) -> dict:
        if self.closed >= self.count:
            raise AssertionError(f"stage {name} is beyond the {self.count} stages built")
        n = self.closed
        skid = n == self.skid_stage
        regs, banks = {}, []
        for key, value in values.items():
            reg, regs[key] = self._bank(f"{name}_{key}", value)
            if skid:
                # The spare bank takes the incoming value whenever it is empty (it only counts
                # once spare_valid is set); the main bank takes the spare's beat first.
                spare, _ = self._bank(f"{name}_spare_{key}", value)
                with self.m.If(~self.spare_valid):
                    self.m.d.sync += spare.eq(value)
                value = Mux(self.spare_valid, spare, value)
            banks.append((reg, value))
        if skid:
            loads = self.loads[n] & (self.spare_valid | self.valids[n - 1])
        else:
            loads = take(self.valids, self.loads, self.in_valid, n)
        with self.m.If(loads):
            self.m.d.sync += [reg.eq(value) for reg, value in banks]
        self.closed += 1
        return regs

    def cut(self, name: str, enabled: bool, **values) -> dict:
        return self.register(name, **values) if enabled else values
