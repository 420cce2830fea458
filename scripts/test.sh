#!/usr/bin/env bash
# The whole test suite: Rust lint + tests, Python lint + types, pytest against the
# installed wheel, and a smoke run of the installed CLI.
# Usage: scripts/test.sh [VENV [PYTEST ARGS...]]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
if [ $# -gt 0 ]; then shift; fi  # the rest goes to pytest
VENV=$(cd "$VENV" && pwd)  # absolute: pytest runs from tests/
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Test caches live in a throw-away folder so runs do not depend on a user's cache.
export NNCIFT_CACHE=${NNCIFT_CACHE:-$(mktemp -d)}

echo "== cargo fmt / clippy / test"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --quiet

echo "== ruff / mypy"
"$VENV/bin/ruff" check python tests benches
"$VENV/bin/ruff" format --check python tests benches
"$VENV/bin/mypy" python/nncift
# The extension's stub against the built extension (names, signatures, final classes).
"$VENV/bin/python" -m mypy.stubtest nncift._core

echo "== pytest (against the installed wheel)"
# Run from a folder outside the source tree so `import nncift` finds the installed wheel.
(cd tests && "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" .)

echo "== CLI smoke run from the installed wheel"
smoke=$(mktemp -d)
"$VENV/bin/nncift" --version
"$VENV/bin/nncift" -q select --pool builtin:ifbench --limit 60 --budget 6 --out "$smoke/subset.jsonl"
test "$(wc -l < "$smoke/subset.jsonl")" -eq 6
test -s "$smoke/subset.manifest.json"
echo "smoke run ok"

echo "== clean installs: the lean wheel (no torch) and the sdist (scripts/check_dist.sh)"
if ! ls dist/nncift-*-abi3-*.whl dist/nncift-*.tar.gz >/dev/null 2>&1; then
  echo "dist/ has no wheel and sdist: run 'make dist' (make test does it through setup)" >&2
  exit 1
fi
scripts/check_dist.sh
