#!/usr/bin/env bash
# Make localhost/python:3.11-slim-bookworm on a machine that cannot pull python:3.11-slim-bookworm (no registry).
#
# python:3.11-slim-bookworm is Debian bookworm plus a recent CPython 3.11 built into /usr/local. This makes the same
# from a local Debian bookworm image (DEBIAN_IMAGE, default localhost/debian:bookworm, which
# ../shared/containers/setup-podman.sh imports) and this machine's CPython 3.11 (PYTHON, default python3.11 on PATH),
# copied to /usr/local with the shared libraries its modules need from bookworm's packages. Use it as the images'
# base:   images/standin-base.sh && make images BASE_IMAGE=localhost/python:3.11-slim-bookworm
#
# Why not Debian's own python3 (BASE_IMAGE=localhost/debian:bookworm)? It is 3.11.2, and the lock needs
# >= 3.11.5 (soupsieve 4.1.3, which Data-Juicer pulls in, says Requires-Python >=3.11.5): the filter image fails.
# Requirements: the host is Debian bookworm (same library versions), buildah or podman, CPython >= 3.11.5.
set -euo pipefail

PYTHON="${PYTHON:-python3.11}"
DEBIAN_IMAGE="${DEBIAN_IMAGE:-localhost/debian:bookworm}"
TARGET="${TARGET:-localhost/python:3.11-slim-bookworm}"

command -v "$PYTHON" >/dev/null || { echo "standin-base: $PYTHON not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11) and sys.version_info >= (3, 11, 5), sys.version' \
  || { echo "standin-base: need CPython 3.11.5 or later, $PYTHON is $("$PYTHON" -V)" >&2; exit 1; }
grep -q 'VERSION_CODENAME=bookworm' /etc/os-release \
  || { echo "standin-base: the host is not Debian bookworm; its Python's libraries would not match" >&2; exit 1; }
prefix="$("$PYTHON" -c 'import sys; print(sys.base_prefix)')"
version="$("$PYTHON" -c 'import platform; print(platform.python_version())')"

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/usr/local/bin" "$ctx/usr/local/lib"
cp -L "$prefix/bin/python3.11" "$ctx/usr/local/bin/python3.11"
cp -a "$prefix"/lib/libpython3.11.so* "$ctx/usr/local/lib/" 2>/dev/null || true  # absent for a static build
tar -C "$prefix/lib" -c --exclude='python3.11/site-packages/*' --exclude=python3.11/test --exclude='__pycache__' \
  --exclude=python3.11/idlelib --exclude=python3.11/tkinter --exclude=python3.11/turtledemo python3.11 \
  | tar -C "$ctx/usr/local/lib" -x
ln -s python3.11 "$ctx/usr/local/bin/python3"
ln -s python3 "$ctx/usr/local/bin/python"
cat > "$ctx/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
ENV LANG=C.UTF-8 PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates netbase tzdata \\
      libssl3 libffi8 libsqlite3-0 zlib1g libbz2-1.0 liblzma5 libncursesw6 libreadline8 libuuid1 libexpat1 \\
      libnsl2 libtirpc3 libgdbm6 \\
 && rm -rf /var/lib/apt/lists/*
COPY usr/local /usr/local
RUN ldconfig && python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, venv, ensurepip; print("python", __import__("sys").version)'
LABEL org.opencontainers.image.description="stand-in for python:3.11-slim-bookworm (CPython $version from the build host)"
EOF
if command -v buildah >/dev/null; then
  buildah bud --isolation "${BUILDAH_ISOLATION:-chroot}" --network host -t "$TARGET" -f "$ctx/Containerfile" "$ctx"
else
  podman build --network host -t "$TARGET" -f "$ctx/Containerfile" "$ctx"
fi
echo "standin-base: $TARGET (Debian bookworm + CPython $version in /usr/local)"
