"""The workflow's steps that are not stages, in one place: `champion`, `promote` and the exit handler `notify`.

A stage (kolora_core.stages) computes from its input directories and never sees the store or Argo. These
steps are the workflow's own plumbing, each one `kolora` CLI command in the evaluate image (the image that
ships boto3):

- `champion` (before check-changes and evaluate): `kolora champion` reads `<publish-prefix>/<name>/latest.json`
  in the release store and writes the champion's comparison files (no LoRA) as the committed output
  `champion`, or `champion.json` = {"status": "none"} on a model's first run. A read: retried on any failure.
- `promote` (after a Succeeded publish): `kolora publish` uploads publish's release to
  `<publish-prefix>/<name>/<version>/` and moves latest.json by compare-and-swap. Idempotent for one release
  (the same version with the same content is accepted again): retried on any failure.
- `notify` (`onExit`, every run): `kolora notify` POSTs the run's status, training decision, gate and mean
  aesthetic to the `notify-url` parameter; '' (the default) sends nothing. A webhook that does not answer is
  a warning, never a failed run.

The release store is the one the workflow parameters name (`s3-endpoint`, '' = AWS S3 of `s3-region`;
`s3-bucket`; `s3-region`); its keys come only from the Secret `RenderOptions.s3_secret` (optional refs: with
IRSA or workload identity there is none), also named in the workflow annotation `STORE_SECRET_ANNOTATION` for
the local runner, which fills that Secret with its own store's keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from kolora_core.stages import CONFIG_PATH, CONTAINER_ROOT

STORE_SECRET_ANNOTATION = "kolora.dev/store-secret"  # "<secret>:<access key id key>:<secret access key key>"
STORE_ARGS = (
    "--s3-endpoint",
    "{{workflow.parameters.s3-endpoint}}",
    "--bucket",
    "{{workflow.parameters.s3-bucket}}",
    "--region",
    "{{workflow.parameters.s3-region}}",
    "--prefix",
    "{{workflow.parameters.publish-prefix}}",
)
STORE_ENV = (("AWS_ACCESS_KEY_ID", "access"), ("AWS_SECRET_ACCESS_KEY", "secret"))  # env var -> which key of the Secret


@dataclass(frozen=True)
class Step:
    """A container step of the workflow that is not a stage."""

    name: str
    summary: str
    args: tuple[str, ...]  # after `command`
    inputs: tuple[str, ...] = ()  # artifacts at /kolora/inputs/<name>
    outputs: tuple[str, ...] = ()  # artifacts at /kolora/outputs/<name>
    store: bool = False  # gets the release store's keys (env from the store Secret)
    config: bool = False  # gets the run config (the raw `config` artifact), for `--profile`/`--config`
    image: str = "evaluate"
    retry_any: bool = True  # retried on any failure but exit 2 (idempotent); False: only when the pod itself failed

    @property
    def command(self) -> list[str]:
        return ["python", "-m", "kolora_core.cli", self.name if self.name != "promote" else "publish"]

    def input_path(self, artifact: str) -> str:
        return f"{CONTAINER_ROOT}/inputs/{artifact}"

    def output_path(self, artifact: str) -> str:
        return f"{CONTAINER_ROOT}/outputs/{artifact}"


CHAMPION = Step(
    "champion",
    "the promoted release of this model (latest.json) for the comparison, or none",
    args=(
        *STORE_ARGS,
        "--name",
        "{{workflow.parameters.name}}",
        "--profile",
        "{{workflow.parameters.profile}}",
        "--config",
        CONFIG_PATH,
        "--out",
        f"{CONTAINER_ROOT}/outputs/champion",
    ),
    outputs=("champion",),
    store=True,
    config=True,
)
PROMOTE = Step(
    "promote",
    "upload publish's release into the release store and point latest.json at it",
    args=("--release", f"{CONTAINER_ROOT}/inputs/release", *STORE_ARGS),
    inputs=("release",),
    store=True,
)
# Argo leaves a global output that was never set (evaluate did not run) as the literal `{{...}}`: notify reads that as unset.
NOTIFY = Step(
    "notify",
    "POST the run's outcome to the notify-url webhook ('' = nothing sent)",
    args=(
        "--url",
        "{{workflow.parameters.notify-url}}",
        "--workflow",
        "{{workflow.name}}",
        "--status",
        "{{workflow.status}}",
        "--training",
        "{{workflow.outputs.parameters.training}}",
        "--on-unchanged",
        "{{workflow.parameters.on-unchanged}}",
        "--gate",
        "{{workflow.outputs.parameters.gate}}",
        "--mean-aesthetic",
        "{{workflow.outputs.parameters.mean-aesthetic}}",
    ),
    retry_any=False,  # it retries the POST itself and never fails on the webhook's account
)
STEPS: dict[str, Step] = {s.name: s for s in (CHAMPION, PROMOTE, NOTIFY)}
EXIT_HANDLER = NOTIFY.name
# Stage output parameters exported as workflow outputs (globalName) for the exit handler and the metrics.
GLOBAL_OUTPUTS = ("training", "gate", "mean-aesthetic")
