"""Block dot products with their scale handling, for comparing what each format's scales cost.

Each unit takes one activation block and one weight block (element codes and their block scales)
per clock and gives the exact block value as a signed integer ``value`` and an exponent ``exp``,
the form an exact accumulator takes (``bd_dot``'s :class:`~bd_hw.dot.ExactAccumulator` for
BlockDialect); the accumulator and the final rounding are left out of every unit alike. The element
products and their summation are the block MAC of :mod:`bench.hw.baseline_macs` in its smallest
measured construction (:data:`ELEMENT_CONSTRUCTION`, a lane construction and a summation). Inputs
are registered, then the block sum and the scale path's results (latency 2); NVFP4's multiply of
the block sum by the scale product follows that register (the place-and-route harness registers
every output, so its path is timed).

``bd``     BlockDialect (SPEC 3, 6): 5-bit shared exponents; ``exp = E_a + E_w`` (6 bits),
           block value ``value * 2^(exp - 36)``.
``mxfp4``  MXFP4 (SPEC 8, OCP MX v1.0): E8M0 scales ``X`` (value ``2^(X - 127)``, 0xFF is NaN);
           ``exp = X_a + X_w`` (9 bits), ``nan`` when either is 0xFF; block value
           ``value * 2^(exp - 256)`` (elements in half-units).
``nvfp4``  NVFP4 (SPEC 8), blocks of 16: E4M3 scales (``{s, e[4], m[3]}``, bias 7; the sign bit is
           ignored, scales are positive; ``S.1111.111`` is NaN). Each scale is a significand
           ``{e != 0, m}`` and an exponent ``max(e, 1)``; ``value = S * sig_a * sig_w`` (a 4x4
           scale product and a multiply of the block sum by it, per block pair),
           ``exp = max(e_a, 1) + max(e_w, 1)``, block value ``value * 2^(exp - 22)``. The FP32
           tensor scales enter once per result: one FP32 x FP32 significand multiplier
           (``t_a``, ``t_w`` in; ``t_sig`` 48 bits, exact, and ``t_exp = max(e_a, 1) + max(e_w, 1)``
           out, ``t_sig * 2^(t_exp - 300)``), the one a unit that emits one result at a time needs
           to apply the product of the tensor scales to it.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bd_hw.layouts import reject
from golden.spec import EXP_BITS

from .baseline_macs import SMALLEST, BlockMac, reference_block_sum, split_construction, sum_bits
from .lane_products import product_inputs

__all__ = ["SCALE_FORMATS", "ELEMENT_CONSTRUCTION", "ScaleDot", "reference_scale_dot",
           "reference_tensor_product"]

SCALE_FORMATS = ("bd", "mxfp4", "nvfp4")
# The element products of every scale-path unit: each element format's smallest block MAC.
# (lane construction, summation) of the element products
ELEMENT_CONSTRUCTION = {fmt: split_construction(SMALLEST[fmt]) for fmt in ("bd", "fp4")}
E8M0_BITS = 8
E4M3_EXP, E4M3_MAN = 4, 3
FP32_EXP, FP32_MAN = 8, 23
NVFP4_BLOCK = 16


class ScaleDot(wiring.Component):
    """Block dot product of ``fmt`` (one of :data:`SCALE_FORMATS`) with its scale path, ``B`` lanes.

    Ports: ``a``, ``w`` (element codes, 4 bits a lane), ``a_dialect``/``w_dialect`` (``bd``),
    ``a_scale``/``w_scale`` (the block scales: 5, 8 or 8 bits), ``t_a``/``t_w`` (``nvfp4``: FP32
    tensor scales) in; ``value``, ``exp``, ``nan`` (``mxfp4``, ``nvfp4``), ``t_sig``/``t_exp``
    (``nvfp4``) out. See the module docstring for the arithmetic. ``tensor_scale=False`` leaves
    NVFP4's tensor-scale multiplier out (to measure the per-block part alone).
    """

    def __init__(self, fmt: str, B: int, tensor_scale: bool = True):
        if fmt not in SCALE_FORMATS:
            reject(self)
            raise ValueError(f"fmt must be one of {SCALE_FORMATS}, not {fmt!r}")
        if fmt == "nvfp4" and B != NVFP4_BLOCK:
            reject(self)
            raise ValueError(f"B must be {NVFP4_BLOCK} for nvfp4, not {B!r}")
        self.fmt, self.B, self.tensor_scale = fmt, B, tensor_scale and fmt == "nvfp4"
        self.element = "bd" if fmt == "bd" else "fp4"
        ports = product_inputs(self.element, B)
        sum_width = sum_bits(self.element, B)
        if fmt == "bd":
            ports |= {"a_scale": In(EXP_BITS), "w_scale": In(EXP_BITS)}
            outs = {"value": Out(signed(sum_width)), "exp": Out(EXP_BITS + 1)}
        elif fmt == "mxfp4":
            ports |= {"a_scale": In(E8M0_BITS), "w_scale": In(E8M0_BITS)}
            outs = {"value": Out(signed(sum_width)), "exp": Out(E8M0_BITS + 1), "nan": Out(1)}
        else:
            ports |= {"a_scale": In(1 + E4M3_EXP + E4M3_MAN), "w_scale": In(1 + E4M3_EXP + E4M3_MAN)}
            outs = {"value": Out(signed(sum_width + 2 * (E4M3_MAN + 1))), "exp": Out(E4M3_EXP + 1),
                    "nan": Out(1)}
            if self.tensor_scale:
                ports |= {"t_a": In(32), "t_w": In(32)}
                outs |= {"t_sig": Out(2 * (FP32_MAN + 1)), "t_exp": Out(FP32_EXP + 1)}
        super().__init__(ports | outs)

    def elaborate(self, platform):
        m = Module()
        construction, summation = ELEMENT_CONSTRUCTION[self.element]
        m.submodules.mac = mac = BlockMac(self.element, construction, self.B, summation)
        for name in product_inputs(self.element, self.B):
            m.d.comb += getattr(mac, name).eq(getattr(self, name))
        # Scale path: registered in, computed, registered out beside the block sum.
        a_scale = Signal.like(self.a_scale, name="a_scale_reg")
        w_scale = Signal.like(self.w_scale, name="w_scale_reg")
        m.d.sync += [a_scale.eq(self.a_scale), w_scale.eq(self.w_scale)]
        if self.fmt == "bd":
            m.d.sync += self.exp.eq(a_scale + w_scale)
            m.d.comb += self.value.eq(mac.sum)
        elif self.fmt == "mxfp4":
            nan = (1 << E8M0_BITS) - 1
            m.d.sync += [self.exp.eq(a_scale + w_scale),
                         self.nan.eq((a_scale == nan) | (w_scale == nan))]
            m.d.comb += self.value.eq(mac.sum)
        else:
            self._nvfp4(m, mac, a_scale, w_scale)
        return m

    def _nvfp4(self, m, mac, a_scale, w_scale):
        nan = (1 << (E4M3_EXP + E4M3_MAN)) - 1
        sig_a, exp_a = _significand(m, "a_scale", a_scale, E4M3_EXP, E4M3_MAN)
        sig_w, exp_w = _significand(m, "w_scale", w_scale, E4M3_EXP, E4M3_MAN)
        scale_sig = Signal(2 * (E4M3_MAN + 1), name="scale_sig")
        m.d.comb += scale_sig.eq(sig_a * sig_w)
        # The scale product meets the block sum, which leaves the MAC registered: the scale's
        # product is registered alongside, then the block sum is multiplied by it.
        scale_sig_reg = Signal.like(scale_sig, name="scale_sig_reg")
        exp_reg = Signal.like(self.exp, name="exp_reg")
        nan_reg = Signal(name="nan_reg")
        m.d.sync += [scale_sig_reg.eq(scale_sig), exp_reg.eq(exp_a + exp_w),
                     nan_reg.eq((a_scale[:-1] == nan) | (w_scale[:-1] == nan))]
        m.d.comb += [self.value.eq(mac.sum * scale_sig_reg), self.exp.eq(exp_reg),
                     self.nan.eq(nan_reg)]
        if not self.tensor_scale:
            return
        # Tensor scales: FP32 x FP32 significands (once per result), registered in and out.
        t_a, t_w = Signal(32, name="t_a_reg"), Signal(32, name="t_w_reg")
        m.d.sync += [t_a.eq(self.t_a), t_w.eq(self.t_w)]
        ts_a, te_a = _significand(m, "t_a", t_a, FP32_EXP, FP32_MAN)
        ts_w, te_w = _significand(m, "t_w", t_w, FP32_EXP, FP32_MAN)
        m.d.sync += [self.t_sig.eq(ts_a * ts_w), self.t_exp.eq(te_a + te_w)]


def _significand(m: Module, name: str, code, ebits: int, mbits: int):
    """Named ``(significand, exponent)`` of the field pair ``{e, m}`` of ``code`` (bias-free):
    ``{e != 0, m}`` and ``max(e, 1)``."""
    man, exp = code[:mbits], code[mbits:mbits + ebits]
    sig = Signal(mbits + 1, name=f"{name}_sig")
    e = Signal(ebits, name=f"{name}_exp")
    m.d.comb += [sig.eq(Cat(man, exp.any())), e.eq(exp | ~exp.any())]
    return sig, e


def reference_scale_dot(fmt: str, a, w, a_scale: int, w_scale: int, a_dialect: int = 0,
                        w_dialect: int = 0) -> dict:
    """Python model of :class:`ScaleDot`'s block outputs for element code lists ``a``, ``w``."""
    s = reference_block_sum("bd" if fmt == "bd" else "fp4", a, w, a_dialect, w_dialect)
    if fmt == "bd":
        return {"value": s, "exp": a_scale + w_scale}
    if fmt == "mxfp4":
        return {"value": s, "exp": a_scale + w_scale, "nan": int(255 in (a_scale, w_scale))}

    def split(code, ebits, mbits):
        e, man = (code >> mbits) & ((1 << ebits) - 1), code & ((1 << mbits) - 1)
        return (man | (1 << mbits) if e else man), max(e, 1)
    (sa, ea), (sw, ew) = split(a_scale, 4, 3), split(w_scale, 4, 3)
    return {"value": s * sa * sw, "exp": ea + ew,
            "nan": int(0x7F in (a_scale & 0x7F, w_scale & 0x7F))}


def reference_tensor_product(t_a: int, t_w: int) -> dict:
    """Python model of the NVFP4 unit's tensor-scale product (FP32 bit patterns in)."""
    def split(bits):
        e, man = (bits >> 23) & 0xFF, bits & ((1 << 23) - 1)
        return (man | (1 << 23) if e else man), max(e, 1)
    (sa, ea), (sw, ew) = split(t_a), split(t_w)
    return {"t_sig": sa * sw, "t_exp": ea + ew}
