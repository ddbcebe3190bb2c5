"""The embedded S3 store: moto's S3 server on 127.0.0.1, started for one run and stopped after it.

Why a real server and not files on disk: steps must exchange artifacts only through the S3 API, as on a
cluster, so the local runner exercises the same keys, archives and failure modes. moto keeps objects in
this process (spooled to temporary files, but read whole into memory when served), which is right for
smoke runs and wrong for tens of GB of weights: point `--s3-endpoint` at a MinIO for full-size runs.
"""

from __future__ import annotations

import logging
from types import TracebackType

from kolora_core.errors import KoloraError
from kolora_core.storage.s3 import DEFAULT_BUCKET, S3Settings

# moto accepts any credentials; fixed ones keep a developer's real AWS keys out of the embedded store.
EMBEDDED_KEY = "kolora-embedded"
EMBEDDED_REGION = "us-east-1"


class EmbeddedS3:
    """Context manager: `with EmbeddedS3() as settings:` gives S3Settings for a fresh server on a free port."""

    def __init__(self, bucket: str = DEFAULT_BUCKET, host: str = "127.0.0.1") -> None:
        self.bucket = bucket
        self.host = host
        self._server = None
        self.settings: S3Settings | None = None

    def start(self) -> S3Settings:
        try:
            from moto.server import ThreadedMotoServer  # imported late: moto takes ~1 s to import
        except ImportError:
            raise KoloraError("the embedded S3 store needs moto: pip install 'moto[server]>=5' or pass --s3-endpoint") from None
        # werkzeug logs one line per request to stderr; that would drown the steps' own logs
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # Port 0: the OS picks a free port, so parallel runs never collide. (A fixed busy port would hang
        # ThreadedMotoServer.start(), which waits for a bind that failed in its thread.)
        server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.settings = S3Settings(
            endpoint_url=f"http://{host}:{port}",
            bucket=self.bucket,
            region=EMBEDDED_REGION,
            access_key_id=EMBEDDED_KEY,
            secret_access_key=EMBEDDED_KEY,
            multipart_threshold=4 * 1024 * 1024 * 1024,
            read_timeout=600.0,
            embedded=True,
        )
        return self.settings

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> S3Settings:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
