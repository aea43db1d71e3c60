"""BlockDialect golden model: a bit-exact PyTorch reference of ../shared/SPEC.md.

`from golden import bd` gives the public API of SPEC 10.
"""
from . import bd, formatbook

__all__ = ["bd", "formatbook"]
