"""What every command line of the project does alike when it writes its outputs."""
from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["write_outputs"]


def write_outputs(prog: str, write: Callable[[], str]) -> int:
    """Calls write(), which writes a command's files and returns the line to print, and returns 0.
    A file that cannot be written (OSError) gives the one-line error
    ``PROG: error: cannot write PATH: REASON`` on stderr instead of a traceback, and returns 1."""
    try:
        done = write()
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        print(f"{prog}: error: cannot write{where}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(done)
    return 0
