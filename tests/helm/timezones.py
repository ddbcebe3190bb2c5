"""The time zone names values.schema.json's definitions/timezone takes: those Argo's controller schedules in.

Argo loads a CronWorkflow's `timezone` with Go's time.LoadLocation when it schedules it; a name Go does not know is
stored by the API server (the CRD takes any string) and the nightly never runs. Go takes "Local" and every name of
the IANA tz database, case-sensitively; Argo schedules "" in its cron's default, time.Local, so "" and "Local" are
the controller's own zone. The names come from the `tzdata` package alone, one IANA release like the one Go embeds,
not from this machine's /usr/share/zoneinfo (whose names differ between machines: Debian's holds `localtime`, a
link to /etc/localtime). After a tzdata upgrade:

    python -m tests.helm.timezones    # rewrites the enum of helm/kolora/values.schema.json

tests/helm/test_chart_files.py fails while the enum and this list differ.
"""

from __future__ import annotations

import json
import re
import zoneinfo

import pytest

from tests.helm.chart import CHART

SCHEMA = CHART / "values.schema.json"
GO_NAMES = ["", "Local"]  # not in the tz database: the controller's local zone (Argo passes "" to Go as no CRON_TZ)
TZDATA_PIN = "pip install tzdata==2026.6"
_ENUM_LINE = re.compile(r'^(    "timezone": \{.*"enum": )\[[^\]]*\]', flags=re.M)


def zone_names() -> list[str]:
    """Go's own names, then the tzdata package's, sorted (available_timezones without the machine's directories)."""
    pytest.importorskip("tzdata", reason=f"the IANA names come from the tzdata package: {TZDATA_PIN}")
    system = zoneinfo.TZPATH
    zoneinfo.reset_tzpath([])
    try:
        names = zoneinfo.available_timezones()
    finally:
        zoneinfo.reset_tzpath(system)
    return [*GO_NAMES, *sorted(names)]


def rewrite(text: str, names: list[str]) -> str:
    """values.schema.json's text with definitions/timezone set to names, every other line as it was."""
    new, count = _ENUM_LINE.subn(lambda m: m[1] + json.dumps(names), text)
    if count != 1 or json.loads(new)["definitions"]["timezone"]["if"]["enum"] != names:
        raise SystemExit(f"{SCHEMA}: no one-line definitions/timezone with an enum to rewrite")
    return new


def main() -> None:
    names = zone_names()
    SCHEMA.write_text(rewrite(SCHEMA.read_text(encoding="utf-8"), names), encoding="utf-8")
    print(f"{SCHEMA}: definitions/timezone takes {len(names)} names")


if __name__ == "__main__":
    main()
