"""What the three testbenches share: run parameters, statistics files, and a stream-unit bench.

Parameters reach the cocotb test modules through the environment (set by ``tb/runner.py``):

- ``TB_UNIT``: the registered unit under test (``bd_hw.units``); default ``bd_quantizer``.
- ``TB_BLOCK``: block size B (16, 32 or 64); default 32.
- ``TB_DEPTH``: ``quick`` (the reduced run of the test suite), ``light`` (B = 16 and 64 in a full
  run) or ``full``; default ``quick``.
- ``TB_SEED``: base seed of every random stimulus; default 1.
- ``TB_STATS_DIR``: folder for one JSON file of figures per test; default the working folder.
- ``TB_REAL``: ``0`` skips the real SmolLM2 blocks (they need the model file); default ``1``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from .scoreboard import Scoreboard
from .stream import ClockCounter, StreamSink, StreamSource, never_pause

CLOCK_PERIOD_NS = 10
DEPTHS = ("quick", "light", "full")


@dataclass(frozen=True)
class Params:
    unit: str
    block: int
    depth: str
    seed: int
    stats_dir: Path
    real: bool

    @property
    def full(self) -> bool:
        return self.depth == "full"

    def count(self, quick: int, full: int, light: int | None = None) -> int:
        """Stimulus size for this depth; ``light`` (the other block sizes of a full run) defaults
        to a quarter of ``full``."""
        if self.depth == "quick":
            return quick
        if self.depth == "light":
            return light if light is not None else max(quick, full // 4)
        return full


def params() -> Params:
    block = int(os.environ.get("TB_BLOCK", "32"))
    depth = os.environ.get("TB_DEPTH", "quick")
    if depth not in DEPTHS:
        raise ValueError(f"TB_DEPTH must be one of {DEPTHS}, got {depth!r}")
    return Params(unit=os.environ.get("TB_UNIT", "bd_quantizer"), block=block, depth=depth, seed=int(os.environ.get("TB_SEED", "1")),
                  stats_dir=Path(os.environ.get("TB_STATS_DIR", ".")),
                  real=os.environ.get("TB_REAL", "1") != "0")


def write_stats(test: str, **figures):
    """One JSON file per test; the runner adds them up per unit and block size."""
    p = params()
    p.stats_dir.mkdir(parents=True, exist_ok=True)
    record = {"test": test, "unit": p.unit, "block": p.block, "depth": p.depth, "seed": p.seed, **figures}
    (p.stats_dir / f"{test}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


class StreamBench:
    """Clock, reset, source, sink and scoreboard around one clocked stream unit."""

    def __init__(self, dut, scoreboard: Scoreboard):
        self.dut = dut
        self.scoreboard = scoreboard
        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        self.counter = ClockCounter(dut.clk)
        dut.rst.value = 1
        self.source = StreamSource(dut, "i", dut.clk, dut.rst, self.counter)
        self.sink = StreamSink(dut, "o", dut.clk, dut.rst, self.counter, callback=scoreboard.compare)

    async def reset(self, cycles: int = 3) -> int:
        """Synchronous reset for ``cycles + 1`` edges, with the source quiet and the sink not ready.

        Returns how many times ``o.valid`` was still high after a reset edge (must be 0: a
        synchronous reset clears the output register at the first edge).
        """
        self.source.clear()
        self.source.enabled = False
        self.sink.enabled = False
        await RisingEdge(self.dut.clk)
        self.dut.rst.value = 1
        lingering = 0
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            lingering += int(bool(self.dut.o__valid.value))
        await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self.source.enabled = True
        self.sink.enabled = True
        return lingering

    async def cycles(self, n: int):
        for _ in range(n):
            await RisingEdge(self.dut.clk)

    async def drain(self, timeout_cycles: int):
        """Waits until the source is empty and every expected beat has arrived, or for at most
        ``timeout_cycles`` (a unit that stops taking or giving beats fails the count checks)."""
        start = self.counter.cycles
        while ((not self.source.idle() or self.scoreboard.pending)
               and self.counter.cycles - start < timeout_cycles):
            await RisingEdge(self.dut.clk)
        # A few extra cycles catch any beat the unit sends beyond the expected ones.
        await self.cycles(8)

    async def output_stays_quiet(self, cycles: int) -> int:
        """Counts cycles in which o.valid is high while nothing was sent (must stay 0)."""
        busy = 0
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            busy += int(bool(self.dut.o__valid.value))
        return busy

    def set_traffic(self, idle=None, backpressure=None):
        self.source.set_pause_generator(idle if idle is not None else never_pause())
        self.sink.set_pause_generator(backpressure if backpressure is not None else never_pause())

    def throughput(self, first_beat: int) -> dict:
        """Input beats per cycle over the span of the beats taken since index ``first_beat``."""
        beats = self.source.accepted[first_beat:]
        if len(beats) < 2:
            return {"beats": len(beats), "cycles": 0, "blocks_per_cycle": 0.0}
        span = beats[-1][0] - beats[0][0] + 1
        return {"beats": len(beats), "cycles": span, "blocks_per_cycle": len(beats) / span}


async def run_stream(bench: StreamBench, inputs: list[int], expected: list, idle=None,
                     backpressure=None, timeout_cycles: int | None = None) -> dict:
    """Sends ``inputs``, expects ``expected`` in order, and waits until everything has arrived.

    Returns figures of this run: cycles, beats taken and beats received, and where each of them
    sits in the source's and sink's logs (for throughput and latency).
    """
    first_in, first_out = len(bench.source.accepted), len(bench.sink.received)
    start = bench.counter.cycles
    bench.set_traffic(idle, backpressure)
    bench.scoreboard.expect_all(expected)
    bench.source.send_all(inputs)
    if timeout_cycles is None:
        timeout_cycles = 20 * len(inputs) + 1000
    await bench.drain(timeout_cycles)
    return {"cycles": bench.counter.cycles - start,
            "accepted": len(bench.source.accepted) - first_in,
            "received": len(bench.sink.received) - first_out,
            "first_in": first_in, "first_out": first_out}


def count_problems(run: dict, inputs: int, outputs: int, scoreboard: Scoreboard) -> list[str]:
    """Nothing lost, nothing duplicated: every input taken once, every result delivered once.

    Returns the problems found, so a test can record its figures before it fails.
    """
    problems = []
    if run["accepted"] != inputs:
        problems.append(f"the unit took {run['accepted']} of {inputs} input beats")
    if run["received"] != outputs:
        problems.append(f"{run['received']} output beats for {outputs} expected")
    if scoreboard.pending:
        problems.append(f"{scoreboard.pending} expected beats never arrived")
    return problems


def check_run(bench: StreamBench, board: dict, problems: list[str]):
    """The checks every stream run ends with: nothing lost or duplicated (`problems` from
    :func:`count_problems`), every beat equal to the golden model, and every offered-but-not-taken
    output beat kept valid and unchanged."""
    assert not problems, "; ".join(problems)
    assert board["mismatches"] == 0, board["first_failure"]
    assert bench.sink.unstable_beats == 0, \
        f"o.valid dropped or o.payload changed {bench.sink.unstable_beats} times before a transfer"
