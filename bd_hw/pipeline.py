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

from amaranth.hdl import Module, ResetSignal, Signal
from amaranth.lib import data

__all__ = ["pipeline_control", "take", "Stages"]


def pipeline_control(m: Module, stages: int, in_valid, in_ready, out_ready, *, prefix="s"):
    """Build the control of ``stages`` registered stages.

    Returns ``(valid, load)``: lists of ``stages`` signals. ``valid[n]`` is stage ``n``'s valid
    register (``valid[-1]`` drives the output's valid). Data registers of stage ``n`` must be
    written only when ``load[n]`` is high (callers usually also require the incoming valid, see
    :func:`take`). ``in_ready`` is driven here.
    """
    if stages < 1:
        raise ValueError("stages must be at least 1")
    valid = [Signal(name=f"{prefix}{n}_valid") for n in range(stages)]
    load = [Signal(name=f"{prefix}{n}_load") for n in range(stages)]
    nxt = out_ready
    for n in reversed(range(stages)):
        m.d.comb += load[n].eq(~valid[n] | nxt)
        nxt = load[n]
    m.d.comb += in_ready.eq(load[0] & ~ResetSignal())
    prev = in_valid
    for n in range(stages):
        with m.If(load[n]):
            m.d.sync += valid[n].eq(prev)
        prev = valid[n]
    return valid, load


def take(valid, load, in_valid, n):
    """Condition under which stage ``n`` captures a new beat: it loads and its input is valid."""
    prev = in_valid if n == 0 else valid[n - 1]
    return load[n] & prev


class Stages:
    """Data registers of a linear pipeline built by :func:`pipeline_control`, stage by stage.

    ``Stages(m, count, i_valid, i_ready, o_ready)`` creates the control of ``count`` stages;
    ``register(name, **values)`` then closes the next stage: each value gets a reset-less register
    (named ``<name>_<key>``) loaded with it when the stage takes a beat, and a dict of the registers
    is returned. ``cut(name, enabled, **values)`` does the same only if ``enabled`` (an optional
    stage) and otherwise returns the values as they are, so that one description of the datapath
    serves every choice of cut points. After the last stage, :attr:`valid` drives the
    output's valid.
    """

    def __init__(self, m: Module, count: int, in_valid, in_ready, out_ready, *, prefix="s"):
        self.m, self.count, self.in_valid = m, count, in_valid
        self.valids, self.loads = pipeline_control(m, count, in_valid, in_ready, out_ready,
                                                   prefix=prefix)
        self.closed = 0

    @property
    def valid(self):
        return self.valids[-1]

    def register(self, name: str, **values) -> dict:
        if self.closed >= self.count:
            raise AssertionError(f"stage {name} is beyond the {self.count} stages built")
        regs = {}
        with self.m.If(take(self.valids, self.loads, self.in_valid, self.closed)):
            for key, value in values.items():
                shape = value.shape()
                if isinstance(shape, data.Layout):
                    # A plain register seen through the layout: the same bits, without a Verilog
                    # wire for every field and array element of every stage.
                    raw = Signal(shape.size, name=f"{name}_{key}", reset_less=True)
                    self.m.d.sync += raw.eq(value)
                    regs[key] = shape(raw)
                else:
                    reg = Signal(shape, name=f"{name}_{key}", reset_less=True)
                    self.m.d.sync += reg.eq(value)
                    regs[key] = reg
        self.closed += 1
        return regs

    def cut(self, name: str, enabled: bool, **values) -> dict:
        return self.register(name, **values) if enabled else values
