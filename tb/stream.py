"""Valid/ready stream driver and monitor for the Amaranth stream ports of SPEC 9.

The ports are ``<name>__payload``, ``<name>__valid`` and ``<name>__ready`` (``i`` into the unit,
``o`` out of it), all on the rising edge of ``clk``. The classes follow cocotbext-axi's shape: a
source with a send queue and a pause generator, a sink with a receive queue and a pause generator.

Timing discipline, which makes the handshake exact whatever order the simulator updates registers
in: every coroutine writes its inputs right after a rising edge, then waits for ``ReadOnly`` and
samples there. The values seen in ``ReadOnly`` are the ones the next rising edge acts on, so
``valid and ready`` there is precisely a transfer at that edge.

Pause generators yield one bool per clock: ``True`` holds ``valid`` low (source) or ``ready`` low
(sink) for that cycle. ``itertools.cycle([False, True])`` or :func:`random_pauses` both fit.
"""
from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Iterator

import cocotb
from cocotb.triggers import Event, ReadOnly, RisingEdge

__all__ = ["ClockCounter", "StreamSource", "StreamSink", "random_pauses", "never_pause"]


def never_pause() -> Iterator[bool]:
    return itertools.repeat(False)


def random_pauses(probability: float, seed: int) -> Iterator[bool]:
    """A seeded pause pattern: each cycle pauses with ``probability``."""
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"probability must be in [0, 1), got {probability}")
    rng = random.Random(seed)
    while True:
        yield rng.random() < probability


class ClockCounter:
    """Counts rising edges, so beats can be stamped with the cycle they happened in."""

    def __init__(self, clock):
        self.clock = clock
        self.cycles = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.clock)
            self.cycles += 1

    def stop(self):
        self._task.cancel()


class _StreamPort:
    def __init__(self, dut, name: str, clock, reset=None):
        self.payload = getattr(dut, f"{name}__payload")
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.clock = clock
        self.reset = reset
        self.pause_generator: Iterator[bool] = never_pause()

    def set_pause_generator(self, generator: Iterator[bool] | None):
        self.pause_generator = generator if generator is not None else never_pause()

    def _in_reset(self) -> bool:
        return self.reset is not None and bool(self.reset.value)


class StreamSource(_StreamPort):
    """Drives ``i__payload``/``i__valid`` from a queue of integer payloads.

    Once ``valid`` is raised it stays high with the same payload until the beat is taken; the pause
    generator only opens gaps between beats. ``accepted`` lists ``(cycle, payload)`` of every beat
    the unit took.
    """

    def __init__(self, dut, name: str, clock, reset=None, counter: ClockCounter | None = None):
        super().__init__(dut, name, clock, reset)
        self.queue: deque[int] = deque()
        self.counter = counter
        self.accepted: list[tuple[int, int]] = []
        self.enabled = True
        self._current: int | None = None
        self._idle = Event()
        self._idle.set()
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send(self, payload: int):
        self.queue.append(int(payload))
        self._idle.clear()

    def send_all(self, payloads):
        for p in payloads:
            self.send(p)

    def idle(self) -> bool:
        return self._current is None and not self.queue

    async def wait(self):
        """Returns when every queued beat has been taken."""
        if not self.idle():
            await self._idle.wait()

    def clear(self):
        """Drops the queue and the beat on offer (used when the unit is reset mid-stream)."""
        self.queue.clear()
        self._current = None
        self.valid.value = 0
        self._idle.set()

    async def _run(self):
        while True:
            await RisingEdge(self.clock)
            # Post-edge phase: decide what to offer in this cycle.
            pause = next(self.pause_generator)
            if self._current is None and self.queue and not pause and self.enabled:
                self._current = self.queue.popleft()
                self.payload.value = self._current
            self.valid.value = int(self._current is not None and self.enabled)
            await ReadOnly()
            if (self._current is not None and self.enabled and not self._in_reset()
                    and self.ready.value):
                cycle = self.counter.cycles if self.counter is not None else 0
                self.accepted.append((cycle, self._current))
                self._current = None
                if not self.queue:
                    self._idle.set()


class StreamSink(_StreamPort):
    """Drives ``o__ready`` from the pause generator and records every beat taken.

    ``received`` lists ``(cycle, payload)``; ``callback`` (if given) sees each payload as it
    arrives. Beats offered while reset is high are not counted: the unit is being cleared.

    It also checks the stream rule on the unit's side: a beat offered and not taken must still be
    offered, unchanged, in the next cycle. ``unstable_beats`` counts the cycles that broke it.
    """

    def __init__(self, dut, name: str, clock, reset=None, counter: ClockCounter | None = None,
                 callback: Callable[[int], None] | None = None):
        super().__init__(dut, name, clock, reset)
        self.counter = counter
        self.callback = callback
        self.received: list[tuple[int, int]] = []
        self.enabled = True
        self.unstable_beats = 0
        self._held: int | None = None      # payload offered but not taken in the previous cycle
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.clock)
            pause = next(self.pause_generator)
            self.ready.value = int(self.enabled and not pause)
            await ReadOnly()
            if self._in_reset():
                self._held = None
                continue
            valid = bool(self.valid.value)
            payload = self.payload.value.to_unsigned() if valid else None
            if self._held is not None and payload != self._held:
                self.unstable_beats += 1
            taken = valid and self.enabled and not pause
            self._held = payload if valid and not taken else None
            if taken:
                cycle = self.counter.cycles if self.counter is not None else 0
                self.received.append((cycle, payload))
                if self.callback is not None:
                    self.callback(payload)
