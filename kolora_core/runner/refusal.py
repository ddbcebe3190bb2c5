"""A parameter check's refusal whose way out is a value to pass, carried as data beside the one-line message.

Why data: a new run takes the advice as the message says it ("...; pass -p generate-shards=8 or fewer"), but
`kolora run --retry` takes no -p, so it says the same value as a new run's (`RetryPlan.refused`); read back out of
the message, a check reworded since lost its advice there without any test noticing.
"""

from __future__ import annotations

from kolora_core.errors import KoloraError


class ValueAdvice(KoloraError):
    """`<problem><sep>pass <advice>`: `advice` is what to pass (`-p NAME=VALUE`, or a flag for `kolora submit`)."""

    def __init__(self, problem: str, advice: str, sep: str = "; ") -> None:
        super().__init__(f"{problem}{sep}pass {advice}")
        self.problem, self.advice = " ".join(problem.split()), advice
