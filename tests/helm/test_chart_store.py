"""The release store promote and champion use follows the chart's `s3.*` values: what `kolora publish` would call.

For each value set the chart's WorkflowTemplate is rendered, the promote (and champion) container's arguments are
substituted with the template's parameter defaults as Argo would, its env resolved from the Secrets the cluster
would hold (secretKeyRef, optional), and the result is handed to the real `kolora publish` argument parser and
the real S3 client construction (boto3, no request sent): the endpoint URL, region and bucket it would talk to,
and which Secret and keys its credentials come from.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest

from kolora_core.cli import publish as cli_publish
from kolora_core.storage.s3 import S3Settings, make_client
from tests.helm.chart import by_kind, ci_values

# What the cluster holds: Secret name -> data. The quick-start's own Secret, the chart's, an existing AWS one.
CLUSTER_SECRETS = {
    "my-minio-cred": {"accesskey": "admin", "secretkey": "password"},
    "kolora-s3": {"accesskey": "kolora-smoke", "secretkey": "kolora-smoke-secret"},
    "kolora-aws": {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrEXAMPLEKEY"},
}


def promote_call(values: dict[str, Any], step: str = "promote") -> tuple[argparse.Namespace, dict[str, str], dict[str, tuple]]:
    """(the parsed `kolora publish` args, the env the container gets, env var -> (secret, key)) of the chart's step."""
    (template,) = by_kind(values)["WorkflowTemplate"]
    defaults = {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}
    container = next(t for t in template["spec"]["templates"] if t["name"] == step)["container"]
    args = [re.sub(r"\{\{workflow\.parameters\.([\w-]+)\}\}", lambda m: defaults[m[1]], a) for a in container["args"]]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    env = {
        name: CLUSTER_SECRETS[ref["name"]][ref["key"]]
        for name, ref in refs.items()
        if ref["key"] in CLUSTER_SECRETS.get(ref["name"], {})
    }
    parser = argparse.ArgumentParser(prog="kolora")
    cli_publish.register(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args(["publish", *args]) if step == "promote" else None
    return parsed, env, {n: (r["name"], r["key"]) for n, r in refs.items()}


def client_for(args: argparse.Namespace, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[S3Settings, Any]:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = S3Settings.from_env(args.s3_endpoint, bucket=args.bucket, region=args.region)  # what _publish_command does
    return settings, make_client(settings)


CASES = {
    # name: (values, endpoint URL, region, bucket, Secret, (id key, secret key))
    "default": ({}, "http://minio:9000", "us-east-1", "my-bucket", "my-minio-cred", ("accesskey", "secretkey")),
    "ci/quick-start": (
        ci_values()["quick-start"], "http://minio:9000", "us-east-1", "my-bucket", "my-minio-cred", ("accesskey", "secretkey"),
    ),
    "ci/aws-s3": (
        ci_values()["aws-s3"], "https://s3.eu-central-1.amazonaws.com", "eu-central-1", "acme-kolora", "kolora-aws",
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ),
    "ci/kind": (ci_values()["kind"], "http://seaweedfs:8333", "us-east-1", "kolora", "kolora-s3", ("accesskey", "secretkey")),
    "ci/s3": (ci_values()["s3"], "http://minio.minio:9000", "us-east-1", "kolora", "kolora-s3", ("accesskey", "secretkey")),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_promote_targets_the_store_of_the_values(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    values, url, region, bucket, secret, keys = CASES[case]
    args, env, refs = promote_call(values)
    assert refs == {"AWS_ACCESS_KEY_ID": (secret, keys[0]), "AWS_SECRET_ACCESS_KEY": (secret, keys[1])}
    assert set(env) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, "the Secret the values name holds those keys"
    settings, client = client_for(args, env, monkeypatch)
    assert client.meta.endpoint_url == url and client.meta.region_name == region and settings.bucket == bucket
    assert settings.access_key_id == CLUSTER_SECRETS[secret][keys[0]]
    assert str(args.release) == "/kolora/inputs/release" and args.prefix == "models"
    _, _, champion_refs = promote_call(values, "champion")
    assert champion_refs == refs, "champion reads the store promote writes"
    (template,) = by_kind(values)["WorkflowTemplate"]
    assert template["metadata"]["annotations"]["kolora.dev/store-secret"] == f"{secret}:{keys[0]}:{keys[1]}"


def test_aws_gets_no_endpoint_and_virtual_hosted_addressing(monkeypatch: pytest.MonkeyPatch) -> None:
    args, env, _ = promote_call(ci_values()["aws-s3"])
    assert args.s3_endpoint == "" and args.region == "eu-central-1"  # `--s3-endpoint ''`: boto3's endpoint of the region
    settings, client = client_for(args, env, monkeypatch)
    assert settings.aws and settings.label == "AWS S3 (eu-central-1)"
    assert client.meta.config.s3 == {"addressing_style": "auto"}
    # a regional AWS endpoint in the values means the same
    args, env, _ = promote_call(
        {**ci_values()["aws-s3"], "s3": {**ci_values()["aws-s3"]["s3"], "endpoint": "s3.eu-central-1.amazonaws.com"}}
    )
    assert args.s3_endpoint == ""


def test_sdk_credentials_give_the_steps_no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """IRSA / workload identity: no Secret refs at all (boto3's chain finds the role), no store-secret annotation."""
    values = ci_values()["s3-sdk-creds"]
    args, env, refs = promote_call(values)
    assert refs == {} and env == {}
    (template,) = by_kind(values)["WorkflowTemplate"]
    assert "kolora.dev/store-secret" not in template["metadata"]["annotations"]
    _, client = client_for(args, env, monkeypatch)
    assert client.meta.endpoint_url == "https://s3.amazonaws.com" and args.bucket == "my-kolora-runs"  # boto3: us-east-1


def test_a_url_that_is_not_a_url_is_refused_in_one_line() -> None:
    from kolora_core.errors import KoloraError

    with pytest.raises(KoloraError, match="is not a URL"):
        make_client(S3Settings("minio:9000"))
