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

__all__ = ["pipeline_control"]


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
