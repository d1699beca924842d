"""The TFLite runtime's own console lines, kept off the console.

The runtime's C++ logger writes `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` straight to
file descriptor 2 each time a model is loaded, past Python's logging. No setting turns it off:
TF_CPP_MIN_LOG_LEVEL (0 to 3) changes nothing with ai-edge-litert 2.3, measured. So stderr is caught
while a model loads; the runtime's INFO lines go to the debug log, and everything else (its warnings
and errors, anything Python wrote meanwhile) is passed on to stderr unchanged.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

RUNTIME_INFO = "INFO: "


@contextmanager
def runtime_info_to_debug() -> Iterator[None]:
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else -1
        os.fstat(fd)
        # a file, not a pipe: a long message cannot block the load; closed by the `with` below
        caught = tempfile.TemporaryFile()  # noqa: SIM115
    except (OSError, ValueError):  # no stderr to catch (closed, a daemon without one), or no room for it
        yield  # (a full card must not stop the model loading: the INFO line then just shows)
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with caught:
        os.dup2(caught.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            caught.seek(0)
            passed_on = []
            for line in caught.read().decode("utf-8", "replace").splitlines(keepends=True):
                if line.startswith(RUNTIME_INFO):
                    log.debug("TFLite runtime: %s", line.rstrip())
                else:
                    passed_on.append(line)
            if passed_on:
                sys.stderr.write("".join(passed_on))
                sys.stderr.flush()
