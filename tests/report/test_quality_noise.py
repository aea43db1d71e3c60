"""NVFP4's static calibrated activation scale, the noise bands and the quality-against-cost section, on
small hand-made inputs and a tiny random LLaMA (no model file)."""
import json
import math
import pathlib

import pytest
import torch

import golden.report as report
from golden import baselines, calibration, model_quantization, native
from golden.report import noise, perplexity, quality_cost
from golden.report.__main__ import main


@pytest.fixture(scope="module")
def tiny():
    """A random two-layer LLaMA in float64 and 96 token ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    return (model.eval().requires_grad_(False).to(torch.float64),
            torch.randint(0, 96, (1, 96), generator=torch.Generator().manual_seed(3)))


# --- NVFP4 with a static tensor scale ------------------------------------------------------------------

def test_static_nvfp4_on_exact_values_and_saturation():
    # Static amax 1344: tensor scale 1344 / 2688 = 0.5 exactly.
    x = torch.zeros(3, 16)
    x[0, :4] = torch.tensor([3.0, -1.5, 0.75, 0.25])      # block amax 3: block scale 3/6/0.5 = 1, elements x/0.5
    x[1, 0], x[1, 1] = 2688.0, 700.0                       # beyond the amax: scale 896 saturates at 448
    x[2, 0] = 0.01                                         # small block: E4M3 subnormal scale 2/512
    x_small = torch.zeros(16)
    x_small[0] = 1e-3                                      # scale 1/3000 rounds to E4M3 zero: the block is 0
    out = baselines.nvfp4(x, tensor_amax=1344.0)
    assert out[0, :4].tolist() == [3.0, -1.5, 0.75, 0.25]
    # Full scale 448 * 0.5 = 224: 2688/224 = 12 saturates at E2M1's 6 -> 1344; 700/224 = 3.125 -> 3 -> 672.
    assert out[1, :2].tolist() == [1344.0, 672.0]
    # 0.01 / 6 / 0.5 -> E4M3 2/512; full scale 2^-9; 0.01 / 2^-9 = 5.12 -> E2M1 6.
    assert out[2, 0] == 6 * 2.0 ** -9
    assert baselines.nvfp4(x_small, tensor_amax=1344.0).abs().max() == 0
    # The dynamic scale takes the tensor's own amax (2688 here) and nothing saturates.
    assert baselines.nvfp4(x)[1, 0] == 2688.0


def test_static_nvfp4_native_kernel_equals_reference():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 64, generator=g, dtype=torch.float64) * torch.exp(2 * torch.randn(8, 64, generator=g,
                                                                                             dtype=torch.float64))
    amax = float(x.abs().max()) / 3                         # a third of the real amax: many saturate
    fast = baselines.fake_quantize(x, "nvfp4", dtype=torch.float64, tensor_amax=amax)
    reference = baselines.nvfp4(x, tensor_amax=amax).to(torch.float64)
    assert torch.equal(fast, reference)
    with native.use("reference"):                             # fake_quantize's own reference path
        assert torch.equal(baselines.fake_quantize(x, "nvfp4", dtype=torch.float64, tensor_amax=amax), reference)
    assert not torch.equal(fast, baselines.fake_quantize(x, "nvfp4", dtype=torch.float64))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), "1", True, 1e-45])
def test_static_amax_is_validated(bad):
    with pytest.raises(ValueError, match="tensor_amax"):
        baselines.fake_quantize(torch.ones(16), "nvfp4", tensor_amax=bad)


def test_static_amax_only_for_nvfp4():
    with pytest.raises(ValueError, match="tensor_amax"):
        baselines.fake_quantize(torch.ones(32), "mxfp4", 32, tensor_amax=1.0)


# --- calibration ------------------------------------------------------------------------------------------

def test_calibrated_amax_equals_an_independent_computation(tiny):
    model, ids = tiny
    amax = calibration.calibrate(model, ids, window=32, scope="full", batch=2)
    # Layer 0's q_proj reads the normalised embeddings: computed here without the model's forward.
    with torch.no_grad():
        expected = max(float(model.model.layers[0].input_layernorm(model.model.embed_tokens(ids[:, s:s + 32]))
                             .abs().max()) for s in range(0, 96, 32))
    assert amax["model.layers.0.self_attn.q_proj"] == float(torch.tensor(expected, dtype=torch.float32))
    # Every quantized linear layer and every attention operand has its scale; probabilities reach 1
    # (the first query attends to itself only).
    linears = perplexity.quantized_linears(model)
    assert set(linears) <= set(amax)
    assert amax["model.layers.1.self_attn.probs"] == 1.0
    assert {f"model.layers.{i}.self_attn.{o}" for i in range(2)
            for o in model_quantization.ATTENTION_AMAX_OPERANDS} <= set(amax)
    # Each layer's amax equals the largest input the layer sees in an unquantized forward pass.
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, max(seen.get(n, 0.0),
                                                                                      float(a[0].abs().max()))))
             for n, m in linears.items()]
    try:
        with torch.no_grad():
            for s in range(0, 96, 32):
                model(ids[:, s:s + 32])
    finally:
        for h in hooks:
            h.remove()
    assert all(amax[n] == float(torch.tensor(v, dtype=torch.float32)) for n, v in seen.items())


def test_static_scheme_uses_the_calibrated_scales(tiny, monkeypatch):
    model, ids = tiny
    amax = calibration.calibrate(model, ids[:, :64], window=32)
    used = []
    real = model_quantization.fake_quantize

    def spy(x, fmt, block, dtype=None, tensor_amax=None):
        used.append((x.dim(), tensor_amax))
        return real(x, fmt, block, dtype, tensor_amax=tensor_amax)

    monkeypatch.setattr(model_quantization, "fake_quantize", spy)
    static = perplexity.nvfp4_schemes("linear")[1]
    assert static.static and static.key == "linear_nvfp4_nvfp4_b16_static"
    with perplexity.installed(model, static, calibration=amax), torch.no_grad():
        model(ids[:, 64:])
    # Weights (2-D) keep their own scale; every activation (batch, tokens, features) takes its layer's.
    weights = [a for d, a in used if d == 2]
    activations = [a for d, a in used if d == 3]
    assert len(weights) == 14 and set(weights) == {None}
    assert len(activations) == 2 * 4 and set(activations) <= set(amax.values())
    with pytest.raises(ValueError, match="calibration"):
        with perplexity.installed(model, static):
            pass


def test_quantize_model_validates_activation_amax(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="activation_amax: static tensor scales are NVFP4's"):
        model_quantization.quantize_model(model, "nvfp4", "mxfp4", 16, activation_amax={})
    with pytest.raises(ValueError, match="activation_amax has no amax for 14 quantized layer"):
        model_quantization.quantize_model(model, "nvfp4", "nvfp4", 16, activation_amax={})
    names = perplexity.quantized_linears(model)
    with pytest.raises(ValueError, match=r"activation_amax\['model.layers.0.mlp.up_proj'\]"):
        model_quantization.quantize_model(model, "nvfp4", "nvfp4", 16,
                                          activation_amax={n: (-1.0 if "0.mlp.up" in n else 1.0) for n in names})
    with pytest.raises(ValueError, match="scope='full' needs the amax of every attention operand"):
        model_quantization.quantize_model(model, "nvfp4", "nvfp4", 16, scope="full",
                                          activation_amax={n: 1.0 for n in names})
    with pytest.raises(ValueError, match="activation_gain"):
        model_quantization.quantize_model(model, "nvfp4", "nvfp4", 16, activation_gain=3.0)


def test_longest_common_run_and_disjointness():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, 1000, (1, 300), generator=g), torch.randint(1000, 2000, (1, 200), generator=g)
    assert calibration.longest_common_run(a, b) == 0
    b[0, 50:90] = a[0, 100:140]                               # a shared passage of 40 tokens
    assert calibration.longest_common_run(a, b) == 40
    assert calibration.longest_common_run(b, a) == 40
    with pytest.raises(ValueError, match="calibration_ids share a passage of 40"):
        calibration.check_disjoint(b, a)
    b[0, 70] = -1                                             # now at most 20
    assert calibration.check_disjoint(b, a) == 20


def test_report_calibration_tokens_follow_the_evaluation():
    opts = report.options(quick=True)
    ids = torch.arange(1000).reshape(1, -1)
    calib, source = report.calibration_ids(None, ids, ids[:, :128], opts)
    assert torch.equal(calib, ids[:, 128:256]) and source["first_token"] == 128
    assert source["longest_common_run_tokens"] == 0
    # A text that repeats the evaluation passage after it is refused.
    repeated = torch.cat([ids[:, :128], ids[:, :128]], dim=1)
    with pytest.raises(report.TextError, match="default calibration text: share a passage of 128"):
        report.calibration_ids(None, repeated, repeated[:, :128], opts)
    with pytest.raises(report.TextError, match="fewer than one window"):
        report.calibration_ids(None, ids[:, :140], ids[:, :128], opts)


def test_cli_errors_for_the_new_arguments(tmp_path, capsys):
    assert main(["--quick", "--calibration-text", str(tmp_path / "none.txt"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("--calibration-text " + str(tmp_path / "none.txt") + ": no such file")
    assert main(["--quick", "--synth-json", str(tmp_path / "none.json"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--synth-json" in err and "no such file" in err
    assert main(["--quick", "--noise-runs", "(", "--out", str(tmp_path)]) == 2
    assert "noise_runs must be a regular expression" in capsys.readouterr().err


# --- noise bands ------------------------------------------------------------------------------------------

def test_noise_runs_selection():
    every = report.selected_schemes(report.options())
    keys = [s.key for s in every]
    assert "linear_bd_mse_bd_two_stage_b32_noise_up" in keys and "linear_nvfp4_nvfp4_b16_static_noise_down" in keys
    up = next(s for s in every if s.key == "linear_bd_mse_bd_two_stage_b32_noise_up")
    assert up.gain == 1 + 2 ** -20 and up.scope == "linear"
    assert not any("noise" in s.key for s in report.selected_schemes(report.options(runs="^linear_mxfp4")))
    assert not any("noise" in s.key for s in report.selected_schemes(report.options(noise_runs="none")))
    with pytest.raises(ValueError, match="noise_runs"):
        report.selected_schemes(report.options(noise_runs="^nothing$"))


def test_gain_scales_the_quantizer_input(tiny, monkeypatch):
    model, ids = tiny
    seen = {}
    real = model_quantization.fake_quantize

    def spy(x, fmt, block, dtype=None, tensor_amax=None):
        seen.setdefault("x", x.clone())
        return real(x, fmt, block, dtype, tensor_amax=tensor_amax)

    monkeypatch.setattr(model_quantization, "fake_quantize", spy)
    base = perplexity.bd_scheme("linear", "bd_two_stage", 32)
    inputs = []
    for s in (base, perplexity.noise_scheme(base, "down")):
        seen.clear()
        with perplexity.installed(model, s), torch.no_grad():
            model(ids[:, :32])
        inputs.append(seen["x"])
    # The first layer's input is the same in both runs; the quantizer saw it scaled by 1 - 2^-20.
    assert torch.equal(inputs[1], inputs[0] * (1 - 2 ** -20)) and not torch.equal(inputs[1], inputs[0])


def test_window_band_contains_the_central_value():
    run = {"window_nll": [100.0, 130.0, 90.0, 120.0], "window_tokens": [50, 50, 50, 50]}
    central = math.exp(440.0 / 200)
    low, high = noise.window_band(run)
    means = [2.0, 2.6, 1.8, 2.4]
    sd = math.sqrt(sum((m - 2.2) ** 2 for m in means) / 3)
    assert low < central < high
    assert (low, high) == pytest.approx((math.exp(2.2 - sd / 2), math.exp(2.2 + sd / 2)))
    assert noise.window_band({"window_nll": [1.0], "window_tokens": [3]}) is None


def _run(scope, ppl, **extra):
    return dict(scope=scope, perplexity=ppl, label=extra.pop("label", "x"), **extra)


def test_perturbation_bands_floors_and_ties():
    runs = {"baseline": _run("baseline", 10.0),
            "linear_a": _run("linear", 40.0), "linear_a_noise_up": _run("linear", 40.4),
            "linear_a_noise_down": _run("linear", 39.8),
            "linear_b": _run("linear", 40.6), "linear_c": _run("linear", 45.0), "full_a": _run("full", 50.0)}
    section = noise.section(runs)
    a = section["bands"]["linear_a"]
    assert a["band"] == [39.8, 40.4] and a["source"] == "measured"
    assert a["band"][0] <= runs["linear_a"]["perplexity"] <= a["band"][1]
    assert a["rel_half_width"] == pytest.approx(math.log(40.4 / 40.0))
    # Unmeasured runs get the floor, the full scope the other scope's (said so).
    assert section["bands"]["linear_b"]["source"] == "floor"
    assert section["bands"]["linear_b"]["rel_half_width"] == a["rel_half_width"]
    assert section["floors"]["full"]["from"] == "measured in the other scope"
    assert "baseline" not in section["bands"] and "linear_a_noise_up" not in section["bands"]
    # 40 vs 40.6 is inside 2 x 1 %; 40 vs 45 is not.
    assert noise.tie(section, runs, "linear_a", "linear_b")
    assert not noise.tie(section, runs, "linear_a", "linear_c")
    assert noise.ties(section, runs, ["linear_a", "linear_b", "linear_c", "missing"]) == [("linear_a", "linear_b")]


# --- quality against cost ---------------------------------------------------------------------------------

def test_pareto_front_on_a_hand_made_case():
    pts = [dict(label=l, g=g, p=p) for l, g, p in
           [("A", 100, 50), ("B", 120, 40), ("C", 130, 45), ("D", 100, 55), ("E", 200, 30), ("F", 200, 30.0)]]
    # C is dominated by B, D by A; E and F are equal (neither dominates the other).
    assert quality_cost.pareto_front(pts, "g", "p") == ["A", "B", "E", "F"]
    assert [q["label"] for q in quality_cost.dominators(pts, pts[2], "g", "p")] == ["B"]


def _synth():
    row = lambda top, B, gates: {"unit": top.rsplit("_b", 1)[0], "top": top, "B": B, "gates2": gates,
                                  "measured": "2026-12-05"}
    return {"results": [row("scale_bd_b32", 32, 3200), row("mac_bd_defer_b32", 32, 3100),
                        row("mac_bd_defer_b64", 64, 6000), row("mac_int4_bw_b32", 32, 1600),
                        row("scale_mxfp4_b32", 32, 2560), row("scale_nvfp4_b16", 16, 4000),
                        row("scale_nvfp4_block_b16", 16, 1600), {"unit": "sel_mse", "gates2": 5}],
            "summary": {"macs": {"smallest": {"block": {"32": {"bd": "defer", "int4": "bw"},
                                                        "64": {"bd": "defer"}}}}}}


def test_mac_costs_from_a_synthesis_report():
    costs = quality_cost.mac_costs(_synth())
    assert costs["bd_b32"]["gates_per_element"] == 100 and costs["bd_b32"]["derivation"] == "scale-path unit"
    # B = 64: its block MAC plus the scale path's increment measured at B = 32.
    assert costs["bd_b64"]["gates2"] == 6000 + 100 and "mac_bd_defer_b64" in costs["bd_b64"]["derivation"]
    assert costs["int4_b32"]["gates_per_element"] == 50 and "lower bound" in costs["int4_b32"]["derivation"]
    assert costs["nvfp4_b16"]["gates_per_element"] == 250
    assert costs["nvfp4_b16"]["per_block_only"]["gates_per_element"] == 100
    assert "bd_b16" not in costs and "mxfp4_b16" not in costs     # nothing to derive them from


def test_quality_cost_section_and_statement():
    costs = quality_cost.mac_costs(_synth())
    runs = {"linear_bd_mse_bd_two_stage_b32": _run("linear", 40.0), "linear_bd_mse_bd_two_stage_b64": _run("linear", 60.0),
            "linear_mxfp4_mxfp4_b32": _run("linear", 80.0), "linear_nvfp4_nvfp4_b16_static": _run("linear", 34.0),
            "linear_nvfp4_nvfp4_b16": _run("linear", 33.0), "linear_int4_int4_b32": _run("linear", 53.0)}
    bits = {"linear_bd_mse_bd_two_stage_b32": 4.28, "linear_bd_mse_bd_two_stage_b64": 4.14,
            "linear_mxfp4_mxfp4_b32": 4.25, "linear_nvfp4_nvfp4_b16_static": 4.5, "linear_nvfp4_nvfp4_b16": 4.5,
            "linear_int4_int4_b32": 4.5}
    qc = quality_cost.section(runs, {"bands": {}}, bits, costs, "synth.json")
    # Gates: INT4 50 (53) dominates MXFP4 80 (80) and BD B=64 95.3 (60); BD B=32 100 (40) and
    # NVFP4 250 (34) remain.
    assert qc["fronts"]["gates_linear"] == ["BD B=32 two-stage", "NVFP4 static scale", "INT4 B=32"]
    # Bits: BD B=64 4.14 (60) dominates MXFP4 4.25 (80), NVFP4 4.5 (34) dominates INT4 4.5 (53).
    assert qc["fronts"]["bits_linear"] == ["BD B=32 two-stage", "BD B=64 two-stage", "NVFP4 static scale"]
    # The dynamic NVFP4 is beside the front, never part of it.
    assert [p["label"] for p in qc["points"]["linear"]["beside"]] == ["NVFP4 dynamic scale (sees the batch)"]
    assert qc["fronts"]["gates_linear_nvfp4_per_block_only"] == ["NVFP4 static scale", "INT4 B=32"]
    text = "\n".join(quality_cost.statement(qc))
    assert "BlockDialect on it: BD B=32 two-stage, BD B=64 two-stage." in text
    # BD B=64 is off the gates front: INT4 has 53 against its 60 at fewer gates.
    assert "Off it: BD B=64 two-stage (INT4 B=32: 11.7 % lower perplexity at no more cost)." in text
    assert "no BlockDialect point is on it" in text
    assert "100 gates per element at B = 32" in text and "MXFP4 B=32 80 (1.25x)" in text


def test_rewrite_redoes_quality_cost_from_the_synth_json_given(tmp_path, capsys):
    """--from-json with --synth-json: the quality-against-cost section follows the synthesis file,
    every measured figure (perplexities, noise bands) stays as it was."""
    source = pathlib.Path(__file__).resolve().parents[2] / "reports" / "golden" / "report.json"
    synth = tmp_path / "synth.json"
    synth.write_text(json.dumps(_synth()))
    assert main(["--from-json", str(source), "--synth-json", str(synth), "--out", str(tmp_path)]) == 0
    before, after = json.loads(source.read_text()), json.loads((tmp_path / "report.json").read_text())
    assert after["quality_cost"]["costs"]["bd_b32"]["gates_per_element"] == 100
    assert after["quality_cost"]["synth_json"] == str(synth)
    assert after["perplexity"] == before["perplexity"] and after["noise"] == before["noise"]
    assert main(["--from-json", str(source), "--synth-json", str(tmp_path / "none.json"),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--synth-json" in err and "no such file" in err
