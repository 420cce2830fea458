"""Objective objects (`nncift.objectives`): parameter checks, equality with the string
shorthand, and the select() keywords that came with them (random_state, n_jobs=-1)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import nncift
import numpy as np
import pytest
from nncift.errors import InputError
from nncift.objectives import (
    OBJECTIVE_CLASSES,
    DisparityMin,
    DisparitySum,
    FacilityLocation,
    FacilityLocationCG,
    FacilityLocationMI,
    GraphCut,
    Mix,
    Objective,
    TopK,
    from_name,
)
from nncift.selection import OBJECTIVES, resolve_budget, select

DOCS = Path(__file__).resolve().parents[1] / "docs" / "selection.md"


def _data(seed: int = 0, n: int = 80) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, 12)) * 3
    emb = (centers[rng.integers(0, 5, size=n)] + rng.normal(size=(n, 12))).astype(np.float32)
    return {
        "embeddings": emb,
        "query": rng.normal(size=(6, 12)).astype(np.float32),
        "private": rng.normal(size=(4, 12)).astype(np.float32),
        "scores": rng.random(n).astype(np.float32),
    }


# Every objective with non-default parameters, its shorthand, and the data it reads.
CASES: list[tuple[Objective, str, dict[str, float], tuple[str, ...]]] = [
    (FacilityLocation(), "fl", {}, ("embeddings",)),
    (FacilityLocationMI(eta=2.0), "flmi", {"eta": 2.0}, ("embeddings", "query")),
    (FacilityLocationCG(nu=0.7), "flcg", {"nu": 0.7}, ("embeddings", "private")),
    (GraphCut(lambda_=0.2), "graph-cut", {"lambda_": 0.2}, ("embeddings",)),
    (DisparitySum(), "disparity-sum", {}, ("embeddings",)),
    (DisparityMin(), "disparity-min", {}, ("embeddings",)),
    (TopK(), "topk", {}, ("scores",)),
    (Mix(quality_weight=5.0), "mix", {"quality_weight": 5.0}, ("embeddings", "scores")),
]
_KEYWORD = {
    "embeddings": "embeddings",
    "query": "query_embeddings",
    "private": "private_embeddings",
    "scores": "scores",
}


def test_every_shorthand_has_one_class() -> None:
    assert tuple(OBJECTIVE_CLASSES) == OBJECTIVES
    assert sorted(name for _, name, _, _ in CASES) == sorted(OBJECTIVES)
    for cls in OBJECTIVE_CLASSES.values():
        assert cls() == from_name(cls.name)


@pytest.mark.parametrize(("obj", "name", "params", "needs"), CASES, ids=[c[1] for c in CASES])
def test_object_equals_its_shorthand(
    obj: Objective, name: str, params: dict[str, float], needs: tuple[str, ...]
) -> None:
    assert obj.name == name
    assert obj.params() == params
    # The flat keywords the CLI passes for every objective: only the objective's own count.
    flat = {"eta": 2.0, "nu": 0.7, "lambda_": 0.2, "quality_weight": 5.0}
    assert from_name(name, **flat) == obj
    data = _data()
    kw = {_KEYWORD[k]: data[k] for k in needs}
    by_object = select(obj, budget=8, random_state=3, **kw)
    by_name = select(name, budget=8, random_state=3, **params, **kw)  # type: ignore[arg-type]
    assert by_object.indices.tolist() == by_name.indices.tolist()
    np.testing.assert_array_equal(by_object.gains, by_name.gains)
    assert by_object.objective == by_name.objective
    assert len(by_object) == 8


def test_parameters_change_the_result() -> None:
    """The object's parameter reaches the core (not the default)."""
    data = _data(1)
    kw = {"embeddings": data["embeddings"], "scores": data["scores"]}
    low = select(Mix(quality_weight=0.0), budget=8, **kw)
    high = select(Mix(quality_weight=100.0), budget=8, **kw)
    assert data["scores"][high.indices].sum() > data["scores"][low.indices].sum()
    assert low.indices.tolist() != high.indices.tolist()
    assert (
        low.indices.tolist() == select("fl", budget=8, embeddings=kw["embeddings"]).indices.tolist()
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FacilityLocationMI(eta=-1.0), r"FacilityLocationMI: eta must be >= 0"),
        (lambda: FacilityLocationMI(eta=float("nan")), r"eta must be finite"),
        (lambda: FacilityLocationMI(eta="2"), r"eta must be a number"),  # type: ignore[arg-type]
        (lambda: FacilityLocationCG(nu=-0.5), r"FacilityLocationCG: nu must be >= 0"),
        (lambda: FacilityLocationCG(nu=float("inf")), r"nu must be finite"),
        (lambda: GraphCut(lambda_=-0.1), r"GraphCut: lambda_ must be >= 0"),
        (lambda: GraphCut(lambda_=True), r"lambda_ must be a number"),
        (lambda: Mix(quality_weight=float("nan")), r"Mix: quality_weight must be finite"),
        (lambda: Mix(quality_weight=None), r"quality_weight must be a number"),  # type: ignore[arg-type]
        (lambda: from_name("flmi", eta=-2.0), r"eta must be >= 0"),
        (lambda: from_name("magic"), r"unknown objective 'magic'"),
        (lambda: from_name("fl", gamma=1.0), r"unknown objective parameter\(s\): gamma"),
    ],
)
def test_bad_parameters_raise_input_errors(make: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()  # type: ignore[operator]


def test_parameters_are_checked_before_the_run() -> None:
    x = _data()["embeddings"]
    # A negative eta on the shorthand is refused as the class refuses it ...
    with pytest.raises(InputError, match="eta must be >= 0"):
        select("flmi", budget=2, embeddings=x, query_embeddings=x[:3], eta=-1.0)
    # ... but a parameter the named objective does not take is ignored, as before.
    assert len(select("fl", budget=2, embeddings=x, eta=-1.0)) == 2
    with pytest.raises(InputError, match="eta given next to the objective object"):
        select(FacilityLocationMI(), budget=2, embeddings=x, query_embeddings=x[:3], eta=2.0)
    with pytest.raises(InputError, match="objective must be"):
        select(3, budget=2, embeddings=x)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown objective"):
        select("magic", budget=2, embeddings=x)


def test_objects_are_frozen_values() -> None:
    a = FacilityLocationMI(eta=2)
    assert a == FacilityLocationMI(eta=2.0) and hash(a) == hash(FacilityLocationMI(eta=2.0))
    assert isinstance(a.eta, float)
    assert a != FacilityLocationCG(nu=2.0)
    with pytest.raises(AttributeError):
        a.eta = 3.0  # type: ignore[misc]
    assert nncift.objectives.FacilityLocation() == FacilityLocation()


def test_random_state_and_the_deprecated_seed() -> None:
    x = np.ones((30, 4), dtype=np.float32)  # every gain ties: the seed decides
    a = select("fl", budget=5, embeddings=x, random_state=7)
    with pytest.warns(DeprecationWarning, match="random_state"):
        b = select("fl", budget=5, embeddings=x, seed=7)
    assert a.indices.tolist() == b.indices.tolist()
    assert a.indices.tolist() != select("fl", budget=5, embeddings=x).indices.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        select("fl", budget=5, embeddings=x, random_state=7)  # no warning without seed
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match="disagree"):
        select("fl", budget=5, embeddings=x, random_state=1, seed=2)
    with pytest.raises(InputError, match="random_state must be >= 0"):
        select("fl", budget=5, embeddings=x, random_state=-1)


def test_n_jobs_minus_one_means_all_cores() -> None:
    x = _data(2)["embeddings"]
    want = select("fl", budget=6, embeddings=x, n_jobs=1).indices.tolist()
    assert select("fl", budget=6, embeddings=x, n_jobs=-1).indices.tolist() == want
    assert select("fl", budget=6, embeddings=x, n_jobs=0).indices.tolist() == want
    with pytest.raises(InputError, match="n_jobs must be >= -1"):
        select("fl", budget=6, embeddings=x, n_jobs=-2)
    plan = nncift.estimate_selection(1000, budget=10, n_jobs=-1)
    assert plan.mode == "dense"


def test_resolve_budget_raises_input_error() -> None:
    for bad in (0, -1, 2.5, "ten", float("nan")):
        with pytest.raises(InputError):
            resolve_budget(bad, 100)  # type: ignore[arg-type]


def test_public_names() -> None:
    from nncift.scorer import ScorerKernel
    from nncift.selection_plan import SelectionPlan, estimate_selection

    assert nncift.ScorerKernel is ScorerKernel is nncift._core.ScorerKernel
    assert nncift.estimate_selection is estimate_selection
    assert isinstance(estimate_selection(10, budget=2), SelectionPlan)


def _doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)


def test_docs_name_every_objective() -> None:
    text = DOCS.read_text()
    for cls in OBJECTIVE_CLASSES.values():
        assert f"{cls.__name__}(" in text and f"`{cls.name}`" in text


@pytest.mark.parametrize("i", range(len(_doc_blocks())))
def test_docs_examples_run(i: int) -> None:
    """Every Python block of docs/selection.md runs as it stands."""
    exec(compile(_doc_blocks()[i], f"docs/selection.md block {i}", "exec"), {})


def test_value_of_fl_and_flmi_equals_what_select_reports() -> None:
    rng = np.random.default_rng(3)
    k = rng.random((30, 30)).astype(np.float32)
    q = rng.random((30, 4)).astype(np.float32)
    fl = select("fl", budget=6, kernel=k, mode="dense")
    assert FacilityLocation().value(k, fl.indices) == pytest.approx(fl.objective, rel=1e-5)
    mi = select(FacilityLocationMI(eta=0.5), budget=6, kernel=k, query_kernel=q, mode="dense")
    got = FacilityLocationMI(eta=0.5).value(k, q, mi.indices)
    assert got == pytest.approx(mi.objective, rel=1e-5)
    # By hand on a tiny case, and the empty set.
    small = np.array([[1.0, 0.0], [0.5, 0.25]], dtype=np.float32)
    assert FacilityLocation().value(small, [1]) == pytest.approx(0.75)
    assert FacilityLocation().value(small, [0, 1]) == pytest.approx(1.25)
    assert FacilityLocationMI().value(small, np.array([[0.2], [1.0]]), [0]) == pytest.approx(0.2)
    assert FacilityLocation().value(small, []) == 0.0
