"""Checks of the lean install (`pip install nncift`, no extras), run by scripts/check_dist.sh
inside a clean venv: what the core promises works, and what needs an extra says which one."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HEAVY = ("torch", "transformers", "sentence_transformers", "yaml", "ray")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nncift", *args], capture_output=True, text=True)


def main() -> None:
    missing = [m for m in HEAVY if importlib.util.find_spec(m) is not None]
    assert not missing, f"the lean install brought {missing}"

    import nncift

    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
    assert not loaded, loaded
    assert nncift_ok("--help").startswith("Usage: nncift")
    assert "Select a subset" in nncift_ok("select", "--help")

    # Selection through the Python API on the user's own embeddings.
    rng = np.random.default_rng(0)
    e = rng.standard_normal((2000, 32)).astype(np.float32)
    r = nncift.select(embeddings=e, budget=100)
    assert len(set(r.indices.tolist())) == 100
    q = rng.standard_normal((20, 32)).astype(np.float32)
    r = nncift.select(embeddings=e, query_embeddings=q, budget=100, objective="flmi")
    assert len(set(r.indices.tolist())) == 100

    # The CLI: a random subset of a packaged data set needs nothing more.
    out = Path("random.jsonl")
    nncift_ok("select", "--pool", "builtin:ifbench", "--limit", "50", "--method", "random",
              "--budget", "5", "--out", str(out))  # fmt: skip
    assert len(out.read_text().splitlines()) == 5

    # The CLI on embeddings the user brings: selection, and scoring with exported weights.
    np.save("pool.npy", rng.standard_normal((50, 16)).astype(np.float32))
    nncift_ok("select", "--pool", "builtin:ifbench", "--limit", "50", "--embeddings", "pool.npy",
              "--budget", "5", "--out", "own.jsonl")  # fmt: skip
    assert len(Path("own.jsonl").read_text().splitlines()) == 5
    from nncift.weights import NetworkWeights, write_network

    layers = [
        (rng.standard_normal((8, 33)).astype(np.float32), np.zeros(8, np.float32)),
        (rng.standard_normal((1, 8)).astype(np.float32), np.zeros(1, np.float32)),
    ]
    write_network("net.safetensors", NetworkWeights(
        layers, kind="pairwise", input_layout="paper", embedding_dim=16, embedding_model="own"
    ))  # fmt: skip
    nncift_ok("estimate", "--net", "net.safetensors", "--pool", "pool.npy", "--out", "k.npy")
    k = np.load("k.npy")
    assert k.shape == (50, 50) and np.isfinite(k).all()

    # What needs an extra says which one, in one line, without a traceback.
    for args, extra in [
        (("select", "--pool", "builtin:ifbench", "--limit", "50", "--budget", "5"), "embed"),
        (("select", "--pool", "builtin:chatterbot", "--method", "random", "--budget", "5"), "data"),
    ]:
        p = run_cli(*args, "--out", "x.jsonl")
        assert p.returncode != 0, (args, p.stdout)
        assert f"pip install 'nncift[{extra}]'" in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
        assert not Path("x.jsonl").exists()
    print("lean smoke ok:", json.dumps({"python": sys.version.split()[0]}))


def nncift_ok(*args: str) -> str:
    p = run_cli(*args)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


if __name__ == "__main__":
    main()
