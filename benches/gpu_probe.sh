#!/usr/bin/env bash
# The downstream probe rerun larger on a GPU machine (issue 17): 4,000 pool items, 600 test
# items, 3 LoRA epochs at 512 tokens, every row (NN-CIFT included) at 5 / 10 / 20%, 3 seeds
# (benches/reproduce/config.py, PROBE_GPU). Resumable: every fine-tune is cached by the hash
# of its subset and settings, so a run cut by a time limit continues where it stopped.
#
#   benches/gpu_probe.sh [CACHE]        # default CACHE: .nncift-cache/repro
#
# Needs a Python with nncift[all] installed (`make setup`) and CUDA. Copy CACHE/gpu/probe.json
# back into this machine's CACHE/gpu/: the next `python -m benches.reproduce` reports it as a
# separate table. The time limit (seconds, default 3000) leaves room to copy the results.
set -euo pipefail
cache="${1:-.nncift-cache/repro}"
py="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script is for a GPU machine')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout --signal=INT "${NNCIFT_GPU_LIMIT:-3000}" \
    "$py" -m benches.reproduce --probe-only --gpu --cache "$cache" --threads 4 || rc=$?
if [ -f "$cache/gpu/probe.json" ]; then
    echo "results: $cache/gpu/probe.json"
else
    echo "no results yet (rc=${rc:-0}); rerun to continue from the cached fine-tunes" >&2
fi
exit "${rc:-0}"
