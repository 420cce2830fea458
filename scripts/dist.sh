#!/usr/bin/env bash
# Build the distributable files into dist/: the portable abi3 wheel (manylinux2014, i.e.
# glibc >= 2.17: Ubuntu 18.04+, Debian 10+, RHEL/Rocky 7+) and the sdist.
#
# Usage: scripts/dist.sh [VENV]   (default .venv; created when missing)
# The wheel is linked against glibc 2.17 by cross-compiling with zig (`ziglang` from PyPI), so
# it does not depend on this machine's newer glibc; `auditwheel show` checks the result.
# Only x86_64 is built: other architectures need toolchains these machines cannot download.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "maturin>=1.7,<2" "ziglang==0.17.1" "auditwheel>=6"

rm -rf dist
# maturin finds zig as `python -m ziglang` on PATH: put the venv first.
PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" build --release --zig --compatibility manylinux2014 --out dist
"$VENV/bin/maturin" sdist --out dist

wheel=$(ls dist/nncift-*-abi3-*.whl)
report=$("$VENV/bin/auditwheel" show "$wheel")
if ! grep -q '"manylinux_2_17_x86_64"' <<<"$report"; then
  echo "dist.sh: $wheel is not manylinux2014 (glibc 2.17):" >&2
  echo "$report" >&2
  exit 1
fi
echo "dist.sh: built $wheel (manylinux2014 / manylinux_2_17_x86_64) and $(ls dist/nncift-*.tar.gz)"
