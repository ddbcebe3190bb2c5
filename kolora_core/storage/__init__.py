"""Artifact storage: any S3-compatible endpoint over boto3, plus an embedded one for single-machine runs.

The local runner moves every artifact through the S3 API, exactly as Argo's executor does on a
cluster, so a step that only works because it can see another step's local files fails here too.
"""

from kolora_core.storage.s3 import ArtifactNotFound, S3Settings, S3Store

__all__ = ["ArtifactNotFound", "S3Settings", "S3Store"]
