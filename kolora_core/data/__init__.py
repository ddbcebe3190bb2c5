"""Data stages: ingest (sources -> normalised, captioned dataset) and filter (Data-Juicer -> training set + report).

One job per module:

* `layout`      -- the on-disk layout of the `dataset`, `trainset` and `filter-report` directories (the one place)
* `sources`     -- `ingest.source` URIs -> a stream of raw items (modelscope://, folder, parquet, smoke://)
* `suffixes`    -- the file kinds a folder source reads (light: `kolora upload` checks a folder with them)
* `smoke`       -- the small deterministic dataset kolora draws itself for `smoke://`
* `normalise`   -- open, verify and normalise one image to RGB PNG bytes, or say why it is skipped
* `ingest`      -- the ingest stage: stream, normalise, dedup, caption, write, report
* `datajuicer`  -- run a Data-Juicer recipe (in a child process) and read back kept ids and per-op drops
* `filtering`   -- the filter stage: verify, Data-Juicer, trainset, report
* `filter_report` -- filter_report.json and the self-contained filter_report.html

See docs/data.md for sources, skip reasons, reports and the optional model-based Data-Juicer ops.
"""
