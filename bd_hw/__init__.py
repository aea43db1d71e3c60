"""Amaranth 0.5 generators of the BlockDialect hardware units (SPEC 9).

The registry :mod:`bd_hw.units` lists every unit with its builder, parameters, file name and
latency; ``rtl/<unit>_b<B>.v`` has the top module ``<unit>_b<B>``:

- ``bd_decoder``          :class:`~bd_hw.decoder.BDDecoder` (combinational)
- ``bd_quantizer``        :class:`~bd_hw.quantizer.BDQuantizer`, rounding stage 1 (SPEC 4.2)
- ``bd_quantizer_trunc``  :class:`~bd_hw.quantizer.BDQuantizer` with ``stage1="trunc"`` (B = 32)
- ``bd_dot``              :class:`~bd_hw.dot.BDDot`

Generator parameters as frozen, validated values (latency without building hardware):
:mod:`bd_hw.params`. Payload layouts and plain-int pack/unpack helpers for testbenches: :mod:`bd_hw.layouts`; shared
trees: :mod:`bd_hw.arith`; valid/ready pipeline control: :mod:`bd_hw.pipeline`; the Verilator
environment of every tool run: :mod:`bd_hw.verilator_env`. ``python -m bd_hw verilog`` writes
``rtl/``, ``python -m bd_hw lint`` lints it, ``python -m bd_hw list`` prints the registry.
"""
