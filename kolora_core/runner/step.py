"""One container/script node, run the way Argo runs its pods, attempt by attempt.

Each attempt is a new pod: a fresh, empty scratch directory (/kolora), every input artifact downloaded
again, the template substituted with this attempt's `pod.name`. After a FAILED attempt its output paths
are uploaded as Argo's wait container does (`RunContext.upload_failed_outputs`, on by default), to the
same keys, only adding objects; whatever an attempt leaves under an output path therefore reaches the
store, and the retry's inputs come from the store alone. Then `retryStrategy` decides. After the
successful attempt: output parameters from files (and `globalName` exports), output artifacts uploaded.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections import deque
from pathlib import Path, PurePosixPath

from kolora_core.errors import KoloraError
from kolora_core.runner.context import RunContext, StepFailed
from kolora_core.runner.engine import Network, StepRun, exit_at_stop
from kolora_core.runner.expressions import should_retry, substitute
from kolora_core.runner.records import ArtifactRef, NodeRecord
from kolora_core.runner.spec import ArtifactSpec, ParamSpec, TemplateSpec
from kolora_core.stages import CONTAINER_ROOT, stage_of
from kolora_core.storage.errors import ArtifactNotFound
from kolora_core.storage.s3 import clean_key

RESULT_LIMIT = 256 * 1024  # Argo keeps at most 256 kB of stdout as outputs.result
Source = ArtifactSpec | ArtifactRef | None
UNRESOLVED_GLOBALS = ("workflow.outputs.",)  # Argo leaves these verbatim when no step set them
INTERRUPTED = "interrupted"  # the message of a node that Ctrl-C or a stop signal ended


class StepExecutor:
    """Runs container and script templates for one run's DAG walk."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def run(self, node: NodeRecord, template: TemplateSpec, params: dict[str, str], sources: dict[str, Source]) -> None:
        """Run `node` to Succeeded, or mark it Failed and raise `StepFailed`; template errors raise `KoloraError`.

        Whatever ends it otherwise (a store that refuses its outputs after the container exited 0, Ctrl-C, a stop
        signal), the node is Failed with how long it ran and why, never left Pending at 0.0s in the summary."""
        started = time.monotonic()
        try:
            self._run(node, template, params, sources, started)
        except BaseException as exc:
            if node.phase not in ("Failed", "Succeeded"):  # `_fail` has recorded a StepFailed already; a step that
                # finished as it was stopped is Succeeded, and the interrupt goes on after it
                node.phase, node.duration = "Failed", time.monotonic() - started
                node.message = (str(exc) or type(exc).__name__) if isinstance(exc, Exception) else INTERRUPTED
            raise

    def _run(
        self, node: NodeRecord, template: TemplateSpec, params: dict[str, str], sources: dict[str, Source], started: float
    ) -> None:
        where = f"task '{node.display}'"
        scope = dict(self.ctx.global_scope)
        for spec in template.input_parameters:
            value = params.get(spec.name, spec.value if spec.value is not None else spec.default)
            if value is None:
                raise KoloraError(f"{where}: input parameter '{spec.name}' of template '{template.name}' has no value")
            if spec.enum and value not in spec.enum:
                raise KoloraError(f"{where}: input parameter '{spec.name}' is '{value}'; allowed: {', '.join(spec.enum)}")
            scope[f"inputs.parameters.{spec.name}"] = value
        for name in sorted(set(params) - {p.name for p in template.input_parameters}):
            self.ctx.result.warnings.append(f"{where}: argument '{name}' is not an input of template '{template.name}'; ignored")
        in_paths = {a.name: substitute(a.path or "", scope, where) for a in template.input_artifacts}
        out_paths = {a.name: substitute(a.path or "", scope, where) for a in template.output_artifacts}
        param_paths = {
            p.name: substitute(p.value_from_path, scope, where) for p in template.output_parameters if p.value_from_path
        }
        for path in [*in_paths.values(), *out_paths.values(), *param_paths.values()]:
            host_path(path, Path(), where)  # refuse paths outside /kolora before anything runs
        scope.update({f"inputs.artifacts.{k}.path": v for k, v in in_paths.items()})
        scope.update({f"outputs.artifacts.{k}.path": v for k, v in out_paths.items()})
        scope.update({f"outputs.parameters.{k}.path": v for k, v in param_paths.items()})
        node.log = self.ctx.run_dir / "logs" / f"{node.node}.log"
        pod, scratch, interrupt = self._attempts(node, template, scope, in_paths, out_paths, sources, started)
        try:
            self._succeed(node, template, scope, param_paths, out_paths, pod, scratch, started)
        finally:
            if interrupt is not None:  # the step exited 0 as Ctrl-C or a stop signal stopped it: the run stops now
                raise interrupt

    def _succeed(
        self,
        node: NodeRecord,
        template: TemplateSpec,
        scope: dict[str, str],
        param_paths: dict[str, str],
        out_paths: dict[str, str],
        pod: str,
        scratch: Path,
        started: float,
    ) -> None:
        """After the attempt that exited 0: output parameters read, output artifacts uploaded, the node Succeeded."""
        where = f"task '{node.display}'"
        node.exit_code = 0
        for spec in template.output_parameters:
            node.parameters[spec.name] = self._output_parameter(node, spec, param_paths, scratch, where, started)
            if spec.global_name:
                self.ctx.global_scope[f"workflow.outputs.parameters.{spec.global_name}"] = node.parameters[spec.name]
        pod_scope = {**scope, "pod.name": f"{self.ctx.run_id}-{pod}"}
        for art in template.output_artifacts:
            ref = self._store_output(node, art, out_paths[art.name], pod_scope, scratch, pod, started)
            if ref is not None:
                node.artifacts[art.name] = ref
        node.phase, node.duration = "Succeeded", time.monotonic() - started
        self.ctx.say(f"--- {node.display}: Succeeded in {node.duration:.1f}s")
        if not self.ctx.keep_work:
            for number in range(node.attempts):  # a retried run's earlier pods too
                shutil.rmtree(self.ctx.work_dir / pod_name(node, number), ignore_errors=True)
            node.scratch = None

    # --- attempts -------------------------------------------------------------------------------------------------

    def _attempts(
        self,
        node: NodeRecord,
        template: TemplateSpec,
        scope: dict[str, str],
        in_paths: dict[str, str],
        out_paths: dict[str, str],
        sources: dict[str, Source],
        started: float,
    ) -> tuple[str, Path, BaseException | None]:
        """Attempts until one exits 0 (returns its pod name and scratch dir) or retryStrategy gives up (`StepFailed`).

        Pods are numbered on from the node's earlier attempts (`NodeRecord.attempts`: those of a run being retried),
        so a new pod never takes an old one's scratch dir or default keys. Ctrl-C or a stop signal during an attempt:
        the engine has stopped the step, whose outputs (what it saved) are uploaded, then the interrupt goes on. If
        the stopped step exited 0 (it finished its work, maybe within the grace SIGTERM gave it), it succeeded: the
        interrupt is returned third, for the caller to raise once the node is Succeeded with its outputs."""
        where = f"task '{node.display}'"
        attempt = 0
        while True:
            pod = pod_name(node, node.attempts)
            scratch = self.ctx.work_dir / pod
            node.scratch = scratch
            node.attempts += 1
            try:
                code, seconds = self._attempt(node, template, pod, dict(scope), in_paths, sources, attempt, started)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    raise
                stopped_code = exit_at_stop(exc)
                if stopped_code == 0:
                    self._log(node, "--- kolora run: the step exited 0 as it was stopped: it finished, its outputs are kept")
                    return pod, scratch, exc
                if stopped_code is not None:
                    node.exit_code = stopped_code
                if self.ctx.upload_failed_outputs:
                    self._upload_after_interrupt(node, template, out_paths, scope, scratch, pod)
                raise
            if code == 0:
                return pod, scratch, None
            node.exit_code = code
            if self.ctx.upload_failed_outputs:
                self._upload_after_failure(node, template, out_paths, scope, scratch, pod)
            why = f"exit {code}" if code > 0 else f"killed by {signal_name(-code)}"
            retry = attempt < template.retry_limit and should_retry(
                template.retry_policy, template.retry_expression, code, seconds, where
            )
            if not retry:
                self._fail(node, why, started)
            attempt += 1
            self._log(node, f"--- kolora run: {why}; retry {attempt}/{template.retry_limit} (retryStrategy of {template.name})")

    def _attempt(
        self,
        node: NodeRecord,
        template: TemplateSpec,
        pod: str,
        scope: dict[str, str],
        in_paths: dict[str, str],
        sources: dict[str, Source],
        attempt: int,
        started: float,
    ) -> tuple[int, float]:
        """A new pod: fresh scratch dir, inputs downloaded again, the container run; returns (exit code, seconds)."""
        where = f"task '{node.display}'"
        scope["pod.name"] = scope["node.name"] = f"{self.ctx.run_id}-{pod}"
        container = template.container
        assert container is not None
        secrets = self._secrets(template, where)  # a missing Secret fails before anything is downloaded
        keep = UNRESOLVED_GLOBALS
        argv = [substitute(a, scope, where, unresolved=keep) for a in (*container.command, *container.args)]
        env = {**self.ctx.step_env, **{k: substitute(v, scope, where, unresolved=keep) for k, v in container.env}}
        script = substitute(container.source, scope, where, unresolved=keep) if container.source is not None else None
        scratch = self.ctx.work_dir / pod
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        again = f" (attempt {attempt + 1}/{template.retry_limit + 1})" if attempt else ""
        self.ctx.say(f"--- {node.display}: running (template {template.name}){again}")
        for art in template.input_artifacts:
            self._load_input(node, art, in_paths[art.name], sources.get(art.name), scratch, scope, started)
        stage = stage_of(argv)  # what the engine may give the step: GPUs to GPU stages, a network to downloads
        network: Network = "host" if stage is None else ("default" if stage.downloads else "none")
        step = StepRun(
            node=node.node,
            image=substitute(container.image, scope, where),
            argv=tuple(argv),
            env=env,
            scratch=scratch,
            script=script,
            gpu=stage is not None and stage.gpu,
            network=network,
            secrets=secrets,
            run_lock_fd=self.ctx.run_lock_fd,
        )
        began = time.monotonic()
        code = self._execute(node, step)
        return code, time.monotonic() - began

    def _secrets(self, template: TemplateSpec, where: str) -> dict[str, str]:
        """Env values from secretKeyRef, out of the run's secrets map; an optional ref that resolves to nothing stays unset."""
        assert template.container is not None
        values: dict[str, str] = {}
        for name, ref in template.container.secret_env:
            value = self.ctx.secrets.get(ref.name, {}).get(ref.key)
            if value is not None:
                values[name] = value
            elif not ref.optional:
                raise KoloraError(
                    f"{where}: env {name} needs key '{ref.key}' of Secret '{ref.name}', which kolora run does not have "
                    "(it fills only the store Secret named by the kolora.dev/store-secret annotation)"
                )
        return values

    def _execute(self, node: NodeRecord, step: StepRun) -> int:
        """Run the container once; the tail of its stdout becomes `outputs.result`."""
        stdout: deque[str] = deque()
        size = 0
        assert node.log is not None
        with node.log.open("a", encoding="utf-8") as log:

            def sink(stream: str, line: str) -> None:
                nonlocal size
                with self.ctx.lock:
                    log.write(line + "\n")
                    log.flush()
                    self.ctx.show(f"[{node.node}] {line}")
                    if stream == "stdout":
                        stdout.append(line)
                        size += len(line) + 1
                        while size > RESULT_LIMIT and stdout:
                            size -= len(stdout.popleft()) + 1

            code = self.ctx.engine.run(step, sink)
        node.result = "\n".join(stdout).strip()
        return code

    def _log(self, node: NodeRecord, line: str) -> None:
        assert node.log is not None
        with self.ctx.lock, node.log.open("a", encoding="utf-8") as log:
            log.write(line + "\n")
            self.ctx.show(f"[{node.node}] {line}")

    def _fail(self, node: NodeRecord, message: str, started: float) -> None:
        node.phase, node.message, node.duration = "Failed", message, time.monotonic() - started
        self.ctx.result.failed = node
        self.ctx.say(f"--- {node.display}: Failed ({message})")
        raise StepFailed(message)

    # --- artifacts and parameters --------------------------------------------------------------------------------

    def _load_input(
        self, node: NodeRecord, art: ArtifactSpec, path: str, arg: Source, scratch: Path, scope: dict[str, str], started: float
    ) -> None:
        """Put one input artifact at its path: the task's argument wins over the template's own source."""
        where = f"task '{node.display}'"
        source: Source = arg
        if isinstance(arg, ArtifactSpec) and not arg.has_source:
            source = None
        if source is None and art.has_source:
            source = ArtifactSpec(
                name=art.name,
                raw_data=substitute(art.raw_data, scope, where) if art.raw_data is not None else None,
                s3_key=substitute(art.s3_key, scope, where) if art.s3_key is not None else None,
            )
        optional = art.optional or (isinstance(arg, ArtifactSpec) and arg.optional)
        if source is None:
            if optional:
                return
            raise KoloraError(f"{where}: input artifact '{art.name}' has no source: pass it in the task's arguments.artifacts")
        host = host_path(path, scratch, where)
        if isinstance(source, ArtifactSpec) and source.raw_data is not None:
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text(source.raw_data, encoding="utf-8")
            return
        key = source.key if isinstance(source, ArtifactRef) else source.s3_key or ""
        try:
            clean_key(key)
        except KoloraError:  # '' is no source to Argo (HasLocationOrKey); `s3://b/x`, `a//b`, `../x` find nothing there
            if optional:
                return
            if not key.strip().strip("/"):
                message = f"input artifact '{art.name}' has an empty key: set the parameter that names it"
            else:
                message = f"input artifact '{art.name}': no object can have the key {key!r}"
            self._fail(node, message, started)
        try:
            self.ctx.store.download(key, host)
        except ArtifactNotFound as exc:
            if optional:
                return
            self._fail(node, f"input artifact '{art.name}': {exc}", started)

    def _output_parameter(
        self, node: NodeRecord, spec: ParamSpec, paths: dict[str, str], scratch: Path, where: str, started: float
    ) -> str:
        if spec.value_from_path is None:
            return spec.value or ""
        host = host_path(paths[spec.name], scratch, where)
        if host.is_file():
            return host.read_text(encoding="utf-8", errors="replace").strip()
        if spec.value_from_default is not None:
            return spec.value_from_default
        self._fail(node, f"output parameter '{spec.name}': {paths[spec.name]} was not written and has no default", started)
        return ""

    def _key(self, art: ArtifactSpec, scope: dict[str, str], pod: str, where: str) -> str:
        """The template's key, or Argo's default `<workflow>/<pod>/<artifact>[.tgz]`: a retry is another pod."""
        if art.s3_key is not None:
            return substitute(art.s3_key, scope, where).strip("/")
        return f"{self.ctx.run_id}/{pod}/{art.name}" + (".tgz" if art.archive else "")

    def _store_output(
        self, node: NodeRecord, art: ArtifactSpec, path: str, scope: dict[str, str], scratch: Path, pod: str, started: float
    ) -> ArtifactRef | None:
        where = f"task '{node.display}'"
        host = host_path(path, scratch, where)
        if not host.exists():
            if art.optional:
                return None
            self._fail(node, f"output artifact '{art.name}': {path} was not written", started)
        key = self._key(art, scope, pod, where)
        self.ctx.uploaded += self.ctx.store.upload(host, key, archive=art.archive)
        return ArtifactRef(key=key, archive=art.archive, path=path)

    def _upload_after_interrupt(
        self, node: NodeRecord, template: TemplateSpec, paths: dict[str, str], scope: dict[str, str], scratch: Path, pod: str
    ) -> None:
        """After `argo stop` Argo's wait container uploads the stopped pod's outputs: what the step saved at SIGTERM
        (train's checkpoint) reaches the store, where `kolora run --retry` finds it. A second Ctrl-C skips it; a store
        that fails it is one log line, the interrupt stays the run's outcome."""
        try:
            self._upload_after_failure(node, template, paths, scope, scratch, pod, "the stopped step's outputs")
        except (KoloraError, OSError) as exc:
            self._log(node, f"--- kolora run: the stopped step's outputs were not uploaded: {exc}")

    def _upload_after_failure(
        self,
        node: NodeRecord,
        template: TemplateSpec,
        paths: dict[str, str],
        scope: dict[str, str],
        scratch: Path,
        pod: str,
        what: str = "the failed attempt's outputs",
    ) -> None:
        """What Argo's wait container does after the main container failed: upload every output path that exists."""
        where = f"task '{node.display}'"
        pod_scope = {**scope, "pod.name": f"{self.ctx.run_id}-{pod}"}
        sent: list[str] = []
        for art in template.output_artifacts:
            host = host_path(paths[art.name], scratch, where)
            if not host.exists():
                continue
            keys = self.ctx.store.upload(host, self._key(art, pod_scope, pod, where), archive=art.archive)
            self.ctx.uploaded += keys
            sent.append(f"{art.name} ({len(keys)} object{'s' if len(keys) != 1 else ''})")
        if sent:
            self._log(node, f"--- kolora run: uploaded {what}, as Argo does: {', '.join(sent)}")


def pod_name(node: NodeRecord, attempt: int) -> str:
    """Each attempt is a pod of its own (its scratch dir, its default artifact keys): `node`, then `node-1`, ..."""
    return node.node if attempt == 0 else f"{node.node}-{attempt}"


def host_path(path: str, scratch: Path, where: str) -> Path:
    """The host file behind a container path; only /kolora is mounted, as in the images.

    Not `kolora_core.relative_names`' rule on purpose: this is an absolute path from kolora's own templates, read as
    the container's kernel reads it (`/kolora//a` and `/kolora/./a` are `/kolora/a` there too), so it is normalised
    and only kept under /kolora, not refused for a doubled '/' or a '.'."""
    pure = PurePosixPath(path)
    root = PurePosixPath(CONTAINER_ROOT)
    if not pure.is_absolute() or (pure != root and root not in pure.parents) or ".." in pure.parts:
        raise KoloraError(f"{where}: path '{path}' is outside {CONTAINER_ROOT}; the local runner maps only {CONTAINER_ROOT}")
    return scratch.joinpath(*pure.relative_to(root).parts)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
