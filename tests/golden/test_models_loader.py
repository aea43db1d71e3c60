"""golden.models: loading users' checkpoints, text, capture of linear inputs and real blocks.

Most tests use a tiny randomly-initialised LLaMA saved as safetensors, so they run in seconds; the
tests marked `model` load the default SmolLM2 GGUF file (~20 s).
"""
import pathlib

import pytest
import torch

from golden import models

TEXT = models.read_text() if models.DEFAULT_TEXT_PATH.is_file() else None


def _byte_level_tokenizer():
    """A small byte-level BPE tokenizer trained on the GPL-3 text, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def _save_tiny_llama(folder: pathlib.Path, tokenizer) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)  # safetensors is the default format
    tokenizer.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_llama")
    model = _save_tiny_llama(folder, _byte_level_tokenizer())
    return folder, model


def test_read_text_default_and_other_file(tmp_path):
    assert "GNU GENERAL PUBLIC LICENSE" in models.read_text()
    other = tmp_path / "words.txt"
    other.write_text("alpha beta gamma\n")
    assert models.read_text(other) == "alpha beta gamma\n"
    with pytest.raises(ValueError, match="path"):
        models.read_text(tmp_path / "missing.txt")


def test_default_model_path_is_the_bundled_gguf():
    path = models.default_model_path()
    assert path.name == models.DEFAULT_MODEL_FILE and path.stat().st_size > 10_000_000


def test_load_model_rejects_other_paths(tmp_path):
    not_a_model = tmp_path / "weights.bin"
    not_a_model.write_bytes(b"\0" * 16)
    for bad in (not_a_model, tmp_path, tmp_path / "missing.gguf"):
        with pytest.raises(ValueError, match="path"):
            models.load_model(bad)


def test_safetensors_checkpoint_round_trip(tiny_checkpoint):
    folder, original = tiny_checkpoint
    model, tokenizer = models.load_model(folder)
    ids = models.tokenize(tokenizer, TEXT, max_tokens=40)
    assert ids.shape == (1, 40)
    with torch.no_grad():
        expected = original(ids).logits
        got = model(ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not any(p.requires_grad for p in model.parameters())


def test_capture_records_real_operands(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    model, tokenizer = models.load_model(folder)
    captures = models.capture_linear_inputs(model, tokenizer, TEXT, max_tokens=48)
    # 7 projections per decoder layer and the output head.
    assert len(captures) == 2 * 7 + 1
    for name, capture in captures.items():
        module = model.get_submodule(name)
        assert capture.activation.shape == (48, module.in_features), name
        assert capture.weight.shape == (module.out_features, module.in_features), name
        assert capture.activation.dtype == capture.weight.dtype == torch.float32
    # The head's captured input times its weight must give the model's logits.
    with torch.no_grad():
        logits = model(models.tokenize(tokenizer, TEXT, 48)).logits[0]
    head = captures["lm_head"]
    torch.testing.assert_close(head.activation @ head.weight.T, logits, rtol=1e-5, atol=1e-5)
    # q, k and v projections read the same normalised hidden states.
    layer0 = "model.layers.0.self_attn."
    assert torch.equal(captures[layer0 + "q_proj"].activation, captures[layer0 + "v_proj"].activation)
    # ...and share one copy of it, while different inputs do not.
    assert captures[layer0 + "q_proj"].activation.data_ptr() == captures[layer0 + "k_proj"].activation.data_ptr()
    assert captures[layer0 + "q_proj"].activation.data_ptr() != captures[layer0 + "o_proj"].activation.data_ptr()


def test_capture_layer_selection(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    model, tokenizer = models.load_model(folder)
    picked = models.capture_linear_inputs(model, tokenizer, TEXT, 16, layers=r"layers\.1\.mlp")
    assert sorted(picked) == [f"model.layers.1.mlp.{p}" for p in ("down_proj", "gate_proj", "up_proj")]
    with pytest.raises(ValueError, match="layers"):
        models.capture_linear_inputs(model, tokenizer, TEXT, 16, layers="no_such_layer")


def test_real_blocks_from_a_user_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    folder, _ = tiny_checkpoint
    monkeypatch.setattr(models, "CACHE_DIR", tmp_path / "cache")  # keep the repository cache clean
    blocks = models.real_blocks(64, block=32, kind="activation", seed=3, path=folder)
    assert blocks.shape == (64, 32) and blocks.dtype == torch.float16
    assert torch.equal(blocks, models.real_blocks(64, 32, "activation", 3, path=folder))
    assert not torch.equal(blocks, models.real_blocks(64, 32, "activation", 4, path=folder))
    # Every block is a run of 32 aligned elements of some layer's activation.
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # later calls read the cache
    captures = models.cached_linear_inputs(folder)
    pool = torch.cat([c.activation.reshape(-1, 32) for c in captures.values()]).to(torch.float16)
    assert ((pool[None] == blocks[:, None]).all(-1)).any(-1).all()
    weights = models.real_blocks(16, block=16, kind="weight", path=folder)
    pool_w = torch.cat([c.weight.reshape(-1, 16) for c in captures.values()]).to(torch.float16)
    assert ((pool_w[None] == weights[:, None]).all(-1)).any(-1).all()


@pytest.mark.parametrize("bad", [dict(n_blocks=0), dict(block=24), dict(kind="bias"), dict(seed=1.5)])
def test_real_blocks_rejects_bad_arguments(bad):
    arguments = dict(n_blocks=4, block=32, kind="activation", seed=0) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        models.real_blocks(**arguments)


@pytest.mark.model
def test_default_model_loads_and_predicts_text():
    model, tokenizer = models.load_model()
    ids = models.tokenize(tokenizer, TEXT, max_tokens=128)
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    # A working 135M instruct model reads English legal text far better than chance (ln 49152 ~ 10.8).
    assert loss.item() < 4.0


@pytest.mark.model
def test_gguf_tokenizer_saved_with_a_user_checkpoint(tmp_path):
    from transformers import AutoTokenizer

    path = models.default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    original = _save_tiny_llama(tmp_path, tokenizer)
    model, loaded_tokenizer = models.load_model(tmp_path)
    ids = models.tokenize(loaded_tokenizer, TEXT, 32)
    assert torch.equal(ids, models.tokenize(tokenizer, TEXT, 32))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=0, atol=0)


@pytest.mark.model
def test_real_blocks_of_the_default_model_are_cached_and_finite():
    import time

    activations = models.real_blocks(256, block=32, kind="activation", seed=0)
    start = time.perf_counter()
    weights = models.real_blocks(256, block=32, kind="weight", seed=0)
    assert time.perf_counter() - start < 10, "second call must come from the cache, not reload the model"
    for blocks in (activations, weights):
        assert blocks.shape == (256, 32) and blocks.dtype == torch.float16
        assert torch.isfinite(blocks).all()
        assert (blocks != 0).any(-1).float().mean() > 0.9


def test_check_device_rejects_what_cannot_run():
    assert models.check_device() == (None, None)
    assert models.check_device("cpu") == (torch.device("cpu"), None)
    assert models.check_device(device_map="auto") == (None, "auto")
    with pytest.raises(ValueError, match="exclude"):
        models.check_device("cpu", "auto")
    with pytest.raises(ValueError, match="device_map"):
        models.check_device(device_map="balanced_low_0")
    with pytest.raises(ValueError, match="device"):
        models.check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            models.check_device("cuda")


def test_device_and_device_map_place_the_same_model(tiny_checkpoint):
    folder, original = tiny_checkpoint
    ids = torch.arange(40).unsqueeze(0) % original.config.vocab_size
    with torch.no_grad():
        expected = original(ids).logits
    for placement in (dict(device="cpu"), dict(device_map="auto")):
        model, _ = models.load_model(folder, **placement)
        assert models.model_device(model) == torch.device("cpu")
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="device"):
        models.load_model(folder, device="tpu")


def test_capture_in_float64(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    model, tokenizer = models.load_model(folder, dtype=torch.float64)
    captures = models.capture_linear_inputs(model, tokenizer, TEXT, 24, layers=r"layers\.0\.mlp", dtype=torch.float64)
    assert captures and all(c.activation.dtype == c.weight.dtype == torch.float64 for c in captures.values())
    # The float64 model's weights are the float32 ones, widened exactly.
    model32, _ = models.load_model(folder)
    name = "model.layers.0.mlp.up_proj"
    assert torch.equal(captures[name].weight, model32.get_submodule(name).weight.double())
    with pytest.raises(ValueError, match="dtype"):
        models.capture_linear_inputs(model, tokenizer, TEXT, 24, dtype=torch.int32)


@pytest.mark.model
def test_converted_gguf_cache_is_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "CONVERTED_DIR", tmp_path / "converted")
    direct, direct_tokenizer = models.load_model(convert_cache=False)
    cached, cached_tokenizer = models.load_model()            # converts and writes the folder
    assert len(list((tmp_path / "converted").iterdir())) == 1
    again, _ = models.load_model()                             # reads it
    for model in (cached, again):
        state, reference = model.state_dict(), direct.state_dict()
        assert set(state) == set(reference) and all(torch.equal(state[k], reference[k]) for k in state)
    assert torch.equal(models.tokenize(cached_tokenizer, TEXT), models.tokenize(direct_tokenizer, TEXT))
    ids = models.tokenize(direct_tokenizer, TEXT, 64)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, direct(ids).logits)
