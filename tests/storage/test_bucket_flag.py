"""Every command's --bucket is checked by the rule of the store it talks to, before it contacts anything."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kolora_core.cli import main as kolora
from kolora_core.cli.store_args import check_bucket_flag
from kolora_core.errors import KoloraError
from kolora_core.storage.bucket_names import GCS_ENDPOINT
from tests.storage.test_s3 import closed_port

COMMANDS = {
    "run": ["run"],
    "upload": ["upload", "FOLDER", "datasets/x"],
    "publish": ["publish", "--release", "FOLDER"],
    "champion": ["champion", "--name", "kolora", "--out", "OUT"],
}


def _refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, endpoint: str, bucket: str) -> str:
    (tmp_path / "folder").mkdir(exist_ok=True)
    names = {"FOLDER": str(tmp_path / "folder"), "OUT": str(tmp_path / "out")}
    argv = [names.get(word, word) for word in COMMANDS[command]]
    code = kolora([*argv, "--s3-endpoint", endpoint, "--bucket", bucket])
    err = capsys.readouterr().err.strip()
    assert code == KoloraError.exit_code and "\n" not in err, err
    assert not (tmp_path / "out").exists()
    return err.removeprefix(f"kolora {command}: error: ")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bucket_s3_refuses_is_refused_before_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The closed port is never reached: a check after contact would report the dead endpoint instead."""
    url = f"http://127.0.0.1:{closed_port()}"
    assert _refusal(tmp_path, capsys, command, url, "my_team_bucket") == (
        f"--bucket 'my_team_bucket' is not an S3 bucket name (S3's rule, for --s3-endpoint {url!r}): use 3-63 "
        "lowercase letters, digits, '.' and '-', starting and ending with a letter or digit; a GCS bucket takes GCS's "
        f"rule with --s3-endpoint {GCS_ENDPOINT}"
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_gcs_endpoint_takes_gcs_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """'My_Bucket' (upper case) is no GCS bucket either: refused by GCS's rule, with no S3 advice."""
    err = _refusal(tmp_path, capsys, command, GCS_ENDPOINT, "My_Bucket")
    assert err.startswith(f"--bucket 'My_Bucket' is not a GCS bucket name (GCS's rule, for --s3-endpoint {GCS_ENDPOINT!r}): ")
    assert "S3" not in err


def test_a_gcs_bucket_with_underscores_is_taken_for_gcs_only() -> None:
    check_bucket_flag(argparse.Namespace(bucket="my_team_bucket", s3_endpoint=GCS_ENDPOINT))
    check_bucket_flag(argparse.Namespace(bucket=None, s3_endpoint=None))  # kolora run without --bucket: its default
    with pytest.raises(KoloraError, match=r"^--bucket 'my_team_bucket' is not an S3 bucket name \(S3's rule, for the embedded"):
        check_bucket_flag(argparse.Namespace(bucket="my_team_bucket", s3_endpoint=None))
