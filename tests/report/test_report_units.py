"""Pieces of golden.report on small inputs: metrics, the fake-quantized and hardware-exact model, the
attention wrapper, batched windows, the float64 cross-check, the CLI's errors. No model file is loaded
here."""
import math
import subprocess
import sys

import pytest
import torch

from golden import bd, model_quantization
from golden.report import float64_check, metrics, perplexity
import golden.report as report


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def tiny():
    model = _tiny_llama()
    ids = torch.randint(0, 96, (1, 80), generator=torch.Generator().manual_seed(1))
    return model, ids


def _heavy_tailed(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * torch.exp(2 * torch.randn(shape, generator=g))


def test_mse_selection_never_loses_to_two_stage():
    # SPEC 5 picks the dialect of least squared error per block, against the FP16 input.
    for seed in range(4):
        x = _heavy_tailed((64, 256), seed)
        specs = tuple(metrics.spec(fmt, 32) for fmt in metrics.SELECTORS)
        result = metrics.tensor_result(x, specs)
        for online in metrics.ONLINE_SELECTORS:
            assert result.stats["bd_mse_b32"].noise <= result.stats[f"{online}_b32"].noise * (1 + 1e-12)
        assert all(result.dialects[k].shape == (64 * 8,) for k in ("mse_b32", "two_stage_b32", "two_stage_trunc_b32"))
        # The two stage-1 rules pick different pairs on some blocks of a heavy-tailed tensor.
        assert not torch.equal(result.dialects["two_stage_b32"], result.dialects["two_stage_trunc_b32"])


def test_error_stats_and_sqnr():
    ref = torch.tensor([3.0, 4.0])
    st = metrics.error_stats(ref, torch.tensor([3.0, 3.0]))
    assert (st.signal, st.noise, st.count) == (25.0, 1.0, 2)
    assert metrics.sqnr_db(st.signal, st.noise) == pytest.approx(10 * math.log10(25))
    assert metrics.sqnr_db(1.0, 0.0) == math.inf


def test_fake_quantize_pads_only_the_last_block():
    x = _heavy_tailed((3, 70), 5)
    for fmt, block in (("bd_two_stage", 32), ("mxfp4", 32), ("nvfp4", 16), ("int4", 32)):
        padded = torch.nn.functional.pad(x, (0, -70 % block))
        expected = metrics.fake_quantize(padded, fmt, block)[..., :70]
        assert torch.equal(metrics.fake_quantize(x, fmt, block), expected), fmt


def test_fp16_overflow_is_reported():
    with pytest.raises(ValueError, match="FP16"):
        metrics.to_fp16_reference(torch.tensor([1e5, 1.0]), "layer")


def test_bits_per_element_follow_the_spec():
    assert metrics.bits("bd_mse", 32) == pytest.approx(4 + 9 / 32)
    assert metrics.bits("mxfp4", 32) == pytest.approx(4 + 8 / 32)
    assert metrics.bits("mxfp4", 32, "paper") == pytest.approx(4 + 5 / 32)
    assert metrics.bits("nvfp4", 16) == pytest.approx(4.5)


def test_float64_check_agrees_to_one_fp32_rounding():
    a, w = _heavy_tailed((16, 128), 7), _heavy_tailed((24, 128), 8)
    result = float64_check.check(a, w)
    assert result.max_rel_diff <= float64_check.FP32_ROUNDING_BOUND
    assert result.zero_mismatches == 0 and result.outputs == 16 * 24
    assert result.exact_fraction == 1.0


def test_windows_are_consecutive_and_drop_a_lone_token():
    ids = torch.arange(11).unsqueeze(0)
    chunks = perplexity.windows(ids, 5)
    assert [c.tolist()[0] for c in chunks] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    with pytest.raises(ValueError, match="window"):
        perplexity.windows(ids, 1)


def test_attention_wrapper_matches_eager_attention():
    from transformers.models.llama.modeling_llama import eager_attention_forward

    class Module(torch.nn.Module):
        num_key_value_groups = 2
        training = False

    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, h, 40, 16, generator=g) for h in (4, 2, 2))
    causal = torch.full((40, 40), float("-inf")).triu(1)[None, None]
    expected, _ = eager_attention_forward(Module(), q, k, v, causal, scaling=0.25)
    # FP16 rounding of the operands is the only change, so the outputs agree to FP16 precision;
    # a wrong mask or a wrong head grouping would not.
    got, _ = model_quantization.make_attention("fp16", None)(Module(), q, k, v, None, scaling=0.25)
    torch.testing.assert_close(got, expected, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("fmt, block", [("bd_two_stage", 32), ("bd_mse", 64), ("bd_two_stage_trunc", 16),
                                        ("mxfp4", 16), ("int4", 32), ("fp16", None)])
def test_chunked_causal_attention_changes_no_value(fmt, block, monkeypatch):
    """Torch's path (where the float64 kernel does not serve): queries in chunks against the keys up
    to each chunk's end give the bits of the whole computation, with a last chunk shorter than the
    others (300 = 2 x 128 + 44)."""
    monkeypatch.setattr(model_quantization, "attention_native", lambda *args, **kwargs: None)

    class Module(torch.nn.Module):
        num_key_value_groups = 3
        training = False

    g = torch.Generator().manual_seed(8)
    q = torch.randn(2, 6, 300, 64, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 300, 64, generator=g, dtype=torch.float64) for _ in range(2))
    attention = model_quantization.make_attention(fmt, block)
    assert model_quantization.CAUSAL_CHUNK < 300
    chunked, _ = attention(Module(), q, k, v, None, scaling=0.125)
    # The same causality as an explicit mask takes the unchunked path.
    causal = torch.ones(300, 300, dtype=torch.bool).tril()[None, None]
    whole, probs = attention(Module(), q, k, v, causal, scaling=0.125)
    assert torch.equal(chunked, whole)
    assert torch.equal(probs.triu(1), torch.zeros_like(probs))


def test_nvfp4_attention_is_not_chunked():
    """NVFP4's tensor scale needs every probability at once: its probabilities come back whole."""

    class Module(torch.nn.Module):
        num_key_value_groups = 1
        training = False

    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(1, 2, 300, 64, generator=g, dtype=torch.float64) for _ in range(3))
    _, probs = model_quantization.make_attention("nvfp4", 16)(Module(), q, k, v, None, scaling=0.125)
    assert probs is not None and probs.shape == (1, 2, 300, 300)


def test_installed_scheme_quantizes_and_then_restores(tiny, monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model, ids = tiny
    with torch.no_grad():
        before = model(ids).logits
    modules = perplexity.quantized_linears(model)
    assert model.lm_head not in modules.values() and len(modules) == 2 * 7
    originals = {name: m.weight for name, m in modules.items()}
    previous_attention = model.config._attn_implementation
    s = perplexity.scheme("full", "bd_mse", "bd_two_stage", 32, "BD")

    seen_inputs = []
    probe = modules["model.layers.1.mlp.down_proj"].register_forward_pre_hook(
        lambda m, args: seen_inputs.append(args[0]))
    calls = []
    real_fq = model_quantization.fake_quantize

    def counting_fq(x, fmt, block, dtype=None, **kwargs):
        calls.append(x.dim())
        return real_fq(x, fmt, block, dtype, **kwargs)

    try:
        with perplexity.installed(model, s) as handle:
            # The report's scheme went through golden.quantize_model: every decoder layer, the attention too.
            assert set(handle.layers) == set(modules) and handle.attention == {"attn_scores": 32, "attn_values": 32}
            name = "model.layers.0.self_attn.q_proj"
            assert torch.equal(modules[name].weight, bd.dequantize(bd.quantize(originals[name], 32, "mse")))
            assert model.config._attn_implementation in ALL_ATTENTION_FUNCTIONS
            monkeypatch.setattr(model_quantization, "fake_quantize", counting_fq)
            with torch.no_grad():
                during = model(ids).logits
            monkeypatch.undo()
    finally:
        probe.remove()
    # Every call during the forward pass was on activations or attention operands, all with batch
    # and head dimensions.
    assert calls and min(calls) >= 3
    assert seen_inputs and not torch.equal(during, before)
    # Everything is back as it was.
    assert all(m.weight is originals[name] for name, m in modules.items())
    assert all(not m._forward_pre_hooks for m in modules.values())
    assert model.config._attn_implementation == previous_attention
    assert not any(k.startswith(("report_", "golden_")) for k in ALL_ATTENTION_FUNCTIONS._local_mapping)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


def test_fp16_full_path_keeps_perplexity(tiny):
    model, ids = tiny
    base = perplexity.evaluate(model, ids, 40)
    s = perplexity.scheme("full", "fp16", "fp16", None, "FP16")
    with perplexity.installed(model, s):
        fp16 = perplexity.evaluate(model, ids, 40)
    assert fp16.predicted_tokens == base.predicted_tokens == 78 and fp16.windows == 2
    assert fp16.perplexity == pytest.approx(base.perplexity, rel=1e-3)
    # A 4-bit path changes the result measurably, so the comparison above is not vacuous.
    s4 = perplexity.scheme("full", "bd_mse", "bd_two_stage", 32, "BD")
    with perplexity.installed(model, s4):
        bd4 = perplexity.evaluate(model, ids, 40)
    assert abs(bd4.nll_sum - base.nll_sum) > abs(fp16.nll_sum - base.nll_sum)


def test_options_and_cli_help():
    with pytest.raises(ValueError, match="max_tokens"):
        report.options(max_tokens=1)
    for bad in (dict(threads=0), dict(batch=0), dict(dtype="float16"), dict(runs="(")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            report.options(**bad)
    opts = report.options(quick=True, max_tokens=64)
    assert opts.ppl_tokens == 64 and opts.window <= 64 and str(opts.out) == "reports/golden-quick"
    assert opts.dtype == torch.float64
    done = subprocess.run([sys.executable, "-m", "golden.report", "--help"], capture_output=True, text=True,
                          timeout=120)
    for flag in ("--quick", "--max-tokens", "--device", "--device-map", "--dtype", "--runs"):
        assert flag in done.stdout
    assert done.returncode == 0


def test_run_selection_by_key():
    every = report.selected_schemes(report.options())
    keys = [s.key for s in every]
    assert len(keys) == len(set(keys))
    # SPEC 4.2 [revised]: every activation selector at every block size, in both scopes.
    for scope in ("linear", "full"):
        for block in (16, 32, 64):
            for act in ("bd_two_stage", "bd_two_stage_trunc", "bd_mse"):
                assert f"{scope}_bd_mse_{act}_b{block}" in keys
    assert "exact_linear_bd_mse_bd_two_stage_b32" in keys
    chosen = report.selected_schemes(report.options(runs="^exact_"))
    assert chosen and all(s.exact for s in chosen)
    with pytest.raises(ValueError, match="runs"):
        report.selected_schemes(report.options(runs="no_such_run"))
    with pytest.raises(ValueError, match="exact"):
        perplexity.scheme("full", "bd_mse", "bd_two_stage", 32, "BD", exact=True)
    with pytest.raises(ValueError, match="exact"):
        perplexity.scheme("linear", "mxfp4", "mxfp4", 32, "MX", exact=True)


@pytest.fixture(scope="module")
def tiny64():
    model = _tiny_llama().to(torch.float64)
    ids = torch.randint(0, 96, (1, 130), generator=torch.Generator().manual_seed(3))
    return model, ids


def test_hardware_exact_layers_are_bd_linear_of_the_quantized_operands(tiny64, monkeypatch):
    model, ids = tiny64
    modules = perplexity.quantized_linears(model)
    s = perplexity.bd_scheme("linear", "bd_two_stage", 32, exact=True)
    name = "model.layers.1.mlp.down_proj"
    seen = {}
    probe = modules[name].register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    calls = []
    real_linear = bd.linear

    def counting_linear(a, w, **kwargs):
        calls.append(a.codes.shape)
        return real_linear(a, w, **kwargs)

    monkeypatch.setattr(bd, "linear", counting_linear)
    try:
        with perplexity.installed(model, s), torch.no_grad():
            model(ids[:, :40])
    finally:
        probe.remove()
    monkeypatch.undo()
    assert len(calls) == len(modules)          # every quantized layer, once per forward pass
    q_weight = bd.quantize(modules[name].weight, 32, "mse")
    expected = bd.linear(bd.quantize(seen["x"], 32, "two_stage"), q_weight)
    assert seen["y"].dtype == torch.float64 and torch.equal(seen["y"], expected.to(torch.float64))
    # The class's forward is back.
    assert all("forward" not in m.__dict__ for m in modules.values())


def test_hardware_exact_and_fake_quantized_agree_to_float_noise(tiny64):
    model, ids = tiny64
    results = {}
    for exact in (False, True):
        with perplexity.installed(model, perplexity.bd_scheme("linear", "bd_two_stage", 32, exact)):
            results[exact] = perplexity.evaluate(model, ids, 64)
    base = perplexity.evaluate(model, ids, 64)
    # Only the FP32 rounding of each linear output differs: far below the quantization's own effect.
    assert abs(results[True].nll_sum - results[False].nll_sum) < 1e-3 * abs(results[False].nll_sum - base.nll_sum)


def test_batched_windows_give_the_per_window_result(tiny64):
    model, ids = tiny64
    s = perplexity.bd_scheme("full", "bd_two_stage", 32)
    with perplexity.installed(model, s):
        together = perplexity.evaluate(model, ids, 32, batch=4)
        alone = perplexity.evaluate(model, ids, 32, batch=1)
    # 130 tokens: four windows of 32 in one batch, then a last window of 2 tokens on its own.
    assert together.windows == alone.windows == 5 and together.predicted_tokens == 4 * 31 + 1
    # In float64 different batch shapes change no code: the sums agree to float64 rounding.
    assert together.nll_sum == pytest.approx(alone.nll_sum, rel=1e-12)
    with torch.no_grad():
        logits = model(ids[:, :32]).logits[0, :-1]
    single = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:32], reduction="sum")
    assert perplexity.evaluate(model, ids[:, :32], 32).nll_sum == pytest.approx(float(single), rel=1e-6)


def _cli(argv, capsys):
    from golden.report.__main__ import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("case", ["missing model", "not a model", "missing text", "text is a folder", "empty text",
                                  "out is a file", "out under a file", "cuda", "runs"])
def test_cli_errors_are_one_line(case, tmp_path, capsys):
    file = tmp_path / "plain.txt"
    file.write_text("some text\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    argv, expected = {
        "missing model": (["--model", str(tmp_path / "nope.gguf")], ["--model", "nope.gguf", "no such"]),
        "not a model": (["--model", str(file)], ["--model", "plain.txt", ".gguf"]),
        "missing text": (["--text", str(tmp_path / "gone.txt")], ["--text", "gone.txt", "no such file"]),
        "text is a folder": (["--text", str(tmp_path)], ["--text", str(tmp_path), "not a file"]),
        "empty text": (["--text", str(empty)], ["--text", "empty.txt", "no text"]),
        "out is a file": (["--out", str(file)], ["--out", "plain.txt", "not a folder"]),
        "out under a file": (["--out", str(file / "sub")], ["--out", str(file), "is a file"]),
        "cuda": (["--device", "cuda:7"], ["device", "cuda"]),
        "runs": (["--runs", "no_such_run"], ["runs", "no_such_run"]),
    }[case]
    code, err = _cli(["--quick", "--out", str(tmp_path / "out")] + argv if case not in ("out is a file", "out under a file")
                     else ["--quick"] + argv, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("python -m golden.report: error: ")
    for word in expected:
        assert word in err, (word, err)


def test_reproducibility_compares_every_figure_but_timings():
    from golden.report import reproducibility as rep

    a = {"perplexity": {"runs": {"x": {"label": "X", "scope": "linear", "perplexity": 40.0, "seconds": 3.0}},
                        "tokens": 2048},
         "stage1": [{"pooled_sqnr_db": 22.47, "selector": "two_stage"}]}
    b = {"perplexity": {"runs": {"x": {"label": "X", "scope": "linear", "perplexity": 40.03, "seconds": 9.0}},
                        "tokens": 2048},
         "stage1": [{"pooled_sqnr_db": 22.47, "selector": "two_stage"}]}
    ppl = rep.compare(a, b, "perplexity")
    assert ppl.figures == 2 and ppl.identical == 1 and ppl.beyond == 1   # seconds are not figures
    assert ppl.worst == "runs/x/perplexity" and ppl.worst_values == (40.0, 40.03)
    assert ppl.max_rel_diff == pytest.approx(0.03 / 40.03)
    same = rep.compare(a, b, "stage1")
    assert (same.figures, same.identical, same.beyond, same.max_rel_diff) == (1, 1, 0, 0.0)
    b["stage1"][0]["pooled_sqnr_db"] = 22.4701                               # 4.5e-6: agrees to 4 digits
    assert rep.compare(a, b, "stage1").beyond == 0
    b["stage1"].append({"pooled_sqnr_db": 1.0})
    with pytest.raises(ValueError, match="different figures"):
        rep.compare(a, b, "stage1")
    assert rep.relative_difference(float("inf"), 1.0) == math.inf


def test_hardware_exact_keeps_accelerate_device_hooks(tiny64):
    # With --device-map auto, accelerate wraps each module's forward to move tensors between devices;
    # the hardware-exact mode replaces the computation inside the wrapper and leaves the wrapper.
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module, remove_hook_from_module

    model, ids = tiny64
    modules = perplexity.quantized_linears(model)
    name = "model.layers.0.mlp.up_proj"
    module = modules[name]
    add_hook_to_module(module, AlignDevicesHook(execution_device="cpu", io_same_device=True))
    wrapper = module.__dict__["forward"]
    try:
        s = perplexity.bd_scheme("linear", "bd_two_stage", 32, exact=True)
        x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        with perplexity.installed(model, s):
            assert module.__dict__["forward"] is wrapper
            with torch.no_grad():
                y = module(x)
        q_weight = bd.quantize(module.weight, 32, "mse")
        assert torch.equal(y, bd.linear(bd.quantize(x, 32, "two_stage"), q_weight).to(torch.float64))
        assert module.__dict__["forward"] is wrapper and module._old_forward.__func__ is torch.nn.Linear.forward
    finally:
        remove_hook_from_module(module)
    assert module.forward.__func__ is torch.nn.Linear.forward


def test_every_scope_runs_the_float64_attention_kernel(tiny64, monkeypatch):
    """The baseline too runs the report's attention, and it gives the model's own (torch's
    scaled_dot_product_attention) perplexity to float64 precision; the full path gives the torch
    path's within float noise, far below what 4-bit quantization moves."""
    model, ids = tiny64
    served = []
    real = model_quantization.attention_native

    def counting(*args, **kwargs):
        result = real(*args, **kwargs)
        served.append(result is not None)
        return result

    model_own = perplexity.evaluate(model, ids, 64)
    results = {}
    for name, s in (("baseline", perplexity.BASELINE), ("full", perplexity.bd_scheme("full", "bd_two_stage", 32))):
        for kernel in (True, False):
            monkeypatch.setattr(model_quantization, "attention_native",
                                counting if kernel else (lambda *args, **kwargs: None))
            served.clear()
            with perplexity.installed(model, s):
                results[name, kernel] = perplexity.evaluate(model, ids, 64).nll_sum
            # 2 layers x 2 batches: two windows of 64, then one of 2 tokens, which is no multiple of
            # the block: the full path's torch reference takes that one.
            assert served == ([True, True] + [name == "baseline"] * 2 if kernel else [])
    assert results["baseline", True] == pytest.approx(model_own.nll_sum, rel=1e-12)
    assert results["baseline", False] == pytest.approx(model_own.nll_sum, rel=1e-12)
    quantization = abs(results["full", True] - results["baseline", True])
    assert abs(results["full", True] - results["full", False]) < 1e-3 * quantization
