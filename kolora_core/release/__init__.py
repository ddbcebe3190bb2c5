"""Releases of a LoRA whose evaluation passed: assembled by the publish stage, promoted into a bucket afterwards.

* `assemble`   -- the release directory's format (files, `release.json`) and `assemble_release` behind the gate
* `run`        -- the publish stage: assemble, then the optional ModelScope upload (no object store)
* `modelscope` -- that upload, token from the environment only
* `publish`    -- `publish_release` on any `kolora_core.storage.objects.Storage`: never overwrites a version
* `promote`    -- publishing into an S3 bucket, as `kolora publish` and the local runner do
"""
