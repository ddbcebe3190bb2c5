"""Argo's substitution, `when` (govaluate with bare words as strings) and `depends` logic."""

from __future__ import annotations

import pytest

from kolora_core.errors import KoloraError
from kolora_core.runner.expressions import TaskOutcome, evaluate_when, parse_depends, should_retry, substitute


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("passed == passed", True),
        ("failed == passed", False),
        ("failed != passed", True),
        ("'two words' == \"two words\"", True),
        ("1 == 1.0", True),
        ("2 > 10", False),
        ("b < c", True),
        ("true", True),
        ("false || (x == x && !(1 == 2))", True),
        ("skipped == passed || skipped == failed", False),
        ("v1.2 =~ '^v1'", True),
        ("", True),
    ],
)
def test_when(expression: str, expected: bool) -> None:
    assert evaluate_when(expression, "task t") is expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("smoke-test == smoke-test", "quote values"),
        ("not passed == passed", "unexpected"),
        ("3", "not a condition"),
        ("(a == a", "ends too early"),
        ("1 < a", "cannot order"),
    ],
)
def test_when_errors_name_the_task(expression: str, message: str) -> None:
    with pytest.raises(KoloraError, match=message) as err:
        evaluate_when(expression, "task 'publish'")
    assert "task 'publish'" in str(err.value)


def test_substitution_trims_and_refuses_unknown_variables() -> None:
    scope = {"workflow.parameters.steps": "4", "item": "a"}
    assert substitute("--steps={{ workflow.parameters.steps }} {{item}}", scope, "t") == "--steps=4 a"
    with pytest.raises(KoloraError, match=r"task 'train': unknown variable '\{\{workflow.parameters.stpes\}\}'"):
        substitute("{{workflow.parameters.stpes}}", scope, "task 'train'")
    with pytest.raises(KoloraError, match="expression template"):
        substitute("{{=sprig.upper('a')}}", scope, "t")


def outcomes(**phases: str) -> dict[str, TaskOutcome]:
    return {k.replace("_", "-"): TaskOutcome(v) for k, v in phases.items()}


def test_depends_follows_argo() -> None:
    plain = parse_depends("a && b-c", "t")
    assert plain.tasks == ("a", "b-c")
    # a bare name is Succeeded || Skipped || Daemoned: a skipped task does not stop its plain dependents...
    assert plain.evaluate(outcomes(a="Succeeded", b_c="Skipped"))
    # ...but an omitted one does, and so does an explicit .Succeeded
    assert not plain.evaluate(outcomes(a="Succeeded", b_c="Omitted"))
    assert not parse_depends("a.Succeeded", "t").evaluate(outcomes(a="Skipped"))
    assert parse_depends("a.Skipped || b.Succeeded", "t").evaluate(outcomes(a="Skipped", b="Omitted"))
    assert parse_depends("!a.Succeeded", "t").evaluate(outcomes(a="Skipped"))
    fan = {"a": TaskOutcome("Succeeded", ("Skipped", "Succeeded"))}
    assert parse_depends("a.AnySucceeded", "t").evaluate(fan)
    assert not parse_depends("a.AllFailed", "t").evaluate(fan)


@pytest.mark.parametrize(
    ("text", "message"), [("a &&", "ends too early"), ("a.Done", "not a task result"), ("a ; b", "unexpected")]
)
def test_depends_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(KoloraError, match=message):
        parse_depends(text, "t")


def test_retry_policy_and_expression() -> None:
    rule = "lastRetry.status == 'Error' || lastRetry.exitCode != '2'"
    assert should_retry("Always", rule, 1, 3.0, "t")
    assert not should_retry("Always", rule, 2, 3.0, "t")  # a KoloraError exit: a rerun would repeat it
    assert should_retry("OnFailure", None, 1, 0.0, "t")
    assert not should_retry("OnError", None, 1, 0.0, "t")  # a non-zero exit is a Failure, not an Error
