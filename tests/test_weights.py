"""The weight-file contract (docs/weights.md): Python writer/reader and the Rust loader agree,
and every broken file is refused with a message naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nncift import NnciftError, PairwiseScorer
from nncift.weights import NetworkWeights, WeightFileError, read_network, write_network
from safetensors.numpy import load_file, save_file

D = 6


def _layers(
    rng: np.random.Generator, in0: int, hidden: list[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for h in [*hidden, 1]:
        out.append(
            (
                rng.standard_normal((h, in0)).astype(np.float32),
                rng.standard_normal(h).astype(np.float32),
            )
        )
        in0 = h
    return out


def _write_good(path: Path, **kw: object) -> None:
    rng = np.random.default_rng(0)
    args: dict = dict(
        kind="pairwise",
        input_layout="paper",
        embedding_dim=D,
        embedding_model="sentence-transformers/all-MiniLM-L6-v2",
        label_scale=2.0,
        label_offset=-0.5,
        label_name="delift-se",
    )
    args.update(kw)
    write_network(path, NetworkWeights(_layers(rng, 2 * D + 1, [5]), **args))


def test_round_trip_python_and_rust(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    layers = _layers(rng, 2 * D + 1, [7, 3])
    u, v = rng.standard_normal((2, D)), rng.standard_normal((2, D))
    path = tmp_path / "net.safetensors"
    write_network(
        path,
        NetworkWeights(
            layers,
            kind="pairwise",
            input_layout="paper",
            embedding_dim=D,
            embedding_model="m",
            label_scale=0.25,
            label_offset=1.5,
            cosine_weight=0.5,
            bilinear=(u, v),
            label_name="less",
            extra_metadata={"trained_on": "x"},
        ),
    )
    net = read_network(path)
    assert net.hidden_sizes == [7, 3]
    assert net.label_scale == 0.25 and net.label_offset == 1.5
    assert net.cosine_weight == pytest.approx(0.5)
    assert net.bilinear is not None and net.bilinear[0].shape == (2, D)
    assert net.extra_metadata == {"trained_on": "x"}
    for (w, b), (w2, b2) in zip(layers, net.layers, strict=True):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    meta = PairwiseScorer.load(path).metadata
    assert meta["format_version"] == "1"
    assert json.loads(meta["hidden_sizes"]) == [7, 3]
    s = PairwiseScorer.load(path)
    assert (s.kind, s.input_layout, s.embedding_dim, s.embedding_model) == (
        "pairwise",
        "paper",
        D,
        "m",
    )
    assert (s.label_scale, s.label_offset, s.label_name, s.bilinear_rank) == (0.25, 1.5, "less", 2)


def test_write_refuses_inconsistent_networks(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    p = tmp_path / "x.safetensors"
    with pytest.raises(WeightFileError, match="input columns"):
        write_network(
            p,
            NetworkWeights(
                _layers(rng, 2 * D, [4]),
                kind="pairwise",
                input_layout="paper",
                embedding_dim=D,
                embedding_model="m",
            ),
        )
    with pytest.raises(WeightFileError, match="does not agree"):
        write_network(
            p,
            NetworkWeights(
                _layers(rng, D, [4]),
                kind="pairwise",
                input_layout="pointwise",
                embedding_dim=D,
                embedding_model="m",
            ),
        )
    bad = _layers(rng, 2 * D + 1, [4])
    bad[0][0][0, 0] = np.nan
    with pytest.raises(WeightFileError, match="NaN"):
        write_network(
            p,
            NetworkWeights(
                bad, kind="pairwise", input_layout="paper", embedding_dim=D, embedding_model="m"
            ),
        )
    with pytest.raises(WeightFileError, match="1 to 5"):
        write_network(
            p,
            NetworkWeights(
                _layers(rng, 2 * D + 1, [2, 2, 2, 2, 2]),
                kind="pairwise",
                input_layout="paper",
                embedding_dim=D,
                embedding_model="m",
            ),
        )
    assert not p.exists()  # nothing half-written


def _rewrite(
    src: Path,
    dst: Path,
    *,
    tensors: dict | None = None,
    meta: dict | None = None,
    drop: tuple[str, ...] = (),
    drop_meta: tuple[str, ...] = (),
) -> Path:
    from safetensors import safe_open

    with safe_open(str(src), framework="numpy") as fh:
        m = dict(fh.metadata())
    t = load_file(str(src))
    t.update(tensors or {})
    m.update(meta or {})
    for k in drop:
        t.pop(k)
    for k in drop_meta:
        m.pop(k)
    save_file(t, str(dst), metadata=m)
    return dst


CASES = [
    ({"meta": {"format_version": "2"}}, "unknown format_version"),
    ({"meta": {"format": "pytorch"}}, "format"),
    ({"drop_meta": ("embedding_dim",)}, "embedding_dim"),
    ({"drop_meta": ("label_scale",)}, "label_scale"),
    ({"meta": {"embedding_dim": "7"}}, "input columns"),
    ({"meta": {"kind": "pointwise"}}, "does not agree"),
    ({"meta": {"input_layout": "weird"}}, "input_layout"),
    ({"meta": {"cosine_feature": "maybe"}}, "cosine_feature"),
    ({"drop": ("layers.1.bias",)}, "layers.1.bias"),
    ({"tensors": {"layers.2.weight": np.zeros((1, 1), np.float32)}}, "layers"),
    ({"tensors": {"extra": np.zeros(1, np.float32)}}, "unknown tensor"),
    (
        {"tensors": {"layers.0.bias": np.array([np.inf, 0, 0, 0, 0], np.float32)}},
        "(?i)non-finite|NaN or infinite",
    ),
    ({"tensors": {"layers.0.bias": np.zeros(5, np.float64)}}, "(?i)dtype"),
    ({"tensors": {"bilinear.u": np.zeros((2, D), np.float32)}}, "together"),
    ({"tensors": {"output.cosine_weight": np.zeros(2, np.float32)}}, r"\(1,\)"),
]


@pytest.mark.parametrize(("change", "message"), CASES)
def test_broken_files_are_refused_by_both_readers(
    tmp_path: Path, change: dict, message: str
) -> None:
    good = tmp_path / "good.safetensors"
    _write_good(good)
    bad = _rewrite(good, tmp_path / "bad.safetensors", **change)
    with pytest.raises(WeightFileError, match=message):
        read_network(bad)
    with pytest.raises(NnciftError, match=message) as info:
        PairwiseScorer.load(bad)
    assert str(bad) in str(info.value)


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    _write_good(good)
    data = good.read_bytes()
    for cut in (0, 7, 30, len(data) // 2, len(data) - 3):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        with pytest.raises(NnciftError):
            PairwiseScorer.load(p)
        with pytest.raises(WeightFileError):
            read_network(p)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04\x95pickle? no thanks" * 10)
    with pytest.raises(NnciftError, match="safetensors"):
        PairwiseScorer.load(junk)
    with pytest.raises(NnciftError, match="cannot read"):
        PairwiseScorer.load(tmp_path / "missing.safetensors")
    with pytest.raises(WeightFileError, match="no such"):
        read_network(tmp_path / "missing.safetensors")


def test_network_weights_is_the_one_carrier(tmp_path: Path) -> None:
    """Built in memory, the network scores like its file does, and a bad one is refused by
    the Rust validator with the same message whichever way it comes in."""
    rng = np.random.default_rng(5)
    net = NetworkWeights(
        _layers(rng, 2 * D + 1, [4]),
        kind="pairwise",
        input_layout="paper",
        embedding_dim=D,
        embedding_model="m",
        extra_metadata={"trained_on": "x"},
    )
    path = tmp_path / "net.safetensors"
    write_network(path, net)
    rows = rng.standard_normal((5, D)).astype(np.float32)
    from_file = PairwiseScorer.load(path)
    in_memory = PairwiseScorer.from_network(net)
    np.testing.assert_array_equal(from_file.score(rows, rows), in_memory.score(rows, rows))
    assert in_memory.metadata["trained_on"] == "x"
    assert read_network(path).extra_metadata == {"trained_on": "x"}
    with pytest.raises(WeightFileError, match="may not set format keys"):
        NetworkWeights(
            net.layers,
            kind="pairwise",
            input_layout="paper",
            embedding_dim=D,
            embedding_model="m",
            extra_metadata={"kind": "pointwise"},
        )
    with pytest.raises(WeightFileError, match="^invalid InfluenceNetwork weights: kind must be"):
        NetworkWeights(
            net.layers, kind="pairs", input_layout="paper", embedding_dim=D, embedding_model="m"
        )


def test_errors_pickle_across_processes() -> None:
    """Ray workers send errors to the driver by pickle: the Rust exception class is found
    under `nncift._core`, and the Python subclasses keep their type and message."""
    import pickle

    assert NnciftError.__module__ == "nncift._core"
    with pytest.raises(NnciftError) as info:
        PairwiseScorer.load("/nonexistent/net.safetensors")
    for err in (info.value, WeightFileError("bad file"), NnciftError("boom")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert str(back) == str(err)
