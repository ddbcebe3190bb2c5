"""A stage work function that makes every kind of noise a real stage's libraries make (see kolora_core/logs.py)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from transformers.utils import logging as transformers_logging  # imported with the module, as stage modules do

from kolora_core.config import RunConfig

THIRD_PARTY_FILE = "/usr/lib/python3/site-packages/somelib/__init__.py"
DIFFSYNTH_FILE = "/usr/lib/python3/site-packages/diffsynth/models/model_manager.py"


def work(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    warnings.warn_explicit("somelib is deprecated", FutureWarning, THIRD_PARTY_FILE, 1)
    printer = compile('print("No sdxl_text_encoder models available.")', DIFFSYNTH_FILE, "exec")
    exec(printer, {"__name__": "diffsynth.models.model_manager"})
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
    logging.getLogger("somelib").error("somelib: a real error")
    warnings.warn("kolora's own warning", UserWarning, stacklevel=1)
    logging.getLogger("kolora.ingest").info("kolora's own line")
    print("kolora's own print")
    transformers_logging.get_logger("transformers.configuration_utils").warning("`torch_dtype` is deprecated!")
    (outputs["dataset"] / "done").write_text("ok", encoding="utf-8")
