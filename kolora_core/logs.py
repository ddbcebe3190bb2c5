"""A stage's log shows kolora's lines; third-party noise is kept at debug level (`KOLORA_LOG_LEVEL=debug` shows it).

Measured on a smoke `kolora run`, 29 of its 103 lines were other libraries talking, none of it actionable by a
kolora user. Each kind is routed into logging and demoted to DEBUG, not dropped:

* Python warnings from third-party code (pynvml's and `torch.jit`'s FutureWarnings at torch import): captured
  (`logging.captureWarnings`), demoted when the warning's file is outside kolora's own source;
* third-party loggers below ERROR (bitsandbytes' "Failed to load CPU gemm_4bit_forward"): demoted.
  transformers and diffusers log through a handler of their own ("`torch_dtype` is deprecated!", "Using a slow
  image processor"), so their level is set to error through their own variables (`TRANSFORMERS_VERBOSITY`,
  `DIFFUSERS_VERBOSITY`), unless debugging, when they print at their defaults;
* prints from third-party modules (diffsynth's "No sdxl_text_encoder models available.", "Using sdxl_unet from
  ..."): each line becomes a record of the printing module's logger, hence demoted; prints of kolora's own
  source files pass;
* tqdm progress bars (carriage-return noise in `kubectl logs`): off for the stage process (`TQDM_DISABLE`,
  read by tqdm at import); kolora logs its own progress lines (`kolora_core.progress`).

A variable the user set is left as it is.

Errors of every library stay visible at their level.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LEVEL_ENV = "KOLORA_LOG_LEVEL"
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
OWN_LOGGERS = ("kolora", "jobs", "workflows", "__main__")
_SOURCE_ROOT = Path(__file__).resolve().parents[1]
# Libraries that log through a handler of their own (not propagating) and read their level from the environment
# when first imported, which in a stage is after the shell starts (jobs/ import nothing heavy).
LIBRARY_LEVELS = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}


@functools.lru_cache(maxsize=1024)
def _own_file(path: str) -> bool:
    """Whether a source file is kolora's (this checkout or installed package), not another library's."""
    if path.startswith("<"):  # "<string>", "<frozen ...>": code without a file of ours
        return False
    resolved = Path(path).resolve()
    return resolved.is_relative_to(_SOURCE_ROOT) and "site-packages" not in resolved.parts


def third_party(record: logging.LogRecord) -> bool:
    """Whether a record comes from another library: its logger, or for a warning, the file that warned."""
    if record.name == "py.warnings":
        text = str(record.args[0] if record.args else record.msg)  # "<file>:<line>: <Category>: <message>"
        return not _own_file(text.split(":", 1)[0])
    return record.name.split(".", 1)[0] not in OWN_LOGGERS


class DemoteThirdParty(logging.Filter):
    """Third-party records below ERROR become DEBUG records (shown only when the handler shows DEBUG)."""

    def __init__(self, show_debug: bool) -> None:
        super().__init__()
        self.show_debug = show_debug

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR and record.levelno > logging.DEBUG and third_party(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno > logging.DEBUG or self.show_debug


class PrintsToLog(io.TextIOBase):
    """`sys.stdout` of a stage: lines printed by third-party modules become records of that module's logger."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.partial: dict[str, str] = {}

    def write(self, text: str) -> int:
        frame = sys._getframe(1)  # print() is C: frame 1 is the code that printed
        if _own_file(frame.f_code.co_filename):
            return self.stream.write(text)
        module = frame.f_globals.get("__name__", "")
        *lines, self.partial[module] = (self.partial.get(module, "") + text).split("\n")
        for line in lines:
            if line.strip():
                logging.getLogger(module).info("%s", line)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty ... of the real stream
        return getattr(self.stream, name)


@contextmanager
def stage_logging() -> Iterator[None]:
    """The stage process's logging for the duration of a stage: format, level, demoted noise, no bars."""
    debug = os.environ.get(LEVEL_ENV, "").lower() == "debug"
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format=FORMAT, stream=sys.stderr)
    demote = DemoteThirdParty(show_debug=debug)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(demote)
    logging.captureWarnings(True)
    stdout = sys.stdout
    sys.stdout = PrintsToLog(stdout)
    quieted = [] if debug else [name for name in LIBRARY_LEVELS if name not in os.environ]
    os.environ.update({name: LIBRARY_LEVELS[name] for name in quieted})
    try:
        yield
    finally:
        sys.stdout = stdout
        for name in quieted:
            os.environ.pop(name, None)
        logging.captureWarnings(False)
        for handler in handlers:
            handler.removeFilter(demote)
