"""SPEC 10 at the boundary: hand-built Blocks, invalid blocks, empty inputs, the shared input rule of
golden.bd and golden.baselines, options, and devices. Every bad input must raise a ValueError that
names the field or argument."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golden import baselines, bd


def good_blocks(rows: int = 2, nblocks: int = 2, block: int = 32) -> bd.Blocks:
    """A valid hand-built Blocks: E 20, dialect 7, every code, one zero block with sign bits."""
    exp = torch.full((rows, nblocks), 20, dtype=torch.uint8)
    exp[0, 0] = 0
    dialect = torch.full((rows, nblocks), 7, dtype=torch.uint8)
    dialect[0, 0] = 0
    codes = (torch.arange(block, dtype=torch.uint8) % 16).expand(rows, nblocks, block).clone()
    codes[0, 0] = torch.tensor([8, 0] * (block // 2), dtype=torch.uint8)    # zero block: signs only
    return bd.Blocks(exp, dialect, codes, torch.zeros(rows, nblocks, dtype=torch.bool))


def _set(q: bd.Blocks, field: str, index, value) -> bd.Blocks:
    tensor = getattr(q, field).clone()
    tensor[index] = value
    return q._replace(**{field: tensor})


# Each case: (description, Blocks, field named in the error).
def _bad_cases():
    q = good_blocks()
    return [
        ("code 16", _set(q, "codes", (1, 1, 3), 16), "codes"),
        ("code 255", _set(q, "codes", (1, 0, 4), 255), "codes"),
        ("dialect 16", _set(q, "dialect", (1, 1), 16), "dialect"),
        ("dialect -1 (int8)", q._replace(dialect=torch.full((2, 2), -1, dtype=torch.int8)), "dialect"),
        ("exp 31", _set(q, "exp", (0, 1), 31), "exp"),
        ("exp 64", _set(q, "exp", (1, 0), 64), "exp"),
        ("exp 200", _set(q, "exp", (1, 1), 200), "exp"),
        ("exp int64", q._replace(exp=q.exp.to(torch.int64)), "exp"),
        ("codes int32", q._replace(codes=q.codes.to(torch.int32)), "codes"),
        ("dialect float", q._replace(dialect=q.dialect.to(torch.float32)), "dialect"),
        ("invalid uint8", q._replace(invalid=q.invalid.to(torch.uint8)), "invalid"),
        ("exp a list", q._replace(exp=q.exp.tolist()), "exp"),
        ("exp shape", q._replace(exp=q.exp[:, :1]), "exp"),
        ("dialect shape", q._replace(dialect=q.dialect.reshape(4)), "dialect"),
        ("invalid shape", q._replace(invalid=torch.zeros(2, 3, dtype=torch.bool)), "invalid"),
        ("codes 1-D", bd.Blocks(q.exp[0, 0], q.dialect[0, 0], q.codes[0, 0], q.invalid[0, 0]), "codes"),
        ("codes block 8", q._replace(codes=q.codes[..., :8]), "codes"),
        ("zero block with dialect 3", _set(q, "dialect", (0, 0), 3), "dialect"),
        ("zero block with index 1", _set(q, "codes", (0, 0, 5), 1), "codes"),
        ("zero block with code 15", _set(q, "codes", (0, 0, 0), 15), "codes"),
    ]


BAD = _bad_cases()
IDS = [case[0] for case in BAD]


def test_good_blocks_are_accepted(bits_equal):
    q = good_blocks()
    assert bd.check_blocks(q) == 32
    x_hat = bd.dequantize(q)
    # The zero block decodes to signed zeros (SPEC 3).
    assert bits_equal(x_hat[0, :32], torch.tensor([-0.0, 0.0] * 16))
    assert torch.equal(bd.unpack(bd.pack(q), block=32).codes, q.codes)
    bd.linear(q, q)


@pytest.mark.parametrize("case", BAD, ids=IDS)
@pytest.mark.parametrize("entry", ["dequantize", "decode", "pack", "check_blocks"])
def test_bad_blocks_name_the_field(entry, case):
    _, q, field = case
    with pytest.raises(ValueError, match=rf"\bq\.{field}\b"):
        getattr(bd, entry)(q)


@pytest.mark.parametrize("case", BAD, ids=IDS)
def test_linear_names_the_operand_and_field(case):
    _, bad, field = case
    good = good_blocks()
    weight = good_blocks(rows=3)
    with pytest.raises(ValueError, match=rf"\bq_act\.{field}\b"):
        bd.linear(bad, weight)
    with pytest.raises(ValueError, match=rf"\bq_weight\.{field}\b"):
        bd.linear(good, bad)


def test_pack_code_255_cannot_overwrite_its_neighbour():
    q = _set(good_blocks(), "codes", (1, 1, 0), 255)
    with pytest.raises(ValueError, match=r"q\.codes holds 255 at index \(1, 1, 0\)"):
        bd.pack(q)


def test_not_blocks():
    for entry in (bd.dequantize, bd.decode, bd.pack):
        with pytest.raises(ValueError, match=r"\bq\b"):
            entry((torch.zeros(1), torch.zeros(1), torch.zeros(1, 32), torch.zeros(1)))


# ---- invalid blocks -----------------------------------------------------------------------------

def _flagged() -> tuple[torch.Tensor, bd.Blocks]:
    x = torch.randn(3, 96, generator=torch.Generator().manual_seed(0))
    x[1, 40] = float("inf")                          # row 1, block 1
    return x, bd.quantize(x, nonfinite="flag")


@pytest.mark.parametrize("method", bd.METHODS)
def test_invalid_block_dequantizes_to_nan(method):
    x = torch.randn(3, 96, generator=torch.Generator().manual_seed(0))
    x[1, 40] = float("nan")
    q = bd.quantize(x, method=method, nonfinite="flag")
    assert q.invalid.tolist() == [[False] * 3, [False, True, False], [False] * 3]
    x_hat = bd.dequantize(q)
    expected_nan = torch.zeros(3, 96, dtype=torch.bool)
    expected_nan[1, 32:64] = True
    assert torch.equal(x_hat.isnan(), expected_nan)
    # The other blocks decode as they would without the flag.
    clean = bd.dequantize(q._replace(invalid=torch.zeros_like(q.invalid)))
    assert torch.equal(x_hat[~expected_nan], clean[~expected_nan])


def test_linear_outputs_using_an_invalid_block_are_nan(bits_equal):
    x, q_act = _flagged()
    w = torch.randn(4, 96, generator=torch.Generator().manual_seed(1))
    w[2, 70] = float("-inf")                          # weight row 2, block 2
    q_weight = bd.quantize(w, method="mse", nonfinite="flag")
    y = bd.linear(q_act, q_weight)
    expected_nan = torch.zeros(3, 4, dtype=torch.bool)
    expected_nan[1, :] = True                         # every output of activation row 1
    expected_nan[:, 2] = True                         # every output of weight row 2
    assert torch.equal(y.isnan(), expected_nan)
    clean = bd.linear(q_act._replace(invalid=torch.zeros_like(q_act.invalid)),
                      q_weight._replace(invalid=torch.zeros_like(q_weight.invalid)))
    assert bits_equal(y[~expected_nan], clean[~expected_nan])


def test_linear_nan_with_leading_dimensions():
    x, q_act = _flagged()
    q3 = bd.Blocks(*(t.reshape((3, 1) + t.shape[1:]) for t in q_act))          # (3, 1, 96)
    y = bd.linear(q3, bd.quantize(torch.ones(2, 96)))
    assert y.shape == (3, 1, 2)
    assert y.isnan().reshape(3, 2).all(-1).tolist() == [False, True, False]


# ---- unpack -------------------------------------------------------------------------------------

def _raw_block(word: int, body: list[int], block: int = 16) -> bytes:
    assert len(body) == block // 2
    return bytes([word & 0xFF, word >> 8] + body)


@pytest.mark.parametrize("raw, what", [
    (_raw_block(7, [0] * 8), "zero block with dialect 7"),
    (_raw_block(0, [0x10] + [0] * 7), "zero block with index 1 (high nibble)"),
    (_raw_block(0, [0x0F] + [0] * 7), "zero block with code 15"),
    (_raw_block(31 << 4, [0] * 8), "E = 31"),
    (_raw_block(1 << 9, [0] * 8), "upper header bit"),
    (_raw_block(0x8000 | 20 << 4, [0] * 8), "top header bit"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_unpack_rejects(raw, what):
    with pytest.raises(ValueError, match=r"\braw\b"):
        bd.unpack(raw, block=16)


def test_unpack_accepts_a_zero_block_with_sign_bits(bits_equal):
    raw = _raw_block(0, [0x88, 0x08, 0x80, 0, 0, 0, 0, 0x88])
    q = bd.unpack(raw, block=16)
    assert int(q.exp[0]) == 0 and int(q.dialect[0]) == 0
    x_hat = bd.dequantize(q)
    assert x_hat.eq(0).all() and torch.signbit(x_hat)[:6].tolist() == [True, True, True, False, False, True]
    assert bytes(bd.pack(q).tolist()) == raw


@pytest.mark.parametrize("raw", [[0] * 18, torch.zeros(18, dtype=torch.int16), np.zeros(18, dtype=np.int64),
                                 torch.tensor(0, dtype=torch.uint8), "abc"],
                         ids=["list", "int16 tensor", "int64 array", "0-dim", "str"])
def test_unpack_bad_raw(raw):
    with pytest.raises(ValueError, match=r"\braw\b"):
        bd.unpack(raw)


def test_unpack_numpy_and_bytes_agree():
    raw = bd.pack(bd.quantize(torch.randn(2, 64, generator=torch.Generator().manual_seed(2))))
    a = bd.unpack(raw.numpy())
    b = bd.unpack(bytes(raw.reshape(-1).tolist()))
    assert torch.equal(a.codes.reshape(-1, 32), b.codes) and torch.equal(a.exp.reshape(-1), b.exp)


# ---- empty inputs -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", bd.METHODS)
@pytest.mark.parametrize("shape", [(0, 32), (0,), (4, 0), (2, 0, 64)])
def test_empty_quantize_dequantize_pack(shape, method):
    q = bd.quantize(torch.empty(shape), method=method)
    lead, k = shape[:-1], shape[-1]
    assert q.codes.shape == lead + (k // 32, 32) and q.exp.shape == lead + (k // 32,)
    assert bd.dequantize(q).shape == shape
    raw = bd.pack(q)
    assert raw.shape == lead + (k // 32 * 18,) and raw.dtype == torch.uint8
    back = bd.unpack(raw)
    assert back.codes.shape == q.codes.shape


def test_linear_with_k_zero_is_positive_zero(bits_equal):
    q_act = bd.quantize(torch.empty(2, 3, 0))
    q_weight = bd.quantize(torch.empty(5, 0), method="mse")
    y = bd.linear(q_act, q_weight)
    assert bits_equal(y, torch.zeros(2, 3, 5))
    assert bd.linear(bd.quantize(torch.empty(0, 64)), bd.quantize(torch.randn(4, 64))).shape == (0, 4)
    assert bd.linear(bd.quantize(torch.randn(2, 64)), bd.quantize(torch.empty(0, 64))).shape == (2, 0)


def test_unpack_empty_bytes():
    for raw in (b"", bytearray(), torch.empty(0, dtype=torch.uint8), np.empty((3, 0), dtype=np.uint8)):
        q = bd.unpack(raw, block=64)
        assert q.codes.shape[-2:] == (0, 64)
        assert bd.pack(q).shape == q.exp.shape[:-1] + (0,)


@pytest.mark.parametrize("fmt", baselines.FORMATS)
def test_baselines_empty(fmt):
    for shape in ((0, 32), (3, 0)):
        out = baselines.fake_quantize(torch.empty(shape), fmt)
        assert out.shape == shape and out.dtype == torch.float32
    assert baselines.nvfp4(torch.empty(0, 32)).shape == (0, 32)
    assert baselines.mxfp4(torch.empty(0, 32)).shape == (0, 32)
    assert baselines.int4(torch.empty(0, 32)).shape == (0, 32)


# ---- one input rule for golden.bd and golden.baselines ----------------------------------------

def _entries():
    """Every input-taking entry point, with the arguments that make a (2, 32) input legal."""
    return {
        "bd.quantize": lambda x: bd.quantize(x),
        "bd.quantize mse": lambda x: bd.quantize(x, method="mse"),
        "mxfp4": lambda x: baselines.mxfp4(x),
        "nvfp4": lambda x: baselines.nvfp4(x),
        "int4": lambda x: baselines.int4(x),
        "fake fp16": lambda x: baselines.fake_quantize(x, "fp16"),
        "fake bd_two_stage": lambda x: baselines.fake_quantize(x, "bd_two_stage"),
    }


VALUES = (torch.arange(64, dtype=torch.float64).reshape(2, 32) - 20) / 4


@pytest.mark.parametrize("make", [
    lambda: VALUES.to(torch.float16), lambda: VALUES.to(torch.bfloat16), lambda: VALUES.to(torch.float32),
    lambda: VALUES, lambda: VALUES.numpy().astype(np.float32), lambda: VALUES.numpy(),
    lambda: VALUES.numpy().astype(np.float16),
], ids=["f16", "bf16", "f32", "f64", "np f32", "np f64", "np f16"])
def test_float_inputs_are_accepted_everywhere(make):
    for name, entry in _entries().items():
        out = entry(make())
        assert out is not None, name


INTEGERS = torch.arange(64, dtype=torch.int64).reshape(2, 32) - 20


@pytest.mark.parametrize("make", [
    lambda: INTEGERS, lambda: INTEGERS.to(torch.int8), lambda: INTEGERS.to(torch.int32),
    lambda: (INTEGERS + 20).to(torch.uint8), lambda: INTEGERS.numpy(), lambda: (INTEGERS + 20).numpy().astype(np.uint16),
    lambda: INTEGERS.numpy().astype(np.int16),
], ids=["i64", "i8", "i32", "u8", "np i64", "np u16", "np i16"])
def test_integer_inputs_are_the_numbers_they_hold(make, bits_equal):
    x = make()
    as_float = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).to(torch.float64)
    for name, entry in _entries().items():
        got, expected = entry(x), entry(as_float)
        if isinstance(got, bd.Blocks):
            assert all(torch.equal(a, b) for a, b in zip(got, expected)), name
        else:
            assert bits_equal(got, expected), name


@pytest.mark.parametrize("x", [
    [[1.0] * 32] * 2, ((1.0,) * 32,), 1.0, 3, "text", None, torch.ones(2, 32, dtype=torch.bool),
    np.ones((2, 32), dtype=bool), torch.zeros(2, 32, dtype=torch.complex64), np.zeros((2, 32), dtype=np.complex128),
    torch.tensor(1.0), np.float32(1.0), np.array(["a"] * 32),
], ids=["list", "tuple", "float", "int", "str", "None", "bool tensor", "bool array", "complex tensor",
        "complex array", "0-dim", "numpy scalar", "str array"])
def test_rejected_inputs_give_the_same_error_everywhere(x):
    messages = {}
    for name, entry in _entries().items():
        with pytest.raises(ValueError, match=r"^x\b") as err:
            entry(x)
        messages[name] = str(err.value)
    assert len(set(messages.values())) == 1, messages


def test_nonfinite_inputs_are_reported_alike():
    """NaN/Inf: both name the first index the same way. A finite float64 beyond a format's input type
    (1e39 is beyond FP32, 1e5 beyond FP16) overflows in the conversion: non-finite input for that
    format (SPEC 1), reported with the type's range; a value inside FP32 is fine for the baselines."""
    x = torch.zeros(2, 32, dtype=torch.float64)
    x[1, 7] = math.nan
    for name, entry in _entries().items():
        with pytest.raises(ValueError, match=r"^x holds a non-finite .* at index \(1, 7\)"):
            entry(x)
    x[1, 7] = 1e39
    for name, entry in _entries().items():
        target = "FP32" if name in ("mxfp4", "nvfp4", "int4") else "FP16"
        with pytest.raises(ValueError, match=rf"^x holds a non-finite {target} value at index \(1, 7\) "
                                             rf"\(Inf, NaN, or a value beyond the {target} range"):
            entry(x)
    x[1, 7] = 1e5
    for name in ("mxfp4", "nvfp4", "int4"):
        assert torch.isfinite(_entries()[name](x)).all()
    with pytest.raises(ValueError, match=r"non-finite FP16 value at index \(1, 7\)"):
        bd.quantize(x)
    assert bool(bd.quantize(x, nonfinite="flag").invalid[1, 0])


# ---- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"pad": "no"}, "pad"), ({"pad": 1}, "pad"), ({"pad": None}, "pad"), ({"pad": torch.tensor(True)}, "pad"),
    ({"nonfinite": None}, "nonfinite"), ({"nonfinite": 1}, "nonfinite"), ({"nonfinite": "FLAG"}, "nonfinite"),
    ({"method": ["two_stage"]}, "method"), ({"method": "trunc"}, "method"), ({"method": "two-stage"}, "method"),
    ({"block": 32.0}, "block"), ({"block": np.float64(32)}, "block"), ({"block": 0}, "block"),
])
def test_quantize_bad_options_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        bd.quantize(torch.zeros(2, 40), **kwargs)


def test_pad_takes_real_bools():
    x = torch.randn(2, 40, generator=torch.Generator().manual_seed(3))
    a = bd.quantize(x, pad=True)
    b = bd.quantize(x, pad=np.bool_(True))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError, match=r"\bx\b"):
        bd.quantize(x, pad=np.bool_(False))
    assert bd.quantize(torch.zeros(2, 64), block=np.int64(64)).codes.shape == (2, 1, 64)


@pytest.mark.parametrize("block", [8, 48, "16", True, 16.0])
def test_unpack_and_baselines_bad_block(block):
    with pytest.raises(ValueError, match=r"^block\b"):
        bd.unpack(b"", block=block)
    with pytest.raises(ValueError, match=r"^block\b"):
        baselines.int4(torch.zeros(1, 64), block)
    with pytest.raises(ValueError, match=r"^block\b"):
        baselines.fake_quantize(torch.zeros(1, 64), "bd_two_stage_trunc", block)


# ---- devices ------------------------------------------------------------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_results_stay_on_the_input_device(device):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 64, generator=gen).to(device)
    w = torch.randn(5, 64, generator=gen, dtype=torch.float64).to(device)   # float64 goes through numpy
    for method in bd.METHODS:
        q = bd.quantize(x, method=method)
        assert all(t.device.type == device for t in q), method
    q_w = bd.quantize(w, method="mse")
    assert all(t.device.type == device for t in q_w)
    q_x = bd.quantize(x)
    assert bd.dequantize(q_x).device.type == device
    assert all(t.device.type == device for t in bd.decode(q_x))
    assert bd.linear(q_x, q_w).device.type == device
    raw = bd.pack(q_x)
    assert raw.device.type == device and bd.unpack(raw).codes.device.type == device
    for fmt in baselines.FORMATS:
        assert baselines.fake_quantize(x, fmt).device.type == device, fmt
    # numpy input is CPU data, and stays there
    assert bd.quantize(x.cpu().numpy()).codes.device.type == "cpu"
