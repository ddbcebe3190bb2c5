"""The one typed run configuration and how it is resolved (the bottom layer: it imports only `kolora_core.errors`).

* `schema`       -- the pydantic sections and `RunConfig`; defaults are the seed recipe
* `seed`         -- the seed notebook's eight story prompts (the defaults of `generate.prompts`)
* `loader`       -- profiles, `--config` files (YAML, JSON, TOML) and flags -> a validated `RunConfig`; dumping
* `flags`        -- the fields as `--section.field` flags with generated help, and the parser that suggests
* `prompts_file` -- the YAML/JSONL prompts file format, read by the loader
* `datajuicer_ops` -- the pinned Data-Juicer's ops and their parameters (a committed table), checked in `filter.ops`
* `auto`         -- an "auto"-able setting resolved: what the stage picks here, or the value as written

Everything else imports the public names from here (`from kolora_core.config import RunConfig, load_config`).
"""

from kolora_core.config.auto import auto
from kolora_core.config.loader import (
    CombinationError,
    available_profiles,
    config_flags,
    dump_config,
    flag_overrides,
    inline_prompts_file_text,
    load_config,
    read_config_file,
)
from kolora_core.config.schema import (
    HUB_SCHEMES,
    EvaluateConfig,
    FilterConfig,
    GenerateConfig,
    IngestConfig,
    ModelsConfig,
    PublishConfig,
    RunConfig,
    StoryPrompt,
    TrainConfig,
    reads_local_files,
)

__all__ = [
    "HUB_SCHEMES",
    "CombinationError",
    "EvaluateConfig",
    "FilterConfig",
    "GenerateConfig",
    "IngestConfig",
    "ModelsConfig",
    "PublishConfig",
    "RunConfig",
    "StoryPrompt",
    "TrainConfig",
    "auto",
    "available_profiles",
    "config_flags",
    "dump_config",
    "flag_overrides",
    "inline_prompts_file_text",
    "load_config",
    "read_config_file",
    "reads_local_files",
]
