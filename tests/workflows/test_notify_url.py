"""The `notify-url` parameter: `kolora run` and `kolora submit` refuse one the exit handler could not POST to before
any step runs (the handler only finds out once the run is over, and then must not fail it)."""

from __future__ import annotations

import argparse

import pytest
import yaml

from kolora_core.cli import main
from kolora_core.cli import run as cli_run
from kolora_core.cli.notify_url import url_problem

BAD = {
    "hooks.example.com/kolora": "it does not start with http:// or https://",
    "notaurl": "it does not start with http:// or https://",
    "ftp://hooks.example.com/kolora": "it does not start with http:// or https://",
    "https:///kolora": "it has no host",
    "http://hooks.example.com:80a/kolora": "its host or port cannot be parsed",
    "http://[::1/kolora": "its host or port cannot be parsed",
    "https://hooks.example.com/ko lora": "it holds spaces, control or non-ASCII characters",
    " https://hooks.example.com/kolora": "it holds spaces, control or non-ASCII characters",
    "https://hooks.example.com/kolorä": "it holds spaces, control or non-ASCII characters",
}
GOOD = ("https://hooks.example.com/services/T0/B1/xyz?token=a%20b", "HTTP://127.0.0.1:8080/hook", "http://[::1]:9/x")


@pytest.mark.parametrize("url", GOOD)
def test_a_webhook_url_passes(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(("url", "problem"), BAD.items())
def test_kolora_run_refuses_it_before_any_step(
    url: str, problem: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_run, "run_workflow", lambda options: pytest.fail("a step ran"))
    assert main(["run", "-p", "on-unchanged=skip", "-p", f"notify-url={url}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"kolora run: error: -p notify-url={url!r}: {problem}"), err
    assert "give the webhook's whole URL, e.g. https://" in err


@pytest.mark.parametrize("no_validate", [[], ["--no-validate"]])
@pytest.mark.parametrize(("url", "problem"), BAD.items())
def test_kolora_submit_refuses_it_before_sending(
    url: str, problem: str, no_validate: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "--dry-run", *no_validate, "-p", f"notify-url={url}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"-p notify-url={url!r}: {problem}" in err, err


def test_a_webhook_url_or_none_goes_through(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="kolora")
    cli_run.register(parser.add_subparsers(dest="command"))
    for url in (*GOOD, ""):
        assert cli_run.options_from_args(parser.parse_args(["run", "-p", f"notify-url={url}"])).parameters["notify-url"] == url
        assert main(["submit", "--dry-run", "-p", f"notify-url={url}"]) == 0
        parameters = yaml.safe_load(capsys.readouterr().out)["spec"]["arguments"]["parameters"]
        assert {"name": "notify-url", "value": url} in parameters
