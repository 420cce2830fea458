#!/usr/bin/env bash
# Install checks on clean virtual environments, from the files `scripts/dist.sh` put in dist/:
#   1. the wheel with the lean core only (`pip install nncift`: no torch, no models): import,
#      --help, selection through the CLI and the Python API, one-line errors naming the extra;
#   2. the sdist, built from source (needs only a Rust toolchain), with a smoke test.
# Usage: scripts/check_dist.sh     (run by scripts/test.sh after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wheel=$(ls dist/nncift-*-abi3-*.whl)
sdist=$(ls dist/nncift-*.tar.gz)
export HF_HUB_OFFLINE=1

echo "== lean install of $(basename "$wheel") in a clean venv (no torch)"
"$PY" -m venv "$work/lean"
"$work/lean/bin/python" -m pip install -q --upgrade pip
"$work/lean/bin/python" -m pip install -q "$wheel"
(cd "$work" && PATH="$work/lean/bin:$PATH" python "$OLDPWD/scripts/lean_smoke.py")

echo "== sdist $(basename "$sdist") built from source in a clean venv"
"$PY" -m venv "$work/src"
"$work/src/bin/python" -m pip install -q --upgrade pip
"$work/src/bin/python" -m pip install -q "$sdist"
(cd "$work" && "$work/src/bin/nncift" --version \
  && "$work/src/bin/python" -c "
import numpy as np, nncift
e = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
r = nncift.select(embeddings=e, budget=25)
assert len(set(r.indices.tolist())) == 25, r
print('sdist smoke ok: selected', len(r.indices), 'of 500')
")
