"""cocotb testbenches that hold the emitted Verilog in ``rtl/`` to the golden model (SPEC 9).

``python -m tb.runner`` builds every unit with Verilator and runs the tests; see ``tb/runner.py``.
"""
