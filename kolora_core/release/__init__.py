"""Releases of a LoRA whose evaluation passed: assembled by the publish stage, promoted into a bucket afterwards.

* `assemble`   -- the release directory's format (files, `release.json`) and `assemble_release` behind the gate
* `run`        -- the publish stage: assemble, then the optional ModelScope upload (no object store)
* `modelscope` -- that upload, token from the environment only
* `publish`    -- `publish_release` on any `kolora_core.storage.objects.Storage`: one winner per version (conditional
                  writes), latest.json by compare-and-swap, never overwriting a published version
* `champion`   -- the release latest.json points at, fetched for comparison (`kolora champion`)
* `intact`     -- whether a published release is whole (`DamagedRelease` names what is not): champion, rollback
                  and re-promotion share these checks
* `pointer`    -- latest.json's forms, and moving it by hand: `rollback` to an intact version, `reset` (no champion)
* `recovery`   -- the commands a damaged champion's error prints, with the user's own store flags
* `changes`    -- the check-changes stage: would training give the champion's LoRA again?
* `promote`    -- publishing into an S3 bucket, as `kolora publish` and the local runner do
"""
