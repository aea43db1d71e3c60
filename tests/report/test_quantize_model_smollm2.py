"""golden.quantize_model on SmolLM2-135M: the perplexity of the committed report for the same scheme,
generation with a KV cache under every format, and the README's five-line example."""
import contextlib
import io
import json
import pathlib
import re

import pytest
import torch

from golden import baselines, models, quantize_model
from golden.report import perplexity

pytestmark = pytest.mark.model

REPO = pathlib.Path(__file__).resolve().parents[2]
REPORT = REPO / "reports" / "golden" / "report.json"


@pytest.fixture(scope="module")
def smollm2_float64():
    return models.load_model(dtype=torch.float64)


def test_perplexity_equals_the_report_figure(smollm2_float64):
    """The committed report (reports/golden, regenerated with the code of this commit) and a user's
    quantize_model call give the same perplexity: to the last bit in the full scope, where
    quantize_model installs the report's attention, and to float64 noise in the linear scope,
    where the model keeps its own (torch's scaled_dot_product_attention)."""
    report = json.loads(REPORT.read_text())
    meta = report["meta"]
    assert meta["default_model"] and meta["dtype"] == "float64" and not meta["quick"]
    model, tokenizer = smollm2_float64
    ids = models.tokenize(tokenizer, models.read_text(None))[:, :meta["perplexity_tokens"]]
    runs = report["perplexity"]["runs"]
    with quantize_model(model, "bd_mse", "bd_two_stage", block=32, scope="full"):
        full = perplexity.evaluate(model, ids, meta["window"])
    assert full.perplexity == runs["full_bd_mse_bd_two_stage_b32"]["perplexity"]
    with quantize_model(model, "bd_mse", "bd_two_stage", block=32):
        linear = perplexity.evaluate(model, ids, meta["window"])
    figure = runs["linear_bd_mse_bd_two_stage_b32"]["perplexity"]
    assert linear.perplexity == pytest.approx(figure, rel=1e-9)
    # Quantization moves it by far more than that.
    assert abs(runs["baseline"]["perplexity"] - figure) > 0.1 * figure


@pytest.mark.parametrize("fmt", baselines.FORMATS)
def test_generation_with_a_kv_cache_under_every_format(smollm2_float64, fmt):
    """Greedy generation with the KV cache (each new query against the cached keys and values) runs
    under every format, attention quantized too, and is deterministic."""
    model, tokenizer = smollm2_float64
    prompt = tokenizer("The GNU General Public License is", return_tensors="pt")
    settings = dict(max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    with torch.no_grad(), quantize_model(model, fmt, fmt, block=16 if fmt == "nvfp4" else 32, scope="full"):
        cached = model.generate(**prompt, **settings)
        again = model.generate(**prompt, **settings)
    assert cached.shape == (1, prompt["input_ids"].shape[1] + 3)
    assert torch.equal(cached, again)


def test_cached_generation_is_generation_from_scratch_in_the_linear_scope(smollm2_float64):
    """Linear layers quantize each token's vector on its own, so the KV cache changes no token. (Not
    so in the full scope: V is quantized in blocks along the sequence, whose shared exponent lets a
    later token change the quantized V of earlier ones; with the cache, they keep their first.)"""
    model, tokenizer = smollm2_float64
    prompt = tokenizer("The GNU General Public License is", return_tensors="pt")
    settings = dict(max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    with torch.no_grad(), quantize_model(model, "bd_mse", "bd_two_stage"):
        cached = model.generate(**prompt, **settings)
        uncached = model.generate(**prompt, use_cache=False, **settings)
    assert torch.equal(cached, uncached)


def test_readme_example_generates():
    """The README's five-line example, run as written."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## BlockDialect on your own model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) == 5 and "model.generate" in code
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    text = out.getvalue()
    assert text.startswith("The GNU General Public License is") and len(text) > 60
