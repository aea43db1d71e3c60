"""golden.quantize_model on small hand-built modules: every format against the output computed by
hand from golden.baselines.fake_quantize (or golden.bd.linear with exact=True), block maps, the
attention products of a small LLaMA, restoring, and every bad argument's error."""
import pytest
import torch

from golden import baselines, bd, model_quantization, quantize_model

# A block size each format takes (FP16 has none; NVFP4 is defined for 16 only).
FORMAT_BLOCKS = {"fp16": 32, "bd_two_stage": 32, "bd_two_stage_trunc": 16, "bd_mse": 64, "mxfp4": 16,
                 "nvfp4": 16, "int4": 32}


def _mlp():
    """Three layers; the last one's 40 inputs are no whole number of blocks (zero-padded)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 40, bias=False),
                                torch.nn.Tanh(), torch.nn.Linear(40, 8)).to(torch.float64)
    model.requires_grad_(False)
    x = torch.randn(5, 7, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    return model, x


def _by_hand(x, fmt, block):
    """baselines.fake_quantize along the last dimension after zero-padding to whole blocks."""
    if fmt is None:
        return x
    if fmt == "fp16":
        return baselines.fake_quantize(x, fmt, dtype=torch.float64)
    pad = -x.shape[-1] % block
    out = baselines.fake_quantize(torch.nn.functional.pad(x, (0, pad)), fmt, None if fmt == "nvfp4" else block,
                                  dtype=torch.float64)
    return out[..., :x.shape[-1]]


def _mlp_by_hand(model, x, linear):
    """The MLP's forward with each nn.Linear replaced by linear(index, x, layer)."""
    h = x
    for index, layer in enumerate(model):
        h = linear(index, h, layer) if isinstance(layer, torch.nn.Linear) else layer(h)
    return h


def _fake_linear(weights, activations, blocks):
    def linear(index, x, layer):
        block = blocks[index]
        return torch.nn.functional.linear(_by_hand(x, activations, block), _by_hand(layer.weight, weights, block),
                                          layer.bias)
    return linear


@pytest.mark.parametrize("fmt", baselines.FORMATS)
def test_every_format_equals_fake_quantize_by_hand(fmt):
    model, x = _mlp()
    block = FORMAT_BLOCKS[fmt]
    with torch.no_grad():
        for weights, activations in ((fmt, fmt), (fmt, None), (None, fmt)):
            expected = _mlp_by_hand(model, x, _fake_linear(weights, activations, {0: block, 2: block, 4: block}))
            with quantize_model(model, weights, activations, block=block):
                got = model(x)
            assert torch.equal(got, expected), (weights, activations)
        # The 4-bit formats do change the output, so the comparisons above are not vacuous.
        assert not torch.equal(got, model(x))


@pytest.mark.parametrize("activations, accumulate", [(fmt, "exact") for fmt in baselines.BD_METHODS]
                         + [("bd_two_stage", "fp32"), ("bd_two_stage", "fp16")])
def test_exact_layers_equal_bd_linear_by_hand(activations, accumulate):
    model, x = _mlp()

    def exact(index, h, layer):
        pad = -h.shape[-1] % 32
        q_act = bd.quantize(torch.nn.functional.pad(h, (0, pad)), 32, baselines.BD_METHODS[activations])
        q_weight = bd.quantize(torch.nn.functional.pad(layer.weight, (0, pad)), 32, "mse")
        y = bd.linear(q_act, q_weight, accumulate=accumulate).to(torch.float64)
        return y if layer.bias is None else y + layer.bias

    with torch.no_grad():
        expected = _mlp_by_hand(model, x, exact)
        with quantize_model(model, "bd_mse", activations, exact=True, accumulate=accumulate):
            got = model(x)
        fake = _mlp_by_hand(model, x, _fake_linear("bd_mse", activations, {0: 32, 2: 32, 4: 32}))
    assert torch.equal(got, expected)
    # bd.linear rounds each exact sum once to FP32 (exact itself when it has few significant bits):
    # the fake-quantized float64 product to FP32 precision; FP16 steps are coarser.
    tolerance = 1e-2 if accumulate == "fp16" else 1e-6
    assert torch.allclose(got, fake, rtol=tolerance, atol=tolerance)


def test_block_map_and_layers_select_per_layer():
    model, x = _mlp()
    with torch.no_grad():
        # The first matching pattern wins, "*" is the default of the rest.
        expected = _mlp_by_hand(model, x, _fake_linear("bd_mse", "bd_two_stage", {0: 64, 2: 16, 4: 64}))
        for block_map in ({"^2$": 16, "*": 64}, "^2$=16, *=64", {"^2$": 16, "2": 32, "*": 64}):
            with quantize_model(model, block=32, block_map=block_map) as handle:
                assert handle.layers == {"0": 64, "2": 16, "4": 64}
                assert torch.equal(model(x), expected)
        # `layers` leaves the others alone; without "*" the rest take `block`.
        only = {0: 32, 2: 16}

        def some(index, h, layer):
            if index in only:
                return _fake_linear("mxfp4", "mxfp4", only)(index, h, layer)
            return layer(h)

        with quantize_model(model, "mxfp4", "mxfp4", block=32, layers=["^0$", "^2$"], block_map="^2$=16") as handle:
            assert handle.layers == {"0": 32, "2": 16}
            assert torch.equal(model(x), _mlp_by_hand(model, x, some))


def test_parse_block_map_is_the_one_syntax():
    assert model_quantization.parse_block_map("down_proj=16,attn_scores=16,*=32") == {
        "down_proj": 16, "attn_scores": 16, "*": 32}
    assert model_quantization.parse_block_map({"a": 16}) == {"a": 16}
    assert model_quantization.parse_block_map(None) == {}
    for bad, words in (("down_proj=17", ["'down_proj=17'", "16, 32, 64"]), ("down_proj", ["'down_proj'", "PATTERN=BLOCK"]),
                       ("a=16,a=32", ["'a=32'", "twice"]), ("(=16", ["'(=16'", "regular expression"]),
                       ("x=sixteen", ["'x=sixteen'"]), ("=16", ["'=16'"])):
        with pytest.raises(ValueError) as err:
            model_quantization.parse_block_map(bad)
        message = str(err.value)
        assert message.startswith("block_map entry") and "\n" not in message
        assert all(w in message for w in words), message
    with pytest.raises(ValueError, match="--block-map entry"):
        model_quantization.parse_block_map("a=8", name="--block-map")
    with pytest.raises(ValueError, match="block_map must be"):
        model_quantization.parse_block_map(16)


def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {name: p for name, p in model.named_parameters()},
            {name: (dict(m._forward_pre_hooks), dict(m._forward_hooks), dict(m.__dict__)) for name, m in model.named_modules()})


def _assert_restored(model, state, x, before):
    values, params, modules = state
    assert all(torch.equal(values[k], v) for k, v in model.state_dict().items())
    assert all(p is params[name] for name, p in model.named_parameters())
    for name, m in model.named_modules():
        pre, post, attributes = modules[name]
        assert dict(m._forward_pre_hooks) == pre and dict(m._forward_hooks) == post
        assert m.__dict__.keys() == attributes.keys()
    with torch.no_grad():
        out = model(x)
    assert torch.equal(getattr(out, "logits", out), before)


@pytest.mark.parametrize("exact", [False, True])
def test_remove_restores_bit_for_bit_even_after_an_exception(exact):
    model, x = _mlp()
    with torch.no_grad():
        before = model(x)
    state = _state(model)
    handle = quantize_model(model, exact=exact)
    with torch.no_grad():
        assert not torch.equal(model(x), before)
    handle.remove()
    handle.remove()                     # a second remove does nothing
    _assert_restored(model, state, x, before)
    with pytest.raises(RuntimeError, match="inside"):
        with quantize_model(model, exact=exact):
            raise RuntimeError("inside")
    _assert_restored(model, state, x, before)
    # A failure while installing (here: a non-finite weight, refused by the quantizer) leaves nothing.
    model[2].weight[0, 0] = float("inf")
    state = _state(model)
    with torch.no_grad():
        before = model(x)
    with pytest.raises(ValueError, match="Inf"):
        quantize_model(model, exact=exact)
    _assert_restored(model, state, x, before)
    with quantize_model(model, layers="^0$"):    # and the model can be quantized again
        pass


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # head_dim 32: Q and K in blocks of 16 and of 32 are different quantizations.
    config = LlamaConfig(vocab_size=96, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval().to(torch.float64)
    model.requires_grad_(False)
    return model


def test_full_scope_quantizes_attention_operands_by_block_map(monkeypatch):
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = _tiny_llama()
    ids = torch.randint(0, 96, (1, 64), generator=torch.Generator().manual_seed(2))
    previous = model.config._attn_implementation
    with torch.no_grad():
        before = model(ids).logits
    state = _state(model)
    made = []
    real = model_quantization.make_attention
    monkeypatch.setattr(model_quantization, "make_attention", lambda *a, **k: made.append((a, k)) or real(*a, **k))
    with torch.no_grad():
        with quantize_model(model, scope="linear", block_map="*=16") as handle:
            assert handle.attention == {} and model.config._attn_implementation == previous
            linear = model(ids).logits
        outputs = {}
        for block_map in ("*=16", "attn_scores=32,*=16", "attn_values=32,*=16"):
            with quantize_model(model, scope="full", block_map=block_map) as handle:
                name = model.config._attn_implementation
                assert name in ALL_ATTENTION_FUNCTIONS and name in ALL_MASK_ATTENTION_FUNCTIONS
                outputs[block_map] = model(ids).logits
                assert set(handle.layers.values()) == {16}
            assert name not in ALL_ATTENTION_FUNCTIONS and name not in ALL_MASK_ATTENTION_FUNCTIONS
    # make_attention(format, block of P and V, scores_block=block of Q and K).
    assert made == [(("bd_two_stage", 16), {"scores_block": 16, "amax": None}),
                    (("bd_two_stage", 16), {"scores_block": 32, "amax": None}),
                    (("bd_two_stage", 32), {"scores_block": 16, "amax": None})]
    # Each attention block size changes the output, and quantized attention differs from linear only.
    assert len({tuple(o.flatten()[:64].tolist()) for o in [linear, *outputs.values()]}) == 4
    assert model.config._attn_implementation == previous
    _assert_restored(model, state, ids, before)


def test_padded_batches_get_their_mask():
    """A left-padded row (as in batched generation) gives the logits of the same row alone: the
    registered attention receives transformers' padding mask. The padding is one whole block, so the
    row's blocks of probabilities and V are the same as alone."""
    model = _tiny_llama()
    ids = torch.randint(1, 96, (2, 40), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :16] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), quantize_model(model, "bd_mse", "bd_two_stage", block=16, scope="full"):
        both = model(ids, attention_mask=mask, position_ids=positions).logits
        alone = model(ids[1:, 16:]).logits
        unmasked = model(ids, position_ids=positions).logits
    assert torch.equal(both[1, 16:], alone[0])
    assert not torch.allclose(unmasked[1, 16:], alone[0], atol=0.1)


def test_every_bad_argument_names_itself():
    model, _ = _mlp()
    cases = [
        (dict(weights="fp8"), "weights"), (dict(activations="mxfp6"), "activations"),
        (dict(block=48), "block"), (dict(weights="nvfp4", activations="nvfp4"), "block"),
        (dict(weights="mxfp4", activations="mxfp4", block=64), "block"),
        (dict(weights="mxfp4", activations="mxfp4", block=16, block_map="^4$=64"), "block_map entry '\\^4\\$=64'"),
        (dict(scope="attention"), "scope"), (dict(scope="full"), "scope='full'"),
        (dict(exact="yes"), "exact"), (dict(weights="mxfp4", exact=True), "exact"),
        (dict(activations=None, exact=True), "exact"),
        (dict(exact=True, accumulate="fp64"), "accumulate"), (dict(accumulate="fp32"), "accumulate"),
        (dict(layers="^9$"), "layers"), (dict(layers=3), "layers"), (dict(layers="("), "layers"),
        (dict(block_map="nosuch=16"), "block_map entry 'nosuch=16'"),
        (dict(block_map="attn_scores=16"), "block_map entry 'attn_scores'"),
        (dict(block_map="^0$=12"), "block_map entry"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words):
            quantize_model(model, **kwargs)
    with pytest.raises(ValueError, match="model"):
        quantize_model("not a model")
    with pytest.raises(ValueError, match="model: no nn.Linear"):
        quantize_model(torch.nn.Sequential(torch.nn.ReLU()))
    with quantize_model(model):
        with pytest.raises(ValueError, match="quantized already"):
            quantize_model(model)
    assert all(not m._forward_pre_hooks for m in model.modules())
