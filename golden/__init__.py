"""BlockDialect golden model: a bit-exact PyTorch reference of ../shared/SPEC.md.

`from golden import bd` gives the public API of SPEC 10; `golden.spec` holds every scalar constant
of the specification and `golden.formatbook` its tables. `from golden import quantize_model` puts a
format on any PyTorch model's linear layers (and attention), see golden.model_quantization.
"""
from . import bd, formatbook, spec
from .model_quantization import quantize_model

__all__ = ["bd", "formatbook", "quantize_model", "spec"]
