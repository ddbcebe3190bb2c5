"""The release tests talk to the same real S3 server as the runner tests (one per session)."""

from tests.runner.conftest import s3_server, store  # noqa: F401 - fixtures, used by name
