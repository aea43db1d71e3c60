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
                 "hardware_equivalence", "timing", "figures"}


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
    assert "Q4_1" in markdown and "Quick mode" in markdown
    assert all(math.isfinite(x) for x in _numbers(result))


def test_every_layer_has_every_format(quick_report):
    _, result = quick_report
    layers = result["tensor_metrics"]["layers"]
    assert len(layers) == result["meta"]["layers_measured"] == 14
    for entry in layers.values():
        for kind in ("weight", "activation"):
            for key in ("bd_two_stage_b32", "bd_mse_b32", "mxfp4_b16", "mxfp4_b32", "nvfp4_b16", "int4_b32"):
                assert entry[kind][key]["mse"] > 0 and entry[kind][key]["sqnr_db"] >= 0  # 0 is on every grid


def test_mse_selection_beats_two_stage_on_every_layer(quick_report):
    # SPEC 5: per block, the MSE dialect has the least squared error against the FP16 input.
    _, result = quick_report
    for name, entry in result["tensor_metrics"]["layers"].items():
        for kind in ("weight", "activation"):
            assert entry[kind]["bd_mse_b32"]["mse"] <= entry[kind]["bd_two_stage_b32"]["mse"] * (1 + 1e-12), name
    for kind in ("weight", "activation"):
        assert result["selection"][kind]["mean_sqnr_loss_db"] >= 0


def test_dialect_counts_and_agreement(quick_report):
    _, result = quick_report
    for key in ("weight_mse", "weight_two_stage", "activation_two_stage", "activation_mse"):
        hist = result["dialects"][key]
        assert len(hist["counts"]) == 16 and sum(hist["counts"]) == hist["blocks"] > 0
    for kind in ("weight", "activation"):
        sel = result["selection"][kind]
        assert 0.0 <= sel["agreement_rate"] <= 1.0
        assert sel["blocks"] == result["dialects"][f"{kind}_mse"]["blocks"]


def test_hardware_path_agrees_to_fp32_rounding(quick_report):
    _, result = quick_report
    hw = result["hardware_equivalence"]
    assert hw["layers"] and hw["max_rel_diff"] <= 2.0 ** -24 and hw["zero_mismatches"] == 0


def test_perplexity_runs(quick_report):
    _, result = quick_report
    runs = result["perplexity"]["runs"]
    assert {"baseline_fp32", "linear_bd_mse_bd_two_stage_b32", "full_bd_mse_bd_two_stage_b32"} <= set(runs)
    for run in runs.values():
        assert 1.0 < run["perplexity"] < 49152  # better than a uniform guess over the vocabulary
        assert run["perplexity"] == pytest.approx(math.exp(run["nll_sum"] / run["predicted_tokens"]))
        assert run["predicted_tokens"] == result["meta"]["perplexity_tokens"] - run["windows"]
