"""Argo's three little languages: `{{variable}}` substitution, `when` conditions and `depends` logic.

They follow Argo's controller, not a guess at it:
* substitution is fasttemplate's: every `{{ ... }}` (inner spaces trimmed) must name a known variable,
  else the task fails naming it (Argo fails such a pod too); `{{=expr}}` expression templates are refused.
* `when` is govaluate after substitution, with bare words taken as strings (so `passed == passed` is true),
  numbers as numbers, `true`/`false` as booleans; operators `== != < > <= >= =~ !~ && || !` and parentheses.
* `depends` operands are `task` or `task.Result`; a bare `task` means `(task.Succeeded || task.Skipped ||
  task.Daemoned)`, and `dependencies: [a, b]` is `a && b`. So, as in Argo, a task skipped by its `when` does
  not stop its plain dependents; a dependent that should not run then says `depends: "a.Succeeded"`, and a
  task whose depends is false is Omitted, which in turn fails its own dependents' plain `depends`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kolora_core.errors import KoloraError

VARIABLE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def variables_in(text: str) -> list[str]:
    """The variable names used in `text`, trimmed, in order."""
    return [m.group(1).strip() for m in VARIABLE.finditer(text)]


def substitute(
    text: str,
    scope: Mapping[str, str],
    where: str,
    hint: Callable[[str], str] | None = None,
    unresolved: tuple[str, ...] = (),
) -> str:
    """Replace every `{{name}}` in `text` from `scope`; an unknown name is a `KoloraError` naming `where` and it.

    Names starting with one of `unresolved` stay as they are when unknown, as Argo leaves them: a
    `{{workflow.outputs.parameters.x}}` that no step exported reaches the container verbatim (v4.1.2
    substitutes pod templates with allowUnresolved; only `tasks.*`/`steps.*` must resolve).
    """

    def repl(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name.startswith("="):
            raise KoloraError(f"{where}: expression template '{{{{{name}}}}}' is not supported by the local runner")
        if name not in scope and unresolved and name.startswith(unresolved):
            return match.group(0)
        if name not in scope:
            extra = hint(name) if hint else ""
            raise KoloraError(f"{where}: unknown variable '{{{{{name}}}}}'{extra}")
        return scope[name]

    return VARIABLE.sub(repl, text)


# --- a tiny expression parser shared by `when` and `depends` ----------------------------------------------------

_COMPARE = ("==", "!=", "<=", ">=", "<", ">", "=~", "!~")


@dataclass(frozen=True)
class _Tok:
    kind: str  # op, str, num, bool, name
    value: Any


class _Parser:
    """Recursive descent over: or := and ('||' and)*; and := cmp ('&&' cmp)*; cmp := unary (op unary)?;
    unary := '!' unary | '(' or ')' | leaf."""

    def __init__(self, tokens: list[_Tok], text: str, where: str) -> None:
        self.tokens, self.pos, self.text, self.where = tokens, 0, text, where

    def fail(self, why: str) -> KoloraError:
        return KoloraError(f"{self.where}: cannot evaluate '{self.text}': {why}")

    def peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.fail("it ends too early")
        self.pos += 1
        return tok

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise self.fail(f"unexpected '{self.peek().value}' (quote values that contain spaces or operators)")
        return value

    def or_(self) -> Any:
        left = self.and_()
        while (tok := self.peek()) is not None and tok == _Tok("op", "||"):
            self.take()
            right = self.and_()
            left = self.boolean(left) or self.boolean(right)
        return left

    def and_(self) -> Any:
        left = self.cmp()
        while (tok := self.peek()) is not None and tok == _Tok("op", "&&"):
            self.take()
            right = self.cmp()
            left = self.boolean(left) and self.boolean(right)
        return left

    def cmp(self) -> Any:
        left = self.unary()
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.value in _COMPARE:
            self.take()
            return self.compare(left, tok.value, self.unary())
        return left

    def unary(self) -> Any:
        tok = self.take()
        if tok == _Tok("op", "!"):
            return not self.boolean(self.unary())
        if tok == _Tok("op", "("):
            value = self.or_()
            if self.take() != _Tok("op", ")"):
                raise self.fail("missing ')'")
            return value
        if tok.kind == "op":
            raise self.fail(f"unexpected '{tok.value}' (quote values that contain spaces or operators)")
        return tok.value

    def boolean(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"'{value}' is not a boolean")
        return value

    def compare(self, left: Any, op: str, right: Any) -> bool:
        if op in ("=~", "!~"):
            if not isinstance(left, str) or not isinstance(right, str):
                raise self.fail("=~ and !~ compare strings with a regular expression")
            try:
                found = re.search(right, left) is not None
            except re.error as exc:
                raise self.fail(f"bad regular expression '{right}': {exc}") from None
            return found if op == "=~" else not found
        if op == "==":
            return type(left) is type(right) and left == right
        if op == "!=":
            return not (type(left) is type(right) and left == right)
        if type(left) is not type(right) or isinstance(left, bool):
            raise self.fail(f"cannot order {left!r} and {right!r}")
        return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]


# --- when -----------------------------------------------------------------------------------------------------------

_WHEN_TOKEN = re.compile(
    r"""\s*(?:
      (?P<op>==|!=|<=|>=|=~|!~|&&|\|\||[<>!()])
    | "(?P<dq>[^"]*)" | '(?P<sq>[^']*)'
    | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
    | (?P<word>[^\s=!<>&|()"'+\-*/%^~,]+)
    | (?P<bad>\S)
    )""",
    re.VERBOSE,
)


def evaluate_when(expression: str, where: str) -> bool:
    """Evaluate an already substituted `when` the way Argo does (govaluate, bare words as strings)."""
    tokens: list[_Tok] = []
    for match in _WHEN_TOKEN.finditer(expression.strip()):
        if match.group("op"):
            tokens.append(_Tok("op", match.group("op")))
        elif match.group("dq") is not None or match.group("sq") is not None:
            tokens.append(_Tok("str", match.group("dq") if match.group("dq") is not None else match.group("sq")))
        elif match.group("num"):
            tokens.append(_Tok("num", float(match.group("num"))))
        elif match.group("word"):
            word = match.group("word")
            tokens.append(_Tok("bool", word == "true") if word in ("true", "false") else _Tok("str", word))
        elif match.group("bad"):
            raise KoloraError(
                f"{where}: when '{expression}' uses '{match.group('bad')}', which Argo reads as arithmetic; "
                "quote values that contain it"
            )
    if not tokens:
        return True
    result = _Parser(tokens, expression, f"{where}: when").parse()
    if not isinstance(result, bool):
        raise KoloraError(f"{where}: when '{expression}' is not a condition (it evaluates to '{result}')")
    return result


# --- depends --------------------------------------------------------------------------------------------------------

TASK_RESULTS = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed")
_DEPENDS_TOKEN = re.compile(
    r"\s*(?:(?P<op>&&|\|\||[!()])|(?P<name>[a-zA-Z0-9][-a-zA-Z0-9]*)(?:\.(?P<result>[A-Za-z]+))?|(?P<bad>\S))"
)


@dataclass(frozen=True)
class TaskOutcome:
    """What `depends` can ask about a finished task: its phase, and for a fan-out its children's phases."""

    phase: str  # Succeeded, Skipped, Omitted, Failed
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class DependsExpr:
    """A parsed `depends` (or `dependencies`) expression."""

    text: str
    tasks: tuple[str, ...]
    where: str

    def evaluate(self, outcomes: Mapping[str, TaskOutcome]) -> bool:
        tokens: list[_Tok] = []
        for match in _DEPENDS_TOKEN.finditer(self.text):
            if match.group("op"):
                tokens.append(_Tok("op", match.group("op")))
            elif match.group("name"):
                outcome = outcomes[match.group("name")]
                tokens.append(_Tok("bool", _satisfied(outcome, match.group("result"))))
        return _Parser(tokens, self.text, f"{self.where}: depends").parse() is True


def _satisfied(outcome: TaskOutcome, result: str | None) -> bool:
    phase = outcome.phase
    if result is None:
        return phase in ("Succeeded", "Skipped")
    if result == "AnySucceeded":
        return any(c == "Succeeded" for c in outcome.children)
    if result == "AllFailed":
        return bool(outcome.children) and all(c == "Failed" for c in outcome.children)
    return phase == result  # Daemoned/Errored never happen locally


def parse_depends(text: str, where: str) -> DependsExpr:
    """Parse and check a `depends` expression once, at load time; evaluation happens per run."""
    tasks: list[str] = []
    tokens: list[_Tok] = []
    for match in _DEPENDS_TOKEN.finditer(text):
        if match.group("bad"):
            raise KoloraError(f"{where}: depends '{text}' has an unexpected '{match.group('bad')}'")
        if match.group("op"):
            tokens.append(_Tok("op", match.group("op")))
            continue
        name, result = match.group("name"), match.group("result")
        if result is not None and result not in TASK_RESULTS:
            raise KoloraError(f"{where}: depends '{text}': '{result}' is not a task result ({', '.join(TASK_RESULTS)})")
        if name not in tasks:
            tasks.append(name)
        tokens.append(_Tok("bool", True))
    _Parser(tokens, text, f"{where}: depends").parse()  # syntax check with every operand true
    return DependsExpr(text=text, tasks=tuple(tasks), where=where)


# --- retryStrategy --------------------------------------------------------------------------------------------------

RETRY_POLICIES = ("Always", "OnFailure", "OnError", "OnTransientError")
_LAST_RETRY = re.compile(r"\blastRetry\.(exitCode|status|duration|message)\b")


def should_retry(policy: str, expression: str | None, exit_code: int, duration: float, where: str) -> bool:
    """Argo's retry decision for a step that exited non-zero (a *Failed* node, never an *Error* one here).

    OnFailure (Argo's default) and Always retry failures; OnError and OnTransientError retry only errors of
    the pod machinery, which a local process does not have. `expression` (expr-lang) may use
    `lastRetry.exitCode/status/duration/message` with comparisons and && || ! (enough for the usual
    "skip user errors" rule); it is evaluated with those values as strings, as Argo passes them.
    """
    if policy not in ("Always", "OnFailure"):
        return False
    if not expression:
        return True
    values = {"exitCode": str(exit_code), "status": "Failed", "duration": str(int(duration)), "message": ""}
    text = _LAST_RETRY.sub(lambda m: "'" + values[m.group(1)].replace("'", "") + "'", expression)
    return evaluate_when(text, f"{where}: retryStrategy.expression")
