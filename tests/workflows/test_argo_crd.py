"""Every rendered Argo object is valid for Argo v4.1.2 and v3.7.18, unknown fields rejected."""

from __future__ import annotations

import copy
import functools

import pytest
import yaml

from tests.argo_schema import VERSIONS, require_crds, schema_errors
from tests.workflows.conftest import RBAC_FILE
from workflows.options import Toleration
from workflows.render import render_all

VARIANTS = {
    "default": {},
    "no-gpu": {"gpu": False},
    "zero-gpus": {"gpus": 0},
    "custom": {
        "gpus": 2,
        "tolerations": (Toleration("nvidia.com/gpu"), Toleration("pool", value="a100", effect="NoExecute", operator="Equal")),
        "node_selector": (("cloud.google.com/gke-accelerator", "nvidia-h100-80gb"),),
        "artifact_repository_key": "default-v1",
        "service_account": "kolora-workflow",
    },
    "models-s3": {"models_from": "s3"},
    "models-pvc": {"models_from": "pvc", "models_pvc": "shared-models"},
    "models-pvc-no-gpu": {"models_from": "pvc", "gpu": False},
    "archive-logs-unbounded": {"archive_logs": True, "generate_parallelism": None},
    "namespace-default-sa": {"service_account": None, "s3_secret": "team-s3"},
}


@functools.cache
def rendered_variant(variant: str) -> dict[str, str]:
    return render_all(**VARIANTS[variant])


@pytest.fixture(scope="module", autouse=True)
def _crds():
    require_crds()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_objects_match_the_crd_schema(variant: str, version: str) -> None:
    for name, text in rendered_variant(variant).items():
        if name != RBAC_FILE:
            assert schema_errors(yaml.safe_load(text), version) == [], name


@pytest.mark.parametrize("version", VERSIONS)
def test_the_validator_rejects_unknown_and_misplaced_fields(template: dict, version: str) -> None:
    assert schema_errors(template, version) == []
    broken = copy.deepcopy(template)
    broken["spec"]["templates"][0]["retryStategy"] = {"limit": 2}  # misspelt
    broken["spec"]["templates"][0]["container"]["gpu"] = 1  # not a container field
    errors = schema_errors(broken, version)
    assert any("retryStategy" in e for e in errors) and any("'gpu'" in e for e in errors), errors


@pytest.mark.parametrize("version", VERSIONS)
def test_int_or_string_fields_take_both(template: dict, version: str) -> None:
    obj = copy.deepcopy(template)
    obj["spec"]["templates"][0]["activeDeadlineSeconds"] = "7200"
    obj["spec"]["templates"][0]["retryStrategy"]["limit"] = "2"
    assert schema_errors(obj, version) == []


def test_cron_schedules_is_valid_in_both_and_schedule_is_gone_in_v4(objects: dict) -> None:
    cron = copy.deepcopy(objects["kolora-nightly.yaml"])
    cron["spec"]["schedule"] = "0 2 * * *"
    assert schema_errors(cron, "v3.7.18") == []  # deprecated there, still accepted
    assert any("schedule" in e for e in schema_errors(cron, "v4.1.2"))


def test_vendored_crds_are_what_sources_json_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import argo_schema

    for version in VERSIONS:
        for kind in argo_schema.CRD_FILES:
            assert b"kind: CustomResourceDefinition" in argo_schema.crd_bytes(version, kind)[:2000]
    monkeypatch.setattr(argo_schema, "_sources", lambda: {VERSIONS[0]: dict.fromkeys(argo_schema.CRD_FILES.values(), "0" * 64)})
    with pytest.raises(ValueError, match=r"SOURCES\.json says"):
        argo_schema.crd_bytes(VERSIONS[0], "Workflow")
