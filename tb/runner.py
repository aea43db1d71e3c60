"""Builds every unit with Verilator and runs its cocotb testbench against the golden model.

    python -m tb.runner [--quick] [--out DIR] [--units bd_decoder,bd_quantizer,...] [--blocks 16,32,64]

Units are the registry's (:mod:`bd_hw.units`: ``bd_decoder``, ``bd_quantizer``,
``bd_quantizer_trunc``, ``bd_dot``, the ``_fast`` pipeline settings, the ``bd_linear`` engines),
each at those of ``--blocks`` it is emitted for. ``--quick`` is the reduced run of the test suite;
without it B = 32 runs at full depth and the other block sizes and the deeper pipeline settings
(``bd_quantizer_fast``, ``bd_dot_fast``, ``bd_linear_fast_n4``) and the engines wider than four
lanes (``bd_linear_n8``) at a lighter one (a quarter to a fifth of the stimulus); ``--depth`` sets one
depth for every unit run (``--depth full --units bd_dot_fast``). A unit emitted on request
(``bd_linear_n16``, not in ``rtl/``) runs only when ``--units`` names it, from its Verilog written
into ``<build root>/rtl/``; with ``--update`` its row is kept while that Verilog is unchanged. ``WAVES=1`` in the environment
writes a trace next to each run (``sim_build/<unit>_b<B>_waves/run_<depth>/``): ``dump.fst`` when the
host has liblz4-dev for Verilator's FST writer, ``dump.vcd`` otherwise.

Writes ``summary.json``, the merged JUnit file ``results.xml`` (plus
one per unit and block size under ``junit/``) and the simulation logs under ``logs/`` in the out
folder; prints a summary table; exits non-zero on any mismatch or failed test.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bd_hw import units
from bd_hw.units import parse_blocks, parse_units
from golden.spec import BLOCK_SIZES

from .build import REPO, RTL_DIR, SIM_BUILD, build, rtl_file, test_module

FULL_BLOCK = 32          # the block size run at full depth; the others run lighter
FULL_LANES = 4           # engines of more lanes run lighter


@dataclass
class UnitRun:
    unit: str
    block: int
    depth: str
    tests: int = 0
    failed: int = 0
    vectors: int = 0
    mismatches: int = 0
    cycles: int = 0
    blocks_per_cycle: float | None = None
    latency: list | None = None    # cycles from taking a beat to offering its result
    build_seconds: float = 0.0
    sim_seconds: float = 0.0
    error: str | None = None
    failures: list = field(default_factory=list)   # failure messages of the JUnit file
    details: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and self.failed == 0 and self.tests > 0 and self.mismatches == 0


DEPTHS = ("quick", "light", "full")


def depth_for(block: int, quick: bool, unit: str = "") -> str:
    """quick with --quick; else full at FULL_BLOCK for units at the default pipeline setting, and
    light for the other block sizes, the deeper pipeline settings (the ``_fast`` units) and the
    engines wider than FULL_LANES (their builds take longest; every lane runs the same logic)."""
    if quick:
        return "quick"
    params = units.get(unit).params if unit else {}
    lighter = bool(params.get("pipeline")) or params.get("N", 1) > FULL_LANES
    return "full" if block == FULL_BLOCK and not lighter else "light"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tb.runner", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="WAVES=1 in the environment writes a trace per run "
                                            "(FST with the host's liblz4-dev, VCD otherwise).")
    parser.add_argument("--quick", action="store_true", help="reduced stimulus (the test-suite run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default reports/sim, or reports/sim-quick with --quick)")
    parser.add_argument("--units", type=parse_units(), default=None,
                        help="comma-separated units (default every emitted one: "
                             f"{','.join(u.name for u in units.UNITS.values() if not u.on_request)}; "
                             "a unit emitted on request, such as bd_linear_n16, runs when named, "
                             "from Verilog written into the build folder)")
    parser.add_argument("--blocks", type=parse_blocks, default=list(BLOCK_SIZES),
                        help="comma-separated block sizes (default 16,32,64; each unit runs at "
                             "those it is emitted for)")
    parser.add_argument("--seed", type=int, default=1, help="base seed of the random stimulus")
    parser.add_argument("--rtl", type=Path, default=RTL_DIR, help="folder of the emitted Verilog")
    parser.add_argument("--build-root", type=Path, default=SIM_BUILD,
                        help="folder of the Verilator builds, one per unit and block size "
                             "(default sim_build)")
    parser.add_argument("--depth", choices=DEPTHS, default=None,
                        help="stimulus depth of every unit run (default: quick with --quick, else "
                             "as described above)")
    parser.add_argument("--no-real", action="store_true",
                        help="skip real SmolLM2 blocks (no model file needed)")
    parser.add_argument("--update", action="store_true",
                        help="keep the previous summary's rows of the units and block sizes not run "
                             "now, when their Verilog is unchanged (rows of changed files are dropped)")
    args = parser.parse_args(argv)
    args.on_request = args.units is not None       # named units run even if emitted on request
    if args.units is None:
        args.units = list(units.UNITS)
    if args.out is None:
        args.out = REPO / ("reports/sim-quick" if args.quick else "reports/sim")
    return args


def _collect_stats(stats_dir: Path, run: UnitRun):
    for path in sorted(stats_dir.glob("*.json")):
        record = json.loads(path.read_text())
        run.details.append(record)
        run.vectors += int(record.get("vectors", 0))
        run.mismatches += int(record.get("mismatches", 0))
        run.cycles += int(record.get("cycles", 0))
        if record.get("blocks_per_cycle") is not None:
            run.blocks_per_cycle = record["blocks_per_cycle"]
        if record.get("latency") is not None:
            run.latency = record["latency"]


def _junit_results(xml_path: Path) -> tuple[int, list[str]]:
    """Number of test cases and the failure messages, from a cocotb results file."""
    root = ET.parse(xml_path).getroot()
    tests, failures = 0, []
    for case in root.iter("testcase"):
        tests += 1
        for problem in list(case.findall("failure")) + list(case.findall("error")):
            failures.append(f"{case.get('name')}: {problem.get('message') or problem.text or ''}".strip())
    return tests, failures


def _build_log_excerpt(log: Path, lines: int = 6) -> str:
    """The first Verilator diagnostics of a failed build, so the summary says why."""
    if not log.exists():
        return ""
    found = [l for l in log.read_text(errors="replace").splitlines() if l.startswith(("%Warning", "%Error"))]
    return "".join(f"\n    {l}" for l in found[:lines])


@functools.cache
def _generated_verilog(unit: str, block: int) -> str:
    """A unit's Verilog, elaborated once per process (the run, its digest and ``--update`` all ask
    for it; the 16-lane engine takes a while to elaborate)."""
    return units.get(unit).verilog(block)


def verilog_source(unit: str, block: int, args) -> Path:
    """The unit's file in ``--rtl``; for a unit emitted on request (not in ``rtl/``), its Verilog
    written into ``<build root>/rtl/`` (rewritten only when it changed, so builds are reused)."""
    path = rtl_file(unit, block, args.rtl)
    if path.exists() or not units.get(unit).on_request:
        return path
    path = rtl_file(unit, block, Path(args.build_root) / "rtl")
    text = _generated_verilog(unit, block)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def selected(args) -> list:
    """(unit, B) of this run: the emitted units named by ``--units``, and those emitted on request
    when ``--units`` names them."""
    return units.emitted(args.units, args.blocks, on_request=args.on_request)


def run_unit(unit: str, block: int, args, waves: bool) -> UnitRun:
    run = UnitRun(unit, block, args.depth or depth_for(block, args.quick, unit))
    source = verilog_source(unit, block, args)
    tag = f"{unit}_b{block}"
    try:
        b = build(unit, block, waves=waves, source=source, build_root=Path(args.build_root).resolve())
    except (Exception, SystemExit) as exc:   # a missing or broken file is a failed row, not a crash
        run.error = f"build failed: {exc}" + _build_log_excerpt(Path(args.build_root) / tag / "build.log")
        return run
    run.build_seconds = b.seconds

    test_dir = b.build_dir / f"run_{run.depth}"
    stats_dir = test_dir / "stats"
    shutil.rmtree(stats_dir, ignore_errors=True)
    junit = (args.out / "junit" / f"{tag}.xml").resolve()
    junit.parent.mkdir(parents=True, exist_ok=True)
    log_file = (args.out / "logs" / f"{tag}.log").resolve()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {"TB_UNIT": unit, "TB_BLOCK": str(block), "TB_DEPTH": run.depth, "TB_SEED": str(args.seed),
           "TB_STATS_DIR": str(stats_dir), "TB_REAL": "0" if args.no_real else "1",
           "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "INFO")}
    start = time.perf_counter()
    try:
        b.runner.test(test_module=test_module(unit), hdl_toplevel=b.toplevel, build_dir=b.build_dir,
                      test_dir=test_dir, extra_env=env, results_xml=str(junit), waves=waves,
                      log_file=log_file, seed=args.seed)
    except (Exception, SystemExit) as exc:   # cocotb's runner exits when the simulator fails
        run.error = f"simulation failed: {exc!r}"
    run.sim_seconds = time.perf_counter() - start
    if junit.exists():
        run.tests, run.failures = _junit_results(junit)
        run.failed = len({f.split(":", 1)[0] for f in run.failures})
    elif run.error is None:
        run.error = "no results file"
    _collect_stats(stats_dir, run)
    for trace in ("dump.fst", "dump.vcd"):
        if waves and (test_dir / trace).exists():
            print(f"waves: {test_dir / trace}")
    return run


def strip_repo_paths(path: Path):
    """Reports are committed: make the paths in them relative to the repository, and name the
    virtual environment (which may be a link to another checkout's) ``.venv``."""
    if path.exists():
        text = path.read_text(errors="replace")
        venv = str(Path(sys.prefix).resolve())
        path.write_text(text.replace(venv + os.sep, ".venv" + os.sep).replace(str(REPO) + os.sep, ""))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rtl_digests(args, runs: list[UnitRun]) -> dict[str, str]:
    """Which Verilog the figures belong to."""
    out = {}
    for r in runs:
        path = verilog_source(r.unit, r.block, args)
        if path.exists():
            out[path.name] = _digest(path)
    return out


def kept_runs(args) -> list[UnitRun]:
    """--update: the previous summary's runs of units and block sizes not selected now, whose
    Verilog file still has the digest recorded with them."""
    previous = args.out / "summary.json"
    if not previous.exists():
        return []
    old = json.loads(previous.read_text())
    now = {(u.name, b) for u, b in selected(args)}
    kept = []
    for row in old.get("runs", []):
        if (row["unit"], row["block"]) in now or row["unit"] not in units.UNITS:
            continue
        path = verilog_source(row["unit"], row["block"], args)
        recorded = old.get("rtl_sha256", {}).get(path.name)
        if path.exists() and recorded == _digest(path):
            kept.append(UnitRun(**{k: v for k, v in row.items() if k != "passed"}))
    return kept


def merge_junit(paths: list[Path], out: Path):
    merged = ET.Element("testsuites", name="tb.runner")
    for path in paths:
        root = ET.parse(path).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            suite.set("name", f"{path.stem}.{suite.get('name', 'all')}")
            merged.append(suite)
    ET.ElementTree(merged).write(out, encoding="unicode", xml_declaration=True)


COLUMNS = ("unit", "B", "depth", "tests", "failed", "vectors", "mismatches", "cycles",
           "blocks/cycle", "latency", "build s", "sim s")


def table(runs: list[UnitRun]) -> str:
    rows = [COLUMNS]
    for r in runs:
        bpc = "-" if r.blocks_per_cycle is None else f"{r.blocks_per_cycle:.3f}"
        rows.append((r.unit, str(r.block), r.depth, str(r.tests), str(r.failed), str(r.vectors),
                     str(r.mismatches), str(r.cycles) if r.cycles else "-", bpc,
                "-" if not r.latency else ",".join(map(str, r.latency)), f"{r.build_seconds:.1f}",
                     f"{r.sim_seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in runs:
        if r.error:
            lines.append(f"{r.unit} B={r.block}: {r.error}")
        for failure in r.failures:
            lines.append(f"{r.unit} B={r.block}: {failure[:2000]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    kept = kept_runs(args) if args.update else []
    if not args.update:
        shutil.rmtree(args.out / "junit", ignore_errors=True)
    waves = os.environ.get("WAVES", "0") not in ("", "0")
    Path(args.build_root).mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    runs = []
    for u, block in selected(args):
        print(f"== {u.name} B={block} ({args.depth or depth_for(block, args.quick, u.name)})", flush=True)
        run = run_unit(u.name, block, args, waves)
        runs.append(run)
        status = "ok" if run.passed else "FAILED"
        print(f"== {u.name} B={block}: {status}, {run.vectors} vectors, {run.mismatches} mismatches, "
              f"build {run.build_seconds:.1f} s, sim {run.sim_seconds:.1f} s", flush=True)
    wall = time.perf_counter() - start
    order = {(u.name, b): i for i, (u, b) in enumerate(units.emitted(list(units.UNITS), list(BLOCK_SIZES)))}
    runs = sorted(kept + runs, key=lambda r: order.get((r.unit, r.block), len(order)))

    junit_files = sorted((args.out / "junit").glob("*.xml"))
    for path in junit_files + sorted((args.out / "logs").glob("*.log")):
        strip_repo_paths(path)
    if junit_files:
        merge_junit(junit_files, args.out / "results.xml")
    summary = {
        "depth": "quick" if args.quick else "full",
        "rtl_sha256": rtl_digests(args, runs),
        "seed": args.seed,
        "wall_seconds": round(wall, 1),
        "passed": all(r.passed for r in runs),
        "runs": [{**asdict(r), "passed": r.passed} for r in runs],
    }
    text = table(runs)
    if kept:
        summary["kept_from_previous_run"] = [f"{r.unit} B={r.block}" for r in kept]
    kept_ids = {id(r) for r in kept}
    ran = ", ".join(f"{r.unit} B={r.block}" for r in runs if id(r) not in kept_ids)
    scope = f" (this run: {ran}; the other rows are kept from the previous run)" if kept else ""
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "summary.txt").write_text(text + f"\n\nwall time {wall:.1f} s{scope}\n")
    print(text)
    print(f"wall time {wall:.1f} s; reports in {args.out}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
