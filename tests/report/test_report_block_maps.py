"""The report's accumulation-mode rows and block-map runs on small inputs: bits per element counted
by hand, the rows that set runs side by side, the accumulation's error, the CLI's errors. No model
file is loaded here."""
import math
import re

import pytest
import torch
from tests.report.test_report_units import _tiny_llama

import golden.report as report
from golden import quantize_model
from golden.report import accumulation, block_maps, metrics, perplexity
from golden.report.__main__ import main


def _cost(rows: int, length: int, block: int) -> int:
    """SPEC 3 written out: 4-bit codes, and 5 exponent + 4 dialect bits per block (the last padded)."""
    return rows * (4 * length + 9 * math.ceil(length / block))


def test_operand_bits_of_the_default_map_counted_by_hand():
    # Tiny LLaMA: hidden 64, intermediate 128, 2 layers, 4 heads and 2 key/value heads of 16.
    model = _tiny_llama()
    tokens = 40                     # not a multiple of a block: the probabilities and V end in a padded block
    weights = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64)]   # q, k, v, o, gate, up (rows, in)
    weight_bits = 2 * (sum(_cost(r, k, 32) for r, k in weights) + _cost(64, 128, 16))
    weight_elements = 2 * (sum(r * k for r, k in weights) + 64 * 128)
    linear_bits = 2 * (6 * _cost(tokens, 64, 32) + _cost(tokens, 128, 16))
    linear_elements = 2 * tokens * (6 * 64 + 128)
    attention_bits = 2 * (_cost(tokens * 4, 16, 16) + _cost(tokens * 2, 16, 16)     # Q, K along head_dim
                          + _cost(4 * tokens, tokens, 32) + _cost(2 * 16, tokens, 32))   # probabilities, V
    attention_elements = 2 * (tokens * 6 * 16 + 4 * tokens * tokens + 2 * 16 * tokens)
    for scope in ("linear", "full"):
        block_map = block_maps.for_scope(block_maps.DEFAULT_BLOCK_MAP, scope)
        with quantize_model(model, "bd_mse", "bd_two_stage", scope=scope, block_map=block_map) as handle:
            bits = block_maps.operand_bits(model, handle, tokens, "bd_mse", "bd_two_stage")
        act_bits = linear_bits + (attention_bits if scope == "full" else 0)
        act_elements = linear_elements + (attention_elements if scope == "full" else 0)
        assert (bits.weight_elements, bits.activation_elements, bits.tokens) == (weight_elements, act_elements, tokens)
        assert bits.weight == pytest.approx(weight_bits / weight_elements, rel=1e-12)
        assert bits.activation == pytest.approx(act_bits / act_elements, rel=1e-12)
        assert bits.all == pytest.approx((weight_bits + act_bits) / (weight_elements + act_elements), rel=1e-12)
        assert metrics.bits("bd_mse", 32) < bits.all < metrics.bits("bd_mse", 16)
    # A uniform block size that divides every operand gives the uniform figure.
    with quantize_model(model, "bd_mse", "bd_two_stage", scope="full", block_map="*=16") as handle:
        uniform = block_maps.operand_bits(model, handle, 32, "bd_mse", "bd_two_stage")
    assert uniform.weight == uniform.activation == pytest.approx(metrics.bits("bd_mse", 16), rel=1e-12)


def test_block_maps_by_scope_and_their_errors():
    assert block_maps.normalize(" down_proj = 16 ,attn_scores=16, *=32") == block_maps.DEFAULT_BLOCK_MAP
    assert block_maps.for_scope(block_maps.DEFAULT_BLOCK_MAP, "linear") == "down_proj=16,*=32"
    assert block_maps.for_scope(block_maps.DEFAULT_BLOCK_MAP, "full") == block_maps.DEFAULT_BLOCK_MAP
    assert block_maps.for_scope("attn_scores=16", "linear") == "*=32"
    assert report.options(block_map="up_proj=64, *=16").block_map == "up_proj=64,*=16"
    for bad, entry in (("down_proj=17,*=32", "'down_proj=17'"), ("down_proj16", "'down_proj16'"),
                       ("(=16", "'(=16'"), ("*=32,*=16", "'*=16'")):
        with pytest.raises(ValueError, match=re.escape(f"block_map entry {entry}")):
            report.options(block_map=bad)
    names = ["model.layers.0.mlp.down_proj", "model.layers.0.mlp.up_proj"]
    block_maps.check_matches("down_proj=16,attn_scores=16,*=32", names)
    with pytest.raises(block_maps.BlockMapError, match="block_map entry 'gate_proj=16'"):
        block_maps.check_matches("down_proj=16,gate_proj=16", names)


def test_schemes_of_every_accumulation_mode_and_of_the_map():
    for quick in (True, False):
        keys = [s.key for s in perplexity.perplexity_schemes(quick, "mlp=16,attn_values=64,*=32")]
        assert len(keys) == len(set(keys))
        for key in ("exact_linear_bd_mse_bd_two_stage_b32", "exact_linear_bd_mse_bd_two_stage_b32_acc_fp32",
                    "exact_linear_bd_mse_bd_two_stage_b32_acc_fp16", "linear_bd_mse_bd_two_stage_map",
                    "full_bd_mse_bd_two_stage_map"):
            assert key in keys
    maps = {s.scope: s for s in perplexity.perplexity_schemes(True, "mlp=16,attn_values=64,*=32") if s.block_map}
    assert maps["linear"].block_map == "mlp=16,*=32" and maps["full"].block_map == "mlp=16,attn_values=64,*=32"
    exact = {s.accumulate: s for s in perplexity.perplexity_schemes(True) if s.exact}
    assert set(exact) == {"exact", "fp32", "fp16"} and all(s.block == 32 for s in exact.values())
    with pytest.raises(ValueError, match="accumulate"):
        perplexity.scheme("linear", "bd_mse", "bd_two_stage", 32, "BD", accumulate="fp16")
    with pytest.raises(ValueError, match="block_map"):
        perplexity.scheme("linear", "bd_mse", "bd_two_stage", 32, "BD", block_map="*=16")
    with pytest.raises(ValueError, match="averaged over the model"):
        perplexity.scheme_bits(maps["full"])


def _run(scope, block, ppl, exact=False, accumulate="exact", block_map=None, bits=4.0):
    return {"label": f"{scope} {block} {accumulate}", "scope": scope, "weight_fmt": "bd_mse", "act_fmt": "bd_two_stage",
            "block": block, "exact": exact, "accumulate": accumulate, "block_map": block_map, "perplexity": ppl,
            "seconds": 1.0, "bits_per_element": bits, "operand_bits": {"all": bits} if block_map else None}


def test_rows_set_each_run_beside_its_twins():
    runs = {"linear_b16": _run("linear", 16, 30.0, bits=4.5625), "linear_b32": _run("linear", 32, 40.0, bits=4.28125),
            "full_b32": _run("full", 32, 50.0), "exact_b16": _run("linear", 16, 30.5, exact=True),
            "exact_b32": _run("linear", 32, 40.5, exact=True),
            "exact_b32_fp16": _run("linear", 32, 44.55, exact=True, accumulate="fp16"),
            "linear_map": _run("linear", None, 33.0, block_map="down_proj=16,*=32", bits=4.35)}
    result = {"perplexity": {"runs": runs}}
    rows = {r["key"]: r for r in report.hardware_exact_rows(result)}
    assert set(rows) == {"exact_b16", "exact_b32", "exact_b32_fp16"}
    assert rows["exact_b16"]["fake"] == 30.0 and rows["exact_b16"]["exact_accumulation"] == 30.5
    fp16 = rows["exact_b32_fp16"]
    assert (fp16["fake"], fp16["exact_accumulation"], fp16["accumulate"]) == (40.0, 40.5, "fp16")
    assert fp16["rel_diff_accumulation"] == pytest.approx(0.1) and fp16["rel_diff"] == pytest.approx(0.11375)
    (row,) = report.block_map_rows(result)
    assert (row["key"], row["perplexity"], row["bits_per_element"]) == ("linear_map", 33.0, 4.35)
    assert row["uniform"] == {"32": {"perplexity": 40.0, "bits_per_element": 4.28125},
                              "16": {"perplexity": 30.0, "bits_per_element": 4.5625}}


def test_the_accumulation_error_is_least_in_exact_mode():
    # Block sums have 14 bits at most: FP32 accumulation rounds only where a row's block values span
    # more than about 10 binades, so every block of 32 gets its own scale, 2^-16 ... 2^2 (no FP16
    # overflow: the comparison is of finite errors).
    g = torch.Generator().manual_seed(13)
    a, w = ((torch.randn(rows, 64, 32, generator=g)
             * torch.pow(2.0, torch.randint(-16, 3, (rows, 64, 1), generator=g).float())).reshape(rows, 2048)
            for rows in (24, 40))
    errors = accumulation.layer_errors(a, w)
    assert set(errors) == {"exact", "fp32", "fp16", accumulation.QUANTIZATION}
    sqnr = {k: metrics.sqnr_db(e.stats.signal, e.stats.noise) for k, e in errors.items()}
    assert errors["fp32"].differing > 0 and errors["fp16"].differing > 0     # the case is not trivial
    # "exact" is the nearest FP32 value of the exact sum: no FP32 result is nearer, and an output that
    # equals the float64 reference in another mode is representable, so "exact" gives it too.
    for mode in ("fp32", "fp16"):
        assert sqnr["exact"] >= sqnr[mode]
        assert errors["exact"].differing <= errors[mode].differing
    assert sqnr["exact"] >= 20 * math.log10(2 ** 24)
    assert all(e.stats.count == 24 * 40 for e in errors.values())


def _cli(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("bad, words", [("down_proj=17,*=32", ["'down_proj=17'", "block"]),
                                        ("down_proj16", ["'down_proj16'", "PATTERN=BLOCK"]),
                                        ("[=16", ["'[=16'", "regular expression"])])
def test_cli_block_map_errors_are_one_line(bad, words, tmp_path, capsys):
    code, err = _cli(["--quick", "--out", str(tmp_path), "--block-map", bad], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("python -m golden.report: error: block_map entry ")
    for word in words:
        assert word in err, (word, err)


def test_cli_help_names_the_block_map():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "golden.report", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--block-map" in done.stdout and block_maps.DEFAULT_BLOCK_MAP in done.stdout
