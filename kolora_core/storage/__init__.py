"""Artifact storage: any S3-compatible endpoint over boto3, plus an embedded one for single-machine runs.

The local runner moves every artifact through the S3 API, exactly as Argo's executor does on a
cluster, so a step that only works because it can see another step's local files fails here too.

* `s3`       -- `S3Store`: one bucket of any S3-compatible endpoint (boto3), artifacts as files or tar.gz
* `archive`  -- Argo's tar.gz artifact form, packed and unpacked safely
* `embedded` -- an S3 server on 127.0.0.1 for the life of a local run
* `objects`  -- `Storage`, the four operations publishing needs, over a directory or an `S3Store`
* `errors`   -- `ArtifactNotFound`, `PreconditionFailed`: boto3-free, so `LocalStorage` needs no boto3
* `transient` -- which S3 failures a retry may not repeat (exit 75) and which it would (exit 2): botocore's verdict

No stage imports this package: stages read and write directories; the runner and Argo move them.
"""
