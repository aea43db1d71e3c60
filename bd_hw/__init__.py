"""Amaranth 0.5 generators of the BlockDialect hardware units (SPEC 9).

- :class:`~bd_hw.decoder.BDDecoder`      -> Verilog module ``bd_decoder``
- :class:`~bd_hw.quantizer.BDQuantizer`  -> Verilog module ``bd_quantizer``
- :class:`~bd_hw.dot.BDDot`              -> Verilog module ``bd_dot``

Payload layouts and plain-int pack/unpack helpers for testbenches: :mod:`bd_hw.layouts`.
``python -m bd_hw verilog --out rtl`` writes ``rtl/<unit>_b<B>.v``; ``python -m bd_hw lint rtl``
lints them with Verilator.
"""
