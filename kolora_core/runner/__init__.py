"""The local runner: executes a rendered Argo WorkflowTemplate on one machine with Argo's semantics.

Modules: `template.py` + `fields.py` parse and validate the YAML into `spec.py`'s types; `expressions.py`
substitutes `{{...}}` and evaluates `when` / `depends` / retry expressions; `flags.py` checks the parameters
that feed config flags before anything runs; `local.py` is `run_workflow`; `dag.py` walks the DAG and the
exit handler, `loops.py` expands withItems/withParam/withSequence; `step.py` runs one node attempt by attempt
(fresh scratch dir, inputs from the store, outputs to it, also after a failure); `engine.py` is the engine
interface, `engines.py` the process engine and the registry, `containers.py` podman and docker; `collect.py`
copies the outputs to runs/<run-id>/ and `summary.py` writes what a developer reads at the end; `run_record.py`
keeps runs/<run-id>/run.json, from which `retry.py` reruns a failed or stopped run in place.
Clusters use Argo itself; this is the developer loop, and the tests' model of a cluster.

Where it still differs from Argo (v4.1.2), in one place:

* One node at a time: independent tasks and loop items run one after another (same outcome, slower), so
  `parallelism` and `synchronization` (mutexes, semaphores) have nothing to bound; the first failed node
  stops the run (Argo's failFast lets running siblings finish; locally there are none).
* No pods: scheduling and security fields (resources, tolerations, nodeSelector, securityContext incl.
  readOnlyRootFilesystem, volumes, serviceAccountName, deadlines and timeouts, podGC, ttlStrategy, metrics,
  archiveLogs) are accepted and ignored. Only /kolora exists: the process engine rewrites it to the node's
  scratch dir, the container engines mount it. Retry backoff is not waited for.
* Every non-zero exit is a Failed node: there are no pod Errors (eviction, deletion, image pulls), so
  `retryPolicy: OnError|OnTransientError` never retries and `lastRetry.status` is always Failed, its message empty.
* Substitution is stricter: an unknown `{{...}}` fails the task at once (Argo rejects most at submission),
  except `{{workflow.outputs.*}}`, which stays verbatim when no step exported it, as in Argo. Expression
  templates (`{{=...}}`), templateRef, steps/resource/suspend/http templates, DAGs other than the entrypoint
  (none is rendered) and artifact `from` other than `tasks.<t>.outputs.artifacts.<a>` are refused.
* Artifacts: the default repository only (S3 keys, raw data), tar.gz or `archive: none`; default keys are
  `<run-id>/<node>[-<attempt>]/<artifact>[.tgz]` (Argo: the repository's keyFormat with pod names); no GC.
* Secrets: `secretKeyRef` env values come from `RunOptions.secrets`; `kolora run` fills only the store Secret
  that the `kolora.dev/store-secret` annotation names, with the run's store keys. An optional ref without a
  value stays unset, but process-engine steps inherit this process's environment. On the embedded store every
  step also gets `KOLORA_STORE_FLAGS` (`--runs-dir DIR`: how the user's shell reaches that store once the run's
  port is gone), for the commands a step's error advises (`kolora_core/storage/address.py`).
* Ctrl-C, SIGTERM and SIGHUP (`kolora run`) stop the running step (SIGTERM to its process group, SIGKILL after
  10 s, then its outputs uploaded as after `argo stop`) and end the run without its exit handler (`argo stop`
  would run it, `argo terminate` would not); `{{workflow.failures}}` and lifecycle hooks other than `spec.onExit`
  do not exist here. A runner killed outright leaves the step to its guard (`kolora_core/step_guard.py`), which
  stops it the same way, without the upload.
* `kolora run --retry RUN` (`retry.py`) is `argo retry` of the whole run: no `--node-field-selector` or
  `--restart-successful`; a kept node whose outputs are gone from the store runs again (Argo would fail on the
  missing artifact); the run's template file and resolved configs must be the ones it recorded.
"""

from kolora_core.runner.local import RunOptions, RunResult, run_workflow

__all__ = ["RunOptions", "RunResult", "run_workflow"]
