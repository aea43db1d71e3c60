"""`python -m golden.report --quick` end to end on the default model: files, keys, and relations
that hold by construction (so a failure points at a real defect)."""
import json
import math
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.model

REPO = pathlib.Path(__file__).resolve().parents[2]
EXPECTED_KEYS = {"meta", "formats", "tensor_metrics", "dialects", "selection", "block_sizes", "perplexity",
                 "float64_check", "stage1", "hardware_exact", "accumulation", "block_maps", "timing", "figures"}


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden_quick")
    done = subprocess.run([sys.executable, "-m", "golden.report", "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value
    elif value in ("inf", "-inf", "nan"):
        yield float(value)


def test_files_and_keys(quick_report):
    out, result = quick_report
    assert EXPECTED_KEYS <= set(result)
    markdown = (out / "report.md").read_text()
    for name in result["figures"].values():
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in markdown  # embedded by relative path
    assert "Q4_1" in markdown and "Quick mode" in markdown and "rounding stage 1" in markdown
    for section in ("## Hardware-exact perplexity", "## Error added by the accumulation", "## Dynamic block sizes"):
        assert section in markdown
    # An accumulation that adds no error has an infinite SQNR; nothing else is infinite or NaN.
    assert all(math.isfinite(x) for x in _numbers({k: v for k, v in result.items() if k != "accumulation"}))
    assert not any(math.isnan(x) for x in _numbers(result["accumulation"]))


def test_every_layer_has_every_format(quick_report):
    _, result = quick_report
    layers = result["tensor_metrics"]["layers"]
    assert len(layers) == result["meta"]["layers_measured"] == 14
    for entry in layers.values():
        for kind in ("weight", "activation"):
            for key in ("bd_two_stage_b32", "bd_two_stage_trunc_b32", "bd_mse_b32", "mxfp4_b16", "mxfp4_b32",
                        "nvfp4_b16", "int4_b32"):
                assert entry[kind][key]["mse"] > 0 and entry[kind][key]["sqnr_db"] >= 0  # 0 is on every grid
        for block in (16, 32, 64):
            for fmt in ("bd_two_stage", "bd_two_stage_trunc", "bd_mse"):
                assert entry["activation"][f"{fmt}_b{block}"]["mse"] > 0


def test_mse_selection_beats_two_stage_on_every_layer(quick_report):
    # SPEC 5: per block, the MSE dialect has the least squared error against the FP16 input.
    _, result = quick_report
    for name, entry in result["tensor_metrics"]["layers"].items():
        for kind, blocks in (("weight", (32,)), ("activation", (16, 32, 64))):
            for b in blocks:
                for online in ("bd_two_stage", "bd_two_stage_trunc"):
                    assert entry[kind][f"bd_mse_b{b}"]["mse"] <= entry[kind][f"{online}_b{b}"]["mse"] * (1 + 1e-12), name
    for kind in ("weight", "activation"):
        assert result["selection"][kind] and all(r["mean_sqnr_loss_db"] >= 0 for r in result["selection"][kind].values())


def test_dialect_counts_and_agreement(quick_report):
    _, result = quick_report
    for kind in ("weight", "activation"):
        for method in ("mse", "two_stage", "two_stage_trunc"):
            hist = result["dialects"][f"{kind}_{method}"]
            assert len(hist["counts"]) == 16 and sum(hist["counts"]) == hist["blocks"] > 0
        sel = result["selection"][kind]["bd_two_stage_b32"]
        assert 0.0 <= sel["agreement_rate"] <= 1.0
        assert sel["blocks"] == result["dialects"][f"{kind}_mse"]["blocks"]


def test_stage1_rows(quick_report):
    _, result = quick_report
    rows = result["stage1"]
    assert [(r["block"], r["selector"]) for r in rows] == [
        (b, m) for b in (16, 32, 64) for m in ("two_stage", "two_stage_trunc", "mse")]
    summary = result["tensor_metrics"]["summary"]["activation"]
    for r in rows:
        assert r["pooled_sqnr_db"] == summary[f"{r['format']}_b{r['block']}"]["pooled_sqnr_db"]
        # MSE agrees with itself; an online selector misses the MSE dialect on some real blocks.
        assert (r["agreement_with_mse"] == 1.0) if r["selector"] == "mse" else (0.0 < r["agreement_with_mse"] < 1.0)
    # Quick mode runs perplexity at B=32 only, every selector in the linear scope.
    assert all((r["ppl_linear"] is not None) == (r["block"] == 32) for r in rows)


def test_hardware_exact_beside_fake_quantized(quick_report):
    out, result = quick_report
    runs = result["perplexity"]["runs"]
    rows = {r["accumulate"]: r for r in result["hardware_exact"]}
    exact = rows["exact"]
    assert exact["key"] == "exact_linear_bd_mse_bd_two_stage_b32" and set(rows) == {"exact", "fp32", "fp16"}
    # The only difference is one FP32 rounding per linear output.
    assert abs(exact["rel_diff"]) < 1e-3
    fake = runs["linear_bd_mse_bd_two_stage_b32"]["perplexity"]
    for mode, row in rows.items():
        run = runs[row["key"]]
        assert run["exact"] and run["accumulate"] == mode and run["block"] == 32 and run["scope"] == "linear"
        assert row["exact"] == run["perplexity"] and row["fake"] == fake
        assert row["exact_accumulation"] == exact["exact"]
        assert row["rel_diff_accumulation"] == pytest.approx((row["exact"] - exact["exact"]) / exact["exact"])
    # The report states each rounded mode's effect from these figures.
    markdown = (out / "report.md").read_text()
    for mode in ("fp32", "fp16"):
        line = next(l for l in markdown.splitlines() if l.startswith(f"- **{mode.upper()} accumulation**"))
        assert f"{rows['exact']['exact']:.6f}" in line
        assert ("to the last bit" in line) == (rows[mode]["exact"] == exact["exact"])


def test_accumulation_error_on_real_layers(quick_report):
    from golden.report.writer import json_restore

    _, result = quick_report
    acc = json_restore(result["accumulation"])      # an error-free mode's SQNR is "inf" in the JSON
    assert acc["modes"] == ["exact", "fp32", "fp16"]
    assert list(acc["layers"]) == list(result["float64_check"]["layers"])
    for name, entry in acc["layers"].items():
        check = result["float64_check"]["layers"][name]
        for key in acc["modes"] + ["quantization"]:
            assert entry[key]["outputs"] == check["outputs"]
        # Exact mode is the float64 product rounded once to FP32: nearer than any other FP32 result,
        # within 2^-24 of it, and equal to it wherever the cross-check found the two identical.
        for mode in ("fp32", "fp16"):
            assert entry["exact"]["sqnr_db"] >= entry[mode]["sqnr_db"]
            assert entry["exact"]["differing_fraction"] <= entry[mode]["differing_fraction"]
        assert entry["exact"]["sqnr_db"] >= 20 * math.log10(2 ** 24)
        assert (entry["exact"]["differing_fraction"] == 0) == (check["max_rel_diff"] == 0 == check["zero_mismatches"])
        assert math.isfinite(entry["quantization"]["sqnr_db"])
    assert set(acc["pooled_sqnr_db"]) == {"exact", "fp32", "fp16", "quantization"}


def test_dynamic_block_sizes(quick_report):
    out, result = quick_report
    runs = result["perplexity"]["runs"]
    rows = {r["scope"]: r for r in result["block_maps"]}
    assert result["meta"]["block_map"] == "down_proj=16,attn_scores=16,*=32"
    assert rows["linear"]["block_map"] == "down_proj=16,*=32"
    assert rows["full"]["block_map"] == "down_proj=16,attn_scores=16,*=32"
    b32, b16 = result["formats"]["bd_two_stage_b32"], result["formats"]["bd_two_stage_b16"]
    for scope, row in rows.items():
        run = runs[row["key"]]
        assert row["key"] == f"{scope}_bd_mse_bd_two_stage_map" and run["perplexity"] == row["perplexity"]
        bits = row["operand_bits"]
        assert run["bits_per_element"] == row["bits_per_element"] == bits["all"]
        assert bits["tokens"] == result["perplexity"]["window"]
        # Operands in blocks of 16 and of 32: strictly between the two uniform figures.
        for kind in ("weight", "activation", "all"):
            assert b32["bits_per_element"] < bits[kind] < b16["bits_per_element"]
        assert row["uniform"]["32"]["perplexity"] == runs[f"{scope}_bd_mse_bd_two_stage_b32"]["perplexity"]
    # Both scopes quantize the same linear layers in the same blocks.
    assert rows["linear"]["operand_bits"]["weight"] == rows["full"]["operand_bits"]["weight"]
    assert rows["linear"]["operand_bits"]["weight_elements"] == rows["full"]["operand_bits"]["weight_elements"]
    assert rows["full"]["operand_bits"]["activation_elements"] > rows["linear"]["operand_bits"]["activation_elements"]


def test_a_block_map_that_matches_no_layer_is_a_one_line_error(tmp_path, capsys):
    from golden.report.__main__ import main

    assert main(["--quick", "--out", str(tmp_path), "--block-map", "nosuch_proj=16,*=32"]) == 2
    # Known once the model is loaded (its progress comes first), before anything is measured.
    err = capsys.readouterr().err.strip()
    error = err.splitlines()[-1]
    assert "Traceback" not in err and err.count("error:") == 1, err
    assert error.startswith("python -m golden.report: error: block_map entry 'nosuch_proj=16'") and "matches no" in error
    assert not (tmp_path / "report.json").exists()


def test_bd_linear_agrees_with_float64_to_fp32_rounding(quick_report):
    _, result = quick_report
    hw = result["float64_check"]
    assert hw["layers"] and hw["max_rel_diff"] <= 2.0 ** -24 and hw["zero_mismatches"] == 0


def test_perplexity_runs(quick_report):
    _, result = quick_report
    runs = result["perplexity"]["runs"]
    assert {"baseline", "linear_bd_mse_bd_two_stage_b32", "full_bd_mse_bd_two_stage_b32"} <= set(runs)
    assert result["meta"]["dtype"] == result["perplexity"]["dtype"] == "float64"
    for run in runs.values():
        assert 1.0 < run["perplexity"] < 49152  # better than a uniform guess over the vocabulary
        assert run["perplexity"] == pytest.approx(math.exp(run["nll_sum"] / run["predicted_tokens"]))
        assert run["predicted_tokens"] == result["meta"]["perplexity_tokens"] - run["windows"]


def test_rewrite_from_json_gives_the_same_report(quick_report, tmp_path):
    from golden.report.__main__ import main

    out, result = quick_report
    assert main(["--from-json", str(out / "report.json"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == (out / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text()) == result
