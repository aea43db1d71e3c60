"""Every scalar constant of ../shared/SPEC.md, once, with the section it comes from.

The golden model, the hardware generators, the testbenches and the benchmarks import these names;
none of them types the numbers again. The formatbook and the tables derived from it live in
:mod:`golden.formatbook`.
"""
from __future__ import annotations

import numpy as np

# SPEC 1: FP16 input fields.
FP16_EXP_BITS = 5
FP16_MAN_BITS = 10
FP16_BITS = 16
FP16_EXP_BIAS = 15
FP16_MAX = 65504.0                # largest finite FP16 value; a wider input that rounds beyond it is Inf
FP32_BITS = 32                    # outputs of the dot product are IEEE binary32
FP32_EXP_BITS = 8
FP32_MAN_BITS = 23
EXP_FIELD_NONFINITE = 31          # ex == 31 is Inf or NaN
SIGNIFICAND_HIDDEN = 1024         # M = 1024 + man for a normal element
SIGNIFICAND_BITS = 11

# SPEC 2: the formatbook's shape and codes.
NUM_DIALECTS = 16
NUM_PAIRS = 8                     # pair p holds dialects 2p (A) and 2p + 1 (B)
LEVELS = 8
IDX_BITS = 3                      # magnitude index, 0..7
CODE_BITS = 4                     # code = sign << 3 | idx
MAX_HALF_UNITS = 15               # largest formatbook entry; 4-bit unsigned magnitude (SPEC 6)
H_BITS = 4

# SPEC 3: blocks and the shared exponent.
BLOCK_SIZES = (16, 32, 64)
DEFAULT_BLOCK = 32
EXP_BITS = 5                      # shared exponent field, 1..30; 0 marks an all-zero block
EXP_MAX = 30                      # largest shared exponent of finite input
DIALECT_BITS = 4
SCALE_EXP_OFFSET = 17             # block scale 2^(E - 17)
DECODE_EXP_OFFSET = 18            # decoded value h * 2^(E - 18)

# SPEC 4.1: the 5-bit intermediate q (quarter-units, 3 integer + 2 fraction bits).
Q_BITS = 5
Q_MAX = (1 << Q_BITS) - 1         # 31
Q_SHIFT_BASE = 6                  # q = M >> (6 + E - ex)
Q_FRAC_BITS = 2                   # q counts quarter-units of the scale 2^(E - 17) ...
QUARTER_UNIT_EXP_OFFSET = SCALE_EXP_OFFSET + Q_FRAC_BITS   # ... so a quarter-unit is 2^(E - 19)

# SPEC 5: the MSE cost compares M * 2^(ex - E + 1) with 256 * v.
MSE_UNIT = 256

# SPEC 6: block dot product and exact accumulation.
PRODUCT_EXP_OFFSET = 36           # block value S * 2^(E_a + E_w - 36); A in units of 2^-36
MAX_EXP_SUM = 2 * EXP_MAX         # E_a + E_w <= 60
MAX_PRODUCT = MAX_HALF_UNITS * MAX_HALF_UNITS   # 225
DEFAULT_MAX_BLOCKS = 256

# SPEC 6.1: how block values are summed; "exact" (SPEC 6) is the default everywhere.
ACCUMULATE_MODES = ("exact", "fp32", "fp16")
DEFAULT_ACCUMULATE = "exact"

# SPEC 11: bd_linear, the matrix-vector engine.
LINEAR_LANES = (1, 2, 4, 8, 16)   # N, output lanes (rows computed side by side) [revised]
Y_USER_BITS = 2                   # m_axis_y tuser: bit 0 non-finite vector, bit 1 block-count mismatch

# SPEC 8: baseline formats (golden model and reports only).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)   # E2M1 element magnitudes
E2M1_MAX = 6.0
E2M1_EMAX = 2                     # OCP MX v1.0: MXFP4 scale 2^(floor(log2 amax) - emax_elem), emax_elem = 2
E8M0_MIN_EXP = -127               # OCP MX v1.0: E8M0 encodes 2^-127 .. 2^127 (255 is NaN)
E8M0_MAX_EXP = 127
E8M0_BITS = 8
MXFP4_BLOCK_SIZES = (16, 32)      # MXFP4 uses 16 or 32 of BlockDialect's block sizes
MXFP4_PAPER_EXP_BITS = 5          # the paper counts a 5-bit shared exponent
NVFP4_BLOCK = 16                  # NVFP4: blocks of 16, E4M3 block scale, FP32 tensor scale amax / (448 * 6)
E4M3_MAX = 448.0
E4M3_BITS = 8
INT4_LEVELS = 7                   # INT4: symmetric, levels -7..7, FP16 scale
INT4_BLOCK_SIZES = BLOCK_SIZES
INT4_SCALE_MIN = 2.0 ** -24       # the FP16 scale is clamped to [2^-24, 65504]

# SPEC 7: packed storage.
HEADER_BYTES = 2                  # little-endian 16-bit word E << 4 | dialect


def block_bytes(block: int) -> int:
    """SPEC 7: one packed block is 2 + B/2 bytes."""
    return HEADER_BYTES + block // 2


def check_block_size(value, name: str = "block") -> int:
    """The one block-size check (SPEC 3): `value` must be an integer in BLOCK_SIZES.

    Raises ValueError naming the argument; returns the value as an int.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in BLOCK_SIZES:
        raise ValueError(f"{name} must be one of {BLOCK_SIZES}, got {value!r}")
    return int(value)


def check_accumulate(value, name: str = "accumulate") -> str:
    """The one accumulation-mode check (SPEC 6.1): `value` must be one of ACCUMULATE_MODES.

    Raises ValueError naming the argument; returns the mode.
    """
    if not isinstance(value, str) or value not in ACCUMULATE_MODES:
        raise ValueError(f"{name} must be one of {ACCUMULATE_MODES}, got {value!r}")
    return value
