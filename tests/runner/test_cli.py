"""`kolora run` as a user types it: flags, exit codes, and the lines printed on failure."""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

import pytest

from kolora_core.cli import main
from kolora_core.cli.run import options_from_args, register
from kolora_core.errors import KoloraError
from kolora_core.storage.s3 import S3Store

from .conftest import TEMPLATES


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kolora")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["run", *argv])


def cli(store: S3Store, tmp_path: Path, *argv: str) -> int:
    return main(
        ["run", "--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket, "--runs-dir", str(tmp_path), *argv]
    )


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch, store: S3Store) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.settings.access_key_id or "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.settings.secret_access_key or "")


def test_flags_become_options() -> None:
    options = options_from_args(parse("-p", "a=1", "-p", "b=x=y", "--profile", "full", "--keep-work"))
    assert options.parameters == {"a": "1", "b": "x=y", "profile": "full"} and options.keep_work
    assert options.s3 is None and options.template == Path("workflows/dist/kolora-pipeline.yaml")
    assert options_from_args(parse()).soft_parameters == {"profile": "smoke"}
    with pytest.raises(KoloraError, match="disagree"):
        options_from_args(parse("--profile", "full", "-p", "profile=smoke"))
    with pytest.raises(KoloraError, match="not NAME=VALUE"):
        options_from_args(parse("-p", "novalue"))
    with pytest.raises(SystemExit):
        parse("--engine", "kubernetes")


def test_success_exits_zero_and_prints_the_summary(store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(store, tmp_path, "--template", str(TEMPLATES / "pipeline.yaml"), "-p", "greeting=hi", "--profile", "smoke") == 0
    out = capsys.readouterr()
    assert "Succeeded" in out.out and "report.gate = passed" in out.out
    assert str(store.settings.secret_access_key) not in out.out + out.err
    assert (tmp_path / "latest" / "report.json").exists()


def test_step_failure_exits_non_zero_naming_the_step(store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(store, tmp_path, "--template", str(TEMPLATES / "failing.yaml")) == 1
    err = capsys.readouterr().err
    assert err.startswith("kolora run: step broken failed (exit 3); last lines of its log:\n")
    assert "kolora broken: error: the input is bad" in err


def test_user_errors_are_one_line_exit_two(store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(store, tmp_path, "--template", str(TEMPLATES / "pipeline.yaml"), "-p", "nope=1") == 2
    assert capsys.readouterr().err.startswith("kolora run: error: unknown parameter 'nope'")
    assert cli(store, tmp_path, "--template", str(tmp_path / "missing.yaml")) == 2
    assert "not found: render it first" in capsys.readouterr().err


def test_dead_endpoint_is_one_line_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    code = main(
        [
            "run",
            "--template",
            str(TEMPLATES / "pipeline.yaml"),
            "--s3-endpoint",
            f"http://127.0.0.1:{port}",
            "--runs-dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and time.monotonic() - started < 5
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kolora run: error: S3 endpoint http://127.0.0.1:{port} does not answer")
    assert out.out == "" and not any(tmp_path.iterdir())  # nothing ran, no run directory
