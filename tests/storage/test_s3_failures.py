"""Which store failures exit 75 (TransientError: the workflow retries) and which exit 2 (KoloraError: fix something),
against a fake endpoint that answers what each test says (tests/storage/fake_s3.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kolora_core.cli import main as kolora
from kolora_core.errors import KoloraError, TransientError
from kolora_core.storage.s3 import S3Settings, S3Store, open_at_command_line
from tests.storage.fake_s3 import Answer, FakeS3, error, fake_s3
from tests.storage.test_s3 import closed_port


def quick(url: str, attempts: int = 1) -> S3Settings:
    """Settings for the fake: one attempt per request (no back-off waits) unless a test counts botocore's retries."""
    return S3Settings(url, access_key_id="x", secret_access_key="y", max_attempts=attempts, read_timeout=2, deadline=10)


def failure(action: Any) -> KoloraError:
    with pytest.raises(KoloraError) as caught:
        action()
    assert "\n" not in str(caught.value)
    return caught.value


TRANSIENT = {
    "503 SlowDown": error(503, "SlowDown", "Please reduce your request rate."),
    "500 InternalError": error(500, "InternalError", "We encountered an internal error. Please try again."),
    "503 ServiceUnavailable": error(503, "ServiceUnavailable"),
    "502 from a proxy": Answer(status=502, body=b"<html>Bad Gateway</html>", headers={"Content-Type": "text/html"}),
    "429 without a body": Answer(status=429),
    "400 RequestTimeout": error(400, "RequestTimeout", "Your socket connection to the server was not read from"),
    "connection closed unanswered": Answer(hang_up=True),
}
USER = {
    "403 AccessDenied": error(403, "AccessDenied", "Access Denied."),
    "403 InvalidAccessKeyId": error(403, "InvalidAccessKeyId"),
    "403 SignatureDoesNotMatch": error(403, "SignatureDoesNotMatch"),
    "404 NoSuchBucket": error(404, "NoSuchBucket", "The specified bucket does not exist"),
    "400 InvalidArgument": error(400, "InvalidArgument"),
    "405 MethodNotAllowed": error(405, "MethodNotAllowed"),
}


@pytest.mark.parametrize("answer", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_what_botocore_retries_is_transient_exit_75(answer: Answer) -> None:
    with fake_s3(answer) as fake:
        store = S3Store(quick(fake.url))
        for operation in (lambda: store.put_text("k", "v"), lambda: store.list_keys("p/"), lambda: store.get_with_etag("k")):
            err = failure(operation)
            assert isinstance(err, TransientError) and err.exit_code == 75, err
            assert f"S3 endpoint {fake.url} failed to " in str(err)


@pytest.mark.parametrize("answer", USER.values(), ids=USER.keys())
def test_what_a_retry_repeats_is_a_user_error_exit_2(answer: Answer) -> None:
    with fake_s3(answer) as fake:
        store = S3Store(quick(fake.url))
        for operation in (lambda: store.put_text("k", "v"), lambda: store.list_keys("p/")):
            err = failure(operation)
            assert not isinstance(err, TransientError) and err.exit_code == 2, err
        assert answer.code in str(err)


def test_transient_is_exactly_what_botocore_retried() -> None:
    with fake_s3(error(503, "SlowDown")) as fake:
        failure(lambda: S3Store(quick(fake.url, attempts=2)).put_text("k", "v"))
        assert fake.count("PUT") == 2  # botocore tried again ...
    with fake_s3(error(403, "AccessDenied")) as fake:
        failure(lambda: S3Store(quick(fake.url, attempts=2)).put_text("k", "v"))
        assert fake.count("PUT") == 1  # ... and not here: a retry would repeat it


def test_uploads_and_downloads_through_s3transfer_are_sorted_too(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    with fake_s3(error(503, "SlowDown")) as fake:
        assert isinstance(failure(lambda: S3Store(quick(fake.url)).upload_file(tmp_path / "f.txt", "k")), TransientError)
    with fake_s3(error(403, "AccessDenied")) as fake:
        err = failure(lambda: S3Store(quick(fake.url)).upload_file(tmp_path / "f.txt", "k"))
        assert not isinstance(err, TransientError) and "refused the credentials (AccessDenied)" in str(err)


def test_a_download_whose_stream_breaks_every_time_is_transient_not_a_traceback(tmp_path: Path) -> None:
    """s3transfer retries a broken body itself and then raises boto3's RetriesExceededError (once a traceback, exit 1)."""
    etag = '"0123456789abcdef0123456789abcdef"'
    head = {"Content-Length": "10", "ETag": etag, "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}

    def respond(method: str, _path: str) -> Answer:
        if method == "HEAD":
            return Answer(headers=head)
        return Answer(body=b"abc", declared_length=10, headers={"ETag": etag})

    with fake_s3(respond) as fake:
        err = failure(lambda: S3Store(quick(fake.url)).download_file("k", tmp_path / "k"))
        assert isinstance(err, TransientError) and f"S3 endpoint {fake.url} failed to download s3://kolora/k" in str(err)
        assert fake.count("GET") == 2  # S3Store's TransferConfig: num_download_attempts=2


def test_metadata_looked_up_a_few_objects_at_a_time_is_sorted_too() -> None:
    """`kolora upload` asks each object's sha256 by HEAD (several at once): a HEAD answer has no body, its status says."""
    keys = [f"k{i}" for i in range(20)]
    with fake_s3(error(503)) as fake:
        err = failure(lambda: S3Store(quick(fake.url)).user_metadata(keys))
        assert isinstance(err, TransientError) and "failed to look up 20 object(s) in s3://kolora: 503" in str(err)
    with fake_s3(error(403)) as fake:
        err = failure(lambda: S3Store(quick(fake.url)).user_metadata(keys))
        assert not isinstance(err, TransientError) and "refused the credentials (403)" in str(err)
    with fake_s3(error(404)) as fake:  # gone since the listing: left out, so the upload sends it
        assert S3Store(quick(fake.url)).user_metadata(keys) == {}
        assert fake.count("HEAD") == 20


@pytest.mark.parametrize(("code", "transient"), [("InternalError", True), ("SlowDown", True), ("AccessDenied", False)])
def test_keys_a_delete_did_not_delete_are_sorted_by_their_code(code: str, transient: bool) -> None:
    result = (
        '<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Error><Key>k</Key><Code>{code}</Code><Message>no</Message></Error></DeleteResult>"
    ).encode()
    with fake_s3(Answer(body=result, headers={"Content-Type": "application/xml"})) as fake:
        err = failure(lambda: S3Store(quick(fake.url)).delete_keys(["k"]))
        assert isinstance(err, TransientError) is transient and f"did not delete s3://kolora/k ({code}: no)" in str(err)


# --- the first call: ensure_bucket, and the commands a person runs ----------------------------------------------


def test_ensure_bucket_is_transient_for_a_workflow_step_and_exit_2_at_the_command_line() -> None:
    with fake_s3(error(503)) as fake:  # a HEAD answer has no body: the code is the status
        store = S3Store(quick(fake.url))
        transient = failure(store.ensure_bucket)
        assert isinstance(transient, TransientError) and "failed to open bucket 'kolora': 503" in str(transient)
        user = failure(lambda: open_at_command_line(store))
        assert type(user) is KoloraError and str(user) == str(transient)  # the same line, exit 2


def test_a_refused_connection_is_transient_except_at_the_command_line() -> None:
    store = S3Store(quick(f"http://127.0.0.1:{closed_port()}"))
    refused = failure(store.ensure_bucket)
    assert isinstance(refused, TransientError) and "does not answer (connection refused)" in str(refused)
    assert type(failure(lambda: open_at_command_line(store))) is KoloraError
    assert isinstance(failure(lambda: store.list_keys("")), TransientError)  # through botocore, not the TCP probe


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Resolve `store.example` to the DNS error a test sets (no real resolver: its answers differ between machines)."""
    answers: dict[str, int] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            known = answers[host] == socket.EAI_NONAME
            raise socket.gaierror(answers[host], "Name or service not known" if known else "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield answers


def test_a_host_dns_does_not_know_is_a_wrong_url_but_a_dns_timeout_is_transient(dns: dict[str, int]) -> None:
    store = S3Store(quick("http://store.example:9000"))
    dns["store.example"] = socket.EAI_NONAME
    assert type(failure(store.ensure_bucket)) is KoloraError
    err = failure(lambda: store.list_keys(""))
    assert type(err) is KoloraError and "does not answer (host name not found)" in str(err)
    dns["store.example"] = socket.EAI_AGAIN
    assert isinstance(failure(store.ensure_bucket), TransientError)
    assert isinstance(failure(lambda: store.list_keys("")), TransientError)


# --- through the CLI ----------------------------------------------------------------------------------------------


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")


def champion(fake: FakeS3, tmp_path: Path) -> int:
    return kolora(["champion", "--s3-endpoint", fake.url, "--name", "kolora", "--out", str(tmp_path / "champion")])


def publish(fake: FakeS3, tmp_path: Path) -> int:
    (tmp_path / "release").mkdir(exist_ok=True)
    return kolora(["publish", "--release", str(tmp_path / "release"), "--s3-endpoint", fake.url])


@pytest.mark.parametrize("command", [champion, publish])
@pytest.mark.usefixtures("credentials")
def test_the_workflows_store_steps_exit_75_on_503_and_2_on_403(
    command: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = command.__name__
    with fake_s3(error(503, "SlowDown")) as fake:
        assert command(fake, tmp_path) == 75
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kolora {name}: error: S3 endpoint {fake.url} failed to ") and "\n" not in err
    with fake_s3(error(403, "AccessDenied")) as fake:
        assert command(fake, tmp_path) == 2
    assert "refused the credentials" in capsys.readouterr().err
    assert not (tmp_path / "champion" / "_SUCCESS").exists()


@pytest.mark.usefixtures("credentials")
def test_kolora_upload_to_a_store_answering_503_is_exit_2_with_its_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"not checked before the store")
    with fake_s3(error(503)) as fake:
        assert kolora(["upload", str(tmp_path / "images"), "datasets/x", "--s3-endpoint", fake.url]) == 2
    assert capsys.readouterr().err.startswith(f"kolora upload: error: S3 endpoint {fake.url} failed to open bucket")


@pytest.mark.usefixtures("credentials")
def test_kolora_run_is_exit_2_on_a_store_failing_at_the_start_and_75_once_under_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = str(Path(__file__).parents[1] / "runner" / "templates" / "pipeline.yaml")

    def run(fake: FakeS3) -> int:
        return kolora(["run", "--template", template, "--s3-endpoint", fake.url, "--runs-dir", str(tmp_path / "runs")])

    with fake_s3(error(503)) as fake:
        assert run(fake) == 2  # ensure_bucket: nothing ran yet, and it is the endpoint the user gave
    assert (
        capsys.readouterr().err
        == f"kolora run: error: S3 endpoint {fake.url} failed to open bucket 'kolora': 503 Service Unavailable\n"
    )
    with fake_s3(lambda method, path: Answer() if method == "HEAD" and path == "/kolora" else error(503, "SlowDown")) as fake:
        assert run(fake) == 75  # the first step's output could not be stored: a rerun may get through
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"kolora run: error: S3 endpoint {fake.url} failed to upload ") and "SlowDown" in err[-1]
