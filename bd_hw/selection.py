"""The quantizer's dialect-selection interface and its SPEC 4.2 stage-1 rules.

Kept apart from `bd_hw.quantizer` so that `bd_hw.params` can validate a quantizer's parameters
without importing the hardware that uses them (no import cycle).
"""
from __future__ import annotations

from amaranth.hdl import Module

from golden.methods import BY_STAGE1

__all__ = ["STAGE1_RULES", "Selection", "check_stage1"]

# SPEC 4.2 [revised]: the stage-1 rules, and the golden.bd method each one implements (golden.methods).
STAGE1_RULES = {rule: m.name for rule, m in BY_STAGE1.items()}


def check_stage1(stage1) -> str:
    if stage1 not in STAGE1_RULES:
        raise ValueError(f"stage1 must be one of {tuple(STAGE1_RULES)}, got {stage1!r}")
    return stage1


class Selection:
    """How the quantizer frame picks a block's dialect, in two pipeline stages.

    :meth:`first` is the logic between the stage-0 registers (``elements``, the FP16 data, and ``exp``) and the stage-1
    registers; its result, of shape :meth:`state_shape`, is registered there beside ``q``.
    :meth:`second` turns that state (and the registered ``q``) into the dialect, registered in
    stage 2 (the frame forces dialect 0 for a zero block). Both add their submodules to ``m``.
    When some of the frame's cut points inside :meth:`first` (``"qmax8"``, ``"qmax"``,
    ``"pair_rule"``) or :meth:`second` (``"count"``, ``"select"``) are taken, the method is also
    given ``cuts``: for each taken one, by name, a function that takes keyword values, registers
    them in an extra pipeline stage and returns a dict of the registers; the selection calls each
    once, in that order, where its logic is best split (a selection without such a point may leave
    it uncalled, and the frame registers its result there instead).
    ``method`` names the ``golden.bd.quantize`` method whose dialects it reproduces.
    """

    method: str = ""

    def state_shape(self, B: int):
        raise NotImplementedError

    def first(self, m: Module, B: int, elements, exp, q):
        raise NotImplementedError

    def second(self, m: Module, B: int, state, q):
        raise NotImplementedError
