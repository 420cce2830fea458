"""The LM passes each influence function runs, laid out as the run lays them out, and their
seconds on this machine.

`delift_work`, `delift_pairs_work`, `selectit_work` and `less_work` build an `LMWork` from the
run's own influence function (its tokenizer, cuts, tiles and batching: DELIFT's example
prefixes shared across their targets, LESS's warm-up, checkpoints and projection);
`LMWork.seconds` prices it with the `nncift.lm_probe` model of this machine. `nncift.plan`
(`--dry-run`) and `seconds_to_share` (a `--label-budget` in LM time) both read them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: `nncift.influence.store.compute_labels`' default tiles: rows per tile (pairwise,
#: pointwise) and the most columns per tile.
TILE_ROWS_PAIRWISE, TILE_ROWS_POINTWISE, TILE_COLS_MAX = 16, 64, 512


@dataclass
class Batch:
    """One batched LM call: `n` sequences padded to `width` tokens, after a cached prefix of
    `prefix` tokens, `tokens` real (unpadded) tokens, `head` positions through the output
    layer; `train`: forward + backward (LESS)."""

    n: int
    width: int
    tokens: int
    head: int
    prefix: int = 0
    train: bool = False

    @property
    def padded(self) -> int:
        return self.n * self.width

    @property
    def attention(self) -> int:
        return self.n * self.width * (self.prefix + self.width)


@dataclass
class LMWork:
    """Everything the label stage of one block does with the LM."""

    batches: list[Batch] = field(default_factory=list)
    #: LESS: projection calls as (rows projected, whether the matrix is generated in the call).
    projections: list[tuple[int, bool]] = field(default_factory=list)
    less_setup: bool = False

    @property
    def passes(self) -> int:
        return sum(b.n for b in self.batches)

    @property
    def backward_passes(self) -> int:
        return sum(b.n for b in self.batches if b.train)

    @property
    def tokens(self) -> int:
        return sum(b.tokens for b in self.batches)

    def add(self, lengths: Sequence[int], heads: Sequence[int], *, batch_tokens: int,
            max_batch: int, prefix: int = 0, train: bool = False) -> None:  # fmt: skip
        """Sequences of `lengths` grouped as `nncift.influence._lm._batches` groups them.

        With a prefix, grouping budgets `batch_tokens + prefix` over `length + prefix`
        (as `prefix_response_logprobs` does) and the width is of the suffixes alone.
        """
        from nncift.influence._lm import _batches

        if prefix:
            groups = _batches([n + prefix for n in lengths], batch_tokens + prefix, max_batch)
        else:
            groups = _batches(list(lengths), batch_tokens, max_batch)
        for g in groups:
            self.batches.append(
                Batch(
                    n=len(g),
                    width=max(lengths[i] for i in g),
                    tokens=sum(lengths[i] for i in g),
                    head=sum(heads[i] for i in g),
                    prefix=prefix,
                    train=train,
                )
            )

    def seconds(self, tp: Any, less: Any = None) -> float:
        """Predicted seconds with the probe's `Throughput` (`less`: its `LessProbe`)."""
        total = 0.0
        for b in self.batches:
            model = less.gradients if (b.train and less is not None) else tp.forward
            total += model.seconds(b.padded, b.attention, 0 if b.train else b.head)
        if less is not None:
            if self.less_setup:
                total += less.setup_seconds
            blocks = math.ceil(less.grad_dim / _proj_chunk())
            for rows, generate in self.projections:
                total += blocks * (less.proj_overhead + less.proj_per_row * rows)
                if generate:
                    total += blocks * less.proj_gen_seconds
        return total


def _proj_chunk() -> int:
    from nncift.influence.less import _PROJ_CHUNK

    return int(_PROJ_CHUNK)


def _tiles(n_rows: int, n_cols: int | None, pairwise: bool) -> list[tuple[slice, slice | None]]:
    tr = TILE_ROWS_PAIRWISE if pairwise else TILE_ROWS_POINTWISE
    out: list[tuple[slice, slice | None]] = []
    tc = min(TILE_COLS_MAX, n_cols) if n_cols else 1
    for a in range(math.ceil(n_rows / tr)):
        rs = slice(a * tr, min(n_rows, (a + 1) * tr))
        if n_cols is None:
            out.append((rs, None))
            continue
        for b in range(math.ceil(n_cols / tc)):
            out.append((rs, slice(b * tc, min(n_cols, (b + 1) * tc))))
    return out


# ------------------------------------------------------------------ the passes of each method


def delift_work(
    fn: Any, rows: np.ndarray, cols: np.ndarray, *, work: LMWork | None = None,
    done: set[int] | None = None,
) -> LMWork:  # fmt: skip
    """The passes `Delift.block` runs over the label tiles of rows x cols (`fn`: a `Delift`).

    work / done: add to this work, and skip the no-example passes of these targets (already
    run by earlier blocks of the same function: `delift_pairs_work`)."""
    work = LMWork() if work is None else work
    cfg = fn.cfg
    kw = {"batch_tokens": cfg.batch_tokens, "max_batch": cfg.max_batch}
    done = set() if done is None else done
    for rs, cs in _tiles(rows.size, cols.size, True):
        assert cs is not None
        tile_cols = cols[cs]
        # The no-example pass, once per target (cached across tiles).
        lengths, heads = [], []
        for t in dict.fromkeys(int(c) for c in tile_cols):
            if t in done:
                continue
            done.add(t)
            q = fn._query(t)
            if q["resp"]:
                lengths.append(len(fn._h0) + len(q["q0"]) + len(q["resp"]))
                heads.append(len(q["resp"]))
        work.add(lengths, heads, **kw)
        queries = [fn._query(int(t)) for t in tile_cols]
        live = [q for q in queries if q["resp"]]
        for i in rows[rs].tolist():
            ex, _ = fn._example(int(i))
            plen = len(fn._h1) + len(ex) + len(fn._tail)
            shared, solo = [], []
            for q in live:
                n = len(q["q1"]) + len(q["resp"])
                if plen + n <= fn.max_length:
                    shared.append(q)
                else:  # this pair only: the example cut further from the left
                    kept = max(0, len(ex) - (plen + n - fn.max_length))
                    solo.append((len(fn._h1) + kept + len(fn._tail) + n, len(q["resp"])))
            suffix = [len(q["q1"]) + len(q["resp"]) for q in shared]
            heads = [len(q["resp"]) for q in shared]
            if fn._kv and len(shared) > 1:
                work.add([plen], [0], **kw)  # the prefix, once
                work.add(suffix, heads, prefix=plen, **kw)
            else:
                work.add([plen + n for n in suffix], heads, **kw)
            work.add([n for n, _ in solo], [h for _, h in solo], **kw)
    return work


def delift_pairs_work(fn: Any, rows: np.ndarray, cols: np.ndarray) -> LMWork:
    """The passes of a sparse design's pairs (rows[k], cols[k]): one block per distinct pool
    row with its targets, as `PairwiseInfluence.pairs` runs them."""
    work, done = LMWork(), set[int]()
    _, first = np.unique(rows, return_index=True)
    for i in rows[np.sort(first)]:
        delift_work(fn, np.array([i]), cols[rows == i], work=work, done=done)
    return work


def selectit_work(fn: Any, rows: np.ndarray) -> LMWork:
    """The passes `SelectIT.points` runs over the label tiles of `rows` (`fn`: a `SelectIT`)."""
    from nncift.influence._lm import encode
    from nncift.influence.selectit import sample_text

    work = LMWork()
    kw = {"batch_tokens": fn.batch_tokens, "max_batch": fn.max_batch}
    for rs, _ in _tiles(rows.size, None, False):
        for lm, temps in zip(fn.lms, fn._templates, strict=True):
            longest = max(len(t.pre) + len(t.post) for t in temps)
            keep = min(fn.max_sample_tokens, lm.max_length - longest)
            sizes = []
            for i in rows[rs].tolist():
                ids = encode(lm.tokenizer, sample_text(fn.pool.prompts[i], fn.pool.responses[i]))
                sizes.append(min(len(ids), keep))
            for t in temps:
                lengths = [len(t.pre) + n + len(t.post) for n in sizes]
                work.add(lengths, [1] * len(lengths), **kw)
    return work


def less_work(fn: Any, rows: np.ndarray, cols: np.ndarray) -> LMWork:
    """What `Less.block` does over the label tiles of rows x cols (`fn`: a `Less`): the
    warm-up (forward + backward per batch and epoch), per-example gradients of pool and target
    items at each checkpoint, and their random projections."""
    cfg = fn.cfg
    work = LMWork(less_setup=True)
    # The warm-up, drawn with the same generator calls as `Less.warm_up`.
    m = len(fn.pool)
    k = min(m, max(cfg.warmup_min_items, math.ceil(cfg.warmup_fraction * m)))
    rng = np.random.default_rng(cfg.seed)
    warm_rows = np.sort(rng.choice(m, size=k, replace=False))
    seqs = [fn._seq(fn.pool, int(i)) for i in warm_rows]
    live = [len(s) for s, start in seqs if len(s) > start]
    for _ in range(cfg.epochs):
        order = rng.permutation(len(live))
        for s in range(0, len(order), cfg.batch_size):
            batch = [live[j] for j in order[s : s + cfg.batch_size]]
            work.batches.append(
                Batch(len(batch), max(batch), sum(batch), 0, train=True)
            )  # fmt: skip
    cache_matrix = fn.proj_dim * _grad_dim(fn) <= cfg.proj_cache_bytes
    generated = False
    kw = {"batch_tokens": cfg.grad_batch_tokens, "max_batch": 64, "train": True}
    seen: dict[str, set[int]] = {"pool": set(), "target": set()}
    for rs, cs in _tiles(rows.size, cols.size, True):
        assert cs is not None
        for side, items, idx in (("pool", fn.pool, rows[rs]), ("target", fn.targets, cols[cs])):
            todo = [int(i) for i in dict.fromkeys(idx.tolist()) if int(i) not in seen[side]]
            seen[side].update(todo)
            if not todo:
                continue
            lengths = []
            for i in todo:
                s, start = fn._seq(items, i)
                if len(s) > start:
                    lengths.append(len(s))
            for _ in range(cfg.epochs):  # one checkpoint per epoch
                work.add(lengths, [0] * len(lengths), **kw)
                work.projections.append((len(todo), not (cache_matrix and generated)))
                generated = True
    return work


#: Pool rows priced exactly when a time budget is turned into a share (the rest scale).
SECONDS_SAMPLE_ROWS = 256


def seconds_to_share(
    budget: Any, fn: Any, method: str, n_rows: int, n_cols: int | None, throughput: Any
) -> tuple[Any, dict[str, Any]]:
    """A `--label-budget` in LM seconds -> the `LabelBudget` share of labelling every pair it
    buys on this machine, and the record of the conversion.

    The full matrix is priced as `--dry-run` prices it: the passes of `fn` (the run's own
    function: tokenizer, cuts, batching) over all pairs, timed with `throughput` (the cached
    LM probe, `nncift.lm_probe`). DELIFT and SelectIT price a seeded sample of at most
    `SECONDS_SAMPLE_ROWS` pool rows and scale it; LESS's fixed warm-up and setup come off the
    budget first, because its share counts only the passes beyond the warm-up."""
    from nncift import designs
    from nncift.errors import InputError

    designs.check_time_budget(budget, method)
    rng = np.random.default_rng(0)
    k = min(n_rows, SECONDS_SAMPLE_ROWS)
    sample = np.sort(rng.choice(n_rows, size=k, replace=False))
    scale = n_rows / max(k, 1)
    fixed = 0.0
    if method == "delift":
        assert n_cols is not None
        full = delift_work(fn, sample, np.arange(n_cols)).seconds(throughput) * scale
    elif method == "selectit":
        full = selectit_work(fn, sample).seconds(throughput) * scale
    else:
        assert n_cols is not None
        probe = throughput.less.get(lm_probe_digest(fn))
        if probe is None:
            raise InputError("the LM probe has no LESS timings for these settings")
        everything = less_work(fn, np.arange(n_rows), np.arange(n_cols)).seconds(throughput, probe)
        fixed = less_work(fn, np.arange(0), np.arange(0)).seconds(throughput, probe)
        full = everything - fixed
    if budget.amount <= fixed:
        raise InputError(
            f"--label-budget {budget.text!r} does not cover LESS's warm-up and setup on this "
            f"machine (~{fixed:,.0f} s); give at least {fixed * 1.05 + 1:,.0f}s"
        )
    share = min(1.0, (budget.amount - fixed) / max(full, 1e-9))
    record = {
        "seconds": budget.amount,
        "fixed_seconds": round(fixed, 3),
        "full_matrix_seconds": round(full + fixed, 3),
        "share": share,
        "forward_tokens_per_second": round(throughput.forward.tokens_per_second(), 1),
        "probe_measured_at": throughput.measured_at,
    }
    return designs.LabelBudget(share, "share", budget.text), record


def _grad_dim(fn: Any) -> int:
    """LoRA parameters LESS would attach: r * (in + out) per matched Linear layer."""
    import torch

    targets = tuple(fn.cfg.target_modules)
    dim = 0
    for name, mod in fn.lm.model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            dim += fn.cfg.lora_r * (mod.in_features + mod.out_features)
    return dim


# ------------------------------------------------------------------ the run's own checks


def lm_probe_digest(fn: Any) -> str:
    from nncift import lm_probe

    return str(lm_probe._digest(lm_probe.less_settings_key(fn)))


__all__ = [
    "SECONDS_SAMPLE_ROWS",
    "Batch",
    "LMWork",
    "delift_pairs_work",
    "delift_work",
    "less_work",
    "lm_probe_digest",
    "seconds_to_share",
    "selectit_work",
]
