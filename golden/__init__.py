"""BlockDialect golden model: a bit-exact PyTorch reference of ../shared/SPEC.md.

`from golden import bd` gives the public API of SPEC 10; `golden.spec` holds every scalar constant
of the specification and `golden.formatbook` its tables.
"""
from . import bd, formatbook, spec

__all__ = ["bd", "formatbook", "spec"]
